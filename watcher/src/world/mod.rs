//! What watcher knows of the host beyond single events: the process table
//! (seeded from `/proc`, kept from events), enrichment of kernel events into
//! records, containers (cgroup → container, the runtime's metadata), network
//! namespaces and the kernel's socket tables in each (sock_diag).
pub(crate) mod cause;
pub(crate) mod cmdline;
pub(crate) mod containers;
pub(crate) mod domain;
pub(crate) mod lookup;
pub(crate) mod netns;
pub mod proctable;
pub(crate) mod reconcile;
pub(crate) mod runtime;
pub(crate) mod sockdiag;

pub use lookup::Recorded;
