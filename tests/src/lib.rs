//! Harness of the end-to-end tests: starts the real `watcher` binary, collects
//! its NDJSON output, runs real processes (the `actor` binary), and waits for
//! the records they cause with a deadline — never a fixed sleep.
use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Condvar, Mutex, OnceLock},
    time::{Duration, Instant},
};

pub use serde_json::Value;

pub mod runtime;

/// Deadline for an expected record.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// True when the tests can load eBPF. Without root: under CI (CI=true) this
/// fails the test with a clear message; elsewhere it says so and the test is skipped.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    unavailable(
        "end-to-end tests load eBPF programs and need root: run `cargo xtask test` as root",
    );
    false
}

/// Something a test needs is missing (`msg` says what and how to get it):
/// under CI (CI=true) the test fails with it; elsewhere it is said and the
/// caller skips the test.
pub fn unavailable(msg: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: refusing to skip)");
    }
    eprintln!("SKIPPED: {msg}");
}

/// The watcher binary under test: `$WATCHER_BIN` (set by `cargo xtask test`) or target/debug/watcher.
pub fn watcher_bin() -> PathBuf {
    let p = std::env::var_os("WATCHER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/watcher")
        });
    assert!(
        p.exists(),
        "watcher binary {} not found: run the tests through `cargo xtask test`",
        p.display()
    );
    p
}

