//! Network namespaces. Ports are compared only within one namespace: a
//! socket's namespace comes from the kernel with every socket record
//! (`sk->__sk_common.skc_net`), and the kernel's own socket table of a
//! namespace is asked through a sock_diag socket opened *inside* it — by a
//! helper thread that `setns()` into `/proc/<pid>/ns/net` of a process seen
//! using it, keeps that socket, and ends (leaving the namespace free to go)
//! after a while without questions. The pipeline does not wait for an
//! answer (watcher's own deadline is zero): the detectors go on with the
//! table they have, and the answer, when it comes, wakes the pipeline and
//! corrects what was said (an update).
//!
//! Without the right to enter a namespace (CAP_SYS_ADMIN), a namespace's
//! tables are read from `/proc/<pid>/net/{tcp,udp}{,6}` instead (said once).
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender},
    time::Duration,
};

use crate::world::sockdiag::{Diag, KernelSocket, PortSummary};

/// A helper with no question for this long ends.
const IDLE: Duration = Duration::from_secs(10);

/// The inode of a namespace file (`/proc/<pid>/ns/net`, `/run/netns/x`).
pub fn ns_inode(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// The network namespace watcher runs in.
pub fn own_netns() -> u32 {
    ns_inode(Path::new("/proc/self/ns/net")).unwrap_or(0)
}

enum Query {
    Port {
        tcp: bool,
        port: u16,
        candidates: Vec<u32>,
        reply: SyncSender<Vec<KernelSocket>>,
    },
    Holders {
        reply: SyncSender<Vec<KernelSocket>>,
    },
    Summary {
        reply: SyncSender<PortSummary>,
    },
}

struct Helper {
    tx: SyncSender<Query>,
    /// Held by the helper's thread too: a count of 1 means it has ended.
    alive: std::sync::Arc<()>,
}

/// Helper threads at once, whatever the number of namespaces: a local user
/// can make thousands of namespaces (in user namespaces), and each must not
/// become a thread. A question about one more namespace is counted as
/// unanswered (its finding goes out with what the tables know).
pub const HELPERS_MAX: usize = 32;

/// Answers not yet in after their wait: (port, answer channel, asked when).
type Late = (
    crate::world::sockdiag::PortKey,
    Receiver<Vec<KernelSocket>>,
    std::time::Instant,
);

/// How long a late answer is still awaited (then counted as unanswered).
const LATE_LIMIT: Duration = Duration::from_secs(2);

/// The per-namespace helpers.
pub struct NetnsLookups {
    own: u32,
    helpers: HashMap<u32, Helper>,
    deadline: Duration,
    late: Vec<Late>,
    /// Port summaries asked and not yet in: (namespace, answer channel, asked when).
    summaries: Vec<(u32, Receiver<PortSummary>, std::time::Instant)>,
    /// Questions not answered within the deadline, or about a namespace that
    /// could not be entered (shared with the metrics).
    pub unanswered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    said_fallback: bool,
    /// sock_diag sockets used from the pipeline's own thread, one per
    /// namespace (opened inside it by a short-lived thread; a netlink socket
    /// stays in the namespace it was opened in), with their last use.
    kept: HashMap<u32, (Diag, std::time::Instant)>,
    /// Namespaces whose kept socket is being opened.
    opening: HashMap<u32, Receiver<Diag>>,
    /// Lookups answered on the pipeline's thread (sock_diag + the socket
    /// table's inodes), and those that needed a helper (an owner only
    /// `/proc` can tell, or no kept socket yet).
    pub quick_answers: u64,
    pub quick_misses: u64,
    /// Questions about a namespace not asked because HELPERS_MAX helpers were busy.
    pub helpers_refused: u64,
    /// Notified by a helper each time it has answered (the pipeline then
    /// takes the answer at once rather than at its next look).
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
}

/// The helpers' nice value (the deciding thread's is the process's, 0 by default).
pub const HELPER_NICE: i32 = 10;

/// Namespaces with a kept socket at most; one unused this long is closed
/// (a kept socket holds its namespace alive).
const KEPT_MAX: usize = 256;
const KEPT_IDLE: Duration = Duration::from_secs(10);

/// Where to enter a namespace: a file of it, and the `/proc/…/net` directory
/// that shows its tables.
#[derive(Clone, Debug)]
pub struct NsHandle {
    pub file: PathBuf,
    pub proc_net: PathBuf,
}

impl NsHandle {
    /// Through a process that lives in it.
    pub fn of_pid(pid: u32) -> NsHandle {
        NsHandle {
            file: format!("/proc/{pid}/ns/net").into(),
            proc_net: format!("/proc/{pid}/net").into(),
        }
    }
}

fn helper(
    netns: u32,
    own: u32,
    handle: NsHandle,
    rx: Receiver<Query>,
    said: bool,
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
) -> Option<String> {
    // Below the deciding thread: 32 helpers answering a local user's
    // thousands of namespaces must not make it wait for a CPU (on 2 CPUs,
    // at equal weight, a finding waited up to 130 ms behind them). A
    // thread's own nice value (Linux: PRIO_PROCESS of the calling thread).
    // SAFETY: setpriority takes plain integers.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, HELPER_NICE);
    }
    let answered = || {
        if let Some(w) = &wake {
            w.notify_one();
        }
    };
    let mut note = None;
    let entered = if netns == own {
        Ok(())
    } else {
        std::fs::File::open(&handle.file)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| e.to_string())
            })
    };
    let entered_ok = entered.clone();
    let mut diag = match entered {
        Ok(()) => Diag::open("/proc/net"),
        // Not allowed to enter: read the namespace's tables through /proc instead.
        Err(e) => {
            if !said {
                note = Some(format!(
                    "cannot enter network namespaces ({e}): their sockets are read from /proc/<pid>/net instead (give watcher CAP_SYS_ADMIN for sock_diag)"
                ));
            }
            Diag::open_tables_only(&handle.proc_net)
        }
    };
    loop {
        match rx.recv_timeout(IDLE) {
            Ok(Query::Port {
                tcp,
                port,
                candidates,
                reply,
            }) => {
                let mut socks = diag.port_sockets(tcp, port, &candidates);
                socks.iter_mut().for_each(|s| s.netns = netns);
                let _ = reply.try_send(socks);
                answered();
            }
            Ok(Query::Holders { reply }) => {
                let mut socks = diag.holders();
                socks.iter_mut().for_each(|s| s.netns = netns);
                let _ = reply.try_send(socks);
            }
            Ok(Query::Summary { reply }) => {
                // In the namespace: its own ip_local_port_range and sockets.
                let mut summary = diag.port_summary();
                if entered_ok.is_err() {
                    // /proc/sys/net shows watcher's own namespace, not this one.
                    summary.range = None;
                }
                let _ = reply.try_send(summary);
                answered();
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    note
}

impl NetnsLookups {
    pub fn new(deadline: Duration) -> NetnsLookups {
        let own = own_netns();
        // watcher's own namespace: its kept socket from the start.
        let mut kept = HashMap::new();
        let d = Diag::open("/proc/net");
        if d.has_netlink() {
            kept.insert(own, (d, std::time::Instant::now()));
        }
        NetnsLookups {
            own,
            helpers: HashMap::new(),
            deadline,
            late: Vec::new(),
            summaries: Vec::new(),
            unanswered: Default::default(),
            said_fallback: false,
            kept,
            opening: HashMap::new(),
            quick_answers: 0,
            quick_misses: 0,
            helpers_refused: 0,
            wake: None,
        }
    }

    /// The kept sock_diag socket of `netns` (entered through `pid`, a
    /// process in it), or `None` while it is being opened (never waits).
    fn kept_diag(&mut self, netns: u32, pid: u32) -> Option<&mut Diag> {
        if !self.kept.contains_key(&netns) {
            if let Some(rx) = self.opening.get(&netns) {
                match rx.try_recv() {
                    Ok(d) => {
                        self.opening.remove(&netns);
                        self.kept.insert(netns, (d, std::time::Instant::now()));
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => return None,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        // Could not be opened (not allowed to enter, no sock_diag): asked through a helper.
                        self.opening.remove(&netns);
                        return None;
                    }
                }
            } else {
                if self.kept.len() >= KEPT_MAX || self.opening.len() >= 32 {
                    return None;
                }
                let (tx, rx) = sync_channel(1);
                let own = self.own;
                let file = NsHandle::of_pid(pid).file;
                let spawned = std::thread::Builder::new()
                    .name("watcher-netns-open".into())
                    .spawn(move || {
                        if netns != own {
                            let entered = std::fs::File::open(&file)
                                .ok()
                                .filter(|_| ns_inode(&file) == Some(netns))
                                .is_some_and(|f| {
                                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                                        .is_ok()
                                });
                            if !entered {
                                return;
                            }
                        }
                        let d = Diag::open("/proc/thread-self/net");
                        if d.has_netlink() {
                            let _ = tx.send(d);
                        }
                    });
                if spawned.is_ok() {
                    self.opening.insert(netns, rx);
                }
                return None;
            }
        }
        let (d, used) = self.kept.get_mut(&netns)?;
        *used = std::time::Instant::now();
        Some(d)
    }

    /// The sockets on one port of `netns` straight from the kernel, on the
    /// calling thread (sock_diag on the namespace's kept socket: no thread
    /// hand-off, no `/proc`), each holder's processes from `known` (socket
    /// inode, pid: what the socket table learnt from bind records). `None`
    /// when that is not enough — a holder whose inode the table does not
    /// know (inherited, or bound before watcher started), or no kept socket
    /// yet: then a helper is asked.
    pub fn quick_port(
        &mut self,
        netns: u32,
        via: u32,
        tcp: bool,
        port: u16,
        known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        let netns = if netns == 0 { self.own } else { netns };
        let answer = self
            .kept_diag(netns, via)
            .and_then(|d| d.port_sockets_netlink(tcp, port));
        let Some(mut socks) = answer else {
            self.quick_misses += 1;
            return None;
        };
        for s in &mut socks {
            s.netns = netns;
            if s.is_holder() {
                s.pids = known
                    .iter()
                    .filter(|(i, _)| *i != 0 && *i == s.inode)
                    .map(|(_, p)| *p)
                    .collect();
                if s.pids.is_empty() {
                    self.quick_misses += 1;
                    return None;
                }
            }
        }
        self.quick_answers += 1;
        Some(socks)
    }

    /// Close kept sockets unused for a while (they hold their namespaces alive).
    pub fn sweep(&mut self) {
        let own = self.own;
        self.kept
            .retain(|ns, (_, used)| *ns == own || used.elapsed() < KEPT_IDLE);
    }

    pub fn own(&self) -> u32 {
        self.own
    }

    fn helper_for(&mut self, netns: u32, handle: &NsHandle) -> Option<&Helper> {
        if netns != self.own && ns_inode(&handle.file) != Some(netns) {
            // The process left (or never was in) that namespace.
            self.unanswered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        // Helpers that ended (idle) leave room.
        self.helpers
            .retain(|_, h| std::sync::Arc::strong_count(&h.alive) > 1);
        if self.helpers.len() >= HELPERS_MAX {
            self.unanswered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.helpers_refused += 1;
            return None;
        }
        let (tx, rx) = sync_channel::<Query>(16);
        let own = self.own;
        let h = handle.clone();
        let said = self.said_fallback;
        let wake = self.wake.clone();
        let alive = std::sync::Arc::new(());
        let held = alive.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("watcher-netns-{netns}"))
            .spawn(move || {
                let _held = held;
                if let Some(note) = helper(netns, own, h, rx, said, wake) {
                    eprintln!("watcher: {note}");
                }
            });
        if spawned.is_err() {
            return None;
        }
        // Said (at most) once: later helpers stay quiet about it.
        self.said_fallback = true;
        self.helpers.insert(netns, Helper { tx, alive });
        self.helpers.get(&netns)
    }

    /// Put a question to the namespace's helper (started when there is none,
    /// again when it ended idle); its answer channel, or `None` (counted as
    /// unanswered when the helper's queue is full).
    fn send<T>(
        &mut self,
        netns: u32,
        handle: &NsHandle,
        make: impl Fn(SyncSender<T>) -> Query,
    ) -> Option<Receiver<T>> {
        for _attempt in 0..2 {
            let (reply_tx, reply_rx) = sync_channel(1);
            let helper = match self.helpers.get(&netns) {
                Some(h) => h,
                None => self.helper_for(netns, handle)?,
            };
            match helper.tx.try_send(make(reply_tx)) {
                Ok(()) => return Some(reply_rx),
                // The helper ended (idle): start another.
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                    self.helpers.remove(&netns);
                }
                Err(std::sync::mpsc::TrySendError::Full(_)) => {
                    self.unanswered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return None;
                }
            }
        }
        None
    }

    /// Ask, wait up to `wait`; when the answer is slower and `park` names
    /// the port, keep its channel: it comes through [`NetnsLookups::late_answers`].
    fn ask(
        &mut self,
        netns: u32,
        handle: &NsHandle,
        make: impl Fn(SyncSender<Vec<KernelSocket>>) -> Query,
        wait: Duration,
        park: Option<crate::world::sockdiag::PortKey>,
    ) -> Option<Vec<KernelSocket>> {
        let reply_rx = self.send(netns, handle, make)?;
        let now = if wait.is_zero() {
            reply_rx.try_recv().ok()
        } else {
            reply_rx.recv_timeout(wait).ok()
        };
        match now {
            Some(v) => Some(v),
            None => {
                match park {
                    Some(key) if self.late.len() < 256 => {
                        self.late.push((key, reply_rx, std::time::Instant::now()))
                    }
                    _ => {
                        self.unanswered
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                None
            }
        }
    }

    /// The kernel's sockets on one port of namespace `netns` (entered through
    /// `pid`, a process using it), holders with their processes; `None` when
    /// no answer came within the deadline (it then comes through
    /// [`NetnsLookups::late_answers`]).
    pub fn port_sockets(
        &mut self,
        netns: u32,
        pid: u32,
        tcp: bool,
        port: u16,
        candidates: &[u32],
    ) -> Option<Vec<KernelSocket>> {
        let key = (netns, tcp, port);
        let netns = if netns == 0 { self.own } else { netns };
        let candidates = candidates.to_vec();
        let make = move |reply| Query::Port {
            tcp,
            port,
            candidates: candidates.clone(),
            reply,
        };
        self.ask(
            netns,
            &NsHandle::of_pid(pid),
            make,
            self.deadline,
            Some(key),
        )
    }

    /// Answers that came after their wait (never blocks); those older than
    /// 2 s are given up and counted as unanswered.
    pub fn late_answers(&mut self) -> Vec<(crate::world::sockdiag::PortKey, Vec<KernelSocket>)> {
        let mut out = Vec::new();
        let unanswered = &self.unanswered;
        self.late.retain(|(key, rx, since)| match rx.try_recv() {
            Ok(v) => {
                out.push((*key, v));
                false
            }
            Err(std::sync::mpsc::TryRecvError::Empty) if since.elapsed() < LATE_LIMIT => true,
            Err(_) => {
                unanswered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        });
        out
    }

    /// Every holder socket of every network namespace on the host (found
    /// through the processes in `/proc` and the named namespaces under
    /// `/run/netns`), with its processes: the start-up seed.
    pub fn all_holders(&mut self) -> Vec<KernelSocket> {
        let mut found: HashMap<u32, NsHandle> = HashMap::new();
        found.insert(
            self.own,
            NsHandle {
                file: "/proc/self/ns/net".into(),
                proc_net: "/proc/net".into(),
            },
        );
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let h = NsHandle::of_pid(pid);
                if let Some(ino) = ns_inode(&h.file) {
                    found.entry(ino).or_insert(h);
                }
            }
        }
        for dir in ["/run/netns", "/var/run/docker/netns"] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if let Some(ino) = ns_inode(&p) {
                    found.entry(ino).or_insert(NsHandle {
                        file: p,
                        proc_net: PathBuf::new(),
                    });
                }
            }
        }
        let mut all = Vec::new();
        let handles: Vec<(u32, NsHandle)> = found.into_iter().collect();
        // The seed may take longer than a confirmation.
        let wait = self.deadline.max(Duration::from_secs(2));
        for (ino, h) in handles {
            if let Some(v) = self.ask(ino, &h, |reply| Query::Holders { reply }, wait, None) {
                all.extend(v);
            }
            if ino != self.own {
                // One question per namespace at start: its helper ends now
                // (a later question starts another), not one thread per
                // container idling for its 10 s.
                self.helpers.remove(&ino);
            }
        }
        crate::world::sockdiag::with_owners(all)
    }

    /// Ask for the port summary of `netns` (through `pid`, a process in it);
    /// never waits: the answer comes through [`NetnsLookups::summaries_in`].
    pub fn ask_summary(&mut self, netns: u32, pid: u32) {
        let netns_key = netns;
        let netns = if netns == 0 { self.own } else { netns };
        if self.summaries.len() >= 64 {
            self.unanswered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        if let Some(rx) = self.send(netns, &NsHandle::of_pid(pid), |reply| Query::Summary {
            reply,
        }) {
            self.summaries
                .push((netns_key, rx, std::time::Instant::now()));
        }
    }

    /// Port summaries that have come (never blocks); those older than 5 s are given up.
    pub fn summaries_in(&mut self) -> Vec<(u32, PortSummary)> {
        let mut out = Vec::new();
        let unanswered = &self.unanswered;
        self.summaries
            .retain(|(netns, rx, since)| match rx.try_recv() {
                Ok(s) => {
                    out.push((*netns, s));
                    false
                }
                Err(std::sync::mpsc::TryRecvError::Empty)
                    if since.elapsed() < Duration::from_secs(5) =>
                {
                    true
                }
                Err(_) => {
                    unanswered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    false
                }
            });
        out
    }

    /// Network namespaces with a live helper now.
    pub fn helpers(&self) -> usize {
        self.helpers
            .values()
            .filter(|h| std::sync::Arc::strong_count(&h.alive) > 1)
            .count()
    }
}

impl crate::world::lookup::SocketLookup for NetnsLookups {
    fn ask(
        &mut self,
        netns: u32,
        via: u32,
        tcp: bool,
        port: u16,
        candidates: &[u32],
    ) -> Option<Vec<KernelSocket>> {
        self.port_sockets(netns, via, tcp, port, candidates)
    }
    fn wake_on_answer(&mut self, wake: std::sync::Arc<tokio::sync::Notify>) {
        self.wake = Some(wake);
    }
    fn late(&mut self) -> Vec<(crate::world::sockdiag::PortKey, Vec<KernelSocket>)> {
        self.late_answers()
    }
    fn waiting(&self) -> bool {
        !self.late.is_empty() || !self.summaries.is_empty()
    }
    fn summary(&mut self, netns: u32, via: u32) {
        self.ask_summary(netns, via)
    }
    fn summaries(&mut self) -> Vec<(u32, PortSummary)> {
        self.summaries_in()
    }
    fn quick(
        &mut self,
        netns: u32,
        via: u32,
        tcp: bool,
        port: u16,
        known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        self.quick_port(netns, via, tcp, port, known)
    }
    fn sweep(&mut self) {
        NetnsLookups::sweep(self)
    }
    fn quick_counts(&self) -> (u64, u64) {
        (self.quick_answers, self.quick_misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_answered_in_place_when_the_table_knows_its_socket() {
        use std::os::fd::AsRawFd as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let inode = nix::sys::stat::fstat(l.as_raw_fd()).unwrap().st_ino;
        let me = std::process::id();
        let mut n = NetnsLookups::new(Duration::from_secs(5));
        let s = n
            .quick_port(0, me, true, port, &[(inode, me)])
            .expect("answered in place");
        assert!(
            s.iter().any(|k| k.port == port
                && k.inode == inode
                && k.pids == vec![me]
                && k.netns == n.own()),
            "{s:?}"
        );
        assert_eq!((n.quick_answers, n.quick_misses), (1, 0));
        // Again, and for another listener: the kept socket answers every time.
        let l2 = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port2 = l2.local_addr().unwrap().port();
        let inode2 = nix::sys::stat::fstat(l2.as_raw_fd()).unwrap().st_ino;
        for _ in 0..3 {
            let s = n
                .quick_port(0, me, true, port2, &[(inode2, me)])
                .expect("answered in place");
            assert!(
                s.iter().any(|k| k.port == port2 && k.inode == inode2),
                "{s:?}"
            );
            let s = n
                .quick_port(0, me, true, port, &[(inode, me)])
                .expect("answered in place");
            assert!(
                s.iter().any(|k| k.port == port && k.inode == inode),
                "{s:?}"
            );
        }
        n.quick_answers = 1;
        // A listener whose socket the table does not know: only /proc can name it, a helper's work.
        assert!(n
            .quick_port(0, me, true, port, &[(inode + 1, me)])
            .is_none());
        assert_eq!(n.quick_misses, 1);
        // Another namespace's socket is opened off this thread: not answered
        // in place until it is there (a namespace of its own: `unshare`).
        let mut child = std::process::Command::new("unshare")
            .args(["-n", "sleep", "30"])
            .spawn()
            .expect("unshare");
        let pid = child.id();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        let theirs = loop {
            // (unshare execs sleep once the namespace is made)
            let ns = ns_inode(Path::new(&format!("/proc/{pid}/ns/net")));
            if let Some(ns) = ns.filter(|ns| *ns != n.own()) {
                break ns;
            }
            if std::time::Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                // Making a namespace takes root.
                assert!(
                    !nix::unistd::geteuid().is_root(),
                    "unshare -n made no namespace"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(n.quick_port(theirs, pid, false, port, &[]).is_none());
        let until = std::time::Instant::now() + Duration::from_secs(5);
        let answer = loop {
            if let Some(a) = n.quick_port(theirs, pid, false, port, &[]) {
                break a;
            }
            assert!(
                std::time::Instant::now() < until,
                "the namespace's socket never opened"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        // (UDP: a TCP port without a listener is a helper's work.) Nothing of ours is in their namespace.
        assert!(answer.is_empty(), "{answer:?}");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn helpers_are_bounded_whatever_the_number_of_namespaces() {
        // Each question is about "another" namespace (watcher's own is
        // pretended elsewhere; each helper, entered through this process,
        // lives in ours, and is then filed under a namespace of its own):
        // at most HELPERS_MAX helpers live at once; the next question is
        // refused and counted as unanswered, not given a thread.
        let mut n = NetnsLookups::new(Duration::from_millis(1));
        let real = n.own;
        n.own = real.wrapping_add(1);
        let me = std::process::id();
        for k in 0..HELPERS_MAX as u32 {
            assert!(
                n.send(real, &NsHandle::of_pid(me), |reply| Query::Holders {
                    reply
                })
                .is_some(),
                "helper {k} started"
            );
            let h = n.helpers.remove(&real).expect("a helper");
            n.helpers.insert(real.wrapping_add(100 + k), h);
        }
        assert_eq!(n.helpers(), HELPERS_MAX);
        let before = n.unanswered.load(std::sync::atomic::Ordering::Relaxed);
        assert!(n
            .send(real, &NsHandle::of_pid(me), |reply| Query::Holders {
                reply
            })
            .is_none());
        assert_eq!(n.helpers_refused, 1);
        assert_eq!(
            n.unanswered.load(std::sync::atomic::Ordering::Relaxed),
            before + 1
        );
        assert_eq!(n.helpers(), HELPERS_MAX, "no thread more");
    }

    #[test]
    fn own_namespace_is_asked_through_a_helper() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut n = NetnsLookups::new(Duration::from_secs(5));
        let me = std::process::id();
        let s = n.port_sockets(0, me, true, port, &[me]).expect("an answer");
        assert!(
            s.iter().any(|k| k.pids.contains(&me) && k.netns == n.own()),
            "{s:?}"
        );
        assert_eq!(n.helpers(), 1, "one helper, kept for the next question");
        let again = n
            .port_sockets(n.own(), me, true, port, &[me])
            .expect("an answer");
        assert_eq!(again.len(), s.len());
        assert_eq!(n.helpers(), 1);
        assert!(n
            .all_holders()
            .iter()
            .any(|k| k.port == port && k.pids.contains(&me)));
    }
}
