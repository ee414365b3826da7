//! The kernel matrix: Debian's 6.1 and 6.12 kernels booted under QEMU's
//! software emulation (TCG), each running the end-to-end checks with a static
//! watcher inside.
//!
//! Nothing is installed on the host: the kernel packages, QEMU (Debian 12's
//! qemu-system-x86 and the libraries it needs that the host lacks) and
//! busybox-static are fetched with `apt-get download` and unpacked with
//! `dpkg-deb` into `~/.cache/watcher/vm/`, so the host's own packages (e.g. a
//! backported qemu-utils) are left as they are.
//!
//! In the guest, the initramfs holds busybox, the musl-static `watcher`,
//! `actor` and the end-to-end test binaries of TEST_BINARIES, each at the same
//! absolute path as on the host (the tests find `actor` by its build path).
//! `/init` mounts proc, sysfs and devtmpfs (the initramfs itself is writable,
//! and nothing is mounted over /tmp, where a checkout may live), brings up `lo` and runs
//! `watcher check` and both test binaries, printing a marker line with each
//! exit status on the serial console, which this reads.
use std::collections::BTreeMap;
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo, check, output};

const MUSL: &str = "x86_64-unknown-linux-musl";

/// Kernel series verified by default: the newest Debian 12 package of each
/// (6.1 is Debian 12's own kernel; 6.12 is the newer one Debian 12 also ships).
const SERIES: &[&str] = &[
    r"^linux-image-6\.1\.0-[0-9]+-amd64$",
    r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
];

/// QEMU from Debian 12 plus the libraries it links that a host may lack,
/// busybox for the guest's userland, SeaBIOS for booting.
const TOOL_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "busybox-static",
    "libcapstone4",
    "libfdt1",
    "libpmem1",
    "libndctl6",
    "libdaxctl1",
    "librdmacm1",
    "libibverbs1",
    "libnl-3-200",
    "libnl-route-3-200",
    "libslirp0",
    "libvdeplug2",
];

/// The end-to-end test binaries run in the guests, in this order.
const TEST_BINARIES: [&str; 5] = ["events", "findings", "daemon", "ports", "robustness"];

/// Tests left out in the guests: (binary, test, why), printed each run.
/// Matched exactly (`--exact`): a name here never skips a longer one.
const SKIPPED: &[(&str, &str, &str)] = &[
    (
        "findings",
        "forking_faster_than_the_storm_threshold",
        "the default fork_storm rate (500 forks/s for 2 s) is above what an emulated CPU forks (about 430/s); \
         `fork_storm_threshold_from_the_config_file` (50/s) runs instead",
    ),
    ("daemon", "the_metrics_exposition_passes_promtool", "promtool (Prometheus) is not in the guest"),
    ("daemon", "syslog_sink_reaches_a_real_rsyslog", "it needs rsyslogd, not in the guest"),
    (
        "daemon",
        "daemon_feeds_file_socket_and_metrics_and_reloads_on_sighup",
        "the sinks, reload and metrics are userspace, the same on every kernel, and its flood takes over a \
         minute emulated (the guest's time limit would not hold every test); it runs on the host",
    ),
    (
        "daemon",
        "a_stalled_stdout_drops_for_itself_and_never_holds_up_the_file",
        "the sinks' queues are userspace, the same on every kernel, and its floods take over a minute \
         emulated; it runs on the host",
    ),
    (
        "ports",
        "bind_to_port_0_in_a_namespace_without_free_ports_is_ports_exhausted",
        "the namespace's port summary is read with sock_diag, whose inet_diag/tcp_diag are modules on \
         Debian's kernels, and the guest has no modules (its summary comes back empty); it runs on the host",
    ),
    (
        "ports",
        "connects_without_a_free_local_port_are_ports_exhausted_not_connect_failures",
        "the same: the port summary needs the inet_diag module, not in the guest; it runs on the host",
    ),
    (
        "events",
        "the_reader_says_in_the_kernel_when_it_sleeps_and_a_deciding_record_wakes_it",
        "it reads the kernel's READER map with bpftool, not in the guest; that a deciding record wakes the \
         reader there is `deciding_records_wake_the_reader_at_once`",
    ),
    (
        "events",
        "forks_are_urgent_in_the_kernel_while_a_fork_storm_can_be_decided",
        "it reads the kernel's READER map with bpftool, not in the guest; it runs on the host",
    ),
    (
        "events",
        "the_kernel_counts_each_parents_forks_per_second",
        "it reads the kernel's FORK_RATE and READER maps with bpftool, not in the guest; that the fork \
         which reaches the rate wakes the reader there is \
         `the_fork_that_reaches_the_rate_in_its_parents_second_wakes_the_reader`",
    ),
    (
        "events",
        "the_kernel_counts_the_live_processes_of_each_exec_name",
        "it reads the kernel's EXEC_CROWD and EXEC_LIVE maps with bpftool, not in the guest; the programs \
         that keep them load and run there with every exec and exit test; it runs on the host",
    ),
    (
        "events",
        "one_ring_per_cpu_loses_nothing_and_counts_its_own_loss",
        "one CPU's overflow beside another's needs two vCPUs; the guests have one (with two, multi-threaded \
         TCG can run stale patched kernel code, see docs/kernels.md, and single-threaded TCG doubles the guests' \
         time); it runs on the host",
    ),
];

/// QEMU's TCG threading (`single` unless `cargo xtask vms --tcg multi`).
static TCG: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

pub fn set_tcg(mode: &str) -> Result<()> {
    let m = match mode {
        "single" => "single",
        "multi" => "multi",
        other => bail!("--tcg {other}: say `single` or `multi`"),
    };
    let _ = TCG.set(m);
    Ok(())
}

/// `-accel` for the guests. Single-threaded TCG by default: with a host
/// thread per vCPU (`multi`), a vCPU can keep executing its stale
/// translation of a kernel instruction that another vCPU has patched — the
/// int3 of a jump label being switched (what attaching or detaching the
/// first or last program on a syscall tracepoint does) — and loop on it
/// forever: both vCPUs "soft-locked" in syscall_trace_enter, with the NOP
/// back in memory. Reproduced with `cargo xtask vms --soak 150 --tcg multi`,
/// with watcher and without it (`--soak-with tracefs`); never with `single`.
fn accel() -> String {
    format!("tcg,thread={}", TCG.get().copied().unwrap_or("single"))
}