/// The build users run (`$WATCHER_RELEASE_BIN`: the static release binary
/// `cargo xtask test` builds for the package and the image), the test
/// build otherwise: for what is measured, and what the test build is too
/// slow to show (it handles a record many times slower).
pub fn release_bin() -> PathBuf {
    std::env::var_os("WATCHER_RELEASE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(watcher_bin)
}

pub fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

#[derive(Default)]
struct State {
    records: Vec<Value>,
    /// When each record was read from watcher's stdout (CLOCK_MONOTONIC ns).
    arrivals: Vec<u64>,
    stderr: Vec<String>,
    bad_lines: Vec<String>,
    /// Watcher's stdout is not read while set (a stalled consumer).
    paused: bool,
    ready: bool,
    exited: bool,
}

/// A running `watcher trace --json …` and everything it printed. Dropped
/// (the test's last handle, also when it panics), the watcher is continued
/// if stopped, sent SIGTERM, and killed if it has not ended within 10 s: no
/// watcher outlives its test to load the machine or keep programs attached.
pub struct Feed {
    state: Mutex<State>,
    cv: Condvar,
    pub pid: u32,
    /// Set once `wait_exit` (or Drop) has reaped the process.
    reaped: std::sync::atomic::AtomicBool,
}

impl Drop for Feed {
    fn drop(&mut self) {
        use nix::sys::{signal, wait};
        if self.reaped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = signal::kill(pid, signal::Signal::SIGCONT);
        let _ = signal::kill(pid, signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match wait::waitpid(pid, Some(wait::WaitPidFlag::WNOHANG)) {
                Ok(wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(wait::WaitStatus::StillAlive) => {
                    let _ = signal::kill(pid, signal::Signal::SIGKILL);
                    let _ = wait::waitpid(pid, None);
                    return;
                }
                Ok(wait::WaitStatus::Exited(..)) | Ok(wait::WaitStatus::Signaled(..)) | Err(_) => {
                    return
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// A watcher stopped with SIGSTOP (its reader not reading, so that its ring
/// overflows) until this guard is dropped: it is continued then, also when
/// the test panics while it is stopped.
pub struct Stopped<'a>(&'a Feed);

impl Feed {
    /// Stop the watcher (SIGSTOP) until the returned guard is dropped.
    pub fn stopped(&self) -> Stopped<'_> {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        Stopped(self)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.pid as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// A child process of the test that is killed and reaped when the guard is
/// dropped (also when the test panics): rsyslogd, shell loops, helpers.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        ChildGuard(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}")),
        )
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// True when `text` names `pid N` as a whole number (`pid 12` is not in
/// `pid 123`).
pub fn names_pid(text: &str, pid: u32) -> bool {
    let needle = format!("pid {pid}");
    text.match_indices(&needle).any(|(i, _)| {
        !text[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// `WATCHER_CORPUS_DIR=<dir>` (making the replay corpus, see
/// watcher/tests/corpus/README.md): each watcher a test starts records the
/// kernel's records to `<dir>/<test file>-<test>-<n>.rec`.
fn corpus_path(argv: &[String]) -> Option<String> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::var("WATCHER_CORPUS_DIR").ok()?;
    if !argv
        .iter()
        .any(|a| std::path::Path::new(a) == watcher_bin())
    {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let file = exe.file_stem()?.to_string_lossy();
    let file = file.split('-').next().unwrap_or(&file).to_owned();
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(format!("{dir}/{file}-{test}-{n}.rec"))
}

impl Feed {
    /// Start `watcher <args>` from a thread that lives as long as the test
    /// process, with PR_SET_PDEATHSIG so the watcher ends with the tests.
    pub fn start(args: &[&str]) -> Arc<Feed> {
        Feed::start_with(args, &[], &[])
    }

    /// Start `wrapper… watcher <args>` with extra environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)], wrapper: &[&str]) -> Arc<Feed> {
        let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        argv.push(watcher_bin().to_string_lossy().into_owned());
        argv.extend(args.iter().map(|s| s.to_string()));
        Feed::start_argv(argv, env)
    }

    /// Start the build users run ([`release_bin`]) with `args` and extra
    /// environment variables.
    pub fn start_release_with(args: &[&str], env: &[(&str, &str)]) -> Arc<Feed> {
        let mut argv = vec![release_bin().to_string_lossy().into_owned()];
        argv.extend(args.iter().map(|s| s.to_string()));
        Feed::start_argv(argv, env)
    }

    /// Start a command whose stdout is watcher's NDJSON (e.g. `docker run … watcher trace --json`).
    pub fn start_command(argv: &[&str]) -> Arc<Feed> {
        Feed::start_argv(argv.iter().map(|s| s.to_string()).collect(), &[])
    }

    fn start_argv(argv: Vec<String>, env: &[(&str, &str)]) -> Arc<Feed> {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(path) = corpus_path(&argv) {
            env.push(("WATCHER_RECORD".into(), path));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("spawning watcher");
            tx.send(child).expect("send");
            loop {
                std::thread::park();
            }
        });
        let mut child = rx.recv().expect("watcher child");
        let feed = Arc::new(Feed {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            pid: child.id(),
            reaped: std::sync::atomic::AtomicBool::new(false),
        });
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        // The readers hold the feed only while they handle a line: when the
        // test lets go of it, it is dropped, and its Drop stops the watcher
        // (a strong reference here kept every watcher of a test binary
        // running, and loading the machine, until the binary ended).
        let weak = Arc::downgrade(&feed);
        std::thread::spawn(move || {
            // (WATCHER_TEST_READER_FIFO: this reader at SCHED_FIFO 1, to
            // measure watcher's latency under a load without the test's
            // own reader waiting for a CPU in the figure.)
            if std::env::var_os("WATCHER_TEST_READER_FIFO").is_some() {
                // SAFETY: a plain C struct (musl's has more fields than
                // glibc's); all zeroes is a valid value.
                let mut p: libc::sched_param = unsafe { std::mem::zeroed() };
                p.sched_priority = 1;
                // SAFETY: this thread's own policy; the call only reads `p`.
                unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) };
            }
            let mut out = BufReader::new(out);
            loop {
                {
                    let Some(f) = weak.upgrade() else { return };
                    let mut st = f.state.lock().unwrap_or_else(|e| e.into_inner());
                    while st.paused {
                        st = f.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                }
                let mut line = String::new();
                if !matches!(out.read_line(&mut line), Ok(n) if n > 0) {
                    break;
                }
                let line = line.trim_end_matches('\n').to_owned();
                let Some(f) = weak.upgrade() else { return };
                let mut st = f.state.lock().unwrap_or_else(|e| e.into_inner());
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        st.records.push(v);
                        st.arrivals.push(mono_ns());
                    }
                    Err(_) => st.bad_lines.push(line),
                }
                f.cv.notify_all();
            }
            if let Some(f) = weak.upgrade() {
                f.state.lock().unwrap_or_else(|e| e.into_inner()).exited = true;
                f.cv.notify_all();
            }
        });
        let weak = Arc::downgrade(&feed);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let Some(f) = weak.upgrade() else { return };
                let mut st = f.state.lock().unwrap_or_else(|e| e.into_inner());
                if (line.contains("tracing") && line.contains("tracepoints"))
                    || line.contains("watcher: running:")
                {
                    st.ready = true;
                }
                st.stderr.push(line);
                f.cv.notify_all();
            }
        });
        // Keep the Child alive (its pid) without waiting on it here.
        std::mem::forget(child);
        feed.wait_ready();
        feed
    }

    /// The watcher shared by the tests of one test binary: `trace --json --threads`.
    pub fn shared() -> Arc<Feed> {
        static SHARED: OnceLock<Arc<Feed>> = OnceLock::new();
        SHARED
            .get_or_init(|| Feed::start(&["trace", "--json", "--threads"]))
            .clone()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !st.ready {
            if st.exited || Instant::now() > deadline {
                panic!(
                    "watcher did not start (within 60 s); its stderr:\n{}",
                    st.stderr.join("\n")
                );
            }
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// When `record` (one this feed printed) was read from watcher's stdout (CLOCK_MONOTONIC ns).
    pub fn arrival(&self, record: &Value) -> u64 {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let i = st
            .records
            .iter()
            .position(|r| r == record)
            .expect("a record of this feed");
        st.arrivals[i]
    }

    /// Wait until a record satisfying `pred` is printed; return it. Panics
    /// after the deadline, saying what was expected and what came.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_related(what, |_| false, pred)
    }

    /// Like `wait_for`, listing the records matching `related` in the failure message.
    pub fn wait_for_related(
        &self,
        what: &str,
        related: impl Fn(&Value) -> bool,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_related_within(DEADLINE, what, related, pred)
    }

    /// Like `wait_for_related`, for a record whose time another program's
    /// own timing decides (a supervisor's backoff): waits up to `limit`.
    pub fn wait_for_related_within(
        &self,
        limit: Duration,
        what: &str,
        related: impl Fn(&Value) -> bool,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        let mut seen = 0;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            assert!(
                st.bad_lines.is_empty(),
                "watcher printed non-JSON lines: {:?}",
                st.bad_lines
            );
            while seen < st.records.len() {
                if pred(&st.records[seen]) {
                    return st.records[seen].clone();
                }
                seen += 1;
            }
            if Instant::now() > deadline || st.exited {
                let rel: Vec<String> = st
                    .records
                    .iter()
                    .filter(|r| related(r))
                    .map(|r| r.to_string())
                    .collect();
                panic!(
                    "expected {what} within {:?}; got {} records, none matching. Related records:\n{}\nwatcher stderr:\n{}",
                    limit,
                    st.records.len(),
                    rel.join("\n"),
                    st.stderr.join("\n")
                );
            }
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stop reading watcher's stdout (`true`: it fills the pipe and then
    /// waits, a stalled consumer), or read it again.
    pub fn pause_reading(&self, paused: bool) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).paused = paused;
        self.cv.notify_all();
    }

    pub fn records(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stderr
            .clone()
    }

    /// Wait (with the deadline) for a stderr line containing `text`.
    pub fn wait_stderr(&self, text: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(l) = st.stderr.iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "expected `{text}` on watcher's stderr within {DEADLINE:?}; it said:\n{}",
                    st.stderr.join("\n")
                );
            }
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Send a signal to the watcher.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), sig).expect("kill");
    }

    /// Wait for the watcher to end; its exit status.
    pub fn wait_exit(&self) -> Option<i32> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(self.pid as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                    self.reaped.store(true, std::sync::atomic::Ordering::SeqCst);
                    return Some(code);
                }
                Ok(nix::sys::wait::WaitStatus::Signaled(..)) => {
                    self.reaped.store(true, std::sync::atomic::Ordering::SeqCst);
                    return None;
                }
                Ok(_) => {}
                Err(e) => panic!("waitpid: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "watcher did not exit within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One finished run of the actor.
#[derive(Debug)]
pub struct Run {
    pub pid: u32,
    pub values: HashMap<String, String>,
    pub code: Option<i32>,
    pub mono_before: u64,
    pub mono_after: u64,
}

impl Run {
    pub fn get(&self, k: &str) -> u64 {
        self.values
            .get(k)
            .unwrap_or_else(|| panic!("actor printed no `{k}`: {:?}", self.values))
            .parse()
            .unwrap_or_else(|_| panic!("actor's `{k}` is not a number: {:?}", self.values))
    }
}

/// Run `actor <args>` to completion.
pub fn actor(bin: &str, args: &[&str]) -> Run {
    let mono_before = mono_ns();
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("running actor");
    let mono_after = mono_ns();
    let text = String::from_utf8_lossy(&out.stdout);
    let values: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(
        out.status.success() || args.first() == Some(&"exit"),
        "actor {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = values
        .get("pid")
        .and_then(|p| p.parse().ok())
        .expect("actor prints its pid");
    Run {
        pid,
        values,
        code: out.status.code(),
        mono_before,
        mono_after,
    }
}

/// `record["a"]["b"]…` as u64.
pub fn num(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// `record["a"]["b"]…` as str.
pub fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

pub fn is(v: &Value, ty: &str) -> bool {
    text(v, &["type"]) == Some(ty)
}

/// Every record must carry the common fields of the output contract.
pub fn assert_common(v: &Value) {
    assert_eq!(num(v, &["schema"]), Some(1), "schema: {v}");
    let t = text(v, &["time"]).unwrap_or_else(|| panic!("no time: {v}"));
    assert!(
        t.len() >= 20 && t.ends_with('Z') && &t[10..11] == "T",
        "time is not RFC 3339 UTC: {t}"
    );
    assert!(num(v, &["mono_ns"]).unwrap_or(0) > 0, "mono_ns: {v}");
    assert!(text(v, &["type"]).is_some(), "type: {v}");
}

/// An actor still running: its stdin is a pipe (closing it ends `listen-hold`),
/// its `key=value` lines are read as they come.
pub struct Running {
    pub child: std::process::Child,
    pub pid: u32,
    lines: std::sync::mpsc::Receiver<String>,
    pub values: HashMap<String, String>,
}

impl Running {
    /// Wait (with a deadline) until the actor prints `key=…`.
    pub fn value(&mut self, key: &str) -> String {
        self.value_within(key, DEADLINE)
    }

    /// [`Running::value`] with a deadline of its own (work that takes long
    /// in a slow guest).
    pub fn value_within(&mut self, key: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while !self.values.contains_key(key) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some((k, v)) = l.split_once('=') {
                        self.values.insert(k.to_owned(), v.to_owned());
                    }
                }
                Err(_) => panic!(
                    "actor {} printed no `{key}` within {limit:?}: {:?}",
                    self.pid, self.values
                ),
            }
        }
        self.values[key].clone()
    }

    pub fn num(&mut self, key: &str) -> u64 {
        self.value(key)
            .parse()
            .unwrap_or_else(|_| panic!("`{key}` is not a number"))
    }

    /// Write one line to its stdin (a go-ahead for actors that wait for one).
    pub fn line(&mut self) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").expect("write to the actor");
        stdin.flush().expect("flush");
    }

    /// Close stdin and wait for the exit.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().expect("wait actor")
    }
}

