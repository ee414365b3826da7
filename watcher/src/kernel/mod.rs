//! The kernel side, seen from userspace: loading and attaching the programs
//! with every offset read from the running kernel (tracefs format files, BTF),
//! the ring-buffer reader, the one decoder of the wire format, and the names
//! of kernel ABI numbers (errno, signals, TCP states).
pub(crate) mod abi;
pub mod argv;
pub(crate) mod btf;
pub mod clock;
pub mod decode;
pub(crate) mod error;
pub mod exec_wake;
pub(crate) mod loader;
pub(crate) mod names;
pub(crate) mod reader;
pub(crate) mod reader_word;
pub(crate) mod ring;
pub(crate) mod sched;
pub(crate) mod skips;
pub(crate) mod tables;
pub(crate) mod tracefs;
pub mod wake;
