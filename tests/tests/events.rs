//! The kernel-to-output event chain, end to end: the real watcher with its
//! real kernel programs, and real processes doing the real thing.
use std::{
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use watcher_tests::{
    actor, actor_any, assert_common, is, num, require_root, require_tool, text, watcher_bin, Feed,
    Value,
};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

/// The machine: shared by the tests that run side by side
/// ([`beside_others`]), held alone ([`alone`]) by those that load every
/// CPU and by those that need it otherwise quiet (timing, one ring
/// overflowing beside a quiet one) — every watcher sees every process, and
/// on the guests' one emulated CPU a neighbour's watcher loading its
/// programs left a 120-a-second fork loop at 30–40 a second (session 35).
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Root (else said, see `require_root`), and the machine shared with the
/// other tests that share it.
fn beside_others() -> Option<std::sync::RwLockReadGuard<'static, ()>> {
    require_root().then(|| MACHINE.read().unwrap_or_else(|e| e.into_inner()))
}

/// Root, and the machine to this test alone.
fn alone() -> Option<std::sync::RwLockWriteGuard<'static, ()>> {
    require_root().then(|| MACHINE.write().unwrap_or_else(|e| e.into_inner()))
}

fn pid_is(v: &Value, pid: u32) -> bool {
    num(v, &["process", "pid"]) == Some(pid as u64)
}

#[test]
fn fork_exit_code_3_and_wait4_reap() {
    let Some(_machine) = beside_others() else {
        return;
    };
    fork_exit_3_and_reap(&Feed::shared());
}

/// `actor spawn-exit 3`: its child's fork, its exit with code 3 and its reap
/// by the actor's wait4, each checked field by field.
fn fork_exit_3_and_reap(feed: &Feed) {
    let run = actor(ACTOR, &["spawn-exit", "3"]);
    let child = run.get("child") as u32;
    let related = |v: &Value| pid_is(v, child) || pid_is(v, run.pid);

    let fork = feed.wait_for_related("fork of the child", related, |v| {
        is(v, "fork") && pid_is(v, child)
    });
    assert_common(&fork);
    assert_eq!(
        num(&fork, &["process", "parent", "pid"]),
        Some(run.pid as u64),
        "{fork}"
    );
    assert_eq!(fork["fork"]["thread"], false, "{fork}");
    let mono = num(&fork, &["mono_ns"]).unwrap();
    assert!(
        (run.mono_before..=run.mono_after).contains(&mono),
        "mono_ns {mono} is not CLOCK_MONOTONIC within the run [{}, {}]",
        run.mono_before,
        run.mono_after
    );

    let exit = feed.wait_for_related("exit code 3", related, |v| {
        is(v, "exit") && pid_is(v, child)
    });
    assert_eq!(num(&exit, &["process", "exit_code"]), Some(3), "{exit}");
    assert_eq!(exit["exit"]["process_exited"], true, "{exit}");
    assert!(exit["exit"].get("signal").is_none(), "{exit}");

    let reap = feed.wait_for_related("reap by wait4", related, |v| {
        is(v, "reap") && pid_is(v, child)
    });
    assert_eq!(text(&reap, &["reap", "method"]), Some("wait4"), "{reap}");
    assert_eq!(
        num(&reap, &["reap", "reaper", "pid"]),
        Some(run.pid as u64),
        "{reap}"
    );
    assert_eq!(num(&reap, &["process", "exit_code"]), Some(3), "{reap}");
}

#[test]
fn exec_carries_the_new_program_and_its_arguments() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let marker = format!("marker-{}", std::process::id());
    let run = actor(ACTOR, &["exec-self", &marker]);
    let exec = feed.wait_for_related(
        "exec of the actor with the marker argument",
        |v| pid_is(v, run.pid),
        |v| {
            is(v, "exec")
                && pid_is(v, run.pid)
                && v["args"].as_array().is_some_and(|a| {
                    a.first().is_some_and(|x| x == "actor")
                        && a.iter().any(|x| x == marker.as_str())
                })
        },
    );
    assert_common(&exec);
    let exe = text(&exec, &["process", "executable"]).unwrap_or("");
    assert!(exe.ends_with("/actor"), "executable {exe}");
    assert_eq!(
        text(&exec, &["process", "command_line"]),
        Some(format!("actor exit 0 {marker}").as_str()),
        "{exec}"
    );
    assert_eq!(text(&exec, &["process", "name"]), Some("actor"));
}

/// The fallback the raw tracepoints leave to other kernels: every hook
/// attached through tracefs (`WATCHER_ATTACH=tracefs`) still carries fork,
/// exec (path and arguments), exit (code) and the reap.
#[test]
fn through_tracefs_alone_fork_exec_exit_and_reap_still_come() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::start_with(&["trace", "--json"], &[("WATCHER_ATTACH", "tracefs")], &[]);
    let line = feed.wait_stderr("tracepoints");
    assert!(
        line.contains("18 tracepoints") && !line.contains("raw"),
        "not every hook through tracefs: {line}"
    );
    fork_exit_3_and_reap(&feed);
    let marker = format!("tracefs-{}", std::process::id());
    let run = actor(ACTOR, &["exec-self", &marker]);
    let exec = exec_with(&feed, run.pid, &marker);
    let exe = text(&exec, &["process", "executable"]).unwrap_or("");
    assert!(exe.ends_with("/actor"), "executable {exe}: {exec}");
    // A bound socket's end through tracefs' tcp_destroy_sock.
    watcher_tests::bound_then_lingering(&feed, ACTOR);
}

/// The system calls through their tracepoints (`WATCHER_ATTACH=no-fentry`;
/// the default where the kernel refuses fentry/fexit, as this host's 6.18
/// does — in the matrix's guests the default is fentry/fexit, and every
/// other test there runs through those): bind and connect through their
/// exit tracepoints alone (arguments from the saved registers), wait4 and
/// waitid through pairs. A failed bind with its port, a refused connect
/// with its destination, and reaps by wait4 and waitid.
#[test]
fn through_system_call_tracepoints_binds_connects_and_waits_still_come() {
    syscalls_through_tracepoints("no-fentry", "16 tracepoints", true);
}

/// The same with bind and connect through their entry and exit pairs
/// (`WATCHER_ATTACH=pairs`: what kernels before 5.15, or without the saved
/// registers in BTF, get), and the TCP state changes through the plain raw
/// tracepoint rather than the BTF-typed one (`raw`: where the kernel
/// refuses that): the holder's listen and the refused connect's outcome.
#[test]
fn through_entry_and_exit_pairs_binds_connects_and_waits_still_come() {
    syscalls_through_tracepoints("pairs,raw", "18 tracepoints", false);
}

fn syscalls_through_tracepoints(attach: &str, count: &str, exit_only: bool) {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::start_with(&["trace", "--json"], &[("WATCHER_ATTACH", attach)], &[]);
    let line = feed.wait_stderr("tracepoints");
    assert!(
        line.contains(count) && line.contains("system calls through tracepoints"),
        "the system calls not through their tracepoints: {line}"
    );
    assert_eq!(
        line.contains("bind, connect through the exit tracepoint alone"),
        exit_only,
        "{line}"
    );
    // `raw`: the TCP state changes' plain raw tracepoint, not the BTF-typed one.
    assert_eq!(
        line.contains("BTF-typed: inet_sock_set_state"),
        !attach.contains("raw"),
        "{line}"
    );
    fork_exit_3_and_reap(&feed);
    waitid_reap(&feed);
    failed_bind(&feed);
    refused_connect(&feed);
}

