//! Building event sequences for the detectors' unit tests: the real
//! process table, enrichment and detectors, with events built as the kernel
//! would write them and a stand-in for the one /proc lookup.
use crate::kernel::clock::Clock;
use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use watcher_common::{
    Event, EventKind, ExitData, ForkData, ReapData, SockCallData, TcpStateData, AF_INET, AF_INET6,
};

use super::{DetectConfig, Finding, State};
use crate::world::sockdiag::KernelSocket;
use crate::{
    kernel::decode::{decode, encode, header_for, Exec, KernelEvent, Payload},
    pipeline::engine::Engine,
    world::proctable::ProcessTable,
};

pub(crate) const S: u64 = 1_000_000_000;

/// Namespaces that are gone, and each question asked about them.
type Gone = Arc<Mutex<(Vec<u32>, Vec<Vec<u32>>)>>;
/// Port questions: the port, and whether connections were wanted.
type Asked = Arc<Mutex<Vec<(crate::world::sockdiag::PortKey, bool)>>>;
pub(crate) const MS: u64 = 1_000_000;

/// The stand-in for the kernel's socket tables: answers at once, or — when
/// told to — only later (as a lookup slower than its wait does).
struct StandIn {
    /// What `/proc` shows when a finding is confirmed (None: no confirmation).
    confirm: Arc<Mutex<Option<Vec<crate::world::proctable::Proc>>>>,
    /// Where a reconciliation's snapshot is to be sent (by [`Kit::proc_snapshot`]).
    snapshot: Arc<Mutex<Option<std::sync::mpsc::SyncSender<crate::world::reconcile::Snapshot>>>>,
    /// The port summary a namespace's lookup answers with, and the namespaces asked.
    summary: Arc<Mutex<(Option<crate::world::sockdiag::PortSummary>, Vec<u32>)>>,
    kernel: Arc<Mutex<Vec<KernelSocket>>>,
    /// Namespaces that are gone, and each question asked about them.
    gone: Gone,
    /// Each port question asked, and whether it wanted connections.
    asked: Asked,
    slow: Arc<std::sync::atomic::AtomicBool>,
    parked: Vec<(crate::world::sockdiag::PortKey, bool)>,
    /// Questions put on the deciding thread itself ([`SocketLookup::quick`]),
    /// never answered there by this stand-in.
    ///
    /// [`SocketLookup::quick`]: crate::world::lookup::SocketLookup::quick
    in_place: Arc<std::sync::atomic::AtomicU64>,
}

/// What the kernel's tables answer about one port (as `Diag::on_port`
/// does): a port no listener holds shows its other TCP sockets only when
/// they are asked for.
fn on_port(
    kernel: &[KernelSocket],
    key: crate::world::sockdiag::PortKey,
    connections: bool,
) -> Vec<KernelSocket> {
    let socks: Vec<KernelSocket> = kernel
        .iter()
        .filter(|s| (s.netns, s.tcp, s.port) == key)
        .cloned()
        .collect();
    if key.1 && !connections && !socks.iter().any(KernelSocket::is_holder) {
        return Vec::new();
    }
    socks
}

