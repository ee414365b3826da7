//! Output records: the NDJSON contract of DESIGN.md. Separate from the wire
//! structs; field names follow Elastic Common Schema where one exists
//! (`process.pid`, `process.parent.pid`, `source.port`, `error.code`, …).
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the record format; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Record {
    pub schema: u32,
    /// RFC 3339 UTC.
    pub time: String,
    /// CLOCK_MONOTONIC ns of the kernel event (the clock of `bpf_ktime_get_ns`).
    pub mono_ns: u64,
    #[serde(flatten)]
    pub body: Body,
}

/// The record types, tagged by `"type"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Fork(ForkRecord),
    Exec(ExecRecord),
    Exit(ExitRecord),
    Reap(ReapRecord),
    Bind(SocketRecord),
    Connect(SocketRecord),
    TcpState(TcpStateRecord),
    Loss(LossRecord),
    Finding(FindingRecord),
    Health(HealthRecord),
}

impl Body {
    pub fn type_name(&self) -> &'static str {
        match self {
            Body::Fork(_) => "fork",
            Body::Exec(_) => "exec",
            Body::Exit(_) => "exit",
            Body::Reap(_) => "reap",
            Body::Bind(_) => "bind",
            Body::Connect(_) => "connect",
            Body::TcpState(_) => "tcp_state",
            Body::Loss(_) => "loss",
            Body::Finding(_) => "finding",
            Body::Health(_) => "health",
        }
    }

    /// The container of the record's process, if it runs in one.
    pub fn container(&self) -> Option<&Container> {
        match self {
            Body::Fork(r) => r.container.as_ref(),
            Body::Exec(r) => r.container.as_ref(),
            Body::Exit(r) => r.container.as_ref(),
            Body::Reap(r) => r.container.as_ref(),
            Body::Bind(r) | Body::Connect(r) => r.container.as_ref(),
            Body::TcpState(r) => r.container.as_ref(),
            Body::Finding(f) => f.processes.iter().find_map(|x| x.container.as_ref()),
            Body::Loss(_) | Body::Health(_) => None,
        }
    }

    /// The `container` and `orchestrator` fields of an event record, to complete them.
    fn placement_mut(&mut self) -> Option<(&mut Option<Container>, &mut Option<Orchestrator>)> {
        match self {
            Body::Fork(r) => Some((&mut r.container, &mut r.orchestrator)),
            Body::Exec(r) => Some((&mut r.container, &mut r.orchestrator)),
            Body::Exit(r) => Some((&mut r.container, &mut r.orchestrator)),
            Body::Reap(r) => Some((&mut r.container, &mut r.orchestrator)),
            Body::Bind(r) | Body::Connect(r) => Some((&mut r.container, &mut r.orchestrator)),
            Body::TcpState(r) => Some((&mut r.container, &mut r.orchestrator)),
            Body::Finding(_) | Body::Loss(_) | Body::Health(_) => None,
        }
    }

    /// The container of an event record's process, to complete it.
    pub fn container_mut(&mut self) -> Option<&mut Container> {
        self.placement_mut().and_then(|(c, _)| c.as_mut())
    }

    /// Set the `orchestrator` of an event record.
    pub fn set_orchestrator(&mut self, o: Orchestrator) {
        if let Some((_, slot)) = self.placement_mut() {
            *slot = Some(o);
        }
    }

    /// The main process of the record, if any.
    pub fn process(&self) -> Option<&Process> {
        match self {
            Body::Fork(r) => Some(&r.process),
            Body::Exec(r) => Some(&r.process),
            Body::Exit(r) => Some(&r.process),
            Body::Reap(r) => Some(&r.process),
            Body::Bind(r) | Body::Connect(r) => Some(&r.process),
            Body::TcpState(r) => r.process.as_ref(),
            Body::Loss(_) => None,
            Body::Finding(f) => f.processes.first().map(|x| &x.process),
            Body::Health(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Thread {
    pub id: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct User {
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Parent {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
}

/// ECS `process.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Process {
    pub pid: u32,
    /// Present when the event concerns one thread other than the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<Thread>,
    /// The kernel `comm`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// `<pid>-<start mono ns>`: unique across pid reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// exit(code) of the process; absent when it was killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// ECS `container.*`: the container a process runs in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Container {
    /// The full container id.
    pub id: String,
    /// The runtime's name for it, once the runtime has said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// `docker`, `containerd`, `cri-o`, `podman`.
    pub runtime: String,
}

impl Container {
    /// Its name, or the short id while the runtime has not named it.
    pub fn label(&self) -> &str {
        self.name
            .as_deref()
            .unwrap_or_else(|| self.id.get(..12).unwrap_or(&self.id))
    }

    /// Whether `key` is its name or its id (or an id prefix of at least 4 digits).
    pub fn matches(&self, key: &str) -> bool {
        self.name.as_deref() == Some(key)
            || self.id == key
            || (key.len() >= 4 && self.id.starts_with(key))
    }
}

/// ECS `container.image`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Image {
    pub name: String,
}

/// ECS `orchestrator.*`: the Kubernetes pod of a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Orchestrator {
    /// The pod's namespace.
    pub namespace: String,
    pub resource: Resource,
    /// `kubernetes`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// ECS `orchestrator.resource`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resource {
    /// The pod's name.
    pub name: String,
    /// `pod`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ForkInfo {
    /// A thread (CLONE_THREAD) rather than a process.
    pub thread: bool,
    /// The raw clone flags, hex.
    pub clone_flags: String,
}

/// `fork`: `process` is the new process (for a thread: the process, with `process.thread.id`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ForkRecord {
    pub process: Process,
    pub fork: ForkInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecInfo {
    /// The argument vector was longer than the kernel side keeps (512 bytes).
    pub args_truncated: bool,
}

/// `exec`: `process.executable` is the new program, `process.args` its argument vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecRecord {
    pub process: Process,
    #[serde(default)]
    pub args: Vec<String>,
    pub exec: ExecInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExitInfo {
    /// Terminating signal name (`SIGKILL`), when killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_number: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub core_dumped: bool,
    /// This was the last thread: the process is now a zombie until reaped.
    pub process_exited: bool,
    /// The parent was inside wait4/waitid when it exited (it is about to be reaped).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parent_waiting: bool,
    /// The kernel could not read the exit status.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub status_unknown: bool,
    /// Milliseconds since the process started, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_ms: Option<f64>,
    /// Why the process ended (on the record that ends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<ExitCause>,
}

/// Why a process ended: its status joined with the fatal signal generated for
/// it (and by whom) or the OOM killer's choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExitCause {
    /// `exit_code`, `signal` (sent by a process or the kernel), `fault`,
    /// `oom_kill`, `stopped` (exited with a code after a stop signal), `unknown`.
    pub kind: String,
    /// One phrase: `SIGTERM from its parent pid 7 (supervisord)`.
    pub description: String,
    /// The process that sent the signal (absent when the kernel did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<SignalSender>,
}

/// The sender of a fatal signal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SignalSender {
    pub pid: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// `parent`, `ancestor`, `itself` or `other`.
    pub relation: String,
}

