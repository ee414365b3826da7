//! The ring-buffer reader: drains the rings in batches for the thread that
//! reads and decides (which waits on their poll fd), decodes, and polls the
//! kernel's loss counters.
//!
//! The kernel decides which records can decide a finding
//! (`watcher_common::wake`); those wake the reader when it sleeps, and only
//! then: the reader says in the kernel's `READER` word when it goes to sleep
//! ([`ReaderWord`]). Deciding records that come while it is awake mark the
//! word urgent, and the reader drains again before it sleeps — at once
//! early in a burst, paced in a storm ([`Urgency`]). Bulk records
//! never wake it: they are picked up by a "linger" drain one interval after
//! each drain, repeated while records have come within the last two bulk
//! periods — every interval while records pile up, backing off to every
//! bulk period on a trickle — and by the drain every bulk period after a
//! quiet spell. The pipeline drains to empty before it fires a deadline, so
//! that what happened before the deadline is known.
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray};
use watcher_common::LOST_SLOTS;

use crate::{
    kernel::decode::{decode, DecodeError, KernelEvent},
    kernel::loader::{read_lost, read_lost_total},
    kernel::reader_word::{ReaderWord, Urgency},
};

pub struct ReaderOptions {
    /// Re-drain this long after a drain that found records.
    pub linger: Duration,
    /// Drain (bulk records, which never wake the reader) and poll the loss
    /// counters at least this often.
    pub tick: Duration,
    /// Records per batch at most.
    pub batch: usize,
    /// In a storm of deciding records, drain for them at most once per
    /// this long (an eighth of the wakeup interval), growing to four times
    /// it ([`Urgency`]).
    pub urgent_gap: Duration,
}

impl ReaderOptions {
    /// The defaults, with the bulk period and wakeup interval of a load.
    pub fn for_load(load: &crate::kernel::loader::LoadOptions) -> ReaderOptions {
        ReaderOptions {
            tick: load.bulk_period,
            urgent_gap: Duration::from_nanos(load.wakeup_interval_ns / 8),
            ..ReaderOptions::default()
        }
    }
}

/// A batch's storage (one vector, kept by the loop and reused: a full
/// batch is 1,024 × 128 bytes, over the size musl's allocator maps fresh
/// from the kernel, so a new vector per batch was an mmap, 32 page faults
/// and a munmap under the process's memory-map lock per batch).
pub(crate) type Records = Vec<Result<KernelEvent, DecodeError>>;

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            linger: Duration::from_millis(1),
            tick: Duration::from_millis(10),
            batch: 1024,
            urgent_gap: Duration::from_micros(125),
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
    rings: Vec<crate::kernel::ring::Ring>,
    epoll: nix::sys::epoll::Epoll,
    /// A drain that read this many bytes from one ring (or its most
    /// records) may follow a record the kernel could not write.
    suspect_bytes: usize,
    /// Some drain since the last [`Rings::take_suspect`] was such a drain.
    suspect: bool,
    /// `WATCHER_RECORD=<file>`: every record read is also written there,
    /// as read (see [`read_recording`]) — the replay corpus.
    record: Option<std::io::BufWriter<std::fs::File>>,
}

/// Most bytes one record takes in a ring (an exec record with the most
/// argv, its ring header, rounded up), with room to spare.
const RECORD_MAX: usize = 32 << 10;

