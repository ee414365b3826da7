//! Userspace throughput: recorded-format events replayed through decode →
//! enrich → detect → serialize on one thread; prints events per second.
//! Run by `cargo xtask bench` (or `cargo bench -p watcher --bench replay`).
use std::time::Instant;
use watcher::kernel::clock::Clock;

use watcher::{
    detect::DetectConfig,
    kernel::decode::{decode, encode, encode_exec, header_for},
    pipeline::engine::Engine,
    world::proctable::ProcessTable,
};
use watcher_common::{
    Event, EventKind, ExecData, ExitData, ForkData, ReapData, SockCallData, TcpStateData, AF_INET,
    FILENAME_LEN,
};

/// A fork record: `parent` (named `comm`) forked `child`.
fn fork_rec(ts: u64, parent: u32, child: u32, comm: &str) -> Vec<u8> {
    encode(&Event {
        header: header_for::<ForkData>(EventKind::Fork, ts, parent, parent, comm),
        data: ForkData {
            child_pid: child,
            child_tgid: child,
            clone_flags: 0x11,
            cgroup_id: 0,
        },
    })
}

/// The exit (status 0, its parent waiting) of `pid`, named `comm`.
fn exit_rec(ts: u64, pid: u32, parent: u32, comm: &str) -> Vec<u8> {
    encode(&Event {
        header: header_for::<ExitData>(EventKind::Exit, ts, pid, pid, comm),
        data: ExitData {
            exit_code: 0,
            group_dead: 1,
            parent_tgid: parent,
            parent_waiting: 1,
            cgroup_id: 0,
            pidns: 0,
            ns_pid: 0,
            flags: 0,
            reaper_tgid: 0,
        },
    })
}

/// `parent` (named `comm`) reaped `child`.
fn reap_rec(ts: u64, parent: u32, child: u32, comm: &str) -> Vec<u8> {
    encode(&Event {
        header: header_for::<ReapData>(EventKind::Reap, ts, parent, parent, comm),
        data: ReapData {
            reaped_pid: child,
            source: 1,
        },
    })
}

fn records(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut ts = 1_000_000_000u64;
    let mut pid = 10_000u32;
    let parents = [100u32, 101, 102, 103];
    let mut i = 0usize;
    while out.len() < n {
        ts += 3_000;
        let parent = parents[i % parents.len()];
        pid = if pid > 4_000_000 { 10_000 } else { pid + 1 };
        out.push(fork_rec(ts, parent, pid, "make"));
        let mut d = ExecData {
            old_pid: pid,
            filename_len: 12,
            args_len: 0,
            args_full_len: 0,
            cgroup_id: 0,
            filename: [0; FILENAME_LEN],
        };
        d.filename[..12].copy_from_slice(b"/usr/bin/cc1");
        let args = format!("cc1\0-quiet\0f{}.c\0-o\0/tmp/cc{}.s\0", i % 500, i % 500);
        d.args_full_len = args.len() as u32;
        out.push(encode_exec(
            &Event {
                header: header_for::<ExecData>(EventKind::Exec, ts + 500, pid, pid, "cc1"),
                data: d,
            },
            args.as_bytes(),
        ));
        if i.is_multiple_of(10) {
            let sock = |ret: i32, port: u16| SockCallData {
                fd: 3,
                ret,
                family: AF_INET,
                port,
                sock_type: 1,
                addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                scope_id: 0,
                netns: 0,
                skaddr: 0xffff_0000_0000_0000 | i as u64,
                inode: 0,
                ..Default::default()
            };
            out.push(encode(&Event {
                header: header_for::<SockCallData>(EventKind::Bind, ts + 600, pid, pid, "cc1"),
                data: sock(0, 0),
            }));
            out.push(encode(&Event {
                header: header_for::<SockCallData>(EventKind::Connect, ts + 700, pid, pid, "cc1"),
                data: sock(-115, 5432),
            }));
            out.push(encode(&Event {
                header: header_for::<TcpStateData>(
                    EventKind::TcpState,
                    ts + 800,
                    0,
                    0,
                    "swapper/0",
                ),
                data: TcpStateData {
                    skaddr: 0xffff_0000_0000_0000 | i as u64,
                    old_state: 2,
                    new_state: 1,
                    sport: 40000,
                    dport: 5432,
                    family: AF_INET,
                    protocol: 6,
                    saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    netns: 0,
                    inode: 0,
                    ..Default::default()
                },
            }));
        }
        out.push(exit_rec(ts + 2_000, pid, parent, "cc1"));
        out.push(reap_rec(ts + 2_100, parent, pid, "make"));
        i += 1;
    }
    out.truncate(n);
    out
}

