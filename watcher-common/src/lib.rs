//! The one wire format between watcher's kernel programs and its userspace.
//!
//! Every record written to the ring buffer is an [`Event<T>`]: a [`Header`]
//! followed by a kind-specific payload. Structs are `#[repr(C)]`, use only
//! fixed-size integers and byte arrays (no `bool`, `Option` or data-carrying
//! enums), carry explicit padding, and have a compile-time size assertion, so
//! the layout the kernel writes is the layout userspace reads.
//!
//! Kind numbers are part of the format: a retired number is never reused.
#![no_std]

pub mod wake;

/// Length of a task's `comm`, as in the kernel.
pub const COMM_LEN: usize = 16;
/// Bytes of an exec'd filename kept in an [`ExecData`] record.
pub const FILENAME_LEN: usize = 256;
/// Most bytes of an argument vector (NUL-separated, as in
/// `/proc/<pid>/cmdline`) an exec record can carry: the size of the kernel
/// side's per-CPU scratch area. A power of two: the kernel side masks with it.
pub const ARGS_MAX: usize = 16384;
/// Bytes of the argument vector an exec record carries unless the load says
/// otherwise ([`Config::args_cap`]).
pub const ARGS_CAP_DEFAULT: u32 = 4096;

/// Name of the ring buffer map.
pub const MAP_EVENTS: &str = "EVENTS";
/// The ring buffers, in order: ring i of the layout is `MAP_RINGS[i]`.
pub const MAP_RINGS: [&str; RINGS] = [
    "EVENTS", "EVENTS_1", "EVENTS_2", "EVENTS_3", "EVENTS_4", "EVENTS_5", "EVENTS_6", "EVENTS_7",
];
/// Ring buffers at most (one per group of CPUs).
pub const RINGS: usize = 8;
/// Name of the per-CPU array of lost-record counters, indexed by [`EventKind`];
/// slot 0 counts every loss (whatever its kind), slots from
/// [`TABLE_FULL_BASE`] count refused inserts into the kernel's own tables
/// ([`KernelTable`]): each one is information lost, like a record.
pub const MAP_LOST: &str = "LOST";
/// Name of the hash map of programs whose next exec can decide a finding,
/// by the `comm` an exec gives them (the executable's name, at most 15
/// bytes, NUL-padded): userspace keeps it ([`crate::wake`]); an exec of a
/// program in it wakes the reader at once. The all-zero key
/// ([`EXEC_WAKE_ALL`]) makes every exec do so.
pub const MAP_EXEC_WAKE: &str = "EXEC_WAKE";
/// Entries of [`MAP_EXEC_WAKE`] (userspace keeps one free for [`EXEC_WAKE_ALL`]).
pub const EXEC_WAKE_ENTRIES: u32 = 4096;
/// The [`MAP_EXEC_WAKE`] key that makes every exec wake the reader (no
/// program's name is empty).
pub const EXEC_WAKE_ALL: [u8; COMM_LEN] = [0; COMM_LEN];
/// Name of the reader's state in the kernel (an array of [`READER_ENTRIES`]
/// `u64`s, mapped into userspace's memory). Entry 0: [`wake::READER_ASLEEP`],
/// [`wake::READER_DOZING`], [`wake::READER_AWAKE`] or
/// [`wake::READER_URGENT`] — the reader says there whether it sleeps; a
/// deciding record wakes it only when it does. Entry [`READER_FORKS_UNTIL`]:
/// forks before this time (kernel ns) can decide a finding (a fork storm
/// about to be decided), and are urgent. Entry [`READER_LOST_TOTAL`]: every
/// record lost and every insert a full table refused, counted by the kernel
/// (an atomic add; the reader reads it with a load after each drain, and the
/// per-CPU slots of `LOST` only when it moved). Entry [`READER_EXEC_CROWD`]:
/// an exec is urgent when this many live processes (its own included) got
/// its name from an exec the kernel saw (0: never; [`crate::wake::exec`]).
/// Entry [`READER_FORK_RATE`]: a fork is urgent when it is its parent's
/// this-many-th in a second, as the kernel counts them (0: never;
/// [`crate::wake::fork`]).
pub const MAP_READER: &str = "READER";
/// Entries of [`MAP_READER`].
pub const READER_ENTRIES: u32 = 5;
/// The [`MAP_READER`] entry that says until when forks are urgent.
pub const READER_FORKS_UNTIL: u32 = 1;
/// The [`MAP_READER`] entry that counts every loss.
pub const READER_LOST_TOTAL: u32 = 2;
/// The [`MAP_READER`] entry that says from how many live processes of one
/// name an exec of that name is urgent (written by userspace: one more than
/// `duplicate_instances`' limit, 0 when it is off).
pub const READER_EXEC_CROWD: u32 = 3;
/// The [`MAP_READER`] entry that says which of a parent's forks in a second
/// is urgent (written by userspace: `fork_storm`'s rate, the fork that can
/// open a finding; 0 when it is off).
pub const READER_FORK_RATE: u32 = 4;
/// Name of the kernel's count of each parent's forks in the current second
/// (see [`wake::fork`]).
pub const MAP_FORK_RATE: &str = "FORK_RATE";
/// Entries of `FORK_RATE`: parents that forked recently, the least recent
/// evicted (an LRU map: a count from an earlier second is worth nothing).
pub const FORK_RATE_ENTRIES: u32 = 4096;
/// Name of the kernel's count of live processes by the name (`comm`) an
/// exec gave them (see [`KernelTable::ExecLive`]).
pub const MAP_EXEC_CROWD: &str = "EXEC_CROWD";
/// Entries of the kernel's count of live processes by the name (`comm`) an
/// exec gave them (`EXEC_CROWD`; a name whose count drops to zero leaves).
/// Full, a new name goes uncounted (its execs are urgent only when
/// userspace lists them): nothing is lost.
pub const EXEC_CROWD_ENTRIES: u32 = 4096;
/// Name of the load-time configuration global.
pub const GLOBAL_CONFIG: &str = "CONFIG";
/// Number of slots in [`MAP_LOST`]: one per kind number below
/// [`TABLE_FULL_BASE`] (0 = the total), then one per [`KernelTable`].
pub const LOST_SLOTS: u32 = 32;
/// The first [`MAP_LOST`] slot that counts a full kernel table.
pub const TABLE_FULL_BASE: u32 = 16;