/// The exec record of `actor exec-self ARG` (the actor execs itself as
/// `actor exit 0 ARG`), found by `ARG`'s first bytes.
fn exec_with(feed: &Feed, pid: u32, arg_start: &str) -> Value {
    feed.wait_for_related(
        "exec of the actor with the long argument",
        |v| pid_is(v, pid),
        |v| {
            is(v, "exec")
                && pid_is(v, pid)
                && v["args"].as_array().is_some_and(|a| {
                    a.len() == 4 && a[3].as_str().is_some_and(|x| x.starts_with(arg_start))
                })
        },
    )
}

/// Bytes of an argument vector as the kernel keeps it (NUL-separated).
fn argv_bytes(exec: &Value) -> usize {
    let a = exec["args"].as_array().expect("args");
    a.iter()
        .map(|x| x.as_str().expect("string").len())
        .sum::<usize>()
        + a.len()
        - 1
}

#[test]
fn long_command_lines_come_whole_from_the_kernel_up_to_the_cap() {
    let Some(_machine) = beside_others() else {
        return;
    };
    // A watcher of its own, stopped while the programs run and end: it
    // reads their exec records when /proc has nothing more to say about them.
    let feed = Feed::start(&["trace", "--json", "--type", "exec"]);
    let tag = format!("whole-{}-", std::process::id());
    let long = format!("{tag}{}END", "x".repeat(3000));
    let tag2 = format!("cut-{}-", std::process::id());
    let huge = format!("{tag2}{}", "y".repeat(20_000));
    let (run, run2) = {
        let _stopped = feed.stopped();
        (
            actor(ACTOR, &["exec-self", &long]),
            actor(ACTOR, &["exec-self", &huge]),
        )
    };
    // 3 KB, a build server's compiler line: whole, from the exec record.
    let exec = exec_with(&feed, run.pid, &tag);
    assert_eq!(
        exec["args"][3].as_str(),
        Some(long.as_str()),
        "the whole argument"
    );
    assert_eq!(exec["exec"]["args_truncated"], false, "{}", exec["exec"]);
    assert_eq!(
        text(&exec, &["process", "command_line"]),
        Some(format!("actor exit 0 {long}").as_str())
    );
    // 20 KB: the first 4096 bytes (the default cap), and said to be cut.
    let exec = exec_with(&feed, run2.pid, &tag2);
    assert_eq!(exec["exec"]["args_truncated"], true, "{}", exec["exec"]);
    assert_eq!(argv_bytes(&exec), 4096, "the default cap");
    assert!(huge.starts_with(exec["args"][3].as_str().unwrap_or("-")));
}

#[test]
fn the_command_line_cap_is_the_operators() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::start(&["trace", "--json", "--type", "exec", "--args-bytes", "512"]);
    let tag = format!("cap-{}-", std::process::id());
    let long = format!("{tag}{}", "z".repeat(3000));
    let run = actor(ACTOR, &["exec-self", &long]);
    let exec = exec_with(&feed, run.pid, &tag);
    assert_eq!(exec["exec"]["args_truncated"], true, "{}", exec["exec"]);
    assert_eq!(argv_bytes(&exec), 512, "--args-bytes 512");
    // Beyond what the kernel side can hold: refused, with the range.
    let out = std::process::Command::new(watcher_bin())
        .args(["trace", "--args-bytes", "65536"])
        .output()
        .expect("watcher");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--args-bytes") && err.contains("16384"),
        "{err}"
    );
}

#[test]
fn death_by_sigkill() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let run = actor(ACTOR, &["sigkill"]);
    let child = run.get("child") as u32;
    let exit = feed.wait_for_related(
        "exit by SIGKILL",
        |v| pid_is(v, child),
        |v| is(v, "exit") && pid_is(v, child),
    );
    assert_eq!(text(&exit, &["exit", "signal"]), Some("SIGKILL"), "{exit}");
    assert_eq!(num(&exit, &["exit", "signal_number"]), Some(9), "{exit}");
    assert!(
        exit["process"].get("exit_code").is_none(),
        "killed: no exit code: {exit}"
    );
    // Its cause: the signal, sent by its parent (signal/signal_generate).
    assert_eq!(
        text(&exit, &["exit", "cause", "kind"]),
        Some("signal"),
        "{exit}"
    );
    assert_eq!(
        num(&exit, &["exit", "cause", "sender", "pid"]),
        Some(run.pid as u64),
        "{exit}"
    );
    assert_eq!(
        text(&exit, &["exit", "cause", "sender", "relation"]),
        Some("parent"),
        "{exit}"
    );
    feed.wait_for("reap of the killed child", |v| {
        is(v, "reap") && pid_is(v, child)
    });
}

#[test]
fn a_kill_by_another_process_names_the_sender() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let pid = victim.id();
    feed.wait_for("the victim's exec", |v| is(v, "exec") && pid_is(v, pid));
    let mut killer = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .spawn()
        .expect("kill");
    let killer_pid = killer.id();
    let _ = killer.wait();
    let _ = victim.wait();
    let exit = feed.wait_for_related(
        "the victim's exit naming the kill process",
        |v| pid_is(v, pid),
        |v| is(v, "exit") && pid_is(v, pid) && v["exit"]["process_exited"] == true,
    );
    let cause = &exit["exit"]["cause"];
    assert_eq!(cause["kind"], "signal", "{exit}");
    assert_eq!(
        num(cause, &["sender", "pid"]),
        Some(killer_pid as u64),
        "the sender is the kill process: {exit}"
    );
    assert_eq!(cause["sender"]["relation"], "other", "{exit}");
    assert!(
        text(cause, &["description"]).is_some_and(
            |d| d.starts_with(&format!("SIGKILL from pid {killer_pid} (kill -KILL {pid})"))
        ),
        "{exit}"
    );
}

#[test]
fn a_fault_is_a_fault() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let run = actor_any(ACTOR, &["segv"]);
    let exit = feed.wait_for_related(
        "the faulting actor's exit",
        |v| pid_is(v, run.pid),
        |v| is(v, "exit") && pid_is(v, run.pid) && v["exit"]["process_exited"] == true,
    );
    assert_eq!(text(&exit, &["exit", "signal"]), Some("SIGSEGV"), "{exit}");
    assert_eq!(
        text(&exit, &["exit", "cause", "kind"]),
        Some("fault"),
        "{exit}"
    );
    assert!(
        exit["exit"]["cause"].get("sender").is_none(),
        "the kernel sent it: {exit}"
    );
}

#[test]
fn reap_by_waitid() {
    let Some(_machine) = beside_others() else {
        return;
    };
    waitid_reap(&Feed::shared());
}

/// `actor waitid`'s child, reaped by waitid: its record (method, reaper, exit code).
fn waitid_reap(feed: &Feed) {
    let run = actor(ACTOR, &["waitid"]);
    let child = run.get("child") as u32;
    let reap = feed.wait_for_related(
        "reap by waitid",
        |v| pid_is(v, child),
        |v| is(v, "reap") && pid_is(v, child),
    );
    assert_eq!(text(&reap, &["reap", "method"]), Some("waitid"), "{reap}");
    assert_eq!(
        num(&reap, &["reap", "reaper", "pid"]),
        Some(run.pid as u64),
        "{reap}"
    );
    assert_eq!(num(&reap, &["process", "exit_code"]), Some(5), "{reap}");
}

