//! Every finding's summary sentence, written in one place from the facts
//! the detectors found. A detector decides *that* something holds and
//! gathers *what* (names, addresses, counts, times) into a [`Says`]; how it
//! reads is decided here, so the findings speak with one voice and a change
//! of wording is one edit. Process names (`pid 4121 (python3 app.py) in
//! container web`) come pre-rendered: naming a process is the world's job
//! ([`super::who`], [`super::who_in`], [`super::port_shadowed::holder_name`]).
use std::fmt;

use super::dur;

/// A holder of a port, as a port finding names it.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldBy {
    pub name: String,
    /// `0.0.0.0:80`.
    pub addr: String,
    /// Wall-clock time it bound (`06:15:43`), `None` when before watcher started.
    pub since: Option<String>,
}

/// Who receives a shadowed port's connections.
#[derive(Clone, Debug, PartialEq)]
pub enum Routes {
    /// Both bound the same address (SO_REUSEPORT): connections are split.
    Split { a: String, b: String, addr: String },
    /// Wildcards of two families: each family's connections go to one.
    ByFamily {
        fa: &'static str,
        a: String,
        aaddr: String,
        fb: &'static str,
        b: String,
        baddr: String,
    },
    /// A specific address wins over the wildcard for its address.
    Specific {
        spec_addr: String,
        spec: String,
        family: &'static str,
        port: u16,
        wild: String,
        wild_addr: String,
    },
}

/// How a crash loop's restarts are paced.
#[derive(Clone, Debug, PartialEq)]
pub enum Pace {
    AtOnce,
    Backoff { first_ns: u64, last_ns: u64 },
    Every { median_ns: u64 },
}

/// Who restarts a crash loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Restarter {
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
    pub fn is_systemd(&self) -> bool {
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

/// What could not get a local port (`ports_exhausted`).
#[derive(Clone, Debug, PartialEq)]
pub enum PortNeed {
    /// A bind to port 0 of this address.
    BindAny {
        addr: String,
    },
    ConnectTo {
        dest: String,
    },
}

impl fmt::Display for PortNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortNeed::BindAny { addr } => write!(f, "a bind to {addr} (any free port)"),
            PortNeed::ConnectTo { dest } => write!(f, "a connect to {dest}"),
        }
    }
}

/// How a local port was had again (`ports_exhausted`'s resolution).
#[derive(Clone, Debug, PartialEq)]
pub enum PortGot {
    BoundFree,
    ConnectTo { dest: String },
}

