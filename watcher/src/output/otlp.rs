//! The OTLP sink: records as OpenTelemetry logs, to a Collector (or
//! anything that takes OTLP) over http/protobuf or gRPC.
//!
//! It runs beside detection like the Alertmanager sink: the pipeline hands
//! it a record without waiting (a bounded queue; overflow counted and said
//! with a `loss` log record); a thread of its own turns records into
//! LogRecords (the OpenTelemetry project's own protobuf messages,
//! `opentelemetry-proto`), batches them (up to `BATCH_MAX` records or
//! `BATCH_WAIT` after the first; a finding leaves at once with what is
//! queued), and exports each batch until the receiver
//! takes it: retried with a doubling backoff (0.5 s … 30 s, or what an HTTP
//! `Retry-After` or a gRPC `RetryInfo` says) on connection errors, HTTP 429/502/503/504 and the
//! gRPC codes OTLP calls retryable. A batch the receiver refuses for good
//! (another HTTP 4xx/5xx, gRPC INVALID_ARGUMENT…) and records a partial
//! success rejects are counted as `rejected`.
use crate::kernel::clock::Clock;
use std::{
    collections::BTreeMap,
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        logs_service_client::LogsServiceClient, ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    common::v1::{
        any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
    },
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};
use prost::Message;
use tokio::{sync::Notify, time::Instant};

use crate::{
    output::record::{Body, Container, Endpoint, Orchestrator, Process, Record},
    output::sinks::Types,
};

/// Records queued for the sink's thread before they are dropped (counted).
pub(crate) const QUEUE: usize = 16_384;
/// Records in one export at most.
pub(crate) const BATCH_MAX: usize = 512;
/// An export leaves at most this long after the first record of its batch came.
pub(crate) const BATCH_WAIT: Duration = Duration::from_millis(200);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Record types sent unless the config or environment says otherwise.
pub(crate) const DEFAULT_TYPES: [&str; 3] = ["finding", "loss", "health"];

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// What the sink does, from `[otlp]`, then the environment, then defaults.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// http/protobuf: the full URL posted to (`…/v1/logs`); gRPC: the server's URL.
    pub url: String,
    pub protocol: Protocol,
    pub types: Types,
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    pub timeout: Duration,
    /// `service.name` (OTEL_SERVICE_NAME, else "watcher").
    pub service_name: String,
    /// OTEL_RESOURCE_ATTRIBUTES.
    pub resource: Vec<(String, String)>,
}

