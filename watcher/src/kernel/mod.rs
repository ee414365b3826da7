//! The kernel side, seen from userspace: loading and attaching the programs
//! with every offset read from the running kernel (tracefs format files, BTF),
//! the ring-buffer reader, the one decoder of the wire format, and the names
//! of kernel ABI numbers (errno, signals, TCP states).
pub mod abi;
pub mod btf;
pub mod clock;
pub mod decode;
pub mod error;
pub mod loader;
pub mod names;
pub mod reader;
pub mod skips;
pub mod tables;
pub mod tracefs;
