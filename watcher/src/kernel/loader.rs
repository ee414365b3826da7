//! Loading and attaching the kernel programs, with every offset taken from the
//! running kernel (tracefs format files, BTF) and written into the `CONFIG`
//! global before load.
use std::path::{Path, PathBuf};

use aya::{
    maps::{MapData, PerCpuArray},
    programs::{BtfTracePoint, FEntry, FExit, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use watcher_common::{
    Config, EventKind, KernelTable, GLOBAL_CONFIG, LOST_SLOTS, MAP_LOST, MAP_RINGS, RINGS,
};

use crate::{kernel::btf::Btf, kernel::error::SetupError, kernel::tracefs};

/// A program and the tracepoint it attaches to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hook {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// What is lost without it, for an optional hook (`None`: required —
    /// watcher refuses to start without it).
    pub optional: Option<&'static str>,
}

const fn hook(program: &'static str, category: &'static str, name: &'static str) -> Hook {
    Hook {
        program,
        category,
        name,
        optional: None,
    }
}

const fn optional(
    program: &'static str,
    category: &'static str,
    name: &'static str,
    without: &'static str,
) -> Hook {
    Hook {
        program,
        category,
        name,
        optional: Some(without),
    }
}

/// Every tracepoint watcher uses. Required ones refuse the start when missing;
/// optional ones degrade what is said, once.
pub(crate) const HOOKS: [Hook; 18] = [
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
    hook("cgroup_mkdir", "cgroup", "cgroup_mkdir"),
    hook("cgroup_rmdir", "cgroup", "cgroup_rmdir"),
    optional(
        "signal_generate",
        "signal",
        "signal_generate",
        "who sent a fatal signal is not known: a stop by a supervisor counts as a crash",
    ),
    optional(
        "mark_victim",
        "oom",
        "mark_victim",
        "an OOM kill is reported as a SIGKILL of unknown origin",
    ),
    optional(
        "tcp_destroy_sock",
        "tcp",
        "tcp_destroy_sock",
        "a bound TCP socket's close is not seen: a failing bind on its port is confirmed by a socket lookup",
    ),
];

/// Where a BTF member offset goes in the `CONFIG` global.
type Slot = fn(&mut Config) -> &mut u32;

/// Kernel struct members read through BTF offsets: (struct, member path, the
/// size the programs read — 0 for an array whose elements are addressed from
/// its offset —, where the offset goes). The one list: `kernel_config` fills
/// `CONFIG` from it and `watcher check` reports on it.
pub(crate) const BTF_MEMBERS: [(&str, &str, u32, Slot); 33] = [
    ("task_struct", "exit_code", 4, |c| &mut c.k_task_exit_code),
    ("task_struct", "files", 8, |c| &mut c.k_task_files),
    ("task_struct", "mm", 8, |c| &mut c.k_task_mm),
    ("task_struct", "signal", 8, |c| &mut c.k_task_signal),
    ("signal_struct", "live", 4, |c| &mut c.k_signal_live),
    ("mm_struct", "arg_start", 8, |c| &mut c.k_mm_arg_start),
    ("mm_struct", "arg_end", 8, |c| &mut c.k_mm_arg_end),
    ("files_struct", "fdt", 8, |c| &mut c.k_files_fdt),
    ("fdtable", "max_fds", 4, |c| &mut c.k_fdt_max_fds),
    ("fdtable", "fd", 8, |c| &mut c.k_fdt_fd),
    ("file", "private_data", 8, |c| &mut c.k_file_private_data),
    ("file", "f_inode", 8, |c| &mut c.k_file_inode),
    ("inode", "i_ino", 8, |c| &mut c.k_inode_ino),
    ("sock", "sk_socket", 8, |c| &mut c.k_sock_socket),
    ("socket", "file", 8, |c| &mut c.k_socket_file),
    ("socket", "type", 2, |c| &mut c.k_socket_type),
    ("socket", "sk", 8, |c| &mut c.k_socket_sk),
    ("task_struct", "real_parent", 8, |c| {
        &mut c.k_task_real_parent
    }),
    ("task_struct", "tgid", 4, |c| &mut c.k_task_tgid),
    ("task_struct", "pid", 4, |c| &mut c.k_task_pid),
    // A socket's network namespace.
    ("sock", "__sk_common.skc_net", 8, |c| &mut c.k_sock_net),
    ("net", "ns.inum", 4, |c| &mut c.k_net_inum),
    // A process's pid namespace and its pid there (`struct pid` holds one
    // `struct upid` per nesting level).
    ("task_struct", "group_leader", 8, |c| {
        &mut c.k_task_group_leader
    }),
    ("task_struct", "thread_pid", 8, |c| &mut c.k_task_thread_pid),
    ("pid", "level", 4, |c| &mut c.k_pid_level),
    ("pid", "numbers", 0, |c| &mut c.k_pid_numbers),
    ("upid", "nr", 4, |c| &mut c.k_upid_nr),
    ("upid", "ns", 8, |c| &mut c.k_upid_ns),
    ("pid_namespace", "ns.inum", 4, |c| &mut c.k_pidns_inum),
    ("pid_namespace", "pid_allocated", 4, |c| {
        &mut c.k_pidns_pid_allocated
    }),
    // A record's header by plain loads, where the current task is typed:
    // its name and real uid.
    ("task_struct", "comm", 0, |c| &mut c.k_task_comm),
    ("task_struct", "cred", 8, |c| &mut c.k_task_cred),
    ("cred", "uid.val", 4, |c| &mut c.k_cred_uid),
];

/// The size of each ring: `asked` (`--ring-mib`), or `WATCHER_RING_BYTES`
/// when it is a power of two of at least a page — a developer's knob, for
/// the tests that fill a ring smaller than `--ring-mib` offers.
fn ring_bytes(asked: u32) -> u32 {
    std::env::var("WATCHER_RING_BYTES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|b| b.is_power_of_two() && *b >= 4096)
        .unwrap_or(asked)
}

/// Bytes unread in a ring past which a bulk record wakes a sleeping reader:
/// a quarter of the ring. The reader is then woken with three quarters
/// still free, what a burst at this machine's highest rates fills in tens
/// of milliseconds even on the smallest ring (`--ring-mib 1`).
pub(crate) fn ring_fill_wake(ring_bytes: u32) -> u32 {
    ring_bytes / 4
}

/// Possible CPUs (CPU numbers go up to this minus one).
fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map(|n| n as u32).unwrap_or(1).max(1)
}

/// The ring layout for `ring_cpus` CPUs per ring on `cpus` CPUs: (rings,
/// CPUs per ring as loaded — 0 for one ring —, a note when it had to differ).
pub(crate) fn ring_layout(ring_cpus: u32, cpus: u32) -> (usize, u32, Option<String>) {
    if ring_cpus == 0 || ring_cpus >= cpus {
        return (1, 0, None);
    }
    let rings = cpus.div_ceil(ring_cpus) as usize;
    if rings <= RINGS {
        return (rings, ring_cpus, None);
    }
    // More groups than rings: bigger groups.
    let per = cpus.div_ceil(RINGS as u32);
    (
        cpus.div_ceil(per) as usize,
        per,
        Some(format!(
            "--ring-cpus {ring_cpus} would need {rings} ring buffers on {cpus} CPUs; at most {RINGS}: {per} CPUs per ring"
        )),
    )
}

/// The embedded eBPF object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watcher"));

/// Settings of a load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Record kinds to forward (empty: all).
    pub kinds: Vec<EventKind>,
    /// The wakeup interval (ns): an awake reader drains for deciding records at most once per eighth of it; an exec of a program not listed wakes the reader at most once per CPU per eight of it, and not while a re-drain is planned (0: at once).
    pub wakeup_interval_ns: u64,
    /// Ring buffer size in bytes, per ring (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// CPUs per ring buffer (0: one ring for every CPU).
    pub ring_cpus: u32,
    /// Write thread creations and exits of single threads (`trace --threads`).
    pub threads: bool,
    /// Capacity of every kernel-side table (None: each one's default).
    pub table_entries: Option<u32>,
    /// Records that never wake the reader (bulk, `watcher_common::wake`) are
    /// drained at least this often.
    pub bulk_period: std::time::Duration,
    /// Most bytes of a new program's argument vector an exec record carries
    /// (at most `watcher_common::ARGS_MAX`).
    pub args_bytes: u32,
}

