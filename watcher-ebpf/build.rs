use which::which;

/// Rebuild when bpf-linker changes (it is part of the toolchain of this crate).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
