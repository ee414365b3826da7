//! The processing loop shared by `watcher trace`, `watcher run` and
//! `watcher top`: one thread reads the rings and decides — drain → engine
//! (enrich + detect) → an [`Output`] — with the detectors' deadlines,
//! signals, loss records, the canary that proves the chain works, and the
//! counters behind the metrics. It waits in one `epoll_wait` ([`poll`]);
//! nothing on it waits for anything else.
pub(crate) mod canary;
pub mod engine;
pub(crate) mod poll;

use crate::kernel::clock::Clock;
use crate::output::stats::{SharedStats, Stats};
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use watcher_common::EventKind;

use crate::{
    kernel::loader::Probes,
    kernel::reader::{self, ReaderOptions},
    kernel::wake::Wake,
    output::record::{
        Body, HealthInfo, HealthRecord, LossInfo, LossRecord, Record, SCHEMA_VERSION,
    },
    pipeline::canary::Canary,
    pipeline::engine::Engine,
};

/// Where records go.
pub trait Output {
    /// Write records. `Ok(false)`: the consumer is gone (a closed pipe): stop.
    fn write(&mut self, records: &[Record], stats: &SharedStats) -> anyhow::Result<bool>;
    /// SIGHUP: reopen files, reload what can be reloaded. Errors keep the old
    /// state. Returns findings the reload decided (incidents of a detector it disabled, resolved).
    fn reload(&mut self, _engine: &mut Engine) -> anyhow::Result<Vec<crate::detect::Finding>> {
        Ok(Vec::new())
    }
    /// Called once a second.
    fn tick(&mut self, _stats: &SharedStats) {}
    /// Whether event records (not only findings) are written: when not, they are not built.
    fn wants_events(&self) -> bool {
        true
    }
}

pub struct PipelineSettings {
    pub reader: ReaderOptions,
    /// Check the chain end to end with a canary event this often (None: never).
    pub canary_interval: Option<Duration>,
    /// A canary not seen within this long makes the pipeline "blind".
    pub canary_deadline: Duration,
    /// Handle SIGHUP (daemon).
    pub reload_on_hup: bool,
}

