//! `cargo xtask bench`: measurements reported as figures, never asserted.
//!
//! Detection latency: the release watcher runs `trace --json --findings` with
//! its stdout on a pipe, real workloads (the `actor` binary) cause each
//! finding many times, and for every `open` record the delay from the kernel
//! timestamp of the deciding event (the record's `mono_ns`, CLOCK_MONOTONIC,
//! taken in the tracepoint) to the moment the line was readable on the pipe
//! (CLOCK_MONOTONIC in the reader) is recorded.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};

pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
        .unwrap_or(0)
}

struct Feed {
    /// (read time, record, whether it is about the load's own fork loop —
    /// decided once as the line is read: the bench's own CPU is the
    /// machine's, and re-serializing every record at each look cost
    /// milliseconds of it per 20 ms once hundreds of findings had come).
    lines: Arc<Mutex<Vec<(u64, serde_json::Value, bool)>>>,
    /// Open findings read so far, by kind (the load's own excepted): what
    /// the bench waits on. Kept by the reading thread, so that a wait
    /// never scans `lines` under its lock — the reading thread, blocked on
    /// that lock, read the next line milliseconds late once thousands had
    /// come (the 1,000-sample runs' p99 of 3–4 ms for `port_shadowed` and
    /// `ports_exhausted`).
    counts: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    child: std::process::Child,
}

/// This thread at real-time priority (`SCHED_FIFO`, low: 10), when allowed.
fn realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler(0, …) changes the calling thread only, with
    // a parameter that lives through the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        eprintln!(
            "xtask bench: the feed's reader stays at normal priority ({}): latencies include its wait for a CPU",
            std::io::Error::last_os_error()
        );
    }
}

impl Feed {
    fn start(watcher: &Path, args: &[&str]) -> Result<Feed> {
        let mut child = Command::new(watcher)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", watcher.display()))?;
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        let lines: Arc<Mutex<Vec<(u64, serde_json::Value, bool)>>> = Arc::default();
        let counts: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
        let (l, c) = (lines.clone(), counts.clone());
        std::thread::spawn(move || {
            // The line's read time is when it became readable, not when a
            // CPU was free for the bench: the workloads that decide a
            // finding (11 copies starting at once, a crashing child's
            // restarts) hold both CPUs at that moment, and a reader at normal
            // priority waited behind them for 200-700 µs after watcher had
            // written (measured with the daemon's own write times: p50 ~0.1
            // ms written, ~0.6 ms read for `duplicate_instances`). A
            // real-time reader is woken by the write itself; it only reads
            // and parses (without root it stays at normal priority).
            realtime();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let at = mono_ns();
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let load = line.contains(LOAD_FORKS);
                    if let Some(k) = sample_kind(&v, load) {
                        *c.lock().expect("lock").entry(k.to_owned()).or_default() += 1;
                    }
                    l.lock().expect("lock").push((at, v, load));
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("tracepoints") {
                    let _ = tx.send(());
                } else {
                    eprintln!("watcher: {line}");
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .context("watcher did not start")?;
        Ok(Feed {
            lines,
            counts,
            child,
        })
    }

    fn stop(self) {
        // Dropped: stopped.
    }

    /// Wait until `n` open findings of `kind` exist (deadline 60 s).
    fn wait_open(&self, kind: &str, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = self
                .counts
                .lock()
                .expect("lock")
                .get(kind)
                .copied()
                .unwrap_or(0);
            if c >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .lines
                    .lock()
                    .expect("lock")
                    .iter()
                    .map(|(_, v, _)| format!("{} {} {}", v["kind"], v["state"], v["summary"]))
                    .collect();
                bail!(
                    "only {c} of {n} `{kind}` findings appeared; the feed had:\n{}",
                    seen.join("\n")
                );
            }
            // (A look is a lookup in `counts`: cheap enough to look often.)
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// (read time, record) of the open findings of `kind`.
    fn opens(&self, kind: &str) -> Vec<(u64, u64)> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, v, load)| sample_kind(v, *load) == Some(kind))
            .filter_map(|(at, v, _)| v["mono_ns"].as_u64().map(|m| (*at, m)))
            .collect()
    }
}

/// The kind of the finding `v` opens, when it is a latency sample (the
/// load's own fork storm, `load`, is not one).
fn sample_kind(v: &serde_json::Value, load: bool) -> Option<&str> {
    (!load && v["type"] == "finding" && v["state"] == "open")
        .then(|| v["kind"].as_str())
        .flatten()
}

fn run(actor: &Path, args: &[&str]) -> Result<()> {
    let st = Command::new(actor)
        .args(args)
        .stdout(Stdio::null())
        .status()?;
    let _ = st;
    Ok(())
}

fn spawn(actor: &Path, args: &[&str]) -> Result<std::process::Child> {
    Ok(Command::new(actor)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?)
}

/// Wait for a `key=` line from a spawned actor.
fn value(c: &mut std::process::Child, key: &str) -> Result<String> {
    let out = c.stdout.as_mut().context("stdout")?;
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("actor ended before printing {key}");
        }
        if let Some(v) = line.trim().strip_prefix(&format!("{key}=")) {
            return Ok(v.to_owned());
        }
    }
}

/// p50, p99, p99.9, max and count (nearest rank; with fewer than 1,000
/// samples p99.9 is the max or next to it).
fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64, f64, usize) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN, 0);
    }
    let at = |q: f64| v[((q * (n - 1) as f64).round() as usize).min(n - 1)];
    (at(0.5), at(0.99), at(0.999), v[n - 1], n)
}

