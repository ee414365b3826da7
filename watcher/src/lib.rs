//! watcher: catches port conflicts, zombies, crash loops and unreachable
//! dependencies the instant the kernel sees them — on plain hosts and on
//! container hosts.
//!
//! The layers, one folder each:
//! - [`kernel`]: loading the programs with offsets from tracefs and BTF, the
//!   ring-buffer reader, the one decoder of the wire format, kernel ABI names.
//! - [`world`]: what watcher knows beyond single events — the process table,
//!   enrichment into records, containers (cgroup → container, the runtime's
//!   API) and network namespaces (per-namespace socket tables).
//! - [`detect`]: the detectors, pure state machines.
//! - [`pipeline`]: the processing loop — reader → engine (enrich + detect) →
//!   output — with its deadline timer, canary and counters.
//! - [`output`]: records (the NDJSON contract), human lines, filters, sinks, metrics.
//! - [`cli`]: the commands (`trace`, `run`, `check`, `install`) and the daemon's config.
pub mod cli;
pub mod detect;
pub mod kernel;
pub mod output;
pub mod pipeline;
pub mod world;