/// The kernel side's own bounded tables (hash maps). A full one refuses an
/// insert; the refusal is counted in [`MAP_LOST`] at `TABLE_FULL_BASE + table`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelTable {
    /// bind/connect arguments between syscall entry and exit.
    PendingSock = 0,
    /// waitid arguments between syscall entry and exit.
    PendingWaitid = 1,
    /// Exited processes not yet reaped.
    Exited = 2,
    /// Thread groups whose end a thread has claimed (kernels before 6.18).
    GroupEnd = 3,
    /// Processes inside wait4/waitid.
    InWait = 4,
    /// Reaps inside pid namespaces (namespace pid → host pid).
    NsReap = 5,
    /// TCP sockets bound while watcher runs, until the kernel destroys them
    /// (their close is then forwarded: [`SockCloseData`]). Full, a bind goes
    /// untracked: no loss is counted (nothing is lost).
    Bound = 6,
    /// Processes that exec'd while watcher runs, by tgid → the name (`comm`)
    /// the exec gave them, until they end: `EXEC_CROWD` counts them by name
    /// (see [`crate::wake::exec`]). Full, a process goes uncounted: no loss
    /// is counted (nothing is lost; its execs wake the reader as before).
    ExecLive = 7,
}

impl KernelTable {
    pub const ALL: [KernelTable; 8] = [
        KernelTable::PendingSock,
        KernelTable::PendingWaitid,
        KernelTable::Exited,
        KernelTable::GroupEnd,
        KernelTable::InWait,
        KernelTable::NsReap,
        KernelTable::Bound,
        KernelTable::ExecLive,
    ];

    /// The map's name in the object (and in metrics and loss records, lower-cased).
    pub const fn map_name(self) -> &'static str {
        match self {
            KernelTable::PendingSock => "PENDING_SOCK",
            KernelTable::PendingWaitid => "PENDING_WAITID",
            KernelTable::Exited => "EXITED",
            KernelTable::GroupEnd => "GROUP_END",
            KernelTable::InWait => "IN_WAIT",
            KernelTable::NsReap => "NS_REAP",
            KernelTable::Bound => "BOUND",
            KernelTable::ExecLive => "EXEC_LIVE",
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            KernelTable::PendingSock => "pending_sock",
            KernelTable::PendingWaitid => "pending_waitid",
            KernelTable::Exited => "exited",
            KernelTable::GroupEnd => "group_end",
            KernelTable::InWait => "in_wait",
            KernelTable::NsReap => "ns_reap",
            KernelTable::Bound => "bound",
            KernelTable::ExecLive => "exec_live",
        }
    }

    /// Default capacity (entries).
    pub const fn default_entries(self) -> u32 {
        match self {
            KernelTable::Exited => 65536,
            KernelTable::ExecLive => 32768,
            _ => 16384,
        }
    }

    pub const fn slot(self) -> u32 {
        TABLE_FULL_BASE + self as u32
    }

    pub const fn from_slot(slot: u32) -> Option<KernelTable> {
        match slot.wrapping_sub(TABLE_FULL_BASE) {
            0 => Some(KernelTable::PendingSock),
            1 => Some(KernelTable::PendingWaitid),
            2 => Some(KernelTable::Exited),
            3 => Some(KernelTable::GroupEnd),
            4 => Some(KernelTable::InWait),
            5 => Some(KernelTable::NsReap),
            6 => Some(KernelTable::Bound),
            7 => Some(KernelTable::ExecLive),
            _ => None,
        }
    }
}
/// Bytes of a cgroup path kept in a [`CgroupData`] record (relative to its
/// hierarchy's root). A power of two: the kernel side masks with it.
pub const CGROUP_PATH_LEN: usize = 256;

