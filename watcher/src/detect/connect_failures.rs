//! `connect_failures`: connects to one destination fail (refused, timed out,
//! unreachable) `failures` (10) times within `window_s` (10 s), from one or
//! many processes. A TCP connect's outcome is its SYN_SENT → CLOSE transition
//! (blocking and non-blocking alike, counted once per socket); a connect that
//! fails before sending (unreachable network) counts from its syscall result.
//! Lists the clients, and notes when the destination port is shadowed.
//! Resolves when a connect to it succeeds.
use crate::kernel::abi::{ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT};
use std::{collections::VecDeque, net::IpAddr};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use serde::Serialize;

use super::{
    addr_port, config::ns, incident::Incidents, sockets::normalize, summary::Facts, who,
    DetectConfig, Finding,
    Input, Involved, Kind,
};
use crate::{
    kernel::names::errno_name,
    world::domain::{ConnectOutcome, DomainEvent},
    world::proctable::Proc,
};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.connect_failures]`
    ConnectFailuresCfg {
        /// Failed connects to one destination within `window_s` that open the finding.
        #[serde(deserialize_with = "crate::detect::config::at_least_1")]
        failures: u32 = 10,
        #[serde(deserialize_with = "crate::detect::config::seconds")]
        window_s: f64 = 10.0,
    }
);

impl Declared for ConnectFailures {
    const NAME: &'static str = "connect_failures";
    const SEVERITY: &'static str = "warning";
    const ADVICE: &'static str = "Connections to a dependency keep failing: it is down, not listening, or unreachable from this host or container. The finding names the destination and the clients.";
    type Config = ConnectFailuresCfg;
    fn new(cfg: &DetectConfig) -> Self {
        ConnectFailures::new(cfg)
    }
}

detector!(ConnectFailures, |s, i, c| ConnectFailures::on_event(s, i, c.shadowed),
    tick: |s, now, _v| ConnectFailures::on_tick(s, now), deadline: |s| ConnectFailures::next_deadline(s),
    wants: [Connect]);

/// What a `connect_failures` finding says.
#[derive(Serialize)]
struct Failing {
    destination: String,
    failures_in_window: usize,
    window_s: f64,
    last_error: String,
    /// Every client's pid (the last 32).
    clients: Vec<u32>,
    /// The latest five clients, named.
    #[serde(skip)]
    named: Vec<String>,
    /// Whether the destination port is shadowed.
    #[serde(skip)]
    note: Option<String>,
}

impl std::fmt::Display for Failing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connects to {} failed within {} s ({}) from {} client process(es): {}",
            self.failures_in_window,
            self.destination,
            self.window_s as u64,
            self.last_error,
            self.clients.len(),
            self.named.join(", ")
        )?;
        if let Some(note) = &self.note {
            write!(f, "; note: {note}")?;
        }
        Ok(())
    }
}

/// Errors of a connect that never reached SYN_SENT (nothing else reports them).
/// EADDRNOTAVAIL is not the destination's: no local port was free (`ports_exhausted`).
const EARLY_FAILURES: [i32; 2] = [ENETUNREACH, EHOSTUNREACH];
const REFUSED_OR_TIMEOUT: [i32; 2] = [ECONNREFUSED, ETIMEDOUT];

/// (network namespace, destination address, port): one destination as the clients see it.
type Key = (u32, IpAddr, u16);

#[derive(Default)]
struct Dest {
    fails: VecDeque<u64>,
    clients: Vec<Proc>,
    /// The last failure's errno (`None`: a handshake that failed, its
    /// errno not yet known); a name only when a record says it.
    last_error: Option<i32>,
    last: u64,
}

/// What a record says of a failure's error.
fn error_text(errno: Option<i32>) -> String {
    match errno {
        Some(e) => errno_name(e),
        None => "refused or timed out".into(),
    }
}

pub struct ConnectFailures {
    pub incidents: Incidents<Key>,
    dests: HashMap<Key, Dest>,
    /// Sockets whose failure was counted from the state change (so the syscall's error is not counted twice).
    counted: HashSet<u64>,
    window_ns: u64,
    threshold: usize,
    cfg: DetectConfig,
    pub overflow: u64,
    sweeps: crate::detect::room::Sweeps,
}

impl ConnectFailures {
    pub fn new(cfg: &DetectConfig) -> ConnectFailures {
        ConnectFailures {
            incidents: Incidents::new(
                Kind::ConnectFailures,
                cfg.update_interval_ns(),
                cfg.max_incidents,
            ),
            dests: HashMap::new(),
            counted: HashSet::new(),
            window_ns: ns(cfg.connect_failures.window_s),
            threshold: cfg.connect_failures.failures as usize,
            cfg: cfg.clone(),
            overflow: 0,
            sweeps: Default::default(),
        }
    }

    /// Settings from a reloaded configuration: what comes next uses them;
    /// state and open incidents stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.incidents
            .set_limits(cfg.update_interval_ns(), cfg.max_incidents);
        self.window_ns = ns(cfg.connect_failures.window_s);
        self.threshold = cfg.connect_failures.failures as usize;
        self.cfg = cfg.clone();
    }

    fn failure(
        &mut self,
        key: Key,
        client: Option<&Proc>,
        error: Option<i32>,
        ts: u64,
        shadowed: &dyn Fn(u32, u16) -> Option<String>,
    ) -> Option<Finding> {
        if self.cfg.allowed_port(key.2) || client.is_some_and(|c| self.cfg.allowed_program(c)) {
            return None;
        }
        if !self.dests.contains_key(&key) && self.dests.len() >= self.cfg.max_tracked {
            // Make room: forget destinations with no failure in the window.
            // (One pass a second at most: a flood of new destinations costs O(1) each.)
            if self.sweeps.due(ts) {
                let w = self.window_ns;
                self.dests.retain(|_, d| ts.saturating_sub(d.last) < w);
            }
            if self.dests.len() >= self.cfg.max_tracked {
                self.overflow += 1;
                return None;
            }
        }
        let d = self.dests.entry(key).or_default();
        d.fails.push_back(ts);
        d.last = ts;
        d.last_error = error;
        while d
            .fails
            .front()
            .is_some_and(|t| ts.saturating_sub(*t) > self.window_ns)
        {
            d.fails.pop_front();
        }
        if let Some(c) = client {
            if !d.clients.iter().any(|x| x.key == c.key) {
                d.clients.push(c.clone());
                if d.clients.len() > 32 {
                    d.clients.remove(0);
                }
            }
        }
        let n = d.fails.len();
        let open = self.incidents.get(&key).map(|inc| inc.count);
        match open {
            None if n < self.threshold => return None,
            // A failure of an open incident between its updates is counted,
            // nothing built (a flood of refused connects costs O(1) each).
            Some(count) if self.incidents.count_until_due(&key, ts, count + 1) => return None,
            // (The user an open is counted against: its first process, the latest client.)
            None if self.incidents.refuses_open(
                &key,
                d.clients.last().map(|c| c.uid).unwrap_or(u32::MAX),
                ts,
            ) =>
            {
                return None
            }
            _ => {}
        }
        let (facts, processes) = Self::said(key, d, self.window_ns, shadowed);
        self.incidents
            .raise(key, &facts.destination, ts, 1, &facts, processes)
    }

    /// What a record of destination `key` says (its facts and clients).
    fn said(
        key: Key,
        d: &Dest,
        window_ns: u64,
        shadowed: &dyn Fn(u32, u16) -> Option<String>,
    ) -> (Failing, Vec<Involved>) {
        let facts = Failing {
            destination: addr_port(key.1, key.2),
            failures_in_window: d.fails.len(),
            window_s: window_ns as f64 / 1e9,
            last_error: error_text(d.last_error),
            clients: d.clients.iter().map(|c| c.key.tgid).collect(),
            named: d.clients.iter().rev().take(5).map(who).collect(),
            note: shadowed(key.0, key.2),
        };
        let processes = d
            .clients
            .iter()
            .rev()
            .take(16)
            .map(|c| Involved {
                role: "client",
                proc: c.clone(),
                address: None,
                since_ns: None,
            })
            .collect();
        (facts, processes)
    }

    fn success(
        &mut self,
        key: Key,
        client: Option<&Proc>,
        ts: u64,
        shadowed: &dyn Fn(u32, u16) -> Option<String>,
    ) -> Option<Finding> {
        let d = self.dests.remove(&key);
        // (Most connects succeed with nothing open: nothing is built for them.)
        if !self.incidents.is_open(&key) {
            return None;
        }
        // The resolution carries what the incident says at its last failure
        // (failures counted since its last update were not built then).
        if let Some(d) = d {
            let (facts, processes) = Self::said(key, &d, self.window_ns, shadowed);
            let (summary, details) = facts.said();
            self.incidents.amend(&key, |inc| {
                inc.summary = summary;
                inc.processes = processes;
                inc.details = details;
            });
        }
        let by = client.map(who).unwrap_or_else(|| "a client".into());
        self.incidents.resolve(
            &key,
            ts,
            format_args!(
                "{by} connected to {}: it is reachable again",
                addr_port(key.1, key.2)
            ),
        )
    }

    pub fn on_event(
        &mut self,
        i: &Input,
        shadowed: &dyn Fn(u32, u16) -> Option<String>,
    ) -> Vec<Finding> {
        let ts = i.ev.header.ts_ns;
        let DomainEvent::Connect {
            dest,
            sock,
            outcome,
            syscall,
        } = *i.event
        else {
            return Vec::new();
        };
        if !dest.tcp {
            return Vec::new();
        }
        let key = (dest.netns, normalize(dest.ip), dest.port);
        // The syscall's record is in the connecting process; a state change
        // may run in another task's context (its socket's owner is known).
        let who = if syscall { i.subject } else { i.owner };
        match outcome {
            ConnectOutcome::Connected => self.success(key, who, ts, shadowed).into_iter().collect(),
            ConnectOutcome::HandshakeFailed => {
                if self.counted.len() > 65_536 {
                    self.counted.clear();
                }
                self.counted.insert(sock);
                self.failure(key, who, None, ts, shadowed)
                    .into_iter()
                    .collect()
            }
            ConnectOutcome::InProgress => {
                self.counted.remove(&sock);
                Vec::new()
            }
            ConnectOutcome::Error(errno) => {
                let counted = self.counted.remove(&sock);
                if EARLY_FAILURES.contains(&errno)
                    || (REFUSED_OR_TIMEOUT.contains(&errno) && !counted)
                {
                    return self
                        .failure(key, who, Some(errno), ts, shadowed)
                        .into_iter()
                        .collect();
                }
                if counted {
                    // Refine the error text of a failure counted from the state change.
                    if let Some(d) = self.dests.get_mut(&key) {
                        d.last_error = Some(errno);
                    }
                }
                Vec::new()
            }
        }
    }

    pub fn on_tick(&mut self, _now: u64) -> Vec<Finding> {
        Vec::new()
    }

    pub fn next_deadline(&self) -> Option<u64> {
        None
    }
}
