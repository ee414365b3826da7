//! The kernel's socket tables, through sock_diag netlink (a targeted query:
//! TCP listeners of one port are found without walking the connection table;
//! reading `/proc/net/tcp6` costs 2.4 ms here even when it is empty), with
//! `/proc/net/{tcp,tcp6,udp,udp6}` as the fallback, and the processes holding
//! each socket found through `/proc/<pid>/fd`. Used at start (seed) and, for
//! one port at a time, to confirm holders before a port finding names them.
//! A [`Diag`] covers the network namespace it was opened in (its netlink
//! socket is kept); [`crate::world::netns`] keeps one per namespace.
use crate::kernel::abi::{TCP_BOUND_INACTIVE, TCP_LISTEN};
use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// A socket as the kernel reports it (`/proc/net/{tcp,udp}{,6}`), with the processes holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSocket {
    pub tcp: bool,
    pub addr: IpAddr,
    pub port: u16,
    /// Kernel state number (TCP: 10 LISTEN, 6 TIME_WAIT, 1 ESTABLISHED…; UDP: 7 unconnected, 1 connected).
    pub state: u32,
    pub uid: u32,
    pub inode: u64,
    pub pids: Vec<u32>,
    /// Inode of the network namespace the socket is in.
    pub netns: u32,
}

impl KernelSocket {
    /// A socket that holds the port for new binds and receives traffic for it.
    pub fn is_holder(&self) -> bool {
        if self.tcp {
            self.state == TCP_LISTEN
        } else {
            true
        }
    }
}

/// (network namespace, transport is TCP, port): one port space.
pub(crate) type PortKey = (u32, bool, u16);

