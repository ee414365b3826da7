//! The reader's word in the kernel (`READER`, see `watcher_common::wake`):
//! whether the reader sleeps, mapped into this process's memory so that
//! saying so is a store, not a system call. The reader sets it asleep
//! before it waits and awake when it wakes; every deciding record swaps it
//! to urgent and wakes the reader only if it found it asleep.
use std::sync::atomic::{AtomicU64, Ordering};

use watcher_common::{
    wake::{READER_ASLEEP, READER_AWAKE, READER_DOZING, READER_URGENT},
    MAP_READER, READER_ENTRIES, READER_LOST_TOTAL,
};

/// The word: the kernel's map, mapped here (or memory of its own in tests).
pub(crate) struct ReaderWord {
    ptr: std::ptr::NonNull<AtomicU64>,
    /// The mapping's length (0: not a mapping).
    len: usize,
    /// The map (its fd keeps it alive while mapped).
    _map: Option<aya::maps::MapData>,
    #[cfg(test)]
    _own: Option<Box<[AtomicU64; READER_ENTRIES as usize]>>,
}

// SAFETY: the mapping is shared memory only ever touched atomically; the
// pointer stays valid until `drop` unmaps it.
unsafe impl Send for ReaderWord {}

/// What the word said when the reader looked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Said {
    /// A deciding record came since the reader last looked.
    Urgent,
    /// Nothing did.
    Quiet,
}

impl ReaderWord {
    /// The loaded programs' word, mapped. `Err`: the one line that says
    /// why not (then nothing writes it: it stays asleep, as loaded, and
    /// every deciding record wakes the reader).
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<ReaderWord, String> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let map = ebpf
            .take_map(MAP_READER)
            .ok_or_else(|| format!("the kernel programs have no {MAP_READER} map"))?;
        let data = match map {
            aya::maps::Map::Array(d) => d,
            _ => return Err(format!("the {MAP_READER} map is not an array")),
        };
        // SAFETY: sysconf takes a plain integer.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        // SAFETY: a shared mapping of the array's one page (its value
        // first); checked below, unmapped in `drop`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "cannot map the {MAP_READER} map: {}",
                std::io::Error::last_os_error()
            ));
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<AtomicU64>())
            .ok_or_else(|| format!("cannot map the {MAP_READER} map: null"))?;
        Ok(ReaderWord {
            ptr,
            len: page,
            _map: Some(data),
            #[cfg(test)]
            _own: None,
        })
    }

    #[cfg(test)]
    pub(crate) fn own() -> ReaderWord {
        let own = Box::new(std::array::from_fn(|i| {
            AtomicU64::new(if i == 0 { READER_ASLEEP } else { 0 })
        }));
        ReaderWord {
            ptr: std::ptr::NonNull::from(&own[0]),
            len: 0,
            _map: None,
            _own: Some(own),
        }
    }

    /// Whether the reader sleeps (entry 0).
    fn word(&self) -> &AtomicU64 {
        self.entry(0)
    }

    /// The reader is about to sleep: from now on a deciding record wakes
    /// it. `dozing`: it has a drain planned within a few intervals, which
    /// lazy records (execs of programs not listed) ride on instead of
    /// waking it. `Urgent`: a deciding record came since it last looked,
    /// and it must drain instead (the word is then awake again: it does
    /// not sleep).
    pub(crate) fn sleep(&self, dozing: bool) -> Said {
        let asleep = if dozing { READER_DOZING } else { READER_ASLEEP };
        // A full barrier: a record submitted before a kernel swap this one
        // follows is visible to the drain that comes after it.
        match self.word().swap(asleep, Ordering::SeqCst) {
            READER_URGENT => {
                self.word().store(READER_AWAKE, Ordering::SeqCst);
                Said::Urgent
            }
            _ => Said::Quiet,
        }
    }

    /// The reader woke (or did not sleep): deciding records only say so
    /// from now on. `Urgent`: one came since it last looked (the one that
    /// woke it, or one during a nap).
    pub(crate) fn wake(&self) -> Said {
        match self.word().swap(READER_AWAKE, Ordering::SeqCst) {
            READER_URGENT => Said::Urgent,
            _ => Said::Quiet,
        }
    }

    /// Tell the kernel `v` in entry `i`, one it reads and never writes:
    /// until when forks are urgent, the crowd limit, the fork rate
    /// ([`watcher_common::READER_FORKS_UNTIL`], [`watcher_common::READER_EXEC_CROWD`],
    /// [`watcher_common::READER_FORK_RATE`]).
    pub(crate) fn tell(&self, i: u32, v: u64) {
        self.entry(i).store(v, Ordering::Relaxed);
    }

    /// Every loss the kernel has counted (`READER`'s loss entry): a load,
    /// not a system call.
    pub(crate) fn lost_total(&self) -> u64 {
        self.entry(READER_LOST_TOTAL).load(Ordering::SeqCst)
    }

    /// Entry `i` of the array (within the mapped page, or the own array).
    fn entry(&self, i: u32) -> &AtomicU64 {
        debug_assert!(i < READER_ENTRIES);
        // SAFETY: mapped (aligned: a page's start) or boxed, alive until
        // drop; the array's values are 8 bytes apart from its first, in the
        // same page (or the own array's), and `i` is below its length.
        unsafe { &*self.ptr.as_ptr().add(i as usize) }
    }

    /// What a loss does in the kernel (tests).
    #[cfg(test)]
    pub(crate) fn lost(&self) {
        self.entry(READER_LOST_TOTAL).fetch_add(1, Ordering::SeqCst);
    }

    /// What a deciding record does in the kernel (tests: the kernel's half
    /// of the protocol). Whether it would wake the reader.
    #[cfg(test)]
    pub(crate) fn decided(&self) -> bool {
        watcher_common::wake::wakes(self.word().swap(READER_URGENT, Ordering::SeqCst))
    }

    /// What a lazy record does in the kernel (tests): whether it would wake
    /// the reader (the kernel also wants no wakeup from its CPU for a while).
    #[cfg(test)]
    pub(crate) fn lazy_wakes(&self) -> bool {
        self.word().load(Ordering::SeqCst) == READER_ASLEEP
    }
}

