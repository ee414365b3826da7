//! The processing stage: enrich each kernel event, feed the detectors
//! (confirming ports against the kernel first when they ask), and turn
//! findings into records. The only I/O here is the targeted socket lookup.
use crate::kernel::clock::Clock;
use crate::{
    detect::{DetectConfig, Detectors, Finding, Input},
    kernel::decode::KernelEvent,
    output::enrich::Enricher,
    output::record::{Body, FindingRecord, InvolvedProcess, Record, SCHEMA_VERSION},
    world::proctable::{Proc, ProcessTable},
    world::{
        lookup::{SocketLookup, ASKS_PER_SECOND, LOOKUPS_PER_SECOND},
        sockdiag::KernelSocket,
    },
};

pub struct Engine {
    pub enricher: Enricher,
    pub detectors: Detectors,
    lookup: Box<dyn SocketLookup>,
    /// Targeted socket lookups done (for metrics).
    pub lookups: u64,
    /// Lookups skipped because the budget of the second was spent (the socket table is used as it is).
    pub lookups_skipped: u64,
    /// (second of event time, lookups made in it per user): each user has
    /// [`crate::world::lookup::LOOKUPS_PER_SECOND`] of its own, so a local user's flood of failing
    /// binds cannot spend the lookups another user's conflict needs.
    budget: (u64, std::collections::HashMap<u32, u32>),
    /// (second of event time, lookups sent to the namespace workers in it,
    /// all users): at most [`ASKS_PER_SECOND`].
    asks: (u64, u32),
    /// Exec records whose command line was longer than the kernel's cap
    /// (kept cut, and said to be).
    pub args_cut: u64,
    /// Lookups the namespace workers did not answer in time (shared with them).
    pub lookups_unanswered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Answers of the container runtime's worker.
    runtime: Option<std::sync::mpsc::Receiver<crate::world::containers::RuntimeUpdate>>,
    /// The reconciliation with `/proc` after a loss (or a confirmation of
    /// what a finding names): its phase and the findings it holds.
    recon: Reconciliation,
    /// The newest event handled (its kernel time).
    last_event_ns: u64,
    /// Exited processes the kernel could not remember (its exited-process
    /// table was full): a reap without a wait would go unseen, so `/proc`
    /// is asked about them every second until they are gone (bounded);
    /// an open naming one is confirmed before it is written.
    unseen_reaps: Vec<u32>,
    /// The same processes, to look up.
    unseen: foldhash::HashSet<u32>,
    /// Reconciliations done, and the processes and zombies they corrected (for metrics).
    pub reconciliations: u64,
    /// Findings about processes confirmed against /proc before they opened.
    pub confirmations: u64,
    pub reconciled_processes: u64,
    /// Socket-table holders a reconciliation dropped or added.
    pub reconciled_sockets: u64,
    /// Held findings never written because the reconciliation showed them false.
    pub findings_withdrawn: u64,
    /// Woken when a confirmation's answer has come (the pipeline then applies it).
    pub answers: crate::kernel::wake::Wake,
    /// When the socket lookups still on their way were asked.
    asked_at: AskedAt,
    /// The question, on the `/proc` worker, which namespaces of open
    /// `ports_exhausted` incidents are gone (one at a time).
    gone_check: Option<std::sync::mpsc::Receiver<Vec<u32>>>,
}

/// When each port's socket lookups still on their way were asked (event
/// time, oldest first): an answer is the kernel's table as it was then,
/// applied after later events (see `SocketTable::reconcile`). Bounded; an
/// answer whose time was not kept is applied as the kernel's table of now
/// (as an answer that came at once is).
#[derive(Default)]
struct AskedAt(
    std::collections::HashMap<crate::world::sockdiag::PortKey, std::collections::VecDeque<u64>>,
);

impl AskedAt {
    /// Ports at most, and questions per port (as many as wait for a worker).
    const PORTS: usize = 256;
    const PER_PORT: usize = 8;

    fn note(&mut self, key: crate::world::sockdiag::PortKey, ts: u64) {
        if self.0.len() >= Self::PORTS && !self.0.contains_key(&key) {
            return;
        }
        let q = self.0.entry(key).or_default();
        if q.len() < Self::PER_PORT {
            q.push_back(ts);
        }
    }

    fn take(&mut self, key: crate::world::sockdiag::PortKey) -> Option<u64> {
        let q = self.0.get_mut(&key)?;
        let ts = q.pop_front();
        if q.is_empty() {
            self.0.remove(&key);
        }
        ts
    }
}

/// The socket an event is about (its inode, and `holder`, the process
/// that holds it), which the socket table has only once the detectors have
/// applied the event.
fn own_socket(event: &crate::world::domain::DomainEvent, holder: u32) -> Option<(u64, u32)> {
    use crate::world::domain::DomainEvent;
    match *event {
        DomainEvent::Bound { inode, .. } | DomainEvent::ListenStarted { inode, .. }
            if inode != 0 =>
        {
            Some((inode, holder))
        }
        _ => None,
    }
}

