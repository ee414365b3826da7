//! `respawn_storm`: a program keeps crashing and being started again — a
//! crash loop, at whatever cadence its restarter keeps.
//!
//! A crash is an end judged so by [`super::crash`] (a fault, an abort, an OOM
//! kill, a non-answer exit code, another program's kill; not a stop by its
//! supervisor, parent or a person) after a short life (`short_life_s`). A
//! restart is a new instance of the same program (exec, or the re-fork of a
//! worker that did not exec) after such a crash. Consecutive crash → restart
//! cycles are one loop while each restart follows its crash within the
//! expected delay: `restart_within_s` for the first, then up to 2.5 times the
//! previous delay (at least 3 s more), so supervisors that restart at once
//! (supervisord, runit), after a fixed delay (systemd's `RestartSec`), with a
//! linear backoff (supervisord's BACKOFF: 1, 2, 3 s, each acted on at its
//! once-a-second loop's next turn, so 1.0 s can be followed by 3.0+ s) or
//! with a doubling backoff (Docker 100 ms → 1 min, Kubernetes 10 s → 5 min)
//! all keep one loop; `window_s` caps the delay.
//!
//! `restarts` (5) cycles open the finding, which states the cadence, the
//! causes, the restarter and, for a backoff, when the next restart is due.
//! A loop of at least `gave_up_after` crashes, restarted by a known
//! supervisor or runtime (or of `restarts` cycles), that is not restarted
//! within the expected delay was given up by its restarter (systemd's
//! StartLimitBurst, supervisord's startretries): that opens (or updates) the
//! finding — the program is down — until an instance of it starts again. The loop is over
//! when a restarted instance lives `short_life_s`, or is stopped.
use std::collections::{BTreeSet, VecDeque};

use foldhash::{HashMap, HashMapExt};

use std::fmt;

use serde::Serialize;

