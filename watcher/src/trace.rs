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
    config::Config,
    engine::Engine,
    proctable::ProcessTable,
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
    /// Configuration file.
    pub config: Option<std::path::PathBuf>,
}

/// Counters for the end-of-run summary.
#[derive(Default, Debug)]
pub struct Totals {
    pub by_type: BTreeMap<&'static str, u64>,
    pub shown: u64,
    pub lost: u64,
    pub decode_errors: u64,
    pub findings: u64,
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
    // Findings need every kind of event.
    if types.is_empty() || types.iter().any(|t| t == "finding") {
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
    let config = match &s.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    s.load.kinds = kernel_kinds(&s.filter.types);
    let probes = loader::load(&s.load)?;
    let mut table = ProcessTable::new(s.max_processes);
    table.identity = config.detect.identity.into();
    let seeded = table.seed_from_proc();
    let mut engine = Engine::new(config.detect.clone(), table, Clock::now(), Box::new(|tcp, port, c: &[u32]| crate::sockdiag::port_sockets(tcp, port, c)));
    let initial = engine.seed(&crate::sockdiag::all_holders(), Clock::mono_now());
    tracing::info!(
        processes = seeded,
        tracefs = %probes.tracefs.display(),
        "attached {} tracepoints",
        loader::HOOKS.len()
    );
    let _ = writeln!(std::io::stderr(), 
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
    let color = !s.json && io::IsTerminal::is_terminal(&io::stdout());
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut totals = Totals::default();
    let mut end = WriteEnd::Ok;
    let mut clock_refreshed = Instant::now();
    let mut stopping = false;
    let mut initial_records: Vec<Record> = initial.iter().map(|f| engine.finding_record(f)).collect();
    totals.findings += initial_records.len() as u64;

    loop {
        let mut records = std::mem::take(&mut initial_records);
        let deadline = engine.next_deadline();
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep(Duration::from_nanos(d.saturating_sub(Clock::mono_now()))).await,
                None => std::future::pending::<()>().await,
            }
        };
        let batch = tokio::select! {
            b = rx.recv() => b,
            // Deadlines (a zombie's age, a quiet window) fire from this timer, not a sweep.
            _ = timer => {
                let fs = engine.tick(Clock::mono_now());
                totals.findings += fs.len() as u64;
                records.extend(fs.iter().map(|f| engine.finding_record(f)));
                Some(Batch::Events(Vec::new()))
            }
            _ = sigterm.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); Some(Batch::Events(Vec::new())) }
            _ = sigint.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); Some(Batch::Events(Vec::new())) }
        };
        let Some(batch) = batch else { break };
        if clock_refreshed.elapsed() > Duration::from_secs(10) {
            engine.enricher.clock = Clock::now();
            clock_refreshed = Instant::now();
        }
        match batch {
            Batch::Events(evs) => {
                for ev in evs {
                    match ev {
                        Ok(ev) => {
                            let (r, fs) = engine.handle(&ev);
                            *totals.by_type.entry(r.body.type_name()).or_default() += 1;
                            records.push(r);
                            totals.findings += fs.len() as u64;
                            records.extend(fs.iter().map(|f| engine.finding_record(f)));
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
                    time: engine.enricher.clock.rfc3339(mono),
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
            res = match (&r.body, color) {
                (Body::Finding(f), true) => writeln!(out, "{}", human::finding_line(r, f, true)),
                _ => write_record(&mut out, r, s.json),
            };
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
    let _ = writeln!(std::io::stderr(), 
        "watcher: {total} events in {secs:.1} s ({}), {} finding records, {} shown, {} lost, {} undecodable",
        if per_type.is_empty() { "none".to_owned() } else { per_type.join(", ") },
        totals.findings,
        totals.shown,
        totals.lost,
        totals.decode_errors
    );
    Ok(ExitCode::SUCCESS)
}