fn parse_addr(hex: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = hex.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(a, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut b = [0u8; 16];
            for k in 0..4 {
                let w = u32::from_str_radix(&a[k * 8..k * 8 + 8], 16).ok()?;
                b[k * 4..k * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Parse one `/proc/net/{tcp,udp}{,6}` table.
#[cfg(test)]
pub(crate) fn parse_table(text: &str, tcp: bool) -> Vec<KernelSocket> {
    parse_table_peers(text, tcp)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// [`parse_table`], with each socket's remote address.
fn parse_table_peers(text: &str, tcp: bool) -> Vec<(KernelSocket, (IpAddr, u16))> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let Some((addr, port)) = parse_addr(f[1]) else {
            continue;
        };
        let Ok(state) = u32::from_str_radix(f[3], 16) else {
            continue;
        };
        let uid = f[7].parse().unwrap_or(0);
        let inode = f[9].parse().unwrap_or(0);
        let peer = parse_addr(f[2]).unwrap_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        out.push((
            KernelSocket {
                tcp,
                addr,
                port,
                state,
                uid,
                inode,
                pids: Vec::new(),
                netns: 0,
            },
            peer,
        ));
    }
    out
}

const TCP_LISTEN_STATE: u8 = 10;

/// One sock_diag dump: `family` (AF_INET/AF_INET6), TCP or UDP, the given
/// state mask, optionally only sockets whose local port is `sport` (the kernel
/// filters listeners by it).
fn diag(
    socket: &mut netlink_sys::Socket,
    family: u8,
    tcp: bool,
    states: u32,
    sport: u16,
) -> std::io::Result<Vec<(KernelSocket, (IpAddr, u16))>> {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_DUMP, NLM_F_REQUEST};
    use netlink_packet_sock_diag::{
        constants::{IPPROTO_TCP, IPPROTO_UDP},
        inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
        SockDiagMessage,
    };

    let mut id = if family == 10 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    id.source_port = sport;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        hdr,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: if tcp { IPPROTO_TCP } else { IPPROTO_UDP },
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_retain(states),
            socket_id: id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    dump(socket, &buf, tcp, SOCK_DIAG_BY_FAMILY)
}

/// Every TCP socket of both families in one dump: the older
/// `TCPDIAG_GETSOCK` request, which the kernel answers for `AF_UNSPEC`
/// (`inet_diag_dump_compat`) — one walk of its established hash where a
/// request per family walks it twice. The walk is of every bucket, shared
/// by the namespaces without a hash of their own: 2.3 ms on a 24 GiB host
/// for the one, 2.4 + 2.3 ms for the two (session 35), on a CPU nothing
/// else gets meanwhile (empty buckets are skipped without a preemption
/// point).
/// `sport`: only sockets on that local port (0: every one; the kernel
/// still walks every bucket, it skips the others' sockets).
fn diag_tcp_both_families(
    socket: &mut netlink_sys::Socket,
    states: u32,
    sport: u16,
) -> std::io::Result<Vec<(KernelSocket, (IpAddr, u16))>> {
    use netlink_packet_core::{Emitable, NetlinkHeader, NLM_F_DUMP, NLM_F_REQUEST};
    // The header, then struct inet_diag_req: family, src_len, dst_len, ext,
    // the socket id (48 bytes), states, dbs.
    const REQ: usize = 60;
    let mut hdr = NetlinkHeader::default();
    hdr.length = (NLMSG_HDR + REQ) as u32;
    hdr.message_type = TCPDIAG_GETSOCK;
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut req = vec![0u8; NLMSG_HDR + REQ];
    hdr.emit(&mut req[..NLMSG_HDR]);
    req[NLMSG_HDR] = 2;
    // (The socket id's source port, in network order.)
    req[NLMSG_HDR + 4..NLMSG_HDR + 6].copy_from_slice(&sport.to_be_bytes());
    req[NLMSG_HDR + 52..NLMSG_HDR + 56].copy_from_slice(&states.to_ne_bytes());
    dump(socket, &req, true, TCPDIAG_GETSOCK)
}

const NLMSG_HDR: usize = 16;
const TCPDIAG_GETSOCK: u16 = 18;
const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// Send `request` and read its dump to the end: the sockets of the answers
/// of type `answer` (`tcp`: the transport asked for).
fn dump(
    socket: &mut netlink_sys::Socket,
    request: &[u8],
    tcp: bool,
    answer: u16,
) -> std::io::Result<Vec<(KernelSocket, (IpAddr, u16))>> {
    socket.send(request, 0)?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        if parse_dump(&rx[..size.min(rx.len())], tcp, answer, &mut out)? {
            return Ok(out);
        }
    }
}

/// The messages of one `recv` of a dump into `out`: each of type `answer`
/// an `inet_diag_msg` (netlink-packet-sock-diag's `InetResponse`); `true`
/// at the dump's end; the kernel's error, or a message cut short, as `Err`.
fn parse_dump(
    buf: &[u8],
    tcp: bool,
    answer: u16,
    out: &mut Vec<(KernelSocket, (IpAddr, u16))>,
) -> std::io::Result<bool> {
    use netlink_packet_core::{NetlinkBuffer, Parseable, NLMSG_DONE, NLMSG_ERROR};
    use netlink_packet_sock_diag::inet::InetResponse;
    let bad = |e: netlink_packet_core::DecodeError| std::io::Error::other(e.to_string());
    let mut rest = buf;
    while !rest.is_empty() {
        let msg = NetlinkBuffer::new_checked(rest).map_err(bad)?;
        match msg.message_type() {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = msg
                    .payload()
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return Err(std::io::Error::from_raw_os_error(-code));
            }
            t if t == answer => {
                let h = InetResponse::parse(msg.payload()).map_err(bad)?.header;
                out.push((
                    KernelSocket {
                        tcp,
                        addr: h.socket_id.source_address,
                        port: h.socket_id.source_port,
                        state: h.state as u32,
                        uid: h.uid,
                        inode: h.inode as u64,
                        pids: Vec::new(),
                        netns: 0,
                    },
                    (
                        h.socket_id.destination_address,
                        h.socket_id.destination_port,
                    ),
                ));
            }
            _ => {}
        }
        rest = rest
            .get((msg.length() as usize).next_multiple_of(4)..)
            .unwrap_or(&[]);
    }
    Ok(false)
}

/// A sock_diag socket of one network namespace (the one it was opened in),
/// kept for every query, with that namespace's `/proc/<pid>/net` tables as
/// the fallback.
pub(crate) struct Diag {
    socket: Option<netlink_sys::Socket>,
    proc_net: std::path::PathBuf,
    /// How long the last dump of a port's connections took, until taken
    /// ([`Diag::take_dump_cost`]).
    dump_ns: Option<u64>,
}

