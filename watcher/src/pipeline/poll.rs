//! Where the thread that reads and decides waits: one epoll set over the
//! rings' poll fd (readable when the kernel woke it for a record) and the
//! doorbells other threads ring (answers, signals), until the earliest time
//! any source wants a turn (a linger re-drain, the bulk period, a
//! detector's deadline, the second's work). No runtime, no task switch: a
//! wakeup is one `epoll_pwait2` returning, its timeout in nanoseconds (Linux
//! 5.11 on). On older kernels a timerfd in the set is armed for that time
//! instead — two more system calls per timed wakeup (arm, read), which were
//! ~5 % of the deciding thread's time in an exec flood.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

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
    /// Timed waits through `epoll_pwait2` (false once it said ENOSYS or
    /// EPERM: the timerfd).
    pwait2: bool,
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
        // The wait's own timer fires at its time, not up to 50 µs later
        // (the default slack), as the timerfd did: a deadline's finding is
        // written when it comes. (Best effort: the slack is only lateness.)
        // SAFETY: prctl with integer arguments, for this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0) };
        Ok(Poll {
            epoll,
            timer,
            armed: 0,
            pwait2: true,
        })
    }

    /// Wait for at most `ns` (None: no limit) with `epoll_pwait2`; `None`
    /// when the call is not there (before 5.11) or not allowed.
    fn pwait2(
        &self,
        events: &mut [EpollEvent; 4],
        ns: Option<u64>,
    ) -> Option<std::io::Result<usize>> {
        let ts = ns.map(|ns| libc::timespec {
            tv_sec: (ns / 1_000_000_000) as _,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        loop {
            // SAFETY: `events` is an array of 4 `epoll_event`s (`EpollEvent`
            // is a transparent wrapper), `tsp` null or a valid timespec, no
            // signal mask (null, size 0).
            let n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.epoll.0.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    tsp,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if n >= 0 {
                return Some(Ok(n as usize));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // A signal's handler ran: its doorbell is readable now.
                Some(libc::EINTR) => continue,
                // Before 5.11; or a seccomp filter that does not know the
                // call (EPERM, as container runtimes' defaults answer).
                Some(libc::ENOSYS | libc::EPERM) => return None,
                _ => return Some(Err(e)),
            }
        }
    }

    /// Wait until a source is ready or `until` (CLOCK_MONOTONIC ns) has
    /// come; a time already past looks without waiting.
    pub(crate) fn wait(&mut self, until: u64, now: u64) -> std::io::Result<Ready> {
        let mut events = [EpollEvent::empty(); 4];
        if self.pwait2 {
            // (Relative to this moment: `now` may be some microseconds old,
            // and a wait that ended early would be a wakeup for nothing.)
            let left = if until <= now {
                0
            } else {
                until.saturating_sub(crate::kernel::clock::Clock::mono_now())
            };
            let ns = (until != u64::MAX).then_some(left);
            match self.pwait2(&mut events, ns) {
                Some(n) => return Ok(ready(&events[..n?])),
                None => self.pwait2 = false,
            }
        }
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
        let n = loop {
            match self.epoll.wait(&mut events, timeout) {
                Ok(n) => break n,
                // A signal's handler ran: its doorbell is readable now.
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if events[..n].iter().any(|e| e.data() == TIMER) {
            // The timer fired: empty it (it is armed again when needed).
            let _ = self.timer.wait();
            self.armed = 0;
        }
        Ok(ready(&events[..n]))
    }
}

/// What a wait's events say is ready.
fn ready(events: &[EpollEvent]) -> Ready {
    let mut ready = Ready::default();
    for e in events {
        match e.data() {
            RINGS => ready.rings = true,
            BELL => ready.bell = true,
            _ => {}
        }
    }
    ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{clock::Clock, wake::Wake};

    #[test]
    fn wakes_for_a_doorbell_and_for_its_timer() {
        // Both ways of timing a wait: epoll_pwait2's timeout, and the
        // timerfd older kernels use.
        for pwait2 in [true, false] {
            waits(pwait2);
        }
    }

    fn waits(pwait2: bool) {
        let rings = Wake::new().expect("eventfd");
        let bell = Wake::new().expect("eventfd");
        let mut p = Poll::new(rings.fd().expect("fd"), &[bell.fd().expect("fd")]).expect("poll");
        p.pwait2 = pwait2;
        // The timer: 2 ms from now, nothing else ready.
        let start = Clock::mono_now();
        let r = p.wait(start + 2_000_000, start).expect("wait");
        assert!(!r.rings && !r.bell);
        assert!(
            Clock::mono_now() >= start + 2_000_000,
            "woke before its time (pwait2: {pwait2})"
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
        // The rings' fd, readable, is said.
        rings.wake();
        let now = Clock::mono_now();
        let r = p.wait(now + 60_000_000_000, now).expect("wait");
        assert!(r.rings && !r.bell);
        rings.clear();
        // This kernel (5.11 on) has epoll_pwait2: the fast way stays on.
        assert_eq!(p.pwait2, pwait2);
    }
}
