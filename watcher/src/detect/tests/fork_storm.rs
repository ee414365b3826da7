//! Detector unit tests, fork_storm: event sequences in, findings out —
//! both ways: the incident is found, and the healthy look-alike is not.
use crate::detect::testkit::{ks, opened, resolved, Kit, MS, S};

// ---------------------------------------------------------------- fork_storm

/// Pid 100 forks 800 children a second for 3 s from 2 s on, each exiting
/// and reaped at once; `each` sees the kit after fork `n`. When the
/// fork_storm finding opened.
fn forks_at_800_per_second(k: &mut Kit, mut each: impl FnMut(&Kit, u64)) -> u64 {
    let mut open_at = None;
    for n in 0..2400u64 {
        let pid = 1000 + n as u32;
        let t = 2 * S + n * S / 800;
        let f = k.fork(t, 100, pid);
        if opened(&f, "fork_storm") {
            open_at.get_or_insert(t);
        }
        each(k, n);
        k.exit(t + 1, pid, 0);
        k.reap(t + 2, 100, pid);
    }
    open_at.expect("fork_storm")
}

#[test]
fn forking_faster_than_500_per_second_for_2_seconds() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/spawner", &["spawner"]);
    let at = forks_at_800_per_second(&mut k, |_, _| {});
    assert!(
        (3 * S..4 * S).contains(&at),
        "opens in the second second: {at}"
    );
    let f = k.run_timers(7 * S);
    assert!(resolved(&f, "fork_storm"), "{:?}", ks(&f));
}

#[test]
fn a_fork_bomb_names_the_root_of_the_growing_tree() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 50, "/bin/bash", &["bash"]);
    k.fork(2 * S, 50, 100);
    bomb_from_100(&mut k, 3 * S, 1000);
    the_one_bomb_is_100s(&k);
}

/// A fork bomb under pid 100 from `t`: 10 children, each forking 110
/// that never exit (1,110 new descendants in 1.1 s), their pids from `pid`.
fn bomb_from_100(k: &mut Kit, mut t: u64, mut pid: u32) {
    for c in 0..10u32 {
        let child = 200 + c;
        k.fork(t, 100, child);
        for _ in 0..110 {
            t += MS;
            k.fork(t, child, pid);
            pid += 1;
        }
        t += MS;
    }
}

/// One `fork_storm` finding, a bomb, naming pid 100 as its root.
fn the_one_bomb_is_100s(k: &Kit) {
    let f: Vec<_> = k
        .all
        .iter()
        .filter(|x| x.kind.as_str() == "fork_storm")
        .collect();
    assert_eq!(f.len(), 1, "{:?}", ks(&k.all));
    assert_eq!(f[0].processes[0].proc.key.tgid, 100, "{}", f[0].summary);
    assert!(f[0].summary.contains("fork bomb"), "{}", f[0].summary);
}

#[test]
fn a_parallel_build_is_not_a_fork_storm() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/make", &["make", "-j2"]);
    let mut pid = 1000;
    let mut t = 2 * S;
    // 600 files: make → sh → cc → cc1/as, each ending before the next few start.
    for file in 0..600u32 {
        let name = format!("f{file}.c");
        let sh = pid;
        k.spawn(
            t,
            100,
            sh,
            "/bin/sh",
            &["sh", "-c", &format!("cc -c {name}")],
        );
        let cc = pid + 1;
        k.spawn(t + MS, sh, cc, "/usr/bin/cc", &["cc", "-c", &name]);
        let cc1 = pid + 2;
        k.spawn(
            t + 2 * MS,
            cc,
            cc1,
            "/usr/lib/gcc/cc1",
            &["cc1", &name, "-o", &format!("/tmp/cc{file}.s")],
        );
        k.exit(t + 20 * MS, cc1, 0);
        k.reap(t + 20 * MS + 1, cc, cc1);
        let r#as = pid + 3;
        k.spawn(
            t + 21 * MS,
            cc,
            r#as,
            "/usr/bin/as",
            &[
                "as",
                "-o",
                &format!("f{file}.o"),
                &format!("/tmp/cc{file}.s"),
            ],
        );
        k.exit(t + 25 * MS, r#as, 0);
        k.reap(t + 25 * MS + 1, cc, r#as);
        k.exit(t + 26 * MS, cc, 0);
        k.reap(t + 26 * MS + 1, sh, cc);
        k.exit(t + 27 * MS, sh, 0);
        k.reap(t + 27 * MS + 1, 100, sh);
        pid += 4;
        t += 14 * MS; // two jobs overlapping
    }
    k.run_timers(t + 120 * S);
    assert!(k.all.is_empty(), "{:?}", ks(&k.all));
}

/// bash 50 has children 60 and 70, 60 a child 100; 100 forks once (and,
/// `by_turns`, 70 too), then 60 exits when `sixty_exits` (100 passes to
/// init), then 100 and 70 fork 600 each — one after the other, or by turns.
fn forks_around_sixtys_exit(sixty_exits: bool, by_turns: bool) -> Kit {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 50, "/bin/bash", &["bash"]);
    k.fork(2 * S, 50, 60);
    k.fork(2 * S, 50, 70);
    k.fork(2 * S, 60, 100);
    let mut t = 3 * S;
    if by_turns {
        k.fork(t, 100, 998);
        k.fork(t, 70, 999);
    } else {
        k.fork(t, 100, 999);
    }
    if sixty_exits {
        t += MS;
        k.exit(t, 60, 0);
        k.reap(t + 1, 50, 60);
    }
    let mut pid = 1000;
    let mut fork = |t: u64, parent: u32| {
        k.fork(t, parent, pid);
        pid += 1;
    };
    if by_turns {
        for _ in 0..600 {
            for parent in [100, 70] {
                t += MS / 4;
                fork(t, parent);
            }
        }
    } else {
        for parent in [100, 70] {
            for _ in 0..600 {
                t += MS / 2;
                fork(t, parent);
            }
        }
    }
    k
}