impl Diag {
    /// Open in the calling thread's network namespace; `proc_net` is that
    /// namespace's `/proc/…/net` directory, read when netlink fails.
    pub(crate) fn open(proc_net: impl Into<std::path::PathBuf>) -> Diag {
        let socket = (|| {
            let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG)?;
            s.bind_auto()?;
            s.connect(&netlink_sys::SocketAddr::new(0, 0))?;
            std::io::Result::Ok(s)
        })();
        if let Err(e) = &socket {
            tracing::debug!("sock_diag unavailable ({e}); reading /proc tables");
        }
        Diag {
            socket: socket.ok(),
            proc_net: proc_net.into(),
            dump_ns: None,
        }
    }

    /// Only the tables under `proc_net` (`/proc/<pid>/net` of a namespace watcher may not enter).
    pub(crate) fn open_tables_only(proc_net: &std::path::Path) -> Diag {
        Diag {
            socket: None,
            proc_net: proc_net.to_path_buf(),
            dump_ns: None,
        }
    }

    /// Sockets of one transport on `port` (0: all) in the states of `states`.
    fn query(&mut self, tcp: bool, port: u16, states: u32) -> Vec<KernelSocket> {
        self.query_peers(tcp, port, states)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    /// [`Diag::query`], with each socket's remote address.
    fn query_peers(
        &mut self,
        tcp: bool,
        port: u16,
        states: u32,
    ) -> Vec<(KernelSocket, (IpAddr, u16))> {
        let mut out = Vec::new();
        if let Some(sock) = self.socket.as_mut() {
            for family in [2u8, 10u8] {
                match diag(sock, family, tcp, states, port) {
                    Ok(v) => out.extend(v.into_iter().filter(|(s, _)| port == 0 || s.port == port)),
                    Err(e) => {
                        tracing::debug!(
                            "sock_diag failed ({e}); reading {}",
                            self.proc_net.display()
                        );
                        self.socket = None;
                        out.clear();
                        break;
                    }
                }
            }
            if self.socket.is_some() {
                return out;
            }
        }
        read_tables(&self.proc_net, tcp)
            .into_iter()
            .filter(|(s, _)| (port == 0 || s.port == port) && states & (1 << s.state) != 0)
            .collect()
    }

    /// The use of local ports in this namespace, for `ports_exhausted`: every
    /// TCP socket (any state) and UDP socket, counted against the ephemeral
    /// range (read from this thread's namespace), grouped by owning process
    /// (one scan of `/proc/<pid>/fd`) and by destination. One dump; the
    /// caller rate-limits it.
    pub(crate) fn port_summary(&mut self) -> PortSummary {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| {
                let mut it = t.split_whitespace().filter_map(|x| x.parse::<u16>().ok());
                Some((it.next()?, it.next()?))
            });
        // Every state, and (Linux 6.7+) TCP_BOUND_INACTIVE (13): sockets bound
        // but neither listening nor connected, which hold their port too.
        let mut all = self.tcp_both_families(0, 0xfff | 1 << TCP_BOUND_INACTIVE);
        all.extend(self.query_peers(false, 0, u32::MAX));
        summarize(all, range)
    }

    /// The sockets on `port` of one transport, holders with their
    /// processes: named by `known` (socket inode, pid) when those name them
    /// all (then `true`: no `/proc` read), else from the fds of
    /// `candidates` (the holders watcher knows of) first. For TCP: the
    /// listeners, and only when there is none and `connections` asks for
    /// them the other sockets on the port (TIME_WAIT, connections), which
    /// explain an EADDRINUSE without a holder (see [`Diag::on_port`]).
    pub(crate) fn port_sockets(
        &mut self,
        tcp: bool,
        port: u16,
        connections: bool,
        candidates: &[u32],
        known: &[(u64, u32)],
    ) -> (Vec<KernelSocket>, bool) {
        let mut socks = self.on_port(tcp, port, connections);
        if named_by_inode(&mut socks, known) {
            return (socks, true);
        }
        (with_owners_of(socks, candidates), false)
    }

    /// The holders of `port` (TCP listeners, UDP sockets) without their
    /// processes, from sock_diag only: `None` when this namespace has no
    /// working sock_diag socket, or when TCP has no listener there (the
    /// other sockets on the port are a dump of the whole connection table:
    /// a helper's work). Never reads `/proc`.
    pub(crate) fn port_sockets_netlink(
        &mut self,
        tcp: bool,
        port: u16,
    ) -> Option<Vec<KernelSocket>> {
        self.socket.as_ref()?;
        let socks = if tcp {
            self.query(true, port, 1 << TCP_LISTEN_STATE)
        } else {
            self.query(false, port, u32::MAX)
        };
        // A failed query falls back to /proc and drops the socket: not an answer here.
        self.socket.as_ref()?;
        (!tcp || !socks.is_empty()).then_some(socks)
    }

    /// The holders of `port` from sock_diag alone, each named by `known`
    /// (socket inode, pid: what the bind and listen records carried);
    /// `None` when a holder's inode is not among them, or sock_diag cannot
    /// answer here (see [`Diag::port_sockets_netlink`]): then `/proc` tells.
    pub(crate) fn port_sockets_by_inode(
        &mut self,
        tcp: bool,
        port: u16,
        known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        let mut socks = self.port_sockets_netlink(tcp, port)?;
        named_by_inode(&mut socks, known).then_some(socks)
    }

    /// Whether sock_diag works here.
    pub(crate) fn has_netlink(&self) -> bool {
        self.socket.is_some()
    }

    /// The sockets on `port`: for TCP the listeners, or when there is none
    /// and `connections` asks, every other socket on it. Only a question
    /// that needs them asks (a failed bind, whose blocker can be a
    /// connection or a TIME_WAIT; an open conflict restated): the kernel
    /// answers it by walking its whole connection hash, sized by the host's
    /// memory whatever the port (~2.4 ms per family on this 24 GiB host),
    /// without a preemption point on a `PREEMPT_NONE` kernel — whatever
    /// waits for that CPU, the deciding thread or a reader of the feed,
    /// waits that long. A listen or a bind that succeeded, confirmed after
    /// its socket was already closed, made two such walks.
    fn on_port(&mut self, tcp: bool, port: u16, connections: bool) -> Vec<KernelSocket> {
        if tcp {
            let listeners = self.query(true, port, 1 << TCP_LISTEN_STATE);
            if listeners.is_empty() && connections {
                self.connections_on(port)
            } else {
                listeners
            }
        } else {
            self.query(false, port, u32::MAX)
        }
    }

    /// The TCP sockets on `port` that do not listen, both families in one
    /// walk of the connection hash (per family if the kernel refuses the
    /// older request).
    fn connections_on(&mut self, port: u16) -> Vec<KernelSocket> {
        let started = std::time::Instant::now();
        let socks = self
            .tcp_both_families(port, !(1u32 << TCP_LISTEN_STATE) & 0xfff)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        self.dump_ns = Some(started.elapsed().as_nanos() as u64);
        socks
    }

    /// The time the last dump of a port's connections took, once.
    pub(crate) fn take_dump_cost(&mut self) -> Option<u64> {
        self.dump_ns.take()
    }

    /// The TCP sockets on `port` (0: every one) in the states of `states`,
    /// with their remote addresses: both families in one walk of the
    /// kernel's hash, per family if the kernel refuses the older request.
    fn tcp_both_families(&mut self, port: u16, states: u32) -> Vec<(KernelSocket, (IpAddr, u16))> {
        match self
            .socket
            .as_mut()
            .map(|s| diag_tcp_both_families(s, states, port))
        {
            Some(Ok(v)) => v
                .into_iter()
                .filter(|(s, _)| port == 0 || s.port == port)
                .collect(),
            Some(Err(e)) => {
                tracing::debug!("one TCP dump for both families failed ({e}); one per family");
                self.query_peers(true, port, states)
            }
            None => self.query_peers(true, port, states),
        }
    }

    /// Every holder (TCP listeners, bound UDP sockets), without their processes.
    pub(crate) fn holders(&mut self) -> Vec<KernelSocket> {
        let mut all: Vec<KernelSocket> = self.query(true, 0, 1 << TCP_LISTEN_STATE);
        all.extend(
            self.query(false, 0, u32::MAX)
                .into_iter()
                .filter(|s| s.port != 0),
        );
        all
    }
}

