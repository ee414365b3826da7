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
use std::{collections::HashMap, net::IpAddr};

use serde_json::{json, Map};

use super::{
    addr_port,
    config::ns,
    incident::Incidents,
    port_shadowed::{held_for, holder_name, published_details},
    sockets::{overlaps, Changes, SocketTable},
    summary::{HeldBy, Says},
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
    tick: |s, now, _v| PortConflict::on_tick(s, now), deadline: |s| PortConflict::next_deadline(s));

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

pub fn program_key(p: &Proc) -> u64 {
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
        changes: &Changes,
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
        let (summary, processes) = failed_bind(
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
        let mut details = Map::new();
        details.insert("transport".into(), json!(transport(tcp)));
        details.insert("address".into(), json!(ip.to_string()));
        details.insert("port".into(), json!(b.port));
        details.insert("network_namespace".into(), json!(b.netns));
        details.insert("failing_processes".into(), json!(pend.failing.len()));
        // The port is a container's published port a runtime holds.
        let behind = published_behind(p, ip, (b.netns, tcp, b.port), sockets, i.containers);
        if let Some(c) = behind {
            details.insert("published_by_container".into(), c);
        }
        self.incidents
            .raise(key, &format!("{key:?}"), ts, 1, summary, processes, details)
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
        let summary = Says::ConflictProbing {
            who: who_in(p, i.containers),
            tcp,
            addr: addr_port(ip, b.port),
            tried: ports.clone(),
        }
        .into();
        let processes = vec![Involved {
            role: "failing",
            proc: p.clone(),
            address: Some(addr_port(ip, b.port)),
            since_ns: None,
        }];
        let mut details = self
            .incidents
            .get(&first)
            .map(|x| x.details.clone())
            .unwrap_or_default();
        details.insert("ports_tried".into(), json!(ports));
        self.incidents
            .raise(
                first,
                &format!("{first:?}"),
                ts,
                1,
                summary,
                processes,
                details,
            )
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
            let says = Says::ConflictProbed {
                who: who(p),
                addr: addr_port(b.ip, b.port),
                tried: std::iter::once(k.3).chain(tried).collect(),
                got: b.port,
            };
            out.extend(self.incidents.resolve(&k, ts, says.into()));
        }
        let key = (program_key(p), b.netns, tcp, b.port);
        if self.incidents.is_open(&key) {
            self.pending.remove(&key);
            let says = Says::ConflictBound {
                who: who(p),
                addr: addr_port(b.ip, b.port),
            };
            out.extend(self.incidents.resolve(&key, ts, says.into()));
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
            let says = Says::ConflictGaveUp {
                port: key.3,
                grace_ns: self.grace_ns,
            };
            out.extend(self.incidents.resolve(&key, now, says.into()));
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
            let Some((p, ip)) = self.pending.get(&key).and_then(|x| x.last.clone()) else {
                continue;
            };
            let port = (key.1, key.2, key.3);
            match published_behind(&p, ip, port, sockets, view) {
                Some(c) => self.incidents.set_detail(&key, "published_by_container", c),
                None if published_only => continue,
                None => {}
            }
            let (summary, processes) = failed_bind(&p, ip, port, sockets, kernel, clock, view);
            out.extend(self.incidents.restate(&key, summary, processes, now));
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
) -> Option<serde_json::Value> {
    sockets
        .holders(port)
        .iter()
        .filter(|h| h.proc.key.tgid != p.key.tgid && overlaps(h.addr, ip))
        .find_map(|h| held_for(h, view).and_then(|f| published_details(&f)))
}

/// The summary and processes of a failed bind of `p` to `ip` on `port`,
/// with the holders the socket table knows (`kernel`: the kernel's own table
/// of that port, when it has answered).
fn failed_bind(
    p: &Proc,
    ip: IpAddr,
    port: PortKey,
    sockets: &SocketTable,
    kernel: Option<&[KernelSocket]>,
    clock: &crate::kernel::clock::Clock,
    view: &dyn ContainerView,
) -> (String, Vec<Involved>) {
    let (_, tcp, num) = port;
    let want = addr_port(ip, num);
    let holders: Vec<_> = sockets
        .holders(port)
        .iter()
        .filter(|h| h.proc.key.tgid != p.key.tgid && overlaps(h.addr, ip))
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
            processes.push(Involved {
                role: "holder",
                proc: h.proc.clone(),
                address: Some(addr_port(h.addr, h.port)),
                since_ns: h.since_ns,
            });
            HeldBy {
                name: holder_name(h, view),
                addr: addr_port(h.addr, h.port),
                since: h.since_ns.map(|t| clock.hms(t)),
            }
        })
        .collect();
    let who = who_in(p, view);
    let says = if held_by.is_empty() {
        let connections = kernel
            .map(|k| {
                k.iter()
                    .filter(|s| s.tcp == tcp && s.port == num && !s.is_holder())
                    .count()
            })
            .unwrap_or(0);
        if connections > 0 {
            Says::ConflictLingering {
                who,
                tcp,
                addr: want,
                connections,
            }
        } else {
            Says::ConflictNoHolder {
                who,
                tcp,
                addr: want,
            }
        }
    } else {
        Says::ConflictHeld {
            who,
            tcp,
            addr: want,
            holders: held_by,
        }
    };
    (says.into(), processes)
}

/// For summaries elsewhere: `tcp 0.0.0.0:80`.
pub fn describe(tcp: bool, ip: IpAddr, port: u16) -> String {
    format!("{} {}", transport(tcp), addr_port(ip, port))
}
