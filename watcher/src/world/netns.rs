//! Network namespaces. Ports are compared only within one namespace: a
//! socket's namespace comes from the kernel with every socket record
//! (`sk->__sk_common.skc_net`), and the kernel's own socket table of a
//! namespace is asked through a sock_diag socket opened *inside* it — by
//! one of a few worker threads, started once, that `setns()` into
//! `/proc/<pid>/ns/net` of a process seen using it and keep the sockets of
//! the namespaces they were last asked about for a while. The pipeline does
//! not wait for an answer (watcher's own deadline is zero): the detectors
//! go on with the table they have, and the answer, when it comes, wakes the
//! pipeline and corrects what was said (an update).
//!
//! Without the right to enter a namespace (CAP_SYS_ADMIN), a namespace's
//! tables are read from `/proc/<pid>/net/{tcp,udp}{,6}` instead (said once).
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::world::sockdiag::{Diag, KernelSocket, PortSummary};

/// The inode of a namespace file (`/proc/<pid>/ns/net`, `/run/netns/x`).
pub(crate) fn ns_inode(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// Which of the network namespaces `candidates` (inodes) are gone: no
/// process under `proc` is in one (`<pid>/ns/net`) and none is mounted
/// (`ip netns add`, a runtime's bind mount: an `nsfs` mount of `net:[inode]`
/// in `self/mountinfo`). Threads that entered a namespace on their own are
/// not looked at (watcher's own namespace workers are such threads). When
/// more than a few processes' namespaces cannot be read (watcher without
/// the privilege), none is said gone.
pub(crate) fn gone_namespaces(candidates: &[u32], proc: &Path) -> Vec<u32> {
    let mut left: std::collections::HashSet<u32> = candidates.iter().copied().collect();
    if let Ok(mounts) = std::fs::read_to_string(proc.join("self/mountinfo")) {
        for line in mounts.lines() {
            // `id parent major:minor root mount-point … - fstype source …`
            let mut fields = line.split(' ');
            let Some(root) = fields.nth(3) else { continue };
            let inode = root
                .strip_prefix("net:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(inode) = inode {
                left.remove(&inode);
            }
        }
    }
    let Ok(dir) = std::fs::read_dir(proc) else {
        // (No /proc to look in: nothing is said gone.)
        return Vec::new();
    };
    let (mut seen, mut unreadable) = (0usize, 0usize);
    for entry in dir.flatten() {
        if left.is_empty() {
            break;
        }
        let name = entry.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        seen += 1;
        match std::fs::metadata(entry.path().join("ns/net")) {
            Ok(m) => {
                left.remove(&(m.ino() as u32));
            }
            // (Ended while looked at.)
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => unreadable += 1,
        }
    }
    // A few processes a security module hides even from root (a sandbox's
    // init) are passed over; more than that is watcher without the
    // privilege to look (CAP_SYS_PTRACE): nothing can be said gone.
    if unreadable > (seen / 100).max(2) {
        return Vec::new();
    }
    let mut gone: Vec<u32> = left.into_iter().collect();
    gone.sort_unstable();
    gone
}

/// The network namespace watcher runs in.
pub(crate) fn own_netns() -> u32 {
    ns_inode(Path::new("/proc/self/ns/net")).unwrap_or(0)
}

enum Query {
    Port {
        tcp: bool,
        port: u16,
        /// TCP sockets that do not listen are wanted when no listener holds
        /// the port (a dump of the whole connection table: see `Diag::on_port`).
        connections: bool,
        candidates: Vec<u32>,
        /// Socket inodes the bind and listen records carried, with their
        /// pids: when they name every holder, no `/proc` is read.
        known: Vec<(u64, u32)>,
        reply: SyncSender<Vec<KernelSocket>>,
    },
    Holders {
        reply: SyncSender<Vec<KernelSocket>>,
    },
    Summary {
        reply: SyncSender<PortSummary>,
    },
    /// A sock_diag socket opened inside the namespace, for the pipeline's
    /// own thread to keep and ask without a hand-over.
    Open {
        reply: SyncSender<Diag>,
    },
}

/// A question about one namespace, entered through `handle`.
struct Job {
    netns: u32,
    handle: NsHandle,
    query: Query,
}

/// The workers that answer questions about namespaces: this many threads
/// whatever the number of namespaces (a local user can make thousands of
/// them in user namespaces, and each must not become a thread — nor may
/// the deciding thread start one: a thread's stack is mapped under the
/// process's memory-map lock, which under a flood the deciding thread then
/// waited for, measured at up to 20 ms).
pub(crate) const WORKERS: usize = 4;

/// Questions waiting for a worker at most; one more is counted as
/// unanswered (its finding goes out with what the tables know).
const QUEUE: usize = 64;

/// A worker keeps the sockets of this many namespaces at most, each for
/// `KEPT_IDLE` after its last question (a kept socket holds its namespace
/// alive).
const WORKER_KEPT: usize = 16;

/// How long a late answer is still awaited (then counted as unanswered).
const LATE_LIMIT: Duration = Duration::from_secs(2);

/// The workers' budget for dumps of a port's connections (see
/// `Diag::on_port`): each is a walk of the kernel's whole connection hash
/// that nothing preempts, ~2.4 ms on a 24 GiB host and more on a larger
/// one, and binds that fail on ports only connections hold are a local
/// user's to make. The walks may take [`DumpBudget::SHARE_NS`] of each
/// second (5 % of a CPU), in bursts of that much; a question whose answer
/// needed a dump beyond it is not answered (counted in
/// `watcher_socket_lookups_unanswered_total`; the finding stays as the
/// table wrote it).
#[derive(Debug)]
pub(crate) struct DumpBudget {
    /// Walking time left (may run below zero after a long walk).
    left_ns: i64,
    /// When it was last filled (ns on the caller's clock).
    at_ns: u64,
}

impl DumpBudget {
    pub(crate) const SHARE_NS: i64 = 50_000_000;

    pub(crate) fn new(now_ns: u64) -> DumpBudget {
        DumpBudget {
            left_ns: Self::SHARE_NS,
            at_ns: now_ns,
        }
    }

    /// Whether a dump may start at `now_ns`.
    pub(crate) fn may(&mut self, now_ns: u64) -> bool {
        let since = now_ns.saturating_sub(self.at_ns) as i128;
        let earned = since * Self::SHARE_NS as i128 / 1_000_000_000;
        self.left_ns = (self.left_ns as i128 + earned).min(Self::SHARE_NS as i128) as i64;
        self.at_ns = now_ns;
        self.left_ns > 0
    }

    /// A dump took `cost_ns`.
    pub(crate) fn spent(&mut self, cost_ns: u64) {
        self.left_ns = self
            .left_ns
            .saturating_sub(cost_ns.min(i64::MAX as u64) as i64);
    }
}

/// Answers not yet in after their wait: (port, answer channel, asked when).
type Late = (
    crate::world::sockdiag::PortKey,
    Receiver<Vec<KernelSocket>>,
    Instant,
);

/// The per-namespace lookups.
pub(crate) struct NetnsLookups {
    own: u32,
    /// Questions for the workers.
    jobs: SyncSender<Job>,
    /// Questions asked this turn and not yet handed to the workers (see
    /// [`crate::world::lookup::SocketLookup::hold_questions`]); `None`: each
    /// goes at once.
    held: Option<Vec<Job>>,
    /// Held by each worker too (how many live: `NetnsLookups::workers`).
    #[cfg_attr(not(test), expect(dead_code, reason = "counted by the tests"))]
    shared: Arc<Shared>,
    deadline: Duration,
    late: Vec<Late>,
    /// Port summaries asked and not yet in: (namespace, answer channel, asked when).
    summaries: Vec<(u32, Receiver<PortSummary>, Instant)>,
    /// Questions not answered within the deadline, or about a namespace that
    /// could not be entered (shared with the metrics).
    pub unanswered: Arc<std::sync::atomic::AtomicU64>,
    /// sock_diag sockets used from the pipeline's own thread, one per
    /// namespace (opened inside it by a worker; a netlink socket stays in
    /// the namespace it was opened in), with their last use.
    kept: HashMap<u32, (Diag, Instant)>,
    /// Namespaces whose kept socket is being opened.
    opening: HashMap<u32, Receiver<Diag>>,
    /// Port lookups answered from the kernel's socket table and the socket
    /// table's inodes alone (no `/proc`), on a worker or on the pipeline's
    /// thread (shared with the workers).
    by_inode: Arc<std::sync::atomic::AtomicU64>,
    /// Lookups on the pipeline's thread that could not be answered there
    /// (an owner only `/proc` can tell, or no kept socket yet).
    pub quick_misses: u64,
    /// Notified by a worker each time it has answered (the pipeline then
    /// takes the answer at once rather than at its next look); set once.
    wake: Arc<std::sync::OnceLock<crate::kernel::wake::Wake>>,
}

/// Namespaces with a kept socket at most; one unused this long is closed
/// (a kept socket holds its namespace alive).
const KEPT_MAX: usize = 256;
const KEPT_IDLE: Duration = Duration::from_secs(10);

/// Where to enter a namespace: a file of it, and the `/proc/…/net` directory
/// that shows its tables.
#[derive(Clone, Debug)]
pub(crate) struct NsHandle {
    pub file: PathBuf,
    pub proc_net: PathBuf,
}

impl NsHandle {
    /// Through a process that lives in it.
    pub(crate) fn of_pid(pid: u32) -> NsHandle {
        NsHandle {
            file: format!("/proc/{pid}/ns/net").into(),
            proc_net: format!("/proc/{pid}/net").into(),
        }
    }
}

/// Enter namespace `netns` through `handle` (checked to be that namespace:
/// the process may have left it, or its pid be another's by now).
fn enter(handle: &NsHandle, netns: u32) -> Result<(), String> {
    let f = std::fs::File::open(&handle.file).map_err(|e| e.to_string())?;
    let ino = f.metadata().map_err(|e| e.to_string())?.ino() as u32;
    if ino != netns {
        return Err(format!(
            "{} is no longer that namespace",
            handle.file.display()
        ));
    }
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
}

/// What the workers share.
struct Shared {
    own: u32,
    jobs: Mutex<Receiver<Job>>,
    unanswered: Arc<std::sync::atomic::AtomicU64>,
    /// The fallback to `/proc` tables has been said (once for all workers).
    said_fallback: AtomicBool,
    wake: Arc<std::sync::OnceLock<crate::kernel::wake::Wake>>,
    /// Port questions the workers answered from sock_diag and the known
    /// socket inodes alone (no `/proc`).
    by_inode: Arc<std::sync::atomic::AtomicU64>,
    /// The connection dumps' share of the workers' time, and the clock it is kept on.
    dumps: Mutex<DumpBudget>,
    epoch: Instant,
}

/// One worker: takes the next question, enters its namespace unless it is
/// in it already (it stays there), answers through the namespace's socket.
fn worker(shared: Arc<Shared>) {
    // Below the deciding thread: the workers answering a local user's
    // thousands of namespaces must not make it wait for a CPU (on 2 CPUs,
    // at equal weight, a finding waited up to 130 ms behind 32 per-namespace
    // helpers).
    crate::kernel::sched::run_as_helper();
    let mut here = shared.own;
    let mut kept: HashMap<u32, (Diag, Instant)> = HashMap::new();
    loop {
        let job = {
            let Ok(rx) = shared.jobs.lock() else { return };
            rx.recv_timeout(Duration::from_secs(1))
        };
        let job = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                kept.retain(|_, (_, used)| used.elapsed() < KEPT_IDLE);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let netns = job.netns;
        let entered = if netns == here {
            Ok(())
        } else {
            enter(&job.handle, netns).map(|()| here = netns)
        };
        if let Err(e) = &entered {
            if netns != shared.own && !job.handle.file.exists() {
                // Gone (the process left, the namespace went): nothing to answer.
                shared.unanswered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if matches!(job.query, Query::Open { .. }) {
                continue;
            }
            if !shared.said_fallback.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "watcher: cannot enter network namespaces ({e}): their sockets are read from /proc/<pid>/net instead (give watcher CAP_SYS_ADMIN for sock_diag)"
                );
            }
        }
        let mut tables_only;
        let diag = match (&entered, &job.query) {
            (_, Query::Open { .. }) => None,
            (Ok(()), _) => {
                if !kept.contains_key(&netns) && kept.len() >= WORKER_KEPT {
                    if let Some(oldest) = kept
                        .iter()
                        .min_by_key(|(_, (_, used))| *used)
                        .map(|(k, _)| *k)
                    {
                        kept.remove(&oldest);
                    }
                }
                let (d, used) = kept
                    .entry(netns)
                    .or_insert_with(|| (Diag::open("/proc/thread-self/net"), Instant::now()));
                *used = Instant::now();
                Some(d)
            }
            // Not allowed to enter: read the namespace's tables through /proc instead.
            (Err(_), _) => {
                tables_only = Diag::open_tables_only(&job.handle.proc_net);
                Some(&mut tables_only)
            }
        };
        let answered = || {
            if let Some(w) = shared.wake.get() {
                w.wake();
            }
        };
        match (job.query, diag) {
            (Query::Open { reply }, _) => {
                let d = Diag::open("/proc/thread-self/net");
                if d.has_netlink() {
                    let _ = reply.try_send(d);
                }
            }
            (
                Query::Port {
                    tcp,
                    port,
                    connections,
                    candidates,
                    known,
                    reply,
                },
                Some(diag),
            ) => {
                let now = || shared.epoch.elapsed().as_nanos() as u64;
                let may_dump = connections
                    && shared
                        .dumps
                        .lock()
                        .map(|mut b| b.may(now()))
                        .unwrap_or(false);
                let (mut socks, by_inode) =
                    diag.port_sockets(tcp, port, may_dump, &candidates, &known);
                if let (Some(cost), Ok(mut b)) = (diag.take_dump_cost(), shared.dumps.lock()) {
                    b.spent(cost);
                }
                if tcp && connections && !may_dump && socks.is_empty() {
                    // The answer needed the port's connections and the
                    // budget held them back: none (the reply dropped is
                    // counted unanswered; the table is used as it is).
                    continue;
                }
                if by_inode {
                    shared.by_inode.fetch_add(1, Ordering::Relaxed);
                }
                socks.iter_mut().for_each(|s| s.netns = netns);
                let _ = reply.try_send(socks);
                answered();
            }
            (Query::Holders { reply }, Some(diag)) => {
                let mut socks = diag.holders();
                socks.iter_mut().for_each(|s| s.netns = netns);
                let _ = reply.try_send(socks);
            }
            (Query::Summary { reply }, Some(diag)) => {
                // In the namespace: its own ip_local_port_range and sockets.
                let started = std::time::Instant::now();
                let mut summary = diag.port_summary();
                summary.cost_ns = started.elapsed().as_nanos() as u64;
                if entered.is_err() {
                    // /proc/sys/net shows watcher's own namespace, not this one.
                    summary.range = None;
                }
                let _ = reply.try_send(summary);
                answered();
            }
            (_, None) => {}
        }
    }
}

