//! `watcher trace`: the live stream of process and socket events.
use std::{
    collections::BTreeMap,
    io::{self, Write},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use watcher_common::EventKind;

use crate::{
    enrich::Enricher,
    filter::Filter,
    human,
    loader::{self, LoadOptions},
    reader::{self, Batch, ReaderOptions},
    record::{Body, Clock, LossInfo, LossRecord, Record, SCHEMA_VERSION},
};

/// Settings of one trace run (validated CLI arguments).
#[derive(Clone, Debug, Default)]
pub struct TraceSettings {
    pub json: bool,
    pub filter: Filter,
    pub load: LoadOptions,
    /// Process table capacity.
    pub max_processes: usize,
}

/// Counters for the end-of-run summary.
#[derive(Default, Debug)]
pub struct Totals {
    pub by_type: BTreeMap<&'static str, u64>,
    pub shown: u64,
    pub lost: u64,
    pub decode_errors: u64,
}

enum WriteEnd {
    Ok,
    /// The reader of our stdout went away (e.g. `| head`): a normal end.
    BrokenPipe,
}

fn write_record(out: &mut impl Write, r: &Record, json: bool) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, r).map_err(io::Error::other)?;
        out.write_all(b"\n")
    } else {
        writeln!(out, "{}", human::line(r))
    }
}

/// Kernel record kinds the kernel side must forward: the ones shown, plus
/// what keeps the process table current.
fn kernel_kinds(types: &[String]) -> Vec<EventKind> {
    if types.is_empty() {
        return Vec::new();
    }
    let mut kinds = vec![EventKind::Fork, EventKind::Exec, EventKind::Exit, EventKind::Reap];
    for t in types {
        match t.as_str() {
            "bind" => kinds.push(EventKind::Bind),
            "connect" => kinds.push(EventKind::Connect),
            "tcp_state" => kinds.extend([EventKind::Connect, EventKind::TcpState, EventKind::Bind]),
            _ => {}
        }
    }
    kinds
}

pub async fn run(mut s: TraceSettings) -> anyhow::Result<ExitCode> {
    s.load.kinds = kernel_kinds(&s.filter.types);
    let probes = loader::load(&s.load)?;
    let mut enricher = Enricher::new(s.max_processes, 65_536, Clock::now());
    let seeded = enricher.procs.seed_from_proc();
    tracing::info!(
        processes = seeded,
        tracefs = %probes.tracefs.display(),
        "attached {} tracepoints",
        loader::HOOKS.len()
    );
    eprintln!(
        "watcher: tracing {} tracepoints ({} processes known); Ctrl-C to stop",
        loader::HOOKS.len(),
        seeded
    );

    let loader::Probes { ebpf, events, lost, .. } = probes;
    let (tx, mut rx) = mpsc::channel::<Batch>(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader = tokio::spawn(reader::run(events, lost, tx, stop_rx, ReaderOptions::default()));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;

    let started = Instant::now();
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut totals = Totals::default();
    let mut end = WriteEnd::Ok;
    let mut clock_refreshed = Instant::now();
    let mut stopping = false;

    loop {
        let batch = tokio::select! {
            b = rx.recv() => b,
            _ = sigterm.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); continue }
            _ = sigint.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); continue }
        };
        let Some(batch) = batch else { break };
        if clock_refreshed.elapsed() > Duration::from_secs(10) {
            enricher.clock = Clock::now();
            clock_refreshed = Instant::now();
        }
        let mut records = Vec::new();
        match batch {
            Batch::Events(evs) => {
                for ev in evs {
                    match ev {
                        Ok(ev) => {
                            let r = enricher.record(&ev);
                            *totals.by_type.entry(r.body.type_name()).or_default() += 1;
                            records.push(r);
                        }
                        Err(e) => {
                            totals.decode_errors += 1;
                            tracing::warn!("undecodable record: {e}");
                        }
                    }
                }
            }
            Batch::Lost { by_kind } => {
                let count: u64 = by_kind.iter().sum();
                totals.lost += count;
                let by_type = by_kind
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| (EventKind::from_u32(k as u32).as_str().to_owned(), *n))
                    .collect();
                let mono = Clock::mono_now();
                records.push(Record {
                    schema: SCHEMA_VERSION,
                    time: enricher.clock.rfc3339(mono),
                    mono_ns: mono,
                    body: Body::Loss(LossRecord {
                        loss: LossInfo { count, total: totals.lost, reason: "ring_buffer_full".into(), by_type },
                    }),
                });
            }
        }
        if matches!(end, WriteEnd::BrokenPipe) {
            continue;
        }
        let mut res = Ok(());
        for r in records.iter().filter(|r| s.filter.matches(r)) {
            totals.shown += 1;
            res = write_record(&mut out, r, s.json);
            if res.is_err() {
                break;
            }
        }
        // Flushed per batch: a live feed, never block-buffered behind a quiet period.
        res = res.and_then(|_| out.flush());
        if let Err(e) = res {
            if e.kind() == io::ErrorKind::BrokenPipe {
                end = WriteEnd::BrokenPipe;
                stopping = true;
                let _ = stop_tx.send(true);
            } else {
                return Err(e).context("writing to stdout");
            }
        }
    }
    let _ = reader.await;
    drop(ebpf);

    let secs = started.elapsed().as_secs_f64();
    let total: u64 = totals.by_type.values().sum();
    let per_type: Vec<String> = totals.by_type.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!(
        "watcher: {total} events in {secs:.1} s ({}), {} shown, {} lost, {} undecodable",
        if per_type.is_empty() { "none".to_owned() } else { per_type.join(", ") },
        totals.shown,
        totals.lost,
        totals.decode_errors
    );
    Ok(ExitCode::SUCCESS)
}