/// `k1=v1,k2=v2` with percent-encoded values (the OTel environment format).
fn pairs(text: &str, var: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("{var}: `{item}` is not key=value"));
        };
        out.push((percent_decode(k.trim()), percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Settings {
    /// The sink's settings: the file's values, what it leaves out from the
    /// standard `OTEL_*` variables (`env`), then the defaults. `None`: no
    /// endpoint anywhere (no OTLP). Errors name the key (or variable).
    pub(crate) fn resolve(
        c: &OtlpConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Settings>, (&'static str, String)> {
        let var = |logs: &'static str, any: &'static str| -> Option<(&'static str, String)> {
            env(logs)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (logs, v))
                .or_else(|| env(any).filter(|v| !v.trim().is_empty()).map(|v| (any, v)))
        };
        let protocol_text = match &c.protocol {
            Some(p) => ("protocol", p.clone()),
            None => var(
                "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            )
            .unwrap_or(("protocol", "http/protobuf".into())),
        };
        let protocol = match protocol_text.1.trim() {
            "http/protobuf" => Protocol::HttpProtobuf,
            "grpc" => Protocol::Grpc,
            other => {
                return Err((
                    protocol_text.0,
                    format!(
                    "OTLP protocol `{other}` is not supported: use \"http/protobuf\" or \"grpc\""
                ),
                ))
            }
        };
        // The endpoint: the file's is a base URL; OTEL_EXPORTER_OTLP_LOGS_ENDPOINT
        // is used as it is; OTEL_EXPORTER_OTLP_ENDPOINT is a base URL.
        let (key, url, base) = match &c.endpoint {
            Some(e) if !e.trim().is_empty() => ("endpoint", e.trim().to_owned(), true),
            Some(_) => return Ok(None),
            None => {
                match env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").filter(|v| !v.trim().is_empty()) {
                    Some(v) => (
                        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                        v.trim().to_owned(),
                        false,
                    ),
                    None => {
                        match env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty()) {
                            Some(v) => ("OTEL_EXPORTER_OTLP_ENDPOINT", v.trim().to_owned(), true),
                            None => return Ok(None),
                        }
                    }
                }
            }
        };
        let uri: hyper::Uri = url.parse().map_err(|e| {
            (
                key,
                format!("`{url}` is not a URL ({e}); e.g. \"http://127.0.0.1:4318\""),
            )
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err((key, format!("`{url}`: https is not supported; use http to a Collector on this host or a private network (a local Collector can forward with TLS)"))),
            _ => return Err((key, format!("`{url}` is not an http:// URL; e.g. \"http://127.0.0.1:4318\""))),
        }
        if uri.host().is_none() {
            return Err((key, format!("`{url}` has no host")));
        }
        let url = match protocol {
            Protocol::HttpProtobuf if base => {
                format!("{}/v1/logs", url.trim_end_matches('/'))
            }
            _ => url,
        };
        let types: Vec<String> = match &c.types {
            Some(t) => t.clone(),
            None => DEFAULT_TYPES.iter().map(|s| (*s).to_owned()).collect(),
        };
        let types = Types::new(&types).map_err(|m| ("types", m.replace("[feed]", "[otlp]")))?;
        let mut headers: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if let Some((name, text)) = var(
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            for (k, v) in pairs(&text, name).map_err(|m| (name, m))? {
                let k = k.to_ascii_lowercase();
                if !headers.iter().any(|(h, _)| *h == k) {
                    headers.push((k, v));
                }
            }
        }
        for (k, v) in &headers {
            if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || hyper::header::HeaderValue::from_str(v).is_err()
                || tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(k.as_bytes())
                    .is_err()
            {
                return Err((
                    "headers",
                    format!("`{k}` is not a valid header (name and value in ASCII)"),
                ));
            }
        }
        let compression = match &c.compression {
            Some(v) => ("compression", v.clone()),
            None => var(
                "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            )
            .unwrap_or(("compression", "gzip".into())),
        };
        let gzip = match compression.1.trim() {
            "gzip" => true,
            "none" => false,
            other => {
                return Err((
                    compression.0,
                    format!("compression `{other}`: use \"gzip\" or \"none\""),
                ))
            }
        };
        let timeout_s = match c.timeout_s {
            Some(t) => ("timeout_s", t),
            None => match var(
                "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ) {
                // The variables are in milliseconds.
                Some((name, v)) => (
                    name,
                    v.trim().parse::<f64>().map(|ms| ms / 1000.0).map_err(|_| {
                        (
                            name,
                            format!("{name} = `{v}` is not a number of milliseconds"),
                        )
                    })?,
                ),
                None => ("timeout_s", 5.0),
            },
        };
        if !(timeout_s.1.is_finite() && (0.1..=60.0).contains(&timeout_s.1)) {
            return Err((
                timeout_s.0,
                format!(
                    "the OTLP timeout ({} s) is not between 0.1 and 60 seconds",
                    timeout_s.1
                ),
            ));
        }
        let resource = match env("OTEL_RESOURCE_ATTRIBUTES").filter(|v| !v.trim().is_empty()) {
            Some(v) => pairs(&v, "OTEL_RESOURCE_ATTRIBUTES")
                .map_err(|m| ("OTEL_RESOURCE_ATTRIBUTES", m))?,
            None => Vec::new(),
        };
        let service_name = env("OTEL_SERVICE_NAME")
            .filter(|v| !v.trim().is_empty())
            .or_else(|| {
                resource
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "watcher".into());
        Ok(Some(Settings {
            url,
            protocol,
            types,
            headers,
            gzip,
            timeout: Duration::from_secs_f64(timeout_s.1),
            service_name,
            resource,
        }))
    }

    /// Where and how, for the start line.
    pub(crate) fn describe(&self) -> String {
        let proto = match self.protocol {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        };
        format!(
            "otlp {} ({proto}{})",
            self.url,
            if self.gzip { ", gzip" } else { "" }
        )
    }
}

fn s(v: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(v.into())),
    }
}

fn int(v: i64) -> AnyValue {
    AnyValue {
        value: Some(Value::IntValue(v)),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
    }
}

/// A JSON value as an OTLP value (objects as key-value lists).
fn any(v: &serde_json::Value) -> AnyValue {
    use serde_json::Value as J;
    let value = match v {
        J::Null => None,
        J::Bool(b) => Some(Value::BoolValue(*b)),
        J::Number(n) => match n.as_i64() {
            Some(i) => Some(Value::IntValue(i)),
            None => n.as_f64().map(Value::DoubleValue),
        },
        J::String(t) => Some(Value::StringValue(t.clone())),
        J::Array(a) => Some(Value::ArrayValue(ArrayValue {
            values: a.iter().map(any).collect(),
        })),
        J::Object(o) => return object(o),
    };
    AnyValue { value }
}

/// A JSON object as an OTLP key-value list.
fn object(o: &serde_json::Map<String, serde_json::Value>) -> AnyValue {
    AnyValue {
        value: Some(Value::KvlistValue(KeyValueList {
            values: o.iter().map(|(k, v)| kv(k, any(v))).collect(),
        })),
    }
}

/// Semantic-convention attributes of a process (`prefix`: "process." or a
/// list entry's own keys).
fn process_attrs(out: &mut Vec<KeyValue>, p: &Process) {
    out.push(kv("process.pid", int(p.pid.into())));
    out.push(kv("process.executable.name", s(p.name.clone())));
    if let Some(e) = &p.executable {
        out.push(kv("process.executable.path", s(e.clone())));
    }
    if let Some(c) = &p.command_line {
        out.push(kv("process.command_line", s(c.clone())));
    }
    if let Some(parent) = &p.parent {
        out.push(kv("process.parent_pid", int(parent.pid.into())));
    }
    if let Some(u) = &p.user {
        if let Ok(id) = u.id.parse::<i64>() {
            out.push(kv("process.user.id", int(id)));
        }
    }
    if let Some(code) = p.exit_code {
        out.push(kv("process.exit.code", int(code.into())));
    }
    if let Some(id) = &p.entity_id {
        out.push(kv("watcher.process.entity_id", s(id.clone())));
    }
}

fn container_attrs(out: &mut Vec<KeyValue>, c: Option<&Container>, o: Option<&Orchestrator>) {
    if let Some(c) = c {
        out.push(kv("container.id", s(c.id.clone())));
        if let Some(n) = &c.name {
            out.push(kv("container.name", s(n.clone())));
        }
        if let Some(i) = &c.image {
            out.push(kv("container.image.name", s(i.name.clone())));
        }
        out.push(kv("container.runtime", s(c.runtime.clone())));
    }
    if let Some(o) = o {
        out.push(kv("k8s.namespace.name", s(o.namespace.clone())));
        if o.resource.kind == "pod" {
            out.push(kv("k8s.pod.name", s(o.resource.name.clone())));
        }
    }
}

fn endpoint_attrs(out: &mut Vec<KeyValue>, side: &str, e: &Endpoint) {
    out.push(kv(&format!("{side}.address"), s(e.address.clone())));
    out.push(kv(&format!("{side}.port"), int(e.port.into())));
}

/// `time` of a record: the kernel event's wall time, ns since the epoch.
fn unix_ns(r: &Record) -> u64 {
    humantime::parse_rfc3339(&r.time)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One record as one LogRecord.
pub(crate) fn log_record(r: &Record, observed_unix_ns: u64) -> LogRecord {
    let mut attrs = Vec::new();
    let info = SeverityNumber::Info;
    let (event_name, severity, body) = match &r.body {
        Body::Finding(f) => {
            let kind = crate::detect::Kind::ALL
                .iter()
                .copied()
                .find(|k| k.as_str() == f.kind);
            let severity = if f.state == "resolved" {
                info
            } else {
                match kind.map(crate::output::alerts::default_severity) {
                    Some("critical") => SeverityNumber::Error,
                    _ => SeverityNumber::Warn,
                }
            };
            attrs.push(kv("watcher.incident.id", s(f.id.clone())));
            attrs.push(kv("watcher.incident.subject", s(f.subject.clone())));
            attrs.push(kv("watcher.incident.state", s(f.state.clone())));
            attrs.push(kv("watcher.incident.occurrences", int(f.count as i64)));
            attrs.push(kv("watcher.incident.first_seen", s(f.first_seen.clone())));
            attrs.push(kv("watcher.incident.last_seen", s(f.last_seen.clone())));
            // The main process's conventions; every process with its role.
            if let Some(main) = f.processes.first() {
                process_attrs(&mut attrs, &main.process);
                container_attrs(
                    &mut attrs,
                    main.container.as_ref(),
                    main.orchestrator.as_ref(),
                );
            }
            let list: Vec<AnyValue> = f
                .processes
                .iter()
                .map(|x| {
                    let mut p = vec![kv("watcher.role", s(x.role.clone()))];
                    process_attrs(&mut p, &x.process);
                    container_attrs(&mut p, x.container.as_ref(), x.orchestrator.as_ref());
                    if let Some(a) = &x.address {
                        p.push(kv("watcher.address", s(a.clone())));
                    }
                    AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList { values: p })),
                    }
                })
                .collect();
            attrs.push(kv(
                "watcher.processes",
                AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue { values: list })),
                },
            ));
            let d = &f.details;
            if let Some(port) = d.get("port").and_then(|v| v.as_u64()) {
                attrs.push(kv("server.port", int(port as i64)));
            }
            if let Some(a) = d.get("address").and_then(|v| v.as_str()) {
                attrs.push(kv("server.address", s(a)));
            }
            if let Some(t) = d.get("transport").and_then(|v| v.as_str()) {
                attrs.push(kv("network.transport", s(t)));
            }
            attrs.push(kv("watcher.details", object(d)));
            (format!("watcher.{}", f.kind), severity, f.summary.clone())
        }
        body => {
            let severity = match body {
                Body::Loss(_) => SeverityNumber::Warn,
                Body::Health(h) if h.health.status != "ok" => SeverityNumber::Warn,
                _ => info,
            };
            if let Some(p) = body.process() {
                process_attrs(&mut attrs, p);
            }
            let (c, o) = match body {
                Body::Fork(x) => (x.container.as_ref(), x.orchestrator.as_ref()),
                Body::Exec(x) => (x.container.as_ref(), x.orchestrator.as_ref()),
                Body::Exit(x) => (x.container.as_ref(), x.orchestrator.as_ref()),
                Body::Reap(x) => (x.container.as_ref(), x.orchestrator.as_ref()),
                Body::Bind(x) | Body::Connect(x) => (x.container.as_ref(), x.orchestrator.as_ref()),
                Body::TcpState(x) => (x.container.as_ref(), x.orchestrator.as_ref()),
                _ => (None, None),
            };
            container_attrs(&mut attrs, c, o);
            match body {
                Body::Bind(x) => {
                    if let Some(e) = &x.source {
                        endpoint_attrs(&mut attrs, "server", e);
                    }
                    attrs.push(kv("network.transport", s(x.network.transport.clone())));
                    attrs.push(kv("network.type", s(x.network.kind.clone())));
                }
                Body::Connect(x) => {
                    if let Some(e) = &x.destination {
                        endpoint_attrs(&mut attrs, "server", e);
                    }
                    if let Some(e) = &x.source {
                        endpoint_attrs(&mut attrs, "client", e);
                    }
                    attrs.push(kv("network.transport", s(x.network.transport.clone())));
                    attrs.push(kv("network.type", s(x.network.kind.clone())));
                }
                Body::TcpState(x) => {
                    endpoint_attrs(&mut attrs, "server", &x.destination);
                    endpoint_attrs(&mut attrs, "client", &x.source);
                    attrs.push(kv("network.transport", s(x.network.transport.clone())));
                    attrs.push(kv("network.type", s(x.network.kind.clone())));
                }
                _ => {}
            }
            // The record's own facts (exit status and cause, the reap, the
            // loss counts…) under `watcher.<type>`, as the JSON feed has them.
            if let Ok(serde_json::Value::Object(mut o)) = serde_json::to_value(body) {
                for k in [
                    "type",
                    "process",
                    "container",
                    "orchestrator",
                    "source",
                    "destination",
                ] {
                    o.remove(k);
                }
                // One object left (`exit`, `reap`, `loss`, `health`…): its fields.
                let facts = match o.len() {
                    0 => None,
                    1 => o.into_iter().next().map(|(_, v)| v),
                    _ => Some(serde_json::Value::Object(o)),
                };
                if let Some(f) = facts {
                    attrs.push(kv(&format!("watcher.{}", body.type_name()), any(&f)));
                }
            }
            (
                format!("watcher.{}", body.type_name()),
                severity,
                crate::output::human::line(r),
            )
        }
    };
    let time = unix_ns(r);
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: observed_unix_ns,
        severity_number: severity as i32,
        severity_text: severity_text(severity).into(),
        body: Some(s(body)),
        attributes: attrs,
        event_name,
        ..Default::default()
    }
}