/// The processes a finding's truth rests on: those it names, and every
/// zombie it counts (a parent's accumulation lists 16, counts them all).
fn depends_on(f: &Finding) -> Vec<u32> {
    let mut pids: Vec<u32> = f
        .processes
        .iter()
        .map(|x| x.proc.key.tgid)
        .chain(f.counted.iter().copied())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// An open of a kind a lost or unseen end can make false (what is
/// confirmed against `/proc`, or held after a loss).
fn about_processes(f: &Finding) -> bool {
    f.kind.held_after_loss() && f.state == crate::detect::State::Open
}

/// Where a reconciliation with `/proc` is.
#[derive(Default)]
enum Phase {
    /// Nothing lost, nothing asked.
    #[default]
    Idle,
    /// Records were lost: the snapshot is asked once the ring's backlog is
    /// handled (the events before it, then what the walk sees).
    AfterLoss,
    /// A snapshot of every process (after a loss), or of the processes a
    /// finding names (a confirmation), is being taken on a worker; `ready`
    /// once it came, applied when the events before it are handled.
    Asked {
        rx: std::sync::mpsc::Receiver<crate::world::reconcile::Snapshot>,
        ready: Option<crate::world::reconcile::Snapshot>,
    },
}

/// The reconciliation's state machine: its phase, the findings it holds
/// until its answer, and the processes events spoke of meanwhile. What the
/// answer changes (synthetic events, seeds, the socket table) is the
/// engine's: [`Engine::reconciled`].
#[derive(Default)]
struct Reconciliation {
    phase: Phase,
    /// Findings of the kinds a loss can make false, held until the answer.
    held: Vec<Finding>,
    /// Processes events spoke of since the snapshot was asked, with the
    /// events' times: those at or after the snapshot's start are newer than
    /// it (bounded; beyond it, the reconciliation judges less).
    touched: Vec<(u32, u64)>,
    /// A loss while the snapshot was taken: another one follows this one.
    again: bool,
    /// The request under way is a confirmation of some processes, not a
    /// snapshot after a loss.
    confirming: bool,
    /// Opens written at once whose processes the confirmation under way
    /// checks (`[detect] confirm_before_open = false`): (kind, incident id).
    written: Vec<(crate::detect::Kind, String)>,
    /// Processes of opens written while that confirmation was under way,
    /// checked by the next one (bounded), and those opens.
    next: Vec<u32>,
    next_written: Vec<(crate::detect::Kind, String)>,
}

/// Most processes waiting for the next confirmation of written opens.
const NEXT_CONFIRM_MAX: usize = 4096;

impl Reconciliation {
    fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle)
    }

    fn is_asked(&self) -> bool {
        matches!(self.phase, Phase::Asked { .. })
    }

    /// Nothing under way but (perhaps) a confirmation of written opens:
    /// no loss is being repaired.
    fn only_confirming(&self) -> bool {
        !self.again
            && match self.phase {
                Phase::Idle => true,
                Phase::Asked { .. } => self.confirming,
                Phase::AfterLoss => false,
            }
    }

    fn loss_seen(&mut self) {
        match self.phase {
            Phase::Idle => self.phase = Phase::AfterLoss,
            Phase::Asked { .. } => self.again = true,
            Phase::AfterLoss => {}
        }
    }

    /// A snapshot was asked of a worker.
    fn asked(&mut self, rx: std::sync::mpsc::Receiver<crate::world::reconcile::Snapshot>) {
        self.phase = Phase::Asked { rx, ready: None };
        self.confirming = false;
    }

    /// A confirmation (of some processes) was asked of a worker.
    fn asked_to_confirm(
        &mut self,
        rx: std::sync::mpsc::Receiver<crate::world::reconcile::Snapshot>,
    ) {
        self.asked(rx);
        self.confirming = true;
    }

    /// Its answer, had at once.
    fn came(&mut self, snapshot: crate::world::reconcile::Snapshot) {
        if let Phase::Asked { ready, .. } = &mut self.phase {
            *ready = Some(snapshot);
        }
    }

    fn touch(&mut self, tgid: u32, ts: u64) {
        if self.touched.len() < 100_000 {
            self.touched.push((tgid, ts));
        }
    }

    /// Whether `f` follows an incident held.
    fn holds(&self, f: &Finding) -> bool {
        !self.held.is_empty() && self.held.iter().any(|h| h.id == f.id)
    }

    /// Findings of the held kinds (opens, and what follows for incidents
    /// held) wait; the rest go.
    fn hold(&mut self, findings: Vec<Finding>) -> Vec<Finding> {
        let mut out = Vec::new();
        for f in findings {
            let held_incident = self.held.iter().any(|h| h.id == f.id);
            if f.kind.held_after_loss() && (f.state == crate::detect::State::Open || held_incident)
            {
                self.held.push(f);
            } else {
                out.push(f);
            }
        }
        out
    }

    /// The answer, when it has come and may be applied (`last_event_ns`:
    /// the newest event handled): a full snapshot once the events from
    /// before it are handled — the ring's backlog — or when none newer came
    /// for a second (a quiet host); a confirmation at once. With it, the
    /// processes events spoke of since it was taken. The phase is idle then.
    fn take_ready(
        &mut self,
        last_event_ns: u64,
        now: u64,
    ) -> Option<(crate::world::reconcile::Snapshot, foldhash::HashSet<u32>)> {
        let Phase::Asked { rx, ready } = &mut self.phase else {
            return None;
        };
        if ready.is_none() {
            match rx.try_recv() {
                Ok(s) => *ready = Some(s),
                Err(std::sync::mpsc::TryRecvError::Empty) => return None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    *ready = Some(Default::default())
                }
            }
        }
        let s = ready.as_ref()?;
        if s.only.is_none() && last_event_ns < s.taken_ns && now < s.taken_ns + 1_000_000_000 {
            return None;
        }
        let snapshot = ready.take().unwrap_or_default();
        self.phase = Phase::Idle;
        let touched = std::mem::take(&mut self.touched)
            .into_iter()
            .filter(|(_, t)| *t >= snapshot.taken_ns)
            .map(|(p, _)| p)
            .collect();
        Some((snapshot, touched))
    }

    /// Whether a loss came while the answer was awaited: then the phase
    /// goes back to `AfterLoss` (another snapshot follows).
    fn lost_meanwhile(&mut self) -> bool {
        if std::mem::take(&mut self.again) {
            self.phase = Phase::AfterLoss;
            return true;
        }
        false
    }
}