impl From<&crate::world::cause::Cause> for ExitCause {
    fn from(c: &crate::world::cause::Cause) -> ExitCause {
        ExitCause {
            kind: c.kind().to_owned(),
            description: c.describe(),
            sender: c.sender().map(|s| SignalSender {
                pid: s.tgid,
                name: s.comm.to_string(),
                command_line: s.command_line.clone(),
                relation: s.relation.as_str().to_owned(),
            }),
        }
    }
}

/// `exit`: one per thread; `exit.process_exited` marks the process's end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExitRecord {
    pub process: Process,
    pub exit: ExitInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReapInfo {
    /// `wait4`, `waitid` (in the reaper's context) or `free` (released without a wait seen).
    pub method: String,
    /// The process that reaped it (absent for `free`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaper: Option<Parent>,
    /// Milliseconds the process spent as a zombie, when its exit was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zombie_ms: Option<f64>,
}

/// `reap`: `process` is the reaped child.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReapRecord {
    pub process: Process,
    pub reap: ReapInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
}

/// ECS `source` / `destination`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
}

/// ECS `network`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Network {
    /// `tcp`, `udp`, or `unknown`.
    pub transport: String,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Inode of the socket's network namespace (as `ls -i /proc/<pid>/ns/net`
    /// shows it); ports are compared only within one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
}

/// ECS `event.outcome`: `success`, `failure`, `unknown` (non-blocking connect in progress).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    pub outcome: String,
}

