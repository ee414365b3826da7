//! Sockets: bind and connect (arguments read at syscall entry, emitted with the
//! result at exit, with the socket's type and `struct sock` address found from
//! the fd), and TCP state changes from `sock/inet_sock_set_state`, which give the
//! outcome of non-blocking connects and listeners opening/closing.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_task_pt_regs},
    macros::{btf_tracepoint, fexit, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext, TracePointContext},
};
use watcher_common::{
    wake, EventKind, KernelTable, SockCallData, SockCloseData, TcpStateData, AF_INET, AF_INET6,
    BIND_PICKED_PORT, BIND_TRACKED,
};

use crate::{
    common::{
        bread, conf, current_task, current_task_btf, emit, emit_as, emit_typed, kread, now,
        pid_tgid, remember, sk_netns, sk_netns_typed, task_tgid, tp_read, wanted, wanted_kind,
    },
    maps::{PendingSock, BOUND, PENDING_SOCK},
};

const EBADF: i64 = 9;
const ENOTSOCK: i64 = 88;

const SOCK_STREAM: u16 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_LISTEN: i32 = 10;

/// Read the sockaddr a bind/connect passes (`None`: not an inet address,
/// or a process whose records are not wanted).
#[inline(always)]
fn sockaddr(kind: EventKind, tgid: u32, fd: u64, addr: u64, len: u64) -> Option<PendingSock> {
    if !wanted(kind, tgid) {
        return None;
    }
    // The first 8 bytes in one read: family, port and an IPv4 address (or
    // an IPv6 address's flow label); every inet sockaddr has them.
    if addr == 0 || len < 8 {
        return None;
    }
    let head: [u16; 4] = unsafe { bpf_probe_read_user(addr as *const [u16; 4]) }.ok()?;
    let family = head[0];
    let mut p = PendingSock {
        fd: fd as i32,
        family,
        port: u16::from_be(head[1]),
        addr: [0; 16],
        scope_id: 0,
        _pad: 0,
    };
    match family {
        AF_INET => {
            // SAFETY: [u16; 2] and u32 have the same size; the bytes as read.
            let a: u32 = unsafe { core::mem::transmute::<[u16; 2], u32>([head[2], head[3]]) };
            p.addr = v4_in_16(a);
        }
        AF_INET6 => {
            if len < 24 {
                return None;
            }
            if len >= 28 {
                // The address and the scope id in one read.
                let tail: [u32; 5] =
                    unsafe { bpf_probe_read_user((addr + 8) as *const [u32; 5]) }.ok()?;
                // SAFETY: as above, 16 bytes each way.
                p.addr = unsafe {
                    core::mem::transmute::<[u32; 4], [u8; 16]>([tail[0], tail[1], tail[2], tail[3]])
                };
                p.scope_id = tail[4];
            } else {
                p.addr = unsafe { bpf_probe_read_user((addr + 8) as *const [u8; 16]) }.ok()?;
            }
        }
        _ => return None,
    }
    Some(p)
}

/// At a bind/connect's syscall entry (tracefs): read the sockaddr and keep
/// it until the syscall returns.
#[inline(always)]
fn enter(
    ctx: &TracePointContext,
    kind: EventKind,
    off_fd: u32,
    off_addr: u32,
    off_len: u32,
) -> Option<()> {
    let fd: u64 = tp_read(ctx, off_fd)?;
    let addr: u64 = tp_read(ctx, off_addr)?;
    let len: u64 = tp_read(ctx, off_len)?;
    let p = sockaddr(kind, pid_tgid().1, fd, addr, len)?;
    remember(
        &PENDING_SOCK,
        KernelTable::PendingSock,
        &bpf_get_current_pid_tgid(),
        &p,
    );
    Some(())
}

