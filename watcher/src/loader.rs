//! Loading and attaching the kernel programs, with every offset taken from the
//! running kernel (tracefs format files, BTF) and written into the `CONFIG`
//! global before load.
use std::path::{Path, PathBuf};

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use watcher_common::{Config, EventKind, GLOBAL_CONFIG, LOST_SLOTS, MAP_EVENTS, MAP_LOST};

use crate::{btf::Btf, error::SetupError, tracefs};

/// A program and the tracepoint it attaches to.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
}

const fn hook(program: &'static str, category: &'static str, name: &'static str) -> Hook {
    Hook { program, category, name }
}

/// Every tracepoint watcher uses. All are required.
pub const HOOKS: [Hook; 13] = [
    hook("task_newtask", "task", "task_newtask"),
    hook("sched_process_exec", "sched", "sched_process_exec"),
    hook("sched_process_exit", "sched", "sched_process_exit"),
    hook("sched_process_free", "sched", "sched_process_free"),
    hook("sys_enter_wait4", "syscalls", "sys_enter_wait4"),
    hook("sys_exit_wait4", "syscalls", "sys_exit_wait4"),
    hook("sys_enter_waitid", "syscalls", "sys_enter_waitid"),
    hook("sys_exit_waitid", "syscalls", "sys_exit_waitid"),
    hook("sys_enter_bind", "syscalls", "sys_enter_bind"),
    hook("sys_exit_bind", "syscalls", "sys_exit_bind"),
    hook("sys_enter_connect", "syscalls", "sys_enter_connect"),
    hook("sys_exit_connect", "syscalls", "sys_exit_connect"),
    hook("inet_sock_set_state", "sock", "inet_sock_set_state"),
];

/// Where a BTF member offset goes in the `CONFIG` global.
type Slot = fn(&mut Config) -> &mut u32;

/// Kernel struct members read through BTF offsets: (struct, member, where it goes).
/// The one list: `kernel_config` fills `CONFIG` from it and `watcher check` reports on it.
pub const BTF_MEMBERS: [(&str, &str, Slot); 15] = [
    ("task_struct", "exit_code", |c| &mut c.k_task_exit_code),
    ("task_struct", "files", |c| &mut c.k_task_files),
    ("task_struct", "mm", |c| &mut c.k_task_mm),
    ("task_struct", "signal", |c| &mut c.k_task_signal),
    ("signal_struct", "live", |c| &mut c.k_signal_live),
    ("mm_struct", "arg_start", |c| &mut c.k_mm_arg_start),
    ("mm_struct", "arg_end", |c| &mut c.k_mm_arg_end),
    ("files_struct", "fdt", |c| &mut c.k_files_fdt),
    ("fdtable", "max_fds", |c| &mut c.k_fdt_max_fds),
    ("fdtable", "fd", |c| &mut c.k_fdt_fd),
    ("file", "private_data", |c| &mut c.k_file_private_data),
    ("socket", "type", |c| &mut c.k_socket_type),
    ("socket", "sk", |c| &mut c.k_socket_sk),
    ("task_struct", "real_parent", |c| &mut c.k_task_real_parent),
    ("task_struct", "tgid", |c| &mut c.k_task_tgid),
];

/// The embedded eBPF object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watcher"));

/// Settings of a load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Record kinds to forward (empty: all).
    pub kinds: Vec<EventKind>,
    /// At most one ring-buffer wakeup per CPU per this many ns (0: wake on every record).
    pub wakeup_interval_ns: u64,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { kinds: Vec::new(), wakeup_interval_ns: 1_000_000, ring_bytes: 8 << 20 }
    }
}

/// Loaded and attached programs, with the ring buffer and loss counters taken out.
pub struct Probes {
    /// Keeps programs and links alive.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub lost: PerCpuArray<MapData, u64>,
    pub config: Config,
    pub tracefs: PathBuf,
}

/// Capability numbers (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability mask of this process (from /proc/self/status).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Root, or CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN on kernels before 5.8).
pub fn check_privileges() -> Result<String, SetupError> {
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    let euid = nix::unistd::geteuid();
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(if euid.is_root() {
            "running as root".to_owned()
        } else {
            format!("uid {euid} with CAP_BPF and CAP_PERFMON")
        });
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    Err(SetupError::Privileges { missing: missing.join(", ") })
}

fn field(fmt: &tracefs::Format, tp: &str, name: &str) -> Result<u32, SetupError> {
    fmt.field(name)
        .map(|f| f.offset)
        .ok_or_else(|| SetupError::FieldMissing { tracepoint: tp.to_owned(), field: name.to_owned() })
}

