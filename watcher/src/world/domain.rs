//! Typed domain events: what one kernel record means to the detectors,
//! decided once in enrichment — errno and TCP state numbers, address
//! families, thread or process, which outcome a connect had — so no
//! detector reads a wire struct. (Why a process ended is
//! [`crate::world::cause::Cause`], built beside it.)
use std::net::IpAddr;

use crate::{
    kernel::abi::{
        is_tcp, CLONE_THREAD, EADDRINUSE, EADDRNOTAVAIL, EINPROGRESS, TCP_CLOSE, TCP_ESTABLISHED,
        TCP_LISTEN, TCP_SYN_SENT,
    },
    kernel::decode::{ip_addr, KernelEvent, Payload},
};

/// An address and port of one transport in one network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Inode of the network namespace (0 when unknown).
    pub netns: u32,
    pub tcp: bool,
    pub ip: IpAddr,
    pub port: u16,
}

/// Why a bind failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// EADDRINUSE: the port is held (for port 0: no free port in the range).
    InUse,
    /// EADDRNOTAVAIL: the address is not one of this host's.
    NotAvailable,
    Other(i32),
}

/// What came of a connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// connect() returned 0, or the handshake completed (SYN_SENT → ESTABLISHED).
    Connected,
    /// The handshake ended without a connection (SYN_SENT → CLOSE): refused
    /// or timed out; the syscall's errno, when it comes, says which.
    HandshakeFailed,
    /// A non-blocking connect started (EINPROGRESS): the outcome follows.
    InProgress,
    /// connect() returned this errno.
    Error(i32),
}

/// One kernel record, as the detectors see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DomainEvent {
    /// A new process (not a thread) forked by the record's process.
    ProcessStarted {
        parent: u32,
        child: u32,
    },
    ThreadStarted,
    /// The process runs a new program.
    Exec,
    /// A task exited. `process_ended`: it was the last of its process (the
    /// process is a zombie now); `parent_waiting`: its parent was inside
    /// wait4/waitid; `ends_pid_namespace`: it was the init of that (nested)
    /// pid namespace, whose processes the kernel now kills and reaps;
    /// `namespace_dying`: its namespace was already being torn down.
    Exited {
        process_ended: bool,
        parent_waiting: bool,
        ends_pid_namespace: Option<u32>,
        namespace_dying: bool,
    },
    /// A child was reaped (by a wait, or freed by the kernel without one).
    Reaped {
        child: u32,
    },
    /// bind() succeeded (`local.port` 0: the kernel picked a free port,
    /// `picked` when the kernel said which). `inode`: the socket's (0 when
    /// unknown); `tracked`: its `struct sock` when the kernel follows it to
    /// its end ([`DomainEvent::SockClosed`] then comes).
    Bound {
        local: Endpoint,
        inode: u64,
        picked: Option<u16>,
        tracked: Option<u64>,
    },
    /// A tracked bound TCP socket was destroyed (its port is free of it).
    SockClosed {
        local: Endpoint,
        sock: u64,
    },
    BindFailed {
        local: Endpoint,
        error: BindError,
    },
    /// A TCP socket started listening (→ LISTEN; `inode`: the socket's, 0
    /// when unknown), or stopped (LISTEN → CLOSE).
    ListenStarted {
        local: Endpoint,
        inode: u64,
    },
    ListenStopped {
        local: Endpoint,
    },
    /// A connect's outcome, from the syscall (`syscall`: in the connecting
    /// process's context) or the socket's state change (in whichever task's
    /// context the kernel ran it: the socket's owner is `Input::owner`);
    /// `sock` is the kernel socket (joins the two).
    Connect {
        dest: Endpoint,
        sock: u64,
        outcome: ConnectOutcome,
        syscall: bool,
    },
    /// Records the detectors do not use (other TCP transitions, cgroups,
    /// signals, unknown address families).
    #[default]
    Other,
}

/// One bit per [`DomainEvent`] variant, named as the variant: what a
/// detector handles (`wants` in `detect::registry::detector!`).
#[allow(non_upper_case_globals)]
pub(crate) mod bits {
    pub(crate) const ProcessStarted: u16 = 1 << 0;
    pub(crate) const ThreadStarted: u16 = 1 << 1;
    pub(crate) const Exec: u16 = 1 << 2;
    pub(crate) const Exited: u16 = 1 << 3;
    pub(crate) const Reaped: u16 = 1 << 4;
    pub(crate) const Bound: u16 = 1 << 5;
    pub(crate) const SockClosed: u16 = 1 << 6;
    pub(crate) const BindFailed: u16 = 1 << 7;
    pub(crate) const ListenStarted: u16 = 1 << 8;
    pub(crate) const ListenStopped: u16 = 1 << 9;
    pub(crate) const Connect: u16 = 1 << 10;
    pub(crate) const Other: u16 = 1 << 11;
    /// Every variant.
    pub(crate) const ALL: u16 = u16::MAX;
}

