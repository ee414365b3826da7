//! Library target so that the userspace crate can name this package as a build
//! dependency (rebuilds follow its changes); the programs are in the binary.
#![no_std]
