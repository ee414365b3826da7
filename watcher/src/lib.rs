//! watcher: catches port conflicts, zombies, crash loops and unreachable
//! dependencies the instant the kernel sees them — on plain hosts and on
//! container hosts.
//!
//! The layers, one folder each, from the bottom up — a module uses its own
//! layer and those below it, never one above (`watcher/tests/layers.rs`
//! checks every path in the source):
//! - [`kernel`]: loading the programs with offsets from tracefs and BTF, the
//!   ring-buffer reader, the one decoder of the wire format, kernel ABI
//!   names, the kernel's clock.
//! - [`world`]: what watcher knows beyond single events — the process table,
//!   typed domain events, containers (cgroup → container, the runtime's API),
//!   network namespaces and the kernel's socket tables in each, and what the
//!   engine may ask of them (`world::lookup`).
//! - [`detect`]: the detectors, pure state machines.
//! - [`output`]: records (the NDJSON contract) and their enrichment from
//!   events, human lines, filters, sinks, metrics and the run's counters.
//! - [`pipeline`]: the processing loop — reader → engine (enrich + detect) →
//!   output — with its deadline timer and canary; above `detect` and
//!   `output`, which it drives.
//! - [`cli`]: the commands (`trace`, `run`, `check`, `install`, `top`) and the
//!   daemon's config.
//!
//! Visibility: a module is `pub` only when the binary (`main.rs`), the
//! replay bench or the fuzz targets use it (the commands, the decoder, the
//! clock, enrichment, records, the engine, the process table); everything
//! else is `pub(crate)`, and `unreachable_pub` warns about a `pub` that
//! nothing outside could reach.
#![warn(unreachable_pub)]

pub mod cli;
pub mod detect;
pub mod kernel;
pub mod output;
pub mod pipeline;
pub mod world;
