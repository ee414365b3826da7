//! `zombie`: a child stays unreaped past `max_age` (10 s). Fires at the
//! deadline, from the timer (`on_tick` at `next_deadline`), never on a sweep.
//! One incident per parent: every overdue child of it adds to the count;
//! resolves when all its overdue children are reaped. A zombie whose parent
//! exits passes to its new parent (init, a subreaper), which has `max_age`
//! from then to reap it.
use std::{cmp::Reverse, collections::BinaryHeap};

use foldhash::{HashMap, HashMapExt, HashSet};

use serde::Serialize;
use serde_json::json;

use super::{
    config::ns, dur, incident::Incidents, process, who, who_in, ContainerView, DetectConfig,
    Finding, Input, Involved, Kind, Teardown,
};
use crate::{
    world::domain::DomainEvent,
    world::proctable::{Proc, ProcKey},
};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.zombie]`
    ZombieCfg {
        /// A child unreaped this long is a finding (fires at the deadline).
        #[serde(deserialize_with = "crate::detect::config::seconds")]
        max_age_s: f64 = 10.0,
    }
);

impl Declared for Zombies {
    const NAME: &'static str = "zombie";
    const SEVERITY: &'static str = "info";
    const ADVICE: &'static str = "A child exited long ago and its parent has not reaped it. If it stays, the parent is likely stuck or buggy: look at the parent the finding names.";
    const HELD_AFTER_LOSS: bool = true;
    type Config = ZombieCfg;
    fn new(cfg: &DetectConfig) -> Self {
        Zombies::new(cfg)
    }
}

detector!(Zombies, |s, i, c| Zombies::on_event(s, i, c.teardown),
    tick: |s, now, v, procs| Zombies::on_tick(s, now, v, procs), deadline: |s| Zombies::next_deadline(s),
    wants: [Exited, Reaped]);

/// What a `zombie` finding says.
#[derive(Serialize)]
struct Overdue {
    #[serde(skip)]
    parent: String,
    parent_pid: u32,
    overdue: usize,
    #[serde(rename = "max_age_s", serialize_with = "super::summary::seconds")]
    max_age_ns: u64,
    /// How long the oldest has been a zombie (unknown for those found at start).
    #[serde(skip)]
    oldest_age_ns: Option<u64>,
    zombie_pids: Vec<u32>,
}

impl std::fmt::Display for Overdue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = match self.oldest_age_ns {
            Some(a) => format!("the oldest for {}", dur(a)),
            None => "since before watcher started".into(),
        };
        let shown: Vec<String> = self
            .zombie_pids
            .iter()
            .take(10)
            .map(u32::to_string)
            .collect();
        write!(
            f,
            "{} has left {} exited child(ren) unreaped for more than {} ({age}): zombie pids {}; the parent must wait() for them",
            self.parent,
            self.overdue,
            dur(self.max_age_ns),
            shown.join(", ")
        )
    }
}

/// An unreaped child. What a finding says of it and of its parent is read
/// from the process table when it becomes overdue (no copy of either per
/// exit: a fork loop's children are reaped long before).
struct Child {
    key: ProcKey,
    /// Its pid namespace (from its exit record).
    pidns: u32,
    /// Read at its deadline (or at start, for zombies found then).
    proc: Option<Box<Proc>>,
    parent: u32,
    parent_proc: Option<Box<Proc>>,
    deadline: u64,
    /// Exit time, when seen (not for zombies found at start).
    exited_ns: Option<u64>,
    overdue: bool,
}

/// Emptied per-parent sets kept for reuse, at most (each at most
/// [`SPARE_CAPACITY`] children's room).
const SPARE_SETS: usize = 64;
const SPARE_CAPACITY: usize = 16;

/// An emptied set small enough to keep for reuse.
fn reusable(set: &HashSet<ProcKey>) -> bool {
    set.capacity() <= SPARE_CAPACITY
}
/// Stale deadline entries allowed beyond one per live child before they are
/// all dropped at once.
const STALE_SLACK: usize = 1024;

/// Whether a deadline entry is still its child's (not reaped, not given
/// another deadline since).
fn current(children: &HashMap<ProcKey, Child>, deadline: u64, key: &ProcKey) -> bool {
    children.get(key).is_some_and(|c| c.deadline == deadline)
}

pub struct Zombies {
    pub incidents: Incidents<u32>,
    children: HashMap<ProcKey, Child>,
    /// Parent → its tracked children (no scan of every zombie per reap).
    by_parent: HashMap<u32, HashSet<ProcKey>>,
    /// Emptied sets of `by_parent`, kept for the next parent (a fork loop
    /// empties its parent's set at every reap: no allocation per child).
    spare: Vec<HashSet<ProcKey>>,
    /// Children's deadlines, earliest first. A child reaped or given a new
    /// deadline leaves its entry behind (stale: its child is gone, or has
    /// another deadline), dropped when it comes to the top or when stale
    /// entries outnumber the live ones — an insert and a pop per child
    /// instead of a B-tree's insert and remove (~5 % of a fork loop's
    /// handling).
    deadlines: BinaryHeap<Reverse<(u64, ProcKey)>>,
    max_age_ns: u64,
    cap: usize,
    pub overflow: u64,
    cfg: DetectConfig,
}

impl Zombies {
    pub fn new(cfg: &DetectConfig) -> Zombies {
        Zombies {
            incidents: Incidents::new(Kind::Zombie, cfg.update_interval_ns(), cfg.max_incidents),
            children: HashMap::new(),
            by_parent: HashMap::new(),
            spare: Vec::new(),
            deadlines: BinaryHeap::new(),
            max_age_ns: ns(cfg.zombie.max_age_s),
            cap: cfg.max_tracked,
            overflow: 0,
            cfg: cfg.clone(),
        }
    }

    /// Settings from a reloaded configuration: what comes next uses them;
    /// state and open incidents stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.incidents
            .set_limits(cfg.update_interval_ns(), cfg.max_incidents);
        self.max_age_ns = ns(cfg.zombie.max_age_s);
        self.cap = cfg.max_tracked;
        self.cfg = cfg.clone();
    }

    /// `known`: the child and its parent as they are now (zombies found
    /// at start); else they are read when the child becomes overdue.
    fn track(
        &mut self,
        p: &Proc,
        known: Option<(Proc, Option<Proc>)>,
        from: u64,
        exited_ns: Option<u64>,
    ) {
        if self.children.len() >= self.cap {
            self.overflow += 1;
            return;
        }
        let deadline = from + self.max_age_ns;
        self.deadlines.push(Reverse((deadline, p.key)));
        self.link(p.ppid, p.key);
        let (proc, parent_proc) = match known {
            Some((c, pp)) => (Some(Box::new(c)), pp.map(Box::new)),
            None => (None, None),
        };
        self.children.insert(
            p.key,
            Child {
                key: p.key,
                pidns: p.pidns,
                proc,
                parent: p.ppid,
                parent_proc,
                deadline,
                exited_ns,
                overdue: false,
            },
        );
    }

    pub fn seed(&mut self, procs: &[Proc], by_tgid: &super::ProcIndex, now: u64) {
        for z in procs.iter().filter(|p| p.exited.is_some()) {
            let parent = by_tgid.get(&z.ppid).map(|p| (*p).clone());
            // The exit time of a zombie found at start is unknown: count from now.
            self.track(z, Some((z.clone(), parent)), now, None);
        }
    }

    fn link(&mut self, parent: u32, key: ProcKey) {
        super::sweep_emptied(
            &mut self.by_parent,
            self.children.len(),
            HashSet::is_empty,
            &mut self.spare,
            SPARE_SETS,
            reusable,
        );
        let spare = &mut self.spare;
        self.by_parent
            .entry(parent)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .insert(key);
    }

    /// (Emptied, a parent's set stays for its next child — a fork loop's
    /// parent has one at a time: no set given up and taken again at each
    /// child. It leaves at the parent's exit, [`Zombies::retire`], or in a
    /// sweep, [`super::sweep_emptied`].)
    fn unlink(&mut self, parent: u32, key: ProcKey) {
        if let Some(set) = self.by_parent.get_mut(&parent) {
            set.remove(&key);
        }
    }

    /// `parent` exited: its set, emptied (its children were handed on),
    /// goes to the spares.
    fn retire(&mut self, parent: u32) {
        if self.by_parent.get(&parent).is_some_and(HashSet::is_empty) {
            if let Some(set) = self.by_parent.remove(&parent) {
                if self.spare.len() < SPARE_SETS && reusable(&set) {
                    self.spare.push(set);
                }
            }
        }
    }

    /// Drop the stale entries at the top of the deadlines (so that
    /// `next_deadline` is a live child's), and every stale one when they
    /// outnumber the live ones (the heap stays within twice the children).
    fn tidy_deadlines(&mut self) {
        while let Some(Reverse((d, k))) = self.deadlines.peek() {
            if current(&self.children, *d, k) {
                break;
            }
            self.deadlines.pop();
        }
        if self.deadlines.len() > 2 * self.children.len() + STALE_SLACK {
            let children = &self.children;
            self.deadlines
                .retain(|Reverse((d, k))| current(children, *d, k));
        }
    }

    fn overdue_of(&self, parent: u32) -> Vec<&Child> {
        let mut v: Vec<&Child> = self
            .by_parent
            .get(&parent)
            .map(|set| {
                set.iter()
                    .filter_map(|k| self.children.get(k))
                    .filter(|c| c.parent == parent && c.overdue)
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|c| c.deadline);
        v
    }

    fn raise(&mut self, parent: u32, now: u64, view: &dyn ContainerView) -> Option<Finding> {
        let overdue = self.overdue_of(parent);
        let first = overdue.first()?;
        let parent_proc = first.parent_proc.as_deref().cloned();
        if parent_proc
            .as_ref()
            .is_some_and(|p| self.cfg.allowed_program(p))
        {
            return None;
        }
        let n = overdue.len();
        let pids: Vec<u32> = overdue.iter().map(|c| c.key.tgid).collect();
        let oldest = overdue.iter().filter_map(|c| c.exited_ns).min();
        let pname = parent_proc
            .as_ref()
            .map(|p| who_in(p, view))
            .unwrap_or_else(|| format!("pid {parent}"));
        let facts = Overdue {
            parent: pname,
            parent_pid: parent,
            overdue: n,
            max_age_ns: self.max_age_ns,
            oldest_age_ns: oldest.map(|t| now.saturating_sub(t)),
            zombie_pids: pids.clone(),
        };
        let mut processes = Vec::new();
        if let Some(pp) = parent_proc {
            processes.push(Involved {
                role: "parent",
                proc: pp,
                address: None,
                since_ns: None,
            });
        }
        processes.extend(overdue.iter().take(16).map(|c| Involved {
            role: "zombie",
            proc: c
                .proc
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Proc::bare(c.key, c.parent, "?")),
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

    fn forget(&mut self, key: ProcKey, now: u64, why: &'static str) -> Option<Finding> {
        let c = self.children.remove(&key)?;
        self.unlink(c.parent, key);
        self.tidy_deadlines();
        if c.overdue && self.incidents.is_open(&c.parent) {
            let left = self.overdue_of(c.parent).len();
            if left == 0 {
                return self.incidents.resolve(
                    &c.parent,
                    now,
                    format_args!(
                        "every overdue zombie of pid {} is gone (last one {why})",
                        c.parent
                    ),
                );
            }
            let parent = c.parent;
            self.incidents.amend(&parent, |inc| {
                std::sync::Arc::make_mut(&mut inc.details).insert("overdue".into(), json!(left));
            });
        }
        None
    }

    pub fn on_event(&mut self, i: &Input, teardown: Teardown) -> Vec<Finding> {
        let mut out = Vec::new();
        let ts = i.ev.header.ts_ns;
        if let Some(ns) = teardown.ends {
            // The kernel reaps every process of a pid namespace whose init ended.
            let gone: Vec<ProcKey> = self
                .children
                .values()
                .filter(|c| c.pidns == ns)
                .map(|c| c.key)
                .collect();
            for k in gone {
                out.extend(self.forget(k, ts, "reaped by the kernel as its pid namespace ended"));
            }
        }
        match i.event {
            DomainEvent::Exited { .. } => {
                if let Some(p) = i.subject.filter(|p| p.exited.is_some()) {
                    if !self.children.contains_key(&p.key) && !teardown.during {
                        let exited = p.exited.map(|(t, _)| t).unwrap_or(ts);
                        self.track(p, None, exited, Some(exited));
                    }
                    // Its own zombies now belong to someone else.
                    for (child, new_parent) in i.reparented {
                        let old = match self.children.get(child) {
                            Some(c) => c.parent,
                            None => continue,
                        };
                        self.unlink(old, *child);
                        self.link(*new_parent, *child);
                        // The new parent (init, a subreaper) learns of it
                        // now: it has `max_age` from now to reap it.
                        let max_age = self.max_age_ns;
                        let Some(c) = self.children.get_mut(child) else {
                            continue;
                        };
                        c.parent = *new_parent;
                        c.parent_proc = None;
                        c.overdue = false;
                        let old_deadline = c.deadline;
                        c.deadline = old_deadline.max(ts + max_age);
                        if c.deadline != old_deadline {
                            // (The old entry is stale now.)
                            self.deadlines.push(Reverse((c.deadline, *child)));
                        }
                    }
                    self.tidy_deadlines();
                    self.retire(p.key.tgid);
                    if self.incidents.is_open(&p.key.tgid) {
                        out.extend(
                            self.incidents.resolve(
                                &p.key.tgid,
                                ts,
                                format_args!(
                                    "{} exited; its zombies passed to their new parent",
                                    who(p)
                                ),
                            ),
                        );
                    }
                }
            }
            DomainEvent::Reaped { .. } => {
                if let Some(c) = i.subject {
                    out.extend(self.forget(c.key, ts, "reaped"));
                }
            }
            _ => {}
        }
        out
    }

    pub fn on_tick(
        &mut self,
        now: u64,
        view: &dyn ContainerView,
        procs: &dyn Fn(u32) -> Option<Proc>,
    ) -> Vec<Finding> {
        let mut parents = Vec::new();
        while let Some(&Reverse((deadline, key))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(c) = self
                .children
                .get_mut(&key)
                .filter(|c| c.deadline == deadline)
            {
                c.overdue = true;
                // What the finding says of it and its parent, as they are now
                // (a zombie stays in the table until reaped; one evicted from
                // a full table is named by its pid).
                if c.proc.is_none() {
                    c.proc = process(procs, key).map(Box::new);
                }
                if c.parent_proc.is_none() {
                    c.parent_proc = procs(c.parent).map(Box::new);
                }
                if !parents.contains(&c.parent) {
                    parents.push(c.parent);
                }
            }
        }
        self.tidy_deadlines();
        parents
            .into_iter()
            .filter_map(|p| self.raise(p, now, view))
            .collect()
    }

    /// Parents with a set of children, emptied ones included (tests).
    #[cfg(test)]
    pub(crate) fn parent_sets(&self) -> usize {
        self.by_parent.len()
    }

    /// Whether `parent` has a set, emptied or not (tests).
    #[cfg(test)]
    pub(crate) fn has_set(&self, parent: u32) -> bool {
        self.by_parent.contains_key(&parent)
    }

    /// Entries in the deadline heap, stale ones included (tests).
    #[cfg(test)]
    pub(crate) fn deadline_entries(&self) -> usize {
        self.deadlines.len()
    }

    pub fn next_deadline(&self) -> Option<u64> {
        // (A stale entry is never left on top: `tidy_deadlines`.)
        self.deadlines.peek().map(|Reverse((d, _))| *d)
    }
}
