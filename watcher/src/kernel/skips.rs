//! Runs of watcher's programs the kernel skipped. A program attached through
//! tracefs does not run while another program runs on its CPU (the kernel's
//! `bpf_prog_active`): an event that comes in a softirq on top of a
//! syscall's program — a TCP state change on a packet's arrival, a signal —
//! may then be lost without a trace in the ring. A raw tracepoint's program
//! is skipped only when it interrupts itself (a TCP state change in a
//! softirq on top of another one). The kernel counts skips per program
//! (`bpf_prog_info.recursion_misses`, kernel 5.12 and later), read once a
//! second into `watcher_program_skips_total`. They are not said as a `loss`:
//! most runs of the hooks that get skipped decide nothing (state changes
//! watcher filters out in the kernel), so a skip is a record that may have
//! been lost, not one that was.
use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use watcher_common::EventKind;

/// `union bpf_attr`'s `info` member (BPF_OBJ_GET_INFO_BY_FD).
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// What the kernel counts of the program behind `fd` since it was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgramCounts {
    /// Runs it skipped (`recursion_misses`).
    pub skipped: u64,
    /// Runs, and the time they took (ns): counted only while
    /// `kernel.bpf_stats_enabled` is 1 (the kernel's switch; off by default,
    /// it costs two clock reads per run).
    pub runs: u64,
    pub run_ns: u64,
}

/// The kernel's counts of the program behind `fd`.
pub(crate) fn counts(fd: BorrowedFd) -> Option<ProgramCounts> {
    // SAFETY: a plain C struct; all zeroes is its empty value.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: the kernel writes at most `info_len` bytes to `info`, which lives until the call returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>() as libc::c_uint,
        )
    };
    (r == 0).then_some(ProgramCounts {
        skipped: info.recursion_misses,
        runs: info.run_cnt,
        run_ns: info.run_time_ns,
    })
}

/// The runs of the program behind `fd` the kernel skipped since it was loaded.
#[cfg(test)]
pub(crate) fn skipped(fd: BorrowedFd) -> Option<u64> {
    counts(fd).map(|c| c.skipped)
}

/// The record type a program's skipped run would have written (its hook's).
pub(crate) fn kind_of(program: &str) -> EventKind {
    match program.strip_suffix("_raw").unwrap_or(program) {
        "task_newtask" => EventKind::Fork,
        "sched_process_exec" => EventKind::Exec,
        "sched_process_exit" => EventKind::Exit,
        p if p.contains("wait") || p.starts_with("sched_process_free") => EventKind::Reap,
        p if p.contains("bind") => EventKind::Bind,
        p if p.contains("connect") => EventKind::Connect,
        "inet_sock_set_state" => EventKind::TcpState,
        "tcp_destroy_sock" => EventKind::SockClose,
        p if p.starts_with("cgroup") => EventKind::Cgroup,
        _ => EventKind::Signal,
    }
}

/// The skips seen at the last look, per program.
#[derive(Default)]
pub(crate) struct Skips {
    seen: HashMap<String, u64>,
    /// Skips since start, per program (for the metrics).
    pub total: std::collections::BTreeMap<String, u64>,
    /// Runs and their time (ns) at the last look, per attached program
    /// (counted while `kernel.bpf_stats_enabled` is 1).
    pub runs: std::collections::BTreeMap<String, (u64, u64)>,
}

impl Skips {
    /// New skips since the last look, by the record type they lost.
    pub(crate) fn poll(&mut self, ebpf: &aya::Ebpf) -> Vec<(EventKind, u64)> {
        let mut out: Vec<(EventKind, u64)> = Vec::new();
        for (name, prog) in ebpf.programs() {
            let Some(c) = prog.fd().ok().and_then(|fd| counts(fd.as_fd())) else {
                continue;
            };
            self.runs.insert(name.to_owned(), (c.runs, c.run_ns));
            let n = c.skipped;
            let before = self.seen.insert(name.to_owned(), n).unwrap_or(0);
            // (Every program has its series, 0 until it skips.)
            self.total.entry(name.to_owned()).or_default();
            if n > before {
                *self.total.entry(name.to_owned()).or_default() += n - before;
                let kind = kind_of(name);
                match out.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, m)) => *m += n - before,
                    None => out.push((kind, n - before)),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_program_names_the_record_type_it_would_have_written() {
        for h in crate::kernel::loader::HOOKS {
            let k = kind_of(h.program);
            let want = match h.category {
                "task" => EventKind::Fork,
                "cgroup" => EventKind::Cgroup,
                "signal" | "oom" => EventKind::Signal,
                "sock" => EventKind::TcpState,
                "tcp" => EventKind::SockClose,
                _ if h.name.contains("wait") || h.name == "sched_process_free" => EventKind::Reap,
                _ if h.name.contains("bind") => EventKind::Bind,
                _ if h.name.contains("connect") => EventKind::Connect,
                _ if h.name == "sched_process_exec" => EventKind::Exec,
                _ => EventKind::Exit,
            };
            assert_eq!(k, want, "{}", h.program);
        }
        assert_eq!(kind_of("sched_process_free_raw"), EventKind::Reap);
        assert_eq!(kind_of("inet_sock_set_state_raw"), EventKind::TcpState);
        assert_eq!(kind_of("tcp_destroy_sock_raw"), EventKind::SockClose);
    }

    #[test]
    fn a_file_that_is_no_program_has_no_count() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(skipped(f.as_fd()), None);
    }
}