/// The watcher stops with the feed, on every path (a failed measurement too).
impl Drop for Feed {
    fn drop(&mut self) {
        // SAFETY: sending a signal to our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The finding kinds measured, in the order of the tables.
const KINDS: [&str; 10] = [
    "port_conflict",
    "port_shadowed",
    "address_unavailable",
    "zombie_accumulation",
    "respawn_storm",
    "duplicate_instances",
    "connect_failures",
    "fork_storm",
    "zombie",
    "ports_exhausted",
];

/// The load's fork loop (its arguments, which its findings name).
const LOAD_FORKS: &str = "fork-loop 4000000000";

/// Load beside a latency run: the fork/exit/wait loop and a parallel build.
struct Load {
    children: Vec<std::process::Child>,
}

impl Load {
    fn start(root: &Path, actor: &Path, dir: &Path) -> Result<Load> {
        let fork = Command::new(actor)
            .args(LOAD_FORKS.split(' '))
            .stdout(Stdio::null())
            .spawn()?;
        // A parallel build (both CPUs) of a few crates, again and again.
        let target = dir.join("load-build");
        let script = format!(
            "while :; do {cargo} build -q --release --offline -j 2 -p xtask --target-dir {t}; rm -rf {t}; done",
            cargo = env!("CARGO"),
            t = target.display()
        );
        let mut build = Command::new("setsid");
        build
            .args(["sh", "-c", &script])
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let build = build.spawn()?;
        // Let the build get going.
        std::thread::sleep(Duration::from_secs(3));
        Ok(Load {
            children: vec![fork, build],
        })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.children {
            // The build runs in its own session: end the whole group.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

/// p50/p99 of a Prometheus histogram from its cumulative buckets (the bucket's upper bound).
fn bucket_quantiles(metrics: &str, family: &str, label: &str) -> Option<(String, String, u64)> {
    let prefix = format!("{family}_bucket{{{label},le=\"");
    let buckets: Vec<(String, u64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|r| {
            let (le, rest) = r.split_once("\"}")?;
            Some((le.to_owned(), rest.trim().parse::<f64>().ok()? as u64))
        })
        .collect();
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        let want = (q * total as f64).ceil() as u64;
        buckets
            .iter()
            .find(|(_, n)| *n >= want)
            .map(|(le, _)| match le.parse::<f64>() {
                Ok(s) => format!("≤ {}", fmt_ms(s * 1e3)),
                Err(_) => "> 1 s".to_owned(),
            })
            .unwrap_or_default()
    };
    Some((at(0.5), at(0.99), total))
}

fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1e3)
    } else {
        format!("{ms:.0} ms")
    }
}

/// Detection latency per finding kind (`reps` of each), as markdown rows,
/// and the pipeline's per-stage histograms from its metrics.
/// Fork storms measured at most per latency run: each takes 2.1 s (a
/// thousand would be 35 minutes).
const FORK_STORMS: usize = 100;

pub fn latency(
    watcher: &Path,
    actor: &Path,
    reps: usize,
    dir: &Path,
) -> Result<(Vec<String>, Vec<String>)> {
    let port = free_port();
    let cfg = dir.join("latency.toml");
    // Shorter clocks than the defaults where a kind needs time to be decided
    // (a zombie's age, a fork storm's sustain): more samples per minute; the
    // latency is measured from the deciding moment in any case. No limit on
    // the incidents one user opens a second: the bench opens hundreds.
    std::fs::write(
        &cfg,
        format!(
            "[feed]\ntypes = [\"finding\"]\nstdout = true\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[health]\nstatus_file = \"{}\"\n[detect]\nmax_opens_per_user_s = 0\n[detect.zombie]\nmax_age_s = 1\n[detect.fork_storm]\nsustain_s = 1\n",
            dir.join("status.json").display()
        ),
    )?;
    let feed = Feed::start(watcher, &["run", "--config", &cfg.to_string_lossy()])?;
    // WATCHER_BENCH_KINDS=a,b: only those kinds (the others take no samples).
    let only = std::env::var("WATCHER_BENCH_KINDS").ok();
    let n_of = |kind: &str| match &only {
        Some(ks) if !ks.split(',').any(|k| k.trim() == kind) => 0,
        _ => reps,
    };
    // port_conflict: a listener, a failing bind; a new port each time. The
    // listener stays until the finding is out, as a real one does (one gone
    // a millisecond after the failing bind is found gone by the lookup).
    // (A port used before in this run would join that port's incident, still
    // open: a new listener is taken instead.)
    let mut ports_used = std::collections::HashSet::new();
    // The hypervisor's share of the machine while each kind's samples ran.
    let mut stolen: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    let mut steal = Steal::start();
    for i in 0..n_of("port_conflict") {
        let (mut holder, port) = loop {
            let mut h = spawn(actor, &["listen-hold", "0.0.0.0", "0"])?;
            let p = value(&mut h, "port")?;
            if ports_used.insert(p.clone()) {
                break (h, p);
            }
            drop(h.stdin.take());
            h.wait()?;
        };
        run(actor, &["bind-port", &port])?;
        feed.wait_open("port_conflict", i + 1)?;
        drop(holder.stdin.take());
        holder.wait()?;
    }
    stolen.insert("port_conflict", steal.lap());
    // port_shadowed: a wildcard and a specific listener of different
    // programs, both kept until the finding is out.
    for i in 0..n_of("port_shadowed") {
        let (mut a, port) = loop {
            let mut h = spawn(actor, &["listen-hold", "0.0.0.0", "0", "reuseport"])?;
            let p = value(&mut h, "port")?;
            if ports_used.insert(p.clone()) {
                break (h, p);
            }
            drop(h.stdin.take());
            h.wait()?;
        };
        let mut b = spawn(actor, &["listen-hold", "127.0.0.1", &port, "reuseport"])?;
        value(&mut b, "listening")?;
        feed.wait_open("port_shadowed", i + 1)?;
        for c in [&mut a, &mut b] {
            drop(c.stdin.take());
            c.wait()?;
        }
    }
    stolen.insert("port_shadowed", steal.lap());
    // address_unavailable: a bind to an address of the IPv6 documentation
    // range (on no host), a new one each time.
    for i in 0..n_of("address_unavailable") {
        run(actor, &["notavail", &format!("2001:db8::{:x}", 1 + i)])?;
    }
    feed.wait_open("address_unavailable", n_of("address_unavailable"))?;
    stolen.insert("address_unavailable", steal.lap());
    // zombie_accumulation: 6 children exit unreaped, reaped 50 ms later.
    for _ in 0..n_of("zombie_accumulation") {
        run(actor, &["zombies", "6", "50"])?;
    }
    feed.wait_open("zombie_accumulation", n_of("zombie_accumulation"))?;
    stolen.insert("zombie_accumulation", steal.lap());
    // respawn_storm: a supervisor restarting a child that crashes after
    // 20 ms (a new program each time: its last argument).
    for i in 0..n_of("respawn_storm") {
        run(actor, &["supervise", "6", "20", &format!("r{i}")])?;
    }
    feed.wait_open("respawn_storm", n_of("respawn_storm"))?;
    stolen.insert("respawn_storm", steal.lap());
    // duplicate_instances: 11 copies of a program living 150 ms (a new one
    // each time: its last argument).
    for i in 0..n_of("duplicate_instances") {
        run(actor, &["copies", "11", "150", &format!("d{i}")])?;
    }
    feed.wait_open("duplicate_instances", n_of("duplicate_instances"))?;
    stolen.insert("duplicate_instances", steal.lap());
    // connect_failures: 12 refused connects to a new closed port (never
    // one used before: a second burst would join the first one's incident).
    let mut used = std::collections::HashSet::new();
    for _ in 0..n_of("connect_failures") {
        let port = loop {
            let p = free_port();
            if used.insert(p) {
                break p;
            }
        };
        run(actor, &["connect-burst", &port.to_string(), "12"])?;
    }
    feed.wait_open("connect_failures", n_of("connect_failures"))?;
    stolen.insert("connect_failures", steal.lap());
    // fork_storm: 1,000 forks a second for 2.1 s (sustain 1 s), a new
    // parent each time; at most FORK_STORMS of them (2.1 s a sample). The
    // rate is counted per calendar second: 2.1 s always hold a whole one,
    // so a sample that reaches 500 a second at all (behind the loaded
    // phase's fork loop and build it may fork only ~700 a second) reaches
    // it within one; 1.3 s could split ~900 forks 450/450 (99 of 100, 13:37).
    for _ in 0..n_of("fork_storm").min(FORK_STORMS) {
        run(actor, &["fork-fast", "2100", "1000"])?;
    }
    feed.wait_open("fork_storm", n_of("fork_storm").min(FORK_STORMS))?;
    stolen.insert("fork_storm", steal.lap());
    // zombie: one unreaped child each, held past max_age (1 s) — latency
    // from the deadline to the line. Fifty at a time: their deadlines come
    // after all fifty have started (a thousand started at once would still
    // be starting, on both CPUs, when the first deadlines come).
    let mut zombies = 0;
    while zombies < n_of("zombie") {
        let n = (n_of("zombie") - zombies).min(50);
        let zs: Vec<_> = (0..n)
            .map(|_| spawn(actor, &["zombies", "1", "1600"]))
            .collect::<Result<_>>()?;
        zombies += n;
        feed.wait_open("zombie", zombies)?;
        for mut z in zs {
            z.wait()?;
        }
    }
    stolen.insert("zombie", steal.lap());
    // ports_exhausted: a new network namespace whose ephemeral range is two ports, bind(0) three times.
    let script = format!(
        "ip link set lo up && echo '40000 40001' > /proc/sys/net/ipv4/ip_local_port_range && exec {} exhaust bind 3",
        actor.display()
    );
    for _ in 0..n_of("ports_exhausted") {
        let mut c = Command::new("unshare")
            .args(["-n", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("unshare (util-linux)")?;
        value(&mut c, "held")?;
        drop(c.stdin.take());
        c.wait()?;
    }
    feed.wait_open("ports_exhausted", n_of("ports_exhausted"))?;
    stolen.insert("ports_exhausted", steal.lap());
    // Each kind's samples (read time, deciding time), read from the feed once.
    let samples: Vec<(&str, Vec<(u64, u64)>)> = KINDS
        .into_iter()
        .filter(|k| n_of(k) > 0)
        .map(|k| (k, feed.opens(k)))
        .collect();
    // WATCHER_BENCH_SAMPLES=<file>: every sample (kind, read time, deciding
    // time, latency in µs), in the order read — to see where in a run the
    // slow ones fall.
    if let Some(path) = std::env::var_os("WATCHER_BENCH_SAMPLES") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        for (kind, opens) in &samples {
            for (at, m) in opens {
                writeln!(
                    f,
                    "{kind} {at} {m} {:.0}",
                    at.saturating_sub(*m) as f64 / 1e3
                )?;
            }
        }
    }
    let mut rows = Vec::new();
    for (kind, opens) in &samples {
        let lat: Vec<f64> = opens
            .iter()
            .map(|(at, m)| at.saturating_sub(*m) as f64 / 1e3)
            .collect();
        let (p50, p99, p999, max, n) = percentiles(lat);
        let st = stolen.get(kind).map(String::as_str).unwrap_or("–");
        rows.push(format!(
            "| {kind} | {n} | {p50:.0} | {p99:.0} | {p999:.0} | {max:.0} | {st} |"
        ));
    }
    // The stages, from the daemon's own histograms (bucket bounds).
    let metrics = scrape(port).unwrap_or_default();
    let mut stages = Vec::new();
    for stage in [
        "kernel_to_read",
        "kernel_to_read_deciding",
        "kernel_to_read_bulk",
        "read_to_decided",
        "decided_to_written",
    ] {
        if let Some((p50, p99, n)) = bucket_quantiles(
            &metrics,
            "watcher_stage_latency_seconds",
            &format!("stage=\"{stage}\""),
        ) {
            stages.push(format!("| {stage} | {n} | {p50} | {p99} |"));
        }
    }
    if let Some((p50, p99, n)) = bucket_quantiles(
        &metrics,
        "watcher_sink_write_latency_seconds",
        "sink=\"stdout\"",
    ) {
        stages.push(format!(
            "| queued → written (stdout) | {n} | {p50} | {p99} |"
        ));
    }
    feed.stop();
    Ok((rows, stages))
}

/// bpftrace doing what a naive tracer does on the same tracepoints: print every event.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:sched:sched_process_fork, tracepoint:sched:sched_process_exec, tracepoint:sched:sched_process_exit,
tracepoint:syscalls:sys_exit_wait4, tracepoint:sched:sched_process_free,
tracepoint:syscalls:sys_enter_bind, tracepoint:syscalls:sys_exit_bind,
tracepoint:syscalls:sys_enter_connect, tracepoint:syscalls:sys_exit_connect,
tracepoint:sock:inet_sock_set_state
{ printf("%s %d %d %s\n", probe, pid, tid, comm); }
"#;

struct Tracer {
    child: std::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// watcher's metrics port.
    port: Option<u16>,
}

impl Tracer {
    /// Start a tracer pinned to CPU 0 and wait until it is attached.
    fn start(kind: &str, watcher: &Path, dir: &Path) -> Result<Option<Tracer>> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0"]);
        let mut port = None;
        let ready_on_stderr = match kind {
            "none" => return Ok(None),
            // (watcher-tracefs: every hook attached through tracefs, to
            // measure what the raw tracepoints save.)
            "watcher" | "watcher-tracefs" => {
                let p = free_port();
                port = Some(p);
                let cfg = dir.join("bench.toml");
                std::fs::write(&cfg, format!("[feed]\nstdout = true\n[metrics]\nlisten = \"127.0.0.1:{p}\"\n[health]\nstatus_file = \"{}\"\n", dir.join("status.json").display()))?;
                cmd.arg(watcher).args(["run", "--config"]).arg(&cfg);
                if kind == "watcher-tracefs" {
                    cmd.env("WATCHER_ATTACH", "tracefs");
                }
                true
            }
            "bpftrace" => {
                cmd.args(["bpftrace", "-e", BPFTRACE_SCRIPT]);
                false
            }
            other => bail!("unknown tracer {other}"),
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {kind}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        let tx2 = tx.clone();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if !ready_on_stderr && line.contains("Attaching") {
                    let _ = tx.send(());
                }
                line.clear();
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if ready_on_stderr && l.contains("running:") {
                    let _ = tx2.send(());
                }
                l2.lock().expect("lock").push(l);
            }
        });
        rx.recv_timeout(Duration::from_secs(120))
            .with_context(|| format!("{kind} did not attach"))?;
        Ok(Some(Tracer {
            child,
            stderr: lines,
            port,
        }))
    }

    /// Stop it; for watcher, (events, lost) from its closing summary.
    fn stop(mut self) -> Option<(u64, u64)> {
        // SAFETY: signalling our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        let lines = self.stderr.lock().expect("lock");
        let l = lines.iter().find(|l| l.contains("stopped:"))?;
        // "watcher: stopped: N events, F findings, W records written, L lost"
        let num = |after: &str| -> Option<u64> {
            let i = l.find(after)?;
            l[..i]
                .trim_end()
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        Some((num(" events")?, num(" lost")?))
    }
}

