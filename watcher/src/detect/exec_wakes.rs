//! The programs whose next exec can decide a finding: a program at half
//! its instance limit or more (`duplicate_instances`), a program in a crash
//! loop (`respawn_storm`'s restart). The kernel wakes the reader at once for
//! their execs and lets any other exec ride on the next drain (see
//! `watcher_common::wake`), so it needs their names as an exec gives them
//! (`comm`). A detector counts what it wants by name; [`super::Detectors`]
//! merges the detectors' changes into one count whose changes the
//! pipeline writes into the kernel's `EXEC_WAKE` map. Nothing here decides
//! a finding: a name wanted late, or not at all, only makes that exec wait
//! for the next drain.
use foldhash::{HashMap, HashMapExt};
use watcher_common::COMM_LEN;

pub use crate::kernel::exec_wake::Comm;

/// `name` as a [`Comm`] (cut to 15 bytes, as the kernel cuts it).
pub fn comm_key(name: &str) -> Comm {
    let mut k = [0u8; COMM_LEN];
    let b = name.as_bytes();
    let n = b.len().min(COMM_LEN - 1);
    k[..n].copy_from_slice(&b[..n]);
    k
}

/// Names wanted, each counted (by programs, or by detectors), and the
/// changes — a name wanted for the first time, or no longer at all — kept
/// until taken.
#[derive(Default)]
pub struct ExecWakes {
    count: HashMap<Comm, u32>,
    changes: Vec<(Comm, bool)>,
}

impl ExecWakes {
    pub fn new() -> ExecWakes {
        ExecWakes {
            count: HashMap::new(),
            changes: Vec::new(),
        }
    }

    /// Want execs named `c` (an empty name is no program's: ignored, it is
    /// the key that makes every exec urgent).
    pub fn want(&mut self, c: Comm) {
        if c == watcher_common::EXEC_WAKE_ALL {
            return;
        }
        let n = self.count.entry(c).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.changes.push((c, true));
        }
    }

    pub fn unwant(&mut self, c: Comm) {
        let Some(n) = self.count.get_mut(&c) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.count.remove(&c);
            self.changes.push((c, false));
        }
    }

    /// Whether an exec named `c` is wanted.
    pub fn wanted(&self, c: &Comm) -> bool {
        self.count.contains_key(c)
    }

    /// The changes since the last take, in order.
    pub fn take(&mut self) -> Vec<(Comm, bool)> {
        std::mem::take(&mut self.changes)
    }

    /// Whether there are changes to take.
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Apply another count's changes (a detector's, into the merged one).
    pub fn merge(&mut self, changes: Vec<(Comm, bool)>) {
        for (c, on) in changes {
            if on {
                self.want(c)
            } else {
                self.unwant(c)
            }
        }
    }

    /// Every name wanted (a detector reset: each is no longer wanted by it).
    pub fn names(&self) -> impl Iterator<Item = &Comm> {
        self.count.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_a_change_when_first_wanted_and_when_last_let_go() {
        let mut w = ExecWakes::new();
        let a = comm_key("app");
        w.want(a);
        w.want(a);
        assert_eq!(w.take(), vec![(a, true)]);
        w.unwant(a);
        assert!(w.take().is_empty(), "still wanted once");
        assert!(w.wanted(&a));
        w.unwant(a);
        assert_eq!(w.take(), vec![(a, false)]);
        assert!(!w.wanted(&a));
        w.unwant(a);
        assert!(w.take().is_empty(), "an extra let-go is nothing");
    }

    #[test]
    fn names_are_cut_as_the_kernel_cuts_comm() {
        assert_eq!(
            &comm_key("a-very-long-program-name")[..],
            b"a-very-long-pro\0"
        );
        assert_eq!(comm_key(""), watcher_common::EXEC_WAKE_ALL);
        let mut w = ExecWakes::new();
        w.want(comm_key(""));
        assert!(
            w.take().is_empty(),
            "an unknown name never lists every exec"
        );
    }
}
