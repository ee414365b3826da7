//! Process lifecycle: creation (`task/task_newtask`, chosen over
//! `sched_process_fork` because it carries `clone_flags`, which say thread vs
//! process), exec, exit (exit code from `task_struct`), and reap (wait4/waitid
//! in the reaper's context; `sched_process_free` for exits no wait was seen for).
use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::{fentry, fexit, raw_tracepoint, tracepoint},
    programs::{FEntryContext, FExitContext, RawTracePointContext, TracePointContext},
};
use watcher_common::{
    wake, Event, EventKind, ExecData, ExitData, ForkData, KernelTable, ReapData, ReapSource,
    ARGS_MAX, EXEC_WAKE_ALL, EXIT_NO_CHILDREN, EXIT_PIDNS_DYING, EXIT_UNTRACKED,
    GROUP_DEAD_UNKNOWN, OFFSET_NONE,
};

use crate::{
    common::{
        bulk_submitted, cgroup_id, conf, count_loss, current_task, decided, emit, forks_decide,
        kread, lazy_flags, now, output, pid_tgid, read_data_loc_str, read_kernel_str, remember,
        told, tp_read, wanted, wanted_kind, write_header,
    },
    maps::{
        ForkRate, PendingWaitid, EXEC_CROWD, EXEC_LIVE, EXEC_SCRATCH, EXEC_WAKE, EXITED,
        EXITED_SHADOWED, FORK_RATE, GROUP_END, IN_WAIT, NS_REAP, PENDING_WAITID,
    },
};
use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};

const CLONE_THREAD: u64 = 0x0001_0000;
const EEXIST: i64 = 17;
/// waitid option: leave the child waitable (not a reap).
const WNOWAIT: u64 = 0x0100_0000;
/// siginfo.si_code values of a terminated child (CLD_EXITED, CLD_KILLED, CLD_DUMPED).
const CLD_EXITED: i32 = 1;
const CLD_DUMPED: i32 = 3;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = tp_read::<i32>(&ctx, conf!(tp_newtask_pid)).map(|child_pid| {
        let clone_flags: u64 = tp_read(&ctx, conf!(tp_newtask_clone_flags)).unwrap_or(0);
        new_task(child_pid, clone_flags)
    });
    0
}

/// The same, as a raw tracepoint (the loader's first choice): the kernel's
/// own arguments, no trace record built first.
#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn task_newtask_raw(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *task, unsigned long clone_flags)
    let task: u64 = ctx.arg(0);
    let clone_flags: u64 = ctx.arg(1);
    let _ = kread::<i32>(task, conf!(k_task_pid)).map(|pid| new_task(pid, clone_flags));
    0
}

#[inline(always)]
fn new_task(child_pid: i32, clone_flags: u64) -> Option<()> {
    let (_, tgid) = pid_tgid();
    if !wanted(EventKind::Fork, tgid) {
        return None;
    }
    let thread = clone_flags & CLONE_THREAD != 0;
    let child_tgid = if thread {
        // A new thread decides nothing: written only when asked for.
        if conf!(threads) == 0 {
            return None;
        }
        tgid
    } else {
        child_pid as u32
    };
    let ts = now();
    let rate = fork_rate();
    let nth = if thread {
        0
    } else {
        counted_fork(tgid, ts, rate)
    };
    emit(
        EventKind::Fork,
        ts,
        wake::fork(forks_decide(ts), nth, rate),
        ForkData {
            child_pid: child_pid as u32,
            child_tgid,
            clone_flags,
            cgroup_id: cgroup_id(),
        },
    );
    Some(())
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let (pid, _) = pid_tgid();
    let _ = tp_read::<u32>(&ctx, conf!(tp_exec_filename)).map(|loc| {
        let old_pid: i32 = tp_read(&ctx, conf!(tp_exec_old_pid)).unwrap_or(pid as i32);
        exec(old_pid, |buf| read_data_loc_str(&ctx, loc, buf))
    });
    0
}

