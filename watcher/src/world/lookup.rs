//! What the engine asks of the world about sockets and processes: the
//! kernel's sockets on one port (answered in place or by a network
//! namespace's helper), port summaries, the snapshots of `/proc` for a
//! reconciliation and for a confirmation. Implemented by
//! [`crate::world::netns::NetnsLookups`]; tests stand in for it.
use crate::world::sockdiag::{KernelSocket, PortKey};

/// At most this many targeted socket lookups per second (each user's own budget): each costs ~0.1 ms
/// and takes the kernel's socket-table locks, so a storm of failing binds
/// (thousands a second) must not turn into a storm of lookups.
pub(crate) const LOOKUPS_PER_SECOND: u32 = 200;

/// At most this many lookups a second go to the namespace workers, all
/// users together. Most are answered from the kernel's listener table;
/// only a failed bind that no listener explains (or an open conflict's
/// restatement) asks for the port's connections, a walk of the kernel's
/// whole connection hash (~2.4 ms on this 24 GiB host whatever the port,
/// both families in one walk) that nothing preempts: those walks get at
/// most 50 ms of each second however many users flood with such binds
/// (`netns::DumpBudget`; beyond it such a question is not answered).
/// (Holders the kernel side follows need no lookup at all.)
pub(crate) const ASKS_PER_SECOND: u32 = 400;