/// Most exited processes waited on for a reap the kernel could not report.
const UNSEEN_REAPS_MAX: usize = 65_536;

impl Engine {
    pub fn new(
        config: DetectConfig,
        table: ProcessTable,
        clock: Clock,
        lookup: Box<dyn SocketLookup>,
    ) -> Engine {
        let mut enricher = Enricher::new(1, 65_536, clock);
        enricher.procs = table;
        enricher.procs.identity = config.identity.into();
        let answers: crate::kernel::wake::Wake = Default::default();
        let mut lookup = lookup;
        lookup.wake_on_answer(answers.clone());
        Engine {
            enricher,
            detectors: Detectors::new(config),
            lookup,
            lookups: 0,
            lookups_skipped: 0,
            budget: (0, std::collections::HashMap::new()),
            asks: (0, 0),
            args_cut: 0,
            recon: Reconciliation::default(),
            last_event_ns: 0,
            unseen_reaps: Vec::new(),
            unseen: Default::default(),
            reconciliations: 0,
            confirmations: 0,
            reconciled_processes: 0,
            reconciled_sockets: 0,
            findings_withdrawn: 0,
            answers,
            asked_at: AskedAt::default(),
            lookups_unanswered: Default::default(),
            runtime: None,
            gone_check: None,
        }
    }

    /// Start the worker that asks the container runtime (at `socket`) for names and images.
    pub fn start_runtime(&mut self, socket: std::path::PathBuf) {
        let (tx, rx) = crate::world::runtime::spawn(socket);
        self.enricher.containers.set_requests(tx);
        self.runtime = Some(rx);
    }

    /// Apply what the runtime worker has said since the last call (never
    /// waits). Returns the status lines it had to say and the incident updates.
    pub fn drain_runtime(&mut self, now: u64) -> (Vec<String>, Vec<Finding>) {
        let (mut said, mut findings) = (Vec::new(), Vec::new());
        let Some(rx) = &self.runtime else {
            return (said, findings);
        };
        let updates: Vec<_> = rx.try_iter().take(4096).collect();
        for u in updates {
            let (line, fs) = self.runtime_update(u, now);
            said.extend(line);
            findings.extend(fs);
        }
        (said, findings)
    }