/// The kind of a record. 0 means unknown; numbers are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Unknown = 0,
    Fork = 1,
    Exec = 2,
    Exit = 3,
    Reap = 4,
    Bind = 5,
    Connect = 6,
    TcpState = 7,
    Cgroup = 8,
    Signal = 9,
    SockClose = 10,
}

impl EventKind {
    /// Every kind that appears on the wire, in number order.
    pub const ALL: [EventKind; 10] = [
        EventKind::Fork,
        EventKind::Exec,
        EventKind::Exit,
        EventKind::Reap,
        EventKind::Bind,
        EventKind::Connect,
        EventKind::TcpState,
        EventKind::Cgroup,
        EventKind::Signal,
        EventKind::SockClose,
    ];

    /// The only place kind names come from (used in output `type` fields).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Unknown => "unknown",
            EventKind::Fork => "fork",
            EventKind::Exec => "exec",
            EventKind::Exit => "exit",
            EventKind::Reap => "reap",
            EventKind::Bind => "bind",
            EventKind::Connect => "connect",
            EventKind::TcpState => "tcp_state",
            EventKind::Cgroup => "cgroup",
            EventKind::Signal => "signal",
            EventKind::SockClose => "sock_close",
        }
    }

    pub const fn from_u32(v: u32) -> EventKind {
        match v {
            1 => EventKind::Fork,
            2 => EventKind::Exec,
            3 => EventKind::Exit,
            4 => EventKind::Reap,
            5 => EventKind::Bind,
            6 => EventKind::Connect,
            7 => EventKind::TcpState,
            8 => EventKind::Cgroup,
            9 => EventKind::Signal,
            10 => EventKind::SockClose,
            _ => EventKind::Unknown,
        }
    }
}

/// Common header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// [`EventKind`] number.
    pub kind: u32,
    /// Size in bytes of the whole record (header + payload).
    pub size: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel pid (thread id) of the current task.
    pub pid: u32,
    /// Kernel tgid (process id) of the current task.
    pub tgid: u32,
    /// Real uid of the current task.
    pub uid: u32,
    /// [`HEADER_DECIDING`] when the kernel judged the record one that can
    /// decide a finding (`wake`: it woke the reader, or marked its word).
    pub flags: u32,
    /// `comm` of the current task (NUL-padded).
    pub comm: [u8; COMM_LEN],
}

/// [`Header::flags`]: the record can decide a finding (urgent by the
/// wakeup policy, [`wake`]).
pub const HEADER_DECIDING: u32 = 1;

/// A record: header + payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<T> {
    pub header: Header,
    pub data: T,
}

/// `task/task_newtask`: a task was created by the current task (the parent).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkData {
    /// Thread id of the new task.
    pub child_pid: u32,
    /// Thread group of the new task (the parent's for a thread).
    pub child_tgid: u32,
    /// `clone_flags` (CLONE_THREAD, CLONE_PARENT, …).
    pub clone_flags: u64,
    /// The parent's cgroup (v2 id, the directory's inode), which the child starts in.
    pub cgroup_id: u64,
}

/// `sched/sched_process_exec`: the current task runs a new program. The
/// record is variable-size: this struct (after the header) is followed by
/// `args_len` bytes of the argument vector, and the header's `size` is
/// `size_of::<Event<ExecData>>() + args_len`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecData {
    /// Thread id before exec (differs from the header pid when a non-leader thread exec'd).
    pub old_pid: u32,
    /// Bytes used in `filename` (without NUL).
    pub filename_len: u32,
    /// Bytes of the argument vector that follow this struct in the record.
    pub args_len: u32,
    /// Full length of the argument area (`arg_end - arg_start`); larger than `args_len` when truncated.
    pub args_full_len: u32,
    /// The task's cgroup (v2 id) at exec: a container's processes are in its
    /// cgroup by then (the runtime moves them after the clone).
    pub cgroup_id: u64,
    pub filename: [u8; FILENAME_LEN],
}

/// `group_dead` value when the kernel could not tell.
pub const GROUP_DEAD_UNKNOWN: u32 = 2;

/// `sched/sched_process_exit`: the current task (one thread) exits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitData {
    /// `task_struct.exit_code`: `(code << 8) | signal | 0x80 if core dumped`.
    pub exit_code: u32,
    /// 1 when this was the last live thread of the group, 0 when not,
    /// [`GROUP_DEAD_UNKNOWN`] when it could not be read.
    pub group_dead: u32,
    /// tgid of the parent (`real_parent`) at exit; 0 when unknown.
    pub parent_tgid: u32,
    /// 1 when the parent was inside wait4/waitid at that moment (it is reaping), else 0.
    pub parent_waiting: u32,
    /// The task's cgroup (v2 id).
    pub cgroup_id: u64,
    /// Inode of the process's pid namespace (0 when unknown).
    pub pidns: u32,
    /// The process's pid inside that namespace (1: it is the namespace's init,
    /// whose end makes the kernel kill and reap every process in it); 0 when unknown.
    pub ns_pid: u32,
    /// [`EXIT_PIDNS_DYING`], [`EXIT_UNTRACKED`], [`EXIT_NO_CHILDREN`]: bits.
    pub flags: u32,
    /// When the process ends with children: the tgid they pass to (a child
    /// subreaper above it in its pid namespace, else that namespace's init),
    /// as the kernel will choose; 0 when not read.
    pub reaper_tgid: u32,
}