/// A crash loop's facts.
#[derive(Clone, Debug, PartialEq)]
pub struct CrashLoop {
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

/// A network namespace's use of local ports, as `ports_exhausted` states it.
#[derive(Clone, Debug, PartialEq)]
pub struct PortUse {
    pub range: Option<(u16, u16)>,
    pub in_use: usize,
    pub sockets: usize,
    pub time_wait: usize,
    /// `(pid, command, sockets)`, most first.
    pub top_processes: Vec<(u32, String, usize)>,
    /// `(destination, sockets, in TIME_WAIT)`, most first.
    pub top_destinations: Vec<(String, usize, usize)>,
}

/// What a finding says (open, update or resolved).
#[derive(Clone, Debug, PartialEq)]
pub enum Says {
    // port_conflict
    ConflictHeld {
        who: String,
        tcp: bool,
        addr: String,
        holders: Vec<HeldBy>,
    },
    ConflictLingering {
        who: String,
        tcp: bool,
        addr: String,
        connections: usize,
    },
    ConflictNoHolder {
        who: String,
        tcp: bool,
        addr: String,
    },
    ConflictProbing {
        who: String,
        tcp: bool,
        addr: String,
        tried: Vec<u16>,
    },
    ConflictProbed {
        who: String,
        addr: String,
        tried: Vec<u16>,
        got: u16,
    },
    ConflictBound {
        who: String,
        addr: String,
    },
    ConflictGaveUp {
        port: u16,
        grace_ns: u64,
    },
    // port_shadowed
    Shadowed {
        port: u16,
        tcp: bool,
        routes: Routes,
    },
    ShadowReleased {
        who: String,
        port: u16,
    },
    ShadowGoneInKernel {
        port: u16,
    },
    // address_unavailable
    AddressNotLocal {
        who: String,
        addr: String,
        ip: String,
    },
    AddressAvailable {
        who: String,
        addr: String,
        ip: String,
    },
    // zombie_accumulation
    Accumulating {
        parent: String,
        n: usize,
        threshold: usize,
    },
    AccumulationBelow {
        parent_pid: u32,
        n: usize,
        why: &'static str,
        threshold: usize,
    },
    AccumulationNamespaceEnded {
        parent_pid: u32,
        gone: usize,
        left: usize,
    },
    /// A parent exited (zombie, zombie_accumulation).
    ParentExited {
        who: String,
        why: &'static str,
    },
    // zombie
    Overdue {
        parent: String,
        n: usize,
        max_age_ns: u64,
        oldest_age_ns: Option<u64>,
        pids: Vec<u32>,
    },
    OverdueGone {
        parent_pid: u32,
        why: &'static str,
    },
    // duplicate_instances
    Duplicates {
        n: usize,
        program: String,
        limit: usize,
        pids: Vec<u32>,
        parents: Vec<u32>,
    },
    DuplicatesWithin {
        n: usize,
        limit: usize,
    },
    // fork_storm
    ForkRate {
        who: String,
        rate: u32,
        secs: u64,
    },
    ForkBomb {
        who: String,
        growth: i64,
        window_s: f64,
        limit: i64,
    },
    ForkerExited {
        who: String,
    },
    ForkCalm {
        pid: u32,
    },
    // respawn_storm
    CrashLooping(CrashLoop),
    LoopStartedAgain {
        pid: u32,
    },
    LoopStopped {
        pid: u32,
        end: String,
    },
    LoopEndedWell {
        pid: u32,
        end: String,
        life_ns: u64,
    },
    LoopLived {
        pid: u32,
        for_ns: u64,
    },
    // connect_failures
    ConnectsFailing {
        n: usize,
        dest: String,
        window_s: u64,
        error: String,
        clients: usize,
        named: Vec<String>,
        note: Option<String>,
    },
    Reachable {
        who: String,
        dest: String,
    },
    // ports_exhausted
    NoFreePort {
        netns: u32,
        what: PortNeed,
        who: String,
        usage: Option<PortUse>,
    },
    PortsFree {
        who: String,
        how: PortGot,
        netns: u32,
    },
    /// Any detector: a reload disabled it, and its incidents end.
    DetectorDisabled {
        kind: &'static str,
    },
}

fn transport(tcp: bool) -> &'static str {
    if tcp {
        "tcp"
    } else {
        "udp"
    }
}

fn list<T: fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

impl fmt::Display for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Routes::Split { a, b, addr } => {
                write!(f, "{a} and {b} both receive {addr} (SO_REUSEPORT): connections are split between them")
            }
            Routes::ByFamily { fa, a, aaddr, fb, b, baddr } => {
                write!(f, "{fa} connections to port {} go to {a} ({aaddr}), {fb} ones to {b} ({baddr})", port_of(aaddr))
            }
            Routes::Specific { spec_addr, spec, family, port, wild, wild_addr } => write!(
                f,
                "connections to {spec_addr} go to {spec}, all other {family} connections to port {port} to {wild} on {wild_addr}"
            ),
        }
    }
}

/// The port of `1.2.3.4:80` / `[::1]:80`.
fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or("")
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

