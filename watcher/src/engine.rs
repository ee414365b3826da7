//! The processing stage: enrich each kernel event, feed the detectors
//! (confirming ports against the kernel first when they ask), and turn
//! findings into records. The only I/O here is the targeted socket lookup.
use crate::{
    decode::KernelEvent,
    detect::{sockets::KernelSocket, DetectConfig, Detectors, Finding, Input},
    enrich::Enricher,
    proctable::{Proc, ProcessTable},
    record::{Body, Clock, FindingRecord, InvolvedProcess, Record, SCHEMA_VERSION},
};

/// Looks up the kernel's sockets on one (transport is TCP, port), given the
/// pids believed to hold it (looked at first).
pub type SocketLookup = Box<dyn FnMut(bool, u16, &[u32]) -> Vec<KernelSocket> + Send>;

pub struct Engine {
    pub enricher: Enricher,
    pub detectors: Detectors,
    lookup: SocketLookup,
    /// Targeted socket lookups done (for metrics).
    pub lookups: u64,
    /// Lookups skipped because the budget of the second was spent (the socket table is used as it is).
    pub lookups_skipped: u64,
    budget: (u64, u32),
}

/// At most this many targeted socket lookups per second: each costs ~0.1 ms
/// and takes the kernel's socket-table locks, so a storm of failing binds
/// (thousands a second) must not turn into a storm of lookups.
pub const LOOKUPS_PER_SECOND: u32 = 200;

impl Engine {
    pub fn new(config: DetectConfig, table: ProcessTable, clock: Clock, lookup: SocketLookup) -> Engine {
        let mut enricher = Enricher::new(1, 65_536, clock);
        enricher.procs = table;
        enricher.procs.identity = config.identity.into();
        Engine { enricher, detectors: Detectors::new(config), lookup, lookups: 0, lookups_skipped: 0, budget: (0, 0) }
    }

    /// Give the detectors what exists now (processes already in the table, the kernel's sockets).
    pub fn seed(&mut self, sockets: &[KernelSocket], now: u64) -> Vec<Finding> {
        let procs: Vec<Proc> = self.enricher.procs.iter().cloned().collect();
        self.detectors.seed(&procs, sockets, now)
    }

    pub fn handle(&mut self, ev: &KernelEvent) -> (Record, Vec<Finding>) {
        let (record, findings) = self.handle_opt(ev, true);
        (record.expect("built on request"), findings)
    }

    /// Like [`Engine::handle`]; the event's own record is built only when `build`.
    pub fn handle_opt(&mut self, ev: &KernelEvent, build: bool) -> (Option<Record>, Vec<Finding>) {
        let (touched, owner) = self.enricher.observe(ev);
        let record = build.then(|| self.enricher.build(ev, &touched, owner.as_ref()));
        let confirm = self.detectors.wants_confirmation(ev, touched.subject.as_ref());
        let second = ev.header.ts_ns / 1_000_000_000;
        if self.budget.0 != second {
            self.budget = (second, 0);
        }
        let kernel = match confirm {
            Some(_) if self.budget.1 >= LOOKUPS_PER_SECOND => {
                self.lookups_skipped += 1;
                None
            }
            Some((tcp, port)) => {
                self.budget.1 += 1;
                self.lookups += 1;
                let candidates: Vec<u32> = self.detectors.sockets.holders(tcp, port).iter().map(|h| h.proc.key.tgid).collect();
                Some((self.lookup)(tcp, port, &candidates))
            }
            None => None,
        };
        let table = &self.enricher.procs;
        let procs = |tgid: u32| table.get(tgid).cloned();
        let ppid_of = |tgid: u32| table.get(tgid).map(|p| p.ppid);
        let input = Input {
            ev,
            subject: touched.subject.as_ref(),
            parent: touched.parent.as_ref(),
            owner: owner.as_ref(),
            reparented: &table.reparented,
            kernel_sockets: kernel.as_deref(),
            procs: &procs,
            ppid_of: &ppid_of,
            clock: &self.enricher.clock,
        };
        let findings = self.detectors.on_event(&input);
        (record, findings)
    }

    pub fn tick(&mut self, now: u64) -> Vec<Finding> {
        self.detectors.on_tick(now)
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
                summary: f.summary.clone(),
                count: f.count,
                first_seen: c.rfc3339(f.first_seen_ns),
                last_seen: c.rfc3339(f.last_seen_ns),
                processes: f
                    .processes
                    .iter()
                    .map(|x| InvolvedProcess {
                        role: x.role.into(),
                        process: e.process(x.proc.key.tgid, x.proc.key.tgid, x.proc.comm.to_string(), Some(&x.proc), None),
                        address: x.address.clone(),
                        since: x.since_ns.map(|t| c.rfc3339(t)),
                    })
                    .collect(),
                details: f.details.clone(),
            }),
        }
    }
}