/// [`ExitData::flags`]: the process's (nested) pid namespace is being torn
/// down — its init has ended, the kernel stopped allocating pids in it and
/// kills and reaps every process left (this exit is one of those).
pub const EXIT_PIDNS_DYING: u32 = 1;
/// [`ExitData::flags`]: the exited-process table was full, so this process's
/// reap will be reported only if a wait4/waitid reaps it (not when the kernel
/// frees it without a wait): userspace checks `/proc` for it instead.
pub const EXIT_UNTRACKED: u32 = 2;
/// [`ExitData::flags`]: the process ended with no child (none left to
/// reparent, whatever userspace's table still lists).
pub const EXIT_NO_CHILDREN: u32 = 4;

/// How a reap was observed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReapSource {
    Unknown = 0,
    /// `syscalls/sys_exit_wait4` (or the fexit of `kernel_wait4`), in the reaper's context.
    Wait4 = 1,
    /// `syscalls/sys_exit_waitid` (or the fexit of `kernel_waitid`), in the reaper's context.
    Waitid = 2,
    /// `sched/sched_process_free` of an exited process no wait was seen for
    /// (SIGCHLD ignored, reaped by a namespace's init): the header is an unrelated task.
    Free = 3,
}

impl ReapSource {
    pub const fn from_u32(v: u32) -> ReapSource {
        match v {
            1 => ReapSource::Wait4,
            2 => ReapSource::Waitid,
            3 => ReapSource::Free,
            _ => ReapSource::Unknown,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            ReapSource::Unknown => "unknown",
            ReapSource::Wait4 => "wait4",
            ReapSource::Waitid => "waitid",
            ReapSource::Free => "free",
        }
    }
}

/// A reap: the exited process `reaped_pid` was released.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReapData {
    pub reaped_pid: u32,
    /// [`ReapSource`] number.
    pub source: u32,
}

/// Address family numbers as in `<sys/socket.h>`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `sys_enter_bind`/`sys_exit_bind` or `sys_enter_connect`/`sys_exit_connect`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockCallData {
    pub fd: i32,
    /// Syscall result: 0 or a negative errno.
    pub ret: i32,
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// Port in host byte order.
    pub port: u16,
    /// `socket.type` (1 = SOCK_STREAM, 2 = SOCK_DGRAM); 0 when unknown.
    pub sock_type: u16,
    /// [`BIND_TRACKED`], or 0.
    pub flags: u16,
    /// Address bytes: IPv4 in the first 4, IPv6 all 16 (network order).
    pub addr: [u8; 16],
    /// IPv6 scope id (0 for IPv4).
    pub scope_id: u32,
    /// Inode of the socket's network namespace (`sk->__sk_common.skc_net`); 0 when unknown.
    pub netns: u32,
    /// Kernel address of the `struct sock` (0 when unknown); joins with [`TcpStateData::skaddr`].
    pub skaddr: u64,
    /// Inode of the socket (binds only; 0 when unknown): what sock_diag and
    /// `/proc/net` report for it, so the socket table names its owner
    /// without looking through `/proc/<pid>/fd`.
    pub inode: u64,
}

/// [`SockCallData::flags`] of a successful TCP bind: the kernel keeps the
/// socket in its [`KernelTable::Bound`] table and forwards its destruction
/// ([`SockCloseData`]): what the socket table knows of it stays true without
/// a socket lookup.
pub const BIND_TRACKED: u16 = 1;
/// [`SockCallData::flags`] of a successful bind to port 0: `port` is the
/// port the kernel picked (read from the socket), not the 0 asked for.
pub const BIND_PICKED_PORT: u16 = 2;

/// `tcp/tcp_destroy_sock` of a socket whose bind was forwarded with
/// [`BIND_TRACKED`]: the socket is gone, and with it its hold on the port
/// (a bound, never-listening socket closes without a state change).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockCloseData {
    /// Kernel address of the `struct sock` (as in its bind record).
    pub skaddr: u64,
    /// Inode of the socket's network namespace; 0 when unknown.
    pub netns: u32,
    /// Local port, host byte order.
    pub port: u16,
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// Local address (IPv4 in the first 4 bytes), network order.
    pub addr: [u8; 16],
}

/// `sock/inet_sock_set_state`: a TCP socket changed state (filtered in the kernel
/// to the transitions watcher uses: out of SYN_SENT, into or out of LISTEN).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStateData {
    pub skaddr: u64,
    pub old_state: u32,
    pub new_state: u32,
    /// Ports in host byte order.
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Inode of the socket's network namespace; 0 when unknown.
    pub netns: u32,
    pub _pad: u32,
    /// Inode of the socket, for a transition to LISTEN (0 otherwise, or
    /// when unknown): names the listener's owner in the socket table.
    pub inode: u64,
}

