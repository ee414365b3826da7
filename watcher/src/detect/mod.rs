//! Detectors: pure state machines. Each gets kernel events (with the process
//! table's view of the processes involved) and timestamps, and returns
//! findings; deadlines come back through `on_tick`, driven by a timer at
//! `next_deadline`. No I/O, no clock reads: everything they know arrives in
//! an [`Input`], so they are unit-tested with plain event sequences.
//!
//! A finding is one incident: `open` when the pattern is first seen, `update`
//! (rate-limited) while it continues, `resolved` when it clears.
//!
//! ## Adding a detector
//!
//! One file and one line. The file, `detect/<name>.rs`, holds a type that
//! implements [`registry::Detector`] (the calls it answers, usually through
//! the `detector!` macro) and [`registry::Declared`] (its kind's name, its
//! alerts' default severity and advice, and its `[detect.<name>]` section,
//! made with `config::section!`). The line goes into [`with_detectors`]:
//! `<name>: <KindVariant> => <Type>,`. From that list come the module, the
//! [`Kind`] variant and [`Kind::ALL`], the [`Detectors`] field and its place
//! in the order detectors see an event, the `[detect]` config's section,
//! the records' schema of kinds, the alert severity and description, and
//! the metrics' kind labels. What its findings say — the summary sentence
//! and the details — is a facts type in the same file ([`summary::Facts`]).
//! The test `every_listed_kind_is_declared_everywhere` (detect/tests/registry.rs)
//! fails when a kind is missing from what is not made from the list (the
//! docs' list of findings). A detector given every event need say nothing
//! more; one that handles a few kinds lists them (`wants: [Exec, Exited]`
//! at the end of its `detector!` line, names of [`DomainEvent`] variants)
//! and is not called for the others — an event that only changes the
//! socket table (`Ctx::changes`) comes as its own kind, so a detector that
//! reads the changes lists those kinds too, or lists nothing.

/// The one list of detectors, in the order they see an event (the port
/// detectors after the socket table; connect_failures after port_shadowed):
/// `module: Kind variant => type` (the type lives in the module). Used as
/// `with_detectors!(a_macro)`, which gets the list.
macro_rules! with_detectors {
    ($then:ident) => {
        $then! {
            port_conflict: PortConflict => PortConflict,
            port_shadowed: PortShadowed => PortShadowed,
            address_unavailable: AddressUnavailable => AddressUnavailable,
            zombie_accumulation: ZombieAccumulation => ZombieAccumulation,
            zombie: Zombie => Zombies,
            respawn_storm: RespawnStorm => RespawnStorm,
            duplicate_instances: DuplicateInstances => DuplicateInstances,
            fork_storm: ForkStorm => ForkStorm,
            connect_failures: ConnectFailures => ConnectFailures,
            ports_exhausted: PortsExhausted => PortsExhausted,
        }
    };
}
pub(crate) use with_detectors;

pub(crate) mod config;
pub(crate) mod crash;
pub mod exec_wakes;
pub(crate) mod incident;
pub(crate) mod members;
pub(crate) mod registry;
pub(crate) mod room;
pub(crate) mod sockets;
pub(crate) mod summary;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use crate::kernel::clock::Clock;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::world::sockdiag::KernelSocket;
use crate::{
    kernel::decode::KernelEvent,
    world::containers::ContainerInfo,
    world::domain::DomainEvent,
    world::proctable::{Proc, ProcKey},
};
pub use config::DetectConfig;
use sockets::SocketTable;

/// Processes existing at start, by tgid (for the detectors' seeds).
pub type ProcIndex<'a> = foldhash::HashMap<u32, &'a Proc>;

/// Emptied entries a per-parent map may keep beyond twice the entries it
/// indexes before [`sweep_emptied`] drops them.
const EMPTY_SLACK: usize = 64;

