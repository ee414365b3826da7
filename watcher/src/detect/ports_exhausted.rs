//! `ports_exhausted`: no free local port in a network namespace. A bind to
//! port 0 (any free port) failing with EADDRINUSE, or a connect failing with
//! EADDRNOTAVAIL, means the kernel found no ephemeral port: the incident opens
//! at once for that namespace, naming the failing process. What uses the
//! ports — the ephemeral range of that namespace, how many are in use, the
//! top holders by process and by destination with their TIME_WAIT counts —
//! comes from one sock_diag summary of the namespace, asked on the worker
//! (at most every 10 s per namespace, never on this path) and added as an
//! update when it answers. Resolves when a later bind to port 0 or connect in
//! that namespace gets a port.
use crate::kernel::abi::{EADDRNOTAVAIL, ECONNREFUSED, ETIMEDOUT};
use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{
    addr_port,
    incident::Incidents,
    summary::{PortGot, PortNeed, PortUse, Says},
    who, who_in, ContainerView, DetectConfig, Finding, Input, Involved, Kind,
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
});

/// A namespace's port table is summarized at most this often while it fails.
const SUMMARY_EVERY_NS: u64 = 10_000_000_000;

struct Ns {
    /// The latest failing processes (distinct, newest last).
    failing: Vec<Proc>,
    /// The latest failure, in words.
    what: PortNeed,
    summary: Option<PortSummary>,
    asked_ns: Option<u64>,
}

pub struct PortsExhausted {
    pub incidents: Incidents<u32>,
    open: HashMap<u32, Ns>,
    /// Summaries the engine is to ask for: (network namespace, a process in it).
    pub asks: Vec<(u32, u32)>,
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

    fn describe(
        &self,
        netns: u32,
        view: &dyn ContainerView,
    ) -> (String, Vec<Involved>, Map<String, Value>) {
        let ns = &self.open[&netns];
        let p = ns.failing.last().expect("a failure opened it");
        let mut details = Map::new();
        details.insert("network_namespace".into(), json!(netns));
        details.insert("failure".into(), json!(ns.what.to_string()));
        let usage = ns.summary.as_ref().map(|s| {
            if let Some((lo, hi)) = s.range {
                let size = (hi as usize + 1).saturating_sub(lo as usize);
                details.insert("ephemeral_range".into(), json!({"low": lo, "high": hi, "size": size}));
            }
            details.insert("ports_in_use".into(), json!(s.ports_in_use));
            details.insert("sockets".into(), json!(s.sockets));
            details.insert("time_wait".into(), json!(s.time_wait));
            details.insert(
                "top_processes".into(),
                json!(s.by_process.iter().map(|(pid, cmd, n)| json!({"pid": pid, "command_line": cmd, "sockets": n})).collect::<Vec<_>>()),
            );
            details.insert(
                "top_destinations".into(),
                json!(s
                    .by_destination
                    .iter()
                    .map(|((ip, port), n, tw)| json!({"address": addr_port(*ip, *port), "sockets": n, "time_wait": tw}))
                    .collect::<Vec<_>>()),
            );
            PortUse {
                range: s.range,
                in_use: s.ports_in_use,
                sockets: s.sockets,
                time_wait: s.time_wait,
                top_processes: s.by_process.clone(),
                top_destinations: s.by_destination.iter().map(|((ip, port), n, tw)| (addr_port(*ip, *port), *n, *tw)).collect(),
            }
        });
        let summary = Says::NoFreePort {
            netns,
            what: ns.what.clone(),
            who: who_in(p, view),
            usage,
        }
        .into();
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
        (summary, processes, details)
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
        });
        ns.failing.retain(|q| q.key != p.key);
        ns.failing.push(p.clone());
        if ns.failing.len() > 8 {
            ns.failing.remove(0);
        }
        ns.what = what;
        if ns
            .asked_ns
            .is_none_or(|t| ts.saturating_sub(t) >= SUMMARY_EVERY_NS)
        {
            ns.asked_ns = Some(ts);
            self.asks.push((netns, p.key.tgid));
        }
        let (summary, processes, details) = self.describe(netns, view);
        self.incidents.raise(
            netns,
            &format!("netns {netns}"),
            ts,
            1,
            summary,
            processes,
            details,
        )
    }

    fn got_port(&mut self, netns: u32, p: &Proc, how: PortGot, ts: u64) -> Option<Finding> {
        self.open.remove(&netns)?;
        self.incidents.resolve(
            &netns,
            ts,
            Says::PortsFree {
                who: who(p),
                how,
                netns,
            }
            .into(),
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
        self.open.get_mut(&netns)?.summary = Some(s);
        let (summary, processes, details) = self.describe(netns, view);
        self.incidents.amend(&netns, |inc| inc.details = details);
        self.incidents.restate(&netns, summary, processes, now)
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