#[test]
fn reap_without_wait_when_sigchld_is_ignored() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let run = actor(ACTOR, &["ignore-sigchld"]);
    let child = run.get("child") as u32;
    let reap = feed.wait_for_related(
        "reap without wait",
        |v| pid_is(v, child),
        |v| is(v, "reap") && pid_is(v, child),
    );
    assert_eq!(text(&reap, &["reap", "method"]), Some("free"), "{reap}");
    assert!(reap["reap"].get("reaper").is_none(), "{reap}");
}

/// A process that ends with children hands them to the kernel's choice of
/// reaper — here a child subreaper above it, not init — and watcher learns
/// that choice from the kernel side at the exit (`check_reports_every_prerequisite`
/// shows it is the kernel side that tells, on every kernel of the matrix): the
/// inherited zombies are counted against the subreaper, whose accumulation
/// opens and resolves when it reaps them.
#[test]
fn zombies_orphaned_under_a_subreaper_are_its_own() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let mut sub = watcher_tests::spawn_actor(ACTOR, &["subreaper-orphans", "6"]);
    let middle: u64 = sub.value("middle").parse().unwrap();
    sub.value("orphaned");
    let parent_is =
        |v: &Value| watcher_tests::finding_pids(v, Some("parent")).contains(&(sub.pid as u64));
    let acc = feed.wait_for("the subreaper's zombie_accumulation", |v| {
        watcher_tests::finding(v, "zombie_accumulation", "open") && parent_is(v)
    });
    let zombies = acc["details"]["zombie_pids"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(zombies, 6, "the six inherited zombies: {acc}");
    assert!(
        !watcher_tests::finding_pids(&acc, None).contains(&middle),
        "the middle, gone, is not part of it: {acc}"
    );
    sub.line();
    assert_eq!(sub.value("reaped"), "6");
    feed.wait_for("the subreaper's accumulation resolved", |v| {
        watcher_tests::finding(v, "zombie_accumulation", "resolved") && v["id"] == acc["id"]
    });
}

#[test]
fn threads_are_told_from_processes() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let run = actor(ACTOR, &["thread"]);
    let tid = run.get("tid");
    let fork = feed.wait_for_related(
        "thread creation",
        |v| pid_is(v, run.pid),
        |v| is(v, "fork") && num(v, &["process", "thread", "id"]) == Some(tid),
    );
    assert_eq!(fork["fork"]["thread"], true, "{fork}");
    assert!(
        pid_is(&fork, run.pid),
        "a thread belongs to its process: {fork}"
    );
    let exit = feed.wait_for("thread exit", |v| {
        is(v, "exit") && num(v, &["process", "thread", "id"]) == Some(tid)
    });
    assert_eq!(exit["exit"]["process_exited"], false, "{exit}");
}

/// Without `--threads` the kernel writes no thread creation and no exit of
/// a thread that does not end its process (nothing decides on them): 500
/// threads come and go, and the kernel events counted (every record read,
/// shown or not) do not grow by them; the process's own records still come.
#[test]
fn threads_are_not_written_unless_asked_for() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let dir = watcher_tests::temp_dir("threads");
    let port = watcher_tests::free_port();
    let cfg = watcher_tests::write_config(
        &dir,
        &format!(
            "[feed]\ntypes = [\"all\"]\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[health]\nstatus_file = \"{}\"\n",
            dir.join("status.json").display()
        ),
    );
    let feed = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    let run = actor(ACTOR, &["threads", "500"]);
    let exit = feed.wait_for("the process's exit", |v| {
        is(v, "exit") && pid_is(v, run.pid)
    });
    assert_eq!(exit["exit"]["process_exited"], true, "{exit}");
    // Every record up to the process's exit is out: none is about one of
    // its 500 threads (counted per process, not host-wide, where sibling
    // tests fork at the same time).
    let threads: Vec<Value> = feed
        .records()
        .into_iter()
        .filter(|v| is(v, "fork") || is(v, "exit"))
        .filter(|v| pid_is(v, run.pid) && v["process"].get("thread").is_some())
        .collect();
    assert!(
        threads.is_empty(),
        "500 threads came and went: {} thread records: {:?}",
        threads.len(),
        threads.iter().take(3).collect::<Vec<_>>()
    );
    // The process itself is there (its fork from the test, its exit).
    assert!(
        feed.records()
            .iter()
            .any(|v| is(v, "fork") && pid_is(v, run.pid)),
        "the process's own fork"
    );
}

#[test]
fn the_last_thread_ends_the_process_when_the_leader_went_first() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let run = actor(ACTOR, &["leader-exits-first"]);
    let tid = run.get("tid");
    let leader = feed.wait_for_related(
        "the leader's exit",
        |v| pid_is(v, run.pid),
        |v| is(v, "exit") && pid_is(v, run.pid) && v["process"].get("thread").is_none(),
    );
    assert_eq!(
        leader["exit"]["process_exited"], false,
        "the other thread still runs: {leader}"
    );
    let last = feed.wait_for_related(
        "the last thread's exit",
        |v| pid_is(v, run.pid),
        |v| {
            is(v, "exit") && pid_is(v, run.pid) && num(v, &["process", "thread", "id"]) == Some(tid)
        },
    );
    assert_eq!(
        last["exit"]["process_exited"], true,
        "the last thread ends the process: {last}"
    );
    let exits = feed
        .records()
        .into_iter()
        .filter(|v| is(v, "exit") && pid_is(v, run.pid))
        .count();
    assert_eq!(exits, 2, "one exit per thread");
    feed.wait_for("the reap", |v| is(v, "reap") && pid_is(v, run.pid));
}

#[test]
fn bind_ipv4_loopback() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let run = actor(ACTOR, &["bind4"]);
    let b = feed.wait_for_related(
        "bind 127.0.0.1:0",
        |v| pid_is(v, run.pid),
        |v| is(v, "bind") && pid_is(v, run.pid),
    );
    assert_common(&b);
    assert_eq!(text(&b, &["source", "address"]), Some("127.0.0.1"), "{b}");
    assert_eq!(
        num(&b, &["source", "port"]),
        Some(0),
        "the bind asked for port 0: {b}"
    );
    assert_eq!(text(&b, &["event", "outcome"]), Some("success"), "{b}");
    assert_eq!(text(&b, &["network", "transport"]), Some("tcp"), "{b}");
    assert_eq!(text(&b, &["network", "type"]), Some("ipv4"), "{b}");
    assert!(num(&b, &["socket", "fd"]).is_some(), "{b}");
}

#[test]
fn bind_ipv6_loopback() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let run = actor(ACTOR, &["bind6"]);
    let b = feed.wait_for_related(
        "bind [::1]:0",
        |v| pid_is(v, run.pid),
        |v| is(v, "bind") && pid_is(v, run.pid),
    );
    assert_eq!(text(&b, &["source", "address"]), Some("::1"), "{b}");
    assert_eq!(text(&b, &["network", "type"]), Some("ipv6"), "{b}");
    assert_eq!(text(&b, &["event", "outcome"]), Some("success"), "{b}");
}

#[test]
fn bind_fails_with_eaddrinuse() {
    let Some(_machine) = beside_others() else {
        return;
    };
    failed_bind(&Feed::shared());
}