/// The current task's open-file table: (its array of `struct file *`, its
/// size), through the helper from the untyped current task.
#[inline(always)]
fn fd_table_probed() -> (u64, u32) {
    let files: u64 = kread(current_task(), conf!(k_task_files)).unwrap_or(0);
    let fdt: u64 = kread(files, conf!(k_files_fdt)).unwrap_or(0);
    (
        kread(fdt, conf!(k_fdt_fd)).unwrap_or(0),
        kread(fdt, conf!(k_fdt_max_fds)).unwrap_or(0),
    )
}

/// The same by plain loads from the typed current task
/// (`bpf_get_current_task_btf`, 5.11 on: task → files → fdt are typed
/// pointers the verifier follows; the array's elements, `struct file **`,
/// are not, and are read through the helper).
#[inline(always)]
fn fd_table_typed(task: *const u8) -> (u64, u32) {
    // SAFETY: the current task, typed by BTF; every load below is checked
    // by the verifier against the member's type (a fault reads zero).
    unsafe {
        let files: *const u8 = bread(task, conf!(k_task_files));
        if files.is_null() {
            return (0, 0);
        }
        let fdt: *const u8 = bread(files, conf!(k_files_fdt));
        if fdt.is_null() {
            return (0, 0);
        }
        (
            bread(fdt, conf!(k_fdt_fd)),
            bread(fdt, conf!(k_fdt_max_fds)),
        )
    }
}

/// The socket behind `fd` in the open-file table `(array, size)`:
/// (socket.type, struct sock address, the socket's inode when `inode` is
/// asked for).
#[inline(always)]
fn sock_of_fd(fd: i32, inode: bool, (arr, max): (u64, u32)) -> (u16, u64, u64) {
    if fd < 0 || fd as u32 >= max || arr == 0 {
        return (0, 0, 0);
    }
    let file: u64 = kread(arr + (fd as u64) * 8, 0).unwrap_or(0);
    let sock: u64 = kread(file, conf!(k_file_private_data)).unwrap_or(0);
    let ty: u16 = kread(sock, conf!(k_socket_type)).unwrap_or(0);
    let sk: u64 = kread(sock, conf!(k_socket_sk)).unwrap_or(0);
    let ino: u64 = if inode {
        let i: u64 = kread(file, conf!(k_file_inode)).unwrap_or(0);
        kread(i, conf!(k_inode_ino)).unwrap_or(0)
    } else {
        0
    };
    (ty, sk, ino)
}

#[inline(always)]
fn exit(ctx: &TracePointContext, kind: EventKind) -> Option<()> {
    let key = bpf_get_current_pid_tgid();
    let p = unsafe { PENDING_SOCK.get(key) }.copied()?;
    let _ = PENDING_SOCK.remove(key);
    let ret: i64 = tp_read(ctx, conf!(tp_sys_exit_ret))?;
    // (The pairs are the fallback of every kernel: nothing typed.)
    send_sock_call::<false>(core::ptr::null(), kind, p, ret);
    Some(())
}

/// The record of a finished bind/connect: its address, result, and socket
/// (`TYPED`: its open-file table and header found by plain loads from
/// `task`, the current task typed by BTF, where the program may ask for
/// it; null otherwise).
#[inline(always)]
fn send_sock_call<const TYPED: bool>(task: *const u8, kind: EventKind, p: PendingSock, ret: i64) {
    let (sock_type, skaddr, inode) = if ret == -EBADF || ret == -ENOTSOCK {
        (0, 0, 0)
    } else {
        // The inode names a bound socket's owner in the socket table; a
        // connect's socket is known by its struct sock alone.
        let table = if TYPED {
            fd_table_typed(task)
        } else {
            fd_table_probed()
        };
        sock_of_fd(p.fd, kind == EventKind::Bind && ret == 0, table)
    };
    let urgent = match kind {
        EventKind::Bind => wake::bind(ret as i32, sock_type),
        _ => wake::connect(ret as i32),
    };
    // A TCP socket bound now: its destruction will be forwarded (a bound,
    // never-listening socket closes without a state change), so the socket
    // table can name it as the port's holder without a lookup.
    let bound = kind == EventKind::Bind && ret == 0 && skaddr != 0;
    let tracked = bound
        && sock_type == SOCK_STREAM
        && conf!(track_bound) == 1
        && wanted_kind(EventKind::SockClose)
        // (Full: the bind goes untracked — nothing is lost, its holder is
        // confirmed by a lookup — so no loss is counted.)
        && BOUND.insert(&skaddr, &0u8, 0).is_ok();
    let mut flags = if tracked { BIND_TRACKED } else { 0 };
    let mut port = p.port;
    if bound && port == 0 {
        // The port the kernel picked (a holder like any other).
        if let Some(picked) = kread::<u16>(skaddr, conf!(k_sk_sport)) {
            port = u16::from_be(picked);
            flags |= BIND_PICKED_PORT;
        }
    }
    let data = SockCallData {
        fd: p.fd,
        ret: ret as i32,
        family: p.family,
        port,
        sock_type,
        flags,
        addr: p.addr,
        scope_id: p.scope_id,
        netns: sk_netns(skaddr),
        skaddr,
        inode,
    };
    emit_as::<_, TYPED>(task, kind, now(), urgent, data);
}

