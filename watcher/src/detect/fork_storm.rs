//! `fork_storm`: one process forks children faster than `rate_per_s` (500/s)
//! for `sustain_s` (2) consecutive seconds, or the live processes descending
//! from one process grow by more than `growth` (1,000) within
//! `growth_window_s` (2 s) — a fork bomb. A parallel build is neither: its
//! forks are spread over many parents (make, shells, compiler drivers) and its
//! processes end as fast as they start, so no subtree grows. Resolves when
//! neither holds any more (checked every second while open).
use foldhash::{HashMap, HashMapExt};

use serde::Serialize;

use super::{
    config::ns, incident::Incidents, who, DetectConfig, Finding, Input, Involved,
    Kind,
};
use crate::{world::domain::DomainEvent, world::proctable::Proc};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.fork_storm]`
    ForkStormCfg {
        /// Children per second from one process…
        #[serde(deserialize_with = "crate::detect::config::at_least_1")]
        rate_per_s: u32 = 500,
        /// …sustained this many seconds.
        #[serde(deserialize_with = "crate::detect::config::at_least_1")]
        sustain_s: u32 = 2,
        /// Or: live descendants of one process growing by more than this…
        #[serde(deserialize_with = "crate::detect::config::at_least_1")]
        growth: u32 = 1000,
        /// …within this many seconds.
        #[serde(deserialize_with = "crate::detect::config::seconds")]
        growth_window_s: f64 = 2.0,
    }
);

impl Declared for ForkStorm {
    const NAME: &'static str = "fork_storm";
    const SEVERITY: &'static str = "critical";
    const ADVICE: &'static str = "A process forks children far faster than normal, or its subtree grows without bound (a fork bomb, a runaway retry loop). Stop the process the finding names before the host runs out of processes.";
    type Config = ForkStormCfg;
    fn new(cfg: &DetectConfig) -> Self {
        ForkStorm::new(cfg)
    }
}

detector!(ForkStorm, |s, i, _c| ForkStorm::on_event(s, i),
    tick: |s, now, _v| ForkStorm::on_tick(s, now), deadline: |s| ForkStorm::next_deadline(s),
    forks_decide: |s| s.deciding.until(), wants: [ProcessStarted, Exited]);

const BUCKETS: usize = 20;
const SECOND: u64 = 1_000_000_000;
/// Ancestor chains kept besides the current one (see [`ForkStorm::chain_for`]).
const KEPT_CHAINS: usize = 7;

#[derive(Default)]
struct Rate {
    second: u64,
    count: u32,
    /// Consecutive seconds (before `second`) at or above the rate.
    streak: u32,
    last_high: u64,
}

/// Net births minus deaths in a sliding window of BUCKETS buckets.
#[derive(Default)]
struct Growth {
    buckets: [i32; BUCKETS],
    last: u64,
    /// The buckets' sum, kept as they change (no sum of 20 per fork).
    total: i64,
}

impl Growth {
    fn add(&mut self, bucket: u64, d: i32) -> i64 {
        if bucket > self.last {
            let gap = (bucket - self.last).min(BUCKETS as u64);
            for k in 1..=gap {
                let b = &mut self.buckets[((self.last + k) % BUCKETS as u64) as usize];
                self.total -= *b as i64;
                *b = 0;
            }
            self.last = bucket;
        }
        if self.last - bucket < BUCKETS as u64 {
            self.buckets[(bucket % BUCKETS as u64) as usize] += d;
            self.total += d as i64;
        }
        self.total
    }
    fn sum(&self) -> i64 {
        self.total
    }
    fn stale(&self, bucket: u64) -> bool {
        bucket.saturating_sub(self.last) >= BUCKETS as u64
    }
}

/// Each ancestor's [`Growth`], in slots that a chain names (see
/// [`ForkStorm::chain`]): a fork adds to its ancestors' without a hash
/// look-up for each. A slot is found by process in `at`; slots move only
/// when entries leave ([`Growths::retain`], [`Growths::clear`]), and then
/// every chain's slots are dropped with them.
#[derive(Default)]
struct Growths {
    slots: Vec<(u32, Growth)>,
    at: HashMap<u32, u32>,
}

/// A chain's ancestor whose slot is not known yet.
const NO_SLOT: u32 = u32::MAX;

impl Growths {
    /// `pid`'s slot, if it has one.
    fn find(&self, pid: u32) -> Option<u32> {
        self.at.get(&pid).copied()
    }

    fn get(&self, pid: &u32) -> Option<&Growth> {
        self.find(*pid).map(|j| &self[j])
    }

    /// `pid`'s slot, made when it has none (None: none, and `max` are made).
    fn slot(&mut self, pid: u32, max: usize) -> Option<u32> {
        if let Some(j) = self.find(pid) {
            return Some(j);
        }
        if self.slots.len() >= max {
            return None;
        }
        let j = self.slots.len() as u32;
        self.slots.push((pid, Growth::default()));
        self.at.insert(pid, j);
        Some(j)
    }

    /// Keep the entries `keep` says; whether any left (the slots moved).
    fn retain(&mut self, keep: impl Fn(&Growth) -> bool) -> bool {
        let before = self.slots.len();
        self.slots.retain(|(_, g)| keep(g));
        if self.slots.len() == before {
            return false;
        }
        self.at.clear();
        for (j, (pid, _)) in self.slots.iter().enumerate() {
            self.at.insert(*pid, j as u32);
        }
        true
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.at.clear();
    }
}

impl std::ops::Index<u32> for Growths {
    type Output = Growth;
    fn index(&self, j: u32) -> &Growth {
        &self.slots[j as usize].1
    }
}

impl std::ops::IndexMut<u32> for Growths {
    fn index_mut(&mut self, j: u32) -> &mut Growth {
        &mut self.slots[j as usize].1
    }
}

/// What a `fork_storm` finding says.
#[derive(Serialize)]
#[serde(untagged)]
enum Storm {
    /// Children per second above the rate, for seconds in a row.
    Rate {
        #[serde(skip)]
        who: String,
        rate_per_s: u32,
        sustained_s: u32,
    },
    /// Live descendants grew by more than the limit within the window.
    Bomb {
        #[serde(skip)]
        who: String,
        growth: i64,
        window_s: f64,
        #[serde(skip)]
        limit: i64,
    },
}

impl std::fmt::Display for Storm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storm::Rate {
                who,
                rate_per_s,
                sustained_s,
            } => write!(
                f,
                "{who} forks more than {rate_per_s} children per second, for {sustained_s} s in a row"
            ),
            Storm::Bomb {
                who,
                growth,
                window_s,
                limit,
            } => write!(
                f,
                "{who} is at the root of a fork bomb: its live descendants grew by {growth} within {window_s} s (limit {limit})"
            ),
        }
    }
}

pub struct ForkStorm {
    pub incidents: Incidents<u32>,
    rates: HashMap<u32, Rate>,
    growth: Growths,
    cfg: DetectConfig,
    bucket_ns: u64,
    pub overflow: u64,
    last_prune: u64,
    /// While a storm is open: when to look next whether it is over.
    next_check: u64,
    /// Kept between events (no allocation per fork): an ancestor chain (each
    /// ancestor and its slot in `growth`, or [`NO_SLOT`]), and each
    /// ancestor's growth.
    chain: Vec<(u32, u32)>,
    walk: Vec<(u32, i64)>,
    /// Whose ancestor chain `chain` is (0: none): a fork loop's parent's is
    /// walked once, not at every fork and exit. A chain changes only when
    /// one of its processes exits (its children are reparented), which
    /// drops it.
    chain_of: u32,
    /// The chains of the last few other parents (whose, chain), so that
    /// parents forking at once (a build's jobs, one loop per CPU) do not
    /// walk theirs again at every fork and exit, by turns.
    kept: Vec<(u32, Vec<(u32, u32)>)>,
    /// The next of `kept` to give up for a new chain.
    kept_next: usize,
    /// Whose forks can decide a finding, and until when (the kernel makes
    /// forks urgent meanwhile: `watcher_common::wake`).
    deciding: Deciding,
}

/// The candidates whose next forks can open a finding by growth: an
/// ancestor whose subtree has grown by half the limit (for a growth
/// window). One leaves when its finding opens (the rest of its forks decide
/// nothing) or its time has passed. (The rate needs no candidates: the
/// kernel counts each parent's forks per second and the one that reaches
/// the rate wakes the reader.) Bounded: candidates beyond
/// [`Deciding::MAX`] share one entry that leaves only when its time passes.
#[derive(Default)]
struct Deciding {
    /// (process, until), in no order.
    who: Vec<(u32, u64)>,
}

impl Deciding {
    const MAX: usize = 64;
    /// The shared entry's process (no process has pid 0).
    const OVER: u32 = 0;

    fn add(&mut self, pid: u32, until: u64) {
        if let Some(e) = self.who.iter_mut().find(|(p, _)| *p == pid) {
            e.1 = e.1.max(until);
        } else if self.who.len() < Self::MAX {
            self.who.push((pid, until));
        } else if let Some(e) = self.who.iter_mut().find(|(p, _)| *p == Self::OVER) {
            e.1 = e.1.max(until);
        } else if let Some(e) = self.who.last_mut() {
            // (The last one's time joins the shared entry's.)
            *e = (Self::OVER, e.1.max(until));
        }
    }

    fn settled(&mut self, pid: u32) {
        self.who.retain(|(p, _)| *p != pid);
    }

    fn expire(&mut self, now: u64) {
        self.who.retain(|(_, t)| *t > now);
    }

    /// Forks before this time can decide (0: none).
    fn until(&self) -> u64 {
        self.who.iter().map(|(_, t)| *t).max().unwrap_or(0)
    }
}

impl ForkStorm {
    pub fn new(cfg: &DetectConfig) -> ForkStorm {
        ForkStorm {
            incidents: Incidents::new(Kind::ForkStorm, cfg.update_interval_ns(), cfg.max_incidents),
            rates: HashMap::new(),
            growth: Growths::default(),
            cfg: cfg.clone(),
            bucket_ns: (ns(cfg.fork_storm.growth_window_s) / BUCKETS as u64).max(1),
            overflow: 0,
            last_prune: 0,
            next_check: 0,
            chain: Vec::new(),
            walk: Vec::new(),
            chain_of: 0,
            kept: Vec::new(),
            kept_next: 0,
            deciding: Deciding::default(),
        }
    }

    /// `self.chain` made `pid`'s ancestor chain (see [`ForkStorm::chain_of`]):
    /// the current one, one of the kept ones, or walked anew (then the
    /// current one is kept, in place of the oldest kept when they are
    /// [`KEPT_CHAINS`]).
    fn chain_for(&mut self, i: &Input, pid: u32) {
        if self.chain_of == pid && pid != 0 {
            return;
        }
        let current = (self.chain_of, std::mem::take(&mut self.chain));
        if let Some(j) = self.kept.iter().position(|(of, _)| *of == pid && pid != 0) {
            let (of, chain) = std::mem::replace(&mut self.kept[j], current);
            (self.chain_of, self.chain) = (of, chain);
            return;
        }
        let mut chain = if current.0 == 0 {
            current.1
        } else if self.kept.len() < KEPT_CHAINS {
            self.kept.push(current);
            Vec::new()
        } else {
            let j = self.kept_next % KEPT_CHAINS;
            self.kept_next = j + 1;
            std::mem::replace(&mut self.kept[j], current).1
        };
        Self::ancestors_into(i, pid, &mut chain);
        (self.chain_of, self.chain) = (pid, chain);
    }

    /// `pid` exited: the chains it was in change (its children are
    /// reparented), they are walked again when next wanted.
    fn chains_drop(&mut self, pid: u32) {
        if self.chain.iter().any(|(a, _)| *a == pid) {
            self.chain_of = 0;
        }
        for (of, chain) in &mut self.kept {
            if chain.iter().any(|(a, _)| *a == pid) {
                *of = 0;
            }
        }
    }

    /// Every chain walked again when next wanted (the slots they name moved).
    fn chains_forget(&mut self) {
        self.chain_of = 0;
        self.kept.clear();
    }

    /// Settings from a reloaded configuration: what comes next uses them;
    /// state and open incidents stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        // (Disabled until now, it saw no exits: the chains kept may be stale.)
        self.chain_of = 0;
        self.kept.clear();
        self.incidents
            .set_limits(cfg.update_interval_ns(), cfg.max_incidents);
        let bucket_ns = (ns(cfg.fork_storm.growth_window_s) / BUCKETS as u64).max(1);
        if bucket_ns != self.bucket_ns {
            // Buckets of another width cannot be summed with the new ones.
            self.growth.clear();
            self.chains_forget();
            self.bucket_ns = bucket_ns;
        }
        self.cfg = cfg.clone();
    }

    fn raise(
        &mut self,
        p: &Proc,
        now: u64,
        facts: impl FnOnce(String) -> Storm,
    ) -> Option<Finding> {
        if self.cfg.allowed_program(p) {
            return None;
        }
        let facts = facts(who(p));
        let processes = vec![Involved {
            role: "forking",
            proc: p.clone(),
            address: None,
            since_ns: None,
        }];
        if self.incidents.open_count() == 0 {
            self.next_check = now + SECOND;
        }
        self.incidents.raise(
            p.key.tgid,
            &p.key.tgid.to_string(),
            now,
            1,
            &facts,
            processes,
        )
    }

    fn ancestors(i: &Input, pid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        Self::ancestors_into(i, pid, &mut out);
        out.into_iter().map(|(a, _)| a).collect()
    }

    /// `pid` and its ancestors up to (not including) init, at most 64, into
    /// `out` (cleared first: a vector kept between events, no allocation),
    /// their slots not known yet.
    fn ancestors_into(i: &Input, mut pid: u32, out: &mut Vec<(u32, u32)>) {
        out.clear();
        while pid > 1 && out.len() < 64 {
            out.push((pid, NO_SLOT));
            match (i.ppid_of)(pid) {
                Some(pp) if pp != pid => pid = pp,
                _ => break,
            }
        }
    }

    fn prune(&mut self, now: u64) {
        if now.saturating_sub(self.last_prune) < SECOND {
            return;
        }
        self.last_prune = now;
        self.deciding.expire(now);
        let b = now / self.bucket_ns;
        if self.growth.retain(|g| !g.stale(b)) {
            self.chains_forget();
        }
        let s = now / SECOND;
        self.rates.retain(|_, r| s.saturating_sub(r.second) <= 2);
    }

    pub fn on_event(&mut self, i: &Input) -> Vec<Finding> {
        let mut out = Vec::new();
        let ts = i.ev.header.ts_ns;
        let c = &self.cfg.fork_storm;
        let (rate_limit, sustain, growth_limit) = (c.rate_per_s, c.sustain_s, c.growth as i64);
        match *i.event {
            DomainEvent::ProcessStarted { parent, .. } => {
                self.prune(ts);
                // Rate of one parent.
                let sec = ts / SECOND;
                // (One look-up for a parent already counted, the usual case.)
                let full = self.rates.len() >= self.cfg.max_tracked;
                let r = match self.rates.get_mut(&parent) {
                    Some(r) => Some(r),
                    None if full => None,
                    None => Some(self.rates.entry(parent).or_default()),
                };
                if let Some(r) = r {
                    if sec != r.second {
                        r.streak = if r.count >= rate_limit && sec == r.second + 1 {
                            r.streak + 1
                        } else {
                            0
                        };
                        r.second = sec;
                        r.count = 0;
                    }
                    r.count += 1;
                    if r.count >= rate_limit {
                        r.last_high = sec;
                    }
                    // (The fork that reaches the rate wakes the reader: the
                    // kernel counts each parent's forks per second itself,
                    // `Detectors::fork_rate`.)
                    if r.count == rate_limit && r.streak + 1 >= sustain {
                        let secs = r.streak + 1;
                        if let Some(p) = i.parent.cloned().or_else(|| (i.procs)(parent)) {
                            out.extend(self.raise(&p, ts, |who| Storm::Rate {
                                who,
                                rate_per_s: rate_limit,
                                sustained_s: secs,
                            }));
                            // (Open: its next forks decide nothing.)
                            self.deciding.settled(parent);
                        }
                    }
                } else {
                    self.overflow += 1;
                }
                // Growth of every ancestor's subtree.
                let bucket = ts / self.bucket_ns;
                self.chain_for(i, parent);
                let mut chain = std::mem::take(&mut self.chain);
                let mut walk = std::mem::take(&mut self.walk);
                walk.clear();
                for (a, slot) in chain.iter_mut() {
                    let a = *a;
                    if *slot == NO_SLOT {
                        match self.growth.slot(a, self.cfg.max_tracked) {
                            Some(j) => *slot = j,
                            None => {
                                self.overflow += 1;
                                break;
                            }
                        }
                    }
                    let g = self.growth[*slot].add(bucket, 1);
                    walk.push((a, g));
                    // Half the limit: the subtree's next forks can open a
                    // finding (urgent for a growth window).
                    if g == growth_limit / 2 + 1 {
                        let window = self.bucket_ns * BUCKETS as u64;
                        self.deciding.add(a, ts + window);
                    }
                }
                self.chain = chain;
                // The lowest ancestor that crosses — or, below it, the one whose subtree
                // holds nearly all of that growth (a bomb started from a shell: name the
                // bomb, not the shell).
                if let Some(j) = walk.iter().position(|(_, g)| *g > growth_limit) {
                    let top = walk[j].1;
                    let (a, g) = walk[..=j]
                        .iter()
                        .copied()
                        .find(|(_, g)| *g * 10 >= top * 9)
                        .unwrap_or(walk[j]);
                    {
                        if self.incidents.is_open(&a)
                            || !self
                                .incidents
                                .keys()
                                .any(|k| Self::ancestors(i, a).contains(k))
                        {
                            if let Some(p) = (i.procs)(a) {
                                let window_s = self.cfg.fork_storm.growth_window_s;
                                out.extend(self.raise(&p, ts, |who| Storm::Bomb {
                                    who,
                                    growth: g,
                                    window_s,
                                    limit: growth_limit,
                                }));
                                // (Open: the subtree's next forks decide nothing.)
                                for (a, _) in &self.chain {
                                    self.deciding.settled(*a);
                                }
                            }
                        }
                    }
                }
                self.walk = walk;
            }
            DomainEvent::Exited { .. } => {
                let Some(p) = i.subject.filter(|p| p.exited.is_some()) else {
                    return out;
                };
                let bucket = ts / self.bucket_ns;
                // (It was an ancestor of a chain kept: the chain changes.)
                self.chains_drop(p.key.tgid);
                self.chain_for(i, p.ppid);
                let mut chain = std::mem::take(&mut self.chain);
                for (a, slot) in chain.iter_mut() {
                    if *slot == NO_SLOT {
                        match self.growth.find(*a) {
                            Some(j) => *slot = j,
                            None => continue,
                        }
                    }
                    self.growth[*slot].add(bucket, -1);
                }
                self.chain = chain;
                if self.incidents.is_open(&p.key.tgid) {
                    out.extend(self.incidents.resolve(
                        &p.key.tgid,
                        ts,
                        format_args!("{} exited", who(p)),
                    ));
                }
            }
            _ => {}
        }
        out
    }

    pub fn on_tick(&mut self, now: u64) -> Vec<Finding> {
        let sec = now / SECOND;
        let bucket = now / self.bucket_ns;
        let growth_limit = self.cfg.fork_storm.growth as i64;
        self.next_check = now + SECOND;
        let calm: Vec<u32> = self
            .incidents
            .keys()
            .filter(|k| {
                let rate_high = self
                    .rates
                    .get(k)
                    .is_some_and(|r| sec.saturating_sub(r.last_high) <= 1);
                let growing = self.growth.get_mut_or_sum(k, bucket) > growth_limit;
                !rate_high && !growing
            })
            .copied()
            .collect();
        calm.into_iter()
            .filter_map(|k| {
                self.incidents
                    .resolve(&k, now, format_args!("pid {k} forks below the storm thresholds again"))
            })
            .collect()
    }

    pub fn next_deadline(&self) -> Option<u64> {
        // While a storm is open, look every second whether it is over.
        (self.incidents.open_count() > 0).then_some(self.next_check)
    }
}

trait GrowthSum {
    fn get_mut_or_sum(&self, k: &u32, bucket: u64) -> i64;
}

impl GrowthSum for Growths {
    fn get_mut_or_sum(&self, k: &u32, bucket: u64) -> i64 {
        match self.get(k) {
            Some(g) if !g.stale(bucket) => {
                // Only the buckets still inside the window count.
                let age = bucket.saturating_sub(g.last);
                if age == 0 {
                    g.sum()
                } else {
                    (0..BUCKETS as u64)
                        .filter(|j| *j + age < BUCKETS as u64)
                        .map(|j| {
                            g.buckets[((g.last + BUCKETS as u64 - j) % BUCKETS as u64) as usize]
                                as i64
                        })
                        .sum()
                }
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept total is always the buckets' sum, across gaps, wraps and
    /// late (older-bucket) changes.
    #[test]
    fn the_growth_total_follows_its_buckets() {
        let mut g = Growth::default();
        let mut seed = 7u64;
        let mut bucket = 0u64;
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            match seed >> 60 {
                0 => bucket += 1,
                1 => bucket += (seed >> 40) % 50,
                _ => {}
            }
            // Now and then a change for a bucket a little in the past.
            let at = if seed & 7 == 0 { bucket.saturating_sub((seed >> 8) % 30) } else { bucket };
            let d = if seed & 16 == 0 { 1 } else { -1 };
            let got = g.add(at, d);
            let sum: i64 = g.buckets.iter().map(|&b| b as i64).sum();
            assert_eq!(got, sum);
        }
    }
}

#[cfg(test)]
mod deciding_tests {
    use super::Deciding;

    #[test]
    fn the_candidates_are_bounded_and_those_beyond_share_one_entry() {
        let mut d = Deciding::default();
        for pid in 1..=Deciding::MAX as u32 {
            d.add(pid, 100 + pid as u64);
        }
        assert_eq!(d.until(), 100 + Deciding::MAX as u64);
        // Beyond the bound: one shared entry, with the latest time.
        d.add(1000, 5_000);
        d.add(1001, 4_000);
        assert_eq!(d.who.len(), Deciding::MAX);
        assert_eq!(d.until(), 5_000);
        // A candidate whose finding opened leaves; the shared entry stays
        // until its time passes.
        d.settled(1000);
        assert_eq!(d.until(), 5_000, "1000 is in the shared entry");
        d.expire(4_999);
        assert_eq!(d.until(), 5_000);
        d.expire(5_000);
        assert_eq!(d.until(), 0);
    }
}