/// `actor addrinuse`: the failed bind (EADDRINUSE, its port) and the holder's listen.
fn failed_bind(feed: &Feed) {
    let run = actor(ACTOR, &["addrinuse"]);
    let port = run.get("port");
    assert_eq!(run.get("errno"), 98);
    let b = feed.wait_for_related(
        "failed bind",
        |v| pid_is(v, run.pid),
        |v| is(v, "bind") && pid_is(v, run.pid) && v.get("error").is_some(),
    );
    assert_eq!(text(&b, &["error", "code"]), Some("EADDRINUSE"), "{b}");
    assert_eq!(num(&b, &["source", "port"]), Some(port), "{b}");
    assert_eq!(text(&b, &["event", "outcome"]), Some("failure"), "{b}");
    // The listener that holds the port was seen too.
    feed.wait_for("the holder's listen", |v| {
        is(v, "tcp_state")
            && text(v, &["tcp", "new_state"]) == Some("LISTEN")
            && num(v, &["source", "port"]) == Some(port)
    });
}

#[test]
fn bind_fails_with_eaddrnotavail() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let run = actor(ACTOR, &["notavail"]);
    assert_eq!(run.get("errno"), 99);
    let b = feed.wait_for_related(
        "bind to an address not on this host",
        |v| pid_is(v, run.pid),
        |v| is(v, "bind") && pid_is(v, run.pid),
    );
    assert_eq!(text(&b, &["error", "code"]), Some("EADDRNOTAVAIL"), "{b}");
    assert_eq!(text(&b, &["source", "address"]), Some("192.0.2.1"), "{b}");
    assert_eq!(num(&b, &["source", "port"]), Some(4242), "{b}");
}

#[test]
fn blocking_connect_to_a_closed_port_is_refused() {
    let Some(_machine) = beside_others() else {
        return;
    };
    refused_connect(&Feed::shared());
}

/// `actor connect-refused`: the refused connect, its destination and outcome.
fn refused_connect(feed: &Feed) {
    let run = actor(ACTOR, &["connect-refused"]);
    let port = run.get("port");
    let c = feed.wait_for_related(
        "refused connect",
        |v| pid_is(v, run.pid),
        |v| is(v, "connect") && pid_is(v, run.pid),
    );
    assert_eq!(text(&c, &["error", "code"]), Some("ECONNREFUSED"), "{c}");
    assert_eq!(
        text(&c, &["destination", "address"]),
        Some("127.0.0.1"),
        "{c}"
    );
    assert_eq!(num(&c, &["destination", "port"]), Some(port), "{c}");
    assert_eq!(text(&c, &["event", "outcome"]), Some("failure"), "{c}");
}

#[test]
fn nonblocking_connect_outcome_comes_from_tcp_state() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    let run = actor(ACTOR, &["connect-nonblocking"]);
    let port = run.get("port");
    let source = run.get("source");
    let c = feed.wait_for_related(
        "connect in progress",
        |v| pid_is(v, run.pid),
        |v| is(v, "connect") && pid_is(v, run.pid),
    );
    assert_eq!(text(&c, &["error", "code"]), Some("EINPROGRESS"), "{c}");
    assert_eq!(text(&c, &["event", "outcome"]), Some("unknown"), "{c}");
    // The refusal runs in softirq context; it must still name the caller.
    // The connection is told by both ports: another test's actor may pick
    // the same closed port at the same time.
    let this_connection = move |v: &Value| {
        is(v, "tcp_state")
            && num(v, &["destination", "port"]) == Some(port)
            && num(v, &["source", "port"]) == Some(source)
    };
    let t = feed.wait_for_related(
        "SYN_SENT → CLOSE attributed to the caller",
        this_connection,
        move |v| this_connection(v) && text(v, &["tcp", "old_state"]) == Some("SYN_SENT"),
    );
    assert_eq!(text(&t, &["tcp", "new_state"]), Some("CLOSE"), "{t}");
    assert_eq!(text(&t, &["event", "outcome"]), Some("failure"), "{t}");
    assert!(pid_is(&t, run.pid), "attributed to pid {}: {t}", run.pid);
}

#[test]
fn the_watchers_own_activity_is_not_traced() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::shared();
    // Make sure the feed is live, then look at everything it printed.
    let run = actor(ACTOR, &["exit", "0"]);
    feed.wait_for("the actor's exit", |v| is(v, "exit") && pid_is(v, run.pid));
    let own: Vec<Value> = feed
        .records()
        .into_iter()
        .filter(|v| pid_is(v, feed.pid) && !is(v, "tcp_state"))
        .collect();
    assert!(
        own.is_empty(),
        "records of the watcher itself (pid {}): {own:?}",
        feed.pid
    );
}

/// A separate watcher whose stdout we read as text, ended by SIGTERM.
fn run_watcher_until(
    args: &[&str],
    trigger: impl Fn(),
    done: impl Fn(&str) -> bool,
) -> (String, String, Option<i32>) {
    let mut child = Command::new(watcher_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watcher");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send((true, l));
        }
    });
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx2.send((false, l));
        }
    });
    let (mut out, mut err) = (String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut triggered = false;
    let mut finished = false;
    while Instant::now() < deadline && !finished {
        let Ok((is_out, l)) = rx.recv_timeout(Duration::from_millis(200)) else {
            if triggered {
                trigger();
            }
            continue;
        };
        if is_out {
            out.push_str(&l);
            out.push('\n');
            finished = done(&out);
        } else {
            err.push_str(&l);
            err.push('\n');
            if l.contains("tracepoints") && !triggered {
                triggered = true;
                trigger();
            }
        }
    }
    assert!(
        finished,
        "watcher {args:?} never printed what was expected; stdout:\n{out}\nstderr:\n{err}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    while let Ok((is_out, l)) = rx.recv_timeout(Duration::from_millis(500)) {
        let s = if is_out { &mut out } else { &mut err };
        s.push_str(&l);
        s.push('\n');
    }
    (out, err, status.code())
}

#[test]
fn readable_lines_filters_and_a_clean_sigterm() {
    let Some(_machine) = beside_others() else {
        return;
    };
    // Human-readable output, filtered to bind records of one port.
    let port = watcher_tests::free_port();
    let p = port.to_string();
    let (out, err, code) = run_watcher_until(
        &["trace", "--type", "bind", "--port", &p],
        || {
            actor(ACTOR, &["listen-port", &p]);
            actor(ACTOR, &["bind4"]);
        },
        |out| {
            out.lines()
                .any(|l| l.contains(&format!("127.0.0.1:{p} ok")))
        },
    );
    assert_eq!(
        code,
        Some(0),
        "SIGTERM must end trace with exit 0; stderr:\n{err}"
    );
    for l in out.lines() {
        assert!(
            l.contains(" bind ") && l.contains(&format!(":{p} ")),
            "a line the filters should have dropped: {l}"
        );
        assert!(l.contains("actor"), "the line names the command: {l}");
    }
    assert!(
        err.contains("events in") && err.contains("lost"),
        "summary on stderr: {err}"
    );
}

