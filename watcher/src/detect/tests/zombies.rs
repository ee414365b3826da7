//! Detector unit tests, zombie and zombie_accumulation: event sequences in, findings out —
//! both ways: the incident is found, and the healthy look-alike is not.
use crate::detect::{
    testkit::{ks, opened, resolved, Kit, MS, S},
    State,
};

use super::CODE1;

// ---------------------------------------------------------------- zombies

fn seven_children(k: &mut Kit, parent: u32) {
    k.spawn(S, 1, parent, "/usr/bin/worker-master", &["master"]);
    for c in 0..7u32 {
        k.fork(2 * S + c as u64, parent, parent + 1 + c);
    }
}

#[test]
fn zombie_accumulation_fires_on_the_crossing_exit_and_resolves_below() {
    let mut k = Kit::defaults();
    seven_children(&mut k, 100);
    for c in 0..4u32 {
        assert!(k.exit(3 * S + c as u64, 101 + c, 0).is_empty());
    }
    let f = k.exit(3 * S + 4, 105, 0);
    assert_eq!(ks(&f), vec![("zombie_accumulation", "open")]);
    assert_eq!(
        f[0].at_ns,
        3 * S + 4,
        "emitted while handling the crossing exit"
    );
    assert!(
        f[0].summary
            .contains("pid 100 (master) has 5 exited children"),
        "{}",
        f[0].summary
    );
    k.exit(3 * S + 5, 106, 0);
    k.exit(3 * S + 6, 107, 0);
    // 7 unreaped; reaping 3 leaves 4 < 5.
    assert!(k.reap(4 * S, 100, 101).is_empty());
    assert!(k.reap(4 * S + 1, 100, 102).is_empty());
    let f = k.reap(4 * S + 2, 100, 103);
    assert!(resolved(&f, "zombie_accumulation"), "{f:?}");
}

#[test]
fn thousands_of_zombies_are_counted_between_updates_and_reaped_in_any_order() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/sbin/master", &["master"]);
    for n in 0..2000u32 {
        k.fork(S + n as u64 * 3 * MS, 100, 1000 + n);
    }
    let mut written = Vec::new();
    for n in 0..2000u32 {
        written.extend(k.exit(8 * S + n as u64 * MS, 1000 + n, 0));
    }
    assert_eq!(ks(&written), vec![("zombie_accumulation", "open")]);
    // One more after the update interval: the update says all of them.
    k.fork(19 * S, 100, 5000);
    let f = k.exit(20 * S, 5000, 0);
    assert_eq!(ks(&f), vec![("zombie_accumulation", "update")]);
    assert_eq!(f[0].details["unreaped"], 2001);
    // Reaped newest first, then the rest: resolved once below the threshold.
    let mut f = k.reap(21 * S, 100, 5000);
    for n in (0..2000u32).rev() {
        f.extend(k.reap(21 * S + 1 + n as u64, 100, 1000 + n));
    }
    assert!(resolved(&f, "zombie_accumulation"), "{:?}", ks(&f));
}

#[test]
fn a_master_whose_workers_end_at_once_while_it_waits_is_not_an_accumulation() {
    let mut k = Kit::defaults();
    seven_children(&mut k, 100);
    // All seven exit within 2 ms while the master is blocked in wait(); it drains them.
    for c in 0..7u32 {
        assert!(k
            .exit_while_parent_waits(3 * S + c as u64 * 300_000, 101 + c, 0)
            .is_empty());
    }
    for c in 0..7u32 {
        assert!(k.reap(3 * S + 3 * MS + c as u64, 100, 101 + c).is_empty());
    }
    k.run_timers(30 * S);
    assert!(k.all.is_empty(), "{:?}", ks(&k.all));
}

#[test]
fn a_reaper_whose_reaps_only_frees_tell_of_gets_the_grace() {
    // A container's busy init, whose wait the kernel could not name (its
    // reaps are seen at the children's release): reaping, it must not open
    // and resolve an accumulation at every burst.
    let mut k = Kit::defaults();
    seven_children(&mut k, 100);
    k.exit(3 * S, 101, 0);
    assert!(k.freed(3 * S + 1, 101).is_empty());
    for c in 1..7u32 {
        k.exit(3 * S + 2 + c as u64, 101 + c, 0);
    }
    for c in 1..7u32 {
        k.freed(3 * S + 100 * MS + c as u64, 101 + c);
    }
    k.run_timers(30 * S);
    assert!(k.all.is_empty(), "{:?}", ks(&k.all));
}

