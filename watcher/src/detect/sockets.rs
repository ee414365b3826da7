//! Socket ownership: who holds which address and port, seeded from the
//! kernel's socket tables at start and kept current from bind, listen and
//! exit events. It goes stale (UDP and bound-but-idle TCP sockets close
//! without an event; sockets are inherited across fork), so before a port
//! finding names a holder, the holders of that one port are confirmed
//! against the kernel at that moment (the pipeline looks them up and passes
//! them in [`Input::kernel_sockets`]).
//!
//! Everything is keyed by network namespace (the inode the kernel gives with
//! each socket record): sockets of different namespaces never share a port.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::Input;
use crate::{
    world::proctable::Proc,
    world::{
        domain::{bits, BindError, DomainEvent},
        sockdiag::{KernelSocket, PortKey},
    },
};

/// `::ffff:a.b.c.d` is `a.b.c.d`.
pub(crate) fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

pub(crate) fn is_wildcard(ip: IpAddr) -> bool {
    ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) || ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}

/// Two bound addresses (same port) both receive some of the same destinations,
/// or split one wildcard's destinations between them.
pub(crate) fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (normalize(a), normalize(b));
    if a == b {
        return true;
    }
    match (a, b) {
        // A wildcard and a specific address of the same family: the specific one wins for its address.
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            is_wildcard(a) || is_wildcard(b)
        }
        // IPv4 and IPv6 wildcards split the port by family; a v4 address and the v6 wildcard
        // (without IPV6_V6ONLY) also overlap.
        _ => is_wildcard(a) || is_wildcard(b),
    }
}

/// A process holding an address and port.
#[derive(Clone, Debug, PartialEq)]
pub struct Holder {
    /// Inode of the socket's network namespace.
    pub netns: u32,
    pub tcp: bool,
    pub addr: IpAddr,
    pub port: u16,
    pub proc: Proc,
    /// When it bound (CLOCK_MONOTONIC ns); `None` for sockets that existed before watcher started.
    pub since_ns: Option<u64>,
    pub listening: bool,
    /// The socket's inode (from its bind record, or the kernel's listing;
    /// 0 when unknown): names the holder of what sock_diag lists without `/proc`.
    pub inode: u64,
    /// A TCP socket the kernel follows to its end (its `struct sock`, and the
    /// table's [`SocketTable::generation`] when it bound): while no record
    /// was lost since, this holder is exactly as true as the kernel's own
    /// table, and a failing bind on its port needs no lookup.
    pub tracked: Option<(u64, u64)>,
}

/// What one event changed.
#[derive(Clone, Debug, Default)]
/// (Small: it is made and moved for every event — a holder boxed, the
/// exited process the event's own, not copies.)
pub struct Changes<'a> {
    /// A holder that started receiving traffic: a UDP bind, a TCP listen.
    pub receiving: Option<Box<Holder>>,
    /// Holders that went away.
    pub removed: Vec<Holder>,
    /// A process that exited (group dead): the event's subject.
    pub exited: Option<&'a Proc>,
}

impl Holder {
    pub fn key(&self) -> PortKey {
        (self.netns, self.tcp, self.port)
    }
}

pub struct SocketTable {
    by_port: HashMap<PortKey, Vec<Holder>>,
    /// Moves on at each loss of records (and each skipped run of the program
    /// that reports a socket's end): a tracked holder of an older generation
    /// may have missed its close, and is confirmed again.
    generation: u64,
    /// tgid → the ports it holds (an exit looks only at those).
    by_tgid: HashMap<u32, HashSet<PortKey>>,
    len: usize,
    cap: usize,
    /// Holders dropped because the table was full, or not kept because
    /// their process held [`PER_PROCESS_MAX`] non-listening sockets already.
    pub evicted: u64,
}

/// Non-listening sockets (bound TCP, UDP) kept per process: a process that
/// binds 100,000 ports must not make its exit a 100 ms pass on the deciding
/// thread, nor fill the table for everyone. Beyond, a conflict on one of its
/// ports is still found; its holder is named by the lookup (`/proc`), not
/// the table. Listeners are always kept.
pub(crate) const PER_PROCESS_MAX: usize = 4096;