/// fexit of `int __sys_bind(int fd, struct sockaddr __user *umyaddr, int
/// addrlen)` (where the kernel allows it: arguments and result in one run,
/// no table between two; the system-call tracepoints are then not
/// attached). The sockaddr is read back from the caller's memory, as the
/// syscall entry would have.
#[fexit(function = "__sys_bind")]
pub fn bind_fexit(ctx: FExitContext) -> i32 {
    sock_call_fexit(&ctx, EventKind::Bind);
    0
}

/// fexit of `int __sys_connect(int fd, struct sockaddr __user *uservaddr, int addrlen)`.
#[fexit(function = "__sys_connect")]
pub fn connect_fexit(ctx: FExitContext) -> i32 {
    sock_call_fexit(&ctx, EventKind::Connect);
    0
}

#[inline(always)]
fn sock_call_fexit(ctx: &FExitContext, kind: EventKind) {
    let fd: i32 = ctx.arg(0);
    let addr: u64 = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    // (The return value follows the three arguments.)
    let ret: i32 = ctx.arg(3);
    let task = current_task_btf();
    if let Some(p) = sockaddr(
        kind,
        task_tgid(task),
        fd as i64 as u64,
        addr,
        len as i64 as u64,
    ) {
        send_sock_call::<true>(task, kind, p, ret as i64);
    }
}

/// `sys_exit_bind` alone, where the kernel lets a tracepoint program read
/// the registers the system call was entered with (`bpf_task_pt_regs`,
/// 5.15 on): the arguments from there and the result from the record, in
/// one run — no entry program, no table between the two, and no
/// system-call entry tracepoint to route through. The sockaddr is read
/// back from the caller's memory, as the fexit reads it.
#[tracepoint]
pub fn sys_exit_bind_regs(_ctx: TracePointContext) -> u32 {
    let _ = exit_regs(EventKind::Bind);
    0
}

/// `sys_exit_connect` alone (as [`sys_exit_bind_regs`]).
#[tracepoint]
pub fn sys_exit_connect_regs(_ctx: TracePointContext) -> u32 {
    let _ = exit_regs(EventKind::Connect);
    0
}

