//! Detector unit tests, the programs whose next exec can decide a finding
//! (the kernel wakes the reader at once for those execs, see
//! `detect::exec_wakes`): wanted while it can, let go after — both ways:
//! a program near its limit or in a crash loop is wanted, others are not.
use crate::detect::{
    exec_wakes::comm_key,
    testkit::{Kit, MS, S},
    DetectConfig,
};

use super::CODE1;

#[test]
fn a_program_at_half_its_instance_limit_is_wanted_until_it_falls_below() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/sh", &["sh", "start.sh"]);
    for n in 0..4u32 {
        k.spawn(
            2 * S + n as u64 * MS,
            100,
            200 + n,
            "/usr/bin/python3",
            &["python3", "w.py"],
        );
    }
    assert!(
        k.engine.detectors.exec_wake_changes().is_empty(),
        "4 of 10: no exec of it can decide yet"
    );
    k.spawn(3 * S, 100, 204, "/usr/bin/python3", &["python3", "w.py"]);
    assert_eq!(
        k.engine.detectors.exec_wake_changes(),
        vec![(comm_key("python3"), true)],
        "5 of 10: the instances that cross the limit are urgent"
    );
    // Another program of the same name (other arguments) at 5: one entry.
    for n in 0..5u32 {
        k.spawn(
            4 * S + n as u64 * MS,
            100,
            300 + n,
            "/usr/bin/python3",
            &["python3", "x.py"],
        );
    }
    assert!(k.engine.detectors.exec_wake_changes().is_empty());
    k.exit(5 * S, 204, 0);
    assert!(
        k.engine.detectors.exec_wake_changes().is_empty(),
        "x.py is still at 5"
    );
    k.exit(5 * S, 304, 0);
    assert_eq!(
        k.engine.detectors.exec_wake_changes(),
        vec![(comm_key("python3"), false)]
    );
}

#[test]
fn a_singletons_first_instance_makes_its_next_exec_urgent() {
    let mut cfg = DetectConfig::default();
    cfg.duplicate_instances.singletons = vec!["cron".into()];
    let mut k = Kit::new(cfg);
    k.spawn(S, 1, 100, "/usr/sbin/cron", &["cron"]);
    assert_eq!(
        k.engine.detectors.exec_wake_changes(),
        vec![(comm_key("cron"), true)]
    );
    k.exit(2 * S, 100, 0);
    assert_eq!(
        k.engine.detectors.exec_wake_changes(),
        vec![(comm_key("cron"), false)]
    );
}

#[test]
fn a_crash_makes_its_programs_restart_urgent_until_the_loop_is_over() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/supervisor", &["supervisor"]);
    k.spawn(2 * S, 100, 200, "/usr/local/bin/a-long-worker-name", &["w"]);
    assert!(k.engine.detectors.exec_wake_changes().is_empty());
    k.exit(2 * S + 30 * MS, 200, CODE1);
    assert_eq!(
        k.engine.detectors.exec_wake_changes(),
        vec![(comm_key("a-long-worker-name"), true)],
        "its restart decides (the name as the kernel cuts it)"
    );
    // Restarted, crashing again: still one entry.
    k.spawn(
        2 * S + 80 * MS,
        100,
        201,
        "/usr/local/bin/a-long-worker-name",
        &["w"],
    );
    k.exit(2 * S + 110 * MS, 201, CODE1);
    assert!(k.engine.detectors.exec_wake_changes().is_empty());
    // Restarted, and it lives: the loop is over.
    k.spawn(
        2 * S + 160 * MS,
        100,
        202,
        "/usr/local/bin/a-long-worker-name",
        &["w"],
    );
    k.run_timers(40 * S);
    assert_eq!(
        k.engine.detectors.exec_wake_changes(),
        vec![(comm_key("a-long-worker-name"), false)]
    );
    // A clean exit is no crash: nothing wanted.
    k.spawn(50 * S, 100, 203, "/usr/bin/true", &["true"]);
    k.exit(50 * S + MS, 203, 0);
    assert!(k.engine.detectors.exec_wake_changes().is_empty());
}

#[test]
fn a_name_two_detectors_want_is_let_go_when_the_last_does_and_a_disabled_one_lets_go() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/sh", &["sh"]);
    for n in 0..5u32 {
        k.spawn(
            2 * S + n as u64 * MS,
            100,
            200 + n,
            "/usr/bin/app",
            &["app"],
        );
    }
    k.exit(3 * S, 204, CODE1);
    k.spawn(3 * S + MS, 100, 205, "/usr/bin/app", &["app"]);
    assert_eq!(
        k.engine.detectors.exec_wake_changes(),
        vec![(comm_key("app"), true)],
        "wanted by both: one entry"
    );
    let mut cfg = DetectConfig::default();
    cfg.duplicate_instances.enabled = false;
    k.engine.detectors.reconfigure(cfg.clone(), 4 * S);
    assert!(
        k.engine.detectors.exec_wake_changes().is_empty(),
        "respawn_storm still wants it"
    );
    cfg.respawn_storm.enabled = false;
    k.engine.detectors.reconfigure(cfg, 5 * S);
    assert_eq!(
        k.engine.detectors.exec_wake_changes(),
        vec![(comm_key("app"), false)],
        "disabled detectors want nothing"
    );
}
