//! A set of processes kept in the order they joined, with O(1) removal by
//! key: the live instances of a program, the unreaped children of a
//! parent. (A `Vec` made each removal O(n): 3,000 zombies of one parent
//! reaped one by one moved ~1 GB of memory. A B-tree made it O(log n) but
//! allocated a node for a parent's first zombie and freed it at its reap:
//! a fork loop's every child.) Slots in joining order, a removed one left
//! empty; empties leave from the front, and the slots are compacted when
//! more than half are empty (amortized O(1)); a set keeps its memory for
//! the next members.
use std::collections::VecDeque;

use foldhash::HashMap;

use crate::world::proctable::{Proc, ProcKey};

/// What a set holds of each process: the whole `Proc` (boxed: ~150 bytes
/// moved at each compaction, its box 8), or less.
pub(crate) trait Member {
    fn key(&self) -> ProcKey;
}

impl Member for Box<Proc> {
    fn key(&self) -> ProcKey {
        self.key
    }
}

pub(crate) struct Members<T: Member> {
    /// The sequence number of `slots[0]` (numbers are never reused).
    base: u64,
    /// In joining order; `None`: removed.
    slots: VecDeque<Option<T>>,
    /// Members (slots that are not empty).
    live: usize,
    seq_of: HashMap<ProcKey, u64>,
}

impl<T: Member> Default for Members<T> {
    fn default() -> Members<T> {
        Members {
            base: 0,
            slots: VecDeque::new(),
            live: 0,
            seq_of: HashMap::default(),
        }
    }
}

impl<T: Member> Members<T> {
    /// Add `p` last (a process already there keeps its place, updated).
    pub(crate) fn push(&mut self, p: T) {
        let key = p.key();
        if let Some(s) = self.seq_of.get(&key) {
            self.slots[(s - self.base) as usize] = Some(p);
            return;
        }
        self.seq_of.insert(key, self.base + self.slots.len() as u64);
        self.slots.push_back(Some(p));
        self.live += 1;
    }

    pub(crate) fn remove(&mut self, key: &ProcKey) -> Option<T> {
        let s = self.seq_of.remove(key)?;
        let p = self.slots.get_mut((s - self.base) as usize)?.take();
        self.live -= 1;
        self.tidy();
        p
    }

    pub(crate) fn get(&self, key: &ProcKey) -> Option<&T> {
        let s = self.seq_of.get(key)?;
        self.slots.get((s - self.base) as usize)?.as_ref()
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// In the order they joined (`.rev()`: newest first).
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.slots.iter().filter_map(Option::as_ref)
    }

    /// Keep only the members `keep` says yes to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for slot in self.slots.iter_mut() {
            if slot.as_ref().is_some_and(|p| !keep(p)) {
                if let Some(p) = slot.take() {
                    self.seq_of.remove(&p.key());
                }
                self.live -= 1;
            }
        }
        self.tidy();
    }

    /// Empty slots leave from the front; more than half empty (past a few),
    /// the members move up and are numbered again.
    fn tidy(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.len() > 2 * self.live + 16 {
            self.base += self.slots.len() as u64;
            let old = std::mem::take(&mut self.slots);
            for p in old.into_iter().flatten() {
                self.seq_of
                    .insert(p.key(), self.base + self.slots.len() as u64);
                self.slots.push_back(Some(p));
            }
        }
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

    /// Against a `Vec` in joining order, under a long run of pushes,
    /// repeats, removals (oldest, newest, middle, absent) and retains.
    #[test]
    fn it_behaves_as_a_list_in_joining_order() {
        let mut m: Members<Box<Proc>> = Members::default();
        let mut model: Vec<u32> = Vec::new();
        let mut x = 12345u64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for step in 0..20_000u32 {
            match rnd(10) {
                0..=3 => {
                    let t = rnd(300) as u32;
                    m.push(proc(t));
                    if !model.contains(&t) {
                        model.push(t);
                    }
                }
                4..=7 => {
                    let t = match rnd(3) {
                        0 => model.first().copied().unwrap_or(0),
                        1 => model.last().copied().unwrap_or(0),
                        _ => rnd(300) as u32,
                    };
                    let got = m.remove(&proc(t).key).map(|p| p.key.tgid);
                    let want = model.iter().position(|&u| u == t).map(|i| model.remove(i));
                    assert_eq!(got, want, "step {step}");
                }
                8 => {
                    let cut = rnd(300) as u32;
                    m.retain(|p| p.key.tgid < cut);
                    model.retain(|&t| t < cut);
                }
                _ => {
                    let t = rnd(300) as u32;
                    assert_eq!(m.get(&proc(t).key).is_some(), model.contains(&t));
                }
            }
            assert_eq!(m.len(), model.len(), "step {step}");
            assert_eq!(m.is_empty(), model.is_empty());
            if step % 97 == 0 {
                let order: Vec<u32> = m.iter().map(|p| p.key.tgid).collect();
                assert_eq!(order, model, "step {step}");
                let back: Vec<u32> = m.iter().rev().map(|p| p.key.tgid).collect();
                assert_eq!(back, model.iter().rev().copied().collect::<Vec<_>>());
            }
            // Bounded: the slots never hold more than twice the members (and a few).
            assert!(m.slots.len() <= 2 * m.live + 16, "step {step}");
        }
    }
}
