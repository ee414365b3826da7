//! The counters of a run: written by the pipeline, read by the metrics
//! endpoint, the status file and the closing summary.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

/// Counters of a run, shared with the metrics endpoint.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    /// The Alertmanager sink's counters, when it runs.
    pub alerts: Option<std::sync::Arc<crate::output::alerts::AlertStats>>,
    /// The OTLP sink's counters, when it runs.
    pub otlp: Option<std::sync::Arc<crate::output::otlp::OtlpStats>>,
    pub events_by_type: BTreeMap<&'static str, u64>,
    pub lost_by_type: BTreeMap<&'static str, u64>,
    pub lost: u64,
    /// Inserts the kernel side's full tables refused, by table.
    pub table_full: BTreeMap<&'static str, u64>,
    /// Runs of each program the kernel skipped (another program was running on its CPU).
    pub program_skips: BTreeMap<String, u64>,
    /// Runs of each attached program and their time in ns (while
    /// `kernel.bpf_stats_enabled` is 1).
    pub program_runs: BTreeMap<String, (u64, u64)>,
    /// Latency per pipeline stage.
    pub stages: crate::output::stages::Stages,
    /// The kernel side's tables at the last sweep.
    pub kernel_tables: BTreeMap<&'static str, crate::kernel::tables::TableState>,
    pub decode_errors: u64,
    pub findings: BTreeMap<(&'static str, &'static str), u64>,
    pub open_incidents: BTreeMap<&'static str, u64>,
    /// Incidents not opened per kind: (the table was full, their user's rate was spent).
    pub not_opened: BTreeMap<&'static str, (u64, u64)>,
    pub processes: u64,
    pub sockets: u64,
    pub socket_lookups: u64,
    pub socket_lookups_skipped: u64,
    /// `ports_exhausted` summaries that waited for a slot (namespaces
    /// failing together: one walk of the kernel's TCP table at a time).
    pub port_summaries_delayed: u64,
    /// Exec records whose command line was longer than the kernel's cap
    /// (`--args-bytes`): kept cut, and said to be (`exec.args_truncated`).
    pub command_lines_cut: u64,
    /// Socket lookups answered from the kernel's socket table and the inodes
    /// bind and listen records carried, no `/proc` (on a worker; on the
    /// pipeline's thread with `confirm_before_open`).
    pub socket_lookups_by_inode: u64,
    /// Lookups a namespace's helper did not answer within the deadline (or could not enter).
    pub socket_lookups_unanswered: u64,
    /// Containers known (id → name, image).
    pub containers: u64,
    /// Programs whose execs wake the reader at once (the kernel's
    /// `EXEC_WAKE`), and whether every exec does because they did not fit.
    pub exec_wake_programs: u64,
    pub exec_wake_all: bool,
    /// Event records written without their container's name (the runtime did not answer in time).
    pub container_names_late: u64,
    /// Reconciliations with /proc after losses; processes they corrected;
    /// held findings they showed false (never written).
    pub reconciliations: u64,
    pub confirmations: u64,
    pub reconciled_processes: u64,
    pub reconciled_sockets: u64,
    pub findings_withdrawn: u64,
    pub process_evictions: u64,
    pub socket_evictions: u64,
    pub new_parents_told: u64,
    pub new_parents_asked: u64,
    pub records_written: u64,
    /// Records a sink could not take (per sink name).
    pub sink_drops: BTreeMap<String, u64>,
    /// Urgent records a sink's lane let the pipeline write at once (per sink name).
    pub sink_direct: BTreeMap<String, u64>,
    /// Consumers connected to the feed socket now (None: no socket).
    pub socket_consumers: Option<u64>,
    /// Per sink: a line offered to its queue → written by its thread.
    pub sink_latency: BTreeMap<String, crate::output::stages::Histogram>,
    pub healthy: bool,
    pub canary_ok: u64,
    pub canary_missed: u64,
    /// Latest canary round trip, seconds.
    pub canary_latency_s: f64,
    pub started: Option<Instant>,
}

pub(crate) type SharedStats = Arc<Mutex<Stats>>;
