//! `watcher run` against real components: its file, socket and syslog sinks
//! (a real rsyslog), the metrics endpoint checked with promtool, SIGHUP
//! rotation and reload, the canary that reports a blind pipeline, the unit's
//! capability set, and the JSON Schema validated against real output.
//!
//! Every watcher, actor and helper a test starts is stopped when the test
//! ends, also when it fails (Feed, Running, ChildGuard and Stopped drop them).
use std::{
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::sys::signal::Signal;
use watcher_tests::{
    actor, actor_any, eventually, eventually_explained, finding, finding_pids, free_port, metric,
    require_root, scrape, spawn_actor, temp_dir, text, write_config, Feed, Value,
};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

/// The tests that flood the host (tens of thousands of forks) take turns:
/// each watcher sees every process on the host, so two floods at once would
/// make each other's canary late.
static FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn flood_turn() -> std::sync::MutexGuard<'static, ()> {
    FLOOD.lock().unwrap_or_else(|e| e.into_inner())
}

fn cause_port_conflict() -> (u32, u32) {
    let mut holder = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0"]);
    let port = holder.value("port");
    let failing = actor_any(ACTOR, &["bind-port", &port]);
    let hp = holder.pid;
    holder.finish();
    (failing.pid, hp)
}

fn read_file(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn daemon_feeds_file_socket_and_metrics_and_reloads_on_sighup() {
    if !require_root() {
        return;
    }
    let _turn = flood_turn();
    let dir = temp_dir("daemon");
    let port = free_port();
    let feed_file = dir.join("feed.ndjson");
    let sock = dir.join("feed.sock");
    let status = dir.join("status.json");
    let config = format!(
        "[feed]\ntypes = [\"all\"]\nstdout = true\nfile = \"{}\"\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[health]\ncanary_interval_s = 0.5\nstatus_file = \"{}\"\n",
        feed_file.display(),
        sock.display(),
        status.display()
    );
    let cfg = write_config(&dir, &config);
    // A listener from before the daemon starts: known from the kernel's
    // table at start (its socket inode too), not followed by the kernel
    // side as the sockets bound while it runs are.
    let mut holding = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0"]);
    let held = holding.value("port");
    let d = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    let started = d.wait_stderr("running:");
    assert!(
        started.contains("file ")
            && started.contains("socket ")
            && started.contains("metrics on http://127.0.0.1:"),
        "{started}"
    );
    // The socket is the owner's only.
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket permissions {mode:o}");

    // Two consumers: one reads everything, one never reads.
    let fast = UnixStream::connect(&sock).expect("consumer A");
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(fast).lines().map_while(Result::ok) {
            g.lock().unwrap().push(l);
        }
    });
    let mut stalled = UnixStream::connect(&sock).expect("consumer B");
    // Both are accepted (the daemon says so) before what follows: a record
    // caused before its consumer was accepted is not that consumer's.
    let metrics_addr = format!("127.0.0.1:{port}");
    eventually("both consumers accepted", || {
        (metric(&scrape(&metrics_addr), "watcher_feed_socket_consumers") == Some(2.0)).then_some(())
    });
    let m = actor(ACTOR, &["exit", "0"]);
    let pid = format!("\"pid\":{},", m.pid);
    eventually("the reading consumer gets records", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&pid))
            .then_some(())
    });

    // A finding reaches stdout, the file and the reading consumer. (The
    // holder listens until the finding is out: a listener gone before the
    // lookup is a helper's question, not one answered in place.)
    let failing = actor_any(ACTOR, &["bind-port", &held]).pid;
    let holder = holding.pid;
    let f = d.wait_for("port_conflict", |v| {
        finding(v, "port_conflict", "open")
            && finding_pids(v, Some("failing")) == vec![failing as u64]
    });
    holding.finish();
    assert_eq!(finding_pids(&f, Some("holder")), vec![holder as u64]);
    let id = text(&f, &["id"]).unwrap().to_owned();
    eventually("the finding in the file", || {
        read_file(&feed_file).contains(&id).then_some(())
    });
    eventually("the finding on the socket", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&id))
            .then_some(())
    });

    // A flood: the stalled consumer's queue overflows; the other one and the pipeline go on.
    let flood = actor(ACTOR, &["fork-fast", "2500", "2000"]);
    let forks = flood.get("forks") as f64;
    let flood_pid = flood.pid;
    // Its own exit (not a child's, whose record names it as the parent): every fork came before.
    let flood_exit = move |l: &String| {
        l.contains("\"type\":\"exit\"")
            && l.contains(&format!("\"process\":{{\"pid\":{flood_pid},"))
    };
    eventually("the reading consumer keeps up through the flood", || {
        got.lock().unwrap().iter().any(&flood_exit).then_some(())
    });
    let m = eventually("socket drops counted", || {
        let m = scrape(&metrics_addr);
        (metric(&m, "watcher_sink_dropped_total{sink=\"socket\"}").unwrap_or(0.0) > 0.0)
            .then_some(m)
    });
    // Healthy again once the flood is read (the canary may be late during it).
    eventually("the pipeline healthy after the flood", || {
        (metric(&scrape(&metrics_addr), "watcher_pipeline_healthy") == Some(1.0)).then_some(())
    });
    // Every fork is either counted or reported lost (other tests flood the
    // host at the same time). (The counters are published once a second.)
    let accounted = |m: &str| {
        metric(m, "watcher_events_total{type=\"fork\"}").unwrap_or(0.0)
            + metric(m, "watcher_lost_events_total{type=\"fork\"}").unwrap_or(0.0)
    };
    eventually_explained(
        Duration::from_secs(10),
        "every fork of the flood counted or counted lost",
        || (accounted(&scrape(&metrics_addr)) >= forks).then_some(()),
        || format!("{forks} forks: {}", scrape(&metrics_addr)),
    );
    assert!(
        metric(
            &m,
            "watcher_findings_total{kind=\"port_conflict\",state=\"open\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
    // The holder (from before the start) was named from the kernel's socket
    // list (sock_diag, on a worker) and the socket inode the start's seed
    // read: no /proc.
    assert!(
        metric(&m, "watcher_socket_lookups_by_inode_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    // Every stage's latency is measured: records read — the failing bind as
    // one that can decide (the kernel said so in its header), the forks and
    // execs as bulk —, the port conflict decided and written.
    for stage in [
        "kernel_to_read",
        "kernel_to_read_deciding",
        "kernel_to_read_bulk",
        "read_to_decided",
        "decided_to_written",
    ] {
        let n = metric(
            &m,
            &format!("watcher_stage_latency_seconds_count{{stage=\"{stage}\"}}"),
        )
        .unwrap_or(0.0);
        assert!(n >= 1.0, "stage {stage} measured {n} times: {m}");
    }
    // The stalled consumer, reading at last, is told what it missed.
    stalled
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut r = BufReader::new(&mut stalled);
    let mut told = None;
    let mut line = String::new();
    while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if line.contains("consumer_too_slow") {
            told = Some(line.clone());
            break;
        }
        line.clear();
    }
    let told: Value =
        serde_json::from_str(told.expect("a loss record for the slow consumer").trim()).unwrap();
    assert!(told["loss"]["count"].as_u64().unwrap() > 0, "{told}");

    // logrotate: move the file away, SIGHUP, the feed continues in a new file.
    let rotated = dir.join("feed.ndjson.1");
    std::fs::rename(&feed_file, &rotated).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_stderr("configuration reloaded");
    let marker = actor(ACTOR, &["exit", "0"]);
    let m1 = format!("\"pid\":{},", marker.pid);
    eventually("records in the reopened file", || {
        read_file(&feed_file).contains(&m1).then_some(())
    });
    assert!(
        !read_file(&rotated).contains(&m1),
        "the rotated file is no longer written"
    );

    // A bad config on reload is refused; the running one stays.
    std::fs::write(&cfg, "[feed]\nbogus = 1\n").unwrap();
    d.signal(Signal::SIGHUP);
    let refused = d.wait_stderr("reload refused");
    assert!(
        refused.contains("w.toml:2:") && refused.contains("bogus"),
        "{refused}"
    );
    let marker = actor(ACTOR, &["exit", "0"]);
    let m2 = format!("\"pid\":{},", marker.pid);
    eventually("still writing after a refused reload", || {
        read_file(&feed_file).contains(&m2).then_some(())
    });
    let st: Value = serde_json::from_str(&read_file(&status)).expect("status file");
    assert_eq!(st["healthy"], true, "{st}");

    // SIGTERM: drain, clean up, exit 0.
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!sock.exists(), "the socket is removed");
    assert!(
        d.stderr().iter().any(|l| l.contains("stopped:")),
        "{:?}",
        d.stderr()
    );
}

/// The metrics exposition of a daemon that has seen a finding, a loss and
/// every pipeline stage passes `promtool check metrics` (Prometheus' own
/// linter; not in the kernel matrix's guests, so apart from the rest).
#[test]
fn the_metrics_exposition_passes_promtool() {
    if !require_root() {
        return;
    }
    let Some(promtool) = ["/usr/bin/promtool", "/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        watcher_tests::unavailable(
            "promtool is needed (Debian: prometheus); `cargo xtask test` installs it",
        );
        return;
    };
    let (d, addr) = loss_daemon("promtool", &[]);
    let (failing, _) = cause_port_conflict();
    d.wait_for("the port conflict", |v| {
        finding(v, "port_conflict", "open")
            && finding_pids(v, Some("failing")).contains(&(failing as u64))
    });
    let m = eventually("the finding and every stage in the metrics", || {
        let m = scrape(&addr);
        let stages = ["kernel_to_read", "read_to_decided", "decided_to_written"]
            .iter()
            .all(|st| {
                metric(
                    &m,
                    &format!("watcher_stage_latency_seconds_count{{stage=\"{st}\"}}"),
                )
                .unwrap_or(0.0)
                    >= 1.0
            });
        (stages
            && metric(
                &m,
                "watcher_findings_total{kind=\"port_conflict\",state=\"open\"}",
            )
            .unwrap_or(0.0)
                >= 1.0)
            .then_some(m)
    });
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), m.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{m}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

