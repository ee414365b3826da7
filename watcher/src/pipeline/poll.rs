//! Where the thread that reads and decides waits: one epoll set over the
//! rings' poll fd (readable when the kernel woke it for a record), the
//! doorbells other threads ring (answers, signals), and one timer armed at
//! the earliest time any source wants a turn (a linger re-drain, the bulk
//! period, a detector's deadline, the second's work). No runtime, no task
//! switch: a wakeup is one `epoll_wait` returning.
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};

const RINGS: u64 = 0;
const BELL: u64 = 1;
const TIMER: u64 = 2;

pub(crate) struct Poll {
    epoll: Epoll,
    timer: TimerFd,
    /// The time the timer is armed for (CLOCK_MONOTONIC ns; 0: disarmed).
    armed: u64,
}

/// What a wait found ready.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Ready {
    /// The kernel woke the rings (a record that decides).
    pub(crate) rings: bool,
    /// A doorbell rang (an answer, a signal).
    pub(crate) bell: bool,
}

impl Poll {
    /// A poll set over `rings` and the doorbells `bells`.
    pub(crate) fn new(rings: BorrowedFd<'_>, bells: &[BorrowedFd<'_>]) -> std::io::Result<Poll> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        epoll.add(rings, EpollEvent::new(EpollFlags::EPOLLIN, RINGS))?;
        for b in bells {
            epoll.add(b, EpollEvent::new(EpollFlags::EPOLLIN, BELL))?;
        }
        epoll.add(timer.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, TIMER))?;
        Ok(Poll {
            epoll,
            timer,
            armed: 0,
        })
    }

    /// Wait until a source is ready or `until` (CLOCK_MONOTONIC ns) has
    /// come; a time already past looks without waiting.
    pub(crate) fn wait(&mut self, until: u64, now: u64) -> std::io::Result<Ready> {
        let timeout = if until <= now {
            EpollTimeout::ZERO
        } else {
            if until != self.armed {
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(std::time::Duration::from_nanos(
                        until,
                    ))),
                    TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                )?;
                self.armed = until;
            }
            EpollTimeout::NONE
        };
        let mut events = [EpollEvent::empty(); 4];
        let n = loop {
            match self.epoll.wait(&mut events, timeout) {
                Ok(n) => break n,
                // A signal's handler ran: its doorbell is readable now.
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut ready = Ready::default();
        for e in &events[..n] {
            match e.data() {
                RINGS => ready.rings = true,
                BELL => ready.bell = true,
                _ => {
                    // The timer fired: empty it (it is armed again when needed).
                    let _ = self.timer.wait();
                    self.armed = 0;
                }
            }
        }
        Ok(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{clock::Clock, wake::Wake};

    #[test]
    fn wakes_for_a_doorbell_and_for_its_timer() {
        let rings = Wake::new().expect("eventfd");
        let bell = Wake::new().expect("eventfd");
        let mut p = Poll::new(rings.fd().expect("fd"), &[bell.fd().expect("fd")]).expect("poll");
        // The timer: 2 ms from now, nothing else ready.
        let start = Clock::mono_now();
        let r = p.wait(start + 2_000_000, start).expect("wait");
        assert!(!r.rings && !r.bell);
        assert!(
            Clock::mono_now() >= start + 2_000_000,
            "woke before its time"
        );
        // A doorbell rung from another thread wakes a wait with no timer near.
        let b = bell.clone();
        let t = std::thread::spawn(move || b.wake());
        let now = Clock::mono_now();
        let r = p.wait(now + 60_000_000_000, now).expect("wait");
        t.join().expect("thread");
        assert!(r.bell && !r.rings);
        bell.clear();
        // A time already past looks without waiting.
        let now = Clock::mono_now();
        let r = p.wait(now - 1, now).expect("wait");
        assert!(!r.bell);
    }
}