/// The processes a mix's parents descend from, as the forks that made
/// them: init → 40 (a session) → 50 (a shell) → each of `pids`.
fn ancestry(pids: &[u32]) -> Vec<Vec<u8>> {
    let fork = |parent: u32, child: u32| fork_rec(1_000, parent, child, "sh");
    let mut out = vec![fork(1, 40), fork(40, 50)];
    out.extend(pids.iter().map(|p| fork(50, *p)));
    out
}

/// A fork/exit/wait loop in each of two parents forking by turns: a child
/// every `every` ns that exits `lives` ns after its fork and is reaped a
/// microsecond later; with `args`, it execs `/bin/true` with that command
/// line first.
fn child_loops(n: usize, every: u64, lives: u64, args: Option<&str>) -> Vec<Vec<u8>> {
    let mut out = ancestry(&[100, 101]);
    let mut ts = 1_000_000_000u64;
    let mut pid = 10_000u32;
    for i in 0.. {
        if out.len() >= n {
            break;
        }
        ts += every;
        let parent = [100u32, 101][i % 2];
        pid = if pid > 4_000_000 { 10_000 } else { pid + 1 };
        out.push(fork_rec(ts, parent, pid, "actor"));
        let mut comm = "actor";
        if let Some(args) = args {
            let mut d = ExecData {
                old_pid: pid,
                filename_len: 9,
                args_len: args.len() as u32,
                args_full_len: args.len() as u32,
                cgroup_id: 0,
                filename: [0; FILENAME_LEN],
            };
            d.filename[..9].copy_from_slice(b"/bin/true");
            out.push(encode_exec(
                &Event {
                    header: header_for::<ExecData>(EventKind::Exec, ts + 300, pid, pid, "true"),
                    data: d,
                },
                args.as_bytes(),
            ));
            comm = "true";
        }
        out.push(exit_rec(ts + lives, pid, parent, comm));
        out.push(reap_rec(ts + lives + 1_000, parent, pid, "actor"));
    }
    out.truncate(n);
    out
}

/// The live bench's `forks` mix: fork, exit, reap.
fn forks(n: usize) -> Vec<Vec<u8>> {
    child_loops(n, 20_000, 5_000, None)
}

/// The live bench's `execs` mix: each child execs `/bin/true` with one
/// 3,000-byte argument.
fn execs(n: usize) -> Vec<Vec<u8>> {
    let args = format!("/bin/true\0{}\0", "z".repeat(3000));
    child_loops(n, 100_000, 50_000, Some(&args))
}