/// [`CgroupData::op`]: a cgroup was created.
pub const CGROUP_MKDIR: u32 = 1;
/// [`CgroupData::op`]: a cgroup was removed.
pub const CGROUP_RMDIR: u32 = 2;

/// `cgroup/cgroup_mkdir` and `cgroup/cgroup_rmdir` of the hierarchy whose ids
/// process records carry: the id → path mapping (and so the container) arrives
/// in the ring before any process enters the cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupData {
    /// The cgroup id (the directory's inode).
    pub id: u64,
    /// [`CGROUP_MKDIR`] or [`CGROUP_RMDIR`].
    pub op: u32,
    /// Depth below the hierarchy's root.
    pub level: u32,
    /// Bytes used in `path` (without NUL).
    pub path_len: u32,
    pub _pad: u32,
    /// Path relative to the hierarchy's root, e.g. `/docker/<id>`.
    pub path: [u8; CGROUP_PATH_LEN],
}

/// [`SignalData::source`]: `signal/signal_generate` — a fatal signal was
/// generated for `target_pid`; the header is the sender (the target itself for
/// a fault).
pub const SIGNAL_GENERATED: u32 = 1;
/// [`SignalData::source`]: `oom/mark_victim` — the OOM killer chose
/// `target_pid`; its SIGKILL follows. The header is the task whose allocation
/// ran out of memory.
pub const SIGNAL_OOM_VICTIM: u32 = 2;

/// Who ended a process: a signal that would kill it (filtered in the kernel
/// to [`Config::signal_mask`], delivered, not ignored), or the OOM killer's
/// choice. Lets userspace tell a supervisor's stop from a crash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalData {
    /// The target task (a thread id; the process's for a process-wide signal).
    pub target_pid: u32,
    /// Signal number (9 for an OOM victim).
    pub sig: u32,
    /// `si_code`: 0 (SI_USER) for kill(), negative for tkill/queue, 0x80
    /// (SI_KERNEL) for the kernel, positive for a fault (SEGV_MAPERR …).
    pub code: i32,
    /// 1 when sent to the whole thread group.
    pub group: u32,
    /// [`SIGNAL_GENERATED`] or [`SIGNAL_OOM_VICTIM`].
    pub source: u32,
    pub _pad: u32,
}

/// Default [`Config::signal_mask`]: HUP INT QUIT ILL TRAP ABRT BUS FPE KILL
/// USR1 SEGV USR2 TERM STKFLT XCPU XFSZ SYS — not PIPE (a reader went away),
/// ALRM/VTALRM/PROF (timers, usually handled, frequent) or IO/PWR.
pub const DEFAULT_SIGNAL_MASK: u32 = {
    let sigs = [1u32, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 24, 25, 31];
    let mut m = 0u32;
    let mut i = 0;
    while i < sigs.len() {
        m |= 1 << sigs[i];
        i += 1;
    }
    m
};

pub type ForkEvent = Event<ForkData>;
pub type ExecEvent = Event<ExecData>;
pub type ExitEvent = Event<ExitData>;
pub type ReapEvent = Event<ReapData>;
pub type SockCallEvent = Event<SockCallData>;
pub type TcpStateEvent = Event<TcpStateData>;
pub type CgroupEvent = Event<CgroupData>;
pub type SignalEvent = Event<SignalData>;
pub type SockCloseEvent = Event<SockCloseData>;

/// Offset value meaning "this kernel has no such field".
pub const OFFSET_NONE: u32 = u32::MAX;