/// Offsets for the `CONFIG` global from this kernel's format files and BTF.
pub fn kernel_config(tracefs_root: &Path, btf: &Btf) -> Result<Config, SetupError> {
    let mut c = Config::empty();
    let fmt = |cat: &str, name: &str| tracefs::read_format(tracefs_root, cat, name);

    let f = fmt("task", "task_newtask")?;
    c.tp_newtask_pid = field(&f, "task/task_newtask", "pid")?;
    c.tp_newtask_clone_flags = field(&f, "task/task_newtask", "clone_flags")?;

    let f = fmt("sched", "sched_process_exec")?;
    c.tp_exec_filename = field(&f, "sched/sched_process_exec", "filename")?;
    c.tp_exec_old_pid = field(&f, "sched/sched_process_exec", "old_pid")?;

    let f = fmt("sched", "sched_process_exit")?;
    // Only on 6.18+; older kernels fall back to signal_struct.live (BTF).
    c.tp_exit_group_dead = f.field("group_dead").map(|x| x.offset).unwrap_or(watcher_common::OFFSET_NONE);

    let f = fmt("sched", "sched_process_free")?;
    c.tp_free_pid = field(&f, "sched/sched_process_free", "pid")?;

    let f = fmt("syscalls", "sys_enter_bind")?;
    c.tp_bind_fd = field(&f, "syscalls/sys_enter_bind", "fd")?;
    c.tp_bind_addr = field(&f, "syscalls/sys_enter_bind", "umyaddr")?;
    c.tp_bind_addrlen = field(&f, "syscalls/sys_enter_bind", "addrlen")?;

    let f = fmt("syscalls", "sys_enter_connect")?;
    c.tp_connect_fd = field(&f, "syscalls/sys_enter_connect", "fd")?;
    c.tp_connect_addr = field(&f, "syscalls/sys_enter_connect", "uservaddr")?;
    c.tp_connect_addrlen = field(&f, "syscalls/sys_enter_connect", "addrlen")?;

    let f = fmt("syscalls", "sys_enter_waitid")?;
    c.tp_waitid_infop = field(&f, "syscalls/sys_enter_waitid", "infop")?;
    c.tp_waitid_options = field(&f, "syscalls/sys_enter_waitid", "options")?;

    // `ret` must sit at the same offset in every sys_exit_* the programs share.
    let mut ret = None;
    for name in ["sys_exit_wait4", "sys_exit_waitid", "sys_exit_bind", "sys_exit_connect"] {
        let tp = format!("syscalls/{name}");
        let off = field(&fmt("syscalls", name)?, &tp, "ret")?;
        match ret {
            None => ret = Some(off),
            Some(r) if r != off => {
                return Err(SetupError::FieldMissing { tracepoint: tp, field: format!("ret at offset {r}") })
            }
            Some(_) => {}
        }
    }
    c.tp_sys_exit_ret = ret.unwrap_or(watcher_common::OFFSET_NONE);

    let tp = "sock/inet_sock_set_state";
    let f = fmt("sock", "inet_sock_set_state")?;
    c.tp_sk_skaddr = field(&f, tp, "skaddr")?;
    c.tp_sk_oldstate = field(&f, tp, "oldstate")?;
    c.tp_sk_newstate = field(&f, tp, "newstate")?;
    c.tp_sk_sport = field(&f, tp, "sport")?;
    c.tp_sk_dport = field(&f, tp, "dport")?;
    c.tp_sk_family = field(&f, tp, "family")?;
    c.tp_sk_protocol = field(&f, tp, "protocol")?;
    c.tp_sk_saddr = field(&f, tp, "saddr")?;
    c.tp_sk_daddr = field(&f, tp, "daddr")?;
    c.tp_sk_saddr_v6 = field(&f, tp, "saddr_v6")?;
    c.tp_sk_daddr_v6 = field(&f, tp, "daddr_v6")?;

    for (strukt, member, slot) in BTF_MEMBERS {
        *slot(&mut c) = btf.member_offset(strukt, member)?;
    }
    Ok(c)
}

