//! What watcher knows of the host beyond single events: the process table
//! (seeded from `/proc`, kept from events), enrichment of kernel events into
//! records, containers (cgroup → container, the runtime's metadata), network
//! namespaces and the kernel's socket tables in each (sock_diag).
pub mod cause;
pub mod cmdline;
pub mod containers;
pub mod domain;
pub mod lookup;
pub mod netns;
pub mod proctable;
pub mod reconcile;
pub mod runtime;
pub mod sockdiag;
