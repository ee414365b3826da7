//! What watcher writes: the records of the NDJSON contract (serde types,
//! separate from the wire structs), the human lines of `watcher trace`, the
//! record filters, the daemon's sinks, the Alertmanager and OTLP sinks and the
//! Prometheus metrics.
pub(crate) mod alerts;
pub mod enrich;
pub(crate) mod filter;
pub(crate) mod human;
pub(crate) mod lane;
pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod otlp;
pub mod record;
pub(crate) mod sinks;
pub(crate) mod stages;
pub(crate) mod stats;
pub(crate) mod top;
