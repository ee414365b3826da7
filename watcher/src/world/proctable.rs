//! The process table: every live (and exited-but-unreaped) process, seeded
//! from `/proc` at start and kept current from kernel events.
//!
//! Identity is `(tgid, start time)`: a fork of a tgid that is still in the
//! table (its exit was lost, or the pid was reused) replaces the old entry
//! instead of merging with it. The table is bounded; evictions are counted.
use crate::kernel::abi::{CLONE_PARENT, CLONE_THREAD};
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet};

use crate::{
    kernel::decode::{KernelEvent, Payload},
    kernel::names::ExitStatus,
    world::cause::{Relation, Sender, Signalled},
};
use watcher_common::{ExitData, ReapSource};

/// Whether this thread's exit ends its process: the kernel's word (the
/// tracepoint's `group_dead`, or the programs' claim from `signal_struct.live`),
/// else — when the kernel could not tell — whether it is the leader.
pub fn ends_process(x: &ExitData, pid: u32, tgid: u32) -> bool {
    match x.group_dead {
        0 => false,
        1 => true,
        _ => pid == tgid,
    }
}

/// Whether this exit ends a nested pid namespace: its init (pid 1 there, not
/// the host's PID 1) has ended, and the kernel now kills and reaps every
/// process of that namespace.
pub fn ends_pid_namespace(x: &ExitData, tgid: u32) -> bool {
    x.ns_pid == 1 && x.pidns != 0 && tgid != 1 && x.group_dead != 0
}

/// Whether a configured name matches a process by comm, executable path or
/// executable basename; a trailing `*` (`check_*`) matches any name with that prefix.
pub fn name_matches(names: &[String], comm: &str, exe: Option<&str>) -> bool {
    // (Asked for every event by detectors with an allow-list, empty by default.)
    if names.is_empty() {
        return false;
    }
    let exe = exe.unwrap_or("");
    let base = exe.rsplit('/').next().unwrap_or("");
    names.iter().any(|n| match n.strip_suffix('*') {
        Some(prefix) => [comm, exe, base]
            .iter()
            .any(|s| !s.is_empty() && s.starts_with(prefix)),
        None => n == comm || n == exe || (!base.is_empty() && n == base),
    })
}

/// Process identity: pid reuse gives a different key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub tgid: u32,
    /// CLOCK_MONOTONIC ns of the process start (from the fork event, or from
    /// `/proc/<pid>/stat` starttime for processes found at start).
    pub start_ns: u64,
}

/// What is known about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub key: ProcKey,
    pub ppid: u32,
    pub comm: Arc<str>,
    pub exe: Option<Arc<str>>,
    /// The argument vector at the last exec (or as inherited at fork).
    pub argv: Option<crate::kernel::argv::Argv>,
    pub uid: u32,
    /// The container it runs in (from its cgroup), if any.
    pub container_id: Option<Arc<str>>,
    /// Its cgroup (v2 id) at the last fork, exec or exit seen; 0 when unknown.
    pub cgroup_id: u64,
    /// Inode of its pid namespace, from its exit record (0 until then).
    pub pidns: u32,
    /// Live threads seen (1 for a process found at start whose threads are not counted).
    pub threads: u32,
    /// Set when the last thread exited: (time, status). The process is a zombie until reaped.
    pub exited: Option<(u64, ExitStatus)>,
    /// The last fatal signal generated for it (and by whom), or the OOM killer's choice.
    pub signalled: Option<Arc<Signalled>>,
    /// "Same program" identity: executable plus argument-vector digest at the
    /// last exec (or executable only, by configuration), within its container;
    /// inherited at fork.
    pub program: u64,
}

impl Proc {
    /// Its "same program" identity, from what it has (see [`program_id`]).
    pub fn program_by(&self, identity: Identity) -> u64 {
        program_id(
            identity,
            self.exe.as_deref(),
            &self.comm,
            self.argv.as_ref(),
            self.container_id.as_deref(),
        )
    }

    /// A process known by its key, parent and name only (nothing else seen yet).
    pub fn bare(key: ProcKey, ppid: u32, comm: &str) -> Proc {
        Proc {
            key,
            ppid,
            comm: comm.into(),
            exe: None,
            argv: None,
            uid: 0,
            container_id: None,
            cgroup_id: 0,
            pidns: 0,
            threads: 1,
            exited: None,
            signalled: None,
            program: 0,
        }
    }

    pub fn command_line(&self) -> Option<String> {
        self.argv
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|a| a.joined())
    }
}

/// A process an event touched: the table's entry as it is after the event,
/// or — a reaped process, which left the table — as it was (the table keeps
/// the last one that left until the next event). Not a copy of the entry:
/// a `Proc` clone per event was ~10 % of a fork loop, and a `Proc` moved
/// with every event's `Touched` ~3 %.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Who {
    #[default]
    Nobody,
    InTable(u32),
    Gone,
}

impl Who {
    /// The process, from `table` (the table the event was applied to).
    pub fn get(self, table: &ProcessTable) -> Option<&Proc> {
        match self {
            Who::Nobody => None,
            Who::InTable(tgid) => table.get(tgid),
            Who::Gone => table.gone.as_ref(),
        }
    }
}

/// Processes touched by one event (see [`Who`]: read them with the table).
#[derive(Clone, Debug, Default)]
pub struct Touched {
    pub subject: Who,
    pub parent: Who,
    /// For the exit that ends a process: why it ended (set by enrichment).
    pub cause: Option<crate::world::cause::Cause>,
    /// What the record means (set by enrichment).
    pub event: crate::world::domain::DomainEvent,
}

/// Counters of the table's bounded behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Entries dropped because the table was full.
    pub evicted: u64,
    /// Forks of a tgid already present (lost exit or pid reuse).
    pub replaced: u64,
    /// Orphans of an ending process whose new parent the kernel side named,
    /// and those it had to be asked of `/proc` for (a read on the pipeline's thread).
    pub new_parents_told: u64,
    pub new_parents_asked: u64,
}