/// Local ports in use in a network namespace (see [`Diag::port_summary`]).
pub(crate) fn summarize(
    all: Vec<(KernelSocket, (IpAddr, u16))>,
    range: Option<(u16, u16)>,
) -> PortSummary {
    const TIME_WAIT: u32 = 6;
    const LISTEN: u32 = 10;
    let in_range = |p: u16| match range {
        Some((lo, hi)) => p >= lo && p <= hi,
        None => true,
    };
    // Sockets using an ephemeral local port (listeners hold theirs by choice).
    let used: Vec<&(KernelSocket, (IpAddr, u16))> = all
        .iter()
        .filter(|(s, _)| s.port != 0 && in_range(s.port) && !(s.tcp && s.state == LISTEN))
        .collect();
    let mut ports: Vec<u16> = used.iter().map(|(s, _)| s.port).collect();
    ports.sort_unstable();
    ports.dedup();
    let mut by_dest: HashMap<(IpAddr, u16), (usize, usize)> = HashMap::new();
    for (s, peer) in &used {
        if peer.1 != 0 {
            let e = by_dest.entry(*peer).or_default();
            e.0 += 1;
            if s.tcp && s.state == TIME_WAIT {
                e.1 += 1;
            }
        }
    }
    let inodes: Vec<u64> = used
        .iter()
        .map(|(s, _)| s.inode)
        .filter(|&i| i != 0)
        .collect();
    let owners = owners(&inodes, &[]);
    let mut by_pid: HashMap<u32, usize> = HashMap::new();
    for (s, _) in &used {
        if let Some(pids) = owners.get(&s.inode) {
            for p in pids {
                *by_pid.entry(*p).or_default() += 1;
            }
        }
    }
    let mut by_process: Vec<(u32, String, usize)> = by_pid
        .into_iter()
        .map(|(pid, n)| {
            let comm = crate::world::cmdline::read(pid)
                .map(|(args, _)| args.join(" "))
                .filter(|c| !c.is_empty())
                .or_else(|| {
                    fs::read_to_string(format!("/proc/{pid}/comm"))
                        .ok()
                        .map(|c| c.trim().to_owned())
                })
                .unwrap_or_default();
            (pid, comm.chars().take(60).collect(), n)
        })
        .collect();
    by_process.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    by_process.truncate(5);
    let mut by_destination: Vec<((IpAddr, u16), usize, usize)> =
        by_dest.into_iter().map(|(d, (n, tw))| (d, n, tw)).collect();
    by_destination.sort_by_key(|d| std::cmp::Reverse(d.1));
    by_destination.truncate(5);
    PortSummary {
        range,
        ports_in_use: ports.len(),
        sockets: used.len(),
        time_wait: used
            .iter()
            .filter(|(s, _)| s.tcp && s.state == TIME_WAIT)
            .count(),
        by_process,
        by_destination,
        cost_ns: 0,
    }
}