/// The signals the loop handles, installed by the caller *before* it says it
/// is ready: a SIGTERM right after readiness must stop it cleanly, not kill
/// it. A handler only sets its flag and rings the loop's doorbell.
pub struct Signals {
    wake: Wake,
    /// SIGTERM or SIGINT, and SIGHUP, came.
    stop: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        let wake = Wake::new().context("making the signals' doorbell (eventfd)")?;
        let stop = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for (sig, flag, name) in [
            (libc::SIGTERM, &stop, "SIGTERM"),
            (libc::SIGINT, &stop, "SIGINT"),
            (libc::SIGHUP, &hup, "SIGHUP"),
        ] {
            let (flag, fd) = (flag.clone(), wake.raw());
            // SAFETY: the handler stores to an atomic and writes to an
            // eventfd (async-signal-safe); the fd stays open until `drop`
            // has unregistered it.
            let id = unsafe {
                signal_hook::low_level::register(sig, move || {
                    flag.store(true, Ordering::SeqCst);
                    crate::kernel::wake::ring(fd);
                })
            }
            .with_context(|| format!("installing the {name} handler"))?;
            ids.push(id);
        }
        Ok(Signals {
            wake,
            stop,
            hup,
            ids,
        })
    }

    /// SIGTERM or SIGINT has come (once).
    fn take_stop(&self) -> bool {
        self.stop.swap(false, Ordering::SeqCst)
    }

    /// SIGHUP has come (once).
    fn take_hup(&self) -> bool {
        self.hup.swap(false, Ordering::SeqCst)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // Before the doorbell closes: a later signal must not write to a
        // reused fd number.
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Kernel record kinds the kernel side must forward for these output types.
pub fn kernel_kinds(types: &[String]) -> Vec<EventKind> {
    // Findings need every kind of event.
    if types.is_empty() || types.iter().any(|t| t == "finding" || t == "all") {
        return Vec::new();
    }
    // Process records keep the process table (signals give exits their cause); cgroup records the container table.
    let mut kinds = vec![
        EventKind::Fork,
        EventKind::Exec,
        EventKind::Exit,
        EventKind::Reap,
        EventKind::Cgroup,
        EventKind::Signal,
    ];
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

fn health_record(clock: &Clock, healthy: bool, reason: String, latency_s: Option<f64>) -> Record {
    let mono = Clock::mono_now();
    Record {
        schema: SCHEMA_VERSION,
        time: clock.rfc3339(mono),
        mono_ns: mono,
        body: Body::Health(HealthRecord {
            health: HealthInfo {
                status: if healthy { "ok" } else { "blind" }.into(),
                reason,
                canary_latency_ms: latency_s.map(|s| (s * 1e5).round() / 100.0),
            },
        }),
    }
}

fn refresh_stats(
    stats: &SharedStats,
    engine: &Engine,
    exec_wake: Option<&crate::kernel::exec_wake::ExecWake>,
) {
    let mut s = stats.lock().expect("stats lock");
    if let Some(w) = exec_wake {
        let (n, all) = w.state();
        s.exec_wake_programs = n as u64;
        s.exec_wake_all = all;
    }
    s.processes = engine.enricher.procs.len() as u64;
    s.process_evictions = engine.enricher.procs.stats.evicted;
    s.socket_evictions = engine.detectors.sockets.evicted;
    s.new_parents_told = engine.enricher.procs.stats.new_parents_told;
    s.new_parents_asked = engine.enricher.procs.stats.new_parents_asked;
    s.sockets = engine.detectors.sockets.len() as u64;
    s.socket_lookups = engine.lookups;
    s.socket_lookups_skipped = engine.lookups_skipped;
    s.port_summaries_delayed = engine.detectors.ports_exhausted.summaries_delayed();
    s.command_lines_cut = engine.args_cut;
    s.socket_lookups_by_inode = engine.lookups_by_inode();
    s.socket_lookups_unanswered = engine
        .lookups_unanswered
        .load(std::sync::atomic::Ordering::Relaxed);
    s.containers = engine.enricher.containers.len() as u64;
    s.reconciliations = engine.reconciliations;
    s.confirmations = engine.confirmations;
    s.reconciled_processes = engine.reconciled_processes;
    s.reconciled_sockets = engine.reconciled_sockets;
    s.findings_withdrawn = engine.findings_withdrawn;
    for (k, n) in engine.detectors.open_incidents() {
        s.open_incidents.insert(k.as_str(), n as u64);
    }
    for (k, n) in engine.detectors.not_opened() {
        s.not_opened.insert(k.as_str(), n);
    }
}

/// Kernel-side losses said as records at most once a second: a sustained
/// overload (a full ring, a full table) drains with a loss after every
/// batch, and one record per millisecond would bury the findings. The
/// engine hears of each loss at once; the records add up what came in the
/// meantime (their counts and totals stay exact).
#[derive(Default)]
struct LossRecords {
    pending: Option<Box<[u64; watcher_common::LOST_SLOTS as usize]>>,
    last: Option<Instant>,
}

impl LossRecords {
    /// New losses: their records now, or held until a second has passed since the last ones.
    fn add(
        &mut self,
        by_slot: &[u64; watcher_common::LOST_SLOTS as usize],
        stats: &SharedStats,
        clock: &Clock,
    ) -> Vec<Record> {
        let p = self
            .pending
            .get_or_insert_with(|| Box::new([0; watcher_common::LOST_SLOTS as usize]));
        for (a, b) in p.iter_mut().zip(by_slot.iter()) {
            *a += b;
        }
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Vec::new();
        }
        self.flush(stats, clock)
    }

    /// What is held, now (each second, and at the end).
    fn flush(&mut self, stats: &SharedStats, clock: &Clock) -> Vec<Record> {
        let Some(p) = self.pending.take() else {
            return Vec::new();
        };
        self.last = Some(Instant::now());
        loss_records(&p, stats, clock)
    }
}

/// The loss records for new kernel-side losses (by `LOST` slot): one for
/// records the full ring refused, one for inserts full tables refused.
fn loss_records(
    by_slot: &[u64; watcher_common::LOST_SLOTS as usize],
    stats: &SharedStats,
    clock: &Clock,
) -> Vec<Record> {
    use watcher_common::KernelTable;
    let mut out = Vec::new();
    let mut s = stats.lock().expect("stats lock");
    let mut by_type = BTreeMap::new();
    let mut by_table = BTreeMap::new();
    for (slot, n) in by_slot.iter().enumerate().filter(|(_, n)| **n > 0) {
        match KernelTable::from_slot(slot as u32) {
            Some(t) => {
                *s.table_full.entry(t.as_str()).or_default() += n;
                by_table.insert(t.as_str().to_owned(), *n);
            }
            None => {
                let name = EventKind::from_u32(slot as u32).as_str();
                *s.lost_by_type.entry(name).or_default() += n;
                s.lost += n;
                by_type.insert(name.to_owned(), *n);
            }
        }
    }
    let mono = Clock::mono_now();
    let mut push = |reason: &str,
                    by_type: BTreeMap<String, u64>,
                    by_table: BTreeMap<String, u64>,
                    total: u64| {
        out.push(Record {
            schema: SCHEMA_VERSION,
            time: clock.rfc3339(mono),
            mono_ns: mono,
            body: Body::Loss(LossRecord {
                loss: LossInfo {
                    count: by_type.values().chain(by_table.values()).sum(),
                    total,
                    reason: reason.into(),
                    by_type,
                    by_table,
                },
            }),
        });
    };
    if !by_type.is_empty() {
        push("ring_buffer_full", by_type, BTreeMap::new(), s.lost);
    }
    if !by_table.is_empty() {
        let total = s.table_full.values().sum();
        push("kernel_table_full", BTreeMap::new(), by_table, total);
    }
    out
}

/// Run until SIGINT/SIGTERM (or the output's consumer is gone), on the
/// calling thread. Returns the final counters. Each turn waits for the first
/// of the event sources — the kernel waking the rings, a doorbell (answers
/// to confirmations and socket lookups, signals), the reader's linger
/// re-drain or bulk period, the detectors' next deadline, records waiting
/// for a container's name, late socket-table answers, the second's work —
/// and hands what came to the [`Loop`] method of that source; then the turn
/// ends ([`Loop::end_turn`]: the canary, the records to the sinks).
pub fn run(
    probes: Probes,
    mut engine: Engine,
    settings: PipelineSettings,
    out: &mut dyn Output,
    stats: SharedStats,
    signals: Signals,
) -> anyhow::Result<Stats> {
    let Probes {
        mut ebpf,
        events,
        lost,
        ring_bytes,
        tables,
        ..
    } = probes;
    // Entries of tasks that ended unseen leave the kernel's tables every 30 s.
    let table_states = crate::kernel::tables::TableStates::default();
    let _sweeper = tables.spawn_sweeper(Duration::from_secs(30), table_states.clone());
    let mut skips = crate::kernel::skips::Skips::default();
    // (Skips from before start are not this run's losses.)
    let _ = skips.poll(&ebpf);
    skips.total.values_mut().for_each(|n| *n = 0);
    stats.lock().expect("stats lock").program_skips = skips.total.clone();
    // The reader runs on this thread, inside the loop: a batch is handled
    // where it was drained, without a channel or a thread wakeup (a reader
    // thread of its own cost a context switch per batch: 20.3 → 16.9 µs per
    // event for an exec flood, 4.7 → 3.1 µs for a bind/connect loop,
    // measured with `watcher run` on 2 vCPUs). The ring (8 MiB by default)
    // is the buffer while a batch is handled; sinks write from their own threads.
    // The word that tells the kernel whether the reader sleeps: without
    // it, every deciding record wakes the reader (more wakeups, never a
    // later finding).
    let word = match crate::kernel::reader_word::ReaderWord::take(&mut ebpf) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("{e}: every deciding record wakes the reader");
            None
        }
    };
    let mut reader = reader::Reader::new(
        reader::Rings::new(events, ring_bytes)?,
        Arc::new(lost),
        word,
        settings.reader,
        Clock::mono_now(),
    );
    let answers = engine.answers.clone();
    // The turn's questions to the helpers wait for its end (`end_turn`).
    engine.hold_questions();
    let exec_wake = crate::kernel::exec_wake::ExecWake::take(&mut ebpf);
    let mut poll = poll::Poll::new(reader.fd(), &[answers.fd()?, signals.wake.fd()?])
        .context("setting up the reader's poll set (epoll, timerfd)")?;
    stats.lock().expect("stats lock").started = Some(Instant::now());
    // A short slice: woken for a deciding record, this thread takes its CPU
    // at once rather than after the running task's slice (Linux 6.12+).
    if let Err(e) = crate::kernel::sched::short_slice() {
        tracing::debug!("the reader keeps the default time slice: {e}");
    }
    let reload_on_hup = settings.reload_on_hup;
    let mut lp = Loop {
        canary: settings
            .canary_interval
            .map(|i| Canary::new(i, settings.canary_deadline)),
        engine,
        out,
        stats,
        ebpf: Some(ebpf),
        exec_wake,
        skips,
        table_states,
        // Fault drill (tests, and operators proving their alerting): detach
        // every program after N seconds, so the pipeline goes blind while still running.
        drill_detach_at: std::env::var("WATCHER_FAULT_DRILL")
            .ok()
            .and_then(|v| {
                v.strip_prefix("detach-after=")
                    .and_then(|n| n.parse::<f64>().ok())
            })
            .map(|secs| Instant::now() + Duration::from_secs_f64(secs)),
        batch: Vec::with_capacity(reader.batch()),
        clock_refreshed: Instant::now(),
        stopping: false,
        consumer_gone: false,
        names: crate::output::names::NameWait::default(),
        losses: LossRecords::default(),
        records: Vec::new(),
        decided: Vec::new(),
        tally: Tally::default(),
    };
    let mut second_at = Clock::mono_now() + SECOND_NS;
    // The deadline whose backlog was read ahead of it (0: none).
    let mut read_ahead_for = 0u64;
    loop {
        // The earliest time a source wants a turn without a wakeup.
        let now = Clock::mono_now();
        let mut until = reader.next_due().min(second_at);
        if let Some(d) = lp.engine.next_deadline() {
            until = until.min(deadline_turn(d, read_ahead_for));
        }
        if let Some(d) = lp.names.deadline() {
            let left = d.saturating_duration_since(Instant::now());
            until = until.min(now + left.as_nanos() as u64);
        }
        // Socket-table answers slower than the lookup's wait are looked for soon.
        if lp.engine.confirmations_pending() {
            until = until.min(now + LATE_LOOK_NS);
        }
        // (Stopping — the output's consumer went at the end of the last
        // turn — looks without waiting: the final drain is next.)
        if lp.stopping {
            until = now;
        }
        let until = reader.before_wait(until, now);
        let ready = poll.wait(until, now)?;
        reader.after_wait();
        if ready.bell {
            answers.clear();
            signals.wake.clear();
        }
        if signals.take_hup() && reload_on_hup {
            lp.on_hup();
        }
        if signals.take_stop() && !lp.stopping {
            lp.stop();
        }
        // A confirmation's answer, a container's name, a late socket answer.
        lp.between_batches();
        let now = Clock::mono_now();
        if lp.stopping {
            // Everything the kernel wrote before the stop, then its losses.
            lp.drain_all(&mut reader)?;
            if let Some(by_kind) = reader.final_losses() {
                lp.on_lost(&by_kind);
            }
            lp.end_turn()?;
            break;
        }
        // The rings: when the kernel woke them, at a linger re-drain, and
        // each bulk period (with the loss counters).
        if ready.rings || reader.next_due() <= now {
            let tick = reader.tick_due(now);
            lp.drain_once(&mut reader, tick, now)?;
        }
        if now >= second_at {
            lp.on_second();
            second_at = now + SECOND_NS;
        }
        // Deadlines (a zombie's age, a quiet window) are judged on
        // everything before them: what is in the rings (bulk records never
        // wake the reader) is drained first.
        if lp.engine.next_deadline().is_some_and(|d| d <= now) {
            if reader.unsaid_loss() {
                // Records lost that no drain has said yet: deadlines of
                // what they concern wait for the reconciliation.
                lp.engine.loss_seen();
            }
            lp.drain_all(&mut reader)?;
            lp.on_drained();
        } else if let Some(d) = lp
            .engine
            .next_deadline()
            .filter(|&d| deadline_turn(d, read_ahead_for) <= now)
        {
            // Shortly before a deadline: the rings' backlog (up to a bulk
            // period of records) read now, so that at the deadline only
            // what came since is left to read before its verdict.
            lp.drain_all(&mut reader)?;
            read_ahead_for = d;
        }
        lp.end_turn()?;
        // (A fork bomb about to be decided: its forks wake the reader. The
        // fork that reaches fork_storm's rate in its parent's second: too.
        // An exec of a name more processes have than a program may: too.)
        reader.forks_until(lp.engine.detectors.forks_decide_until());
        reader.fork_rate(lp.engine.detectors.fork_rate());
        reader.exec_crowd(lp.engine.detectors.exec_crowd());
    }
    Ok(lp.finish())
}

