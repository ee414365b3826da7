//! The reading thread's doorbell: an eventfd in the reader's poll set that
//! other threads (socket-table workers, the reconciliation, signal
//! handlers) ring when they have left it something to pick up. Ringing is
//! one `write(2)` of a counter and safe in a signal handler; the reader
//! empties it once per turn, however many rang.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// A handle on the doorbell; clones ring the same one. (`None`: the
/// eventfd could not be made — the reader refuses to start with it, see
/// [`Wake::fd`].)
#[derive(Clone, Debug)]
pub struct Wake(Arc<Option<OwnedFd>>);

impl Default for Wake {
    fn default() -> Wake {
        Wake::new().unwrap_or(Wake(Arc::new(None)))
    }
}

impl Wake {
    /// A new doorbell (non-blocking, closed on exec).
    pub fn new() -> std::io::Result<Wake> {
        // SAFETY: plain integers; the fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(Wake(Arc::new(Some(unsafe { OwnedFd::from_raw_fd(fd) }))))
    }

    /// Ring: the reader wakes (at once if it sleeps, else after its turn).
    pub fn wake(&self) {
        ring(self.raw());
    }

    /// Empty the doorbell (the reader, before it looks at what rang it).
    pub(crate) fn clear(&self) {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a u64; EAGAIN when nobody rang.
        let _ = unsafe { libc::read(self.raw(), (&mut n as *mut u64).cast(), 8) };
    }

    /// The fd a signal handler rings (it must not touch the `Arc`).
    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_ref().as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// The fd to poll; an error when it could not be made.
    pub(crate) fn fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        self.0.as_ref().as_ref().map(|f| f.as_fd()).ok_or_else(|| {
            std::io::Error::other(
                "no eventfd for the reader's doorbell (out of file descriptors? raise LimitNOFILE)",
            )
        })
    }
}

/// Ring the doorbell `fd`: async-signal-safe (one `write(2)`; a full
/// counter, EAGAIN, still leaves it readable).
pub(crate) fn ring(fd: RawFd) {
    let one = 1u64;
    // SAFETY: writes 8 bytes from a u64 to an eventfd.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(w: &Wake) -> bool {
        let mut p = [libc::pollfd {
            fd: w.raw(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one pollfd, no wait.
        unsafe { libc::poll(p.as_mut_ptr(), 1, 0) == 1 }
    }

    #[test]
    fn rings_from_any_clone_and_empties_once() {
        let w = Wake::new().expect("eventfd");
        assert!(!readable(&w));
        let other = w.clone();
        std::thread::spawn(move || {
            other.wake();
            other.wake();
        })
        .join()
        .expect("thread");
        assert!(readable(&w), "a ring from another thread is seen");
        w.clear();
        assert!(!readable(&w), "one clear empties every ring");
        w.clear();
    }
}