/// A per-parent map whose emptied entries stay for the parent's next child
/// (a fork loop's parent has one at a time: nothing given up and taken
/// again at each child), once they outnumber the `tracked` entries it
/// indexes — their parents' exits were not seen, or they have had none
/// left for long: they go, to `spare` (up to `spare_max`) as `reusable`
/// allows. Amortized O(1): more than half the map's entries leave.
pub(crate) fn sweep_emptied<V: Default>(
    map: &mut foldhash::HashMap<u32, V>,
    tracked: usize,
    is_empty: impl Fn(&V) -> bool,
    spare: &mut Vec<V>,
    spare_max: usize,
    reusable: impl Fn(&V) -> bool,
) {
    if map.len() <= 2 * tracked + EMPTY_SLACK {
        return;
    }
    map.retain(|_, v| {
        if !is_empty(v) {
            return true;
        }
        if spare.len() < spare_max && reusable(v) {
            spare.push(std::mem::take(v));
        }
        false
    });
}

/// A finding's kind-specific facts, built once when a detector says them
/// and shared (not copied) by its incident, its finding and its record.
pub type Details = std::sync::Arc<Map<String, Value>>;

/// What the list makes here: the detectors' modules, [`Kind`], and [`Detectors`]'s fields.
macro_rules! declare_detectors {
    ($($field:ident: $kind:ident => $ty:ident,)*) => {
        $(pub(crate) mod $field;)*

        /// The finding kinds of DESIGN.md: one per detector.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($kind,)*
        }

        $(impl registry::Listed for $field::$ty {
            const KIND: Kind = Kind::$kind;
        })*

        impl Kind {
            /// Every kind, in the order its detector sees an event.
            pub const ALL: [Kind; Kind::COUNT] = [$(Kind::$kind,)*];
            pub const COUNT: usize = [$(stringify!($kind),)*].len();

            /// Its name in records, config and alerts (`port_conflict`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$kind => <$field::$ty as registry::Declared>::NAME,)*
                }
            }

            /// Its alerts' severity unless the config says otherwise.
            pub const fn severity(self) -> &'static str {
                match self {
                    $(Kind::$kind => <$field::$ty as registry::Declared>::SEVERITY,)*
                }
            }

            /// What to do about one of its findings.
            pub const fn advice(self) -> &'static str {
                match self {
                    $(Kind::$kind => <$field::$ty as registry::Declared>::ADVICE,)*
                }
            }

            /// Whether its findings are held after a loss until confirmed.
            pub const fn held_after_loss(self) -> bool {
                match self {
                    $(Kind::$kind => <$field::$ty as registry::Declared>::HELD_AFTER_LOSS,)*
                }
            }

            /// The kind named `name` (`port_conflict`).
            pub fn from_name(name: &str) -> Option<Kind> {
                Kind::ALL.into_iter().find(|k| k.as_str() == name)
            }
        }

        /// Every detector, fed in order, sharing the socket table.
        pub struct Detectors {
            pub sockets: SocketTable,
            $(pub $field: $field::$ty,)*
            pub config: DetectConfig,
            /// The kinds `config` enables (a bit per kind, `1 << kind`): read
            /// at every event, set when the config is.
            enabled: u32,
            /// For each event variant (its bit's position), the enabled
            /// detectors that want it (a bit per detector, `Kind::ALL`'s
            /// order): an event goes to those alone, no call to ask the rest.
            routes: [u32; 16],
            /// The programs whose next exec can decide a finding of any
            /// detector (merged from theirs: [`Detectors::exec_wake_changes`]).
            pub exec_wakes: exec_wakes::ExecWakes,
        }

        impl Detectors {
            fn build(config: DetectConfig) -> Detectors {
                use registry::Declared;
                let mut d = Detectors {
                    sockets: SocketTable::new(config.max_sockets),
                    $($field: <$field::$ty as Declared>::new(&config),)*
                    enabled: enabled_kinds(&config),
                    routes: [0; 16],
                    config,
                    exec_wakes: exec_wakes::ExecWakes::new(),
                };
                d.route();
                d
            }

            /// The socket table, and every detector in the order they see an event.
            fn split(&mut self) -> (&SocketTable, [&mut dyn registry::Detector; Kind::COUNT]) {
                (&self.sockets, [$(&mut self.$field as &mut dyn registry::Detector,)*])
            }

            /// One event to the detectors in `route` (a bit per detector,
            /// `Kind::ALL`'s order), each called directly: no table of
            /// trait objects made per event.
            fn dispatch(
                &mut self,
                route: u32,
                i: &Input,
                changes: &sockets::Changes,
                teardown: Teardown,
                shadowed: &dyn Fn(u32, u16) -> Option<String>,
            ) -> Vec<Finding> {
                // (The table is read through `ctx` while each detector, another
                // field, is fed.)
                let ctx = &registry::Ctx {
                    sockets: &self.sockets,
                    changes,
                    teardown,
                    shadowed,
                };
                let mut out = Vec::new();
                let mut left = route;
                while left != 0 {
                    let n = left.trailing_zeros() as usize;
                    left &= left - 1;
                    // (Most events decide nothing: an empty answer is
                    // dropped, not drained into `out`.)
                    let f = match Kind::ALL.get(n) {
                        $(Some(Kind::$kind) => registry::Detector::on_event(&mut self.$field, i, ctx),)*
                        None => continue,
                    };
                    if !f.is_empty() {
                        out.extend(f);
                    }
                }
                out
            }

            /// Every detector, in the order they see an event.
            pub fn registry(&mut self) -> [&mut dyn registry::Detector; Kind::COUNT] {
                self.split().1
            }

            /// [`Detectors::registry`], to read.
            pub fn all(&self) -> [&dyn registry::Detector; Kind::COUNT] {
                [$(&self.$field as &dyn registry::Detector,)*]
            }
        }
    };
}
with_detectors!(declare_detectors);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Open,
    Update,
    Resolved,
}

