//! The kernel side's own tables (bounded hash maps: a bind's arguments until
//! it returns, exited processes until they are reaped, …). A full table
//! refuses an insert, and the kernel counts the refusal in `LOST` (the
//! pipeline reports it as a loss and reconciles with `/proc`, as after a full
//! ring). A task that ends without the event that clears its entry (killed
//! inside a syscall, reaped where no wait is seen) would leave the entry
//! forever: the sweeper removes entries whose task is gone, on a thread of
//! its own, and reports how full each table is.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use aya::{
    maps::{HashMap, MapData},
    Ebpf,
};
use watcher_common::{KernelTable, COMM_LEN, MAP_EXEC_CROWD};

/// How one table looked at the last sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableState {
    pub entries: u64,
    pub capacity: u64,
    /// Entries removed by sweeps since start (their task had ended unseen).
    pub swept: u64,
}

pub(crate) type TableStates = Arc<Mutex<BTreeMap<&'static str, TableState>>>;

/// What an entry's key (and value) say about the task it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A thread: `/proc/<tgid>/task/<tid>`.
    Thread { tgid: u32, tid: u32 },
    /// A process (or zombie): `/proc/<pid>`.
    Process(u32),
    /// A socket (BOUND): it leaves at its destruction, never swept.
    Socket,
}

/// Whose entry this is: tables keyed by pid_tgid belong to a thread; EXITED,
/// GROUP_END and IN_WAIT to a process; NS_REAP to the child its value names.
pub(crate) fn owner(table: KernelTable, key: u64, value: u32) -> Owner {
    match table {
        KernelTable::PendingSock | KernelTable::PendingWaitid => Owner::Thread {
            tgid: (key >> 32) as u32,
            tid: key as u32,
        },
        KernelTable::Exited
        | KernelTable::GroupEnd
        | KernelTable::InWait
        | KernelTable::ExecLive => Owner::Process(key as u32),
        KernelTable::NsReap => Owner::Process(value),
        KernelTable::Bound => Owner::Socket,
    }
}

/// Whether the owner still exists under `proc` (zombies do: they are still to be reaped).
pub(crate) fn alive(proc: &Path, o: Owner) -> bool {
    match o {
        Owner::Thread { tgid, tid } => proc
            .join(tgid.to_string())
            .join("task")
            .join(tid.to_string())
            .exists(),
        Owner::Process(pid) => proc.join(pid.to_string()).exists(),
        Owner::Socket => true,
    }
}

enum Map {
    PendingSock(HashMap<MapData, u64, [u8; 32]>),
    PendingWaitid(HashMap<MapData, u64, [u8; 16]>),
    ByPid(HashMap<MapData, u32, u32>),
    /// Keyed by pid, a u64 value (EXITED: the leader's task; IN_WAIT).
    ByPidWide(HashMap<MapData, u32, u64>),
    NsReap(HashMap<MapData, u64, u32>),
    Bound(HashMap<MapData, u64, u8>),
    /// EXEC_LIVE (tgid → name), and the count by name its entries are in
    /// (`EXEC_CROWD`): an entry swept leaves its name's count too.
    ExecLive(
        HashMap<MapData, u32, [u8; COMM_LEN]>,
        Option<HashMap<MapData, [u8; COMM_LEN], i64>>,
    ),
}

impl Map {
    /// Its (key, value) pairs (value 0 where only the key tells the owner).
    fn pairs(&self) -> Vec<(u64, u32)> {
        match self {
            Map::PendingSock(m) => m.keys().flatten().map(|k| (k, 0)).collect(),
            Map::PendingWaitid(m) => m.keys().flatten().map(|k| (k, 0)).collect(),
            Map::ByPid(m) => m.keys().flatten().map(|k| (k as u64, 0)).collect(),
            Map::ByPidWide(m) => m.keys().flatten().map(|k| (k as u64, 0)).collect(),
            Map::NsReap(m) => m.iter().flatten().collect(),
            Map::Bound(m) => m.keys().flatten().map(|k| (k, 0)).collect(),
            Map::ExecLive(m, _) => m.keys().flatten().map(|k| (k as u64, 0)).collect(),
        }
    }
}

