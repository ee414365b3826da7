//! The rules that tell a crash from a stop and from an answer, in one place
//! (README, "What counts as a crash"):
//!
//! - a clean exit (code 0), and death by SIGPIPE (its reader went away), are normal;
//! - a fault (SIGSEGV, SIGBUS, SIGFPE, SIGILL … from the kernel), an abort
//!   (a signal the process sent itself), an OOM kill, and a signal from a
//!   process that is neither its parent, an ancestor, nor a known supervisor or
//!   stop tool are crashes;
//! - a signal from its parent, an ancestor, a supervisor or container runtime,
//!   or a person's `kill` is a stop, and so is an exit code that follows a
//!   stop signal (SIGTERM/SIGINT/SIGQUIT handled), and the kernel's SIGKILL
//!   when the process's pid namespace ends;
//! - a non-zero exit code is a crash, unless the program is a probe or test
//!   whose exit code is an answer (`curl` 7, `grep -q` 1, `check_http` 2 …);
//! - a death by signal of which no record says who sent it (the kernel lacks
//!   the tracepoint, or the record was lost) counts as a crash.
use super::{config::names_match, respawn_storm::RespawnStormCfg};
use crate::kernel::abi::{SIGKILL, SIGPIPE};
use crate::{
    kernel::names::ExitStatus,
    world::cause::{Cause, Relation, SI_KERNEL},
    world::proctable::Proc,
};

/// What an end was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Normal,
    /// A non-zero exit code that answers a question.
    Answer,
    /// Stopped by its supervisor, parent, runtime, or a person.
    Stop,
    Crash,
}

/// Judge the end of `p` (see the module's rules).
pub(crate) fn judge(p: &Proc, cause: &Cause, cfg: &RespawnStormCfg) -> End {
    let s = cause.signalled.as_deref();
    match cause.status {
        ExitStatus::Code(0) | ExitStatus::Unknown => End::Normal,
        _ if s.is_some_and(|s| s.oom) => End::Crash,
        ExitStatus::Signal {
            signal: SIGPIPE, ..
        } => End::Normal,
        ExitStatus::Signal { signal, .. } => match s {
            None => End::Crash,
            Some(s) if s.is_fault() => End::Crash,
            // The kernel's SIGKILL of a dying pid namespace.
            Some(s) if s.sender.is_none() && s.code == SI_KERNEL && signal == SIGKILL => End::Stop,
            Some(s) => match &s.sender {
                None => End::Crash,
                Some(x) if x.relation == Relation::Itself => End::Crash,
                Some(x) if matches!(x.relation, Relation::Parent | Relation::Ancestor) => End::Stop,
                Some(x) if x.named(&cfg.stoppers) => End::Stop,
                Some(_) => End::Crash,
            },
        },
        ExitStatus::Code(_) if s.is_some() => End::Stop,
        ExitStatus::Code(_) if names_match(&cfg.answer_programs, p) => End::Answer,
        ExitStatus::Code(_) => End::Crash,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::world::cause::{Sender, Signalled};

    fn proc(comm: &str, exe: &str) -> Proc {
        Proc {
            exe: Some(exe.into()),
            program: 1,
            ..Proc::bare(
                crate::world::proctable::ProcKey {
                    tgid: 10,
                    start_ns: 1,
                },
                1,
                comm,
            )
        }
    }

    fn by(sig: u32, comm: &str, relation: Relation) -> Option<Arc<Signalled>> {
        let sender = Sender {
            tgid: 5,
            comm: comm.into(),
            exe: None,
            command_line: None,
            relation,
        };
        Some(Arc::new(Signalled {
            at_ns: 1,
            signal: sig,
            code: 0,
            oom: false,
            sender: Some(sender),
        }))
    }

    #[test]
    fn stops_answers_and_crashes() {
        let cfg = RespawnStormCfg::default();
        let app = proc("app", "/srv/app");
        let killed = |sig| ExitStatus::Signal {
            signal: sig,
            core_dumped: false,
        };
        let j = |p: &Proc, status, s: Option<Arc<Signalled>>| {
            judge(p, &Cause::of(status, s.as_ref(), 2), &cfg)
        };
        assert_eq!(j(&app, ExitStatus::Code(0), None), End::Normal);
        assert_eq!(j(&app, ExitStatus::Code(1), None), End::Crash);
        assert_eq!(
            j(&proc("curl", "/usr/bin/curl"), ExitStatus::Code(7), None),
            End::Answer
        );
        assert_eq!(
            j(
                &proc("check_http", "/usr/lib/nagios/plugins/check_http"),
                ExitStatus::Code(2),
                None
            ),
            End::Answer
        );
        // Its supervisor's SIGTERM, whether it dies of it or handles it.
        assert_eq!(
            j(&app, killed(15), by(15, "supervisord", Relation::Parent)),
            End::Stop
        );
        assert_eq!(
            j(
                &app,
                ExitStatus::Code(143),
                by(15, "supervisord", Relation::Parent)
            ),
            End::Stop
        );
        // A person's kill from a shell elsewhere; a runtime's kill.
        assert_eq!(
            j(&app, killed(9), by(9, "bash", Relation::Other)),
            End::Stop
        );
        assert_eq!(
            j(&app, killed(15), by(15, "containerd-shim", Relation::Other)),
            End::Stop
        );
        // Another program's SIGKILL is not a stop.
        assert_eq!(
            j(&app, killed(9), by(9, "reaper-bot", Relation::Other)),
            End::Crash
        );
        // abort(), a fault, the OOM killer, an unknown sender.
        assert_eq!(
            j(&app, killed(6), by(6, "app", Relation::Itself)),
            End::Crash
        );
        let fault = Some(Arc::new(Signalled {
            at_ns: 1,
            signal: 11,
            code: 1,
            oom: false,
            sender: None,
        }));
        assert_eq!(j(&app, killed(11), fault), End::Crash);
        let oom = Some(Arc::new(Signalled {
            at_ns: 1,
            signal: 9,
            code: 0,
            oom: true,
            sender: None,
        }));
        assert_eq!(j(&app, killed(9), oom), End::Crash);
        assert_eq!(j(&app, killed(9), None), End::Crash);
        assert_eq!(j(&app, killed(13), None), End::Normal);
        // The kernel's SIGKILL as a pid namespace ends.
        let teardown = Some(Arc::new(Signalled {
            at_ns: 1,
            signal: 9,
            code: SI_KERNEL,
            oom: false,
            sender: None,
        }));
        assert_eq!(j(&app, killed(9), teardown), End::Stop);
    }
}
