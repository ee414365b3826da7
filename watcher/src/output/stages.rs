//! Latency per pipeline stage, as histograms for the metrics: kernel event
//! → read (the record's kernel timestamp to the drain that read it; also
//! apart for records that can decide a finding — which wake the reader —
//! and bulk ones, which wait for its re-drains), read →
//! decided (to the detectors' verdict: findings only), decided → written
//! (to the sinks having taken it: findings only).

/// Bucket bounds, seconds: 5 µs … 1 s.
pub(crate) const BOUNDS_S: [f64; 17] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// [`BOUNDS_S`] in ns (rounded): what a record's wait is compared with
/// (every record's, on the reading thread).
const BOUNDS_NS: [u64; BOUNDS_S.len()] = {
    let mut ns = [0; BOUNDS_S.len()];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (BOUNDS_S[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    ns
};

/// A cumulative-on-render histogram of durations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Per bucket (not cumulative), the last one for > 1 s.
    pub counts: [u64; BOUNDS_S.len() + 1],
    pub sum_s: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe_ns(&mut self, ns: u64) {
        // (The first bucket whose bound is at least `ns`; past the last: > 1 s.)
        let i = BOUNDS_NS.partition_point(|b| *b < ns);
        self.counts[i] += 1;
        self.sum_s += ns as f64 / 1e9;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_s += other.sum_s;
        self.count += other.count;
    }

    /// (upper bound, cumulative count) per bucket, `+Inf` last.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut acc = 0;
        let mut out = Vec::new();
        for (i, n) in self.counts.iter().enumerate() {
            acc += n;
            let le = BOUNDS_S
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            out.push((le, acc));
        }
        out
    }
}

/// The three stages (the first also split by what the kernel said of the record).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stages {
    pub kernel_to_read: Histogram,
    /// Of `kernel_to_read`: records that can decide a finding.
    pub kernel_to_read_deciding: Histogram,
    /// Of `kernel_to_read`: the others (bulk records).
    pub kernel_to_read_bulk: Histogram,
    pub read_to_decided: Histogram,
    pub decided_to_written: Histogram,
}

impl Stages {
    pub fn merge(&mut self, other: &Stages) {
        self.kernel_to_read.merge(&other.kernel_to_read);
        self.kernel_to_read_deciding
            .merge(&other.kernel_to_read_deciding);
        self.kernel_to_read_bulk.merge(&other.kernel_to_read_bulk);
        self.read_to_decided.merge(&other.read_to_decided);
        self.decided_to_written.merge(&other.decided_to_written);
    }

    /// (label, histogram) for the exposition.
    pub fn each(&self) -> [(&'static str, &Histogram); 5] {
        [
            ("kernel_to_read", &self.kernel_to_read),
            ("kernel_to_read_deciding", &self.kernel_to_read_deciding),
            ("kernel_to_read_bulk", &self.kernel_to_read_bulk),
            ("read_to_decided", &self.read_to_decided),
            ("decided_to_written", &self.decided_to_written),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_buckets_and_add_up() {
        let mut h = Histogram::default();
        h.observe_ns(4_000); // 4 µs
        h.observe_ns(30_000); // 30 µs
        h.observe_ns(700_000); // 0.7 ms
        h.observe_ns(2_000_000_000); // 2 s
        let c = h.cumulative();
        assert_eq!(c[0], ("0.000005".into(), 1), "buckets from 5 µs");
        assert_eq!(c[3], ("0.00005".into(), 2));
        assert_eq!(c[7], ("0.001".into(), 3), "≤ 1 ms");
        assert_eq!(c.last().unwrap(), &("+Inf".into(), 4));
        assert_eq!(h.count, 4);
        assert!((h.sum_s - 2.000734).abs() < 1e-9);
        let mut s = Stages::default();
        let o = Stages {
            decided_to_written: h.clone(),
            ..Default::default()
        };
        s.merge(&o);
        assert_eq!(s.decided_to_written.count, 4);
    }

    #[test]
    fn the_ns_bounds_are_the_seconds_bounds_and_a_bound_is_in_its_bucket() {
        for (ns, s) in BOUNDS_NS.iter().zip(BOUNDS_S) {
            assert_eq!(*ns, (s * 1e9).round() as u64);
        }
        for (i, ns) in BOUNDS_NS.iter().enumerate() {
            let mut h = Histogram::default();
            h.observe_ns(*ns);
            h.observe_ns(ns + 1);
            assert_eq!(h.counts[i], 1, "{ns} ns is in the bucket it bounds");
            assert_eq!(h.counts[i + 1], 1, "{} ns is in the next", ns + 1);
        }
    }
}