/// ECS `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorInfo {
    /// errno name, e.g. `EADDRINUSE`.
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SocketInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// Kernel address of the socket (hex), joins connect and tcp_state records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk: Option<String>,
}

/// `bind` (address in `source`) and `connect` (address in `destination`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SocketRecord {
    pub process: Process,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    pub network: Network,
    pub event: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    pub socket: SocketInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TcpInfo {
    pub old_state: String,
    pub new_state: String,
}

/// `tcp_state`: a TCP socket changed state (active opens and listeners).
/// `process` is the process that owns the socket (from its connect/bind), when known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TcpStateRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    pub source: Endpoint,
    pub destination: Endpoint,
    pub network: Network,
    pub tcp: TcpInfo,
    /// Set for the end of an active open: `success` (ESTABLISHED) or `failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Outcome>,
    pub socket: SocketInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LossInfo {
    /// Records lost since the previous loss record.
    pub count: u64,
    /// Records lost since start.
    pub total: u64,
    /// `ring_buffer_full` (kernel side could not reserve), `kernel_table_full`
    /// (one of the kernel side's tables refused an insert: what it would have
    /// remembered is lost), `consumer_too_slow` (a socket consumer) or
    /// `sink_too_slow` (stdout, the file or syslog).
    pub reason: String,
    /// The new losses by record type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_type: BTreeMap<String, u64>,
    /// The new refusals by kernel table (`kernel_table_full`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_table: BTreeMap<String, u64>,
}

/// `loss`: records that never reached watcher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LossRecord {
    pub loss: LossInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthInfo {
    /// `ok` or `blind`.
    pub status: String,
    pub reason: String,
    /// The canary's trip from its exit to the reader, when it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_latency_ms: Option<f64>,
}

/// `health`: the daemon's own pipeline went blind, or recovered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthRecord {
    pub health: HealthInfo,
}

/// A process named by a finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InvolvedProcess {
    /// Its part: `failing`, `holder`, `new_holder`, `parent`, `zombie`, `instance`, `newest`, `restarter`, `forking`, `client`.
    pub role: String,
    pub process: Process,
    /// The address it bound, when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Since when (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The container it runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator>,
}

/// The finding kinds, for the schema: the names of `detect::Kind::ALL`.
struct FindingKind;

impl JsonSchema for FindingKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FindingKind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = crate::detect::Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        schemars::json_schema!({
            "description": "The finding kinds, one per detector.",
            "type": "string",
            "enum": names,
        })
    }
}

/// `finding`: one incident, opened, updated or resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FindingRecord {
    /// Its kind: one per detector (`port_conflict`, `zombie`, …).
    #[schemars(with = "FindingKind")]
    pub kind: String,
    /// `open`, `update`, `resolved`.
    pub state: String,
    /// Stable for the whole incident.
    pub id: String,
    /// What the incident is about (its kind and what it concerns — a port, a
    /// parent, a program, a destination — hashed, without time): the same
    /// after watcher restarts and when the same trouble recurs. Alerts are
    /// keyed by it.
    #[serde(default)]
    pub subject: String,
    /// One sentence a person can act on.
    pub summary: String,
    /// Occurrences in this incident so far.
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// The processes involved; the first is the main one.
    pub processes: Vec<InvolvedProcess>,
    /// Kind-specific facts.
    #[serde(default)]
    pub details: crate::detect::Details,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_lists_every_finding_kind() {
        let schema = serde_json::to_string(&schemars::schema_for!(FindingRecord)).unwrap();
        for k in crate::detect::Kind::ALL {
            assert!(
                schema.contains(&format!("\"{}\"", k.as_str())),
                "{} is not in the schema",
                k.as_str()
            );
        }
    }

    #[test]
    fn records_serialize_with_type_tag_and_round_trip() {
        let r = Record {
            schema: SCHEMA_VERSION,
            time: "2026-01-01T00:00:00.000000Z".into(),
            mono_ns: 42,
            body: Body::Loss(LossRecord {
                loss: LossInfo {
                    count: 3,
                    total: 5,
                    reason: "ring_buffer_full".into(),
                    by_type: BTreeMap::new(),
                    by_table: BTreeMap::new(),
                },
            }),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(
            s.starts_with(
                r#"{"schema":1,"time":"2026-01-01T00:00:00.000000Z","mono_ns":42,"type":"loss""#
            ),
            "{s}"
        );
        let back: Record = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
    }
}
