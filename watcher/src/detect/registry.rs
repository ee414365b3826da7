//! The detector traits: every detector answers the same calls (an event, a
//! deadline, its next deadline, its incidents, new settings) — [`Detector`],
//! so [`super::Detectors`] fans out in one loop — and declares what the
//! rest of watcher says of its findings — [`Declared`]: its kind's name, its
//! alerts' default severity and advice, its `[detect.<name>]` section.
//! The list of detectors is [`super::with_detectors`]: the kind enum, the
//! [`super::Detectors`] fields, the `[detect]` config and the schema's kind
//! list are all made from it.
use std::hash::Hash;

use super::{
    incident::Incidents,
    sockets::{Changes, SocketTable},
    ContainerView, DetectConfig, Finding, Input, Kind, Teardown,
};

/// What a detector declares about itself, read by the layers that present
/// its findings (records, alerts, config, schema, metrics).
pub trait Declared: Detector + Sized {
    /// Its kind's name: the records' `kind`, its `[detect.<name>]` section,
    /// its alerts' `alertname` (`port_conflict` → `WatcherPortConflict`).
    const NAME: &'static str;
    /// Its alerts' severity unless `[alerts.severity]` says otherwise
    /// (`critical`, `warning` or `info`).
    const SEVERITY: &'static str;
    /// What a person should do about one of its findings: its alerts'
    /// `description`.
    const ADVICE: &'static str;
    /// Whether a lost exit or reap can make its findings false (they are
    /// about processes being alive, or dead and unreaped): then a finding
    /// decided after a loss is held until the reconciliation confirms it.
    const HELD_AFTER_LOSS: bool = false;
    /// Its `[detect.<name>]` section (made with [`super::config::section`]).
    type Config: Section;
    fn new(cfg: &DetectConfig) -> Self;
}

/// A `[detect.<name>]` section: every one can be turned off.
pub trait Section:
    Clone + std::fmt::Debug + PartialEq + Default + serde::Serialize + serde::de::DeserializeOwned
{
    fn enabled(&self) -> bool;
}

/// The kind a listed detector's findings have (implemented by the list).
pub(crate) trait Listed {
    const KIND: Kind;
}

/// What a detector is given with an event besides its [`Input`]: the
/// shared socket table (after the event), what the event changed in it, what
/// a pid namespace's end means for it, and whether a connect's destination
/// port is shadowed.
pub struct Ctx<'a> {
    pub sockets: &'a SocketTable,
    pub changes: &'a Changes<'a>,
    pub teardown: Teardown,
    pub shadowed: &'a dyn Fn(u32, u16) -> Option<String>,
}

/// A detector's open incidents, whatever its key.
pub trait IncidentTable {
    fn open_count(&self) -> usize;
    fn has_id(&self, id: &str) -> bool;
    fn rename(&mut self, from: &str, to: &str, now: u64) -> Vec<Finding>;
    fn resolve_all(&mut self, now: u64, summary: &str) -> Vec<Finding>;
    fn set_open_rate(&mut self, n: u32);
    /// Incidents not opened: (the table was full, their user's rate was spent).
    fn not_opened(&self) -> (u64, u64);
}

impl<K: Hash + Eq + Clone> IncidentTable for Incidents<K> {
    fn open_count(&self) -> usize {
        Incidents::open_count(self)
    }
    fn has_id(&self, id: &str) -> bool {
        Incidents::has_id(self, id)
    }
    fn rename(&mut self, from: &str, to: &str, now: u64) -> Vec<Finding> {
        Incidents::rename(self, from, to, now)
    }
    fn resolve_all(&mut self, now: u64, summary: &str) -> Vec<Finding> {
        Incidents::resolve_all(self, now, summary)
    }
    fn set_open_rate(&mut self, n: u32) {
        Incidents::set_open_rate(self, n)
    }
    fn not_opened(&self) -> (u64, u64) {
        (self.overflow, self.suppressed)
    }
}