/// The same, as a raw tracepoint (the loader's first choice): the path is
/// read from the `linux_binprm` the tracefs record copies it from.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec_raw(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let old_pid = ctx.arg::<u64>(1) as i32;
    let bprm: u64 = ctx.arg(2);
    let filename: u64 = kread(bprm, conf!(k_bprm_filename)).unwrap_or(0);
    let _ = exec(old_pid, |buf| read_kernel_str(filename, buf));
    0
}

/// The exec record: the path (written into `buf` by `filename`, which
/// returns its length) and the argument vector, from the new mm.
#[inline(always)]
fn exec(old_pid: i32, filename: impl FnOnce(&mut [u8]) -> u32) -> Option<()> {
    let (_, tgid) = pid_tgid();
    if !wanted(EventKind::Exec, tgid) {
        return None;
    }
    let ts = now();
    let scratch = EXEC_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch area; the program runs to its end on this CPU.
    unsafe {
        let ev = core::ptr::addr_of_mut!((*scratch).event);
        write_header::<ExecData>(core::ptr::addr_of_mut!((*ev).header), EventKind::Exec, ts);
        let d = core::ptr::addr_of_mut!((*ev).data);
        (*d).old_pid = old_pid as u32;
        (*d).cgroup_id = cgroup_id();
        (*d).filename_len = filename(&mut (*d).filename);
        // The argument vector, from the new mm's arg_start..arg_end (just
        // copied there by the exec: present, no fault), up to the cap.
        (*d).args_full_len = 0;
        let mut n: u64 = 0;
        let mm: u64 = kread(current_task(), conf!(k_task_mm)).unwrap_or(0);
        let start: u64 = kread(mm, conf!(k_mm_arg_start)).unwrap_or(0);
        let end: u64 = kread(mm, conf!(k_mm_arg_end)).unwrap_or(0);
        if start != 0 && end > start {
            let full = end - start;
            let cap = conf!(args_cap) as u64;
            n = if full < cap { full } else { cap };
            if n > ARGS_MAX as u64 {
                n = ARGS_MAX as u64;
            }
            let dst = core::ptr::addr_of_mut!((*scratch).args) as *mut core::ffi::c_void;
            if n > 0
                && generated::bpf_probe_read_user(dst, n as u32, start as *const core::ffi::c_void)
                    != 0
            {
                n = 0;
            }
            (*d).args_full_len = full as u32;
        }
        (*d).args_len = n as u32;
        let len = core::mem::size_of::<Event<ExecData>>() as u64 + n;
        (*ev).header.size = len as u32;
        let bytes = core::slice::from_raw_parts(scratch as *const u8, len as usize);
        // Urgent for a program userspace listed (see `watcher_common::wake`),
        // else the first of a burst.
        let comm = core::ptr::addr_of!((*ev).header.comm);
        let listed =
            EXEC_WAKE.get_ptr(&EXEC_WAKE_ALL).is_some() || EXEC_WAKE.get_ptr(&*comm).is_some();
        let crowd_limit = crowd_limit();
        let crowd = crowd_joined(tgid, &*comm, crowd_limit);
        let urgent = wake::exec(listed, crowd, crowd_limit);
        if urgent {
            (*ev).header.flags |= watcher_common::HEADER_DECIDING;
        }
        let flags = if urgent {
            BPF_RB_NO_WAKEUP as u64
        } else {
            lazy_flags(ts)
        };
        if output(EventKind::Exec, bytes, flags) {
            if urgent {
                decided(ts);
            } else if flags == BPF_RB_NO_WAKEUP as u64 {
                bulk_submitted(ts);
            }
        }
    }
    Some(())
}

/// Which of its parent's forks in a second is urgent (`READER`'s fork-rate
/// entry, written by userspace; 0: never).
#[inline(always)]
fn fork_rate() -> u64 {
    told(watcher_common::READER_FORK_RATE)
}