/// The second's work comes this often.
const SECOND_NS: u64 = 1_000_000_000;
/// How long before a deadline (a zombie's age, a quiet window) the rings'
/// backlog is read: bulk records wait up to a bulk period in them, and
/// reading and handling that many at the deadline itself comes before its
/// finding (with `--bulk-ms 50`, a zombie's line 4.3 ms after its deadline
/// at p99 under a fork loop and a build; 0.25 ms with this read-ahead).
const DEADLINE_LEAD_NS: u64 = 5_000_000;

/// When the loop wants its turn for the deadline `d`: [`DEADLINE_LEAD_NS`]
/// before it to read the backlog, and at it once that was done
/// (`read_ahead_for == d`).
fn deadline_turn(d: u64, read_ahead_for: u64) -> u64 {
    if read_ahead_for == d {
        d
    } else {
        d.saturating_sub(DEADLINE_LEAD_NS)
    }
}
/// Late socket-table answers are looked for this often while some are on their way.
const LATE_LOOK_NS: u64 = 2_000_000;

/// The processing loop's state, with one method per event source.
struct Loop<'o> {
    engine: Engine,
    out: &'o mut dyn Output,
    stats: SharedStats,
    canary: Option<Canary>,
    /// Keeps the programs attached (`None` after a fault drill detached them).
    ebpf: Option<aya::Ebpf>,
    /// The kernel's list of programs whose execs wake the reader at once.
    exec_wake: Option<crate::kernel::exec_wake::ExecWake>,
    skips: crate::kernel::skips::Skips,
    table_states: crate::kernel::tables::TableStates,
    drill_detach_at: Option<Instant>,
    /// The batch the reader drains into (kept: one allocation).
    batch: reader::Records,
    clock_refreshed: Instant,
    stopping: bool,
    consumer_gone: bool,
    names: crate::output::names::NameWait,
    losses: LossRecords,
    /// This turn's records, and when the findings among them were decided
    /// (for the write stage's latency).
    records: Vec<Record>,
    decided: Vec<u64>,
    /// This thread's counts since they were last published (once a second,
    /// and at the end): no lock per batch.
    tally: Tally,
}