impl State {
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Update => "update",
            State::Resolved => "resolved",
        }
    }
}

/// A process named by a finding, and its part in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Involved {
    /// e.g. `failing`, `holder`, `parent`, `restarter`, `instance`, `client`.
    pub role: &'static str,
    pub proc: Proc,
    /// The address it bound or connected to, when relevant.
    pub address: Option<String>,
    /// Since when it holds/does it (CLOCK_MONOTONIC ns), when known.
    pub since_ns: Option<u64>,
}

/// One finding record.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    pub state: State,
    /// Stable for the whole incident.
    pub id: String,
    /// What the incident is about (its kind and key, hashed; no time): the
    /// same after a restart of watcher, and for a recurrence.
    pub subject: String,
    /// One sentence a person can act on.
    pub summary: String,
    /// How many times the pattern was seen in this incident.
    pub count: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// When the deciding event happened (the record's `mono_ns`).
    pub at_ns: u64,
    pub processes: Vec<Involved>,
    /// Processes (tgids) the finding counts without naming them all: its
    /// truth rests on them too (a parent's accumulation names 16 zombies
    /// and counts every one).
    pub counted: Vec<u32>,
    /// Kind-specific facts (thresholds, addresses, exit codes…).
    pub details: Details,
}

/// What a detector is given for one kernel event.
pub struct Input<'a> {
    pub ev: &'a KernelEvent,
    /// What the record means (built once, in enrichment): detectors match on
    /// this, not on the wire payload.
    pub event: &'a crate::world::domain::DomainEvent,
    /// The event's process after the event (for a reap: the reaped child as it was).
    pub subject: Option<&'a Proc>,
    /// Its parent (for a reap: the reaper).
    pub parent: Option<&'a Proc>,
    /// For `tcp_state`: the process that owns the socket, learnt from its bind/connect.
    pub owner: Option<&'a Proc>,
    /// Children whose parent exited with this event, and their new parent.
    pub reparented: &'a [(ProcKey, u32)],
    /// For the exit that ends a process: why (built once, in enrichment).
    pub cause: Option<&'a crate::world::cause::Cause>,
    /// The kernel's sockets on the event's port, looked up at this moment
    /// (set for binds the socket table asked to confirm).
    pub kernel_sockets: Option<&'a [KernelSocket]>,
    /// A lookup of live processes by tgid (the process table).
    pub procs: &'a dyn Fn(u32) -> Option<Proc>,
    /// A process's parent pid (the process table), cheaper than `procs`.
    pub ppid_of: &'a dyn Fn(u32) -> Option<u32>,
    /// For wall-clock times in summaries.
    pub clock: &'a Clock,
    /// What is known of containers (names, images, addresses), for summaries.
    pub containers: &'a dyn ContainerView,
}