impl LoadOptions {
    /// The capacity `table` is loaded with.
    pub fn table_capacity(&self, table: KernelTable) -> u32 {
        self.table_entries.unwrap_or(table.default_entries())
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            kinds: Vec::new(),
            wakeup_interval_ns: 1_000_000,
            ring_bytes: 8 << 20,
            ring_cpus: 0,
            threads: false,
            table_entries: None,
            bulk_period: std::time::Duration::from_millis(10),
            args_bytes: watcher_common::ARGS_CAP_DEFAULT,
        }
    }
}

/// Loaded and attached programs, with the ring buffer and loss counters taken out.
pub struct Probes {
    /// Keeps programs and links alive.
    pub ebpf: Ebpf,
    /// The ring buffers of the layout (one, or one per group of CPUs), read together.
    pub(crate) events: Vec<crate::kernel::ring::Ring>,
    pub lost: PerCpuArray<MapData, u64>,
    /// Bytes of each ring.
    pub ring_bytes: u32,
    pub config: Config,
    /// The kernel side's own tables, for the sweeper.
    pub tables: crate::kernel::tables::Tables,
    pub tracefs: PathBuf,
    /// Optional hooks this kernel lacks: (tracepoint, what is lost).
    pub degraded: Vec<(String, &'static str)>,
    /// Said once when the ring layout asked for could not be had as asked.
    pub layout_note: Option<String>,
    /// Hooks attached as raw tracepoints rather than through tracefs (see
    /// [`RAW_FIRST`]), and why a raw attach fell back, when it did.
    pub raw: Vec<&'static str>,
    pub raw_fallback: Vec<String>,
    /// Kernel functions whose system call is followed through fentry/fexit
    /// (see [`TRACED`]), and, when some are not, why (said once).
    pub traced: Vec<&'static str>,
    pub traced_fallback: Option<String>,
    /// System calls followed by their exit tracepoint alone (see
    /// [`EXIT_ONLY`]), and, when one that could be is not, why.
    pub exit_only: Vec<&'static str>,
    pub exit_only_fallback: Option<String>,
    /// Of `raw`, the hooks attached as BTF-typed raw tracepoints (see
    /// [`BTF_FIRST`]), and why one was not.
    pub btf_typed: Vec<&'static str>,
    pub btf_fallback: Vec<String>,
}

/// Hooks whose program is attached as a raw tracepoint when the kernel
/// allows it (`<program>_raw` in the object), the tracefs tracepoint
/// otherwise. A raw tracepoint's program gets the kernel's own arguments
/// (the `task_struct`, the `linux_binprm`, the `sock`); a classic one's runs
/// after the kernel has built a trace record of copied fields, and is
/// skipped — silently — whenever another program was running on that CPU
/// (the kernel's `bpf_prog_active`): the free and the TCP state changes run
/// in softirqs, on top of other programs. The syscall hooks stay classic:
/// their raw tracepoints (`sys_enter`/`sys_exit`) would run for every
/// system call of the host.
pub(crate) const RAW_FIRST: [&str; 6] = [
    "task_newtask",
    "sched_process_exec",
    "sched_process_exit",
    "sched_process_free",
    "inet_sock_set_state",
    "tcp_destroy_sock",
];

/// Of [`RAW_FIRST`], the hooks whose program is first tried as a BTF-typed
/// raw tracepoint (`tp_btf`, `<program>_btf` in the object): its `struct
/// sock` argument comes typed, so the members it reads are plain loads the
/// verifier checks against BTF rather than a helper call each. Refused, the
/// raw program is attached (said in the `load` line).
/// `WATCHER_ATTACH=raw` skips them (to compare).
pub(crate) const BTF_FIRST: [&str; 2] = ["inet_sock_set_state", "tcp_destroy_sock"];

/// Load `<program>_btf` and attach it to the BTF-typed tracepoint `hook.name`.
fn attach_btf(ebpf: &mut Ebpf, btf: &aya::Btf, h: &Hook) -> Result<(), String> {
    let first = crate::kernel::error::first_line;
    let name = format!("{}_btf", h.program);
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("no program {name} in the object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| first(&e))?;
    prog.load(h.name, btf)
        .map_err(|e| without_verifier_log(&first(&e)))?;
    if let Err(e) = prog.attach() {
        let why = first(&e);
        let _ = prog.unload();
        return Err(why);
    }
    Ok(())
}

/// A system call whose programs attach to the kernel function behind it
/// (fentry/fexit) where the kernel allows it, instead of its pair of
/// system-call tracepoints.
pub(crate) struct Traced {
    /// The kernel function, and how many parameters its programs expect.
    pub function: &'static str,
    pub params: u32,
    /// Its programs in the object: (name, an fexit — else an fentry).
    pub programs: &'static [(&'static str, bool)],
    /// The tracepoint programs (of [`HOOKS`]) they replace.
    pub replaces: [&'static str; 2],
}

/// The system calls watcher follows, attached through fentry/fexit where
/// `watcher check` finds them allowed (Debian's 6.1 and 6.12 allow them;
/// some kernels refuse them — this host's 6.18 answers EPERM — and then the
/// system-call tracepoints are attached, said once). An fexit gets a call's
/// arguments and result in one run, with no table between an entry and an
/// exit; and with no system-call tracepoint attached, the kernel does not
/// route every system call of the host through its tracing slow path.
pub(crate) const TRACED: [Traced; 4] = [
    Traced {
        function: "kernel_wait4",
        params: 4,
        programs: &[("wait4_fentry", false), ("wait4_fexit", true)],
        replaces: ["sys_enter_wait4", "sys_exit_wait4"],
    },
    Traced {
        function: "kernel_waitid",
        params: 5,
        programs: &[("waitid_fentry", false), ("waitid_fexit", true)],
        replaces: ["sys_enter_waitid", "sys_exit_waitid"],
    },
    Traced {
        function: "__sys_bind",
        params: 3,
        programs: &[("bind_fexit", true)],
        replaces: ["sys_enter_bind", "sys_exit_bind"],
    },
    Traced {
        function: "__sys_connect",
        params: 3,
        programs: &[("connect_fexit", true)],
        replaces: ["sys_enter_connect", "sys_exit_connect"],
    },
];

/// A system call followed by its exit tracepoint alone where fentry/fexit
/// is refused but the kernel lets a tracepoint program read the registers
/// the call was entered with (`bpf_task_pt_regs`, 5.15 on): one program
/// per call instead of an entry and an exit joined by a table, and no
/// system-call entry tracepoint for it.
pub(crate) struct ExitOnly {
    /// The system call, as said in `watcher check`.
    pub call: &'static str,
    /// Its program in the object, and the tracepoint it attaches to.
    pub program: &'static str,
    pub tracepoint: &'static str,
    /// The tracepoint programs (of [`HOOKS`]) it replaces.
    pub replaces: [&'static str; 2],
}

pub(crate) const EXIT_ONLY: [ExitOnly; 2] = [
    ExitOnly {
        call: "bind",
        program: "sys_exit_bind_regs",
        tracepoint: "sys_exit_bind",
        replaces: ["sys_enter_bind", "sys_exit_bind"],
    },
    ExitOnly {
        call: "connect",
        program: "sys_exit_connect_regs",
        tracepoint: "sys_exit_connect",
        replaces: ["sys_enter_connect", "sys_exit_connect"],
    },
];

/// The registers holding a system call's first three arguments in `struct
/// pt_regs` (x86-64's calling convention for system calls), then the one
/// it returns its value in, where the kernel has stored it when the exit
/// tracepoint runs; on other architectures the exit-only programs are not
/// used.
#[cfg(target_arch = "x86_64")]
const SYSCALL_REGS: [&str; 4] = ["di", "si", "dx", "ax"];
#[cfg(not(target_arch = "x86_64"))]
const SYSCALL_REGS: [&str; 0] = [];

/// Where the registers of [`SYSCALL_REGS`] are in this kernel's `struct
/// pt_regs` (the exit-only programs read them); none when BTF lacks one.
pub(crate) fn regs_layout(btf: &Btf, c: &mut Config) -> Result<(), String> {
    let mut offs = [watcher_common::OFFSET_NONE; 4];
    if SYSCALL_REGS.len() != 4 {
        return Err("not on this architecture".into());
    }
    for (i, reg) in SYSCALL_REGS.iter().enumerate() {
        match btf.member("pt_regs", reg) {
            Ok((off, Some(8))) => offs[i] = off,
            Ok(_) => return Err(format!("pt_regs.{reg} is not 8 bytes")),
            Err(e) => return Err(e.to_string()),
        }
    }
    [c.k_regs_arg0, c.k_regs_arg1, c.k_regs_arg2, c.k_regs_ret] = offs;
    Ok(())
}

/// Why the exit-only programs cannot be used (`None`: they can, if the
/// kernel loads them).
fn exit_only_unready(c: &Config) -> Option<String> {
    [c.k_regs_arg0, c.k_regs_arg1, c.k_regs_arg2, c.k_regs_ret]
        .contains(&watcher_common::OFFSET_NONE)
        .then(|| "the system-call registers are not in BTF".to_owned())
}

/// Load `e.program` and attach it to its system call's exit tracepoint.
fn attach_exit_only(ebpf: &mut Ebpf, e: &ExitOnly) -> Result<(), String> {
    let first = crate::kernel::error::first_line;
    let prog: &mut TracePoint = ebpf
        .program_mut(e.program)
        .ok_or_else(|| format!("no program {} in the object", e.program))?
        .try_into()
        .map_err(|err: aya::programs::ProgramError| first(&err))?;
    prog.load()
        .map_err(|err| without_verifier_log(&first(&err)))?;
    if let Err(err) = prog.attach("syscalls", e.tracepoint) {
        let why = first(&err);
        let _ = prog.unload();
        return Err(why);
    }
    Ok(())
}

/// Attach the exit-only program of every call of [`EXIT_ONLY`] that
/// fentry/fexit does not already follow: the calls attached, and why not
/// the others (the first reason; a refused load stops the tries).
fn attach_all_exit_only(
    ebpf: &mut Ebpf,
    config: &Config,
    followed: impl Fn(&str) -> bool,
) -> (Vec<&'static str>, Option<String>) {
    let mut attached = Vec::new();
    for e in &EXIT_ONLY {
        if followed(e.replaces[0]) {
            continue;
        }
        if let Some(why) = exit_only_unready(config) {
            return (attached, Some(why));
        }
        match attach_exit_only(ebpf, e) {
            Ok(()) => attached.push(e.call),
            Err(why) => return (attached, Some(format!("{}: {why}", e.program))),
        }
    }
    (attached, None)
}

/// Why `t`'s fentry/fexit programs cannot be used on this kernel (`None`:
/// they can, if the kernel loads them): the function's prototype in BTF,
/// and the members its programs read.
fn traced_unready(btf: &Btf, c: &Config, t: &Traced) -> Option<String> {
    match btf.function_params(t.function) {
        Ok((n, true)) if n == t.params => {}
        Ok((n, _)) => {
            return Some(format!(
                "{} takes {n} parameters on this kernel, not {}",
                t.function, t.params
            ))
        }
        Err(e) => return Some(e.to_string()),
    }
    (t.function == "kernel_waitid"
        && (c.k_waitid_info_pid == watcher_common::OFFSET_NONE
            || c.k_waitid_info_cause == watcher_common::OFFSET_NONE))
        .then(|| "waitid_info.pid or .cause is not in BTF".to_owned())
}

/// Load and attach `t`'s programs; on a failure, none of them stays.
fn attach_traced(ebpf: &mut Ebpf, btf: &aya::Btf, t: &Traced) -> Result<(), String> {
    let mut done: Vec<&str> = Vec::new();
    let one = |ebpf: &mut Ebpf, name: &str, fexit: bool| -> Result<(), String> {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("no program {name} in the object"))?;
        let first = crate::kernel::error::first_line;
        if fexit {
            let p: &mut FExit = prog.try_into().map_err(|e| first(&e))?;
            p.load(t.function, btf).map_err(|e| first(&e))?;
            p.attach().map_err(|e| first(&e))?;
        } else {
            let p: &mut FEntry = prog.try_into().map_err(|e| first(&e))?;
            p.load(t.function, btf).map_err(|e| first(&e))?;
            p.attach().map_err(|e| first(&e))?;
        }
        Ok(())
    };
    for &(name, fexit) in t.programs {
        if let Err(why) = one(ebpf, name, fexit) {
            // (aya's text repeats the errno after an empty verifier log.)
            let why = if why.contains("Operation not permitted") {
                "the kernel refused its load (EPERM)".to_owned()
            } else {
                without_verifier_log(&why)
            };
            for &gone in &done {
                let _ = unload(ebpf, gone);
            }
            let _ = unload(ebpf, name);
            return Err(format!("{name}: {why}"));
        }
        done.push(name);
    }
    Ok(())
}

/// A refused load's reason without the verifier's log that aya appends
/// (one line for `watcher check` and the start line).
fn without_verifier_log(why: &str) -> String {
    why.split(". Verifier output")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Detach and unload the fentry/fexit program `name` (its links first).
fn unload(ebpf: &mut Ebpf, name: &str) -> Option<()> {
    match ebpf.program_mut(name)? {
        aya::programs::Program::FExit(p) => p.unload().ok(),
        aya::programs::Program::FEntry(p) => p.unload().ok(),
        _ => None,
    }
}

/// Why the raw tracepoint of `program` cannot be used on this kernel
/// (`None`: it can): its prototype in BTF, and the members its program reads.
fn raw_unready(btf: &Btf, c: &Config, program: &str) -> Option<String> {
    let args = |tp: &str| btf.raw_tracepoint_args(tp).map_err(|e| e.to_string());
    let want = |tp: &str, n: &[u32]| match args(tp) {
        Ok(got) if n.contains(&got) => None,
        Ok(got) => Some(format!("{tp} passes {got} arguments on this kernel")),
        Err(e) => Some(e),
    };
    let member = |off: u32, what: &str| {
        (off == watcher_common::OFFSET_NONE).then(|| format!("{what} is not in BTF"))
    };
    match program {
        "task_newtask" => {
            want("task_newtask", &[2]).or_else(|| member(c.k_task_pid, "task_struct.pid"))
        }
        "sched_process_exec" => want("sched_process_exec", &[3])
            .or_else(|| member(c.k_bprm_filename, "linux_binprm.filename")),
        "sched_process_exit" => want("sched_process_exit", &[1, 2]),
        "sched_process_free" => member(c.k_task_pid, "task_struct.pid"),
        // (The raw inet_sock_set_state reads the socket through BTF.)
        "inet_sock_set_state" => member(c.k_sk_family, "the struct sock members"),
        "tcp_destroy_sock" => want("tcp_destroy_sock", &[1]),
        _ => Some("no raw program".into()),
    }
}

impl Probes {
    /// How the programs are attached, for `watcher check` and the log:
    /// "9 tracepoints (raw: sched_process_free, inet_sock_set_state); system
    /// calls through fentry/fexit: kernel_wait4, __sys_bind" — or, when the
    /// kernel refuses those, "…; system calls through tracepoints (why)".
    pub fn attachment(&self) -> String {
        let n = HOOKS.len() - self.degraded.len() - 2 * self.traced.len() - self.exit_only.len();
        let mut s = if self.raw.is_empty() {
            format!("{n} tracepoints")
        } else if self.btf_typed.is_empty() {
            format!("{n} tracepoints (raw: {})", self.raw.join(", "))
        } else {
            format!(
                "{n} tracepoints (raw: {}; BTF-typed: {})",
                self.raw.join(", "),
                self.btf_typed.join(", ")
            )
        };
        if !self.btf_fallback.is_empty() {
            s.push_str(&format!(
                "; raw, not BTF-typed: {}",
                self.btf_fallback.join("; ")
            ));
        }
        if !self.traced.is_empty() {
            s.push_str(&format!(
                "; system calls through fentry/fexit: {}",
                self.traced.join(", ")
            ));
        }
        if let Some(why) = &self.traced_fallback {
            s.push_str(&format!(
                "; {} through tracepoints (fentry/fexit: {why})",
                if self.traced.is_empty() {
                    "system calls"
                } else {
                    "the others"
                }
            ));
        }
        if !self.exit_only.is_empty() {
            s.push_str(&format!(
                "; {} through the exit tracepoint alone (arguments from the saved registers)",
                self.exit_only.join(", ")
            ));
        }
        if let Some(why) = &self.exit_only_fallback {
            s.push_str(&format!(
                "; bind/connect through entry and exit tracepoints ({why})"
            ));
        }
        s
    }

    /// One line per optional hook this kernel lacks, for the log (and the
    /// reason a raw attach fell back to tracefs).
    pub fn degraded_lines(&self) -> Vec<String> {
        let fallback = self.raw_fallback.iter().map(|why| {
            format!("degraded: raw tracepoint {why}; attached through tracefs instead (its runs while another program runs on that CPU are skipped: counted in watcher_program_skips_total)")
        });
        fallback
            .chain(self.degraded.iter().map(|(tp, without)| {
                format!("degraded: tracepoint {tp} is not available on this kernel; {without}")
            }))
            .chain(self.layout_note.clone())
            .collect()
    }
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

/// `kernel.perf_event_paranoid`. Above 2, Debian's and Ubuntu's kernels
/// (CONFIG_SECURITY_PERF_EVENTS_RESTRICT, default 3) let only CAP_SYS_ADMIN
/// open perf events, tracepoint attachment included; upstream treats 3 as 2.
pub(crate) fn perf_event_paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The capabilities this process holds now (read once), as a test: `held()(CAP_BPF)`.
fn held() -> impl Fn(u32) -> bool {
    let caps = effective_caps().unwrap_or(0);
    move |c| caps & (1u64 << c) != 0
}

/// Root, or CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN on kernels before 5.8).
pub(crate) fn check_privileges() -> Result<String, SetupError> {
    let has = held();
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
    Err(SetupError::Privileges {
        missing: missing.join(", "),
    })
}

/// How a program reads a tracepoint field: a plain value of this many bytes,
/// or a `__data_loc` reference (a u32 locating the data in the record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Bytes(u32),
    DataLoc,
}

/// The offset of `name` in this kernel's record, if its type is read as `how`
/// says; a field of another size or kind is refused, never read at a guess.
fn field(fmt: &tracefs::Format, tp: &str, name: &str, how: Read) -> Result<u32, SetupError> {
    let f = fmt.field(name).ok_or_else(|| SetupError::FieldMissing {
        tracepoint: tp.to_owned(),
        field: name.to_owned(),
    })?;
    let data_loc = f.ty.starts_with("__data_loc");
    let fits = match how {
        Read::Bytes(n) => !data_loc && f.size == n,
        Read::DataLoc => data_loc && f.size == 4,
    };
    if !fits {
        return Err(SetupError::FieldType {
            tracepoint: tp.to_owned(),
            field: name.to_owned(),
            found: format!("{} ({} bytes)", f.ty, f.size),
            expected: match how {
                Read::Bytes(n) => format!("a {n}-byte value"),
                Read::DataLoc => "a __data_loc string".to_owned(),
            },
        });
    }
    Ok(f.offset)
}

/// Every syscall tracepoint argument (and `ret`) is a long in the record, whatever its C type.
const ARG: Read = Read::Bytes(8);

/// Offsets for the `CONFIG` global from this kernel's format files and BTF.
pub(crate) fn kernel_config(tracefs_root: &Path, btf: &Btf) -> Result<Config, SetupError> {
    let mut c = Config::empty();
    let fmt = |cat: &str, name: &str| tracefs::read_format(tracefs_root, cat, name);

    let f = fmt("task", "task_newtask")?;
    c.tp_newtask_pid = field(&f, "task/task_newtask", "pid", Read::Bytes(4))?;
    c.tp_newtask_clone_flags = field(&f, "task/task_newtask", "clone_flags", Read::Bytes(8))?;

    let f = fmt("sched", "sched_process_exec")?;
    c.tp_exec_filename = field(&f, "sched/sched_process_exec", "filename", Read::DataLoc)?;
    c.tp_exec_old_pid = field(&f, "sched/sched_process_exec", "old_pid", Read::Bytes(4))?;

    let f = fmt("sched", "sched_process_exit")?;
    // Only on 6.18+ (a bool); older kernels fall back to signal_struct.live (BTF).
    c.tp_exit_group_dead = field(&f, "sched/sched_process_exit", "group_dead", Read::Bytes(1))
        .unwrap_or(watcher_common::OFFSET_NONE);

    let f = fmt("sched", "sched_process_free")?;
    c.tp_free_pid = field(&f, "sched/sched_process_free", "pid", Read::Bytes(4))?;

    let f = fmt("syscalls", "sys_enter_bind")?;
    c.tp_bind_fd = field(&f, "syscalls/sys_enter_bind", "fd", ARG)?;
    c.tp_bind_addr = field(&f, "syscalls/sys_enter_bind", "umyaddr", ARG)?;
    c.tp_bind_addrlen = field(&f, "syscalls/sys_enter_bind", "addrlen", ARG)?;

    let f = fmt("syscalls", "sys_enter_connect")?;
    c.tp_connect_fd = field(&f, "syscalls/sys_enter_connect", "fd", ARG)?;
    c.tp_connect_addr = field(&f, "syscalls/sys_enter_connect", "uservaddr", ARG)?;
    c.tp_connect_addrlen = field(&f, "syscalls/sys_enter_connect", "addrlen", ARG)?;

    let f = fmt("syscalls", "sys_enter_waitid")?;
    c.tp_waitid_infop = field(&f, "syscalls/sys_enter_waitid", "infop", ARG)?;
    c.tp_waitid_options = field(&f, "syscalls/sys_enter_waitid", "options", ARG)?;

    // `ret` must sit at the same offset in every sys_exit_* the programs share.
    let mut ret = None;
    for name in [
        "sys_exit_wait4",
        "sys_exit_waitid",
        "sys_exit_bind",
        "sys_exit_connect",
    ] {
        let tp = format!("syscalls/{name}");
        let off = field(&fmt("syscalls", name)?, &tp, "ret", ARG)?;
        match ret {
            None => ret = Some(off),
            Some(r) if r != off => {
                return Err(SetupError::FieldMissing {
                    tracepoint: tp,
                    field: format!("ret at offset {r}"),
                })
            }
            Some(_) => {}
        }
    }
    c.tp_sys_exit_ret = ret.unwrap_or(watcher_common::OFFSET_NONE);

    let tp = "sock/inet_sock_set_state";
    let f = fmt("sock", "inet_sock_set_state")?;
    c.tp_sk_skaddr = field(&f, tp, "skaddr", Read::Bytes(8))?;
    c.tp_sk_oldstate = field(&f, tp, "oldstate", Read::Bytes(4))?;
    c.tp_sk_newstate = field(&f, tp, "newstate", Read::Bytes(4))?;
    c.tp_sk_sport = field(&f, tp, "sport", Read::Bytes(2))?;
    c.tp_sk_dport = field(&f, tp, "dport", Read::Bytes(2))?;
    c.tp_sk_family = field(&f, tp, "family", Read::Bytes(2))?;
    c.tp_sk_protocol = field(&f, tp, "protocol", Read::Bytes(2))?;
    c.tp_sk_saddr = field(&f, tp, "saddr", Read::Bytes(4))?;
    c.tp_sk_daddr = field(&f, tp, "daddr", Read::Bytes(4))?;
    c.tp_sk_saddr_v6 = field(&f, tp, "saddr_v6", Read::Bytes(16))?;
    c.tp_sk_daddr_v6 = field(&f, tp, "daddr_v6", Read::Bytes(16))?;

    // cgroup_mkdir and cgroup_rmdir share one event class: one layout, checked in both.
    for name in ["cgroup_mkdir", "cgroup_rmdir"] {
        let tp = format!("cgroup/{name}");
        let f = fmt("cgroup", name)?;
        let offsets = [
            field(&f, &tp, "root", Read::Bytes(4))?,
            field(&f, &tp, "id", Read::Bytes(8))?,
            field(&f, &tp, "level", Read::Bytes(4))?,
            field(&f, &tp, "path", Read::DataLoc)?,
        ];
        if name == "cgroup_mkdir" {
            [
                c.tp_cgroup_root,
                c.tp_cgroup_id,
                c.tp_cgroup_level,
                c.tp_cgroup_path,
            ] = offsets;
        } else if offsets
            != [
                c.tp_cgroup_root,
                c.tp_cgroup_id,
                c.tp_cgroup_level,
                c.tp_cgroup_path,
            ]
        {
            return Err(SetupError::FieldMissing {
                tracepoint: tp,
                field: "the layout of cgroup/cgroup_mkdir".into(),
            });
        }
    }

    // Optional: without them, exits have no sender (see HOOKS).
    if let Ok(f) = fmt("signal", "signal_generate") {
        let tp = "signal/signal_generate";
        let read = || -> Result<[u32; 5], SetupError> {
            Ok([
                field(&f, tp, "sig", Read::Bytes(4))?,
                field(&f, tp, "code", Read::Bytes(4))?,
                field(&f, tp, "pid", Read::Bytes(4))?,
                field(&f, tp, "group", Read::Bytes(4))?,
                field(&f, tp, "result", Read::Bytes(4))?,
            ])
        };
        [
            c.tp_signal_sig,
            c.tp_signal_code,
            c.tp_signal_pid,
            c.tp_signal_group,
            c.tp_signal_result,
        ] = read()?;
        c.signal_mask = watcher_common::DEFAULT_SIGNAL_MASK;
    }
    if let Ok(f) = fmt("oom", "mark_victim") {
        c.tp_oom_pid = field(&f, "oom/mark_victim", "pid", Read::Bytes(4))?;
    }
    // Optional: without it, bound sockets are not tracked (see HOOKS).
    if let Ok(f) = fmt("tcp", "tcp_destroy_sock") {
        c.tp_destroy_skaddr = field(&f, "tcp/tcp_destroy_sock", "skaddr", Read::Bytes(8))?;
    }

    for (strukt, member, size, slot) in BTF_MEMBERS {
        let (offset, found) = btf.member(strukt, member)?;
        if size == 0 {
            // An array: only its offset is used.
            if found.is_some() {
                return Err(SetupError::Btf {
                    why: format!("{strukt}.{member} is not an array on this kernel; this kernel's layout is not supported"),
                });
            }
            *slot(&mut c) = offset;
            continue;
        }
        if found != Some(size) {
            let found = found
                .map(|n| format!("{n} bytes"))
                .unwrap_or_else(|| "not a plain value".to_owned());
            return Err(SetupError::Btf {
                why: format!("{strukt}.{member} is {found} on this kernel where watcher reads {size}; this kernel's layout is not supported"),
            });
        }
        *slot(&mut c) = offset;
    }
    c.k_upid_size = btf.struct_size("upid")?;
    // (Missing: the new parents are asked of `/proc`; `watcher check` says so.)
    let _ = reaper_layout(btf, &mut c);
    // (Missing: inet_sock_set_state is attached through tracefs.)
    let _ = sock_layout(btf, &mut c);
    // (Missing: bind and connect through entry and exit tracepoints.)
    let _ = regs_layout(btf, &mut c);
    // (Missing: every process's end looks itself up in EXEC_LIVE.)
    if let (Ok((parent, Some(8))), Ok((own, Some(8)))) = (
        btf.member("task_struct", "parent_exec_id"),
        btf.member("task_struct", "self_exec_id"),
    ) {
        c.k_task_parent_exec_id = parent;
        c.k_task_self_exec_id = own;
    }
    // Bound TCP sockets are tracked when their destruction can be followed
    // and its record can say the port (the `struct sock` members).
    c.track_bound = (c.tp_destroy_skaddr != watcher_common::OFFSET_NONE
        && c.k_sk_family != watcher_common::OFFSET_NONE) as u32;
    // (Missing: sched_process_exec is attached through tracefs.)
    if let Ok((off, Some(8))) = btf.member("linux_binprm", "filename") {
        c.k_bprm_filename = off;
    }
    c.raw_exit_group_dead = (btf.raw_tracepoint_args("sched_process_exit").ok() == Some(2)) as u32;
    // (Missing: waitid is followed through its system-call tracepoints.)
    if let (Ok((pid, Some(4))), Ok((cause, Some(4)))) = (
        btf.member("waitid_info", "pid"),
        btf.member("waitid_info", "cause"),
    ) {
        c.k_waitid_info_pid = pid;
        c.k_waitid_info_cause = cause;
    }
    Ok(c)
}

/// The `struct sock` members the raw `inet_sock_set_state` reads. Optional:
/// without them that hook is attached through tracefs (whose fields carry them).
pub(crate) fn sock_layout(btf: &Btf, c: &mut Config) -> Result<(), String> {
    let members: [(&str, &str, u32); 8] = [
        ("sock", "__sk_common.skc_family", 2),
        // (The tracefs fields' sources: at a listener's close the kernel has
        // cleared skc_num already, not inet_sport.)
        ("inet_sock", "inet_sport", 2),
        ("sock", "__sk_common.skc_dport", 2),
        ("inet_sock", "inet_saddr", 4),
        ("sock", "__sk_common.skc_daddr", 4),
        ("sock", "__sk_common.skc_v6_rcv_saddr", 16),
        ("sock", "__sk_common.skc_v6_daddr", 16),
        ("sock", "sk_protocol", 2),
    ];
    let mut found = [0u32; 8];
    for (i, (strukt, member, size)) in members.iter().enumerate() {
        let (off, got) = btf.member(strukt, member).map_err(|e| e.to_string())?;
        if got != Some(*size) {
            return Err(format!(
                "{strukt}.{member} is not {size} bytes on this kernel"
            ));
        }
        found[i] = off;
    }
    [
        c.k_sk_family,
        c.k_sk_sport,
        c.k_sk_dport,
        c.k_sk_rcv_saddr,
        c.k_sk_daddr,
        c.k_sk_v6_rcv_saddr,
        c.k_sk_v6_daddr,
        c.k_sk_protocol,
    ] = found;
    Ok(())
}

/// The members that tell who an ending process's children pass to. Optional:
/// when one is missing or laid out otherwise, none is read and the new parent
/// is asked of `/proc` (off the kernel side, as before). `Ok`: all found.
pub(crate) fn reaper_layout(btf: &Btf, c: &mut Config) -> Result<(), String> {
    let found = (|| -> Result<[u32; 6], SetupError> {
        let (children, size) = btf.member("task_struct", "children")?;
        // A list head: the first pointer is `next`.
        if size != Some(16) {
            return Err(SetupError::Btf {
                why: "task_struct.children is not a list head".into(),
            });
        }
        let (reaper, size) = btf.member("pid_namespace", "child_reaper")?;
        if size != Some(8) {
            return Err(SetupError::Btf {
                why: "pid_namespace.child_reaper is not a pointer".into(),
            });
        }
        let (is_word, is_bit) = btf.flag_bit("signal_struct", "is_child_subreaper")?;
        let (has_word, has_bit) = btf.flag_bit("signal_struct", "has_child_subreaper")?;
        Ok([children, reaper, is_word, is_bit, has_word, has_bit])
    })();
    match found {
        Ok(v) => {
            [
                c.k_task_children,
                c.k_pidns_child_reaper,
                c.k_signal_is_subreaper,
                c.k_signal_is_subreaper_bit,
                c.k_signal_has_subreaper,
                c.k_signal_has_subreaper_bit,
            ] = v;
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The inode of the initial pid namespace (`PROC_PID_INIT_INO`, fixed in the kernel).
pub(crate) const HOST_PIDNS: u64 = 0xEFFF_FFFC;

/// Whether watcher sees the host's processes: it must be in the initial pid
/// namespace (pids in records are the host's; `/proc` must be the host's).
pub(crate) fn check_pid_namespace() -> Result<(), SetupError> {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata("/proc/self/ns/pid") {
        Ok(m) if m.ino() != HOST_PIDNS => Err(SetupError::PidNamespace { inode: m.ino() }),
        // Unreadable: nothing to say (the load will tell what is wrong).
        _ => Ok(()),
    }
}

/// Check privileges, mount tracefs if needed, read offsets, load and attach every program.
pub(crate) fn load(opts: &LoadOptions) -> Result<Probes, SetupError> {
    let ring_bytes = ring_bytes(opts.ring_bytes);
    check_pid_namespace()?;
    check_privileges()?;
    let tracefs_root = tracefs::ensure_mounted()?;
    let btf = Btf::from_sys_fs()?;
    let mut config = kernel_config(&tracefs_root, &btf)?;
    config.self_tgid = std::process::id();
    config.kinds_mask = opts.kinds.iter().fold(0u32, |m, k| m | 1 << (*k as u32));
    config.wakeup_interval_ns = opts.wakeup_interval_ns;
    let (rings, ring_cpus, layout_note) = ring_layout(opts.ring_cpus, possible_cpus());
    config.ring_cpus = ring_cpus;
    config.threads = opts.threads as u32;
    config.args_cap = opts.args_bytes.min(watcher_common::ARGS_MAX as u32);
    config.ring_fill_wake = ring_fill_wake(ring_bytes);

    // RLIMIT_MEMLOCK: not needed on kernels that charge BPF memory to the
    // cgroup (5.11+), and raising it can fail (EPERM); try, never fail on it.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );

    // aya's reading of the kernel's BTF: the loader's relocations and the
    // fentry/fexit programs' targets (parsed once, for both).
    let aya_btf = aya::Btf::from_sys_fs();
    let mut loader = EbpfLoader::new();
    loader.btf(aya_btf.as_ref().ok());
    loader.override_global(GLOBAL_CONFIG, &config, true);
    for (i, name) in MAP_RINGS.iter().enumerate() {
        // Rings the layout does not use: one page each.
        loader.map_max_entries(name, if i < rings { ring_bytes } else { 4096 });
    }
    for t in KernelTable::ALL {
        loader.map_max_entries(t.map_name(), opts.table_capacity(t));
    }
    let mut ebpf = loader.load(OBJECT).map_err(SetupError::Object)?;

    // A diagnostic: every hook through tracefs (to measure what the raw
    // attachments save, or to rule them out).
    // `no-fentry`: the system calls through their tracepoints.
    let attach_env = std::env::var("WATCHER_ATTACH").unwrap_or_default();
    // (Several at once, comma-separated: `pairs,raw`.)
    let asked = |what: &str| attach_env.split(',').any(|a| a.trim() == what);
    let tracefs_only = asked("tracefs");
    // `pairs`: those, and bind and connect through entry and exit pairs
    // (as `tracefs` has them too: the oldest kernels' way).
    let pairs = tracefs_only || asked("pairs");
    let (traced, traced_fallback) = if pairs || asked("no-fentry") {
        (
            Vec::new(),
            Some(format!("not tried: WATCHER_ATTACH={attach_env}")),
        )
    } else {
        attach_all_traced(&mut ebpf, &btf, aya_btf.as_ref(), &config)
    };
    let by_fexit = |program: &str| {
        TRACED
            .iter()
            .any(|t| traced.contains(&t.function) && t.replaces.contains(&program))
    };
    let (exit_only, exit_only_fallback) = if pairs {
        (
            Vec::new(),
            Some(format!("not tried: WATCHER_ATTACH={attach_env}")),
        )
    } else {
        attach_all_exit_only(&mut ebpf, &config, by_fexit)
    };
    let replaced = |program: &str| {
        by_fexit(program)
            || EXIT_ONLY
                .iter()
                .any(|e| exit_only.contains(&e.call) && e.replaces.contains(&program))
    };
    let mut degraded = Vec::new();
    let mut raw = Vec::new();
    let mut raw_fallback = Vec::new();
    let mut btf_typed = Vec::new();
    let mut btf_fallback = Vec::new();
    for h in HOOKS {
        if replaced(h.program) {
            continue;
        }
        let tp_name = format!("{}/{}", h.category, h.name);
        if let Some(without) = h.optional {
            if !tracefs_root
                .join("events")
                .join(h.category)
                .join(h.name)
                .join("format")
                .exists()
            {
                degraded.push((tp_name, without));
                continue;
            }
        }
        // (Through tracefs when this kernel's BTF does not describe what
        // the raw program reads, or its attach fails: said once, at start.)
        if BTF_FIRST.contains(&h.program) && !tracefs_only && !asked("raw") {
            let ready = raw_unready(&btf, &config, h.program);
            match (ready, aya_btf.as_ref()) {
                (None, Ok(kernel_btf)) => match attach_btf(&mut ebpf, kernel_btf, &h) {
                    Ok(()) => {
                        raw.push(h.program);
                        btf_typed.push(h.program);
                        continue;
                    }
                    Err(why) => btf_fallback.push(format!("{}: {why}", h.name)),
                },
                (Some(why), _) => btf_fallback.push(format!("{}: {why}", h.name)),
                (None, Err(e)) => btf_fallback.push(format!(
                    "{}: {}",
                    h.name,
                    crate::kernel::error::first_line(e)
                )),
            }
        }
        if RAW_FIRST.contains(&h.program) && !tracefs_only {
            match raw_unready(&btf, &config, h.program) {
                Some(why) => raw_fallback.push(format!("{}: {why}", h.name)),
                None => match attach_raw(&mut ebpf, &h) {
                    Ok(()) => {
                        raw.push(h.program);
                        continue;
                    }
                    Err(why) => raw_fallback.push(format!("{}: {why}", h.name)),
                },
            }
        }
        let prog: &mut TracePoint = ebpf
            .program_mut(h.program)
            .ok_or(SetupError::ProgramMissing { program: h.program })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| SetupError::Load {
                program: h.program,
                why: crate::kernel::error::first_line(&e),
            })?;
        prog.load().map_err(|e| SetupError::Load {
            program: h.program,
            why: crate::kernel::error::first_line(&e),
        })?;
        prog.attach(h.category, h.name).map_err(|e| {
            let why = crate::kernel::error::first_line(&e);
            let restricted = || perf_event_paranoid().filter(|&l| l > 2 && !held()(CAP_SYS_ADMIN));
            if !tracefs_root
                .join("events")
                .join(h.category)
                .join(h.name)
                .exists()
            {
                SetupError::TracepointMissing {
                    tracepoint: tp_name.clone(),
                    why,
                }
            } else if let Some(level) = why.contains("Permission denied").then(restricted).flatten()
            {
                SetupError::PerfRestricted { level }
            } else {
                SetupError::Attach {
                    program: h.program,
                    tracepoint: tp_name.clone(),
                    why,
                }
            }
        })?;
    }

    let mut events = Vec::with_capacity(rings);
    for name in &MAP_RINGS[..rings] {
        let map = ebpf.take_map(name).ok_or(SetupError::Map {
            name,
            why: "missing".into(),
        })?;
        let ring = match map {
            aya::maps::Map::RingBuf(data) => crate::kernel::ring::Ring::new(data)
                .map_err(|e| crate::kernel::error::first_line(&e)),
            _ => Err("not a ring buffer".to_string()),
        };
        events.push(ring.map_err(|why| SetupError::Map { name, why })?);
    }
    let lost = ebpf.take_map(MAP_LOST).ok_or(SetupError::Map {
        name: MAP_LOST,
        why: "missing".into(),
    })?;
    let lost = PerCpuArray::try_from(lost).map_err(|e| SetupError::Map {
        name: MAP_LOST,
        why: crate::kernel::error::first_line(&e),
    })?;
    let tables = crate::kernel::tables::Tables::take(&mut ebpf, |t| opts.table_capacity(t));
    Ok(Probes {
        ebpf,
        events,
        lost,
        ring_bytes,
        config,
        tables,
        tracefs: tracefs_root,
        degraded,
        layout_note,
        raw,
        raw_fallback,
        traced,
        traced_fallback,
        exit_only,
        exit_only_fallback,
        btf_typed,
        btf_fallback,
    })
}

/// Attach every system call of [`TRACED`] the kernel allows through
/// fentry/fexit: the functions attached, and why not the others (the first
/// reason; a refused load stops the tries: the kernel refuses them all).
fn attach_all_traced(
    ebpf: &mut Ebpf,
    btf: &Btf,
    aya_btf: Result<&aya::Btf, &aya::BtfError>,
    config: &Config,
) -> (Vec<&'static str>, Option<String>) {
    let mut attached = Vec::new();
    let mut why: Option<String> = None;
    for t in &TRACED {
        if let Some(not) = traced_unready(btf, config, t) {
            why.get_or_insert(not);
            continue;
        }
        let kernel_btf = match aya_btf {
            Ok(b) => b,
            Err(e) => {
                why.get_or_insert(crate::kernel::error::first_line(e));
                break;
            }
        };
        match attach_traced(ebpf, kernel_btf, t) {
            Ok(()) => attached.push(t.function),
            Err(e) => {
                why = Some(e);
                break;
            }
        }
    }
    (attached, why)
}

/// Load `<program>_raw` and attach it to the raw tracepoint `hook.name`.
fn attach_raw(ebpf: &mut Ebpf, h: &Hook) -> Result<(), String> {
    let name = format!("{}_raw", h.program);
    let prog: &mut RawTracePoint = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("no program {name} in the object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| crate::kernel::error::first_line(&e))?;
    prog.load()
        .map_err(|e| crate::kernel::error::first_line(&e))?;
    prog.attach(h.name)
        .map_err(|e| crate::kernel::error::first_line(&e))?;
    Ok(())
}

/// Every lost record, summed over CPUs (slot 0: one lookup).
pub(crate) fn read_lost_total(lost: &PerCpuArray<MapData, u64>) -> u64 {
    lost.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

/// Losses per slot (kind number, then full tables), summed over CPUs (slot 0, the total, left 0).
pub(crate) fn read_lost(lost: &PerCpuArray<MapData, u64>) -> [u64; LOST_SLOTS as usize] {
    let mut out = [0u64; LOST_SLOTS as usize];
    for (i, slot) in out.iter_mut().enumerate().skip(1) {
        if let Ok(v) = lost.get(&(i as u32), 0) {
            *slot = v.iter().sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_raw_hook_is_ready_on_the_running_kernel_and_says_why_when_not() {
        let btf =
            Btf::from_sys_fs().expect("/sys/kernel/btf/vmlinux: watcher needs a kernel with BTF");
        let mut c = Config::empty();
        c.k_task_pid = btf
            .member_offset("task_struct", "pid")
            .expect("task_struct.pid");
        c.k_bprm_filename = btf
            .member_offset("linux_binprm", "filename")
            .expect("linux_binprm.filename");
        sock_layout(&btf, &mut c).expect("the struct sock members");
        for p in RAW_FIRST {
            assert_eq!(raw_unready(&btf, &c, p), None, "{p}");
        }
        // Without the members a program reads: its tracefs program, and why.
        let bare = Config::empty();
        let why = raw_unready(&btf, &bare, "sched_process_exec").expect("not ready");
        assert!(why.contains("linux_binprm.filename"), "{why}");
        let why = raw_unready(&btf, &bare, "task_newtask").expect("not ready");
        assert!(why.contains("task_struct.pid"), "{why}");
        assert!(raw_unready(&btf, &bare, "sys_enter_bind").is_some());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_registers_a_system_call_was_entered_with_are_found_in_btf() {
        let btf =
            Btf::from_sys_fs().expect("/sys/kernel/btf/vmlinux: watcher needs a kernel with BTF");
        let mut c = Config::empty();
        regs_layout(&btf, &mut c).expect("pt_regs.di, si, dx, ax");
        // x86-64's struct pt_regs: r15 … r8 (10 words), ax, cx, dx, si, di.
        assert_eq!(
            (c.k_regs_arg0, c.k_regs_arg1, c.k_regs_arg2, c.k_regs_ret),
            (112, 104, 96, 80)
        );
        assert_eq!(exit_only_unready(&c), None);
        // Without them the exit-only programs are not tried, and why is said.
        let why = exit_only_unready(&Config::empty()).expect("not ready");
        assert!(why.contains("registers are not in BTF"), "{why}");
    }

    #[test]
    fn ring_layouts() {
        // One ring: the default, and whenever a group would hold every CPU.
        assert_eq!(ring_layout(0, 64), (1, 0, None));
        assert_eq!(ring_layout(2, 2), (1, 0, None));
        assert_eq!(ring_layout(8, 4), (1, 0, None));
        // One ring per group; a last group may be smaller.
        assert_eq!(ring_layout(1, 2), (2, 1, None));
        assert_eq!(ring_layout(8, 64), (8, 8, None));
        assert_eq!(ring_layout(16, 40), (3, 16, None));
        // More groups than rings: bigger groups, said once.
        let (rings, per, note) = ring_layout(1, 64);
        assert_eq!((rings, per), (8, 8));
        assert!(note.unwrap().contains("8 CPUs per ring"));
        let (rings, per, _) = ring_layout(4, 66);
        assert_eq!((rings, per), (8, 9));
        // Every CPU's ring exists: CPU 65 / 9 = ring 7.
        assert!(65 / per < rings as u32);
    }

    /// A tracefs copy of this kernel's format files with one tracepoint removed.
    fn fake_tracefs(without: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!(
            "watcher-fake-tracefs-{}-{}",
            std::process::id(),
            without.replace('/', "-")
        ));
        let _ = std::fs::remove_dir_all(&root);
        let real =
            tracefs::find().or_else(|| Some(std::path::PathBuf::from("/sys/kernel/tracing")));
        for h in HOOKS {
            let name = format!("{}/{}", h.category, h.name);
            if name == without {
                continue;
            }
            let dir = root.join("events").join(h.category).join(h.name);
            std::fs::create_dir_all(&dir).unwrap();
            let src = real
                .as_ref()
                .unwrap()
                .join("events")
                .join(h.category)
                .join(h.name)
                .join("format");
            let text = std::fs::read_to_string(&src).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (tracefs must be mounted for this test)",
                    src.display()
                )
            });
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
        assert!(
            msg.starts_with("tracepoint sock/inet_sock_set_state is not available on this kernel"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        // And with all of them, the layout is read.
        let root = fake_tracefs("none");
        let c = kernel_config(&root, &btf).expect("config");
        assert_ne!(c.tp_exec_filename, watcher_common::OFFSET_NONE);
        assert_ne!(c.k_task_exit_code, watcher_common::OFFSET_NONE);
        // A process's end skips the EXEC_LIVE lookup by its exec ids.
        assert_ne!(c.k_task_parent_exec_id, watcher_common::OFFSET_NONE);
        assert_ne!(c.k_task_self_exec_id, watcher_common::OFFSET_NONE);
    }

    /// Format files captured from Debian 12's 6.1 and 6.12 kernels (booted by
    /// `cargo xtask vms`) and from this host's 6.18, as `=== category/name` sections.
    const FORMATS: [(&str, &str); 3] = [
        ("6.1", include_str!("testdata/formats/6.1.0-57-amd64.txt")),
        (
            "6.12",
            include_str!("testdata/formats/6.12.117+deb12-amd64.txt"),
        ),
        ("6.18", include_str!("testdata/formats/6.18.44.txt")),
    ];

    /// A tracefs tree holding one captured kernel's format files; `edit`
    /// (tracepoint, text, replacement) changes one line of one of them.
    fn captured_tracefs(kernel: &str, edit: Option<(&str, &str, &str)>) -> std::path::PathBuf {
        let text = FORMATS
            .iter()
            .find(|(k, _)| *k == kernel)
            .expect("captured kernel")
            .1;
        let root = std::env::temp_dir().join(format!(
            "watcher-captured-{}-{kernel}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for section in text.split("=== ").skip(1) {
            let (name, body) = section.split_once('\n').expect("section header");
            if name == "end" {
                continue;
            }
            let dir = root.join("events").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let body = match edit {
                Some((tp, from, to)) if tp == name => {
                    assert!(body.contains(from), "{kernel} {tp} has no `{from}`");
                    body.replace(from, to)
                }
                _ => body.to_owned(),
            };
            std::fs::write(dir.join("format"), body).unwrap();
        }
        root
    }

    fn host_btf() -> Option<Btf> {
        match Btf::from_sys_fs() {
            Ok(b) => Some(b),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("kernel BTF is needed: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: no kernel BTF here: {e}");
                None
            }
        }
    }

    #[test]
    fn each_kernels_layout_comes_from_its_own_format_files() {
        let Some(btf) = host_btf() else { return };
        let config = |k| {
            kernel_config(&captured_tracefs(k, None), &btf).unwrap_or_else(|e| panic!("{k}: {e}"))
        };
        let (old, mid, new) = (config("6.1"), config("6.12"), config("6.18"));
        // sched_process_free: `char comm[16]` before pid on 6.1/6.12, a 4-byte __data_loc on 6.18.
        assert_eq!(
            (old.tp_free_pid, mid.tp_free_pid, new.tp_free_pid),
            (24, 24, 12)
        );
        // group_dead exists only on 6.18; before, it is derived from signal_struct.live.
        assert_eq!(old.tp_exit_group_dead, watcher_common::OFFSET_NONE);
        assert_eq!(mid.tp_exit_group_dead, watcher_common::OFFSET_NONE);
        assert_ne!(new.tp_exit_group_dead, watcher_common::OFFSET_NONE);
        for c in [&old, &mid, &new] {
            assert_eq!((c.tp_exec_filename, c.tp_exec_old_pid), (8, 16));
            assert_eq!((c.tp_newtask_pid, c.tp_newtask_clone_flags), (8, 32));
            assert_ne!(c.tp_sys_exit_ret, watcher_common::OFFSET_NONE);
            // cgroup_mkdir/rmdir: the same class on all three.
            assert_eq!(
                (
                    c.tp_cgroup_root,
                    c.tp_cgroup_level,
                    c.tp_cgroup_id,
                    c.tp_cgroup_path
                ),
                (8, 12, 16, 24)
            );
            // signal_generate: one layout on all three; mark_victim's pid
            // first (on 6.1 there is nothing else).
            assert_eq!(
                (
                    c.tp_signal_sig,
                    c.tp_signal_code,
                    c.tp_signal_pid,
                    c.tp_signal_group,
                    c.tp_signal_result
                ),
                (8, 16, 36, 40, 44)
            );
            assert_eq!(c.tp_oom_pid, 8);
            assert_eq!(c.signal_mask, watcher_common::DEFAULT_SIGNAL_MASK);
        }
        // tcp_destroy_sock: one layout on all three; bound TCP sockets are tracked.
        for c in [&old, &mid, &new] {
            assert_eq!((c.tp_destroy_skaddr, c.track_bound), (8, 1));
        }
    }

    #[test]
    fn a_kernel_without_the_signal_and_oom_tracepoints_still_loads_without_causes() {
        let Some(btf) = host_btf() else { return };
        let root = captured_tracefs("6.18", None);
        std::fs::remove_dir_all(root.join("events/signal")).unwrap();
        std::fs::remove_dir_all(root.join("events/oom")).unwrap();
        std::fs::remove_dir_all(root.join("events/tcp")).unwrap();
        let c = kernel_config(&root, &btf).expect("optional tracepoints do not stop the load");
        assert_eq!(
            (c.tp_signal_sig, c.tp_oom_pid, c.signal_mask),
            (watcher_common::OFFSET_NONE, watcher_common::OFFSET_NONE, 0)
        );
        // No tcp_destroy_sock: binds are not tracked (their holders are confirmed by lookups).
        assert_eq!(
            (c.tp_destroy_skaddr, c.track_bound),
            (watcher_common::OFFSET_NONE, 0)
        );
        assert!(HOOKS
            .iter()
            .filter(|h| h.optional.is_some())
            .all(|h| ["signal", "oom", "tcp"].contains(&h.category)));
    }

    #[test]
    fn a_field_of_another_size_or_kind_is_refused_not_misread() {
        let Some(btf) = host_btf() else { return };
        // pid as an 8-byte value: refused with one line naming the field and both types.
        let root = captured_tracefs(
            "6.1",
            Some((
                "sched/sched_process_free",
                "field:pid_t pid;\toffset:24;\tsize:4;",
                "field:long pid;\toffset:24;\tsize:8;",
            )),
        );
        let msg = kernel_config(&root, &btf)
            .expect_err("an 8-byte pid is not read as 4")
            .to_string();
        assert!(
            msg.starts_with("tracepoint sched/sched_process_free field `pid` is long (8 bytes)"),
            "{msg}"
        );
        assert!(
            msg.contains("a 4-byte value") && !msg.contains('\n'),
            "{msg}"
        );
        // exec's filename as a fixed array rather than __data_loc: refused too.
        let root = captured_tracefs(
            "6.18",
            Some((
                "sched/sched_process_exec",
                "field:__data_loc char[] filename;\toffset:8;\tsize:4;",
                "field:char filename[4];\toffset:8;\tsize:4;",
            )),
        );
        let msg = kernel_config(&root, &btf)
            .expect_err("not a __data_loc")
            .to_string();
        assert!(
            msg.contains("`filename` is char[4] (4 bytes)") && msg.contains("a __data_loc string"),
            "{msg}"
        );
        // A group_dead that is not a one-byte bool is not read: the BTF fallback is used.
        let root = captured_tracefs(
            "6.18",
            Some((
                "sched/sched_process_exit",
                "field:bool group_dead;\toffset:32;\tsize:1;",
                "field:int group_dead;\toffset:32;\tsize:4;",
            )),
        );
        let c = kernel_config(&root, &btf).expect("config");
        assert_eq!(c.tp_exit_group_dead, watcher_common::OFFSET_NONE);
    }
}