/// Load-time configuration, written into the eBPF global [`GLOBAL_CONFIG`]
/// before load. Offsets come from the running kernel's tracefs format files
/// (`tp_*`) and BTF (`k_*`), never from constants written for one version.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The watcher's own tgid: its events are dropped in the kernel.
    pub self_tgid: u32,
    /// Non-zero: record kinds whose bit (1 << kind) is set are written.
    pub kinds_mask: u32,
    /// The wakeup interval: an exec of a program userspace did not list
    /// wakes a sleeping reader only when no record has from its CPU for
    /// [`wake::LAZY_INTERVALS`] of these (deciding records wake a sleeping
    /// reader whatever it is: see [`MAP_READER`]).
    pub wakeup_interval_ns: u64,
    /// CPUs per ring buffer: 0 writes every CPU's records to one ring;
    /// N > 0 writes CPU c's to ring c / N (at most [`RINGS`] rings).
    pub ring_cpus: u32,
    /// Non-zero: thread creations, and exits of threads that do not end
    /// their process, are written too (`trace --threads`); else the kernel
    /// drops them (nothing downstream decides on them).
    pub threads: u32,

    // task/task_newtask
    pub tp_newtask_pid: u32,
    pub tp_newtask_clone_flags: u32,
    // sched/sched_process_exec
    pub tp_exec_filename: u32,
    pub tp_exec_old_pid: u32,
    // sched/sched_process_exit
    pub tp_exit_group_dead: u32,
    // sched/sched_process_free
    pub tp_free_pid: u32,
    // syscalls: sys_enter_bind / sys_enter_connect (fd, sockaddr pointer, addrlen)
    pub tp_bind_fd: u32,
    pub tp_bind_addr: u32,
    pub tp_bind_addrlen: u32,
    pub tp_connect_fd: u32,
    pub tp_connect_addr: u32,
    pub tp_connect_addrlen: u32,
    // syscalls: sys_enter_waitid (infop, options)
    pub tp_waitid_infop: u32,
    pub tp_waitid_options: u32,
    // syscalls: sys_exit_* `ret` (the same in every sys_exit_* format)
    pub tp_sys_exit_ret: u32,
    // sock/inet_sock_set_state
    pub tp_sk_skaddr: u32,
    pub tp_sk_oldstate: u32,
    pub tp_sk_newstate: u32,
    pub tp_sk_sport: u32,
    pub tp_sk_dport: u32,
    pub tp_sk_family: u32,
    pub tp_sk_protocol: u32,
    pub tp_sk_saddr: u32,
    pub tp_sk_daddr: u32,
    pub tp_sk_saddr_v6: u32,
    pub tp_sk_daddr_v6: u32,
    // cgroup/cgroup_mkdir and cgroup/cgroup_rmdir (one layout)
    pub tp_cgroup_root: u32,
    pub tp_cgroup_id: u32,
    pub tp_cgroup_level: u32,
    pub tp_cgroup_path: u32,
    /// Hierarchy id whose cgroup events are forwarded (0: the v2 hierarchy).
    pub cgroup_hierarchy: u32,

    // Kernel struct member offsets from BTF.
    pub k_task_exit_code: u32,
    pub k_task_files: u32,
    pub k_task_mm: u32,
    pub k_task_signal: u32,
    pub k_signal_live: u32,
    pub k_mm_arg_start: u32,
    pub k_mm_arg_end: u32,
    pub k_files_fdt: u32,
    pub k_fdt_max_fds: u32,
    pub k_fdt_fd: u32,
    pub k_file_private_data: u32,
    /// `file.f_inode` and `inode.i_ino`: a socket's inode.
    pub k_file_inode: u32,
    pub k_inode_ino: u32,
    /// `sock.sk_socket` and `socket.file`: from a listener's `struct sock` to its inode.
    pub k_sock_socket: u32,
    pub k_socket_file: u32,
    pub k_socket_type: u32,
    pub k_socket_sk: u32,
    pub k_task_real_parent: u32,
    pub k_task_tgid: u32,
    /// `sock.__sk_common.skc_net` (a `possible_net_t`: the `struct net *`).
    pub k_sock_net: u32,
    /// `net.ns.inum`.
    pub k_net_inum: u32,
    pub k_task_group_leader: u32,
    pub k_task_thread_pid: u32,
    pub k_pid_level: u32,
    pub k_pid_numbers: u32,
    /// Size of `struct upid` (one element of `pid.numbers`).
    pub k_upid_size: u32,
    pub k_upid_nr: u32,
    pub k_upid_ns: u32,
    /// `pid_namespace.ns.inum`.
    pub k_pidns_inum: u32,
    /// `pid_namespace.pid_allocated` (PIDNS_ADDING cleared when it is torn down).
    pub k_pidns_pid_allocated: u32,
    /// Who an ending process's children pass to (the kernel's
    /// `find_new_reaper`): `task_struct.children` (a list head: empty when
    /// it points at itself), `pid_namespace.child_reaper`, and the words and
    /// bits of `signal_struct.is_child_subreaper` / `has_child_subreaper`.
    /// Any of them OFFSET_NONE: not read (userspace asks `/proc`).
    pub k_task_children: u32,
    pub k_pidns_child_reaper: u32,
    pub k_signal_is_subreaper: u32,
    pub k_signal_is_subreaper_bit: u32,
    pub k_signal_has_subreaper: u32,
    pub k_signal_has_subreaper_bit: u32,
    /// `task_struct.pid` (the raw `sched_process_free` reads the freed task's).
    pub k_task_pid: u32,
    /// What the raw `inet_sock_set_state` reads from the `struct sock` (the
    /// tracefs one has them as fields, read from the same members):
    /// `__sk_common.skc_family`, `inet_sock.inet_sport` (network order),
    /// `skc_dport` (network order), `inet_sock.inet_saddr`, `skc_daddr`,
    /// `skc_v6_rcv_saddr`, `skc_v6_daddr`, and `sk_protocol` (a `struct
    /// sock` is the start of its `inet_sock`). Any OFFSET_NONE: the tracefs
    /// tracepoint is attached.
    pub k_sk_family: u32,
    pub k_sk_sport: u32,
    pub k_sk_dport: u32,
    pub k_sk_rcv_saddr: u32,
    pub k_sk_daddr: u32,
    pub k_sk_v6_rcv_saddr: u32,
    pub k_sk_v6_daddr: u32,
    pub k_sk_protocol: u32,
    /// `linux_binprm.filename` (the raw `sched_process_exec` reads the
    /// path the tracefs record copies; OFFSET_NONE: tracefs is attached).
    pub k_bprm_filename: u32,
    /// Non-zero: the raw `sched_process_exit` has `group_dead` as its second
    /// argument (BTF's `btf_trace_sched_process_exit` prototype, 6.16 on).
    pub raw_exit_group_dead: u32,

    // signal/signal_generate
    pub tp_signal_sig: u32,
    pub tp_signal_code: u32,
    pub tp_signal_pid: u32,
    pub tp_signal_group: u32,
    pub tp_signal_result: u32,
    // oom/mark_victim
    pub tp_oom_pid: u32,
    /// Signals (bit `1 << signo`) whose generation is forwarded: those whose
    /// default action ends the process, less the frequent ones that say little.
    pub signal_mask: u32,
    /// Most bytes of an argument vector copied into an exec record
    /// (at most [`ARGS_MAX`]; 0: none).
    pub args_cap: u32,
    /// `waitid_info.pid` and `.cause`: what the fexit of `kernel_waitid`
    /// reads of the child it returns. OFFSET_NONE: the system-call
    /// tracepoints are attached for waitid.
    pub k_waitid_info_pid: u32,
    pub k_waitid_info_cause: u32,
    /// 1: successful TCP binds enter [`KernelTable::Bound`] and their
    /// sockets' destruction is forwarded (the loader attaches
    /// `tcp_destroy_sock`); 0: not (binds go without [`BIND_TRACKED`]).
    pub track_bound: u32,
    /// `skaddr` in the `tcp/tcp_destroy_sock` format (its tracefs program).
    pub tp_destroy_skaddr: u32,
    /// Where a system call's first three arguments are in `struct pt_regs`
    /// (x86-64: `di`, `si`, `dx`): what the exit-only bind/connect programs
    /// read of the registers the call was entered with. OFFSET_NONE: the
    /// entry and exit tracepoints are attached as a pair.
    pub k_regs_arg0: u32,
    pub k_regs_arg1: u32,
    pub k_regs_arg2: u32,
    /// `task_struct.parent_exec_id` and `.self_exec_id`: a task whose two
    /// are equal has not exec'd since it was forked (an exec increments its
    /// own; a fork gives the child its parent's in both), so its end needs
    /// no `EXEC_LIVE` lookup. OFFSET_NONE: every end looks.
    pub k_task_parent_exec_id: u32,
    pub k_task_self_exec_id: u32,
    /// `task_struct.comm` and `.cred`, and `cred.uid`: a record's header
    /// (name and real uid) by plain loads from the current task, in the
    /// programs that have it typed by BTF (one helper call instead of three).
    pub k_task_comm: u32,
    pub k_task_cred: u32,
    pub k_cred_uid: u32,
    /// Where a system call's return value is in `struct pt_regs` (x86-64:
    /// `ax`): what the exit-only programs read at the exit tracepoint, where
    /// the kernel has just stored it there.
    pub k_regs_ret: u32,
    /// Bytes unread in its ring past which a record that cannot decide
    /// anything wakes a sleeping reader (as a deciding record does; the
    /// record is not marked deciding): a burst of bulk records must not
    /// fill the ring while the reader waits out its bulk period. 0: never.
    pub ring_fill_wake: u32,
}