/// The detectors' read-only view of containers.
pub trait ContainerView {
    fn by_id(&self, id: &str) -> Option<std::sync::Arc<ContainerInfo>>;
    /// The container that has this address on one of its networks.
    fn by_address(&self, ip: IpAddr) -> Option<std::sync::Arc<ContainerInfo>>;
    /// The systemd unit a cgroup id belongs to (`nginx.service`).
    fn unit_of(&self, _cgroup_id: u64) -> Option<std::sync::Arc<str>> {
        None
    }
    /// The running container whose published port `addr:port` is (the runtime's port map).
    fn by_published(
        &self,
        _tcp: bool,
        _addr: IpAddr,
        _port: u16,
    ) -> Option<(
        std::sync::Arc<ContainerInfo>,
        crate::world::containers::Published,
    )> {
        None
    }
}

impl ContainerView for crate::world::containers::Containers {
    fn by_id(&self, id: &str) -> Option<std::sync::Arc<ContainerInfo>> {
        self.peek(id)
    }
    fn by_address(&self, ip: IpAddr) -> Option<std::sync::Arc<ContainerInfo>> {
        crate::world::containers::Containers::by_address(self, ip)
    }
    fn unit_of(&self, cgroup_id: u64) -> Option<std::sync::Arc<str>> {
        self.unit_of_cgroup(cgroup_id)
    }
    fn by_published(
        &self,
        tcp: bool,
        addr: IpAddr,
        port: u16,
    ) -> Option<(
        std::sync::Arc<ContainerInfo>,
        crate::world::containers::Published,
    )> {
        crate::world::containers::Containers::by_published(self, tcp, addr, port)
    }
}

/// A view that knows no container (processes found at start, unit tests).
pub struct NoContainers;

impl ContainerView for NoContainers {
    fn by_id(&self, _id: &str) -> Option<std::sync::Arc<ContainerInfo>> {
        None
    }
    fn by_address(&self, _ip: IpAddr) -> Option<std::sync::Arc<ContainerInfo>> {
        None
    }
}

/// `pid 4121 (python3 app.py)`, and ` in container web (image x)` when it runs in one.
pub fn who_in(p: &Proc, view: &dyn ContainerView) -> String {
    let mut s = who(p);
    if let Some(c) = p.container_id.as_deref().and_then(|id| view.by_id(id)) {
        s.push_str(&format!(" in {}", c.describe()));
    }
    s
}

/// `1.2.3.4:80` / `[::1]:80`.
pub fn addr_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}:{port}"),
        IpAddr::V6(_) => format!("[{ip}]:{port}"),
    }
}

/// The process `key` as the process table has it now (`None` when it is
/// gone, or its pid is another process's now).
pub(crate) fn process(procs: &dyn Fn(u32) -> Option<Proc>, key: ProcKey) -> Option<Proc> {
    procs(key.tgid).filter(|p| p.key == key)
}

/// `pid 4121 (python3 app.py)`.
pub fn who(p: &Proc) -> String {
    let cmd = p.command_line().unwrap_or_else(|| p.comm.to_string());
    let cmd: String = cmd
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(80)
        .collect();
    format!("pid {} ({cmd})", p.key.tgid)
}