/// The reader's side of the protocol: when it may say it sleeps, and when
/// it drains for deciding records that came while it was awake.
///
/// A burst of deciding records is read as it comes: the first
/// [`BURST_DRAINS`] drains of a burst each follow the record that woke the
/// reader, or those that came while it was awake, at once. A storm must not
/// cost a wakeup each, though: from then on the reader paces itself — after
/// each drain it naps awake for a gap (records only mark the word), then
/// drains for what came, or says it sleeps if nothing did. The gap is an
/// eighth of the wakeup interval (125 µs); it doubles, up to half the
/// interval, after a drain that found [`STORM_RECORDS`] deciding records or
/// more (a storm: a sustained one costs two drains per interval), and halves
/// back after one that found one or none (a trickle — a deciding record
/// every ~100 µs, bursts of refused connects one after the other — is not
/// made to wait half an interval for each record because it never paused
/// for a whole one). A burst is over when no deciding record came for an
/// interval.
pub(crate) struct Urgency {
    /// `None`: the word could not be mapped; it stays asleep, every
    /// deciding record wakes the reader, and nothing here changes a wait.
    word: Option<ReaderWord>,
    gap_ns: u64,
    /// Drains for deciding records in this burst.
    streak: u32,
    /// Deciding records came since the last drain (the word said so).
    urgent: bool,
    /// When the last drain was (CLOCK_MONOTONIC ns).
    drained_at: u64,
    /// When the last drain for deciding records was.
    urgent_at: u64,
    /// The gap after a paced drain (from `gap_ns` up to 4 times it).
    paced_ns: u64,
    /// What each entry of the word was last told ([`Urgency::tell`]).
    told: [u64; READER_ENTRIES as usize],
}

/// Drains of a burst that follow its records at once.
const BURST_DRAINS: u32 = 32;
/// The gap grows to at most 2 to this power times the configured one (500
/// µs by default).
const GAP_GROWTH_SHIFT: u32 = 2;
/// A drain for deciding records this long (2 to this power times the first
/// gap: the wakeup interval) after the last one starts a new burst.
const BURST_END_SHIFT: u32 = 3;
/// A paced drain that found this many deciding records or more doubles the
/// gap (each nap and drain costs as much as handling tens of records: a
/// storm is read in batches of several).
const STORM_RECORDS: usize = 4;

impl Urgency {
    pub(crate) fn new(word: Option<ReaderWord>, gap_ns: u64) -> Urgency {
        Urgency {
            word,
            gap_ns,
            streak: 0,
            urgent: false,
            drained_at: 0,
            urgent_at: 0,
            paced_ns: gap_ns,
            told: [0; READER_ENTRIES as usize],
        }
    }

