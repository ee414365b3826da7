//! Crash loops and their look-alikes with real supervisors and probes: a real
//! supervisord restarting a healthy program on `supervisorctl restart` (a
//! stop, not a crash: nothing), supervisord giving up on a program that exits
//! 1 at start (the loop, naming supervisord and the exit code), and a shell
//! loop whose curl waits for a dead dependency (`connect_failures` only).
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use watcher_tests::{
    eventually, finding, free_port, is, num, require_root, require_tool, temp_dir, text, Feed,
    Value,
};

/// A supervisord of its own, with `programs` (ini sections), stopped on drop.
struct Supervisord {
    child: Child,
    conf: PathBuf,
}

impl Supervisord {
    fn start(dir: &Path, programs: &str) -> Supervisord {
        require_tool("supervisord");
        let d = dir.display();
        let conf = dir.join("supervisord.conf");
        std::fs::write(
            &conf,
            format!(
                "[unix_http_server]\nfile={d}/s.sock\n\n[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}\n\n\
                 [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [supervisorctl]\nserverurl=unix://{d}/s.sock\n\n{programs}"
            ),
        )
        .expect("config");
        let child = Command::new("supervisord")
            .args(["-c", &conf.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("supervisord");
        Supervisord { child, conf }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ctl(&self, args: &[&str]) {
        let out = Command::new("supervisorctl")
            .args(["-c", &self.conf.to_string_lossy()])
            .args(args)
            .output()
            .expect("supervisorctl");
        assert!(
            out.status.success() || args[0] == "status",
            "supervisorctl {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        // SIGTERM: supervisord stops its programs, then exits.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn parent_is(v: &Value, pid: u32) -> bool {
    num(v, &["process", "parent", "pid"]) == Some(pid as u64)
}

/// Everything the detectors decided before `now` is in the feed once a
/// process started after it is: its exec is the marker.
fn marker(feed: &Feed, tag: &str) {
    let arg = format!("watcher-marker-{tag}-{}", std::process::id());
    let mut c = Command::new("true").arg(&arg).spawn().expect("true");
    let _ = c.wait();
    feed.wait_for("the marker's exec", |v| {
        is(v, "exec")
            && v["args"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(arg.as_str())))
    });
}

#[test]
fn supervisorctl_restarts_of_a_healthy_program_are_not_a_crash_loop() {
    if !require_root() {
        return;
    }
    let feed = Feed::shared();
    let dir = temp_dir("supervisor-healthy");
    let sup = Supervisord::start(
        &dir,
        "[program:sleeper]\ncommand=sleep 1000\nautorestart=true\n",
    );
    let spid = sup.pid();
    let is_sleeper = |v: &Value| {
        is(v, "exec")
            && parent_is(v, spid)
            && text(v, &["process", "command_line"]) == Some("sleep 1000")
    };
    let first = feed.wait_for("supervisord's sleep", is_sleeper);
    let mut pids = vec![num(&first, &["process", "pid"]).unwrap()];
    for _ in 0..6 {
        sup.ctl(&["restart", "sleeper"]);
        let prev = *pids.last().unwrap();
        // The stopped instance's end names supervisord as the sender.
        let exit = feed.wait_for("the stopped sleep's exit", |v| {
            is(v, "exit")
                && num(v, &["process", "pid"]) == Some(prev)
                && v["exit"]["process_exited"] == true
        });
        assert_eq!(
            num(&exit, &["exit", "cause", "sender", "pid"]),
            Some(spid as u64),
            "{exit}"
        );
        assert_eq!(
            text(&exit, &["exit", "cause", "sender", "relation"]),
            Some("parent"),
            "{exit}"
        );
        let next = feed.wait_for("the restarted sleep", |v| {
            is_sleeper(v) && !pids.contains(&num(v, &["process", "pid"]).unwrap_or(0))
        });
        pids.push(num(&next, &["process", "pid"]).unwrap());
    }
    marker(&feed, "supervisor-healthy");
    let storms: Vec<Value> = feed
        .records()
        .into_iter()
        .filter(|v| is(v, "finding") && text(v, &["kind"]) == Some("respawn_storm"))
        .filter(|v| text(v, &["summary"]).is_some_and(|s| s.contains("sleep 1000")))
        .collect();
    assert!(
        storms.is_empty(),
        "six restarts by its own supervisor are stops, not crashes: {storms:?}"
    );
}

#[test]
fn supervisord_giving_up_on_a_program_that_exits_1_at_start_is_reported() {
    if !require_root() {
        return;
    }
    let feed = Feed::shared();
    let dir = temp_dir("supervisor-flaky");
    let tag = format!("flaky-{}", std::process::id());
    // startretries=3 (the default): four starts 1, 2, 3 s apart, then FATAL.
    // startsecs=5, not the default 1: supervisord decides a start succeeded
    // when it next looks (its loop wakes once a second) and startsecs have
    // passed; on a busy machine it once looked late, took a 10 ms run for a
    // successful start, restarted it as an unexpected exit and never gave up.
    let sup = Supervisord::start(
        &dir,
        &format!("[program:flaky]\ncommand=sh -c \"echo {tag}; exit 1\"\nstartsecs=5\n"),
    );
    let spid = sup.pid();
    let mine = |v: &Value| text(v, &["process", "command_line"]).is_some_and(|c| c.contains(&tag));
    // The four crashes (each a wait with the deadline), then the finding.
    let mut ended = Vec::new();
    for n in 0..4 {
        let exit = feed.wait_for(&format!("crash {} of the flaky program", n + 1), |v| {
            is(v, "exit")
                && mine(v)
                && v["exit"]["process_exited"] == true
                && !ended.contains(&num(v, &["process", "pid"]).unwrap_or(0))
        });
        assert_eq!(num(&exit, &["process", "exit_code"]), Some(1), "{exit}");
        ended.push(num(&exit, &["process", "pid"]).unwrap());
    }
    // The loop is found (as a crash loop once it has restarted `restarts`
    // times, or as given up short of it) and, once supervisord stops
    // restarting it (FATAL), said to be down. Given up is decided when the
    // next restart is overdue: up to 2.5 times supervisord's last delay
    // (3 s, plus its loop's second, longer when the machine is loaded)
    // after the last crash — supervisord's timing, not watcher's.
    let backoff_bound = std::time::Duration::from_secs(40);
    let open = feed.wait_for_related_within(
        backoff_bound,
        "respawn_storm for the flaky program",
        |v| is(v, "finding") || mine(v) || num(v, &["process", "pid"]) == Some(spid as u64),
        |v| {
            finding(v, "respawn_storm", "open")
                && text(v, &["summary"]).is_some_and(|s| s.contains(&tag))
        },
    );
    let summary = text(&open, &["summary"]).unwrap();
    assert!(
        summary.contains("by supervisord") && summary.contains("exit code 1"),
        "{summary}"
    );
    assert_eq!(
        num(&open, &["details", "restarter", "pid"]),
        Some(spid as u64),
        "{open}"
    );
    let down = feed.wait_for_related_within(
        backoff_bound,
        "the finding saying supervisord gave up",
        |v| is(v, "finding") && v["id"] == open["id"],
        |v| v["id"] == open["id"] && text(v, &["summary"]).is_some_and(|s| s.contains("is down")),
    );
    assert_eq!(down["details"]["gave_up"], true, "{down}");
    drop(sup);
}

#[test]
fn a_curl_loop_waiting_for_a_dead_dependency_is_connect_failures_not_a_crash_loop() {
    if !require_root() {
        return;
    }
    require_tool("curl");
    let feed = Feed::shared();
    let port = free_port();
    let script = format!("until curl -sf http://127.0.0.1:{port}/; do sleep 0.15; done");
    // Killed when the test ends, also when it fails.
    let shell = watcher_tests::ChildGuard::spawn(Command::new("sh").args(["-c", &script]));
    let sh_pid = shell.id();
    let f = feed.wait_for_related(
        "connect_failures for the dead port",
        |v| is(v, "finding"),
        |v| {
            finding(v, "connect_failures", "open")
                && text(v, &["details", "destination"])
                    == Some(format!("127.0.0.1:{port}").as_str())
        },
    );
    assert!(
        text(&f, &["summary"]).is_some_and(|s| s.contains("curl")),
        "{f}"
    );
    // Enough curl restarts for a crash loop many times over.
    eventually("a dozen curl exits with code 7", || {
        let n = feed
            .records()
            .iter()
            .filter(|v| {
                is(v, "exit") && num(v, &["process", "parent", "pid"]) == Some(sh_pid as u64)
            })
            .filter(|v| num(v, &["process", "exit_code"]) == Some(7))
            .count();
        (n >= 12).then_some(())
    });
    marker(&feed, "curl-loop");
    drop(shell);
    let storms: Vec<Value> = feed
        .records()
        .into_iter()
        .filter(|v| is(v, "finding") && text(v, &["kind"]) == Some("respawn_storm"))
        .filter(|v| text(v, &["summary"]).is_some_and(|s| s.contains("curl")))
        .collect();
    assert!(
        storms.is_empty(),
        "curl's exit code 7 is an answer: {storms:?}"
    );
}

/// The names in the kernel's list of programs whose execs wake watcher's
/// reader at once (`EXEC_WAKE` of the watcher `pid`, read with bpftool).
fn exec_wake_names(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for e in watcher_tests::bpf_map_entries(pid, "EXEC_WAKE") {
        // ["0x61", "0x62", …]: the comm's bytes up to its NUL.
        let bytes: Vec<u8> = watcher_tests::bpf_bytes(&e["key"])
            .into_iter()
            .take_while(|b| *b != 0)
            .collect();
        names.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    names
}

/// Execs that can decide a finding wake the reader at once, the others ride
/// on the next drain: the kernel is told which programs' execs can decide —
/// a program at half its instance limit or more, a program whose crash
/// waits for its restart — and only while they can. (Each program here is
/// the actor under a name of its own: the kernel's `comm` is the file's.)
#[test]
fn the_programs_whose_next_exec_can_decide_are_listed_in_the_kernel_while_they_can() {
    if !require_root() {
        return;
    }
    require_tool("bpftool");
    let dir = temp_dir("exec-wake");
    let cfg = watcher_tests::write_config(&dir, "[detect.respawn_storm]\nrestart_within_s = 1\n");
    let feed = Feed::start(&["trace", "--json", "--config", &cfg.to_string_lossy()]);
    let tag = std::process::id() % 100_000;
    let copy = |name: &str| {
        let p = dir.join(format!("{name}{tag}"));
        std::fs::copy(env!("CARGO_BIN_EXE_actor"), &p).expect("copy the actor");
        p
    };
    let (few, many, crashy) = (copy("wfew"), copy("wmany"), copy("wcrash"));
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let listed = |n: &str| exec_wake_names(feed.pid).iter().any(|x| x == n);
    let start = |p: &Path| {
        watcher_tests::ChildGuard::spawn(
            Command::new(p)
                .args(["sleep-ms", "120000"])
                .stdout(Stdio::null()),
        )
    };
    // 4 instances of one program (limit 10), then 5 of another.
    let _few: Vec<_> = (0..4).map(|_| start(&few)).collect();
    let mut five: Vec<_> = (0..5).map(|_| start(&many)).collect();
    eventually("the program at 5 instances of 10 listed", || {
        listed(&name(&many)).then_some(())
    });
    assert!(
        !listed(&name(&few)),
        "4 instances of 10: its execs decide nothing (read before the other's fifth)"
    );
    // Back to 4: let go.
    drop(five.pop());
    eventually("the program back at 4 no longer listed", || {
        (!listed(&name(&many))).then_some(())
    });
    // A crash: its restart would decide, until none comes in time (1 s here).
    let st = Command::new(&crashy)
        .args(["crash", "5"])
        .stdout(Stdio::null())
        .status()
        .expect("crash");
    assert_eq!(st.code(), Some(1));
    eventually("the crashed program listed", || {
        listed(&name(&crashy)).then_some(())
    });
    eventually(
        "the crashed program not restarted: no longer listed",
        || (!listed(&name(&crashy))).then_some(()),
    );
}
