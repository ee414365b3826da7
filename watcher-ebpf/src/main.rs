//! watcher's kernel programs. They observe and forward; detection lives in userspace.
//!
//! Tracepoints only (kprobes may be absent, fentry may be refused, and
//! tracepoints are the stable interface): raw tracepoints where the kernel's
//! BTF gives their arguments (process creation, exec, exit, free, TCP
//! state), the tracefs ones otherwise and for system calls. Every field offset comes from the
//! [`Config`] global that userspace fills from the running kernel's tracefs
//! format files and BTF before load.
#![no_std]
#![no_main]
// The reader's word is swapped atomically (`common::decided`); the BPF
// target has no `AtomicU64::swap` (no compare-and-swap in its target spec),
// but the kernel has an atomic exchange (BPF_XCHG) and LLVM emits it.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod cgroup;
mod common;
mod maps;
mod net;
mod process;
mod signal;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
