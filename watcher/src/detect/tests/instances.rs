//! Detector unit tests, duplicate_instances: event sequences in, findings out —
//! both ways: the incident is found, and the healthy look-alike is not.
use crate::detect::{
    testkit::{ks, opened, resolved, Kit, MS, S},
    DetectConfig,
};

// ---------------------------------------------------------------- duplicate_instances

#[test]
fn eleven_copies_side_by_side_are_duplicates_and_resolve_when_fewer() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/sh", &["sh", "start.sh"]);
    let mut f = Vec::new();
    for n in 0..11u32 {
        f = k.spawn(
            2 * S + n as u64 * MS,
            100,
            200 + n,
            "/usr/bin/python3",
            &["python3", "worker.py"],
        );
    }
    assert_eq!(
        ks(&f),
        vec![("duplicate_instances", "open")],
        "fires on the start that crosses 10"
    );
    assert!(
        f[0].summary
            .starts_with("11 instances of `python3 worker.py` are running (limit 10)"),
        "{}",
        f[0].summary
    );
    let f = k.exit(3 * S, 205, 0);
    assert!(resolved(&f, "duplicate_instances"));
}

#[test]
fn thousands_of_copies_are_counted_between_updates_and_said_whole_at_the_next() {
    // 2,000 copies within the update interval (10 s; one each 3 ms, below
    // a fork storm): one `open`, every
    // later copy counted without a record (nothing is built for it); the
    // first copy after the interval writes an update that says them all.
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/sh", &["sh", "start.sh"]);
    let mut written = Vec::new();
    for n in 0..2000u32 {
        written.extend(k.spawn(
            2 * S + n as u64 * 3 * MS,
            100,
            1000 + n,
            "/usr/bin/python3",
            &["python3", "w.py"],
        ));
    }
    assert_eq!(ks(&written), vec![("duplicate_instances", "open")]);
    let f = k.spawn(13 * S, 100, 5000, "/usr/bin/python3", &["python3", "w.py"]);
    assert_eq!(ks(&f), vec![("duplicate_instances", "update")]);
    assert_eq!(
        f[0].count, 2001,
        "the count is the instances, each counted: {}",
        f[0].count
    );
    assert_eq!(f[0].details["instances"], 2001);
    assert!(
        f[0].summary.starts_with("2001 instances of `python3 w.py`"),
        "{}",
        f[0].summary
    );
    // Down to the limit: resolved (removal by key, in any order).
    let mut f = Vec::new();
    for n in (0..1991u32).rev() {
        f.extend(k.exit(14 * S + n as u64, 1000 + n, 0));
    }
    assert!(resolved(&f, "duplicate_instances"), "{:?}", ks(&f));
}

#[test]
fn a_master_with_forked_workers_is_one_instance_and_args_tell_programs_apart() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/sbin/nginx", &["nginx"]);
    for n in 0..12u32 {
        k.fork(2 * S + n as u64, 100, 200 + n);
    }
    k.spawn(3 * S, 1, 300, "/bin/sh", &["sh"]);
    for n in 0..6u32 {
        k.spawn(
            4 * S + n as u64 * MS,
            300,
            400 + n,
            "/usr/bin/python3",
            &["python3", "a.py"],
        );
        k.spawn(
            4 * S + n as u64 * MS + 500,
            300,
            500 + n,
            "/usr/bin/python3",
            &["python3", "b.py"],
        );
    }
    assert!(k.all.is_empty(), "{:?}", ks(&k.all));
}

#[test]
fn singletons_have_a_limit_of_one() {
    let mut cfg = DetectConfig::default();
    cfg.duplicate_instances.singletons = vec!["cron".into()];
    let mut k = Kit::new(cfg);
    assert!(k
        .spawn(S, 1, 100, "/usr/sbin/cron", &["cron", "-f"])
        .is_empty());
    let f = k.spawn(2 * S, 1, 101, "/usr/sbin/cron", &["cron", "-f"]);
    assert!(opened(&f, "duplicate_instances"));
    assert!(
        f[0].summary.contains("a singleton, limit 1"),
        "{}",
        f[0].summary
    );
}

/// A program's list, emptied when its last instance leaves, is kept for
/// the next program (no allocation per exec in a flood of short-lived
/// ones): the next program's count starts from its own instances only.
#[test]
fn a_list_emptied_and_given_to_another_program_holds_only_that_ones_instances() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/sh", &["sh", "start.sh"]);
    let mut t = 2 * S;
    // A flood of short-lived execs of one command line: each its
    // program's only instance, its list emptied at its exit.
    for n in 0..50u32 {
        t += MS;
        let pid = 1000 + n;
        assert!(k.spawn(t, 100, pid, "/bin/true", &["true", "x"]).is_empty());
        k.exit(t + 1, pid, 0);
        k.reap(t + 2, 100, pid);
    }
    // Ten instances of another program (lists reused): within the limit.
    for n in 0..10u32 {
        t += MS;
        let f = k.spawn(t, 100, 2000 + n, "/usr/bin/python3", &["python3", "w.py"]);
        assert!(f.is_empty(), "{:?}", ks(&f));
    }
    // The eleventh crosses it, and the finding counts those eleven.
    let f = k.spawn(t + MS, 100, 2010, "/usr/bin/python3", &["python3", "w.py"]);
    assert_eq!(ks(&f), vec![("duplicate_instances", "open")]);
    assert_eq!(f[0].details["instances"], 11);
    let pids: Vec<u32> = f[0].processes.iter().map(|p| p.proc.key.tgid).collect();
    assert!(pids.iter().all(|p| (2000..=2010).contains(p)), "{pids:?}");
}
