//! What watcher writes: the records of the NDJSON contract (serde types,
//! separate from the wire structs), the human lines of `watcher trace`, the
//! record filters, the daemon's sinks, the Alertmanager and OTLP sinks and the
//! Prometheus metrics.
pub mod alerts;
pub mod enrich;
pub mod filter;
pub mod human;
pub mod lane;
pub mod metrics;
pub mod names;
pub mod otlp;
pub mod record;
pub mod sinks;
pub mod stages;
pub mod stats;
pub mod top;
