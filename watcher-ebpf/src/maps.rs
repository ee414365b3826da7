//! Maps shared by all programs. Every map is bounded; per-record loss is
//! counted in `LOST`, and so is every insert a full table refused (plain hash
//! maps, not LRU: an LRU map would evict silently and take a lock per
//! update — save `FORK_RATE`, whose entries are worth nothing once old).
//! Userspace sizes the tables before load and sweeps out entries of tasks
//! that ended unseen (`kernel::tables`).
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use watcher_common::{
    Event, ExecData, ARGS_MAX, COMM_LEN, EXEC_CROWD_ENTRIES, EXEC_WAKE_ENTRIES, FORK_RATE_ENTRIES,
    LOST_SLOTS, READER_ENTRIES,
};

/// All records (ring 0: every CPU's, or the first group's when the layout
/// is one ring per group of CPUs). Userspace sizes each ring before load
/// (`set_max_entries`); rings the layout does not use get one page.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
#[map]
pub static EVENTS_1: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS_2: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS_3: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS_4: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS_5: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS_6: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS_7: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Records that could not be reserved (ring buffer full), per CPU, indexed by kind.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// Per CPU: CLOCK_MONOTONIC time of the last wakeup of the reader from
/// this CPU (lazy records wait [`watcher_common::wake::LAZY_INTERVALS`]
/// intervals after it).
#[map]
pub static LAST_WAKE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// [0] Whether the reader sleeps (`watcher_common::wake::READER_*`):
/// written by the reader through its mapping of this array before it
/// sleeps and when it wakes; swapped here by every deciding record. Zero
/// (as loaded): asleep. [1] Forks before this time are urgent (written by
/// the reader; 0 as loaded: none). [2] Every loss (added to here,
/// atomically; read by the reader with a load). [3] From how many live
/// processes of its name an exec is urgent (written by the reader; 0 as
/// loaded: never).
#[map]
pub static READER: Array<u64> = Array::with_max_entries(READER_ENTRIES, BPF_F_MMAPABLE);

/// Programs whose next exec can decide a finding, by the `comm` the exec
/// gives them; kept by userspace (`watcher_common::wake`). Never written here.
#[map]
pub static EXEC_WAKE: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(EXEC_WAKE_ENTRIES, 0);

/// Processes that exec'd while watcher runs (tgid → the name the exec gave
/// them), until they end: each is counted once in `EXEC_CROWD` under that
/// name. Full, a process goes uncounted (no loss: only how soon its name's
/// execs are read depends on it). Userspace sizes it and sweeps out entries
/// of processes that ended unseen.
#[map]
pub static EXEC_LIVE: HashMap<u32, [u8; COMM_LEN]> = HashMap::with_max_entries(32768, 0);

/// How many live processes have each name from an exec (`EXEC_LIVE`'s
/// entries, by value); a name leaves when its count drops to zero. Signed:
/// a race between an exec and the last exit of a name can lose a count and
/// leave it below the truth (never above). Full, a new name goes uncounted.
#[map]
pub static EXEC_CROWD: HashMap<[u8; COMM_LEN], i64> =
    HashMap::with_max_entries(EXEC_CROWD_ENTRIES, 0);

/// One parent's forks (processes, not threads) in one second of the
/// records' clock.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct ForkRate {
    /// The second (ns / 10⁹).
    pub second: u64,
    /// Forks in it so far.
    pub count: u64,
}

/// Each parent's forks in the current second, by tgid, counted the way
/// `fork_storm` counts them (so the fork that reaches its rate is known
/// here and wakes the reader: `watcher_common::wake::fork`). The one LRU
/// map: an evicted entry is the count of the parent that forked least
/// recently, worth nothing a second later; the lock an LRU insert takes is
/// taken once per new parent, a count is added to in place.
#[map]
pub static FORK_RATE: LruHashMap<u32, ForkRate> =
    LruHashMap::with_max_entries(FORK_RATE_ENTRIES, 0);

/// An exec record being built: the header, the fixed part and up to
/// [`ARGS_MAX`] bytes of the argument vector; written to the ring at its
/// actual size (`bpf_ringbuf_output`), so a short command line costs a
/// short record.
#[repr(C)]
pub struct ExecScratch {
    pub event: Event<ExecData>,
    pub args: [u8; ARGS_MAX],
}

/// One [`ExecScratch`] per CPU (a program runs to its end on one CPU).
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecScratch> = PerCpuArray::with_max_entries(1, 0);

/// The arguments of a bind/connect in flight, read at syscall entry, keyed by pid_tgid.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct PendingSock {
    pub fd: i32,
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
    pub scope_id: u32,
    pub _pad: u32,
}

#[map]
pub static PENDING_SOCK: HashMap<u64, PendingSock> = HashMap::with_max_entries(16384, 0);

/// waitid arguments in flight (infop pointer, options), keyed by pid_tgid.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct PendingWaitid {
    pub infop: u64,
    pub options: u64,
}

#[map]
pub static PENDING_WAITID: HashMap<u64, PendingWaitid> = HashMap::with_max_entries(16384, 0);

/// Exited thread-group leaders not yet seen reaped by a wait. A `sched_process_free`
/// of a pid found here is a reap without wait; others (threads, processes already
/// reaped by wait4/waitid) are not forwarded.
/// The value is the leader's `task_struct` (a freed task is its own, not a
/// later process's that reused the pid).
#[map]
pub static EXITED: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);

/// Exited leaders whose pid a newer exit took over in `EXITED` before their
/// free came, by `task_struct` → pid. A process its kernel reaps at once
/// (SIGCHLD ignored) gives its pid back at its exit but is freed only after
/// an RCU grace period: a fork loop can reuse the pid, end and be waited for
/// in between, and the older free found no entry (1–33 of 2,000 reaps under
/// load went unreported, without a loss). Entries leave at their free; full,
/// an insert is counted as the `exited` table's loss.
#[map]
pub static EXITED_SHADOWED: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Kernels whose `sched_process_exit` has no `group_dead` (before 6.18): the
/// thread groups whose end one exiting thread has already claimed, so exactly
/// one exit record says the process ended. Cleared when the leader is freed.
#[map]
pub static GROUP_END: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// Processes (tgid) inside wait4/waitid now, with the entry time: a child
/// exiting while its parent waits is about to be reaped.
#[map]
pub static IN_WAIT: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Pid-namespace reaps: a wait4/waitid inside a pid namespace returns the
/// child's pid as that namespace sees it. At a process's end, when its parent
/// lives in a nested namespace, (parent tgid << 32 | the child's pid in the
/// parent's namespace) → the child's host pid; the reaping syscall looks it up.
#[map]
pub static NS_REAP: HashMap<u64, u32> = HashMap::with_max_entries(16384, 0);

/// TCP sockets (`struct sock` address) bound while watcher runs
/// (`conf.track_bound`); each leaves at its `tcp_destroy_sock`, which is
/// then forwarded. Full, a bind goes without `BIND_TRACKED` (not a loss:
/// its holder is confirmed by a lookup instead; how full it is shows in
/// `watcher_kernel_table_entries{table="bound"}`).
#[map]
pub static BOUND: HashMap<u64, u8> = HashMap::with_max_entries(16384, 0);
