//! The configuration file (TOML): `[detect]` and `[detect.<finding>]`
//! (thresholds, windows, singletons, allow-lists), `[feed]` and `[metrics]`
//! (used by `watcher run`). Unknown keys and invalid values are refused with
//! the file, line and column.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    detect::DetectConfig,
    output::{alerts::AlertsConfig, otlp::OtlpConfig},
};

/// Config files larger than this are refused (nobody writes one by hand).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// `[feed]`: where records go (`watcher run`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedConfig {
    /// Record types written: `["finding"]`, or `["all"]`, or a list of types.
    pub types: Vec<String>,
    pub stdout: bool,
    pub file: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub syslog: bool,
    /// The local syslog socket.
    pub syslog_socket: PathBuf,
    /// Records queued per sink (stdout, file, syslog) before a stalled one drops.
    pub sink_queue: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            types: vec!["finding".into(), "loss".into()],
            stdout: true,
            file: None,
            socket: None,
            syslog: false,
            syslog_socket: PathBuf::from("/dev/log"),
            sink_queue: crate::output::lane::LANE_QUEUE,
        }
    }
}

/// `[metrics]`: Prometheus text format over HTTP (`watcher run`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to listen on; empty disables.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// `[health]`: the daemon's check of its own pipeline.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Send a canary event through the pipeline this often (seconds).
    pub canary_interval_s: f64,
    /// The pipeline is blind when a canary takes longer than this (seconds).
    pub canary_deadline_s: f64,
    /// Where the daemon keeps its status for `watcher check --daemon`.
    pub status_file: PathBuf,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            canary_interval_s: 5.0,
            canary_deadline_s: 2.0,
            status_file: PathBuf::from("/run/watcher/status.json"),
        }
    }
}

/// `[daemon]`: how `watcher run` runs.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// The daemon's nice value (-20 … 19), set at start: below 0 so that a
    /// local user's flood of runnable processes does not make a finding
    /// wait for a CPU (the workers that walk `/proc` and enter namespaces
    /// run at 10 whatever this is).
    pub nice: i32,
}

/// The default `[daemon] nice`: measured under a local user's floods
/// (tests/hostile.rs), the lowest that kept a port conflict elsewhere
/// under 10 ms in four of five; -20 cost watcher more CPU under a fork
/// bomb than it saved.
pub const DEFAULT_NICE: i32 = -10;

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig { nice: DEFAULT_NICE }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub detect: DetectConfig,
    pub feed: FeedConfig,
    pub metrics: MetricsConfig,
    pub health: HealthConfig,
    pub alerts: AlertsConfig,
    pub otlp: OtlpConfig,
    pub daemon: DaemonConfig,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