#[test]
fn a_waiting_parent_that_does_not_reap_these_children_is_reported_after_the_grace() {
    let mut k = Kit::defaults();
    seven_children(&mut k, 100);
    // The parent waits — for some other child — and never reaps these.
    for c in 0..5u32 {
        k.exit_while_parent_waits(3 * S + c as u64, 101 + c, 0);
    }
    assert!(k.all.is_empty());
    let f = k.run_timers(4 * S + 4);
    assert!(opened(&f, "zombie_accumulation"), "{:?}", ks(&f));
    assert_eq!(f[0].at_ns, 4 * S + 4, "at the end of the grace");
}

#[test]
fn threads_exiting_are_not_zombies() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/app", &["app"]);
    k.fork(2 * S, 100, 200);
    for t in 0..10u32 {
        k.thread(2 * S + 1 + t as u64, 200, 201 + t);
    }
    for t in 0..10u32 {
        assert!(k
            .exit_thread(3 * S + t as u64, 201 + t, 200, 0, false)
            .is_empty());
    }
    assert!(k.run_timers(60 * S).is_empty());
}

#[test]
fn a_parent_dying_hands_its_zombies_to_the_subreaper() {
    let mut k = Kit::defaults();
    k.spawn(S / 2, 1, 50, "/sbin/subreaper", &["subreaper"]);
    *k.subreaper.lock().unwrap() = 50;
    seven_children(&mut k, 100);
    for c in 0..7u32 {
        k.exit(3 * S + c as u64, 101 + c, 0);
    }
    assert!(opened(&k.all, "zombie_accumulation"));
    // The parent exits without reaping: its incident resolves, the subreaper gets the zombies.
    let f = k.exit(4 * S, 100, CODE1);
    assert!(resolved(&f, "zombie_accumulation"), "{f:?}");
    assert!(
        !opened(&f, "zombie_accumulation"),
        "the subreaper is given the reaping grace first: {f:?}"
    );
    // It does not reap them within the grace: its own incident opens then.
    let f = k.run_timers(4 * S + 2 * S);
    let reopened: Vec<_> = f
        .iter()
        .filter(|x| x.state == State::Open && x.kind.as_str() == "zombie_accumulation")
        .collect();
    assert_eq!(reopened.len(), 1, "{f:?}");
    assert!(
        reopened[0].summary.contains("pid 50 (subreaper)"),
        "{}",
        reopened[0].summary
    );
    // The subreaper reaps them all.
    let mut last = Vec::new();
    for c in 0..7u32 {
        last.extend(k.reap(5 * S + c as u64, 50, 101 + c));
    }
    assert!(resolved(&last, "zombie_accumulation"));
}

/// Init inheriting a dead parent's zombies reaps them at its SIGCHLD,
/// within milliseconds: that is not an accumulation of init's.
#[test]
fn zombies_inherited_by_a_reaper_that_drains_them_at_once_are_not_its_accumulation() {
    let mut k = Kit::defaults();
    k.spawn(S / 2, 1, 50, "/sbin/subreaper", &["subreaper"]);
    *k.subreaper.lock().unwrap() = 50;
    seven_children(&mut k, 100);
    for c in 0..7u32 {
        k.exit(3 * S + c as u64, 101 + c, 0);
    }
    k.exit(4 * S, 100, CODE1);
    for c in 0..7u32 {
        assert!(k
            .reap(4 * S + MS + c as u64 * 100_000, 50, 101 + c)
            .is_empty());
    }
    let later = k.run_timers(30 * S);
    assert!(
        !later
            .iter()
            .any(|f| f.kind.as_str() == "zombie_accumulation"),
        "{later:?}"
    );
}

