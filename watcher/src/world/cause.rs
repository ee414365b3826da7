//! Why a process ended: its exit status joined with the last fatal signal
//! generated for it (`signal/signal_generate`: by whom) and the OOM killer's
//! choice (`oom/mark_victim`). Facts only; whether an end is a crash, a stop
//! or an answer is the detectors' rule (`detect::crash`), which reads these.
use std::sync::Arc;

use crate::kernel::names::{signal_name, ExitStatus};

pub(crate) use crate::kernel::abi::SI_KERNEL;

/// How the sender of a signal relates to the process it was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The process signalled itself (`abort()`, `raise()`, `kill(getpid())`).
    Itself,
    /// Its parent.
    Parent,
    /// An ancestor above the parent (a supervisor whose child is a wrapper).
    Ancestor,
    /// Anyone else.
    Other,
}

impl Relation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Relation::Itself => "itself",
            Relation::Parent => "parent",
            Relation::Ancestor => "ancestor",
            Relation::Other => "other",
        }
    }
}

/// The process that sent a signal, as it was then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    pub tgid: u32,
    pub comm: Arc<str>,
    pub exe: Option<Arc<str>>,
    pub command_line: Option<String>,
    pub relation: Relation,
}

impl Sender {
    /// `pid 412 (kill -9 300)`.
    pub fn describe(&self) -> String {
        let cmd = self
            .command_line
            .clone()
            .unwrap_or_else(|| self.comm.to_string());
        let cmd: String = cmd
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(60)
            .collect();
        format!("pid {} ({cmd})", self.tgid)
    }

    /// Whether the sender's name (comm, executable or its basename) is one of `names`
    /// (a trailing `*` matches any rest).
    pub fn named(&self, names: &[String]) -> bool {
        crate::world::proctable::name_matches(names, &self.comm, self.exe.as_deref())
    }
}

/// The last fatal signal generated for a process, or the OOM killer's choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signalled {
    pub at_ns: u64,
    pub signal: u32,
    /// `si_code`: ≤ 0 from a process, [`SI_KERNEL`] from the kernel, > 0 a fault.
    pub code: i32,
    /// The OOM killer chose it (its SIGKILL follows from the kernel).
    pub oom: bool,
    /// Who sent it; `None` when the kernel did (a fault, the OOM killer, a
    /// pid namespace's end).
    pub sender: Option<Sender>,
}

impl Signalled {
    /// A fault: the kernel signalled the faulting process (SIGSEGV, SIGBUS, …).
    pub fn is_fault(&self) -> bool {
        self.sender.is_none() && self.code > 0 && self.code != SI_KERNEL
    }
}

/// Why a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub status: ExitStatus,
    /// The signal behind the end: the one that killed it, or a stop signal it
    /// received before exiting with a code (a handler's clean-up).
    pub signalled: Option<Arc<Signalled>>,
}

/// Signals a supervisor or a person sends to stop a process, that a handler
/// may turn into an exit code (SIGHUP is left out: daemons reload on it).
pub(crate) fn is_stop_signal(sig: u32) -> bool {
    matches!(sig, 2 | 3 | 15)
}

/// A stop signal this long before an exit with a code still explains it (a
/// handler's clean-up; systemd waits 90 s before its SIGKILL).
pub(crate) const STOP_GRACE_NS: u64 = 90_000_000_000;

impl Cause {
    /// The cause of `status` at `at_ns`, given the last signal recorded for the process.
    pub fn of(status: ExitStatus, last: Option<&Arc<Signalled>>, at_ns: u64) -> Cause {
        let signalled = match (status, last) {
            (_, Some(s)) if s.oom => Some(s.clone()),
            (ExitStatus::Signal { signal, .. }, Some(s)) if s.signal == signal => Some(s.clone()),
            // Exited with a code shortly after a stop signal: its handler ended it.
            (ExitStatus::Code(_), Some(s))
                if is_stop_signal(s.signal)
                    && s.sender.is_some()
                    && at_ns.saturating_sub(s.at_ns) <= STOP_GRACE_NS =>
            {
                Some(s.clone())
            }
            _ => None,
        };
        Cause { status, signalled }
    }

