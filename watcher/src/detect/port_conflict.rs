//! `port_conflict`: a bind fails with EADDRINUSE. Names the failing process
//! and the current holders of that address and port (confirmed against the
//! kernel at that moment). One incident per (program, transport, port), so a
//! supervisor retrying for hours is one finding with a count, not thousands.
//! Resolves when a process of that program binds the port, or when the
//! failing processes have exited and no retry came within the grace period.
//!
//! A port prober (a dev server trying 8000, 8001, … until one is free) is one
//! incident: a failure on a port a little above one the same process already
//! failed on is added to that incident, and the process's successful bind on
//! such a port resolves it, saying which port it got. Port 0 (an ephemeral
//! port) is never a conflict: the kernel picks it (see `ports_exhausted`).
use crate::world::sockdiag::{KernelSocket, PortKey};
use std::net::IpAddr;

use foldhash::{HashMap, HashMapExt};

use serde::Serialize;

use super::{
    addr_port,
    config::ns,
    incident::Incidents,
    dur,
    port_shadowed::{held_for, holder_name, published_details, PublishedBy},
    sockets::{overlaps, Changes, SocketTable},
    who, who_in, ContainerView, DetectConfig, Finding, Input, Involved, Kind,
};
use crate::{
    world::domain::{BindError, DomainEvent},
    world::proctable::{Proc, ProcKey},
};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.port_conflict]`
    PortConflictCfg {
        /// After the failing process exits, wait this long for a retry before resolving.
        #[serde(deserialize_with = "crate::detect::config::seconds_or_zero")]
        resolve_after_exit_s: f64 = 30.0,
    }
);

impl Declared for PortConflict {
    const NAME: &'static str = "port_conflict";
    const SEVERITY: &'static str = "critical";
    const ADVICE: &'static str = "A program cannot bind a port another process holds: stop the one that should not run there (or move one of them to another port); the failing program keeps failing until then. The finding names both, with their containers.";
    type Config = PortConflictCfg;
    fn new(cfg: &DetectConfig) -> Self {
        PortConflict::new(cfg)
    }
}

detector!(PortConflict, |s, i, c| PortConflict::on_event(s, i, c.sockets, c.changes),
    tick: |s, now, _v| PortConflict::on_tick(s, now), deadline: |s| PortConflict::next_deadline(s),
    wants: [Bound, BindFailed, Exited]);

/// A prober's next try is at most this far above the port it started from.
const PROBE_SPAN: u16 = 100;
/// A prober's tries are looked for among a process's latest conflicts only.
const PROBE_RECENT: usize = 8;

/// (program, network namespace, transport is TCP, port).
type Key = (u64, u32, bool, u16);

struct Pending {
    failing: Vec<ProcKey>,
    resolve_at: Option<u64>,
    /// The latest failing process and the address it wanted (to restate the
    /// incident when the kernel's table answers late).
    last: Option<(Proc, IpAddr)>,
    /// Further ports a prober tried (and found in use) after the incident's own.
    tried: Vec<u16>,
    /// The container a runtime holds the port for, when one does.
    published: Option<PublishedBy>,
}

/// A holder of a port, as a port finding names it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HeldBy {
    pub name: String,
    /// `0.0.0.0:80`.
    pub addr: String,
    /// Wall-clock time it bound (`06:15:43`), `None` when before watcher started.
    pub since: Option<String>,
}

/// What a `port_conflict` finding says.
#[derive(Serialize)]
struct Conflict {
    transport: &'static str,
    address: IpAddr,
    port: u16,
    network_namespace: u32,
    /// Processes failing on it now (the latest 64).
    failing_processes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    published_by_container: Option<PublishedBy>,
    /// A prober's ports, its first one first.
    #[serde(skip_serializing_if = "Option::is_none")]
    ports_tried: Option<Vec<u16>>,
    #[serde(skip)]
    who: String,
    /// The address and port it wanted (a prober's latest).
    #[serde(skip)]
    want: String,
    #[serde(skip)]
    holding: Holding,
}

/// Who has the port a bind failed on.
enum Holding {
    /// The holders the socket table knows.
    Held(Vec<HeldBy>),
    /// Nobody listens, but connections still use the port (TIME_WAIT).
    Lingering(usize),
    /// Nobody found.
    Nobody,
    /// A prober's ports so far, all in use.
    Probing(Vec<u16>),
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (who, transport, want) = (&self.who, self.transport, &self.want);
        match &self.holding {
            Holding::Held(holders) => {
                let held: Vec<String> = holders
                    .iter()
                    .map(|h| match &h.since {
                        Some(t) => format!("{} on {} since {t}", h.name, h.addr),
                        None => format!("{} on {} since before watcher started", h.name, h.addr),
                    })
                    .collect();
                write!(f, "{who} cannot bind {transport} {want}: held by {}", held.join("; "))
            }
            Holding::Lingering(connections) => write!(
                f,
                "{who} cannot bind {transport} {want}: no process listens there, but {connections} connection(s) still use the port (e.g. TIME_WAIT); set SO_REUSEADDR before bind"
            ),
            Holding::Nobody => write!(
                f,
                "{who} cannot bind {transport} {want}: the address is in use (no current holder found)"
            ),
            Holding::Probing(tried) => {
                let tried: Vec<String> = tried.iter().map(u16::to_string).collect();
                write!(
                    f,
                    "{who} cannot bind {transport} {want}: ports {} are in use (it is trying one port after another)",
                    tried.join(", ")
                )
            }
        }
    }
}

/// Whether `port` is a prober's next try after `from`.
fn probe_step(from: u16, port: u16) -> bool {
    port > from && port - from <= PROBE_SPAN
}

pub struct PortConflict {
    pub incidents: Incidents<Key>,
    pending: HashMap<Key, Pending>,
    /// Failing process → its conflicts (so an exit does not scan every conflict).
    by_proc: HashMap<ProcKey, Vec<Key>>,
    grace_ns: u64,
    cfg: DetectConfig,
    sweeps: crate::detect::room::Sweeps,
    /// (resolve_at, key) of pending conflicts whose failing processes are
    /// gone, earliest first: the next deadline and what is due are read
    /// here, not by a pass over every pending conflict (65,536 of them when a
    /// local user makes that many ports fail). Entries whose conflict moved
    /// on are skipped when they come up.
    deadlines: std::collections::BTreeSet<(u64, Key)>,
}

pub(crate) fn program_key(p: &Proc) -> u64 {
    if p.program != 0 {
        p.program
    } else {
        (1u64 << 63) | p.key.tgid as u64
    }
}

fn transport(tcp: bool) -> &'static str {
    if tcp {
        "tcp"
    } else {
        "udp"
    }
}

impl PortConflict {
    pub fn new(cfg: &DetectConfig) -> PortConflict {
        PortConflict {
            incidents: Incidents::new(
                Kind::PortConflict,
                cfg.update_interval_ns(),
                cfg.max_incidents,
            ),
            pending: HashMap::new(),
            by_proc: HashMap::new(),
            grace_ns: ns(cfg.port_conflict.resolve_after_exit_s),
            cfg: cfg.clone(),
            sweeps: Default::default(),
            deadlines: Default::default(),
        }
    }

    /// Settings from a reloaded configuration: what comes next uses them;
    /// state and open incidents stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.incidents
            .set_limits(cfg.update_interval_ns(), cfg.max_incidents);
        self.grace_ns = ns(cfg.port_conflict.resolve_after_exit_s);
        self.cfg = cfg.clone();
    }

    pub fn on_event(
        &mut self,
        i: &Input,
        sockets: &SocketTable,
        changes: &Changes<'_>,
    ) -> Vec<Finding> {
        let mut out = match *i.event {
            DomainEvent::BindFailed {
                local: b,
                error: BindError::InUse,
            } if b.port != 0 => self.bind_failed(i, b, sockets),
            DomainEvent::Bound { local: b, .. } => self.bound(i, b),
            _ => Vec::new(),
        };
        if let Some(dead) = &changes.exited {
            out.extend(self.exited(dead, i.ev.header.ts_ns));
        }
        out
    }

    /// A bind that failed with EADDRINUSE: a prober's next try, or a
    /// conflict opened (or counted) for the program, its namespace and port.
    fn bind_failed(
        &mut self,
        i: &Input,
        b: crate::world::domain::Endpoint,
        sockets: &SocketTable,
    ) -> Vec<Finding> {
        let ts = i.ev.header.ts_ns;
        let (ip, Some(p)) = (b.ip, i.subject) else {
            return Vec::new();
        };
        if self.cfg.allowed_port(b.port) || self.cfg.allowed_program(p) {
            return Vec::new();
        }
        let tcp = b.tcp;
        // A prober's next try: part of the incident it started.
        // (Only its latest conflicts: a prober's tries are consecutive.)
        let probing = self.by_proc.get(&p.key).and_then(|keys| {
            keys.iter().rev().take(PROBE_RECENT).copied().find(|k| {
                (k.1, k.2) == (b.netns, tcp) && probe_step(k.3, b.port) && self.incidents.is_open(k)
            })
        });
        if let Some(first) = probing {
            return self.probe_tried(i, p, b, first);
        }
        let key = (program_key(p), b.netns, tcp, b.port);
        // (Before anything is built: a local user's flood of new
        // ports opens its share a second, the rest cost O(1).)
        if self.incidents.refuses_open(&key, p.uid, ts) {
            return Vec::new();
        }
        let (mut facts, processes) = failed_bind(
            p,
            ip,
            (b.netns, tcp, b.port),
            sockets,
            i.kernel_sockets,
            i.clock,
            i.containers,
        );
        if !self.pending.contains_key(&key) && self.pending.len() >= self.cfg.max_tracked {
            // Bounded: forget conflicts whose failing processes are
            // gone (one pass a second at most: a flood of new ports costs O(1) each).
            if self.sweeps.due(ts) {
                self.pending.retain(|_, p| p.resolve_at.is_none());
                // (What was left has no deadline.)
                self.deadlines.clear();
            }
            if self.pending.len() >= self.cfg.max_tracked {
                self.incidents.overflow += 1;
                return Vec::new();
            }
        }
        let pend = self.pending.entry(key).or_insert(Pending {
            failing: Vec::new(),
            resolve_at: None,
            last: None,
            tried: Vec::new(),
            published: None,
        });
        pend.last = Some((p.clone(), ip));
        if !pend.failing.contains(&p.key) {
            let keys = self.by_proc.entry(p.key).or_default();
            // (The recent ones only: a process failing on 60,000
            // ports must not make each new one a scan of the rest;
            // an older repeat listed twice is resolved once.)
            if !keys.iter().rev().take(64).any(|k| *k == key) {
                keys.push(key);
            }
            pend.failing.push(p.key);
            if pend.failing.len() > 64 {
                pend.failing.remove(0);
            }
        }
        pend.resolve_at = None;
        facts.failing_processes = pend.failing.len();
        // The port is a container's published port a runtime holds.
        facts.published_by_container =
            published_behind(p, ip, (b.netns, tcp, b.port), sockets, i.containers);
        pend.published = facts.published_by_container.clone();
        self.incidents
            .raise(key, &format!("{key:?}"), ts, 1, &facts, processes)
            .into_iter()
            .collect()
    }

    /// A prober's next failing try: part of the incident its first opened.
    fn probe_tried(
        &mut self,
        i: &Input,
        p: &Proc,
        b: crate::world::domain::Endpoint,
        first: Key,
    ) -> Vec<Finding> {
        let ts = i.ev.header.ts_ns;
        let (ip, tcp) = (b.ip, b.tcp);
        let pend = self
            .pending
            .get_mut(&first)
            .expect("an open conflict is pending");
        if !pend.tried.contains(&b.port) {
            pend.tried.push(b.port);
        }
        let ports: Vec<u16> = std::iter::once(first.3)
            .chain(pend.tried.iter().copied())
            .collect();
        // (The incident's own facts stay those of its first port.)
        let facts = Conflict {
            transport: transport(tcp),
            address: pend.last.as_ref().map_or(ip, |(_, a)| *a),
            port: first.3,
            network_namespace: first.1,
            failing_processes: pend.failing.len(),
            published_by_container: pend.published.clone(),
            ports_tried: Some(ports.clone()),
            who: who_in(p, i.containers),
            want: addr_port(ip, b.port),
            holding: Holding::Probing(ports),
        };
        let processes = vec![Involved {
            role: "failing",
            proc: p.clone(),
            address: Some(addr_port(ip, b.port)),
            since_ns: None,
        }];
        self.incidents
            .raise(first, &format!("{first:?}"), ts, 1, &facts, processes)
            .into_iter()
            .collect()
    }

    /// A bind that succeeded: a prober found its port, or the program's
    /// conflict on this port is over.
    fn bound(&mut self, i: &Input, b: crate::world::domain::Endpoint) -> Vec<Finding> {
        let ts = i.ev.header.ts_ns;
        let mut out = Vec::new();
        let Some(p) = i.subject else {
            return Vec::new();
        };
        let tcp = b.tcp;
        // A prober found its free port: its conflicts below it are over.
        let probed: Vec<Key> = self
            .by_proc
            .get(&p.key)
            .filter(|_| b.port != 0)
            .map(|keys| {
                keys.iter()
                    .rev()
                    .take(PROBE_RECENT)
                    .copied()
                    .filter(|k| {
                        (k.1, k.2) == (b.netns, tcp)
                            && probe_step(k.3, b.port)
                            && self.incidents.is_open(k)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for k in probed {
            let tried = self.pending.remove(&k).map(|x| x.tried).unwrap_or_default();
            let tried: Vec<String> = std::iter::once(k.3)
                .chain(tried)
                .map(|t| t.to_string())
                .collect();
            out.extend(self.incidents.resolve(
                &k,
                ts,
                format_args!(
                    "{} bound {} after port(s) {} were in use: it probed for a free port and got {}",
                    who(p),
                    addr_port(b.ip, b.port),
                    tried.join(", "),
                    b.port
                ),
            ));
        }
        let key = (program_key(p), b.netns, tcp, b.port);
        if self.incidents.is_open(&key) {
            self.pending.remove(&key);
            out.extend(self.incidents.resolve(
                &key,
                ts,
                format_args!(
                    "{} bound {}: the port conflict is over",
                    who(p),
                    addr_port(b.ip, b.port)
                ),
            ));
        }
        out
    }

    /// A process ended: the conflicts it was the last failing process of
    /// resolve after the grace period.
    fn exited(&mut self, dead: &Proc, ts: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        let keys = self.by_proc.remove(&dead.key).unwrap_or_default();
        // (Only the exit of a process with conflicts looks for due ones:
        // a pass over every pending conflict is not paid by every exit.)
        let had = !keys.is_empty();
        for key in keys {
            let Some(pend) = self.pending.get_mut(&key) else {
                continue;
            };
            pend.failing.retain(|k| *k != dead.key);
            if pend.failing.is_empty() {
                let at = ts + self.grace_ns;
                pend.resolve_at = Some(at);
                self.deadlines.insert((at, key));
            }
        }
        if self.deadlines.len() > 4 * self.cfg.max_tracked.max(1) {
            // Mostly entries that moved on: rebuilt from what is pending.
            self.deadlines = self
                .pending
                .iter()
                .filter_map(|(k, p)| p.resolve_at.map(|t| (t, *k)))
                .collect();
        }
        if had {
            out.extend(self.on_tick(ts));
        }
        out
    }

    /// Whether `p`'s failing bind to `b` would neither open nor update an
    /// incident (counted nowhere: a question before a lookup).
    pub fn would_refuse(&self, p: &Proc, b: &crate::world::domain::Endpoint, now: u64) -> bool {
        let key = (program_key(p), b.netns, b.tcp, b.port);
        self.incidents.would_refuse_open(&key, p.uid, now)
    }

    pub fn on_tick(&mut self, now: u64) -> Vec<Finding> {
        let mut due: Vec<Key> = Vec::new();
        while let Some(&(t, key)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            if self
                .pending
                .get(&key)
                .is_some_and(|p| p.resolve_at == Some(t))
            {
                due.push(key);
            }
        }
        let mut out = Vec::new();
        for key in due {
            self.pending.remove(&key);
            out.extend(self.incidents.resolve(
                &key,
                now,
                format_args!(
                    "the processes that could not bind port {} exited and none retried within {}",
                    key.3,
                    dur(self.grace_ns)
                ),
            ));
        }
        out
    }

    pub fn next_deadline(&self) -> Option<u64> {
        // (Possibly one that moved on: waking for it only skips it.)
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// The kernel's socket table of `port` answered after the incident was
    /// written (slower than the lookup's wait): restate open incidents on that
    /// port whose holders differ from what they said, as an update.
    pub fn reconfirm(
        &mut self,
        port: PortKey,
        sockets: &SocketTable,
        kernel: &[KernelSocket],
        clock: &crate::kernel::clock::Clock,
        view: &dyn ContainerView,
        now: u64,
    ) -> Vec<Finding> {
        let which = |k: &Key| (k.1, k.2, k.3) == port;
        self.restate_open(&which, sockets, Some(kernel), clock, view, now, false)
    }

    /// The runtime said which host ports it publishes for a container (after
    /// the conflict was written: its answer is asynchronous): open conflicts
    /// on such a port, held by the runtime, name the container in an update.
    pub fn published(
        &mut self,
        ports: &[(bool, u16)],
        sockets: &SocketTable,
        clock: &crate::kernel::clock::Clock,
        view: &dyn ContainerView,
        now: u64,
    ) -> Vec<Finding> {
        let which = |k: &Key| ports.contains(&(k.2, k.3));
        self.restate_open(&which, sockets, None, clock, view, now, true)
    }

    /// Restate the open conflicts `which` selects from what the tables know
    /// now (only those on a runtime's published port when `published_only`).
    #[expect(
        clippy::too_many_arguments,
        reason = "the tables a restatement reads, spelled out"
    )]
    fn restate_open(
        &mut self,
        which: &dyn Fn(&Key) -> bool,
        sockets: &SocketTable,
        kernel: Option<&[KernelSocket]>,
        clock: &crate::kernel::clock::Clock,
        view: &dyn ContainerView,
        now: u64,
        published_only: bool,
    ) -> Vec<Finding> {
        let keys: Vec<Key> = self
            .pending
            .keys()
            .filter(|k| which(k) && self.incidents.is_open(k))
            .copied()
            .collect();
        let mut out = Vec::new();
        for key in keys {
            let Some(pend) = self.pending.get_mut(&key) else {
                continue;
            };
            let Some((p, ip)) = pend.last.clone() else {
                continue;
            };
            let port = (key.1, key.2, key.3);
            match published_behind(&p, ip, port, sockets, view) {
                Some(c) => pend.published = Some(c),
                None if published_only => continue,
                None => {}
            }
            let (mut facts, processes) = failed_bind(&p, ip, port, sockets, kernel, clock, view);
            facts.failing_processes = pend.failing.len();
            facts.published_by_container = pend.published.clone();
            facts.ports_tried = (!pend.tried.is_empty()).then(|| {
                std::iter::once(key.3)
                    .chain(pend.tried.iter().copied())
                    .collect()
            });
            out.extend(self.incidents.restate(&key, &facts, processes, now));
        }
        out
    }
}

/// The container a runtime holds one of `port`'s overlapping sockets for,
/// as the finding's `published_by_container`.
fn published_behind(
    p: &Proc,
    ip: IpAddr,
    port: PortKey,
    sockets: &SocketTable,
    view: &dyn ContainerView,
) -> Option<PublishedBy> {
    sockets
        .holders(port)
        .iter()
        .filter(|h| h.proc.key.tgid != p.key.tgid && overlaps(h.addr, ip))
        .find_map(|h| held_for(h, view).and_then(|f| published_details(&f)))
}

/// What a failed bind of `p` to `ip` on `port` says, and its processes,
/// with the holders the socket table knows (`kernel`: the kernel's own table
/// of that port, when it has answered). The incident's counts
/// (`failing_processes`, `ports_tried`) and `published_by_container` are
/// the caller's to fill.
fn failed_bind(
    p: &Proc,
    ip: IpAddr,
    port: PortKey,
    sockets: &SocketTable,
    kernel: Option<&[KernelSocket]>,
    clock: &crate::kernel::clock::Clock,
    view: &dyn ContainerView,
) -> (Conflict, Vec<Involved>) {
    let (netns, tcp, num) = port;
    let want = addr_port(ip, num);
    // (The failing process may hold the port itself: a second bind of a
    // port it has, by another part of the same program.)
    let holders: Vec<_> = sockets
        .holders(port)
        .iter()
        .filter(|h| overlaps(h.addr, ip))
        .collect();
    let mut processes = vec![Involved {
        role: "failing",
        proc: p.clone(),
        address: Some(want.clone()),
        since_ns: None,
    }];
    let held_by: Vec<HeldBy> = holders
        .iter()
        .map(|h| {
            let itself = h.proc.key == p.key;
            if !itself {
                processes.push(Involved {
                    role: "holder",
                    proc: h.proc.clone(),
                    address: Some(addr_port(h.addr, h.port)),
                    since_ns: h.since_ns,
                });
            }
            HeldBy {
                name: if itself {
                    "itself".into()
                } else {
                    holder_name(h, view)
                },
                addr: addr_port(h.addr, h.port),
                since: h.since_ns.map(|t| clock.hms(t)),
            }
        })
        .collect();
    let holding = if held_by.is_empty() {
        let connections = kernel
            .map(|k| {
                k.iter()
                    .filter(|s| s.tcp == tcp && s.port == num && !s.is_holder())
                    .count()
            })
            .unwrap_or(0);
        if connections > 0 {
            Holding::Lingering(connections)
        } else {
            Holding::Nobody
        }
    } else {
        Holding::Held(held_by)
    };
    let facts = Conflict {
        transport: transport(tcp),
        address: ip,
        port: num,
        network_namespace: netns,
        failing_processes: 1,
        published_by_container: None,
        ports_tried: None,
        who: who_in(p, view),
        want,
        holding,
    };
    (facts, processes)
}


#[cfg(test)]
mod words {
    use super::*;

    #[test]
    fn a_port_conflict_names_every_holder_and_when_it_bound_and_details_its_port() {
        let c = Conflict {
            transport: "tcp",
            address: "0.0.0.0".parse().unwrap(),
            port: 80,
            network_namespace: 4026531840,
            failing_processes: 1,
            published_by_container: None,
            ports_tried: None,
            who: "pid 9 (nginx)".into(),
            want: "0.0.0.0:80".into(),
            holding: Holding::Held(vec![
                HeldBy {
                    name: "pid 7 (apache2)".into(),
                    addr: "0.0.0.0:80".into(),
                    since: Some("06:15:43".into()),
                },
                HeldBy {
                    name: "pid 8 (old)".into(),
                    addr: "[::]:80".into(),
                    since: None,
                },
            ]),
        };
        let (summary, details) = crate::detect::summary::Facts::said(&c);
        assert_eq!(
            summary,
            "pid 9 (nginx) cannot bind tcp 0.0.0.0:80: held by pid 7 (apache2) on 0.0.0.0:80 since 06:15:43; pid 8 (old) on [::]:80 since before watcher started"
        );
        assert_eq!(
            serde_json::Value::Object((*details).clone()),
            serde_json::json!({"transport": "tcp", "address": "0.0.0.0", "port": 80,
                "network_namespace": 4026531840u32, "failing_processes": 1})
        );
    }
}
