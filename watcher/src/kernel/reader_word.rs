//! The reader's word in the kernel (`READER`, see `watcher_common::wake`):
//! whether the reader sleeps, mapped into this process's memory so that
//! saying so is a store, not a system call. The reader sets it asleep
//! before it waits and awake when it wakes; every deciding record swaps it
//! to urgent and wakes the reader only if it found it asleep.
use std::sync::atomic::{AtomicU64, Ordering};

use watcher_common::{
    wake::{READER_ASLEEP, READER_AWAKE, READER_URGENT},
    MAP_READER,
};

/// The word: the kernel's map, mapped here (or memory of its own in tests).
pub(crate) struct ReaderWord {
    ptr: std::ptr::NonNull<AtomicU64>,
    /// The mapping's length (0: not a mapping).
    len: usize,
    /// The map (its fd keeps it alive while mapped).
    _map: Option<aya::maps::MapData>,
    #[cfg(test)]
    _own: Option<Box<AtomicU64>>,
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
        let own = Box::new(AtomicU64::new(READER_ASLEEP));
        ReaderWord {
            ptr: std::ptr::NonNull::from(&*own),
            len: 0,
            _map: None,
            _own: Some(own),
        }
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: mapped (aligned: a page's start) or boxed, and alive
        // until drop.
        unsafe { self.ptr.as_ref() }
    }

    /// The reader is about to sleep: from now on a deciding record wakes
    /// it. `Urgent`: one came since it last looked, and it must drain
    /// instead (the word is then awake again: it does not sleep).
    pub(crate) fn sleep(&self) -> Said {
        // A full barrier: a record submitted before a kernel swap this one
        // follows is visible to the drain that comes after it.
        match self.word().swap(READER_ASLEEP, Ordering::SeqCst) {
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

    /// What a deciding record does in the kernel (tests: the kernel's half
    /// of the protocol). Whether it would wake the reader.
    #[cfg(test)]
    pub(crate) fn decided(&self) -> bool {
        self.word().swap(READER_URGENT, Ordering::SeqCst) == READER_ASLEEP
    }
}

/// The reader's side of the protocol: when it may sleep, and when it
/// drains for deciding records that came while it was awake (at once, or
/// `gap` after its last drain while they keep coming: a storm costs at most
/// one drain per gap, not one per record).
pub(crate) struct Urgency {
    /// `None`: the word could not be mapped; it stays asleep, every
    /// deciding record wakes the reader, and nothing here changes a wait.
    word: Option<ReaderWord>,
    gap_ns: u64,
    /// Deciding records came since the last drain (the word said so).
    urgent: bool,
    /// When the last drain was (CLOCK_MONOTONIC ns).
    drained_at: u64,
}

impl Urgency {
    pub(crate) fn new(word: Option<ReaderWord>, gap_ns: u64) -> Urgency {
        Urgency {
            word,
            gap_ns,
            urgent: false,
            drained_at: 0,
        }
    }

    /// When the reader wants to drain for deciding records (`None`: none came).
    pub(crate) fn due(&self) -> Option<u64> {
        self.urgent.then(|| self.drained_at.saturating_add(self.gap_ns))
    }

    /// The thread is about to wait until `until` (it is `now`): say the
    /// reader sleeps, so that the next deciding record wakes it — unless
    /// deciding records came while it was awake; then the wait ends when
    /// the reader wants to drain for them. The time the wait ends.
    pub(crate) fn before_wait(&mut self, until: u64, now: u64) -> u64 {
        let Some(word) = &self.word else {
            return until;
        };
        if until <= now {
            return until;
        }
        if word.sleep() == Said::Urgent {
            self.urgent = true;
        }
        match self.due() {
            Some(due) => until.min(due),
            None => until,
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

    /// A drain at `now`: whether deciding records were waiting for it.
    pub(crate) fn drained(&mut self, now: u64) -> bool {
        self.drained_at = now;
        std::mem::take(&mut self.urgent)
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

    /// The kernel's half, on a word the test holds too.
    fn urgency(gap: u64) -> (Urgency, *const AtomicU64) {
        let w = ReaderWord::own();
        let p = w.ptr.as_ptr() as *const AtomicU64;
        (Urgency::new(Some(w), gap), p)
    }

    fn decided(p: *const AtomicU64) -> bool {
        // SAFETY: the word the `Urgency` holds, alive for the test.
        unsafe { &*p }.swap(READER_URGENT, Ordering::SeqCst) == READER_ASLEEP
    }

    #[test]
    fn a_reader_sleeps_until_a_deciding_record_and_drains_for_those_that_come_while_it_is_awake() {
        let us = 1_000;
        let (mut u, w) = urgency(125 * us);
        // Quiet: it sleeps until its own time, and the first record wakes it.
        assert_eq!(u.before_wait(10_000 * us, 0), 10_000 * us);
        assert!(decided(w), "asleep: woken");
        u.after_wait();
        assert!(u.drained(50 * us), "the record that woke it");
        // Records while it handles the batch: no wakeup, but it does not
        // sleep — it drains for them an eighth of an interval after its
        // last drain, then at once.
        assert!(!decided(w));
        assert!(!decided(w));
        assert_eq!(u.before_wait(10_000 * us, 60 * us), 175 * us);
        assert!(!decided(w), "napping: no wakeup either");
        u.after_wait();
        assert_eq!(u.due(), Some(175 * us));
        assert!(u.drained(175 * us));
        assert!(!decided(w));
        assert_eq!(u.before_wait(10_000 * us, 400 * us), 300 * us, "past due: at once");
        u.after_wait();
        assert!(u.drained(400 * us));
        // Nothing came since: it sleeps, and the next record wakes it.
        assert_eq!(u.before_wait(10_000 * us, 420 * us), 10_000 * us);
        assert_eq!(u.due(), None);
        assert!(decided(w));
        // A wait that ends at once (a deadline) leaves the word awake.
        u.after_wait();
        assert_eq!(u.before_wait(420 * us, 420 * us), 420 * us);
        assert!(!decided(w), "awake: no wakeup");
    }

    #[test]
    fn without_its_word_the_reader_waits_as_it_would_and_never_drains_for_urgency() {
        let mut u = Urgency::new(None, 125_000);
        assert_eq!(u.before_wait(10_000_000, 0), 10_000_000);
        u.after_wait();
        assert_eq!(u.due(), None);
        assert!(!u.drained(5));
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
        assert_eq!(w.sleep(), Said::Urgent, "drain again, do not sleep");
        assert!(!w.decided(), "not asleep after all: no wakeup");
        assert_eq!(w.wake(), Said::Urgent);
        // Nothing came: it sleeps, and the next record wakes it.
        assert_eq!(w.sleep(), Said::Quiet);
        assert!(w.decided());
        assert_eq!(w.wake(), Said::Urgent);
        assert_eq!(w.wake(), Said::Quiet, "looked at once: nothing new");
    }
}
