//! Kernel ABI numbers, in one place: errno values as syscall records carry
//! them (negated in `ret`), clone flags, TCP states as `inet_sock_set_state`
//! and sock_diag report them, signal numbers and `si_code`s. Nothing else in
//! the crate writes these numbers down.

// errno (include/uapi/asm-generic/errno.h)
pub(crate) const EADDRINUSE: i32 = 98;
pub(crate) const EADDRNOTAVAIL: i32 = 99;
pub(crate) const ENETUNREACH: i32 = 101;
pub(crate) const ETIMEDOUT: i32 = 110;
pub(crate) const ECONNREFUSED: i32 = 111;
pub(crate) const EHOSTUNREACH: i32 = 113;
pub(crate) const EINPROGRESS: i32 = 115;

// clone flags (include/uapi/linux/sched.h)
pub(crate) const CLONE_PARENT: u64 = 0x0000_8000;
pub(crate) const CLONE_THREAD: u64 = 0x0001_0000;

// TCP states (include/net/tcp_states.h)
pub(crate) const TCP_ESTABLISHED: u32 = 1;
pub(crate) const TCP_SYN_SENT: u32 = 2;
pub(crate) const TCP_CLOSE: u32 = 7;
pub(crate) const TCP_LISTEN: u32 = 10;
/// The pseudo-state sock_diag reports bound-only TCP sockets in (Linux 6.7+).
pub(crate) const TCP_BOUND_INACTIVE: u32 = 13;

// socket types (include/linux/net.h)
pub(crate) const SOCK_DGRAM: u16 = 2;

/// Whether a socket record's type is TCP (a stream; an unknown type, 0, counts as TCP).
pub(crate) fn is_tcp(sock_type: u16) -> bool {
    sock_type != SOCK_DGRAM
}

// signals (include/uapi/asm-generic/signal.h) and si_code
pub(crate) const SIGKILL: u32 = 9;
pub(crate) const SIGPIPE: u32 = 13;
/// `si_code` of a signal the kernel itself sent.
pub(crate) const SI_KERNEL: i32 = 0x80;