/// The tables, taken out of the loaded object.
pub struct Tables {
    maps: Vec<(KernelTable, u32, Map)>,
    strikes: Strikes,
}

/// Entries whose task was gone at the last sweep. An entry is removed only
/// when its task is gone at two sweeps in a row: a child its kernel reaps
/// without a wait (SIGCHLD ignored) leaves `/proc` at its exit, but its
/// `sched_process_free` — which reports the reap and removes the entry —
/// comes only after an RCU grace period, which can be long (seconds in an
/// emulated guest). Removed at once, the entry was gone when the free came,
/// and the reap was never reported (a guest's test caught it).
#[derive(Default, Debug)]
struct Strikes(std::collections::HashSet<(u32, u64)>);

impl Strikes {
    /// Of the entries gone now (table slot, key), those to remove: gone at
    /// the previous sweep too. The others are remembered for the next.
    fn judge(&mut self, gone: Vec<(u32, u64)>) -> Vec<(u32, u64)> {
        let (remove, first): (Vec<_>, Vec<_>) = gone.into_iter().partition(|e| self.0.contains(e));
        self.0 = first.into_iter().collect();
        remove
    }
}

impl Tables {
    /// Take the tables out of `ebpf` (the programs keep using them).
    /// Tables a kernel object lacks are skipped.
    pub fn take(ebpf: &mut Ebpf, capacity: impl Fn(KernelTable) -> u32) -> Tables {
        let mut maps = Vec::new();
        for t in KernelTable::ALL {
            let Some(m) = ebpf.take_map(t.map_name()) else {
                continue;
            };
            let map = match t {
                KernelTable::PendingSock => HashMap::try_from(m).ok().map(Map::PendingSock),
                KernelTable::PendingWaitid => HashMap::try_from(m).ok().map(Map::PendingWaitid),
                KernelTable::GroupEnd => HashMap::try_from(m).ok().map(Map::ByPid),
                KernelTable::Exited | KernelTable::InWait => {
                    HashMap::try_from(m).ok().map(Map::ByPidWide)
                }
                KernelTable::NsReap => HashMap::try_from(m).ok().map(Map::NsReap),
                KernelTable::Bound => HashMap::try_from(m).ok().map(Map::Bound),
                KernelTable::ExecLive => HashMap::try_from(m).ok().map(|live| {
                    let crowd = ebpf
                        .take_map(MAP_EXEC_CROWD)
                        .and_then(|c| HashMap::try_from(c).ok());
                    Map::ExecLive(live, crowd)
                }),
            };
            match map {
                Some(map) => maps.push((t, capacity(t), map)),
                None => tracing::warn!(
                    "kernel table {} has an unexpected layout: not swept",
                    t.map_name()
                ),
            }
        }
        Tables {
            maps,
            strikes: Strikes::default(),
        }
    }

    /// Remove the entries whose task is gone; how full each table is now.
    pub fn sweep(&mut self, proc: &Path) -> Vec<(KernelTable, TableState)> {
        // First which entries' tasks are gone (keys read before any removal:
        // a map must not change under its own iteration) …
        let mut gone = Vec::new();
        for (t, _, map) in &self.maps {
            let pairs = map.pairs();
            gone.extend(
                pairs
                    .iter()
                    .filter(|(k, v)| !alive(proc, owner(*t, *k, *v)))
                    .map(|(k, _)| (t.slot(), *k)),
            );
        }
        // … then remove those that were gone at the last sweep already.
        let remove: std::collections::HashSet<(u32, u64)> =
            self.strikes.judge(gone).into_iter().collect();
        let mut out = Vec::new();
        for (t, cap, map) in &mut self.maps {
            let pairs = map.pairs();
            let mut swept = 0;
            for (k, _) in &pairs {
                if !remove.contains(&(t.slot(), *k)) {
                    continue;
                }
                let removed = match map {
                    Map::PendingSock(m) => m.remove(k).is_ok(),
                    Map::PendingWaitid(m) => m.remove(k).is_ok(),
                    Map::ByPid(m) => m.remove(&(*k as u32)).is_ok(),
                    Map::ByPidWide(m) => m.remove(&(*k as u32)).is_ok(),
                    Map::NsReap(m) => m.remove(k).is_ok(),
                    Map::Bound(m) => m.remove(k).is_ok(),
                    Map::ExecLive(live, crowd) => {
                        let name = live.get(&(*k as u32), 0).ok();
                        let removed = live.remove(&(*k as u32)).is_ok();
                        if let (true, Some(name), Some(crowd)) = (removed, name, crowd.as_mut()) {
                            // (Not atomic with the kernel's adds: a race with
                            // an exec or exit of that name leaves it one off.)
                            match crowd.get(&name, 0) {
                                Ok(n) if n > 1 => {
                                    let _ = crowd.insert(name, n - 1, 0);
                                }
                                Ok(_) => {
                                    let _ = crowd.remove(&name);
                                }
                                Err(_) => {}
                            }
                        }
                        removed
                    }
                };
                swept += removed as u64;
            }
            out.push((
                *t,
                TableState {
                    entries: pairs.len() as u64 - swept,
                    capacity: *cap as u64,
                    swept,
                },
            ));
        }
        out
    }

