//! Alerts that reach a person: watcher's Alertmanager sink against a real
//! Prometheus Alertmanager (Debian's `prometheus-alertmanager`), whose
//! webhook receiver is this test; the shipped rule file in a real
//! Prometheus (Debian's `prometheus`) scraping watcher; the rule file's own
//! `promtool test rules`.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::sys::signal::Signal;
use watcher_tests::{
    actor_any, eventually_within, free_port, metric, mono_ns, require_root, scrape, spawn_actor,
    temp_dir, write_config, Feed, Value,
};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// A program from Debian the test command installs; under CI its absence fails the test.
fn tool(path: &str, package: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    if p.exists() {
        return Some(p);
    }
    watcher_tests::unavailable(&format!(
        "{path} not found: `cargo xtask test` installs it (apt-get install {package})"
    ));
    None
}

/// The person at the end: an HTTP endpoint Alertmanager's webhook posts to.
/// Each notification is kept with the time it arrived (CLOCK_MONOTONIC ns).
struct Webhook {
    port: u16,
    got: Arc<Mutex<Vec<(u64, Value)>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the webhook");
        let port = l.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<(u64, Value)>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        g.lock().unwrap().push((mono_ns(), v));
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Webhook { port, got }
    }

    /// The first alert, of the notifications so far, for which `pred` holds,
    /// with the notification's status and arrival.
    fn find(&self, pred: impl Fn(&Value, &str) -> bool) -> Option<(u64, Value)> {
        let got = self.got.lock().unwrap();
        got.iter().find_map(|(at, n)| {
            n["alerts"]
                .as_array()?
                .iter()
                .find(|a| pred(a, a["status"].as_str().unwrap_or("")))
                .map(|a| (*at, a.clone()))
        })
    }

    fn wait(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value, &str) -> bool,
    ) -> (u64, Value) {
        eventually_within(limit, what, || self.find(&pred))
    }

    fn all(&self) -> String {
        format!("{:?}", self.got.lock().unwrap())
    }
}

