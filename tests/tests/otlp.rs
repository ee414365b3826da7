//! Findings into a fleet's pipeline: watcher's OTLP sink against a real
//! OTLP receiver (`otlp-receiver`, this crate's binary: it decodes with the
//! OpenTelemetry project's own protobuf definitions and gRPC service), over
//! http/protobuf with and without gzip, and over gRPC; a receiver that is
//! down when the conflict happens, one that answers 503 at first; the
//! standard OTEL_* environment variables.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use watcher_tests::{
    actor_any, eventually_explained, eventually_within, finding, finding_pids, free_port, metric,
    require_root, scrape, spawn_actor, temp_dir, write_config, ChildGuard, Feed, Value,
};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");
const RECEIVER: &str = env!("CARGO_BIN_EXE_otlp-receiver");

/// A running receiver and every line it printed.
struct Receiver {
    _child: ChildGuard,
    lines: Arc<Mutex<Vec<Value>>>,
    http: Option<String>,
    grpc: Option<String>,
}

impl Receiver {
    fn start(args: &[&str]) -> Receiver {
        let mut child = ChildGuard::spawn(
            Command::new(RECEIVER)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let out = child.0.stdout.take().expect("receiver stdout");
        let mut r = BufReader::new(out);
        let (mut http, mut grpc) = (None, None);
        let wanted = args
            .iter()
            .filter(|a| a.starts_with("--http") || a.starts_with("--grpc"))
            .count();
        for _ in 0..wanted {
            let mut l = String::new();
            r.read_line(&mut l).expect("the receiver's address line");
            match l.trim().split_once(' ') {
                Some(("http", a)) => http = Some(format!("http://{a}")),
                Some(("grpc", a)) => grpc = Some(format!("http://{a}")),
                _ => panic!("the receiver said {l:?}"),
            }
        }
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let g = lines.clone();
        std::thread::spawn(move || {
            for l in r.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&l) {
                    g.lock().unwrap().push(v);
                }
            }
        });
        Receiver {
            _child: child,
            lines,
            http,
            grpc,
        }
    }

    fn wait(&self, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually_within(limit, what, || {
            self.lines.lock().unwrap().iter().find(|v| pred(v)).cloned()
        })
    }
}

/// When the receiver refused exports over `via`, then when it took `v`.
fn refusals_then(rx: &Receiver, via: &str, v: &Value) -> Vec<u64> {
    let ns = |l: &Value| -> u64 {
        l["received_unix_nano"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    };
    let mut times: Vec<u64> = rx
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l["refused"] == via)
        .map(ns)
        .collect();
    times.push(ns(v));
    times
}

fn attr<'a>(v: &'a Value, key: &str) -> &'a Value {
    &v["attributes"][key]
}

/// A port conflict of this test's own processes: the failing pid, the
/// holder (listening until the caller drops it, after the finding), the port.
fn conflict() -> (u32, watcher_tests::Running, String) {
    let mut holder = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0"]);
    let port = holder.value("port");
    let failing = actor_any(ACTOR, &["bind-port", &port]);
    (failing.pid, holder, port)
}

/// The receiver's log record of this conflict.
fn conflict_record(rx: &Receiver, limit: Duration, failing: u32) -> Value {
    rx.wait(limit, "the port_conflict log record at the receiver", |v| {
        v["event_name"] == "watcher.port_conflict"
            && attr(v, "watcher.incident.state") == "open"
            && attr(v, "watcher.processes").as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["process.pid"] == failing && p["watcher.role"] == "failing")
            })
    })
}

fn start_watcher(dir: &std::path::Path, otlp: &str, env: &[(&str, &str)]) -> (Arc<Feed>, String) {
    let mport = free_port();
    let cfg = write_config(
        dir,
        &format!(
            "[feed]\ntypes = [\"finding\"]\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[health]\nstatus_file = \"{}\"\n{otlp}",
            dir.join("status.json").display()
        ),
    );
    let d = Feed::start_with(&["run", "--config", cfg.to_str().unwrap()], env, &[]);
    let started = d.wait_stderr("running:");
    assert!(started.contains("otlp http://127.0.0.1:"), "{started}");
    (d, format!("127.0.0.1:{mport}"))
}