/// Counts the deciding thread keeps to itself between publications.
#[derive(Default)]
struct Tally {
    /// Events by kind number (a map lookup by name per event was ~1 % of a fork loop).
    by_kind: [u64; watcher_common::TABLE_FULL_BASE as usize],
    /// Kernel → read, records that can decide a finding and the others
    /// (`kernel_to_read`, every record, is both together: made at publication).
    kernel_to_read_deciding: crate::output::stages::Histogram,
    kernel_to_read_bulk: crate::output::stages::Histogram,
    read_to_decided: crate::output::stages::Histogram,
    decode_errors: u64,
}

impl Tally {
    /// Add them to the shared counters, and start again from zero.
    fn publish(&mut self, stats: &SharedStats) {
        let t = std::mem::take(self);
        let mut s = stats.lock().expect("stats lock");
        for (k, n) in t.by_kind.iter().enumerate().filter(|(_, n)| **n > 0) {
            *s.events_by_type
                .entry(EventKind::from_u32(k as u32).as_str())
                .or_default() += n;
        }
        s.stages.kernel_to_read.merge(&t.kernel_to_read_deciding);
        s.stages.kernel_to_read.merge(&t.kernel_to_read_bulk);
        s.stages
            .kernel_to_read_deciding
            .merge(&t.kernel_to_read_deciding);
        s.stages.kernel_to_read_bulk.merge(&t.kernel_to_read_bulk);
        s.stages.read_to_decided.merge(&t.read_to_decided);
        s.decode_errors += t.decode_errors;
    }
}

