//! Builds the kernel programs (watcher-ebpf) for bpfel-unknown-none with
//! aya-build and embeds them (`include_bytes_aligned!` in `loader.rs`).
//!
//! The toolchain is the one named by `WATCHER_EBPF_TOOLCHAIN` (default
//! `stable`, used with `RUSTC_BOOTSTRAP=1` for `-Z build-std=core`); it needs
//! `rust-src` and a `bpf-linker` on PATH linked against its own libLLVM —
//! `cargo xtask setup` provides both.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=WATCHER_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=PATH");
    let toolchain = std::env::var("WATCHER_EBPF_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .join("watcher-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    if std::env::var_os("RUSTC_BOOTSTRAP").is_none() && toolchain != "nightly" {
        // SAFETY: single-threaded build script, before spawning children.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    // aya-build echoes the inner cargo's stderr as `cargo:warning=` lines:
    // its "Compiling …" progress would read as 40 warnings. Quiet, it says
    // only what is worth a warning (the kernel crate's own diagnostics, on
    // stdout as JSON, are still echoed).
    // SAFETY: single-threaded build script, before spawning children.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "watcher-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