#[test]
fn forks_after_an_ancestor_exits_are_counted_under_the_new_ancestors() {
    // bash's tree grew by 601, not 1,201 — 100's later forks are not its
    // (the ancestor chain kept between forks is dropped when one of its
    // processes exits).
    let k = forks_around_sixtys_exit(true, false);
    assert!(!opened(&k.all, "fork_storm"), "{:?}", ks(&k.all));
    // Both ways: while 60 lives, bash's tree grows by 1,201.
    let k = forks_around_sixtys_exit(false, false);
    assert!(opened(&k.all, "fork_storm"), "{:?}", ks(&k.all));
}

#[test]
fn parents_forking_by_turns_each_keep_their_chain_until_an_ancestor_exits() {
    // As above, but 100 and 70 fork by turns from before 60 exits: both
    // ancestor chains are kept at once (one current, one aside), and 60's
    // exit must drop 100's wherever it is kept.
    let k = forks_around_sixtys_exit(true, true);
    assert!(!opened(&k.all, "fork_storm"), "{:?}", ks(&k.all));
    let k = forks_around_sixtys_exit(false, true);
    assert!(opened(&k.all, "fork_storm"), "{:?}", ks(&k.all));
}

/// The fork that opens a storm by its rate is its parent's `rate_per_s`-th
/// in its second, as the kernel counts them (each parent's forks per
/// second, `FORK_RATE`): the kernel makes that one urgent
/// (`watcher_common::wake::fork` with `Detectors::fork_rate`) and no other
/// — one wakeup per storming parent per second, none from half the rate
/// on as once. Counted here the kernel's way, 2,400 forks at 800/s: the
/// 500th of each of the three seconds is urgent, the one that opens the
/// storm is among them, and no growth candidate makes forks urgent.
#[test]
fn the_fork_that_opens_a_storm_is_the_one_the_kernel_counts_as_reaching_the_rate() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/spawner", &["spawner"]);
    assert_eq!(k.engine.detectors.fork_rate(), 500);
    // The kernel's count: (second, forks in it).
    let mut count = (0u64, 0u64);
    let mut urgent = Vec::new();
    let mut open_at = None;
    for n in 0..2400u64 {
        let pid = 1000 + n as u32;
        let t = 2 * S + n * S / 800;
        let second = t / S;
        if count.0 != second {
            count = (second, 0);
        }
        count.1 += 1;
        let decides = t < k.engine.detectors.forks_decide_until();
        if watcher_common::wake::fork(decides, count.1, k.engine.detectors.fork_rate()) {
            urgent.push(t);
        }
        let f = k.fork(t, 100, pid);
        if opened(&f, "fork_storm") {
            open_at.get_or_insert(t);
        }
        k.exit(t + 1, pid, 0);
        k.reap(t + 2, 100, pid);
    }
    let at = open_at.expect("fork_storm");
    assert!(
        (3 * S..4 * S).contains(&at),
        "opens in the second second: {at}"
    );
    assert!(
        urgent.contains(&at),
        "the fork that opened it was not urgent: {urgent:?}, {at}"
    );
    let seconds: Vec<u64> = urgent.iter().map(|t| t / S).collect();
    assert_eq!(seconds, [2, 3, 4], "one urgent fork a second: {urgent:?}");
    assert_eq!(
        k.engine.detectors.forks_decide_until(),
        0,
        "no growth candidate"
    );
}

