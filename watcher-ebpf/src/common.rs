//! Helpers shared by the programs: config access, headers, submit with the reader's wakeups.
use aya_ebpf::maps::HashMap;
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
        generated::{
            self as gen, bpf_get_current_cgroup_id, bpf_get_current_task, bpf_get_current_task_btf,
            bpf_get_smp_processor_id, bpf_ktime_get_ns,
        },
    },
    maps::ring_buf::RingBufEntry,
    programs::TracePointContext,
    EbpfContext,
};
use watcher_common::{
    wake, Config, Event, EventKind, Header, KernelTable, COMM_LEN, LOST_SLOTS, OFFSET_NONE,
};

use crate::maps::{
    EVENTS, EVENTS_1, EVENTS_2, EVENTS_3, EVENTS_4, EVENTS_5, EVENTS_6, EVENTS_7, LAST_WAKE, LOST,
    READER,
};
use core::intrinsics::{atomic_xadd, atomic_xchg, AtomicOrdering};

/// Filled by userspace before load.
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::empty();

/// Read one field of the load-time config (volatile: the compiler must not fold the default).
macro_rules! conf {
    ($field:ident) => {
        $crate::common::read_conf(&$crate::common::CONFIG.$field)
    };
}
pub(crate) use conf;

#[inline(always)]
pub fn read_conf<T: Copy>(field: &T) -> T {
    // SAFETY: a valid reference; volatile so the compiler cannot fold the
    // compile-time default that userspace overrides before load.
    unsafe { core::ptr::read_volatile(field) }
}

/// Whether records of `kind` are wanted, and the current task is not the watcher itself.
#[inline(always)]
pub fn wanted(kind: EventKind, tgid: u32) -> bool {
    let mask = conf!(kinds_mask);
    if mask != 0 && mask & (1 << kind as u32) == 0 {
        return false;
    }
    tgid != conf!(self_tgid)
}

#[inline(always)]
pub fn wanted_kind(kind: EventKind) -> bool {
    let mask = conf!(kinds_mask);
    mask == 0 || mask & (1 << kind as u32) != 0
}

#[inline(always)]
pub fn pid_tgid() -> (u32, u32) {
    let v = bpf_get_current_pid_tgid();
    (v as u32, (v >> 32) as u32)
}

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// Count one loss in `slot` of LOST, in slot 0, and in the reader's total
/// (`READER`'s loss entry: the reader loads it after each drain, and reads
/// the per-CPU slots only when it moved).
#[inline(always)]
pub fn count_loss(slot: u32) {
    if let Some(p) = LOST.get_ptr_mut(slot % LOST_SLOTS) {
        unsafe { *p += 1 };
    }
    if let Some(p) = LOST.get_ptr_mut(0) {
        unsafe { *p += 1 };
    }
    if let Some(p) = READER.get_ptr_mut(watcher_common::READER_LOST_TOTAL) {
        // SAFETY: the map's value, valid while the program runs; shared
        // with the reader and other CPUs, so only added to atomically.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, 1) };
    }
}

/// The ring of this CPU's group (`ring_cpus` CPUs per ring; 0: one ring).
#[inline(always)]
fn ring_index() -> u32 {
    let per = conf!(ring_cpus);
    if per == 0 {
        0
    } else {
        (unsafe { bpf_get_smp_processor_id() }) / per
    }
}

/// `$e` with `$ring` this CPU's ring ([`ring_index`]): one arm per ring,
/// each naming its map, as the verifier needs a map it knows at each call.
macro_rules! on_this_ring {
    ($ring:ident => $e:expr) => {
        match ring_index() {
            0 => {
                let $ring = &EVENTS;
                $e
            }
            1 => {
                let $ring = &EVENTS_1;
                $e
            }
            2 => {
                let $ring = &EVENTS_2;
                $e
            }
            3 => {
                let $ring = &EVENTS_3;
                $e
            }
            4 => {
                let $ring = &EVENTS_4;
                $e
            }
            5 => {
                let $ring = &EVENTS_5;
                $e
            }
            6 => {
                let $ring = &EVENTS_6;
                $e
            }
            _ => {
                let $ring = &EVENTS_7;
                $e
            }
        }
    };
}

/// Reserve a record of type `Event<T>`; on failure count it as lost for `kind`.
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind) -> Option<RingBufEntry<Event<T>>> {
    let entry = on_this_ring!(ring => ring.reserve::<Event<T>>(0));
    match entry {
        Some(e) => Some(e),
        None => {
            count_loss(kind as u32);
            None
        }
    }
}

