//! `respawn_storm`: a program keeps dying and being started again. A crash is
//! an abnormal end (a signal other than SIGPIPE, or a non-zero exit code —
//! except exit code 1 of programs whose 1 is an answer: `grep -q`, `pgrep`,
//! `test`, compilers…) after a short life (30 s). A restart is a new
//! instance of the same program (exec, or fork of a worker that did not exec)
//! within `restart_within_s` of a crash, by any parent. `restarts` (5)
//! restarts within `window_s` (60 s) open the finding, naming the restarting
//! parents, exit codes or signals, and lifetimes. Resolves after a full
//! window without a crash of that program (timer).
use std::collections::{HashMap, VecDeque};

use serde_json::{json, Map};

use super::{
    config::names_match, config::ns, dur, incident::Incidents, who, ContainerView, DetectConfig, Finding, Input, Involved, Kind,
};
use crate::{
    decode::Payload,
    names::{signal_name, ExitStatus},
    proctable::Proc,
};

const SIGPIPE: u32 = 13;
const CLONE_THREAD: u64 = 0x0001_0000;

#[derive(Clone)]
struct Crash {
    at: u64,
    proc: Proc,
    status: ExitStatus,
    lifetime_ns: u64,
}

#[derive(Clone)]
struct Restart {
    at: u64,
    crash: Crash,
    restarter: Option<Proc>,
}

#[derive(Default)]
struct Program {
    /// Crashes not yet followed by a restart.
    crashes: VecDeque<Crash>,
    restarts: VecDeque<Restart>,
    last_crash: u64,
}

pub struct RespawnStorm {
    pub incidents: Incidents<u64>,
    programs: HashMap<u64, Program>,
    cfg: DetectConfig,
    window_ns: u64,
    short_ns: u64,
    within_ns: u64,
    threshold: usize,
    pub overflow: u64,
}

/// A container runtime's per-container process (containerd's shim, conmon):
/// the parent of a container's first process, new at every start.
pub fn is_runtime_shim(p: &Proc) -> bool {
    let base = p.exe.as_deref().and_then(|e| e.rsplit('/').next()).unwrap_or("");
    p.comm.starts_with("containerd-shim") || base.starts_with("containerd-shim") || &*p.comm == "conmon" || base == "conmon"
}

pub fn describe_status(s: ExitStatus) -> String {
    match s {
        ExitStatus::Code(c) => format!("exit code {c}"),
        ExitStatus::Signal { signal, core_dumped } => {
            format!("{}{}", signal_name(signal), if core_dumped { " (core dumped)" } else { "" })
        }
        ExitStatus::Unknown => "unknown status".into(),
    }
}

impl RespawnStorm {
    pub fn new(cfg: &DetectConfig) -> RespawnStorm {
        let c = &cfg.respawn_storm;
        RespawnStorm {
            incidents: Incidents::new(Kind::RespawnStorm, cfg.update_interval_ns(), cfg.max_incidents),
            programs: HashMap::new(),
            cfg: cfg.clone(),
            window_ns: ns(c.window_s),
            short_ns: ns(c.short_life_s),
            within_ns: ns(c.restart_within_s),
            threshold: c.restarts as usize,
            overflow: 0,
        }
    }

    /// An abnormal end: a signal other than SIGPIPE, or a non-zero code that is not an answer.
    pub fn is_crash(&self, p: &Proc, s: ExitStatus) -> bool {
        match s {
            ExitStatus::Code(0) | ExitStatus::Unknown => false,
            ExitStatus::Code(1) => !names_match(&self.cfg.respawn_storm.answer_programs, p),
            ExitStatus::Code(_) => true,
            ExitStatus::Signal { signal, .. } => signal != SIGPIPE,
        }
    }

