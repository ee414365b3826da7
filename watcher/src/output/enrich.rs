//! Enrichment: kernel records + the process table → output records.
use crate::kernel::abi::{
    CLONE_THREAD, EINPROGRESS, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_SENT,
};
use crate::kernel::clock::Clock;
use std::net::IpAddr;

use foldhash::{HashMap, HashMapExt};

use watcher_common::{ReapSource, SockCallData, AF_INET6};

use crate::{
    kernel::decode::{ip_addr, KernelEvent, Payload},
    kernel::names::{errno_message, errno_name, signal_name, tcp_state_name, ExitStatus},
    output::record::{
        Body, Container, Endpoint, ErrorInfo, ExecInfo, ExecRecord, ExitCause, ExitInfo,
        ExitRecord, ForkInfo, ForkRecord, Image, Network, Orchestrator, Outcome, Parent, Process,
        ReapInfo, ReapRecord, Record, Resource, SocketInfo, SocketRecord, TcpInfo, TcpStateRecord,
        Thread, User, SCHEMA_VERSION,
    },
    world::containers::Containers,
    world::proctable::{Proc, ProcessTable, Touched},
};

/// Which process owns a kernel socket, learnt from its bind/connect, so that
/// TCP state changes running in softirq context (where the current task is
/// unrelated) are attributed to the right process.
pub struct SocketOwners {
    owners: HashMap<u64, Proc>,
    cap: usize,
    pub evicted: u64,
}

impl SocketOwners {
    pub fn new(cap: usize) -> SocketOwners {
        SocketOwners {
            owners: HashMap::new(),
            cap: cap.max(16),
            evicted: 0,
        }
    }
    pub fn len(&self) -> usize {
        self.owners.len()
    }
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
    fn remember(&mut self, sk: u64, p: &Proc) {
        if sk == 0 {
            return;
        }
        if !self.owners.contains_key(&sk) && self.owners.len() >= self.cap {
            if let Some(k) = self.owners.keys().next().copied() {
                self.owners.remove(&k);
                self.evicted += 1;
            }
        }
        self.owners.insert(sk, p.clone());
    }
}

/// Turns kernel events into records, keeping the process and socket tables current.
pub struct Enricher {
    pub procs: ProcessTable,
    pub sockets: SocketOwners,
    pub containers: Containers,
    pub clock: Clock,
}

/// ECS `container` and `orchestrator` objects of the container `id` (a
/// process's `container_id`), from what is known now.
pub fn container_fields(
    containers: &Containers,
    id: Option<&str>,
) -> (Option<Container>, Option<Orchestrator>) {
    let Some(id) = id else { return (None, None) };
    let info = containers.peek(id);
    let container = Container {
        id: id.to_owned(),
        name: info
            .as_ref()
            .and_then(|c| c.name.as_deref().map(str::to_owned)),
        image: info
            .as_ref()
            .and_then(|c| c.image.as_deref())
            .map(|n| Image { name: n.to_owned() }),
        runtime: info
            .as_ref()
            .map(|c| c.runtime)
            .unwrap_or("unknown")
            .to_owned(),
    };
    let orchestrator = info
        .as_ref()
        .and_then(|c| match (&c.pod_namespace, &c.pod_name) {
            (Some(ns), Some(pod)) => Some(Orchestrator {
                namespace: ns.to_string(),
                resource: Resource {
                    name: pod.to_string(),
                    kind: "pod".into(),
                },
                kind: "kubernetes".into(),
            }),
            _ => None,
        });
    (Some(container), orchestrator)
}

fn endpoint(ip: Option<IpAddr>, port: u16) -> Endpoint {
    Endpoint {
        address: ip.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
        port,
    }
}