fn severity_text(s: SeverityNumber) -> &'static str {
    match s {
        SeverityNumber::Error => "ERROR",
        SeverityNumber::Warn => "WARN",
        _ => "INFO",
    }
}

/// The resource: this host and this watcher.
pub(crate) fn resource(settings: &Settings) -> Resource {
    let mut attrs = vec![
        kv("service.name", s(settings.service_name.clone())),
        kv("service.version", s(env!("CARGO_PKG_VERSION"))),
        kv("os.type", s("linux")),
    ];
    if let Ok(h) = nix::unistd::gethostname() {
        attrs.push(kv("host.name", s(h.to_string_lossy().into_owned())));
    }
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        if !id.trim().is_empty() {
            attrs.push(kv("host.id", s(id.trim())));
        }
    }
    for (k, v) in &settings.resource {
        if !attrs.iter().any(|a| a.key == *k) {
            attrs.push(kv(k, s(v.clone())));
        }
    }
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}

/// What the metrics say about the sink.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Records the receiver took.
    pub sent: AtomicU64,
    /// Records the receiver refused (a refused export, or a partial success's rejects).
    pub rejected: AtomicU64,
    /// Records dropped before export: the queue was full.
    pub dropped: AtomicU64,
    /// Records waiting (queued and in the batch being exported).
    pub queue: AtomicU64,
    pub up: AtomicBool,
}