/// Count a fork of `parent` at `ts` in its second (`FORK_RATE`): which of
/// the second's forks it is (0: uncounted — no rate is set, or the insert
/// failed).
#[inline(always)]
fn counted_fork(parent: u32, ts: u64, rate: u64) -> u64 {
    if rate == 0 {
        return 0;
    }
    let second = ts / 1_000_000_000;
    if let Some(r) = FORK_RATE.get_ptr_mut(parent) {
        // SAFETY: the map's value, valid while the program runs; shared by
        // every CPU (a parent's threads fork on several): the count only
        // changed by compare-and-swap, so each fork gets its own number (an
        // add that returns the old value needs a newer instruction set than
        // the programs are built for). A new second's reset is part of the
        // swap. Beaten three times by other CPUs: uncounted.
        unsafe {
            let count = core::ptr::addr_of_mut!((*r).count);
            let at = core::ptr::addr_of_mut!((*r).second);
            for _ in 0..3 {
                let was = core::ptr::read_volatile(count);
                let fresh = core::ptr::read_volatile(at) != second;
                let next = if fresh { 1 } else { was + 1 };
                let (_, swapped) =
                    atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                        count, was, next,
                    );
                if swapped {
                    if fresh {
                        at.write_volatile(second);
                    }
                    return next;
                }
            }
            return 0;
        }
    }
    // A parent new to the table (or evicted: its count was of an earlier
    // second, or of a parent that forked less recently than 4,096 others).
    let first = ForkRate { second, count: 1 };
    match FORK_RATE.insert(parent, &first, 0) {
        Ok(()) => 1,
        Err(_) => 0,
    }
}

/// From how many live processes of its name an exec is urgent (`READER`'s
/// crowd entry, written by userspace; 0: never).
#[inline(always)]
fn crowd_limit() -> u64 {
    told(watcher_common::READER_EXEC_CROWD)
}

/// Process `tgid` exec'd and is now named `comm`: it counts under that name
/// (and no longer under a name an earlier exec gave it). The name's live
/// processes, this one included (0: not counted — a table is full, no
/// limit is set, or exits are not watched, so nothing would count it out).
#[inline(always)]
fn crowd_joined(tgid: u32, comm: &[u8; watcher_common::COMM_LEN], limit: u64) -> i64 {
    if limit == 0 || !wanted_kind(EventKind::Exit) {
        return 0;
    }
    if let Some(old) = unsafe { EXEC_LIVE.get(tgid) }.copied() {
        if old == *comm {
            // (Re-exec'd under the same name: counted already.)
            return crowd_add(comm, 0);
        }
        crowd_left(&old);
    }
    let n = crowd_add(comm, 1);
    if n == 0 {
        let _ = EXEC_LIVE.remove(tgid);
        return 0;
    }
    if EXEC_LIVE.insert(tgid, comm, 0).is_err() {
        // Full: uncounted (not a loss).
        crowd_left(comm);
        return 0;
    }
    n
}

/// Add `d` to the live count of `comm`: the count after (0: the table is
/// full and has no entry for it).
#[inline(always)]
fn crowd_add(comm: &[u8; watcher_common::COMM_LEN], d: i64) -> i64 {
    for _ in 0..2 {
        if let Some(c) = EXEC_CROWD.get_ptr_mut(comm) {
            // SAFETY: the map's value, valid while the program runs; shared
            // by every CPU, so only added to atomically. (Read back after:
            // the kernels' oldest BPF instruction set adds without fetching;
            // another CPU's add in between only makes it larger.)
            return unsafe {
                atomic_xadd::<i64, i64, { AtomicOrdering::SeqCst }>(c, d);
                core::ptr::read_volatile(c)
            };
        }
        if d == 0 {
            return 0;
        }
        // A new name (another CPU may insert it first: then add to theirs).
        if EXEC_CROWD.insert(comm, &d, BPF_NOEXIST as u64).is_ok() {
            return d;
        }
    }
    0
}

/// A process counted under `comm` ended (or took another name): one fewer;
/// the name leaves at zero. (An exec that adds to it between the two loses
/// its count — the count stays below the truth, never above.)
#[inline(always)]
fn crowd_left(comm: &[u8; watcher_common::COMM_LEN]) {
    if let Some(c) = EXEC_CROWD.get_ptr_mut(comm) {
        // SAFETY: as in `crowd_add`.
        let now = unsafe {
            atomic_xadd::<i64, i64, { AtomicOrdering::SeqCst }>(c, -1);
            core::ptr::read_volatile(c)
        };
        if now <= 0 {
            let _ = EXEC_CROWD.remove(comm);
        }
    }
}