use super::summary::Lazy;
use super::{
    config::ns,
    crash::{judge, End},
    exec_wakes::{comm_key, Comm, ExecWakes},
    incident::Incidents,
    dur,
    who, ContainerView, DetectConfig, Finding, Input, Involved, Kind,
};
use crate::{
    world::domain::DomainEvent,
    world::proctable::{Proc, ProcKey},
    world::{cause::Cause, containers::ContainerInfo},
};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.respawn_storm]`
    RespawnStormCfg {
        /// Consecutive crash → restart cycles of one program that open the finding.
        #[serde(deserialize_with = "crate::detect::config::at_least_1")]
        restarts: u32 = 5,
        /// The longest delay between a crash and its restart that still continues
        /// a loop once its restarter backs off (Docker doubles up to 1 min,
        /// Kubernetes up to 5 min).
        #[serde(deserialize_with = "crate::detect::config::seconds")]
        window_s: f64 = 330.0,
        /// A life shorter than this that ends abnormally counts as a crash; a
        /// restarted instance that lives this long ends the loop.
        #[serde(deserialize_with = "crate::detect::config::seconds")]
        short_life_s: f64 = 30.0,
        /// The first restart must follow its crash within this long.
        #[serde(deserialize_with = "crate::detect::config::seconds")]
        restart_within_s: f64 = 30.0,
        /// A loop of at least this many crashes whose restarter then stops
        /// restarting it (systemd's StartLimitBurst, supervisord's startretries)
        /// is reported: the program is down.
        #[serde(deserialize_with = "crate::detect::config::at_least_1")]
        gave_up_after: u32 = 3,
        /// Programs whose non-zero exit code is an answer, not a crash: probes,
        /// tests, compilers (name, basename or path; a trailing `*` matches any rest).
        answer_programs: Vec<String> = [
            "grep", "egrep", "fgrep", "zgrep", "rg", "pgrep", "pkill", "pidof", "test", "[", "false", "diff", "cmp",
            "which", "id", "getent", "timeout", "ping", "ping6", "fping", "arping", "curl", "wget", "nc", "ncat",
            "netcat", "socat", "telnet", "ss", "dig", "host", "nslookup", "mountpoint", "flock", "kill", "systemctl",
            "ls", "stat", "find", "expr", "check_*", "pg_isready", "mysqladmin", "redis-cli", "sha256sum",
            "md5sum", "cc", "gcc", "g++", "c++", "clang", "clang++", "rustc", "javac", "go", "tsc", "make", "cargo",
            "ld", "as",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        /// Senders whose fatal signal is a stop, not a crash, besides the
        /// process's parent and ancestors: supervisors, container runtimes, and
        /// the tools a person stops a process with.
        stoppers: Vec<String> = [
            "systemd", "init", "supervisord", "runsv", "runsvdir", "s6-supervise", "containerd-shim*", "runc", "crun",
            "conmon", "dockerd", "containerd", "docker-init", "tini", "dumb-init", "kubelet", "monit", "circusd",
            "kill", "pkill", "killall", "skill", "timeout", "bash", "sh", "dash", "zsh", "fish", "ash", "ksh",
            "busybox", "sudo", "su", "tmux: server", "screen",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    }
);

impl Declared for RespawnStorm {
    const NAME: &'static str = "respawn_storm";
    const SEVERITY: &'static str = "critical";
    const ADVICE: &'static str = "A program keeps crashing and being restarted (a crash loop, hidden by its restart policy). The finding names the cause of each end; fix the cause — restarting it again will not.";
    type Config = RespawnStormCfg;
    fn new(cfg: &DetectConfig) -> Self {
        RespawnStorm::new(cfg)
    }
}

detector!(RespawnStorm, |s, i, _c| RespawnStorm::on_event(s, i),
    tick: |s, now, v| RespawnStorm::on_tick(s, now, v), deadline: |s| RespawnStorm::next_deadline(s),
    exec_wakes: wakes, wants: [ProcessStarted, Exec, Exited]);

/// How a crash loop's restarts are paced.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Pace {
    AtOnce,
    Backoff { first_ns: u64, last_ns: u64 },
    Every { median_ns: u64 },
}

/// Who restarts a crash loop.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Restarter {
    /// A runtime's restart policy (`always`, `on-failure`, …) when known:
    /// Docker's or Podman's (`runtime` as people write it).
    Policy {
        runtime: &'static str,
        policy: Option<String>,
    },
    /// The kubelet, through the runtime named.
    Kubernetes { runtime: &'static str },
    /// Another container runtime.
    Runtime { runtime: &'static str },
    /// A known supervisor (`systemd`, `supervisord`, `runit (runsv)`, `s6`),
    /// its processes named, and for systemd the unit.
    Supervisor {
        name: &'static str,
        procs: String,
        unit: Option<String>,
    },
    /// Processes that are no known supervisor.
    Processes(String),
}

impl Restarter {
    pub(crate) fn is_systemd(&self) -> bool {
        matches!(
            self,
            Restarter::Supervisor {
                name: "systemd",
                ..
            }
        )
    }
}

impl fmt::Display for Restarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Restarter::Policy {
                runtime,
                policy: Some(p),
            } => write!(f, "{runtime}'s restart policy ({p})"),
            Restarter::Policy {
                runtime,
                policy: None,
            } => write!(f, "{runtime}'s restart policy"),
            Restarter::Kubernetes { runtime } => {
                write!(
                    f,
                    "Kubernetes' CrashLoopBackOff (kubelet, through {runtime})"
                )
            }
            Restarter::Runtime { runtime } => write!(f, "its container runtime ({runtime})"),
            Restarter::Supervisor {
                name: "systemd",
                unit: Some(u),
                ..
            } => write!(f, "systemd (unit {u})"),
            Restarter::Supervisor { name, procs, .. } => write!(f, "{name} ({procs})"),
            Restarter::Processes(procs) => write!(f, "{procs}"),
        }
    }
}

impl fmt::Display for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pace::AtOnce => write!(f, "at once"),
            Pace::Backoff { first_ns, last_ns } => {
                write!(
                    f,
                    "with a growing backoff ({} → {})",
                    dur(*first_ns),
                    dur(*last_ns)
                )
            }
            Pace::Every { median_ns } => write!(f, "every ~{}", dur(*median_ns)),
        }
    }
}

/// A crash loop's facts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CrashLoop {
    /// ``container web (image x) (`python3 app.py`)`` or `` `python3 app.py` ``.
    pub what: String,
    /// Restarts (the open sentence) or crashes (the "down" sentence).
    pub count: u64,
    pub span_ns: u64,
    pub pace: Option<Pace>,
    pub by: Option<Restarter>,
    pub last_pid: u32,
    /// The last instance's end (`exit code 1`, `SIGSEGV (fault)`, `out of memory`).
    pub last_end: String,
    pub last_life_ns: u64,
    /// Not restarted after its last crash.
    pub down: bool,
    /// A backoff's next delay.
    pub next_restart_ns: Option<u64>,
}

impl fmt::Display for CrashLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self;
        let pace = l.pace.as_ref().map(|p| format!(" {p}")).unwrap_or_default();
        let by = l.by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default();
        if l.down {
            write!(
                f,
                "{} is down: it crashed {} times in {}, restarted{pace}{by}, and was not restarted after its last crash (pid {} ended with {} after {}){}",
                l.what,
                l.count,
                dur(l.span_ns),
                l.last_pid,
                l.last_end,
                dur(l.last_life_ns),
                if l.by.as_ref().is_some_and(Restarter::is_systemd) { "; systemd gives up after StartLimitBurst starts (see `systemctl status`, reset with `systemctl reset-failed`)" } else { "" },
            )?;
        } else {
            write!(
                f,
                "{} keeps crashing: restarted {} times in {}{pace}{by}; last instance pid {} ended with {} after {}",
                l.what,
                l.count,
                dur(l.span_ns),
                l.last_pid,
                l.last_end,
                dur(l.last_life_ns)
            )?;
        }
        if let Some(next) = l.next_restart_ns {
            write!(f, "; the next restart is due ~{} after the next crash", dur(next))?;
        }
        Ok(())
    }
}

/// What a `respawn_storm` finding says: the loop in words, and its facts.
#[derive(Serialize)]
struct Looping {
    #[serde(skip)]
    words: CrashLoop,
    /// A backoff's next delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_restart_delay_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<LoopContainer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restarter: Option<RestarterFacts>,
    restarts: u64,
    /// `restarts`, under its former name for consumers of earlier versions.
    restarts_in_window: u64,
    /// `immediate`, `backoff`, `steady` or `unknown`.
    cadence: &'static str,
    gave_up: bool,
    /// Most frequent first.
    causes: Vec<CauseCount>,
    /// The latest ten cycles, newest first.
    recent: Vec<Recent>,
}

impl fmt::Display for Looping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.words.fmt(f)
    }
}

#[derive(Serialize)]
struct LoopContainer {
    id: String,
    name: Option<String>,
    image: Option<String>,
}

/// Who restarts the loop, for programs: a runtime and its policy, a known
/// supervisor, or the restarting process.
#[derive(Serialize)]
#[serde(untagged)]
enum RestarterFacts {
    Runtime {
        runtime: &'static str,
        restart_policy: Option<String>,
    },
    Supervisor {
        supervisor: &'static str,
        pid: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    Process {
        pid: u32,
    },
}

#[derive(Serialize)]
struct CauseCount {
    cause: String,
    count: usize,
}

/// One crash → restart cycle.
#[derive(Serialize)]
struct Recent {
    pid: u32,
    end: String,
    cause: &'static str,
    lifetime_ms: f64,
    restart_delay_ms: f64,
    restarted_by: Option<u32>,
}

/// Cycles of one loop kept for the finding's facts.
const KEPT_CYCLES: usize = 64;
/// Restarts closer than this to their crash are "at once".
const AT_ONCE_NS: u64 = 50_000_000;

#[derive(Clone)]
struct Crash {
    at: u64,
    proc: Proc,
    cause: Cause,
    lifetime_ns: u64,
}

#[derive(Clone)]
struct Cycle {
    crash: Crash,
    restarter: Option<Proc>,
    /// Crash → restart.
    gap_ns: u64,
}

#[derive(Default)]
struct Loop {
    /// Crashes not yet followed by a restart (several instances may crash together).
    pending: VecDeque<Crash>,
    /// The loop's cycles, oldest first (the last [`KEPT_CYCLES`]).
    cycles: VecDeque<Cycle>,
    /// Cycles in this loop, including those no longer kept.
    count: u64,
    first_ns: u64,
    /// The latest restarted instance and its start.
    live: Option<(ProcKey, u64)>,
    /// Its restarter stopped restarting it after the last crash.
    gave_up: bool,
    /// Its name as an exec gives it: its execs (restarts) are wanted at
    /// once while the loop lasts.
    comm: Comm,
}

impl Loop {
    fn last_gap(&self) -> Option<u64> {
        self.cycles.back().map(|c| c.gap_ns)
    }
}

pub struct RespawnStorm {
    pub incidents: Incidents<u64>,
    loops: HashMap<u64, Loop>,
    cfg: DetectConfig,
    max_gap_ns: u64,
    short_ns: u64,
    within_ns: u64,
    threshold: u64,
    gave_up_after: u64,
    pub overflow: u64,
    /// (when, loop) for every loop with a deadline: a restarted instance
    /// that lives `short_life_s`, or a restart overdue. Entries that moved
    /// on stay until due (waking for one only finds nothing to do); the set
    /// is rebuilt when they outnumber the loops.
    deadlines: BTreeSet<(u64, u64)>,
    wakes: ExecWakes,
}

/// A container runtime's per-container process (containerd's shim, conmon),
/// or the OCI runtime that starts the container's first process (runc, crun:
/// its parent until the runtime exits and the shim adopts it): new at every
/// start.
pub(crate) fn is_runtime_shim(p: &Proc) -> bool {
    const OCI: &[&str] = &["runc", "crun", "youki", "runsc"];
    let base = p
        .exe
        .as_deref()
        .and_then(|e| e.rsplit('/').next())
        .unwrap_or("");
    p.comm.starts_with("containerd-shim")
        || base.starts_with("containerd-shim")
        || &*p.comm == "conmon"
        || base == "conmon"
        || OCI.contains(&&*p.comm)
        || OCI.contains(&base)
}

/// How a loop's restarts are paced, from its crash → restart delays.
fn cadence(gaps: &[u64]) -> (Option<Pace>, &'static str) {
    let Some(&last) = gaps.last() else {
        return (None, "unknown");
    };
    if gaps.iter().all(|&g| g < AT_ONCE_NS) {
        return (Some(Pace::AtOnce), "immediate");
    }
    // A backoff: delays that never shrink (much) and at least double overall
    // (a runtime's fixed start-up time is added to each, so the ratio of two
    // consecutive delays is below 2 even when the backoff doubles).
    let first = gaps
        .iter()
        .copied()
        .find(|&g| g >= AT_ONCE_NS / 2)
        .unwrap_or(last);
    let steady_or_growing = gaps.windows(2).all(|w| w[1] * 10 >= w[0] * 9);
    if gaps.len() >= 3 && steady_or_growing && last >= first * 2 {
        return (
            Some(Pace::Backoff {
                first_ns: first,
                last_ns: last,
            }),
            "backoff",
        );
    }
    let mut sorted = gaps.to_vec();
    sorted.sort_unstable();
    (
        Some(Pace::Every {
            median_ns: sorted[sorted.len() / 2],
        }),
        "steady",
    )
}

/// The restarter and its facts: a container runtime's policy, a known
/// supervisor, or the restarting processes.
fn restarter(
    container: Option<&ContainerInfo>,
    restarters: &[&Proc],
) -> (Option<Restarter>, Option<RestarterFacts>) {
    let by_runtime = container.is_some()
        && restarters.iter().any(|r| is_runtime_shim(r))
        // (pid 1 appears where an instance was orphaned before the runtime's
        // per-container process adopted it: it restarts nothing.)
        && restarters
            .iter()
            .all(|r| is_runtime_shim(r) || r.key.tgid == 1);
    if let (true, Some(c)) = (by_runtime, container) {
        let who = match c.runtime {
            rt @ ("docker" | "podman") if c.pod_name.is_none() => Restarter::Policy {
                runtime: if rt == "docker" { "Docker" } else { "Podman" },
                policy: c.restart_policy.as_deref().map(str::to_owned),
            },
            rt if c.pod_name.is_some() => Restarter::Kubernetes { runtime: rt },
            rt => Restarter::Runtime { runtime: rt },
        };
        return (
            Some(who),
            Some(RestarterFacts::Runtime {
                runtime: c.runtime,
                restart_policy: c.restart_policy.as_deref().map(str::to_owned),
            }),
        );
    }
    let Some(first) = restarters.first() else {
        return (None, None);
    };
    let base = |p: &Proc| {
        p.exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .map(str::to_owned)
            .unwrap_or_else(|| p.comm.to_string())
    };
    let supervisor = match (first.key.tgid, &*first.comm, base(first).as_str()) {
        (_, "systemd", _) | (1, _, "systemd") => Some("systemd"),
        (_, "supervisord", _) | (_, _, "supervisord") => Some("supervisord"),
        (_, "runsv", _) => Some("runit (runsv)"),
        (_, "s6-supervise", _) => Some("s6"),
        _ => None,
    };
    let procs = restarters
        .iter()
        .take(3)
        .map(|r| who(r))
        .collect::<Vec<_>>()
        .join(", ");
    match supervisor {
        Some(name) => (
            Some(Restarter::Supervisor {
                name,
                procs,
                unit: None,
            }),
            Some(RestarterFacts::Supervisor {
                supervisor: name,
                pid: first.key.tgid,
                unit: None,
            }),
        ),
        None => (
            Some(Restarter::Processes(procs)),
            Some(RestarterFacts::Process {
                pid: first.key.tgid,
            }),
        ),
    }
}

impl RespawnStorm {
    pub fn new(cfg: &DetectConfig) -> RespawnStorm {
        let c = &cfg.respawn_storm;
        RespawnStorm {
            incidents: Incidents::new(
                Kind::RespawnStorm,
                cfg.update_interval_ns(),
                cfg.max_incidents,
            ),
            loops: HashMap::new(),
            cfg: cfg.clone(),
            max_gap_ns: ns(c.window_s),
            short_ns: ns(c.short_life_s),
            within_ns: ns(c.restart_within_s),
            threshold: c.restarts as u64,
            gave_up_after: c.gave_up_after as u64,
            overflow: 0,
            deadlines: BTreeSet::new(),
            wakes: ExecWakes::new(),
        }
    }

    /// When `lp` is next due: its restarted instance has lived long enough,
    /// or its last crash's restart is overdue.
    fn loop_deadline(&self, lp: &Loop) -> Option<u64> {
        let healthy = lp
            .live
            .filter(|_| lp.pending.is_empty())
            .map(|l| l.1 + self.short_ns);
        let expired = lp
            .pending
            .back()
            .filter(|_| !lp.gave_up)
            .map(|c| c.at + self.allowed_gap(lp));
        [healthy, expired].into_iter().flatten().min()
    }

    /// Note loop `k`'s deadline after it changed (O(log n)).
    fn schedule(&mut self, k: u64) {
        if let Some(t) = self.loops.get(&k).and_then(|lp| self.loop_deadline(lp)) {
            self.deadlines.insert((t, k));
        }
        if self.deadlines.len() > 4 * self.loops.len() + 1024 {
            self.reschedule_all();
        }
    }

    /// Every loop's deadline anew (after a reload changed the windows, or
    /// when stale entries pile up).
    fn reschedule_all(&mut self) {
        self.deadlines = self
            .loops
            .iter()
            .filter_map(|(k, lp)| self.loop_deadline(lp).map(|t| (t, *k)))
            .collect();
    }

    /// Settings from a reloaded configuration: what comes next uses them;
    /// state and open incidents stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.incidents
            .set_limits(cfg.update_interval_ns(), cfg.max_incidents);
        let c = &cfg.respawn_storm;
        self.max_gap_ns = ns(c.window_s);
        self.short_ns = ns(c.short_life_s);
        self.within_ns = ns(c.restart_within_s);
        self.threshold = c.restarts as u64;
        self.gave_up_after = c.gave_up_after as u64;
        self.cfg = cfg.clone();
        self.reschedule_all();
    }

    /// How long after a crash its restart may come and still continue the loop.
    ///
    /// 2.5 × the last delay covers a doubling backoff with jitter; "3 s
    /// more" covers a linear one acted on by a once-a-second loop: the
    /// delay grows by 1 s and the loop's turn may come up to 1 s later
    /// than the last time (supervisord: 1.0 s, then 2.0–3.0+ s).
    fn allowed_gap(&self, lp: &Loop) -> u64 {
        match lp.last_gap() {
            None => self.within_ns,
            Some(g) => (g.saturating_mul(5) / 2)
                .max(g + 3_000_000_000)
                .min(self.max_gap_ns.max(self.within_ns)),
        }
    }

    /// The finding's words and facts for a loop (`gave_up`: not restarted since the last crash).
    fn describe(
        &self,
        p: &Proc,
        lp: &Loop,
        now: u64,
        view: &dyn ContainerView,
    ) -> (String, Looping, Vec<Involved>) {
        let program = p
            .command_line()
            .unwrap_or_else(|| p.exe.as_deref().unwrap_or(&p.comm).to_owned());
        let program: String = program
            .chars()
            .filter(|c| !c.is_control())
            .take(80)
            .collect();
        let container = p.container_id.as_deref().and_then(|id| view.by_id(id));
        // A kubelet's restart is a new container, which its runtime may not
        // have described yet: an earlier instance's container of the loop
        // (the same pod) says which pod it is.
        let container = match container {
            Some(c) if c.pod_name.is_none() => lp
                .cycles
                .iter()
                .rev()
                .filter_map(|cy| cy.crash.proc.container_id.as_deref())
                .filter_map(|id| view.by_id(id))
                .find(|c| c.pod_name.is_some())
                .or(Some(c)),
            other => other,
        };
        let mut restarters: Vec<&Proc> = Vec::new();
        for c in lp.cycles.iter().rev() {
            if let Some(r) = &c.restarter {
                if !restarters.iter().any(|x| x.key == r.key) {
                    restarters.push(r);
                }
            }
        }
        let (mut by, mut by_facts) = restarter(container.as_deref(), &restarters);
        // systemd restarts a unit: name it (its cgroup's path says which).
        if let Some(RestarterFacts::Supervisor {
            supervisor: "systemd",
            unit: said,
            ..
        }) = &mut by_facts
        {
            if let Some(unit) = view.unit_of(p.cgroup_id) {
                if let Some(Restarter::Supervisor { unit: u, .. }) = by.as_mut() {
                    *u = Some(unit.to_string());
                }
                *said = Some(unit.to_string());
            }
        }
        let by_runtime = matches!(by_facts, Some(RestarterFacts::Runtime { .. }));
        let gaps: Vec<u64> = lp.cycles.iter().map(|c| c.gap_ns).collect();
        let (pace, pace_kind) = cadence(&gaps);
        let last = lp
            .pending
            .back()
            .or(lp.cycles.back().map(|c| &c.crash))
            .expect("a loop has a crash");
        // Causes, most frequent first.
        let mut causes: Vec<(String, usize)> = Vec::new();
        for c in lp.cycles.iter().map(|c| &c.crash).chain(lp.pending.iter()) {
            let d = c.cause.describe();
            match causes.iter_mut().find(|(x, _)| *x == d) {
                Some((_, n)) => *n += 1,
                None => causes.push((d, 1)),
            }
        }
        causes.sort_by_key(|c| std::cmp::Reverse(c.1));
        let what = match &container {
            Some(c) => format!("{} (`{program}`)", c.describe()),
            None => format!("`{program}`"),
        };
        let mut words = CrashLoop {
            what,
            count: if lp.gave_up {
                lp.count + lp.pending.len() as u64
            } else {
                lp.count
            },
            span_ns: now.saturating_sub(lp.first_ns),
            pace,
            by,
            last_pid: last.proc.key.tgid,
            last_end: last.cause.describe(),
            last_life_ns: last.lifetime_ns,
            down: lp.gave_up,
            next_restart_ns: None,
        };
        let mut next_restart_delay_s = None;
        // The next restart of a backoff: twice the last delay, within the cap.
        if pace_kind == "backoff" && !lp.gave_up {
            if let Some(g) = lp.last_gap() {
                let cap = match (by_runtime, container.as_ref().map(|c| c.pod_name.is_some())) {
                    (true, Some(true)) => 300_000_000_000,
                    (true, _) => 60_000_000_000,
                    _ => self.max_gap_ns,
                };
                let next = (g * 2).min(cap);
                words.next_restart_ns = Some(next);
                next_restart_delay_s = Some(next as f64 / 1e9);
            }
        }
        let mut processes = vec![Involved {
            role: "instance",
            proc: p.clone(),
            address: None,
            since_ns: lp.live.map(|l| l.1),
        }];
        for r in restarters.iter().take(if by_runtime { 1 } else { 8 }) {
            processes.push(Involved {
                role: "restarter",
                proc: (*r).clone(),
                address: None,
                since_ns: None,
            });
        }
        let facts = Looping {
            words,
            next_restart_delay_s,
            container: container.as_ref().map(|c| LoopContainer {
                id: c.id.to_string(),
                name: c.name.as_deref().map(str::to_owned),
                image: c.image.as_deref().map(str::to_owned),
            }),
            restarter: by_facts,
            restarts: lp.count,
            restarts_in_window: lp.count,
            cadence: pace_kind,
            gave_up: lp.gave_up,
            causes: causes
                .into_iter()
                .map(|(cause, count)| CauseCount { cause, count })
                .collect(),
            recent: lp
                .cycles
                .iter()
                .rev()
                .take(10)
                .map(|c| Recent {
                    pid: c.crash.proc.key.tgid,
                    end: c.crash.cause.describe(),
                    cause: c.crash.cause.kind(),
                    lifetime_ms: c.crash.lifetime_ns as f64 / 1e6,
                    restart_delay_ms: c.gap_ns as f64 / 1e6,
                    restarted_by: c.restarter.as_ref().map(|x| x.key.tgid),
                })
                .collect(),
        };
        (program, facts, processes)
    }

    /// The loop of `program` is over (or never was one).
    fn forget(&mut self, program: u64) {
        if let Some(lp) = self.loops.remove(&program) {
            self.wakes.unwant(lp.comm);
        }
    }

    fn crashed(&mut self, p: &Proc, cause: Cause, ts: u64) {
        if !self.loops.contains_key(&p.program) && self.loops.len() >= self.cfg.max_tracked {
            self.overflow += 1;
            return;
        }
        if !self.loops.contains_key(&p.program) {
            let comm = comm_key(&p.comm);
            self.wakes.want(comm);
            self.loops.insert(
                p.program,
                Loop {
                    comm,
                    ..Loop::default()
                },
            );
        }
        let lp = self.loops.entry(p.program).or_default();
        if lp.cycles.is_empty() && lp.pending.is_empty() {
            lp.first_ns = ts;
        }
        if lp.live.is_some_and(|l| l.0 == p.key) {
            lp.live = None;
        }
        lp.pending.push_back(Crash {
            at: ts,
            proc: p.clone(),
            lifetime_ns: ts.saturating_sub(p.key.start_ns),
            cause,
        });
        while lp.pending.len() > 64 {
            lp.pending.pop_front();
        }
        self.schedule(p.program);
    }

    /// A restarted instance ended without crashing (stopped, or lived long): the loop is over.
    /// A clean end of the live instance of a loop's program ends the loop
    /// (`why` is written only then).
    fn ended_well(&mut self, p: &Proc, why: impl std::fmt::Display, ts: u64) -> Option<Finding> {
        let lp = self.loops.get(&p.program)?;
        if lp.live.is_none_or(|l| l.0 != p.key) {
            return None;
        }
        self.forget(p.program);
        self.incidents.resolve(&p.program, ts, why)
    }

    fn started(&mut self, p: &Proc, parent: Option<&Proc>, ts: u64, i: &Input) -> Option<Finding> {
        let allowed = self.allowed_gap(self.loops.get(&p.program)?);
        let lp = self.loops.get_mut(&p.program)?;
        // Started again after its restarter gave up: someone brought it back.
        if lp.gave_up {
            self.forget(p.program);
            return self.incidents.resolve(
                &p.program,
                ts,
                format_args!(
                    "started again (pid {}) after its restarter had given up",
                    p.key.tgid
                ),
            );
        }
        // The most recent crash this start can follow.
        while lp
            .pending
            .front()
            .is_some_and(|c| ts.saturating_sub(c.at) > allowed)
        {
            lp.pending.pop_front();
        }
        let crash = lp.pending.pop_back()?;
        let gap_ns = ts.saturating_sub(crash.at);
        lp.cycles.push_back(Cycle {
            crash,
            restarter: parent.cloned(),
            gap_ns,
        });
        while lp.cycles.len() > KEPT_CYCLES {
            lp.cycles.pop_front();
        }
        lp.count += 1;
        lp.live = Some((p.key, ts));
        self.schedule(p.program);
        let lp = self.loops.get(&p.program).expect("present");
        if lp.count < self.threshold && !self.incidents.is_open(&p.program) {
            return None;
        }
        let lp = self.loops.get(&p.program).expect("present");
        let (program, facts, processes) = self.describe(p, lp, ts, i.containers);
        self.incidents
            .raise(p.program, &program, ts, 1, &facts, processes)
    }

    pub fn on_event(&mut self, i: &Input) -> Vec<Finding> {
        let ts = i.ev.header.ts_ns;
        match i.event {
            DomainEvent::Exited { .. } => {
                let Some(p) = i.subject.filter(|p| p.program != 0) else {
                    return Vec::new();
                };
                let Some((_, status)) = p.exited else {
                    return Vec::new();
                };
                if self.cfg.allowed_program(p) {
                    return Vec::new();
                }
                let of;
                let cause = match i.cause {
                    Some(c) => c,
                    None => {
                        of = Cause::of(status, p.signalled.as_ref(), ts);
                        &of
                    }
                };
                let lifetime = ts.saturating_sub(p.key.start_ns);
                let end = judge(p, cause, &self.cfg.respawn_storm);
                match end {
                    End::Crash if lifetime <= self.short_ns => {
                        self.crashed(p, cause.clone(), ts);
                        Vec::new()
                    }
                    End::Stop => {
                        let why = Lazy(|f: &mut std::fmt::Formatter<'_>| {
                            write!(
                                f,
                                "pid {} was stopped ({}): the crash loop is over",
                                p.key.tgid,
                                cause.describe()
                            )
                        });
                        self.ended_well(p, why, ts).into_iter().collect()
                    }
                    _ => {
                        let why = Lazy(|f: &mut std::fmt::Formatter<'_>| {
                            write!(
                                f,
                                "pid {} ended with {} after {}: the crash loop is over",
                                p.key.tgid,
                                cause.describe(),
                                dur(lifetime)
                            )
                        });
                        self.ended_well(p, why, ts).into_iter().collect()
                    }
                }
            }
            DomainEvent::Exec => match i.subject {
                Some(p) => self.started(p, i.parent, ts, i).into_iter().collect(),
                None => Vec::new(),
            },
            DomainEvent::ProcessStarted { .. } => match i.subject {
                // A worker re-forked by its master: the same program without exec.
                Some(child) => self.started(child, i.parent, ts, i).into_iter().collect(),
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    pub fn on_tick(&mut self, now: u64, view: &dyn ContainerView) -> Vec<Finding> {
        let mut out = Vec::new();
        // The loops due (O(due · log n), not a pass over every loop).
        let mut keys: Vec<u64> = Vec::new();
        while let Some(&(t, k)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for k in keys {
            let Some(lp) = self.loops.get(&k) else {
                continue;
            };
            // (An entry that moved on: its loop's deadline is later now.)
            if self.loop_deadline(lp).is_some_and(|t| t > now) {
                self.schedule(k);
                continue;
            }
            let allowed = self.allowed_gap(&self.loops[&k]);
            let lp = &self.loops[&k];
            // A restarted instance that lived: healthy again.
            if let Some((key, start)) = lp.live {
                if lp.pending.is_empty() && now >= start + self.short_ns {
                    self.forget(k);
                    out.extend(
                        self.incidents.resolve(
                            &k,
                            now,
                            format_args!(
                                "pid {} has run for {} since its restart: the crash loop is over",
                                key.tgid,
                                dur(self.short_ns)
                            ),
                        ),
                    );
                    continue;
                }
            }
            let Some(last) = lp.pending.back() else {
                continue;
            };
            if lp.gave_up || now < last.at + allowed {
                continue;
            }
            // Not restarted in time: given up, or never a loop (crashes
            // without restarts, or too few to say).
            let crashes = lp.count + lp.pending.len() as u64;
            if lp.count == 0 || crashes < self.gave_up_after.max(2) {
                self.forget(k);
                continue;
            }
            let lp = self.loops.get_mut(&k).expect("present");
            lp.gave_up = true;
            let p = lp.pending.back().expect("checked").proc.clone();
            let lp = &self.loops[&k];
            let (program, facts, processes) = self.describe(&p, lp, now, view);
            // Short of the threshold, only a known supervisor's giving up is
            // said (a script that tries three times is not a service down).
            let supervised = matches!(
                facts.restarter,
                Some(RestarterFacts::Supervisor { .. } | RestarterFacts::Runtime { .. })
            );
            if !self.incidents.is_open(&k) && lp.count < self.threshold && !supervised {
                self.forget(k);
                continue;
            }
            if self.incidents.is_open(&k) {
                out.extend(self.incidents.restate(&k, &facts, processes, now));
            } else {
                out.extend(
                    self.incidents
                        .raise(k, &program, now, 1, &facts, processes),
                );
            }
        }
        out
    }

    pub fn next_deadline(&self) -> Option<u64> {
        // (Possibly one that moved on: waking for it only finds nothing to do.)
        self.deadlines.first().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod words {
    use super::*;

    #[test]
    fn a_crash_loop_states_pace_restarter_end_and_next_restart() {
        let mut l = CrashLoop {
            what: "`app`".into(),
            count: 5,
            span_ns: 3_100_000_000,
            pace: Some(Pace::Backoff {
                first_ns: 100_000_000,
                last_ns: 1_600_000_000,
            }),
            by: Some(Restarter::Policy {
                runtime: "Docker",
                policy: Some("always".into()),
            }),
            last_pid: 42,
            last_end: "exit code 1".into(),
            last_life_ns: 20_000_000,
            down: false,
            next_restart_ns: Some(3_200_000_000),
        };
        assert_eq!(
            l.to_string(),
            "`app` keeps crashing: restarted 5 times in 3.1 s with a growing backoff (100 ms → 1.6 s) by Docker's restart policy (always); last instance pid 42 ended with exit code 1 after 20 ms; the next restart is due ~3.2 s after the next crash"
        );
        l.down = true;
        l.next_restart_ns = None;
        l.pace = Some(Pace::AtOnce);
        l.by = Some(Restarter::Supervisor {
            name: "systemd",
            procs: "pid 1 (systemd)".into(),
            unit: Some("app.service".into()),
        });
        let s = l.to_string();
        assert!(s.starts_with("`app` is down: it crashed 5 times in 3.1 s, restarted at once by systemd (unit app.service)"), "{s}");
        assert!(s.ends_with("reset with `systemctl reset-failed`)"), "{s}");
    }
}
