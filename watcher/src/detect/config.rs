//! Detector settings: the `[detect]` table of the config file and its
//! `[detect.<finding>]` sub-tables. Defaults are chosen to be quiet on a
//! healthy host; invalid values are refused while parsing, so the error
//! carries the file's line.
use serde::{de::Error as _, Deserialize, Deserializer, Serialize};

use super::Kind;
use crate::world::proctable::{Identity, Proc};

fn at_least_1<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 0 {
        return Err(D::Error::custom("must be at least 1"));
    }
    Ok(v)
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v <= 0.0 || v > 86_400.0 * 365.0 {
        return Err(D::Error::custom(format!(
            "{v} is not a duration in seconds (more than 0, at most a year)"
        )));
    }
    Ok(v)
}

fn seconds_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&v) {
        return Err(D::Error::custom(format!(
            "{v} is not a duration in seconds (0 to a year)"
        )));
    }
    Ok(v)
}

fn capacity<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = u64::deserialize(d)?;
    if !(16..=10_000_000).contains(&v) {
        return Err(D::Error::custom(format!(
            "{v} is out of range (16 to 10000000)"
        )));
    }
    Ok(v as usize)
}

pub fn ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

/// `exe_and_args` (default) or `exe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdentityCfg {
    #[default]
    ExeAndArgs,
    Exe,
}

impl From<IdentityCfg> for Identity {
    fn from(c: IdentityCfg) -> Identity {
        match c {
            IdentityCfg::ExeAndArgs => Identity::ExeAndArgs,
            IdentityCfg::Exe => Identity::Exe,
        }
    }
}

macro_rules! section {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty = $def:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Whether this detector runs.
            pub enabled: bool,
            $($(#[$fm])* pub $field: $ty,)*
        }
        impl Default for $name {
            fn default() -> Self {
                $name { enabled: true, $($field: $def,)* }
            }
        }
    };
}