fn network(family: u16, sock_type: u16, netns: u32) -> Network {
    Network {
        netns: (netns != 0).then_some(netns),
        transport: match sock_type {
            1 => "tcp",
            2 => "udp",
            _ => "unknown",
        }
        .into(),
        kind: if family == AF_INET6 { "ipv6" } else { "ipv4" }.into(),
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

impl Enricher {
    pub fn new(proc_cap: usize, socket_cap: usize, clock: Clock) -> Enricher {
        Enricher {
            procs: ProcessTable::new(proc_cap),
            sockets: SocketOwners::new(socket_cap),
            containers: Containers::new(socket_cap.min(65_536)),
            clock,
        }
    }

    fn parent_of(&self, p: &Proc, known: Option<&Proc>) -> Option<Parent> {
        if p.ppid == 0 {
            return None;
        }
        let pp = known
            .filter(|q| q.key.tgid == p.ppid)
            .or_else(|| self.procs.get(p.ppid));
        Some(Parent {
            pid: p.ppid,
            name: pp.map(|q| q.comm.to_string()),
            executable: pp.and_then(|q| q.exe.as_deref().map(str::to_owned)),
        })
    }

    /// ECS process object of `tgid` (thread `tid`), from the table entry when there is one.
    pub fn process(
        &self,
        tgid: u32,
        tid: u32,
        comm: String,
        p: Option<&Proc>,
        parent: Option<&Proc>,
    ) -> Process {
        match p {
            Some(p) => Process {
                pid: tgid,
                thread: (tid != tgid && tid != 0).then_some(Thread { id: tid }),
                name: p.comm.to_string(),
                executable: p.exe.as_deref().map(str::to_owned),
                command_line: p.command_line(),
                entity_id: Some(format!("{}-{}", p.key.tgid, p.key.start_ns)),
                parent: self.parent_of(p, parent),
                user: Some(User {
                    id: p.uid.to_string(),
                }),
                exit_code: None,
            },
            None => Process {
                pid: tgid,
                thread: (tid != tgid && tid != 0).then_some(Thread { id: tid }),
                name: comm,
                executable: None,
                command_line: None,
                entity_id: None,
                parent: None,
                user: None,
                exit_code: None,
            },
        }
    }

    fn container(&self, p: Option<&Proc>) -> (Option<Container>, Option<Orchestrator>) {
        container_fields(&self.containers, p.and_then(|p| p.container_id.as_deref()))
    }

    fn sock_record(
        &self,
        ev: &KernelEvent,
        s: &SockCallData,
        touched: &Touched,
        bind: bool,
    ) -> SocketRecord {
        let h = &ev.header;
        let process = self.process(
            h.tgid,
            h.pid,
            ev.comm(),
            touched.subject.get(&self.procs),
            None,
        );
        // (The port asked for: 0 for one the kernel picked.)
        let asked = if s.flags & watcher_common::BIND_PICKED_PORT != 0 {
            0
        } else {
            s.port
        };
        let ep = endpoint(ip_addr(s.family, &s.addr), asked);
        let (container, orchestrator) = self.container(touched.subject.get(&self.procs));
        let (outcome, error) = match s.ret {
            0 => ("success", None),
            r => {
                let errno = -r;
                let outcome = if !bind && errno == EINPROGRESS {
                    "unknown"
                } else {
                    "failure"
                };
                (
                    outcome,
                    Some(ErrorInfo {
                        code: errno_name(errno),
                        message: errno_message(errno).to_owned(),
                    }),
                )
            }
        };
        SocketRecord {
            source: bind.then(|| ep.clone()),
            destination: (!bind).then_some(ep),
            network: network(s.family, s.sock_type, s.netns),
            event: Outcome {
                outcome: outcome.into(),
            },
            error,
            socket: SocketInfo {
                fd: Some(s.fd),
                sk: (s.skaddr != 0).then(|| format!("{:#x}", s.skaddr)),
            },
            container,
            orchestrator,
            process,
        }
    }

    /// Apply one kernel event and build its record (a cgroup record has none).
    pub fn record(&mut self, ev: &KernelEvent) -> Option<Record> {
        self.enrich(ev).0
    }

    /// Apply one kernel event: its record, the processes it touched, and for
    /// a TCP state change the process owning the socket.
    pub fn enrich(&mut self, ev: &KernelEvent) -> (Option<Record>, Touched, Option<Proc>) {
        let (touched, owner) = self.observe(ev);
        let record = self.build(ev, &touched, owner.as_ref());
        (record, touched, owner)
    }

    /// Apply one kernel event to the process and socket tables, without
    /// building its record (a feed of findings only does not need it).
    pub fn observe(&mut self, ev: &KernelEvent) -> (Touched, Option<Proc>) {
        if let Payload::Cgroup(c) = &ev.payload {
            if c.created {
                self.containers.cgroup_made(c.id, &c.path);
            } else {
                self.containers.cgroup_removed(c.id);
            }
            return (Touched::default(), None);
        }
        let containers = &self.containers;
        let mut touched = self.procs.apply_in(ev, &|id| containers.id_of_cgroup(id));
        // A pod's programs are told apart within the pod: the kubelet restarts
        // a crashed container as a new container (a new id) in the same pod.
        if let Payload::Exec(_) = &ev.payload {
            let containers = &mut self.containers;
            let procs = &self.procs;
            let scoped = touched.subject.get(procs).and_then(|p| {
                let cid = p.container_id.as_ref()?;
                let scope = containers.identity_scope(cid);
                (scope != *cid).then(|| {
                    let program = crate::world::proctable::program_id(
                        procs.identity,
                        p.exe.as_deref(),
                        &p.comm,
                        p.argv.as_ref(),
                        Some(&scope),
                    );
                    (p.key.tgid, program)
                })
            });
            if let Some((tgid, program)) = scoped {
                self.procs.set_program(tgid, program);
            }
        }
        // What the record means, once, for the detectors.
        touched.event = crate::world::domain::DomainEvent::of(ev);
        // (Looked up once for what follows: the table does not change below.)
        let subject = touched.subject.get(&self.procs);
        // Why a process ended, once, for its record and the detectors.
        if let Payload::Exit(x) = &ev.payload {
            if crate::world::proctable::ends_process(x, ev.header.pid, ev.header.tgid) {
                let status = ExitStatus::from_raw(x.exit_code);
                let last = subject.and_then(|p| p.signalled.as_ref());
                touched.cause = Some(crate::world::cause::Cause::of(
                    status,
                    last,
                    ev.header.ts_ns,
                ));
            }
        }
        if let Some(id) = subject.and_then(|p| p.container_id.as_ref()) {
            // Ask the runtime (without waiting) about a container it has not named yet.
            self.containers.ask(id);
        }
        let mut owner = None;
        match &ev.payload {
            Payload::Bind(s) | Payload::Connect(s) => {
                let bind = matches!(ev.payload, Payload::Bind(_));
                if s.ret == 0 || (!bind && -s.ret == EINPROGRESS) {
                    if let Some(p) = subject {
                        self.sockets.remember(s.skaddr, p);
                    }
                }
            }
            Payload::TcpState(t) => {
                // CLOSE→SYN_SENT runs in the connecting task; later transitions
                // may run in softirq context: attribute by socket address.
                owner = self.sockets.owners.get(&t.skaddr).cloned();
                if t.new_state == TCP_SYN_SENT || t.new_state == TCP_LISTEN {
                    // These transitions run in the calling task's context, and
                    // start a socket's life: whatever an older socket at the same
                    // kernel address said about its owner is stale now.
                    if let Some(p) = subject {
                        self.sockets.remember(t.skaddr, p);
                        owner = Some(p.clone());
                    }
                }
                if t.new_state == TCP_CLOSE
                    || t.new_state == TCP_ESTABLISHED && t.old_state == TCP_SYN_SENT
                {
                    self.sockets.owners.remove(&t.skaddr);
                }
            }
            _ => {}
        }
        (touched, owner)
    }

    /// The output record of an event already applied with [`Enricher::observe`]
    /// (none for a cgroup record: it only feeds the container table).
    pub fn build(
        &self,
        ev: &KernelEvent,
        touched: &Touched,
        owner: Option<&Proc>,
    ) -> Option<Record> {
        let h = &ev.header;
        let body = match &ev.payload {
            Payload::Fork(f) => self.fork_body(ev, f, touched),
            Payload::Exec(x) => self.exec_body(ev, x, touched),
            Payload::Exit(x) => self.exit_body(ev, x, touched),
            Payload::Reap(r) => self.reap_body(ev, r, touched),
            Payload::Bind(s) => Body::Bind(self.sock_record(ev, s, touched, true)),
            // They feed the tables only: the cause appears on the exit record.
            // (A tracked socket's end feeds the socket table only.)
            Payload::Cgroup(_) | Payload::Signal(_) | Payload::SockClose(_) => return None,
            Payload::Connect(s) => Body::Connect(self.sock_record(ev, s, touched, false)),
            Payload::TcpState(t) => self.tcp_state_body(ev, t, touched, owner),
        };
        Some(Record {
            schema: SCHEMA_VERSION,
            time: self.clock.rfc3339(h.ts_ns),
            mono_ns: h.ts_ns,
            body,
        })
    }

    /// A process's (or thread's) creation.
    fn fork_body(&self, ev: &KernelEvent, f: &watcher_common::ForkData, touched: &Touched) -> Body {
        let h = &ev.header;
        let subject = touched.subject.get(&self.procs);
        let thread = f.clone_flags & CLONE_THREAD != 0;
        let mut process = if thread {
            self.process(h.tgid, f.child_pid, ev.comm(), subject, None)
        } else {
            self.process(
                f.child_tgid,
                f.child_tgid,
                ev.comm(),
                subject,
                touched.parent.get(&self.procs),
            )
        };
        if thread {
            process.thread = Some(Thread { id: f.child_pid });
        }
        let (container, orchestrator) = self.container(subject);
        Body::Fork(ForkRecord {
            process,
            fork: ForkInfo {
                thread,
                clone_flags: format!("{:#x}", f.clone_flags),
            },
            container,
            orchestrator,
        })
    }

    /// A new program: its arguments.
    fn exec_body(
        &self,
        ev: &KernelEvent,
        x: &crate::kernel::decode::Exec,
        touched: &Touched,
    ) -> Body {
        let h = &ev.header;
        let subject = touched.subject.get(&self.procs);
        let (container, orchestrator) = self.container(subject);
        Body::Exec(ExecRecord {
            process: self.process(
                h.tgid,
                h.pid,
                ev.comm(),
                subject,
                touched.parent.get(&self.procs),
            ),
            args: x.argv.to_vec(),
            exec: ExecInfo {
                args_truncated: x.argv_truncated,
            },
            container,
            orchestrator,
        })
    }

    /// A thread's or process's end: its status, and why (the cause) when the process ended.
    fn exit_body(&self, ev: &KernelEvent, x: &watcher_common::ExitData, touched: &Touched) -> Body {
        let h = &ev.header;
        let subject = touched.subject.get(&self.procs);
        let status = ExitStatus::from_raw(x.exit_code);
        let mut process = self.process(
            h.tgid,
            h.pid,
            ev.comm(),
            subject,
            touched.parent.get(&self.procs),
        );
        // This record's own word: by the time it is enriched, a later
        // exit of another thread may already have ended the process.
        let process_exited = crate::world::proctable::ends_process(x, h.pid, h.tgid);
        let mut exit = ExitInfo {
            signal: None,
            signal_number: None,
            core_dumped: false,
            process_exited,
            parent_waiting: x.parent_waiting != 0,
            status_unknown: false,
            lifetime_ms: subject
                .filter(|p| process_exited && p.key.start_ns > 0 && p.key.start_ns <= h.ts_ns)
                .map(|p| ms(h.ts_ns - p.key.start_ns)),
            cause: None,
        };
        match status {
            ExitStatus::Code(c) => process.exit_code = Some(c),
            ExitStatus::Signal {
                signal,
                core_dumped,
            } => {
                exit.signal = Some(signal_name(signal));
                exit.signal_number = Some(signal);
                exit.core_dumped = core_dumped;
            }
            ExitStatus::Unknown => exit.status_unknown = true,
        }
        if process_exited {
            let cause = crate::world::cause::Cause::of(
                status,
                subject.and_then(|p| p.signalled.as_ref()),
                h.ts_ns,
            );
            exit.cause = Some(ExitCause::from(&cause));
        }
        let (container, orchestrator) = self.container(subject);
        Body::Exit(ExitRecord {
            process,
            exit,
            container,
            orchestrator,
        })
    }

    /// A child reaped: by whom, how, after how long a zombie.
    fn reap_body(&self, ev: &KernelEvent, r: &watcher_common::ReapData, touched: &Touched) -> Body {
        let h = &ev.header;
        let subject = touched.subject.get(&self.procs);
        let mut process = self.process(r.reaped_pid, r.reaped_pid, String::new(), subject, None);
        if subject.is_none() {
            process.name = "?".into();
        }
        let mut zombie_ms = None;
        if let Some((t, status)) = subject.and_then(|p| p.exited) {
            if let ExitStatus::Code(c) = status {
                process.exit_code = Some(c);
            }
            zombie_ms = (h.ts_ns >= t).then(|| ms(h.ts_ns - t));
        }
        let reaper = touched.parent.get(&self.procs).map(|p| Parent {
            pid: p.key.tgid,
            name: Some(p.comm.to_string()),
            executable: p.exe.as_deref().map(str::to_owned),
        });
        let source = ReapSource::from_u32(r.source);
        let reaper = match source {
            ReapSource::Free | ReapSource::Unknown => None,
            _ => reaper.or(Some(Parent {
                pid: h.tgid,
                name: Some(ev.comm()),
                executable: None,
            })),
        };
        let (container, orchestrator) = self.container(subject);
        Body::Reap(ReapRecord {
            process,
            reap: ReapInfo {
                method: source.as_str().into(),
                reaper,
                zombie_ms,
            },
            container,
            orchestrator,
        })
    }

    /// A TCP state change, named by the socket's owner when it is known.
    fn tcp_state_body(
        &self,
        ev: &KernelEvent,
        t: &watcher_common::TcpStateData,
        touched: &Touched,
        owner: Option<&Proc>,
    ) -> Body {
        let h = &ev.header;
        let subject = touched.subject.get(&self.procs);
        let process = match owner {
            Some(o) => {
                Some(self.process(o.key.tgid, o.key.tgid, o.comm.to_string(), Some(o), None))
            }
            None if t.new_state == TCP_SYN_SENT => {
                Some(self.process(h.tgid, h.pid, ev.comm(), subject, None))
            }
            None => None,
        };
        let (container, orchestrator) = self.container(owner.or(subject));
        let event = (t.old_state == TCP_SYN_SENT).then(|| Outcome {
            outcome: if t.new_state == TCP_ESTABLISHED {
                "success"
            } else {
                "failure"
            }
            .into(),
        });
        Body::TcpState(TcpStateRecord {
            process,
            source: endpoint(ip_addr(t.family, &t.saddr), t.sport),
            destination: endpoint(ip_addr(t.family, &t.daddr), t.dport),
            network: network(t.family, 1, t.netns),
            tcp: TcpInfo {
                old_state: tcp_state_name(t.old_state).into(),
                new_state: tcp_state_name(t.new_state).into(),
            },
            event,
            socket: SocketInfo {
                fd: None,
                sk: Some(format!("{:#x}", t.skaddr)),
            },
            container,
            orchestrator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::decode::{decode, encode, header_for};
    use watcher_common::{Event, EventKind, ExitData, ForkData, TcpStateData, AF_INET};

    fn sock(ret: i32, sk: u64) -> SockCallData {
        SockCallData {
            fd: 5,
            ret,
            family: AF_INET,
            port: 9,
            sock_type: 1,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            scope_id: 0,
            netns: 0,
            skaddr: sk,
            inode: 0,
            ..Default::default()
        }
    }

    #[test]
    fn nonblocking_connect_outcome_is_attributed_by_socket() {
        let mut e = Enricher::new(1000, 1000, Clock::fixed(0));
        let c = decode(&encode(&Event {
            header: header_for::<SockCallData>(EventKind::Connect, 10, 77, 77, "client"),
            data: sock(-115, 0xabc),
        }))
        .unwrap();
        let r = e.record(&c).unwrap();
        let Body::Connect(c) = r.body else {
            panic!("connect expected")
        };
        assert_eq!(c.event.outcome, "unknown");
        assert_eq!(c.error.map(|x| x.code).as_deref(), Some("EINPROGRESS"));
        assert_eq!(
            c.destination.map(|d| (d.address, d.port)),
            Some(("127.0.0.1".into(), 9))
        );
        // The refusal arrives in softirq context of pid 0.
        let t = decode(&encode(&Event {
            header: header_for::<TcpStateData>(EventKind::TcpState, 11, 0, 0, "swapper/1"),
            data: TcpStateData {
                skaddr: 0xabc,
                old_state: 2,
                new_state: 7,
                sport: 5555,
                dport: 9,
                family: AF_INET,
                protocol: 6,
                saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                netns: 0,
                inode: 0,
                ..Default::default()
            },
        }))
        .unwrap();
        let Body::TcpState(t) = e.record(&t).unwrap().body else {
            panic!("tcp_state expected")
        };
        assert_eq!(t.process.map(|p| p.pid), Some(77));
        assert_eq!(t.event.map(|o| o.outcome).as_deref(), Some("failure"));
        assert!(e.sockets.is_empty(), "a closed socket is forgotten");
    }

    #[test]
    fn a_reused_socket_address_is_not_attributed_to_its_old_owner() {
        let mut e = Enricher::new(1000, 1000, Clock::fixed(0));
        // pid 10 binds a socket at kernel address 0xabc, then exits.
        e.record(
            &decode(&encode(&Event {
                header: header_for::<SockCallData>(EventKind::Bind, 1, 10, 10, "old"),
                data: sock(0, 0xabc),
            }))
            .unwrap(),
        );
        // pid 20's new socket lands at the same address and connects.
        let mk = |ts, pid, old, new| {
            decode(&encode(&Event {
                header: header_for::<TcpStateData>(EventKind::TcpState, ts, pid, pid, "new"),
                data: TcpStateData {
                    skaddr: 0xabc,
                    old_state: old,
                    new_state: new,
                    sport: 1,
                    dport: 9,
                    family: AF_INET,
                    protocol: 6,
                    saddr: [0; 16],
                    daddr: [0; 16],
                    netns: 0,
                    inode: 0,
                    ..Default::default()
                },
            }))
            .unwrap()
        };
        e.record(
            &decode(&encode(&Event {
                header: header_for::<SockCallData>(EventKind::Connect, 2, 20, 20, "new"),
                data: sock(-115, 0),
            }))
            .unwrap(),
        );
        let (_, _, owner) = e.enrich(&mk(3, 20, 7, 2));
        assert_eq!(owner.map(|p| p.key.tgid), Some(20));
        let (_, _, owner) = e.enrich(&mk(4, 0, 2, 7));
        assert_eq!(
            owner.map(|p| p.key.tgid),
            Some(20),
            "the refusal belongs to the new owner"
        );
    }

    #[test]
    fn exit_by_signal_and_lifetime() {
        let mut e = Enricher::new(1000, 1000, Clock::fixed(0));
        e.record(
            &decode(&encode(&Event {
                header: header_for::<ForkData>(EventKind::Fork, 1_000_000, 1, 1, "init"),
                data: ForkData {
                    child_pid: 50,
                    child_tgid: 50,
                    clone_flags: 0,
                    cgroup_id: 0,
                },
            }))
            .unwrap(),
        );
        let r = e
            .record(
                &decode(&encode(&Event {
                    header: header_for::<ExitData>(EventKind::Exit, 31_000_000, 50, 50, "sleep"),
                    data: ExitData {
                        exit_code: 9,
                        group_dead: 1,
                        parent_tgid: 0,
                        parent_waiting: 0,
                        cgroup_id: 0,
                        pidns: 0,
                        ns_pid: 0,
                        flags: 0,
                        reaper_tgid: 0,
                    },
                }))
                .unwrap(),
            )
            .unwrap();
        let Body::Exit(x) = r.body else {
            panic!("exit expected")
        };
        assert_eq!(x.exit.signal.as_deref(), Some("SIGKILL"));
        assert_eq!(x.process.exit_code, None);
        assert_eq!(x.exit.lifetime_ms, Some(30.0));
        assert_eq!(x.process.parent.map(|p| p.pid), Some(1));
    }

    #[test]
    fn a_threads_exit_that_comes_after_its_leaders_says_so() {
        // A joined thread's exit can reach the ring after the leader's, which
        // ended the process: the thread's record keeps its own word.
        let mut e = Enricher::new(1000, 1000, Clock::fixed(0));
        let ev = |ty, ts, pid, data| {
            decode(&encode(&Event {
                header: header_for::<ExitData>(ty, ts, pid, 60, "app"),
                data,
            }))
            .unwrap()
        };
        e.record(
            &decode(&encode(&Event {
                header: header_for::<ForkData>(EventKind::Fork, 1, 1, 1, "init"),
                data: ForkData {
                    child_pid: 60,
                    child_tgid: 60,
                    clone_flags: 0,
                    cgroup_id: 0,
                },
            }))
            .unwrap(),
        );
        let exit = |dead| ExitData {
            exit_code: 0,
            group_dead: dead,
            parent_tgid: 0,
            parent_waiting: 0,
            cgroup_id: 0,
            pidns: 0,
            ns_pid: 0,
            flags: 0,
            reaper_tgid: 0,
        };
        let Body::Exit(leader) = e.record(&ev(EventKind::Exit, 5, 60, exit(1))).unwrap().body
        else {
            panic!("exit expected")
        };
        let Body::Exit(thread) = e.record(&ev(EventKind::Exit, 6, 61, exit(0))).unwrap().body
        else {
            panic!("exit expected")
        };
        assert!(leader.exit.process_exited);
        assert!(!thread.exit.process_exited);
        assert_eq!(thread.exit.lifetime_ms, None);
        // When the kernel could not tell, the leader's exit is the process's.
        let Body::Exit(unknown) = e
            .record(&ev(
                EventKind::Exit,
                7,
                62,
                exit(watcher_common::GROUP_DEAD_UNKNOWN),
            ))
            .unwrap()
            .body
        else {
            panic!("exit expected")
        };
        assert!(!unknown.exit.process_exited);
    }
}
