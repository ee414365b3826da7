//! What watcher knows of the host beyond single events: containers (cgroup →
//! container, the runtime's metadata) and network namespaces (per-namespace
//! socket tables).
pub mod containers;
pub mod netns;
pub mod runtime;