impl Loop<'_> {
    /// One drain of the rings (up to a batch each): losses it may follow
    /// first, then its records. `tick`: the bulk period (the loss counters
    /// are read whatever the drain found).
    fn drain_once(
        &mut self,
        reader: &mut reader::Reader,
        tick: bool,
        now: u64,
    ) -> anyhow::Result<reader::Drained> {
        let mut batch = std::mem::take(&mut self.batch);
        let d = reader.drain(&mut batch, now);
        let read_ns = Clock::mono_now();
        // A loss is said before the records drained with it.
        if let Some(by_kind) = reader.losses(tick, read_ns) {
            self.on_lost(&by_kind);
        }
        let caught_up = !d.full;
        let r = self.on_events(&mut batch, read_ns, caught_up);
        self.batch = batch;
        r.map(|()| d)
    }

    /// Drain until the rings are empty, a batch at a time, each batch's
    /// records delivered before the next is drained.
    fn drain_all(&mut self, reader: &mut reader::Reader) -> anyhow::Result<()> {
        loop {
            let d = self.drain_once(reader, false, Clock::mono_now())?;
            if !d.full {
                return Ok(());
            }
            self.end_turn()?;
        }
    }

    /// Once a second: the canary, held loss records, the kernel's skips and
    /// tables, the counters behind the metrics.
    fn on_second(&mut self) {
        // A loss without records after it: nothing more to wait for.
        self.engine.caught_up();
        self.engine.recheck_unseen_reaps();
        self.engine.check_namespaces(Clock::mono_now());
        if let Some(c) = self.canary.as_mut() {
            if let Some((healthy, reason, latency)) = c.tick() {
                let mut s = self.stats.lock().expect("stats lock");
                if !healthy {
                    s.canary_missed += 1;
                }
                s.healthy = healthy;
                drop(s);
                if !healthy {
                    tracing::error!("{reason}");
                }
                self.records.push(health_record(
                    &self.engine.enricher.clock,
                    healthy,
                    reason,
                    latency,
                ));
            }
        }
        if self.drill_detach_at.is_some_and(|t| Instant::now() >= t) && self.ebpf.is_some() {
            tracing::warn!("fault drill: detaching every program");
            self.ebpf = None;
        }
        self.records
            .extend(self.losses.flush(&self.stats, &self.engine.enricher.clock));
        // Runs the kernel skipped (counted, not said as a loss: most runs of
        // the hooks that can be skipped decide nothing — a TCP state change
        // watcher filters out — so a skip is a record that may have been
        // lost, not one that was).
        if let Some(e) = self.ebpf.as_ref() {
            let by_kind = self.skips.poll(e);
            let skipped = !by_kind.is_empty();
            if by_kind.iter().any(|(k, _)| *k == EventKind::SockClose) {
                // A followed socket's end may have been skipped: what the
                // socket table says of such holders is confirmed again.
                self.engine.detectors.sockets.untrust();
            }
            let mut st = self.stats.lock().expect("stats lock");
            if skipped {
                st.program_skips = self.skips.total.clone();
            }
            st.program_runs = self.skips.runs.clone();
        }
        self.tally.publish(&self.stats);
        refresh_stats(&self.stats, &self.engine, self.exec_wake.as_ref());
        if let Ok(t) = self.table_states.lock() {
            self.stats.lock().expect("stats lock").kernel_tables = t.clone();
        }
        self.stats.lock().expect("stats lock").container_names_late = self.names.unnamed;
        self.out.tick(&self.stats);
    }

    /// SIGHUP: the output reloads its configuration (detectors included).
    fn on_hup(&mut self) {
        match self.out.reload(&mut self.engine) {
            Ok(resolved) => self.found(&resolved, false),
            Err(e) => {
                tracing::error!("reload refused, keeping the running configuration: {e:#}");
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("watcher: reload refused, keeping the running configuration: {e:#}\n")
                        .as_bytes(),
                );
            }
        }
    }

    /// SIGTERM, SIGINT, or the output's consumer gone: the loop drains
    /// the rings and ends.
    fn stop(&mut self) {
        self.stopping = true;
    }

    /// Findings decided now: their records, counted (and `decided` for the
    /// write stage's latency when `timed`).
    fn found(&mut self, fs: &[crate::detect::Finding], timed: bool) {
        // (Called for every event: most decide nothing.)
        if fs.is_empty() {
            return;
        }
        if timed {
            let now = Clock::mono_now();
            self.decided.extend(fs.iter().map(|_| now));
        }
        self.records
            .extend(fs.iter().map(|f| self.engine.finding_record(f)));
        count_findings(&self.stats, fs);
    }

    /// Between batches: the container runtime's answers (names, images —
    /// incidents that named a container by its id say its name now), late
    /// socket-table answers, and after a loss the reconciliation's result.
    fn between_batches(&mut self) {
        let (lines, renamed) = self.engine.drain_runtime(Clock::mono_now());
        for line in lines {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("watcher: {line}\n").as_bytes(),
            );
        }
        self.found(&renamed, false);
        let confirmed = self.engine.late_confirmations(Clock::mono_now());
        self.found(&confirmed, false);
        // After a loss: the tables corrected from /proc, the held findings decided.
        let reconciled = self.engine.reconciled(Clock::mono_now());
        self.found(&reconciled, false);
        if self.clock_refreshed.elapsed() > Duration::from_secs(10) {
            self.engine.enricher.clock = Clock::now();
            self.clock_refreshed = Instant::now();
        }
    }

    /// A batch of records from the ring: each enriched and fed to the
    /// detectors; a finding goes to the sinks at once, not after the rest
    /// of its batch (1,024 records of a flood are ~10 ms of work).
    /// `caught_up`: the rings were empty behind the batch (after a loss,
    /// the backlog is handled now).
    fn on_events(
        &mut self,
        evs: &mut reader::Records,
        read_ns: u64,
        caught_up: bool,
    ) -> anyhow::Result<()> {
        if evs.is_empty() {
            // (A re-drain or the bulk period found nothing: the rings are empty.)
            self.engine.caught_up();
            return Ok(());
        }
        let wants_events = self.out.wants_events();
        for ev in evs.drain(..) {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    self.tally.decode_errors += 1;
                    tracing::warn!("undecodable record: {e}");
                    continue;
                }
            };
            if self.canary_came(&ev) {
                // The canary made it through: not an event of the host.
                continue;
            }
            let waited = read_ns.saturating_sub(ev.header.ts_ns);
            if ev.header.flags & watcher_common::HEADER_DECIDING != 0 {
                self.tally.kernel_to_read_deciding.observe_ns(waited);
            } else {
                self.tally.kernel_to_read_bulk.observe_ns(waited);
            }
            let fs = self
                .engine
                .handle_opt(&ev, wants_events.then_some(&mut self.records));
            if !fs.is_empty() {
                let now = Clock::mono_now();
                for _ in &fs {
                    self.tally
                        .read_to_decided
                        .observe_ns(now.saturating_sub(read_ns));
                }
            }
            if let Some(n) = self.tally.by_kind.get_mut(ev.kind() as usize) {
                *n += 1;
            }
            self.found(&fs, true);
            if !fs.is_empty() && !self.consumer_gone {
                let now = std::mem::take(&mut self.records);
                self.consumer_gone = !self.deliver(now)?;
            }
        }
        if caught_up {
            self.engine.caught_up();
        }
        Ok(())
    }

    /// Whether `ev` is the canary's probe (then it is counted, and a
    /// recovery said, here).
    fn canary_came(&mut self, ev: &crate::kernel::decode::KernelEvent) -> bool {
        let Some(latency) = self.canary.as_mut().and_then(|c| c.observe(ev)) else {
            return false;
        };
        if let Some(reason) = latency.recovered {
            self.stats.lock().expect("stats lock").healthy = true;
            self.records.push(health_record(
                &self.engine.enricher.clock,
                true,
                reason,
                Some(latency.seconds),
            ));
        }
        let mut s = self.stats.lock().expect("stats lock");
        s.canary_ok += 1;
        s.canary_latency_s = latency.seconds;
        true
    }

    /// The reader drained what was in the ring: the deadlines due are judged.
    fn on_drained(&mut self) {
        let fs = self.engine.tick(Clock::mono_now());
        self.found(&fs, true);
    }

    /// The kernel lost records: the engine reconciles, the loss is said.
    fn on_lost(&mut self, by_kind: &[u64; watcher_common::LOST_SLOTS as usize]) {
        self.engine.loss_seen();
        let said = self
            .losses
            .add(by_kind, &self.stats, &self.engine.enricher.clock);
        self.records.extend(said);
    }

    /// The end of a turn: a canary sent when due, this turn's records to
    /// the sinks; the loop stops when their consumer is gone.
    fn end_turn(&mut self) -> anyhow::Result<()> {
        // The programs whose next exec can decide a finding, as this turn left them.
        // (Taken even without the map: the detectors keep them until taken.)
        let changes = self.engine.detectors.exec_wake_changes();
        if let (Some(w), false) = (self.exec_wake.as_mut(), changes.is_empty()) {
            w.apply(&changes);
        }
        if let Some(c) = self.canary.as_mut() {
            // A canary is due: a child that exits at once (its exit is the probe).
            if let Err(e) = c.maybe_send() {
                tracing::warn!("canary: {e}");
            }
        }
        if !self.consumer_gone {
            let records = std::mem::take(&mut self.records);
            self.consumer_gone = !self.deliver(records)?;
        }
        // The helpers' questions go once the turn's findings are out: a
        // helper woken earlier on this CPU could take it before the write.
        self.engine.send_questions();
        // (Records the consumer could not take, and the decision times of
        // findings held for a container's name, end with the turn.)
        self.records.clear();
        self.decided.clear();
        if self.consumer_gone && !self.stopping {
            self.stop();
        }
        Ok(())
    }

    /// Hand `records` to the sinks (see [`deliver`]). `Ok(false)`: their consumer is gone.
    fn deliver(&mut self, records: Vec<Record>) -> anyhow::Result<bool> {
        deliver(
            self.out,
            &mut self.names,
            &mut self.engine,
            records,
            &mut self.decided,
            &self.stats,
        )
    }

    /// After the reader ended: what is held goes, the programs detach, the final counters.
    fn finish(mut self) -> Stats {
        let mut rest = self.losses.flush(&self.stats, &self.engine.enricher.clock);
        rest.extend(self.names.flush(&self.engine.enricher.containers));
        if !self.consumer_gone && !rest.is_empty() {
            let _ = self.out.write(&rest, &self.stats);
        }
        drop(self.ebpf.take());
        self.tally.publish(&self.stats);
        refresh_stats(&self.stats, &self.engine, self.exec_wake.as_ref());
        let s = self.stats.lock().expect("stats lock").clone();
        s
    }
}