impl crate::world::lookup::SocketLookup for StandIn {
    fn ask(
        &mut self,
        netns: u32,
        _via: u32,
        tcp: bool,
        port: u16,
        connections: bool,
        _candidates: &[u32],
        _known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        let key = (netns, tcp, port);
        self.asked.lock().unwrap().push((key, connections));
        if self.slow.load(std::sync::atomic::Ordering::Relaxed) {
            self.parked.push((key, connections));
            return None;
        }
        Some(on_port(&self.kernel.lock().unwrap(), key, connections))
    }
    fn quick(
        &mut self,
        _netns: u32,
        _via: u32,
        _tcp: bool,
        _port: u16,
        _known: &[(u64, u32)],
    ) -> Option<Vec<KernelSocket>> {
        self.in_place
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    }
    fn late(&mut self) -> Vec<(crate::world::sockdiag::PortKey, Vec<KernelSocket>)> {
        let k = self.kernel.lock().unwrap();
        self.parked
            .drain(..)
            .map(|(key, connections)| (key, on_port(&k, key, connections)))
            .collect()
    }
    fn waiting(&self) -> bool {
        !self.parked.is_empty()
    }
    fn summary(&mut self, netns: u32, _via: u32) {
        self.summary.lock().unwrap().1.push(netns);
    }
    fn start_snapshot(
        &mut self,
        _identity: crate::world::proctable::Identity,
        _namespaces: Vec<(u32, u32)>,
    ) -> Option<std::sync::mpsc::Receiver<crate::world::reconcile::Snapshot>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        *self.snapshot.lock().unwrap() = Some(tx);
        Some(rx)
    }
    /// Confirmations only when a test asks for them (`Kit::confirm_with`).
    fn start_confirmation(
        &mut self,
        pids: Vec<u32>,
        _answered: &crate::kernel::wake::Wake,
    ) -> Option<std::sync::mpsc::Receiver<crate::world::reconcile::Snapshot>> {
        let answer = self.confirm.lock().unwrap().clone()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let procs = answer
            .into_iter()
            .filter(|p| pids.contains(&p.key.tgid))
            .collect();
        tx.send(crate::world::reconcile::Snapshot {
            taken_ns: u64::MAX / 2,
            procs,
            only: Some(pids),
            ..Default::default()
        })
        .unwrap();
        Some(rx)
    }
    fn start_gone_check(
        &mut self,
        netns: Vec<u32>,
        _answered: &crate::kernel::wake::Wake,
    ) -> Option<std::sync::mpsc::Receiver<Vec<u32>>> {
        let mut g = self.gone.lock().unwrap();
        let answer = netns.iter().copied().filter(|n| g.0.contains(n)).collect();
        g.1.push(netns);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        tx.send(answer).unwrap();
        Some(rx)
    }
    fn summaries(&mut self) -> Vec<(u32, crate::world::sockdiag::PortSummary)> {
        let mut s = self.summary.lock().unwrap();
        let Some(answer) = s.0.clone() else {
            return Vec::new();
        };
        s.1.drain(..).map(|n| (n, answer.clone())).collect()
    }
}

pub(crate) struct Kit {
    pub engine: Engine,
    /// Lookups answer only through `late` while set.
    pub slow_lookups: Arc<std::sync::atomic::AtomicBool>,
    /// Socket questions put on the deciding thread (none unless
    /// `confirm_before_open`).
    pub lookups_in_place: Arc<std::sync::atomic::AtomicU64>,
    pub all: Vec<Finding>,
    kernel: Arc<Mutex<Vec<KernelSocket>>>,
    /// Where orphans go when their parent exits.
    pub subreaper: Arc<Mutex<u32>>,
    summary: Arc<Mutex<(Option<crate::world::sockdiag::PortSummary>, Vec<u32>)>>,
    gone: Gone,
    asked: Asked,
    proc_now: Arc<Mutex<Option<std::sync::mpsc::SyncSender<crate::world::reconcile::Snapshot>>>>,
    confirm: Arc<Mutex<Option<Vec<crate::world::proctable::Proc>>>>,
    /// The uid of the events of these processes (else 0).
    uids: std::collections::HashMap<u32, u32>,
}

fn family_addr(ip: &str) -> (u16, [u8; 16]) {
    let ip: IpAddr = ip.parse().expect("ip");
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            (AF_INET, a)
        }
        IpAddr::V6(v6) => (AF_INET6, v6.octets()),
    }
}

