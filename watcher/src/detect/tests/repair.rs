//! Detector unit tests, repair after a loss; confirmation against /proc; the registry: event sequences in, findings out —
//! both ways: the incident is found, and the healthy look-alike is not.
use crate::detect::{
    testkit::{ks, opened, Kit, MS, S},
    DetectConfig,
};

// ---------------------------------------------------------------- repair after loss

/// A parent whose six children exited while records were lost (their reaps among them).
fn lost_reaps(k: &mut Kit) {
    k.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    k.engine.loss_seen();
    six_zombies(k);
    k.run_timers(4 * S);
}

#[test]
fn after_a_loss_a_zombie_finding_for_children_reaped_unseen_is_never_written() {
    let mut k = Kit::defaults();
    lost_reaps(&mut k);
    assert!(
        !k.all
            .iter()
            .any(|f| f.kind.as_str() == "zombie_accumulation"),
        "held while reconciling: {:?}",
        ks(&k.all)
    );
    // /proc now: the parent, no children (they were reaped).
    let parent = k.engine.enricher.procs.get(100).cloned().unwrap();
    k.proc_snapshot(4 * S, vec![parent]);
    let f = k.engine.reconciled(5 * S);
    assert!(
        f.iter().all(|x| x.kind.as_str() != "zombie_accumulation"),
        "no ghost finding: {:?}",
        ks(&f)
    );
    assert_eq!(k.engine.findings_withdrawn, 1);
    assert_eq!(
        k.engine
            .detectors
            .open_incidents()
            .iter()
            .map(|x| x.1)
            .sum::<usize>(),
        0
    );
    // Nor later, at the zombies' deadline.
    assert!(k
        .run_timers(30 * S)
        .iter()
        .all(|x| !x.kind.as_str().starts_with("zombie")));
}

#[test]
fn after_a_loss_true_zombies_are_written_once_reconciled() {
    let mut k = Kit::defaults();
    lost_reaps(&mut k);
    // /proc now: the parent and its six zombies.
    let snap: Vec<_> = [100u32, 200, 201, 202, 203, 204, 205]
        .iter()
        .map(|p| k.engine.enricher.procs.get(*p).cloned().unwrap())
        .collect();
    k.proc_snapshot(4 * S, snap);
    let f = k.engine.reconciled(5 * S);
    assert!(opened(&f, "zombie_accumulation"), "{:?}", ks(&f));
    assert_eq!(k.engine.findings_withdrawn, 0);
}

#[test]
fn the_registry_holds_every_kind_once_in_order() {
    let d = crate::detect::Detectors::new(DetectConfig::default());
    let kinds: Vec<_> = d.all().iter().map(|x| x.kind()).collect();
    assert_eq!(kinds, crate::detect::Kind::ALL.to_vec());
}

/// An exit the kernel's full exited-process table could not remember: its
/// reap without a wait would never be reported, so /proc is asked about it
/// (each second) until it is gone; an exit it remembered is left to its reap.
#[test]
fn exits_the_kernel_could_not_remember_are_looked_for_in_proc_until_gone() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    k.fork(2 * S, 100, 200);
    k.fork(2 * S, 100, 201);
    k.exit_untracked(2 * S + MS, 200);
    k.exit(2 * S + MS, 201, 0);
    // /proc: the parent only (200 was freed by the kernel, unseen; 201 too,
    // but its reap will be reported: it is not asked about).
    let parent = k.engine.enricher.procs.get(100).cloned().unwrap();
    k.confirm_with(vec![parent]);
    k.engine.recheck_unseen_reaps();
    let f = k.engine.reconciled(3 * S);
    assert!(f.is_empty(), "{f:?}");
    assert!(
        k.engine.enricher.procs.get(200).is_none(),
        "the unseen reap is repaired"
    );
    assert!(
        k.engine.enricher.procs.get(201).is_some(),
        "a remembered exit waits for its reap"
    );
    assert_eq!(k.engine.reconciled_processes, 1);
    // Nothing left to ask about.
    k.engine.recheck_unseen_reaps();
    assert!(!k.engine.reconciling());
}

/// Six children of pid 100 exit unreaped at 2 s.
fn six_zombies(k: &mut Kit) {
    for n in 0..6u32 {
        k.fork(2 * S, 100, 200 + n);
        k.exit(2 * S + MS, 200 + n, 0);
    }
}

/// A confirmation's `/proc` that has only pid 100, `loop` (its children
/// gone: their reaps were never seen, no loss said so), and its six zombies.
fn parent_alone(k: &mut Kit) {
    k.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    let parent = k.engine.enricher.procs.get(100).cloned().unwrap();
    k.confirm_with(vec![parent]);
    six_zombies(k);
}