/// What makes two processes "the same program".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    /// Executable path plus a digest of the argument vector (`python3 a.py` ≠ `python3 b.py`).
    #[default]
    ExeAndArgs,
    /// Executable path only.
    Exe,
}

/// FNV-1a, 64 bit: a stable digest (finding ids and program identities stay
/// the same across runs).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0xffu8)) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Program identity of an executable and argument vector, within a
/// container: replicas of one image in separate containers are different
/// programs (the same program started twice in one container is one).
pub fn program_id(
    identity: Identity,
    exe: Option<&str>,
    comm: &str,
    argv: Option<&crate::kernel::argv::Argv>,
    container: Option<&str>,
) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    // foldhash with a fixed seed: the same program has the same id in every
    // run; 16 bytes a step (FNV-1a, a byte a step with a multiply between,
    // took ~6 % of the pipeline's time in a flood of execs with 3 KB argv).
    let mut h = foldhash::quality::FixedState::with_seed(0x7761_7463_6865_7221).build_hasher();
    let mut part = |b: &[u8]| {
        h.write(b);
        h.write_u8(0xff);
    };
    part(exe.unwrap_or(comm).as_bytes());
    if let (Identity::ExeAndArgs, Some(argv)) = (identity, argv) {
        // argv[0] is how it was called, not what it runs.
        for a in argv.raw().skip(1) {
            part(a);
        }
    }
    if let Some(c) = container {
        part(b"\0container");
        part(c.as_bytes());
    }
    h.finish()
}

/// The container of a cgroup id, as the caller knows it.
pub type ContainerOf<'a> = &'a dyn Fn(u64) -> Option<Arc<str>>;

/// Finds a process's current parent (after reparenting) outside the events.
pub type ParentLookup = Box<dyn Fn(u32) -> Option<u32> + Send>;