fn check_fields(v: &Value, failing: u32, holder: u32, port: &str) {
    assert_eq!(v["severity_text"], "ERROR", "{v}");
    assert_eq!(v["severity_number"], 17, "{v}");
    let body = v["body"].as_str().unwrap_or("");
    assert!(body.contains(port), "the summary sentence: {v}");
    assert_eq!(attr(v, "server.port").as_u64(), port.parse().ok(), "{v}");
    assert_eq!(attr(v, "network.transport"), "tcp", "{v}");
    assert_eq!(attr(v, "process.executable.name"), "actor", "{v}");
    assert!(attr(v, "process.pid").is_u64(), "{v}");
    assert!(
        attr(v, "process.command_line")
            .as_str()
            .is_some_and(|c| c.contains("bind-port")),
        "{v}"
    );
    assert!(
        attr(v, "watcher.incident.id").is_string()
            && attr(v, "watcher.incident.subject").is_string(),
        "{v}"
    );
    let roles: Vec<(String, u64)> = attr(v, "watcher.processes")
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["watcher.role"].as_str().unwrap_or("").to_owned(),
                p["process.pid"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(roles.contains(&("failing".into(), failing.into())), "{v}");
    assert!(roles.contains(&("holder".into(), holder.into())), "{v}");
    let r = &v["resource"];
    assert_eq!(r["service.version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(r["os.type"], "linux", "{v}");
    assert!(
        r["host.name"].as_str().is_some_and(|h| !h.is_empty()),
        "{v}"
    );
    let time: u64 = v["time_unix_nano"].as_str().unwrap().parse().unwrap();
    let observed: u64 = v["observed_time_unix_nano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(time > 1_700_000_000_000_000_000 && observed >= time, "{v}");
}

#[test]
fn a_port_conflict_reaches_the_receiver_over_http_gzip_and_plain_and_grpc() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start(&["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]);
    let http = rx.http.clone().unwrap();
    let grpc = rx.grpc.clone().unwrap();
    for (name, otlp, via, encoding) in [
        ("gzip", format!("[otlp]\nendpoint = \"{http}\"\n[otlp.headers]\nauthorization = \"Bearer t0ken\"\n"), "http", "gzip"),
        ("plain", format!("[otlp]\nendpoint = \"{http}\"\ncompression = \"none\"\n"), "http", "identity"),
        ("grpc", format!("[otlp]\nendpoint = \"{grpc}\"\nprotocol = \"grpc\"\n[otlp.headers]\nauthorization = \"Bearer t0ken\"\n"), "grpc", "gzip"),
    ] {
        let dir = temp_dir(&format!("otlp-{name}"));
        let (d, _) = start_watcher(&dir, &otlp, &[]);
        let (failing, holding, port) = conflict();
        let holder = holding.pid;
        let v = conflict_record(&rx, Duration::from_secs(15), failing);
        let received: u64 = v["received_unix_nano"].as_str().unwrap().parse().unwrap();
        let time: u64 = v["time_unix_nano"].as_str().unwrap().parse().unwrap();
        eprintln!(
            "MEASURED failing bind → OTLP receiver ({name}): {:.1} ms\nOTLP {v}",
            received.saturating_sub(time) as f64 / 1e6
        );
        assert_eq!((v["via"].as_str(), v["encoding"].as_str()), (Some(via), Some(encoding)), "{v}");
        check_fields(&v, failing, holder, &port);
        assert_eq!(v["resource"]["service.name"], "watcher", "{v}");
        if name != "plain" {
            assert_eq!(v["headers"]["authorization"], "Bearer t0ken", "{v}");
        }
        d.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(d.wait_exit(), Some(0));
    }
}

#[test]
fn a_receiver_down_at_the_conflict_gets_it_when_it_comes_up() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("otlp-down");
    let port = free_port();
    let (d, metrics) = start_watcher(
        &dir,
        &format!("[otlp]\nendpoint = \"http://127.0.0.1:{port}\"\n"),
        &[],
    );
    let (failing, holding, bound) = conflict();
    let holder = holding.pid;
    // Nobody listens yet: the export fails and is retried.
    eventually_within(Duration::from_secs(15), "watcher_otlp_up 0", || {
        (metric(&scrape(&metrics), "watcher_otlp_up") == Some(0.0)).then_some(())
    });
    let m = scrape(&metrics);
    assert!(
        metric(&m, "watcher_otlp_queue").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    let rx = Receiver::start(&["--http", &format!("127.0.0.1:{port}")]);
    let v = conflict_record(&rx, Duration::from_secs(40), failing);
    check_fields(&v, failing, holder, &bound);
    eventually_within(
        Duration::from_secs(5),
        "watcher_otlp_up 1 and the record counted sent",
        || {
            let m = scrape(&metrics);
            (metric(&m, "watcher_otlp_up") == Some(1.0)
                && metric(&m, "watcher_otlp_records_total{result=\"sent\"}").unwrap_or(0.0) >= 1.0)
                .then_some(())
        },
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

#[test]
fn a_receiver_answering_503_three_times_still_gets_it() {
    if !require_root() {
        return;
    }
    // (Each export it takes answers a partial success that rejected one record.)
    let rx = Receiver::start(&[
        "--http",
        "127.0.0.1:0",
        "--fail-first",
        "3",
        "--reject",
        "1",
    ]);
    let dir = temp_dir("otlp-503");
    let (d, metrics) = start_watcher(
        &dir,
        &format!("[otlp]\nendpoint = \"{}\"\n", rx.http.clone().unwrap()),
        &[],
    );
    let (failing, holding, port) = conflict();
    let holder = holding.pid;
    let v = conflict_record(&rx, Duration::from_secs(30), failing);
    check_fields(&v, failing, holder, &port);
    // Refused three times, each retry after the Retry-After (1 s) it was given.
    let times = refusals_then(&rx, "http", &v);
    assert_eq!(times.len(), 4, "three refusals, then the record: {times:?}");
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= 900_000_000,
            "a retry came {} ms after a 503 with Retry-After: 1",
            (w[1] - w[0]) / 1_000_000
        );
    }
    // (Counted once watcher has read the answer, just after the receiver printed.)
    eventually_within(
        Duration::from_secs(5),
        "the partial success's reject counted",
        || {
            (metric(
                &scrape(&metrics),
                "watcher_otlp_records_total{result=\"rejected\"}",
            )
            .unwrap_or(0.0)
                >= 1.0)
                .then_some(())
        },
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

#[test]
fn the_standard_environment_variables_configure_it() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start(&["--grpc", "127.0.0.1:0"]);
    let dir = temp_dir("otlp-env");
    let grpc = rx.grpc.clone().unwrap();
    // No [otlp] in the file: all from the environment.
    let (d, _) = start_watcher(
        &dir,
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=team%20a"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_SERVICE_NAME", "edge-watcher"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=ci,team=infra",
            ),
        ],
    );
    let (failing, holding, port) = conflict();
    let holder = holding.pid;
    let v = conflict_record(&rx, Duration::from_secs(15), failing);
    check_fields(&v, failing, holder, &port);
    assert_eq!(v["via"], "grpc", "{v}");
    assert_eq!(v["encoding"], "identity", "{v}");
    assert_eq!(v["headers"]["x-tenant"], "team a", "{v}");
    assert_eq!(v["resource"]["service.name"], "edge-watcher", "{v}");
    assert_eq!(v["resource"]["deployment.environment.name"], "ci", "{v}");
    assert_eq!(v["resource"]["team"], "infra", "{v}");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

#[test]
fn a_full_queue_is_counted_and_told_to_the_receiver() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("otlp-full");
    let port = free_port();
    // Every event, to a receiver that is not there yet: the queue fills.
    let (d, metrics) = start_watcher(
        &dir,
        &format!("[otlp]\nendpoint = \"http://127.0.0.1:{port}\"\ntypes = [\"all\"]\n"),
        &[],
    );
    actor_any(ACTOR, &["fork-loop", "12000"]);
    let dropped = eventually_explained(
        Duration::from_secs(30),
        "records counted dropped",
        || {
            let m = scrape(&metrics);
            let n = metric(&m, "watcher_otlp_records_total{result=\"dropped\"}").unwrap_or(0.0);
            let queued = metric(&m, "watcher_otlp_queue").unwrap_or(0.0);
            (n > 0.0 && queued <= (16_384 + 512) as f64).then_some(n)
        },
        || {
            let m = scrape(&metrics);
            let said: Vec<&str> = m
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("otlp")
                            || l.starts_with("watcher_events_total")
                            || l.contains("lost"))
                })
                .collect();
            format!(
                "its metrics:\n{}\nits stderr: {:?}",
                said.join("\n"),
                d.stderr()
            )
        },
    );
    let rx = Receiver::start(&["--http", &format!("127.0.0.1:{port}")]);
    // The receiver is told with loss records: each says how many since the
    // one before and the total. The first can come before the drops the
    // metric counted (a batch built while the queue was still overflowing
    // waits for the receiver with its loss record), so the test waits for
    // the one whose total covers what the metric said.
    let loss = rx.wait(
        Duration::from_secs(40),
        &format!("a loss log record telling of {dropped} or more dropped"),
        |v| {
            v["event_name"] == "watcher.loss"
                && v["attributes"]["watcher.loss"]["reason"] == "otlp_queue_full"
                && v["attributes"]["watcher.loss"]["total"]
                    .as_f64()
                    .is_some_and(|t| t >= dropped)
        },
    );
    assert_eq!(loss["severity_text"], "WARN", "{loss}");
    let count = loss["attributes"]["watcher.loss"]["count"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(count > 0.0, "a loss record with nothing lost: {loss}");
    // Events came as their own log records too.
    rx.wait(Duration::from_secs(10), "a fork log record", |v| {
        v["event_name"] == "watcher.fork" && v["attributes"]["process.pid"].is_u64()
    });
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

#[test]
fn a_grpc_receiver_answering_unavailable_is_retried_after_its_retry_info() {
    if !require_root() {
        return;
    }
    let rx = Receiver::start(&[
        "--grpc",
        "127.0.0.1:0",
        "--fail-first",
        "2",
        "--retry-after-s",
        "3",
    ]);
    let dir = temp_dir("otlp-grpc-unavailable");
    let (d, _) = start_watcher(
        &dir,
        &format!(
            "[otlp]\nendpoint = \"{}\"\nprotocol = \"grpc\"\n",
            rx.grpc.clone().unwrap()
        ),
        &[],
    );
    let (failing, holding, port) = conflict();
    let v = conflict_record(&rx, Duration::from_secs(30), failing);
    check_fields(&v, failing, holding.pid, &port);
    // Refused twice with UNAVAILABLE and a RetryInfo of 3 s: the retries
    // waited for it (the backoff alone retries after 0.5 s, then 1 s).
    let times = refusals_then(&rx, "grpc", &v);
    assert_eq!(times.len(), 3, "two refusals, then the record: {times:?}");
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    assert!(
        gaps.iter().any(|g| *g >= 2_500),
        "no retry waited for the RetryInfo of 3 s: gaps {gaps:?} ms"
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}

#[test]
fn a_watcher_whose_receiver_is_down_stops_within_its_timeout() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("otlp-stop");
    let port = free_port();
    let (d, metrics) = start_watcher(
        &dir,
        &format!("[otlp]\nendpoint = \"http://127.0.0.1:{port}\"\ntimeout_s = 1\n"),
        &[],
    );
    // A finding the sink keeps retrying to export: first on the feed (so a
    // failure says which step did not happen), then the sink is down.
    let (failing, _holding, _port) = conflict();
    d.wait_for("the port_conflict finding on the feed", |v| {
        finding(v, "port_conflict", "open")
            && finding_pids(v, Some("failing")).contains(&(failing as u64))
    });
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = scrape(&metrics);
        if metric(&m, "watcher_otlp_up") == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "watcher_otlp_up did not go to 0 within 15 s; its OTLP metrics:\n{}\nwatcher said:\n{}",
            m.lines()
                .filter(|l| l.starts_with("watcher_otlp"))
                .collect::<Vec<_>>()
                .join("\n"),
            d.stderr().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM while it retries: what is queued gets timeout_s, then it ends.
    let asked = std::time::Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
    let took = asked.elapsed();
    eprintln!(
        "MEASURED stop with the receiver down: {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    assert!(
        took < Duration::from_secs(5),
        "stopping took {took:?} (timeout_s = 1)"
    );
}