impl Kit {
    pub(crate) fn new(cfg: DetectConfig) -> Kit {
        let kernel: Arc<Mutex<Vec<KernelSocket>>> = Arc::default();
        let subreaper = Arc::new(Mutex::new(1u32));
        let sr = subreaper.clone();
        let table =
            ProcessTable::with_parent_lookup(100_000, Box::new(move |_| Some(*sr.lock().unwrap())));
        let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let in_place: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let summary: Arc<Mutex<(Option<crate::world::sockdiag::PortSummary>, Vec<u32>)>> =
            Arc::default();
        let proc_now: Arc<
            Mutex<Option<std::sync::mpsc::SyncSender<crate::world::reconcile::Snapshot>>>,
        > = Arc::default();
        let confirm: Arc<Mutex<Option<Vec<crate::world::proctable::Proc>>>> = Arc::default();
        let gone: Gone = Arc::default();
        let asked: Asked = Arc::default();
        let lookup = Box::new(StandIn {
            gone: gone.clone(),
            asked: asked.clone(),
            confirm: confirm.clone(),
            snapshot: proc_now.clone(),
            summary: summary.clone(),
            kernel: kernel.clone(),
            slow: slow.clone(),
            parked: Vec::new(),
            in_place: in_place.clone(),
        });
        Kit {
            engine: Engine::new(cfg, table, Clock::fixed(0), lookup),
            slow_lookups: slow,
            lookups_in_place: in_place,
            all: Vec::new(),
            kernel,
            subreaper,
            summary,
            gone,
            asked,
            proc_now,
            confirm,
            uids: Default::default(),
        }
    }

    /// The port questions asked since the last call, and whether each
    /// wanted the port's connections.
    pub(crate) fn port_questions(&mut self) -> Vec<(crate::world::sockdiag::PortKey, bool)> {
        std::mem::take(&mut self.asked.lock().unwrap())
    }

    /// The events of process `tgid` are from user `uid` from now on.
    pub(crate) fn as_user(&mut self, tgid: u32, uid: u32) {
        self.uids.insert(tgid, uid);
    }

    pub(crate) fn defaults() -> Kit {
        Kit::new(DetectConfig::default())
    }

    /// Network namespaces that no longer exist (for the `/proc` worker's check).
    pub(crate) fn set_gone(&mut self, netns: Vec<u32>) {
        self.gone.lock().unwrap().0 = netns;
    }

    /// The namespaces each check asked about, since the last call.
    pub(crate) fn gone_checks(&mut self) -> Vec<Vec<u32>> {
        std::mem::take(&mut self.gone.lock().unwrap().1)
    }

    /// The second's work at `now` (as the pipeline does it), and the
    /// answers that came of it.
    pub(crate) fn second(&mut self, now: u64) -> Vec<Finding> {
        self.engine.check_namespaces(now);
        self.late(now)
    }

    /// What a namespace's port summary says, once asked (None: not answered yet).
    pub(crate) fn set_summary(&mut self, s: Option<crate::world::sockdiag::PortSummary>) {
        self.summary.lock().unwrap().0 = s;
    }

    /// The backlog after a loss is handled, and the reconciliation's `/proc`
    /// snapshot, taken at `taken_ns`, holds these processes.
    pub(crate) fn proc_snapshot(
        &mut self,
        taken_ns: u64,
        procs: Vec<crate::world::proctable::Proc>,
    ) {
        self.engine.caught_up();
        let tx = self
            .proc_now
            .lock()
            .unwrap()
            .take()
            .expect("a snapshot was asked");
        tx.send(crate::world::reconcile::Snapshot {
            taken_ns,
            procs,
            only: None,
            ..Default::default()
        })
        .unwrap();
    }

    /// From now on, findings about processes are confirmed against this stand-in `/proc`.
    pub(crate) fn confirm_with(&mut self, procs: Vec<crate::world::proctable::Proc>) {
        *self.confirm.lock().unwrap() = Some(procs);
    }

    /// Namespaces whose port summary was asked and not yet answered.
    pub(crate) fn summaries_asked(&self) -> Vec<u32> {
        self.summary.lock().unwrap().1.clone()
    }

    /// What the stand-in for /proc/net says is on the kernel's socket table.
    pub(crate) fn set_kernel(&mut self, socks: Vec<KernelSocket>) {
        *self.kernel.lock().unwrap() = socks;
    }