/// Reads the parent pid from `/proc/<pid>/stat`.
pub fn proc_parent(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

pub struct ProcessTable {
    procs: HashMap<u32, Proc>,
    /// Parent tgid → its children's tgids (so a parent's exit finds its orphans without a scan).
    kids: HashMap<u32, HashSet<u32>>,
    cap: usize,
    pub stats: TableStats,
    pub identity: Identity,
    parent_lookup: ParentLookup,
    /// Children whose parent exited in the last event: (child, new parent).
    pub reparented: Vec<(ProcKey, u32)>,
    /// The process the last event took out of the table (reaped, or a
    /// parent evicted for its child), as it was: [`Who::Gone`].
    gone: Option<Proc>,
}

impl ProcessTable {
    pub fn new(cap: usize) -> ProcessTable {
        ProcessTable::with_parent_lookup(cap, Box::new(proc_parent))
    }

    /// A table that asks `lookup` for the new parent of orphaned children.
    pub fn with_parent_lookup(cap: usize, lookup: ParentLookup) -> ProcessTable {
        ProcessTable {
            procs: HashMap::new(),
            kids: HashMap::new(),
            cap: cap.max(16),
            stats: TableStats::default(),
            identity: Identity::default(),
            parent_lookup: lookup,
            gone: None,
            reparented: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, tgid: u32) -> Option<&Proc> {
        self.procs.get(&tgid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Proc> {
        self.procs.values()
    }

    /// Insert, replacing any entry of the same tgid; when full, evict first the
    /// longest-exited zombie, else the most recently started process (long-lived
    /// daemons are the ones worth keeping).
    pub fn insert(&mut self, p: Proc) {
        let tgid = p.key.tgid;
        // The parent it had here, if it was here (one look-up for both).
        let before = if let Some(old) = self.procs.get(&tgid) {
            if old.key != p.key {
                self.stats.replaced += 1;
            }
            Some(old.ppid)
        } else {
            None
        };
        if before.is_none() && self.procs.len() >= self.cap {
            let victim = self
                .procs
                .values()
                .filter_map(|q| q.exited.map(|(t, _)| (t, q.key.tgid)))
                .min()
                .map(|(_, tgid)| tgid)
                .or_else(|| {
                    self.procs
                        .values()
                        .filter(|q| q.key.tgid > 1)
                        .max_by_key(|q| q.key.start_ns)
                        .map(|q| q.key.tgid)
                });
            if let Some(v) = victim {
                self.remove(v);
                self.stats.evicted += 1;
            }
        }
        // (Still its parent's child: the index has it already.)
        if before != Some(p.ppid) {
            if let Some(old) = before {
                self.unlink(old, tgid);
            }
            if p.ppid != 0 {
                self.kids.entry(p.ppid).or_default().insert(tgid);
            }
        }
        self.procs.insert(tgid, p);
    }

    fn unlink(&mut self, ppid: u32, tgid: u32) {
        if let Some(set) = self.kids.get_mut(&ppid) {
            set.remove(&tgid);
            // A parent in the table keeps its empty set until it leaves
            // (a fork loop's parent has one child at a time: a set made
            // and dropped for each, its hasher seeded, was ~5 % of a fork
            // mix's instructions); one not in the table has no entry.
            if set.is_empty() && !self.procs.contains_key(&ppid) {
                self.kids.remove(&ppid);
            }
        }
    }

    /// Remove a process (reaped, evicted).
    fn remove(&mut self, tgid: u32) -> Option<Proc> {
        let p = self.procs.remove(&tgid)?;
        self.unlink(p.ppid, tgid);
        if self.kids.get(&tgid).is_some_and(|s| s.is_empty()) {
            self.kids.remove(&tgid);
        }
        Some(p)
    }

    /// A process got a new parent (reparenting, adoption by a reaper).
    fn set_ppid(&mut self, tgid: u32, new: u32) {
        let Some(old) = self.procs.get(&tgid).map(|p| p.ppid) else {
            return;
        };
        if old == new {
            return;
        }
        self.unlink(old, tgid);
        if new != 0 {
            self.kids.entry(new).or_default().insert(tgid);
        }
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.ppid = new;
        }
    }

    /// Apply one kernel event and say which processes it touched.
    pub fn apply(&mut self, ev: &KernelEvent) -> Touched {
        self.apply_in(ev, &|_| None)
    }

    /// [`ProcessTable::apply`], with the container of each cgroup id: fork,
    /// exec and exit records carry the task's cgroup, so a process moved into
    /// a container's cgroup after its clone is seen there at its exec.
    pub fn apply_in(&mut self, ev: &KernelEvent, container_of: ContainerOf) -> Touched {
        self.reparented.clear();
        self.gone = None;
        let h = &ev.header;
        match &ev.payload {
            Payload::Fork(f) => self.on_fork(ev, f, container_of),
            Payload::Exec(x) => self.on_exec(ev, x, container_of),
            Payload::Exit(x) => self.on_exit(ev, x, container_of),
            Payload::Reap(r) => self.on_reap(ev, r),
            // A socket call runs in its process: learn the process if it is unknown (evicted, missed).
            Payload::Bind(_) | Payload::Connect(_) => Touched {
                subject: Who::InTable(self.entry(ev).key.tgid),
                ..Default::default()
            },
            // A TCP state change may run in softirq context of an unrelated task.
            Payload::TcpState(_) => Touched {
                subject: self.who(h.tgid),
                ..Default::default()
            },
            Payload::Signal(x) => self.signalled(ev, x),
            // Not about one process (a socket's end may run in any task's context).
            Payload::Cgroup(_) | Payload::SockClose(_) => Touched::default(),
        }
    }

    /// A new thread (counted) or process (its child, inheriting what the
    /// parent had: name, executable, arguments, container, program).
    fn on_fork(
        &mut self,
        ev: &KernelEvent,
        f: &watcher_common::ForkData,
        container_of: ContainerOf,
    ) -> Touched {
        let h = &ev.header;
        if f.clone_flags & CLONE_THREAD != 0 {
            if let Some(p) = self.procs.get_mut(&h.tgid) {
                p.threads = p.threads.saturating_add(1);
            }
            return Touched {
                subject: self.who(h.tgid),
                ..Default::default()
            };
        }
        let parent = self.procs.get(&h.tgid);
        let ppid = if f.clone_flags & CLONE_PARENT != 0 {
            parent.map(|p| p.ppid).unwrap_or(0)
        } else {
            h.tgid
        };
        let container_id = if f.cgroup_id != 0 {
            container_of(f.cgroup_id)
        } else {
            parent.and_then(|p| p.container_id.clone())
        };
        let child = Proc {
            key: ProcKey {
                tgid: f.child_tgid,
                start_ns: h.ts_ns,
            },
            ppid,
            comm: parent
                .map(|p| p.comm.clone())
                .unwrap_or_else(|| ev.comm().into()),
            exe: parent.and_then(|p| p.exe.clone()),
            argv: parent.and_then(|p| p.argv.clone()),
            uid: h.uid,
            container_id,
            cgroup_id: f.cgroup_id,
            pidns: parent.map(|p| p.pidns).unwrap_or(0),
            threads: 1,
            exited: None,
            signalled: None,
            program: parent.map(|p| p.program).unwrap_or(0),
        };
        // (A full table may evict the parent to make room: then it is
        // handed on as it was.)
        let evicted_parent = (parent.is_some() && self.procs.len() >= self.cap)
            .then(|| parent.cloned())
            .flatten();
        let child_tgid = child.key.tgid;
        self.insert(child);
        let parent = match evicted_parent {
            Some(p) if !self.procs.contains_key(&p.key.tgid) => {
                self.gone = Some(p);
                Who::Gone
            }
            _ => self.who(h.tgid),
        };
        Touched {
            subject: Who::InTable(child_tgid),
            parent,
            ..Default::default()
        }
    }

    /// `tgid` as the table holds it, if it does.
    fn who(&self, tgid: u32) -> Who {
        if self.procs.contains_key(&tgid) {
            Who::InTable(tgid)
        } else {
            Who::Nobody
        }
    }

    /// A new program in the process: its name, executable, arguments,
    /// container and program identity.
    fn on_exec(
        &mut self,
        ev: &KernelEvent,
        x: &crate::kernel::decode::Exec,
        container_of: ContainerOf,
    ) -> Touched {
        let h = &ev.header;
        let p = self.entry(ev);
        p.comm = ev.comm().into();
        p.exe = Some(x.filename.clone());
        p.argv = Some(x.argv.clone());
        p.uid = h.uid;
        // exec kills every other thread.
        p.threads = 1;
        if x.cgroup_id != 0 {
            p.cgroup_id = x.cgroup_id;
            p.container_id = container_of(x.cgroup_id);
        }
        let identity = self.identity;
        let p = self.procs.get_mut(&h.tgid).expect("entry exists");
        p.program = p.program_by(identity);
        let tgid = p.key.tgid;
        self.with_parent(tgid)
    }

    /// `tgid` (in the table), with its parent as the table knows it.
    fn with_parent(&self, tgid: u32) -> Touched {
        let ppid = self.procs.get(&tgid).map(|p| p.ppid).unwrap_or(0);
        Touched {
            subject: self.who(tgid),
            parent: self.who(ppid),
            ..Default::default()
        }
    }

    /// A thread's exit; the process's end when it was the last (its
    /// children go to their new parent).
    fn on_exit(&mut self, ev: &KernelEvent, x: &ExitData, container_of: ContainerOf) -> Touched {
        let h = &ev.header;
        let status = ExitStatus::from_raw(x.exit_code);
        let group_dead = ends_process(x, h.pid, h.tgid);
        let tgid = self.entry(ev).key.tgid;
        if x.parent_tgid != 0 && x.parent_tgid != tgid {
            // The kernel's word on the parent (it follows reparenting).
            self.set_ppid(tgid, x.parent_tgid);
        }
        let p = self.procs.get_mut(&tgid).expect("entry exists");
        p.threads = p.threads.saturating_sub(1);
        if x.pidns != 0 {
            p.pidns = x.pidns;
        }
        if x.cgroup_id != 0 && x.cgroup_id != p.cgroup_id {
            p.cgroup_id = x.cgroup_id;
            p.container_id = container_of(x.cgroup_id);
        }
        if group_dead {
            p.exited = Some((h.ts_ns, status));
            p.threads = 0;
        }
        // The init of a nested pid namespace: the kernel kills every
        // process in it and reaps them itself (no wait syscall); its
        // children are not handed to anyone.
        if group_dead && !ends_pid_namespace(x, h.tgid) {
            self.hand_orphans(x, h.tgid);
        }
        self.with_parent(tgid)
    }

    /// The children of `tgid`, which has ended, belong to a subreaper or
    /// init now (the one the kernel side named, or `/proc`'s answer).
    fn hand_orphans(&mut self, x: &ExitData, tgid: u32) {
        // Its children now belong to a subreaper or init.
        let mut orphans: Vec<u32> = self
            .kids
            .get(&tgid)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        orphans.retain(|c| *c != tgid && self.procs.get(c).is_some_and(|q| q.ppid == tgid));
        orphans.sort_unstable();
        // The kernel side names the new parent (it reads what
        // `find_new_reaper` will choose); `/proc` is asked only
        // on a kernel whose layout did not let it.
        let told = if x.flags & watcher_common::EXIT_NO_CHILDREN != 0 {
            // None left: those listed were reaped unseen (or their
            // records are late); init's is the harmless guess.
            Some(1)
        } else {
            Some(x.reaper_tgid).filter(|&r| r != 0 && r != tgid)
        };
        for c in orphans {
            let new = match told {
                Some(t) => {
                    self.stats.new_parents_told += 1;
                    t
                }
                None => {
                    self.stats.new_parents_asked += 1;
                    (self.parent_lookup)(c)
                        .filter(|&pp| pp != tgid)
                        .unwrap_or(1)
                }
            };
            self.set_ppid(c, new);
            if let Some(child) = self.procs.get(&c) {
                self.reparented.push((child.key, new));
            }
        }
    }

    /// A child reaped (by wait, or freed unwaited): it leaves the table
    /// once it had exited; a reaper that was not its parent adopted it.
    fn on_reap(&mut self, ev: &KernelEvent, r: &watcher_common::ReapData) -> Touched {
        let h = &ev.header;
        let reaper = match ReapSource::from_u32(r.source) {
            ReapSource::Free | ReapSource::Unknown => Who::Nobody,
            _ => self.who(h.tgid),
        };
        // A reaper that is not the parent we knew adopted the child.
        if let Who::InTable(reaper) = reaper {
            self.set_ppid(r.reaped_pid, reaper);
        }
        // wait4 also returns stopped/continued children: only an exited process is reaped.
        let subject = match self.procs.get(&r.reaped_pid) {
            Some(p) if p.exited.is_some() => {
                self.gone = self.remove(r.reaped_pid);
                Who::Gone
            }
            Some(_) => Who::InTable(r.reaped_pid),
            None => Who::Nobody,
        };
        // (The reaper reaping itself cannot be: it is still in the table.)
        Touched {
            subject,
            parent: reaper,
            ..Default::default()
        }
    }

    /// A fatal signal generated for a process (the header is the sender), or
    /// the OOM killer's choice: remembered on the target for its exit's cause.
    /// The subject is the target, the parent the sender.
    fn signalled(&mut self, ev: &KernelEvent, x: &watcher_common::SignalData) -> Touched {
        let h = &ev.header;
        // The target is a thread id: a process's own, or the sender's faulting thread.
        let target = if self.procs.contains_key(&x.target_pid) {
            x.target_pid
        } else if x.target_pid == h.pid {
            h.tgid
        } else {
            return Touched::default();
        };
        let oom = x.source == watcher_common::SIGNAL_OOM_VICTIM;
        let by_kernel = oom || x.code > 0;
        let sender = (!by_kernel).then(|| {
            let relation = if h.tgid == target {
                Relation::Itself
            } else if self.procs.get(&target).is_some_and(|p| p.ppid == h.tgid) {
                Relation::Parent
            } else if self.is_ancestor(h.tgid, target) {
                Relation::Ancestor
            } else {
                Relation::Other
            };
            let known = self.procs.get(&h.tgid);
            Sender {
                tgid: h.tgid,
                comm: known
                    .map(|p| p.comm.clone())
                    .unwrap_or_else(|| ev.comm().into()),
                exe: known.and_then(|p| p.exe.clone()),
                command_line: known.and_then(|p| p.command_line()),
                relation,
            }
        });
        let sender_proc = self.who(h.tgid);
        // (A thread of a process the table does not know — missed or
        // evicted — signalled itself: nothing to remember it on.)
        let Some(p) = self.procs.get_mut(&target) else {
            return Touched::default();
        };
        // The OOM killer's own SIGKILL follows its choice: keep the choice.
        if !p.signalled.as_ref().is_some_and(|s| s.oom && x.sig == 9) {
            p.signalled = Some(Arc::new(Signalled {
                at_ns: h.ts_ns,
                signal: x.sig,
                code: x.code,
                oom,
                sender,
            }));
        }
        Touched {
            subject: Who::InTable(target),
            parent: sender_proc,
            ..Default::default()
        }
    }

    /// Whether `who` is an ancestor of `tgid` above its parent (bounded walk).
    fn is_ancestor(&self, who: u32, tgid: u32) -> bool {
        let mut cur = self.procs.get(&tgid).map(|p| p.ppid);
        for _ in 0..32 {
            match cur {
                Some(0) | None => return false,
                Some(pp) if pp == who => return true,
                Some(1) => return false,
                Some(pp) => cur = self.procs.get(&pp).map(|p| p.ppid),
            }
        }
        false
    }

    /// Set a process's program identity (enrichment scopes it by pod on Kubernetes).
    pub fn set_program(&mut self, tgid: u32, program: u64) {
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.program = program;
        }
    }

    /// The entry of the event's process, created from the event if unknown.
    fn entry(&mut self, ev: &KernelEvent) -> &mut Proc {
        let h = &ev.header;
        if !self.procs.contains_key(&h.tgid) {
            let p = Proc {
                uid: h.uid,
                ..Proc::bare(
                    ProcKey {
                        tgid: h.tgid,
                        start_ns: h.ts_ns,
                    },
                    0,
                    &ev.comm(),
                )
            };
            self.insert(p);
        }
        self.procs.get_mut(&h.tgid).expect("inserted above")
    }

    /// Seed from `/proc`: every process that exists now, zombies included.
    pub fn seed_from_proc(&mut self) -> usize {
        let Ok(all) = procfs::process::all_processes() else {
            return 0;
        };
        let mut n = 0;
        for pr in all.flatten() {
            if let Some(p) = read_proc(&pr, self.identity) {
                self.insert(p);
                n += 1;
            }
        }
        n
    }
}

/// CLOCK_BOOTTIME − CLOCK_MONOTONIC: time the machine spent suspended (or a
/// VM paused), by which `/proc` start times run ahead of the records' clock.
fn suspended_ns() -> u64 {
    let ns = |id| {
        nix::time::clock_gettime(id)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0)
    };
    ns(nix::time::ClockId::CLOCK_BOOTTIME).saturating_sub(ns(nix::time::ClockId::CLOCK_MONOTONIC))
}

/// One process as `/proc/<pid>` shows it now (a zombie with `exited` set);
/// `None` when it is gone.
pub fn read_proc(pr: &procfs::process::Process, identity: Identity) -> Option<Proc> {
    let mut p = read_stat(pr)?;
    let tgid = p.key.tgid;
    p.exe = pr
        .exe()
        .ok()
        .map(|p| Arc::<str>::from(p.to_string_lossy().as_ref()));
    // (Its bytes, as an exec record carries them: the same program id.)
    p.argv = std::fs::read(format!("/proc/{tgid}/cmdline"))
        .ok()
        .map(|b| crate::kernel::argv::Argv::from_bytes(&b))
        .filter(|a| !a.is_empty());
    p.uid = pr.uid().unwrap_or(0);
    p.container_id = std::fs::read_to_string(format!("/proc/{tgid}/cgroup"))
        .ok()
        .and_then(|c| container_id_from_cgroup(&c))
        .map(Arc::<str>::from);
    p.program = p.program_by(identity);
    Some(p)
}

/// What `/proc/<pid>/stat` alone says of a process — which process it is
/// (pid and start), its parent, whether it is a zombie — in one read: a
/// confirmation needs no more (no program, no command line, no owner).
pub fn read_stat(pr: &procfs::process::Process) -> Option<Proc> {
    let tps = procfs::ticks_per_second().max(1);
    let stat = pr.stat().ok()?;
    let tgid = stat.pid as u32;
    let zombie = stat.state == 'Z';
    // /proc's start time counts from boot including suspended time
    // (CLOCK_BOOTTIME); records use CLOCK_MONOTONIC: subtract the difference.
    let start_ns =
        (stat.starttime.saturating_mul(1_000_000_000) / tps).saturating_sub(suspended_ns());
    Some(Proc {
        program: 0,
        key: ProcKey { tgid, start_ns },
        ppid: stat.ppid.max(0) as u32,
        comm: stat.comm.as_str().into(),
        exe: None,
        argv: None,
        uid: 0,
        container_id: None,
        cgroup_id: 0,
        pidns: 0,
        threads: stat.num_threads.max(0) as u32,
        exited: zombie.then(|| {
            let code = stat.exit_code.unwrap_or(0) as u32;
            (start_ns, ExitStatus::from_raw(code))
        }),
        signalled: None,
    })
}

/// A container id in a cgroup path (`docker-<64 hex>.scope`, `/docker/<id>`,
/// `cri-containerd-<id>.scope`, `libpod-<id>.scope`, …): the first run of 64 hex digits.
pub fn container_id_from_cgroup(cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or(line);
        let b = path.as_bytes();
        let mut run = 0usize;
        for (i, c) in b.iter().enumerate() {
            if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
                run += 1;
                let next_hex = b.get(i + 1).map(|n| n.is_ascii_hexdigit()).unwrap_or(false);
                if run == 64 && !next_hex {
                    return Some(path[i + 1 - 64..=i].to_owned());
                }
            } else {
                run = 0;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::decode::{decode, encode, header_for, Exec};
    use watcher_common::{Event, EventKind, ExitData, ForkData, ReapData};

    fn fork(ts: u64, parent: u32, child: u32, flags: u64) -> KernelEvent {
        decode(&encode(&Event {
            header: header_for::<ForkData>(EventKind::Fork, ts, parent, parent, "sh"),
            data: ForkData {
                child_pid: child,
                child_tgid: if flags & CLONE_THREAD != 0 {
                    parent
                } else {
                    child
                },
                clone_flags: flags,
                cgroup_id: 0,
            },
        }))
        .unwrap()
    }
    fn exit(ts: u64, pid: u32, tgid: u32, code: u32, dead: u32) -> KernelEvent {
        decode(&encode(&Event {
            header: header_for::<ExitData>(EventKind::Exit, ts, pid, tgid, "x"),
            data: ExitData {
                exit_code: code,
                group_dead: dead,
                parent_tgid: 0,
                parent_waiting: 0,
                cgroup_id: 0,
                pidns: 0,
                ns_pid: 0,
                flags: 0,
                reaper_tgid: 0,
            },
        }))
        .unwrap()
    }
    fn reap(ts: u64, reaper: u32, pid: u32, source: u32) -> KernelEvent {
        decode(&encode(&Event {
            header: header_for::<ReapData>(EventKind::Reap, ts, reaper, reaper, "sh"),
            data: ReapData {
                reaped_pid: pid,
                source,
            },
        }))
        .unwrap()
    }
    fn exec(ts: u64, pid: u32, file: &str, argv: &[&str]) -> KernelEvent {
        KernelEvent {
            header: header_for::<watcher_common::ExecData>(
                EventKind::Exec,
                ts,
                pid,
                pid,
                "python3",
            ),
            payload: Payload::Exec(Exec {
                old_pid: pid,
                filename: file.into(),
                argv: crate::kernel::argv::Argv::from_args(argv),
                argv_truncated: false,
                cgroup_id: 0,
            }),
        }
    }

    #[test]
    fn a_fault_in_a_thread_of_an_unknown_process_is_ignored_not_a_panic() {
        let mut t = ProcessTable::with_parent_lookup(100, Box::new(|_| Some(1)));
        // Thread 501 of process 500, neither known (evicted, or missed in a loss).
        let ev = decode(&encode(&Event {
            header: header_for::<watcher_common::SignalData>(EventKind::Signal, 1, 501, 500, "w"),
            data: watcher_common::SignalData {
                target_pid: 501,
                sig: 11,
                code: 1,
                group: 0,
                source: watcher_common::SIGNAL_GENERATED,
                ..Default::default()
            },
        }))
        .unwrap();
        let touched = t.apply(&ev);
        assert!(touched.subject.get(&t).is_none());
    }

    #[test]
    fn the_children_index_follows_the_table() {
        let mut t = ProcessTable::with_parent_lookup(100_000, Box::new(|_| Some(1)));
        for i in 0..10_000u32 {
            t.apply(&fork(i as u64, 1, 100_000 + i, 0));
            t.apply(&exit(i as u64 + 1, 100_000 + i, 100_000 + i, 0, 1));
            t.apply(&reap(i as u64 + 2, 1, 100_000 + i, 1));
        }
        assert!(
            t.kids.values().map(|s| s.len()).sum::<usize>() <= 1,
            "reaped children leave the index"
        );
        assert!(
            t.kids
                .keys()
                .all(|p| t.get(*p).is_some() || !t.kids[p].is_empty()),
            "an empty set only for a parent in the table"
        );
        t.apply(&fork(1, 1, 50, 0));
        t.apply(&fork(2, 50, 51, 0));
        assert!(t.kids[&50].contains(&51));
        t.apply(&exit(3, 50, 50, 0, 1));
        assert_eq!(t.get(51).unwrap().ppid, 1);
        assert!(t.kids[&1].contains(&51) && t.kids.get(&50).is_none_or(|s| s.is_empty()));
        // Its entry leaves with it.
        t.apply(&reap(4, 1, 50, 1));
        assert!(t.get(50).is_none() && !t.kids.contains_key(&50));
    }

    #[test]
    fn orphans_are_reparented_and_the_reaper_adopts() {
        let mut t = ProcessTable::with_parent_lookup(100, Box::new(|_| Some(42)));
        t.apply(&fork(10, 1, 700, 0));
        t.apply(&fork(11, 700, 701, 0));
        t.apply(&fork(12, 700, 702, 0));
        t.apply(&exit(13, 701, 701, 0, 1));
        t.apply(&exit(14, 700, 700, 0, 1));
        let mut re = t.reparented.clone();
        re.sort();
        assert_eq!(
            re.iter().map(|(k, p)| (k.tgid, *p)).collect::<Vec<_>>(),
            vec![(701, 42), (702, 42)]
        );
        assert_eq!(t.get(702).unwrap().ppid, 42);
        t.apply(&reap(15, 42, 701, 1));
        assert!(t.get(701).is_none());
    }

    /// An exit record as the kernel side writes it when it named the
    /// process's new reaper (`reaper`), or found it had no children (`flags`).
    fn exit_told(ts: u64, tgid: u32, reaper: u32, flags: u32) -> KernelEvent {
        let mut ev = exit(ts, tgid, tgid, 0, 1);
        if let Payload::Exit(x) = &mut ev.payload {
            x.reaper_tgid = reaper;
            x.flags = flags;
        }
        ev
    }

    #[test]
    fn the_new_parent_the_kernel_names_is_taken_without_asking_proc() {
        let mut t = ProcessTable::with_parent_lookup(
            100,
            Box::new(|pid| panic!("/proc asked for the parent of {pid}")),
        );
        t.apply(&fork(10, 1, 600, 0));
        t.apply(&fork(11, 600, 700, 0));
        t.apply(&fork(12, 700, 701, 0));
        t.apply(&fork(13, 700, 702, 0));
        // 700 ends; the kernel side read that its children go to the subreaper 600.
        t.apply(&exit_told(14, 700, 600, 0));
        let mut re = t.reparented.clone();
        re.sort();
        assert_eq!(
            re.iter().map(|(k, p)| (k.tgid, *p)).collect::<Vec<_>>(),
            vec![(701, 600), (702, 600)]
        );
        assert_eq!(t.get(702).unwrap().ppid, 600);
        assert_eq!(
            (t.stats.new_parents_told, t.stats.new_parents_asked),
            (2, 0)
        );
        // 600 ends with no child left (the kernel says so): those the table
        // still lists were reaped unseen; nothing is asked.
        t.apply(&exit_told(15, 600, 0, watcher_common::EXIT_NO_CHILDREN));
        assert_eq!(t.stats.new_parents_asked, 0);
    }

    #[test]
    fn without_the_kernels_word_the_new_parent_is_asked_of_proc() {
        let mut t = ProcessTable::with_parent_lookup(100, Box::new(|_| Some(42)));
        t.apply(&fork(10, 1, 700, 0));
        t.apply(&fork(11, 700, 701, 0));
        t.apply(&exit_told(12, 700, 0, 0));
        assert_eq!(t.get(701).unwrap().ppid, 42);
        assert_eq!(
            (t.stats.new_parents_told, t.stats.new_parents_asked),
            (0, 1)
        );
    }

    #[test]
    fn program_identity() {
        let a = program_id(
            Identity::ExeAndArgs,
            Some("/usr/bin/python3"),
            "python3",
            Some(&crate::kernel::argv::Argv::from_args(["python3", "a.py"])),
            None,
        );
        let b = program_id(
            Identity::ExeAndArgs,
            Some("/usr/bin/python3"),
            "python3",
            Some(&crate::kernel::argv::Argv::from_args(["python3", "b.py"])),
            None,
        );
        let a2 = program_id(
            Identity::ExeAndArgs,
            Some("/usr/bin/python3"),
            "python3",
            Some(&crate::kernel::argv::Argv::from_args([
                "/usr/bin/python3",
                "a.py",
            ])),
            None,
        );
        assert_ne!(a, b);
        assert_eq!(a, a2, "argv[0] does not change the program");
        // A login shell (`-bash`) is the shell.
        let login = program_id(
            Identity::ExeAndArgs,
            Some("/usr/bin/bash"),
            "bash",
            Some(&crate::kernel::argv::Argv::from_args(["-bash"])),
            None,
        );
        let shell = program_id(
            Identity::ExeAndArgs,
            Some("/usr/bin/bash"),
            "bash",
            Some(&crate::kernel::argv::Argv::from_args(["bash"])),
            None,
        );
        assert_eq!(login, shell);
        let ea = program_id(
            Identity::Exe,
            Some("/usr/bin/python3"),
            "python3",
            Some(&crate::kernel::argv::Argv::from_args(["python3", "a.py"])),
            None,
        );
        let eb = program_id(
            Identity::Exe,
            Some("/usr/bin/python3"),
            "python3",
            Some(&crate::kernel::argv::Argv::from_args(["python3", "b.py"])),
            None,
        );
        assert_eq!(ea, eb);
        // Within one container: replicas in two containers are two programs.
        let argv = crate::kernel::argv::Argv::from_args(["sleep", "1000"]);
        let c1 = program_id(
            Identity::ExeAndArgs,
            Some("/bin/sleep"),
            "sleep",
            Some(&argv),
            Some("c1"),
        );
        let c1b = program_id(
            Identity::ExeAndArgs,
            Some("/bin/sleep"),
            "sleep",
            Some(&argv),
            Some("c1"),
        );
        let c2 = program_id(
            Identity::ExeAndArgs,
            Some("/bin/sleep"),
            "sleep",
            Some(&argv),
            Some("c2"),
        );
        let host = program_id(
            Identity::ExeAndArgs,
            Some("/bin/sleep"),
            "sleep",
            Some(&argv),
            None,
        );
        assert_eq!(c1, c1b);
        assert!(c1 != c2 && c1 != host && c2 != host);
        // Stable across runs: a fixed value.
        assert_eq!(fnv1a(&[b"x"]), fnv1a(&[b"x"]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }

    #[test]
    fn fork_exec_exit_reap() {
        let mut t = ProcessTable::new(100);
        let touched = t.apply(&fork(10, 1, 200, 0x11));
        assert_eq!(
            touched.subject.get(&t).map(|p| (p.key.tgid, p.ppid)),
            Some((200, 1))
        );
        let touched = t.apply(&exec(11, 200, "/usr/bin/python3", &["python3", "app.py"]));
        let p = touched.subject.get(&t).cloned().unwrap();
        assert_eq!(p.exe.as_deref(), Some("/usr/bin/python3"));
        assert_eq!(p.command_line().as_deref(), Some("python3 app.py"));
        assert_eq!(&*p.comm, "python3");
        let touched = t.apply(&exit(12, 200, 200, 0x300, 1));
        let p = touched.subject.get(&t).cloned().unwrap();
        assert_eq!(p.exited, Some((12, ExitStatus::Code(3))));
        // Reaped by its parent: gone from the table, returned as it was.
        let touched = t.apply(&reap(13, 1, 200, 1));
        assert_eq!(touched.subject.get(&t).map(|p| p.key.tgid), Some(200));
        assert!(touched.subject == Who::Gone, "reaped: handed on as it was");
        assert!(t.get(200).is_none());
    }

    #[test]
    fn pid_reuse_does_not_merge_processes() {
        let mut t = ProcessTable::new(100);
        t.apply(&fork(10, 1, 300, 0));
        t.apply(&exec(11, 300, "/bin/old", &["old"]));
        // The exit and reap of the first 300 were lost; a new process gets pid 300.
        let touched = t.apply(&fork(50, 7, 300, 0));
        let p = touched.subject.get(&t).cloned().unwrap();
        assert_eq!(
            p.key,
            ProcKey {
                tgid: 300,
                start_ns: 50
            }
        );
        assert_eq!(p.ppid, 7);
        assert_ne!(p.exe.as_deref(), Some("/bin/old"));
        assert_eq!(t.stats.replaced, 1);
    }

    #[test]
    fn threads_exit_one_by_one() {
        let mut t = ProcessTable::new(100);
        t.apply(&fork(10, 1, 400, 0));
        t.apply(&fork(11, 400, 401, CLONE_THREAD));
        t.apply(&fork(12, 400, 402, CLONE_THREAD));
        assert_eq!(t.get(400).unwrap().threads, 3);
        // The leader exits first, not the last: the process lives on.
        t.apply(&exit(13, 400, 400, 0, 0));
        assert!(t.get(400).unwrap().exited.is_none());
        t.apply(&exit(14, 401, 400, 0, 0));
        t.apply(&exit(15, 402, 400, 0x100, 1));
        assert_eq!(t.get(400).unwrap().exited, Some((15, ExitStatus::Code(1))));
    }

    #[test]
    fn a_namespace_inits_children_are_not_handed_to_anyone() {
        let mut t = ProcessTable::with_parent_lookup(100, Box::new(|_| Some(1)));
        t.apply(&fork(10, 50, 700, 0));
        t.apply(&fork(11, 700, 701, 0));
        let ev = |pid, ns_pid| {
            decode(&encode(&Event {
                header: header_for::<ExitData>(EventKind::Exit, 12, pid, pid, "init"),
                data: ExitData {
                    exit_code: 9,
                    group_dead: 1,
                    parent_tgid: 50,
                    parent_waiting: 0,
                    cgroup_id: 0,
                    pidns: 4026532000,
                    ns_pid,
                    flags: 0,
                    reaper_tgid: 0,
                },
            }))
            .unwrap()
        };
        t.apply(&ev(700, 1));
        assert!(
            t.reparented.is_empty(),
            "the kernel reaps a dying namespace's processes"
        );
        assert_eq!(t.get(701).unwrap().ppid, 700);
        assert_eq!(t.get(700).unwrap().pidns, 4026532000);
        // An ordinary parent's children are handed on.
        t.apply(&fork(13, 50, 800, 0));
        t.apply(&fork(14, 800, 801, 0));
        t.apply(&ev(800, 7));
        assert_eq!(
            t.reparented
                .iter()
                .map(|(k, p)| (k.tgid, *p))
                .collect::<Vec<_>>(),
            vec![(801, 1)]
        );
    }

    #[test]
    fn a_parent_evicted_by_its_childs_fork_is_handed_on_as_it_was() {
        // (16 entries: the smallest table.)
        let mut t = ProcessTable::new(16);
        for i in 0..16 {
            t.apply(&fork(10 + i as u64, 1, 100 + i, 0));
        }
        // Full: the newest live process (115, the parent) makes room for 200.
        let touched = t.apply(&fork(40, 115, 200, 0));
        assert!(t.get(115).is_none(), "the table evicted the parent");
        assert_eq!(touched.parent.get(&t).map(|p| p.key.tgid), Some(115));
        assert_eq!(touched.subject.get(&t).map(|p| p.ppid), Some(115));
    }

    #[test]
    fn wait4_of_a_stopped_child_is_not_a_reap() {
        let mut t = ProcessTable::new(100);
        t.apply(&fork(10, 1, 500, 0));
        let touched = t.apply(&reap(11, 1, 500, 1));
        assert!(touched.subject.get(&t).is_some());
        assert!(
            t.get(500).is_some(),
            "a live process must stay in the table"
        );
    }

    #[test]
    fn reap_without_wait() {
        let mut t = ProcessTable::new(100);
        t.apply(&fork(10, 1, 600, 0));
        t.apply(&exit(11, 600, 600, 0, 1));
        let touched = t.apply(&reap(12, 999, 600, 3));
        assert!(
            touched.parent.get(&t).is_none(),
            "free runs in an unrelated task: no reaper"
        );
        assert!(t.get(600).is_none());
    }

    #[test]
    fn bounded_with_counted_evictions() {
        let mut t = ProcessTable::new(16);
        for i in 0..100u32 {
            t.apply(&fork(i as u64, 1, 1000 + i, 0));
        }
        assert_eq!(t.len(), 16);
        assert_eq!(t.stats.evicted, 84);
        // Zombies go first.
        t.apply(&exit(500, 1000, 1000, 0, 1));
        let before: Vec<u32> = t.iter().map(|p| p.key.tgid).collect();
        t.apply(&fork(501, 1, 5000, 0));
        assert!(t.get(5000).is_some());
        assert!(
            before
                .iter()
                .filter(|&&p| p != 1000)
                .all(|p| t.get(*p).is_some())
                || t.get(1000).is_some()
        );
    }

    #[test]
    fn seeds_from_proc() {
        let mut t = ProcessTable::new(1 << 16);
        let n = t.seed_from_proc();
        assert!(n > 1);
        let me = t
            .get(std::process::id())
            .expect("this test process is in /proc");
        assert!(me.exe.is_some());
        assert!(me.argv.as_ref().map(|a| !a.is_empty()).unwrap_or(false));
    }

    #[test]
    fn container_ids() {
        let id = "4f1ad7c2b0f0a3c4e5d6b7a8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192";
        assert_eq!(
            container_id_from_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id_from_cgroup(&format!("12:pids:/docker/{id}\n")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id_from_cgroup(&format!(
                "0::/kubepods/burstable/pod1/cri-containerd-{id}.scope"
            ))
            .as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(
            container_id_from_cgroup(&format!("0::/x/{id}0")),
            None,
            "65 hex digits is not an id"
        );
    }

    /// A confirmation's read (`stat` alone) names the same process as the
    /// full read — pid, start, parent — and sees a zombie as one.
    #[test]
    fn a_stat_read_is_the_same_process_as_a_full_read_and_sees_a_zombie() {
        let me = procfs::process::Process::myself().expect("/proc/self");
        let brief = read_stat(&me).expect("stat");
        let full = read_proc(&me, Identity::default()).expect("full");
        assert_eq!(brief.key, full.key);
        assert_eq!(brief.ppid, full.ppid);
        assert!(brief.exited.is_none() && brief.exe.is_none() && brief.argv.is_none());
        // A child that has exited and is not reaped yet.
        let child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let zombie = loop {
            let p = procfs::process::Process::new(pid)
                .ok()
                .and_then(|pr| read_stat(&pr))
                .expect("the unreaped child is in /proc");
            if p.exited.is_some() {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(zombie.key.tgid, pid as u32);
        assert_eq!(zombie.ppid, std::process::id());
        drop(child.wait_with_output());
    }
}