/// Each sink writes on its own thread behind a bounded queue: a consumer
/// that stops reading stdout makes stdout drop (counted, then told), while
/// the file sink and detection go on.
#[test]
fn a_stalled_stdout_drops_for_itself_and_never_holds_up_the_file() {
    if !require_root() {
        return;
    }
    let _turn = flood_turn();
    let dir = temp_dir("stalled-stdout");
    let port = free_port();
    let feed_file = dir.join("feed.ndjson");
    // (A queue of 1,024: the file sink takes each drain's records in one
    // go — fork-fast's ~150 in a 50 ms bulk period — and must not drop
    // them while stdout, stalled, fills its own.)
    let config = format!(
        "[feed]\ntypes = [\"all\"]\nstdout = true\nfile = \"{}\"\nsink_queue = 1024\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[health]\nstatus_file = \"{}\"\n",
        feed_file.display(),
        dir.join("status.json").display()
    );
    let cfg = write_config(&dir, &config);
    let d = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    d.wait_stderr("running:");
    d.pause_reading(true);
    let addr = format!("127.0.0.1:{port}");
    let dropped = |m: &str, sink: &str| {
        metric(m, &format!("watcher_sink_dropped_total{{sink=\"{sink}\"}}")).unwrap_or(0.0)
    };
    // Records until stdout's pipe (64 KiB) and its queue (1,024) are full
    // (three per child: fork, exit, reap; ~300 fill the pipe).
    let mut m = scrape(&addr);
    for _ in 0..10 {
        if dropped(&m, "stdout") > 0.0 {
            break;
        }
        actor(ACTOR, &["fork-fast", "300", "1000"]);
        m = scrape(&addr);
    }
    assert!(dropped(&m, "stdout") > 0.0, "stdout never dropped: {m}");
    // stdout is still not read: a finding reaches the file all the same.
    let (failing, holder) = cause_port_conflict();
    let pids = format!("\"pid\":{failing},");
    eventually(
        "the port conflict in the file while stdout is stalled",
        || {
            read_file(&feed_file)
                .lines()
                .any(|l| {
                    l.contains("\"kind\":\"port_conflict\"")
                        && l.contains(&pids)
                        && l.contains(&format!("\"pid\":{holder},"))
                })
                .then_some(())
        },
    );
    let m = eventually("the pipeline healthy while stdout is stalled", || {
        let m = scrape(&addr);
        (metric(&m, "watcher_pipeline_healthy") == Some(1.0)).then_some(m)
    });
    assert_eq!(dropped(&m, "file"), 0.0, "{m}");
    assert!(
        metric(
            &m,
            "watcher_sink_write_latency_seconds_count{sink=\"file\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "{m}"
    );
    // Read again: stdout is told how many records it missed.
    d.pause_reading(false);
    let told = d.wait_for("a loss record for stdout", |v| {
        v["type"] == "loss" && v["loss"]["reason"] == "sink_too_slow"
    });
    assert!(told["loss"]["count"].as_u64().unwrap_or(0) > 0, "{told}");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

#[test]
fn syslog_sink_reaches_a_real_rsyslog() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("rsyslog");
    let rs = watcher_tests::Rsyslog::start(&dir);
    let (log_sock, out) = (rs.socket.clone(), rs.out.clone());
    let port = free_port();
    let cfg = write_config(
        &dir,
        &format!("[feed]\ntypes = [\"finding\"]\nstdout = false\nsyslog = true\nsyslog_socket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[health]\nstatus_file = \"{}\"\n", log_sock.display(), dir.join("status.json").display()),
    );
    let d = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    d.wait_stderr("running:");
    let run = actor(ACTOR, &["notavail"]);
    let line = eventually("the finding in rsyslog's file", || {
        read_file(&out)
            .lines()
            .find(|l| {
                l.contains("address_unavailable") && l.contains(&format!("\"pid\":{},", run.pid))
            })
            .map(str::to_owned)
    });
    let v: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("rsyslog's message is not the JSON record ({e}): {line}"));
    assert_eq!(text(&v, &["type"]), Some("finding"));
    assert_eq!(text(&v, &["kind"]), Some("address_unavailable"));
    // Sent by the deciding thread itself (rsyslog reads its socket: it
    // could take the datagram at once), not by the sink's thread.
    let addr = format!("127.0.0.1:{port}");
    eventually("the finding sent to syslog at once", || {
        (metric(
            &scrape(&addr),
            "watcher_sink_written_at_once_total{sink=\"syslog\"}",
        )
        .unwrap_or(0.0)
            >= 1.0)
            .then_some(())
    });
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
    drop(rs);
}