/// Milliseconds/seconds for summaries: `30 ms`, `2.5 s`, `3 min`.
pub fn dur(ns: u64) -> String {
    if ns < 1_000_000_000 {
        format!("{} ms", ns / 1_000_000)
    } else if ns < 120_000_000_000 {
        format!("{:.1} s", ns as f64 / 1e9)
    } else {
        format!("{} min", ns / 60_000_000_000)
    }
}

/// What a pid namespace's end means for one event (see [`Detectors::on_event`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Teardown {
    /// This exit is a namespace init's: every zombie of that namespace is reaped by the kernel.
    pub ends: Option<u32>,
    /// This exit belongs to a namespace being torn down: not a zombie to count.
    pub during: bool,
}

/// The kinds `config` enables, a bit per kind (`1 << kind`).
fn enabled_kinds(config: &DetectConfig) -> u32 {
    Kind::ALL
        .iter()
        .filter(|k| config.enabled(**k))
        .fold(0, |m, k| m | 1 << *k as u32)
}

impl Detectors {
    pub fn new(config: DetectConfig) -> Detectors {
        let mut d = Detectors::build(config);
        let rate = d.config.max_opens_per_user_s;
        for det in d.registry() {
            det.incidents_mut().set_open_rate(rate);
        }
        d
    }

    /// Incidents not opened, per kind: (the table was full, their user's rate was spent).
    pub fn not_opened(&self) -> Vec<(Kind, (u64, u64))> {
        self.all()
            .into_iter()
            .map(|d| (d.kind(), d.incidents().not_opened()))
            .collect()
    }

    /// The kernel's word on a pid namespace's end: the exit of its init, and
    /// the exits of the processes it then kills (it stopped allocating pids in
    /// that namespace: inode numbers of namespaces are reused, so this is told
    /// by the kernel per exit, not remembered by number).
    fn teardown(&self, i: &Input) -> Teardown {
        match *i.event {
            DomainEvent::Exited {
                ends_pid_namespace: Some(ns),
                ..
            } => Teardown {
                ends: Some(ns),
                during: true,
            },
            DomainEvent::Exited {
                namespace_dying, ..
            } => Teardown {
                ends: None,
                during: namespace_dying,
            },
            _ => Teardown::default(),
        }
    }

    /// State that exists before the first event: processes (zombies, instances) and sockets.
    pub fn seed(&mut self, procs: &[Proc], sockets: &[KernelSocket], now: u64) -> Vec<Finding> {
        // One index for every parent lookup (a scan per process would be quadratic at start).
        let by_tgid: ProcIndex = procs.iter().map(|p| (p.key.tgid, p)).collect();
        let lookup = |tgid: u32| by_tgid.get(&tgid).map(|p| (*p).clone());
        self.sockets.seed(sockets, &lookup, now);
        let mut out = Vec::new();
        if self.config.enabled(Kind::ZombieAccumulation) {
            out.extend(self.zombie_accumulation.seed(procs, &by_tgid, now));
        }
        if self.config.enabled(Kind::Zombie) {
            self.zombie.seed(procs, &by_tgid, now);
        }
        if self.config.enabled(Kind::DuplicateInstances) {
            out.extend(self.duplicate_instances.seed(procs, &by_tgid, now));
        }
        out
    }

    /// Whether a `port_conflict` incident is open on `key` (a bind failed
    /// there; its restatement reads the port's connections too).
    pub fn conflict_open_on(&self, key: crate::world::sockdiag::PortKey) -> bool {
        self.port_conflict
            .incidents
            .keys()
            .any(|k| (k.1, k.2, k.3) == key)
    }