    /// Tell the kernel `v` in entry `i` of the word (see
    /// [`ReaderWord::tell`]), when it changed since it was last told.
    pub(crate) fn tell(&mut self, i: u32, v: u64) {
        let last = &mut self.told[i as usize];
        if v != *last {
            if let Some(w) = &self.word {
                w.tell(i, v);
            }
            *last = v;
        }
    }

    /// Every loss the kernel has counted (`None`: the word is not mapped).
    pub(crate) fn lost_total(&self) -> Option<u64> {
        self.word.as_ref().map(ReaderWord::lost_total)
    }

    /// The gap after the last drain (0 early in a burst).
    fn gap(&self) -> u64 {
        if self.streak < BURST_DRAINS {
            0
        } else {
            self.paced_ns
        }
    }

    /// When the gap after the last drain ends.
    fn calm_at(&self) -> u64 {
        self.drained_at.saturating_add(self.gap())
    }

    /// When the reader wants to drain for deciding records (`None`: none came).
    pub(crate) fn due(&self) -> Option<u64> {
        self.urgent.then(|| self.calm_at())
    }

    /// The thread is about to wait until `until` (it is `now`). Deciding
    /// records came while it was awake: the wait ends when the reader
    /// drains for them. Within a gap it naps awake until the gap ends.
    /// Otherwise it says it sleeps, so that the next deciding record wakes
    /// it — dozing when `until` is a drain planned for records that came
    /// recently (lazy records ride on it). The time the wait ends.
    pub(crate) fn before_wait(&mut self, until: u64, now: u64, dozing: bool) -> u64 {
        let Some(word) = &self.word else {
            return until;
        };
        if until <= now {
            return until;
        }
        if !self.urgent && now >= self.calm_at() && word.sleep(dozing) == Said::Quiet {
            return until;
        }
        // (A word found urgent as the reader was going to sleep: awake again.)
        self.urgent |= now >= self.calm_at();
        match self.due() {
            Some(due) => until.min(due),
            None => until.min(self.calm_at()),
        }
    }

    /// The wait ended (whatever ended it): deciding records only say so
    /// from now on.
    pub(crate) fn after_wait(&mut self) {
        if let Some(word) = &self.word {
            if word.wake() == Said::Urgent {
                self.urgent = true;
            }
        }
    }

    /// A drain at `now` that found `deciding` deciding records: whether
    /// deciding records were waiting for it (the word said so).
    pub(crate) fn drained(&mut self, now: u64, deciding: usize) -> bool {
        let urgent = std::mem::take(&mut self.urgent);
        if urgent {
            // (None for an interval: this burst's first. Re-drains of bulk
            // records in between do not count.)
            if now.saturating_sub(self.urgent_at) >= self.gap_ns << BURST_END_SHIFT {
                self.streak = 0;
                self.paced_ns = self.gap_ns;
            }
            // A paced drain: the next gap follows how many it found.
            if self.streak >= BURST_DRAINS {
                let most = self.gap_ns << GAP_GROWTH_SHIFT;
                if deciding >= STORM_RECORDS {
                    self.paced_ns = (self.paced_ns * 2).min(most);
                } else if deciding <= 1 {
                    self.paced_ns = (self.paced_ns / 2).max(self.gap_ns);
                }
            }
            self.streak = self.streak.saturating_add(1);
            self.urgent_at = now;
        }
        self.drained_at = now;
        urgent
    }
}

