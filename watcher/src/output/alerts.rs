//! The Alertmanager sink: every open incident is a firing alert in
//! Prometheus Alertmanager (its v2 API, `POST /api/v2/alerts`), posted the
//! moment it opens, re-posted while it stays open (its `endsAt` always a few
//! re-post periods ahead, so Alertmanager never times it out while watcher
//! lives, and ends it by itself when watcher is gone), and ended with
//! `endsAt` when it resolves.
//!
//! It runs beside detection: the pipeline hands it a finding without
//! waiting (a bounded queue; overflow counted); a thread of its own keeps
//! the book of alerts and posts to every configured Alertmanager (an HA
//! cluster deduplicates) on its own task each. A down or slow Alertmanager
//! is retried with a doubling backoff (0.5 s … 30 s); what it has not taken
//! stays in the book (at most `MAX_ALERTS`) and goes with the next post that
//! succeeds; each post is counted by result, and an outage is said once in
//! the log when it starts and once when it ends.
use crate::kernel::clock::Clock;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use tokio::{sync::Notify, time::Instant};

use crate::{detect::Kind, output::record::FindingRecord};

/// Alerts kept at most (open ones and resolved ones not yet delivered).
pub(crate) const MAX_ALERTS: usize = 4096;
/// Findings queued for the alert thread before they are dropped (counted).
const QUEUE: usize = 4096;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// An open alert's `endsAt` is this many re-post periods ahead.
const ENDS_AHEAD: u32 = 4;

/// The severity a kind's alerts carry unless `[alerts.severity]` says
/// otherwise (declared by its detector).
pub(crate) fn default_severity(kind: Kind) -> &'static str {
    kind.severity()
}

/// The severities an operator may set; `none` sends no alert for the kind.
pub(crate) const SEVERITIES: [&str; 4] = ["critical", "warning", "info", "none"];

/// What to do, per kind: the alert's `description` (declared by its detector).
fn what_to_do(kind: &str) -> &'static str {
    Kind::from_name(kind)
        .map(Kind::advice)
        .unwrap_or("See watcher's feed for the processes involved.")
}