/// An actor a test did not finish (it panicked first) is killed and reaped.
impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Start `actor <args>` without waiting for it. A binary a test has just
/// written (a copy under a name of its own) can be "busy" for a moment:
/// another test's thread may have forked while the copy's file was open
/// for writing, and its child holds that descriptor until it execs
/// (ETXTBSY); the spawn is tried again then, for up to 2 s.
pub fn spawn_actor(bin: &str, args: &[&str]) -> Running {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut child = loop {
        match Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => break r.expect("spawn actor"),
        }
    };
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let pid = child.id();
    Running {
        child,
        pid,
        lines: rx,
        values: HashMap::new(),
    }
}

/// Run `actor <args>` to completion whatever its exit status.
pub fn actor_any(bin: &str, args: &[&str]) -> Run {
    let mono_before = mono_ns();
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("running actor");
    let mono_after = mono_ns();
    let values: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let pid = values
        .get("pid")
        .and_then(|p| p.parse().ok())
        .expect("actor prints its pid");
    Run {
        pid,
        values,
        code: out.status.code(),
        mono_before,
        mono_after,
    }
}

/// A finding record of `kind` in `state`.
pub fn finding(v: &Value, kind: &str, state: &str) -> bool {
    is(v, "finding") && text(v, &["kind"]) == Some(kind) && text(v, &["state"]) == Some(state)
}

