//! The one detector trait and the registry: every detector answers the same
//! calls (an event, a deadline, its next deadline, its incidents, new
//! settings), so [`super::Detectors`] fans out in one loop over
//! [`super::Detectors::registry`] instead of once per detector per call.
//! Adding a detector is its module, its `impl Detector`, and one line in the
//! registry.
use std::hash::Hash;

use super::{
    incident::Incidents,
    sockets::{Changes, SocketTable},
    ContainerView, DetectConfig, Finding, Input, Kind, Teardown,
};

/// What a detector is given with an event besides its [`Input`]: the
/// shared socket table (after the event), what the event changed in it, what
/// a pid namespace's end means for it, and whether a connect's destination
/// port is shadowed.
pub struct Ctx<'a> {
    pub sockets: &'a SocketTable,
    pub changes: &'a Changes,
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
    /// Deadlines due at `now`.
    fn on_tick(&mut self, _now: u64, _view: &dyn ContainerView) -> Vec<Finding> {
        Vec::new()
    }
    /// The earliest time `on_tick` has something to do.
    fn next_deadline(&self) -> Option<u64> {
        None
    }
    fn incidents(&self) -> &dyn IncidentTable;
    fn incidents_mut(&mut self) -> &mut dyn IncidentTable;
    /// New settings: what comes next uses them; state and incidents stay.
    fn reconfigure(&mut self, cfg: &DetectConfig);
    /// Forget everything (the detector was disabled).
    fn reset(&mut self, cfg: &DetectConfig);
}

macro_rules! detector {
    ($ty:ty, $kind:expr, |$s:ident, $i:ident, $ctx:ident| $event:expr $(, tick: |$ts:ident, $tn:ident, $tv:ident| $tick:expr)? $(, deadline: |$ds:ident| $dl:expr)?) => {
        impl Detector for $ty {
            fn kind(&self) -> Kind {
                $kind
            }
            fn on_event(&mut self, $i: &Input, $ctx: &Ctx) -> Vec<Finding> {
                let $s = self;
                $event
            }
            $(fn on_tick(&mut self, $tn: u64, $tv: &dyn ContainerView) -> Vec<Finding> {
                let $ts = self;
                $tick
            })?
            $(fn next_deadline(&self) -> Option<u64> {
                let $ds = self;
                $dl
            })?
            fn incidents(&self) -> &dyn IncidentTable {
                &self.incidents
            }
            fn incidents_mut(&mut self) -> &mut dyn IncidentTable {
                &mut self.incidents
            }
            fn reconfigure(&mut self, cfg: &DetectConfig) {
                <$ty>::reconfigure(self, cfg)
            }
            fn reset(&mut self, cfg: &DetectConfig) {
                *self = <$ty>::new(cfg);
            }
        }
    };
}

use super::{
    address_unavailable::AddressUnavailable, connect_failures::ConnectFailures,
    duplicate_instances::DuplicateInstances, fork_storm::ForkStorm, port_conflict::PortConflict,
    port_shadowed::PortShadowed, ports_exhausted::PortsExhausted, respawn_storm::RespawnStorm,
    zombie::Zombies, zombie_accumulation::ZombieAccumulation,
};

detector!(PortConflict, Kind::PortConflict, |s, i, c| PortConflict::on_event(s, i, c.sockets, c.changes),
    tick: |s, now, _v| PortConflict::on_tick(s, now), deadline: |s| PortConflict::next_deadline(s));
detector!(PortShadowed, Kind::PortShadowed, |s, i, c| {
    PortShadowed::on_event(s, i, c.sockets, c.changes)
});
detector!(AddressUnavailable, Kind::AddressUnavailable, |s, i, _c| {
    AddressUnavailable::on_event(s, i)
});
detector!(ZombieAccumulation, Kind::ZombieAccumulation, |s, i, c| ZombieAccumulation::on_event(s, i, c.teardown),
    tick: |s, now, v| ZombieAccumulation::on_tick(s, now, v), deadline: |s| ZombieAccumulation::next_deadline(s));
detector!(Zombies, Kind::Zombie, |s, i, c| Zombies::on_event(s, i, c.teardown),
    tick: |s, now, v| Zombies::on_tick(s, now, v), deadline: |s| Zombies::next_deadline(s));
detector!(RespawnStorm, Kind::RespawnStorm, |s, i, _c| RespawnStorm::on_event(s, i),
    tick: |s, now, v| RespawnStorm::on_tick(s, now, v), deadline: |s| RespawnStorm::next_deadline(s));
detector!(DuplicateInstances, Kind::DuplicateInstances, |s, i, _c| {
    DuplicateInstances::on_event(s, i)
});
detector!(ForkStorm, Kind::ForkStorm, |s, i, _c| ForkStorm::on_event(s, i),
    tick: |s, now, _v| ForkStorm::on_tick(s, now), deadline: |s| ForkStorm::next_deadline(s));
detector!(ConnectFailures, Kind::ConnectFailures, |s, i, c| ConnectFailures::on_event(s, i, c.shadowed),
    tick: |s, now, _v| ConnectFailures::on_tick(s, now), deadline: |s| ConnectFailures::next_deadline(s));
detector!(PortsExhausted, Kind::PortsExhausted, |s, i, _c| {
    PortsExhausted::on_event(s, i)
});