/// The sink, as the pipeline sees it.
pub(crate) struct OtlpSink {
    tx: tokio::sync::mpsc::Sender<Record>,
    types: Types,
    pub stats: Arc<OtlpStats>,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
    describe: String,
}

impl OtlpSink {
    pub(crate) fn start(settings: Settings) -> anyhow::Result<OtlpSink> {
        let stats = Arc::new(OtlpStats {
            up: AtomicBool::new(true),
            ..Default::default()
        });
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let stop = Arc::new(Notify::new());
        let (st, sp) = (stats.clone(), stop.clone());
        let types = settings.types.clone();
        let describe = settings.describe();
        let thread = std::thread::Builder::new()
            .name("watcher-otlp".into())
            .spawn(move || {
                // Below the deciding thread, like the helpers: turning a
                // flood of events into log records must not take its CPU.
                crate::kernel::sched::run_as_helper();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("otlp: cannot start the sink's runtime: {e}");
                        return;
                    }
                };
                rt.block_on(run(rx, settings, st, sp));
            })?;
        Ok(OtlpSink {
            tx,
            types,
            stats,
            stop,
            thread: Some(thread),
            describe,
        })
    }

    /// Whether it sends event records (not only findings, losses, health).
    pub(crate) fn wants_events(&self) -> bool {
        crate::output::filter::carries_events(self.types.list())
    }

    pub(crate) fn types(&self) -> &[String] {
        self.types.list()
    }

    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    /// Hand a record to the sink without waiting (if its types want it).
    pub(crate) fn offer(&self, r: &Record) {
        if !self.types.wants(r) {
            return;
        }
        if self.tx.try_send(r.clone()).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for OtlpSink {
    /// Export what is queued, within one export's deadline, then stop.
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why an export did not go through.
enum Failed {
    /// Try again (after this long, if the receiver said).
    Retry(String, Option<Duration>),
    /// The receiver refused the batch for good.
    Refused(String),
}

/// How the sink talks to its receiver.
enum Exporter {
    Http {
        url: hyper::Uri,
        authority: String,
        conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    },
    Grpc(LogsServiceClient<tonic::transport::Channel>),
}

impl Exporter {
    fn new(s: &Settings) -> anyhow::Result<Exporter> {
        match s.protocol {
            Protocol::HttpProtobuf => {
                let url: hyper::Uri = s.url.parse()?;
                let host = url.host().unwrap_or("127.0.0.1");
                let authority = format!("{host}:{}", url.port_u16().unwrap_or(80));
                Ok(Exporter::Http {
                    url,
                    authority,
                    conn: None,
                })
            }
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(s.url.clone())?
                    .connect_timeout(s.timeout)
                    .timeout(s.timeout)
                    .connect_lazy();
                let mut client = LogsServiceClient::new(channel);
                if s.gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Ok(Exporter::Grpc(client))
            }
        }
    }

    /// One export; the number of records the receiver rejected.
    async fn export(
        &mut self,
        s: &Settings,
        req: &ExportLogsServiceRequest,
    ) -> Result<u64, Failed> {
        match self {
            Exporter::Http {
                url,
                authority,
                conn,
            } => {
                let body = req.encode_to_vec();
                let body = if s.gzip {
                    let mut z =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    z.write_all(&body)
                        .and_then(|_| z.finish())
                        .map_err(|e| Failed::Refused(format!("gzip: {e}")))?
                } else {
                    body
                };
                let work = http_post(url, authority, conn, s, Bytes::from(body));
                match tokio::time::timeout(s.timeout, work).await {
                    Ok(r) => r,
                    Err(_) => {
                        *conn = None;
                        Err(Failed::Retry(
                            format!("no answer within {:?}", s.timeout),
                            None,
                        ))
                    }
                }
            }
            Exporter::Grpc(client) => {
                let mut request = tonic::Request::new(req.clone());
                for (k, v) in &s.headers {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                        v.parse(),
                    ) {
                        request.metadata_mut().insert(k, v);
                    }
                }
                request.set_timeout(s.timeout);
                match client.export(request).await {
                    Ok(resp) => Ok(rejected(&resp.into_inner())),
                    Err(status) => {
                        use tonic::Code;
                        let why = format!("gRPC {:?}: {}", status.code(), status.message());
                        match status.code() {
                            Code::Cancelled
                            | Code::DeadlineExceeded
                            | Code::Aborted
                            | Code::OutOfRange
                            | Code::Unavailable
                            | Code::DataLoss
                            | Code::ResourceExhausted
                            | Code::Unknown => {
                                // The delay the receiver asks for (google.rpc.RetryInfo).
                                use tonic_types::StatusExt;
                                let after =
                                    status.get_details_retry_info().and_then(|r| r.retry_delay);
                                Err(Failed::Retry(why, after))
                            }
                            _ => Err(Failed::Refused(why)),
                        }
                    }
                }
            }
        }
    }
}