    /// Whether a bind should be confirmed against the kernel's socket table
    /// before the detectors see it: (network namespace, transport is TCP, port).
    /// A failing bind whose incident would not open (its user has opened
    /// its second's share, or the table is full) is not worth a lookup:
    /// nothing would be written from the answer.
    pub fn wants_confirmation(
        &self,
        event: &DomainEvent,
        me: u32,
        subject: Option<&crate::world::proctable::Proc>,
        now: u64,
    ) -> Option<crate::world::sockdiag::PortKey> {
        let key = self.sockets.wants_confirmation(event, me)?;
        if let (DomainEvent::BindFailed { local, .. }, Some(p)) = (event, subject) {
            if self.port_conflict.would_refuse(p, local, now) {
                return None;
            }
        }
        Some(key)
    }

    pub fn on_event(&mut self, i: &Input) -> Vec<Finding> {
        let teardown = self.teardown(i);
        // Socket ownership first: the port detectors read it.
        let changes = self.sockets.apply(i);
        // Whether a connect's destination port is shadowed (port_shadowed's
        // incidents; it does not change on connect events).
        let dest = match i.event {
            DomainEvent::Connect { dest, .. } => Some((dest.netns, dest.port)),
            _ => None,
        };
        let note =
            dest.and_then(|(n, p)| self.port_shadowed.shadowed_port(n, p).map(|x| (n, p, x)));
        let shadowed = |n: u32, p: u16| {
            note.as_ref()
                .filter(|x| (x.0, x.1) == (n, p))
                .map(|x| x.2.clone())
        };
        let route = self.routes[i.event.bit().trailing_zeros() as usize % 16];
        self.dispatch(route, i, &changes, teardown, &shadowed)
    }

    /// [`Detectors::routes`] from what each detector wants and which are enabled.
    fn route(&mut self) {
        let wants: Vec<u16> = self.all().iter().map(|d| d.wants()).collect();
        for (b, route) in self.routes.iter_mut().enumerate() {
            *route = wants
                .iter()
                .enumerate()
                .filter(|(n, w)| self.enabled & (1 << n) != 0 && **w & (1 << b) != 0)
                .fold(0, |m, (n, _)| m | 1 << n);
        }
    }

    /// Settings from a reloaded configuration. Detectors keep their state and
    /// open incidents (new thresholds apply to what comes next); the open
    /// incidents of a detector the new settings disable are resolved, saying
    /// why, and its state is dropped.
    pub fn reconfigure(&mut self, new: DetectConfig, now: u64) -> Vec<Finding> {
        let old = std::mem::replace(&mut self.config, new.clone());
        self.enabled = enabled_kinds(&new);
        self.route();
        let mut out = Vec::new();
        let mut unwanted = Vec::new();
        for d in self.registry() {
            let kind = d.kind();
            if old.enabled(kind) && !new.enabled(kind) {
                let why = format!(
                    "the {} detector was disabled by a configuration reload",
                    kind.as_str()
                );
                out.extend(d.incidents_mut().resolve_all(now, &why));
                // (What it wanted of the kernel's execs, let go of.)
                if let Some(w) = d.exec_wakes() {
                    let mut gone = w.take();
                    gone.extend(w.names().map(|c| (*c, false)));
                    unwanted.extend(gone);
                }
                d.reset(&new);
            } else {
                d.reconfigure(&new);
            }
            d.incidents_mut().set_open_rate(new.max_opens_per_user_s);
        }
        self.exec_wakes.merge(unwanted);
        out
    }

    /// The changes to the programs whose next exec can decide a finding
    /// since the last call (the detectors' merged: a name wanted by two is
    /// one entry), for the kernel's `EXEC_WAKE` map. O(detectors) when
    /// nothing changed.
    pub fn exec_wake_changes(&mut self) -> Vec<(exec_wakes::Comm, bool)> {
        let mut changes = Vec::new();
        for d in self.registry() {
            if let Some(w) = d.exec_wakes().filter(|w| w.changed()) {
                changes.extend(w.take());
            }
        }
        self.exec_wakes.merge(changes);
        self.exec_wakes.take()
    }