    pub(crate) fn feed(&mut self, mut ev: KernelEvent) -> Vec<Finding> {
        if let Some(&uid) = self.uids.get(&ev.header.tgid) {
            ev.header.uid = uid;
        }
        let (_, f) = self.engine.handle(&ev);
        self.all.extend(f.iter().cloned());
        f
    }

    /// Answers of `/proc` (a confirmation, a snapshot) applied at `now`, as
    /// the pipeline applies them between batches.
    pub(crate) fn answered(&mut self, now: u64) -> Vec<Finding> {
        let f = self.engine.reconciled(now);
        self.all.extend(f.iter().cloned());
        f
    }

    /// Late answers of the socket-table stand-in, applied at `now`.
    pub(crate) fn late(&mut self, now: u64) -> Vec<Finding> {
        let f = self.engine.late_confirmations(now);
        self.all.extend(f.iter().cloned());
        f
    }

    pub(crate) fn tick(&mut self, now: u64) -> Vec<Finding> {
        let f = self.engine.tick(now);
        self.all.extend(f.iter().cloned());
        f
    }

    /// Run the timer as the runtime would, up to `until`.
    pub(crate) fn run_timers(&mut self, until: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        while let Some(d) = self.engine.next_deadline() {
            if d > until {
                break;
            }
            out.extend(self.tick(d));
        }
        out
    }

    fn ev<T: Copy>(
        kind: EventKind,
        ts: u64,
        pid: u32,
        tgid: u32,
        comm: &str,
        data: T,
    ) -> KernelEvent {
        decode(&encode(&Event {
            header: header_for::<T>(kind, ts, pid, tgid, comm),
            data,
        }))
        .expect("decodes")
    }

    pub(crate) fn fork(&mut self, ts: u64, parent: u32, child: u32) -> Vec<Finding> {
        self.feed(Self::ev(
            EventKind::Fork,
            ts,
            parent,
            parent,
            "p",
            ForkData {
                child_pid: child,
                child_tgid: child,
                clone_flags: 0x11,
                cgroup_id: 0,
            },
        ))
    }

    pub(crate) fn thread(&mut self, ts: u64, tgid: u32, tid: u32) -> Vec<Finding> {
        self.feed(Self::ev(
            EventKind::Fork,
            ts,
            tgid,
            tgid,
            "p",
            ForkData {
                child_pid: tid,
                child_tgid: tgid,
                clone_flags: 0x0001_0000,
                cgroup_id: 0,
            },
        ))
    }

    pub(crate) fn exec(&mut self, ts: u64, pid: u32, exe: &str, argv: &[&str]) -> Vec<Finding> {
        self.exec_in(ts, pid, 0, exe, argv)
    }

    /// An exec in cgroup `cgroup` (0: unknown).
    pub(crate) fn exec_in(
        &mut self,
        ts: u64,
        pid: u32,
        cgroup: u64,
        exe: &str,
        argv: &[&str],
    ) -> Vec<Finding> {
        let comm = exe.rsplit('/').next().unwrap_or(exe);
        let mut ev = Self::ev(
            EventKind::Fork,
            ts,
            pid,
            pid,
            comm,
            ForkData {
                child_pid: 0,
                child_tgid: 0,
                clone_flags: 0,
                cgroup_id: 0,
            },
        );
        ev.header.kind = EventKind::Exec as u32;
        ev.payload = Payload::Exec(Exec {
            old_pid: pid,
            filename: exe.into(),
            argv: crate::kernel::argv::Argv::from_args(argv),
            argv_truncated: false,
            cgroup_id: cgroup,
        });
        self.feed(ev)
    }

    /// The last thread of `pid` exits with the raw `task_struct.exit_code`.
    pub(crate) fn exit(&mut self, ts: u64, pid: u32, raw: u32) -> Vec<Finding> {
        self.feed(Self::ev(
            EventKind::Exit,
            ts,
            pid,
            pid,
            "x",
            ExitData {
                exit_code: raw,
                group_dead: 1,
                parent_tgid: 0,
                parent_waiting: 0,
                cgroup_id: 0,
                pidns: 0,
                ns_pid: 0,
                flags: 0,
                reaper_tgid: 0,
            },
        ))
    }