fn rejected(resp: &ExportLogsServiceResponse) -> u64 {
    resp.partial_success
        .as_ref()
        .map(|p| p.rejected_log_records.max(0) as u64)
        .unwrap_or(0)
}

async fn http_post(
    url: &hyper::Uri,
    authority: &str,
    conn: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    s: &Settings,
    body: Bytes,
) -> Result<u64, Failed> {
    // One kept-alive connection, made again when the receiver closed it.
    if let Some(c) = conn.as_mut() {
        if c.ready().await.is_err() {
            *conn = None;
        }
    }
    if conn.is_none() {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| Failed::Retry(format!("connect {authority}: {e}"), None))?;
        let _ = stream.set_nodelay(true);
        let (sender, c) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| Failed::Retry(e.to_string(), None))?;
        tokio::spawn(c);
        *conn = Some(sender);
    }
    let Some(sender) = conn.as_mut() else {
        return Err(Failed::Retry("no connection".into(), None));
    };
    let path = url
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/v1/logs");
    let mut req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
        .header(
            hyper::header::USER_AGENT,
            concat!("watcher/", env!("CARGO_PKG_VERSION")),
        );
    if s.gzip {
        req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
    }
    for (k, v) in &s.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| Failed::Refused(e.to_string()))?;
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            *conn = None;
            return Err(Failed::Retry(e.to_string(), None));
        }
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let gzipped = resp
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let bytes = if gzipped {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out);
        Bytes::from(out)
    } else {
        bytes
    };
    if status.is_success() {
        return Ok(ExportLogsServiceResponse::decode(bytes)
            .map(|r| rejected(&r))
            .unwrap_or(0));
    }
    let text: String = String::from_utf8_lossy(&bytes)
        .trim()
        .chars()
        .take(200)
        .collect();
    let why = format!("HTTP {status}: {text}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(Failed::Retry(why, retry_after)),
        _ => Err(Failed::Refused(why)),
    }
}