/// An overdue zombie whose parent exits passes to the subreaper, which has
/// `max_age` from then: no finding about it at once, one if it does not reap.
#[test]
fn an_inherited_zombie_gives_its_new_parent_max_age_to_reap_it() {
    let mut k = Kit::defaults();
    k.spawn(S / 2, 1, 50, "/sbin/subreaper", &["subreaper"]);
    *k.subreaper.lock().unwrap() = 50;
    seven_children(&mut k, 100);
    k.exit(3 * S, 101, 0);
    let f = k.run_timers(13 * S);
    assert!(
        f.iter()
            .any(|x| x.kind.as_str() == "zombie" && x.state == State::Open),
        "{f:?}"
    );
    let f = k.exit(20 * S, 100, 0);
    assert!(
        resolved(&f, "zombie"),
        "the old parent's incident ends: {f:?}"
    );
    assert!(
        !f.iter()
            .any(|x| x.kind.as_str() == "zombie" && x.state == State::Open),
        "not the new parent's at once: {f:?}"
    );
    assert_eq!(
        k.engine.next_deadline(),
        Some(30 * S),
        "max_age from the inheritance"
    );
    let f = k.run_timers(30 * S);
    // (The master itself is pid 1's zombie now, with its own deadline.)
    let opened: Vec<_> = f
        .iter()
        .filter(|x| {
            x.kind.as_str() == "zombie"
                && x.state == State::Open
                && x.summary.contains("pid 50 (subreaper)")
        })
        .collect();
    assert_eq!(opened.len(), 1, "{f:?}");
}

#[test]
fn zombie_fires_at_its_deadline_from_the_timer_and_resolves_on_reap() {
    let mut k = Kit::defaults();
    seven_children(&mut k, 100);
    for c in 0..7u32 {
        k.exit(3 * S + c as u64 * MS, 101 + c, 0);
    }
    assert_eq!(
        k.engine.next_deadline(),
        Some(13 * S),
        "deadline = exit + 10 s"
    );
    assert!(
        k.run_timers(13 * S - 1).is_empty(),
        "not before the deadline"
    );
    let f = k.run_timers(13 * S);
    let z: Vec<_> = f.iter().filter(|x| x.kind.as_str() == "zombie").collect();
    assert_eq!(z.len(), 1);
    assert_eq!(
        (z[0].state, z[0].at_ns),
        (State::Open, 13 * S),
        "fires exactly at the deadline"
    );
    assert_eq!(z[0].details["max_age_s"], 10.0, "{:?}", z[0].details);
    assert_eq!(z[0].details["parent_pid"], 100);
    // The others' deadlines follow: one incident, more zombies.
    k.run_timers(13 * S + 10 * MS);
    let inc = k.engine.detectors.zombie.incidents.get(&100).expect("open");
    assert_eq!(inc.count, 7);
    let mut f = Vec::new();
    for c in 0..7u32 {
        f.extend(k.reap(20 * S + c as u64, 100, 101 + c));
    }
    assert!(resolved(&f, "zombie"));
}

#[test]
fn a_reaped_childs_deadline_neither_fires_nor_wakes_and_the_deadlines_stay_small() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/loop", &["loop"]);
    // A child that stays a zombie, then a fork loop's thousands, each
    // reaped at once: their deadlines are behind the first one's.
    k.fork(2 * S, 100, 101);
    k.exit(2 * S + 1, 101, 0);
    for c in 0..5_000u32 {
        let t = 3 * S + c as u64 * 100_000;
        k.fork(t, 100, 1_000 + c);
        k.exit(t + 1, 1_000 + c, 0);
        k.reap(t + 2, 100, 1_000 + c);
    }
    let z = &k.engine.detectors.zombie;
    assert_eq!(z.next_deadline(), Some(12 * S + 1), "the live one's");
    assert!(
        z.deadline_entries() <= 1 + 1024 + 2,
        "stale entries are dropped: {}",
        z.deadline_entries()
    );
    // The live one fires at its deadline, the reaped ones never do, and
    // then no deadline is left to wake for.
    let f = k.run_timers(12 * S + 1);
    assert!(opened(&f, "zombie"), "{f:?}");
    let f = k.run_timers(20 * S);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(k.engine.detectors.zombie.next_deadline(), None);
    // A child reaped while the one before it is still unreaped: the top
    // stays the live one's, and its reap leaves nothing behind.
    k.fork(30 * S, 100, 7_001);
    k.exit(30 * S + 1, 7_001, 0);
    k.fork(31 * S, 100, 7_002);
    k.exit(31 * S + 1, 7_002, 0);
    k.reap(31 * S + 2, 100, 7_002);
    assert_eq!(k.engine.detectors.zombie.next_deadline(), Some(40 * S + 1));
    k.reap(32 * S, 100, 7_001);
    assert_eq!(k.engine.detectors.zombie.next_deadline(), None);
    assert_eq!(k.engine.detectors.zombie.deadline_entries(), 0);
}