/// Looks up the kernel's sockets on one port of one network namespace.
pub trait SocketLookup: Send {
    /// The sockets on (netns, transport is TCP, port), asked through `via`
    /// (a process using that namespace): holders named by `known` (socket
    /// inode, pid) when those name them all, else by the fds of
    /// `candidates` (the pids believed to hold it) looked at first. For
    /// TCP the listeners; when none listens, the port's other sockets
    /// (connections, TIME_WAIT) only if `connections` — the kernel walks
    /// its whole connection table for them, so only a question whose
    /// answer needs them asks (a failed bind, an open conflict). `None`:
    /// not answered at once — the detectors go on with the table as it is,
    /// and the answer comes through [`SocketLookup::late`].
    #[expect(
        clippy::too_many_arguments,
        reason = "the question, spelled out: where, which port, what is wanted, who is known"
    )]
    fn ask(
        &mut self,
        netns: u32,
        via: u32,
        tcp: bool,
        port: u16,
        connections: bool,
        candidates: &[u32],
        known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>>;
    /// The sockets on the port answered on this thread without `/proc`
    /// (sock_diag on a kept socket, owners from `known`: socket inode, pid):
    /// only with `confirm_before_open`, which holds a port finding for the
    /// kernel's word; `None`: [`SocketLookup::ask`] instead.
    fn quick(
        &mut self,
        _netns: u32,
        _via: u32,
        _tcp: bool,
        _port: u16,
        _known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        None
    }
    /// Notify `wake` whenever an answer has come (the pipeline then
    /// takes it through [`SocketLookup::late`] at once).
    fn wake_on_answer(&mut self, _wake: crate::kernel::wake::Wake) {}
    /// Once a second: close what has not been used for a while.
    fn sweep(&mut self) {}
    /// (answered from sock_diag and known inodes alone, on a worker or by
    /// [`SocketLookup::quick`]; asked of [`SocketLookup::quick`] and not answerable that way).
    fn quick_counts(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Answers that came after their wait (never blocks).
    fn late(&mut self) -> Vec<(PortKey, Vec<KernelSocket>)> {
        Vec::new()
    }
    /// Whether answers are still on their way.
    fn waiting(&self) -> bool {
        false
    }
    /// Ask for the port summary of namespace `netns` (through `via`, a
    /// process in it) without waiting: it comes through [`SocketLookup::summaries`].
    fn summary(&mut self, _netns: u32, _via: u32) {}
    /// Port summaries that have come (never blocks).
    fn summaries(&mut self) -> Vec<(u32, crate::world::sockdiag::PortSummary)> {
        Vec::new()
    }
    /// Look, off this thread, which of the network namespaces `netns`
    /// (inodes) are gone: no process in one and none mounted (never waits;
    /// `answered` is notified when the answer is there).
    fn start_gone_check(
        &mut self,
        netns: Vec<u32>,
        answered: &crate::kernel::wake::Wake,
    ) -> Option<std::sync::mpsc::Receiver<Vec<u32>>> {
        Some(crate::world::reconcile::start_gone_check(
            netns,
            answered.clone(),
        ))
    }
    /// Start a snapshot of `/proc` (and of the holder sockets of
    /// `namespaces`: netns inode, a pid in it) for the reconciliation after
    /// a loss (never waits).
    fn start_snapshot(
        &mut self,
        identity: crate::world::proctable::Identity,
        namespaces: Vec<(u32, u32)>,
    ) -> Option<std::sync::mpsc::Receiver<crate::world::reconcile::Snapshot>> {
        Some(crate::world::reconcile::start(identity, namespaces))
    }
    /// Start reading the processes `pids` from `/proc` to confirm a finding
    /// (never waits; `answered` is notified when the answer is there);
    /// `None`: no confirmation here (the finding goes as it is).
    fn start_confirmation(
        &mut self,
        pids: Vec<u32>,
        answered: &crate::kernel::wake::Wake,
    ) -> Option<std::sync::mpsc::Receiver<crate::world::reconcile::Snapshot>> {
        Some(crate::world::reconcile::start_for(pids, answered.clone()))
    }
    /// From now on, hold the questions a turn asks of the helpers (port
    /// lookups, summaries, confirmations, snapshots) until
    /// [`SocketLookup::send_questions`]: the deciding thread writes the
    /// turn's findings first, then wakes the helpers. (A helper woken
    /// mid-turn on the deciding thread's CPU could take it: a `ports_exhausted`
    /// line waited 2–5 ms for a namespace worker's port summary.) Without
    /// it, each question goes at once.
    fn hold_questions(&mut self) {
        crate::world::reconcile::hold_questions();
    }
    /// Hand the held questions to the helpers (the end of a turn).
    fn send_questions(&mut self) {
        crate::world::reconcile::send_held();
    }
    /// How long the detectors' thread waits for a confirmation (default:
    /// not at all — the answer wakes the pipeline when it comes).
    fn confirmation_wait(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A closure as the socket lookup (the replay bench's: every port empty);
/// confirmations read `/proc` as the daemon's do.
impl<F: FnMut(u32, u32, bool, u16, &[u32]) -> Option<Vec<KernelSocket>> + Send> SocketLookup for F {
    fn ask(
        &mut self,
        netns: u32,
        via: u32,
        tcp: bool,
        port: u16,
        _connections: bool,
        candidates: &[u32],
        _known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        self(netns, via, tcp, port, candidates)
    }
}

/// The world of a recording replayed on another machine (the replay
/// corpus): the kernel knows no socket, and none of the recorded processes
/// is in `/proc` — a confirmation answers so at once, whatever this
/// machine's `/proc` holds and however fast a worker would read it.
pub struct Recorded;

impl SocketLookup for Recorded {
    fn ask(
        &mut self,
        _netns: u32,
        _via: u32,
        _tcp: bool,
        _port: u16,
        _connections: bool,
        _candidates: &[u32],
        _known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        Some(Vec::new())
    }
    fn start_confirmation(
        &mut self,
        pids: Vec<u32>,
        _answered: &crate::kernel::wake::Wake,
    ) -> Option<std::sync::mpsc::Receiver<crate::world::reconcile::Snapshot>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // (Taken after every recorded event: all of them are judged by it.)
        let _ = tx.send(crate::world::reconcile::Snapshot {
            taken_ns: u64::MAX / 2,
            only: Some(pids),
            ..Default::default()
        });
        Some(rx)
    }
}
