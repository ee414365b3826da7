//! `ports_exhausted`: no free local port in a network namespace. A bind to
//! port 0 (any free port) failing with EADDRINUSE, or a connect failing with
//! EADDRNOTAVAIL, means the kernel found no ephemeral port: the incident opens
//! at once for that namespace, naming the failing process. What uses the
//! ports — the ephemeral range of that namespace, how many are in use, the
//! top holders by process and by destination with their TIME_WAIT counts —
//! comes from one sock_diag summary of the namespace, asked on the worker
//! (at most every 10 s per namespace, never on this path) and added as an
//! update when it answers. Summaries of all namespaces together are paced
//! ([`SummaryPace`]): each walks the kernel's whole TCP table. Resolves when
//! a later bind to port 0 or connect in that namespace gets a port, or when
//! the namespace is gone: once none of its failing processes lives, a
//! worker looks whether any process is still in it or it is mounted
//! ([`PortsExhausted::namespaces_to_look_for`], [`PortsExhausted::namespaces_gone`]) — a
//! container removed after it ran out of ports leaves no incident open.
use crate::kernel::abi::{EADDRNOTAVAIL, ECONNREFUSED, ETIMEDOUT};
use foldhash::{HashMap, HashMapExt};
use std::collections::VecDeque;

use serde::Serialize;