    /// The last thread of `pid` exits; the kernel's exited-process table
    /// was full (its reap without a wait would go unseen).
    pub(crate) fn exit_untracked(&mut self, ts: u64, pid: u32) -> Vec<Finding> {
        self.exit_in_pidns_flags(ts, pid, 0, 0, 0, watcher_common::EXIT_UNTRACKED)
    }

    /// The last thread of `pid` exits while its parent is blocked in wait4/waitid.
    pub(crate) fn exit_while_parent_waits(&mut self, ts: u64, pid: u32, raw: u32) -> Vec<Finding> {
        let parent = self
            .engine
            .enricher
            .procs
            .get(pid)
            .map(|p| p.ppid)
            .unwrap_or(0);
        self.feed(Self::ev(
            EventKind::Exit,
            ts,
            pid,
            pid,
            "x",
            ExitData {
                exit_code: raw,
                group_dead: 1,
                parent_tgid: parent,
                parent_waiting: 1,
                cgroup_id: 0,
                pidns: 0,
                ns_pid: 0,
                flags: 0,
                reaper_tgid: 0,
            },
        ))
    }

    pub(crate) fn exit_thread(
        &mut self,
        ts: u64,
        tid: u32,
        tgid: u32,
        raw: u32,
        dead: bool,
    ) -> Vec<Finding> {
        self.feed(Self::ev(
            EventKind::Exit,
            ts,
            tid,
            tgid,
            "x",
            ExitData {
                exit_code: raw,
                group_dead: dead as u32,
                parent_tgid: 0,
                parent_waiting: 0,
                cgroup_id: 0,
                pidns: 0,
                ns_pid: 0,
                flags: 0,
                reaper_tgid: 0,
            },
        ))
    }

    /// `sender` sends the fatal signal `sig` to `target` (kill(): si_code 0).
    pub(crate) fn kill(&mut self, ts: u64, sender: u32, target: u32, sig: u32) -> Vec<Finding> {
        let d = watcher_common::SignalData {
            target_pid: target,
            sig,
            code: 0,
            group: 1,
            source: watcher_common::SIGNAL_GENERATED,
            ..Default::default()
        };
        self.feed(Self::ev(EventKind::Signal, ts, sender, sender, "k", d))
    }

    /// The kernel signals a fault to `pid` (si_code > 0, in the faulting task).
    pub(crate) fn fault(&mut self, ts: u64, pid: u32, sig: u32) -> Vec<Finding> {
        let d = watcher_common::SignalData {
            target_pid: pid,
            sig,
            code: 1,
            group: 0,
            source: watcher_common::SIGNAL_GENERATED,
            ..Default::default()
        };
        self.feed(Self::ev(EventKind::Signal, ts, pid, pid, "f", d))
    }

    /// The OOM killer chooses `victim` (its SIGKILL from the kernel follows).
    pub(crate) fn oom_kill(&mut self, ts: u64, victim: u32) -> Vec<Finding> {
        let mut f = self.feed(Self::ev(
            EventKind::Signal,
            ts,
            victim,
            victim,
            "o",
            watcher_common::SignalData {
                target_pid: victim,
                sig: 9,
                code: 0,
                group: 1,
                source: watcher_common::SIGNAL_OOM_VICTIM,
                ..Default::default()
            },
        ));
        let d = watcher_common::SignalData {
            target_pid: victim,
            sig: 9,
            code: crate::world::cause::SI_KERNEL,
            group: 1,
            source: watcher_common::SIGNAL_GENERATED,
            ..Default::default()
        };
        f.extend(self.feed(Self::ev(EventKind::Signal, ts + 1, victim, victim, "o", d)));
        f
    }