/// Per kernel: boot + checks must end within this, or the run fails.
const BOOT_DEADLINE: Duration = Duration::from_secs(540);

/// The tracepoints watcher attaches (as in watcher's `loader::HOOKS`): their
/// format files are printed by each guest and kept in
/// `target/vm/<release>.formats.txt`, the fixtures of watcher's layout tests.
const TRACEPOINTS: &[&str] = &[
    "task/task_newtask",
    "sched/sched_process_exec",
    "sched/sched_process_exit",
    "sched/sched_process_free",
    "syscalls/sys_enter_wait4",
    "syscalls/sys_exit_wait4",
    "syscalls/sys_enter_waitid",
    "syscalls/sys_exit_waitid",
    "syscalls/sys_enter_bind",
    "syscalls/sys_exit_bind",
    "syscalls/sys_enter_connect",
    "syscalls/sys_exit_connect",
    "sock/inet_sock_set_state",
    "cgroup/cgroup_mkdir",
    "cgroup/cgroup_rmdir",
    "signal/signal_generate",
    "oom/mark_victim",
    "tcp/tcp_destroy_sock",
];

/// Prefix of the console lines that carry the format files.
const FORMAT_LINE: &str = "WATCHER-FORMAT ";

pub struct Outcome {
    pub kernel: String,
    pub ok: bool,
    pub seconds: f64,
    pub summary: Vec<String>,
}

fn cache_dir() -> PathBuf {
    crate::cache_root().join("vm")
}

/// `apt-get download` into `dir` (refreshing the package lists once if a
/// package is not found).
fn apt_download(dir: &Path, pkgs: &[String]) -> Result<()> {
    let missing: Vec<&String> = pkgs.iter().filter(|p| deb_of(dir, p).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    // Ok(None) when downloaded, else apt's error lines.
    let try_download = || -> Result<Option<String>> {
        let out = Command::new("apt-get")
            .arg("download")
            .args(&missing)
            .current_dir(dir)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context("running apt-get download (Debian's apt is needed)")?;
        let errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("E:"))
            .map(str::to_owned)
            .collect();
        Ok((!out.status.success()).then(|| errors.join(" ")))
    };
    if try_download()?.is_none() {
        return Ok(());
    }
    eprintln!("xtask: apt-get download failed; refreshing the package lists");
    check(
        Command::new("apt-get").args(["update", "-q"]).status()?,
        "apt-get update",
    )?;
    if let Some(why) = try_download()? {
        bail!(
            "apt-get download {} failed: {why} (are Debian 12's package sources configured and reachable?)",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

/// The downloaded .deb of a package, if present (`name_version_arch.deb`).
fn deb_of(dir: &Path, pkg: &str) -> Option<PathBuf> {
    let prefix = format!("{pkg}_");
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

/// The newest package whose name matches `pattern` (apt-cache search, version-sorted).
fn newest_package(pattern: &str) -> Result<String> {
    let list = || -> Result<Vec<String>> {
        let found = output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?;
        Ok(found
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(str::to_owned)
            .collect())
    };
    let mut names = list()?;
    if names.is_empty() {
        check(
            Command::new("apt-get").args(["update", "-q"]).status()?,
            "apt-get update",
        )?;
        names = list()?;
    }
    names.sort_by_key(|n| version_key(n));
    names.pop().with_context(|| {
        format!("no Debian package matches {pattern}: are Debian 12's package sources configured?")
    })
}

/// Numbers in a name, for a version sort (6.12.9 < 6.12.10).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// QEMU and busybox unpacked from Debian 12's packages; returns the unpack root.
fn tools() -> Result<PathBuf> {
    let cache = cache_dir();
    let root = cache.join("tools");
    let qemu = root.join("usr/bin/qemu-system-x86_64");
    if qemu.exists() && root.join("bin/busybox").exists() && qemu_runs(&root) {
        return Ok(root);
    }
    let debs = cache.join("debs");
    let pkgs: Vec<String> = TOOL_PACKAGES.iter().map(|s| s.to_string()).collect();
    eprintln!(
        "xtask: fetching QEMU and busybox from Debian (not installed: unpacked into {})",
        root.display()
    );
    apt_download(&debs, &pkgs)?;
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    for p in &pkgs {
        let deb = deb_of(&debs, p).with_context(|| format!("{p}: downloaded package not found"))?;
        check(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&root)
                .status()?,
            &format!("dpkg-deb -x {}", deb.display()),
        )?;
    }
    if !qemu_runs(&root) {
        let ldd = Command::new("ldd")
            .arg(&qemu)
            .envs(qemu_env(&root))
            .output()?;
        let missing: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
            .lines()
            .filter(|l| l.contains("not found"))
            .map(|l| l.trim().to_owned())
            .collect();
        bail!(
            "the unpacked QEMU does not run; libraries not found: {}",
            missing.join(", ")
        );
    }
    Ok(root)
}

fn qemu_env(root: &Path) -> Vec<(String, String)> {
    vec![
        (
            "LD_LIBRARY_PATH".into(),
            format!(
                "{}:{}",
                root.join("usr/lib/x86_64-linux-gnu").display(),
                root.join("lib/x86_64-linux-gnu").display()
            ),
        ),
        (
            "QEMU_MODULE_DIR".into(),
            root.join("usr/lib/x86_64-linux-gnu/qemu")
                .display()
                .to_string(),
        ),
    ]
}

fn qemu_runs(root: &Path) -> bool {
    Command::new(root.join("usr/bin/qemu-system-x86_64"))
        .arg("--version")
        .envs(qemu_env(root))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The kernel image of a package: downloads it and extracts `boot/vmlinuz-*` only.
fn kernel(pkg: &str) -> Result<PathBuf> {
    let cache = cache_dir();
    let release = pkg.strip_prefix("linux-image-").unwrap_or(pkg);
    let dir = cache.join("kernels");
    let image = dir.join(format!("boot/vmlinuz-{release}"));
    if image.exists() {
        return Ok(image);
    }
    let debs = cache.join("debs");
    apt_download(&debs, &[pkg.to_owned()])?;
    let deb = deb_of(&debs, pkg).with_context(|| format!("{pkg}: downloaded package not found"))?;
    fs::create_dir_all(&dir)?;
    let sh = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards './boot/vmlinuz-*' './boot/config-*'",
        deb.display(),
        dir.display()
    );
    check(
        Command::new("sh").args(["-c", &sh]).status()?,
        &format!("unpacking {pkg}"),
    )?;
    if !image.exists() {
        bail!("{pkg} holds no boot/vmlinuz-{release}");
    }
    // The .deb (tens of MB each) is not needed once the image is out.
    let _ = fs::remove_file(&deb);
    Ok(image)
}

/// Executables cargo reports building (`--message-format=json`): (target name, path).
fn cargo_executables(cmd: &mut Command) -> Result<Vec<(String, PathBuf)>> {
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().context("running cargo")?;
    let mut found = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" {
            if let (Some(name), Some(exe)) =
                (v["target"]["name"].as_str(), v["executable"].as_str())
            {
                found.push((name.to_owned(), PathBuf::from(exe)));
            }
        }
    }
    check(child.wait()?, "cargo build (static, for the guests)")?;
    Ok(found)
}

/// The static binaries for the guest: watcher, actor, and the test binaries.
pub(crate) fn build_static(bin_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l.trim() == MUSL) {
        eprintln!("xtask: adding the {MUSL} target (static binaries for the guests)");
        check(
            Command::new("rustup")
                .args(["target", "add", MUSL])
                .status()?,
            "rustup target add",
        )?;
    }
    // One invocation for the binaries and the test binaries: cargo unifies
    // the features of their dependencies once (the tests' dev-dependencies
    // widen hashbrown's and serde_json's), so the daemon's crate and the
    // dependency chain below it are built once, not again for the tests.
    let mut build = cargo(bin_dir)?;
    build.args([
        "build",
        "--release",
        "--target",
        MUSL,
        "-p",
        "watcher",
        "-p",
        "watcher-tests",
        "--bins",
    ]);
    for t in TEST_BINARIES {
        build.args(["--test", t]);
    }
    let exes = cargo_executables(&mut build)?;
    for want in ["watcher", "actor"].into_iter().chain(TEST_BINARIES) {
        if !exes.iter().any(|(n, _)| n == want) {
            bail!("cargo did not report the static `{want}` executable");
        }
    }
    Ok(exes)
}