    fn started(&mut self, p: &Proc, parent: Option<&Proc>, ts: u64, view: &dyn ContainerView) -> Option<Finding> {
        let prog = self.programs.get_mut(&p.program)?;
        // The most recent crash of this program close enough before this start.
        while prog.crashes.front().is_some_and(|c| ts.saturating_sub(c.at) > self.within_ns) {
            prog.crashes.pop_front();
        }
        let crash = prog.crashes.pop_back()?;
        prog.restarts.push_back(Restart { at: ts, crash, restarter: parent.cloned() });
        while prog.restarts.front().is_some_and(|r| ts.saturating_sub(r.at) > self.window_ns) {
            prog.restarts.pop_front();
        }
        while prog.restarts.len() > 256 {
            prog.restarts.pop_front();
        }
        let n = prog.restarts.len();
        if n < self.threshold && !self.incidents.is_open(&p.program) {
            return None;
        }
        let rs: Vec<Restart> = prog.restarts.iter().cloned().collect();
        let span = ts.saturating_sub(rs.first().map(|r| r.at).unwrap_or(ts));
        let mut restarters: Vec<&Proc> = Vec::new();
        for r in &rs {
            if let Some(pp) = &r.restarter {
                if !restarters.iter().any(|x| x.key == pp.key) {
                    restarters.push(pp);
                }
            }
        }
        let last = &rs[rs.len() - 1].crash;
        let program = p.command_line().unwrap_or_else(|| p.exe.as_deref().unwrap_or(&p.comm).to_owned());
        let program: String = program.chars().filter(|c| !c.is_control()).take(80).collect();
        let container = p.container_id.as_deref().and_then(|id| view.by_id(id));
        // A container restarted by its runtime: each start has a new shim as
        // its parent; the restarter is the runtime's policy, not those pids.
        let by_runtime = container.is_some() && !restarters.is_empty() && restarters.iter().all(|r| is_runtime_shim(r));
        let by = if by_runtime {
            let c = container.as_ref().expect("checked above");
            match (c.runtime, c.restart_policy.as_deref()) {
                ("docker", Some(policy)) => format!(" by Docker's restart policy ({policy})"),
                ("docker", None) => " by Docker's restart policy".to_owned(),
                (rt, _) => format!(" by its container runtime ({rt})"),
            }
        } else if restarters.is_empty() {
            String::new()
        } else {
            format!(" by {}", restarters.iter().take(3).map(|r| who(r)).collect::<Vec<_>>().join(", "))
        };
        let what = match &container {
            Some(c) => format!("{} (`{program}`)", c.describe()),
            None => format!("`{program}`"),
        };
        let summary = format!(
            "{what} keeps crashing: restarted {n} times in {}{by}; last instance pid {} ended with {} after {}",
            dur(span),
            last.proc.key.tgid,
            describe_status(last.status),
            dur(last.lifetime_ns)
        );
        let mut processes = vec![Involved { role: "instance", proc: p.clone(), address: None, since_ns: Some(ts) }];
        // For a runtime's restarts, only the latest shim (the others are gone).
        for r in restarters.iter().rev().take(if by_runtime { 1 } else { 8 }) {
            processes.push(Involved { role: "restarter", proc: (*r).clone(), address: None, since_ns: None });
        }
        let mut details = Map::new();
        if let Some(c) = &container {
            details.insert("container".into(), json!({"id": &*c.id, "name": c.name.as_deref(), "image": c.image.as_deref()}));
        }
        if by_runtime {
            let c = container.as_ref().expect("checked above");
            details.insert(
                "restarter".into(),
                json!({"runtime": c.runtime, "restart_policy": c.restart_policy.as_deref()}),
            );
        }
        details.insert("restarts_in_window".into(), json!(n));
        details.insert("window_s".into(), json!(self.window_ns as f64 / 1e9));
        details.insert(
            "recent".into(),
            json!(rs
                .iter()
                .rev()
                .take(10)
                .map(|r| json!({
                    "pid": r.crash.proc.key.tgid,
                    "end": describe_status(r.crash.status),
                    "lifetime_ms": r.crash.lifetime_ns as f64 / 1e6,
                    "restarted_by": r.restarter.as_ref().map(|x| x.key.tgid),
                }))
                .collect::<Vec<_>>()),
        );
        self.incidents.raise(p.program, &program, ts, 1, summary, processes, details)
    }

    pub fn on_event(&mut self, i: &Input) -> Vec<Finding> {
        let ts = i.ev.header.ts_ns;
        match &i.ev.payload {
            Payload::Exit(_) => {
                let Some(p) = i.subject.filter(|p| p.exited.is_some() && p.program != 0) else { return Vec::new() };
                let Some((_, status)) = p.exited else { return Vec::new() };
                let lifetime = ts.saturating_sub(p.key.start_ns);
                if !self.is_crash(p, status) || lifetime > self.short_ns || self.cfg.allowed_program(p) {
                    return Vec::new();
                }
                if !self.programs.contains_key(&p.program) && self.programs.len() >= self.cfg.max_tracked {
                    self.overflow += 1;
                    return Vec::new();
                }
                let prog = self.programs.entry(p.program).or_default();
                prog.last_crash = ts;
                prog.crashes.push_back(Crash { at: ts, proc: p.clone(), status, lifetime_ns: lifetime });
                while prog.crashes.len() > 64 {
                    prog.crashes.pop_front();
                }
                Vec::new()
            }
            Payload::Exec(_) => match i.subject {
                Some(p) => self.started(p, i.parent, ts, i.containers).into_iter().collect(),
                None => Vec::new(),
            },
            Payload::Fork(f) if f.clone_flags & CLONE_THREAD == 0 => match i.subject {
                // A worker re-forked by its master: the same program without exec.
                Some(child) => self.started(child, i.parent, ts, i.containers).into_iter().collect(),
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    pub fn on_tick(&mut self, now: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        let quiet: Vec<u64> = self
            .programs
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.last_crash) >= self.window_ns)
            .map(|(k, _)| *k)
            .collect();
        for k in quiet {
            self.programs.remove(&k);
            out.extend(self.incidents.resolve(
                &k,
                now,
                format!("no crash of this program for {}: the respawn storm is over", dur(self.window_ns)),
            ));
        }
        out
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.programs.values().map(|p| p.last_crash + self.window_ns).min()
    }
}