/// How a network namespace's local ports are used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortSummary {
    /// `net.ipv4.ip_local_port_range` of the namespace (None: unreadable).
    pub range: Option<(u16, u16)>,
    /// Distinct local ports in the range in use.
    pub ports_in_use: usize,
    /// Sockets using them.
    pub sockets: usize,
    pub time_wait: usize,
    /// Top processes: (pid, command line, sockets).
    pub by_process: Vec<(u32, String, usize)>,
    /// Top destinations: (address, sockets, of which in TIME_WAIT).
    pub by_destination: Vec<((IpAddr, u16), usize, usize)>,
    /// What making it took (monotonic ns, on the worker): it paces the next.
    pub cost_ns: u64,
}

fn read_tables(dir: &std::path::Path, tcp: bool) -> Vec<(KernelSocket, (IpAddr, u16))> {
    let names: [&str; 2] = if tcp {
        ["tcp", "tcp6"]
    } else {
        ["udp", "udp6"]
    };
    names
        .iter()
        .filter_map(|n| fs::read_to_string(dir.join(n)).ok())
        .flat_map(|t| parse_table_peers(&t, tcp))
        .collect()
}

/// Record which of `inodes` process `pid` holds.
fn scan_pid(pid: u32, inodes: &[u64], out: &mut HashMap<u64, Vec<u32>>) {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        let Some(inode) = t
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        if inodes.contains(&inode) {
            let v = out.entry(inode).or_default();
            if !v.contains(&pid) {
                v.push(pid);
            }
        }
    }
}

/// inode → pids, for the given inodes: the `candidates` first (cheap); a scan
/// of every process's `/proc/<pid>/fd` only when some inode is still unexplained.
fn owners(inodes: &[u64], candidates: &[u32]) -> HashMap<u64, Vec<u32>> {
    let mut out: HashMap<u64, Vec<u32>> = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    for &pid in candidates {
        scan_pid(pid, inodes, &mut out);
    }
    if inodes.iter().all(|i| out.contains_key(i)) {
        return out;
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !candidates.contains(&pid) {
            scan_pid(pid, inodes, &mut out);
        }
    }
    out
}