use super::{
    addr_port, incident::Incidents, who, who_in, ContainerView, DetectConfig, Finding, Input,
    Involved, Kind,
};
use crate::{
    world::domain::{BindError, ConnectOutcome, DomainEvent},
    world::proctable::Proc,
    world::sockdiag::PortSummary,
};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.ports_exhausted]`
    PortsExhaustedCfg {}
);

impl Declared for PortsExhausted {
    const NAME: &'static str = "ports_exhausted";
    const SEVERITY: &'static str = "critical";
    const ADVICE: &'static str = "A network namespace has run out of ephemeral ports: new outgoing connections fail. Find the program holding thousands of connections (the finding names it), reuse connections, or widen net.ipv4.ip_local_port_range.";
    type Config = PortsExhaustedCfg;
    fn new(cfg: &DetectConfig) -> Self {
        PortsExhausted::new(cfg)
    }
}

detector!(PortsExhausted, |s, i, _c| {
    PortsExhausted::on_event(s, i)
}, tick: |s, now, _v, procs| PortsExhausted::on_tick(s, now, procs),
   deadline: |s| PortsExhausted::next_deadline(s),
   wants: [Bound, BindFailed, Connect]);

/// A namespace's port table is summarized at most this often while it fails.
const SUMMARY_EVERY_NS: u64 = 10_000_000_000;

/// A namespace none of whose failing processes lives is looked for at most
/// this often (while its incident is open).
const GONE_CHECK_EVERY_NS: u64 = 10_000_000_000;

/// Namespaces looked for in one question at most.
const GONE_CHECK_MAX: usize = 256;

/// Summaries, of every namespace together, start at least this far apart.
const SUMMARY_GAP_NS: u64 = 250_000_000;

/// After a summary that took `c` to make, the next starts at least
/// `SUMMARY_SHARE × c` after it: summaries take at most 1 % of one CPU.
const SUMMARY_SHARE: u64 = 100;

/// The pace of port summaries across namespaces. A summary dumps every TCP
/// socket, and the kernel answers by walking its whole established hash
/// (every namespace without a hash of its own shares the host's): ~2.3 ms
/// on a 24 GiB host, more on a larger one, without a preemption point on a
/// kernel built without preemption — whatever shares that CPU waits, the
/// deciding thread included. Namespaces that run out of ports together (a
/// CI host's containers, or a local user making namespaces to exhaust)
/// would otherwise have watcher walk the table for each, back to back.
/// A summary due while the pace holds it waits in line and is asked at the
/// next free slot, if its namespace still fails and a failing process is
/// still alive to enter it through.
#[derive(Default)]
struct SummaryPace {
    /// The earliest time the next summary may be asked.
    next_ns: u64,
    /// When the last one was asked.
    last_ns: u64,
    /// Namespaces whose summary is due, oldest first (each at most once).
    waiting: VecDeque<u32>,
    /// Summaries that waited for a slot.
    delayed: u64,
}

impl SummaryPace {
    fn asked(&mut self, now: u64) {
        self.last_ns = now;
        self.next_ns = now + SUMMARY_GAP_NS;
    }
}

/// Whether the failing process `q` still lives (the same process, not exited).
fn alive(q: &Proc, procs: &dyn Fn(u32) -> Option<Proc>) -> bool {
    procs(q.key.tgid).is_some_and(|x| x.key == q.key && x.exited.is_none())
}

/// What could not get a local port.
#[derive(Clone, Debug, PartialEq)]
enum PortNeed {
    /// A bind to port 0 of this address.
    BindAny { addr: String },
    ConnectTo { dest: String },
}

impl std::fmt::Display for PortNeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortNeed::BindAny { addr } => write!(f, "a bind to {addr} (any free port)"),
            PortNeed::ConnectTo { dest } => write!(f, "a connect to {dest}"),
        }
    }
}

/// How a local port was had again (the resolution).
#[derive(Clone, Debug, PartialEq)]
enum PortGot {
    BoundFree,
    ConnectTo { dest: String },
}

impl std::fmt::Display for PortGot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortGot::BoundFree => write!(f, "bound a free port"),
            PortGot::ConnectTo { dest } => write!(f, "got a local port for a connect to {dest}"),
        }
    }
}

/// What a `ports_exhausted` finding says: the failure, and once the
/// namespace's sockets were summarized (on a worker), what holds its ports.
#[derive(Serialize)]
struct NoFreePort {
    network_namespace: u32,
    /// The latest failure, in words.
    failure: String,
    #[serde(skip)]
    who: String,
    #[serde(flatten)]
    usage: Option<PortUse>,
}

#[derive(Serialize)]
struct PortUse {
    #[serde(skip_serializing_if = "Option::is_none")]
    ephemeral_range: Option<Range>,
    ports_in_use: usize,
    sockets: usize,
    time_wait: usize,
    /// Most sockets first.
    top_processes: Vec<TopProcess>,
    top_destinations: Vec<TopDestination>,
}

/// `net.ipv4.ip_local_port_range` of the namespace.
#[derive(Serialize)]
struct Range {
    low: u16,
    high: u16,
    size: usize,
}

#[derive(Serialize)]
struct TopProcess {
    pid: u32,
    command_line: String,
    sockets: usize,
}

#[derive(Serialize)]
struct TopDestination {
    address: String,
    sockets: usize,
    time_wait: usize,
}

impl std::fmt::Display for NoFreePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no free local port in network namespace {}: {} by {} failed",
            self.network_namespace, self.failure, self.who
        )?;
        let Some(u) = &self.usage else {
            return write!(f, "; looking up what holds its ports");
        };
        match &u.ephemeral_range {
            Some(r) => write!(
                f,
                "; ephemeral range {}–{} ({} ports, net.ipv4.ip_local_port_range), {} in use by {} sockets ({} in TIME_WAIT)",
                r.low, r.high, r.size, u.ports_in_use, u.sockets, u.time_wait
            )?,
            None => write!(
                f,
                "; {} local ports in use by {} sockets ({} in TIME_WAIT); the ephemeral range could not be read",
                u.ports_in_use, u.sockets, u.time_wait
            )?,
        }
        if u.sockets == 0 {
            write!(f, " — sockets bound but neither listening nor connected are not listed by kernels before 6.7")?;
        }
        if !u.top_processes.is_empty() {
            let top: Vec<String> = u
                .top_processes
                .iter()
                .take(3)
                .map(|t| format!("pid {} ({}) {}", t.pid, t.command_line, t.sockets))
                .collect();
            write!(f, "; top processes: {}", top.join(", "))?;
        }
        if !u.top_destinations.is_empty() {
            let top: Vec<String> = u
                .top_destinations
                .iter()
                .take(3)
                .map(|t| format!("{} {} ({} in TIME_WAIT)", t.address, t.sockets, t.time_wait))
                .collect();
            write!(f, "; top destinations: {}", top.join(", "))?;
        }
        Ok(())
    }
}

struct Ns {
    /// The latest failing processes (distinct, newest last).
    failing: Vec<Proc>,
    /// The latest failure, in words.
    what: PortNeed,
    summary: Option<PortSummary>,
    asked_ns: Option<u64>,
    /// In [`SummaryPace::waiting`].
    queued: bool,
    /// When a worker was last asked whether the namespace is gone.
    checked_ns: Option<u64>,
}

pub struct PortsExhausted {
    pub incidents: Incidents<u32>,
    open: HashMap<u32, Ns>,
    /// Summaries the engine is to ask for: (network namespace, a process in it).
    pub asks: Vec<(u32, u32)>,
    pace: SummaryPace,
    cfg: DetectConfig,
    pub overflow: u64,
}

impl PortsExhausted {
    pub fn new(cfg: &DetectConfig) -> PortsExhausted {
        PortsExhausted {
            incidents: Incidents::new(
                Kind::PortsExhausted,
                cfg.update_interval_ns(),
                cfg.max_incidents,
            ),
            open: HashMap::new(),
            asks: Vec::new(),
            pace: SummaryPace::default(),
            cfg: cfg.clone(),
            overflow: 0,
        }
    }

    /// Settings from a reloaded configuration: what comes next uses them;
    /// state and open incidents stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.incidents
            .set_limits(cfg.update_interval_ns(), cfg.max_incidents);
        self.cfg = cfg.clone();
    }

    fn describe(&self, netns: u32, view: &dyn ContainerView) -> (NoFreePort, Vec<Involved>) {
        let ns = &self.open[&netns];
        let p = ns.failing.last().expect("a failure opened it");
        let usage = ns.summary.as_ref().map(|s| PortUse {
            ephemeral_range: s.range.map(|(low, high)| Range {
                low,
                high,
                size: (high as usize + 1).saturating_sub(low as usize),
            }),
            ports_in_use: s.ports_in_use,
            sockets: s.sockets,
            time_wait: s.time_wait,
            top_processes: s
                .by_process
                .iter()
                .map(|(pid, cmd, n)| TopProcess {
                    pid: *pid,
                    command_line: cmd.clone(),
                    sockets: *n,
                })
                .collect(),
            top_destinations: s
                .by_destination
                .iter()
                .map(|((ip, port), n, tw)| TopDestination {
                    address: addr_port(*ip, *port),
                    sockets: *n,
                    time_wait: *tw,
                })
                .collect(),
        });
        let facts = NoFreePort {
            network_namespace: netns,
            failure: ns.what.to_string(),
            who: who_in(p, view),
            usage,
        };
        let processes = ns
            .failing
            .iter()
            .rev()
            .map(|q| Involved {
                role: "failing",
                proc: q.clone(),
                address: None,
                since_ns: None,
            })
            .collect();
        (facts, processes)
    }

    fn failed(
        &mut self,
        netns: u32,
        p: &Proc,
        what: PortNeed,
        ts: u64,
        view: &dyn ContainerView,
    ) -> Option<Finding> {
        if !self.open.contains_key(&netns) && self.open.len() >= self.cfg.max_tracked {
            self.overflow += 1;
            return None;
        }
        let ns = self.open.entry(netns).or_insert(Ns {
            failing: Vec::new(),
            what: what.clone(),
            summary: None,
            asked_ns: None,
            queued: false,
            checked_ns: None,
        });
        ns.failing.retain(|q| q.key != p.key);
        ns.failing.push(p.clone());
        if ns.failing.len() > 8 {
            ns.failing.remove(0);
        }
        ns.what = what;
        if Self::summary_due(ns, ts) && !ns.queued {
            if ts >= self.pace.next_ns {
                ns.asked_ns = Some(ts);
                self.pace.asked(ts);
                self.asks.push((netns, p.key.tgid));
            } else if self.pace.waiting.len() < self.cfg.max_tracked {
                ns.queued = true;
                self.pace.waiting.push_back(netns);
                self.pace.delayed += 1;
            }
        }
        let (facts, processes) = self.describe(netns, view);
        self.incidents
            .raise(netns, &format!("netns {netns}"), ts, 1, &facts, processes)
    }

    fn summary_due(ns: &Ns, ts: u64) -> bool {
        ns.asked_ns
            .is_none_or(|t| ts.saturating_sub(t) >= SUMMARY_EVERY_NS)
    }

    /// The next waiting summary, at its slot: asked through the namespace's
    /// latest failing process still alive; a namespace no longer failing,
    /// or with none of them left, is let go.
    pub fn on_tick(&mut self, now: u64, procs: &dyn Fn(u32) -> Option<Proc>) -> Vec<Finding> {
        if now < self.pace.next_ns {
            return Vec::new();
        }
        while let Some(netns) = self.pace.waiting.pop_front() {
            // (A namespace resolved since, or queued again after it: gone.)
            let Some(ns) = self.open.get_mut(&netns).filter(|ns| ns.queued) else {
                continue;
            };
            ns.queued = false;
            let via = ns.failing.iter().rev().find(|q| alive(q, procs));
            if let Some(q) = via {
                ns.asked_ns = Some(now);
                self.pace.asked(now);
                self.asks.push((netns, q.key.tgid));
                break;
            }
        }
        Vec::new()
    }

    /// Namespaces of open incidents none of whose failing processes lives
    /// any more (each at most every 10 s, 256 at most): the engine asks a
    /// worker whether they still exist.
    pub fn namespaces_to_look_for(&mut self, now: u64, procs: &dyn Fn(u32) -> Option<Proc>) -> Vec<u32> {
        let mut out = Vec::new();
        for (netns, ns) in self.open.iter_mut() {
            if out.len() >= GONE_CHECK_MAX {
                break;
            }
            if ns
                .checked_ns
                .is_some_and(|t| now.saturating_sub(t) < GONE_CHECK_EVERY_NS)
            {
                continue;
            }
            if !ns.failing.iter().any(|q| alive(q, procs)) {
                ns.checked_ns = Some(now);
                out.push(*netns);
            }
        }
        out
    }

    /// Namespaces a worker found gone (no process in them, none mounted):
    /// their incidents resolve.
    pub fn namespaces_gone(&mut self, gone: &[u32], now: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        for netns in gone {
            if self.open.remove(netns).is_none() {
                continue;
            }
            out.extend(self.incidents.resolve(
                netns,
                now,
                format_args!(
                    "network namespace {netns} is gone (no process is in it and it is not mounted): its ports went with it"
                ),
            ));
        }
        out
    }

    /// The next free slot, while a summary waits for one.
    pub fn next_deadline(&self) -> Option<u64> {
        (!self.pace.waiting.is_empty()).then_some(self.pace.next_ns)
    }

    /// Summaries that waited for a slot (pacing, not loss: each is asked
    /// at a later slot while its namespace still fails).
    pub fn summaries_delayed(&self) -> u64 {
        self.pace.delayed
    }

    fn got_port(&mut self, netns: u32, p: &Proc, how: PortGot, ts: u64) -> Option<Finding> {
        self.open.remove(&netns)?;
        self.incidents.resolve(
            &netns,
            ts,
            format_args!(
                "{} {how}: local ports are free again in network namespace {netns}",
                who(p)
            ),
        )
    }

    /// The namespace's port summary answered: the open incident says what holds the ports.
    pub fn summarized(
        &mut self,
        netns: u32,
        s: PortSummary,
        view: &dyn ContainerView,
        now: u64,
    ) -> Option<Finding> {
        // (What it cost sets the next slot: 1 % of a CPU at most.)
        let after = s.cost_ns.saturating_mul(SUMMARY_SHARE);
        self.pace.next_ns = self
            .pace
            .next_ns
            .max(self.pace.last_ns.saturating_add(after));
        self.open.get_mut(&netns)?.summary = Some(s);
        let (facts, processes) = self.describe(netns, view);
        self.incidents.restate(&netns, &facts, processes, now)
    }

    pub fn on_event(&mut self, i: &Input) -> Vec<Finding> {
        let ts = i.ev.header.ts_ns;
        let Some(p) = i.subject else {
            return Vec::new();
        };
        if self.cfg.allowed_program(p) {
            return Vec::new();
        }
        let out = match *i.event {
            DomainEvent::BindFailed {
                local,
                error: BindError::InUse,
            } if local.port == 0 => self.failed(
                local.netns,
                p,
                PortNeed::BindAny {
                    addr: addr_port(local.ip, 0),
                },
                ts,
                i.containers,
            ),
            DomainEvent::Bound { local, .. }
                if local.port == 0 && self.open.contains_key(&local.netns) =>
            {
                self.got_port(local.netns, p, PortGot::BoundFree, ts)
            }
            DomainEvent::Connect {
                dest,
                outcome: ConnectOutcome::Error(EADDRNOTAVAIL),
                ..
            } => self.failed(
                dest.netns,
                p,
                PortNeed::ConnectTo {
                    dest: addr_port(dest.ip, dest.port),
                },
                ts,
                i.containers,
            ),
            // A connect that had a local port (the state change's task may
            // be another's: the socket's owner is named).
            DomainEvent::Connect {
                dest,
                outcome,
                syscall,
                ..
            } if matches!(
                outcome,
                ConnectOutcome::Connected
                    | ConnectOutcome::InProgress
                    | ConnectOutcome::HandshakeFailed
                    | ConnectOutcome::Error(ECONNREFUSED | ETIMEDOUT)
            ) && self.open.contains_key(&dest.netns) =>
            {
                let got = PortGot::ConnectTo {
                    dest: addr_port(dest.ip, dest.port),
                };
                self.got_port(
                    dest.netns,
                    if syscall { p } else { i.owner.unwrap_or(p) },
                    got,
                    ts,
                )
            }
            _ => None,
        };
        out.into_iter().collect()
    }
}