/// A confirmation's `/proc` that has pid 100 and its six zombies, as they
/// are; then the same parent and zombies.
fn parent_and_zombies(k: &mut Kit) {
    let mut was = Kit::defaults();
    was.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    six_zombies(&mut was);
    let now: Vec<_> = [100u32, 200, 201, 202, 203, 204, 205]
        .iter()
        .map(|p| was.engine.enricher.procs.get(*p).cloned().unwrap())
        .collect();
    k.confirm_with(now);
    k.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    six_zombies(k);
}

#[test]
fn a_zombie_finding_is_written_at_once_and_withdrawn_when_proc_contradicts_it() {
    // The finding is written at once (nothing waits for /proc); /proc's
    // answer resolves it, saying why, and corrects the table.
    let mut k = Kit::defaults();
    parent_alone(&mut k);
    k.run_timers(30 * S);
    assert!(opened(&k.all, "zombie_accumulation"), "{:?}", ks(&k.all));
    assert_eq!(k.engine.findings_withdrawn, 0, "not answered yet");
    // (The accumulation's confirmation first; the zombie's, opened
    // meanwhile, next.)
    let mut f = k.answered(30 * S);
    f.extend(k.answered(30 * S));
    for kind in ["zombie_accumulation", "zombie"] {
        let gone = f
            .iter()
            .find(|x| x.kind.as_str() == kind)
            .unwrap_or_else(|| panic!("{kind} restated: {:?}", ks(&f)));
        assert_eq!(gone.state.as_str(), "resolved");
        assert!(
            gone.summary.contains("withdrawn: /proc shows"),
            "{}",
            gone.summary
        );
    }
    assert_eq!(k.engine.findings_withdrawn, 2);
    assert!(
        k.engine.enricher.procs.get(203).is_none(),
        "the gone children left the table"
    );
    // Both ways: real zombies are confirmed, and stay open.
    let mut k = Kit::defaults();
    parent_and_zombies(&mut k);
    k.run_timers(4 * S);
    assert!(opened(&k.all, "zombie_accumulation"), "{:?}", ks(&k.all));
    let mut f = k.answered(4 * S);
    f.extend(k.answered(4 * S));
    assert!(f.is_empty(), "confirmed: nothing to restate: {:?}", ks(&f));
    assert!(k.engine.confirmations >= 1);
    assert_eq!(k.engine.findings_withdrawn, 0);
    let id = &k
        .all
        .iter()
        .find(|f| f.kind.as_str() == "zombie_accumulation")
        .unwrap()
        .id;
    assert!(k
        .engine
        .detectors
        .is_open(crate::detect::Kind::ZombieAccumulation, id));
}

#[test]
fn with_confirm_before_open_a_zombie_finding_is_confirmed_against_proc_before_it_opens() {
    // The finding is not written, and the table is corrected.
    let cfg = DetectConfig {
        confirm_before_open: true,
        ..DetectConfig::default()
    };
    let mut k = Kit::new(cfg.clone());
    parent_alone(&mut k);
    k.run_timers(30 * S);
    assert!(
        !k.all.iter().any(|f| f.kind.as_str().starts_with("zombie")),
        "{:?}",
        ks(&k.all)
    );
    assert!(k.engine.findings_withdrawn >= 1);
    assert!(
        k.engine.enricher.procs.get(203).is_none(),
        "the gone children left the table"
    );
    // Both ways: real zombies are confirmed and written.
    let mut k = Kit::new(cfg);
    parent_and_zombies(&mut k);
    k.run_timers(4 * S);
    assert!(opened(&k.all, "zombie_accumulation"), "{:?}", ks(&k.all));
    assert_eq!(k.engine.confirmations, 1);
}

/// Zombie findings about pid `parent` in `f`, written as opens.
fn zombie_opens_about(f: &[crate::detect::Finding], parent: u32) -> usize {
    f.iter()
        .filter(|x| x.kind.as_str().starts_with("zombie") && x.state.as_str() == "open")
        .filter(|x| {
            x.processes
                .iter()
                .any(|p| p.role == "parent" && p.proc.key.tgid == parent)
        })
        .count()
}

/// Whether any finding in `f` names pid `pid`.
fn names(f: &[crate::detect::Finding], pid: u32) -> bool {
    f.iter()
        .any(|x| x.processes.iter().any(|p| p.proc.key.tgid == pid))
}

/// Six children of `parent` exit at `at`, their exits not remembered by the
/// kernel (its exited-process table was full).
fn six_untracked_zombies(k: &mut Kit, parent: u32, first: u32, at: u64) {
    for n in 0..6u32 {
        k.fork(at, parent, first + n);
        k.exit_untracked(at + MS, first + n);
    }
}