    /// A reap only `sched_process_free` told of (no wait seen): the header
    /// is whatever task freed it.
    pub(crate) fn freed(&mut self, ts: u64, pid: u32) -> Vec<Finding> {
        self.feed(Self::ev(
            EventKind::Reap,
            ts,
            0,
            0,
            "rcu",
            ReapData {
                reaped_pid: pid,
                source: watcher_common::ReapSource::Free as u32,
            },
        ))
    }

    pub(crate) fn reap(&mut self, ts: u64, reaper: u32, pid: u32) -> Vec<Finding> {
        self.feed(Self::ev(
            EventKind::Reap,
            ts,
            reaper,
            reaper,
            "p",
            ReapData {
                reaped_pid: pid,
                source: 1,
            },
        ))
    }

    fn sock(fd: i32, ret: i32, ip: &str, port: u16, tcp: bool, sk: u64) -> SockCallData {
        let (family, addr) = family_addr(ip);
        SockCallData {
            fd,
            ret,
            family,
            port,
            sock_type: if tcp { 1 } else { 2 },
            addr,
            scope_id: 0,
            netns: 0,
            skaddr: sk,
            inode: 0,
            ..Default::default()
        }
    }

    pub(crate) fn bind(
        &mut self,
        ts: u64,
        pid: u32,
        ip: &str,
        port: u16,
        ret: i32,
        tcp: bool,
    ) -> Vec<Finding> {
        let sk = 0x1000 + ts;
        self.feed(Self::ev(
            EventKind::Bind,
            ts,
            pid,
            pid,
            "b",
            Self::sock(3, ret, ip, port, tcp, sk),
        ))
    }

    pub(crate) fn bind_sk(
        &mut self,
        ts: u64,
        pid: u32,
        ip: &str,
        port: u16,
        sk: u64,
    ) -> Vec<Finding> {
        self.feed(Self::ev(
            EventKind::Bind,
            ts,
            pid,
            pid,
            "b",
            Self::sock(3, 0, ip, port, true, sk),
        ))
    }

    /// A TCP bind the kernel tracks to its end (`asked` 0: the kernel picked
    /// `port`), of socket `sk`.
    pub(crate) fn bind_tracked(
        &mut self,
        ts: u64,
        pid: u32,
        ip: &str,
        asked: u16,
        port: u16,
        sk: u64,
    ) -> Vec<Finding> {
        let mut d = Self::sock(3, 0, ip, port, true, sk);
        d.flags = watcher_common::BIND_TRACKED;
        if asked == 0 {
            d.flags |= watcher_common::BIND_PICKED_PORT;
        }
        self.feed(Self::ev(EventKind::Bind, ts, pid, pid, "b", d))
    }

    /// The kernel destroyed tracked socket `sk` (in another task's context).
    pub(crate) fn sock_closed(&mut self, ts: u64, ip: &str, port: u16, sk: u64) -> Vec<Finding> {
        let (family, addr) = family_addr(ip);
        self.feed(Self::ev(
            EventKind::SockClose,
            ts,
            0,
            0,
            "swapper/0",
            watcher_common::SockCloseData {
                skaddr: sk,
                netns: 0,
                port,
                family,
                addr,
            },
        ))
    }