/// Insert into one of the kernel side's tables; an insert the full table
/// refused is counted (userspace then repairs what it could not learn).
#[inline(always)]
pub fn remember<K, V>(map: &HashMap<K, V>, table: KernelTable, k: &K, v: &V) -> bool {
    match map.insert(k, v, 0) {
        Ok(()) => true,
        Err(_) => {
            count_loss(table.slot());
            false
        }
    }
}

/// Write the header for the current task in place (a reserved record's
/// or a scratch area's): field by field, the name straight from the helper
/// — no copy through the stack.
///
/// # Safety
/// `h` points to a writable `Header`.
#[inline(always)]
pub unsafe fn write_header<T>(h: *mut Header, kind: EventKind, ts: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    (*h).kind = kind as u32;
    (*h).size = core::mem::size_of::<Event<T>>() as u32;
    (*h).ts_ns = ts;
    (*h).pid = pid_tgid as u32;
    (*h).tgid = (pid_tgid >> 32) as u32;
    (*h).uid = bpf_get_current_uid_gid() as u32;
    (*h).flags = 0;
    // (On failure the helper zeroes the buffer.)
    gen::bpf_get_current_comm(
        core::ptr::addr_of_mut!((*h).comm) as *mut core::ffi::c_void,
        COMM_LEN as u32,
    );
}

/// The current task typed by BTF (`bpf_get_current_task_btf`, 5.11 on):
/// its members are plain loads the verifier checks. Only in the programs
/// that may ask for it (BTF-typed tracepoints, fentry/fexit, and the
/// exit-only system-call programs, which the loader attaches only with
/// BTF); a program asks once and passes it on.
#[inline(always)]
pub fn current_task_btf() -> *const u8 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// The process (tgid) of `task`, the current task typed by BTF
/// ([`current_task_btf`]): a plain load.
#[inline(always)]
pub fn task_tgid(task: *const u8) -> u32 {
    // SAFETY: typed by BTF, the load checked by the verifier.
    unsafe { bread(task, conf!(k_task_tgid)) }
}

/// The same as [`write_header`] by plain loads from `task`, the current
/// task typed by BTF ([`current_task_btf`]): no helper call, where
/// [`write_header`] makes three (pid and tgid, uid, name), each a call
/// with its own checks.
///
/// # Safety
/// As [`write_header`]; `task` from [`current_task_btf`].
#[inline(always)]
pub unsafe fn write_header_typed<T>(h: *mut Header, kind: EventKind, ts: u64, task: *const u8) {
    // Every load below is checked by the verifier against the member's
    // type (a fault reads zero).
    (*h).kind = kind as u32;
    (*h).size = core::mem::size_of::<Event<T>>() as u32;
    (*h).ts_ns = ts;
    (*h).pid = bread(task, conf!(k_task_pid));
    (*h).tgid = task_tgid(task);
    // The real uid of the task's credentials, as `bpf_get_current_uid_gid`
    // gives it (the initial namespace's view: the kernel's own number).
    let cred: *const u8 = bread(task, conf!(k_task_cred));
    (*h).uid = if cred.is_null() {
        0
    } else {
        bread(cred, conf!(k_cred_uid))
    };
    (*h).flags = 0;
    // The name as two words (the kernel keeps it NUL-padded).
    let comm = core::ptr::addr_of_mut!((*h).comm) as *mut u64;
    let at = conf!(k_task_comm);
    *comm = bread(task, at);
    *comm.add(1) = bread(task, at + 8);
}

/// Write a whole record (header + payload) and submit it; `urgent` from
/// the wakeup policy (`watcher_common::wake`).
#[inline(always)]
pub fn emit<T: 'static>(kind: EventKind, ts: u64, urgent: bool, data: T) {
    emit_as::<T, false>(core::ptr::null(), kind, ts, urgent, data)
}

/// [`emit`] with the header from `task`, the current task typed by BTF
/// ([`current_task_btf`], [`write_header_typed`]).
#[inline(always)]
pub fn emit_typed<T: 'static>(task: *const u8, kind: EventKind, ts: u64, urgent: bool, data: T) {
    emit_as::<T, true>(task, kind, ts, urgent, data)
}