#[test]
fn missing_privileges_give_one_clear_line() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let out = Command::new(watcher_bin())
        .args(["trace", "--json"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run watcher as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("needs root") && err.contains("CAP_BPF"),
        "says what to do: {err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_arguments_exit_2() {
    let out = Command::new(watcher_bin())
        .args(["trace", "--ring-mib", "3"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
    let out = Command::new(watcher_bin())
        .args(["trace", "--type", "nope"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_reports_every_prerequisite() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let out = Command::new(watcher_bin())
        .arg("check")
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for what in [
        "privileges",
        "kernel",
        "tracefs",
        "btf",
        "tracepoint sched/sched_process_exit",
        "tracepoint sock/inet_sock_set_state",
        "load",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(what)),
            "no ok line for {what}:\n{text}"
        );
    }
    // What the kernel side does on the kernels watcher supports (6.1 and
    // later): it names an ending process's new parent, and the process and
    // TCP state hooks are raw tracepoints (their prototypes read from BTF).
    for (what, how) in [
        ("new parents", "read by the kernel side"),
        (
            "load",
            "raw: task_newtask, sched_process_exec, sched_process_exit, sched_process_free, inet_sock_set_state",
        ),
        // The socket hooks BTF-typed: their members read as plain loads.
        ("load", "BTF-typed: inet_sock_set_state, tcp_destroy_sock)"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(what) && l.contains(how)),
            "{what}: not {how}:\n{text}"
        );
    }
    // The system calls: through fentry/fexit where the kernel allows them
    // (the matrix's guests say they must: WATCHER_EXPECT_FENTRY=1), else
    // through their tracepoints, with why.
    let load = text
        .lines()
        .find(|l| l.starts_with("ok") && l.contains("load"))
        .unwrap_or_default();
    let all =
        "system calls through fentry/fexit: kernel_wait4, kernel_waitid, __sys_bind, __sys_connect";
    if std::env::var_os("WATCHER_EXPECT_FENTRY").is_some() {
        assert!(
            load.contains(all) && !load.contains("through tracepoints"),
            "{load}"
        );
        assert!(load.contains(" 10 tracepoints"), "{load}");
    } else {
        assert!(
            load.contains(all) || load.contains("system calls through tracepoints (fentry/fexit: "),
            "{load}"
        );
    }
    // As nobody: the privilege line fails and says what to do; exit non-zero.
    let out = Command::new(watcher_bin())
        .arg("check")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("FAIL")
            && l.contains("privileges")
            && l.contains("run it as root")),
        "{text}"
    );
}

#[test]
fn tracefs_is_mounted_when_missing() {
    let Some(_machine) = beside_others() else {
        return;
    };
    // In a private mount namespace, so the host's tracefs is left alone.
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         if [ -e /sys/kernel/tracing/events ]; then echo still-mounted; exit 3; fi; exec {} check",
        watcher_bin().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) is needed for this test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{text}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("tracefs")),
        "{text}"
    );
}

/// The wakeup policy (`watcher_common::wake`): every record that can decide
/// a finding wakes the reader at once. With bulk records drained only every
/// 5 s, each deciding record still reaches the output well within that
/// (bounded at 2.5 s here: a wakeup takes microseconds, the bound is for a
/// loaded machine) — a failed bind, the listen behind it, a listener's
/// close, a refused connect and its SYN_SENT → CLOSE, an exit with code 1,
/// an exit its parent is not waiting for, and a death by signal.
#[test]
fn deciding_records_wake_the_reader_at_once() {
    let Some(_alone) = alone() else {
        return;
    };
    // (Timed: not beside a test that loads the machine.)
    let feed = Feed::start(&["trace", "--json", "--bulk-ms", "5000"]);
    let prompt = |what: &str, v: &Value| {
        let took = feed
            .arrival(v)
            .saturating_sub(num(v, &["mono_ns"]).expect("mono_ns"));
        assert!(
            took < 2_500_000_000,
            "{what} reached the output {} ms after it happened: it did not wake the reader (bulk period 5 s): {v}",
            took / 1_000_000
        );
    };
    let run = actor(ACTOR, &["addrinuse"]);
    let port = run.get("port");
    let v = feed.wait_for("the failed bind", |v| {
        is(v, "bind") && pid_is(v, run.pid) && v.get("error").is_some()
    });
    prompt("a failed bind", &v);
    let v = feed.wait_for("the listen", |v| {
        is(v, "tcp_state")
            && text(v, &["tcp", "new_state"]) == Some("LISTEN")
            && num(v, &["source", "port"]) == Some(port)
    });
    prompt("a listen", &v);
    let v = feed.wait_for("the listener's close", |v| {
        is(v, "tcp_state")
            && text(v, &["tcp", "old_state"]) == Some("LISTEN")
            && num(v, &["source", "port"]) == Some(port)
    });
    prompt("a listener's close", &v);
    let run = actor(ACTOR, &["connect-refused"]);
    let port = run.get("port");
    let v = feed.wait_for("the refused connect", |v| {
        is(v, "connect") && pid_is(v, run.pid)
    });
    prompt("a refused connect", &v);
    let v = feed.wait_for("the handshake's end", |v| {
        is(v, "tcp_state")
            && text(v, &["tcp", "old_state"]) == Some("SYN_SENT")
            && num(v, &["destination", "port"]) == Some(port)
    });
    prompt("SYN_SENT → CLOSE", &v);
    let run = actor_any(ACTOR, &["exit", "1"]);
    let v = feed.wait_for("the exit with code 1", |v| {
        is(v, "exit") && pid_is(v, run.pid)
    });
    prompt("an exit with code 1", &v);
    let run = actor(ACTOR, &["zombies", "1", "100"]);
    let child: u64 = run.values["children"].parse().expect("pid");
    let v = feed.wait_for("the unwaited child's exit", |v| {
        is(v, "exit") && num(v, &["process", "pid"]) == Some(child)
    });
    prompt("an exit its parent is not waiting for", &v);
    let run = actor(ACTOR, &["sigkill"]);
    let child: u64 = run.get("child");
    let v = feed.wait_for("the killed child's exit", |v| {
        is(v, "exit") && num(v, &["process", "pid"]) == Some(child)
    });
    prompt("a death by SIGKILL", &v);
    // An exec: a new instance (duplicate_instances, a crash loop's restart).
    let run = actor(ACTOR, &["sleep-ms", "1"]);
    let v = feed.wait_for("the exec", |v| is(v, "exec") && pid_is(v, run.pid));
    prompt("an exec", &v);
}

/// The first failed bind of `pid` written after kernel time `after`, and its time.
fn next_failed_bind(feed: &Feed, pid: u32, after: u64) -> (Value, u64) {
    let v = feed.wait_for("the failed bind", |v| {
        is(v, "bind")
            && pid_is(v, pid)
            && v.get("error").is_some()
            && num(v, &["mono_ns"]).unwrap_or(0) > after
    });
    let at = num(&v, &["mono_ns"]).expect("mono_ns");
    (v, at)
}