/// The kernel's own time in each of watcher's programs (`kernel.bpf_stats_enabled`
/// on for the run, put back after), as ns per run, with the programs attached as
/// raw tracepoints and through tracefs, under the fork loop and the net loop.
/// (A tracefs program's ns/run leaves out the trace record the kernel builds
/// before it runs: the workload's time, in the overhead rows, has both.)
pub fn program_costs(watcher: &Path, actor: &Path, dir: &Path) -> Result<Vec<String>> {
    const SWITCH: &str = "/proc/sys/kernel/bpf_stats_enabled";
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(SWITCH, &self.0);
        }
    }
    let _restore = Restore(std::fs::read_to_string(SWITCH).unwrap_or_else(|_| "0".into()));
    std::fs::write(SWITCH, "1").context("turning kernel.bpf_stats_enabled on")?;
    // program (without `_raw`) → [(runs, ns) raw, (runs, ns) tracefs]
    let mut by: std::collections::BTreeMap<String, [(u64, f64); 2]> = Default::default();
    for (i, kind) in ["watcher", "watcher-tracefs"].into_iter().enumerate() {
        let tracer = Tracer::start(kind, watcher, dir)?.context("a watcher")?;
        workload(actor, &["fork-loop", "20000"])?;
        workload(actor, &["net-loop", "20000"])?;
        // watcher reads the kernel's counts once a second: scrape until two
        // looks a second apart agree (the loops' runs all counted).
        let port = tracer.port.context("watcher's metrics port")?;
        let mut body = scrape(port).unwrap_or_default();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(1100));
            let next = scrape(port).unwrap_or_default();
            let runs = |b: &str| -> Vec<String> {
                b.lines()
                    .filter(|l| l.starts_with("watcher_program_runs_total"))
                    .map(str::to_owned)
                    .collect()
            };
            let settled = runs(&next) == runs(&body);
            body = next;
            if settled {
                break;
            }
        }
        tracer.stop();
        let sample = |l: &str, family: &str| -> Option<(String, f64)> {
            let rest = l.strip_prefix(family)?.strip_prefix("{program=\"")?;
            let (name, v) = rest.split_once("\"} ")?;
            Some((
                name.trim_end_matches("_raw")
                    .trim_end_matches("_btf")
                    .to_owned(),
                v.trim().parse().ok()?,
            ))
        };
        for l in body.lines() {
            if let Some((p, n)) = sample(l, "watcher_program_runs_total") {
                by.entry(p).or_default()[i].0 = n as u64;
            } else if let Some((p, secs)) = sample(l, "watcher_program_run_seconds_total") {
                by.entry(p).or_default()[i].1 = secs * 1e9;
            }
        }
    }
    let per = |(runs, ns): (u64, f64)| {
        if runs == 0 {
            "–".to_owned()
        } else {
            format!("{:.0}", ns / runs as f64)
        }
    };
    Ok(by
        .into_iter()
        .filter(|(_, v)| v[0].0 + v[1].0 > 0)
        .map(|(p, v)| {
            format!(
                "| `{p}` | {} | {} | {} | {} |",
                v[0].0,
                per(v[0]),
                v[1].0,
                per(v[1])
            )
        })
        .collect())
}