/// Whether the ending `task` may have exec'd since it was forked (only then
/// can its process be in `EXEC_LIVE`): a fork gives the child its parent's
/// `self_exec_id` as both its own and its `parent_exec_id`, a thread takes
/// its creator's pair, and an exec increments the task's own — so equal ids
/// mean no exec, and the hash lookup (a cold bucket for every new pid of a
/// fork loop) is skipped. Unknown offsets: it may have.
#[inline(always)]
fn may_have_execd(task: u64) -> bool {
    match (
        kread::<u64>(task, conf!(k_task_parent_exec_id)),
        kread::<u64>(task, conf!(k_task_self_exec_id)),
    ) {
        (Some(parent), Some(own)) => parent != own,
        _ => true,
    }
}

/// Process `tgid` ended: out of its name's count, if it was in one.
#[inline(always)]
fn crowd_ended(tgid: u32) {
    if let Some(comm) = unsafe { EXEC_LIVE.get(tgid) }.copied() {
        let _ = EXEC_LIVE.remove(tgid);
        crowd_left(&comm);
    }
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = exit(tp_read::<u8>(&ctx, conf!(tp_exit_group_dead)));
    0
}

/// The same, as a raw tracepoint (the loader's first choice).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit_raw(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p), and `bool group_dead` from 6.16 on
    // (the loader read which from BTF).
    let group_dead = if conf!(raw_exit_group_dead) != 0 {
        Some(ctx.arg::<u64>(1) as u8)
    } else {
        None
    };
    let _ = exit(group_dead);
    0
}

/// The exit record of the current task (`group_dead`: the tracepoint's own
/// word on whether its process ends, when the kernel passes it).
#[inline(always)]
fn exit(group_dead: Option<u8>) -> Option<()> {
    let (pid, tgid) = pid_tgid();
    let task = current_task();
    // A leader's exit makes a process its parent must reap; remember it so
    // a later sched_process_free without a wait is reported as a reap.
    let tracked = pid != tgid || exited(pid, task);
    if !wanted(EventKind::Exit, tgid) {
        return None;
    }
    let exit_code: i32 = kread(task, conf!(k_task_exit_code)).unwrap_or(-1);
    let group_dead = match group_dead {
        Some(v) => (v != 0) as u32,
        None => group_dead_from_live(task, pid, tgid),
    };
    let parent: u64 = kread(task, conf!(k_task_real_parent)).unwrap_or(0);
    let parent_tgid: u32 = kread::<i32>(parent, conf!(k_task_tgid)).unwrap_or(0) as u32;
    let parent_waiting = (parent_tgid != 0 && unsafe { IN_WAIT.get(parent_tgid) }.is_some()) as u32;
    let ends = group_dead == 1 || (group_dead == GROUP_DEAD_UNKNOWN && pid == tgid);
    if ends && may_have_execd(task) {
        crowd_ended(tgid);
    }
    // A thread's exit that does not end its process decides nothing (the
    // leader's own exit is kept: the process may end with a later thread's).
    if !ends && pid != tgid && conf!(threads) == 0 {
        return None;
    }
    let (pidns, ns_pid, mut flags, ns) = pid_namespace(task, parent, parent_tgid, tgid, ends);
    if !tracked {
        flags |= EXIT_UNTRACKED;
    }
    let mut reaper_tgid = 0;
    if ends {
        match new_reaper(task, ns) {
            Reaper::NoChildren => flags |= EXIT_NO_CHILDREN,
            Reaper::Tgid(t) => reaper_tgid = t,
            Reaper::Unknown => {}
        }
    }
    emit(
        EventKind::Exit,
        now(),
        wake::exit(exit_code as u32, ends, parent_waiting != 0),
        ExitData {
            exit_code: exit_code as u32,
            group_dead,
            parent_tgid,
            parent_waiting,
            cgroup_id: cgroup_id(),
            pidns,
            ns_pid,
            flags,
            reaper_tgid,
        },
    );
    Some(())
}