#[test]
fn pid_reuse_does_not_confuse_zombie_counts() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/p", &["p"]);
    for round in 0..20u64 {
        // The same pid 101 is reused: fork, exit, reap.
        k.fork(2 * S + round * 10, 100, 101);
        k.exit(2 * S + round * 10 + 1, 101, 0);
        k.reap(2 * S + round * 10 + 2, 100, 101);
    }
    assert!(k.run_timers(100 * S).is_empty());
    assert!(k.all.is_empty(), "{:?}", k.all);
}

#[test]
fn zombies_existing_at_start_are_counted() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/leaky", &["leaky"]);
    for c in 0..6u32 {
        k.fork(S + 1 + c as u64, 100, 101 + c);
    }
    // Make them zombies in the table as /proc would show them, before the detectors know.
    for c in 0..6u32 {
        k.engine.enricher.procs.apply(
            &crate::kernel::decode::decode(&crate::kernel::decode::encode(
                &watcher_common::Event {
                    header: crate::kernel::decode::header_for::<watcher_common::ExitData>(
                        watcher_common::EventKind::Exit,
                        2 * S,
                        101 + c,
                        101 + c,
                        "x",
                    ),
                    data: watcher_common::ExitData {
                        exit_code: 0,
                        group_dead: 1,
                        parent_tgid: 0,
                        parent_waiting: 0,
                        cgroup_id: 0,
                        pidns: 0,
                        ns_pid: 0,
                        flags: 0,
                        reaper_tgid: 0,
                    },
                },
            ))
            .unwrap(),
        );
    }
    let mut fresh = Kit::defaults();
    fresh.engine.enricher.procs = std::mem::replace(
        &mut k.engine.enricher.procs,
        crate::world::proctable::ProcessTable::new(16),
    );
    let f = fresh.engine.seed(&[], 3 * S);
    assert!(opened(&f, "zombie_accumulation"), "{f:?}");
    assert!(opened(&fresh.run_timers(13 * S), "zombie"));
}

/// A parent's emptied set of children (and list of zombies) stays for its
/// next child and leaves at its exit; the emptied ones of parents whose
/// exits are never seen are swept: the tables stay within twice the
/// zombies tracked, plus a margin.
#[test]
fn emptied_per_parent_tables_leave_with_their_parent_or_in_a_sweep() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/loop", &["loop"]);
    for c in 0..3u32 {
        let t = 2 * S + c as u64 * MS;
        k.fork(t, 100, 200 + c);
        k.exit(t + 1, 200 + c, 0);
        k.reap(t + 2, 100, 200 + c);
    }
    let d = &k.engine.detectors;
    assert!(d.zombie.has_set(100), "kept, emptied, for the next child");
    assert!(d.zombie_accumulation.has_list(100));
    k.exit(3 * S, 100, 0);
    let d = &k.engine.detectors;
    assert!(!d.zombie.has_set(100), "gone with its parent");
    assert!(!d.zombie_accumulation.has_list(100));
    k.reap(3 * S + 1, 1, 100);
    // 5,000 parents whose exits are never seen, each with one child
    // exited and reaped; one zombie left unreaped throughout.
    k.spawn(4 * S, 1, 300, "/bin/keep", &["keep"]);
    k.fork(4 * S, 300, 301);
    k.exit(4 * S + 1, 301, 0);
    for p in 0..5_000u32 {
        let t = 5 * S + p as u64 * 100_000;
        let parent = 10_000 + p;
        k.spawn(t, 1, parent, "/bin/job", &["job"]);
        k.fork(t + 1, parent, 20_000 + p);
        k.exit(t + 2, 20_000 + p, 0);
        k.reap(t + 3, parent, 20_000 + p);
        let d = &k.engine.detectors;
        assert!(
            d.zombie.parent_sets() <= 2 * 2 + 64 + 1,
            "{}",
            d.zombie.parent_sets()
        );
        assert!(
            d.zombie_accumulation.parent_lists() <= 2 * 2 + 64 + 1,
            "{}",
            d.zombie_accumulation.parent_lists()
        );
    }
    // The one left unreaped is still counted against its parent.
    let f = k.run_timers(4 * S + 1 + 10 * S + MS);
    assert!(opened(&f, "zombie"), "{:?}", ks(&f));
}
