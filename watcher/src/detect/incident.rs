//! The incident life cycle shared by all detectors: open → update
//! (rate-limited) → resolved, with a stable id, in a bounded table.
use std::hash::Hash;

use foldhash::{HashMap, HashMapExt};

use super::{summary::Facts, Finding, Involved, Kind, State};
use crate::world::proctable::fnv1a;

#[derive(Clone, Debug)]
pub struct Incident {
    pub id: String,
    /// The kind and key, hashed: the same across restarts.
    pub subject: String,
    pub first_ns: u64,
    pub last_ns: u64,
    pub count: u64,
    last_emit_ns: u64,
    pub summary: String,
    pub processes: Vec<Involved>,
    /// Processes it counts without naming them (see [`Finding::counted`]).
    pub counted: Vec<u32>,
    pub details: super::Details,
}

/// Open incidents of one kind, keyed by what makes them one incident.
pub struct Incidents<K> {
    kind: Kind,
    map: HashMap<K, Incident>,
    update_interval_ns: u64,
    cap: usize,
    /// Incidents not opened because the table was full.
    pub overflow: u64,
    /// New incidents one user may open in a second (0: no limit).
    opens_per_user: u32,
    /// user id → (second, incidents opened in it); bounded by [`OPEN_RATE_USERS`].
    opens: HashMap<u32, (u64, u32)>,
    /// Incidents not opened because their user had opened its second's share.
    pub suppressed: u64,
}

/// Why an incident would not open.
enum Refused {
    /// `cap` incidents are open already.
    Full,
    /// Its user has opened its share of the second.
    UserRate,
}

/// Users whose opens are counted at once (the table is emptied beyond).
const OPEN_RATE_USERS: usize = 4096;

/// Default of `[detect] max_opens_per_user_s`.
pub(crate) const OPENS_PER_USER_PER_SECOND: u32 = 50;

impl<K: Hash + Eq + Clone> Incidents<K> {
    /// New limits from a reloaded configuration (open incidents stay).
    pub fn set_limits(&mut self, update_interval_ns: u64, cap: usize) {
        self.update_interval_ns = update_interval_ns;
        self.cap = cap;
    }

    /// Resolve every open incident with `summary` (its detector was disabled).
    pub fn resolve_all(&mut self, now: u64, summary: &str) -> Vec<Finding> {
        let keys: Vec<K> = self.map.keys().cloned().collect();
        keys.iter()
            .filter_map(|k| self.resolve(k, now, summary.to_owned()))
            .collect()
    }

    pub fn new(kind: Kind, update_interval_ns: u64, cap: usize) -> Incidents<K> {
        Incidents {
            kind,
            map: HashMap::new(),
            update_interval_ns,
            cap: cap.max(1),
            overflow: 0,
            opens_per_user: OPENS_PER_USER_PER_SECOND,
            opens: HashMap::new(),
            suppressed: 0,
        }
    }

    /// At most `n` new incidents a second per user (0: no limit): a local
    /// user who makes 100,000 ports fail opens `n` a second, counted beyond,
    /// while other users' incidents still open.
    pub fn set_open_rate(&mut self, n: u32) {
        self.opens_per_user = n;
    }

    /// Whether the user of `processes` (its first, the one the finding is
    /// about) may open one more incident at `now`; counts it.
    fn may_open(&mut self, processes: &[Involved], now: u64) -> bool {
        if self.opens_per_user == 0 {
            return true;
        }
        let uid = processes.first().map(|p| p.proc.uid).unwrap_or(u32::MAX);
        let second = now / 1_000_000_000;
        if self.opens.len() >= OPEN_RATE_USERS && !self.opens.contains_key(&uid) {
            self.opens.retain(|_, (s, _)| *s == second);
        }
        let e = self.opens.entry(uid).or_insert((second, 0));
        if e.0 != second {
            *e = (second, 0);
        }
        if e.1 >= self.opens_per_user {
            self.suppressed += 1;
            return false;
        }
        e.1 += 1;
        true
    }