    /// Sweep every `interval` on a thread of its own (the first at once),
    /// until `stop` is dropped; each table's state goes to `states`.
    pub fn spawn_sweeper(mut self, interval: Duration, states: TableStates) -> mpsc::Sender<()> {
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("watcher-tables".into())
            .spawn(move || {
                crate::kernel::sched::run_as_helper();
                loop {
                    let now = self.sweep(Path::new("/proc"));
                    if let Ok(mut s) = states.lock() {
                        for (t, st) in now {
                            let e = s.entry(t.as_str()).or_default();
                            e.entries = st.entries;
                            e.capacity = st.capacity;
                            e.swept += st.swept;
                        }
                    }
                    match stopped.recv_timeout(interval) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            });
        if spawned.is_err() {
            tracing::warn!(
                "cannot start the kernel-table sweeper: entries of tasks that ended unseen stay"
            );
        }
        stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_belongs_to_its_thread_process_or_reaped_child() {
        let key = (4121u64 << 32) | 4133;
        assert_eq!(
            owner(KernelTable::PendingSock, key, 0),
            Owner::Thread {
                tgid: 4121,
                tid: 4133
            }
        );
        assert_eq!(
            owner(KernelTable::PendingWaitid, key, 0),
            Owner::Thread {
                tgid: 4121,
                tid: 4133
            }
        );
        assert_eq!(owner(KernelTable::Exited, 77, 0), Owner::Process(77));
        assert_eq!(owner(KernelTable::InWait, 78, 0), Owner::Process(78));
        assert_eq!(owner(KernelTable::GroupEnd, 79, 0), Owner::Process(79));
        // NS_REAP: (parent << 32 | pid inside the namespace) → the child's host pid.
        assert_eq!(
            owner(KernelTable::NsReap, (4121u64 << 32) | 2, 5000),
            Owner::Process(5000)
        );
    }

    #[test]
    fn an_entry_is_swept_only_when_gone_at_two_sweeps_in_a_row() {
        let mut s = Strikes::default();
        // Gone once: kept (its free may still come).
        assert!(s.judge(vec![(2, 10), (2, 11)]).is_empty());
        // 10 still gone: removed; 11 came back (its free removed it, or
        // it was never gone); 12 gone for the first time: kept.
        assert_eq!(s.judge(vec![(2, 10), (2, 12)]), vec![(2, 10)]);
        assert_eq!(s.judge(vec![(2, 12)]), vec![(2, 12)]);
        assert!(s.judge(vec![]).is_empty());
    }

    #[test]
    fn liveness_is_read_from_the_proc_tree_given() {
        let dir = std::env::temp_dir().join(format!("watcher-tables-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("10/task/11")).unwrap();
        assert!(alive(&dir, Owner::Process(10)));
        assert!(alive(&dir, Owner::Thread { tgid: 10, tid: 11 }));
        assert!(
            !alive(&dir, Owner::Thread { tgid: 10, tid: 12 }),
            "a thread that ended"
        );
        assert!(!alive(&dir, Owner::Process(12)), "a process that ended");
        // This process, in the real /proc.
        let me = std::process::id();
        assert!(alive(
            Path::new("/proc"),
            Owner::Thread { tgid: me, tid: me }
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