/// Check privileges, mount tracefs if needed, read offsets, load and attach every program.
pub fn load(opts: &LoadOptions) -> Result<Probes, SetupError> {
    check_privileges()?;
    let tracefs_root = tracefs::ensure_mounted()?;
    let btf = Btf::from_sys_fs()?;
    let mut config = kernel_config(&tracefs_root, &btf)?;
    config.self_tgid = std::process::id();
    config.kinds_mask = opts.kinds.iter().fold(0u32, |m, k| m | 1 << (*k as u32));
    config.wakeup_interval_ns = opts.wakeup_interval_ns;

    // RLIMIT_MEMLOCK: not needed on kernels that charge BPF memory to the
    // cgroup (5.11+), and raising it can fail (EPERM); try, never fail on it.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );

    let mut ebpf = EbpfLoader::new()
        .override_global(GLOBAL_CONFIG, &config, true)
        .map_max_entries(MAP_EVENTS, opts.ring_bytes)
        .load(OBJECT)
        .map_err(SetupError::Object)?;

    for h in HOOKS {
        let tp_name = format!("{}/{}", h.category, h.name);
        let prog: &mut TracePoint = ebpf
            .program_mut(h.program)
            .ok_or(SetupError::ProgramMissing { program: h.program })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| SetupError::Load {
                program: h.program,
                why: crate::error::first_line(&e),
            })?;
        prog.load().map_err(|e| SetupError::Load { program: h.program, why: crate::error::first_line(&e) })?;
        prog.attach(h.category, h.name).map_err(|e| {
            let why = crate::error::first_line(&e);
            if !tracefs_root.join("events").join(h.category).join(h.name).exists() {
                SetupError::TracepointMissing { tracepoint: tp_name.clone(), why }
            } else {
                SetupError::Attach { program: h.program, tracepoint: tp_name.clone(), why }
            }
        })?;
    }

    let events = ebpf.take_map(MAP_EVENTS).ok_or(SetupError::Map { name: MAP_EVENTS, why: "missing".into() })?;
    let events = RingBuf::try_from(events)
        .map_err(|e| SetupError::Map { name: MAP_EVENTS, why: crate::error::first_line(&e) })?;
    let lost = ebpf.take_map(MAP_LOST).ok_or(SetupError::Map { name: MAP_LOST, why: "missing".into() })?;
    let lost = PerCpuArray::try_from(lost)
        .map_err(|e| SetupError::Map { name: MAP_LOST, why: crate::error::first_line(&e) })?;
    Ok(Probes { ebpf, events, lost, config, tracefs: tracefs_root })
}

/// Lost records per kind number, summed over CPUs.
pub fn read_lost(lost: &PerCpuArray<MapData, u64>) -> [u64; LOST_SLOTS as usize] {
    let mut out = [0u64; LOST_SLOTS as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(v) = lost.get(&(i as u32), 0) {
            *slot = v.iter().sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracefs copy of this kernel's format files with one tracepoint removed.
    fn fake_tracefs(without: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("watcher-fake-tracefs-{}-{}", std::process::id(), without.replace('/', "-")));
        let _ = std::fs::remove_dir_all(&root);
        let real = tracefs::find().or_else(|| Some(std::path::PathBuf::from("/sys/kernel/tracing")));
        for h in HOOKS {
            let name = format!("{}/{}", h.category, h.name);
            if name == without {
                continue;
            }
            let dir = root.join("events").join(h.category).join(h.name);
            std::fs::create_dir_all(&dir).unwrap();
            let src = real.as_ref().unwrap().join("events").join(h.category).join(h.name).join("format");
            let text = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e} (tracefs must be mounted for this test)", src.display()));
            std::fs::write(dir.join("format"), text).unwrap();
        }
        root
    }

    #[test]
    fn a_missing_tracepoint_is_one_clear_error() {
        if tracefs::find().is_none() && tracefs::ensure_mounted().is_err() {
            // Reading format files needs tracefs, and mounting it needs root.
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("tracefs is not mounted and cannot be: run the tests through `cargo xtask test` as root");
            }
            eprintln!("SKIPPED: tracefs is not mounted and cannot be mounted without root");
            return;
        }
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let root = fake_tracefs("sock/inet_sock_set_state");
        let e = kernel_config(&root, &btf).expect_err("must fail");
        let msg = e.to_string();
        assert!(msg.starts_with("tracepoint sock/inet_sock_set_state is not available on this kernel"), "{msg}");
        assert!(!msg.contains('\n'));
        // And with all of them, the layout is read.
        let root = fake_tracefs("none");
        let c = kernel_config(&root, &btf).expect("config");
        assert_ne!(c.tp_exec_filename, watcher_common::OFFSET_NONE);
        assert_ne!(c.k_task_exit_code, watcher_common::OFFSET_NONE);
    }
}