/// Elapsed ns of a workload pinned to CPU 1.
fn workload(actor: &Path, args: &[&str]) -> Result<u64> {
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(actor)
        .args(args)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("elapsed_ns="))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("workload {args:?} printed no elapsed_ns: {text}"))
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Throughput ratios of each workload under each tracer, interleaved runs.
pub fn overhead(watcher: &Path, actor: &Path, rounds: usize, dir: &Path) -> Result<Vec<String>> {
    let tracers = ["none", "watcher", "watcher-tracefs", "bpftrace"];
    let workloads: [(&str, Vec<&str>); 3] = [
        ("fork/exit/wait loop (10,000)", vec!["fork-loop", "10000"]),
        ("bind+bind+connect loop (20,000)", vec!["net-loop", "20000"]),
        // What every other system call of the host pays: with a system-call
        // tracepoint attached, every task takes the kernel's tracing path.
        (
            "unrelated system calls (getppid ×2,000,000)",
            vec!["syscall-loop", "2000000"],
        ),
    ];
    let mut rows = Vec::new();
    let mut loss_rows = Vec::new();
    for (name, args) in &workloads {
        let mut times: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
        let (mut events, mut lost, mut secs) = (0u64, 0u64, 0f64);
        for _ in 0..rounds {
            for t in tracers {
                let tracer = Tracer::start(t, watcher, dir)?;
                let ns = workload(actor, args)?;
                if let Some(tr) = tracer {
                    if let Some((e, l)) = tr.stop() {
                        events += e;
                        lost += l;
                        secs += ns as f64 / 1e9;
                    }
                }
                times.entry(t).or_default().push(ns as f64);
            }
        }
        loss_rows.push(format!(
            "| {name} | {events} events seen by `watcher run` over {rounds} runs, ~{:.0} events/s while the loop ran; {lost} lost |",
            events as f64 / secs.max(1e-9)
        ));
        let mut base = times["none"].clone();
        let (_, base_med, _) = stats(&mut base);
        for t in tracers {
            let mut ratios: Vec<f64> = times[t].iter().map(|x| x / base_med).collect();
            let (min, med, max) = stats(&mut ratios);
            rows.push(format!(
                "| {name} | {t} | {min:.3} | {med:.3} | {max:.3} | {:.0} ms |",
                base_med / 1e6 * med
            ));
        }
    }
    rows.push(String::new());
    rows.push("| workload | events and loss under `watcher run` |".into());
    rows.push("|---|---|".into());
    rows.extend(loss_rows);
    Ok(rows)
}

