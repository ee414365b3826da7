//! Repair after loss. When the kernel could not write some records (the ring
//! was full), the process table and the detectors built on it may believe in
//! processes that ended, or zombies that were reaped. The reader says so
//! before the records drained with the loss (and the pipeline checks the
//! kernel's loss counter before it fires deadlines); the engine then holds
//! the findings those could open (`zombie`, `zombie_accumulation`,
//! `duplicate_instances`) and, once the backlog in the ring has been handled,
//! asks for a snapshot of `/proc`, taken on the `/proc` worker thread. When it comes, what the table believes is corrected by
//! synthetic events (an exit and a reap for a process that is gone, a reap
//! for a zombie that is no longer one, an exit for a process that is now a
//! zombie) fed through the detectors like any other, processes that started
//! unseen are added, and only the held findings whose incidents survive that
//! are written. The socket table is corrected from the same snapshot: the
//! holder sockets of every network namespace it knows (listeners whose close
//! was lost are dropped, listeners whose start was lost are added). A loss
//! never leaves a false finding behind, and delays a true one by the
//! snapshot's time (tens of milliseconds).
//!
//! Without a loss, the same path confirms each such finding before it
//! opens: only the processes it names are read from `/proc` (a zombie must
//! be in state Z, an instance alive), with the lookups' short wait.
use std::sync::mpsc::{sync_channel, Receiver};

use crate::world::proctable::{Proc, ProcessTable};

/// `/proc` start times have clock-tick resolution (10 ms): a process in the
/// table and one in the snapshot with the same pid are the same process when
/// their starts are this close.
pub(crate) const SAME_START_NS: u64 = 30_000_000;

/// Every process in `/proc` (zombies with `exited` set), and when the walk
/// began (CLOCK_MONOTONIC ns): processes the table learnt of after that are
/// not judged by it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub taken_ns: u64,
    pub procs: Vec<Proc>,
    /// A confirmation of these pids only (the processes a finding names):
    /// nothing else is judged, nothing is added.
    pub only: Option<Vec<u32>>,
    /// The holder sockets (TCP listeners, bound UDP) of the network
    /// namespaces in `netns_read`, with their processes.
    pub sockets: Vec<crate::world::sockdiag::KernelSocket>,
    pub netns_read: Vec<u32>,
}

/// The holder sockets of each namespace (netns inode, a pid in it), read
/// from that pid's `/proc/<pid>/net` tables (no namespace is entered), with
/// their processes (one scan of `/proc/*/fd`). A namespace whose pid has
/// left it is not read.
pub(crate) fn holders_of(
    namespaces: &[(u32, u32)],
) -> (Vec<crate::world::sockdiag::KernelSocket>, Vec<u32>) {
    let mut all = Vec::new();
    let mut read = Vec::new();
    for &(netns, pid) in namespaces {
        if read.contains(&netns) {
            continue;
        }
        let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        if crate::world::netns::ns_inode(&dir.join("ns/net")) != Some(netns) {
            continue;
        }
        let mut socks = crate::world::sockdiag::Diag::open_tables_only(&dir.join("net")).holders();
        socks.iter_mut().for_each(|s| s.netns = netns);
        all.extend(socks);
        read.push(netns);
    }
    (crate::world::sockdiag::with_owners(all), read)
}

