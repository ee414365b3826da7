//! watcher: catches port conflicts, zombies, crash loops and unreachable
//! dependencies the instant the kernel sees them.
//!
//! Pipeline: kernel tracepoints → ring buffer → [`reader`] (AsyncFd) →
//! [`decode`] → [`enrich`] (process table from `/proc` + events) → output
//! ([`record`] NDJSON or [`human`] lines).
pub mod btf;
pub mod canary;
pub mod check;
pub mod config;
pub mod daemon;
pub mod cli;
pub mod decode;
pub mod detect;
pub mod engine;
pub mod enrich;
pub mod error;
pub mod filter;
pub mod human;
pub mod install;
pub mod loader;
pub mod metrics;
pub mod names;
pub mod pipeline;
pub mod proctable;
pub mod reader;
pub mod record;
pub mod sinks;
pub mod sockdiag;
pub mod trace;
pub mod world;
pub mod tracefs;