impl NetnsLookups {
    pub(crate) fn new(deadline: Duration) -> NetnsLookups {
        let own = own_netns();
        // watcher's own namespace: its kept socket from the start.
        let mut kept = HashMap::new();
        let d = Diag::open("/proc/net");
        if d.has_netlink() {
            kept.insert(own, (d, std::time::Instant::now()));
        }
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let unanswered: Arc<std::sync::atomic::AtomicU64> = Default::default();
        let wake: Arc<std::sync::OnceLock<crate::kernel::wake::Wake>> = Default::default();
        let by_inode: Arc<std::sync::atomic::AtomicU64> = Default::default();
        let shared = Arc::new(Shared {
            by_inode: by_inode.clone(),
            own,
            jobs: Mutex::new(rx),
            unanswered: unanswered.clone(),
            said_fallback: AtomicBool::new(false),
            wake: wake.clone(),
            dumps: Mutex::new(DumpBudget::new(0)),
            epoch: Instant::now(),
        });
        for i in 0..WORKERS {
            let mine = shared.clone();
            // (Without a worker every question is counted unanswered.)
            let _ = std::thread::Builder::new()
                .name(format!("watcher-netns-{i}"))
                .spawn(move || worker(mine));
        }
        NetnsLookups {
            own,
            jobs,
            held: None,
            shared,
            deadline,
            late: Vec::new(),
            summaries: Vec::new(),
            unanswered,
            kept,
            opening: HashMap::new(),
            by_inode,
            quick_misses: 0,
            wake,
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
                if let Some(rx) =
                    self.send(netns, &NsHandle::of_pid(pid), |reply| Query::Open { reply })
                {
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
    pub(crate) fn quick_port(
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
            .and_then(|d| d.port_sockets_by_inode(tcp, port, known));
        let Some(mut socks) = answer else {
            self.quick_misses += 1;
            return None;
        };
        socks.iter_mut().for_each(|s| s.netns = netns);
        self.by_inode.fetch_add(1, Ordering::Relaxed);
        Some(socks)
    }

    /// Close kept sockets unused for a while (they hold their namespaces alive).
    pub(crate) fn sweep(&mut self) {
        let own = self.own;
        self.kept
            .retain(|ns, (_, used)| *ns == own || used.elapsed() < KEPT_IDLE);
    }

    #[cfg(test)]
    pub(crate) fn own(&self) -> u32 {
        self.own
    }

    /// Put a question to the workers (or hold it for the turn's end); its
    /// answer channel, or `None` (counted as unanswered) when as many
    /// questions wait already.
    fn send<T>(
        &mut self,
        netns: u32,
        handle: &NsHandle,
        make: impl FnOnce(SyncSender<T>) -> Query,
    ) -> Option<Receiver<T>> {
        let (reply_tx, reply_rx) = sync_channel(1);
        let job = Job {
            netns,
            handle: handle.clone(),
            query: make(reply_tx),
        };
        if let Some(held) = self.held.as_mut() {
            if held.len() < QUEUE {
                held.push(job);
                return Some(reply_rx);
            }
            self.unanswered.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match self.jobs.try_send(job) {
            Ok(()) => Some(reply_rx),
            Err(_) => {
                self.unanswered.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Hand the held questions to the workers. One the queue cannot take is
    /// dropped: its answer channel closes, and whoever waits for it counts
    /// it as unanswered (once).
    fn send_held(&mut self) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        for job in held.drain(..) {
            let _ = self.jobs.try_send(job);
        }
    }

    /// Ask, wait up to `wait`; when the answer is slower and `park` names
    /// the port, keep its channel: it comes through [`NetnsLookups::late_answers`].
    fn ask(
        &mut self,
        netns: u32,
        handle: &NsHandle,
        make: impl FnOnce(SyncSender<Vec<KernelSocket>>) -> Query,
        wait: Duration,
        park: Option<crate::world::sockdiag::PortKey>,
    ) -> Option<Vec<KernelSocket>> {
        let reply_rx = self.send(netns, handle, make)?;
        if !wait.is_zero() {
            // (Waited for here: it goes now.)
            self.send_held();
        }
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
    /// `pid`, a process using it), holders with their processes (from
    /// `known`, socket inode and pid, when those name them all; else from
    /// the fds of `candidates` first, then of every process); `None` when
    /// no answer came within the deadline (it then comes through
    /// [`NetnsLookups::late_answers`]).
    #[expect(
        clippy::too_many_arguments,
        reason = "the question, spelled out as SocketLookup::ask has it"
    )]
    pub(crate) fn port_sockets(
        &mut self,
        netns: u32,
        pid: u32,
        tcp: bool,
        port: u16,
        connections: bool,
        candidates: &[u32],
        known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        let key = (netns, tcp, port);
        let netns = if netns == 0 { self.own } else { netns };
        let candidates = candidates.to_vec();
        let known = known.to_vec();
        let make = move |reply| Query::Port {
            tcp,
            port,
            connections,
            candidates,
            known,
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
    pub(crate) fn late_answers(
        &mut self,
    ) -> Vec<(crate::world::sockdiag::PortKey, Vec<KernelSocket>)> {
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
    pub(crate) fn all_holders(&mut self) -> Vec<KernelSocket> {
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
        }
        crate::world::sockdiag::with_owners(all)
    }

    /// Ask for the port summary of `netns` (through `pid`, a process in it);
    /// never waits: the answer comes through [`NetnsLookups::summaries_in`].
    pub(crate) fn ask_summary(&mut self, netns: u32, pid: u32) {
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
    pub(crate) fn summaries_in(&mut self) -> Vec<(u32, PortSummary)> {
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
}

impl NetnsLookups {
    /// Worker threads alive (WORKERS, unless one could not be started).
    #[cfg(test)]
    pub(crate) fn workers(&self) -> usize {
        Arc::strong_count(&self.shared) - 1
    }
}

impl crate::world::lookup::SocketLookup for NetnsLookups {
    fn ask(
        &mut self,
        netns: u32,
        via: u32,
        tcp: bool,
        port: u16,
        connections: bool,
        candidates: &[u32],
        known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        self.port_sockets(netns, via, tcp, port, connections, candidates, known)
    }
    fn wake_on_answer(&mut self, wake: crate::kernel::wake::Wake) {
        let _ = self.wake.set(wake);
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
        (self.by_inode.load(Ordering::Relaxed), self.quick_misses)
    }
    fn hold_questions(&mut self) {
        self.held.get_or_insert_with(Vec::new);
        crate::world::reconcile::hold_questions();
    }
    fn send_questions(&mut self) {
        self.send_held();
        crate::world::reconcile::send_held();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A namespace a process is in is not gone (the real `/proc`: this
    /// process's own); an inode no process has is.
    #[test]
    fn connection_dumps_take_a_twentieth_of_each_second_in_bursts_of_that_much() {
        let ms = 1_000_000u64;
        let mut b = DumpBudget::new(0);
        // A burst: 20 walks of 2.4 ms, then held.
        let mut walks = 0;
        while b.may(0) {
            b.spent(2_400_000);
            walks += 1;
        }
        assert_eq!(walks, 21, "50 ms of walks, the last one past it");
        assert!(!b.may(5 * ms), "0.25 ms earned in 5 ms: still below");
        // A second later, 50 ms again (never more than that).
        assert!(b.may(1_000 * ms));
        let mut again = 0;
        while b.may(1_000 * ms) {
            b.spent(2_400_000);
            again += 1;
        }
        assert!((20..=22).contains(&again), "{again}");
        // A steady flood gets ~5 % of a CPU: ~21 walks a second.
        let mut b = DumpBudget::new(0);
        let mut walks = 0u64;
        for t in 0..10_000u64 {
            if b.may(t * ms) {
                b.spent(2_400_000);
                walks += 1;
            }
        }
        assert!((200..=230).contains(&walks), "{walks} walks in 10 s");
        // One long walk (a huge host) is paid for before the next.
        let mut b = DumpBudget::new(0);
        assert!(b.may(0));
        b.spent(200 * ms);
        assert!(!b.may(2_000 * ms), "150 ms owed, 100 earned in 2 s");
        assert!(b.may(3_100 * ms));
    }

    #[test]
    fn a_namespace_with_a_process_in_it_is_not_gone_one_without_is() {
        let own = own_netns();
        assert_ne!(own, 0);
        let nobody = 7; // (namespace inodes start at 0xF0000000)
        assert_eq!(
            gone_namespaces(&[own, nobody], Path::new("/proc")),
            vec![nobody]
        );
    }

    /// A namespace that is mounted (`ip netns add`) is not gone, with no
    /// process in it: mountinfo's `nsfs` entries are read.
    #[test]
    fn a_mounted_namespace_is_not_gone() {
        let dir = std::env::temp_dir().join(format!("watcher-gone-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("self")).unwrap();
        std::fs::write(
            dir.join("self/mountinfo"),
            "22 28 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n\
             612 25 0:4 net:[4026532286] /run/netns/blue rw shared:295 - nsfs nsfs rw\n",
        )
        .unwrap();
        let gone = gone_namespaces(&[4026532286, 4026532999], &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(gone, vec![4026532999]);
    }

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
        assert_eq!((n.by_inode.load(Ordering::Relaxed), n.quick_misses), (1, 0));
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
    fn held_questions_reach_the_workers_only_when_sent() {
        let mut n = NetnsLookups::new(Duration::ZERO);
        n.held = Some(Vec::new());
        let me = std::process::id();
        let rx = n
            .send(n.own, &NsHandle::of_pid(me), |reply| Query::Holders {
                reply,
            })
            .expect("taken");
        assert_eq!(n.held.as_ref().map(Vec::len), Some(1), "held, not sent");
        assert!(matches!(
            rx.try_recv(),
            Err(std::sync::mpsc::TryRecvError::Empty)
        ));
        n.send_held();
        assert_eq!(n.held.as_ref().map(Vec::len), Some(0));
        rx.recv_timeout(Duration::from_secs(10))
            .expect("answered once sent");
        // Beyond the queue's room, a question is refused and counted, as when sent at once.
        for _ in 0..QUEUE {
            n.send(n.own, &NsHandle::of_pid(me), |reply| Query::Holders {
                reply,
            })
            .expect("room");
        }
        assert!(n
            .send(n.own, &NsHandle::of_pid(me), |reply| Query::Holders {
                reply
            })
            .is_none());
        assert_eq!(n.unanswered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_few_workers_answer_or_count_every_question_whatever_their_number() {
        // A thousand questions at once (a local user's thousands of
        // namespaces): no thread more than the workers, and each question is
        // answered or counted as unanswered — none waits on the asking
        // thread, none is dropped without a count.
        let mut n = NetnsLookups::new(Duration::ZERO);
        let me = std::process::id();
        let asked = 1000;
        let mut answers = Vec::new();
        for _ in 0..asked {
            if let Some(rx) = n.send(n.own, &NsHandle::of_pid(me), |reply| Query::Holders {
                reply,
            }) {
                answers.push(rx);
            }
        }
        assert_eq!(n.workers(), WORKERS, "no thread more");
        let refused = n.unanswered.load(Ordering::Relaxed);
        assert!(refused > 0, "a queue of {QUEUE} took {asked} questions");
        assert_eq!(answers.len() as u64 + refused, asked);
        for rx in answers {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a question taken is answered");
        }
        assert_eq!(n.workers(), WORKERS);
    }

    #[test]
    fn own_namespace_is_asked_through_a_worker() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut n = NetnsLookups::new(Duration::from_secs(5));
        let me = std::process::id();
        let s = n
            .port_sockets(0, me, true, port, false, &[me], &[])
            .expect("an answer");
        assert!(
            s.iter().any(|k| k.pids.contains(&me) && k.netns == n.own()),
            "{s:?}"
        );
        assert_eq!(n.workers(), WORKERS);
        let again = n
            .port_sockets(n.own(), me, true, port, false, &[me], &[])
            .expect("an answer");
        assert_eq!(again.len(), s.len());
        assert!(n
            .all_holders()
            .iter()
            .any(|k| k.port == port && k.pids.contains(&me)));
    }

    #[test]
    fn a_question_whose_answer_needs_a_dump_beyond_the_budget_is_not_answered() {
        // A port held by an accepted connection alone.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_accepted, _) = l.accept().unwrap();
        crate::world::sockdiag::close_listener(l);
        let mut n = NetnsLookups::new(Duration::from_secs(5));
        let me = std::process::id();
        let s = n
            .port_sockets(0, me, true, port, true, &[me], &[])
            .expect("an answer within the budget");
        assert!(s.iter().any(|k| k.port == port && k.state == 1), "{s:?}");
        // The budget spent (a flood of such binds): no answer, counted.
        n.shared.dumps.lock().unwrap().spent(10_000_000_000);
        let before = n.unanswered.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(n.port_sockets(0, me, true, port, true, &[me], &[]), None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while n.unanswered.load(std::sync::atomic::Ordering::Relaxed) == before {
            assert!(Instant::now() < deadline, "counted unanswered");
            n.late_answers();
            std::thread::sleep(Duration::from_millis(5));
        }
        // A question that needs no dump is answered still (listeners only).
        assert_eq!(
            n.port_sockets(0, me, true, port, false, &[me], &[]),
            Some(Vec::new())
        );
    }
}