/// The processes holding each holder socket (one scan of `/proc/<pid>/fd` for all of them).
pub(crate) fn with_owners(socks: Vec<KernelSocket>) -> Vec<KernelSocket> {
    with_owners_of(socks, &[])
}

/// Name each holder in `socks` by `known` (socket inode, pid: what the
/// bind and listen records carried); `false`, `socks` left as they were,
/// when a holder's inode is not among them.
fn named_by_inode(socks: &mut [KernelSocket], known: &[(u64, u32)]) -> bool {
    let pids: Vec<Vec<u32>> = socks
        .iter()
        .filter(|s| s.is_holder())
        .map(|s| {
            known
                .iter()
                .filter(|(i, _)| *i != 0 && *i == s.inode)
                .map(|(_, p)| *p)
                .collect()
        })
        .collect();
    if pids.iter().any(Vec::is_empty) {
        return false;
    }
    for (s, p) in socks.iter_mut().filter(|s| s.is_holder()).zip(pids) {
        s.pids = p;
    }
    true
}

fn with_owners_of(mut socks: Vec<KernelSocket>, candidates: &[u32]) -> Vec<KernelSocket> {
    let inodes: Vec<u64> = socks
        .iter()
        .filter(|s| s.is_holder() && s.inode != 0)
        .map(|s| s.inode)
        .collect();
    let map = owners(&inodes, candidates);
    for s in &mut socks {
        if let Some(p) = map.get(&s.inode) {
            s.pids = p.clone();
        }
    }
    socks
}

/// Stops a test's listener at once, then closes it. A close alone drops
/// only this descriptor: a child that another test's thread is forking
/// holds a copy until its exec, and the socket stays in LISTEN that long
/// (a port "held by connections alone" then still has its listener).
#[cfg(test)]
pub(crate) fn close_listener(l: std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both)
        .expect("shutdown of a listener");
    drop(l);
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLMSG_DONE, NLMSG_ERROR};

    /// A netlink message of `ty` with `body`, padded to four bytes.
    fn nlmsg(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDR + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        m
    }

    /// An `inet_diag_msg`.
    fn diag_msg(
        family: u8,
        state: u8,
        (src, sport): (&[u8], u16),
        (dst, dport): (&[u8], u16),
        uid: u32,
        inode: u32,
    ) -> Vec<u8> {
        let mut b = vec![family, state, 0, 0];
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        let mut a = [0u8; 16];
        a[..src.len()].copy_from_slice(src);
        b.extend_from_slice(&a);
        let mut a = [0u8; 16];
        a[..dst.len()].copy_from_slice(dst);
        b.extend_from_slice(&a);
        b.extend_from_slice(&[0; 12 + 12]);
        b.extend_from_slice(&uid.to_ne_bytes());
        b.extend_from_slice(&inode.to_ne_bytes());
        assert_eq!(b.len(), 72);
        b
    }

    /// The kernel answers the older request with the sockets of both
    /// families, in one dump (no privilege needed to ask).
    #[test]
    fn the_kernel_dumps_both_families_for_the_older_request() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("an IPv4 listener");
        let v6 = std::net::TcpListener::bind("[::1]:0").expect("an IPv6 listener on ::1");
        let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG)
            .expect("a sock_diag socket");
        s.bind_auto().expect("bind");
        s.connect(&netlink_sys::SocketAddr::new(0, 0))
            .expect("connect");
        let all = diag_tcp_both_families(&mut s, 0xfff, 0).expect("the dump");
        for l in [&v4, &v6] {
            let a = l.local_addr().unwrap();
            assert!(
                all.iter().any(|(k, _)| k.addr == a.ip()
                    && k.port == a.port()
                    && k.state == TCP_LISTEN_STATE as u32
                    && k.inode != 0),
                "{a} in {} sockets",
                all.len()
            );
        }
        // With a port: that port's sockets alone.
        let port = v6.local_addr().unwrap().port();
        let one = diag_tcp_both_families(&mut s, 0xfff, port).expect("the dump");
        assert!(
            !one.is_empty() && one.iter().all(|(k, _)| k.port == port),
            "{one:?}"
        );
    }

    #[test]
    fn one_dump_of_the_older_request_brings_both_families() {
        let mut buf = nlmsg(
            TCPDIAG_GETSOCK,
            &diag_msg(
                2,
                6,
                (&[127, 0, 0, 1], 40000),
                (&[127, 0, 0, 2], 5000),
                1000,
                77,
            ),
        );
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        buf.extend(nlmsg(
            TCPDIAG_GETSOCK,
            &diag_msg(10, 10, (&v6, 8080), (&[0; 16], 0), 0, 78),
        ));
        let mut out = Vec::new();
        assert!(
            !parse_dump(&buf, true, TCPDIAG_GETSOCK, &mut out).unwrap(),
            "no end yet"
        );
        assert_eq!(out.len(), 2);
        let (s, peer) = &out[0];
        assert_eq!(
            (s.addr, s.port, s.state, s.uid, s.inode, s.tcp),
            ("127.0.0.1".parse().unwrap(), 40000, 6, 1000, 77, true)
        );
        assert_eq!(*peer, ("127.0.0.2".parse().unwrap(), 5000));
        assert_eq!(
            (out[1].0.addr, out[1].0.port, out[1].0.state),
            ("::1".parse().unwrap(), 8080, 10)
        );
        // The end, and an error the kernel answers with.
        assert!(parse_dump(&nlmsg(NLMSG_DONE, &[0; 4]), true, TCPDIAG_GETSOCK, &mut out).unwrap());
        let err = parse_dump(
            &nlmsg(NLMSG_ERROR, &(-22i32).to_ne_bytes()),
            true,
            TCPDIAG_GETSOCK,
            &mut out,
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(22));
        // A message longer than what came is refused, not read past.
        let mut cut = nlmsg(
            TCPDIAG_GETSOCK,
            &diag_msg(2, 1, (&[1, 2, 3, 4], 1), (&[5, 6, 7, 8], 2), 0, 0),
        );
        cut.truncate(40);
        assert!(parse_dump(&cut, true, TCPDIAG_GETSOCK, &mut out).is_err());
        assert_eq!(out.len(), 2);
    }
    use super::*;

    #[test]
    fn parses_proc_net() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 1060 1 00000000a7af8450 100 0 0 10 0
   1: garbage