impl SocketTable {
    pub fn new(cap: usize) -> SocketTable {
        SocketTable {
            by_port: HashMap::new(),
            generation: 0,
            by_tgid: HashMap::new(),
            len: 0,
            cap: cap.max(16),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn holders(&self, key: PortKey) -> &[Holder] {
        self.by_port.get(&key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Records were lost (or a run of `tcp_destroy_sock` was skipped): a
    /// tracked socket's close may be among them, so what the table says of
    /// tracked holders is confirmed again (O(1)).
    pub fn untrust(&mut self) {
        self.generation += 1;
    }

    /// The table knows a holder of `key` on an address overlapping `ip`
    /// exactly (tracked to its end, no loss since): a failing bind there is
    /// explained without asking the kernel.
    pub fn explains(&self, key: PortKey, ip: IpAddr) -> bool {
        self.holders(key)
            .iter()
            .any(|h| h.tracked.is_some_and(|(_, g)| g == self.generation) && overlaps(h.addr, ip))
    }

    fn add(&mut self, h: Holder) {
        if !h.listening
            && self
                .by_tgid
                .get(&h.proc.key.tgid)
                .is_some_and(|ports| ports.len() >= PER_PROCESS_MAX && !ports.contains(&h.key()))
        {
            self.evicted += 1;
            return;
        }
        if self.len >= self.cap {
            // Drop a non-listening holder first (least likely to matter), else any.
            // (Among the first 64 ports: a table of listeners only must not
            // make each insertion a scan of all of it.)
            let victim = self
                .by_port
                .iter()
                .take(64)
                .find(|(_, v)| v.iter().any(|h| !h.listening))
                .or_else(|| self.by_port.iter().next())
                .map(|(k, _)| *k);
            if let Some(k) = victim {
                if let Some(v) = self.by_port.get_mut(&k) {
                    let i = v.iter().position(|h| !h.listening).unwrap_or(0);
                    v.remove(i);
                    self.len -= 1;
                    self.evicted += 1;
                    if v.is_empty() {
                        self.by_port.remove(&k);
                    }
                }
            }
        }
        self.by_tgid
            .entry(h.proc.key.tgid)
            .or_default()
            .insert(h.key());
        let v = self.by_port.entry(h.key()).or_default();
        if let Some(existing) = v
            .iter_mut()
            .find(|x| x.addr == h.addr && x.proc.key.tgid == h.proc.key.tgid)
        {
            existing.listening |= h.listening;
            existing.proc = h.proc;
            // One entry for two sockets: no longer known exactly.
            if existing.tracked != h.tracked {
                existing.tracked = None;
            }
            return;
        }
        v.push(h);
        self.len += 1;
    }

    fn remove_where(&mut self, key: PortKey, pred: impl Fn(&Holder) -> bool) -> Vec<Holder> {
        let mut out = Vec::new();
        if let Some(v) = self.by_port.get_mut(&key) {
            let mut i = 0;
            while i < v.len() {
                if pred(&v[i]) {
                    out.push(v.remove(i));
                } else {
                    i += 1;
                }
            }
            if v.is_empty() {
                self.by_port.remove(&key);
            }
        }
        self.len -= out.len();
        for h in &out {
            let tgid = h.proc.key.tgid;
            let still = self
                .by_port
                .get(&key)
                .is_some_and(|v| v.iter().any(|x| x.proc.key.tgid == tgid));
            if !still {
                if let Some(set) = self.by_tgid.get_mut(&tgid) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.by_tgid.remove(&tgid);
                    }
                }
            }
        }
        out
    }

    /// The exited process `p`'s non-listening holders, removed (its
    /// listeners close with their own events: children may have inherited
    /// them). One pass over its own ports, its index entry taken whole.
    fn remove_process(&mut self, p: &Proc) -> Vec<Holder> {
        let tgid = p.key.tgid;
        let Some(keys) = self.by_tgid.remove(&tgid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut still = HashSet::new();
        for key in keys {
            let Some(v) = self.by_port.get_mut(&key) else {
                continue;
            };
            let mut i = 0;
            while i < v.len() {
                if v[i].proc.key == p.key && !v[i].listening {
                    out.push(v.remove(i));
                } else {
                    if v[i].proc.key.tgid == tgid {
                        still.insert(key);
                    }
                    i += 1;
                }
            }
            if v.is_empty() {
                self.by_port.remove(&key);
            }
        }
        if !still.is_empty() {
            self.by_tgid.insert(tgid, still);
        }
        self.len -= out.len();
        out
    }

    /// Start from the kernel's sockets (taken at watcher start).
    pub fn seed(
        &mut self,
        sockets: &[KernelSocket],
        procs: &dyn Fn(u32) -> Option<Proc>,
        _now: u64,
    ) {
        for s in sockets.iter().filter(|s| s.is_holder()) {
            for pid in &s.pids {
                if let Some(p) = procs(*pid) {
                    self.add(Holder {
                        netns: s.netns,
                        tcp: s.tcp,
                        addr: normalize(s.addr),
                        port: s.port,
                        proc: p,
                        since_ns: None,
                        listening: s.tcp,
                        inode: s.inode,
                        tracked: None,
                    });
                }
            }
        }
    }

    /// Correct what is known of one port with what the kernel says now:
    /// holders whose socket is gone are dropped; a holder whose socket is now
    /// held by other processes (inherited across fork, then the binder
    /// exited) is replaced by them. Sockets the events have not shown yet are
    /// added only when `add_unknown` (a failed bind: the holder has existed a
    /// while); otherwise the lookup, which runs a little after the event, could
    /// see a process that bound after it and whose exec is still queued.
    /// `asked_ns`: when the lookup was asked (event time), for an answer
    /// applied after later events: holders they added after it are not in
    /// the answer and are left as they are (`None`: the answer is the
    /// kernel's table as of now).
    pub fn reconcile(
        &mut self,
        key: PortKey,
        kernel: &[KernelSocket],
        procs: &dyn Fn(u32) -> Option<Proc>,
        add_unknown: bool,
        asked_ns: Option<u64>,
    ) {
        let (netns, tcp, port) = key;
        let live: Vec<&KernelSocket> = kernel
            .iter()
            .filter(|s| s.tcp == tcp && s.port == port && s.is_holder())
            .collect();
        let old = self.remove_where(key, |_| true);
        let mut kept_pids: Vec<(IpAddr, u32)> = Vec::new();
        for h in old {
            // Bound but not listening TCP sockets are not in the kernel's
            // listing, and holders newer than the question not in its answer: keep them.
            let newer = asked_ns.is_some_and(|t| h.since_ns.is_some_and(|s| s > t));
            if (tcp && !h.listening) || newer {
                if newer {
                    kept_pids.push((h.addr, h.proc.key.tgid));
                }
                self.add(h);
                continue;
            }
            let same_addr: Vec<&&KernelSocket> = live
                .iter()
                .filter(|s| normalize(s.addr) == h.addr)
                .collect();
            if let Some(s) = same_addr.iter().find(|s| s.pids.contains(&h.proc.key.tgid)) {
                kept_pids.push((h.addr, h.proc.key.tgid));
                // The kernel's word on which socket it is.
                self.add(Holder {
                    inode: s.inode,
                    ..h
                });
            } else if let Some(s) = same_addr.first().filter(|s| !s.pids.is_empty()) {
                // (A socket no fd holds — its process is closing it — proves nothing:
                // that case falls through to the next branch.)
                for pid in &s.pids {
                    if let Some(p) = procs(*pid) {
                        kept_pids.push((h.addr, *pid));
                        self.add(Holder {
                            proc: p,
                            since_ns: h.since_ns,
                            inode: s.inode,
                            ..h.clone()
                        });
                    }
                }
            } else if tcp
                && (!same_addr.is_empty()
                    || procs(h.proc.key.tgid)
                        .is_some_and(|p| p.key == h.proc.key && p.exited.is_none()))
            {
                // A listener the kernel no longer lists, of a process still alive
                // in the event stream: it closed after the event being handled,
                // and its LISTEN → CLOSE is still on its way. Keep it until then.
                kept_pids.push((h.addr, h.proc.key.tgid));
                self.add(h);
            }
        }
        if add_unknown {
            for s in live {
                let addr = normalize(s.addr);
                for pid in &s.pids {
                    if kept_pids.contains(&(addr, *pid)) {
                        continue;
                    }
                    if let Some(p) = procs(*pid) {
                        self.add(Holder {
                            netns,
                            tcp,
                            addr,
                            port,
                            proc: p,
                            since_ns: None,
                            listening: tcp,
                            inode: s.inode,
                            tracked: None,
                        });
                    }
                }
            }
        }
    }

    /// The network namespaces of the holders known, each with a pid in it.
    pub fn namespaces(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for v in self.by_port.values() {
            for h in v {
                if !out.iter().any(|(n, _)| *n == h.netns) {
                    out.push((h.netns, h.proc.key.tgid));
                }
            }
        }
        out
    }

    /// After a loss: correct the holders of the namespaces `read` with the
    /// kernel's holder sockets there (`kernel`, read from `taken_ns` on).
    /// Listeners and UDP holders the kernel no longer lists are dropped
    /// (their close was lost) unless they bound after the read began;
    /// listed holders the table lacks are added (their start was lost).
    /// Bound-only TCP sockets, which the listing leaves out, stay. Returns
    /// how many holders changed.
    pub fn resync(
        &mut self,
        read: &[u32],
        kernel: &[KernelSocket],
        procs: &dyn Fn(u32) -> Option<Proc>,
        taken_ns: u64,
    ) -> u64 {
        let listed = |h: &Holder| {
            kernel.iter().any(|s| {
                s.is_holder()
                    && s.netns == h.netns
                    && s.tcp == h.tcp
                    && s.port == h.port
                    && normalize(s.addr) == h.addr
                    && s.pids.contains(&h.proc.key.tgid)
            })
        };
        let keys: Vec<PortKey> = self
            .by_port
            .keys()
            .filter(|k| read.contains(&k.0))
            .copied()
            .collect();
        let mut changed = 0;
        for key in keys {
            let gone = self.remove_where(key, |h| {
                (h.listening || !h.tcp) && h.since_ns.is_none_or(|t| t < taken_ns) && !listed(h)
            });
            changed += gone.len() as u64;
        }
        for s in kernel
            .iter()
            .filter(|s| s.is_holder() && read.contains(&s.netns))
        {
            let addr = normalize(s.addr);
            for pid in &s.pids {
                let known = self
                    .holders((s.netns, s.tcp, s.port))
                    .iter()
                    .any(|h| h.addr == addr && h.proc.key.tgid == *pid);
                if known {
                    continue;
                }
                if let Some(p) = procs(*pid) {
                    self.add(Holder {
                        netns: s.netns,
                        tcp: s.tcp,
                        addr,
                        port: s.port,
                        proc: p,
                        since_ns: None,
                        listening: s.tcp,
                        inode: s.inode,
                        tracked: None,
                    });
                    changed += 1;
                }
            }
        }
        changed
    }

    /// Whether this event's port should be confirmed against the kernel
    /// first (`me`: the event's process).
    pub fn wants_confirmation(&self, event: &DomainEvent, me: u32) -> Option<PortKey> {
        let others = |key: PortKey| self.holders(key).iter().any(|h| h.proc.key.tgid != me);
        match *event {
            // Port 0: the kernel found no free ephemeral port — nothing
            // holds "port 0" (ports_exhausted asks for the summary).
            DomainEvent::BindFailed {
                local,
                error: BindError::InUse,
            } if local.port != 0 => {
                let key = (local.netns, local.tcp, local.port);
                (!self.explains(key, local.ip)).then_some(key)
            }
            DomainEvent::Bound { local, .. } if local.port != 0 => {
                let key = (local.netns, local.tcp, local.port);
                others(key).then_some(key)
            }
            DomainEvent::ListenStarted { local, .. } => {
                let key = (local.netns, true, local.port);
                others(key).then_some(key)
            }
            _ => None,
        }
    }

    /// The events [`SocketTable::apply`] reads (the rest change nothing
    /// and ask nothing: a fork, a reap, an exec).
    pub const READS: u16 = bits::Bound
        | bits::BindFailed
        | bits::ListenStarted
        | bits::ListenStopped
        | bits::SockClosed
        | bits::Exited;

    /// Apply one event.
    pub fn apply<'a>(&mut self, i: &Input<'a>) -> Changes<'a> {
        let mut ch = Changes::default();
        if i.event.bit() & Self::READS == 0 {
            return ch;
        }
        let ts = i.ev.header.ts_ns;
        let me = i.subject.map(|p| p.key.tgid).unwrap_or(i.ev.header.tgid);
        if let (Some(kernel), Some(key)) = (i.kernel_sockets, self.wants_confirmation(i.event, me))
        {
            let failed = matches!(
                i.event,
                DomainEvent::BindFailed {
                    error: BindError::InUse,
                    ..
                }
            );
            self.reconcile(key, kernel, i.procs, failed, None);
        }
        match *i.event {
            DomainEvent::Bound {
                local,
                inode,
                picked,
                tracked,
            } if local.port != 0 || (picked.is_some() && tracked.is_some()) => {
                // (A port the kernel picked is held like any other; kept
                // only when its close will be seen, or such binds would
                // fill the table with sockets long closed.)
                let Some(p) = i.subject else {
                    return ch;
                };
                let h = Holder {
                    netns: local.netns,
                    tcp: local.tcp,
                    addr: normalize(local.ip),
                    port: picked.unwrap_or(local.port),
                    proc: p.clone(),
                    since_ns: Some(ts),
                    listening: false,
                    inode,
                    tracked: tracked.map(|sk| (sk, self.generation)),
                };
                if !local.tcp {
                    ch.receiving = Some(Box::new(h.clone()));
                }
                self.add(h);
            }
            DomainEvent::ListenStarted { local, inode } => {
                let Some(p) = i.owner.or(i.subject) else {
                    return ch;
                };
                let addr = normalize(local.ip);
                let key = (local.netns, true, local.port);
                let bound = self
                    .holders(key)
                    .iter()
                    .find(|h| h.addr == addr && h.proc.key.tgid == p.key.tgid)
                    .cloned();
                let h = Holder {
                    netns: local.netns,
                    tcp: true,
                    addr,
                    port: local.port,
                    proc: p.clone(),
                    since_ns: bound.as_ref().and_then(|h| h.since_ns).or(Some(ts)),
                    listening: true,
                    // (Its bind's socket: the same entry, merged.)
                    tracked: bound.as_ref().and_then(|h| h.tracked),
                    // The socket the listen record named, else the one its
                    // bind record did (0: neither known).
                    inode: if inode != 0 {
                        inode
                    } else {
                        bound.map(|h| h.inode).unwrap_or(0)
                    },
                };
                ch.receiving = Some(Box::new(h.clone()));
                self.add(h);
            }
            DomainEvent::ListenStopped { local } => {
                let addr = normalize(local.ip);
                let closer = i.owner.or(i.subject).map(|p| p.key.tgid);
                let key = (local.netns, true, local.port);
                let holders = self.holders(key);
                // The closing task's own listener if it has one, else one on that address.
                let target = holders
                    .iter()
                    .position(|h| h.addr == addr && Some(h.proc.key.tgid) == closer)
                    .or_else(|| holders.iter().position(|h| h.addr == addr && h.listening));
                if let Some(idx) = target {
                    let tgid = holders[idx].proc.key.tgid;
                    ch.removed =
                        self.remove_where(key, |h| h.addr == addr && h.proc.key.tgid == tgid);
                }
            }
            DomainEvent::SockClosed { local, sock } => {
                let key = (local.netns, true, local.port);
                ch.removed =
                    self.remove_where(key, |h| h.tracked.is_some_and(|(sk, _)| sk == sock));
            }
            DomainEvent::Exited { .. } => {
                if let Some(p) = i.subject.filter(|p| p.exited.is_some()) {
                    // Listeners close with their own event (children may have inherited them);
                    // the rest has none: forget them with the process.
                    ch.removed = self.remove_process(p);
                    ch.exited = Some(p);
                }
            }
            _ => {}
        }
        ch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_of(tgid: u32) -> Proc {
        Proc::bare(
            crate::world::proctable::ProcKey { tgid, start_ns: 1 },
            1,
            "srv",
        )
    }

    fn listener(netns: u32, port: u16, pid: u32) -> KernelSocket {
        KernelSocket {
            netns,
            ..crate::detect::testkit::listener("0.0.0.0", port, &[pid])
        }
    }

    #[test]
    fn a_resync_after_a_loss_drops_closed_listeners_and_adds_unseen_ones() {
        let mut t = SocketTable::new(64);
        let procs = |tgid: u32| Some(proc_of(tgid));
        t.seed(
            &[
                listener(7, 80, 10),
                listener(7, 81, 11),
                listener(9, 90, 12),
            ],
            &procs,
            0,
        );
        // A listener bound after the read began is newer than the listing: kept.
        t.add(Holder {
            netns: 7,
            tcp: true,
            addr: "0.0.0.0".parse().unwrap(),
            port: 83,
            proc: proc_of(14),
            since_ns: Some(2_000),
            listening: true,
            inode: 0,
            tracked: None,
        });
        // Bound-only TCP sockets are not in the listing: kept.
        t.add(Holder {
            netns: 7,
            tcp: true,
            addr: "0.0.0.0".parse().unwrap(),
            port: 84,
            proc: proc_of(15),
            since_ns: Some(500),
            listening: false,
            inode: 0,
            tracked: None,
        });
        // Namespace 7 now: 80 closed (lost), 81 still there, 82 started unseen.
        let kernel = [listener(7, 81, 11), listener(7, 82, 13)];
        let changed = t.resync(&[7], &kernel, &procs, 1_000);
        assert_eq!(changed, 2, "80 dropped, 82 added");
        assert!(t.holders((7, true, 80)).is_empty());
        assert_eq!(t.holders((7, true, 81)).len(), 1);
        assert_eq!(t.holders((7, true, 82))[0].proc.key.tgid, 13);
        assert_eq!(t.holders((7, true, 83)).len(), 1, "newer than the read");
        assert_eq!(t.holders((7, true, 84)).len(), 1, "bound-only");
        assert_eq!(
            t.holders((9, true, 90)).len(),
            1,
            "a namespace not read is not judged"
        );
        let mut ns = t.namespaces();
        ns.sort();
        assert_eq!(ns.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![7, 9]);
    }

    #[test]
    fn a_process_keeps_at_most_its_share_of_sockets_and_its_exit_removes_them_in_one_pass() {
        let mut t = SocketTable::new(1 << 20);
        let p = proc_of(40);
        let bound = |port: u16, listening: bool| Holder {
            netns: 7,
            tcp: true,
            addr: "0.0.0.0".parse().unwrap(),
            port,
            proc: p.clone(),
            since_ns: Some(1),
            listening,
            inode: port as u64,
            tracked: None,
        };
        for port in 1..=5000u16 {
            t.add(bound(port, false));
        }
        assert_eq!(t.len(), PER_PROCESS_MAX);
        assert_eq!(t.evicted, 5000 - PER_PROCESS_MAX as u64);
        // A listener is always kept; another process is not limited by this one.
        t.add(bound(6000, true));
        t.add(Holder {
            proc: proc_of(41),
            ..bound(6001, false)
        });
        assert_eq!(t.len(), PER_PROCESS_MAX + 2);
        let removed = t.remove_process(&p);
        assert_eq!(removed.len(), PER_PROCESS_MAX);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.holders((7, true, 6000)).len(),
            1,
            "its listener closes with its own event"
        );
        assert_eq!(t.holders((7, true, 1)).len(), 0);
        // Its index keeps the listener's port only.
        assert_eq!(t.by_tgid.get(&40).map(|s| s.len()), Some(1));
    }

    #[test]
    fn overlap_rules() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(overlaps(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(overlaps(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(!overlaps(ip("127.0.0.1"), ip("10.0.0.1")));
        assert!(
            overlaps(ip("0.0.0.0"), ip("::")),
            "v4 and v6 wildcards split the port"
        );
        assert!(
            overlaps(ip("::ffff:127.0.0.1"), ip("127.0.0.1")),
            "IPv4-mapped IPv6 is IPv4"
        );
        assert!(overlaps(ip("::"), ip("::1")));
        assert!(!overlaps(ip("::1"), ip("127.0.0.1")));
        assert_eq!(normalize(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }
}
