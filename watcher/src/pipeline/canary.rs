//! Function, not existence: the daemon proves its own pipeline works. Every
//! interval it forks a child that exits at once; that exit must travel
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
}

impl Canary {
    pub(crate) fn new(interval: Duration, deadline: Duration) -> Canary {
        Canary {
            interval,
            deadline,
            last_sent: None,
            outstanding: Vec::new(),
            healthy: true,
        }
    }

    /// Fork a canary child if one is due.
    pub(crate) fn maybe_send(&mut self) -> nix::Result<()> {
        if self.last_sent.is_some_and(|t| t.elapsed() < self.interval) {
            return Ok(());
        }
        self.last_sent = Some(Instant::now());
        // SAFETY: the child calls only _exit, which is async-signal-safe.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => unsafe { libc::_exit(CANARY_EXIT_CODE) },
            nix::unistd::ForkResult::Parent { child } => {
                // Reap it at once (watcher's own wait is filtered in the kernel).
                let _ = nix::sys::wait::waitpid(child, None);
                self.outstanding
                    .push((child.as_raw() as u32, Instant::now()));
                if self.outstanding.len() > 16 {
                    self.outstanding.remove(0);
                }
                Ok(())
            }
        }
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
