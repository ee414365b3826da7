//! The kernel's clock: records carry CLOCK_MONOTONIC ns (the kernel's
//! `bpf_ktime_get_ns`), shown as wall-clock time.
/// Converts CLOCK_MONOTONIC ns to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - monotonic, ns.
    offset_ns: i128,
}

fn clock_ns(id: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(id)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0)
}

impl Clock {
    /// Measure the offset now (call again after a while to follow clock adjustments).
    pub fn now() -> Clock {
        let mono = clock_ns(nix::time::ClockId::CLOCK_MONOTONIC);
        let real = clock_ns(nix::time::ClockId::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    pub fn fixed(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// The current CLOCK_MONOTONIC time in ns.
    pub fn mono_now() -> u64 {
        clock_ns(nix::time::ClockId::CLOCK_MONOTONIC).max(0) as u64
    }

    /// `HH:MM:SS` (UTC) of a CLOCK_MONOTONIC time, for summaries.
    pub fn hms(&self, mono_ns: u64) -> String {
        let t = self.rfc3339(mono_ns);
        t.get(11..19).unwrap_or(&t).to_owned()
    }

    /// RFC 3339 UTC with microseconds.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        let real = (mono_ns as i128 + self.offset_ns).max(0) as u128;
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(real.min(u64::MAX as u128) as u64);
        humantime::format_rfc3339_micros(t).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_rfc3339_utc() {
        let c = Clock::fixed(1_700_000_000_000_000_000);
        assert_eq!(c.rfc3339(1_500), "2023-11-14T22:13:20.000001Z");
    }
}
