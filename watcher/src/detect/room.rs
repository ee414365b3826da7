//! Making room in a full table without letting a flood make it quadratic.
//!
//! A detector's table that is full makes room by a pass over all of it
//! (forget what is stale). A local user who sends one new key after
//! another — 100,000 destinations refused, 100,000 ports failing — would
//! otherwise make every event pay for a whole pass (65,536 entries each).
//! [`Sweeps`] allows one pass per stretch of event time: between passes a
//! new key that finds no room is counted as overflow at once.

/// Event time between two passes over a full table.
pub(crate) const SWEEP_EVERY_NS: u64 = 1_000_000_000;

#[derive(Debug, Default)]
pub(crate) struct Sweeps {
    next_ns: u64,
    /// Passes made.
    pub passes: u64,
}

impl Sweeps {
    /// Whether a pass may be made now (at event time `ts`); if so, the next
    /// one may come [`SWEEP_EVERY_NS`] later.
    pub(crate) fn due(&mut self, ts: u64) -> bool {
        if ts < self.next_ns {
            return false;
        }
        self.next_ns = ts.saturating_add(SWEEP_EVERY_NS);
        self.passes += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_per_second_of_event_time() {
        let mut s = Sweeps::default();
        assert!(s.due(5));
        assert!(!s.due(6));
        assert!(!s.due(5 + SWEEP_EVERY_NS - 1));
        assert!(s.due(5 + SWEEP_EVERY_NS));
        assert_eq!(s.passes, 2);
    }
}