    /// Why opening `k` for user `uid` at `now` would be refused (nothing counted).
    fn refusal(&self, k: &K, uid: u32, now: u64) -> Option<Refused> {
        if self.map.contains_key(k) {
            None
        } else if self.map.len() >= self.cap {
            Some(Refused::Full)
        } else if self.opens_per_user != 0
            && self
                .opens
                .get(&uid)
                .is_some_and(|(s, n)| *s == now / 1_000_000_000 && *n >= self.opens_per_user)
        {
            Some(Refused::UserRate)
        } else {
            None
        }
    }

    /// Whether opening `k` for user `uid` at `now` would be refused (the
    /// table is full, or the user has opened its second's share), nothing
    /// counted: a question before work that only an open would need.
    pub fn would_refuse_open(&self, k: &K, uid: u32, now: u64) -> bool {
        self.refusal(k, uid, now).is_some()
    }

    /// As [`Incidents::would_refuse_open`], counted as a raise would count
    /// it. A detector asks before it builds what an open would say: a local
    /// user's flood of new keys (100,000 failing ports) then costs a lookup
    /// in two small maps per event, not a summary, a process list and a
    /// socket lookup each.
    pub fn refuses_open(&mut self, k: &K, uid: u32, now: u64) -> bool {
        match self.refusal(k, uid, now) {
            None => false,
            Some(Refused::Full) => {
                self.overflow += 1;
                true
            }
            Some(Refused::UserRate) => {
                self.suppressed += 1;
                true
            }
        }
    }

    /// Whether the incident with this id is open.
    pub fn has_id(&self, id: &str) -> bool {
        self.map.values().any(|inc| inc.id == id)
    }

    pub fn open_count(&self) -> usize {
        self.map.len()
    }

    /// Count an occurrence of the open incident `k` that now stands at
    /// `total` (as a raise would: its count becomes at least `total`)
    /// without a record, when its update is not due yet; false when a raise
    /// would write one (it is not open, or its update interval has passed).
    /// A detector builds what a record says (summary, processes, details:
    /// O(members)) only on false: an incident of 3,000 instances or zombies
    /// costs O(1) per occurrence between its updates, not O(n). What it
    /// says stays as last written until its next update.
    pub fn count_until_due(&mut self, k: &K, now: u64, total: u64) -> bool {
        match self.map.get_mut(k) {
            Some(inc) if now.saturating_sub(inc.last_emit_ns) < self.update_interval_ns => {
                inc.count = inc.count.max(total);
                inc.last_ns = now;
                true
            }
            _ => false,
        }
    }

