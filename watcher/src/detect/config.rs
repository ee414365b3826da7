//! Detector settings: the `[detect]` table of the config file and its
//! `[detect.<finding>]` sub-tables. Defaults are chosen to be quiet on a
//! healthy host; invalid values are refused while parsing, so the error
//! carries the file's line.
use serde::{de::Error as _, Deserialize, Deserializer, Serialize};

use super::{
    registry::{Declared, Section},
    Kind,
};
use crate::world::proctable::{Identity, Proc};

pub(crate) fn at_least_1<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 0 {
        return Err(D::Error::custom("must be at least 1"));
    }
    Ok(v)
}

pub(crate) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v <= 0.0 || v > 86_400.0 * 365.0 {
        return Err(D::Error::custom(format!(
            "{v} is not a duration in seconds (more than 0, at most a year)"
        )));
    }
    Ok(v)
}

pub(crate) fn seconds_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&v) {
        return Err(D::Error::custom(format!(
            "{v} is not a duration in seconds (0 to a year)"
        )));
    }
    Ok(v)
}

pub(crate) fn capacity<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = u64::deserialize(d)?;
    if !(16..=10_000_000).contains(&v) {
        return Err(D::Error::custom(format!(
            "{v} is out of range (16 to 10000000)"
        )));
    }
    Ok(v as usize)
}

pub(crate) fn ns(secs: f64) -> u64 {
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

/// A detector's `[detect.<name>]` section: its fields with their defaults,
/// and `enabled` (true unless the file says otherwise). Invalid values are
/// refused while parsing with `deserialize_with` (`seconds`, `at_least_1`…).
macro_rules! section {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty = $def:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
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
        impl $crate::detect::registry::Section for $name {
            fn enabled(&self) -> bool {
                self.enabled
            }
        }
    };
}
pub(crate) use section;

/// `[detect]`: the settings every detector shares, then one section per
/// detector (its type declared by the detector, see [`super::registry::Declared`]).
macro_rules! detect_config {
    ($($field:ident: $kind:ident => $ty:ident,)*) => {
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
            /// Hold an open of `zombie`, `zombie_accumulation` or
            /// `duplicate_instances` until `/proc` has confirmed the processes
            /// it names (~0.5–1 ms on a worker) instead of writing it at once
            /// and restating it when `/proc` contradicts it (an end the kernel
            /// side could not report).
            pub confirm_before_open: bool,
            $(pub $field: <super::$field::$ty as Declared>::Config,)*
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
                    confirm_before_open: false,
                    $($field: Default::default(),)*
                }
            }
        }

        impl DetectConfig {
            pub fn enabled(&self, k: Kind) -> bool {
                match k {
                    $(Kind::$kind => Section::enabled(&self.$field),)*
                }
            }
        }
    };
}
super::with_detectors!(detect_config);

/// A name from the config matches a process by comm, executable path, or executable basename.
pub(crate) fn names_match(names: &[String], p: &Proc) -> bool {
    crate::world::proctable::name_matches(names, &p.comm, p.exe.as_deref())
}

impl DetectConfig {
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
