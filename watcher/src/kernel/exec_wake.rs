//! The kernel's list of programs whose execs wake the reader at once
//! (`EXEC_WAKE`, see `watcher_common::wake`), kept from the detectors'
//! changes (`Detectors::exec_wake_changes`) at the end of
//! each turn: a map write per program that starts or stops being wanted,
//! nothing otherwise. The map is bounded; names beyond it are kept here and
//! every exec wakes the reader while there are any (the all key) — more
//! wakeups, never a later finding.
use std::collections::HashSet;

use aya::maps::{HashMap, MapData};
use watcher_common::{COMM_LEN, EXEC_WAKE_ALL, EXEC_WAKE_ENTRIES, MAP_EXEC_WAKE};

/// A program's name as the kernel gives it at exec: at most 15 bytes,
/// NUL-padded (the map's key).
pub type Comm = [u8; COMM_LEN];

/// Where the list is written: the kernel's map, or a table in tests.
pub trait Table {
    /// Add `c`; `false` when it was refused (full).
    fn insert(&mut self, c: &Comm) -> bool;
    fn remove(&mut self, c: &Comm);
}

impl Table for HashMap<MapData, Comm, u8> {
    fn insert(&mut self, c: &Comm) -> bool {
        HashMap::insert(self, *c, 1, 0).is_ok()
    }
    fn remove(&mut self, c: &Comm) {
        let _ = HashMap::remove(self, c);
    }
}

pub struct ExecWake<T: Table = HashMap<MapData, Comm, u8>> {
    table: T,
    /// Names the table holds at most (one entry is kept for the all key).
    room: usize,
    /// Names in the table.
    listed: HashSet<Comm>,
    /// Names wanted that are not in it (it was full, or refused them).
    over: HashSet<Comm>,
    /// The all key is in the table.
    all: bool,
}

impl ExecWake {
    /// The loaded programs' map (`None`: an object without it — nothing to keep).
    pub fn take(ebpf: &mut aya::Ebpf) -> Option<ExecWake> {
        let map = ebpf.take_map(MAP_EXEC_WAKE)?;
        let table = HashMap::try_from(map).ok()?;
        Some(ExecWake::with(table, EXEC_WAKE_ENTRIES as usize - 1))
    }
}

impl<T: Table> ExecWake<T> {
    pub fn with(table: T, room: usize) -> ExecWake<T> {
        ExecWake {
            table,
            room,
            listed: HashSet::new(),
            over: HashSet::new(),
            all: false,
        }
    }

    /// Names listed in the kernel now, and whether every exec wakes the
    /// reader (names did not fit).
    pub fn state(&self) -> (usize, bool) {
        (self.listed.len(), self.all)
    }

    /// Apply the detectors' changes: (name, wanted).
    pub fn apply(&mut self, changes: &[(Comm, bool)]) {
        for (c, on) in changes {
            if *on {
                self.add(c);
            } else if self.listed.remove(c) {
                self.table.remove(c);
            } else {
                self.over.remove(c);
            }
        }
        // Room again: the names that did not fit move in.
        while self.listed.len() < self.room {
            let Some(c) = self.over.iter().next().copied() else {
                break;
            };
            self.over.remove(&c);
            self.add(&c);
            if self.over.contains(&c) {
                break;
            }
        }
        let all = !self.over.is_empty();
        if all != self.all {
            if all {
                // (A refused all key leaves the names that fit urgent: the
                // others ride on the next drain.)
                self.all = self.table.insert(&EXEC_WAKE_ALL);
            } else {
                self.table.remove(&EXEC_WAKE_ALL);
                self.all = false;
            }
        }
    }

    fn add(&mut self, c: &Comm) {
        if self.listed.contains(c) {
            return;
        }
        if self.listed.len() < self.room && self.table.insert(c) {
            self.listed.insert(*c);
        } else {
            self.over.insert(*c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm_key(s: &str) -> Comm {
        let mut k = [0u8; COMM_LEN];
        k[..s.len()].copy_from_slice(s.as_bytes());
        k
    }

    /// A table of `cap` entries, as the kernel's refuses beyond it.
    #[derive(Default)]
    struct Bounded {
        cap: usize,
        keys: HashSet<Comm>,
    }

    impl Table for Bounded {
        fn insert(&mut self, c: &Comm) -> bool {
            if self.keys.len() >= self.cap && !self.keys.contains(c) {
                return false;
            }
            self.keys.insert(*c);
            true
        }
        fn remove(&mut self, c: &Comm) {
            self.keys.remove(c);
        }
    }

    #[test]
    fn names_beyond_the_table_make_every_exec_urgent_until_they_fit() {
        let mut w = ExecWake::with(
            Bounded {
                cap: 3,
                ..Default::default()
            },
            2,
        );
        let (a, b, c) = (comm_key("a"), comm_key("b"), comm_key("c"));
        w.apply(&[(a, true), (b, true)]);
        assert_eq!(w.state(), (2, false));
        assert!(!w.table.keys.contains(&EXEC_WAKE_ALL));
        w.apply(&[(c, true)]);
        assert_eq!(w.state(), (2, true), "c did not fit: every exec wakes");
        assert!(w.table.keys.contains(&EXEC_WAKE_ALL));
        w.apply(&[(a, false)]);
        assert_eq!(w.state(), (2, false), "c moved in, the all key left");
        assert_eq!(w.table.keys, [b, c].into_iter().collect());
        w.apply(&[(b, false), (c, false)]);
        assert_eq!(w.state(), (0, false));
        assert!(w.table.keys.is_empty());
    }

    #[test]
    fn a_name_let_go_before_it_fit_leaves_nothing_behind() {
        let mut w = ExecWake::with(
            Bounded {
                cap: 2,
                ..Default::default()
            },
            1,
        );
        let (a, b) = (comm_key("a"), comm_key("b"));
        w.apply(&[(a, true), (b, true), (b, false)]);
        assert_eq!(w.state(), (1, false));
        assert_eq!(w.table.keys, [a].into_iter().collect());
    }
}
