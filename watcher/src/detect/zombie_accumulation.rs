//! `zombie_accumulation`: a parent's count of exited-but-unreaped children
//! reaches the threshold (5); fires on the exit that crosses it. A parent that
//! is visibly reaping — blocked in wait4/waitid when the child exited (the
//! kernel side tells), or it reaped a child within `reaping_grace_s` — is
//! given that grace first: a master whose dozen workers end at once drains
//! them in milliseconds. If the count is still at the threshold when the grace
//! ends, the finding opens then (from the timer). Resolves when the count
//! drops below it (reaps), or when the parent itself exits (its zombies pass
//! to a subreaper or init, which are counted from then on, after the grace:
//! an inheriting reaper drains them at its SIGCHLD).
//!
//! When the init of a nested pid namespace (a container's) ends, the kernel
//! kills every process of that namespace and reaps them itself, without a
//! wait syscall: none of them is counted, and zombies already counted there
//! are dropped.
use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt, HashSet};

use serde::Serialize;

use super::{
    incident::Incidents,
    members::{Member, Members},
    process,
    who, who_in, ContainerView, DetectConfig,
    Finding, Input, Involved, Kind, Teardown,
};
use crate::{
    world::domain::DomainEvent,
    world::proctable::{Proc, ProcKey},
};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.zombie_accumulation]`
    ZombieAccumulationCfg {
        /// Unreaped children of one parent that open the finding.
        #[serde(deserialize_with = "crate::detect::config::at_least_1")]
        threshold: u32 = 5,
        /// A parent that is reaping — inside wait() when its child exits, or reaped one
        /// within this long — gets this long to bring the count back below the threshold
        /// (a master whose workers all exit at once) before the finding opens.
        #[serde(deserialize_with = "crate::detect::config::seconds_or_zero")]
        reaping_grace_s: f64 = 1.0,
    }
);

impl Declared for ZombieAccumulation {
    const NAME: &'static str = "zombie_accumulation";
    const SEVERITY: &'static str = "warning";
    const ADVICE: &'static str = "A parent is not reaping its exited children: its zombies fill the process table. Restart or fix the parent (it must wait() for its children); killing the zombies does nothing.";
    const HELD_AFTER_LOSS: bool = true;
    type Config = ZombieAccumulationCfg;
    fn new(cfg: &DetectConfig) -> Self {
        ZombieAccumulation::new(cfg)
    }
}

detector!(ZombieAccumulation, |s, i, c| ZombieAccumulation::on_event(s, i, c.teardown),
    tick: |s, now, v, procs| ZombieAccumulation::on_tick(s, now, v, procs), deadline: |s| ZombieAccumulation::next_deadline(s),
    wants: [Exited, Reaped]);

/// What a `zombie_accumulation` finding says.
#[derive(Serialize)]
struct Accumulating {
    #[serde(skip)]
    parent: String,
    parent_pid: u32,
    unreaped: usize,
    threshold: usize,
    zombie_pids: Vec<u32>,
}

impl std::fmt::Display for Accumulating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} has {} exited children it has not reaped (zombies, threshold {}); it must wait() for them",
            self.parent, self.unreaped, self.threshold
        )
    }
}

/// An unreaped child as its parent's list keeps it (what a record says of
/// it is read from the process table when one is written: no copy of its
/// `Proc` per exit).
#[derive(Clone, Copy)]
struct Zombie {
    key: ProcKey,
    /// Its pid namespace (from its exit record).
    pidns: u32,
    exited_ns: Option<u64>,
}

impl Zombie {
    fn of(p: &Proc) -> Zombie {
        Zombie {
            key: p.key,
            pidns: p.pidns,
            exited_ns: p.exited.map(|(t, _)| t),
        }
    }
}

impl Member for Zombie {
    fn key(&self) -> ProcKey {
        self.key
    }
}

/// The process table's lookup.
type Procs<'a> = &'a dyn Fn(u32) -> Option<Proc>;

pub struct ZombieAccumulation {
    pub incidents: Incidents<u32>,
    /// Unreaped children → their parent's tgid.
    zombies: HashMap<ProcKey, u32>,
    /// Parent tgid → its unreaped children.
    per_parent: HashMap<u32, Members<Zombie>>,
    threshold: usize,
    cap: usize,
    /// Zombies not tracked because the table was full.
    pub overflow: u64,
    cfg: DetectConfig,
    grace_ns: u64,
    /// Parent → when it last reaped a child.
    last_reap: HashMap<u32, u64>,
    /// Deferred checks: (when, parent).
    checks: BTreeSet<(u64, u32)>,
    parents: HashMap<u32, Option<Proc>>,
    /// Emptied lists kept for the next parent (a fork loop's child makes
    /// its parent a list and its reap empties it: a new one each time was a
    /// ~2 KB allocation per child, the largest of a fork loop).
    spare: Vec<Members<Zombie>>,
}

/// At most this many emptied lists are kept.
const SPARE_LISTS: usize = 16;

impl ZombieAccumulation {
    pub fn new(cfg: &DetectConfig) -> ZombieAccumulation {
        ZombieAccumulation {
            incidents: Incidents::new(
                Kind::ZombieAccumulation,
                cfg.update_interval_ns(),
                cfg.max_incidents,
            ),
            zombies: HashMap::new(),
            per_parent: HashMap::new(),
            spare: Vec::new(),
            threshold: cfg.zombie_accumulation.threshold as usize,
            cap: cfg.max_tracked,
            overflow: 0,
            cfg: cfg.clone(),
            grace_ns: super::config::ns(cfg.zombie_accumulation.reaping_grace_s),
            last_reap: HashMap::new(),
            checks: BTreeSet::new(),
            parents: HashMap::new(),
        }
    }

    /// Settings from a reloaded configuration: what comes next uses them;
    /// state and open incidents stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.incidents
            .set_limits(cfg.update_interval_ns(), cfg.max_incidents);
        self.threshold = cfg.zombie_accumulation.threshold as usize;
        self.cap = cfg.max_tracked;
        self.grace_ns = super::config::ns(cfg.zombie_accumulation.reaping_grace_s);
        self.cfg = cfg.clone();
    }

    /// Whether `parent` is reaping at `now`: in wait() at the exit, or reaped recently.
    fn reaping(&self, parent: u32, waiting: bool, now: u64) -> bool {
        waiting
            || self
                .last_reap
                .get(&parent)
                .is_some_and(|t| now.saturating_sub(*t) < self.grace_ns)
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        child: Zombie,
        parent: u32,
        parent_proc: Option<&Proc>,
        now: u64,
        waiting: bool,
        view: &dyn ContainerView,
        procs: Procs,
    ) -> Option<Finding> {
        if self.zombies.len() >= self.cap {
            self.overflow += 1;
            return None;
        }
        self.zombies.insert(child.key, parent);
        super::sweep_emptied(
            &mut self.per_parent,
            self.zombies.len(),
            Members::is_empty,
            &mut self.spare,
            SPARE_LISTS,
            |_| true,
        );
        let spare = &mut self.spare;
        let list = self
            .per_parent
            .entry(parent)
            .or_insert_with(|| spare.pop().unwrap_or_default());
        list.push(child);
        let n = list.len();
        if n < self.threshold {
            return None;
        }
        if !self.incidents.is_open(&parent)
            && self.grace_ns > 0
            && self.reaping(parent, waiting, now)
        {
            // Give a reaping parent its grace; look again when it ends.
            self.parents.insert(parent, parent_proc.cloned());
            self.checks.insert((now + self.grace_ns, parent));
            return None;
        }
        self.report(parent, parent_proc, now, view, procs)
    }

    fn report(
        &mut self,
        parent: u32,
        parent_proc: Option<&Proc>,
        now: u64,
        view: &dyn ContainerView,
        procs: Procs,
    ) -> Option<Finding> {
        let list = self.per_parent.get(&parent)?;
        let n = list.len();
        if n < self.threshold {
            return None;
        }
        if self.incidents.count_until_due(&parent, now, n as u64) {
            return None;
        }
        let pids: Vec<u32> = list.iter().map(|c| c.key.tgid).collect();
        let pname = parent_proc
            .map(|p| who_in(p, view))
            .unwrap_or_else(|| format!("pid {parent}"));
        if parent_proc.is_some_and(|p| self.cfg.allowed_program(p)) {
            return None;
        }
        let facts = Accumulating {
            parent: pname,
            parent_pid: parent,
            unreaped: n,
            threshold: self.threshold,
            zombie_pids: pids.clone(),
        };
        let mut processes: Vec<Involved> = Vec::new();
        if let Some(pp) = parent_proc {
            processes.push(Involved {
                role: "parent",
                proc: pp.clone(),
                address: None,
                since_ns: None,
            });
        }
        processes.extend(list.iter().rev().take(16).map(|c| Involved {
            role: "zombie",
            // (A zombie stays in the table until reaped; one evicted from a
            // full table is named by its pid.)
            proc: process(procs, c.key).unwrap_or_else(|| Proc::bare(c.key, parent, "?")),
            address: None,
            since_ns: c.exited_ns,
        }));
        let prev = self.incidents.get(&parent).map(|i| i.count).unwrap_or(0);
        self.incidents.raise_counting(
            parent,
            &parent.to_string(),
            now,
            (n as u64).saturating_sub(prev),
            &facts,
            processes,
            pids,
        )
    }

    /// `parent` has no list any more; an empty one is kept for reuse.
    fn retire(&mut self, parent: u32) {
        if let Some(list) = self.per_parent.remove(&parent) {
            if list.is_empty() && self.spare.len() < SPARE_LISTS {
                self.spare.push(list);
            }
        }
    }

    fn remove(&mut self, child: ProcKey, now: u64, why: &'static str) -> Option<Finding> {
        let parent = self.zombies.remove(&child)?;
        let list = self.per_parent.get_mut(&parent)?;
        list.remove(&child);
        let n = list.len();
        // (Emptied, the list stays for the parent's next zombie — a fork
        // loop's parent has one at a time: no list given up and taken again
        // at each child. It leaves at the parent's exit, `retire`, or in a
        // sweep, `sweep_emptied`.)
        if n < self.threshold && self.incidents.is_open(&parent) {
            return self.incidents.resolve(
                &parent,
                now,
                format_args!(
                    "pid {parent} is down to {n} unreaped children ({why}), below the threshold of {}",
                    self.threshold
                ),
            );
        }
        None
    }

    /// Zombies that exist when watcher starts.
    pub fn seed(&mut self, procs: &[Proc], by_tgid: &super::ProcIndex, now: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        for z in procs.iter().filter(|p| p.exited.is_some() && p.ppid != 0) {
            let parent = by_tgid.get(&z.ppid).copied();
            let procs = |t: u32| by_tgid.get(&t).map(|p| (*p).clone());
            out.extend(self.add(
                Zombie::of(z),
                z.ppid,
                parent,
                now,
                false,
                &super::NoContainers,
                &procs,
            ));
        }
        out
    }

    /// The kernel reaps every process of pid namespace `ns`: forget its
    /// zombies, and end the incidents of parents left below the threshold.
    fn namespace_ended(&mut self, ns: u32, now: u64) -> Vec<Finding> {
        let mut parents: Vec<(u32, usize)> = Vec::new();
        for (parent, list) in self.per_parent.iter_mut() {
            let before = list.len();
            list.retain(|c| c.pidns != ns);
            if list.len() != before {
                parents.push((*parent, before - list.len()));
            }
        }
        let mut out = Vec::new();
        for (parent, gone) in parents {
            let left = self.per_parent.get(&parent).map(Members::len).unwrap_or(0);
            if left == 0 {
                self.retire(parent);
            }
            if left < self.threshold && self.incidents.is_open(&parent) {
                out.extend(
                    self.incidents.resolve(
                        &parent,
                        now,
                        format_args!(
                            "pid {parent}'s pid namespace ended: the kernel reaped its {gone} zombie(s) ({left} left)"
                        ),
                    ),
                );
            }
        }
        let live: HashSet<ProcKey> = self
            .per_parent
            .values()
            .flat_map(|m| m.iter())
            .map(|c| c.key)
            .collect();
        self.zombies.retain(|k, _| live.contains(k));
        out
    }

    pub fn on_event(&mut self, i: &Input, teardown: Teardown) -> Vec<Finding> {
        let mut out = Vec::new();
        let ts = i.ev.header.ts_ns;
        if let Some(ns) = teardown.ends {
            out.extend(self.namespace_ended(ns, ts));
        }
        match *i.event {
            DomainEvent::Exited { parent_waiting, .. } => {
                let Some(p) = i.subject.filter(|p| p.exited.is_some()) else {
                    return out;
                };
                if !self.zombies.contains_key(&p.key) && !teardown.during {
                    out.extend(self.add(
                        Zombie::of(p),
                        p.ppid,
                        i.parent,
                        ts,
                        parent_waiting,
                        i.containers,
                        i.procs,
                    ));
                }
                // A parent that exits hands its zombies on.
                let moved: Vec<(ProcKey, u32)> = i
                    .reparented
                    .iter()
                    .filter(|(k, _)| self.zombies.contains_key(k))
                    .copied()
                    .collect();
                for (child, new_parent) in moved {
                    let Some(c) = self
                        .per_parent
                        .get(&p.key.tgid)
                        .and_then(|l| l.get(&child).copied())
                    else {
                        continue;
                    };
                    self.zombies.remove(&child);
                    if let Some(l) = self.per_parent.get_mut(&p.key.tgid) {
                        l.remove(&child);
                    }
                    let np = (i.procs)(new_parent);
                    // The new parent (init, a subreaper) learns of them from
                    // its SIGCHLD now: it is given the reaping grace, as a
                    // parent in wait() is, before they count against it.
                    out.extend(self.add(
                        c,
                        new_parent,
                        np.as_ref(),
                        ts,
                        true,
                        i.containers,
                        i.procs,
                    ));
                }
                if self.incidents.is_open(&p.key.tgid) {
                    let why = if teardown.ends.is_some() {
                        "it was its pid namespace's init: the kernel reaps its children"
                    } else {
                        "its unreaped children passed to their new parent"
                    };
                    out.extend(self.incidents.resolve(
                        &p.key.tgid,
                        ts,
                        format_args!("{} exited; {why}", who(p)),
                    ));
                }
                self.retire(p.key.tgid);
            }
            DomainEvent::Reaped { .. } => {
                // The reaper: the kernel's word, else (a reap only the
                // child's release told of: `sched_process_free`) the parent
                // the zombie was counted against — its wait, or the kernel
                // for it (SIGCHLD ignored), took the child. Either way that
                // parent is reaping and gets the grace.
                let reaper = i
                    .parent
                    .map(|r| r.key.tgid)
                    .or_else(|| i.subject.and_then(|c| self.zombies.get(&c.key).copied()));
                if let Some(reaper) = reaper {
                    if self.last_reap.len() >= self.cap {
                        let g = self.grace_ns;
                        self.last_reap.retain(|_, t| ts.saturating_sub(*t) < g);
                    }
                    if self.last_reap.len() < self.cap {
                        self.last_reap.insert(reaper, ts);
                    }
                }
                if let Some(c) = i.subject {
                    out.extend(self.remove(c.key, ts, "reaped"));
                }
            }
            _ => {}
        }
        out
    }
}

impl ZombieAccumulation {
    /// Parents with a list of zombies, emptied ones included (tests).
    #[cfg(test)]
    pub(crate) fn parent_lists(&self) -> usize {
        self.per_parent.len()
    }

    /// Whether `parent` has a list, emptied or not (tests).
    #[cfg(test)]
    pub(crate) fn has_list(&self, parent: u32) -> bool {
        self.per_parent.contains_key(&parent)
    }

    /// Deferred checks due at `now`.
    pub fn on_tick(&mut self, now: u64, view: &dyn ContainerView, procs: Procs) -> Vec<Finding> {
        let mut out = Vec::new();
        while let Some(&(t, parent)) = self.checks.iter().next() {
            if t > now {
                break;
            }
            self.checks.remove(&(t, parent));
            let pp = self.parents.remove(&parent).flatten();
            if !self.incidents.is_open(&parent) {
                out.extend(self.report(parent, pp.as_ref(), now, view, procs));
            }
        }
        out
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.checks.iter().next().map(|(t, _)| *t)
    }
}