/// A question for `/proc` (a snapshot, a confirmation), answered off the
/// pipeline's thread.
type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the one persistent `/proc` worker (started at the first
/// question, then kept: no thread is spawned per question). The engine has
/// one question in flight at a time — the next starts when the last was
/// answered — so its queue stays that short. With no worker (it could not be
/// started: out of threads), the question is answered here, late but true.
fn on_worker(job: Job) {
    if let Some(job) = HELD.with(|h| hold(&mut h.borrow_mut(), job)) {
        send_now(job);
    }
}

fn send_now(job: Job) {
    static WORKER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let tx = WORKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("watcher-proc".into())
            .spawn(move || {
                // Below the deciding thread (and below whoever reads the
                // findings it just wrote: a confirmation is never urgent).
                crate::kernel::sched::run_as_helper();
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let unasked = match tx {
        Some(tx) => match tx.send(job) {
            Ok(()) => return,
            Err(e) => e.0,
        },
        None => job,
    };
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::warn!(
            "cannot start the /proc worker thread: /proc is read on the pipeline's thread"
        )
    });
    unasked();
}

std::thread_local! {
    /// The questions this thread asked and holds until [`send_held`]
    /// (`None`: it does not hold them; see [`hold_questions`]).
    static HELD: std::cell::RefCell<Option<Vec<Job>>> = const { std::cell::RefCell::new(None) };
}

/// `job` kept in `held` when the thread holds its questions (`None`), or
/// given back to be sent.
fn hold(held: &mut Option<Vec<Job>>, job: Job) -> Option<Job> {
    match held {
        Some(v) => {
            v.push(job);
            None
        }
        None => Some(job),
    }
}

/// From now on, the calling thread's questions to the `/proc` worker wait
/// for [`send_held`] (the end of its turn, after its findings are written).
pub(crate) fn hold_questions() {
    HELD.with(|h| {
        h.borrow_mut().get_or_insert_with(Vec::new);
    });
}

/// Send the questions the calling thread held.
pub(crate) fn send_held() {
    let jobs: Vec<Job> = HELD.with(|h| {
        h.borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    });
    for job in jobs {
        send_now(job);
    }
}

/// Take a snapshot on the `/proc` worker — every process, and the holder
/// sockets of `namespaces` (netns inode, a pid in it); the receiver gets it.
pub(crate) fn start(
    identity: crate::world::proctable::Identity,
    namespaces: Vec<(u32, u32)>,
) -> Receiver<Snapshot> {
    let (tx, rx) = sync_channel(1);
    on_worker(Box::new(move || {
        let taken_ns = crate::kernel::clock::Clock::mono_now();
        let (sockets, netns_read) = holders_of(&namespaces);
        let mut t = ProcessTable::new(10_000_000);
        t.identity = identity;
        t.seed_from_proc();
        let _ = tx.send(Snapshot {
            taken_ns,
            procs: t.iter().cloned().collect(),
            only: None,
            sockets,
            netns_read,
        });
    }));
    rx
}

/// Confirm the processes a finding names (read on the `/proc` worker).
pub(crate) fn start_for(pids: Vec<u32>, answered: crate::kernel::wake::Wake) -> Receiver<Snapshot> {
    let (tx, rx) = sync_channel(1);
    on_worker(Box::new(move || {
        let taken_ns = crate::kernel::clock::Clock::mono_now();
        // Which process each pid is now, and whether a zombie: its stat
        // alone (a full read — program, command line, owner, container —
        // cost ~60 µs a process, 0.7 ms for a finding naming eleven).
        let procs = pids
            .iter()
            .filter_map(|&pid| procfs::process::Process::new(pid as i32).ok())
            .filter_map(|pr| crate::world::proctable::read_stat(&pr))
            .collect();
        let _ = tx.send(Snapshot {
            taken_ns,
            procs,
            only: Some(pids),
            ..Default::default()
        });
        answered.wake();
    }));
    rx
}

/// Which of the network namespaces `netns` are gone (read on the `/proc`
/// worker; see [`crate::world::netns::gone_namespaces`]).
pub(crate) fn start_gone_check(
    netns: Vec<u32>,
    answered: crate::kernel::wake::Wake,
) -> Receiver<Vec<u32>> {
    let (tx, rx) = sync_channel(1);
    on_worker(Box::new(move || {
        let _ = tx.send(crate::world::netns::gone_namespaces(
            &netns,
            std::path::Path::new("/proc"),
        ));
        answered.wake();
    }));
    rx
}

/// Whether a table entry and a snapshot entry are the same process.
pub(crate) fn same(a: &Proc, b: &Proc) -> bool {
    a.key.tgid == b.key.tgid && a.key.start_ns.abs_diff(b.key.start_ns) <= SAME_START_NS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_holds_its_questions_sends_them_when_told() {
        std::thread::spawn(|| {
            hold_questions();
            let rx = start_for(vec![std::process::id()], Default::default());
            let held = HELD.with(|h| h.borrow().as_ref().map_or(0, Vec::len));
            assert_eq!(held, 1, "held, not sent");
            assert!(matches!(
                rx.try_recv(),
                Err(std::sync::mpsc::TryRecvError::Empty)
            ));
            send_held();
            let s = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("answered once sent");
            assert_eq!(s.procs.len(), 1, "this process, read from /proc");
            // Still holding: the next question waits for the next send.
            let _rx = start_for(vec![std::process::id()], Default::default());
            assert_eq!(HELD.with(|h| h.borrow().as_ref().map_or(0, Vec::len)), 1);
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_thread_that_does_not_hold_sends_at_once() {
        std::thread::spawn(|| {
            let rx = start_for(vec![std::process::id()], Default::default());
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .expect("answered");
        })
        .join()
        .expect("thread");
    }
}