impl Config {
    /// A configuration with every offset unknown: the programs then emit
    /// what they can without them.
    pub const fn empty() -> Config {
        Config {
            self_tgid: 0,
            kinds_mask: 0,
            wakeup_interval_ns: 0,
            ring_cpus: 0,
            threads: 0,
            tp_newtask_pid: OFFSET_NONE,
            tp_newtask_clone_flags: OFFSET_NONE,
            tp_exec_filename: OFFSET_NONE,
            tp_exec_old_pid: OFFSET_NONE,
            tp_exit_group_dead: OFFSET_NONE,
            tp_free_pid: OFFSET_NONE,
            tp_bind_fd: OFFSET_NONE,
            tp_bind_addr: OFFSET_NONE,
            tp_bind_addrlen: OFFSET_NONE,
            tp_connect_fd: OFFSET_NONE,
            tp_connect_addr: OFFSET_NONE,
            tp_connect_addrlen: OFFSET_NONE,
            tp_waitid_infop: OFFSET_NONE,
            tp_waitid_options: OFFSET_NONE,
            tp_sys_exit_ret: OFFSET_NONE,
            tp_sk_skaddr: OFFSET_NONE,
            tp_sk_oldstate: OFFSET_NONE,
            tp_sk_newstate: OFFSET_NONE,
            tp_sk_sport: OFFSET_NONE,
            tp_sk_dport: OFFSET_NONE,
            tp_sk_family: OFFSET_NONE,
            tp_sk_protocol: OFFSET_NONE,
            tp_sk_saddr: OFFSET_NONE,
            tp_sk_daddr: OFFSET_NONE,
            tp_sk_saddr_v6: OFFSET_NONE,
            tp_sk_daddr_v6: OFFSET_NONE,
            tp_cgroup_root: OFFSET_NONE,
            tp_cgroup_id: OFFSET_NONE,
            tp_cgroup_level: OFFSET_NONE,
            tp_cgroup_path: OFFSET_NONE,
            cgroup_hierarchy: 0,
            k_task_exit_code: OFFSET_NONE,
            k_task_files: OFFSET_NONE,
            k_task_mm: OFFSET_NONE,
            k_task_signal: OFFSET_NONE,
            k_signal_live: OFFSET_NONE,
            k_mm_arg_start: OFFSET_NONE,
            k_mm_arg_end: OFFSET_NONE,
            k_files_fdt: OFFSET_NONE,
            k_fdt_max_fds: OFFSET_NONE,
            k_fdt_fd: OFFSET_NONE,
            k_file_private_data: OFFSET_NONE,
            k_file_inode: OFFSET_NONE,
            k_inode_ino: OFFSET_NONE,
            k_sock_socket: OFFSET_NONE,
            k_socket_file: OFFSET_NONE,
            k_socket_type: OFFSET_NONE,
            k_socket_sk: OFFSET_NONE,
            k_task_real_parent: OFFSET_NONE,
            k_task_tgid: OFFSET_NONE,
            k_sock_net: OFFSET_NONE,
            k_net_inum: OFFSET_NONE,
            k_task_group_leader: OFFSET_NONE,
            k_task_thread_pid: OFFSET_NONE,
            k_pid_level: OFFSET_NONE,
            k_pid_numbers: OFFSET_NONE,
            k_upid_size: OFFSET_NONE,
            k_upid_nr: OFFSET_NONE,
            k_upid_ns: OFFSET_NONE,
            k_pidns_inum: OFFSET_NONE,
            k_pidns_pid_allocated: OFFSET_NONE,
            k_task_children: OFFSET_NONE,
            k_pidns_child_reaper: OFFSET_NONE,
            k_signal_is_subreaper: OFFSET_NONE,
            k_signal_is_subreaper_bit: 0,
            k_signal_has_subreaper: OFFSET_NONE,
            k_signal_has_subreaper_bit: 0,
            k_task_pid: OFFSET_NONE,
            k_sk_family: OFFSET_NONE,
            k_sk_sport: OFFSET_NONE,
            k_sk_dport: OFFSET_NONE,
            k_sk_rcv_saddr: OFFSET_NONE,
            k_sk_daddr: OFFSET_NONE,
            k_sk_v6_rcv_saddr: OFFSET_NONE,
            k_sk_v6_daddr: OFFSET_NONE,
            k_sk_protocol: OFFSET_NONE,
            k_bprm_filename: OFFSET_NONE,
            raw_exit_group_dead: 0,
            tp_signal_sig: OFFSET_NONE,
            tp_signal_code: OFFSET_NONE,
            tp_signal_pid: OFFSET_NONE,
            tp_signal_group: OFFSET_NONE,
            tp_signal_result: OFFSET_NONE,
            tp_oom_pid: OFFSET_NONE,
            signal_mask: 0,
            args_cap: ARGS_CAP_DEFAULT,
            k_waitid_info_pid: OFFSET_NONE,
            k_waitid_info_cause: OFFSET_NONE,
            track_bound: 0,
            tp_destroy_skaddr: OFFSET_NONE,
            k_regs_arg0: OFFSET_NONE,
            k_regs_arg1: OFFSET_NONE,
            k_regs_arg2: OFFSET_NONE,
            k_task_parent_exec_id: OFFSET_NONE,
            k_task_self_exec_id: OFFSET_NONE,
            k_task_comm: OFFSET_NONE,
            k_task_cred: OFFSET_NONE,
            k_cred_uid: OFFSET_NONE,
            k_regs_ret: OFFSET_NONE,
            ring_fill_wake: 0,
        }
    }
}