#[inline(always)]
fn exit_regs(kind: EventKind) -> Option<()> {
    // SAFETY: helpers with no memory argument of ours; the result is the
    // current task's saved user registers (a BTF pointer: its reads at
    // the load-time offsets below are checked by the verifier).
    let task = current_task_btf();
    let regs = unsafe { bpf_task_pt_regs(task as *mut _) } as *const u8;
    let reg = |off: u32| unsafe { core::ptr::read_volatile(regs.add(off as usize) as *const u64) };
    // The result: the kernel stores it in the return register before
    // the exit tracepoint runs (what the tracepoint's record says too).
    let ret = reg(conf!(k_regs_ret)) as i64;
    let (fd, addr, len) = (
        reg(conf!(k_regs_arg0)),
        reg(conf!(k_regs_arg1)),
        reg(conf!(k_regs_arg2)),
    );
    // (`int fd` and `int addrlen`: the registers' low halves, as the call takes them.)
    let p = sockaddr(
        kind,
        task_tgid(task),
        fd as i32 as i64 as u64,
        addr,
        len as i32 as i64 as u64,
    )?;
    send_sock_call::<true>(task, kind, p, ret);
    Some(())
}

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    let _ = enter(
        &ctx,
        EventKind::Bind,
        conf!(tp_bind_fd),
        conf!(tp_bind_addr),
        conf!(tp_bind_addrlen),
    );
    0
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    let _ = exit(&ctx, EventKind::Bind);
    0
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = enter(
        &ctx,
        EventKind::Connect,
        conf!(tp_connect_fd),
        conf!(tp_connect_addr),
        conf!(tp_connect_addrlen),
    );
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = exit(&ctx, EventKind::Connect);
    0
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

/// Only what watcher uses: the start and outcome of active opens, and
/// listeners opening and closing. Passive-side churn of a busy server is not forwarded.
#[inline(always)]
fn wanted_transition(old: i32, new: i32) -> bool {
    old == TCP_SYN_SENT || new == TCP_SYN_SENT || old == TCP_LISTEN || new == TCP_LISTEN
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Option<()> {
    if !wanted_kind(EventKind::TcpState) {
        return None;
    }
    let old: i32 = tp_read(ctx, conf!(tp_sk_oldstate))?;
    let new: i32 = tp_read(ctx, conf!(tp_sk_newstate))?;
    if !wanted_transition(old, new) {
        return None;
    }
    let family: u16 = tp_read(ctx, conf!(tp_sk_family))?;
    let skaddr: u64 = tp_read(ctx, conf!(tp_sk_skaddr))?;
    let mut d = TcpStateData {
        skaddr,
        old_state: old as u32,
        new_state: new as u32,
        sport: tp_read(ctx, conf!(tp_sk_sport)).unwrap_or(0),
        dport: tp_read(ctx, conf!(tp_sk_dport)).unwrap_or(0),
        family,
        protocol: tp_read(ctx, conf!(tp_sk_protocol)).unwrap_or(0),
        saddr: [0; 16],
        daddr: [0; 16],
        netns: sk_netns(skaddr),
        _pad: 0,
        inode: 0,
    };
    if family == AF_INET6 {
        d.saddr = tp_read(ctx, conf!(tp_sk_saddr_v6)).unwrap_or([0; 16]);
        d.daddr = tp_read(ctx, conf!(tp_sk_daddr_v6)).unwrap_or([0; 16]);
    } else {
        d.saddr = v4_in_16(tp_read(ctx, conf!(tp_sk_saddr)).unwrap_or(0));
        d.daddr = v4_in_16(tp_read(ctx, conf!(tp_sk_daddr)).unwrap_or(0));
    }
    send_tcp_state(d);
    Some(())
}

/// The same, as a raw tracepoint (the loader's first choice, when BTF has
/// the `struct sock` members): a TCP state change often comes in the
/// network softirq, on top of another program of watcher's, where the
/// tracefs program is skipped (the kernel's `bpf_prog_active`; 92 runs in
/// the healthy workload's minute).
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> i32 {
    let _ = try_inet_sock_set_state_raw(&ctx);
    0
}

fn try_inet_sock_set_state_raw(ctx: &RawTracePointContext) -> Option<()> {
    if !wanted_kind(EventKind::TcpState) {
        return None;
    }
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    let skaddr: u64 = ctx.arg(0);
    let old = ctx.arg::<u64>(1) as i32;
    let new = ctx.arg::<u64>(2) as i32;
    if !wanted_transition(old, new) {
        return None;
    }
    let family: u16 = kread(skaddr, conf!(k_sk_family))?;
    let dport: u16 = kread(skaddr, conf!(k_sk_dport)).unwrap_or(0);
    let d = TcpStateData {
        skaddr,
        old_state: old as u32,
        new_state: new as u32,
        sport: u16::from_be(kread(skaddr, conf!(k_sk_sport)).unwrap_or(0)),
        dport: u16::from_be(dport),
        family,
        protocol: kread(skaddr, conf!(k_sk_protocol)).unwrap_or(0),
        saddr: sk_addr(
            skaddr,
            family,
            conf!(k_sk_v6_rcv_saddr),
            conf!(k_sk_rcv_saddr),
        ),
        daddr: sk_addr(skaddr, family, conf!(k_sk_v6_daddr), conf!(k_sk_daddr)),
        netns: sk_netns(skaddr),
        _pad: 0,
        inode: 0,
    };
    send_tcp_state(d);
    Some(())
}

/// The same as a BTF-typed raw tracepoint (`tp_btf`, the loader's first
/// choice): the `struct sock` comes typed, so its members are plain loads
/// the verifier checks against BTF — no helper call each. The two members
/// of `inet_sock` (the source port and IPv4 address, beyond `struct sock`)
/// are still read through the helper.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = try_inet_sock_set_state_btf(&ctx);
    0
}