pub(crate) fn path_of<'a>(exes: &'a [(String, PathBuf)], name: &str) -> &'a Path {
    &exes
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .expect("checked in build_static")
        .1
}

/// How every guest's /init begins: busybox's applets, the kernel's file
/// systems (the initramfs itself is writable: nothing is mounted over /tmp,
/// where a checkout may live) and `lo`.
const GUEST_PREAMBLE: &str = "#!/bin/busybox sh\n\
/bin/busybox --install -s /bin\n\
export PATH=/bin\n\
mount -t proc proc /proc\n\
mount -t sysfs sysfs /sys\n\
mount -t devtmpfs devtmpfs /dev\n\
ip link set lo up\n\
";

/// One test run again and again in each guest instead of the whole set
/// (`cargo xtask vms --only BINARY::TEST --repeat N`): how a test that
/// failed once in CI's guests is reproduced. Each run is a step of its own.
struct Focus {
    binary: String,
    test: String,
    repeat: u32,
}

static FOCUS: std::sync::OnceLock<Focus> = std::sync::OnceLock::new();

/// `--only BINARY::TEST` and `--repeat N` (checked before anything is built).
pub fn set_focus(only: Option<&str>, repeat: u32) -> Result<()> {
    let Some(only) = only else {
        if repeat != 1 {
            bail!("--repeat {repeat}: say which test with --only BINARY::TEST");
        }
        return Ok(());
    };
    // (A binary alone: all its tests, as the whole set runs them.)
    let (binary, test) = only.split_once("::").unwrap_or((only, ""));
    if binary.is_empty() || (only.contains("::") && test.is_empty()) {
        bail!(
            "--only {only}: say BINARY or BINARY::TEST, e.g. events::tracefs_is_mounted_when_missing"
        );
    }
    if !TEST_BINARIES.contains(&binary) {
        bail!(
            "--only {only}: no test binary `{binary}` runs in the guests (they are {})",
            TEST_BINARIES.join(", ")
        );
    }
    if repeat == 0 {
        bail!("--repeat 0: say how many runs, at least 1");
    }
    let _ = FOCUS.set(Focus {
        binary: binary.to_owned(),
        test: test.to_owned(),
        repeat,
    });
    Ok(())
}

/// The steps of a focused guest: `check`, then the test (or the binary's
/// tests, as [`binary_command`] runs them) `repeat` times, steps `run1`, `run2`, …
fn focus_steps(exes: &[(String, PathBuf)], f: &Focus) -> String {
    let bin = path_of(exes, &f.binary).display();
    let cmd = if f.test.is_empty() {
        binary_command(exes, &f.binary)
    } else {
        format!("{bin} --exact {} --nocapture", f.test)
    };
    (1..=f.repeat)
        .map(|i| format!("{cmd}; echo \"WATCHER-VM run{i} exit=$?\"\n"))
        .collect()
}

/// How a test binary runs in the guests: two tests at a time, [`SKIPPED`] left out.
fn binary_command(exes: &[(String, PathBuf)], t: &str) -> String {
    let skips: String = SKIPPED
        .iter()
        .filter(|(b, _, _)| *b == t)
        .map(|(_, test, _)| format!(" --skip {test}"))
        .collect();
    let exact = if skips.is_empty() { "" } else { " --exact" };
    format!(
        "{} --test-threads=2{exact}{skips}",
        path_of(exes, t).display()
    )
}

/// The guest's /init.
fn init_script(exes: &[(String, PathBuf)]) -> String {
    let watcher = path_of(exes, "watcher").display();
    let mut steps = format!("{watcher} check; echo \"WATCHER-VM check exit=$?\"\n");
    // (`watcher check` has mounted tracefs.)
    steps.push_str(&format!(
        "for tp in {}; do echo \"{FORMAT_LINE}=== $tp\"; sed 's/^/{FORMAT_LINE}/' /sys/kernel/tracing/events/$tp/format; done; echo \"{FORMAT_LINE}=== end\"\n",
        TRACEPOINTS.join(" ")
    ));
    if let Some(f) = FOCUS.get() {
        steps.push_str(&focus_steps(exes, f));
    } else {
        for t in TEST_BINARIES {
            steps.push_str(&format!(
                "{}; echo \"WATCHER-VM {t} exit=$?\"\n",
                binary_command(exes, t)
            ));
        }
    }
    format!(
        r#"{GUEST_PREAMBLE}echo "WATCHER-VM kernel $(uname -r)"
export CI=true WATCHER_BIN={watcher} RUST_BACKTRACE=1 WATCHER_EXPECT_FENTRY=1
{steps}echo "WATCHER-VM done"
poweroff -f
"#
    )
}