    pub(crate) fn connect(
        &mut self,
        ts: u64,
        pid: u32,
        ip: &str,
        port: u16,
        ret: i32,
        sk: u64,
    ) -> Vec<Finding> {
        self.feed(Self::ev(
            EventKind::Connect,
            ts,
            pid,
            pid,
            "c",
            Self::sock(4, ret, ip, port, true, sk),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tcp(
        &mut self,
        ts: u64,
        ctx_pid: u32,
        sk: u64,
        old: u32,
        new: u32,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
    ) -> Vec<Finding> {
        let (family, saddr) = family_addr(src);
        let (_, daddr) = family_addr(dst);
        self.feed(Self::ev(
            EventKind::TcpState,
            ts,
            ctx_pid,
            ctx_pid,
            "t",
            TcpStateData {
                skaddr: sk,
                old_state: old,
                new_state: new,
                sport,
                dport,
                family,
                protocol: 6,
                saddr,
                daddr,
                netns: 0,
                inode: 0,
                ..Default::default()
            },
        ))
    }

    /// A cgroup is created at `path` (v2 id `id`), as the kernel reports it.
    pub(crate) fn cgroup(&mut self, ts: u64, id: u64, path: &str) -> Vec<Finding> {
        let mut ev = Self::ev(
            EventKind::Fork,
            ts,
            9,
            9,
            "runc",
            ForkData {
                child_pid: 0,
                child_tgid: 0,
                clone_flags: 0,
                cgroup_id: 0,
            },
        );
        ev.header.kind = EventKind::Cgroup as u32;
        ev.payload = Payload::Cgroup(crate::kernel::decode::Cgroup {
            id,
            created: true,
            path: path.into(),
        });
        self.feed(ev)
    }

    /// What the container runtime says about a container.
    pub(crate) fn runtime_says(
        &mut self,
        id: &str,
        name: &str,
        image: &str,
        ip: Option<&str>,
        policy: Option<&str>,
    ) -> Vec<Finding> {
        self.engine
            .runtime_update(
                crate::world::containers::RuntimeUpdate::Container(
                    crate::world::containers::ContainerInfo {
                        id: id.into(),
                        runtime: "docker",
                        name: Some(name.into()),
                        image: Some(image.into()),
                        restart_policy: policy.map(Into::into),
                        addresses: ip.map(|i| vec![i.parse().expect("ip")]).unwrap_or_default(),
                        ..Default::default()
                    },
                ),
                0,
            )
            .1
    }

    /// The runtime tells what it knows of a container, in full.
    pub(crate) fn runtime_knows(
        &mut self,
        c: crate::world::containers::ContainerInfo,
    ) -> Vec<Finding> {
        self.engine
            .runtime_update(crate::world::containers::RuntimeUpdate::Container(c), 0)
            .1
    }

    /// The runtime says a container stopped.
    pub(crate) fn runtime_stopped(&mut self, id: &str) -> Vec<Finding> {
        self.engine
            .runtime_update(
                crate::world::containers::RuntimeUpdate::Stopped { id: id.into() },
                0,
            )
            .1
    }

    /// Fork `child` from `parent`, then exec `exe argv` in cgroup `cgroup`
    /// (a runtime moves the process into the container's cgroup before its exec).
    pub(crate) fn spawn_in(
        &mut self,
        ts: u64,
        parent: u32,
        pid: u32,
        cgroup: u64,
        exe: &str,
        argv: &[&str],
    ) -> Vec<Finding> {
        let mut f = self.fork(ts, parent, pid);
        f.extend(self.exec_in(ts + 1000, pid, cgroup, exe, argv));
        f
    }

    /// The last thread of `pid` exits; it is `ns_pid` in pid namespace `pidns`.
    pub(crate) fn exit_in_pidns(
        &mut self,
        ts: u64,
        pid: u32,
        raw: u32,
        pidns: u32,
        ns_pid: u32,
    ) -> Vec<Finding> {
        self.exit_in_pidns_flags(ts, pid, raw, pidns, ns_pid, 0)
    }

    /// [`Kit::exit_in_pidns`] with the exit record's flags (`EXIT_PIDNS_DYING`, `EXIT_UNTRACKED`).
    pub(crate) fn exit_in_pidns_flags(
        &mut self,
        ts: u64,
        pid: u32,
        raw: u32,
        pidns: u32,
        ns_pid: u32,
        flags: u32,
    ) -> Vec<Finding> {
        let parent = self
            .engine
            .enricher
            .procs
            .get(pid)
            .map(|p| p.ppid)
            .unwrap_or(0);
        self.feed(Self::ev(
            EventKind::Exit,
            ts,
            pid,
            pid,
            "x",
            ExitData {
                exit_code: raw,
                group_dead: 1,
                parent_tgid: parent,
                parent_waiting: 0,
                cgroup_id: 0,
                pidns,
                ns_pid,
                flags,
                reaper_tgid: 0,
            },
        ))
    }

    /// A process listens on ip:port in network namespace `netns` (bind + listen).
    pub(crate) fn listen_ns(
        &mut self,
        ts: u64,
        pid: u32,
        netns: u32,
        ip: &str,
        port: u16,
        sk: u64,
    ) -> Vec<Finding> {
        let mut s = Self::sock(3, 0, ip, port, true, sk);
        s.netns = netns;
        let mut f = self.feed(Self::ev(EventKind::Bind, ts, pid, pid, "b", s));
        let (family, saddr) = family_addr(ip);
        let (_, daddr) = family_addr(if ip.contains(':') { "::" } else { "0.0.0.0" });
        f.extend(self.feed(Self::ev(
            EventKind::TcpState,
            ts + 1,
            pid,
            pid,
            "t",
            TcpStateData {
                skaddr: sk,
                old_state: 7,
                new_state: 10,
                sport: port,
                dport: 0,
                family,
                protocol: 6,
                saddr,
                daddr,
                netns,
                inode: 0,
                ..Default::default()
            },
        )));
        f
    }

    /// A bind in network namespace `netns`.
    pub(crate) fn bind_ns(
        &mut self,
        ts: u64,
        pid: u32,
        netns: u32,
        ip: &str,
        port: u16,
        ret: i32,
    ) -> Vec<Finding> {
        let mut s = Self::sock(3, ret, ip, port, true, 0x1000 + ts);
        s.netns = netns;
        self.feed(Self::ev(EventKind::Bind, ts, pid, pid, "b", s))
    }

    /// A process listens on ip:port (bind + listen).
    pub(crate) fn listen(
        &mut self,
        ts: u64,
        pid: u32,
        ip: &str,
        port: u16,
        sk: u64,
    ) -> Vec<Finding> {
        let mut f = self.bind_sk(ts, pid, ip, port, sk);
        let any = if ip.contains(':') { "::" } else { "0.0.0.0" };
        f.extend(self.tcp(ts + 1, pid, sk, 7, 10, ip, port, any, 0));
        f
    }

    pub(crate) fn unlisten(
        &mut self,
        ts: u64,
        pid: u32,
        ip: &str,
        port: u16,
        sk: u64,
    ) -> Vec<Finding> {
        let any = if ip.contains(':') { "::" } else { "0.0.0.0" };
        self.tcp(ts, pid, sk, 10, 7, ip, port, any, 0)
    }

    /// Start a process: fork from `parent` and exec `exe argv`.
    pub(crate) fn spawn(
        &mut self,
        ts: u64,
        parent: u32,
        pid: u32,
        exe: &str,
        argv: &[&str],
    ) -> Vec<Finding> {
        let mut f = self.fork(ts, parent, pid);
        f.extend(self.exec(ts + 1000, pid, exe, argv));
        f
    }
}

/// (kind, state) of each finding.
pub(crate) fn ks(f: &[Finding]) -> Vec<(&'static str, &'static str)> {
    f.iter()
        .map(|x| (x.kind.as_str(), x.state.as_str()))
        .collect()
}

pub(crate) fn opened(f: &[Finding], kind: &str) -> bool {
    f.iter()
        .any(|x| x.kind.as_str() == kind && x.state == State::Open)
}

pub(crate) fn resolved(f: &[Finding], kind: &str) -> bool {
    f.iter()
        .any(|x| x.kind.as_str() == kind && x.state == State::Resolved)
}

/// A TCP connection in TIME_WAIT on `ip:port` (no process holds it).
pub(crate) fn time_wait(ip: &str, port: u16) -> KernelSocket {
    KernelSocket {
        state: 6,
        inode: 0,
        ..listener(ip, port, &[])
    }
}

pub(crate) fn listener(ip: &str, port: u16, pids: &[u32]) -> KernelSocket {
    KernelSocket {
        tcp: true,
        addr: ip.parse().unwrap(),
        port,
        state: 10,
        uid: 0,
        inode: 1,
        pids: pids.to_vec(),
        netns: 0,
    }
}