/// A deciding record wakes a sleeping reader however recently its CPU woke
/// it (the kernel once allowed one wakeup per CPU per interval): with a 1 s
/// interval and a 5 s bulk period, a second failed bind 300 ms after the
/// first (on the same CPU) still reaches the output at once, not at the next drain.
#[test]
fn an_urgent_record_after_the_reader_caught_up_wakes_it_again() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::start(&[
        "trace",
        "--json",
        "--bulk-ms",
        "5000",
        "--wakeup-us",
        "1000000",
    ]);
    // Three failed binds 300 ms apart from one process pinned to CPU 0 (no
    // process start between them: they stay within the 1 s interval even on
    // an emulated CPU).
    let run = actor(
        "taskset",
        &["-c", "0", ACTOR, "addrinuse-repeat", "3", "300"],
    );
    let mut last = 0u64;
    for n in 0..3 {
        let (v, at) = next_failed_bind(&feed, run.pid, last);
        // What is tested needs the bind within the wakeup interval (1 s) of the previous one.
        assert!(
            n == 0 || at.saturating_sub(last) < 1_000_000_000,
            "failed bind {n} came {} ms after the previous one, past the 1 s wakeup interval: nothing was tested",
            at.saturating_sub(last) / 1_000_000
        );
        let took = feed.arrival(&v).saturating_sub(at);
        assert!(
            took < 2_000_000_000,
            "failed bind {n} ({} ms after the previous one) reached the output {} ms after it happened: it did not wake the reader: {v}",
            at.saturating_sub(last) / 1_000_000,
            took / 1_000_000
        );
        last = at;
    }
}

/// Entry `i` of the watcher `pid`'s `READER` map, read with the bpf system
/// call: no process started. (A bpftool run per sample was a fork each: a
/// test sampling as fast as it could forked 500 a second for seconds — a
/// `fork_storm` of the test itself.)
fn reader_entry(pid: u32, i: u32) -> Option<u64> {
    watcher_tests::bpf_array_u64(pid, "READER", i)
}

/// The reader's word in the kernel (`READER`, read with the bpf system call): asleep
/// while nothing needs it — then a deciding record wakes it at once (failed
/// binds 0.7 s apart from one running process reach the output within
/// 0.2 s, although the bulk period is 5 s and the drains before the
/// detectors' once-a-second deadlines would take up to 1 s) — and asleep
/// (or dozing: a re-drain planned for records that just came) again once
/// it has read it. A reader that never said it sleeps would never be
/// woken; a kernel side that did not wake it would leave the binds for the
/// bulk period.
#[test]
fn the_reader_says_in_the_kernel_when_it_sleeps_and_a_deciding_record_wakes_it() {
    let Some(_machine) = beside_others() else {
        return;
    };
    let feed = Feed::start(&["trace", "--json", "--bulk-ms", "5000"]);
    // (Entry 0 is the word; 0: asleep, 3: dozing — both woken by a
    // deciding record; 1 and 2: awake.)
    let asleep = || matches!(reader_entry(feed.pid, 0), Some(0 | 3));
    watcher_tests::eventually("the reader says it sleeps", || asleep().then_some(()));
    let run = actor(ACTOR, &["addrinuse-repeat", "6", "700"]);
    let mut last = 0u64;
    for n in 0..6 {
        let (v, at) = next_failed_bind(&feed, run.pid, last);
        let took = feed.arrival(&v).saturating_sub(at);
        // (The first follows the actor's exec, which wakes the reader too.)
        assert!(
            n == 0 || took < 200_000_000,
            "failed bind {n} reached the output {} ms after it happened: it did not wake the sleeping reader: {v}",
            took / 1_000_000
        );
        last = at;
        watcher_tests::eventually("the reader says it sleeps again", || asleep().then_some(()));
    }
}

/// Forks are urgent in the kernel while a fork storm can be decided
/// (`READER`'s second entry): 600 live children in a
/// second grow their parent's subtree past half the growth limit (1,000),
/// and for a growth window (2 s) from then a fork wakes the reader like
/// any deciding record; then forks are bulk again.
#[test]
fn forks_are_urgent_in_the_kernel_while_a_fork_storm_can_be_decided() {
    let Some(_alone) = alone() else {
        return;
    };
    // (Not beside the tests that fork on every CPU: their fork storms'
    // candidates would share the entry.)
    let feed = Feed::start(&["trace", "--json", "--type", "fork,finding"]);
    let forks_until = || reader_entry(feed.pid, 1).unwrap_or(0);
    let mut kids = watcher_tests::spawn_actor(ACTOR, &["copies", "600", "4000"]);
    // Sampled while the children come and after (their candidacy lasts 2 s).
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        seen.push(forks_until());
        // (Paced: the value holds for a growth window, 2 s.)
        std::thread::sleep(Duration::from_millis(2));
    }
    kids.value("children");
    // The children's forks, in time order.
    let forks = watcher_tests::eventually("the children's forks", || {
        let mut forks: Vec<u64> = feed
            .records()
            .iter()
            .filter(|v| {
                is(v, "fork") && num(v, &["process", "parent", "pid"]) == Some(kids.pid as u64)
            })
            .filter_map(|v| num(v, &["mono_ns"]))
            .collect();
        forks.sort_unstable();
        (forks.len() >= 600).then_some(forks)
    });
    // Urgent until a growth window after about the 500th child was forked
    // (the subtrees of the actor and of its ancestors grow together).
    let window = 2_000_000_000;
    let ours = forks[480] + window..=forks[509] + window;
    assert!(
        seen.iter().any(|u| ours.contains(u)),
        "forks never said urgent until a growth window after the 481st–510th child ({ours:?}); seen: {:?}",
        {
            let mut s = seen.clone();
            s.dedup();
            s
        }
    );
    let me = [kids.pid as u64, std::process::id() as u64];
    kids.finish();
    // No fork storm of these children: 600 is not the limit.
    assert!(
        feed.records().iter().all(|v| {
            !watcher_tests::finding(v, "fork_storm", "open")
                || !watcher_tests::finding_pids(v, None)
                    .iter()
                    .any(|p| me.contains(p))
        }),
        "a fork storm opened for 600 children"
    );
}

/// A watcher whose `fork_storm` rate is 50 a second (sustained 2 s) and
/// whose bulk records are drained only every 5 s, and a process forking
/// 120 times a second (an emulated CPU reaches that too).
fn fork_rate_feed(dir: &std::path::Path) -> std::sync::Arc<Feed> {
    let cfg =
        watcher_tests::write_config(dir, "[detect.fork_storm]\nrate_per_s = 50\nsustain_s = 2\n");
    Feed::start(&[
        "trace",
        "--json",
        "--bulk-ms",
        "5000",
        "--type",
        "finding",
        "--config",
        cfg.to_str().expect("path"),
    ])
}