    /// Forks until this time (kernel ns) can decide a finding (the
    /// detectors' latest; 0: none can), for the kernel (`READER`).
    pub fn forks_decide_until(&self) -> u64 {
        self.all()
            .iter()
            .map(|d| d.forks_decide_until())
            .max()
            .unwrap_or(0)
    }

    /// Which of a parent's forks in a second (as the kernel counts them)
    /// can open a `fork_storm` finding: its rate (0: it is off).
    pub fn fork_rate(&self) -> u64 {
        if self.config.enabled(Kind::ForkStorm) {
            self.config.fork_storm.rate_per_s as u64
        } else {
            0
        }
    }

    /// From how many live processes of one name (as the kernel counts
    /// them) an exec of that name can decide a finding: one more than
    /// `duplicate_instances` lets a program run (0: it is off).
    pub fn exec_crowd(&self) -> u64 {
        if self.config.enabled(Kind::DuplicateInstances) {
            self.config.duplicate_instances.limit as u64 + 1
        } else {
            0
        }
    }

    /// A container has been described anew by its runtime (named, usually):
    /// open incidents that named it the old way say so in an update.
    pub fn container_renamed(&mut self, from: &str, to: &str, now: u64) -> Vec<Finding> {
        self.registry()
            .into_iter()
            .flat_map(|d| d.incidents_mut().rename(from, to, now))
            .collect()
    }

    /// The runtime told the host ports it publishes for a container:
    /// conflicts on them name the container now.
    pub fn ports_published(
        &mut self,
        ports: &[(bool, u16)],
        clock: &Clock,
        view: &dyn ContainerView,
        now: u64,
    ) -> Vec<Finding> {
        self.port_conflict
            .published(ports, &self.sockets, clock, view, now)
    }

    /// The kernel's socket table of one port answered after the event that
    /// asked for it had been handled: correct the holders, and restate or
    /// resolve the port incidents that named them.
    #[expect(
        clippy::too_many_arguments,
        reason = "the answer, when it was asked, and the tables a restatement reads"
    )]
    pub fn confirmed_late(
        &mut self,
        key: crate::world::sockdiag::PortKey,
        kernel: &[KernelSocket],
        procs: &dyn Fn(u32) -> Option<Proc>,
        clock: &Clock,
        view: &dyn ContainerView,
        now: u64,
        asked_ns: Option<u64>,
    ) -> Vec<Finding> {
        // A conflict open on the port means a bind failed there: holders the
        // events never showed are real then (see SocketTable::reconcile).
        let failed = self.conflict_open_on(key);
        self.sockets.reconcile(key, kernel, procs, failed, asked_ns);
        let mut out = self
            .port_conflict
            .reconfirm(key, &self.sockets, kernel, clock, view, now);
        if self.config.enabled(Kind::PortShadowed) {
            out.extend(
                self.port_shadowed
                    .reconfirm(key, &self.sockets, view, now, asked_ns),
            );
        }
        out
    }

    /// Deadlines due at `now`.
    pub fn on_tick(
        &mut self,
        now: u64,
        view: &dyn ContainerView,
        procs: &dyn Fn(u32) -> Option<Proc>,
    ) -> Vec<Finding> {
        self.registry()
            .into_iter()
            .flat_map(|d| d.on_tick(now, view, procs))
            .collect()
    }

    /// The earliest time `on_tick` has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.all()
            .into_iter()
            .filter_map(|d| d.next_deadline())
            .min()
    }

    /// Whether the incident `id` of `kind` is open.
    pub fn is_open(&self, kind: Kind, id: &str) -> bool {
        self.all()
            .into_iter()
            .any(|d| d.kind() == kind && d.incidents().has_id(id))
    }

    /// Open incidents by kind.
    pub fn open_incidents(&self) -> Vec<(Kind, usize)> {
        self.all()
            .into_iter()
            .map(|d| (d.kind(), d.incidents().open_count()))
            .collect()
    }
}