/// Remember the exited leader `task` (pid `pid`) until its reap; an older
/// leader of that pid still waiting for its free moves aside
/// (`EXITED_SHADOWED`). False when a full table refused it (counted).
#[inline(always)]
fn exited(pid: u32, task: u64) -> bool {
    if let Some(older) = unsafe { EXITED.get(pid) }.copied() {
        if older != task {
            let _ = remember(&EXITED_SHADOWED, KernelTable::Exited, &older, &pid);
        }
    }
    remember(&EXITED, KernelTable::Exited, &pid, &task)
}

enum Reaper {
    Unknown,
    NoChildren,
    Tgid(u32),
}

/// Ancestors looked at for a child subreaper (the kernel walks them all, up
/// to its pid namespace's init; deeper chains of subreapers are rare).
const SUBREAPER_DEPTH: u32 = 8;

/// Whether `task`'s `signal_struct` has the one-bit flag at (`word`, `bit`).
#[inline(always)]
fn signal_flag(task: u64, word: u32, bit: u32) -> Option<bool> {
    let signal: u64 = kread(task, conf!(k_task_signal))?;
    let w: u32 = kread(signal, word)?;
    Some(w & (1u32 << (bit & 31)) != 0)
}

/// Who the children of the ending process `task` (its last thread) pass
/// to, as the kernel's `find_new_reaper` will choose right after this
/// tracepoint: the nearest ancestor in the same pid namespace that is a
/// child subreaper, else the namespace's init (`ns`: its `pid_namespace`).
#[inline(always)]
fn new_reaper(task: u64, ns: u64) -> Reaper {
    let children = conf!(k_task_children);
    if children == OFFSET_NONE || ns == 0 {
        return Reaper::Unknown;
    }
    // An empty list head points at itself.
    let Some(next) = kread::<u64>(task, children) else {
        return Reaper::Unknown;
    };
    if next == task + children as u64 {
        return Reaper::NoChildren;
    }
    let Some(init) = kread::<u64>(ns, conf!(k_pidns_child_reaper)) else {
        return Reaper::Unknown;
    };
    let tgid_of = |t: u64| kread::<i32>(t, conf!(k_task_tgid)).unwrap_or(0).max(0) as u32;
    let has = signal_flag(
        task,
        conf!(k_signal_has_subreaper),
        conf!(k_signal_has_subreaper_bit),
    );
    if has == Some(true) {
        let Some((level, _)) = pid_of(task) else {
            return Reaper::Unknown;
        };
        let mut r: u64 = kread(task, conf!(k_task_real_parent)).unwrap_or(0);
        // Whether the walk reached the namespace's init or left the
        // namespace (a process entered into it, `docker exec`'s): the init
        // is the reaper then, as in the kernel.
        let mut ended = false;
        for _ in 0..SUBREAPER_DEPTH {
            if r == 0 {
                return Reaper::Unknown;
            }
            if r == init {
                ended = true;
                break;
            }
            match pid_of(r) {
                Some((l, _)) if l == level => {}
                Some(_) => {
                    ended = true;
                    break;
                }
                None => return Reaper::Unknown,
            }
            if signal_flag(
                r,
                conf!(k_signal_is_subreaper),
                conf!(k_signal_is_subreaper_bit),
            ) == Some(true)
            {
                let t = tgid_of(r);
                return if t != 0 {
                    Reaper::Tgid(t)
                } else {
                    Reaper::Unknown
                };
            }
            r = kread(r, conf!(k_task_real_parent)).unwrap_or(0);
        }
        if !ended {
            // Deeper than looked: not known.
            return Reaper::Unknown;
        }
    } else if has.is_none() {
        return Reaper::Unknown;
    }
    match tgid_of(init) {
        0 => Reaper::Unknown,
        t => Reaper::Tgid(t),
    }
}

/// The `struct upid` of `pid` (a `struct pid *`) at namespace `level`.
#[inline(always)]
fn upid_at(pid: u64, level: u32) -> Option<u64> {
    let numbers = conf!(k_pid_numbers);
    let size = conf!(k_upid_size);
    if pid == 0 || numbers == OFFSET_NONE || size == OFFSET_NONE {
        return None;
    }
    // MAX_PID_NS_LEVEL is 32.
    Some(pid + numbers as u64 + (level & 31) as u64 * size as u64)
}