/// The processes `pids` as the kit's table has them now (a stand-in `/proc`).
fn as_now(k: &Kit, pids: &[u32]) -> Vec<crate::world::proctable::Proc> {
    pids.iter()
        .map(|p| k.engine.enricher.procs.get(*p).cloned().unwrap())
        .collect()
}

/// Zombies whose exits the kernel could not remember, handed to a
/// subreaper that frees them without a wait (it ignores SIGCHLD): their
/// reaps are never reported, so a zombie finding of the subreaper's at
/// their deadline would be a ghost. An open that names such a process is
/// confirmed against `/proc` before it is written, whatever
/// `confirm_before_open` says — and so never written. Both ways: zombies
/// `/proc` still shows are the subreaper's finding, written.
#[test]
fn an_open_naming_exits_the_kernel_could_not_remember_is_confirmed_before_it_is_written() {
    for still_there in [false, true] {
        let mut k = Kit::defaults();
        k.spawn(S / 2, 1, 50, "/sbin/subreaper", &["subreaper"]);
        *k.subreaper.lock().unwrap() = 50;
        k.spawn(S, 50, 100, "/usr/bin/loop", &["loop"]);
        six_untracked_zombies(&mut k, 100, 200, 2 * S);
        // /proc: the middle's zombies are real (its findings are true).
        let zombies: Vec<u32> = (200..206).collect();
        let mut now = as_now(&k, &[50, 100]);
        now.extend(as_now(&k, &zombies));
        k.confirm_with(now);
        k.run_timers(4 * S);
        assert_eq!(
            zombie_opens_about(&k.all, 100),
            1,
            "the middle's (true) accumulation: {:?}",
            ks(&k.all)
        );
        // The middle exits: its zombies pass to the subreaper, which (as
        // /proc shows, unless they are still there) freed them unseen.
        k.exit(5 * S, 100, 0);
        let mut now = as_now(&k, &[50]);
        if still_there {
            now.extend(as_now(&k, &zombies));
        }
        k.confirm_with(now);
        k.run_timers(60 * S);
        let subreapers = zombie_opens_about(&k.all, 50);
        if still_there {
            assert_eq!(subreapers, 2, "{:?}", ks(&k.all));
        } else {
            assert_eq!(subreapers, 0, "never written: {:?}", ks(&k.all));
            assert!(k.engine.findings_withdrawn >= 1);
            assert!(
                k.engine.enricher.procs.get(203).is_none(),
                "the unseen reaps are repaired"
            );
        }
    }
}

/// An open naming an exit the kernel could not remember, held while
/// another confirmation was under way, is not written on that one's
/// answer (it did not look at its processes): it is confirmed on its own
/// first.
#[test]
fn an_open_held_behind_another_confirmation_is_confirmed_on_its_own() {
    // /proc: pid 100's six zombies are there; pid 300's, freed unseen, are not.
    let mut was = Kit::defaults();
    was.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    was.spawn(S, 1, 300, "/usr/bin/other", &["other"]);
    six_zombies(&mut was);
    let mut proc_now = as_now(&was, &[100, 300]);
    proc_now.extend(as_now(&was, &[200, 201, 202, 203, 204, 205]));
    let mut k = Kit::defaults();
    k.confirm_with(proc_now);
    k.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    k.spawn(S, 1, 300, "/usr/bin/other", &["other"]);
    six_zombies(&mut k);
    six_untracked_zombies(&mut k, 300, 400, 2 * S + 2 * MS);
    // Pid 100's opens are written at once (their confirmation under way);
    // pid 300's wait.
    k.run_timers(20 * S);
    assert_eq!(zombie_opens_about(&k.all, 100), 2, "{:?}", ks(&k.all));
    assert_eq!(zombie_opens_about(&k.all, 300), 0, "{:?}", ks(&k.all));
    // What follows a held open waits with it: pid 300 reaps two, below
    // the accumulation's threshold (its resolution is not written before
    // its open).
    k.reap(20 * S, 300, 400);
    k.reap(20 * S, 300, 401);
    assert!(!names(&k.all, 300), "{:?}", ks(&k.all));
    // The answers: pid 100's confirmation, then pid 300's own.
    for _ in 0..4 {
        k.answered(20 * S);
    }
    assert!(!names(&k.all, 300), "never written: {:?}", ks(&k.all));
    assert!(k.engine.enricher.procs.get(403).is_none(), "repaired");
    assert!(k
        .run_timers(60 * S)
        .iter()
        .all(|f| !f.kind.as_str().starts_with("zombie") || f.state.as_str() != "open"));
}