impl fmt::Display for Says {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Says::ConflictHeld { who, tcp, addr, holders } => {
                let held: Vec<String> = holders
                    .iter()
                    .map(|h| match &h.since {
                        Some(t) => format!("{} on {} since {t}", h.name, h.addr),
                        None => format!("{} on {} since before watcher started", h.name, h.addr),
                    })
                    .collect();
                write!(f, "{who} cannot bind {} {addr}: held by {}", transport(*tcp), held.join("; "))
            }
            Says::ConflictLingering { who, tcp, addr, connections } => write!(
                f,
                "{who} cannot bind {} {addr}: no process listens there, but {connections} connection(s) still use the port (e.g. TIME_WAIT); set SO_REUSEADDR before bind",
                transport(*tcp)
            ),
            Says::ConflictNoHolder { who, tcp, addr } => {
                write!(f, "{who} cannot bind {} {addr}: the address is in use (no current holder found)", transport(*tcp))
            }
            Says::ConflictProbing { who, tcp, addr, tried } => write!(
                f,
                "{who} cannot bind {} {addr}: ports {} are in use (it is trying one port after another)",
                transport(*tcp),
                list(tried, ", ")
            ),
            Says::ConflictProbed { who, addr, tried, got } => write!(
                f,
                "{who} bound {addr} after port(s) {} were in use: it probed for a free port and got {got}",
                list(tried, ", ")
            ),
            Says::ConflictBound { who, addr } => write!(f, "{who} bound {addr}: the port conflict is over"),
            Says::ConflictGaveUp { port, grace_ns } => write!(
                f,
                "the processes that could not bind port {port} exited and none retried within {}",
                dur(*grace_ns)
            ),
            Says::Shadowed { port, tcp, routes } => write!(f, "port {port} ({}) is shadowed: {routes}", transport(*tcp)),
            Says::ShadowReleased { who, port } => write!(f, "{who} released port {port}: it is no longer shadowed"),
            Says::ShadowGoneInKernel { port } => {
                write!(f, "the kernel's socket table shows port {port} no longer shadowed")
            }
            Says::AddressNotLocal { who, addr, ip } => write!(
                f,
                "{who} cannot bind {addr}: {ip} is not an address of this host (taken by or reserved for another machine, or its interface is down)"
            ),
            Says::AddressAvailable { who, addr, ip } => write!(f, "{who} bound {addr}: {ip} is available now"),
            Says::Accumulating { parent, n, threshold } => write!(
                f,
                "{parent} has {n} exited children it has not reaped (zombies, threshold {threshold}); it must wait() for them"
            ),
            Says::AccumulationBelow { parent_pid, n, why, threshold } => write!(
                f,
                "pid {parent_pid} is down to {n} unreaped children ({why}), below the threshold of {threshold}"
            ),
            Says::AccumulationNamespaceEnded { parent_pid, gone, left } => write!(
                f,
                "pid {parent_pid}'s pid namespace ended: the kernel reaped its {gone} zombie(s) ({left} left)"
            ),
            Says::ParentExited { who, why } => write!(f, "{who} exited; {why}"),
            Says::Overdue { parent, n, max_age_ns, oldest_age_ns, pids } => {
                let age = match oldest_age_ns {
                    Some(a) => format!("the oldest for {}", dur(*a)),
                    None => "since before watcher started".into(),
                };
                let shown: Vec<u32> = pids.iter().take(10).copied().collect();
                write!(
                    f,
                    "{parent} has left {n} exited child(ren) unreaped for more than {} ({age}): zombie pids {}; the parent must wait() for them",
                    dur(*max_age_ns),
                    list(&shown, ", ")
                )
            }
            Says::OverdueGone { parent_pid, why } => {
                write!(f, "every overdue zombie of pid {parent_pid} is gone (last one {why})")
            }
            Says::Duplicates { n, program, limit, pids, parents } => {
                let kind = if *limit == 1 { "a singleton, " } else { "" };
                let shown: Vec<u32> = pids.iter().take(10).copied().collect();
                let by: Vec<String> = parents.iter().take(5).map(|x| format!("pid {x}")).collect();
                write!(
                    f,
                    "{n} instances of `{program}` are running ({kind}limit {limit}): pids {}{}; started by {}",
                    list(&shown, ", "),
                    if *n > 10 { ", …" } else { "" },
                    by.join(", ")
                )
            }
            Says::DuplicatesWithin { n, limit } => write!(f, "{n} instance(s) left, within the limit of {limit}"),
            Says::ForkRate { who, rate, secs } => {
                write!(f, "{who} forks more than {rate} children per second, for {secs} s in a row")
            }
            Says::ForkBomb { who, growth, window_s, limit } => write!(
                f,
                "{who} is at the root of a fork bomb: its live descendants grew by {growth} within {window_s} s (limit {limit})"
            ),
            Says::ForkerExited { who } => write!(f, "{who} exited"),
            Says::ForkCalm { pid } => write!(f, "pid {pid} forks below the storm thresholds again"),
            Says::CrashLooping(l) => {
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
            Says::LoopStartedAgain { pid } => write!(f, "started again (pid {pid}) after its restarter had given up"),
            Says::LoopStopped { pid, end } => write!(f, "pid {pid} was stopped ({end}): the crash loop is over"),
            Says::LoopEndedWell { pid, end, life_ns } => {
                write!(f, "pid {pid} ended with {end} after {}: the crash loop is over", dur(*life_ns))
            }
            Says::LoopLived { pid, for_ns } => {
                write!(f, "pid {pid} has run for {} since its restart: the crash loop is over", dur(*for_ns))
            }
            Says::ConnectsFailing { n, dest, window_s, error, clients, named, note } => {
                write!(
                    f,
                    "{n} connects to {dest} failed within {window_s} s ({error}) from {clients} client process(es): {}",
                    named.join(", ")
                )?;
                if let Some(note) = note {
                    write!(f, "; note: {note}")?;
                }
                Ok(())
            }
            Says::Reachable { who, dest } => write!(f, "{who} connected to {dest}: it is reachable again"),
            Says::NoFreePort { netns, what, who, usage } => {
                write!(f, "no free local port in network namespace {netns}: {what} by {who} failed")?;
                let Some(u) = usage else {
                    return write!(f, "; looking up what holds its ports");
                };
                match u.range {
                    Some((lo, hi)) => {
                        let size = (hi as usize + 1).saturating_sub(lo as usize);
                        write!(
                            f,
                            "; ephemeral range {lo}–{hi} ({size} ports, net.ipv4.ip_local_port_range), {} in use by {} sockets ({} in TIME_WAIT)",
                            u.in_use, u.sockets, u.time_wait
                        )?;
                    }
                    None => write!(
                        f,
                        "; {} local ports in use by {} sockets ({} in TIME_WAIT); the ephemeral range could not be read",
                        u.in_use, u.sockets, u.time_wait
                    )?,
                }
                if u.sockets == 0 {
                    write!(f, " — sockets bound but neither listening nor connected are not listed by kernels before 6.7")?;
                }
                if !u.top_processes.is_empty() {
                    let top: Vec<String> =
                        u.top_processes.iter().take(3).map(|(pid, cmd, n)| format!("pid {pid} ({cmd}) {n}")).collect();
                    write!(f, "; top processes: {}", top.join(", "))?;
                }
                if !u.top_destinations.is_empty() {
                    let top: Vec<String> = u
                        .top_destinations
                        .iter()
                        .take(3)
                        .map(|(d, n, tw)| format!("{d} {n} ({tw} in TIME_WAIT)"))
                        .collect();
                    write!(f, "; top destinations: {}", top.join(", "))?;
                }
                Ok(())
            }
            Says::PortsFree { who, how, netns } => {
                let how = match how {
                    PortGot::BoundFree => "bound a free port".to_owned(),
                    PortGot::ConnectTo { dest } => format!("got a local port for a connect to {dest}"),
                };
                write!(f, "{who} {how}: local ports are free again in network namespace {netns}")
            }
            Says::DetectorDisabled { kind } => write!(f, "the {kind} detector was disabled by a configuration reload"),
        }
    }
}

