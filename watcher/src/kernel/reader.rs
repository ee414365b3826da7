//! The ring-buffer reader: waits on the ring buffer's fd through tokio
//! `AsyncFd`, drains it in batches, decodes, and polls the kernel's loss counters.
//!
//! The kernel decides which records wake it (`watcher_common::wake`: those
//! that can decide a finding; a CPU that woke the reader less than
//! `wakeup_interval` ago wakes it again only after an eighth of it, and only
//! once the reader has read from the ring since); urgent records right behind a wakeup are picked up by a "linger"
//! drain one interval after each drain, repeated while records have come
//! within the last ten intervals; so are bulk records (which never wake it)
//! while records flow, and by the drain every bulk period after a quiet
//! spell. The
//! pipeline can ask for a drain (before it fires a deadline, so that what
//! happened before the deadline is known): the batch is followed by
//! [`Batch::Drained`].
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc, sync::watch};
use watcher_common::LOST_SLOTS;

use crate::{
    kernel::decode::{decode, DecodeError, KernelEvent},
    kernel::loader::{read_lost, read_lost_total},
};

/// What the reader hands to the processing stage.
#[derive(Debug)]
pub(crate) enum Batch {
    /// Records, and when they were read (CLOCK_MONOTONIC ns; 0: no read).
    Events(Vec<Result<KernelEvent, DecodeError>>, u64),
    /// Everything written before a drain request has been sent.
    Drained,
    /// New kernel-side losses since the last report, by kind number.
    Lost {
        by_kind: Box<[u64; LOST_SLOTS as usize]>,
    },
    /// No records: the processing loop woke for something else (an
    /// answer, a timer, a signal) and does its between-batches work.
    Wake,
}

pub struct ReaderOptions {
    /// Re-drain this long after a drain that found records.
    pub linger: Duration,
    /// Drain (bulk records, which never wake the reader) and poll the loss
    /// counters at least this often.
    pub tick: Duration,
    /// Records per batch at most.
    pub batch: usize,
    /// The loss total the reader has reported (the pipeline compares the
    /// kernel's counter with it before firing deadlines).
    pub losses_said: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Batches the pipeline has emptied, given back to be filled again.
    pub spares: Spares,
}

/// A batch's storage.
pub(crate) type Records = Vec<Result<KernelEvent, DecodeError>>;

/// Emptied batches on their way back from the pipeline to the reader: a
/// full batch is 1,024 × 128 bytes, over the size musl's allocator maps
/// fresh from the kernel (and unmaps when freed), so a new vector per
/// batch was an mmap, 32 page faults and a munmap under the process's
/// memory-map lock per batch — on the deciding thread, and contended by
/// every other thread of watcher under a flood.
#[derive(Clone, Default, Debug)]
pub struct Spares(std::sync::Arc<std::sync::Mutex<Vec<Records>>>);

impl Spares {
    /// Most emptied batches kept.
    const KEEP: usize = 8;

    /// An empty batch, with room for `batch` records when one was given back.
    pub fn take(&self) -> Records {
        self.0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    /// Give an emptied batch back.
    pub fn give(&self, mut records: Records) {
        records.clear();
        if records.capacity() == 0 {
            return;
        }
        if let Ok(mut v) = self.0.lock() {
            if v.len() < Self::KEEP {
                v.push(records);
            }
        }
    }
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            linger: Duration::from_millis(1),
            tick: Duration::from_millis(10),
            batch: 1024,
            losses_said: Default::default(),
            spares: Spares::default(),
        }
    }
}

/// Losses since `prev` (updated to `now`), if there are any.
fn new_losses(
    lost: &PerCpuArray<MapData, u64>,
    prev: &mut [u64; LOST_SLOTS as usize],
) -> Option<[u64; LOST_SLOTS as usize]> {
    let now = read_lost(lost);
    let mut delta = [0u64; LOST_SLOTS as usize];
    for i in 0..now.len() {
        delta[i] = now[i].saturating_sub(prev[i]);
    }
    *prev = now;
    delta.iter().any(|&d| d > 0).then_some(delta)
}

/// The ring buffers of the layout (one, or one per group of CPUs), read
/// together: one epoll set watches them all, and the reader waits on it.
pub(crate) struct Rings {
    rings: Vec<RingBuf<MapData>>,
    epoll: nix::sys::epoll::Epoll,
    /// A drain that read this many bytes from one ring (or its most
    /// records) may follow a record the kernel could not write.
    suspect_bytes: usize,
    /// Some drain since the last [`Rings::take_suspect`] was such a drain.
    suspect: bool,
}