/// The nesting level of a task's pid namespace, and its `struct pid *`.
#[inline(always)]
fn pid_of(task: u64) -> Option<(u32, u64)> {
    let pid: u64 = kread(task, conf!(k_task_thread_pid))?;
    let level: u32 = kread(pid, conf!(k_pid_level))?;
    Some((level, pid))
}

/// `pid_namespace.pid_allocated` without this bit: no new pids, the namespace is being torn down.
const PIDNS_ADDING: u32 = 1 << 31;

/// (pid namespace inode, pid in it, flags, the `pid_namespace`) of the exiting task's process. When the
/// process ends and its parent sees it through a nested pid namespace, the
/// parent's wait will return that namespace's pid: remember the host pid for it.
#[inline(always)]
fn pid_namespace(
    task: u64,
    parent: u64,
    parent_tgid: u32,
    tgid: u32,
    ends: bool,
) -> (u32, u32, u32, u64) {
    let leader: u64 = kread(task, conf!(k_task_group_leader)).unwrap_or(0);
    let Some((level, lpid)) = pid_of(leader) else {
        return (0, 0, 0, 0);
    };
    let Some(own) = upid_at(lpid, level) else {
        return (0, 0, 0, 0);
    };
    let ns_pid: i32 = kread(own, conf!(k_upid_nr)).unwrap_or(0);
    let ns: u64 = kread(own, conf!(k_upid_ns)).unwrap_or(0);
    let pidns: u32 = kread(ns, conf!(k_pidns_inum)).unwrap_or(0);
    let mut flags = 0;
    if level > 0 {
        if let Some(allocated) = kread::<u32>(ns, conf!(k_pidns_pid_allocated)) {
            if allocated & PIDNS_ADDING == 0 {
                flags |= EXIT_PIDNS_DYING;
            }
        }
    }
    if ends && parent_tgid != 0 {
        if let Some((plevel, _)) = pid_of(parent) {
            if plevel > 0 && plevel <= level {
                if let Some(seen) = upid_at(lpid, plevel) {
                    let nr: i32 = kread(seen, conf!(k_upid_nr)).unwrap_or(0);
                    if nr > 0 {
                        let key = ((parent_tgid as u64) << 32) | nr as u32 as u64;
                        remember(&NS_REAP, KernelTable::NsReap, &key, &tgid);
                    }
                }
            }
        }
    }
    (pidns, ns_pid.max(0) as u32, flags, ns)
}

/// The host pid of a child the current task reaped, from the pid its wait
/// returned. Outside a pid namespace they are the same; inside, the pid was
/// remembered at the child's exit. `None`: not known (the record is left to
/// `sched_process_free`, which names the host pid).
#[inline(always)]
fn reaped_host_pid(reaper_tgid: u32, seen: u32) -> Option<u32> {
    let level = pid_of(current_task()).map(|(l, _)| l).unwrap_or(0);
    if level == 0 {
        return Some(seen);
    }
    let key = ((reaper_tgid as u64) << 32) | seen as u64;
    let host = unsafe { NS_REAP.get(key) }.copied()?;
    let _ = NS_REAP.remove(key);
    Some(host)
}

#[tracepoint]
pub fn sys_enter_wait4(_ctx: TracePointContext) -> u32 {
    wait_entered();
    0
}

#[tracepoint]
pub fn sys_exit_wait4(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_wait4(&ctx);
    0
}

fn try_sys_exit_wait4(ctx: &TracePointContext) -> Option<()> {
    let ret: i64 = tp_read(ctx, conf!(tp_sys_exit_ret))?;
    wait4_returned(ret)
}

/// A wait4 returned `ret`: a positive pid is a child it reaped.
#[inline(always)]
fn wait4_returned(ret: i64) -> Option<()> {
    let (_, me) = pid_tgid();
    let _ = IN_WAIT.remove(me);
    if ret <= 0 {
        return None;
    }
    reaped(me, ret as u32, ReapSource::Wait4)
}