/// A newc initramfs (written by busybox cpio): busybox, the static binaries at
/// their build paths, and /init.
fn initramfs(
    busybox: &Path,
    exes: &[(String, PathBuf)],
    init_text: &str,
    out: &Path,
) -> Result<()> {
    let stage = out.with_extension("d");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        fs::create_dir_all(stage.join(d))?;
    }
    fs::copy(busybox, stage.join("bin/busybox"))?;
    fs::write(
        stage.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )?;
    for name in ["watcher", "actor"].into_iter().chain(TEST_BINARIES) {
        let src = path_of(exes, name);
        let dst = stage.join(src.strip_prefix("/").unwrap_or(src));
        fs::create_dir_all(dst.parent().expect("absolute path"))?;
        fs::copy(src, &dst).with_context(|| format!("copying {}", src.display()))?;
    }
    let init = stage.join("init");
    fs::write(&init, init_text)?;
    fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    // Every path below the stage, relative ("./bin/busybox"), parents first.
    let mut list = String::new();
    let mut stack = vec![stage.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            list.push_str(&format!(
                "./{}\n",
                p.strip_prefix(&stage).expect("below the stage").display()
            ));
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    let file = fs::File::create(out)?;
    let mut child = Command::new(stage.join("bin/busybox"))
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(&stage)
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .context("running busybox cpio")?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(list.as_bytes())?;
    check(child.wait()?, "busybox cpio")?;
    Ok(())
}

/// A console line without the terminal control sequences SeaBIOS prints
/// (`ESC c`, `ESC [ ? 7 l`, `ESC [ 2 J`, …): noise in a log.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next_if_eq(&'[').is_some() {
                // CSI: parameters and intermediates up to a final byte @..~.
                for p in chars.by_ref() {
                    if ('@'..='~').contains(&p) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// Boot one kernel with the initramfs; stream its console prefixed; judge by the markers.
fn boot(tools: &Path, image: &Path, initrd: &Path, label: &str, log: &Path) -> Result<Outcome> {
    boot_with(
        tools,
        image,
        initrd,
        label,
        log,
        "console=ttyS0 panic=-1 quiet",
        // (A focused guest runs at most the whole set --repeat times.)
        BOOT_DEADLINE * FOCUS.get().map_or(1, |f| f.repeat),
        false,
    )
}

/// Boot with this kernel command line and deadline.
#[allow(clippy::too_many_arguments)]
fn boot_with(
    tools: &Path,
    image: &Path,
    initrd: &Path,
    label: &str,
    log: &Path,
    append: &str,
    limit: Duration,
    stop_on_alarm: bool,
) -> Result<Outcome> {
    // (The soak stops 30 s after the guest kernel's first alarm: its stacks are out by then.)
    let mut alarm_at: Option<Instant> = None;
    let start = Instant::now();
    let smp = if stop_on_alarm { "2" } else { "1" };
    let mut child = Command::new(tools.join("usr/bin/qemu-system-x86_64"))
        .envs(qemu_env(tools))
        .arg("-L")
        .arg(tools.join("usr/share/seabios"))
        .arg("-L")
        .arg(tools.join("usr/share/qemu"))
        .args([
            // One vCPU (see SKIPPED for what needs two; `--soak` uses two, see accel()).
            "-machine",
            "q35",
            "-accel",
            &accel(),
            "-cpu",
            "max",
            "-m",
            "1G",
            "-smp",
            smp,
        ])
        .args(["-nographic", "-no-reboot", "-vga", "none", "-nic", "none"])
        .arg("-kernel")
        .arg(image)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).split(b'\n').map_while(|l| l.ok()) {
            let _ = tx.send(
                String::from_utf8_lossy(&l)
                    .trim_end_matches('\r')
                    .to_owned(),
            );
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
            let _ = tx2.send(format!("qemu: {l}"));
        }
    });
    let mut logf = fs::File::create(log)?;
    let mut formats = String::new();
    // (step, exit status, the test counts it printed)
    let mut steps: Vec<(String, i32, Option<String>)> = Vec::new();
    let mut done = false;
    let mut summary: Vec<String> = Vec::new();
    let mut counts: Option<String> = None;
    let deadline = start + limit;
    loop {
        let deadline = match alarm_at {
            Some(t) if stop_on_alarm => deadline.min(t + Duration::from_secs(30)),
            _ => deadline,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = plain(&line);
                writeln!(logf, "{line}")?;
                if let Some(f) = line.strip_prefix(FORMAT_LINE) {
                    formats.push_str(f);
                    formats.push('\n');
                    continue;
                }
                println!("[{label}] {line}");
                if let Some(rest) = line.strip_prefix("WATCHER-VM ") {
                    if rest == "done" {
                        done = true;
                    } else if let Some((step, code)) = rest.split_once(" exit=") {
                        steps.push((
                            step.to_owned(),
                            code.trim().parse().unwrap_or(-1),
                            counts.take(),
                        ));
                    }
                }
                // The guest kernel's own alarms: said in the summary even when every test passes.
                if is_kernel_alarm(&line)
                    && !summary.iter().any(|s| s.starts_with("kernel reported"))
                {
                    summary.push(format!("kernel reported: {}", line.trim()));
                    alarm_at = Some(Instant::now());
                }
                if let Some(rest) = line.strip_prefix("test result: ") {
                    // "ok. 19 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 5.85s"
                    let count = |what: &str| {
                        rest.split(';')
                            .find_map(|p| {
                                p.trim()
                                    .trim_start_matches("ok. ")
                                    .trim_start_matches("FAILED. ")
                                    .strip_suffix(what)
                            })
                            .map(|n| n.trim().to_owned())
                            .unwrap_or_else(|| "?".into())
                    };
                    let mut t = format!("{} passed, {} failed", count(" passed"), count(" failed"));
                    if count(" filtered out") != "0" {
                        t.push_str(&format!(", {} not run", count(" filtered out")));
                    }
                    counts = Some(t);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                if alarm_at.is_some() && stop_on_alarm {
                    summary.push("stopped 30 s after the kernel's alarm".into());
                } else {
                    summary.push(format!("timed out after {} s", limit.as_secs()));
                }
                break;
            }
        }
    }
    let _ = child.wait();
    if !formats.is_empty() {
        fs::write(log.with_extension("formats.txt"), &formats)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut ok = done;
    let wanted: Vec<&str> = if stop_on_alarm {
        vec!["soak"]
    } else if steps.iter().any(|(s, _, _)| s == "bench") {
        vec!["bench"]
    } else if let Some(f) = FOCUS.get() {
        // (Every run said, and how many passed.)
        let runs: Vec<_> = steps
            .iter()
            .filter(|(s, _, _)| s.starts_with("run"))
            .collect();
        let passed = runs.iter().filter(|(_, c, _)| *c == 0).count();
        summary.push(format!(
            "{}{}{}: {passed} of {} runs passed{}",
            f.binary,
            if f.test.is_empty() { "" } else { "::" },
            f.test,
            f.repeat,
            if runs.len() < f.repeat as usize {
                format!(
                    " ({} did not run to their end)",
                    f.repeat as usize - runs.len()
                )
            } else {
                String::new()
            }
        ));
        ok &= passed == f.repeat as usize;
        vec!["check"]
    } else {
        ["check"].into_iter().chain(TEST_BINARIES).collect()
    };
    for want in wanted {
        match steps.iter().find(|(s, _, _)| s == want) {
            Some((_, 0, counts)) => {
                summary.push(format!("{want}: {}", counts.as_deref().unwrap_or("ok")))
            }
            Some((_, c, _)) => {
                ok = false;
                summary.push(format!("{want} failed (exit {c})"));
            }
            None => {
                ok = false;
                summary.push(format!("{want} did not run to its end"));
            }
        }
    }
    Ok(Outcome {
        kernel: label.to_owned(),
        ok,
        seconds,
        summary,
    })
}

