//! `watcher trace`: the live stream of process and socket events and findings.
use crate::kernel::clock::Clock;
use std::{
    io::{self, Write},
    process::ExitCode,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;

use crate::{
    cli::config::Config,
    kernel::loader::{self, LoadOptions},
    kernel::reader::ReaderOptions,
    output::filter::Filter,
    output::human,
    output::lane::{Lane, Line, LANE_QUEUE},
    output::record::{Body, Record},
    output::stats::{SharedStats, Stats},
    pipeline::engine::Engine,
    pipeline::{self, Output, PipelineSettings},
    world::netns::NetnsLookups,
    world::proctable::ProcessTable,
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

/// Records on stdout: NDJSON, or readable lines (findings in colour on a
/// terminal), written by a thread of their own: a consumer that stops
/// reading misses lines (counted, and told in a `loss` record when it reads
/// again), and never holds up detection.
struct Terminal {
    json: bool,
    color: bool,
    filter: Filter,
    out: Option<Lane>,
    shown: u64,
}

impl Terminal {
    fn line(&self, r: &Record) -> serde_json::Result<Line> {
        let mut line = match (&r.body, self.color, self.json) {
            (_, _, true) => Line::of(r)?,
            (Body::Finding(f), true, false) => Line::text(human::finding_line(r, f, true)),
            _ => Line::text(human::line(r)),
        };
        line.urgent = Line::acted_on(r);
        Ok(line)
    }

    /// Write what is queued; the lines stdout could not take.
    fn close(&mut self) -> u64 {
        match self.out.take() {
            Some(lane) => {
                let missed = lane.dropped() + lane.errors();
                drop(lane);
                missed
            }
            None => 0,
        }
    }
}

impl Output for Terminal {
    fn wants_events(&self) -> bool {
        crate::output::filter::carries_events(&self.filter.types)
    }

    fn write(&mut self, records: &[Record], _stats: &SharedStats) -> anyhow::Result<bool> {
        let Some(lane) = &self.out else {
            return Ok(false);
        };
        // The reader of our stdout went away (e.g. `| head`): a normal end.
        if lane.gone() {
            return Ok(false);
        }
        for r in records.iter().filter(|r| self.filter.matches(r)) {
            self.shown += 1;
            let line = self.line(r).context("serializing a record")?;
            lane.send(line);
        }
        Ok(true)
    }
}

/// Build the engine: the process table seeded from /proc, the cgroup →
/// container table from the cgroup v2 tree, detectors seeded from them and
/// from every network namespace's sockets, the container runtime's worker
/// started. Returns the findings that hold at start.
pub fn engine(config: &Config, max_processes: usize) -> (Engine, Vec<Record>, usize) {
    let (engine, records, seeded, _) = engine_and_sockets(config, max_processes);
    (engine, records, seeded)
}

/// The same, with the sockets every network namespace held at start.
pub fn engine_and_sockets(
    config: &Config,
    max_processes: usize,
) -> (
    Engine,
    Vec<Record>,
    usize,
    Vec<crate::world::sockdiag::KernelSocket>,
) {
    let mut table = ProcessTable::new(max_processes);
    table.identity = config.detect.identity.into();
    let seeded = table.seed_from_proc();
    // (Never waited for: the pipeline goes on with what its tables know,
    // and an answer corrects the finding when it comes, with an update.)
    let mut netns = NetnsLookups::new(std::time::Duration::ZERO);
    let sockets = netns.all_holders();
    let unanswered = netns.unanswered.clone();
    let mut engine = Engine::new(config.detect.clone(), table, Clock::now(), Box::new(netns));
    engine.lookups_unanswered = unanswered;
    match crate::world::containers::cgroup2_mount() {
        Some(root) => {
            engine.enricher.containers.seed_from(&root);
        }
        None => say_once("cgroup v2 is not mounted: processes cannot be attributed to containers (watcher reads the v2 hierarchy's cgroup ids)"),
    }
    engine.start_runtime(crate::world::runtime::docker_socket());
    // Containers running now are named from the first record (the runtime's
    // list, with a deadline; later answers arrive beside the pipeline).
    for line in engine.wait_runtime(std::time::Duration::from_secs(3)) {
        say_once(&line);
    }
    let initial = engine.seed(&sockets, Clock::mono_now());
    let records = initial.iter().map(|f| engine.finding_record(f)).collect();
    (engine, records, seeded, sockets)
}

fn say_once(what: &str) {
    let _ = writeln!(io::stderr(), "watcher: {what}");
}

pub fn run(mut s: TraceSettings) -> anyhow::Result<ExitCode> {
    let config = match &s.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    s.load.kinds = pipeline::kernel_kinds(&s.filter.types);
    let probes = loader::load(&s.load)?;
    for line in probes.degraded_lines() {
        let _ = writeln!(io::stderr(), "watcher: {line}");
    }
    let attached = probes.attachment();
    let signals = pipeline::Signals::install()?;
    let (engine, initial, seeded) = engine(&config, s.max_processes);
    let _ = writeln!(
        io::stderr(),
        "watcher: tracing {} ({} processes known); Ctrl-C to stop",
        attached,
        seeded
    );
    let mut out = Terminal {
        json: s.json,
        color: !s.json && io::IsTerminal::is_terminal(&io::stdout()),
        filter: s.filter.clone(),
        out: Some(
            Lane::start(
                "stdout",
                Box::new(io::BufWriter::with_capacity(64 * 1024, io::stdout())),
                LANE_QUEUE,
            )
            .context("starting the thread that writes stdout")?
            // (A finding is written at once when stdout can take it.)
            .with_direct(crate::output::lane::Direct::stdout()),
        ),
        shown: 0,
    };
    let stats: SharedStats = Arc::new(Mutex::new(Stats {
        healthy: true,
        ..Stats::default()
    }));
    let mut findings = initial.len() as u64;
    if !initial.is_empty() && !out.write(&initial, &stats)? {
        return Ok(ExitCode::SUCCESS);
    }
    let settings = PipelineSettings {
        reader: ReaderOptions::for_load(&s.load),
        canary_interval: None,
        canary_deadline: std::time::Duration::from_secs(2),
        reload_on_hup: false,
    };
    let st = pipeline::run(probes, engine, settings, &mut out, stats, signals)?;
    let missed = out.close();
    findings += st.findings.values().sum::<u64>();
    let secs = st.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    let total: u64 = st.events_by_type.values().sum();
    let per_type: Vec<String> = st
        .events_by_type
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        io::stderr(),
        "watcher: {total} events in {secs:.1} s ({}), {findings} finding records, {} shown{}, {} lost, {} undecodable",
        if per_type.is_empty() { "none".to_owned() } else { per_type.join(", ") },
        out.shown,
        if missed > 0 { format!(" ({missed} of them not written: stdout was not read fast enough)") } else { String::new() },
        st.lost,
        st.decode_errors
    );
    Ok(ExitCode::SUCCESS)
}
