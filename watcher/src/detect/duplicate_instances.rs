//! `duplicate_instances`: live instances of one program exceed the limit (1
//! for programs listed as singletons, 10 otherwise); fires on the start that
//! crosses it. An instance is a process whose parent runs a different
//! program: the workers a master forks (nginx, postgres, gunicorn) are one
//! instance, ten copies started side by side are ten. Resolves when the count
//! falls back to the limit.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use serde::Serialize;

use super::{
    config::names_match,
    exec_wakes::{comm_key, Comm, ExecWakes},
    incident::Incidents,
    members::{Member, Members},
    process,
    DetectConfig,
    Finding, Input, Involved, Kind,
};
use crate::{
    world::domain::DomainEvent,
    world::proctable::{Proc, ProcKey},
};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.duplicate_instances]`
    DuplicateInstancesCfg {
        /// Live instances of one program above this open the finding.
        #[serde(deserialize_with = "crate::detect::config::at_least_1")]
        limit: u32 = 10,
        /// Programs that must run once (limit 1): name, basename or path.
        singletons: Vec<String> = Vec::new(),
    }
);

impl Declared for DuplicateInstances {
    const NAME: &'static str = "duplicate_instances";
    const SEVERITY: &'static str = "warning";
    const ADVICE: &'static str = "More instances of a program run than it should have (a second copy started beside the first, or a singleton run twice). Stop the extra ones and find what starts them.";
    const HELD_AFTER_LOSS: bool = true;
    type Config = DuplicateInstancesCfg;
    fn new(cfg: &DetectConfig) -> Self {
        DuplicateInstances::new(cfg)
    }
}

detector!(DuplicateInstances, |s, i, _c| {
    DuplicateInstances::on_event(s, i)
}, exec_wakes: wakes, wants: [Exec, Exited]);

/// What a `duplicate_instances` finding says.
#[derive(Serialize)]
struct Duplicates {
    instances: usize,
    #[serde(skip)]
    program: String,
    limit: usize,
    singleton: bool,
    pids: Vec<u32>,
    parents: Vec<u32>,
}

impl std::fmt::Display for Duplicates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.singleton { "a singleton, " } else { "" };
        let shown: Vec<String> = self.pids.iter().take(10).map(u32::to_string).collect();
        let by: Vec<String> = self.parents.iter().take(5).map(|x| format!("pid {x}")).collect();
        write!(
            f,
            "{} instances of `{}` are running ({kind}limit {}): pids {}{}; started by {}",
            self.instances,
            self.program,
            self.limit,
            shown.join(", "),
            if self.instances > 10 { ", …" } else { "" },
            by.join(", ")
        )
    }
}

pub struct DuplicateInstances {
    pub incidents: Incidents<u64>,
    /// Program → its live instances.
    instances: HashMap<u64, Program>,
    /// Instance → its program.
    member: HashMap<ProcKey, u64>,
    cfg: DetectConfig,
    pub overflow: u64,
    /// Programs at half their limit or more (their next instances can
    /// open the finding), by the name their execs are wanted by.
    armed: HashMap<u64, Comm>,
    wakes: ExecWakes,
    /// Emptied lists kept for the next program (a flood of short-lived
    /// execs of one command line makes its program a list at each exec
    /// and empties it at each exit: a new one each time was two
    /// allocations, and two frees, per exec).
    spare: Vec<Members<Instance>>,
}

/// At most this many emptied lists are kept.
const SPARE_LISTS: usize = 16;

/// A live instance as its program's list keeps it (what a record says of it
/// is read from the process table when one is written: no copy of its
/// `Proc` per exec).
#[derive(Clone, Copy)]
struct Instance {
    key: ProcKey,
    ppid: u32,
}

impl Member for Instance {
    fn key(&self) -> ProcKey {
        self.key
    }
}

/// A program's live instances, and its limit (from its newest instance's
/// names: a singleton is named).
#[derive(Default)]
struct Program {
    list: Members<Instance>,
    limit: usize,
}

/// The process table's lookup.
type Procs<'a> = &'a dyn Fn(u32) -> Option<Proc>;

/// A program's execs are wanted at once (see [`super::exec_wakes`]) from
/// this many live instances on: half its limit (one for a singleton), so
/// that the instance that crosses the limit is urgent even when the ones
/// before it came in a burst the reader read together.
fn arm_at(limit: usize) -> usize {
    (limit / 2).max(1)
}

impl DuplicateInstances {
    pub fn new(cfg: &DetectConfig) -> DuplicateInstances {
        DuplicateInstances {
            incidents: Incidents::new(
                Kind::DuplicateInstances,
                cfg.update_interval_ns(),
                cfg.max_incidents,
            ),
            instances: HashMap::new(),
            spare: Vec::new(),
            member: HashMap::new(),
            cfg: cfg.clone(),
            overflow: 0,
            armed: HashMap::new(),
            wakes: ExecWakes::new(),
        }
    }

    /// `p` joined its program, now `n` instances of `limit`: the program's
    /// execs are wanted from half its limit on (see [`arm_at`]).
    fn arm(&mut self, p: &Proc, n: usize, limit: usize) {
        if n >= arm_at(limit)
            && !self.armed.contains_key(&p.program)
            && !self.cfg.allowed_program(p)
        {
            let c = comm_key(&p.comm);
            self.armed.insert(p.program, c);
            self.wakes.want(c);
        }
    }

    /// An instance of `program` left, `n` left of `limit`: below half of
    /// it, its execs are no longer wanted.
    fn disarm(&mut self, program: u64, n: usize, limit: usize) {
        if n < arm_at(limit) {
            if let Some(c) = self.armed.remove(&program) {
                self.wakes.unwant(c);
            }
        }
    }

    /// Settings from a reloaded configuration: what comes next uses them;
    /// state and open incidents stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.incidents
            .set_limits(cfg.update_interval_ns(), cfg.max_incidents);
        self.cfg = cfg.clone();
    }

    /// The most instances of `p`'s program that may run.
    fn limit(&self, p: &Proc) -> usize {
        if names_match(&self.cfg.duplicate_instances.singletons, p) {
            1
        } else {
            self.cfg.duplicate_instances.limit as usize
        }
    }

    /// Whether `p` is an instance of its program: it runs a program (not a
    /// kernel thread), and its parent runs a different one.
    fn is_instance(p: &Proc, parent: Option<&Proc>) -> bool {
        p.program != 0
            && p.exe.is_some()
            && p.exited.is_none()
            && parent.is_none_or(|pp| pp.program != p.program)
    }

    fn leave(&mut self, key: ProcKey, now: u64) -> Option<Finding> {
        let program = self.member.remove(&key)?;
        let prog = self.instances.get_mut(&program)?;
        prog.list.remove(&key);
        let n = prog.list.len();
        let limit = if n == 0 { usize::MAX } else { prog.limit };
        if n == 0 {
            if let Some(gone) = self.instances.remove(&program) {
                if self.spare.len() < SPARE_LISTS {
                    self.spare.push(gone.list);
                }
            }
        }
        self.disarm(program, n, limit);
        if self.incidents.is_open(&program) && n <= limit {
            return self.incidents.resolve(
                &program,
                now,
                format_args!("{n} instance(s) left, within the limit of {limit}"),
            );
        }
        None
    }

    fn join(&mut self, p: &Proc, now: u64, procs: Procs) -> Option<Finding> {
        if self.member.contains_key(&p.key) {
            return None;
        }
        if self.member.len() >= self.cfg.max_tracked {
            self.overflow += 1;
            return None;
        }
        self.member.insert(p.key, p.program);
        let limit = self.limit(p);
        let spare = &mut self.spare;
        let prog = self.instances.entry(p.program).or_insert_with(|| Program {
            list: spare.pop().unwrap_or_default(),
            limit: 0,
        });
        prog.list.push(Instance {
            key: p.key,
            ppid: p.ppid,
        });
        prog.limit = limit;
        let n = prog.list.len();
        self.arm(p, n, limit);
        if n <= limit || self.cfg.allowed_program(p) {
            return None;
        }
        if self.incidents.count_until_due(&p.program, now, n as u64) {
            return None;
        }
        let list = &self.instances.get(&p.program)?.list;
        let program = p
            .command_line()
            .unwrap_or_else(|| p.exe.as_deref().unwrap_or(&p.comm).to_owned());
        let program: String = program
            .chars()
            .filter(|c| !c.is_control())
            .take(80)
            .collect();
        let pids: Vec<u32> = list.iter().map(|x| x.key.tgid).collect();
        let mut parents: Vec<u32> = list.iter().map(|x| x.ppid).collect();
        parents.sort();
        parents.dedup();
        let facts = Duplicates {
            instances: n,
            program: program.clone(),
            limit,
            singleton: limit == 1,
            pids,
            parents,
        };
        let mut processes = vec![Involved {
            role: "newest",
            proc: p.clone(),
            address: None,
            since_ns: Some(now),
        }];
        processes.extend(
            list.iter()
                .filter(|x| x.key != p.key)
                .take(15)
                .map(|x| Involved {
                    role: "instance",
                    proc: process(procs, x.key).unwrap_or_else(|| Proc::bare(x.key, x.ppid, &p.comm)),
                    address: None,
                    since_ns: Some(x.key.start_ns),
                }),
        );
        let prev = self.incidents.get(&p.program).map(|i| i.count).unwrap_or(0);
        self.incidents.raise(
            p.program,
            &program,
            now,
            (n as u64).saturating_sub(prev),
            &facts,
            processes,
        )
    }

    pub fn seed(&mut self, procs: &[Proc], by_tgid: &super::ProcIndex, now: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        let lookup = |t: u32| by_tgid.get(&t).map(|q| (*q).clone());
        for p in procs {
            let parent = by_tgid.get(&p.ppid).copied();
            if Self::is_instance(p, parent) {
                out.extend(self.join(p, now, &lookup));
            }
        }
        // One record per program at start, not one per crossing instance.
        let mut seen = HashSet::new();
        out.retain(|f| seen.insert(f.id.clone()));
        out
    }

    pub fn on_event(&mut self, i: &Input) -> Vec<Finding> {
        let mut out = Vec::new();
        let ts = i.ev.header.ts_ns;
        match i.event {
            DomainEvent::Exec => {
                let Some(p) = i.subject else { return out };
                out.extend(self.leave(p.key, ts));
                if Self::is_instance(p, i.parent) {
                    out.extend(self.join(p, ts, i.procs));
                }
            }
            DomainEvent::Exited { .. } => {
                let Some(p) = i.subject.filter(|p| p.exited.is_some()) else {
                    return out;
                };
                out.extend(self.leave(p.key, ts));
                // Orphans of a different program's parent may become instances.
                for (child, new_parent) in i.reparented {
                    if let Some(c) = process(i.procs, *child) {
                        let np = (i.procs)(*new_parent);
                        if Self::is_instance(&c, np.as_ref()) {
                            out.extend(self.join(&c, ts, i.procs));
                        }
                    }
                }
            }
            _ => {}
        }
        out
    }
}