/// The guest kernel's own alarms: a CPU or task stuck.
fn is_kernel_alarm(line: &str) -> bool {
    line.contains("BUG: soft lockup")
        || line.contains("rcu_preempt detected stalls")
        || line.contains("rcu_sched detected stalls")
        || line.contains("blocked for more than")
        || line.contains("hard LOCKUP")
}

/// The soak's /init: three watchers attached and detached `cycles` times
/// under a steady fork and bind load. One of them detaches its programs
/// while running (the fault drill: what `a_blind_pipeline_is_reported_at_once`
/// does), one is killed with SIGKILL every third cycle (the kernel detaches
/// for it), and the third ends with SIGTERM. Each cycle's end is a console
/// line; a guest that locks up stops printing them.
fn soak_script(exes: &[(String, PathBuf)], cycles: u32, with: &str) -> String {
    let watcher = path_of(exes, "watcher").display();
    let actor = path_of(exes, "actor").display();
    let cycle = if with == "tracefs" {
        // The control: the same jump label switched without watcher or BPF.
        r#"  for k in 1 2 3 4 5 6 7 8 9 10; do
    echo 1 > /sys/kernel/tracing/events/syscalls/sys_enter_bind/enable
    echo 0 > /sys/kernel/tracing/events/syscalls/sys_enter_bind/enable
  done
  sleep 1"#
            .to_owned()
    } else {
        format!(
            r#"  {watcher} trace --json >/dev/null 2>/tmp/a.err & A=$!
  {watcher} run --config /tmp/s1.toml >/dev/null 2>/tmp/b.err & B=$!
  WATCHER_FAULT_DRILL=detach-after=$((RANDOM % 3 + 1)) {watcher} run --config /tmp/s2.toml >/dev/null 2>/tmp/c.err & C=$!
  sleep $((RANDOM % 3 + 3))
  if [ $((i % 3)) -eq 0 ]; then kill -KILL $A; else kill -TERM $A; fi
  kill -TERM $B $C
  wait $A $B $C"#
        )
    };
    format!(
        r#"{GUEST_PREAMBLE}echo "WATCHER-VM kernel $(uname -r) cpus $(nproc)"
# Every CPU's stack on a soft lockup; hung tasks after 30 s.
echo 1 > /proc/sys/kernel/softlockup_all_cpu_backtrace
echo 30 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
for n in 1 2; do
  printf '[feed]
types = ["finding"]
stdout = false
[metrics]
listen = ""
[health]
canary_interval_s = 0.3
canary_deadline_s = 2
status_file = "/tmp/s%s.json"
' $n > /tmp/s$n.toml
done
{watcher} check | grep -i attach
( while :; do {actor} fork-loop 300 >/dev/null; {actor} net-loop 300 >/dev/null; done ) &
LOAD=$!
i=1
while [ $i -le {cycles} ]; do
{cycle}
  echo "WATCHER-SOAK cycle $i of {cycles} at $(cut -d' ' -f1 /proc/uptime) s"
  i=$((i + 1))
done
kill $LOAD
echo "WATCHER-VM soak exit=0"
echo "WATCHER-VM done"
poweroff -f
"#
    )
}

/// The attachments `vms --bench` compares: the kernel's default (fentry/fexit
/// for the system calls where allowed), the system calls through their
/// tracepoints, and every hook through tracefs (`WATCHER_ATTACH`).
const BENCH_MODES: [(&str, &str); 4] = [
    ("none", ""),
    ("fentry", ""),
    ("syscall tracepoints", "no-fentry"),
    ("all tracefs", "tracefs"),
];
/// Its workloads (the actor's loops) and rounds, interleaved.
/// (The guest has one vCPU, which the watcher shares with the workload: each
/// workload starts after the watcher has been idle for a second.)
const BENCH_WORKLOADS: [&str; 3] = ["syscall-loop 300000", "fork-loop 1000", "net-loop 1000"];
const BENCH_ROUNDS: u32 = 3;