/// `port_conflict` → `WatcherPortConflict`.
pub(crate) fn alertname(kind: &str) -> String {
    let mut out = String::from("Watcher");
    for part in kind.split('_') {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            out.extend(f.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

/// One alert as Alertmanager's v2 API takes it (`postableAlert`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// Empty while open: filled with "now + a few re-post periods" at each post.
    #[serde(rename = "endsAt")]
    pub ends_at: String,
}

/// Longest label value and summary taken from what a process chose (its
/// name, its container's name): notification templates and UIs show them.
const LABEL_MAX: usize = 128;
const SUMMARY_MAX: usize = 2048;

/// A value a local user chose (program and container names, command lines
/// in a summary), made inert for whoever reads the notification: control
/// characters (terminal escapes, newlines) escaped as in the human lines,
/// and at most `max` bytes (cut at a character boundary, marked with `…`).
fn inert(s: &str, max: usize) -> String {
    let mut out = crate::output::human::clean(s);
    if out.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// Turns findings into alerts: the labels and annotations of a config.
#[derive(Clone, Debug)]
pub(crate) struct Labeller {
    host: String,
    severity: HashMap<String, String>,
    extra: BTreeMap<String, String>,
}

impl Labeller {
    pub(crate) fn new(c: &AlertsConfig) -> Labeller {
        let host = if c.host.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        } else {
            c.host.clone()
        };
        let mut severity: HashMap<String, String> = Kind::ALL
            .iter()
            .map(|k| (k.as_str().to_owned(), default_severity(*k).to_owned()))
            .collect();
        severity.extend(c.severity.iter().map(|(k, v)| (k.clone(), v.clone())));
        Labeller {
            host,
            severity,
            extra: c.labels.clone(),
        }
    }

    /// The alert of a finding record; `None` for a kind set to `none`.
    pub(crate) fn alert(&self, f: &FindingRecord, time: &str) -> Option<Alert> {
        let severity = self
            .severity
            .get(&f.kind)
            .map(String::as_str)
            .unwrap_or("warning");
        if severity == "none" {
            return None;
        }
        let mut labels = self.extra.clone();
        labels.insert("alertname".into(), alertname(&f.kind));
        labels.insert("kind".into(), f.kind.clone());
        labels.insert("severity".into(), severity.into());
        labels.insert("host".into(), self.host.clone());
        // One alert per incident (two conflicts of one program on two ports
        // are two), the same one after watcher restarts: keyed by what it is about.
        labels.insert(
            "incident".into(),
            if f.subject.is_empty() {
                f.id.clone()
            } else {
                f.subject.clone()
            },
        );
        if let Some(main) = f.processes.first() {
            let p = &main.process;
            let program = p
                .executable
                .as_deref()
                .and_then(|e| e.rsplit('/').next())
                .filter(|s| !s.is_empty())
                .unwrap_or(&p.name);
            labels.insert("program".into(), inert(program, LABEL_MAX));
        }
        if let Some(c) = f.processes.iter().find_map(|p| p.container.as_ref()) {
            labels.insert("container".into(), inert(c.label(), LABEL_MAX));
        }
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".into(), inert(&f.summary, SUMMARY_MAX));
        annotations.insert("description".into(), what_to_do(&f.kind).into());
        annotations.insert("first_seen".into(), f.first_seen.clone());
        annotations.insert("occurrences".into(), f.count.to_string());
        let resolved = f.state == "resolved";
        Some(Alert {
            labels,
            annotations,
            starts_at: if f.first_seen.is_empty() {
                time.to_owned()
            } else {
                f.first_seen.clone()
            },
            ends_at: if resolved {
                time.to_owned()
            } else {
                String::new()
            },
        })
    }
}

struct Entry {
    alert: Alert,
    version: u64,
    /// When it resolved (kept until every Alertmanager took it, or until
    /// Alertmanager would have ended it by itself).
    resolved: Option<Instant>,
}

/// The alerts, shared by the Alertmanagers' tasks.
#[derive(Default)]
struct Book {
    entries: HashMap<String, Entry>,
    version: u64,
}

impl Book {
    /// Alerts whose newest version an Alertmanager that took `sent` has not taken.
    fn pending(&self, sent: &HashMap<String, u64>) -> u64 {
        self.entries
            .iter()
            .filter(|(id, e)| sent.get(*id) != Some(&e.version))
            .count() as u64
    }
}

/// Per Alertmanager, for the metrics.
#[derive(Debug, Default)]
pub struct Target {
    pub url: String,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Alerts whose newest state this Alertmanager has not taken yet.
    pub pending: AtomicU64,
    pub up: AtomicBool,
}

/// What the metrics say about the sink.
#[derive(Debug, Default)]
pub struct AlertStats {
    pub targets: Vec<Target>,
    /// Findings not turned into alerts: the queue or the book was full.
    pub dropped: AtomicU64,
    /// Alerts in the book (open, and resolved ones not yet delivered).
    pub alerts: AtomicU64,
}

/// The sink, as the pipeline sees it.
pub(crate) struct AlertSink {
    tx: tokio::sync::mpsc::Sender<FindingRecord>,
    pub stats: Arc<AlertStats>,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// An Alertmanager's address, checked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Endpoint {
    pub url: String,
    /// `host:port`.
    pub authority: String,
    /// `/api/v2/alerts` under the URL's path.
    pub path: String,
}

/// Parse `http://host:port[/prefix]`.
pub(crate) fn endpoint(url: &str) -> Result<Endpoint, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL ({e}); e.g. \"http://127.0.0.1:9093\""))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(format!("`{url}`: https is not supported; use http to an Alertmanager on this host or a private network (or a local TLS proxy)")),
        _ => return Err(format!("`{url}` is not an http:// URL; e.g. \"http://127.0.0.1:9093\"")),
    }
    let Some(auth) = uri.authority() else {
        return Err(format!("`{url}` has no host"));
    };
    let authority = if auth.port().is_some() {
        auth.as_str().to_owned()
    } else {
        format!("{}:80", auth.host())
    };
    let prefix = uri.path().trim_end_matches('/');
    Ok(Endpoint {
        url: url.trim_end_matches('/').to_owned(),
        authority,
        path: format!("{prefix}/api/v2/alerts"),
    })
}