/// The daemon's lost records (slot 0 of `LOST`, the total), summed over CPUs, read from the kernel with
/// bpftool (the map is found among the daemon's fds through /proc/<pid>/fdinfo).
fn kernel_lost(pid: u32) -> Option<u64> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .ok()?
        .flatten()
    {
        if let Ok(info) = std::fs::read_to_string(fd.path()) {
            if let Some(id) = info
                .lines()
                .find_map(|l| l.strip_prefix("map_id:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
    }
    let maps: serde_json::Value = serde_json::from_slice(
        &Command::new("bpftool")
            .args(["-j", "map", "show"])
            .output()
            .ok()?
            .stdout,
    )
    .ok()?;
    let id = maps
        .as_array()?
        .iter()
        .find(|m| m["name"] == "LOST" && m["id"].as_u64().is_some_and(|i| ids.contains(&i)))?["id"]
        .as_u64()?;
    let dump: serde_json::Value = serde_json::from_slice(
        &Command::new("bpftool")
            .args(["-j", "map", "dump", "id", &id.to_string()])
            .output()
            .ok()?
            .stdout,
    )
    .ok()?;
    let mut total = 0u64;
    // Slot 0 holds every loss (the per-kind slots 1.. count them again).
    let slot0 = |k: &serde_json::Value| {
        k.as_u64() == Some(0)
            || k.as_array().is_some_and(|b| {
                b.iter().all(|h| {
                    h.as_str().is_some_and(|h| {
                        h.trim_start_matches("0x")
                            .trim_start_matches('0')
                            .is_empty()
                    })
                })
            })
    };
    for e in dump.as_array()?.iter().filter(|e| slot0(&e["key"])) {
        for v in e["values"].as_array()? {
            let x = &v["value"];
            total += x.as_u64().or_else(|| {
                // Raw bytes, little-endian, as hex strings.
                x.as_array().map(|b| {
                    b.iter().enumerate().fold(0u64, |acc, (i, h)| {
                        acc | (u64::from_str_radix(
                            h.as_str().unwrap_or("0").trim_start_matches("0x"),
                            16,
                        )
                        .unwrap_or(0)
                            << (8 * i))
                    })
                })
            })?;
        }
    }
    Some(total)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn scrape(port: u16) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn scrape_metric(port: u16, sample: &str) -> Option<f64> {
    let body = scrape(port)?;
    body.lines().find_map(|l| {
        l.strip_prefix(sample)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Resident memory of the daemon with 10,000 live processes, after 100,000
/// have come and gone, and an overload with a stalled reader.
pub fn memory(watcher: &Path, actor: &Path, dir: &Path) -> Result<Vec<String>> {
    let port = free_port();
    let cfg = dir.join("mem.toml");
    std::fs::write(&cfg, format!("[feed]\ntypes = [\"loss\"]\nstdout = true\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[health]\nstatus_file = \"{}\"\n", dir.join("m.json").display()))?;
    let mut d = Command::new(watcher)
        .args(["run", "--ring-mib", "1", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The loss records of the feed, as a consumer sees them.
    let reported = Arc::new(Mutex::new(0u64));
    let out = d.stdout.take().context("stdout")?;
    let r2 = reported.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
                if v["type"] == "loss" && v["loss"]["reason"] == "ring_buffer_full" {
                    *r2.lock().expect("lock") += v["loss"]["count"].as_u64().unwrap_or(0);
                }
            }
        }
    });
    let err = d.stderr.take().context("stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if l.contains("running:") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .context("daemon did not start")?;
    let pid = d.id();
    let mut rows = Vec::new();
    rows.push(format!("| at start | {} MB |", rss_kib(pid) / 1024));
    let mut hold = spawn(actor, &["hold-children", "10000"])?;
    value(&mut hold, "children")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while scrape_metric(port, "watcher_table_entries{table=\"processes\"}").unwrap_or(0.0)
        < 10_000.0
    {
        if Instant::now() > deadline {
            bail!("the daemon never tracked 10,000 processes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    rows.push(format!(
        "| 10,000 live processes tracked | {} MB |",
        rss_kib(pid) / 1024
    ));
    drop(hold.stdin.take());
    hold.wait()?;
    workload(actor, &["fork-loop", "100000"])?;
    std::thread::sleep(Duration::from_secs(1));
    rows.push(format!(
        "| after 100,000 more processes came and went | {} MB |",
        rss_kib(pid) / 1024
    ));
    // Overload: the reader stopped while a storm fills the 1 MiB ring.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    workload(actor, &["fork-loop", "30000"])?;
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let lost_metric = || -> f64 {
        [
            "fork",
            "exec",
            "exit",
            "reap",
            "bind",
            "connect",
            "tcp_state",
        ]
        .iter()
        .map(|t| {
            scrape_metric(port, &format!("watcher_lost_events_total{{type=\"{t}\"}}"))
                .unwrap_or(0.0)
        })
        .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while lost_metric() == 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // The loss counters are polled every 100 ms; let the last report out.
    std::thread::sleep(Duration::from_secs(2));
    let lost = lost_metric();
    let healthy = scrape_metric(port, "watcher_pipeline_healthy").unwrap_or(-1.0);
    let kernel = kernel_lost(pid)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "n/a (bpftool)".into());
    let in_feed = *reported.lock().expect("lock");
    rows.push(format!(
        "| overload: reader stopped during 30,000 fork+exit+wait on a 1 MiB ring | {} MB; lost records: kernel counter {kernel}, `loss` records in the feed {in_feed}, metric {lost:.0}; healthy again: {} |",
        rss_kib(pid) / 1024,
        healthy == 1.0
    ));
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = d.wait();
    Ok(rows)
}

/// Sum of every sample of a metric family (`name{…} value` lines).
fn metric_sum(port: u16, family: &str) -> f64 {
    scrape(port)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU time (every thread) of process `pid`, in seconds: the scheduler's
/// nanoseconds on CPU (`/proc/PID/task/*/schedstat`), else the clock ticks
/// of `/proc/PID/stat` (1/100 s: too coarse for a mix of a few seconds).
fn cpu_seconds(pid: u32) -> f64 {
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let ns: Option<u64> = tasks
            .flatten()
            .map(|t| {
                std::fs::read_to_string(t.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            })
            .sum();
        if let Some(ns) = ns.filter(|n| *n > 0) {
            return ns as f64 / 1e9;
        }
    }
    cpu_ticks_seconds(pid)
}

/// (stolen, all) CPU time of every CPU so far, in clock ticks, from the
/// first line of `/proc/stat` (`cpu user nice system idle iowait irq softirq
/// steal …`): `steal` is the time this guest's CPUs were ready to run while
/// the hypervisor ran another guest on them.
fn steal_of(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?;
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = f.take(8).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    (ticks.len() == 8).then(|| (ticks[7], ticks.iter().sum()))
}

/// The share of the machine's CPU time the hypervisor took while a part of
/// the bench ran: a measure of the spell the part ran in, beside the pace.
/// Counted in clock ticks (10 ms): a figure over a part of seconds, not a
/// sample's.
struct Steal(Option<(u64, u64)>);

impl Steal {
    /// The machine's (stolen, all) ticks now.
    fn read() -> Option<(u64, u64)> {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(steal_of)
    }

    fn start() -> Steal {
        Steal(Steal::read())
    }

    /// Stolen time since `start` (or the last lap), in % of all CPU time
    /// ("–" when unknown); the next lap counts from now.
    fn lap(&mut self) -> String {
        let now = Steal::read();
        let was = std::mem::replace(&mut self.0, now);
        match (was, now) {
            (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
                format!("{:.1} %", (s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)
            }
            _ => "–".into(),
        }
    }
}

/// CPU time (user + system, every thread) of process `pid` from its clock ticks, in seconds.
fn cpu_ticks_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces): state is field 3.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// watcher's own CPU per event it processed, for four mixes of real
/// workloads with a generator on every CPU (`watcher run`, default
/// settings, no sink but the metrics): accepted TCP connects,
/// fork+exit+wait, exec of a program with a 3 KB command line, and a mix
/// of binds, failing binds and refused connects.
/// The four workload mixes: (what the bench's tables say, the actor's mix).
const MIXES: [(&str, &str); 4] = [
    ("accepted TCP connects (client + server pairs)", "connects"),
    ("fork + exit + wait", "forks"),
    (
        "exec of a program with a 3 KB command line (fork + exec + exit + wait)",
        "execs",
    ),
    (
        "bind, failing bind (EADDRINUSE), refused connect",
        "failures",
    ),
];

/// What one run of a mix under `watcher run` gave.
struct MixRun {
    events: f64,
    lost: f64,
    /// watcher's CPU (every thread), seconds.
    cpu: f64,
    /// The generators' wall time, seconds.
    took: f64,
}

/// Run `mix` under `watcher run` (default settings) with a generator on
/// each CPU — again and again until `min` has passed — and count what
/// watcher processed, lost and spent.
fn run_mix(watcher: &Path, actor: &Path, dir: &Path, mix: &str, min: Duration) -> Result<MixRun> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let port = free_port();
    let cfg = dir.join("cpu.toml");
    std::fs::write(&cfg, format!("[feed]\nstdout = false\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[health]\nstatus_file = \"{}\"\n", dir.join("cpu.json").display()))?;
    let mut d = Command::new(watcher)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = d.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while scrape(port).is_none() {
        if Instant::now() > deadline {
            let _ = d.kill();
            bail!("watcher run did not serve its metrics");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (e0, l0, c0) = (
        metric_sum(port, "watcher_events_total"),
        metric_sum(port, "watcher_lost_events_total"),
        cpu_seconds(pid),
    );
    let t = Instant::now();
    loop {
        let mut gens = Vec::new();
        for _ in 0..cpus {
            match mix {
                "connects" => {
                    let p = free_port().to_string();
                    let mut srv = spawn(actor, &["serve", &p, "20000"])?;
                    value(&mut srv, "port")?;
                    gens.push(srv);
                    gens.push(spawn(actor, &["clients", &p, "20000"])?);
                }
                "forks" => gens.push(spawn(actor, &["fork-loop", "60000"])?),
                "execs" => gens.push(spawn(actor, &["exec-flood", "6000", "3000", "0"])?),
                _ => gens.push(spawn(actor, &["net-loop", "30000"])?),
            }
        }
        wait_generators(gens, mix)?;
        if t.elapsed() >= min {
            break;
        }
    }
    let took = t.elapsed().as_secs_f64();
    // Until watcher has processed what the generators did (its count stops moving).
    let mut last = -1.0;
    let settle = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let e = metric_sum(port, "watcher_events_total");
        if e == last || Instant::now() > settle {
            break;
        }
        last = e;
    }
    let run = MixRun {
        events: metric_sum(port, "watcher_events_total") - e0,
        lost: metric_sum(port, "watcher_lost_events_total") - l0,
        cpu: cpu_seconds(pid) - c0,
        took,
    };
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = d.wait();
    Ok(run)
}

/// Wait for a round's generators. One that fails (a client whose connect
/// timed out under load) leaves its server waiting for connections that
/// never come: then the round's others are stopped, said once, and the
/// run goes on (its figures are per event processed); a round that takes
/// more than two minutes is stopped the same way.
fn wait_generators(mut gens: Vec<std::process::Child>, mix: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed = None;
    while !gens.is_empty() {
        let mut running = Vec::new();
        for mut g in gens {
            match g.try_wait()? {
                Some(st) if !st.success() => failed = Some(format!("a generator exited with {st}")),
                Some(_) => {}
                None => running.push(g),
            }
        }
        gens = running;
        if failed.is_none() && Instant::now() > deadline {
            failed = Some("a round took more than 120 s".into());
        }
        if let Some(why) = &failed {
            for g in &mut gens {
                let _ = g.kill();
                let _ = g.wait();
            }
            eprintln!("xtask bench: {mix}: {why}; the round's other generators were stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// How long each mix runs for the CPU table: the issue's own measure (15 s
/// of the workload), so that a run's fixed costs — the daemon's idle
/// wakeups, the scrapes while its count settles — weigh what they do on a
/// host that stays busy.
const CPU_MIX_SECS: u64 = 15;

pub fn cpu_per_event(
    watcher: &Path,
    actor: &Path,
    replay: &Path,
    dir: &Path,
) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    for (what, mix) in MIXES {
        // The machine's pace just before: these shared machines run the
        // same code up to twice as fast at one hour as at another.
        let pace = 1e6 / replay_rate(replay, "forks", YARDSTICK_EVENTS)?;
        let mut steal = Steal::start();
        let r = run_mix(watcher, actor, dir, mix, Duration::from_secs(CPU_MIX_SECS))?;
        let steal = steal.lap();
        let per_event = r.cpu * 1e6 / r.events.max(1.0);
        rows.push(format!(
            "| {what} | {:.0} | {:.0}/s | {:.2} s | {per_event:.2} µs | {:.0} | {pace:.3} µs | {:.1} | {steal} |",
            r.events,
            r.events / r.took.max(1e-9),
            r.cpu,
            r.lost,
            per_event / pace.max(1e-9),
        ));
    }
    Ok(rows)
}

/// Events of the fork mix the yardstick replays (a quarter to half a second).
const YARDSTICK_EVENTS: usize = 1_000_000;

/// The replay benchmark's executable (decode → enrich → detect in one
/// thread, no kernel), built before anything is measured: a build that
/// fails says so at once, not after half an hour of measurements.
fn replay_binary(root: &Path) -> Result<PathBuf> {
    let out = Command::new(env!("CARGO"))
        .args([
            "bench",
            "-q",
            "-p",
            "watcher",
            "--bench",
            "replay",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(root)
        .output()?;
    if !out.status.success() {
        bail!(
            "building the replay benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "replay")
        .and_then(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo named no executable for the replay benchmark")
}

/// One run of the replay benchmark: its line.
fn replay_line(bin: &Path, mix: &str, json: bool, events: Option<usize>) -> Result<String> {
    let mut cmd = Command::new(bin);
    cmd.env("REPLAY_MIX", mix)
        .env("REPLAY_JSON", if json { "1" } else { "0" });
    if let Some(n) = events {
        cmd.env("REPLAY_EVENTS", n.to_string());
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().find(|l| l.starts_with("replay")) {
        Some(l) if out.status.success() => Ok(l.to_owned()),
        _ => bail!(
            "the replay benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// The replay of `mix`, findings only: events per second.
fn replay_rate(bin: &Path, mix: &str, events: usize) -> Result<f64> {
    let line = replay_line(bin, mix, false, Some(events))?;
    rate_of(&line).with_context(|| format!("no rate in the replay's line: {line}"))
}

/// The events per second a replay line says.
fn rate_of(line: &str) -> Option<f64> {
    let (_, tail) = line.rsplit_once(": ")?;
    tail.split_once(" events/s")?.0.trim().parse().ok()
}

/// Capacity: each mix offered as fast as its generators go, one on each
/// CPU, for at least `secs` seconds, with default settings: the rate
/// offered and what was lost. (On this machine kind the generators, not
/// watcher, set the most: a row with 0 lost says watcher kept up with
/// everything the machine could offer, and how much of a CPU that took.)
pub fn capacity(watcher: &Path, actor: &Path, dir: &Path, secs: u64) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    for (what, mix) in MIXES {
        let r = run_mix(watcher, actor, dir, mix, Duration::from_secs(secs))?;
        rows.push(format!(
            "| {what} | {:.0} s | {:.0}/s | {:.0} | {:.0} % of one CPU |",
            r.took,
            r.events / r.took.max(1e-9),
            r.lost,
            r.cpu * 100.0 / r.took.max(1e-9),
        ));
    }
    Ok(rows)
}

pub fn bench(root: &Path, watcher: &Path, actor: &Path) -> Result<()> {
    let mut out = String::new();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let when = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    out.push_str(&format!(
        "Measured by `cargo xtask bench` on {} CPUs, kernel {}, release build, {when}.\n\n",
        cpus,
        host.trim()
    ));
    eprintln!("xtask bench: building the replay benchmark …");
    let replay = replay_binary(root)?;
    let dir = std::env::temp_dir().join(format!("watcher-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Removed however the bench ends: a phase that fails (a kind whose
    // samples did not all come) left it, and its load's build, in /tmp.
    let _scratch = Scratch(dir.clone());
    let reps: usize = std::env::var("WATCHER_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cpu_only = std::env::var_os("WATCHER_BENCH_CPU_ONLY").is_some();
    let latency_only = std::env::var_os("WATCHER_BENCH_LATENCY_ONLY").is_some();
    if cpu_only || (std::env::var_os("WATCHER_BENCH_OVERHEAD_ONLY").is_none() && !latency_only) {
        eprintln!("xtask bench: watcher CPU per event, four mixes …");
        let rows = cpu_per_event(watcher, actor, &replay, &dir)?;
        push_table(
            &mut out,
            &format!("### watcher's CPU per event processed (`watcher run`, default settings, a generator on each of the {cpus} CPUs, rounds of it for at least {CPU_MIX_SECS} s)\n\n| mix | events | rate | watcher CPU | per event | lost | pace | per event ÷ pace | stolen |\n|---|---|---|---|---|---|---|---|---|"),
            rows,
        );
        out.push_str("\n*Pace*: the machine's speed just before the row, as the replay benchmark's time per event for the fork mix (decode → enrich → detect on one thread, no kernel; the same code runs at up to twice the pace at one hour as at another on these shared machines). The column after it is the row's figure in those units: a hint of the spell a row ran in, not a correction (the pace moves within a minute, and the live path's cache misses grow more than the replay's work in a slow spell). *Stolen*: the share of the machine's CPU time the hypervisor gave other guests while the row ran (`steal` in `/proc/stat`).\n\n");
        let secs = 30;
        eprintln!("xtask bench: capacity, four mixes for {secs} s each …");
        let rows = capacity(watcher, actor, &dir, secs)?;
        push_table(
            &mut out,
            &format!("### Capacity: each mix offered as fast as its generators go (one on each of the {cpus} CPUs) for at least {secs} s, `watcher run` default settings\n\n| mix | offered for | rate offered | lost | watcher's CPU |\n|---|---|---|---|---|"),
            rows,
        );
        out.push_str("\nOn this machine the generators, not watcher, set the rate: with 0 lost the figure is a floor of watcher's capacity (its CPU says how much room is left).\n\n");
        if cpu_only {
            return partial(&out);
        }
    }
    out.push_str(&format!(
        "### Detection latency: deciding kernel event → finding line readable on stdout (µs), {reps} of each (`fork_storm` at most {FORK_STORMS}: 2.1 s each), `watcher run` with default settings (`zombie.max_age_s = 1`, `fork_storm.sustain_s = 1`, `max_opens_per_user_s = 0`)\n\n"
    ));
    let mut all_stages = Vec::new();
    let mut tables: Vec<Vec<String>> = Vec::new();
    // WATCHER_BENCH_OVERHEAD_ONLY: the overhead rounds alone (a noisy
    // machine's ratios are worth repeating without the 15 minutes of latency runs).
    let overhead_only = std::env::var_os("WATCHER_BENCH_OVERHEAD_ONLY").is_some();
    for loaded in [false, true].into_iter().filter(|_| !overhead_only) {
        let what = if loaded {
            "while the fork/exit/wait loop and a parallel build (`cargo build -j 2`) run"
        } else {
            "quiet machine"
        };
        eprintln!("xtask bench: detection latency, {what} ({reps} of each kind) …");
        let load = if loaded {
            Some(Load::start(root, actor, &dir)?)
        } else {
            None
        };
        let (rows, stages) = latency(watcher, actor, reps, &dir)?;
        drop(load);
        tables.push(rows);
        all_stages.push((what, stages));
    }
    out.push_str("| finding | n | quiet p50 | quiet p99 | quiet p99.9 | quiet max | loaded p50 | loaded p99 | loaded p99.9 | loaded max | stolen, quiet / loaded |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (q, l) in tables
        .first()
        .into_iter()
        .flatten()
        .zip(tables.get(1).into_iter().flatten())
    {
        // "| kind | n | p50 | p99 | p99.9 | max | stolen |" twice → one row.
        let qf: Vec<&str> = q.trim_matches('|').split('|').map(str::trim).collect();
        let lf: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
        if qf.len() == 7 && lf.len() == 7 {
            out.push_str(&format!(
                "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
                qf[0],
                qf[1],
                lf[1],
                qf[2],
                qf[3],
                qf[4],
                qf[5],
                lf[2],
                lf[3],
                lf[4],
                lf[5],
                qf[6],
                lf[6]
            ));
        }
    }
    out.push_str("\n`zombie` is measured from its deadline (exit + `max_age_s`) to the line. *Stolen*: the share of the machine's CPU time the hypervisor gave other guests while the kind's samples ran (`steal` in `/proc/stat`, counted in 10 ms ticks). The bench reads the feed at real-time priority (`SCHED_FIFO`), so that a line's read time is when watcher wrote it, not when the workload left the reader a CPU.\n");
    for (what, stages) in all_stages {
        out.push_str(&format!("\nPer stage, {what} (the daemon's histograms; bucket bounds):\n\n| stage | n | p50 | p99 |\n|---|---|---|---|\n"));
        for r in stages {
            out.push_str(&r);
            out.push('\n');
        }
    }
    if latency_only {
        return partial(&out);
    }
    eprintln!("xtask bench: the kernel programs' own cost (bpf_stats) …");
    let rows = program_costs(watcher, actor, &dir)?;
    let programs_only = std::env::var_os("WATCHER_BENCH_PROGRAMS_ONLY").is_some();
    out.push_str("\n### The kernel programs' own time per run (`kernel.bpf_stats_enabled`), a fork/exit/wait loop (20,000) and a bind+bind+connect loop (20,000)\n\n| program | runs, default attachment | ns/run | runs, through tracefs | ns/run |\n|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&r);
        out.push('\n');
    }
    out.push_str("\nThe default attachment on this host: raw tracepoints (the socket hooks BTF-typed, `_btf`), bind and connect through their exit tracepoints alone (`_regs`); through tracefs, every hook's classic tracepoint and bind and connect as entry and exit pairs. A program attached through tracefs runs after the kernel has built its trace record (not in its ns/run); the overhead rows below have both (`watcher-tracefs`: `WATCHER_ATTACH=tracefs`).\n");
    if programs_only {
        return partial(&out);
    }
    let rounds: usize = std::env::var("WATCHER_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    eprintln!("xtask bench: overhead ({rounds} interleaved rounds) …");
    let rows = overhead(watcher, actor, rounds, &dir)?;
    out.push_str(&format!(
        "\n### Overhead: workload time with a tracer ÷ median time without ({rounds} interleaved rounds; workload on CPU 1, tracer on CPU 0)\n\n"
    ));
    out.push_str(
        "| workload | tracer | min | median | max | median time |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&r);
        out.push('\n');
    }
    out.push_str("\n`watcher` is `watcher run` with its default configuration (findings to stdout, canary on); `bpftrace` prints every event of the same tracepoints.\n");
    if overhead_only {
        return partial(&out);
    }
    eprintln!("xtask bench: userspace throughput …");
    let replay_all = replay_line(&replay, "", true, None)?;
    let replay_f = replay_line(&replay, "", false, None)?;
    out.push_str(
        "\n### Userspace throughput: decode → enrich → detect → serialize, one thread\n\n```\n",
    );
    out.push_str(&replay_all);
    out.push('\n');
    out.push_str(&replay_f);
    out.push_str("\n```\n");
    eprintln!("xtask bench: memory and overload …");
    let rows = memory(watcher, actor, &dir)?;
    out.push_str("\n### Memory (resident) of `watcher run`, and overload\n\n| situation | result |\n|---|---|\n");
    for r in rows {
        out.push_str(&r);
        out.push('\n');
    }
    print!("{out}");
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let mut f = std::fs::File::create(dir.join("latest.md"))?;
    f.write_all(out.as_bytes())?;
    let doc = root.join("docs").join("performance.md");
    write_between_marks(&doc, &out)?;
    eprintln!(
        "xtask bench: written to {} and {}",
        dir.join("latest.md").display(),
        doc.display()
    );
    Ok(())
}

/// The bench's scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A heading with its table's header lines, then one line per row.
fn push_table(out: &mut String, head: &str, rows: Vec<String>) {
    out.push_str(head);
    out.push('\n');
    for r in rows {
        out.push_str(&r);
        out.push('\n');
    }
}

/// A run of some parts only (`WATCHER_BENCH_*_ONLY`): printed, not written.
fn partial(out: &str) -> Result<()> {
    print!("{out}");
    Ok(())
}

/// Where in docs/performance.md a full `cargo xtask bench` run goes: what is
/// between these lines is replaced by the run's tables (never pasted by hand).
const BEGIN_MARK: &str = "<!-- cargo xtask bench: begin (generated, do not edit) -->";
const END_MARK: &str = "<!-- cargo xtask bench: end -->";

/// Replace what is between the marks in `doc` with `out` (the marks kept).
fn write_between_marks(doc: &Path, out: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN_MARK), text.find(END_MARK)) else {
        bail!(
            "{} has no `{BEGIN_MARK}` … `{END_MARK}` section for the run",
            doc.display()
        );
    };
    if e < b {
        bail!("{}: the bench marks are out of order", doc.display());
    }
    // (Headings one level down: the run sits under the document's own.)
    let body = out.replace("\n### ", "\n#### ");
    let new = format!(
        "{}{BEGIN_MARK}\n\n{}\n{}",
        &text[..b],
        body.trim(),
        &text[e..]
    );
    std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{rate_of, steal_of};

    #[test]
    fn the_stolen_time_is_the_eighth_figure_of_the_cpu_line() {
        let stat = "cpu  3327 0 1432 10320 170 0 37 71 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            steal_of(stat),
            Some((71, 3327 + 1432 + 10320 + 170 + 37 + 71))
        );
        assert_eq!(steal_of("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(steal_of("cpu  1 2 3\n"), None, "a kernel without steal");
        assert_eq!(steal_of(""), None);
    }

    #[test]
    fn a_replay_line_gives_its_rate() {
        let line = "replay (findings only, forks): 1000000 events in 0.440 s on one thread: 2273924 events/s (0 MB of JSON, 2 findings)";
        assert_eq!(rate_of(line), Some(2273924.0));
        assert_eq!(rate_of("replay: nothing measured"), None);
    }
}