/// Most bytes one record takes in a ring (an exec record with the most
/// argv, its ring header, rounded up), with room to spare.
const RECORD_MAX: usize = 32 << 10;

impl Rings {
    pub(crate) fn new(rings: Vec<RingBuf<MapData>>, ring_bytes: u32) -> std::io::Result<Rings> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for (i, r) in rings.iter().enumerate() {
            epoll.add(r, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
        }
        Ok(Rings {
            rings,
            epoll,
            suspect_bytes: suspect_bytes(ring_bytes as usize),
            suspect: false,
        })
    }

    /// Whether a drain since the last call may have read records written
    /// after one the kernel lost (then the loss counter must be read before
    /// they are handed on).
    fn take_suspect(&mut self) -> bool {
        std::mem::take(&mut self.suspect)
    }

    /// Drain up to `max` records of each ring into `out` (merged in kernel
    /// time order when there are several rings); how many (when some, more
    /// may be right behind them — an urgent record the kernel's per-CPU
    /// wakeup limit kept quiet, or bulk ones: the reader re-drains one
    /// interval later). `full`: some ring gave `max`, and may hold more.
    fn drain(&mut self, max: usize, out: &mut Vec<Result<KernelEvent, DecodeError>>) -> Drained {
        let start = out.len();
        let mut full = false;
        for ring in &mut self.rings {
            let (n, bytes) = drain_ring(ring, max, out);
            full |= n == max;
            self.suspect |= n == max || bytes >= self.suspect_bytes;
        }
        if self.rings.len() > 1 {
            // Each ring is in order; records of different CPU groups interleave by time.
            out[start..].sort_by_key(|e| e.as_ref().map(|e| e.header.ts_ns).unwrap_or(0));
        }
        Drained {
            n: out.len() - start,
            full,
        }
    }
}

/// The bytes a drain of one ring of `ring_bytes` reads at least when a
/// record was lost since the last drain, or during this one, after records
/// it hands on. Only the reader consumes: a record is lost when the ring
/// holds at least `ring_bytes - RECORD_MAX` unconsumed bytes, all of them
/// older than it; the drain that was under way reads some of them, the
/// next one the rest and what came after the lost record. The one that
/// reads records newer than the lost one reads at least half of them.
fn suspect_bytes(ring_bytes: usize) -> usize {
    (ring_bytes.saturating_sub(RECORD_MAX) / 2).max(1)
}

/// What one drain found.
struct Drained {
    n: usize,
    full: bool,
}

impl std::os::fd::AsRawFd for Rings {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(&self.epoll.0).as_raw_fd()
    }
}

/// Records read, and the bytes they took in the ring (with the ring's
/// 8-byte header each, rounded up to 8).
fn drain_ring(
    ring: &mut RingBuf<MapData>,
    max: usize,
    out: &mut Vec<Result<KernelEvent, DecodeError>>,
) -> (usize, usize) {
    let mut n = 0;
    let mut bytes = 0;
    while n < max {
        let Some(item) = ring.next() else { break };
        bytes += (item.len() + 8 + 7) & !7;
        out.push(decode(&item));
        n += 1;
    }
    (n, bytes)
}

/// Empty re-drains after the last one that found records before the reader
/// waits for a wakeup or the bulk period again.
const LINGER_DRAINS: u32 = 10;

/// Whether to re-drain one linger interval from now, after a drain that
/// found `n` records: while records have come within the last `window` — a
/// trickle of bulk records (a fork storm's forks, one a millisecond) is read
/// within an interval, not a bulk period.
fn lingers(n: usize, found_at: &mut tokio::time::Instant, window: Duration) -> bool {
    let now = tokio::time::Instant::now();
    if n > 0 {
        *found_at = now;
    }
    now.duration_since(*found_at) < window
}

