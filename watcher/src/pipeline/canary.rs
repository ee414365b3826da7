//! Function, not existence: the daemon proves its own pipeline works. Every
//! interval it starts a child that exits at once; that exit must travel
//! kernel → ring buffer → reader → decoder → here within the deadline. When
//! it does not (programs detached, ring buffer stalled, reader wedged), the
//! pipeline reports itself blind at once (a `health` record, the metric
//! `watcher_pipeline_healthy 0`, the status `watcher check --daemon` reads).
use std::time::{Duration, Instant};

use crate::kernel::decode::{KernelEvent, Payload};

/// Exit code of canary children (recognisable in a trace of the host).
pub(crate) const CANARY_EXIT_CODE: i32 = 87;

pub(crate) struct Seen {
    pub seconds: f64,
    /// Set when this canary ends a blind period.
    pub recovered: Option<String>,
}

pub(crate) struct Canary {
    interval: Duration,
    deadline: Duration,
    last_sent: Option<Instant>,
    outstanding: Vec<(u32, Instant)>,
    healthy: bool,
    /// Children not reaped yet (reaped without waiting, at later turns).
    unreaped: Vec<nix::unistd::Pid>,
    /// The child's stack (it shares the daemon's memory; see [`Canary::maybe_send`]).
    stack: Box<[u8]>,
}

/// The canary child's stack: it only calls `_exit`.
const CHILD_STACK: usize = 64 << 10;

/// The canary child: ends at once with its exit code.
extern "C" fn canary_child(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: _exit is async-signal-safe and touches nothing of the parent's.
    unsafe { libc::_exit(CANARY_EXIT_CODE) }
}

impl Canary {
    pub(crate) fn new(interval: Duration, deadline: Duration) -> Canary {
        Canary {
            interval,
            deadline,
            last_sent: None,
            outstanding: Vec::new(),
            healthy: true,
            unreaped: Vec::new(),
            stack: vec![0u8; CHILD_STACK].into_boxed_slice(),
        }
    }

    /// Start a canary child if one is due. It is cloned sharing the
    /// daemon's memory and this thread waits only until it has ended
    /// (`CLONE_VM | CLONE_VFORK`, as `posix_spawn` does): a `fork` copied
    /// the page tables of the whole daemon on the thread that reads and
    /// decides (~1–2 ms every interval, profiled), and the wait for its
    /// exit was a second stall. It is reaped without waiting, at a later turn.
    pub(crate) fn maybe_send(&mut self) -> nix::Result<()> {
        self.reap();
        if self.last_sent.is_some_and(|t| t.elapsed() < self.interval) {
            return Ok(());
        }
        self.last_sent = Some(Instant::now());
        // (Every signal blocked while the child lives, as posix_spawn does:
        // no handler of the daemon's runs in a child that shares its memory.)
        let all = nix::sys::signal::SigSet::all();
        let mut was = nix::sys::signal::SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&all),
            Some(&mut was),
        )?;
        // SAFETY: the child runs `canary_child` on its own stack (the top of
        // `self.stack`, 16-byte aligned) and only calls `_exit`; CLONE_VFORK
        // suspends this thread until it has, so the stack is free again when
        // `clone` returns here.
        let pid = unsafe {
            let top = self.stack.as_mut_ptr().add(self.stack.len());
            let top = top.sub(top as usize % 16);
            libc::clone(
                canary_child,
                top.cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::null_mut(),
            )
        };
        let cloned = nix::errno::Errno::result(pid);
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&was),
            None,
        )?;
        let pid = cloned?;
        self.unreaped.push(nix::unistd::Pid::from_raw(pid));
        self.outstanding.push((pid as u32, Instant::now()));
        if self.outstanding.len() > 16 {
            self.outstanding.remove(0);
        }
        self.reap();
        Ok(())
    }

    /// Reap the canary children that have ended (never waits).
    fn reap(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        self.unreaped.retain(|pid| {
            !matches!(
                waitpid(*pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_)
            )
        });
    }

    /// If `ev` is a canary's exit, consume it.
    pub(crate) fn observe(&mut self, ev: &KernelEvent) -> Option<Seen> {
        let Payload::Exit(_) = &ev.payload else {
            return None;
        };
        let i = self
            .outstanding
            .iter()
            .position(|(pid, _)| *pid == ev.header.tgid)?;
        let (_, sent) = self.outstanding.remove(i);
        let seconds = sent.elapsed().as_secs_f64();
        let recovered = (!self.healthy)
            .then(|| "the canary came through again: the pipeline sees events".to_owned());
        self.healthy = true;
        Some(Seen { seconds, recovered })
    }

    /// Once a second: a change of health to report, if any.
    pub(crate) fn tick(&mut self) -> Option<(bool, String, Option<f64>)> {
        let late = self
            .outstanding
            .iter()
            .any(|(_, t)| t.elapsed() > self.deadline);
        if late && self.healthy {
            self.healthy = false;
            // Forget it, and send a fresh one at once: recovery shows as soon as it comes through.
            self.outstanding.clear();
            self.last_sent = None;
            return Some((
                false,
                format!(
                    "watcher is blind: its canary event did not come through within {:?} (programs detached, ring buffer stalled or reader wedged)",
                    self.deadline
                ),
                None,
            ));
        }
        if late {
            self.outstanding.clear();
            self.last_sent = None;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A canary child ends with the canary's exit code, is reaped by a later
    /// turn without waiting, and leaves no zombie behind.
    #[test]
    fn canary_children_end_at_once_and_are_reaped_without_waiting() {
        let mut c = Canary::new(Duration::ZERO, Duration::from_secs(1));
        for _ in 0..5 {
            c.maybe_send().expect("clone");
        }
        let pids: Vec<u32> = c.outstanding.iter().map(|(p, _)| *p).collect();
        assert_eq!(pids.len(), 5);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.unreaped.is_empty() {
            assert!(Instant::now() < deadline, "not reaped: {:?}", c.unreaped);
            std::thread::sleep(Duration::from_millis(1));
            c.reap();
        }
        for p in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{p}")).exists(),
                "canary {p} left behind"
            );
        }
    }
}