";
        let s = parse_table(tcp, true);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].addr, s[0].port, s[0].state, s[0].uid, s[0].inode),
            ("127.0.0.1".parse().unwrap(), 8080, 10, 998, 1060)
        );
        let tcp6 = "hdr
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0 100 0 0 10 0
";
        let s = parse_table(tcp6, true);
        assert_eq!(s[0].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(s[0].port, 80);
        assert_eq!(s[1].addr, "::ffff:127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn finds_our_own_listener_and_udp_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut diag = Diag::open("/proc/net");
        let (s, _) = diag.port_sockets(true, port, false, &[], &[]);
        let me = std::process::id();
        assert!(
            s.iter().any(|k| k.state == 10
                && k.pids.contains(&me)
                && k.addr == "127.0.0.1".parse::<IpAddr>().unwrap()),
            "{s:?}"
        );
        let u = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let uport = u.local_addr().unwrap().port();
        let (s, _) = diag.port_sockets(false, uport, false, &[me], &[]);
        assert!(
            s.iter()
                .any(|k| k.pids.contains(&me) && k.addr == "::1".parse::<IpAddr>().unwrap()),
            "{s:?}"
        );
        assert!(with_owners(diag.holders())
            .iter()
            .any(|k| k.port == port && k.pids.contains(&me)));
    }

    #[test]
    fn a_port_no_listener_holds_is_dumped_for_its_connections_only_when_asked() {
        // Connections accepted on a port whose listener then closed, of
        // each family: the port is held by connections alone (what fails a
        // later bind).
        for ip in ["127.0.0.1", "::1"] {
            let l = std::net::TcpListener::bind((ip, 0)).unwrap();
            let port = l.local_addr().unwrap().port();
            let _client = std::net::TcpStream::connect((ip, port)).unwrap();
            let (_accepted, _) = l.accept().unwrap();
            close_listener(l);
            let mut diag = Diag::open("/proc/net");
            let (s, _) = diag.port_sockets(true, port, true, &[], &[]);
            assert!(
                s.iter().any(|k| k.port == port
                    && k.state == 1
                    && k.addr == ip.parse::<IpAddr>().unwrap()),
                "asked for connections: the accepted one is there: {s:?}"
            );
            assert!(s.iter().all(|k| k.port == port), "{s:?}");
            let (s, _) = diag.port_sockets(true, port, false, &[], &[]);
            assert!(s.is_empty(), "listeners only: none: {s:?}");
        }
    }
}