    /// Wait (up to `deadline`) until the runtime worker has reported its
    /// first status: used once at start, so that containers running before
    /// watcher are named from the first record.
    pub fn wait_runtime(&mut self, deadline: std::time::Duration) -> Vec<String> {
        let mut said = Vec::new();
        let until = std::time::Instant::now() + deadline;
        while let Some(rx) = &self.runtime {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(u) => {
                    let status =
                        matches!(u, crate::world::containers::RuntimeUpdate::Status { .. });
                    said.extend(self.runtime_update(u, 0).0);
                    if status {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        said.extend(self.drain_runtime(0).0);
        said
    }

    /// Give the detectors what exists now (processes already in the table, the kernel's sockets).
    pub fn seed(&mut self, sockets: &[KernelSocket], now: u64) -> Vec<Finding> {
        let procs: Vec<Proc> = self.enricher.procs.iter().cloned().collect();
        self.detectors.seed(&procs, sockets, now)
    }

    pub fn handle(&mut self, ev: &KernelEvent) -> (Option<Record>, Vec<Finding>) {
        let mut records = Vec::new();
        let f = self.handle_opt(ev, Some(&mut records));
        (records.pop(), f)
    }

    /// What the container runtime's worker said (applied between batches):
    /// a status line to say, and updates of open incidents that named a
    /// container before the runtime did.
    pub fn runtime_update(
        &mut self,
        u: crate::world::containers::RuntimeUpdate,
        now: u64,
    ) -> (Option<String>, Vec<Finding>) {
        // Host ports newly published for a container (its start's answer
        // may come after a conflict on one of them was written).
        let published: Vec<(bool, u16)> = match &u {
            crate::world::containers::RuntimeUpdate::Container(c) if !c.published.is_empty() => {
                let before = self.enricher.containers.peek(&c.id);
                c.published
                    .iter()
                    .filter(|p| !before.as_ref().is_some_and(|b| b.published.contains(p)))
                    .map(|p| (p.tcp, p.host_port))
                    .collect()
            }
            _ => Vec::new(),
        };
        let (line, renamed) = self.enricher.containers.apply(u);
        let mut findings = match renamed {
            Some((from, to)) => self.detectors.container_renamed(&from, &to, now),
            None => Vec::new(),
        };
        if !published.is_empty() {
            findings.extend(self.detectors.ports_published(
                &published,
                &self.enricher.clock,
                &self.enricher.containers,
                now,
            ));
        }
        (line, findings)
    }

    /// Like [`Engine::handle`]; the event's own record is built only when
    /// asked for, and pushed onto `records` (not returned: a record is
    /// 664 bytes, a return would copy it on every event).
    pub fn handle_opt(
        &mut self,
        ev: &KernelEvent,
        records: Option<&mut Vec<Record>>,
    ) -> Vec<Finding> {
        // A command line longer than the kernel's cap is kept cut (the
        // kernel copies up to `--args-bytes`, 4 KiB by default: what a
        // record keeps of one at most; nothing is read from /proc for it).
        if let crate::kernel::decode::Payload::Exec(x) = &ev.payload {
            if x.argv_truncated {
                self.args_cut += 1;
            }
        }
        let ts = ev.header.ts_ns;
        self.last_event_ns = self.last_event_ns.max(ts);
        if self.recon.is_asked() {
            self.recon.touch(ev.header.tgid, ts);
            match &ev.payload {
                crate::kernel::decode::Payload::Fork(f) => self.recon.touch(f.child_tgid, ts),
                crate::kernel::decode::Payload::Reap(r) => self.recon.touch(r.reaped_pid, ts),
                _ => {}
            }
        }
        if let crate::kernel::decode::Payload::Exit(x) = &ev.payload {
            if x.flags & watcher_common::EXIT_UNTRACKED != 0
                && self.unseen_reaps.len() < UNSEEN_REAPS_MAX
                && self.unseen.insert(ev.header.tgid)
            {
                self.unseen_reaps.push(ev.header.tgid);
            }
        }
        let (touched, owner) = self.enricher.observe(ev);
        if let Some(out) = records {
            out.extend(self.enricher.build(ev, &touched, owner.as_ref()));
        }
        let subject = touched.subject.get(&self.enricher.procs);
        let me = subject.map(|p| p.key.tgid).unwrap_or(ev.header.tgid);
        let confirm =
            self.detectors
                .wants_confirmation(&touched.event, me, subject, ev.header.ts_ns);
        let second = ev.header.ts_ns / 1_000_000_000;
        if self.budget.0 != second || self.budget.1.len() > 4096 {
            self.budget = (second, std::collections::HashMap::new());
        }
        if self.asks.0 != second {
            self.asks = (second, 0);
        }
        let uid = subject.map(|p| p.uid).unwrap_or(u32::MAX);
        let kernel = match confirm {
            // (Counted, not timed: a lookup skipped for time left a real
            // conflict whose holder only the kernel knew unreported — the
            // hostile tests' conflict elsewhere, when 27 lookups had taken
            // 50 ms within one second.)
            Some(_) if self.budget.1.get(&uid).copied().unwrap_or(0) >= LOOKUPS_PER_SECOND => {
                self.lookups_skipped += 1;
                None
            }
            Some(key) => {
                *self.budget.1.entry(uid).or_default() += 1;
                let (netns, tcp, port) = key;
                let via = me;
                // The holders whose socket inode the table knows (from their
                // bind records), of processes still alive, and the event's own
                // socket (the table has it once the detectors apply the
                // event): when they explain every socket on the port, the
                // answer needs no /proc.
                let procs = &self.enricher.procs;
                let mut known: Vec<(u64, u32)> = self
                    .detectors
                    .sockets
                    .holders(key)
                    .iter()
                    .filter(|h| {
                        h.inode != 0
                            && procs
                                .get(h.proc.key.tgid)
                                .is_some_and(|p| p.key == h.proc.key && p.exited.is_none())
                    })
                    .map(|h| (h.inode, h.proc.key.tgid))
                    .collect();
                let holder = owner.as_ref().map(|o| o.key.tgid).unwrap_or(me);
                known.extend(own_socket(&touched.event, holder));
                // The kernel's word on this thread, before the finding, only
                // when the config holds port findings for it
                // (`confirm_before_open`): ~0.1-0.3 ms of sock_diag round
                // trips. By default the finding is written from the table at
                // once and a worker's answer corrects it (an update or a
                // `resolved`, through `late_confirmations`).
                let in_place = if self.detectors.config.confirm_before_open {
                    self.lookup.quick(netns, via, tcp, port, &known)
                } else {
                    None
                };
                if let Some(socks) = in_place {
                    self.lookups += 1;
                    Some(socks)
                } else if self.asks.1 >= ASKS_PER_SECOND {
                    // The workers' share of the second is spent (every user
                    // together): the socket table is used as it is.
                    self.lookups_skipped += 1;
                    None
                } else {
                    self.asks.1 += 1;
                    self.lookups += 1;
                    // The holders the table knows, and the event's own
                    // process (a listener that just started holds the port
                    // itself): when the inodes do not name every socket and
                    // these do, only their fds are read, not every process's.
                    let mut candidates: Vec<u32> = self
                        .detectors
                        .sockets
                        .holders(key)
                        .iter()
                        .map(|h| h.proc.key.tgid)
                        .collect();
                    for pid in owner.as_ref().map(|o| o.key.tgid).into_iter().chain([via]) {
                        if !candidates.contains(&pid) {
                            candidates.push(pid);
                        }
                    }
                    // A port no listener holds is dumped for its
                    // connections only when the answer needs them: a failed
                    // bind's blocker can be one, an open conflict is
                    // restated from them. (A listen or bind that succeeded,
                    // its socket closed by the time a worker asked, made the
                    // kernel walk its whole connection table twice: ~5 ms of
                    // a CPU nothing could preempt, in front of the next finding.)
                    let connections = matches!(
                        touched.event,
                        crate::world::domain::DomainEvent::BindFailed { .. }
                    ) || self.detectors.conflict_open_on(key);
                    // (Not waited for: an answer not there at once comes
                    // later, wakes the pipeline, and restates the finding.)
                    let answer =
                        self.lookup
                            .ask(netns, via, tcp, port, connections, &candidates, &known);
                    if answer.is_none() {
                        self.asked_at.note(key, ts);
                    }
                    answer
                }
            }
            None => None,
        };

        let table = &self.enricher.procs;
        let procs = |tgid: u32| table.get(tgid).cloned();
        let ppid_of = |tgid: u32| table.get(tgid).map(|p| p.ppid);
        let input = Input {
            ev,
            event: &touched.event,
            subject,
            parent: touched.parent.get(table),
            owner: owner.as_ref(),
            reparented: &table.reparented,
            cause: touched.cause.as_ref(),
            kernel_sockets: kernel.as_deref(),
            procs: &procs,
            ppid_of: &ppid_of,
            clock: &self.enricher.clock,
            containers: &self.enricher.containers,
        };
        let findings = self.detectors.on_event(&input);
        self.ask_summaries();
        self.hold(findings)
    }

    /// Summaries of exhausted namespaces, on the lookups' threads.
    fn ask_summaries(&mut self) {
        for (netns, via) in std::mem::take(&mut self.detectors.ports_exhausted.asks) {
            self.lookup.summary(netns, via);
        }
    }

    /// Records were lost: reconcile with `/proc` (off this thread) before
    /// writing what the lost records could have made false.
    pub fn loss_seen(&mut self) {
        self.recon.loss_seen();
        // (A tracked socket's close may be among the lost records.)
        self.detectors.sockets.untrust();
    }

    /// Hold the questions each turn asks of the helpers until
    /// [`Engine::send_questions`] (see [`SocketLookup::hold_questions`]).
    pub fn hold_questions(&mut self) {
        self.lookup.hold_questions();
    }

    /// Hand the turn's questions to the helpers: called once its records are delivered.
    pub fn send_questions(&mut self) {
        self.lookup.send_questions();
    }

    /// The ring's backlog has been handled: after a loss, take the snapshot now.
    pub fn caught_up(&mut self) {
        if matches!(self.recon.phase, Phase::AfterLoss) {
            // The namespaces the socket table knows, and watcher's own.
            let mut namespaces = self.detectors.sockets.namespaces();
            namespaces.push((crate::world::netns::own_netns(), std::process::id()));
            if let Some(rx) = self
                .lookup
                .start_snapshot(self.enricher.procs.identity, namespaces)
            {
                self.recon.asked(rx);
            }
        }
    }

    /// Once a second: namespaces of open `ports_exhausted` incidents none of
    /// whose failing processes lives are looked for, on the `/proc` worker
    /// (the answer resolves those gone, through [`Engine::late_confirmations`]).
    pub fn check_namespaces(&mut self, now: u64) {
        if self.gone_check.is_some() {
            return;
        }
        let table = &self.enricher.procs;
        let procs = |tgid: u32| table.get(tgid).cloned();
        let netns = self
            .detectors
            .ports_exhausted
            .namespaces_to_look_for(now, &procs);
        if !netns.is_empty() {
            self.gone_check = self.lookup.start_gone_check(netns, &self.answers);
        }
    }

    /// Once a second: exited processes whose reap the kernel could not have
    /// reported are looked for in `/proc` (those gone are reaped, through
    /// the same path as a confirmation); nothing when none is pending.
    pub fn recheck_unseen_reaps(&mut self) {
        self.lookup.sweep();
        if !self.lookup.waiting() {
            // (Answers given up leave their times behind.)
            self.asked_at = AskedAt::default();
        }
        if self.unseen_reaps.is_empty() || !self.recon.is_idle() {
            return;
        }
        let table = &self.enricher.procs;
        self.unseen_reaps
            .retain(|pid| table.get(*pid).is_some_and(|p| p.exited.is_some()));
        self.unseen = self.unseen_reaps.iter().copied().collect();
        if self.unseen_reaps.is_empty() {
            return;
        }
        let n = self.unseen_reaps.len().min(4096);
        let pids: Vec<u32> = self.unseen_reaps.iter().take(n).copied().collect();
        // Those still zombies go round again, behind the rest.
        self.unseen_reaps.rotate_left(n);
        if let Some(rx) = self.lookup.start_confirmation(pids, &self.answers) {
            self.recon.asked_to_confirm(rx);
        }
    }

    /// Whether a reconciliation is under way.
    pub fn reconciling(&self) -> bool {
        !self.recon.is_idle()
    }

    /// Opens of the kinds a lost or unseen end can make false, written at
    /// once (`[detect] confirm_before_open = false`, the default): the
    /// processes they name are checked against `/proc` on a worker, and
    /// when the answer shows them gone the tables are corrected and the
    /// incident restated (resolved, saying why). Nothing waits.
    fn confirm_written(&mut self, findings: Vec<Finding>) -> Vec<Finding> {
        let opens: Vec<&Finding> = findings.iter().filter(|f| about_processes(f)).collect();
        if opens.is_empty() {
            return findings;
        }
        let pids: Vec<u32> = opens.iter().flat_map(|f| depends_on(f)).collect();
        let ids: Vec<(crate::detect::Kind, String)> =
            opens.iter().map(|f| (f.kind, f.id.clone())).collect();
        if self.recon.is_idle() {
            self.confirm_written_now(pids, ids);
        } else if self.recon.next.len() < NEXT_CONFIRM_MAX {
            // (One confirmation at a time: these go with the next.)
            self.recon.next.extend(pids);
            self.recon.next_written.extend(ids);
        }
        findings
    }

    /// The confirmation of written opens answered: those it showed false
    /// (their incidents no longer open) are counted, and their resolutions
    /// in `out` say why; opens written meanwhile are confirmed next.
    fn confirmed_written(&mut self, out: &mut [Finding]) {
        let written = std::mem::take(&mut self.recon.written);
        for (kind, id) in &written {
            if self.detectors.is_open(*kind, id) {
                continue;
            }
            self.findings_withdrawn += 1;
            for f in out
                .iter_mut()
                .filter(|f| &f.id == id && f.state == crate::detect::State::Resolved)
            {
                f.summary.push_str(
                    " (withdrawn: /proc shows the processes it named gone or reaped; their ends were not seen)",
                );
            }
        }
    }

    /// Start the confirmation of opens written while the last one was under way.
    fn confirm_next(&mut self) {
        if !self.recon.is_idle() || self.recon.next.is_empty() {
            return;
        }
        let pids = std::mem::take(&mut self.recon.next);
        let ids = std::mem::take(&mut self.recon.next_written);
        self.confirm_written_now(pids, ids);
    }

    /// Ask the worker about `pids`, the processes the written opens `ids` name.
    fn confirm_written_now(&mut self, pids: Vec<u32>, ids: Vec<(crate::detect::Kind, String)>) {
        if let Some(rx) = self.lookup.start_confirmation(pids, &self.answers) {
            self.recon.asked_to_confirm(rx);
            self.recon.written = ids;
        }
    }

    /// While reconciling, findings of the held kinds (opens, and what follows
    /// for incidents held) wait; else they are written at once and
    /// confirmed after ([`Engine::confirm_written`]), or held for their
    /// confirmation when the config says so (`confirm_before_open`) — or
    /// when an open names an exit the kernel could not remember: its reap
    /// may have gone unseen (a subreaper ignoring SIGCHLD frees its orphans
    /// without a wait), so it is as likely gone as not.
    fn hold(&mut self, findings: Vec<Finding>) -> Vec<Finding> {
        if findings.is_empty() {
            // (Most events decide nothing.)
            return findings;
        }
        if !self.detectors.config.confirm_before_open
            && self.recon.only_confirming()
            && !self.doubtful(&findings)
            && !findings.iter().any(|f| self.recon.holds(f))
        {
            return self.confirm_written(findings);
        }
        if self.recon.is_idle() {
            // No loss: confirm what a finding about processes names before it opens.
            let opens: Vec<u32> = findings
                .iter()
                .filter(|f| about_processes(f))
                .flat_map(depends_on)
                .collect();
            if opens.is_empty() {
                return findings;
            }
            let Some(rx) = self.lookup.start_confirmation(opens, &self.answers) else {
                return findings;
            };
            let wait = self.lookup.confirmation_wait();
            if !wait.is_zero() {
                // (Waited for here: it goes now.)
                self.lookup.send_questions();
            }
            let mut out = self.recon.hold(findings);
            // Decided now when the answer is already there; else the findings
            // are held and the answer wakes the pipeline when it comes (the
            // detectors never wait for /proc).
            let got = if wait.is_zero() {
                rx.try_recv().ok()
            } else {
                rx.recv_timeout(wait).ok()
            };
            self.recon.asked_to_confirm(rx);
            if let Some(snapshot) = got {
                self.recon.came(snapshot);
            }
            let now = self.last_event_ns;
            out.extend(self.reconciled(now));
            return out;
        }
        self.recon.hold(findings)
    }

    /// Whether an open among `findings` names an exit the kernel could not
    /// remember (see [`Engine::hold`]).
    fn doubtful(&self, findings: &[Finding]) -> bool {
        !self.unseen.is_empty()
            && findings
                .iter()
                .filter(|f| about_processes(f))
                .any(|f| depends_on(f).iter().any(|p| self.unseen.contains(p)))
    }

    /// The snapshot has come: correct the tables with synthetic events, and
    /// write the held findings whose incidents are still open (never waits).
    pub fn reconciled(&mut self, now: u64) -> Vec<Finding> {
        use crate::kernel::decode::{header_for, KernelEvent, Payload};
        use watcher_common::{EventKind, ExitData, ReapData, ReapSource};
        let Some((snapshot, touched)) = self.recon.take_ready(self.last_event_ns, now) else {
            return Vec::new();
        };
        let partial = snapshot.only.is_some();
        // The processes a confirmation judged (opens held while another
        // one was under way were not, unless it named theirs too).
        let judged: Option<foldhash::HashSet<u32>> = snapshot
            .only
            .as_ref()
            .filter(|_| !self.recon.held.is_empty())
            .map(|o| o.iter().copied().collect());
        if partial {
            self.confirmations += 1;
        } else {
            self.reconciliations += 1;
        }
        let mut out = Vec::new();
        if !snapshot.procs.is_empty() || snapshot.only.is_some() {
            let now_by_pid: std::collections::HashMap<u32, &Proc> =
                snapshot.procs.iter().map(|p| (p.key.tgid, p)).collect();
            // Only what the table knew before the walk began is judged by it.
            let known: Vec<Proc> = self
                .enricher
                .procs
                .iter()
                .filter(|p| {
                    p.key.start_ns + crate::world::reconcile::SAME_START_NS < snapshot.taken_ns
                })
                .filter(|p| p.exited.is_none_or(|(t, _)| t < snapshot.taken_ns))
                .filter(|p| !touched.contains(&p.key.tgid))
                .filter(|p| {
                    snapshot
                        .only
                        .as_ref()
                        .is_none_or(|only| only.contains(&p.key.tgid))
                })
                .cloned()
                .collect();
            let exit = |p: &Proc| KernelEvent {
                header: header_for::<ExitData>(
                    EventKind::Exit,
                    now,
                    p.key.tgid,
                    p.key.tgid,
                    &p.comm,
                ),
                payload: Payload::Exit(ExitData {
                    exit_code: 0,
                    group_dead: 1,
                    parent_tgid: p.ppid,
                    parent_waiting: 0,
                    cgroup_id: p.cgroup_id,
                    pidns: 0,
                    ns_pid: 0,
                    flags: 0,
                    reaper_tgid: 0,
                }),
            };
            let reap = |p: &Proc| KernelEvent {
                header: header_for::<ReapData>(EventKind::Reap, now, 0, 0, ""),
                payload: Payload::Reap(ReapData {
                    reaped_pid: p.key.tgid,
                    source: ReapSource::Free as u32,
                }),
            };
            for p in &known {
                let live = now_by_pid
                    .get(&p.key.tgid)
                    .filter(|q| crate::world::reconcile::same(p, q));
                let mut events = Vec::new();
                match live {
                    // Gone: its end (and reap) were lost.
                    None => {
                        if p.exited.is_none() {
                            events.push(exit(p));
                        }
                        events.push(reap(p));
                    }
                    // A zombie now, its exit lost.
                    Some(q) if q.exited.is_some() && p.exited.is_none() => events.push(exit(p)),
                    _ => {}
                }
                if !events.is_empty() {
                    self.reconciled_processes += 1;
                }
                for ev in events {
                    out.extend(self.handle_opt(&ev, None));
                }
            }
            // Processes that started unseen.
            let new: Vec<Proc> = snapshot
                .procs
                .into_iter()
                .filter(|q| {
                    snapshot.only.is_none()
                        && self.enricher.procs.get(q.key.tgid).is_none()
                        && !touched.contains(&q.key.tgid)
                })
                .collect();
            for q in &new {
                self.enricher.procs.insert(q.clone());
            }
            self.reconciled_processes += new.len() as u64;
            out.extend(self.detectors.seed(&new, &[], now));
        }
        if !partial && !snapshot.netns_read.is_empty() {
            let table = &self.enricher.procs;
            let procs = |tgid: u32| table.get(tgid).cloned();
            self.reconciled_sockets += self.detectors.sockets.resync(
                &snapshot.netns_read,
                &snapshot.sockets,
                &procs,
                snapshot.taken_ns,
            );
        }
        // What was held: written if its incident survived, else withdrawn
        // (and what the reconciliation said of it, too).
        let held = std::mem::take(&mut self.recon.held);
        let withdrawn: Vec<String> = held
            .iter()
            .filter(|h| !self.detectors.is_open(h.kind, &h.id))
            .map(|h| h.id.clone())
            .collect();
        self.findings_withdrawn += held
            .iter()
            .filter(|h| h.state == crate::detect::State::Open && withdrawn.contains(&h.id))
            .count() as u64;
        let mut written: Vec<Finding> = held
            .into_iter()
            .filter(|h| !withdrawn.contains(&h.id))
            .collect();
        // Held opens this answer did not judge (held while another
        // confirmation was under way) are confirmed on their own before
        // they are written, with what follows them.
        let unjudged: Vec<String> = judged
            .as_ref()
            .map(|judged| {
                written
                    .iter()
                    .filter(|h| about_processes(h))
                    .filter(|h| !depends_on(h).iter().all(|p| judged.contains(p)))
                    .map(|h| h.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let (rejudged, rest): (Vec<Finding>, Vec<Finding>) =
            written.into_iter().partition(|h| unjudged.contains(&h.id));
        written = rest;
        out.retain(|f| !withdrawn.contains(&f.id));
        if partial {
            self.confirmed_written(&mut out);
        }
        written.extend(out);
        if self.recon.lost_meanwhile() {
            // (Another loss came while the snapshot was taken: another one,
            // which judges what this one did not.)
            self.recon.held = rejudged;
        } else if !rejudged.is_empty() {
            let pids: Vec<u32> = rejudged
                .iter()
                .filter(|f| about_processes(f))
                .flat_map(depends_on)
                .collect();
            match self.lookup.start_confirmation(pids, &self.answers) {
                Some(rx) => {
                    self.recon.held = rejudged;
                    self.recon.asked_to_confirm(rx);
                }
                None => written.extend(rejudged),
            }
        } else if !partial {
            // An open raised after the walk began is newer than what the
            // walk saw (on a quiet host the snapshot waits a second before it
            // is applied): it is confirmed on its own before it is written.
            let (newer, rest): (Vec<Finding>, Vec<Finding>) = written
                .into_iter()
                .partition(|f| about_processes(f) && f.at_ns > snapshot.taken_ns);
            written = rest;
            if !newer.is_empty() {
                let pids: Vec<u32> = newer.iter().flat_map(depends_on).collect();
                match self.lookup.start_confirmation(pids, &self.answers) {
                    Some(rx) => {
                        self.recon.held = newer;
                        self.recon.asked_to_confirm(rx);
                    }
                    None => written.extend(newer),
                }
            }
        }
        self.confirm_next();
        written
    }

    /// Socket-table answers that came after their wait: the holders are
    /// corrected and the port incidents that named them restated (updates).
    pub fn late_confirmations(&mut self, now: u64) -> Vec<Finding> {
        let answers = self.lookup.late();
        let mut out = Vec::new();
        if let Some(rx) = &self.gone_check {
            match rx.try_recv() {
                Ok(gone) => {
                    self.gone_check = None;
                    out.extend(self.detectors.ports_exhausted.namespaces_gone(&gone, now));
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => self.gone_check = None,
            }
        }
        for (netns, summary) in self.lookup.summaries() {
            out.extend(self.detectors.ports_exhausted.summarized(
                netns,
                summary,
                &self.enricher.containers,
                now,
            ));
        }
        for (key, kernel) in answers {
            let asked_ns = self.asked_at.take(key);
            let table = &self.enricher.procs;
            let procs = |tgid: u32| table.get(tgid).cloned();
            out.extend(self.detectors.confirmed_late(
                key,
                &kernel,
                &procs,
                &self.enricher.clock,
                &self.enricher.containers,
                now,
                asked_ns,
            ));
        }
        out
    }

    /// Socket lookups answered from sock_diag and the inodes bind and
    /// listen records carried, without `/proc` (on a worker; on this thread
    /// with `confirm_before_open`).
    pub fn lookups_by_inode(&self) -> u64 {
        self.lookup.quick_counts().0
    }

    /// Whether socket-table answers (or a reconciliation's snapshot) are still on their way.
    pub fn confirmations_pending(&self) -> bool {
        self.lookup.waiting() || self.recon.is_asked()
    }

    pub fn tick(&mut self, now: u64) -> Vec<Finding> {
        let table = &self.enricher.procs;
        let procs = |tgid: u32| table.get(tgid).cloned();
        let f = self
            .detectors
            .on_tick(now, &self.enricher.containers, &procs);
        // (A summary that waited for its slot.)
        self.ask_summaries();
        self.hold(f)
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.detectors.next_deadline()
    }

    /// The output record of a finding.
    pub fn finding_record(&self, f: &Finding) -> Record {
        let e = &self.enricher;
        let c = &e.clock;
        Record {
            schema: SCHEMA_VERSION,
            time: c.rfc3339(f.at_ns),
            mono_ns: f.at_ns,
            body: Body::Finding(FindingRecord {
                kind: f.kind.as_str().into(),
                state: f.state.as_str().into(),
                id: f.id.clone(),
                subject: f.subject.clone(),
                summary: f.summary.clone(),
                count: f.count,
                first_seen: c.rfc3339(f.first_seen_ns),
                last_seen: c.rfc3339(f.last_seen_ns),
                processes: f
                    .processes
                    .iter()
                    .map(|x| {
                        let (container, orchestrator) = crate::output::enrich::container_fields(
                            &e.containers,
                            x.proc.container_id.as_deref(),
                        );
                        InvolvedProcess {
                            role: x.role.into(),
                            process: e.process(
                                x.proc.key.tgid,
                                x.proc.key.tgid,
                                x.proc.comm.to_string(),
                                Some(&x.proc),
                                None,
                            ),
                            address: x.address.clone(),
                            since: x.since_ns.map(|t| c.rfc3339(t)),
                            container,
                            orchestrator,
                        }
                    })
                    .collect(),
                details: f.details.clone(),
            }),
        }
    }
}