/// The current task (of process `me`) reaped the child its wait names `seen`.
#[inline(always)]
fn reaped(me: u32, seen: u32, source: ReapSource) -> Option<()> {
    let reaped = reaped_host_pid(me, seen)?;
    let _ = EXITED.remove(reaped);
    if !wanted(EventKind::Reap, me) {
        return None;
    }
    emit(
        EventKind::Reap,
        now(),
        wake::bulk(),
        ReapData {
            reaped_pid: reaped,
            source: source as u32,
        },
    );
    Some(())
}

/// A process entered a wait: an exit of its child meanwhile is one it will reap.
#[inline(always)]
fn wait_entered() {
    let (_, me) = pid_tgid();
    remember(&IN_WAIT, KernelTable::InWait, &me, &now());
}

/// fentry/fexit of `long kernel_wait4(pid_t upid, int __user *stat_addr, int
/// options, struct rusage *ru)` where the kernel allows them (the
/// system-call tracepoints are then not attached; compat wait4 passes here too).
#[fentry(function = "kernel_wait4")]
pub fn wait4_fentry(_ctx: FEntryContext) -> i32 {
    wait_entered();
    0
}

#[fexit(function = "kernel_wait4")]
pub fn wait4_fexit(ctx: FExitContext) -> i32 {
    // (The return value follows the four arguments.)
    let ret: i64 = ctx.arg(4);
    let _ = wait4_returned(ret);
    0
}

/// fentry/fexit of `long kernel_waitid(int which, pid_t upid, struct
/// waitid_info *infop, int options, struct rusage *ru)`: `infop` is the
/// kernel's own record of the child (its pid and `cause`, the si_code
/// the system call copies out), filled when it returns a positive value.
#[fentry(function = "kernel_waitid")]
pub fn waitid_fentry(_ctx: FEntryContext) -> i32 {
    wait_entered();
    0
}

#[fexit(function = "kernel_waitid")]
pub fn waitid_fexit(ctx: FExitContext) -> i32 {
    let _ = try_waitid_fexit(&ctx);
    0
}

#[inline(always)]
fn try_waitid_fexit(ctx: &FExitContext) -> Option<()> {
    let (_, me) = pid_tgid();
    let _ = IN_WAIT.remove(me);
    let infop: u64 = ctx.arg(2);
    let options: i32 = ctx.arg(3);
    let ret: i64 = ctx.arg(5);
    if ret <= 0 || infop == 0 || (options as u32 as u64) & WNOWAIT != 0 {
        return None;
    }
    let pid: i32 = kread(infop, conf!(k_waitid_info_pid))?;
    let cause: i32 = kread(infop, conf!(k_waitid_info_cause))?;
    if pid <= 0 || !(CLD_EXITED..=CLD_DUMPED).contains(&cause) {
        return None;
    }
    reaped(me, pid as u32, ReapSource::Waitid)
}

#[tracepoint]
pub fn sys_enter_waitid(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_waitid(&ctx);
    0
}

fn try_sys_enter_waitid(ctx: &TracePointContext) -> Option<()> {
    wait_entered();
    let infop: u64 = tp_read(ctx, conf!(tp_waitid_infop))?;
    let options: u64 = tp_read(ctx, conf!(tp_waitid_options))?;
    if infop == 0 || options & WNOWAIT != 0 {
        return None;
    }
    remember(
        &PENDING_WAITID,
        KernelTable::PendingWaitid,
        &bpf_get_current_pid_tgid(),
        &PendingWaitid { infop, options },
    );
    Some(())
}

#[tracepoint]
pub fn sys_exit_waitid(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_waitid(&ctx);
    0
}