/// The rate the kernel is told is `fork_storm`'s own; with it off, none
/// (no fork is urgent for its rate).
#[test]
fn the_kernel_is_told_fork_storms_rate_and_nothing_when_it_is_off() {
    let mut cfg = crate::detect::config::DetectConfig::default();
    cfg.fork_storm.rate_per_s = 300;
    assert_eq!(Kit::new(cfg.clone()).engine.detectors.fork_rate(), 300);
    cfg.fork_storm.enabled = false;
    assert_eq!(Kit::new(cfg).engine.detectors.fork_rate(), 0);
}

/// A fork bomb's forks are urgent from the moment its subtree has grown by
/// half the limit, for a growth window.
#[test]
fn a_growing_subtrees_forks_are_urgent_from_half_the_limit() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 50, "/bin/bash", &["bash"]);
    k.fork(2 * S, 50, 100);
    let mut pid = 1000;
    let mut t = 3 * S;
    let mut urgent_from = None;
    for c in 0..10u32 {
        let child = 200 + c;
        k.fork(t, 100, child);
        for _ in 0..110 {
            t += MS;
            k.fork(t, child, pid);
            pid += 1;
            if urgent_from.is_none() && k.engine.detectors.forks_decide_until() > t {
                urgent_from = Some((pid - 1000, k.engine.detectors.forks_decide_until() - t));
            }
        }
    }
    let (n, window) = urgent_from.expect("urgent");
    // (501 new descendants of 100: 5 children and their 496 children.)
    assert!((490..=510).contains(&n), "urgent from fork {n}");
    assert_eq!(window, 2 * S, "for the growth window");
}

/// The healthy look-alike: a parallel build forks as much, from many
/// parents, and its processes end — no fork is ever urgent.
#[test]
fn a_parallel_builds_forks_are_never_urgent() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/make", &["make", "-j2"]);
    let mut pid = 1000;
    let mut t = 2 * S;
    for _ in 0..600u32 {
        let sh = pid;
        k.spawn(t, 100, sh, "/bin/sh", &["sh", "-c", "cc -c f.c"]);
        let cc = pid + 1;
        k.spawn(t + MS, sh, cc, "/usr/bin/cc", &["cc", "-c", "f.c"]);
        k.exit(t + 20 * MS, cc, 0);
        k.reap(t + 20 * MS + 1, sh, cc);
        k.exit(t + 21 * MS, sh, 0);
        k.reap(t + 21 * MS + 1, 100, sh);
        pid += 2;
        t += 7 * MS;
    }
    assert_eq!(k.engine.detectors.forks_decide_until(), 0);
}

#[test]
fn forking_parents_beyond_the_table_are_counted_as_overflow_not_tracked() {
    let mut k = Kit::new(crate::detect::config::DetectConfig {
        max_tracked: 4,
        ..Default::default()
    });
    // Ten parents, each forking once: the rate table keeps four of them.
    for n in 0..10u32 {
        let parent = 100 + n;
        k.spawn(S, 1, parent, "/bin/spawner", &["spawner"]);
        k.fork(2 * S + u64::from(n) * MS, parent, 1000 + n);
    }
    let fs = &k.engine.detectors.fork_storm;
    assert!(fs.overflow > 0, "the parents past the table are counted");
    // A parent already tracked is still counted (its entry found, not refused).
    let before = fs.overflow;
    k.fork(3 * S, 100, 2000);
    assert_eq!(k.engine.detectors.fork_storm.overflow, before);
}

/// Each ancestor's growth is kept in a slot that the cached ancestor
/// chains name; a prune that drops a stale entry moves the slots, and
/// every chain is walked again: a bomb after it is still found, and the
/// root it names is the right one.
#[test]
fn a_fork_bomb_after_the_growth_table_was_pruned_is_named_right() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 50, "/bin/bash", &["bash"]);
    k.spawn(S, 1, 80, "/bin/other", &["other"]);
    k.fork(S, 50, 100);
    // 80 forks once (its entry is the table's first), then never again:
    // stale once the window has passed.
    k.fork(2 * S, 80, 81);
    k.exit(2 * S + 1, 81, 0);
    k.reap(2 * S + 2, 80, 81);
    // 100 forks every 100 ms, its chain's entries after 80's, until 6 s
    // (a prune a second drops 80's on the way).
    let mut pid = 1000;
    let mut t = 2 * S;
    while t < 6 * S {
        t += 100 * MS;
        k.fork(t, 100, pid);
        k.exit(t + 1, pid, 0);
        k.reap(t + 2, 100, pid);
        pid += 1;
    }
    assert!(
        k.all.iter().all(|x| x.kind.as_str() != "fork_storm"),
        "{:?}",
        ks(&k.all)
    );
    bomb_from_100(&mut k, t + MS, pid);
    the_one_bomb_is_100s(&k);
}
