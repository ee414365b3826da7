//! Detector unit tests, respawn_storm: a supervisor's restarts, look-alikes: event sequences in, findings out —
//! both ways: the incident is found, and the healthy look-alike is not.
use crate::detect::testkit::{ks, opened, resolved, Kit, MS, S};

use super::CODE1;

// ---------------------------------------------------------------- respawn_storm

#[test]
fn a_supervisor_restarting_a_crashing_child_is_a_respawn_storm() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/supervisor", &["supervisor"]);
    let mut t = 2 * S;
    let mut opened_at = None;
    for n in 0..8u32 {
        let pid = 200 + n;
        let f = k.spawn(
            t,
            100,
            pid,
            "/usr/bin/worker",
            &["worker", "--queue", "jobs"],
        );
        if opened(&f, "respawn_storm") {
            opened_at.get_or_insert(n);
        }
        k.exit(t + 30 * MS, pid, CODE1);
        k.reap(t + 31 * MS, 100, pid);
        t += 50 * MS;
    }
    assert_eq!(opened_at, Some(5), "the 5th restart opens it");
    let f = k
        .all
        .iter()
        .find(|x| x.kind.as_str() == "respawn_storm")
        .unwrap();
    assert!(
        f.summary
            .contains("`worker --queue jobs` keeps crashing: restarted 5 times"),
        "{}",
        f.summary
    );
    assert!(
        f.summary.contains("by pid 100 (supervisor)")
            && f.summary.contains("exit code 1 after 30 ms"),
        "{}",
        f.summary
    );
    assert!(f
        .processes
        .iter()
        .any(|p| p.role == "restarter" && p.proc.key.tgid == 100));
    // Not restarted after the last crash (the expected delay: 2.5 × 20 ms, at
    // least 3 s more): the loop's program is down, said in an update …
    assert!(k.run_timers(t + 2 * S).is_empty());
    let f = k.run_timers(t + 4 * S);
    let down = f
        .iter()
        .find(|x| x.kind.as_str() == "respawn_storm")
        .expect("an update");
    assert_eq!(down.state.as_str(), "update");
    assert!(down.summary.contains("is down"), "{}", down.summary);
    assert_eq!(
        down.details["gave_up"], true,
        "the update's facts say so too"
    );
    // … and a new instance that lives resolves it.
    k.spawn(
        t + 10 * S,
        100,
        300,
        "/usr/bin/worker",
        &["worker", "--queue", "jobs"],
    );
    assert!(resolved(&k.all, "respawn_storm"));
}

#[test]
fn a_crashing_forked_worker_refork_counts_and_signals_count() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/sbin/prefork", &["prefork"]);
    for n in 0..6u32 {
        let t = 2 * S + n as u64 * 100 * MS;
        k.fork(t, 100, 200 + n);
        k.exit(t + 10 * MS, 200 + n, 11); // SIGSEGV
        k.reap(t + 11 * MS, 100, 200 + n);
    }
    let f = k
        .all
        .iter()
        .find(|x| x.kind.as_str() == "respawn_storm")
        .expect("storm");
    assert!(f.summary.contains("SIGSEGV"), "{}", f.summary);
}

#[test]
fn grep_q_in_a_shell_loop_and_clean_exits_are_not_crashes() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/bash", &["bash", "poll.sh"]);
    let mut pid = 200;
    for n in 0..100u64 {
        let t = 2 * S + n * 200 * MS;
        k.spawn(
            t,
            100,
            pid,
            "/usr/bin/grep",
            &["grep", "-q", "ready", "/tmp/state"],
        );
        k.exit(t + 2 * MS, pid, CODE1);
        k.reap(t + 3 * MS, 100, pid);
        pid += 1;
        k.spawn(
            t + 4 * MS,
            100,
            pid,
            "/usr/bin/pgrep",
            &["pgrep", "-x", "nothing"],
        );
        k.exit(t + 6 * MS, pid, CODE1);
        k.reap(t + 7 * MS, 100, pid);
        pid += 1;
        // A cron-like job that succeeds.
        k.spawn(t + 8 * MS, 100, pid, "/usr/bin/date", &["date"]);
        k.exit(t + 9 * MS, pid, 0);
        k.reap(t + 10 * MS, 100, pid);
        pid += 1;
        // Killed by SIGPIPE in a pipeline (`… | head`).
        k.spawn(t + 11 * MS, 100, pid, "/usr/bin/yes", &["yes"]);
        k.exit(t + 12 * MS, pid, 13);
        k.reap(t + 13 * MS, 100, pid);
        pid += 1;
    }
    k.run_timers(200 * S);
    assert!(k.all.is_empty(), "{:?}", ks(&k.all));
}

#[test]
fn long_lives_ending_badly_are_not_a_storm() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/supervisor", &["supervisor"]);
    for n in 0..10u64 {
        let t = 2 * S + n * 60 * S;
        k.spawn(t, 100, 200 + n as u32, "/usr/bin/svc", &["svc"]);
        k.exit(t + 45 * S, 200 + n as u32, CODE1);
        k.reap(t + 45 * S + 1, 100, 200 + n as u32);
    }
    assert!(k.all.is_empty(), "{:?}", ks(&k.all));
}