/// Run until `stop` changes to true, then drain once more and return.
/// Returns when the receiver is gone too.
pub(crate) async fn run(
    ring: Rings,
    lost: std::sync::Arc<PerCpuArray<MapData, u64>>,
    tx: mpsc::Sender<Batch>,
    mut stop: watch::Receiver<bool>,
    mut drain_requests: mpsc::Receiver<()>,
    opts: ReaderOptions,
) -> std::io::Result<()> {
    // The epoll set's fd stays open and unchanged for as long as the AsyncFd
    // (which owns it, and the rings) lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }?;
    let mut prev_lost = [0u64; LOST_SLOTS as usize];
    let mut prev_total = 0u64;
    let mut tick = tokio::time::interval(opts.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut linger = false;
    // When a drain last found records: the reader re-drains every linger
    // interval until LINGER_DRAINS intervals (at most a bulk period) have
    // passed without any.
    let window = (opts.linger * LINGER_DRAINS).min(opts.tick);
    let mut found_at = tokio::time::Instant::now() - window;
    loop {
        let mut batch = opts.spares.take();
        let mut stopping = false;
        let mut drained = false;
        tokio::select! {
            biased;
            _ = stop.changed() => stopping = true,
            Some(()) = drain_requests.recv() => {
                // Everything up to now (in batches of the usual size).
                while fd.get_mut().drain(opts.batch, &mut batch).full {
                    if tx.send(Batch::Events(std::mem::replace(&mut batch, opts.spares.take()), crate::kernel::clock::Clock::mono_now())).await.is_err() {
                        return Ok(());
                    }
                }
                drained = true;
            }
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let d = guard.get_inner_mut().drain(opts.batch, &mut batch);
                if !d.full {
                    guard.clear_ready();
                }
                linger = lingers(d.n, &mut found_at, window);
            }
            _ = tokio::time::sleep(opts.linger), if linger => {
                let d = fd.get_mut().drain(opts.batch, &mut batch);
                linger = lingers(d.n, &mut found_at, window);
            }
            _ = tick.tick() => {
                let d = fd.get_mut().drain(opts.batch, &mut batch);
                linger = lingers(d.n, &mut found_at, window);
                // (The total first: one lookup; the 31 slots only when it moved.)
                let total = read_lost_total(&lost);
                let moved = total != prev_total;
                prev_total = total;
                opts.losses_said.store(prev_total, std::sync::atomic::Ordering::Relaxed);
                if let Some(by_kind) = moved.then(|| new_losses(&lost, &mut prev_lost)).flatten() {
                    if tx.send(Batch::Lost { by_kind: Box::new(by_kind) }).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        let read_ns = crate::kernel::clock::Clock::mono_now();
        // A loss is said before the records drained with it: the engine then
        // holds what those records would open until it has reconciled. (The
        // counter is read only after a drain that may follow a loss — one
        // that read half a ring, or its most records: a bpf syscall per
        // batch was ~7 % of the pipeline's time in an exec flood.)
        if !batch.is_empty() && fd.get_mut().take_suspect() {
            let total = read_lost_total(&lost);
            if total != prev_total {
                prev_total = total;
                opts.losses_said
                    .store(total, std::sync::atomic::Ordering::Relaxed);
                if let Some(by_kind) = new_losses(&lost, &mut prev_lost) {
                    if tx
                        .send(Batch::Lost {
                            by_kind: Box::new(by_kind),
                        })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
        if stopping {
            // Final drain: everything the kernel wrote before the stop.
            loop {
                let mut rest = Vec::new();
                if fd.get_mut().drain(opts.batch, &mut rest).n == 0 {
                    break;
                }
                if tx
                    .send(Batch::Events(rest, crate::kernel::clock::Clock::mono_now()))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            if let Some(by_kind) = new_losses(&lost, &mut prev_lost) {
                let _ = tx
                    .send(Batch::Lost {
                        by_kind: Box::new(by_kind),
                    })
                    .await;
            }
            return Ok(());
        }
        if batch.is_empty() {
            // (A drain that found nothing keeps its storage for the next.)
            opts.spares.give(batch);
        } else if tx.send(Batch::Events(batch, read_ns)).await.is_err() {
            return Ok(());
        }
        if drained && tx.send(Batch::Drained).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_is_suspect_from_half_a_ring_less_the_largest_record() {
        // A loss needs the ring (8 MiB) full but for less than one record:
        // the drains that read what was in it, or what came after the lost
        // record, read at least half of that.
        assert_eq!(suspect_bytes(8 << 20), ((8 << 20) - RECORD_MAX) / 2);
        assert!(suspect_bytes(1 << 20) < (1 << 19));
        // The largest record fits the margin: an exec record with the most argv.
        let exec = std::mem::size_of::<watcher_common::Event<watcher_common::ExecData>>()
            + watcher_common::ARGS_MAX;
        assert!(exec + 8 <= RECORD_MAX);
        assert_eq!(suspect_bytes(0), 1, "never 0: every drain would be suspect");
    }
}