/// A pure state machine: events and times in, findings out.
pub trait Detector {
    fn kind(&self) -> Kind;
    fn on_event(&mut self, i: &Input, ctx: &Ctx) -> Vec<Finding>;
    /// Deadlines due at `now` (`procs`: the process table, for what a
    /// finding due now names).
    fn on_tick(
        &mut self,
        _now: u64,
        _view: &dyn ContainerView,
        _procs: &dyn Fn(u32) -> Option<crate::world::proctable::Proc>,
    ) -> Vec<Finding> {
        Vec::new()
    }
    /// The events it handles ([`crate::world::domain::bits`]): the
    /// others are not given to it (a fork loop's events went through ten
    /// detectors that had nothing to do with them).
    fn wants(&self) -> u16 {
        crate::world::domain::bits::ALL
    }
    /// The earliest time `on_tick` has something to do.
    fn next_deadline(&self) -> Option<u64> {
        None
    }
    fn incidents(&self) -> &dyn IncidentTable;
    fn incidents_mut(&mut self) -> &mut dyn IncidentTable;
    /// The programs whose next exec can decide one of its findings, when
    /// it has such (see [`super::exec_wakes`]).
    fn exec_wakes(&mut self) -> Option<&mut super::exec_wakes::ExecWakes> {
        None
    }
    /// Forks until this time (kernel ns) can decide one of its findings
    /// (0: none can).
    fn forks_decide_until(&self) -> u64 {
        0
    }
    /// New settings: what comes next uses them; state and incidents stay.
    fn reconfigure(&mut self, cfg: &DetectConfig);
    /// Forget everything (the detector was disabled).
    fn reset(&mut self, cfg: &DetectConfig);
}

/// `impl Detector` for a detector type, from the calls it answers: its
/// event handler (given `self`, the [`Input`] and the [`Ctx`]), when it
/// has deadlines, its tick and its next deadline, when some execs can
/// decide its findings, the field that lists their programs, and when some
/// forks can, until when.
macro_rules! detector {
    ($ty:ty, |$s:ident, $i:ident, $ctx:ident| $event:expr $(, tick: |$ts:ident, $tn:ident, $tv:ident $(, $tp:ident)?| $tick:expr)? $(, deadline: |$ds:ident| $dl:expr)? $(, exec_wakes: $wf:ident)? $(, forks_decide: |$fs:ident| $fe:expr)? $(, wants: [$($w:ident),* $(,)?])?) => {
        impl $crate::detect::registry::Detector for $ty {
            fn kind(&self) -> $crate::detect::Kind {
                <$ty as $crate::detect::registry::Listed>::KIND
            }
            fn on_event(
                &mut self,
                $i: &$crate::detect::Input,
                $ctx: &$crate::detect::registry::Ctx,
            ) -> Vec<$crate::detect::Finding> {
                let $s = self;
                $event
            }
            $(fn on_tick(
                &mut self,
                $tn: u64,
                $tv: &dyn $crate::detect::ContainerView,
                _procs: &dyn Fn(u32) -> Option<$crate::world::proctable::Proc>,
            ) -> Vec<$crate::detect::Finding> {
                let $ts = self;
                $(let $tp = _procs;)?
                $tick
            })?
            $(fn next_deadline(&self) -> Option<u64> {
                let $ds = self;
                $dl
            })?
            $(fn exec_wakes(&mut self) -> Option<&mut $crate::detect::exec_wakes::ExecWakes> {
                Some(&mut self.$wf)
            })?
            $(fn forks_decide_until(&self) -> u64 {
                let $fs = self;
                $fe
            })?
            $(fn wants(&self) -> u16 {
                0 $(| $crate::world::domain::bits::$w)*
            })?
            fn incidents(&self) -> &dyn $crate::detect::registry::IncidentTable {
                &self.incidents
            }
            fn incidents_mut(&mut self) -> &mut dyn $crate::detect::registry::IncidentTable {
                &mut self.incidents
            }
            fn reconfigure(&mut self, cfg: &$crate::detect::DetectConfig) {
                <$ty>::reconfigure(self, cfg)
            }
            fn reset(&mut self, cfg: &$crate::detect::DetectConfig) {
                *self = <$ty>::new(cfg);
            }
        }
    };
}

pub(crate) use detector;