fn try_inet_sock_set_state_btf(ctx: &BtfTracePointContext) -> Option<()> {
    if !wanted_kind(EventKind::TcpState) {
        return None;
    }
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    let sk: *const u8 = ctx.arg(0);
    let old = ctx.arg::<u64>(1) as i32;
    let new = ctx.arg::<u64>(2) as i32;
    if !wanted_transition(old, new) || sk.is_null() {
        return None;
    }
    let skaddr = sk as u64;
    // SAFETY (every `bread` below): `sk` and what it points to are typed
    // by BTF; the verifier checks each load's offset and size.
    let family: u16 = unsafe { bread(sk, conf!(k_sk_family)) };
    let (saddr, daddr) = if family == AF_INET6 {
        unsafe {
            (
                bread::<[u8; 16]>(sk, conf!(k_sk_v6_rcv_saddr)),
                bread::<[u8; 16]>(sk, conf!(k_sk_v6_daddr)),
            )
        }
    } else {
        (
            v4_in_16(kread::<u32>(skaddr, conf!(k_sk_rcv_saddr)).unwrap_or(0)),
            v4_in_16(unsafe { bread::<u32>(sk, conf!(k_sk_daddr)) }),
        )
    };
    let mut d = TcpStateData {
        skaddr,
        old_state: old as u32,
        new_state: new as u32,
        sport: u16::from_be(kread(skaddr, conf!(k_sk_sport)).unwrap_or(0)),
        dport: u16::from_be(unsafe { bread::<u16>(sk, conf!(k_sk_dport)) }),
        family,
        protocol: unsafe { bread(sk, conf!(k_sk_protocol)) },
        saddr,
        daddr,
        netns: sk_netns_typed(sk),
        _pad: 0,
        inode: 0,
    };
    if new == TCP_LISTEN {
        // The listener's socket inode: sock → socket → file → inode, each typed.
        unsafe {
            let sock: *const u8 = bread(sk, conf!(k_sock_socket));
            let file: *const u8 = if sock.is_null() {
                core::ptr::null()
            } else {
                bread(sock, conf!(k_socket_file))
            };
            let inode: *const u8 = if file.is_null() {
                core::ptr::null()
            } else {
                bread(file, conf!(k_file_inode))
            };
            if !inode.is_null() {
                d.inode = bread(inode, conf!(k_inode_ino));
            }
        }
    }
    emit_typed(
        current_task_btf(),
        EventKind::TcpState,
        now(),
        wake::tcp_state(d.old_state, d.new_state),
        d,
    );
    Some(())
}

/// An address of the `struct sock` at `sk` (its family's member: `v6` or
/// `v4` offset), IPv4 in the first 4 bytes; zeros when unreadable.
#[inline(always)]
fn sk_addr(sk: u64, family: u16, v6: u32, v4: u32) -> [u8; 16] {
    if family == AF_INET6 {
        return kread(sk, v6).unwrap_or([0; 16]);
    }
    v4_in_16(kread::<u32>(sk, v4).unwrap_or(0))
}