#[test]
fn a_blind_pipeline_is_reported_at_once() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("blind");
    let port = free_port();
    let status = dir.join("status.json");
    let cfg = write_config(
        &dir,
        &format!("[feed]\ntypes = [\"finding\"]\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[health]\ncanary_interval_s = 0.3\ncanary_deadline_s = 2\nstatus_file = \"{}\"\n", status.display()),
    );
    // The fault drill detaches every program after 3 s: running, but blind.
    let d = Feed::start_with(
        &["run", "--config", cfg.to_str().unwrap()],
        &[("WATCHER_FAULT_DRILL", "detach-after=3")],
        &[],
    );
    d.wait_stderr("running:");
    let ok = Command::new(watcher_tests::watcher_bin())
        .args(["check", "--daemon", "--status", status.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let h = d.wait_for("a health record saying blind", |v| {
        text(v, &["type"]) == Some("health") && text(v, &["health", "status"]) == Some("blind")
    });
    assert!(
        text(&h, &["health", "reason"]).unwrap().contains("canary"),
        "{h}"
    );
    let m = scrape(&format!("127.0.0.1:{port}"));
    assert_eq!(metric(&m, "watcher_pipeline_healthy"), Some(0.0), "{m}");
    let bad = eventually("check --daemon says blind", || {
        let o = Command::new(watcher_tests::watcher_bin())
            .args(["check", "--daemon", "--status", status.to_str().unwrap()])
            .output()
            .unwrap();
        (!o.status.success()).then_some(o)
    });
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("BLIND"),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
    validate_all(&d.records());
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

/// Capability numbers of the unit `watcher install --root DIR` writes for this kernel.
fn unit_caps(dir: &std::path::Path) -> Vec<u32> {
    let root = dir.join("install-root");
    let out = Command::new(watcher_tests::watcher_bin())
        .args(["install", "--root"])
        .arg(&root)
        .output()
        .expect("watcher install");
    assert!(
        out.status.success(),
        "watcher install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = read_file(&root.join("etc/systemd/system/watcher.service"));
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet")
        .to_owned();
    let number = |name: &str| match name {
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("the unit keeps {other}, which this test does not know"),
    };
    let caps: Vec<u32> = line.split_whitespace().map(number).collect();
    // Ambient must grant what the bounding set keeps.
    assert!(
        unit.contains(&format!("AmbientCapabilities={line}\n")),
        "{unit}"
    );
    caps
}

fn perf_event_paranoid() -> i32 {
    read_file(std::path::Path::new("/proc/sys/kernel/perf_event_paranoid"))
        .trim()
        .parse()
        .expect("perf_event_paranoid")
}

#[test]
fn a_kernel_that_restricts_perf_events_is_explained_in_one_line() {
    if !require_root() {
        return;
    }
    // Only the four capabilities the unit keeps everywhere. Debian's and
    // Ubuntu's kernels at perf_event_paranoid 3 (Debian's default, so in the
    // VMs) refuse the attach; elsewhere (this host: 2) watcher starts.
    let out = Command::new(ACTOR)
        .args(["keep-caps", "2,19,38,39", "--"])
        .arg(watcher_tests::watcher_bin())
        .arg("check")
        .output()
        .expect("watcher check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let load = text
        .lines()
        .find(|l| l.contains("load "))
        .unwrap_or_else(|| panic!("no load line: {text}"))
        .to_owned();
    let level = perf_event_paranoid();
    // Upstream treats levels above 2 as 2; the distributions' patch restricts.
    let version = read_file(std::path::Path::new("/proc/sys/kernel/version"));
    let restricts = level > 2 && (version.contains("Debian") || version.contains("Ubuntu"));
    if restricts {
        assert!(load.starts_with("FAIL"), "{text}");
        assert!(
            load.contains(&format!("perf_event_paranoid is {level}"))
                && load.contains("CAP_SYS_ADMIN"),
            "{load}"
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
    } else {
        assert!(
            load.starts_with("ok"),
            "paranoid {level}, {version}: {text}"
        );
    }
}

#[test]
fn the_units_capability_set_is_enough() {
    if !require_root() {
        return;
    }
    // As root, with only the capabilities the systemd unit keeps.
    let dir = temp_dir("caps");
    let status = dir.join("status.json");
    let cfg = write_config(
        &dir,
        &format!(
            "[metrics]\nlisten = \"\"\n[health]\ncanary_interval_s = 0.3\nstatus_file = \"{}\"\n",
            status.display()
        ),
    );
    // The set the unit `watcher install` writes on this kernel keeps, applied
    // like `setpriv --bounding-set=-all,+… --inh-caps=-all` (also where setpriv has no such option).
    let caps = unit_caps(&dir);
    let list = caps
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let d = Feed::start_with(
        &["run", "--config", cfg.to_str().unwrap()],
        &[],
        &[ACTOR, "keep-caps", &list, "--"],
    );
    d.wait_stderr("running:");
    // Without CAP_SYS_NICE (the unit sets Nice= instead) it cannot take
    // its [daemon] nice, says so in one line, and runs on.
    let said: Vec<String> = d
        .stderr()
        .into_iter()
        .filter(|l| l.contains("nice"))
        .collect();
    assert!(
        said.len() == 1
            && said[0].contains("cannot run at nice -10 ([daemon] nice)")
            && said[0].contains("CAP_SYS_NICE"),
        "{said:?}"
    );
    let status_text = read_file(std::path::Path::new(&format!("/proc/{}/status", d.pid)));
    let eff = status_text
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap()
        .to_owned();
    let expect = caps.iter().fold(0u64, |m, c| m | 1 << c);
    assert_eq!(
        u64::from_str_radix(eff.split_whitespace().nth(1).unwrap(), 16).unwrap(),
        expect,
        "{eff}"
    );
    let (failing, holder) = cause_port_conflict();
    let f = d.wait_for("port_conflict under the reduced capability set", |v| {
        finding(v, "port_conflict", "open")
            && finding_pids(v, Some("failing")) == vec![failing as u64]
    });
    assert_eq!(
        finding_pids(&f, Some("holder")),
        vec![holder as u64],
        "holders found through /proc/<pid>/fd: {f}"
    );
    eventually("the canary comes through", || {
        let st: Value = serde_json::from_str(&read_file(&status)).ok()?;
        (st["canary_ok"].as_u64()? >= 2 && st["healthy"] == true).then_some(())
    });
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

fn validate_all(records: &[Value]) -> std::collections::BTreeSet<String> {
    let out = Command::new(watcher_tests::watcher_bin())
        .arg("schema")
        .output()
        .expect("watcher schema");
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).expect("the schema is JSON");
    let v = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let mut types = std::collections::BTreeSet::new();
    for r in records {
        if let Err(e) = v.validate(r) {
            panic!("a real record does not match `watcher schema`: {e}\n{r}");
        }
        types.insert(text(r, &["type"]).unwrap_or("?").to_owned());
    }
    types
}

/// Real records of every type a quiet host makes, validated against `watcher
/// schema` (the only check of real records against it on each kernel of the
/// matrix); the loss record has its own test below.
#[test]
fn every_record_type_matches_the_schema() {
    if !require_root() {
        return;
    }
    let d = Feed::start(&["trace", "--json", "--threads"]);
    actor(ACTOR, &["spawn-exit", "3"]);
    actor(ACTOR, &["thread"]);
    actor(ACTOR, &["bind4"]);
    let run = actor(ACTOR, &["connect-nonblocking"]);
    let (failing, _) = cause_port_conflict();
    d.wait_for("the port conflict's finding", |v| {
        finding(v, "port_conflict", "open")
            && finding_pids(v, Some("failing")).contains(&(failing as u64))
    });
    // The connect's TCP states came before the actor's exit.
    d.wait_for("the connecting actor's exit", |v| {
        text(v, &["type"]) == Some("exit") && v["process"]["pid"].as_u64() == Some(run.pid as u64)
    });
    let types = validate_all(&d.records());
    for t in [
        "fork",
        "exec",
        "exit",
        "reap",
        "bind",
        "connect",
        "tcp_state",
        "finding",
    ] {
        assert!(
            types.contains(t),
            "no `{t}` record was validated: {types:?}"
        );
    }
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

/// A loss record (a stopped reader, its 1 MiB ring overflowed by 8,000 fork
/// loops: ~24,000 records) matches the schema and counts what was lost.
#[test]
fn a_loss_record_matches_the_schema() {
    if !require_root() {
        return;
    }
    let _turn = flood_turn();
    let d = Feed::start(&["trace", "--json", "--ring-mib", "1"]);
    let stopped = d.stopped();
    actor(ACTOR, &["fork-loop", "8000"]);
    drop(stopped);
    let loss = d.wait_for("a loss record", |v| text(v, &["type"]) == Some("loss"));
    assert!(loss["loss"]["count"].as_u64().unwrap_or(0) > 0, "{loss}");
    let types = validate_all(&d.records());
    assert!(types.contains("loss"), "{types:?}");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

#[test]
fn the_documented_examples_match_the_schema() {
    let doc = include_str!("../../docs/events.md");
    let recs: Vec<Value> = doc
        .split("```json\n")
        .skip(1)
        .map(|b| {
            serde_json::from_str(b.split("```").next().unwrap())
                .expect("each example in docs/events.md is JSON")
        })
        .collect();
    let types = validate_all(&recs);
    for t in [
        "fork",
        "exec",
        "exit",
        "reap",
        "bind",
        "connect",
        "tcp_state",
        "loss",
        "finding",
        "health",
    ] {
        assert!(types.contains(t), "docs/events.md has no `{t}` example");
    }
}

#[test]
fn an_invalid_config_is_refused_at_start_with_file_and_line() {
    let dir = temp_dir("badcfg");
    let cfg = write_config(
        &dir,
        "[feed]\nstdout = true\n\n[detect.zombie]\nmax_age_s = -3\n",
    );
    let out = Command::new(watcher_tests::watcher_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("{}:5:", cfg.display())) && err.contains("not a duration"),
        "{err}"
    );
}

#[test]
fn readiness_is_notified_to_systemd() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("notify");
    let notify = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    // (As long as a start may take: an emulated guest busy with another test's flood.)
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let out = dir.join("stdout.ndjson");
    let err = dir.join("stderr.log");
    let cfg = write_config(
        &dir,
        &format!(
            "[feed]\ntypes = [\"exec\"]\nstdout = true\n[metrics]\nlisten = \"\"\n[health]\nstatus_file = \"{}\"\n",
            dir.join("s.json").display()
        ),
    );
    // Started directly (not through Feed, which waits for the "running" line
    // itself): what READY=1 promises is checked at the moment it arrives.
    let mut d = watcher_tests::ChildGuard::spawn(
        Command::new(watcher_tests::watcher_bin())
            .args(["run", "--config", cfg.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &notify)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap()),
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a notification from the daemon");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Ready only once running: the line was written before the notification …
    let said = read_file(&err);
    assert!(
        said.contains("running:"),
        "READY=1 before the daemon said it runs: {said}"
    );
    // … and a process that starts right after it is seen (what a unit
    // ordered After=watcher.service relies on).
    let run = actor(ACTOR, &["exit", "0"]);
    let exec = "\"type\":\"exec\"";
    let pid = format!("\"pid\":{},", run.pid);
    eventually("the exec of a process started right after READY=1", || {
        read_file(&out)
            .lines()
            .any(|l| l.contains(exec) && l.contains(&pid))
            .then_some(())
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.id() as i32), Signal::SIGTERM).unwrap();
    let n = sock.recv(&mut buf).expect("a stopping notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let status = d.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", read_file(&err));
}

/// SIGHUP with new settings keeps open incidents and the state behind them:
/// an incident opened before the reload still resolves after it; the
/// incidents of a detector the reload disables resolve, saying why.
#[test]
fn a_reload_keeps_open_incidents_and_resolves_those_of_a_disabled_detector() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("daemon-reload-state");
    let base = format!(
        "[feed]\ntypes = [\"finding\"]\nstdout = true\n[metrics]\nlisten = \"\"\n[health]\nstatus_file = \"{}\"\n",
        dir.join("status.json").display()
    );
    let cfg = write_config(&dir, &base);
    let d = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    d.wait_stderr("running:");
    // A port conflict (its failing process exits: it stays open for 30 s) …
    let (failing, _) = cause_port_conflict();
    let conflict = d.wait_for("port_conflict open", |v| {
        finding(v, "port_conflict", "open")
            && finding_pids(v, Some("failing")).contains(&(failing as u64))
    });
    // … and six zombies, held until the test says (after the reload).
    let mut parent = spawn_actor(ACTOR, &["zombies", "6", "stdin"]);
    parent.value("children");
    let zombies = d.wait_for("zombie_accumulation open", |v| {
        finding(v, "zombie_accumulation", "open")
            && finding_pids(v, Some("parent")).contains(&(parent.pid as u64))
    });
    // New thresholds, and port_conflict disabled.
    // [feed] changes too (its sinks are reopened): the detector settings still apply.
    let changed = base.replace("types = [\"finding\"]", "types = [\"finding\", \"loss\"]");
    assert_ne!(changed, base);
    std::fs::write(&cfg, format!("{changed}[detect.zombie_accumulation]\nthreshold = 8\n[detect.port_conflict]\nenabled = false\n")).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_stderr("configuration reloaded");
    let gone = d.wait_for("the disabled detector's incident resolved", |v| {
        finding(v, "port_conflict", "resolved") && v["id"] == conflict["id"]
    });
    assert!(
        text(&gone, &["summary"]).is_some_and(|s| s.contains("disabled by a configuration reload")),
        "{gone}"
    );
    // The zombies' incident, opened before the reload, is still open (the
    // reload resolved only the disabled detector's) …
    assert!(
        !d.records()
            .iter()
            .any(|v| finding(v, "zombie_accumulation", "resolved") && v["id"] == zombies["id"]),
        "the reload resolved the zombies' incident"
    );
    // … and resolves at the reap, which comes after the reload.
    parent.line();
    parent.value("reaped");
    d.wait_for(
        "the zombie_accumulation opened before the reload resolved",
        |v| finding(v, "zombie_accumulation", "resolved") && v["id"] == zombies["id"],
    );
    let reopened = d
        .records()
        .iter()
        .filter(|v| {
            finding(v, "zombie_accumulation", "open")
                && finding_pids(v, Some("parent")).contains(&(parent.pid as u64))
        })
        .count();
    assert_eq!(reopened, 1, "not opened again by the reload");
    parent.finish();
}

/// `watcher run` for the loss tests (findings and loss records on stdout,
/// metrics, a 1 s zombie age) with `extra` arguments; its metrics address.
fn loss_daemon(name: &str, extra: &[&str]) -> (std::sync::Arc<Feed>, String) {
    let dir = temp_dir(name);
    let port = free_port();
    let cfg = write_config(
        &dir,
        &format!(
            "[feed]\ntypes = [\"finding\", \"loss\"]\nstdout = true\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[health]\nstatus_file = \"{}\"\n[detect.zombie]\nmax_age_s = 1\n",
            dir.join("status.json").display()
        ),
    );
    let mut args = vec!["run", "--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let d = Feed::start(&args);
    d.wait_stderr("running:");
    (d, format!("127.0.0.1:{port}"))
}

/// The zombie findings that `about` selects, once a real zombie (unreaped
/// for 3 s) has had its finding at the 1 s deadline: by then the deadlines
/// of anything that exited earlier have run — a ghost's would have come before it.
fn zombie_findings_after_a_real_one(d: &Feed, about: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut real = spawn_actor(ACTOR, &["zombies", "1", "stdin"]);
    real.value("children");
    d.wait_for("the real zombie's finding", |v| {
        finding(v, "zombie", "open") && finding_pids(v, Some("parent")).contains(&(real.pid as u64))
    });
    let found = d
        .records()
        .into_iter()
        .filter(|v| {
            text(v, &["type"]) == Some("finding")
                && text(v, &["kind"]).is_some_and(|k| k.starts_with("zombie"))
        })
        .filter(|v| about(v))
        .collect();
    real.finish();
    found
}

/// An overload with lost records leaves no ghost: children whose reaps were
/// lost are not reported as zombies, because the tables are reconciled with
/// /proc before anything those records could open is written; and hides
/// nothing: a listener whose start was lost is known after the
/// reconciliation (the socket table is corrected too).
#[test]
fn an_overload_with_lost_records_leaves_no_ghost_finding() {
    if !require_root() {
        return;
    }
    let _turn = flood_turn();
    let (d, addr) = loss_daemon("daemon-overload", &["--ring-mib", "1"]);
    // ~24,000 records (~1.9 MiB) while watcher is stopped: the 1 MiB ring keeps the first ones only.
    let stopped = d.stopped();
    let flood = actor(ACTOR, &["fork-loop", "8000"]);
    // A listener that starts while the ring is full: its records are lost.
    let mut wild = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0", "reuseport"]);
    let wild_port = wild.value("port");
    wild.value("listening");
    drop(stopped);
    d.wait_for("a loss record", |v| text(v, &["type"]) == Some("loss"));
    eventually("a reconciliation with /proc and the socket tables", || {
        let m = scrape(&addr);
        let done = metric(&m, "watcher_reconciliations_total").unwrap_or(0.0) >= 1.0;
        (done && metric(&m, "watcher_reconciled_sockets_total").unwrap_or(0.0) >= 1.0).then_some(())
    });
    // The socket table knows the unseen listener now: a second listener
    // on 127.0.0.1 of its port is found shadowing it.
    let mut spec = spawn_actor(
        ACTOR,
        &["listen-hold", "127.0.0.1", &wild_port, "reuseport"],
    );
    spec.value("listening");
    d.wait_for(
        "port_shadowed naming the listener whose start was lost",
        |v| {
            finding(v, "port_shadowed", "open")
                && finding_pids(v, None).contains(&(spec.pid as u64))
                && finding_pids(v, None).contains(&(wild.pid as u64))
        },
    );
    spec.finish();
    wild.finish();
    let ghosts = zombie_findings_after_a_real_one(&d, |v| {
        finding_pids(v, None).contains(&(flood.pid as u64))
    });
    assert!(
        ghosts.is_empty(),
        "findings about the flood's children, reaped long ago: {ghosts:?}"
    );
}

/// A full kernel table is counted, reported, and repaired: with 64 entries,
/// 300 zombies overflow the exited-process table, so the kernel cannot report
/// their reap when a subreaper ignoring SIGCHLD inherits them (the kernel
/// frees them without a wait). Their parent reaps 10 first (room in the
/// table again: its own exit, which comes when the test has seen the
/// refusals, is remembered). The loss is said
/// (`kernel_table_full`, the metric), `/proc` is asked about the processes
/// whose reap could go unseen, and no zombie finding about the subreaper is
/// ever written; the accumulation of the process that made them (true)
/// opens and resolves.
#[test]
fn a_full_kernel_table_is_counted_reported_and_repaired() {
    if !require_root() {
        return;
    }
    let _turn = flood_turn();
    let (d, addr) = loss_daemon("daemon-table-full", &["--table-entries", "64"]);
    // The middle process holds its zombies until the test says.
    let mut reaper = spawn_actor(ACTOR, &["orphan-zombies", "300", "10", "stdin"]);
    let middle: u64 = reaper.value("middle").parse().expect("pid");
    reaper.value("reaped");
    // Tables fill in whichever order the kernel's CPUs get there (the
    // group_end table can be refused first): wait for the exited table's
    // refusal, whatever came before it.
    d.wait_for_related(
        "a kernel_table_full loss naming the exited table",
        |v| text(v, &["type"]) == Some("loss"),
        |v| {
            text(v, &["type"]) == Some("loss")
                && text(v, &["loss", "reason"]) == Some("kernel_table_full")
                && watcher_tests::num(v, &["loss", "by_table", "exited"]).unwrap_or(0) > 0
        },
    );
    eventually("the refusals in the metrics", || {
        let m = scrape(&addr);
        (metric(&m, "watcher_kernel_table_full_total{table=\"exited\"}").unwrap_or(0.0) >= 200.0)
            .then_some(())
    });
    // The true accumulation: opened for the middle process …
    d.wait_for("the middle process's accumulation", |v| {
        finding(v, "zombie_accumulation", "open")
            && finding_pids(v, Some("parent")).contains(&middle)
    });
    // … which exits now (after the refusals: room in the table again, so
    // its exit is remembered). The subreaper's kernel frees its orphans
    // without a wait: reaps the kernel could not report, asked of /proc.
    reaper.line();
    reaper.value("orphaned");
    eventually("the unseen reaps repaired", || {
        let m = scrape(&addr);
        (metric(&m, "watcher_reconciled_processes_total").unwrap_or(0.0) >= 200.0).then_some(())
    });
    d.wait_for("its resolution", |v| {
        finding(v, "zombie_accumulation", "resolved")
            && text(v, &["summary"]).is_some_and(|s| s.contains(&format!("pid {middle} ")))
    });
    // (The orphans' deadlines came 1 s after their exit.)
    let ghosts = zombie_findings_after_a_real_one(&d, |v| {
        finding_pids(v, Some("parent")).contains(&(reaper.pid as u64))
    });
    assert!(
        ghosts.is_empty(),
        "findings about zombies the subreaper's kernel reaped: {ghosts:?}"
    );
    reaper.finish();
}

/// The nice value of each thread of `pid`, by thread name.
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("its threads")
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid … : the name ends at the last ')'; nice is field 19.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let name = stat[stat.find('(').unwrap_or(0) + 1..close].to_owned();
        let nice = stat[close + 2..]
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .expect("field 19");
        out.push((name, nice));
    }
    out
}

#[test]
fn the_daemon_runs_ahead_of_a_flood_and_its_workers_behind() {
    if !require_root() {
        return;
    }
    for (setting, want) in [("", -10), ("[daemon]\nnice = 0\n", 0)] {
        let dir = temp_dir("nice");
        let cfg = write_config(
            &dir,
            &format!(
                "{setting}[metrics]\nlisten = \"\"\n[health]\nstatus_file = \"{}\"\n",
                dir.join("status.json").display()
            ),
        );
        let d = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
        d.wait_stderr("running:");
        let of = |threads: &[(String, i64)], name: &str| -> Vec<i64> {
            threads
                .iter()
                .filter(|(n, _)| n.starts_with(name))
                .map(|(_, v)| *v)
                .collect()
        };
        // (A worker takes its nice value as it starts: on a loaded machine
        // that can be just after the daemon says it runs.)
        let threads = eventually("the namespace workers behind the daemon", || {
            let t = thread_nices(d.pid);
            (of(&t, "watcher-netns") == vec![10; 4]).then_some(t)
        });
        let of = |name: &str| of(&threads, name);
        // The deciding thread (the process's first), and the sinks' threads it started.
        assert_eq!(threads[0].1, want, "{setting:?}: {threads:?}");
        assert!(
            !of("watcher-sink").is_empty() && of("watcher-sink").iter().all(|v| *v == want),
            "{threads:?}"
        );
        // The workers that enter namespaces and walk /proc: behind it.
        assert_eq!(of("watcher-netns"), vec![10; 4], "{threads:?}");
        assert!(
            !d.stderr().iter().any(|l| l.contains("nice")),
            "as root it takes its nice value: {:?}",
            d.stderr()
        );
        d.signal(Signal::SIGTERM);
        assert_eq!(d.wait_exit(), Some(0));
    }
}