section!(
    /// `[detect.port_conflict]`
    PortConflictCfg {
        /// After the failing process exits, wait this long for a retry before resolving.
        #[serde(deserialize_with = "seconds_or_zero")]
        resolve_after_exit_s: f64 = 30.0,
    }
);
section!(
    /// `[detect.port_shadowed]`
    PortShadowedCfg {}
);
section!(
    /// `[detect.address_unavailable]`
    AddressUnavailableCfg {}
);
section!(
    /// `[detect.zombie_accumulation]`
    ZombieAccumulationCfg {
        /// Unreaped children of one parent that open the finding.
        #[serde(deserialize_with = "at_least_1")]
        threshold: u32 = 5,
        /// A parent that is reaping — inside wait() when its child exits, or reaped one
        /// within this long — gets this long to bring the count back below the threshold
        /// (a master whose workers all exit at once) before the finding opens.
        #[serde(deserialize_with = "seconds_or_zero")]
        reaping_grace_s: f64 = 1.0,
    }
);
section!(
    /// `[detect.zombie]`
    ZombieCfg {
        /// A child unreaped this long is a finding (fires at the deadline).
        #[serde(deserialize_with = "seconds")]
        max_age_s: f64 = 10.0,
    }
);
section!(
    /// `[detect.respawn_storm]`
    RespawnStormCfg {
        /// Consecutive crash → restart cycles of one program that open the finding.
        #[serde(deserialize_with = "at_least_1")]
        restarts: u32 = 5,
        /// The longest delay between a crash and its restart that still continues
        /// a loop once its restarter backs off (Docker doubles up to 1 min,
        /// Kubernetes up to 5 min).
        #[serde(deserialize_with = "seconds")]
        window_s: f64 = 330.0,
        /// A life shorter than this that ends abnormally counts as a crash; a
        /// restarted instance that lives this long ends the loop.
        #[serde(deserialize_with = "seconds")]
        short_life_s: f64 = 30.0,
        /// The first restart must follow its crash within this long.
        #[serde(deserialize_with = "seconds")]
        restart_within_s: f64 = 30.0,
        /// A loop of at least this many crashes whose restarter then stops
        /// restarting it (systemd's StartLimitBurst, supervisord's startretries)
        /// is reported: the program is down.
        #[serde(deserialize_with = "at_least_1")]
        gave_up_after: u32 = 3,
        /// Programs whose non-zero exit code is an answer, not a crash: probes,
        /// tests, compilers (name, basename or path; a trailing `*` matches any rest).
        answer_programs: Vec<String> = [
            "grep", "egrep", "fgrep", "zgrep", "rg", "pgrep", "pkill", "pidof", "test", "[", "false", "diff", "cmp",
            "which", "id", "getent", "timeout", "ping", "ping6", "fping", "arping", "curl", "wget", "nc", "ncat",
            "netcat", "socat", "telnet", "ss", "dig", "host", "nslookup", "mountpoint", "flock", "kill", "systemctl",
            "ls", "stat", "find", "expr", "check_*", "pg_isready", "mysqladmin", "redis-cli", "sha256sum",
            "md5sum", "cc", "gcc", "g++", "c++", "clang", "clang++", "rustc", "javac", "go", "tsc", "make", "cargo",
            "ld", "as",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        /// Senders whose fatal signal is a stop, not a crash, besides the
        /// process's parent and ancestors: supervisors, container runtimes, and
        /// the tools a person stops a process with.
        stoppers: Vec<String> = [
            "systemd", "init", "supervisord", "runsv", "runsvdir", "s6-supervise", "containerd-shim*", "runc", "crun",
            "conmon", "dockerd", "containerd", "docker-init", "tini", "dumb-init", "kubelet", "monit", "circusd",
            "kill", "pkill", "killall", "skill", "timeout", "bash", "sh", "dash", "zsh", "fish", "ash", "ksh",
            "busybox", "sudo", "su", "tmux: server", "screen",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    }
);
section!(
    /// `[detect.ports_exhausted]`
    PortsExhaustedCfg {}
);
section!(
    /// `[detect.duplicate_instances]`
    DuplicateInstancesCfg {
        /// Live instances of one program above this open the finding.
        #[serde(deserialize_with = "at_least_1")]
        limit: u32 = 10,
        /// Programs that must run once (limit 1): name, basename or path.
        singletons: Vec<String> = Vec::new(),
    }
);
section!(
    /// `[detect.fork_storm]`
    ForkStormCfg {
        /// Children per second from one process…
        #[serde(deserialize_with = "at_least_1")]
        rate_per_s: u32 = 500,
        /// …sustained this many seconds.
        #[serde(deserialize_with = "at_least_1")]
        sustain_s: u32 = 2,
        /// Or: live descendants of one process growing by more than this…
        #[serde(deserialize_with = "at_least_1")]
        growth: u32 = 1000,
        /// …within this many seconds.
        #[serde(deserialize_with = "seconds")]
        growth_window_s: f64 = 2.0,
    }
);
section!(
    /// `[detect.connect_failures]`
    ConnectFailuresCfg {
        /// Failed connects to one destination within `window_s` that open the finding.
        #[serde(deserialize_with = "at_least_1")]
        failures: u32 = 10,
        #[serde(deserialize_with = "seconds")]
        window_s: f64 = 10.0,
    }
);

/// `[detect]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// At most one `update` record per incident per this many seconds.
    #[serde(deserialize_with = "seconds_or_zero")]
    pub update_interval_s: f64,
    /// What makes two processes the same program.
    pub identity: IdentityCfg,
    /// Ports never reported (mDNS on 5353 by default).
    pub allow_ports: Vec<u16>,
    /// Programs never reported (name, basename or path).
    pub allow_programs: Vec<String>,
    /// Open incidents kept per finding kind.
    #[serde(deserialize_with = "capacity")]
    pub max_incidents: usize,
    /// Socket holders tracked.
    #[serde(deserialize_with = "capacity")]
    pub max_sockets: usize,
    /// Per-finding state kept (children, programs, destinations).
    #[serde(deserialize_with = "capacity")]
    pub max_tracked: usize,
    /// New incidents one user may open per second, per kind (0: no limit):
    /// beyond it they are counted (`watcher_incidents_not_opened_total`), not opened.
    pub max_opens_per_user_s: u32,
    pub port_conflict: PortConflictCfg,
    pub port_shadowed: PortShadowedCfg,
    pub address_unavailable: AddressUnavailableCfg,
    pub zombie_accumulation: ZombieAccumulationCfg,
    pub zombie: ZombieCfg,
    pub respawn_storm: RespawnStormCfg,
    pub duplicate_instances: DuplicateInstancesCfg,
    pub fork_storm: ForkStormCfg,
    pub connect_failures: ConnectFailuresCfg,
    pub ports_exhausted: PortsExhaustedCfg,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            update_interval_s: 10.0,
            identity: IdentityCfg::default(),
            allow_ports: vec![5353],
            allow_programs: Vec::new(),
            max_incidents: 4096,
            max_sockets: 65_536,
            max_tracked: 65_536,
            max_opens_per_user_s: crate::detect::incident::OPENS_PER_USER_PER_SECOND,
            port_conflict: Default::default(),
            port_shadowed: Default::default(),
            address_unavailable: Default::default(),
            zombie_accumulation: Default::default(),
            zombie: Default::default(),
            respawn_storm: Default::default(),
            duplicate_instances: Default::default(),
            fork_storm: Default::default(),
            connect_failures: Default::default(),
            ports_exhausted: Default::default(),
        }
    }
}

/// A name from the config matches a process by comm, executable path, or executable basename.
pub fn names_match(names: &[String], p: &Proc) -> bool {
    crate::world::proctable::name_matches(names, &p.comm, p.exe.as_deref())
}

impl DetectConfig {
    pub fn enabled(&self, k: Kind) -> bool {
        match k {
            Kind::PortConflict => self.port_conflict.enabled,
            Kind::PortShadowed => self.port_shadowed.enabled,
            Kind::AddressUnavailable => self.address_unavailable.enabled,
            Kind::ZombieAccumulation => self.zombie_accumulation.enabled,
            Kind::Zombie => self.zombie.enabled,
            Kind::RespawnStorm => self.respawn_storm.enabled,
            Kind::DuplicateInstances => self.duplicate_instances.enabled,
            Kind::ForkStorm => self.fork_storm.enabled,
            Kind::ConnectFailures => self.connect_failures.enabled,
            Kind::PortsExhausted => self.ports_exhausted.enabled,
        }
    }

    pub fn update_interval_ns(&self) -> u64 {
        ns(self.update_interval_s)
    }

    pub fn allowed_program(&self, p: &Proc) -> bool {
        names_match(&self.allow_programs, p)
    }

    pub fn allowed_port(&self, port: u16) -> bool {
        self.allow_ports.contains(&port)
    }
}
