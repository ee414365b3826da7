//! `watcher run`: the daemon. Findings (and optionally raw events) as NDJSON
//! to the configured sinks, Prometheus metrics on loopback, SIGHUP to reopen
//! files and reload the configuration, SIGTERM/SIGINT to drain and stop,
//! readiness to systemd, and a canary that proves the pipeline sees events.
use crate::kernel::clock::Clock;
use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    cli::config::Config,
    cli::trace,
    kernel::loader::{self, LoadOptions},
    kernel::reader::ReaderOptions,
    output::lane::{Lane, Line, SinkWriter},
    output::record::Record,
    output::sinks::{FileSink, SocketSink, SyslogSink, Types},
    output::stats::{SharedStats, Stats},
    pipeline::engine::Engine,
    pipeline::{self, Output, PipelineSettings},
};

fn say(line: &str) {
    let _ = writeln!(io::stderr(), "watcher: {line}");
}

/// The configuration at `path`; a missing file means the documented defaults.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    if !path.exists() {
        say(&format!(
            "no config file at {}: using the defaults",
            path.display()
        ));
        return Ok(Config::default());
    }
    Ok(Config::load(path)?)
}

/// The daemon's status, for `watcher check --daemon`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Status {
    pub pid: u32,
    pub healthy: bool,
    /// Unix seconds of the last update (every second while running).
    pub updated_unix: u64,
    pub canary_ok: u64,
    pub canary_missed: u64,
    pub events: u64,
    pub lost: u64,
}

struct Feed {
    config_path: PathBuf,
    config: Config,
    types: Types,
    /// stdout, the file, syslog: each on its own thread behind a bounded queue.
    lanes: Vec<Lane>,
    file: Option<PathBuf>,
    socket: Option<SocketSink>,
    /// Open incidents as alerts in Alertmanager (`[alerts]`).
    alerts: Option<crate::output::alerts::AlertSink>,
    /// Records as OpenTelemetry logs (`[otlp]`).
    otlp: Option<crate::output::otlp::OtlpSink>,
    status_file: PathBuf,
    /// Writes the status file off the deciding thread (a write and a
    /// rename: a disk that stalls must not stall detection).
    status: StatusWriter,
}