impl AlertSink {
    /// Start the sink's thread (config already validated).
    pub(crate) fn start(c: &AlertsConfig) -> anyhow::Result<AlertSink> {
        let endpoints = c
            .alertmanager
            .iter()
            .map(|u| endpoint(u).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let stats = Arc::new(AlertStats {
            targets: endpoints
                .iter()
                .map(|e| Target {
                    url: e.url.clone(),
                    up: AtomicBool::new(true),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let stop = Arc::new(Notify::new());
        let labeller = Labeller::new(c);
        let repost = Duration::from_secs_f64(c.repost_s);
        let timeout = Duration::from_secs_f64(c.timeout_s);
        let (st, sp) = (stats.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("watcher-alerts".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("alerts: cannot start the sink's runtime: {e}");
                        return;
                    }
                };
                rt.block_on(run(rx, labeller, endpoints, repost, timeout, st, sp));
            })?;
        Ok(AlertSink {
            tx,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// Hand a finding to the sink without waiting.
    pub(crate) fn offer(&self, f: &FindingRecord) {
        if self.tx.try_send(f.clone()).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for AlertSink {
    /// Deliver what is pending (resolutions above all), for at most one
    /// post's deadline, then stop.
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    mut rx: tokio::sync::mpsc::Receiver<FindingRecord>,
    labeller: Labeller,
    endpoints: Vec<Endpoint>,
    repost: Duration,
    timeout: Duration,
    stats: Arc<AlertStats>,
    stop: Arc<Notify>,
) {
    let book = Arc::new(Mutex::new(Book::default()));
    let stopping = Arc::new(AtomicBool::new(false));
    let wakes: Vec<Arc<Notify>> = endpoints.iter().map(|_| Arc::new(Notify::new())).collect();
    let mut tasks = Vec::new();
    for (i, ep) in endpoints.into_iter().enumerate() {
        tasks.push(tokio::spawn(post_loop(
            ep,
            i,
            book.clone(),
            wakes[i].clone(),
            stopping.clone(),
            stats.clone(),
            repost,
            timeout,
        )));
    }
    let mut said_full = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.notified() => break,
            f = rx.recv() => {
                let Some(f) = f else { break };
                let clock = Clock::now();
                let time = clock.rfc3339(Clock::mono_now());
                let Some(alert) = labeller.alert(&f, &time) else { continue };
                // Keyed like the alert itself: a recurrence replaces its resolved predecessor.
                let key = alert.labels["incident"].clone();
                let mut b = book.lock().expect("alert book");
                let known = b.entries.contains_key(&key);
                if !known && f.state == "resolved" {
                    // Resolved before it was ever an alert here (dropped earlier): nothing to end.
                    continue;
                }
                if !known && b.entries.len() >= MAX_ALERTS {
                    // Make room: resolved alerts first, else refuse (counted).
                    let old = b.entries.iter().filter(|(_, e)| e.resolved.is_some()).map(|(k, _)| k.clone()).next();
                    match old {
                        Some(k) => { b.entries.remove(&k); }
                        None => {
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                            if !said_full {
                                said_full = true;
                                tracing::warn!("alerts: {MAX_ALERTS} alerts open; further incidents are not sent to Alertmanager (counted in watcher_alerts_dropped_total)");
                            }
                            continue;
                        }
                    }
                }
                b.version += 1;
                let version = b.version;
                let resolved = (f.state == "resolved").then(Instant::now);
                b.entries.insert(key, Entry { alert, version, resolved });
                stats.alerts.store(b.entries.len() as u64, Ordering::Relaxed);
                drop(b);
                for w in &wakes {
                    w.notify_one();
                }
            }
        }
    }
    // Deliver what is pending, within one post's deadline.
    stopping.store(true, Ordering::Relaxed);
    for w in &wakes {
        w.notify_one();
    }
    let _ = tokio::time::timeout(timeout + Duration::from_millis(200), async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn post_loop(
    ep: Endpoint,
    me: usize,
    book: Arc<Mutex<Book>>,
    wake: Arc<Notify>,
    stopping: Arc<AtomicBool>,
    stats: Arc<AlertStats>,
    repost: Duration,
    timeout: Duration,
) {
    let target = &stats.targets[me];
    // Incident id → the version this Alertmanager has taken.
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut last_full = Instant::now();
    let mut backoff = BACKOFF_FIRST;
    let mut retry_at: Option<Instant> = None;
    let mut down_since: Option<(Instant, String)> = None;
    loop {
        let due = retry_at.unwrap_or(last_full + repost);
        if !stopping.load(Ordering::Relaxed) {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        let stop = stopping.load(Ordering::Relaxed);
        let now = Instant::now();
        if retry_at.is_some_and(|t| now < t) && !stop {
            continue;
        }
        let full = now >= last_full + repost;
        let ends =
            Clock::now().rfc3339(Clock::mono_now() + (repost * ENDS_AHEAD).as_nanos() as u64);
        let (batch, versions) = {
            let mut b = book.lock().expect("alert book");
            // Resolved alerts Alertmanager would have ended by itself by now are dropped.
            let horizon = repost * ENDS_AHEAD;
            b.entries
                .retain(|_, e| e.resolved.is_none_or(|t| now.duration_since(t) < horizon));
            let mut batch = Vec::new();
            let mut versions = Vec::new();
            for (id, e) in &b.entries {
                let changed = sent.get(id) != Some(&e.version);
                // A full re-post sends what is open; a resolution goes once.
                if changed || (full && e.resolved.is_none()) {
                    let mut a = e.alert.clone();
                    if a.ends_at.is_empty() {
                        a.ends_at = ends.clone();
                    }
                    batch.push(a);
                    versions.push((id.clone(), e.version));
                }
            }
            sent.retain(|id, _| b.entries.contains_key(id));
            target.pending.store(b.pending(&sent), Ordering::Relaxed);
            (batch, versions)
        };
        if batch.is_empty() {
            if full {
                last_full = now;
            }
            if stop {
                return;
            }
            continue;
        }
        let body = match serde_json::to_vec(&batch) {
            Ok(b) => Bytes::from(b),
            Err(_) => return,
        };
        match post(&ep, body, timeout).await {
            Ok(()) => {
                target.ok.fetch_add(1, Ordering::Relaxed);
                target.up.store(true, Ordering::Relaxed);
                for (id, v) in versions {
                    sent.insert(id, v);
                }
                let pending = book.lock().expect("alert book").pending(&sent);
                target.pending.store(pending, Ordering::Relaxed);
                if full {
                    last_full = now;
                }
                retry_at = None;
                backoff = BACKOFF_FIRST;
                if let Some((since, _)) = down_since.take() {
                    tracing::warn!(
                        "alerts: Alertmanager {} takes alerts again (after {:.0?} of failures); what was pending is delivered",
                        ep.url,
                        since.elapsed()
                    );
                }
            }
            Err(why) => {
                target.failed.fetch_add(1, Ordering::Relaxed);
                target.up.store(false, Ordering::Relaxed);
                if down_since.is_none() {
                    tracing::warn!(
                        "alerts: cannot post to Alertmanager {}: {why}; retrying with backoff (up to {:?}); detection and the other sinks go on",
                        ep.url,
                        BACKOFF_MAX
                    );
                    down_since = Some((now, why));
                }
                retry_at = Some(now + backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        if stop {
            return;
        }
    }
}

/// One POST of `body` to the endpoint, within `timeout`.
async fn post(ep: &Endpoint, body: Bytes, timeout: Duration) -> Result<(), String> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(&ep.authority)
            .await
            .map_err(|e| format!("connect {}: {e}", ep.authority))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::post(ep.path.as_str())
            .header(hyper::header::HOST, ep.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("watcher/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| {
                String::from_utf8_lossy(&b.to_bytes())
                    .trim()
                    .chars()
                    .take(200)
                    .collect::<String>()
            })
            .unwrap_or_default();
        Err(format!("HTTP {status}: {text}"))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// `[alerts]`: open incidents as alerts in Prometheus Alertmanager (`watcher run`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Alertmanager base URLs (`http://host:port`, optionally with a path
    /// prefix); every one receives every alert. Empty: no alerts.
    pub alertmanager: Vec<String>,
    /// Re-post open incidents this often (seconds); each carries an `endsAt`
    /// four periods ahead, so Alertmanager ends it by itself if watcher stops.
    pub repost_s: f64,
    /// One post's deadline (seconds).
    pub timeout_s: f64,
    /// The `host` label; empty: this host's name.
    pub host: String,
    /// Severity per finding kind: critical, warning, info, or none (no alert).
    pub severity: std::collections::BTreeMap<String, String>,
    /// Labels added to every alert (e.g. `env = "prod"`).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            alertmanager: Vec::new(),
            repost_s: 60.0,
            timeout_s: 5.0,
            host: String::new(),
            severity: Default::default(),
            labels: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::record::{Container, InvolvedProcess, Process};

    fn finding(state: &str) -> FindingRecord {
        FindingRecord {
            kind: "port_conflict".into(),
            state: state.into(),
            id: "port_conflict-00000000000000aa".into(),
            subject: "port_conflict-00000000000000bb".into(),
            summary: "nginx cannot bind 0.0.0.0:80: held by apache2".into(),
            count: 1,
            first_seen: "2026-01-02T03:04:05.000006Z".into(),
            last_seen: "2026-01-02T03:04:05.000006Z".into(),
            processes: vec![InvolvedProcess {
                role: "failing".into(),
                process: Process {
                    pid: 7,
                    thread: None,
                    name: "nginx".into(),
                    executable: Some("/usr/sbin/nginx".into()),
                    command_line: None,
                    entity_id: None,
                    parent: None,
                    user: None,
                    exit_code: None,
                },
                address: None,
                since: None,
                container: Some(Container {
                    id: "ab".repeat(32),
                    name: Some("web".into()),
                    image: None,
                    runtime: "docker".into(),
                }),
                orchestrator: None,
            }],
            details: Default::default(),
        }
    }

    #[test]
    fn an_open_finding_is_a_firing_alert_with_labels_and_what_to_do() {
        let mut c = AlertsConfig {
            host: "h1".into(),
            ..Default::default()
        };
        c.labels.insert("team".into(), "ops".into());
        let l = Labeller::new(&c);
        let a = l.alert(&finding("open"), "2026-01-02T03:04:06Z").unwrap();
        let want: BTreeMap<String, String> = [
            ("alertname", "WatcherPortConflict"),
            ("kind", "port_conflict"),
            ("severity", "critical"),
            ("host", "h1"),
            ("program", "nginx"),
            ("container", "web"),
            ("incident", "port_conflict-00000000000000bb"),
            ("team", "ops"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(a.labels, want);
        assert_eq!(
            a.annotations["summary"],
            "nginx cannot bind 0.0.0.0:80: held by apache2"
        );
        assert!(a.annotations["description"].starts_with("A program cannot bind"));
        assert_eq!(a.starts_at, "2026-01-02T03:04:05.000006Z");
        assert_eq!(a.ends_at, "", "open: endsAt is set at each post");
        let r = l
            .alert(&finding("resolved"), "2026-01-02T03:09:00Z")
            .unwrap();
        assert_eq!(r.ends_at, "2026-01-02T03:09:00Z");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["endsAt"], "2026-01-02T03:09:00Z");
        assert_eq!(json["startsAt"], "2026-01-02T03:04:05.000006Z");
    }

    #[test]
    fn severity_is_configurable_and_none_sends_nothing() {
        let mut c = AlertsConfig::default();
        c.severity.insert("port_conflict".into(), "warning".into());
        assert_eq!(
            Labeller::new(&c)
                .alert(&finding("open"), "t")
                .unwrap()
                .labels["severity"],
            "warning"
        );
        c.severity.insert("port_conflict".into(), "none".into());
        assert!(Labeller::new(&c).alert(&finding("open"), "t").is_none());
        for k in Kind::ALL {
            assert!(SEVERITIES.contains(&default_severity(k)));
            assert_ne!(
                what_to_do(k.as_str()),
                what_to_do("?"),
                "{k:?} has its own advice"
            );
        }
    }

    #[test]
    fn names_and_endpoints() {
        assert_eq!(
            alertname("zombie_accumulation"),
            "WatcherZombieAccumulation"
        );
        assert_eq!(alertname("zombie"), "WatcherZombie");
        let e = endpoint("http://127.0.0.1:9093").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("127.0.0.1:9093", "/api/v2/alerts")
        );
        let e = endpoint("http://am.example/prefix/").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("am.example:80", "/prefix/api/v2/alerts")
        );
        assert!(endpoint("https://am:9093")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(endpoint("am:9093").is_err());
        assert!(endpoint("not a url").is_err());
    }

    #[test]
    fn names_a_local_user_chose_are_inert_in_labels_and_annotations() {
        let hostile = format!("evil\x1b[2J\x1b]0;pwned\x07\nname{}", "é".repeat(3000));
        let v = inert(&hostile, LABEL_MAX);
        assert!(v.len() <= LABEL_MAX, "{}", v.len());
        assert!(!v.chars().any(|c| c.is_control()), "{v:?}");
        assert!(v.starts_with("evil\\u{1b}[2J"), "{v:?}");
        assert!(v.ends_with('…'));
        assert_eq!(inert("nginx", LABEL_MAX), "nginx");
    }
}
