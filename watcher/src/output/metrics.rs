//! Prometheus metrics: the text exposition format (0.0.4), written from the
//! pipeline's counters at scrape time, served over plain HTTP (one request
//! per connection; `GET /metrics`). Both are small enough that a web
//! framework would be the larger part of the binary.
use std::fmt::Write as _;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use watcher_common::EventKind;

use crate::{
    detect::Kind,
    pipeline::{SharedStats, Stats},
};

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One labelled histogram's samples: cumulative buckets ending in `+Inf`, a sum and a count.
fn histogram(
    out: &mut String,
    name: &str,
    label: &str,
    value: &str,
    h: &crate::pipeline::stages::Histogram,
) {
    for (le, n) in h.cumulative() {
        let _ = writeln!(out, "{name}_bucket{{{label}=\"{value}\",le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {}", h.sum_s);
    let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {}", h.count);
}

/// The text exposition of `s`.
pub fn render(s: &Stats) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "watcher_events_total",
        "counter",
        "Kernel events processed, by record type.",
    );
    for k in EventKind::ALL {
        let n = s.events_by_type.get(k.as_str()).copied().unwrap_or(0);
        let _ = writeln!(o, "watcher_events_total{{type=\"{}\"}} {n}", k.as_str());
    }
    family(&mut o, "watcher_lost_events_total", "counter", "Kernel records lost because the ring buffer was full (per-CPU counters in the kernel), by record type.");
    for k in EventKind::ALL {
        let n = s.lost_by_type.get(k.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "watcher_lost_events_total{{type=\"{}\"}} {n}",
            k.as_str()
        );
    }
    family(&mut o, "watcher_kernel_table_full_total", "counter", "Inserts a full kernel-side table refused (each is information lost, reported as a loss and repaired by a reconciliation), by table.");
    for t in watcher_common::KernelTable::ALL {
        let n = s.table_full.get(t.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "watcher_kernel_table_full_total{{table=\"{}\"}} {n}",
            t.as_str()
        );
    }
    family(
        &mut o,
        "watcher_kernel_table_entries",
        "gauge",
        "Entries in each kernel-side table at the last sweep (every 30 s).",
    );
    for t in watcher_common::KernelTable::ALL {
        let n = s
            .kernel_tables
            .get(t.as_str())
            .map(|x| x.entries)
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "watcher_kernel_table_entries{{table=\"{}\"}} {n}",
            t.as_str()
        );
    }
    family(
        &mut o,
        "watcher_kernel_table_capacity",
        "gauge",
        "Capacity of each kernel-side table (--table-entries).",
    );
    for t in watcher_common::KernelTable::ALL {
        let n = s
            .kernel_tables
            .get(t.as_str())
            .map(|x| x.capacity)
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "watcher_kernel_table_capacity{{table=\"{}\"}} {n}",
            t.as_str()
        );
    }
    family(&mut o, "watcher_kernel_table_swept_total", "counter", "Kernel-side table entries removed because their task had ended without the event that clears them, by table.");
    for t in watcher_common::KernelTable::ALL {
        let n = s
            .kernel_tables
            .get(t.as_str())
            .map(|x| x.swept)
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "watcher_kernel_table_swept_total{{table=\"{}\"}} {n}",
            t.as_str()
        );
    }
    family(&mut o, "watcher_stage_latency_seconds", "histogram", "Latency per pipeline stage: kernel_to_read (a record's kernel timestamp to the drain that read it), read_to_decided (to the detectors' verdict, findings only), decided_to_written (to the sinks' queues having taken it, findings only; the sinks' own writes: watcher_sink_write_latency_seconds).");
    for (stage, h) in s.stages.each() {
        histogram(&mut o, "watcher_stage_latency_seconds", "stage", stage, h);
    }
    family(
        &mut o,
        "watcher_sink_write_latency_seconds",
        "histogram",
        "Per sink: a record offered to the sink's queue → written by the sink's own thread.",
    );
    for (sink, h) in &s.sink_latency {
        histogram(&mut o, "watcher_sink_write_latency_seconds", "sink", sink, h);
    }
    family(
        &mut o,
        "watcher_decode_errors_total",
        "counter",
        "Ring-buffer records that could not be decoded.",
    );
    let _ = writeln!(o, "watcher_decode_errors_total {}", s.decode_errors);
    family(
        &mut o,
        "watcher_findings_total",
        "counter",
        "Finding records written, by kind and state.",
    );
    for k in Kind::ALL {
        for st in ["open", "update", "resolved"] {
            let n = s.findings.get(&(k.as_str(), st)).copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "watcher_findings_total{{kind=\"{}\",state=\"{st}\"}} {n}",
                k.as_str()
            );
        }
    }
    family(
        &mut o,
        "watcher_open_incidents",
        "gauge",
        "Incidents open now, by finding kind.",
    );
    for k in Kind::ALL {
        let n = s.open_incidents.get(k.as_str()).copied().unwrap_or(0);
        let _ = writeln!(o, "watcher_open_incidents{{kind=\"{}\"}} {n}", k.as_str());
    }
    family(
        &mut o,
        "watcher_table_entries",
        "gauge",
        "Entries in watcher's bounded tables.",
    );
    let _ = writeln!(
        o,
        "watcher_table_entries{{table=\"processes\"}} {}",
        s.processes
    );
    let _ = writeln!(
        o,
        "watcher_table_entries{{table=\"sockets\"}} {}",
        s.sockets
    );
    let _ = writeln!(
        o,
        "watcher_table_entries{{table=\"containers\"}} {}",
        s.containers
    );
    family(
        &mut o,
        "watcher_table_evictions_total",
        "counter",
        "Entries evicted from a full table.",
    );
    let _ = writeln!(
        o,
        "watcher_table_evictions_total{{table=\"processes\"}} {}",
        s.process_evictions
    );
    family(
        &mut o,
        "watcher_socket_lookups_total",
        "counter",
        "Targeted lookups of the kernel's socket table (to confirm port holders).",
    );
    let _ = writeln!(o, "watcher_socket_lookups_total {}", s.socket_lookups);
    family(
        &mut o,
        "watcher_socket_lookups_skipped_total",
        "counter",
        "Lookups skipped over the budget of 200 a second (the socket table was used as it was).",
    );
    let _ = writeln!(
        o,
        "watcher_socket_lookups_skipped_total {}",
        s.socket_lookups_skipped
    );
    family(&mut o, "watcher_socket_lookups_in_place_total", "counter", "Socket lookups answered on the pipeline's own thread: sock_diag on the namespace's kept socket, owners from the socket inodes the bind records carried (no /proc, no helper thread).");
    let _ = writeln!(
        o,
        "watcher_socket_lookups_in_place_total {}",
        s.socket_lookups_in_place
    );
    family(&mut o, "watcher_socket_lookups_unanswered_total", "counter", "Lookups of a network namespace's socket table not answered within 2 s, or of a namespace that could not be entered (the table was used as it was).");
    let _ = writeln!(
        o,
        "watcher_socket_lookups_unanswered_total {}",
        s.socket_lookups_unanswered
    );
    family(&mut o, "watcher_container_names_late_total", "counter", "Event records written without their container's name: the runtime did not name it within 300 ms.");
    let _ = writeln!(
        o,
        "watcher_container_names_late_total {}",
        s.container_names_late
    );
    family(
        &mut o,
        "watcher_reconciliations_total",
        "counter",
        "Reconciliations of the process table with /proc after lost records.",
    );
    let _ = writeln!(o, "watcher_reconciliations_total {}", s.reconciliations);
    family(
        &mut o,
        "watcher_confirmations_total",
        "counter",
        "Findings about processes (zombies, instances) confirmed against /proc before they opened.",
    );
    let _ = writeln!(o, "watcher_confirmations_total {}", s.confirmations);
    family(
        &mut o,
        "watcher_reconciled_processes_total",
        "counter",
        "Processes a reconciliation corrected (ended, reaped or started unseen during a loss).",
    );
    let _ = writeln!(
        o,
        "watcher_reconciled_processes_total {}",
        s.reconciled_processes
    );
    family(&mut o, "watcher_reconciled_sockets_total", "counter", "Socket-table holders a reconciliation dropped (their close was lost) or added (their start was lost).");
    let _ = writeln!(
        o,
        "watcher_reconciled_sockets_total {}",
        s.reconciled_sockets
    );
    family(
        &mut o,
        "watcher_findings_withdrawn_total",
        "counter",
        "Findings held after a loss and never written: the reconciliation showed them false.",
    );
    let _ = writeln!(
        o,
        "watcher_findings_withdrawn_total {}",
        s.findings_withdrawn
    );
    family(
        &mut o,
        "watcher_records_written_total",
        "counter",
        "Records written to the feed.",
    );
    let _ = writeln!(o, "watcher_records_written_total {}", s.records_written);
    family(
        &mut o,
        "watcher_sink_dropped_total",
        "counter",
        "Records a sink could not take: its queue was full (a stalled sink or consumer) or its write failed.",
    );
    for sink in ["stdout", "file", "syslog", "socket"] {
        let _ = writeln!(
            o,
            "watcher_sink_dropped_total{{sink=\"{sink}\"}} {}",
            s.sink_drops.get(sink).copied().unwrap_or(0)
        );
    }
    family(&mut o, "watcher_pipeline_healthy", "gauge", "1 when the last canary event came through the whole pipeline in time, 0 when watcher is blind.");
    let _ = writeln!(o, "watcher_pipeline_healthy {}", u8::from(s.healthy));
    family(
        &mut o,
        "watcher_canary_total",
        "counter",
        "Canary events, by result.",
    );
    let _ = writeln!(o, "watcher_canary_total{{result=\"ok\"}} {}", s.canary_ok);
    let _ = writeln!(
        o,
        "watcher_canary_total{{result=\"missed\"}} {}",
        s.canary_missed
    );
    family(
        &mut o,
        "watcher_canary_latency_seconds",
        "gauge",
        "The last canary's trip from its exit in the kernel to the reader.",
    );
    let _ = writeln!(o, "watcher_canary_latency_seconds {}", s.canary_latency_s);
    family(
        &mut o,
        "watcher_uptime_seconds",
        "gauge",
        "Seconds since the pipeline started.",
    );
    let _ = writeln!(
        o,
        "watcher_uptime_seconds {:.3}",
        s.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0)
    );
    o
}

/// Serve `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, stats: SharedStats) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            // Read the request head (bounded), with a deadline.
            let head = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                loop {
                    match conn.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n == buf.len() {
                        return true;
                    }
                }
            })
            .await;
            if !matches!(head, Ok(true)) {
                return;
            }
            let line = String::from_utf8_lossy(&buf[..n]);
            let first = line.lines().next().unwrap_or("");
            let mut parts = first.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, ctype, body) =
                if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
                    let body = render(&stats.lock().expect("stats lock"));
                    ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
                } else {
                    (
                        "404 Not Found",
                        "text/plain; charset=utf-8",
                        "watcher serves /metrics\n".to_owned(),
                    )
                };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
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