fn try_sys_exit_waitid(ctx: &TracePointContext) -> Option<()> {
    let (_, me) = pid_tgid();
    let _ = IN_WAIT.remove(me);
    let key = bpf_get_current_pid_tgid();
    let pending = unsafe { PENDING_WAITID.get(key) }.copied()?;
    let _ = PENDING_WAITID.remove(key);
    let ret: i64 = tp_read(ctx, conf!(tp_sys_exit_ret))?;
    if ret != 0 {
        return None;
    }
    // siginfo_t on 64-bit: si_code @8, si_pid @16.
    let code: i32 = unsafe { bpf_probe_read_user((pending.infop + 8) as *const i32) }.ok()?;
    let si_pid: i32 = unsafe { bpf_probe_read_user((pending.infop + 16) as *const i32) }.ok()?;
    if si_pid <= 0 || !(CLD_EXITED..=CLD_DUMPED).contains(&code) {
        return None;
    }
    reaped(me, si_pid as u32, ReapSource::Waitid)
}

/// Kernels before 6.18: the tracepoint has no `group_dead`. do_exit decrements
/// `signal->live` well before the tracepoint (and wakes a joining thread on the
/// way, in exit_mm), so several exiting threads of one group can read 0 here.
/// Exactly one of them claims the group's end: the leader, or, when the
/// leader's exit came earlier, the first other thread that reads 0 after it.
/// A non-leader that reads 0 while the leader has yet to reach this point
/// leaves the claim to the leader, which will read 0 too.
#[inline(always)]
fn group_dead_from_live(task: u64, pid: u32, tgid: u32) -> u32 {
    let signal: u64 = kread(task, conf!(k_task_signal)).unwrap_or(0);
    let Some(live) = kread::<i32>(signal, conf!(k_signal_live)) else {
        return GROUP_DEAD_UNKNOWN;
    };
    if live != 0 {
        return 0;
    }
    // EXITED holds the leader from its own exit (inserted above) until it is reaped.
    if pid != tgid && unsafe { EXITED.get(tgid) }.is_none() {
        return 0;
    }
    match GROUP_END.insert(tgid, 1, BPF_NOEXIST as u64) {
        Ok(()) => 1,
        Err(e) if i64::from(e) == -EEXIST => 0,
        // The table is full: claim the end (a second claim is better than
        // none), and count the refusal.
        Err(_) => {
            count_loss(KernelTable::GroupEnd.slot());
            1
        }
    }
}

#[tracepoint]
pub fn sched_process_free(ctx: TracePointContext) -> u32 {
    // (No task here: the newest leader of the pid is taken for it.)
    let _ = tp_read::<i32>(&ctx, conf!(tp_free_pid)).map(|pid| freed(pid as u32, 0));
    0
}

/// The same, as a raw tracepoint (the loader's first choice). A classic
/// tracepoint's program is skipped, silently, while any other program runs
/// on its CPU (the kernel's `bpf_prog_active`): the RCU callback that frees
/// a task runs in a softirq, often on top of a syscall tracepoint's program,
/// and ~1 % of the frees under load went unseen. A raw tracepoint's program
/// is skipped only when it interrupts itself.
#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn sched_process_free_raw(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p)
    let task: u64 = ctx.arg(0);
    if let Some(pid) = kread::<i32>(task, conf!(k_task_pid)) {
        freed(pid as u32, task);
    }
    0
}

#[inline(always)]
fn freed(pid: u32, task: u64) -> Option<()> {
    if conf!(tp_exit_group_dead) == OFFSET_NONE {
        // A freed leader's pid can be reused: forget its group's end claim.
        let _ = GROUP_END.remove(pid);
    }
    // Only exited leaders that no wait4/waitid reaped: threads and waited-for
    // processes are not forwarded.
    // Its own entry: the pid's (unless a newer leader took the pid over),
    // else the one it was moved aside to.
    match unsafe { EXITED.get(pid) }.copied() {
        Some(t) if task == 0 || t == task => {
            let _ = EXITED.remove(pid);
        }
        _ => {
            unsafe { EXITED_SHADOWED.get(task) }?;
            let _ = EXITED_SHADOWED.remove(task);
        }
    }
    if !wanted_kind(EventKind::Reap) {
        return None;
    }
    emit(
        EventKind::Reap,
        now(),
        wake::bulk(),
        ReapData {
            reaped_pid: pid,
            source: ReapSource::Free as u32,
        },
    );
    Some(())
}