/// An IPv4 address (its 4 bytes in memory order, as read) in the first 4
/// bytes of 16, the rest zero: built as words, so the compiler emits a few
/// stores rather than a byte-wise zeroing loop.
#[inline(always)]
fn v4_in_16(a: u32) -> [u8; 16] {
    // SAFETY: [u32; 4] and [u8; 16] have the same size; any bytes are valid.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>([a, 0, 0, 0]) }
}

/// A listener's socket inode, then the record.
#[inline(always)]
fn send_tcp_state(mut d: TcpStateData) {
    let skaddr = d.skaddr;
    let new = d.new_state as i32;
    if new == TCP_LISTEN {
        // The listener's socket inode (what sock_diag lists it by).
        let sock: u64 = kread(skaddr, conf!(k_sock_socket)).unwrap_or(0);
        let file: u64 = kread(sock, conf!(k_socket_file)).unwrap_or(0);
        let inode: u64 = kread(file, conf!(k_file_inode)).unwrap_or(0);
        d.inode = kread(inode, conf!(k_inode_ino)).unwrap_or(0);
    }
    emit(
        EventKind::TcpState,
        now(),
        wake::tcp_state(d.old_state, d.new_state),
        d,
    );
}

/// `tcp/tcp_destroy_sock` as a raw tracepoint (`TP_PROTO(struct sock *sk)`):
/// every TCP socket's end; forwarded only for sockets in `BOUND`.
#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock_raw(ctx: RawTracePointContext) -> i32 {
    sock_destroyed(ctx.arg(0));
    0
}

/// `tcp/tcp_destroy_sock` as a BTF-typed raw tracepoint: the same, with the
/// forwarded socket's `struct sock` members read as plain loads.
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn tcp_destroy_sock_btf(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let skaddr = sk as u64;
    if sk.is_null() || unsafe { BOUND.get(&skaddr) }.is_none() {
        return 0;
    }
    let _ = BOUND.remove(&skaddr);
    // SAFETY (every `bread`): typed by BTF, each load checked by the verifier.
    let family: u16 = unsafe { bread(sk, conf!(k_sk_family)) };
    let addr = if family == AF_INET6 {
        unsafe { bread::<[u8; 16]>(sk, conf!(k_sk_v6_rcv_saddr)) }
    } else {
        v4_in_16(kread::<u32>(skaddr, conf!(k_sk_rcv_saddr)).unwrap_or(0))
    };
    let d = SockCloseData {
        skaddr,
        netns: sk_netns_typed(sk),
        port: u16::from_be(kread(skaddr, conf!(k_sk_sport)).unwrap_or(0)),
        family,
        addr,
    };
    emit_typed(
        current_task_btf(),
        EventKind::SockClose,
        now(),
        wake::bulk(),
        d,
    );
    0
}

/// The same through tracefs (its `skaddr` field).
#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    if let Some(sk) = tp_read::<u64>(&ctx, conf!(tp_destroy_skaddr)) {
        sock_destroyed(sk);
    }
    0
}

/// A TCP socket is destroyed: when its bind was forwarded as tracked, say
/// so (a bulk record: it never wakes the reader; the failing bind that
/// needs it does, and the reader orders the two by time).
#[inline(always)]
fn sock_destroyed(sk: u64) {
    if unsafe { BOUND.get(&sk) }.is_none() {
        return;
    }
    let _ = BOUND.remove(&sk);
    let family: u16 = kread(sk, conf!(k_sk_family)).unwrap_or(0);
    let d = SockCloseData {
        skaddr: sk,
        netns: sk_netns(sk),
        port: u16::from_be(kread(sk, conf!(k_sk_sport)).unwrap_or(0)),
        family,
        addr: sk_addr(sk, family, conf!(k_sk_v6_rcv_saddr), conf!(k_sk_rcv_saddr)),
    };
    emit(EventKind::SockClose, now(), wake::bulk(), d);
}