    /// `exit_code`, `oom_kill`, `fault`, `signal` (sent by a process or the
    /// kernel), `stopped` (exited with a code after a stop signal), `unknown`.
    pub fn kind(&self) -> &'static str {
        match (self.status, &self.signalled) {
            (_, Some(s)) if s.oom => "oom_kill",
            (ExitStatus::Signal { .. }, Some(s)) if s.is_fault() => "fault",
            (ExitStatus::Signal { .. }, _) => "signal",
            (ExitStatus::Code(_), Some(_)) => "stopped",
            (ExitStatus::Code(_), None) => "exit_code",
            (ExitStatus::Unknown, _) => "unknown",
        }
    }

    /// The sender, when a process sent the signal.
    pub fn sender(&self) -> Option<&Sender> {
        self.signalled.as_ref().and_then(|s| s.sender.as_ref())
    }

    /// One phrase: `exit code 3`, `SIGSEGV (a fault, core dumped)`, `SIGKILL from
    /// the OOM killer (out of memory)`, `SIGTERM from its parent pid 7 (supervisord)`.
    pub fn describe(&self) -> String {
        let from = |s: &Signalled| match &s.sender {
            Some(x) if x.relation == Relation::Itself => " sent by itself".to_owned(),
            Some(x) => match x.relation {
                Relation::Parent => format!(" from its parent {}", x.describe()),
                Relation::Ancestor => format!(" from its ancestor {}", x.describe()),
                _ => format!(" from {}", x.describe()),
            },
            None if s.is_fault() => " (a fault)".to_owned(),
            None => " from the kernel".to_owned(),
        };
        match (self.status, &self.signalled) {
            (_, Some(s)) if s.oom => "SIGKILL from the OOM killer (out of memory)".to_owned(),
            (
                ExitStatus::Signal {
                    signal,
                    core_dumped,
                },
                s,
            ) => {
                let core = if core_dumped { ", core dumped" } else { "" };
                match s {
                    Some(s) if s.is_fault() => format!("{} (a fault{core})", signal_name(signal)),
                    Some(s) => format!(
                        "{}{}{}",
                        signal_name(signal),
                        from(s),
                        if core_dumped { " (core dumped)" } else { "" }
                    ),
                    None => format!(
                        "{}{}",
                        signal_name(signal),
                        if core_dumped { " (core dumped)" } else { "" }
                    ),
                }
            }
            (ExitStatus::Code(c), Some(s)) => {
                format!("exit code {c} after {}{}", signal_name(s.signal), from(s))
            }
            (ExitStatus::Code(c), None) => format!("exit code {c}"),
            (ExitStatus::Unknown, _) => "unknown status".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(signal: u32, code: i32, sender: Option<(u32, &str, Relation)>) -> Arc<Signalled> {
        Arc::new(Signalled {
            at_ns: 1,
            signal,
            code,
            oom: false,
            sender: sender.map(|(tgid, comm, relation)| Sender {
                tgid,
                comm: comm.into(),
                exe: None,
                command_line: Some(comm.to_owned()),
                relation,
            }),
        })
    }

    #[test]
    fn each_end_says_what_happened() {
        let segv = ExitStatus::Signal {
            signal: 11,
            core_dumped: true,
        };
        let c = Cause::of(segv, Some(&sent(11, 1, None)), 2);
        assert_eq!(
            (c.kind(), c.describe().as_str()),
            ("fault", "SIGSEGV (a fault, core dumped)")
        );

        let kill = ExitStatus::Signal {
            signal: 9,
            core_dumped: false,
        };
        let c = Cause::of(
            kill,
            Some(&sent(9, 0, Some((412, "kill -9 300", Relation::Other)))),
            2,
        );
        assert_eq!(
            (c.kind(), c.describe().as_str()),
            ("signal", "SIGKILL from pid 412 (kill -9 300)")
        );

        let mut oom = (*sent(9, 0, None)).clone();
        oom.oom = true;
        let c = Cause::of(kill, Some(&Arc::new(oom)), 2);
        assert_eq!(c.kind(), "oom_kill");
        assert!(c.describe().contains("out of memory"));

        // A handler that exits 143 after its parent's SIGTERM: stopped.
        let term = sent(15, 0, Some((7, "supervisord", Relation::Parent)));
        let c = Cause::of(ExitStatus::Code(143), Some(&term), 2);
        assert_eq!(c.kind(), "stopped");
        assert_eq!(
            c.describe(),
            "exit code 143 after SIGTERM from its parent pid 7 (supervisord)"
        );
        // … but not a SIGTERM handled long ago.
        let c = Cause::of(ExitStatus::Code(1), Some(&term), 1 + STOP_GRACE_NS + 1);
        assert_eq!(c.kind(), "exit_code");

        // A signal that is not the one it died of says nothing about the end.
        let c = Cause::of(
            segv,
            Some(&sent(15, 0, Some((7, "x", Relation::Parent)))),
            2,
        );
        assert!(c.signalled.is_none());
        assert_eq!(
            Cause::of(ExitStatus::Code(3), None, 2).describe(),
            "exit code 3"
        );
        // abort(): SIGABRT sent by itself.
        let c = Cause::of(
            ExitStatus::Signal {
                signal: 6,
                core_dumped: false,
            },
            Some(&sent(6, -6, Some((5, "app", Relation::Itself)))),
            2,
        );
        assert_eq!(c.describe(), "SIGABRT sent by itself");
    }

    #[test]
    fn sender_names_match_comm_path_basename_and_prefix() {
        let s = Sender {
            tgid: 1,
            comm: "containerd-shim".into(),
            exe: Some("/usr/bin/containerd-shim-runc-v2".into()),
            command_line: None,
            relation: Relation::Other,
        };
        assert!(s.named(&["containerd-shim*".to_owned()]));
        assert!(s.named(&["containerd-shim-runc-v2".to_owned()]));
        assert!(!s.named(&["systemd".to_owned()]));
    }
}