impl DomainEvent {
    /// Its variant's bit ([`bits`]).
    pub const fn bit(&self) -> u16 {
        match self {
            DomainEvent::ProcessStarted { .. } => bits::ProcessStarted,
            DomainEvent::ThreadStarted => bits::ThreadStarted,
            DomainEvent::Exec => bits::Exec,
            DomainEvent::Exited { .. } => bits::Exited,
            DomainEvent::Reaped { .. } => bits::Reaped,
            DomainEvent::Bound { .. } => bits::Bound,
            DomainEvent::SockClosed { .. } => bits::SockClosed,
            DomainEvent::BindFailed { .. } => bits::BindFailed,
            DomainEvent::ListenStarted { .. } => bits::ListenStarted,
            DomainEvent::ListenStopped { .. } => bits::ListenStopped,
            DomainEvent::Connect { .. } => bits::Connect,
            DomainEvent::Other => bits::Other,
        }
    }

    /// What `ev` means.
    pub fn of(ev: &KernelEvent) -> DomainEvent {
        match &ev.payload {
            Payload::Fork(f) if f.clone_flags & CLONE_THREAD != 0 => DomainEvent::ThreadStarted,
            Payload::Fork(f) => DomainEvent::ProcessStarted {
                parent: ev.header.tgid,
                child: f.child_tgid,
            },
            Payload::Exec(_) => DomainEvent::Exec,
            Payload::Exit(x) => DomainEvent::Exited {
                process_ended: crate::world::proctable::ends_process(
                    x,
                    ev.header.pid,
                    ev.header.tgid,
                ),
                parent_waiting: x.parent_waiting != 0,
                ends_pid_namespace: crate::world::proctable::ends_pid_namespace(x, ev.header.tgid)
                    .then_some(x.pidns),
                namespace_dying: x.flags & watcher_common::EXIT_PIDNS_DYING != 0,
            },
            Payload::Reap(r) => DomainEvent::Reaped {
                child: r.reaped_pid,
            },
            Payload::Bind(b) => {
                let Some(ip) = ip_addr(b.family, &b.addr) else {
                    return DomainEvent::Other;
                };
                let picked = b.flags & watcher_common::BIND_PICKED_PORT != 0;
                let local = Endpoint {
                    netns: b.netns,
                    tcp: is_tcp(b.sock_type),
                    ip,
                    port: if picked { 0 } else { b.port },
                };
                match -b.ret {
                    0 => DomainEvent::Bound {
                        local,
                        inode: b.inode,
                        picked: picked.then_some(b.port),
                        tracked: (b.flags & watcher_common::BIND_TRACKED != 0 && b.skaddr != 0)
                            .then_some(b.skaddr),
                    },
                    EADDRINUSE => DomainEvent::BindFailed {
                        local,
                        error: BindError::InUse,
                    },
                    EADDRNOTAVAIL => DomainEvent::BindFailed {
                        local,
                        error: BindError::NotAvailable,
                    },
                    e => DomainEvent::BindFailed {
                        local,
                        error: BindError::Other(e),
                    },
                }
            }
            Payload::Connect(c) => {
                let Some(ip) = ip_addr(c.family, &c.addr) else {
                    return DomainEvent::Other;
                };
                let dest = Endpoint {
                    netns: c.netns,
                    tcp: is_tcp(c.sock_type),
                    ip,
                    port: c.port,
                };
                let outcome = match -c.ret {
                    0 => ConnectOutcome::Connected,
                    EINPROGRESS => ConnectOutcome::InProgress,
                    e => ConnectOutcome::Error(e),
                };
                DomainEvent::Connect {
                    dest,
                    sock: c.skaddr,
                    outcome,
                    syscall: true,
                }
            }
            Payload::TcpState(t) => {
                let endpoint = |addr: &[u8; 16], port: u16| {
                    ip_addr(t.family, addr).map(|ip| Endpoint {
                        netns: t.netns,
                        tcp: true,
                        ip,
                        port,
                    })
                };
                match (t.old_state, t.new_state) {
                    (_, TCP_LISTEN) => {
                        endpoint(&t.saddr, t.sport).map_or(DomainEvent::Other, |local| {
                            DomainEvent::ListenStarted {
                                local,
                                inode: t.inode,
                            }
                        })
                    }
                    (TCP_LISTEN, TCP_CLOSE) => endpoint(&t.saddr, t.sport)
                        .map_or(DomainEvent::Other, |local| DomainEvent::ListenStopped {
                            local,
                        }),
                    (TCP_SYN_SENT, new @ (TCP_ESTABLISHED | TCP_CLOSE)) => {
                        let outcome = if new == TCP_ESTABLISHED {
                            ConnectOutcome::Connected
                        } else {
                            ConnectOutcome::HandshakeFailed
                        };
                        endpoint(&t.daddr, t.dport).map_or(DomainEvent::Other, |dest| {
                            DomainEvent::Connect {
                                dest,
                                sock: t.skaddr,
                                outcome,
                                syscall: false,
                            }
                        })
                    }
                    _ => DomainEvent::Other,
                }
            }
            Payload::SockClose(c) => match ip_addr(c.family, &c.addr) {
                Some(ip) => DomainEvent::SockClosed {
                    local: Endpoint {
                        netns: c.netns,
                        tcp: true,
                        ip,
                        port: c.port,
                    },
                    sock: c.skaddr,
                },
                None => DomainEvent::Other,
            },
            Payload::Cgroup(_) | Payload::Signal(_) => DomainEvent::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::decode::header_for;
    use watcher_common::{EventKind, SockCallData, TcpStateData, AF_INET};

    fn sock(ret: i32, port: u16, sock_type: u16) -> KernelEvent {
        KernelEvent {
            header: header_for::<SockCallData>(EventKind::Bind, 1, 10, 10, "srv"),
            payload: Payload::Bind(SockCallData {
                fd: 3,
                ret,
                family: AF_INET,
                port,
                sock_type,
                addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                scope_id: 0,
                netns: 7,
                skaddr: 0xabc,
                inode: 0,
                ..Default::default()
            }),
        }
    }

    fn state(old: u32, new: u32) -> KernelEvent {
        KernelEvent {
            header: header_for::<TcpStateData>(EventKind::TcpState, 1, 10, 10, "srv"),
            payload: Payload::TcpState(TcpStateData {
                skaddr: 0xabc,
                old_state: old,
                new_state: new,
                sport: 40000,
                dport: 80,
                family: AF_INET,
                protocol: 6,
                saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                netns: 7,
                inode: 0,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_tracked_bind_to_port_0_says_the_port_picked_and_its_close_frees_it() {
        let mut ev = sock(0, 40123, 1);
        let Payload::Bind(b) = &mut ev.payload else {
            unreachable!()
        };
        b.flags = watcher_common::BIND_TRACKED | watcher_common::BIND_PICKED_PORT;
        let local = Endpoint {
            netns: 7,
            tcp: true,
            ip: "127.0.0.1".parse().unwrap(),
            port: 0,
        };
        assert_eq!(
            DomainEvent::of(&ev),
            DomainEvent::Bound {
                local,
                inode: 0,
                picked: Some(40123),
                tracked: Some(0xabc),
            }
        );
        let close = KernelEvent {
            header: header_for::<watcher_common::SockCloseData>(
                EventKind::SockClose,
                2,
                0,
                0,
                "swapper/1",
            ),
            payload: Payload::SockClose(watcher_common::SockCloseData {
                skaddr: 0xabc,
                netns: 7,
                port: 40123,
                family: AF_INET,
                addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            }),
        };
        assert_eq!(
            DomainEvent::of(&close),
            DomainEvent::SockClosed {
                local: Endpoint {
                    port: 40123,
                    ..local
                },
                sock: 0xabc,
            }
        );
    }

    #[test]
    fn binds_say_what_failed() {
        let local = |port, tcp| Endpoint {
            netns: 7,
            tcp,
            ip: "127.0.0.1".parse().unwrap(),
            port,
        };
        assert_eq!(
            DomainEvent::of(&sock(0, 80, 1)),
            DomainEvent::Bound {
                local: local(80, true),
                inode: 0,
                picked: None,
                tracked: None,
            }
        );
        assert_eq!(
            DomainEvent::of(&sock(-98, 80, 1)),
            DomainEvent::BindFailed {
                local: local(80, true),
                error: BindError::InUse
            }
        );
        assert_eq!(
            DomainEvent::of(&sock(-99, 80, 2)),
            DomainEvent::BindFailed {
                local: local(80, false),
                error: BindError::NotAvailable
            }
        );
        assert_eq!(
            DomainEvent::of(&sock(-13, 80, 1)),
            DomainEvent::BindFailed {
                local: local(80, true),
                error: BindError::Other(13)
            }
        );
    }

    #[test]
    fn tcp_states_become_listens_and_connect_outcomes() {
        let dest = Endpoint {
            netns: 7,
            tcp: true,
            ip: "10.0.0.2".parse().unwrap(),
            port: 80,
        };
        let local = Endpoint {
            netns: 7,
            tcp: true,
            ip: "127.0.0.1".parse().unwrap(),
            port: 40000,
        };
        assert_eq!(
            DomainEvent::of(&state(TCP_CLOSE, TCP_LISTEN)),
            DomainEvent::ListenStarted { local, inode: 0 }
        );
        assert_eq!(
            DomainEvent::of(&state(TCP_LISTEN, TCP_CLOSE)),
            DomainEvent::ListenStopped { local }
        );
        assert_eq!(
            DomainEvent::of(&state(TCP_SYN_SENT, TCP_CLOSE)),
            DomainEvent::Connect {
                dest,
                sock: 0xabc,
                outcome: ConnectOutcome::HandshakeFailed,
                syscall: false
            }
        );
        assert_eq!(
            DomainEvent::of(&state(TCP_SYN_SENT, TCP_ESTABLISHED)),
            DomainEvent::Connect {
                dest,
                sock: 0xabc,
                outcome: ConnectOutcome::Connected,
                syscall: false
            }
        );
        assert_eq!(
            DomainEvent::of(&state(TCP_CLOSE, TCP_SYN_SENT)),
            DomainEvent::Other
        );
    }
}