impl Rings {
    pub(crate) fn new(
        rings: Vec<crate::kernel::ring::Ring>,
        ring_bytes: u32,
    ) -> std::io::Result<Rings> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for (i, r) in rings.iter().enumerate() {
            epoll.add(r, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
        }
        let record = match std::env::var_os("WATCHER_RECORD") {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::File::create(&path).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "WATCHER_RECORD={}: {e}",
                            std::path::Path::new(&path).display()
                        ),
                    )
                })?,
            )),
            None => None,
        };
        Ok(Rings {
            rings,
            epoll,
            suspect_bytes: suspect_bytes(ring_bytes as usize),
            suspect: false,
            record,
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
        let mut deciding = 0;
        for ring in &mut self.rings {
            let (n, bytes, d) = drain_ring(ring, max, out, self.record.as_mut());
            deciding += d;
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
            deciding,
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
pub(crate) struct Drained {
    pub(crate) n: usize,
    pub(crate) full: bool,
    /// Of the `n`, records the kernel judged deciding.
    pub(crate) deciding: usize,
}

/// Records read, the bytes they took in the ring (with the ring's 8-byte
/// header each, rounded up to 8), and how many of them were deciding.
fn drain_ring(
    ring: &mut crate::kernel::ring::Ring,
    max: usize,
    out: &mut Vec<Result<KernelEvent, DecodeError>>,
    mut record: Option<&mut std::io::BufWriter<std::fs::File>>,
) -> (usize, usize, usize) {
    let mut deciding = 0;
    // (Decoded in place; the ring is told once what was read.)
    let (n, bytes) = ring.read(max, |item| {
        if let Some(w) = record.as_deref_mut() {
            crate::kernel::decode::write_recorded(w, item);
        }
        let ev = decode(item);
        if let Ok(e) = &ev {
            deciding += usize::from(e.header.flags & watcher_common::HEADER_DECIDING != 0);
        }
        out.push(ev);
    });
    (n, bytes, deciding)
}

/// Whether a drain at `now` does the bulk period's work (drain, poll the
/// loss counters): its time has come — or the reader lingers (a re-drain
/// planned at `linger_at`, 0: none) and the bulk period would come before
/// its next re-drain (`linger_cur` from now): done now, early, instead of
/// a wakeup of its own.
fn tick_due(now: u64, tick_at: u64, linger_at: u64, linger_cur: u64) -> bool {
    now >= tick_at || (linger_at != 0 && tick_at <= now + linger_cur)
}

/// The interval to the next linger re-drain after one that found `n`
/// records (`batch` at most per ring: a whole batch is records piling up)
/// over the `since` ns after the drain before it; `cur` the interval so
/// far, `base` the configured one, `most` the bulk period (a trickle's
/// records wait at most that, as after a quiet spell); `fresh`: the first
/// records after a quiet spell (a burst may follow: a program's first
/// instances, read in time for its later ones to be urgent).
///
/// A flow — [`FLOW_MIN`] records or more a bulk period, fewer than a batch
/// — is read in turns of about [`FLOW_TURN`] records, up to [`FLOW_STRETCH`]
/// bulk periods apart and never more than [`FLOW_LONGEST`] (a bulk period
/// an operator set longer than that is kept to: the stretch is for the
/// short default, whose turns are the ones that cost): a turn's fixed cost (the wakeup, caches the idle
/// CPU lost) was half of an exec flood's ~2 µs per event at ~60 records a
/// turn. A faster flow fills its turns within the bulk period and is read
/// as before; a slower one (a fork storm's thousand forks a second: ~30
/// records a bulk period) is a trickle, its backlog small when a deciding
/// record comes.
fn next_linger(
    cur: u64,
    base: u64,
    most: u64,
    n: usize,
    batch: usize,
    fresh: bool,
    since: u64,
) -> u64 {
    if fresh || n >= batch {
        return base;
    }
    let trickle = (cur * 2).min(most.max(base));
    // (A drain right after another, woken by a deciding record, finds too
    // few to tell a rate: the interval so far, if it was stretched.)
    if n < FLOW_SAMPLE {
        return if cur > most && since < most {
            cur
        } else {
            trickle
        };
    }
    let (n, since) = (n as u64, since.max(1));
    if n * most < FLOW_MIN * since {
        return trickle;
    }
    let turn = (FLOW_TURN * since / n).min(flow_longest(most));
    trickle.max(turn)
}

/// A flow: at least this many records a bulk period ([`next_linger`]).
const FLOW_MIN: u64 = 64;
/// A flow's turns carry about this many records (a deciding record's drain
/// reads at most about as many before it: ~0.3 ms of exec records).
const FLOW_TURN: u64 = 256;
/// A flow's turns come at most this many bulk periods apart.
const FLOW_STRETCH: u64 = 4;
/// A flow's turns come at most this long apart (ns), or one bulk period
/// when that is longer.
const FLOW_LONGEST: u64 = 40_000_000;

/// The longest interval between a flow's turns with bulk period `most`:
/// [`FLOW_STRETCH`] bulk periods, at most [`FLOW_LONGEST`] — and never
/// less than the bulk period itself (`--bulk-ms 5000` reads a flow every
/// 5 s, as it reads a trickle; 20 s would outlast what its operator set).
fn flow_longest(most: u64) -> u64 {
    (most * FLOW_STRETCH).min(FLOW_LONGEST).max(most)
}

/// A drain that found fewer records than this tells no rate.
const FLOW_SAMPLE: usize = 16;

/// On a quiet host the bulk period grows to at most this many times the
/// configured one (40 ms at the default 10): an idle daemon wakes ~25 times
/// a second, not 100.
const TICK_BACKOFF: u64 = 4;

/// The interval to the next bulk-period drain: the configured one when
/// records were found since the last (`found`), else doubling up to
/// [`TICK_BACKOFF`] times it. (Deciding records wake the reader whatever
/// it is; a flow of bulk ones is re-drained every linger interval.)
fn next_tick(cur: u64, base: u64, found: bool) -> u64 {
    if found {
        base
    } else {
        (cur * 2).min(base * TICK_BACKOFF)
    }
}

/// How long after records came the reader goes on re-draining (and the
/// records after a longer gap are the first after a quiet spell): two of
/// the longest re-drain interval (the bulk period, or the linger interval
/// when that is longer). One would make a trickle read every bulk period
/// look like a new burst at every re-drain, its interval back to the
/// shortest each time (the window was ten linger intervals, at most a bulk
/// period, until session 30).
fn linger_window(linger_ns: u64, tick_ns: u64) -> u64 {
    2 * tick_ns.max(linger_ns)
}

/// When the reader re-drains for bulk records, which never wake it.
struct Linger {
    /// The configured interval.
    base: u64,
    /// The longest interval (the bulk period).
    most: u64,
    /// Records came within this long of now: re-drain each interval
    /// ([`linger_window`]).
    window: u64,
    /// When a drain last found records.
    found_at: u64,
    /// The next re-drain (0: none).
    at: u64,
    /// The interval to it: `base` after the first records of a burst or a
    /// drain that found records piling up, doubling (up to `most`) while
    /// drains find only a few; longer for a flow ([`next_linger`]).
    cur: u64,
    /// When the reader last drained.
    drained_at: u64,
}

impl Linger {
    fn new(base: u64, tick: u64, now: u64) -> Linger {
        let window = linger_window(base, tick);
        Linger {
            base,
            most: tick,
            window,
            found_at: now.saturating_sub(window),
            at: 0,
            cur: base,
            drained_at: now,
        }
    }

    /// A drain at `now` found `n` records (`batch` at most per ring).
    fn drained(&mut self, now: u64, n: usize, batch: usize) {
        // The first records after a quiet spell (a burst may follow): a gap
        // of the window, or of two intervals of a flow read in longer turns.
        let window = self.window.max(2 * self.cur);
        let fresh = n > 0 && now.saturating_sub(self.found_at) >= window;
        if n > 0 {
            self.found_at = now;
        }
        // A wakeup costs as much as handling tens of records: a steady
        // trickle is read every bulk period, not every millisecond, and a
        // flow (accepted connects, an exec flood) in turns of a few hundred
        // records; records piling up, or the first after a quiet spell,
        // bring the interval back to one.
        let since = now.saturating_sub(self.drained_at);
        self.drained_at = now;
        self.cur = next_linger(self.cur, self.base, self.most, n, batch, fresh, since);
        // Re-drain one interval from now while records have come within
        // the window: a trickle of bulk records (a fork storm's forks, one
        // a millisecond) is read within the bulk period; then the reader
        // sleeps until a wakeup or the (backed-off) bulk period.
        self.at = if now.saturating_sub(self.found_at) < window {
            now + self.cur
        } else {
            0
        };
    }
}

/// The reader, driven by the thread that reads and decides (no task, no
/// channel: a drained batch is handled by the same thread at once). It
/// says when it wants to run next ([`Reader::next_due`]: a linger re-drain
/// or the bulk period), drains, and reads the kernel's loss counters.
pub(crate) struct Reader {
    rings: Rings,
    lost: std::sync::Arc<PerCpuArray<MapData, u64>>,
    prev_lost: [u64; LOST_SLOTS as usize],
    prev_total: u64,
    batch: usize,
    tick_ns: u64,
    /// When to re-drain for bulk records.
    linger: Linger,
    /// The next bulk-period drain and loss poll.
    tick_at: u64,
    /// The interval to it ([`next_tick`]).
    tick_cur: u64,
    /// Whether it sleeps, said to the kernel, and deciding records that
    /// came while it was awake.
    urgency: Urgency,
}

impl Reader {
    pub(crate) fn new(
        rings: Rings,
        lost: std::sync::Arc<PerCpuArray<MapData, u64>>,
        word: Option<ReaderWord>,
        opts: ReaderOptions,
        now: u64,
    ) -> Reader {
        let tick_ns = (opts.tick.as_nanos() as u64).max(1);
        Reader {
            rings,
            lost,
            prev_lost: [0; LOST_SLOTS as usize],
            prev_total: 0,
            batch: opts.batch.max(1),
            tick_ns,
            linger: Linger::new(opts.linger.as_nanos() as u64, tick_ns, now),
            tick_at: now + tick_ns,
            tick_cur: tick_ns,
            urgency: Urgency::new(word, opts.urgent_gap.as_nanos() as u64),
        }
    }

    /// The rings' poll fd (readable when a ring holds records and the
    /// kernel woke it).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.rings.epoll.0)
    }

    /// Most records per drain of one ring.
    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    /// When the reader wants to drain next without a wakeup (CLOCK_MONOTONIC ns).
    pub(crate) fn next_due(&self) -> u64 {
        let mut due = self.tick_at;
        if self.linger.at != 0 {
            // (A flow read in turns longer than the bulk period: its
            // re-drains do the period's work, `tick_due`.)
            due = if self.linger.cur > self.tick_ns {
                self.linger.at
            } else {
                due.min(self.linger.at)
            };
        }
        if let Some(u) = self.urgency.due() {
            due = due.min(u);
        }
        due
    }

    /// The thread is about to wait until `until` (it is `now`); the time
    /// the wait ends ([`Urgency::before_wait`]). While a linger re-drain is
    /// planned the reader dozes: lazy records (execs of programs not
    /// listed) ride on it instead of waking it.
    pub(crate) fn before_wait(&mut self, until: u64, now: u64) -> u64 {
        self.urgency.before_wait(until, now, self.linger.at != 0)
    }

    /// The wait ended.
    pub(crate) fn after_wait(&mut self) {
        self.urgency.after_wait();
    }

    /// Forks before `until` (kernel ns) can decide a finding: the kernel
    /// makes them urgent.
    pub(crate) fn forks_until(&mut self, until: u64) {
        self.urgency.tell(watcher_common::READER_FORKS_UNTIL, until);
    }

    /// An exec is urgent when `n` live processes (its own included) have
    /// its name: the kernel counts them (0: never).
    pub(crate) fn exec_crowd(&mut self, n: u64) {
        self.urgency.tell(watcher_common::READER_EXEC_CROWD, n);
    }

    /// A fork is urgent when it is its parent's `n`-th in a second: the
    /// kernel counts them (0: never).
    pub(crate) fn fork_rate(&mut self, n: u64) {
        self.urgency.tell(watcher_common::READER_FORK_RATE, n);
    }

    /// Drain up to the batch size of each ring into `out`; `full`: some
    /// ring gave its most and may hold more. Sets the next linger re-drain
    /// (for bulk records only: deciding ones wake the reader, or mark its
    /// word, whenever they come).
    pub(crate) fn drain(&mut self, out: &mut Records, now: u64) -> Drained {
        let d = self.rings.drain(self.batch, out);
        self.urgency.drained(now, d.deciding);
        self.linger.drained(now, d.n, self.batch);
        d
    }

    /// Whether the bulk period has come (then the caller drains and polls
    /// the losses with `tick = true`).
    pub(crate) fn tick_due(&self, now: u64) -> bool {
        tick_due(now, self.tick_at, self.linger.at, self.linger.cur)
    }

    /// New kernel-side losses, by slot. The kernel's total is in the
    /// reader's mapped word: loaded after every drain (a load, not a system
    /// call). Without the mapping it is read each bulk period (`tick`), and
    /// after a drain that may follow a lost record (one that read half a
    /// ring, or its most records) — a bpf syscall per batch was ~7 % of the
    /// pipeline's time in an exec flood. A loss is said before the records
    /// drained with it: the engine then holds what those records would open
    /// until it has reconciled.
    pub(crate) fn losses(
        &mut self,
        tick: bool,
        now: u64,
    ) -> Option<Box<[u64; LOST_SLOTS as usize]>> {
        if tick {
            let found = now.saturating_sub(self.linger.found_at) < self.tick_cur;
            self.tick_cur = next_tick(self.tick_cur, self.tick_ns, found);
            self.tick_at = now + self.tick_cur;
        }
        let suspect = self.rings.take_suspect();
        if self.urgency.lost_total().is_none() && !tick && !suspect {
            return None;
        }
        // (The total first: one load or lookup; the 31 slots only when it moved.)
        let total = self.lost_total();
        if total == self.prev_total {
            return None;
        }
        self.prev_total = total;
        new_losses(&self.lost, &mut self.prev_lost).map(Box::new)
    }

    /// Every loss not said yet (at the end).
    pub(crate) fn final_losses(&mut self) -> Option<Box<[u64; LOST_SLOTS as usize]>> {
        new_losses(&self.lost, &mut self.prev_lost).map(Box::new)
    }

    /// The kernel's loss total differs from what the reader has said: a
    /// record was lost that no drain has reported yet.
    pub(crate) fn unsaid_loss(&self) -> bool {
        self.lost_total() != self.prev_total
    }

    /// Every loss the kernel has counted: a load from the reader's word,
    /// or (not mapped) a per-CPU lookup of `LOST`'s slot 0.
    fn lost_total(&self) -> u64 {
        self.urgency
            .lost_total()
            .unwrap_or_else(|| read_lost_total(&self.lost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linger_backs_off_on_a_trickle_and_comes_back_when_records_pile_up_or_follow_a_quiet_spell(
    ) {
        let ms = 1_000_000;
        // A trickle (20 records in 10 ms): 2, 4, 8 ms, and no further than
        // the bulk period (10).
        let mut cur = ms;
        let mut seen = Vec::new();
        for _ in 0..5 {
            cur = next_linger(cur, ms, 10 * ms, 20, 1024, false, 10 * ms);
            seen.push(cur / ms);
        }
        assert_eq!(seen, vec![2, 4, 8, 10, 10]);
        // Half a batch found (50,000 records a second read every 10 ms):
        // a trickle still.
        assert_eq!(
            next_linger(8 * ms, ms, 10 * ms, 512, 1024, false, 8 * ms),
            10 * ms
        );
        // A whole batch: records pile up, back to the configured interval.
        assert_eq!(
            next_linger(8 * ms, ms, 10 * ms, 1024, 1024, false, 8 * ms),
            ms
        );
        // The first records after a quiet spell (a burst may follow): back at once.
        assert_eq!(next_linger(8 * ms, ms, 10 * ms, 1, 1024, true, 50 * ms), ms);
        // A bulk period shorter than the interval: the interval.
        assert_eq!(next_linger(ms, ms, ms / 2, 1, 1024, false, ms), ms);
    }

    #[test]
    fn a_flow_is_read_in_turns_of_a_few_hundred_records_and_a_trickle_every_bulk_period() {
        let ms = 1_000_000;
        let next = |cur, n, since| next_linger(cur, ms, 10 * ms, n, 1024, false, since);
        // An exec flood (90 records in 10 ms): turns of ~256 records, 28 ms apart.
        assert_eq!(next(10 * ms, 90, 10 * ms), 256 * 10 * ms / 90);
        // It stays there: the next turn finds ~256.
        let cur = next(10 * ms, 90, 10 * ms);
        assert_eq!(next(cur, 256, cur), cur);
        // The slowest flow (64 in 10 ms): four bulk periods.
        assert_eq!(next(10 * ms, 64, 10 * ms), 40 * ms);
        // Fewer than 64 records a bulk period is a trickle (50 in 10 ms).
        assert_eq!(next(10 * ms, 50, 10 * ms), 10 * ms);
        // A fast one (a fork loop, 500 in 10 ms) fills its turns within the
        // bulk period: read every bulk period, as before.
        assert_eq!(next(10 * ms, 500, 10 * ms), 10 * ms);
        // A fork storm's thousand forks a second (30–40 records in 10 ms) is a
        // trickle: a deciding fork's drain reads little before it.
        assert_eq!(next(10 * ms, 30, 10 * ms), 10 * ms);
        // A flow that stops: a few records over a stretched interval, back
        // to the bulk period.
        assert_eq!(next(28 * ms, 3, 28 * ms), 10 * ms);
        // A drain woken by a deciding record a millisecond after the last
        // tells no rate: the stretched interval stays.
        assert_eq!(next(28 * ms, 3, ms), 28 * ms);
        // Records piling up (a whole batch): the configured interval.
        assert_eq!(
            next_linger(28 * ms, ms, 10 * ms, 1024, 1024, false, 28 * ms),
            ms
        );
    }

    #[test]
    fn a_flow_is_never_read_later_than_40_ms_or_the_bulk_period_an_operator_set() {
        let ms = 1_000_000;
        // The slowest flow (64 records a bulk period), by bulk period: four
        // of them up to 40 ms, then the bulk period itself.
        for (bulk, longest) in [(5, 20), (10, 40), (20, 40), (40, 40), (5000, 5000)] {
            let next = |cur, n, since| next_linger(cur, ms, bulk * ms, n, 1024, false, since);
            assert_eq!(
                next(bulk * ms, 64, bulk * ms),
                longest * ms,
                "--bulk-ms {bulk}"
            );
        }
        // `--bulk-ms 5000` and 16 records found over 1.2 s (a turn of 256
        // would be 19 s away): read again within the 5 s set.
        assert_eq!(
            next_linger(5000 * ms, ms, 5000 * ms, 16, 1024, false, 1200 * ms),
            5000 * ms
        );
    }

    #[test]
    fn a_flow_read_in_long_turns_is_not_taken_for_a_new_burst_at_each_turn() {
        let ms = 1_000_000;
        let mut l = Linger::new(ms, 10 * ms, 0);
        // 9 records a millisecond, drained as the reader plans.
        let mut now = 100 * ms;
        l.drained(now, 9, 1024);
        let mut seen = Vec::new();
        for _ in 0..8 {
            let next = l.at;
            let n = ((next - now) / ms * 9) as usize;
            now = next;
            l.drained(now, n, 1024);
            seen.push(l.cur / ms);
        }
        // 2 ms (9 records tell no rate), then turns of ~256 records (28 ms)
        // — never back to 1 ms as the first records after a quiet spell.
        assert_eq!(seen[0], 2);
        assert!(
            seen[1..].iter().all(|&c| (27..=29).contains(&c)),
            "{seen:?}"
        );
        // The flow stops: the re-drains stop after two intervals.
        let last = now;
        while l.at != 0 {
            now = l.at;
            l.drained(now, 0, 1024);
        }
        assert!(now - last < 100 * ms);
    }

    #[test]
    fn a_trickle_read_every_bulk_period_stays_a_trickle() {
        let ms = 1_000_000;
        let (linger, tick) = (ms, 10 * ms);
        let window = linger_window(linger, tick);
        assert_eq!(window, 20 * ms);
        // Drains as the reader plans them, each finding a few records:
        // the interval grows to the bulk period and stays there (a drain
        // a bulk period after the last that found records is not the
        // first after a quiet spell).
        let mut l = Linger::new(linger, tick, 0);
        let mut now = 100 * ms;
        let mut seen = Vec::new();
        l.drained(now, 5, 1024);
        for _ in 0..8 {
            assert!(l.at > now, "a re-drain is planned");
            now = l.at;
            l.drained(now, 5, 1024);
            seen.push(l.cur / ms);
        }
        assert_eq!(seen, vec![2, 4, 8, 10, 10, 10, 10, 10]);
        // Empty drains: re-drained until the window (20 ms) has passed
        // since the last records, then none planned.
        let last = now;
        while l.at != 0 {
            now = l.at;
            l.drained(now, 0, 1024);
        }
        assert!(now - last >= window && now - last < window + 10 * ms);
        // Records after that quiet spell are a new burst's: 1 ms again.
        l.drained(now + 30 * ms, 5, 1024);
        assert_eq!(l.cur, ms);
        // A shorter bulk period, a linger interval longer than it: two of
        // the longest.
        assert_eq!(linger_window(ms, 5 * ms), 10 * ms);
        assert_eq!(linger_window(20 * ms, 10 * ms), 40 * ms);
    }

    #[test]
    fn a_lingering_reader_does_the_bulk_periods_work_in_a_re_drain_instead_of_a_wakeup() {
        let ms = 1_000_000;
        // Quiet (no linger): at the bulk period's time, not before.
        assert!(!tick_due(9 * ms, 10 * ms, 0, 4 * ms));
        assert!(tick_due(10 * ms, 10 * ms, 0, 4 * ms));
        // Lingering every 4 ms: a re-drain at 7 ms does it (the next one
        // would come after the period); one at 5 ms does not.
        assert!(tick_due(7 * ms, 10 * ms, 7 * ms, 4 * ms));
        assert!(!tick_due(5 * ms, 10 * ms, 5 * ms, 4 * ms));
    }

    #[test]
    fn the_bulk_period_backs_off_on_a_quiet_host_and_comes_back_with_records() {
        let ms = 1_000_000;
        let base = 10 * ms;
        // Nothing found: 20, 40 ms, and no further.
        let mut cur = base;
        let mut seen = Vec::new();
        for _ in 0..4 {
            cur = next_tick(cur, base, false);
            seen.push(cur / ms);
        }
        assert_eq!(seen, vec![20, 40, 40, 40]);
        // Records found since the last one: the configured period again.
        assert_eq!(next_tick(4 * base, base, true), base);
    }

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
