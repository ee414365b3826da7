//! Errors of setting up the kernel side, each saying what is wrong and what to do.
use thiserror::Error;

#[derive(Debug, Error)]
pub(crate) enum SetupError {
    #[error("watcher needs root, or the capabilities CAP_BPF and CAP_PERFMON (missing: {missing}); run it as root")]
    Privileges { missing: String },
    #[error("tracefs is not available: {why}; mount it with `mount -t tracefs tracefs /sys/kernel/tracing` and retry")]
    TracefsMissing { why: String },
    #[error("tracepoint {tracepoint} is not available on this kernel ({why}); watcher cannot run without it (see `watcher check`)")]
    TracepointMissing { tracepoint: String, why: String },
    #[error("tracepoint {tracepoint} has no field `{field}` on this kernel; this kernel's layout is not supported (see `watcher check`)")]
    FieldMissing { tracepoint: String, field: String },
    #[error("tracepoint {tracepoint} field `{field}` is {found} on this kernel where watcher reads {expected}; this kernel's layout is not supported (see `watcher check`)")]
    FieldType {
        tracepoint: String,
        field: String,
        found: String,
        expected: String,
    },
    #[error("kernel BTF unusable: {why}")]
    Btf { why: String },
    #[error("the embedded eBPF object could not be loaded: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("eBPF program {program} is missing from the embedded object")]
    ProgramMissing { program: &'static str },
    #[error("the kernel refused eBPF program {program}: {why}")]
    Load { program: &'static str, why: String },
    #[error("attaching {program} to tracepoint {tracepoint} failed: {why}")]
    Attach {
        program: &'static str,
        tracepoint: String,
        why: String,
    },
    #[error("the kernel refused to attach tracepoints: kernel.perf_event_paranoid is {level}, and this kernel (Debian and Ubuntu patch it so) then lets only CAP_SYS_ADMIN open perf events, CAP_PERFMON is not enough; give watcher CAP_SYS_ADMIN too (`watcher install` does on such kernels) or set kernel.perf_event_paranoid=2")]
    PerfRestricted { level: i32 },
    #[error("not in the host's pid namespace (this one is {inode}, the host's is 4026531836): watcher would ignore the host's processes and read the wrong /proc; run it with the host's pid namespace (`docker run --pid=host …`, `hostPID: true` in Kubernetes)")]
    PidNamespace { inode: u64 },
    #[error("eBPF map {name}: {why}")]
    Map { name: &'static str, why: String },
}

/// First line of an error chain element (verifier logs are long; the first line says what failed).
pub(crate) fn first_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    let line = s.lines().next().unwrap_or("").to_owned();
    if line.len() > 300 {
        format!(
            "{}…",
            &line[..line
                .char_indices()
                .nth(300)
                .map(|(i, _)| i)
                .unwrap_or(line.len())]
        )
    } else {
        line
    }
}
