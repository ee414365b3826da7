//! Prometheus metrics: the pipeline's counters, encoded at scrape time in
//! the Prometheus text format (0.0.4) by `prometheus-client` (a collector
//! reads a snapshot of the counters), served by `hyper` (`GET /metrics`).
use std::{convert::Infallible, fmt};

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use tokio::net::TcpListener;
use watcher_common::EventKind;

use crate::{
    detect::Kind,
    output::stats::{SharedStats, Stats},
};

/// One family of counters, one sample per label value (`name` ends in `_total`).
fn counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let name = name.strip_suffix("_total").unwrap_or(name);
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in samples {
        ConstCounter::new(n).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// A counter without labels.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, n: u64) -> fmt::Result {
    let name = name.strip_suffix("_total").unwrap_or(name);
    ConstCounter::new(n).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// One family of gauges, one sample per label value.
fn gauges<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, n) in samples {
        ConstGauge::new(n).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// A gauge without labels.
fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A latency histogram of the pipeline, as `prometheus-client` encodes one.
#[derive(Debug)]
struct Hist<'a>(&'a crate::output::stages::Histogram);

impl EncodeMetric for Hist<'_> {
    fn encode(&self, mut e: MetricEncoder) -> fmt::Result {
        let h = self.0;
        let buckets: Vec<(f64, u64)> = h
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let le = crate::output::stages::BOUNDS_S
                    .get(i)
                    .copied()
                    .unwrap_or(f64::INFINITY);
                (le, *n)
            })
            .collect();
        e.encode_histogram::<NoLabelSet>(h.sum_s, h.count, &buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One family of histograms, one per label value.
fn histograms<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, &'a crate::output::stages::Histogram)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (value, h) in samples {
        Hist(h).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// A snapshot of the counters, encoded at scrape time.
#[derive(Debug)]
struct Snapshot(Stats);

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let e = &mut e;
        counters(
            e,
            "watcher_events_total",
            "Kernel events processed, by record type.",
            "type",
            EventKind::ALL.iter().map(|k| {
                (
                    k.as_str(),
                    s.events_by_type.get(k.as_str()).copied().unwrap_or(0),
                )
            }),
        )?;
        counters(e, "watcher_lost_events_total", "Kernel records lost because the ring buffer was full (per-CPU counters in the kernel), by record type.", "type",
            EventKind::ALL.iter().map(|k| (k.as_str(), s.lost_by_type.get(k.as_str()).copied().unwrap_or(0))))?;
        counters(e, "watcher_program_skips_total", "Runs of a program the kernel skipped because a program was already running on its CPU (any other for a tracefs-attached program, itself for a raw tracepoint's): each a record that may have been lost without a trace in the ring, by program.", "program",
            s.program_skips.iter().map(|(p, n)| (p.as_str(), *n)))?;
        counters(e, "watcher_program_runs_total", "Runs of each attached program, counted by the kernel while kernel.bpf_stats_enabled is 1 (off by default: sysctl -w kernel.bpf_stats_enabled=1).", "program",
            s.program_runs.iter().map(|(p, (n, _))| (p.as_str(), *n)))?;
        {
            let mut m = e.encode_descriptor("watcher_program_run_seconds", "Time the kernel spent in each attached program, counted while kernel.bpf_stats_enabled is 1; with watcher_program_runs_total, the cost of one run.", None, MetricType::Counter)?;
            for (p, (_, ns)) in &s.program_runs {
                ConstCounter::new(*ns as f64 / 1e9)
                    .encode(m.encode_family(&[("program", p.as_str())])?)?;
            }
        }
        let tables = watcher_common::KernelTable::ALL;
        counters(e, "watcher_kernel_table_full_total", "Inserts a full kernel-side table refused (each is information lost, reported as a loss and repaired by a reconciliation), by table.", "table",
            tables.iter().map(|t| (t.as_str(), s.table_full.get(t.as_str()).copied().unwrap_or(0))))?;
        let kt = |t: &watcher_common::KernelTable| {
            s.kernel_tables.get(t.as_str()).cloned().unwrap_or_default()
        };
        gauges(
            e,
            "watcher_kernel_table_entries",
            "Entries in each kernel-side table at the last sweep (every 30 s).",
            "table",
            tables.iter().map(|t| (t.as_str(), kt(t).entries)),
        )?;
        gauges(
            e,
            "watcher_kernel_table_capacity",
            "Capacity of each kernel-side table (--table-entries).",
            "table",
            tables.iter().map(|t| (t.as_str(), kt(t).capacity)),
        )?;
        counters(e, "watcher_kernel_table_swept_total", "Kernel-side table entries removed because their task had ended without the event that clears them, by table.", "table",
            tables.iter().map(|t| (t.as_str(), kt(t).swept)))?;
        histograms(e, "watcher_stage_latency_seconds", "Latency per pipeline stage: kernel_to_read (a record's kernel timestamp to the drain that read it; kernel_to_read_deciding and kernel_to_read_bulk: the same for records that can decide a finding, which wake the reader, and for the others), read_to_decided (to the detectors' verdict, findings only), decided_to_written (to the sinks' queues having taken it, findings only; the sinks' own writes: watcher_sink_write_latency_seconds).", "stage",
            s.stages.each())?;
        histograms(
            e,
            "watcher_sink_write_latency_seconds",
            "Per sink: a record offered to the sink's queue → written by the sink's own thread.",
            "sink",
            s.sink_latency.iter().map(|(k, h)| (k.as_str(), h)),
        )?;
        counter(
            e,
            "watcher_decode_errors_total",
            "Ring-buffer records that could not be decoded.",
            s.decode_errors,
        )?;
        {
            let mut m = e.encode_descriptor(
                "watcher_findings",
                "Finding records written, by kind and state.",
                None,
                MetricType::Counter,
            )?;
            for k in Kind::ALL {
                for st in ["open", "update", "resolved"] {
                    let n = s.findings.get(&(k.as_str(), st)).copied().unwrap_or(0);
                    ConstCounter::new(n)
                        .encode(m.encode_family(&[("kind", k.as_str()), ("state", st)])?)?;
                }
            }
        }
        {
            let mut m = e.encode_descriptor(
                "watcher_incidents_not_opened",
                "Incidents not opened, by finding kind and why: `table_full` ([detect] max_incidents open already) or `user_rate` (their user had opened [detect] max_opens_per_user_s in that second).",
                None,
                MetricType::Counter,
            )?;
            for k in Kind::ALL {
                let (full, rate) = s.not_opened.get(k.as_str()).copied().unwrap_or((0, 0));
                for (why, n) in [("table_full", full), ("user_rate", rate)] {
                    ConstCounter::new(n)
                        .encode(m.encode_family(&[("kind", k.as_str()), ("reason", why)])?)?;
                }
            }
        }
        gauges(
            e,
            "watcher_open_incidents",
            "Incidents open now, by finding kind.",
            "kind",
            Kind::ALL.iter().map(|k| {
                (
                    k.as_str(),
                    s.open_incidents.get(k.as_str()).copied().unwrap_or(0),
                )
            }),
        )?;
        gauges(
            e,
            "watcher_table_entries",
            "Entries in watcher's bounded tables.",
            "table",
            [
                ("processes", s.processes),
                ("sockets", s.sockets),
                ("containers", s.containers),
                ("exec_wake_programs", s.exec_wake_programs),
            ],
        )?;
        gauge(e, "watcher_exec_wake_all", "1 while every exec wakes the reader at once because the programs whose execs can decide a finding outnumber the kernel's list of them (4,095): more wakeups, no finding later.", if s.exec_wake_all { 1.0 } else { 0.0 })?;
        counters(
            e,
            "watcher_table_evictions_total",
            "Entries evicted from a full table (`sockets`: also holders not kept because their process held 4,096 non-listening sockets already).",
            "table",
            [("processes", s.process_evictions), ("sockets", s.socket_evictions)],
        )?;
        counters(
            e,
            "watcher_new_parents_total",
            "Children of ending processes given their new parent: named by the kernel side, or read from /proc (on kernels whose layout does not let the kernel side tell).",
            "source",
            [
                ("kernel", s.new_parents_told),
                ("proc", s.new_parents_asked),
            ],
        )?;
        counter(
            e,
            "watcher_socket_lookups_total",
            "Targeted lookups of the kernel's socket table (to confirm port holders).",
            s.socket_lookups,
        )?;
        counter(e, "watcher_command_lines_cut_total", "Exec records whose command line was longer than the kernel's cap (--args-bytes, 4096 by default): kept cut, and said to be (exec.args_truncated).", s.command_lines_cut)?;
        counter(e, "watcher_socket_lookups_skipped_total", "Lookups skipped over a user's budget of 200 a second, or the namespace workers' 400 a second for all users (the socket table was used as it was).", s.socket_lookups_skipped)?;
        counter(e, "watcher_port_summaries_delayed_total", "ports_exhausted summaries of a namespace's port use that waited for a slot: summaries of every namespace together start at least 250 ms apart and take at most 1 % of a CPU (each walks the kernel's whole TCP table); a delayed one is asked at a later slot while its namespace still fails.", s.port_summaries_delayed)?;
        counter(e, "watcher_socket_lookups_by_inode_total", "Socket lookups answered from sock_diag alone, each socket's owner from the inode its bind or listen record carried (no /proc): on a namespace worker, or on the pipeline's own thread with confirm_before_open.", s.socket_lookups_by_inode)?;
        counter(e, "watcher_socket_lookups_unanswered_total", "Lookups of a network namespace's socket table not answered within 2 s, of a namespace that could not be entered, or whose answer needed a dump of the port's connections beyond the workers' budget for them (5 % of a CPU): the table was used as it was.", s.socket_lookups_unanswered)?;
        counter(e, "watcher_container_names_late_total", "Event records written without their container's name: the runtime did not name it within 300 ms.", s.container_names_late)?;
        counter(
            e,
            "watcher_reconciliations_total",
            "Reconciliations of the process table with /proc after lost records.",
            s.reconciliations,
        )?;
        counter(e, "watcher_confirmations_total", "Confirmations against /proc of the processes findings about processes (zombies, instances) name: just after they are written, or before they open with `confirm_before_open`.", s.confirmations)?;
        counter(
            e,
            "watcher_reconciled_processes_total",
            "Processes a reconciliation corrected (ended, reaped or started unseen during a loss).",
            s.reconciled_processes,
        )?;
        counter(e, "watcher_reconciled_sockets_total", "Socket-table holders a reconciliation dropped (their close was lost) or added (their start was lost).", s.reconciled_sockets)?;
        counter(
            e,
            "watcher_findings_withdrawn_total",
            "Findings /proc showed false: written at once and resolved as withdrawn, or held (after a loss, or with `confirm_before_open`) and never written.",
            s.findings_withdrawn,
        )?;
        counter(
            e,
            "watcher_records_written_total",
            "Records written to the feed.",
            s.records_written,
        )?;
        if let Some(n) = s.socket_consumers {
            gauge(
                e,
                "watcher_feed_socket_consumers",
                "Consumers connected to the feed socket ([feed] socket) now.",
                n as f64,
            )?;
        }
        counters(e, "watcher_sink_dropped_total", "Records a sink could not take: its queue was full (a stalled sink or consumer) or its write failed.", "sink",
            ["stdout", "file", "syslog", "socket"].map(|k| (k, s.sink_drops.get(k).copied().unwrap_or(0))))?;
        counters(e, "watcher_sink_written_at_once_total", "Findings, losses and health records written by the pipeline itself, not by the sink's thread: the sink (stdout as a socket or a pipe with room, syslog's datagram socket) took them without waiting and nothing was queued before them.", "sink",
            ["stdout", "syslog"].map(|k| (k, s.sink_direct.get(k).copied().unwrap_or(0))))?;
        if let Some(o) = &s.otlp {
            use std::sync::atomic::Ordering::Relaxed;
            counters(e, "watcher_otlp_records_total", "Records for the OTLP receiver, by result: sent (taken), rejected (refused by the receiver, partial successes included), dropped (its queue was full, or it was still down when watcher stopped).", "result",
                [("sent", o.sent.load(Relaxed)), ("rejected", o.rejected.load(Relaxed)), ("dropped", o.dropped.load(Relaxed))])?;
            gauge(
                e,
                "watcher_otlp_queue",
                "Records waiting for the OTLP receiver (queued, and in the batch being exported).",
                o.queue.load(Relaxed) as f64,
            )?;
            gauge(
                e,
                "watcher_otlp_up",
                "1 when the last export to the OTLP receiver succeeded (or none failed yet).",
                u64::from(o.up.load(Relaxed)) as f64,
            )?;
        }
        if let Some(a) = &s.alerts {
            use std::sync::atomic::Ordering::Relaxed;
            {
                let mut m = e.encode_descriptor("watcher_alert_posts", "Posts to each Alertmanager of [alerts], by result (ok, failed: refused, unreachable or no answer within timeout_s; retried with backoff).", None, MetricType::Counter)?;
                for t in &a.targets {
                    for (result, n) in [
                        ("ok", t.ok.load(Relaxed)),
                        ("failed", t.failed.load(Relaxed)),
                    ] {
                        ConstCounter::new(n).encode(m.encode_family(&[
                            ("alertmanager", t.url.as_str()),
                            ("result", result),
                        ])?)?;
                    }
                }
            }
            gauges(e, "watcher_alerts_pending", "Alerts whose newest state an Alertmanager has not taken yet (an opening, a resolution).", "alertmanager",
                a.targets.iter().map(|t| (t.url.as_str(), t.pending.load(Relaxed))))?;
            gauges(
                e,
                "watcher_alertmanager_up",
                "1 when the last post to this Alertmanager succeeded.",
                "alertmanager",
                a.targets
                    .iter()
                    .map(|t| (t.url.as_str(), u64::from(t.up.load(Relaxed)))),
            )?;
            gauge(e, "watcher_alerts", "Alerts the Alertmanager sink keeps: open incidents, and resolved ones not yet delivered.", a.alerts.load(Relaxed) as f64)?;
            counter(e, "watcher_alerts_dropped_total", "Findings the Alertmanager sink could not take (its queue, or its book of 4096 alerts, was full).", a.dropped.load(Relaxed))?;
        }
        gauge(e, "watcher_pipeline_healthy", "1 when the last canary event came through the whole pipeline in time, 0 when watcher is blind.", if s.healthy { 1.0 } else { 0.0 })?;
        counters(
            e,
            "watcher_canary_total",
            "Canary events, by result.",
            "result",
            [("ok", s.canary_ok), ("missed", s.canary_missed)],
        )?;
        gauge(
            e,
            "watcher_canary_latency_seconds",
            "The last canary's trip from its exit in the kernel to the reader.",
            s.canary_latency_s,
        )?;
        gauge(
            e,
            "watcher_uptime_seconds",
            "Seconds since the pipeline started.",
            s.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0),
        )?;
        Ok(())
    }
}