impl Config {
    /// Parse config text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().replace('\n', " "),
            }
        })
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let len = std::fs::metadata(path)
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?
            .len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: 1,
                column: 1,
                message: format!(
                    "the file is {len} bytes; a watcher config is at most {MAX_CONFIG_BYTES} bytes"
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let c = Config::parse(&text, path)?;
        c.validate(&text, path)?;
        Ok(c)
    }

    /// Checks across keys that serde cannot express; errors name the key's line.
    pub fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let at = |key: &str, message: String| {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key))
                .map(|i| i + 1)
                .unwrap_or(1);
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column: 1,
                message,
            }
        };
        crate::output::sinks::Types::new(&self.feed.types).map_err(|m| at("types", m))?;
        if !(1..=1_000_000).contains(&self.feed.sink_queue) {
            return Err(at(
                "sink_queue",
                format!(
                    "sink_queue = {} is out of range (1 … 1000000 records)",
                    self.feed.sink_queue
                ),
            ));
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(at(
                "listen",
                format!(
                    "`{}` is not an address:port (e.g. \"127.0.0.1:9464\"); empty disables metrics",
                    self.metrics.listen
                ),
            ));
        }
        let a = &self.alerts;
        for url in &a.alertmanager {
            crate::output::alerts::endpoint(url).map_err(|m| at("alertmanager", m))?;
        }
        if !(a.repost_s.is_finite() && (1.0..=3600.0).contains(&a.repost_s)) {
            return Err(at(
                "repost_s",
                format!(
                    "repost_s = {} is not between 1 and 3600 seconds",
                    a.repost_s
                ),
            ));
        }
        if !(a.timeout_s.is_finite() && (0.1..=60.0).contains(&a.timeout_s)) {
            return Err(at(
                "timeout_s",
                format!(
                    "timeout_s = {} is not between 0.1 and 60 seconds",
                    a.timeout_s
                ),
            ));
        }
        for (kind, sev) in &a.severity {
            if !crate::detect::Kind::ALL.iter().any(|k| k.as_str() == kind) {
                let kinds: Vec<&str> = crate::detect::Kind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect();
                return Err(at(
                    kind,
                    format!("`{kind}` is not a finding kind ({})", kinds.join(", ")),
                ));
            }
            if !crate::output::alerts::SEVERITIES.contains(&sev.as_str()) {
                return Err(at(
                    kind,
                    format!(
                        "severity `{sev}` for {kind}: use one of {}",
                        crate::output::alerts::SEVERITIES.join(", ")
                    ),
                ));
            }
        }
        for name in a.labels.keys() {
            let ok = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let ours = [
                "alertname",
                "kind",
                "severity",
                "host",
                "program",
                "container",
                "incident",
            ];
            if !ok || ours.contains(&name.as_str()) {
                return Err(at(
                    name,
                    format!("`{name}` cannot be an extra label (a Prometheus label name, not one of {})", ours.join(", ")),
                ));
            }
        }
        // The file's own values (the environment is read at start).
        crate::output::otlp::Settings::resolve(&self.otlp, &|_| None)
            .map_err(|(key, m)| at(key, m))?;
        let h = &self.health;
        if !(h.canary_interval_s.is_finite()
            && h.canary_interval_s >= 0.1
            && h.canary_interval_s <= 3600.0)
        {
            return Err(at(
                "canary_interval_s",
                format!(
                    "{} is not between 0.1 and 3600 seconds",
                    h.canary_interval_s
                ),
            ));
        }
        if !(-20..=19).contains(&self.daemon.nice) {
            return Err(at(
                "nice",
                format!("{} is not a nice value (-20 … 19)", self.daemon.nice),
            ));
        }
        if !(h.canary_deadline_s.is_finite()
            && h.canary_deadline_s >= 0.05
            && h.canary_deadline_s <= 600.0)
        {
            return Err(at(
                "canary_deadline_s",
                format!(
                    "{} is not between 0.05 and 600 seconds",
                    h.canary_deadline_s
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s, Path::new("w.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_is_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.detect.zombie_accumulation.threshold, 5);
        assert_eq!(c.detect.zombie.max_age_s, 10.0);
        assert_eq!(c.detect.respawn_storm.restarts, 5);
        assert_eq!(c.detect.duplicate_instances.limit, 10);
        assert_eq!(c.detect.fork_storm.rate_per_s, 500);
        assert_eq!(c.detect.connect_failures.failures, 10);
        assert_eq!(c.detect.allow_ports, vec![5353]);
    }

    #[test]
    fn sets_thresholds_singletons_and_allow_lists() {
        let c = parse(
            "[detect]\nallow_ports = [5353, 9999]\nallow_programs = [\"chronyd\"]\nidentity = \"exe\"\n\
             [detect.zombie]\nmax_age_s = 2.5\n[detect.duplicate_instances]\nsingletons = [\"cron\"]\n\
             [detect.fork_storm]\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(c.detect.zombie.max_age_s, 2.5);
        assert_eq!(
            c.detect.duplicate_instances.singletons,
            vec!["cron".to_string()]
        );
        assert!(!c.detect.fork_storm.enabled);
        assert_eq!(c.detect.allow_programs, vec!["chronyd".to_string()]);
    }

    #[test]
    fn cross_key_checks_name_the_line() {
        let check = |s: &str| {
            let c = Config::parse(s, Path::new("w.toml")).unwrap();
            c.validate(s, Path::new("w.toml"))
                .map_err(|e| e.to_string())
        };
        assert!(check("").is_ok());
        let e = check("[feed]\nstdout = true\ntypes = [\"findings\"]\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:3:") && e.contains("unknown record type `findings`"),
            "{e}"
        );
        let e = check("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("not an address"),
            "{e}"
        );
        assert!(check("[metrics]\nlisten = \"\"\n").is_ok());
        let e = check("[daemon]\nnice = -21\n").unwrap_err();
        assert!(
            e.contains(":2:") && e.contains("-21 is not a nice value"),
            "{e}"
        );
        assert_eq!(parse("").unwrap().daemon.nice, DEFAULT_NICE);
        let e = check("[health]\ncanary_interval_s = 0\n").unwrap_err();
        assert!(e.starts_with("w.toml:2:"), "{e}");
        // [alerts]
        assert!(check("[alerts]\nalertmanager = [\"http://127.0.0.1:9093\", \"http://am2:9093/am\"]\n[alerts.severity]\nzombie = \"none\"\n[alerts.labels]\nenv = \"prod\"\n").is_ok());
        let e = check("[alerts]\nalertmanager = [\"https://am:9093\"]\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("https is not supported"),
            "{e}"
        );
        let e = check("[alerts]\nalertmanager = [\"127.0.0.1:9093\"]\n").unwrap_err();
        assert!(e.starts_with("w.toml:2:") && e.contains("http://"), "{e}");
        let e = check("[alerts]\nrepost_s = 0\n").unwrap_err();
        assert!(e.starts_with("w.toml:2:"), "{e}");
        let e = check("[alerts.severity]\nport_conflict = \"page\"\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("critical, warning, info, none"),
            "{e}"
        );
        let e = check("[alerts.severity]\nport_conflicts = \"critical\"\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("not a finding kind"),
            "{e}"
        );
        let e = check("[alerts.labels]\nseverity = \"x\"\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("extra label"),
            "{e}"
        );
        let e = parse("[alerts]\nalertmanagers = []\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("unknown field"),
            "{e}"
        );
        // [otlp]
        assert!(check("[otlp]\nendpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\"\ntypes = [\"all\"]\ncompression = \"none\"\ntimeout_s = 2\n[otlp.headers]\nauthorization = \"Bearer x\"\n").is_ok());
        let e =
            check("[otlp]\nendpoint = \"http://c:4318\"\nprotocol = \"http/json\"\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:3:") && e.contains("http/protobuf"),
            "{e}"
        );
        let e = check("[otlp]\nendpoint = \"https://c:4318\"\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("https is not supported"),
            "{e}"
        );
        let e =
            check("[otlp]\nendpoint = \"http://c:4318\"\ntypes = [\"findings\"]\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:3:") && e.contains("[otlp] types"),
            "{e}"
        );
        let e = parse("[otlp]\nendpoints = \"x\"\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("unknown field"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_and_line() {
        let e = parse("[detect]\n\n[detect.zombie]\nmax_age = 3\n").unwrap_err();
        assert!(e.starts_with("w.toml:4:"), "{e}");
        assert!(e.contains("unknown field `max_age`"), "{e}");
        let e = parse("[detect.zombie_accumulation]\nthreshold = 0\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("at least 1"),
            "{e}"
        );
        let e = parse("[detect.zombie]\nmax_age_s = -1\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:2:") && e.contains("not a duration"),
            "{e}"
        );
        let e = parse("[detect]\nallow_ports = [70000]\n").unwrap_err();
        assert!(e.starts_with("w.toml:2:"), "{e}");
        let e = parse("[detect.respawn_storm]\nwindow_s = \"60\"\n").unwrap_err();
        assert!(e.starts_with("w.toml:2:"), "{e}");
        let e = parse("[nonsense]\n").unwrap_err();
        assert!(
            e.starts_with("w.toml:1:") && e.contains("unknown field"),
            "{e}"
        );
        let e = parse("[detect\n").unwrap_err();
        assert!(e.starts_with("w.toml:1:"), "{e}");
    }
}