/// [`emit`] (`TYPED`: [`emit_typed`], from `task`; null otherwise), for a
/// caller that is itself generic over whether it has the typed task.
#[inline(always)]
pub fn emit_as<T: 'static, const TYPED: bool>(
    task: *const u8,
    kind: EventKind,
    ts: u64,
    urgent: bool,
    data: T,
) {
    if let Some(mut entry) = reserve::<T>(kind) {
        let ev = entry.as_mut_ptr();
        unsafe {
            let h = core::ptr::addr_of_mut!((*ev).header);
            if TYPED {
                write_header_typed::<T>(h, kind, ts, task);
            } else {
                write_header::<T>(h, kind, ts);
            }
            core::ptr::addr_of_mut!((*ev).data).write(data);
        }
        submit(entry, ts, urgent);
    }
}

/// Submit, and wake the reader if the record decides and the reader sleeps
/// (`watcher_common::wake`). Bulk records never wake it (it drains them
/// within its bulk period).
#[inline(always)]
pub fn submit<T>(mut entry: RingBufEntry<Event<T>>, ts: u64, urgent: bool) {
    if urgent {
        // SAFETY: the reserved record, its header written by the caller.
        unsafe { (*entry.as_mut_ptr()).header.flags |= watcher_common::HEADER_DECIDING };
    }
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    if urgent {
        decided(ts);
    } else {
        bulk_submitted(ts);
    }
}

/// A record that cannot decide anything was just submitted: when the
/// reader sleeps and this CPU's ring holds more than `ring_fill_wake`
/// bytes unread, wake it as a deciding record would — a burst of bulk
/// records must not fill the ring while the reader waits out its bulk
/// period. (A plain load of the reader's word first: while it is awake,
/// nothing more is asked.)
#[inline(always)]
pub fn bulk_submitted(ts: u64) {
    let fill = conf!(ring_fill_wake) as u64;
    if fill == 0 {
        return;
    }
    let Some(word) = READER.get_ptr(0) else {
        return;
    };
    // SAFETY: the map's value, valid while the program runs.
    if !wake::wakes(unsafe { core::ptr::read_volatile(word) }) {
        return;
    }
    let avail = BPF_RB_AVAIL_DATA as u64;
    let unread = on_this_ring!(ring => ring.query(avail));
    if unread > fill {
        decided(ts);
    }
}

/// A deciding record was just submitted: say so in the reader's word, and
/// wake the reader if it found it asleep. After the submit, not before: the
/// submit's commit is a full barrier, so a reader that sees the word urgent
/// sees the record too, and one that went to sleep before the swap is woken
/// (one wakeup per sleep: the swap that found it asleep is the only one).
#[inline(always)]
pub fn decided(ts: u64) {
    let Some(word) = READER.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the map's one value, valid while the program runs; shared with
    // the reader and other CPUs, so only touched atomically.
    let was = unsafe { atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(word, wake::READER_URGENT) };
    if wake::wakes(was) {
        nudge(ts);
    }
}

/// What userspace told the kernel in `READER`'s entry `i` (0: nothing).
#[inline(always)]
pub fn told(i: u32) -> u64 {
    match READER.get_ptr(i) {
        // SAFETY: the map's value, valid while the program runs; written
        // by userspace (a plain 8-byte store: no torn read).
        Some(v) => unsafe { core::ptr::read_volatile(v) },
        None => 0,
    }
}

/// A fork at `ts` can decide a finding: userspace said forks are urgent
/// until a later time (`READER`'s second entry).
#[inline(always)]
pub fn forks_decide(ts: u64) -> bool {
    ts < told(watcher_common::READER_FORKS_UNTIL)
}

/// Wake the reader: an empty record on this CPU's ring, discarded with a
/// wakeup (the reader's consumer skips it; nothing is read).
#[inline(always)]
fn nudge(ts: u64) {
    let force = BPF_RB_FORCE_WAKEUP as u64;
    let entry = on_this_ring!(ring => ring.reserve::<u64>(0));
    // (A full ring: the reader has plenty to read and its bulk period comes.)
    if let Some(e) = entry {
        e.discard(force);
        woke(ts);
    }
}

/// This CPU woke the reader at `ts`.
#[inline(always)]
fn woke(ts: u64) {
    if let Some(last) = LAST_WAKE.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array; the program runs to
        // its end on this CPU.
        unsafe { *last = ts };
    }
}

