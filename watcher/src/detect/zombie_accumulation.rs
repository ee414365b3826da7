//! `zombie_accumulation`: a parent's count of exited-but-unreaped children
//! reaches the threshold (5); fires on the exit that crosses it. Resolves when
//! the count drops below it (reaps), or when the parent itself exits (its
//! zombies pass to a subreaper or init, which are counted from then on).
use std::collections::HashMap;

use serde_json::{json, Map};

use super::{incident::Incidents, who, DetectConfig, Finding, Input, Involved, Kind};
use crate::{
    decode::Payload,
    proctable::{Proc, ProcKey},
};

pub struct ZombieAccumulation {
    pub incidents: Incidents<u32>,
    /// Unreaped children → their parent's tgid.
    zombies: HashMap<ProcKey, u32>,
    /// Parent tgid → its unreaped children.
    per_parent: HashMap<u32, Vec<Proc>>,
    threshold: usize,
    cap: usize,
    /// Zombies not tracked because the table was full.
    pub overflow: u64,
    cfg: DetectConfig,
}

impl ZombieAccumulation {
    pub fn new(cfg: &DetectConfig) -> ZombieAccumulation {
        ZombieAccumulation {
            incidents: Incidents::new(Kind::ZombieAccumulation, cfg.update_interval_ns(), cfg.max_incidents),
            zombies: HashMap::new(),
            per_parent: HashMap::new(),
            threshold: cfg.zombie_accumulation.threshold as usize,
            cap: cfg.max_tracked,
            overflow: 0,
            cfg: cfg.clone(),
        }
    }

    fn add(&mut self, child: &Proc, parent: u32, parent_proc: Option<&Proc>, now: u64) -> Option<Finding> {
        if self.zombies.len() >= self.cap {
            self.overflow += 1;
            return None;
        }
        self.zombies.insert(child.key, parent);
        let list = self.per_parent.entry(parent).or_default();
        list.push(child.clone());
        let n = list.len();
        if n < self.threshold {
            return None;
        }
        let pids: Vec<u32> = list.iter().map(|c| c.key.tgid).collect();
        let pname = parent_proc.map(who).unwrap_or_else(|| format!("pid {parent}"));
        if parent_proc.is_some_and(|p| self.cfg.allowed_program(p)) {
            return None;
        }
        let summary = format!(
            "{pname} has {n} exited children it has not reaped (zombies, threshold {}); it must wait() for them",
            self.threshold
        );
        let mut processes: Vec<Involved> = Vec::new();
        if let Some(pp) = parent_proc {
            processes.push(Involved { role: "parent", proc: pp.clone(), address: None, since_ns: None });
        }
        processes.extend(list.iter().rev().take(16).map(|c| Involved {
            role: "zombie",
            proc: c.clone(),
            address: None,
            since_ns: c.exited.map(|(t, _)| t),
        }));
        let mut details = Map::new();
        details.insert("parent_pid".into(), json!(parent));
        details.insert("unreaped".into(), json!(n));
        details.insert("threshold".into(), json!(self.threshold));
        details.insert("zombie_pids".into(), json!(pids));
        let prev = self.incidents.get(&parent).map(|i| i.count).unwrap_or(0);
        self.incidents.raise(parent, &parent.to_string(), now, (n as u64).saturating_sub(prev), summary, processes, details)
    }

    fn remove(&mut self, child: ProcKey, now: u64, why: &str) -> Option<Finding> {
        let parent = self.zombies.remove(&child)?;
        let list = self.per_parent.get_mut(&parent)?;
        list.retain(|c| c.key != child);
        let n = list.len();
        if n == 0 {
            self.per_parent.remove(&parent);
        }
        if n < self.threshold && self.incidents.is_open(&parent) {
            return self.incidents.resolve(
                &parent,
                now,
                format!("pid {parent} is down to {n} unreaped children ({why}), below the threshold of {}", self.threshold),
            );
        }
        None
    }

    /// Zombies that exist when watcher starts.
    pub fn seed(&mut self, procs: &[Proc], now: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        for z in procs.iter().filter(|p| p.exited.is_some() && p.ppid != 0) {
            let parent = procs.iter().find(|p| p.key.tgid == z.ppid);
            out.extend(self.add(z, z.ppid, parent, now));
        }
        out
    }

    pub fn on_event(&mut self, i: &Input) -> Vec<Finding> {
        let mut out = Vec::new();
        let ts = i.ev.header.ts_ns;
        match &i.ev.payload {
            Payload::Exit(_) => {
                let Some(p) = i.subject.filter(|p| p.exited.is_some()) else { return out };
                if !self.zombies.contains_key(&p.key) {
                    out.extend(self.add(p, p.ppid, i.parent, ts));
                }
                // A parent that exits hands its zombies on.
                let moved: Vec<(ProcKey, u32)> =
                    i.reparented.iter().filter(|(k, _)| self.zombies.contains_key(k)).copied().collect();
                for (child, new_parent) in moved {
                    let Some(c) = self.per_parent.get(&p.key.tgid).and_then(|l| l.iter().find(|c| c.key == child).cloned()) else {
                        continue;
                    };
                    self.zombies.remove(&child);
                    if let Some(l) = self.per_parent.get_mut(&p.key.tgid) {
                        l.retain(|x| x.key != child);
                    }
                    let np = (i.procs)(new_parent);
                    out.extend(self.add(&c, new_parent, np.as_ref(), ts));
                }
                if self.incidents.is_open(&p.key.tgid) {
                    out.extend(self.incidents.resolve(
                        &p.key.tgid,
                        ts,
                        format!("{} exited; its unreaped children passed to their new parent", who(p)),
                    ));
                }
                self.per_parent.remove(&p.key.tgid);
            }
            Payload::Reap(_) => {
                if let Some(c) = i.subject {
                    out.extend(self.remove(c.key, ts, "reaped"));
                }
            }
            _ => {}
        }
        out
    }
}