/// A real Alertmanager whose one route sends everything to the webhook at once.
struct Alertmanager {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Alertmanager {
    fn start(port: u16, hook: u16, dir: &Path) -> Option<Alertmanager> {
        let bin = tool(
            "/usr/bin/prometheus-alertmanager",
            "prometheus-alertmanager",
        )?;
        let dir = dir.join(format!("am-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("alertmanager.yml");
        // The tested route (README, "Alerting"): group by incident, notify at once.
        std::fs::write(
            &cfg,
            format!(
                "route:\n  receiver: hook\n  group_by: [alertname, host, incident]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 4h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{hook}/hook\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus-alertmanager");
        let am = Alertmanager {
            child,
            port,
            _dir: dir,
        };
        eventually_within(Duration::from_secs(30), "Alertmanager ready", || {
            http_get(port, "/-/ready").filter(|(code, _)| *code == 200)
        });
        Some(am)
    }

    /// Alerts Alertmanager holds now (its v2 API).
    fn alerts(&self) -> Vec<Value> {
        http_get(self.port, "/api/v2/alerts")
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus scraping watcher every second and evaluating the shipped rules.
struct Prometheus {
    child: Child,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:port: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    // Chunked bodies (Go's server, no length known up front): join the chunks.
    let chunked = resp
        .split_once("\r\n\r\n")
        .map(|(h, _)| {
            h.to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
        })
        .unwrap_or(false);
    if !chunked {
        return Some((code, body));
    }
    let mut out = String::new();
    let mut rest = body.as_str();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            break;
        }
        out.push_str(after.get(..n)?);
        rest = after.get(n + 2..).unwrap_or("");
    }
    Some((code, out))
}

fn label<'a>(a: &'a Value, k: &str) -> &'a str {
    a["labels"][k].as_str().unwrap_or("")
}

#[test]
fn the_shipped_rules_pass_promtool() {
    let Some(promtool) = tool("/usr/bin/promtool", "prometheus") else {
        return;
    };
    let dir = packaging();
    for args in [
        vec!["check", "rules", "watcher-rules.yml"],
        vec!["test", "rules", "watcher-rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_port_conflict_fires_in_alertmanager_and_resolves() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("alerts-conflict");
    let hook = Webhook::start();
    let am_port = free_port();
    let Some(am) = Alertmanager::start(am_port, hook.port, &dir) else {
        return;
    };
    let mport = free_port();
    let cfg = write_config(
        &dir,
        &format!(
            "[feed]\ntypes = [\"finding\"]\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[health]\nstatus_file = \"{}\"\n[detect.port_conflict]\nresolve_after_exit_s = 6\n[alerts]\nalertmanager = [\"http://127.0.0.1:{am_port}\"]\nrepost_s = 2\n[alerts.labels]\nenv = \"test\"\n",
            dir.join("status.json").display()
        ),
    );
    let d = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    let started = d.wait_stderr("running:");
    assert!(
        started.contains("alerts to Alertmanager http://127.0.0.1:"),
        "{started}"
    );

    let mut holder = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0"]);
    let port = holder.value("port");
    let failing = actor_any(ACTOR, &["bind-port", &port]);
    // This test's conflict (another test makes one on this host at the same time).
    let open = d.wait_for("the port_conflict finding", |v| {
        watcher_tests::finding(v, "port_conflict", "open")
            && watcher_tests::finding_pids(v, Some("failing")).contains(&(failing.pid as u64))
    });
    let subject = open["subject"].as_str().unwrap().to_owned();
    let bind_ns = open["mono_ns"].as_u64().unwrap();
    let (at, alert) = hook.wait(
        Duration::from_secs(20),
        "a firing WatcherPortConflict at the webhook",
        |a, st| {
            st == "firing"
                && label(a, "alertname") == "WatcherPortConflict"
                && label(a, "incident") == subject
        },
    );
    eprintln!(
        "MEASURED failing bind → webhook: {:.1} ms\nWEBHOOK {alert}",
        at.saturating_sub(bind_ns) as f64 / 1e6
    );
    assert_eq!(label(&alert, "kind"), "port_conflict", "{alert}");
    assert_eq!(label(&alert, "program"), "actor", "{alert}");
    assert_eq!(label(&alert, "severity"), "critical", "{alert}");
    assert_eq!(label(&alert, "env"), "test", "{alert}");
    assert_eq!(
        label(&alert, "incident"),
        open["subject"].as_str().unwrap(),
        "{alert}"
    );
    assert!(!label(&alert, "host").is_empty(), "{alert}");
    let summary = alert["annotations"]["summary"].as_str().unwrap_or("");
    assert_eq!(summary, open["summary"].as_str().unwrap(), "{alert}");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap_or("")
            .contains("stop the one"),
        "{alert}"
    );
    assert!(
        summary.contains(&failing.pid.to_string()) || summary.contains(&holder.pid.to_string()),
        "{summary}"
    );

    // Re-posted while open (every repost_s = 2 s): Alertmanager keeps it
    // active, its endsAt ahead.
    let url = format!("http://127.0.0.1:{am_port}");
    let ok_posts = format!("watcher_alert_posts_total{{alertmanager=\"{url}\",result=\"ok\"}}");
    eventually_within(Duration::from_secs(5), "a re-post while open", || {
        (metric(&scrape(&format!("127.0.0.1:{mport}")), &ok_posts).unwrap_or(0.0) >= 2.0)
            .then_some(())
    });
    let active = am.alerts();
    let mine = active
        .iter()
        .find(|a| label(a, "alertname") == "WatcherPortConflict" && label(a, "incident") == subject)
        .unwrap_or_else(|| {
            panic!("Alertmanager holds no WatcherPortConflict of {subject}: {active:?}")
        });
    assert_eq!(mine["status"]["state"], "active", "{mine}");
    assert!(
        mine["endsAt"].as_str().unwrap_or("") > mine["startsAt"].as_str().unwrap_or(""),
        "{mine}"
    );

    // No retry of the failing bind within resolve_after_exit_s: resolved, and the webhook hears it.
    d.wait_for("the port_conflict resolved", |v| {
        watcher_tests::finding(v, "port_conflict", "resolved") && v["id"] == open["id"]
    });
    hook.wait(
        Duration::from_secs(20),
        "a resolved WatcherPortConflict at the webhook",
        |a, st| {
            st == "resolved"
                && label(a, "alertname") == "WatcherPortConflict"
                && label(a, "incident") == subject
        },
    );
    holder.finish();
    let m = scrape(&format!("127.0.0.1:{mport}"));
    assert_eq!(
        metric(
            &m,
            &format!("watcher_alerts_pending{{alertmanager=\"{url}\"}}")
        ),
        Some(0.0),
        "{m}"
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
    drop(am);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_alertmanager_that_is_down_is_retried_and_gets_what_it_missed() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("alerts-down");
    let hook = Webhook::start();
    // Nothing listens there yet.
    let am_port = free_port();
    let mport = free_port();
    let cfg = write_config(
        &dir,
        &format!(
            "[feed]\ntypes = [\"finding\"]\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[health]\nstatus_file = \"{}\"\n[alerts]\nalertmanager = [\"http://127.0.0.1:{am_port}\"]\n",
            dir.join("status.json").display()
        ),
    );
    let d = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    d.wait_stderr("running:");
    let mut holder = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0"]);
    let port = holder.value("port");
    let failing = actor_any(ACTOR, &["bind-port", &port]);
    // Detection does not wait for Alertmanager: the finding is written at once.
    let open = d.wait_for("the port_conflict finding", |v| {
        watcher_tests::finding(v, "port_conflict", "open")
            && watcher_tests::finding_pids(v, Some("failing")).contains(&(failing.pid as u64))
    });
    let subject = open["subject"].as_str().unwrap().to_owned();
    let said = d.wait_stderr("cannot post to Alertmanager");
    assert!(said.contains("retrying with backoff"), "{said}");
    let url = format!("http://127.0.0.1:{am_port}");
    let failed = format!("watcher_alert_posts_total{{alertmanager=\"{url}\",result=\"failed\"}}");
    eventually_within(Duration::from_secs(10), "failed posts counted", || {
        let m = scrape(&format!("127.0.0.1:{mport}"));
        (metric(&m, &failed).unwrap_or(0.0) >= 1.0
            && metric(
                &m,
                &format!("watcher_alertmanager_up{{alertmanager=\"{url}\"}}"),
            ) == Some(0.0)
            && metric(
                &m,
                &format!("watcher_alerts_pending{{alertmanager=\"{url}\"}}"),
            )
            .unwrap_or(0.0)
                >= 1.0)
            .then_some(())
    });
    // Said once, not per retry.
    std::thread::sleep(Duration::from_secs(2));
    let n = d
        .stderr()
        .iter()
        .filter(|l| l.contains("cannot post to Alertmanager"))
        .count();
    assert_eq!(n, 1, "{:?}", d.stderr());

    // Alertmanager comes up: the pending alert arrives within the backoff.
    let Some(am) = Alertmanager::start(am_port, hook.port, &dir) else {
        return;
    };
    hook.wait(
        Duration::from_secs(45),
        "the missed WatcherPortConflict at the webhook",
        |a, st| {
            st == "firing"
                && label(a, "alertname") == "WatcherPortConflict"
                && label(a, "incident") == subject
        },
    );
    d.wait_stderr("takes alerts again");
    holder.finish();
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
    drop(am);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restarted_daemon_posts_the_incidents_it_rediscovers() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("alerts-restart");
    let hook = Webhook::start();
    let am_port = free_port();
    let Some(am) = Alertmanager::start(am_port, hook.port, &dir) else {
        return;
    };
    let cfg = write_config(
        &dir,
        &format!(
            "[feed]\ntypes = [\"finding\"]\n[metrics]\nlisten = \"\"\n[health]\nstatus_file = \"{}\"\n[alerts]\nalertmanager = [\"http://127.0.0.1:{am_port}\"]\n",
            dir.join("status.json").display()
        ),
    );
    // A parent with 6 children it does not reap until the test says.
    let mut parent = spawn_actor(ACTOR, &["zombies", "6", "stdin"]);
    let parent_pid = parent.pid;
    let is_ours = |v: &Value| {
        watcher_tests::finding(v, "zombie_accumulation", "open")
            && v["details"]["parent_pid"].as_u64() == Some(parent_pid as u64)
    };
    let first = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    first.wait_stderr("running:");
    let f1 = first.wait_for("zombie_accumulation of the parent", is_ours);
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit(), Some(0));
    hook.wait(
        Duration::from_secs(20),
        "WatcherZombieAccumulation firing",
        |a, st| st == "firing" && label(a, "incident") == f1["subject"].as_str().unwrap(),
    );
    // The second daemon finds the zombies in /proc at start and posts the same alert again.
    let second = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    second.wait_stderr("running:");
    let f2 = second.wait_for("the rediscovered zombie_accumulation", is_ours);
    assert_eq!(
        f1["subject"], f2["subject"],
        "the same incident after a restart: {f1} {f2}"
    );
    // Alertmanager holds one alert for it, updated by the second daemon (its
    // occurrences annotation comes from the second's finding).
    eventually_within(
        Duration::from_secs(20),
        "one active alert for the rediscovered incident",
        || {
            let mine: Vec<Value> = am
                .alerts()
                .into_iter()
                .filter(|a| label(a, "incident") == f2["subject"].as_str().unwrap())
                .collect();
            (mine.len() == 1 && mine[0]["status"]["state"] == "active").then_some(())
        },
    );
    // The parent reaps them: resolved.
    parent.line();
    hook.wait(
        Duration::from_secs(40),
        "WatcherZombieAccumulation resolved",
        |a, st| st == "resolved" && label(a, "incident") == f2["subject"].as_str().unwrap(),
    );
    parent.finish();
    // One firing notification for the incident, across both daemons: the
    // second one's post was the same alert, not a new one.
    let firing = hook
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| {
            n["status"] == "firing"
                && n["alerts"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|a| label(a, "incident") == f2["subject"].as_str().unwrap())
                })
        })
        .count();
    assert_eq!(firing, 1, "{}", hook.all());
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(), Some(0));
    drop(am);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prometheus_with_the_shipped_rules_fires_watcher_blind() {
    if !require_root() {
        return;
    }
    let Some(prom_bin) = tool("/usr/bin/prometheus", "prometheus") else {
        return;
    };
    let dir = temp_dir("alerts-blind");
    let hook = Webhook::start();
    let am_port = free_port();
    let Some(am) = Alertmanager::start(am_port, hook.port, &dir) else {
        return;
    };
    let mport = free_port();
    let cfg = write_config(
        &dir,
        &format!(
            "[feed]\ntypes = [\"finding\"]\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[health]\ncanary_interval_s = 0.5\ncanary_deadline_s = 1\nstatus_file = \"{}\"\n",
            dir.join("status.json").display()
        ),
    );
    // The fault drill detaches every program after 3 s: running, but blind.
    let d = Feed::start_with(
        &["run", "--config", cfg.to_str().unwrap()],
        &[("WATCHER_FAULT_DRILL", "detach-after=3")],
        &[],
    );
    d.wait_stderr("running:");
    let rules = packaging()
        .join("watcher-rules.yml")
        .canonicalize()
        .unwrap();
    let pcfg = dir.join("prometheus.yml");
    std::fs::write(
        &pcfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{am_port}\"]\nscrape_configs:\n  - job_name: watcher\n    static_configs:\n      - targets: [\"127.0.0.1:{mport}\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let pport = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prom = Prometheus {
        child: Command::new(prom_bin)
            .arg(format!("--config.file={}", pcfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    };
    // Blind in watcher's own metrics first …
    eventually_within(
        Duration::from_secs(20),
        "watcher_pipeline_healthy 0",
        || {
            let m = scrape(&format!("127.0.0.1:{mport}"));
            (metric(&m, "watcher_pipeline_healthy") == Some(0.0)).then_some(())
        },
    );
    // … then, 20 s later (the rule's `for`), at the person.
    let (_, alert) = hook.wait(
        Duration::from_secs(90),
        "WatcherBlind at the webhook",
        |a, st| st == "firing" && label(a, "alertname") == "WatcherBlind",
    );
    assert_eq!(label(&alert, "severity"), "critical", "{alert}");
    assert_eq!(label(&alert, "job"), "watcher", "{alert}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("is blind"),
        "{alert}"
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
    drop(am);
    let _ = std::fs::remove_dir_all(&dir);
}