/// The thread that writes the status file: handed the status each second,
/// without waiting (one pending at most: while the disk is slow a second's
/// status is skipped, the next one brings it up to date).
struct StatusWriter {
    tx: Option<std::sync::mpsc::SyncSender<(PathBuf, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StatusWriter {
    fn start() -> anyhow::Result<StatusWriter> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(PathBuf, Vec<u8>)>(1);
        let thread = std::thread::Builder::new()
            .name("watcher-status".into())
            .spawn(move || {
                for (path, text) in rx {
                    write_status_file(&path, &text);
                }
            })
            .context("starting the status file's thread")?;
        Ok(StatusWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hand `text` over for `path` (skipped while one is still pending).
    fn offer(&self, path: &Path, text: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send((path.to_owned(), text));
        }
    }

    /// Write what is pending, then stop.
    fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Replace the status file at `path` with `text` (written aside, then
/// renamed: a reader never sees half of it).
fn write_status_file(path: &Path, text: &[u8]) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

impl Feed {
    fn open(config_path: &Path, config: &Config) -> anyhow::Result<Feed> {
        let f = &config.feed;
        let types = Types::new(&f.types).map_err(anyhow::Error::msg)?;
        let mut lanes = Vec::new();
        let lane = |name, w: Box<dyn SinkWriter>| {
            Lane::start(name, w, f.sink_queue)
                .with_context(|| format!("starting the {name} sink's thread"))
        };
        if f.stdout {
            lanes.push(
                lane(
                    "stdout",
                    Box::new(io::BufWriter::with_capacity(64 * 1024, io::stdout())),
                )?
                // (A finding is written at once when stdout can take it.)
                .with_direct(crate::output::lane::Direct::stdout()),
            );
        }
        if let Some(p) = &f.file {
            let file = FileSink::open(p)
                .with_context(|| format!("opening the feed file {}", p.display()))?;
            lanes.push(lane("file", Box::new(file))?);
        }
        if f.syslog {
            let syslog = SyslogSink::open(&f.syslog_socket).with_context(|| {
                format!(
                    "connecting to syslog at {} (is a syslog daemon running?)",
                    f.syslog_socket.display()
                )
            })?;
            // (A finding is sent at once when the socket takes it without waiting.)
            let direct = syslog.direct().ok();
            lanes.push(lane("syslog", Box::new(syslog))?.with_direct(direct));
        }
        let socket = match &f.socket {
            Some(p) => Some(
                SocketSink::bind(p)
                    .with_context(|| format!("creating the feed socket {}", p.display()))?,
            ),
            None => None,
        };
        Ok(Feed {
            config_path: config_path.to_owned(),
            config: config.clone(),
            types,
            lanes,
            file: f.file.clone(),
            socket,
            // Started once by `run` (it keeps its book of open incidents across reloads).
            alerts: None,
            otlp: None,
            status_file: config.health.status_file.clone(),
            status: StatusWriter::start()?,
        })
    }

    fn lane(&self, name: &str) -> Option<&Lane> {
        self.lanes.iter().find(|l| l.name() == name)
    }

    fn describe(&self) -> String {
        let mut to = Vec::new();
        if self.lane("stdout").is_some() {
            to.push("stdout".to_owned());
        }
        if let Some(f) = &self.file {
            to.push(format!("file {}", f.display()));
        }
        if self.lane("syslog").is_some() {
            to.push(format!(
                "syslog ({})",
                self.config.feed.syslog_socket.display()
            ));
        }
        if let Some(s) = &self.socket {
            to.push(format!("socket {}", s.path().display()));
        }
        if let Some(o) = &self.otlp {
            to.push(format!("{} of {}", o.describe(), o.types().join(",")));
        }
        if self.alerts.is_some() {
            to.push(format!(
                "alerts to Alertmanager {}",
                self.config.alerts.alertmanager.join(", ")
            ));
        }
        format!(
            "feed of {} → {}",
            self.types.list().join(","),
            if to.is_empty() {
                "nowhere (no sink enabled)".to_owned()
            } else {
                to.join(", ")
            }
        )
    }

    /// The status now, as the status file holds it.
    fn status_text(stats: &SharedStats) -> Option<Vec<u8>> {
        let s = stats.lock().expect("stats lock");
        let st = Status {
            pid: std::process::id(),
            healthy: s.healthy,
            updated_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            canary_ok: s.canary_ok,
            canary_missed: s.canary_missed,
            events: s.events_by_type.values().sum(),
            lost: s.lost,
        };
        drop(s);
        serde_json::to_vec(&st).ok()
    }

    /// Write the status file now (at start, before the pipeline runs).
    fn write_status(&self, stats: &SharedStats) {
        if let Some(text) = Self::status_text(stats) {
            write_status_file(&self.status_file, &text);
        }
    }

    /// Hand the status to its thread (each second, from the deciding thread).
    fn offer_status(&self, stats: &SharedStats) {
        if let Some(text) = Self::status_text(stats) {
            self.status.offer(&self.status_file, text);
        }
    }
}

impl Output for Feed {
    /// Serialized once here; each sink's lane takes it without waiting.
    fn write(&mut self, records: &[Record], stats: &SharedStats) -> anyhow::Result<bool> {
        let mut written = 0u64;
        if let Some(a) = &self.alerts {
            for r in records {
                if let crate::output::record::Body::Finding(f) = &r.body {
                    a.offer(f);
                }
            }
        }
        if let Some(o) = &self.otlp {
            for r in records {
                o.offer(r);
            }
        }
        for r in records.iter().filter(|r| self.types.wants(r)) {
            let line = Line::of(r).context("serializing a record")?;
            if let Some(s) = &self.socket {
                s.send(&line.json);
            }
            for lane in &self.lanes {
                lane.send(line.clone());
            }
            written += 1;
        }
        let mut s = stats.lock().expect("stats lock");
        s.records_written += written;
        if let Some(sock) = &self.socket {
            s.sink_drops
                .insert("socket".into(), sock.dropped.load(Ordering::Relaxed));
            s.socket_consumers = Some(sock.consumers() as u64);
        }
        for lane in &self.lanes {
            // Dropped for a full queue, or not taken by the sink (write errors).
            s.sink_drops
                .insert(lane.name().into(), lane.dropped() + lane.errors());
            s.sink_latency.insert(lane.name().into(), lane.latency());
            s.sink_direct
                .insert(lane.name().into(), lane.direct_writes());
        }
        Ok(true)
    }

    fn reload(&mut self, engine: &mut Engine) -> anyhow::Result<Vec<crate::detect::Finding>> {
        let new = load_config(&self.config_path)?;
        // What runs now: every comparison below is against it (a reopened
        // feed replaces `self`, config included).
        let running = self.config.clone();
        // Reopen the file in any case (logrotate moved it): the lane writes
        // to the new one from its next batch.
        if let (Some(p), Some(lane)) = (&self.file, self.lane("file")) {
            let file = FileSink::open(p).with_context(|| format!("reopening {}", p.display()))?;
            lane.replace(Box::new(file));
        }
        if new.feed != running.feed {
            let mut fresh = Feed::open(&self.config_path, &new)?;
            // Keep what did not change (the socket's consumers stay connected).
            if new.feed.socket == running.feed.socket {
                fresh.socket = self.socket.take();
            }
            // The alert sink keeps its book of open incidents.
            fresh.alerts = self.alerts.take();
            fresh.otlp = self.otlp.take();
            // The old lanes write what they hold off this thread.
            let old = std::mem::replace(self, fresh);
            let _ = std::thread::Builder::new()
                .name("watcher-sink-close".into())
                .spawn(move || drop(old));
        }
        let mut resolved = Vec::new();
        if new.detect != running.detect {
            // Open incidents and what the detectors know stay; new thresholds
            // apply to what comes next; a disabled detector's incidents resolve.
            resolved = engine
                .detectors
                .reconfigure(new.detect.clone(), Clock::mono_now());
            engine.enricher.procs.identity = new.detect.identity.into();
        }
        if new.metrics != running.metrics {
            say("[metrics] changed: it takes effect at the next restart");
        }
        if new.alerts != running.alerts {
            say("[alerts] changed: it takes effect at the next restart");
        }
        if new.otlp != running.otlp {
            say("[otlp] changed: it takes effect at the next restart");
        }
        if new.daemon != running.daemon {
            say("[daemon] changed: it takes effect at the next restart");
        }
        self.config = new;
        // What runs until then: the listener, the sink with its
        // Alertmanagers and open alerts (the next reload compares with them).
        self.config.metrics = running.metrics;
        self.config.alerts = running.alerts;
        self.config.otlp = running.otlp;
        self.config.daemon = running.daemon;
        self.status_file = self.config.health.status_file.clone();
        say(&format!(
            "configuration reloaded from {}; {}",
            self.config_path.display(),
            self.describe()
        ));
        Ok(resolved)
    }

    fn tick(&mut self, stats: &SharedStats) {
        // Consumers come and go between writes too.
        stats.lock().expect("stats lock").socket_consumers =
            self.socket.as_ref().map(|s| s.consumers() as u64);
        self.offer_status(stats);
    }

    fn wants_events(&self) -> bool {
        crate::output::filter::carries_events(self.types.list())
            || self.otlp.as_ref().is_some_and(|o| o.wants_events())
    }
}

/// Run the calling thread (and the threads it starts from now on) at nice
/// `nice`; `Err`: the one line that says why not and what to do.
fn set_nice(nice: i32) -> Result<(), String> {
    // SAFETY: plain integers; PRIO_PROCESS with 0 is the calling thread on Linux.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    Err(format!(
        "cannot run at nice {nice} ([daemon] nice): {e}; under a local user's flood a finding may wait for a CPU — give watcher CAP_SYS_NICE (or Nice={nice} in its systemd unit), or set [daemon] nice = 0 to say so"
    ))
}

pub fn run(
    config_path: PathBuf,
    load: LoadOptions,
    max_processes: usize,
) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_path)?;
    // Before any thread is started: threads take their nice value from the
    // one that starts them (Linux keeps it per thread).
    if let Err(line) = set_nice(config.daemon.nice) {
        say(&line);
    }
    // [otlp], with what the file leaves out from the OTEL_* environment.
    let otlp = crate::output::otlp::Settings::resolve(&config.otlp, &|k| std::env::var(k).ok())
        .map_err(|(key, m)| anyhow::anyhow!("[otlp] {key}: {m}"))?;
    let mut load = load;
    let mut types = config.feed.types.clone();
    if let Some(o) = &otlp {
        types.extend(o.types.list().iter().cloned());
    }
    load.kinds = pipeline::kernel_kinds(&types);
    let probes = loader::load(&load)?;
    for line in probes.degraded_lines() {
        say(&line);
    }
    let signals = pipeline::Signals::install()?;
    let mut feed = Feed::open(&config_path, &config)?;
    if !config.alerts.alertmanager.is_empty() {
        feed.alerts = Some(
            crate::output::alerts::AlertSink::start(&config.alerts)
                .context("starting the Alertmanager sink's thread")?,
        );
    }
    if let Some(o) = otlp {
        feed.otlp = Some(
            crate::output::otlp::OtlpSink::start(o).context("starting the OTLP sink's thread")?,
        );
    }
    // Healthy until a canary says otherwise.
    let stats: SharedStats = Arc::new(Mutex::new(Stats {
        healthy: true,
        alerts: feed.alerts.as_ref().map(|a| a.stats.clone()),
        otlp: feed.otlp.as_ref().map(|o| o.stats.clone()),
        ..Stats::default()
    }));
    if !config.metrics.listen.is_empty() {
        let listen = || {
            format!(
                "listening for metrics on {} ([metrics] listen)",
                config.metrics.listen
            )
        };
        let listener = std::net::TcpListener::bind(&config.metrics.listen).with_context(listen)?;
        crate::output::metrics::start(listener, stats.clone()).with_context(listen)?;
    }
    let (engine, initial, seeded) = trace::engine(&config, max_processes);
    say(&format!(
        "running: {} attached ({} processes known); {}; metrics {}; canary every {} s",
        probes.attachment(),
        seeded,
        feed.describe(),
        if config.metrics.listen.is_empty() {
            "off".to_owned()
        } else {
            format!("on http://{}/metrics", config.metrics.listen)
        },
        config.health.canary_interval_s
    ));
    if !initial.is_empty() {
        feed.write(&initial, &stats)?;
    }
    feed.write_status(&stats);
    // systemd readiness (Type=notify); nothing happens without NOTIFY_SOCKET.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let settings = PipelineSettings {
        reader: ReaderOptions::for_load(&load),
        canary_interval: Some(Duration::from_secs_f64(config.health.canary_interval_s)),
        canary_deadline: Duration::from_secs_f64(config.health.canary_deadline_s),
        reload_on_hup: true,
    };
    let st = pipeline::run(probes, engine, settings, &mut feed, stats.clone(), signals)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    // (Its last write first: the file must not come back after the removal.)
    feed.status.stop();
    let _ = std::fs::remove_file(&feed.status_file);
    drop(feed);
    say(&format!(
        "stopped: {} events, {} findings, {} records written, {} lost",
        st.events_by_type.values().sum::<u64>(),
        st.findings.values().sum::<u64>(),
        st.records_written,
        st.lost
    ));
    Ok(ExitCode::SUCCESS)
}

/// `watcher check --daemon`: is the daemon running and seeing events?
pub fn check_daemon(status_file: &Path) -> anyhow::Result<ExitCode> {
    let text = match std::fs::read_to_string(status_file) {
        Ok(t) => t,
        Err(e) => {
            println!("FAIL  daemon: no status at {} ({e}): `watcher run` is not running (systemctl status watcher)", status_file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let st: Status = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a watcher status file", status_file.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let age = now.saturating_sub(st.updated_unix);
    let alive = std::path::Path::new(&format!("/proc/{}", st.pid)).exists();
    if !alive || age > 10 {
        println!(
            "FAIL  daemon: pid {} last reported {age} s ago: it is not running or is stuck",
            st.pid
        );
        return Ok(ExitCode::from(1));
    }
    if !st.healthy {
        println!(
            "FAIL  daemon: pid {} is running but BLIND: its canary events do not come through ({} missed); restart it and look at its log",
            st.pid, st.canary_missed
        );
        return Ok(ExitCode::from(1));
    }
    println!(
        "ok    daemon: pid {} healthy, {} canaries through, {} events, {} lost",
        st.pid, st.canary_ok, st.events, st.lost
    );
    Ok(ExitCode::SUCCESS)
}
