//! A set of processes kept in the order they joined, with O(log n) removal
//! by key: the live instances of a program, the unreaped children of a
//! parent. (A `Vec` made each removal O(n): 3,000 zombies of one parent
//! reaped one by one moved ~1 GB of memory.)
use std::collections::BTreeMap;

use foldhash::HashMap;

use crate::world::proctable::{Proc, ProcKey};

/// What a set holds of each process: the whole `Proc` (boxed: a B-tree
/// moves its values within a node at each insert and removal, ~11 of them;
/// a `Proc` is ~150 bytes, its box 8), or less.
pub(crate) trait Member {
    fn key(&self) -> ProcKey;
}

impl Member for Box<Proc> {
    fn key(&self) -> ProcKey {
        self.key
    }
}

pub(crate) struct Members<T: Member> {
    next: u64,
    by_seq: BTreeMap<u64, T>,
    seq_of: HashMap<ProcKey, u64>,
}

impl<T: Member> Default for Members<T> {
    fn default() -> Members<T> {
        Members {
            next: 0,
            by_seq: BTreeMap::new(),
            seq_of: HashMap::default(),
        }
    }
}

impl<T: Member> Members<T> {
    /// Add `p` last (a process already there keeps its place, updated).
    pub(crate) fn push(&mut self, p: T) {
        let key = p.key();
        if let Some(s) = self.seq_of.get(&key) {
            self.by_seq.insert(*s, p);
            return;
        }
        let s = self.next;
        self.next += 1;
        self.seq_of.insert(key, s);
        self.by_seq.insert(s, p);
    }

    pub(crate) fn remove(&mut self, key: &ProcKey) -> Option<T> {
        let s = self.seq_of.remove(key)?;
        self.by_seq.remove(&s)
    }

    pub(crate) fn get(&self, key: &ProcKey) -> Option<&T> {
        self.seq_of.get(key).and_then(|s| self.by_seq.get(s))
    }

    pub(crate) fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// In the order they joined (`.rev()`: newest first).
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.by_seq.values()
    }

    /// Keep only the members `keep` says yes to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let seq_of = &mut self.seq_of;
        self.by_seq.retain(|_, p| {
            let k = keep(p);
            if !k {
                seq_of.remove(&p.key());
            }
            k
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(tgid: u32) -> Box<Proc> {
        Box::new(Proc::bare(
            ProcKey {
                tgid,
                start_ns: tgid as u64 * 10,
            },
            1,
            "srv",
        ))
    }

    #[test]
    fn order_is_kept_and_removal_is_by_key() {
        let mut m: Members<Box<Proc>> = Members::default();
        for t in [5, 3, 9, 1] {
            m.push(proc(t));
        }
        m.push(proc(3));
        let order: Vec<u32> = m.iter().map(|p| p.key.tgid).collect();
        assert_eq!(
            order,
            [5, 3, 9, 1],
            "joined order; a repeat keeps its place"
        );
        assert_eq!(m.remove(&proc(9).key).map(|p| p.key.tgid), Some(9));
        assert!(m.remove(&proc(9).key).is_none());
        assert_eq!(
            m.iter().rev().map(|p| p.key.tgid).collect::<Vec<_>>(),
            [1, 3, 5]
        );
        m.retain(|p| p.key.tgid != 5);
        assert_eq!(m.iter().next().map(|p| p.key.tgid), Some(3));
        assert!(m.get(&proc(5).key).is_none() && m.get(&proc(1).key).is_some());
        assert_eq!(m.len(), 2);
    }
}