/// The bench's /init: each round runs every workload with no watcher, then
/// under a watcher of each attachment (`kernel.bpf_stats_enabled` on), and
/// prints the workloads' times and the watcher's per-program run counts
/// and times from its /metrics.
fn bench_script(exes: &[(String, PathBuf)]) -> String {
    let watcher = path_of(exes, "watcher").display();
    let actor = path_of(exes, "actor").display();
    let mut rounds = String::new();
    for r in 1..=BENCH_ROUNDS {
        for (i, (_, env)) in BENCH_MODES.iter().enumerate() {
            if i > 0 {
                rounds.push_str(&format!(
                    "WATCHER_ATTACH={env} {watcher} run --config /tmp/b.toml >/dev/null 2>/tmp/w.err & W=$!\n\
                     n=0; until grep -q 'running:' /tmp/w.err; do sleep 1; n=$((n+1)); [ $n -gt 120 ] && break; done\n"
                ));
            }
            for w in BENCH_WORKLOADS {
                rounds.push_str(&format!(
                    "settle\necho \"WATCHER-BENCH {r} {i} {} $({actor} {w} | sed -n 's/^elapsed_ns=//p')\"\n",
                    w.split(' ').next().unwrap_or(w)
                ));
            }
            if i > 0 {
                // (watcher reads the kernel's counts once a second: scrape
                // until two looks a second apart agree.)
                rounds.push_str(&format!(
                    "prev=x; for k in 1 2 3 4 5 6 7 8 9 10; do sleep 1; cur=$(wget -qO- http://127.0.0.1:9464/metrics | grep '^watcher_program_run'); [ \"$cur\" = \"$prev\" ] && break; prev=$cur; done\n\
                     echo \"$cur\" | sed 's/^/WATCHER-BENCH {r} {i} metric /'\n\
                     kill -INT $W; wait $W\n"
                ));
            }
        }
    }
    format!(
        r#"{GUEST_PREAMBLE}echo "WATCHER-VM kernel $(uname -r)"
echo 1 > /proc/sys/kernel/bpf_stats_enabled
printf '[feed]\nstdout = false\n[metrics]\nlisten = "127.0.0.1:9464"\n[health]\nstatus_file = "/tmp/b.json"\n' > /tmp/b.toml
{watcher} check | grep load
# Until no process used a CPU for one second (the watcher has caught up).
settle() {{
  prev=$(head -1 /proc/stat)
  for k in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    sleep 1
    cur=$(head -1 /proc/stat)
    a=$(echo $prev | awk '{{print $2+$3+$4}}'); b=$(echo $cur | awk '{{print $2+$3+$4}}')
    [ $((b - a)) -lt 10 ] && break
    prev=$cur
  done
}}
{rounds}echo "WATCHER-VM bench exit=0"
echo "WATCHER-VM done"
poweroff -f
"#
    )
}