/// The text exposition of `s`.
pub(crate) fn render(s: &Stats) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(s.clone())));
    let mut out = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

type Response = hyper::Response<Full<Bytes>>;

fn respond(stats: &SharedStats, req: &hyper::Request<hyper::body::Incoming>) -> Response {
    let (status, ctype, body) =
        if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
            let snapshot = stats.lock().map(|s| s.clone()).unwrap_or_default();
            (
                hyper::StatusCode::OK,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                render(&snapshot),
            )
        } else {
            (
                hyper::StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "watcher serves /metrics\n".to_owned(),
            )
        };
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}

/// Serve `GET /metrics` on `listener` from a thread of its own, with its
/// own small runtime, at the helpers' nice value: the thread that reads and
/// decides never serves a scrape, and a scrape never waits for a batch.
pub(crate) fn start(listener: std::net::TcpListener, stats: SharedStats) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("watcher-metrics".into())
        .spawn(move || {
            crate::kernel::sched::run_as_helper();
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, stats).await,
                    Err(e) => tracing::error!("metrics: {e}"),
                }
            })
        })?;
    Ok(())
}

/// Serve `GET /metrics` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, stats: SharedStats) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let r = respond(&stats, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            // A scraper that stalls is dropped after the deadline.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(std::time::Duration::from_secs(5))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(conn), service),
            )
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_samples() {
        let mut s = Stats::default();
        s.events_by_type.insert("fork", 3);
        s.findings.insert(("zombie", "open"), 2);
        s.healthy = true;
        let text = render(&s);
        assert!(text.contains("watcher_events_total{type=\"fork\"} 3"));
        assert!(text.contains("watcher_findings_total{kind=\"zombie\",state=\"open\"} 2"));
        assert!(text.contains("watcher_pipeline_healthy 1"));
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            // A histogram's samples are its family's name with a suffix.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|x| {
                    name.strip_suffix(x)
                        .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
                })
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "no TYPE for {name}"
            );
        }
        // The stage histograms: cumulative buckets ending in +Inf, a sum and a count.
        let mut s = Stats::default();
        s.stages.read_to_decided.observe_ns(300_000);
        let text = render(&s);
        assert!(
            text.contains(
                "watcher_stage_latency_seconds_bucket{stage=\"read_to_decided\",le=\"0.0005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "watcher_stage_latency_seconds_bucket{stage=\"read_to_decided\",le=\"+Inf\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("watcher_stage_latency_seconds_count{stage=\"read_to_decided\"} 1"),
            "{text}"
        );
    }
}