impl From<Says> for String {
    fn from(s: Says) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_conflict_names_every_holder_and_when_it_bound() {
        let s = Says::ConflictHeld {
            who: "pid 9 (nginx)".into(),
            tcp: true,
            addr: "0.0.0.0:80".into(),
            holders: vec![
                HeldBy {
                    name: "pid 7 (apache2)".into(),
                    addr: "0.0.0.0:80".into(),
                    since: Some("06:15:43".into()),
                },
                HeldBy {
                    name: "pid 8 (old)".into(),
                    addr: "[::]:80".into(),
                    since: None,
                },
            ],
        };
        assert_eq!(
            s.to_string(),
            "pid 9 (nginx) cannot bind tcp 0.0.0.0:80: held by pid 7 (apache2) on 0.0.0.0:80 since 06:15:43; pid 8 (old) on [::]:80 since before watcher started"
        );
    }

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
            Says::CrashLooping(l.clone()).to_string(),
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
        let s = Says::CrashLooping(l).to_string();
        assert!(s.starts_with("`app` is down: it crashed 5 times in 3.1 s, restarted at once by systemd (unit app.service)"), "{s}");
        assert!(s.ends_with("reset with `systemctl reset-failed`)"), "{s}");
    }

    #[test]
    fn routes_say_who_receives_what() {
        let r = Routes::ByFamily {
            fa: "IPv4",
            a: "pid 1 (a)".into(),
            aaddr: "0.0.0.0:80".into(),
            fb: "IPv6",
            b: "pid 2 (b)".into(),
            baddr: "[::]:80".into(),
        };
        assert_eq!(r.to_string(), "IPv4 connections to port 80 go to pid 1 (a) (0.0.0.0:80), IPv6 ones to pid 2 (b) ([::]:80)");
    }
}