/// The flags of a record that is not urgent but should not wait for a bulk
/// period (an exec of a program userspace did not list): it wakes the
/// reader when the reader sleeps with no drain planned (asleep, not
/// dozing: a drain within a few intervals reads it) and no record has woken it from this CPU
/// for [`wake::LAZY_INTERVALS`] wakeup intervals — the first of a burst, or
/// a lone one — and otherwise rides on the drains that wakeup started.
/// (No swap of the reader's word: a lazy record that misses a reader going
/// to sleep waits for its next drain, as a burst's others do.)
#[inline(always)]
pub fn lazy_flags(ts: u64) -> u64 {
    let interval = conf!(wakeup_interval_ns);
    let (Some(last), Some(word)) = (LAST_WAKE.get_ptr_mut(0), READER.get_ptr(0)) else {
        return BPF_RB_FORCE_WAKEUP as u64;
    };
    // SAFETY: as in `decided` and `woke`.
    unsafe {
        if ts.wrapping_sub(*last) >= interval * wake::LAZY_INTERVALS
            && core::ptr::read_volatile(word) == wake::READER_ASLEEP
        {
            *last = ts;
            BPF_RB_FORCE_WAKEUP as u64
        } else {
            BPF_RB_NO_WAKEUP as u64
        }
    }
}

/// Copy a whole record (`bytes`, header first) into this CPU's ring; on
/// failure count it as lost for `kind`. Whether it was written.
#[inline(always)]
pub fn output(kind: EventKind, bytes: &[u8], flags: u64) -> bool {
    let r = on_this_ring!(ring => ring.output::<[u8]>(bytes, flags));
    if r.is_err() {
        count_loss(kind as u32);
    }
    r.is_ok()
}

/// Read a value of type `T` at `off` in the tracepoint record; `None` when the
/// offset is unknown on this kernel or the read fails.
#[inline(always)]
pub fn tp_read<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
    if off == OFFSET_NONE {
        return None;
    }
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

/// Copy the `__data_loc` string whose locator (low 16 bits: offset in the
/// record, high 16 bits: length) is `loc` into `buf`; its length without the
/// NUL, 0 when it cannot be read.
#[inline(always)]
pub fn read_data_loc_str(ctx: &TracePointContext, loc: u32, buf: &mut [u8]) -> u32 {
    // SAFETY: the locator's offset stays inside the tracepoint record; the
    // helper bounds-checks the copy.
    unsafe {
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        match aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(src, buf) {
            Ok(s) => s.len() as u32,
            Err(_) => 0,
        }
    }
}

/// Copy the kernel string at `src` into `buf`; its length (0: unreadable).
#[inline(always)]
pub fn read_kernel_str(src: u64, buf: &mut [u8]) -> u32 {
    if src == 0 {
        return 0;
    }
    // SAFETY: the helper checks the read; `buf` bounds the copy.
    match unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(src as *const u8, buf) } {
        Ok(s) => s.len() as u32,
        Err(_) => 0,
    }
}

/// Read a kernel value at `base + off`; `None` when the offset is unknown or base is null.
#[inline(always)]
pub fn kread<T>(base: u64, off: u32) -> Option<T> {
    if off == OFFSET_NONE || base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// A plain load of a `T` at `base + off`, for a `base` the verifier knows
/// by its BTF type (a BTF-typed tracepoint's argument, or a pointer loaded
/// from one): it checks the offset — a constant to it, the config being a
/// frozen read-only map — against the type, and a fault reads zero.
///
/// # Safety
/// `base` must be such a pointer (the load is refused otherwise) and `off`
/// known (not `OFFSET_NONE`: the loader only attaches a program whose
/// members BTF has).
#[inline(always)]
pub unsafe fn bread<T>(base: *const u8, off: u32) -> T {
    core::ptr::read_volatile(base.add(off as usize) as *const T)
}

#[inline(always)]
pub fn current_task() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// The current task's cgroup in the v2 hierarchy (its directory's inode).
#[inline(always)]
pub fn cgroup_id() -> u64 {
    unsafe { bpf_get_current_cgroup_id() }
}

/// The same for a `struct sock` typed by BTF (a `tp_btf` argument): plain
/// loads, sock → net → its inode.
#[inline(always)]
pub fn sk_netns_typed(sk: *const u8) -> u32 {
    // SAFETY: `sk` is typed by BTF and so is the `struct net` it points to;
    // the verifier checks both loads (a fault reads zero).
    unsafe {
        let net: *const u8 = bread(sk, conf!(k_sock_net));
        if net.is_null() {
            0
        } else {
            bread(net, conf!(k_net_inum))
        }
    }
}

/// Inode of the network namespace of the `struct sock` at `sk`; 0 when unknown.
#[inline(always)]
pub fn sk_netns(sk: u64) -> u32 {
    let net: u64 = kread(sk, conf!(k_sock_net)).unwrap_or(0);
    kread::<u32>(net, conf!(k_net_inum)).unwrap_or(0)
}
