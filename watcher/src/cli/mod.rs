//! Command-line arguments, parsed once and validated into settings.
pub mod check;
pub mod config;
pub mod daemon;
pub mod install;
pub mod top;
pub mod trace;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{cli::trace::TraceSettings, kernel::loader::LoadOptions, output::filter::Filter};

/// Catch port conflicts, zombies, crash loops and unreachable dependencies the
/// instant the kernel sees them (eBPF tracepoints).
///
/// Exit status: 0 success, 1 error (the message says what to do), 2 bad arguments.
#[derive(Debug, Parser)]
#[command(name = "watcher", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream process and socket events live (readable lines, or NDJSON with --json).
    Trace(TraceArgs),
    /// A live full-screen view: open incidents, listeners, event rates per program and container.
    Top(TopArgs),
    /// Run as a daemon: findings as NDJSON to stdout/file/syslog/socket, metrics, SIGHUP reload.
    Run(RunArgs),
    /// Check every prerequisite (privileges, kernel, tracefs, BTF, tracepoints) and say what to do.
    Check(CheckArgs),
    /// Print the JSON Schema of every output record type.
    Schema,
    /// Install the systemd unit and a commented default config; enable and start it where systemd runs.
    Install(InstallArgs),
    /// Stop and remove the systemd unit (the config is kept).
    Uninstall(InstallArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Check the running daemon instead: is it alive, and does its pipeline see events?
    #[arg(long)]
    pub daemon: bool,
    /// The daemon's status file ([health] status_file).
    #[arg(long, value_name = "FILE", default_value = "/run/watcher/status.json")]
    pub status: std::path::PathBuf,
    /// Check this configuration file instead (before a reload or restart): valid, or the line that is not.
    #[arg(long, value_name = "FILE", conflicts_with = "daemon")]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Install below this directory instead of / (for packaging and tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: std::path::PathBuf,
    /// The binary the unit runs (default: this one).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<std::path::PathBuf>,
}

/// Kernel-side settings shared by `trace` and `run`.
#[derive(Debug, clap::Args)]
pub struct KernelArgs {
    /// Records that can decide a finding wake a sleeping reader at once; in a storm of them (past a burst's first 32 drains) the reader drains for them every eighth of this many microseconds, growing to half of it (0: always at once). Execs of programs that cannot decide wake it at most once per CPU per eight of these, and not while it lingers (a re-drain is planned for records that just came).
    #[arg(long, value_name = "US", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub wakeup_us: u64,
    /// Records that cannot decide a finding (forks, reaps, clean exits…) never wake the reader: it drains them every this many milliseconds (every millisecond while records pile up, backing off to this on a trickle; a steady flow in turns of about 256 records, at most 40 ms apart or this when longer; up to four times this on a quiet host). A burst that fills a quarter of a ring wakes the reader before its time.
    #[arg(long, value_name = "MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub bulk_ms: u64,
    /// Ring buffer size in MiB (a power of two), per ring.
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = parse_ring_mib)]
    pub ring_mib: u32,
    /// CPUs per ring buffer: 0 (the default) puts every CPU's records in one ring; N gives each group of N CPUs a ring of its own (at most 8 rings), read together — fewer CPUs contend for one ring's reserve lock on a host with many.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub ring_cpus: u32,
    /// Most processes tracked at once (oldest exited first, then newest, are evicted beyond it).
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(16..=10_000_000))]
    pub max_processes: u64,
    /// Capacity of each of the kernel side's own tables (default: 65536 for exited processes, 16384 for the others); a full table is counted and reported as a loss.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..=4_194_304))]
    pub table_entries: Option<u32>,
    /// Most bytes of a new program's command line kept in its exec record, copied by the kernel at the exec (at most 16384); a longer one is kept cut and says so (`exec.args_truncated`).
    #[arg(long, value_name = "BYTES", default_value_t = watcher_common::ARGS_CAP_DEFAULT, value_parser = clap::value_parser!(u32).range(0..=watcher_common::ARGS_MAX as i64))]
    pub args_bytes: u32,
}

impl KernelArgs {
    pub fn load(&self) -> LoadOptions {
        LoadOptions {
            kinds: Vec::new(),
            wakeup_interval_ns: self.wakeup_us * 1000,
            ring_bytes: self.ring_mib << 20,
            ring_cpus: self.ring_cpus,
            threads: false,
            table_entries: self.table_entries,
            bulk_period: std::time::Duration::from_millis(self.bulk_ms),
            args_bytes: self.args_bytes,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file (a missing file means the documented defaults).
    #[arg(long, value_name = "FILE", default_value = "/etc/watcher/watcher.toml")]
    pub config: std::path::PathBuf,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum RecordType {
    Fork,
    Exec,
    Exit,
    Reap,
    Bind,
    Connect,
    TcpState,
    Loss,
    Finding,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Fork => "fork",
            RecordType::Exec => "exec",
            RecordType::Exit => "exit",
            RecordType::Reap => "reap",
            RecordType::Bind => "bind",
            RecordType::Connect => "connect",
            RecordType::TcpState => "tcp_state",
            RecordType::Loss => "loss",
            RecordType::Finding => "finding",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// One JSON object per line (NDJSON), flushed as written.
    #[arg(long)]
    pub json: bool,
    /// Only records of these processes (for fork also the parent, for reap also the reaper). Repeatable.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only records of processes with this command name (comm or executable basename). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only socket records with this source or destination port. Repeatable.
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only these record types (comma-separated or repeated).
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub types: Vec<RecordType>,
    /// Only records of processes in this container (name, id, or id prefix). Repeatable.
    #[arg(long, value_name = "NAME|ID")]
    pub container: Vec<String>,
    /// Also show thread creations and exits of single threads.
    #[arg(long)]
    pub threads: bool,
    /// Show findings only (and loss records), not the events behind them.
    #[arg(long)]
    pub findings: bool,
    /// Configuration file (TOML): detector thresholds, windows, singletons, allow-lists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Read a running daemon's feed socket ([feed] socket) instead of loading kernel programs of its own.
    #[arg(long, value_name = "PATH")]
    pub attach: Option<std::path::PathBuf>,
    /// Configuration file (TOML) for its own pipeline: detector thresholds, windows, allow-lists.
    #[arg(long, value_name = "FILE", conflicts_with = "attach")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

impl TopArgs {
    pub fn settings(&self) -> top::TopSettings {
        top::TopSettings {
            attach: self.attach.clone(),
            config: self.config.clone(),
            load: self.kernel.load(),
            max_processes: self.kernel.max_processes as usize,
        }
    }
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(1..=1024).contains(&v) || !v.is_power_of_two() {
        return Err(format!("{v} is not a power of two between 1 and 1024"));
    }
    Ok(v)
}

impl TraceArgs {
    pub fn settings(&self) -> TraceSettings {
        TraceSettings {
            json: self.json,
            filter: Filter {
                pids: self.pid.clone(),
                comms: self.comm.clone(),
                ports: self.port.clone(),
                types: if self.findings {
                    vec!["finding".to_owned()]
                } else {
                    self.types.iter().map(|t| t.as_str().to_owned()).collect()
                },
                threads: self.threads,
                containers: self.container.clone(),
            },
            load: LoadOptions {
                threads: self.threads,
                ..self.kernel.load()
            },
            max_processes: self.kernel.max_processes as usize,
            config: self.config.clone(),
        }
    }
}