/// The tables of a bench guest's console: each workload's median time with
/// no watcher and its ratio under each attachment; each program's ns per
/// run under each.
fn bench_tables(console: &str) -> String {
    let mut times: BTreeMap<(usize, String), Vec<f64>> = BTreeMap::new();
    // (mode, program) → (runs, seconds), summed over rounds.
    let mut progs: BTreeMap<(String, usize), (f64, f64)> = BTreeMap::new();
    for line in console.lines() {
        let Some(rest) = line.split("WATCHER-BENCH ").nth(1) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let Some(mode) = f.get(1).and_then(|m| m.parse::<usize>().ok()) else {
            continue;
        };
        if f.get(2) == Some(&"metric") {
            let (Some(series), Some(v)) = (f.get(3), f.get(4).and_then(|v| v.parse::<f64>().ok()))
            else {
                continue;
            };
            let Some((family, program)) = series.split_once("{program=\"") else {
                continue;
            };
            let program = program.trim_end_matches("\"}").to_owned();
            let e = progs.entry((program, mode)).or_default();
            match family {
                "watcher_program_runs_total" => e.0 += v,
                "watcher_program_run_seconds_total" => e.1 += v,
                _ => {}
            }
        } else if let (Some(w), Some(ns)) = (f.get(2), f.get(3).and_then(|v| v.parse::<f64>().ok()))
        {
            times.entry((mode, (*w).to_owned())).or_default().push(ns);
        }
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v.get(v.len() / 2).copied()
    };
    let mut out = String::from("| workload (median of rounds) | no watcher |");
    for (name, _) in &BENCH_MODES[1..] {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(BENCH_MODES.len() - 1));
    out.push('\n');
    for w in BENCH_WORKLOADS {
        let key = w.split(' ').next().unwrap_or(w).to_owned();
        let Some(base) = times.get(&(0, key.clone())).and_then(median) else {
            continue;
        };
        out.push_str(&format!("| {w} | {:.0} ms |", base / 1e6));
        for i in 1..BENCH_MODES.len() {
            match times.get(&(i, key.clone())).and_then(median) {
                Some(t) => out.push_str(&format!(" {:.2}× |", t / base)),
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out.push_str("\n| program | ");
    out.push_str(
        &BENCH_MODES[1..]
            .iter()
            .map(|(n, _)| format!("{n}: runs | ns/run"))
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(" |\n|---|");
    out.push_str(&"---|---|".repeat(BENCH_MODES.len() - 1));
    out.push('\n');
    let programs: std::collections::BTreeSet<String> =
        progs.keys().map(|(p, _)| p.clone()).collect();
    for p in programs {
        if (1..BENCH_MODES.len()).all(|i| progs.get(&(p.clone(), i)).is_none_or(|e| e.0 == 0.0)) {
            continue;
        }
        out.push_str(&format!("| `{p}` |"));
        for i in 1..BENCH_MODES.len() {
            match progs.get(&(p.clone(), i)) {
                Some(&(runs, secs)) if runs > 0.0 => {
                    out.push_str(&format!(" {runs:.0} | {:.0} |", secs * 1e9 / runs))
                }
                _ => out.push_str(" – | – |"),
            }
        }
        out.push('\n');
    }
    out
}

/// `cargo xtask vms --bench`: in each guest, the workloads' cost under each
/// attachment and each program's ns/run (`kernel.bpf_stats_enabled`);
/// printed, and written to target/vm/<release>.bench.md.
pub fn bench(bin_dir: &Path, packages: &[String]) -> Result<bool> {
    let packages: Vec<String> = if packages.is_empty() {
        SERIES
            .iter()
            .map(|pat| newest_package(pat))
            .collect::<Result<_>>()?
    } else {
        packages.to_vec()
    };
    let (images, tools, work, initrd) = prepare(bin_dir, &packages, "bench.cpio", bench_script)?;
    let mut all = true;
    for (pkg, image) in &images {
        let release = pkg.strip_prefix("linux-image-").unwrap_or(pkg);
        let log = work.join(format!("{release}.bench.log"));
        eprintln!(
            "xtask: bench in {release} under QEMU (TCG, one vCPU); console in {}",
            log.display()
        );
        let o = boot_with(
            &tools,
            image,
            &initrd,
            release,
            &log,
            "console=ttyS0 panic=-1 quiet",
            Duration::from_secs(1500),
            false,
        )?;
        all &= o.ok;
        let tables = bench_tables(&fs::read_to_string(&log)?);
        let md = work.join(format!("{release}.bench.md"));
        fs::write(&md, &tables)?;
        println!(
            "\n### {release} ({}; {:.0} s)\n\n{tables}",
            if o.ok { "ok" } else { "FAIL" },
            o.seconds
        );
    }
    Ok(all)
}

/// What a guest run other than the matrix needs: each package's kernel,
/// the tools, the static binaries, and an initramfs `cpio` (under
/// target/vm, the returned work directory) whose /init `script` writes.
#[allow(clippy::type_complexity)]
fn prepare(
    bin_dir: &Path,
    packages: &[String],
    cpio: &str,
    script: impl FnOnce(&[(String, PathBuf)]) -> String,
) -> Result<(Vec<(String, PathBuf)>, PathBuf, PathBuf, PathBuf)> {
    let mut images = Vec::new();
    for pkg in packages {
        images.push((pkg.clone(), kernel(pkg)?));
    }
    let tools = tools()?;
    let exes = build_static(bin_dir)?;
    let work = crate::target_dir().join("vm");
    fs::create_dir_all(&work)?;
    let initrd = work.join(cpio);
    initramfs(&tools.join("bin/busybox"), &exes, &script(&exes), &initrd)?;
    Ok((images, tools, work, initrd))
}

/// `cargo xtask vms --soak N`: the attach/detach soak on each kernel (6.1 by
/// default); Ok(false) if a guest did not finish or its kernel raised an alarm.
pub fn soak(bin_dir: &Path, packages: &[String], cycles: u32, with: &str) -> Result<bool> {
    if !["watcher", "tracefs"].contains(&with) {
        bail!("--soak-with {with}: say `watcher` or `tracefs`");
    }
    let packages: Vec<String> = if packages.is_empty() {
        vec![newest_package(SERIES[0])?]
    } else {
        packages.to_vec()
    };
    let (images, tools, work, initrd) = prepare(bin_dir, &packages, "soak.cpio", |exes| {
        soak_script(exes, cycles, with)
    })?;
    let mut all = true;
    for (pkg, image) in &images {
        let release = pkg.strip_prefix("linux-image-").unwrap_or(pkg);
        let log = work.join(format!(
            "{release}.soak-{with}-{}.log",
            accel().replace([',', '='], "-")
        ));
        eprintln!(
            "xtask: soaking {release} under QEMU ({}), {cycles} cycles of {with}; console in {}",
            accel(),
            log.display()
        );
        // Not quiet: a lockup's stack is printed at the default log level.
        let o = boot_with(
            &tools,
            image,
            &initrd,
            release,
            &log,
            "console=ttyS0 panic=-1 loglevel=7",
            Duration::from_secs(120 + 12 * cycles as u64),
            true,
        )?;
        let alarms = fs::read_to_string(&log)?
            .lines()
            .filter(|l| is_kernel_alarm(l))
            .count();
        let ok = o.ok && alarms == 0;
        all &= ok;
        println!(
            "  {release:<28} {:<4} {:>7.1} s  {alarms} kernel alarm lines; {}",
            if ok { "ok" } else { "FAIL" },
            o.seconds,
            o.summary.join("; ")
        );
    }
    Ok(all)
}

/// Build, fetch, boot each kernel; print a table; Ok(false) if any check failed.
pub fn run(bin_dir: &Path, packages: &[String]) -> Result<bool> {
    // (package, the series pattern it was picked by, if any)
    let packages: Vec<(String, Option<&str>)> = if packages.is_empty() {
        SERIES
            .iter()
            .map(|pat| Ok((newest_package(pat)?, Some(*pat))))
            .collect::<Result<_>>()?
    } else {
        packages.iter().map(|p| (p.clone(), None)).collect()
    };
    // Kernels first: a bad package name fails before the build.
    let mut images = Vec::new();
    for (pkg, series) in &packages {
        images.push(match (kernel(pkg), series) {
            (Ok(image), _) => (pkg.clone(), image),
            // Superseded since the package lists were fetched: the download
            // refreshed them; take the series' newest now.
            (Err(e), Some(pat)) => {
                let newer = newest_package(pat)?;
                if newer == *pkg {
                    return Err(e);
                }
                eprintln!("xtask: {pkg} is gone; taking {newer}");
                let image = kernel(&newer)?;
                (newer, image)
            }
            (Err(e), None) => return Err(e),
        });
    }
    let tools = tools()?;
    let exes = build_static(bin_dir)?;
    let work = crate::target_dir().join("vm");
    fs::create_dir_all(&work)?;
    let initrd = work.join("initramfs.cpio");
    initramfs(
        &tools.join("bin/busybox"),
        &exes,
        &init_script(&exes),
        &initrd,
    )?;
    for (b, t, why) in SKIPPED {
        eprintln!("xtask: in the guests, `{b}::{t}` is not run: {why}");
    }
    let mut outcomes = Vec::new();
    for (pkg, image) in &images {
        let release = pkg.strip_prefix("linux-image-").unwrap_or(pkg);
        eprintln!("xtask: booting {release} under QEMU (TCG)");
        let log = work.join(format!("{release}.log"));
        outcomes.push(boot(&tools, image, &initrd, release, &log)?);
    }
    println!();
    println!("kernel matrix (logs in {}):", work.display());
    let mut all = true;
    for o in &outcomes {
        all &= o.ok;
        println!(
            "  {:<28} {:<4} {:>5.1} s  {}",
            o.kernel,
            if o.ok { "ok" } else { "FAIL" },
            o.seconds,
            o.summary.join("; ")
        );
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_tables_read_the_guests_console() {
        let console = "\
[6.1] WATCHER-BENCH 1 0 fork-loop 1000000000
[6.1] WATCHER-BENCH 2 0 fork-loop 3000000000
[6.1] WATCHER-BENCH 3 0 fork-loop 2000000000
[6.1] WATCHER-BENCH 1 1 fork-loop 2200000000
[6.1] WATCHER-BENCH 1 2 fork-loop 3000000000
[6.1] WATCHER-BENCH 1 1 metric watcher_program_runs_total{program=\"bind_fexit\"} 2000
[6.1] WATCHER-BENCH 1 1 metric watcher_program_run_seconds_total{program=\"bind_fexit\"} 0.002
[6.1] WATCHER-BENCH 2 1 metric watcher_program_runs_total{program=\"bind_fexit\"} 2000
[6.1] WATCHER-BENCH 2 1 metric watcher_program_run_seconds_total{program=\"bind_fexit\"} 0.002
[6.1] WATCHER-BENCH 1 2 metric watcher_program_runs_total{program=\"bind_fexit\"} 0
[6.1] WATCHER-BENCH 1 2 metric watcher_program_runs_total{program=\"sys_exit_bind\"} 4000
[6.1] WATCHER-BENCH 1 2 metric watcher_program_run_seconds_total{program=\"sys_exit_bind\"} 0.008
";
        let t = bench_tables(console);
        // The median of the three rounds without a watcher (2 s), and the ratios to it.
        assert!(
            t.contains("| fork-loop 1000 | 2000 ms | 1.10× | 1.50× | – |"),
            "{t}"
        );
        assert!(
            t.contains("| `bind_fexit` | 4000 | 1000 | – | – | – | – |"),
            "{t}"
        );
        assert!(
            t.contains("| `sys_exit_bind` | – | – | 4000 | 2000 | – | – |"),
            "{t}"
        );
        let script = bench_script(&[
            ("watcher".into(), "/b/watcher".into()),
            ("actor".into(), "/b/actor".into()),
        ]);
        for env in [
            "WATCHER_ATTACH=no-fentry",
            "WATCHER_ATTACH=tracefs",
            "bpf_stats_enabled",
            "WATCHER-VM done",
        ] {
            assert!(script.contains(env), "{env}: {script}");
        }
    }

    #[test]
    fn the_newest_kernel_package_is_picked_by_number_not_by_text() {
        let mut names = [
            "linux-image-6.12.9+deb12-amd64",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.41+deb12-amd64",
        ];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names.last(), Some(&"linux-image-6.12.117+deb12-amd64"));
        let mut names = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-10-amd64",
        ];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names.last(), Some(&"linux-image-6.1.0-56-amd64"));
    }

    #[test]
    fn console_lines_lose_terminal_control_sequences() {
        assert_eq!(
            plain("\u{1b}c\u{1b}[?7l\u{1b}[2JWATCHER-VM kernel 6.1\r"),
            "WATCHER-VM kernel 6.1"
        );
        assert_eq!(
            plain("\u{1b}[0mSeaBIOS (version 1.16.2)"),
            "SeaBIOS (version 1.16.2)"
        );
        assert_eq!(plain("test a ... ok\tnext"), "test a ... ok\tnext");
    }

    /// The static binaries as `build_static` names them, under /build.
    fn build_exes() -> Vec<(String, PathBuf)> {
        ["watcher", "actor"]
            .iter()
            .chain(TEST_BINARIES.iter())
            .map(|n| (n.to_string(), PathBuf::from(format!("/build/{n}"))))
            .collect()
    }

    #[test]
    fn a_focused_guest_runs_one_test_or_one_binary_again_and_again() {
        let exes = build_exes();
        let one = Focus {
            binary: "events".into(),
            test: "tracefs_is_mounted_when_missing".into(),
            repeat: 3,
        };
        let steps = focus_steps(&exes, &one);
        assert_eq!(
            steps.lines().collect::<Vec<_>>(),
            (1..=3)
                .map(|i| format!(
                    "/build/events --exact tracefs_is_mounted_when_missing --nocapture; echo \"WATCHER-VM run{i} exit=$?\""
                ))
                .collect::<Vec<_>>()
        );
        // A binary alone runs as the whole set runs it: its skips, two at a time.
        let all = Focus {
            binary: "events".into(),
            test: String::new(),
            repeat: 2,
        };
        let steps = focus_steps(&exes, &all);
        assert_eq!(steps.lines().count(), 2);
        assert!(
            steps.starts_with(&binary_command(&exes, "events")),
            "{steps}"
        );
        assert!(
            steps.contains("--test-threads=2 --exact --skip "),
            "{steps}"
        );
        // What is not a guest's test is said before anything is built.
        for (only, repeat) in [
            (Some("nosuch::x"), 1),
            (Some("events::"), 1),
            (Some("::x"), 1),
            (Some("events"), 0),
            (None, 3),
        ] {
            assert!(set_focus(only, repeat).is_err(), "{only:?} {repeat}");
        }
        assert!(FOCUS.get().is_none());
    }

    #[test]
    fn the_guest_runs_every_step_and_skips_only_what_it_says() {
        let exes = build_exes();
        let init = init_script(&exes);
        for step in ["check"].into_iter().chain(TEST_BINARIES) {
            assert!(
                init.contains(&format!("WATCHER-VM {step} exit=$?")),
                "{init}"
            );
        }
        assert!(
            init.contains("WATCHER_BIN=/build/watcher")
                && init.contains("CI=true")
                && init.contains("WATCHER_EXPECT_FENTRY=1"),
            "{init}"
        );
        assert_eq!(init.matches("--skip").count(), SKIPPED.len());
        // Skips match whole names only.
        for (b, _, _) in SKIPPED {
            let line = init
                .lines()
                .find(|l| l.contains(&format!("/build/{b} ")))
                .expect("the binary runs");
            assert!(line.contains(" --exact "), "{line}");
        }
        assert!(
            !init.contains("/tmp"),
            "nothing may be mounted over a checkout's path: {init}"
        );
        assert!(
            TRACEPOINTS.iter().all(|tp| init.contains(tp)) && init.contains("=== end"),
            "every format file is printed: {init}"
        );
    }
}