/// Accepted TCP connects of two long-lived clients by turns (the live
/// bench's `connects` mix, client side: what the kernel forwards):
/// CLOSE→SYN_SENT in the connecting task, SYN_SENT→ESTABLISHED in the
/// softirq, the connect's return.
fn connects(n: usize) -> Vec<Vec<u8>> {
    let mut out = ancestry(&[200, 201]);
    let mut ts = 1_000_000_000u64;
    let state = |sk: u64, old: u32, new: u32, sport: u16| TcpStateData {
        skaddr: sk,
        old_state: old,
        new_state: new,
        sport,
        dport: 5432,
        family: AF_INET,
        protocol: 6,
        saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        netns: 0,
        inode: 0,
        ..Default::default()
    };
    for i in 0u64.. {
        if out.len() >= n {
            break;
        }
        ts += 10_000;
        let pid = [200u32, 201][(i % 2) as usize];
        let sk = 0xffff_0000_0000_0000 | (i % 50_000);
        let sport = 32_768 + (i % 28_000) as u16;
        out.push(encode(&Event {
            header: header_for::<TcpStateData>(EventKind::TcpState, ts, pid, pid, "clients"),
            data: state(sk, 7, 2, 0),
        }));
        out.push(encode(&Event {
            header: header_for::<TcpStateData>(EventKind::TcpState, ts + 50, 0, 0, "swapper/0"),
            data: state(sk, 2, 1, sport),
        }));
        out.push(encode(&Event {
            header: header_for::<SockCallData>(EventKind::Connect, ts + 80, pid, pid, "clients"),
            data: SockCallData {
                fd: 3,
                ret: 0,
                family: AF_INET,
                port: 5432,
                sock_type: 1,
                addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                scope_id: 0,
                netns: 0,
                skaddr: sk,
                inode: 0,
                ..Default::default()
            },
        }));
    }
    out.truncate(n);
    out
}

fn main() {
    let n: usize = std::env::var("REPLAY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // REPLAY_MIX=forks|connects|execs: one of the live bench's mixes alone.
    let mix = std::env::var("REPLAY_MIX").unwrap_or_default();
    let recs = match mix.as_str() {
        "forks" => forks(n),
        "connects" => connects(n),
        "execs" => execs(n),
        _ => records(n),
    };
    let table = ProcessTable::with_parent_lookup(65_536, Box::new(|_| Some(1)));
    let mut engine = Engine::new(
        DetectConfig::default(),
        table,
        Clock::fixed(0),
        Box::new(|_: u32, _: u32, _: bool, _: u16, _: &[u32]| Some(Vec::new())),
    );
    // REPLAY_JSON=0: findings-only feed (events are not serialized).
    let json = std::env::var("REPLAY_JSON")
        .map(|v| v != "0")
        .unwrap_or(true);
    let mut buf = Vec::with_capacity(4096);
    let mut bytes = 0usize;
    let mut findings = 0usize;
    let mut recs_out = Vec::with_capacity(1);
    // REPLAY_EVICT_KB=K (with REPLAY_BATCH=N, default 100): after every N
    // events, write over K KiB of other memory, untimed — what the live
    // path meets at each turn, its caches emptied by the workload between
    // turns. Only the events' time is counted.
    let evict_kb: usize = std::env::var("REPLAY_EVICT_KB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let batch: usize = std::env::var("REPLAY_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(1);
    let mut junk = vec![0u8; evict_kb * 1024];
    let mut evicting = std::time::Duration::ZERO;
    let t = Instant::now();
    for (i, r) in recs.iter().enumerate() {
        if evict_kb > 0 && i % batch == 0 {
            let e = Instant::now();
            for b in junk.iter_mut().step_by(64) {
                *b = b.wrapping_add(1);
            }
            std::hint::black_box(&junk);
            evicting += e.elapsed();
        }
        let ev = decode(r).expect("decodes");
        // A findings-only feed does not build event records at all (as `watcher run` does).
        let fs = engine.handle_opt(&ev, json.then_some(&mut recs_out));
        for rec in recs_out.drain(..) {
            buf.clear();
            serde_json::to_writer(&mut buf, &rec).expect("serializes");
            bytes += buf.len();
        }
        for f in &fs {
            buf.clear();
            serde_json::to_writer(&mut buf, &engine.finding_record(f)).expect("serializes");
            findings += 1;
        }
    }
    let secs = (t.elapsed() - evicting).as_secs_f64();
    println!(
        "replay ({}{}): {n} events in {secs:.3} s on one thread: {:.0} events/s ({} MB of JSON, {findings} findings)",
        if json { "every event serialized" } else { "findings only" },
        if mix.is_empty() { String::new() } else { format!(", {mix}") },
        n as f64 / secs,
        bytes / 1_000_000
    );
}