impl Drop for ReaderWord {
    fn drop(&mut self) {
        // Asleep, as loaded: the programs may outlive this reader, and
        // then every deciding record wakes whoever reads next.
        self.word().store(READER_ASLEEP, Ordering::SeqCst);
        if self.len > 0 {
            // SAFETY: the mapping made in `take`, unmapped once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's half ([`ReaderWord::decided`]) on the word `u` holds.
    fn decided(u: &Urgency) -> bool {
        u.word.as_ref().expect("a word").decided()
    }

    /// `drains` drains of a storm or trickle from `*at` (µs steps; waits
    /// end by `far`), each finding `found` deciding records (one came during
    /// each nap, so none wakes the reader): the gaps between them, in µs.
    /// `*at` moves to the last drain.
    fn pace(u: &mut Urgency, at: &mut u64, far: u64, drains: usize, found: usize) -> Vec<u64> {
        let us = 1_000;
        let mut gaps = Vec::new();
        for _ in 0..drains {
            assert!(!decided(u), "awake or napping: no wakeup");
            let next = u.before_wait(far, *at + us, false).max(*at + us);
            u.after_wait();
            gaps.push((next - *at) / us);
            assert!(u.drained(next, found));
            *at = next;
        }
        gaps
    }

    #[test]
    fn a_reader_sleeps_until_a_deciding_record_and_drains_for_those_that_come_while_it_is_awake() {
        let us = 1_000;
        // (Times from one second on: a clock that has run a while.)
        let t = |x: u64| 1_000_000 * us + x * us;
        let far = t(100_000);
        let mut u = Urgency::new(Some(ReaderWord::own()), 125 * us);
        // Quiet: it sleeps until its own time, and the first record wakes it.
        assert_eq!(u.before_wait(far, t(0), false), far);
        assert!(decided(&u), "asleep: woken");
        u.after_wait();
        assert!(u.drained(t(50), 1), "the record that woke it");
        // Records while it handles the batch wake nothing; it drains for
        // them at once instead of sleeping.
        assert!(!decided(&u));
        assert_eq!(u.before_wait(far, t(60), false), t(50), "at once");
        u.after_wait();
        assert!(u.drained(t(60), 1));
        // Nothing came: it sleeps, and the next record wakes it.
        assert_eq!(u.before_wait(far, t(70), false), far);
        assert!(decided(&u));
        u.after_wait();
        assert!(u.drained(t(80), 1));
        // A storm: the burst's first drains follow at once, then the reader
        // naps a gap after each — 125 µs, doubling to half the interval.
        let mut at = t(80);
        let gaps = pace(&mut u, &mut at, far, 35, STORM_RECORDS);
        let mut expected = vec![1; 29];
        expected.extend([125, 250, 500, 500, 500, 500]);
        assert_eq!(gaps, expected);
        // The storm stops: it naps to the gap's end, then sleeps.
        assert_eq!(u.before_wait(far, at + us, false), at + 500 * us);
        u.after_wait();
        assert_eq!(u.before_wait(far, at + 500 * us, false), far);
        assert!(decided(&u), "asleep: woken");
        // No deciding record for an interval: a new burst, read at once again.
        u.after_wait();
        assert!(u.drained(at + 3100 * us, 1));
        assert!(!decided(&u));
        assert_eq!(u.before_wait(far, at + 3101 * us, false), at + 3100 * us);
        u.after_wait();
        assert!(u.drained(at + 3101 * us, 1));
        // A re-drain of bulk records alone changes nothing: it sleeps.
        assert_eq!(u.before_wait(far, at + 3102 * us, false), far);
        u.after_wait();
        assert!(!u.drained(at + 4000 * us, 0), "a re-drain");
        assert_eq!(u.before_wait(far, at + 4001 * us, false), far);
        // Another storm, then bulk records alone for an interval (re-drains
        // every 0.4 ms): the next deciding record starts a new burst.
        let mut at = at + 5000 * us;
        assert!(decided(&u), "asleep: woken");
        u.after_wait();
        assert!(u.drained(at, 1));
        pace(&mut u, &mut at, far, 40, STORM_RECORDS);
        for k in 1..=3 {
            assert!(!u.drained(at + k * 400 * us, 0), "a re-drain");
        }
        assert!(!decided(&u));
        u.after_wait();
        assert!(u.drained(at + 1300 * us, 1));
        assert!(!decided(&u));
        assert_eq!(
            u.before_wait(far, at + 1301 * us, false),
            at + 1300 * us,
            "at once"
        );
        // A wait that ends at once (a deadline) leaves the word as it is.
        u.after_wait();
        assert_eq!(u.before_wait(t(5), t(5), false), t(5));
        assert!(!decided(&u), "awake: no wakeup");
    }

    /// Deciding records one every ~100 µs (refused connects of one program
    /// after another) never pause for an interval: the burst goes on past
    /// its first drains. Each paced drain finds one, and the gap stays the
    /// first one (it grew to half the interval, and every such record
    /// waited up to that, when the gap doubled with every drain). A storm
    /// in the same burst doubles it; the trickle after it halves it back.
    #[test]
    fn a_trickle_of_deciding_records_is_paced_at_the_first_gap_and_a_storm_at_half_the_interval() {
        let us = 1_000;
        let t = |x: u64| 1_000_000 * us + x * us;
        let far = t(100_000);
        let mut u = Urgency::new(Some(ReaderWord::own()), 125 * us);
        let mut at = t(0);
        assert_eq!(u.before_wait(far, at, false), far);
        assert!(decided(&u));
        u.after_wait();
        assert!(u.drained(at, 1));
        let first = pace(&mut u, &mut at, far, 40, 1);
        assert!(first[..31].iter().all(|g| *g == 1), "{first:?}");
        assert_eq!(first[31..], [125; 9], "a trickle: the first gap, not more");
        assert_eq!(
            pace(&mut u, &mut at, far, 4, 6),
            [125, 250, 500, 500],
            "a storm"
        );
        assert_eq!(
            pace(&mut u, &mut at, far, 4, 1),
            [500, 250, 125, 125],
            "a trickle again"
        );
        assert_eq!(pace(&mut u, &mut at, far, 2, 6), [125, 250]);
        assert_eq!(
            pace(&mut u, &mut at, far, 3, 2),
            [500, 500, 500],
            "neither: as it was"
        );
    }

    #[test]
    fn without_its_word_the_reader_waits_as_it_would_and_never_drains_for_urgency() {
        let mut u = Urgency::new(None, 125_000);
        assert_eq!(u.before_wait(10_000_000, 0, false), 10_000_000);
        u.after_wait();
        assert_eq!(u.due(), None);
        assert!(!u.drained(5, 0));
    }

    #[test]
    fn the_kernels_loss_total_is_read_from_the_word_and_none_without_it() {
        let u = Urgency::new(Some(ReaderWord::own()), 125_000);
        assert_eq!(u.lost_total(), Some(0));
        u.word.as_ref().expect("a word").lost();
        u.word.as_ref().expect("a word").lost();
        assert_eq!(u.lost_total(), Some(2));
        // (Forks' entry is its own.)
        u.word
            .as_ref()
            .expect("a word")
            .tell(watcher_common::READER_FORKS_UNTIL, 7);
        assert_eq!(u.lost_total(), Some(2));
        assert_eq!(Urgency::new(None, 125_000).lost_total(), None);
    }

    #[test]
    fn a_dozing_reader_is_woken_by_a_deciding_record_and_not_by_a_lazy_one() {
        let us = 1_000;
        let t = |x: u64| 1_000_000 * us + x * us;
        let far = t(100_000);
        let mut u = Urgency::new(Some(ReaderWord::own()), 125 * us);
        // Quiet, no re-drain planned: asleep, and a lazy record wakes it.
        assert_eq!(u.before_wait(far, t(0), false), far);
        assert!(
            u.word.as_ref().unwrap().lazy_wakes(),
            "asleep: a lone exec wakes it"
        );
        u.after_wait();
        assert!(!u.word.as_ref().unwrap().lazy_wakes(), "awake");
        assert!(!u.drained(t(10), 0));
        // Records came: it dozes until its re-drain; a lazy record rides
        // on that drain, a deciding one wakes it (once).
        assert_eq!(u.before_wait(t(1010), t(20), true), t(1010));
        assert!(
            !u.word.as_ref().unwrap().lazy_wakes(),
            "dozing: an exec rides on the re-drain"
        );
        assert!(decided(&u), "dozing: a deciding record wakes it");
        assert!(!decided(&u), "once");
        u.after_wait();
        assert!(u.drained(t(30), 1));
    }

    #[test]
    fn a_deciding_record_wakes_a_sleeping_reader_once_and_an_awake_one_never() {
        let w = ReaderWord::own();
        // As loaded: asleep; the first record wakes, the next only say so.
        assert!(w.decided());
        assert!(!w.decided());
        assert_eq!(w.wake(), Said::Urgent, "the record that woke it");
        // Awake: records say they came, nothing wakes.
        assert!(!w.decided());
        assert_eq!(w.sleep(false), Said::Urgent, "drain again, do not sleep");
        assert!(!w.decided(), "not asleep after all: no wakeup");
        assert_eq!(w.wake(), Said::Urgent);
        // Nothing came: it sleeps, and the next record wakes it.
        assert_eq!(w.sleep(false), Said::Quiet);
        assert!(w.decided());
        assert_eq!(w.wake(), Said::Urgent);
        assert_eq!(w.wake(), Said::Quiet, "looked at once: nothing new");
    }
}
