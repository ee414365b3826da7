//! `cargo xtask`: what cargo cannot do by itself — toolchain set-up, running
//! the privileged test tiers, benchmarks.
//!
//! Every prerequisite is installed here, so that a fresh machine needs nothing
//! but these commands (run as root):
//!   cargo xtask run -- trace     build and run `watcher trace`
//!   cargo xtask test             unit tests and end-to-end tests
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context as _, Result};

mod bench;
mod deb;
mod docker;
mod vms;
use clap::{Parser, Subcommand};

/// The toolchain that builds the eBPF crate (with RUSTC_BOOTSTRAP=1 for -Z build-std).
const EBPF_TOOLCHAIN: &str = "stable";
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building needs: rust-src and a bpf-linker linked against the toolchain's own libLLVM.
    Setup,
    /// Build the watcher binary (kernel programs embedded).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run watcher with the given arguments, e.g. `cargo xtask run -- trace`.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Measure detection latency (and more): figures, not assertions.
    Bench,
    /// Build watcher's container image (FROM scratch, the static build), tagged watcher:latest.
    Image,
    /// Build the Debian package target/watcher_<version>_amd64.deb (static binary, systemd unit,
    /// default config as a conffile, Prometheus rules, docs).
    Deb,
    /// Fuzz the record decoder and the config parser (cargo-fuzz, nightly) for a while each.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Boot Debian's 6.1 and 6.12 kernels under QEMU (software emulation) and run the end-to-end checks in each.
    Vms {
        /// Debian kernel packages to boot instead, e.g. linux-image-6.1.0-56-amd64.
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Instead of the tests: N attach/detach cycles of three watchers (one
        /// detaching its programs while running, one killed with SIGKILL every
        /// third cycle) under a fork and bind load, with the guest kernel's
        /// lockup detectors printing every CPU's stack (the 6.1 kernel unless
        /// --kernel says otherwise). Log: target/vm/<release>.soak.log.
        #[arg(long, value_name = "CYCLES")]
        soak: Option<u32>,
        /// What the soak toggles: `watcher` (attach/detach) or `tracefs` (a
        /// syscall tracepoint enabled and disabled through tracefs, no
        /// watcher and no BPF at all: the control experiment).
        #[arg(long, value_name = "WHAT", default_value = "watcher")]
        soak_with: String,
        /// QEMU's TCG threading: `single` (one host thread runs every vCPU in
        /// turn; the default) or `multi` (a host thread per vCPU, where a
        /// vCPU can keep running a stale translation of kernel code another
        /// vCPU patched: see docs/kernels.md).
        #[arg(long, value_name = "MODE", default_value = "single")]
        tcg: String,
        /// Instead of the tests: each workload (fork loop, bind+bind+connect
        /// loop, unrelated system calls) with no watcher and under a watcher
        /// of each attachment (fentry/fexit, system-call tracepoints, all
        /// tracefs), with every program's ns/run (`kernel.bpf_stats_enabled`).
        #[arg(long)]
        bench: bool,
        /// Instead of every test: this one (BINARY::TEST, e.g.
        /// events::tracefs_is_mounted_when_missing, printing its output) or
        /// this binary's (BINARY, as the whole set runs them), run --repeat
        /// times in each guest: how a test that failed once in CI's guests
        /// is reproduced.
        #[arg(long, value_name = "BINARY[::TEST]")]
        only: Option<String>,
        /// How many times --only's test runs in each guest.
        #[arg(long, value_name = "N", default_value_t = 1)]
        repeat: u32,
    },
    /// Run every test: unit tests, the end-to-end tests (real kernel programs, real processes; needs root),
    /// then the kernel matrix (`vms`). With arguments for `cargo test`, only those tests run.
    Test {
        /// Extra arguments for `cargo test`, e.g. `--test findings` or `-- zombie`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Setup => {
            let path = setup()?;
            println!("xtask: ready; bpf-linker in {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Build { release } => {
            let env_path = setup()?;
            build(&env_path, release, &["-p", "watcher"])?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { release, args } => {
            let env_path = setup()?;
            build(&env_path, release, &["-p", "watcher"])?;
            let bin = target_dir()
                .join(if release { "release" } else { "debug" })
                .join("watcher");
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
        Cmd::Test { args } => test(args),
        Cmd::Image => {
            let bin_dir = setup()?;
            let _daemon = docker::ensure_daemon(&target_dir())?;
            let exes = vms::build_static(&bin_dir)?;
            docker::build_image(
                vms::path_of(&exes, "watcher"),
                &target_dir(),
                docker::WATCHER_IMAGE,
            )?;
            println!("xtask: built {}", docker::WATCHER_IMAGE);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Deb => {
            let bin_dir = setup()?;
            let exes = vms::build_static(&bin_dir)?;
            let deb = deb::build(vms::path_of(&exes, "watcher"), &target_dir())?;
            println!(
                "xtask: built {}; install it with: apt-get install {}",
                deb.display(),
                deb.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Vms {
            kernels,
            soak,
            soak_with,
            tcg,
            bench,
            only,
            repeat,
        } => {
            vms::set_focus(only.as_deref(), repeat)?;
            let bin_dir = setup()?;
            vms::set_tcg(&tcg)?;
            if bench {
                return Ok(if vms::bench(&bin_dir, &kernels)? {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            if let Some(cycles) = soak {
                return Ok(if vms::soak(&bin_dir, &kernels, cycles, &soak_with)? {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            Ok(if vms::run(&bin_dir, &kernels)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Fuzz { seconds } => {
            let bin_dir = setup()?;
            if !Command::new("cargo")
                .args(["fuzz", "--version"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
            {
                eprintln!("xtask: installing cargo-fuzz");
                check(
                    Command::new("cargo")
                        .args(["install", "cargo-fuzz", "--locked"])
                        .status()?,
                    "cargo install cargo-fuzz",
                )?;
            }
            for target in ["decode", "config"] {
                // The rustup proxy (not $CARGO): `+nightly` selects the toolchain cargo-fuzz needs.
                let mut cmd = Command::new("cargo");
                cmd.env("PATH", path_with(&bin_dir)?)
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .current_dir(workspace_root().join("fuzz"))
                    .args([
                        "+nightly",
                        "fuzz",
                        "run",
                        target,
                        "--",
                        &format!("-max_total_time={seconds}"),
                    ]);
                check(cmd.status()?, &format!("fuzzing {target}"))?;
            }
            println!("xtask: fuzzing found nothing in {seconds} s per target");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench => {
            let bin_dir = setup()?;
            ensure_tools(&[("bpftrace", "bpftrace"), ("bpftool", "bpftool")])?;
            // The replay benchmark builds through cargo: it needs bpf-linker too.
            env::set_var("PATH", path_with(&bin_dir)?);
            build(&bin_dir, true, &["-p", "watcher", "-p", "watcher-tests"])?;
            let rel = target_dir().join("release");
            bench::bench(&workspace_root(), &rel.join("watcher"), &rel.join("actor"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where built and downloaded tools are kept across checkouts: `$WATCHER_CACHE`,
/// else `~/.cache/watcher`.
fn cache_root() -> PathBuf {
    env::var_os("WATCHER_CACHE")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/watcher")))
        .unwrap_or_else(|| target_dir().join("tools"))
}

/// `cargo` with PATH extended by the bpf-linker directory.
fn cargo(bin_dir: &Path) -> Result<Command> {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.env("PATH", path_with(bin_dir)?);
    cmd.current_dir(workspace_root());
    Ok(cmd)
}

/// $PATH with `dir` (where bpf-linker is) in front.
fn path_with(dir: &Path) -> Result<OsString> {
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(env::split_paths(&path));
    Ok(env::join_paths(paths)?)
}

pub(crate) fn check(status: std::process::ExitStatus, what: &str) -> Result<()> {
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn build(bin_dir: &Path, release: bool, pkgs: &[&str]) -> Result<()> {
    let mut cmd = cargo(bin_dir)?;
    cmd.arg("build").args(pkgs);
    if release {
        cmd.arg("--release");
    }
    check(cmd.status().context("running cargo build")?, "cargo build")
}

fn test(args: Vec<OsString>) -> Result<ExitCode> {
    let bin_dir = setup()?;
    if !nix_is_root() {
        let msg =
            "the end-to-end tests load eBPF programs and need root: run `cargo xtask test` as root";
        if env::var("CI").as_deref() == Ok("true") {
            bail!("{msg}");
        }
        eprintln!("xtask: warning: {msg}; they will fail");
    }
    // Real components the end-to-end tests talk to, from Debian: rsyslog (the
    // syslog sink), Prometheus and promtool (the metrics, the shipped rules),
    // Alertmanager (the alert sink), make and a C compiler (the healthy-load
    // build), util-linux (unshare), supervisor (a real supervisor's restarts
    // and stops), dpkg-deb (the package).
    ensure_tools(&[
        ("rsyslogd", "rsyslog"),
        ("promtool", "prometheus"),
        ("prometheus", "prometheus"),
        ("prometheus-alertmanager", "prometheus-alertmanager"),
        ("dpkg-deb", "dpkg"),
        ("make", "make"),
        ("cc", "gcc"),
        ("unshare", "util-linux"),
        ("ip", "iproute2"),
        ("supervisord", "supervisor"),
        // The kernel's own account of task frees for the reap test.
        ("perf", "linux-perf"),
        // A real terminal for `watcher top`.
        ("tmux", "tmux"),
        // The kernel's maps as they are (the list of programs whose execs
        // wake the reader).
        ("bpftool", "bpftool"),
        // Podman's containers, named from its store and its API; runc as
        // its OCI runtime (a fresh machine gets crun with podman, and crun
        // refuses this machine kind's hybrid cgroups).
        ("podman", "podman"),
        ("runc", "runc"),
    ])?;
    // Docker Engine and the images of the container tests (watcher's own
    // image holds the static build, which the kernel matrix needs too).
    // `daemon` stops a dockerd started here when this function returns.
    let daemon = docker::ensure_daemon(&target_dir())?;
    docker::ensure_test_image(&target_dir())?;
    docker::ensure_podman_image()?;
    let exes = vms::build_static(&bin_dir)?;
    docker::build_image(
        vms::path_of(&exes, "watcher"),
        &target_dir(),
        docker::WATCHER_IMAGE,
    )?;
    // The Debian package, installed and removed again by the package test.
    let deb = deb::build(vms::path_of(&exes, "watcher"), &target_dir())?;
    // The whole run's `cargo test` builds the debug daemon itself (for the
    // daemon crate's own integration tests), with the same features as every
    // test: a `cargo build` first would build the daemon and the dependency
    // chain below it twice (the tests' dev-dependencies widen hashbrown's and
    // serde_json's features). A run narrowed by arguments may not build it.
    if !args.is_empty() {
        build(&bin_dir, false, &["-p", "watcher", "-p", "watcher-tests"])?;
    }
    let watcher = target_dir().join("debug").join("watcher");
    let mut cmd = cargo(&bin_dir)?;
    cmd.args(["test", "--no-fail-fast"])
        .env("WATCHER_BIN", &watcher)
        .env("WATCHER_TEST_IMAGE", docker::TEST_IMAGE)
        .env("WATCHER_IMAGE", docker::WATCHER_IMAGE)
        .env("WATCHER_DEB", &deb)
        // The hostile-load tests measure the build users run.
        .env("WATCHER_RELEASE_BIN", vms::path_of(&exes, "watcher"))
        // A static actor runs inside the busybox container (the fork bomb).
        .env("WATCHER_STATIC_ACTOR", vms::path_of(&exes, "actor"));
    cmd.args(&args);
    let host_ok = cmd.status().context("running cargo test")?.success();
    drop(daemon);
    if !args.is_empty() {
        return Ok(if host_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    // The same end-to-end checks on the other kernels users run.
    let vms_ok = match vms::run(&bin_dir, &[]) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("xtask: kernel matrix: {e:#}");
            false
        }
    };
    if !host_ok {
        eprintln!("xtask: the tests on this host failed (see above)");
    }
    Ok(if host_ok && vms_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn on_path(cmd: &str) -> bool {
    env::var_os("PATH")
        .map(|p| env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(cmd).is_file()
        || Path::new("/sbin").join(cmd).is_file()
}

/// Install the Debian packages of missing tools (as root; services are not started).
fn ensure_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    ensure_packages(&missing)
}

/// Install these Debian packages (as root; services are not started).
pub(crate) fn ensure_packages(missing: &[&str]) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    if !nix_is_root() {
        bail!(
            "missing tools for the tests ({}); install them: apt-get install {}",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let quiet = |c: &mut Command| c.env("DEBIAN_FRONTEND", "noninteractive").status();
    check(
        quiet(Command::new("apt-get").args(["update", "-q"]))?,
        "apt-get update",
    )?;
    check(
        quiet(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(missing),
        )?,
        "apt-get install",
    )
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Install rust-src and bpf-linker for the eBPF toolchain, and protoc (the
/// containerd API's bindings are generated at build time); returns the
/// directory holding bpf-linker.
fn setup() -> Result<PathBuf> {
    ensure_tools(&[("protoc", "protobuf-compiler")])?;
    // rust-src, for -Z build-std=core.
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
    .context("rustup is needed to build the eBPF programs")?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: installing rust-src for {EBPF_TOOLCHAIN}");
        check(
            Command::new("rustup")
                .args([
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    EBPF_TOOLCHAIN,
                ])
                .status()?,
            "rustup component add rust-src",
        )?;
    }

    // bpf-linker, built against this toolchain's own libLLVM (no LLVM of that
    // version exists as a system package here), cached per toolchain build.
    let vv = output(
        Command::new("rustc")
            .arg(format!("+{EBPF_TOOLCHAIN}"))
            .arg("-vV"),
    )?;
    let field = |name: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let release = field("release:");
    let commit = field("commit-hash:");
    let llvm = field("LLVM version:");
    let llvm_major = llvm.split('.').next().unwrap_or("").to_owned();
    if llvm_major.is_empty() {
        bail!("cannot tell the LLVM version of the {EBPF_TOOLCHAIN} toolchain from `rustc -vV`");
    }
    let cache = cache_root();
    let key = format!(
        "bpf-linker-{BPF_LINKER_VERSION}-rust-{release}-{}",
        commit.get(..12).unwrap_or(&commit)
    );
    let dir = cache.join(&key);
    let bin_dir = dir.join("bin");
    let linker = bin_dir.join("bpf-linker");
    if linker.exists()
        && Command::new(&linker)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    {
        return Ok(bin_dir);
    }

    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against the {EBPF_TOOLCHAIN} toolchain's LLVM {llvm} (about a minute, once)");
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{EBPF_TOOLCHAIN}"))
            .args(["--print", "sysroot"]),
    )?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    let lib = fs::read_dir(&libdir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.starts_with("libLLVM.so."))
                .unwrap_or(false)
        })
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    // Installed in place: the binary finds libLLVM through the prefix's path
    // recorded at build time, so the prefix cannot move afterwards.
    let _ = fs::remove_dir_all(&dir);
    let prefix = dir.join("llvm");
    fs::create_dir_all(prefix.join("lib"))?;
    // libLLVM.so for the build, and the soname so the binary finds it when run.
    std::os::unix::fs::symlink(&lib, prefix.join("lib/libLLVM.so"))?;
    std::os::unix::fs::symlink(
        &lib,
        prefix.join("lib").join(lib.file_name().expect("file name")),
    )?;
    let status = Command::new("cargo")
        .arg(format!("+{EBPF_TOOLCHAIN}"))
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--no-default-features",
        ])
        .args(["--features", &format!("llvm-{llvm_major}"), "--root"])
        .arg(&dir)
        .env("LLVM_PREFIX", &prefix)
        .env("CARGO_TARGET_DIR", cache.join("bpf-linker-build"))
        .status()
        .context("running cargo install bpf-linker")?;
    check(status, "cargo install bpf-linker")?;
    let ok = Command::new(&linker)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        bail!("the freshly built {} does not run", linker.display());
    }
    Ok(bin_dir)
}