async fn run(
    mut rx: tokio::sync::mpsc::Receiver<Record>,
    settings: Settings,
    stats: Arc<OtlpStats>,
    stop: Arc<Notify>,
) {
    let mut exporter = match Exporter::new(&settings) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("otlp: {}: {e}; nothing is sent", settings.url);
            return;
        }
    };
    let resource = resource(&settings);
    let scope = InstrumentationScope {
        name: "watcher".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let mut stopping = false;
    let mut stop_deadline: Option<Instant> = None;
    let mut told_dropped = 0u64;
    let mut down_since: Option<Instant> = None;
    loop {
        // A batch: the first record (or the stop), then more until full or BATCH_WAIT.
        let mut batch: Vec<LogRecord> = Vec::new();
        let clock = Clock::now();
        if !stopping {
            tokio::select! {
                biased;
                _ = stop.notified() => stopping = true,
                r = rx.recv() => match r {
                    Some(r) => batch.push(log_record(&r, now_unix_ns())),
                    None => stopping = true,
                },
            }
        }
        if !stopping {
            // A finding goes at once, with what is already queued; events
            // wait up to BATCH_WAIT for company.
            let mut until = Instant::now() + BATCH_WAIT;
            while batch.len() < BATCH_MAX {
                if batch.last().is_some_and(is_finding) {
                    until = Instant::now();
                }
                tokio::select! {
                    biased;
                    _ = stop.notified() => { stopping = true; break }
                    r = rx.recv() => match r {
                        Some(r) => batch.push(log_record(&r, now_unix_ns())),
                        None => { stopping = true; break }
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
        }
        if stopping {
            // What is queued goes too.
            while batch.len() < BATCH_MAX * 8 {
                match rx.try_recv() {
                    Ok(r) => batch.push(log_record(&r, now_unix_ns())),
                    Err(_) => break,
                }
            }
        }
        if stop_deadline.is_some_and(|g| Instant::now() >= g) {
            stats
                .dropped
                .fetch_add((batch.len() + rx.len()) as u64, Ordering::Relaxed);
            return;
        }
        // The queue gauge counts records waiting to go: the loss record
        // put in front of them says what was dropped and is not one.
        let held = batch.len() as u64;
        let dropped = stats.dropped.load(Ordering::Relaxed);
        if dropped > told_dropped {
            batch.insert(0, loss_log(dropped - told_dropped, dropped, &clock));
            told_dropped = dropped;
        }
        stats.queue.store(held + rx.len() as u64, Ordering::Relaxed);
        if batch.is_empty() {
            if stopping {
                return;
            }
            continue;
        }
        let n = batch.len() as u64;
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope.clone()),
                    log_records: batch,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut backoff = BACKOFF_FIRST;
        loop {
            // At stop (also one that comes while this batch is retried),
            // what is queued has one export deadline in all; what is left
            // then is counted dropped.
            if stopping && stop_deadline.is_none() {
                stop_deadline = Some(Instant::now() + settings.timeout);
            }
            let give_up = stop_deadline;
            let attempt = exporter.export(&settings, &req);
            let result = match give_up {
                Some(g) => {
                    match tokio::time::timeout(g.saturating_duration_since(Instant::now()), attempt)
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => {
                            stats
                                .dropped
                                .fetch_add(n + rx.len() as u64, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                None => attempt.await,
            };
            match result {
                Ok(rejected) => {
                    stats.sent.fetch_add(n - rejected.min(n), Ordering::Relaxed);
                    stats.rejected.fetch_add(rejected.min(n), Ordering::Relaxed);
                    stats.up.store(true, Ordering::Relaxed);
                    if rejected > 0 {
                        tracing::warn!(
                            "otlp: {} rejected {rejected} of {n} records (partial success)",
                            settings.url
                        );
                    }
                    if let Some(since) = down_since.take() {
                        tracing::warn!(
                            "otlp: {} takes records again (after {:.0?} of failures); what was queued is delivered",
                            settings.url,
                            since.elapsed()
                        );
                    }
                    break;
                }
                Err(Failed::Refused(why)) => {
                    stats.rejected.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!("otlp: {} refused {n} records: {why}", settings.url);
                    break;
                }
                Err(Failed::Retry(why, after)) => {
                    stats.up.store(false, Ordering::Relaxed);
                    if down_since.is_none() {
                        tracing::warn!(
                            "otlp: cannot export to {}: {why}; retrying with backoff (up to {:?}); records queue meanwhile (up to {QUEUE}, then counted dropped)",
                            settings.url,
                            BACKOFF_MAX
                        );
                        down_since = Some(Instant::now());
                    }
                    let wait = after.unwrap_or(backoff).min(BACKOFF_MAX);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if let Some(g) = give_up {
                        if Instant::now() + wait > g {
                            stats.dropped.fetch_add(n, Ordering::Relaxed);
                            return;
                        }
                    }
                    stats.queue.store(held + rx.len() as u64, Ordering::Relaxed);
                    if !stopping {
                        tokio::select! {
                            _ = stop.notified() => stopping = true,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    } else {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        stats.queue.store(rx.len() as u64, Ordering::Relaxed);
    }
}

fn is_finding(l: &LogRecord) -> bool {
    l.attributes.iter().any(|a| a.key == "watcher.incident.id")
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The `loss` record that tells the receiver what it missed.
fn loss_log(count: u64, total: u64, clock: &Clock) -> LogRecord {
    let mono = Clock::mono_now();
    let r = Record {
        schema: crate::output::record::SCHEMA_VERSION,
        time: clock.rfc3339(mono),
        mono_ns: mono,
        body: Body::Loss(crate::output::record::LossRecord {
            loss: crate::output::record::LossInfo {
                count,
                total,
                reason: "otlp_queue_full".into(),
                by_type: BTreeMap::new(),
                by_table: BTreeMap::new(),
            },
        }),
    };
    log_record(&r, now_unix_ns())
}

/// `[otlp]`: records as OpenTelemetry logs to a Collector (`watcher run`).
/// What the file leaves out comes from the standard `OTEL_EXPORTER_OTLP_*`
/// variables, then from the defaults (`crate::output::otlp::Settings::resolve`).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The receiver's base URL (`http://host:4318`; http/protobuf posts to
    /// `/v1/logs` under it), or its gRPC address (`http://host:4317`).
    /// Unset here and in the environment: no OTLP.
    pub endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`.
    pub protocol: Option<String>,
    /// Record types sent (default `["finding", "loss", "health"]`; `["all"]`
    /// for every event too).
    pub types: Option<Vec<String>>,
    /// Headers on every export (e.g. `authorization = "Bearer …"`).
    pub headers: std::collections::BTreeMap<String, String>,
    /// `gzip` (default) or `none`.
    pub compression: Option<String>,
    /// One export's deadline, seconds (default 5).
    pub timeout_s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn no_endpoint_anywhere_is_no_otlp() {
        assert!(Settings::resolve(&OtlpConfig::default(), &|_| None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_file_wins_and_the_environment_fills_in() {
        let c = OtlpConfig {
            endpoint: Some("http://collector:4318/".into()),
            headers: [("Authorization".to_owned(), "Bearer a".to_owned())].into(),
            ..Default::default()
        };
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20b,x-tenant=t%2C1",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=prod,service.name=w1",
            ),
        ]);
        let s = Settings::resolve(&c, &env).unwrap().unwrap();
        assert_eq!(s.url, "http://collector:4318/v1/logs");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            s.headers,
            vec![
                ("authorization".to_owned(), "Bearer a".to_owned()),
                ("x-tenant".to_owned(), "t,1".to_owned())
            ]
        );
        assert!(!s.gzip);
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.service_name, "w1");
        assert_eq!(s.types.list(), DEFAULT_TYPES);
    }

    #[test]
    fn the_logs_endpoint_variable_is_used_as_it_is() {
        let env = env_of(&[
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "http://c:4318/custom/logs",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
            ("OTEL_SERVICE_NAME", "edge-watcher"),
        ]);
        let s = Settings::resolve(&OtlpConfig::default(), &env)
            .unwrap()
            .unwrap();
        assert_eq!(s.url, "http://c:4318/custom/logs");
        assert_eq!(s.service_name, "edge-watcher");
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        let s = Settings::resolve(&OtlpConfig::default(), &env)
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.url.as_str(), s.protocol),
            ("http://c:4317", Protocol::Grpc)
        );
    }

    #[test]
    fn bad_values_name_their_key_or_variable() {
        let bad =
            |c: OtlpConfig, env: &[(&str, &str)]| Settings::resolve(&c, &env_of(env)).unwrap_err();
        let with = |f: fn(&mut OtlpConfig)| {
            let mut c = OtlpConfig {
                endpoint: Some("http://c:4318".into()),
                ..Default::default()
            };
            f(&mut c);
            c
        };
        assert_eq!(
            bad(with(|c| c.protocol = Some("http/json".into())), &[]).0,
            "protocol"
        );
        assert_eq!(
            bad(with(|c| c.endpoint = Some("https://c:4318".into())), &[]).0,
            "endpoint"
        );
        assert_eq!(
            bad(with(|c| c.endpoint = Some("c:4318".into())), &[]).0,
            "endpoint"
        );
        assert_eq!(
            bad(with(|c| c.compression = Some("zstd".into())), &[]).0,
            "compression"
        );
        assert_eq!(bad(with(|c| c.timeout_s = Some(0.0)), &[]).0, "timeout_s");
        assert_eq!(
            bad(with(|c| c.types = Some(vec!["findings".into()])), &[]).0,
            "types"
        );
        assert_eq!(
            bad(
                with(|c| {
                    c.headers.insert("bad header".into(), "x".into());
                }),
                &[]
            )
            .0,
            "headers"
        );
        assert_eq!(
            bad(with(|_| {}), &[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]).0,
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        );
        assert_eq!(
            bad(
                OtlpConfig::default(),
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x")]
            )
            .0,
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        );
        let e = bad(
            OtlpConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ],
        );
        assert_eq!(e.0, "OTEL_EXPORTER_OTLP_HEADERS");
    }

    fn attr<'a>(l: &'a LogRecord, key: &str) -> Option<&'a Value> {
        l.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_finding_is_one_log_record_with_conventional_attributes() {
        let line = r#"{"schema":1,"time":"2026-12-03T08:00:00.000001Z","mono_ns":5,"type":"finding","kind":"port_conflict","state":"open","id":"port_conflict-1","subject":"s1","summary":"nc cannot bind 0.0.0.0:8080: python3 (pid 7) holds it","count":2,"first_seen":"2026-12-03T08:00:00Z","last_seen":"2026-12-03T08:00:00Z","processes":[{"role":"failing","process":{"pid":9,"name":"nc","command_line":"nc -l 8080","parent":{"pid":1}},"container":{"id":"abc","name":"web","image":{"name":"nginx:1"},"runtime":"docker"}},{"role":"holder","process":{"pid":7,"name":"python3"}}],"details":{"port":8080,"address":"0.0.0.0","transport":"tcp"}}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        let l = log_record(&r, 42);
        assert_eq!(l.event_name, "watcher.port_conflict");
        assert_eq!(l.severity_number, SeverityNumber::Error as i32);
        assert_eq!(l.severity_text, "ERROR");
        assert_eq!(l.time_unix_nano, 1_796_284_800_000_001_000);
        assert_eq!(l.observed_time_unix_nano, 42);
        assert_eq!(
            l.body.as_ref().and_then(|b| b.value.clone()),
            Some(Value::StringValue(
                "nc cannot bind 0.0.0.0:8080: python3 (pid 7) holds it".into()
            ))
        );
        assert_eq!(attr(&l, "process.pid"), Some(&Value::IntValue(9)));
        assert_eq!(attr(&l, "process.parent_pid"), Some(&Value::IntValue(1)));
        assert_eq!(
            attr(&l, "process.command_line"),
            Some(&Value::StringValue("nc -l 8080".into()))
        );
        assert_eq!(attr(&l, "server.port"), Some(&Value::IntValue(8080)));
        assert_eq!(
            attr(&l, "network.transport"),
            Some(&Value::StringValue("tcp".into()))
        );
        assert_eq!(
            attr(&l, "container.name"),
            Some(&Value::StringValue("web".into()))
        );
        assert_eq!(
            attr(&l, "container.image.name"),
            Some(&Value::StringValue("nginx:1".into()))
        );
        assert_eq!(
            attr(&l, "watcher.incident.id"),
            Some(&Value::StringValue("port_conflict-1".into()))
        );
        assert_eq!(
            attr(&l, "watcher.incident.occurrences"),
            Some(&Value::IntValue(2))
        );
        let Some(Value::ArrayValue(list)) = attr(&l, "watcher.processes") else {
            panic!("watcher.processes: {l:?}")
        };
        assert_eq!(list.values.len(), 2);
        // Resolved: INFO.
        let r: Record = serde_json::from_str(&line.replace("\"open\"", "\"resolved\"")).unwrap();
        assert_eq!(log_record(&r, 0).severity_text, "INFO");
    }

    #[test]
    fn an_event_is_one_log_record_with_its_own_facts() {
        let line = r#"{"schema":1,"time":"2026-12-03T08:00:00.000001Z","mono_ns":5,"type":"exit","process":{"pid":9,"name":"sh","exit_code":3},"exit":{"core_dumped":false,"process_exited":true,"parent_waiting":false,"status_unknown":false}}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        let l = log_record(&r, 0);
        assert_eq!(l.event_name, "watcher.exit");
        assert_eq!(l.severity_text, "INFO");
        assert_eq!(attr(&l, "process.exit.code"), Some(&Value::IntValue(3)));
        assert!(
            matches!(attr(&l, "watcher.exit"), Some(Value::KvlistValue(_))),
            "{l:?}"
        );
    }

    /// The queue gauge counts records waiting to go, whatever else the sink
    /// puts in front of them: with the queue full and a batch held for a
    /// receiver that is down, it reads the queue's size, not one more for
    /// the loss record that tells the receiver of what was dropped.
    #[test]
    fn the_queue_gauge_counts_waiting_records_and_not_the_loss_record() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // A port nobody listens on: every export is "try again".
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let settings = Settings {
                url: format!("http://127.0.0.1:{port}/v1/logs"),
                protocol: Protocol::HttpProtobuf,
                types: Types::new(&["all".to_owned()]).unwrap(),
                headers: Vec::new(),
                gzip: false,
                timeout: Duration::from_secs(1),
                service_name: "watcher".into(),
                resource: Vec::new(),
            };
            let line = r#"{"schema":1,"time":"2026-12-03T08:00:00.000001Z","mono_ns":5,"type":"exit","process":{"pid":9,"name":"sh","exit_code":3},"exit":{"core_dumped":false,"process_exited":true,"parent_waiting":false,"status_unknown":false}}"#;
            let r: Record = serde_json::from_str(line).unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
            for _ in 0..QUEUE {
                tx.try_send(r.clone()).unwrap();
            }
            let stats = Arc::new(OtlpStats::default());
            stats.up.store(true, Ordering::Relaxed);
            stats.dropped.store(7, Ordering::Relaxed);
            let stop = Arc::new(Notify::new());
            let sink = tokio::spawn(run(rx, settings, stats.clone(), stop.clone()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while stats.up.load(Ordering::Relaxed) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(!stats.up.load(Ordering::Relaxed), "the export never failed");
            assert_eq!(stats.queue.load(Ordering::Relaxed), QUEUE as u64);
            drop(tx);
            stop.notify_one();
            let _ = tokio::time::timeout(Duration::from_secs(5), sink).await;
        });
    }
}