    pub fn is_open(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    pub fn get(&self, k: &K) -> Option<&Incident> {
        self.map.get(k)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    fn finding(&self, inc: &Incident, state: State, at_ns: u64) -> Finding {
        Finding {
            kind: self.kind,
            state,
            id: inc.id.clone(),
            subject: inc.subject.clone(),
            summary: inc.summary.clone(),
            count: inc.count,
            first_seen_ns: inc.first_ns,
            last_seen_ns: inc.last_ns,
            at_ns,
            processes: inc.processes.clone(),
            counted: inc.counted.clone(),
            details: inc.details.clone(),
        }
    }

    /// The pattern is seen (again) at `now`: opens the incident, or updates it
    /// (a record at most once per update interval). `count` is added to the
    /// incident's count; `facts` are what it says (summary and details).
    pub fn raise(
        &mut self,
        k: K,
        key_text: &str,
        now: u64,
        count: u64,
        facts: &impl Facts,
        processes: Vec<Involved>,
    ) -> Option<Finding> {
        self.raise_counting(k, key_text, now, count, facts, processes, Vec::new())
    }

    /// [`Incidents::raise`] for a finding that also counts processes
    /// it does not name (`counted`: a parent's zombies, all of them).
    #[expect(
        clippy::too_many_arguments,
        reason = "raise's arguments and the counted processes"
    )]
    pub fn raise_counting(
        &mut self,
        k: K,
        key_text: &str,
        now: u64,
        count: u64,
        facts: &impl Facts,
        processes: Vec<Involved>,
        counted: Vec<u32>,
    ) -> Option<Finding> {
        let (summary, details) = facts.said();
        self.open_or_update(
            k, key_text, now, count, summary, processes, counted, details,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn open_or_update(
        &mut self,
        k: K,
        key_text: &str,
        now: u64,
        count: u64,
        summary: String,
        processes: Vec<Involved>,
        counted: Vec<u32>,
        details: super::Details,
    ) -> Option<Finding> {
        if let Some(inc) = self.map.get_mut(&k) {
            inc.count += count;
            inc.last_ns = now;
            inc.summary = summary;
            inc.processes = processes;
            inc.counted = counted;
            inc.details = details;
            if now.saturating_sub(inc.last_emit_ns) >= self.update_interval_ns {
                inc.last_emit_ns = now;
                let inc = inc.clone();
                return Some(self.finding(&inc, State::Update, now));
            }
            return None;
        }
        if self.map.len() >= self.cap {
            self.overflow += 1;
            return None;
        }
        if !self.may_open(&processes, now) {
            return None;
        }
        let inc = Incident {
            id: format!(
                "{}-{:016x}",
                self.kind.as_str(),
                fnv1a(&[key_text.as_bytes(), &now.to_le_bytes()])
            ),
            subject: format!(
                "{}-{:016x}",
                self.kind.as_str(),
                fnv1a(&[key_text.as_bytes()])
            ),
            first_ns: now,
            last_ns: now,
            count,
            last_emit_ns: now,
            summary,
            processes,
            counted,
            details,
        };
        let f = self.finding(&inc, State::Open, now);
        self.map.insert(k, inc);
        Some(f)
    }

    /// Change what an open incident says without counting a new occurrence or emitting.
    pub fn amend(&mut self, k: &K, f: impl FnOnce(&mut Incident)) {
        if let Some(inc) = self.map.get_mut(k) {
            f(inc);
        }
    }

    /// A name in open incidents' summaries changed (a container the runtime
    /// has named since): replace `from` with `to` and say so with an update.
    pub fn rename(&mut self, from: &str, to: &str, now: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        let keys: Vec<K> = self
            .map
            .iter()
            .filter(|(_, inc)| inc.summary.contains(from))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(inc) = self.map.get_mut(&k) {
                inc.summary = inc.summary.replace(from, to);
                inc.last_emit_ns = now;
                let inc = inc.clone();
                out.push(self.finding(&inc, State::Update, now));
            }
        }
        out
    }

    /// What an open incident says was corrected (a late confirmation): an
    /// update with the new summary and processes, when they differ.
    fn restate_said(
        &mut self,
        k: &K,
        summary: String,
        processes: Vec<Involved>,
        now: u64,
    ) -> Option<Finding> {
        let inc = self.map.get_mut(k)?;
        if inc.summary == summary {
            return None;
        }
        inc.summary = summary;
        inc.processes = processes;
        inc.last_emit_ns = now;
        let inc = inc.clone();
        Some(self.finding(&inc, State::Update, now))
    }

    /// What an open incident says was corrected (a late confirmation): an
    /// update with the new summary and processes, when the summary differs;
    /// the details are replaced too (written with this update, or with the
    /// next record when the summary did not change).
    pub fn restate(
        &mut self,
        k: &K,
        facts: &impl Facts,
        processes: Vec<Involved>,
        now: u64,
    ) -> Option<Finding> {
        let (summary, details) = facts.said();
        if let Some(inc) = self.map.get_mut(k) {
            inc.details = details;
        }
        self.restate_said(k, summary, processes, now)
    }

    /// The condition cleared: a `resolved` record saying `why` (its details
    /// are the incident's last).
    pub fn resolve(&mut self, k: &K, now: u64, why: impl std::fmt::Display) -> Option<Finding> {
        let mut inc = self.map.remove(k)?;
        inc.summary = why.to_string();
        Some(self.finding(&inc, State::Resolved, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Facts that are a sentence only.
    #[derive(serde::Serialize)]
    struct Said(&'static str);

    impl std::fmt::Display for Said {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    fn by(uid: u32) -> Vec<Involved> {
        vec![Involved {
            role: "failing",
            proc: crate::world::proctable::Proc {
                uid,
                ..crate::world::proctable::Proc::bare(
                    crate::world::proctable::ProcKey {
                        tgid: 1000 + uid,
                        start_ns: 1,
                    },
                    1,
                    "x",
                )
            },
            address: None,
            since_ns: None,
        }]
    }

    #[test]
    fn one_user_opens_a_bounded_number_a_second_and_others_still_open() {
        let mut inc: Incidents<u32> = Incidents::new(Kind::PortConflict, 10, 100_000);
        inc.set_open_rate(50);
        let sec = 7_000_000_000;
        let opened = (0..1000u32)
            .filter(|k| {
                inc.raise(
                    *k,
                    &k.to_string(),
                    sec + *k as u64,
                    1,
                    &Said("s"),
                    by(65534),
                )
                .is_some()
            })
            .count();
        assert_eq!(opened, 50, "the flooding user's share of the second");
        assert_eq!(inc.suppressed, 950);
        // Another user in the same second: opened.
        assert!(inc
            .raise(5000, "root", sec + 2000, 1, &Said("s"), by(0),)
            .is_some());
        // The flooding user, the next second: its share again.
        assert!(inc
            .raise(6000, "next", sec + 1_000_000_000, 1, &Said("s"), by(65534),)
            .is_some());
        // 0: no limit.
        inc.set_open_rate(0);
        assert!(inc
            .raise(7000, "free", sec + 1_000_000_001, 1, &Said("s"), by(65534),)
            .is_some());
    }

    #[test]
    fn open_update_rate_limited_resolve() {
        let mut inc: Incidents<u32> = Incidents::new(Kind::Zombie, 10, 2);
        let f = inc.raise(1, "a", 100, 1, &Said("s"), vec![]).unwrap();
        assert_eq!((f.state, f.count), (State::Open, 1));
        assert!(
            inc.raise(1, "a", 105, 1, &Said("s"), vec![],).is_none(),
            "rate-limited"
        );
        let u = inc.raise(1, "a", 111, 1, &Said("s2"), vec![]).unwrap();
        assert_eq!(
            (u.state, u.count, u.id.clone(), u.first_seen_ns),
            (State::Update, 3, f.id.clone(), 100)
        );
        inc.raise(2, "b", 111, 1, &Said("s"), vec![]).unwrap();
        assert!(
            inc.raise(3, "c", 111, 1, &Said("s"), vec![],).is_none(),
            "bounded"
        );
        assert_eq!(inc.overflow, 1);
        let r = inc.resolve(&1, 200, "done").unwrap();
        assert_eq!(
            (r.state, r.id, r.count, r.summary.as_str()),
            (State::Resolved, f.id, 3, "done")
        );
        assert!(inc.resolve(&1, 201, "x").is_none());
    }

    #[test]
    fn a_container_named_later_is_renamed_in_open_incidents() {
        let mut inc: Incidents<u32> = Incidents::new(Kind::Zombie, 10, 8);
        let f = inc
            .raise(
                1,
                "a",
                100,
                1,
                &Said("pid 7 (sleep) in container 4f1ad7c2b0f0 has 5 zombies"),
                vec![],
            )
            .unwrap();
        inc.raise(2, "b", 100, 1, &Said("pid 8 (x) has 5 zombies"), vec![])
            .unwrap();
        let u = inc.rename("container 4f1ad7c2b0f0", "container web (image nginx)", 101);
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].state, u[0].id.as_str()),
            (State::Update, f.id.as_str())
        );
        assert_eq!(
            u[0].summary,
            "pid 7 (sleep) in container web (image nginx) has 5 zombies"
        );
    }
}
