//! Repair after loss. When the kernel could not write some records (the ring
//! was full), the process table and the detectors built on it may believe in
//! processes that ended, or zombies that were reaped. The reader says so
//! before the records drained with the loss (and the pipeline checks the
//! kernel's loss counter before it fires deadlines); the engine then holds
//! the findings those could open (`zombie`, `zombie_accumulation`,
//! `duplicate_instances`) and, once the backlog in the ring has been handled,
//! asks for a snapshot of `/proc`, taken on a thread of its own. When it comes, what the table believes is corrected by
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

use crate::proctable::{Proc, ProcessTable};

/// `/proc` start times have clock-tick resolution (10 ms): a process in the
/// table and one in the snapshot with the same pid are the same process when
/// their starts are this close.
pub const SAME_START_NS: u64 = 30_000_000;

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
    pub sockets: Vec<crate::detect::sockets::KernelSocket>,
    pub netns_read: Vec<u32>,
}

/// The holder sockets of each namespace (netns inode, a pid in it), read
/// from that pid's `/proc/<pid>/net` tables (no namespace is entered), with
/// their processes (one scan of `/proc/*/fd`). A namespace whose pid has
/// left it is not read.
pub fn holders_of(
    namespaces: &[(u32, u32)],
) -> (Vec<crate::detect::sockets::KernelSocket>, Vec<u32>) {
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
        let mut socks = crate::sockdiag::Diag::open_tables_only(&dir.join("net")).holders();
        socks.iter_mut().for_each(|s| s.netns = netns);
        all.extend(socks);
        read.push(netns);
    }
    (crate::sockdiag::with_owners(all), read)
}

/// Take a snapshot on a thread of its own — every process, and the holder
/// sockets of `namespaces` (netns inode, a pid in it); the receiver gets it.
pub fn start(
    identity: crate::proctable::Identity,
    namespaces: Vec<(u32, u32)>,
) -> Receiver<Snapshot> {
    let (tx, rx) = sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("watcher-reconcile".into())
        .spawn(move || {
            let taken_ns = crate::record::Clock::mono_now();
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
        });
    if spawned.is_err() {
        tracing::warn!("cannot start the reconciliation thread");
    }
    rx
}

/// Confirm the processes a finding names (read on a thread of its own).
pub fn start_for(
    pids: Vec<u32>,
    identity: crate::proctable::Identity,
    answered: std::sync::Arc<tokio::sync::Notify>,
) -> Receiver<Snapshot> {
    let (tx, rx) = sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("watcher-confirm".into())
        .spawn(move || {
            let taken_ns = crate::record::Clock::mono_now();
            let procs = pids
                .iter()
                .filter_map(|&pid| procfs::process::Process::new(pid as i32).ok())
                .filter_map(|pr| crate::proctable::read_proc(&pr, identity))
                .collect();
            let _ = tx.send(Snapshot {
                taken_ns,
                procs,
                only: Some(pids),
                ..Default::default()
            });
            answered.notify_one();
        });
    if spawned.is_err() {
        tracing::warn!("cannot start the confirmation thread");
    }
    rx
}

/// Whether a table entry and a snapshot entry are the same process.
pub fn same(a: &Proc, b: &Proc) -> bool {
    a.key.tgid == b.key.tgid && a.key.start_ns.abs_diff(b.key.start_ns) <= SAME_START_NS
}