// Layout is part of the format: fail the build if a struct changes size.
const _: () = assert!(core::mem::size_of::<Header>() == 48);
const _: () = assert!(core::mem::size_of::<ForkData>() == 24);
const _: () = assert!(core::mem::size_of::<ExecData>() == 24 + FILENAME_LEN);
const _: () = assert!(core::mem::size_of::<ExitData>() == 40);
const _: () = assert!(core::mem::size_of::<ReapData>() == 8);
const _: () = assert!(core::mem::size_of::<SockCallData>() == 56);
const _: () = assert!(core::mem::size_of::<TcpStateData>() == 72);
const _: () = assert!(core::mem::size_of::<SignalData>() == 24);
const _: () = assert!(core::mem::size_of::<SockCloseData>() == 32);
const _: () = assert!(core::mem::size_of::<CgroupData>() == 24 + CGROUP_PATH_LEN);
const _: () = assert!(core::mem::size_of::<Config>() == 424);
const _: () = assert!(
    ARGS_MAX.is_power_of_two()
        && FILENAME_LEN.is_power_of_two()
        && CGROUP_PATH_LEN.is_power_of_two()
);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: repr(C), integer and byte-array fields only, explicit padding.
    unsafe impl aya::Pod for super::Config {}
}
// Kind numbers and table slots never share a LOST slot.
const _: () = assert!((EventKind::SockClose as u32) < TABLE_FULL_BASE);
const _: () = assert!(KernelTable::ExecLive.slot() < LOST_SLOTS);