/// Hand `records` to the sinks, past those still waiting for a container's
/// name (what still waits when the pipeline ends is flushed after it), and
/// count the write stage's latency of the findings decided at `decided`.
/// `Ok(false)`: the output's consumer is gone.
fn deliver(
    out: &mut dyn Output,
    names: &mut crate::output::names::NameWait,
    engine: &mut Engine,
    records: Vec<Record>,
    decided: &mut Vec<u64>,
    stats: &SharedStats,
) -> anyhow::Result<bool> {
    let records = names.pass(records, &mut engine.enricher.containers, Instant::now());
    if records.is_empty() {
        return Ok(true);
    }
    let ok = out.write(&records, stats)?;
    if ok && !decided.is_empty() {
        let now = Clock::mono_now();
        let mut s = stats.lock().expect("stats lock");
        for d in decided.drain(..) {
            s.stages
                .decided_to_written
                .observe_ns(now.saturating_sub(d));
        }
    }
    Ok(ok)
}

fn count_findings(stats: &SharedStats, fs: &[crate::detect::Finding]) {
    if fs.is_empty() {
        return;
    }
    let mut s = stats.lock().expect("stats lock");
    for f in fs {
        *s.findings
            .entry((f.kind.as_str(), f.state.as_str()))
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filtered_feed_still_gets_the_records_that_keep_the_tables() {
        let k = kernel_kinds(&["exec".to_owned()]);
        for kind in [
            EventKind::Fork,
            EventKind::Exec,
            EventKind::Exit,
            EventKind::Reap,
            EventKind::Cgroup,
        ] {
            assert!(k.contains(&kind), "{kind:?} missing from {k:?}");
        }
        assert!(!k.contains(&EventKind::Bind));
        assert!(
            kernel_kinds(&["finding".to_owned()]).is_empty(),
            "findings need everything"
        );
    }
}