/// The fork that reaches `fork_storm`'s rate in its parent's second wakes
/// the reader: the kernel counts each parent's forks per second itself and
/// makes that fork urgent, and no other of the storm's
/// (`watcher_common::wake::fork`; the count is read in
/// `the_kernel_counts_each_parents_forks_per_second`). With bulk records
/// drained only every 5 s, the storm is written within 0.2 s of the fork
/// that opened it; left to the drains, it waits for the reader's next
/// timed one (0.6–0.9 s in three of four runs with the urgency taken out).
#[test]
fn the_fork_that_reaches_the_rate_in_its_parents_second_wakes_the_reader() {
    let Some(_alone) = alone() else {
        return;
    };
    // (Timed, and the parent's only: not beside the tests that fork on every CPU.)
    let dir = watcher_tests::temp_dir("fork-rate-wakes");
    let feed = fork_rate_feed(&dir);
    let run = watcher_tests::spawn_actor(ACTOR, &["fork-fast", "3000", "120"]);
    let parent = run.pid as u64;
    let f = feed.wait_for("the fork storm", |v| {
        watcher_tests::finding(v, "fork_storm", "open")
            && watcher_tests::finding_pids(v, None).contains(&parent)
    });
    let took = feed
        .arrival(&f)
        .saturating_sub(num(&f, &["mono_ns"]).expect("mono_ns"));
    assert!(
        took < 200_000_000,
        "the fork storm was written {} ms after the fork that opened it: that fork did not wake the reader (bulk period 5 s): {f}",
        took / 1_000_000
    );
    run.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The kernel counts each parent's forks per second (`FORK_RATE`: tgid →
/// (second, count), read with bpftool), and userspace told it which of
/// them is urgent (`READER`'s fifth entry: `fork_storm`'s rate).
#[test]
fn the_kernel_counts_each_parents_forks_per_second() {
    let Some(_machine) = beside_others() else {
        return;
    };
    require_tool("bpftool");
    let dir = watcher_tests::temp_dir("fork-rate-count");
    let feed = fork_rate_feed(&dir);
    let rate = watcher_tests::eventually("the fork rate in the kernel", || {
        reader_entry(feed.pid, 4).filter(|&n| n != 0)
    });
    assert_eq!(rate, 50, "fork_storm's rate");
    let run = watcher_tests::spawn_actor(ACTOR, &["fork-fast", "3000", "120"]);
    let parent = run.pid;
    let counted = watcher_tests::eventually("the parent's forks counted in the kernel", || {
        watcher_tests::bpf_map_entries(feed.pid, "FORK_RATE")
            .iter()
            .find(|e| watcher_tests::bpf_bytes(&e["key"]) == parent.to_le_bytes())
            .and_then(|e| {
                let v = watcher_tests::bpf_bytes(&e["value"]);
                let count = u64::from_le_bytes(v.get(8..16)?.try_into().ok()?);
                (count > 0).then_some(count)
            })
    });
    assert!(
        counted <= 200,
        "more forks counted in one second than made: {counted}"
    );
    run.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An exec is urgent when more live processes have its name than
/// `duplicate_instances` lets a program run: the kernel counts, itself, the
/// live processes each name was given by an exec it saw (`EXEC_LIVE`: pid →
/// name; `EXEC_CROWD`: name → how many), and userspace writes the number
/// that makes an exec urgent in `READER`'s fourth entry (11 for the default
/// limit of 10; `watcher_common::wake`'s unit test has the decision both
/// ways). Twelve copies of a program under a name of its own (living 3 s),
/// and their parent: counted 13 while they live, each child under its pid; once they
/// have ended, the name is gone from the count and their pids from the
/// table (nothing left to make a later exec of that name urgent).
#[test]
fn the_kernel_counts_the_live_processes_of_each_exec_name() {
    let Some(_machine) = beside_others() else {
        return;
    };
    require_tool("bpftool");
    let feed = Feed::start(&["trace", "--json", "--type", "exec"]);
    let limit = watcher_tests::eventually("the crowd limit in the kernel", || {
        reader_entry(feed.pid, 3).filter(|&n| n != 0)
    });
    assert_eq!(
        limit, 11,
        "one more than duplicate_instances' default limit"
    );
    // The actor under a name no other test's processes have.
    let name = format!("crowd{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("watcher-crowd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bin = dir.join(&name);
    std::fs::copy(ACTOR, &bin).expect("copy the actor");
    let entries = |map: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
        watcher_tests::bpf_map_entries(feed.pid, map)
            .iter()
            .map(|e| {
                (
                    watcher_tests::bpf_bytes(&e["key"]),
                    watcher_tests::bpf_bytes(&e["value"]),
                )
            })
            .collect()
    };
    let named = |b: &[u8]| b.split(|&c| c == 0).next() == Some(name.as_bytes());
    let count = || -> Option<i64> {
        entries("EXEC_CROWD")
            .into_iter()
            .find(|(k, _)| named(k))
            .and_then(|(_, v)| v.try_into().ok().map(i64::from_le_bytes))
    };
    let mut kids =
        watcher_tests::spawn_actor(bin.to_str().expect("path"), &["copies", "12", "3000"]);
    let children: Vec<u32> = kids
        .value("children")
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(children.len(), 12);
    watcher_tests::eventually("13 live processes of the name counted", || {
        (count() == Some(13)).then_some(())
    });
    let live = entries("EXEC_LIVE");
    for c in &children {
        assert!(
            live.iter()
                .any(|(k, v)| k.as_slice() == c.to_le_bytes() && named(v)),
            "child {c} is not in EXEC_LIVE under {name}"
        );
    }
    // Their ends (3 s on) count them out.
    kids.finish();
    watcher_tests::eventually("the name gone from the count", || {
        count().is_none().then_some(())
    });
    let live = entries("EXEC_LIVE");
    assert!(
        children
            .iter()
            .all(|c| !live.iter().any(|(k, _)| k.as_slice() == c.to_le_bytes())),
        "ended children left in EXEC_LIVE"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ring layout with one ring buffer per CPU (`--ring-cpus 1`): every
/// record of processes pinned to each CPU arrives, and each process's
/// records in order although they cross rings (the fork is written on the
/// parent's CPU, the child's exit on its own); while one CPU's ring
/// overflows (the reader stopped), the loss is counted and said, and
/// another CPU's records still arrive.
#[test]
fn one_ring_per_cpu_loses_nothing_and_counts_its_own_loss() {
    let Some(_alone) = alone() else {
        return;
    };
    // (One CPU's ring must stay quiet while the other's overflows: not
    // beside a test that loads every CPU.)
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let feed = Feed::start(&["trace", "--json", "--ring-cpus", "1", "--ring-mib", "1"]);
    let order = |pid: u64| {
        let recs = feed.records();
        let at = |ty: &str| {
            recs.iter()
                .position(|v| is(v, ty) && num(v, &["process", "pid"]) == Some(pid))
        };
        (at("fork"), at("exit"), at("reap"))
    };
    for cpu in 0..cpus.min(4) {
        let c = cpu.to_string();
        // taskset pins the actor, and the child it forks, to one CPU.
        let run = actor("taskset", &["-c", &c, ACTOR, "spawn-exit", "5"]);
        let child: u64 = run.get("child");
        let exit = feed.wait_for(&format!("the exit of a child on CPU {cpu}"), |v| {
            is(v, "exit") && num(v, &["process", "pid"]) == Some(child)
        });
        assert_eq!(num(&exit, &["process", "exit_code"]), Some(5), "{exit}");
        feed.wait_for(&format!("the reap of a child on CPU {cpu}"), |v| {
            is(v, "reap") && num(v, &["process", "pid"]) == Some(child)
        });
        let (fork, exit, reap) = order(child);
        assert!(
            fork.is_some() && fork < exit && exit < reap,
            "CPU {cpu}: fork, exit, reap at {fork:?}, {exit:?}, {reap:?}"
        );
    }
    if cpus < 2 {
        // (The kernel matrix skips this test: its guests have one vCPU.)
        watcher_tests::unavailable(
            "one CPU: the overflow of one CPU's ring beside another's needs two",
        );
        return;
    }
    // The reader stops; CPU 1's ring (1 MiB) overflows with a fork loop; then a process on CPU 0.
    let stopped = feed.stopped();
    let flood = Command::new("taskset")
        .args(["-c", "1", ACTOR, "fork-loop", "8000"])
        .stdout(Stdio::null())
        .status();
    let quiet = actor_any("taskset", &["-c", "0", ACTOR, "exit", "9"]);
    drop(stopped);
    assert!(flood.is_ok_and(|s| s.success()), "the fork loop");
    let loss = feed.wait_for("a loss record", |v| {
        is(v, "loss") && text(v, &["loss", "reason"]) == Some("ring_buffer_full")
    });
    assert!(num(&loss, &["loss", "count"]).unwrap_or(0) > 0, "{loss}");
    // CPU 0's ring had room: its records came through.
    let v = feed.wait_for("the exit on CPU 0 during the overflow", |v| {
        is(v, "exit") && pid_is(v, quiet.pid)
    });
    assert_eq!(num(&v, &["process", "exit_code"]), Some(9), "{v}");
}

/// Every record's header names the task that made it — its thread, its
/// process, its real uid and its thread's name — whichever way its program
/// reads them: through helper calls (the tracefs programs, the raw
/// tracepoints, the entry and exit pairs) or by plain loads from the
/// current task typed by BTF (the exit-only bind and connect programs,
/// fexit, the BTF-typed socket hooks). Read from the recording
/// (`WATCHER_RECORD`): the records as the kernel wrote them, before any
/// process table could fill a field in.
#[test]
fn every_records_header_names_the_thread_that_made_it_however_its_program_reads_it() {
    let Some(_machine) = beside_others() else {
        return;
    };
    // (The default: BTF-typed where the kernel allows it; `no-fentry` is the
    // exit-only programs where fexit would otherwise be used.)
    for attach in ["", "no-fentry", "pairs,raw", "tracefs"] {
        headers_name_their_thread(attach);
    }
}

fn headers_name_their_thread(attach: &str) {
    use core::mem::{offset_of, size_of};
    use watcher_common::{EventKind, Header, COMM_LEN};
    let dir = watcher_tests::temp_dir("headers");
    let rec = dir.join("records.rec");
    let feed = Feed::start_with(
        &["trace", "--json"],
        &[
            ("WATCHER_ATTACH", attach),
            ("WATCHER_RECORD", rec.to_str().expect("utf-8 path")),
        ],
        &[],
    );
    let name = "hdr-thread";
    // (It makes itself a user whose real uid is 65534 and whose other ids differ.)
    let run = actor(ACTOR, &["named-thread-sockets", name]);
    let tid = run.get("tid") as u32;
    assert_ne!(tid, run.pid, "a thread of its own");
    // The process's end comes after its sockets' (the thread closed them
    // before it was joined), so every record of theirs has been read.
    feed.wait_for("the actor's exit", |v| is(v, "exit") && pid_is(v, run.pid));
    feed.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(feed.wait_exit(), Some(0), "WATCHER_ATTACH={attach}");
    let bytes = std::fs::read(&rec).expect("the recording");
    let _ = std::fs::remove_dir_all(&dir);
    let u32_at =
        |r: &[u8], at: usize| u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"));
    let mut seen = Vec::new();
    for r in watcher::kernel::decode::read_recording(&bytes) {
        // The header, as the wire definition lays it out.
        if r.len() < size_of::<Header>() || u32_at(r, offset_of!(Header, tgid)) != run.pid {
            continue;
        }
        let kind = u32_at(r, offset_of!(Header, kind));
        let comm = &r[offset_of!(Header, comm)..][..COMM_LEN];
        let comm = &comm[..comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN)];
        seen.push(kind);
        if [
            EventKind::Bind,
            EventKind::Connect,
            EventKind::TcpState,
            EventKind::SockClose,
        ]
        .iter()
        .any(|k| *k as u32 == kind)
        {
            assert_eq!(
                (
                    u32_at(r, offset_of!(Header, pid)),
                    u32_at(r, offset_of!(Header, uid)),
                    String::from_utf8_lossy(comm).as_ref()
                ),
                (tid, 65534, name),
                "record kind {kind}'s thread, uid and name (WATCHER_ATTACH={attach})"
            );
        }
    }
    // Two binds, the connect, its SYN_SENT, and the bound socket's close.
    for (kind, n) in [
        (EventKind::Bind, 2),
        (EventKind::Connect, 1),
        (EventKind::TcpState, 1),
        (EventKind::SockClose, 1),
    ] {
        assert!(
            seen.iter().filter(|k| **k == kind as u32).count() >= n,
            "{n} {kind:?} record(s) of the actor (WATCHER_ATTACH={attach}); kinds seen: {seen:?}"
        );
    }
}

/// A burst of records that cannot decide anything — a running process's
/// thread creations and ends — on a ring it fills many times over
/// (`WATCHER_RING_BYTES`: 256 KiB) well within one bulk period (500 ms),
/// starting while the reader sleeps with no drain planned: once a quarter
/// of the ring is unread, the next such record wakes it
/// (`ring_fill_wake`), and every record is read — none lost. Without that
/// wakeup the ring overflows before the reader's next drain (about 5,000
/// of the burst's 8,000 records lost here).
#[test]
fn a_burst_of_bulk_records_that_would_overflow_the_ring_wakes_the_reader_first() {
    let Some(_alone) = alone() else {
        return;
    };
    // (The release build: the test build handles a record many times
    // slower, and would be the bottleneck, not its wakeups. Only losses and
    // connects written: the counts come from its summary at exit.)
    let feed = Feed::start_release_with(
        &[
            "trace",
            "--json",
            "--threads",
            "--bulk-ms",
            "500",
            "--type",
            "loss,connect",
        ],
        &[("WATCHER_RING_BYTES", "262144")],
    );
    // 4,000 threads: about 700 KB of records.
    let n = 4000;
    let mut work = watcher_tests::spawn_actor(ACTOR, &["threads-on-line", &n.to_string()]);
    work.value("ready");
    // The reader asleep with no drain planned (`READER`'s word: nothing came
    // for two bulk periods — while records come, it re-drains for them on
    // its own, and a burst then fills no ring this size).
    watcher_tests::eventually_within(Duration::from_secs(60), "the reader asleep", || {
        (watcher_tests::bpf_array_u64(feed.pid, "READER", 0)?
            == watcher_common::wake::READER_ASLEEP)
            .then_some(())
    });
    work.line();
    // (4,000 threads started and joined take more than 15 s in a slow guest.)
    assert_eq!(
        work.value_within("done", Duration::from_secs(90)),
        n.to_string()
    );
    assert!(work.finish().success());
    // A refused connect wakes the reader, which reads the ring up to it:
    // every record of the burst before it.
    let refused = actor(ACTOR, &["connect-refused"]);
    // (Or a loss: a full ring loses the connect's record too.)
    feed.wait_for("the refused connect", |v| {
        (is(v, "connect") && pid_is(v, refused.pid)) || is(v, "loss")
    });
    feed.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(feed.wait_exit(), Some(0));
    let records = feed.records();
    let lost: Vec<&Value> = records.iter().filter(|v| is(v, "loss")).collect();
    assert!(lost.is_empty(), "records were lost: {lost:?}");
    // "watcher: N events in T s (exec …, fork F, …), …, L lost, …"
    let summary = feed
        .stderr()
        .into_iter()
        .find(|l| l.contains(" events in "))
        .expect("the summary at exit");
    let lost = summary
        .split(", ")
        .find_map(|p| p.strip_suffix(" lost"))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(lost, Some(0), "{summary}");
    let forks = summary
        .split(['(', ',', ')'])
        .find_map(|p| p.trim().strip_prefix("fork "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        forks.unwrap_or(0) >= n,
        "every thread's creation read: {summary}"
    );
}