/// The pids a finding names with `role` (any role when `None`).
pub fn finding_pids(v: &Value, role: Option<&str>) -> Vec<u64> {
    v["processes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| role.is_none_or(|r| p["role"] == r))
                .filter_map(|p| p["process"]["pid"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// A port nobody listens on now.
/// Picked below the kernel's ephemeral range (32768–60999 by default), at
/// random: a port the kernel hands out for a bind to port 0 — what every
/// actor, curl and watcher helper does — can be the one just picked here
/// and closed again (a guest's metrics endpoint once found its port taken).
///
/// Never the same port twice in one test binary: a port picked for a
/// receiver "not there yet" is free until that receiver starts, and another
/// test's listener given the same port meanwhile would answer in its place.
/// A tool the test needs, installed by `cargo xtask test` (fails the test
/// with that said when it is missing).
pub fn require_tool(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{tool}` is needed (`cargo xtask test` installs it from Debian)"
    );
}

/// The entries of the watcher `pid`'s kernel map `name` (found among its
/// fds; read with bpftool as JSON: `{"key": [...], "value": [...]}`).
pub fn bpf_map_entries(pid: u32, name: &str) -> Vec<Value> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
    {
        if let Ok(info) = std::fs::read_to_string(fd.path()) {
            ids.extend(
                info.lines()
                    .find_map(|l| l.strip_prefix("map_id:"))
                    .and_then(|v| v.trim().parse::<u64>().ok()),
            );
        }
    }
    let json = |args: &[&str]| -> Value {
        let out = Command::new("bpftool")
            .arg("-j")
            .args(args)
            .output()
            .expect("bpftool");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let maps = json(&["map", "show"]);
    let Some(id) = maps.as_array().and_then(|a| {
        a.iter()
            .find(|m| m["name"] == name && m["id"].as_u64().is_some_and(|i| ids.contains(&i)))
            .and_then(|m| m["id"].as_u64())
    }) else {
        panic!("watcher (pid {pid}) holds no {name} map");
    };
    match json(&["map", "dump", "id", &id.to_string()]) {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

/// Entry `key` of the array map `name` (8-byte values) that process `pid`
/// holds, read with the bpf system call through a copy of its descriptor
/// (`pidfd_getfd`) — no process started, so no record made, as a bpftool
/// run would. `None`: no such map, or unreadable.
pub fn bpf_array_u64(pid: u32, name: &str, key: u32) -> Option<u64> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain system calls; each descriptor returned is owned once.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if pidfd < 0 {
        return None;
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .ok()?
        .flatten()
    {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !info.lines().any(|l| l.starts_with("map_id:")) {
            continue;
        }
        let Ok(their) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        use std::os::fd::AsRawFd as _;
        // SAFETY: as above.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), their, 0) };
        if fd < 0 {
            continue;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // BPF_OBJ_GET_INFO_BY_FD (15): struct bpf_map_info, its name at 24.
        let mut info = [0u8; 96];
        let mut attr = [0u64; 2];
        attr[0] = fd.as_raw_fd() as u32 as u64 | ((info.len() as u64) << 32);
        attr[1] = info.as_mut_ptr() as u64;
        // SAFETY: `attr` and `info` outlive the call, sized as passed.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 15, attr.as_mut_ptr(), 16) };
        let got = &info[24..40];
        let got = &got[..got.iter().position(|&b| b == 0).unwrap_or(16)];
        if r != 0 || got != name.as_bytes() {
            continue;
        }
        // BPF_MAP_LOOKUP_ELEM (1): map_fd, key pointer, value pointer, flags.
        let mut value = 0u64;
        let attr = [
            fd.as_raw_fd() as u32 as u64,
            &key as *const u32 as u64,
            &mut value as *mut u64 as u64,
            0,
        ];
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 1, attr.as_ptr(), 32) };
        return (r == 0).then_some(value);
    }
    None
}

/// The bytes of a key or value as bpftool prints them (`["0x61", …]`).
pub fn bpf_bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str())
        .filter_map(|h| u8::from_str_radix(h.trim_start_matches("0x"), 16).ok())
        .collect()
}

/// Whether a listener can be opened on `addr`; it is stopped at once (a
/// close alone drops only this descriptor: a child another test's thread
/// is forking holds a copy until its exec, and the port stays in LISTEN
/// that long — behind the port this hands out).
pub fn can_listen(addr: impl std::net::ToSocketAddrs) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(l) = std::net::TcpListener::bind(addr) else {
        return false;
    };
    nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both)
        .expect("shutdown of a listener");
    true
}

/// A port no one holds on any address, never handed out twice in one test
/// binary.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static HANDED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let seed = mono_ns() ^ ((std::process::id() as u64) << 20);
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // (splitmix64 of the seed and a counter)
        let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let port = 20_000 + ((z ^ (z >> 31)) % 10_000) as u16;
        let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
        if handed.contains(&port) {
            continue;
        }
        // Free on every address (each listener stopped again before the next).
        if can_listen(("127.0.0.1", port)) && can_listen(("0.0.0.0", port)) {
            handed.push(port);
            return port;
        }
    }
    panic!("no free port between 20000 and 29999 in 1,000 tries");
}

/// Poll `f` until it returns Some, with the deadline.
pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_within(DEADLINE, what, f)
}

/// Poll `f` until it returns Some, for at most `limit`.
pub fn eventually_within<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_explained(limit, what, f, String::new)
}

/// [`eventually_within`], and when it fails, what `explain` says then
/// (the state that tells why, read at the moment of failure).
pub fn eventually_explained<T>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {limit:?}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /metrics` from `addr`: the body.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The value of one metric sample line (`name{labels}`), if present.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("watcher-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Write a watcher config file `dir/w.toml` holding `text`; its path.
pub fn write_config(dir: &std::path::Path, text: &str) -> PathBuf {
    let cfg = dir.join("w.toml");
    std::fs::write(&cfg, text).expect("write config");
    cfg
}

/// What a process uses now: CPU seconds (user + system), resident memory
/// (KiB, now and its peak) and threads, from `/proc/<pid>/{stat,status}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub rss_peak_kib: u64,
    pub threads: u64,
}

pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: utime is the 14th field, stime the 15th.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()??
        .max(1) as f64;
    let cpu_s = (rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Usage {
        cpu_s,
        rss_kib: field("VmRSS:")?,
        rss_peak_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// Samples a process's usage every 20 ms until stopped: the peaks of its
/// resident memory and thread count over that time.
pub struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Usage>>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = Usage::default();
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(u) = usage(pid) {
                    peak.cpu_s = u.cpu_s;
                    peak.rss_kib = peak.rss_kib.max(u.rss_kib);
                    peak.rss_peak_kib = u.rss_peak_kib;
                    peak.threads = peak.threads.max(u.threads);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop sampling: the peaks seen (`cpu_s` is the last reading).
    pub fn finish(mut self) -> Usage {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("sampler"))
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A real rsyslogd on a socket of its own, writing each message's text
/// (`%msg%`) to a file; killed when dropped.
pub struct Rsyslog {
    pub socket: PathBuf,
    pub out: PathBuf,
    pub child: ChildGuard,
}

impl Rsyslog {
    pub fn start(dir: &std::path::Path) -> Rsyslog {
        let socket = dir.join("log.sock");
        let out = dir.join("out.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}\")\nmodule(load=\"imuxsock\" SysSock.Use=\"off\")\ninput(type=\"imuxsock\" Socket=\"{s}\" UseSpecialParser=\"off\" ParseHostname=\"on\")\ntemplate(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n*.* action(type=\"omfile\" file=\"{o}\" template=\"msgonly\")\n",
                d = dir.display(),
                s = socket.display(),
                o = out.display()
            ),
        )
        .expect("rsyslog.conf");
        let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("rsyslogd (Debian: rsyslog; `cargo xtask test` installs it)");
        let child = ChildGuard::spawn(
            Command::new(rsyslogd)
                .args(["-n", "-f"])
                .arg(&conf)
                .arg("-i")
                .arg(dir.join("rsyslogd.pid"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        eventually("rsyslog's socket", || socket.exists().then_some(()));
        Rsyslog { socket, out, child }
    }
}

/// A bind that fails on a port a socket of another process holds, bound
/// (the kernel picked the port) and never listening: the finding names
/// that process. Then a port left in TIME_WAIT by a process still alive
/// (its socket closed): the failure names the lingering connection, not
/// the process. (`ports.rs`, and `events.rs` through tracefs.)
pub fn bound_then_lingering(feed: &Feed, actor_bin: &str) {
    let conflict_of = |pid: u32, port: u16, what: &str| {
        feed.wait_for(what, |v| {
            finding(v, "port_conflict", "open")
                && finding_pids(v, Some("failing")).contains(&(pid as u64))
                && num(v, &["details", "port"]) == Some(port as u64)
        })
    };
    let mut holder = spawn_actor(actor_bin, &["bound-hold"]);
    let port: u16 = holder.value("port").parse().unwrap();
    let mut b = spawn_actor(actor_bin, &["bind-port", &port.to_string(), "127.0.0.1"]);
    b.value("errno");
    let f = conflict_of(b.pid, port, "a conflict on the port a bound socket holds");
    let summary = text(&f, &["summary"]).unwrap_or_default().to_owned();
    assert!(
        summary.contains("held by") && names_pid(&summary, holder.pid),
        "the bound socket's process is the holder: {summary}"
    );
    assert!(
        finding_pids(&f, Some("holder")).contains(&(holder.pid as u64)),
        "{f}"
    );
    b.finish();
    holder.finish();
    let mut lingering = spawn_actor(actor_bin, &["linger-hold"]);
    let port: u16 = lingering.value("port").parse().unwrap();
    let mut b = spawn_actor(actor_bin, &["bind-port", &port.to_string(), "127.0.0.1"]);
    b.value("errno");
    // (Its open record may come before the kernel's answer; the answer
    // restates it.)
    let f = feed.wait_for("a conflict on a port in TIME_WAIT, explained", |v| {
        text(v, &["kind"]) == Some("port_conflict")
            && finding_pids(v, Some("failing")).contains(&(b.pid as u64))
            && num(v, &["details", "port"]) == Some(port as u64)
            && text(v, &["summary"]).is_some_and(|s| {
                s.contains("no process listens there, but 1 connection(s) still use the port")
            })
    });
    let id = text(&f, &["id"]).unwrap_or_default().to_owned();
    for v in feed
        .records()
        .iter()
        .filter(|v| text(v, &["id"]) == Some(id.as_str()))
    {
        let summary = text(v, &["summary"]).unwrap_or_default();
        assert!(
            !names_pid(summary, lingering.pid),
            "the closed socket's process is not named: {v}"
        );
    }
    b.finish();
    lingering.finish();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pid_is_named_as_a_whole_number() {
        assert!(super::names_pid("by pid 12 (actor)", 12));
        assert!(super::names_pid("pid 12", 12));
        assert!(!super::names_pid("by pid 123 (actor)", 12));
        assert!(super::names_pid("pid 123 and pid 12,", 12));
    }
}
