//! Detector unit tests, connect_failures and the lookup budget: event sequences in, findings out —
//! both ways: the incident is found, and the healthy look-alike is not.
use crate::detect::{
    testkit::{ks, listener, opened, resolved, Kit, MS, S},
    DetectConfig,
};

use super::{EADDRINUSE, ECONNREFUSED, EINPROGRESS};

// ---------------------------------------------------------------- connect_failures

#[test]
fn refused_nonblocking_connects_from_several_clients() {
    let mut k = Kit::defaults();
    for c in 0..3u32 {
        k.spawn(
            S,
            1,
            100 + c,
            "/usr/bin/client",
            &["client", &c.to_string()],
        );
    }
    let mut first_open = None;
    for n in 0..12u64 {
        let pid = 100 + (n % 3) as u32;
        let sk = 0x5000 + n;
        let t = 2 * S + n * 100 * MS;
        k.tcp(t, pid, sk, 7, 2, "127.0.0.1", 0, "127.0.0.1", 5432);
        k.connect(t + 1, pid, "127.0.0.1", 5432, EINPROGRESS, sk);
        // The refusal arrives in softirq context (pid 0).
        let f = k.tcp(
            t + 100_000,
            0,
            sk,
            2,
            7,
            "127.0.0.1",
            40000,
            "127.0.0.1",
            5432,
        );
        if opened(&f, "connect_failures") {
            first_open.get_or_insert(n);
        }
    }
    assert_eq!(first_open, Some(9), "the 10th failure opens it");
    let f = k
        .all
        .iter()
        .find(|x| x.kind.as_str() == "connect_failures")
        .unwrap();
    assert!(
        f.summary
            .starts_with("10 connects to 127.0.0.1:5432 failed within 10 s"),
        "{}",
        f.summary
    );
    assert!(
        f.summary.contains("from 3 client process(es)"),
        "{}",
        f.summary
    );
    let mut clients: Vec<u32> = f.processes.iter().map(|p| p.proc.key.tgid).collect();
    clients.sort();
    assert_eq!(clients, vec![100, 101, 102]);
    // A connect that succeeds resolves it.
    k.tcp(9 * S, 100, 0x9999, 7, 2, "127.0.0.1", 0, "127.0.0.1", 5432);
    let f = k.tcp(
        9 * S + 1,
        0,
        0x9999,
        2,
        1,
        "127.0.0.1",
        40001,
        "127.0.0.1",
        5432,
    );
    assert!(resolved(&f, "connect_failures"));
}

#[test]
fn blocking_refusals_count_once_and_a_slow_trickle_is_quiet() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/client", &["client"]);
    for n in 0..9u64 {
        let sk = 0x7000 + n;
        let t = 2 * S + n * MS;
        k.tcp(t, 100, sk, 7, 2, "127.0.0.1", 0, "127.0.0.1", 6000);
        k.tcp(t + 1, 100, sk, 2, 7, "127.0.0.1", 40000, "127.0.0.1", 6000);
        k.connect(t + 2, 100, "127.0.0.1", 6000, ECONNREFUSED, sk);
    }
    assert!(k.all.is_empty(), "9 refusals, counted once each: below 10");
    // One failure every 2 s for a minute: never 10 within 10 s.
    for n in 0..30u64 {
        let sk = 0x8000 + n;
        let t = 20 * S + n * 2 * S;
        k.tcp(t, 100, sk, 7, 2, "127.0.0.1", 0, "127.0.0.1", 6001);
        k.tcp(t + 1, 100, sk, 2, 7, "127.0.0.1", 40000, "127.0.0.1", 6001);
    }
    assert!(k.all.is_empty(), "{:?}", ks(&k.all));
}

#[test]
fn a_flood_of_refusals_updates_once_per_interval_with_every_failure_counted() {
    // (Between updates each failure is counted without a record being
    // built; the update that is due says the count and the latest error.)
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/client", &["client"]);
    let mut records = Vec::new();
    for n in 0..2_000u64 {
        let sk = 0xa000 + n;
        // 2,000 refusals over 12 s: the update interval (10 s) passes once.
        let t = 2 * S + n * 6 * MS;
        k.tcp(t, 100, sk, 7, 2, "127.0.0.1", 0, "127.0.0.1", 5433);
        records.extend(k.tcp(t + 1, 100, sk, 2, 7, "127.0.0.1", 40000, "127.0.0.1", 5433));
        records.extend(k.connect(t + 2, 100, "127.0.0.1", 5433, ECONNREFUSED, sk));
    }
    let states: Vec<&str> = records.iter().map(|f| f.state.as_str()).collect();
    assert_eq!(states, ["open", "update"], "{:?}", ks(&records));
    let update = &records[1];
    // The update comes with the first failure 10 s after the open (the 10th):
    // 9 + 10 s / 6 ms failures, each counted once.
    assert_eq!(update.count, 1 + (10 * S).div_ceil(6 * MS));
    // What it says is built at the update: the failures within the window then.
    assert_eq!(
        update.details["failures_in_window"],
        (10 * S).div_ceil(6 * MS)
    );
    assert!(
        update
            .summary
            .starts_with("1667 connects to 127.0.0.1:5433 failed within 10 s"),
        "{}",
        update.summary
    );
    // A client that fails between updates, then a connect that succeeds:
    // the resolution carries what the incident said at its last failure.
    k.spawn(15 * S, 1, 101, "/usr/bin/client", &["client", "2"]);
    k.tcp(16 * S, 101, 0xf000, 7, 2, "127.0.0.1", 0, "127.0.0.1", 5433);
    assert!(k
        .tcp(
            16 * S + 1,
            101,
            0xf000,
            2,
            7,
            "127.0.0.1",
            40000,
            "127.0.0.1",
            5433
        )
        .is_empty());
    k.tcp(17 * S, 100, 0xf001, 7, 2, "127.0.0.1", 0, "127.0.0.1", 5433);
    let f = k.tcp(
        17 * S + 1,
        0,
        0xf001,
        2,
        1,
        "127.0.0.1",
        40001,
        "127.0.0.1",
        5433,
    );
    assert!(resolved(&f, "connect_failures"), "{:?}", ks(&f));
    // (Counted from its open, the 10th failure: 1,991 + 1.)
    assert_eq!(f[0].count, 1_992);
    assert_eq!(f[0].details["clients"], serde_json::json!([100, 101]));
    assert_eq!(f[0].processes.len(), 2);
}

#[test]
fn connect_failures_note_a_shadowed_destination_port() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/real", &["real"]);
    k.listen(2 * S, 100, "0.0.0.0", 7777, 1);
    k.spawn(3 * S, 1, 200, "/bin/dev", &["dev"]);
    k.set_kernel(vec![listener("0.0.0.0", 7777, &[100])]);
    k.listen(4 * S, 200, "127.0.0.1", 7777, 2);
    k.spawn(5 * S, 1, 300, "/bin/client", &["client"]);
    for n in 0..10u64 {
        let sk = 0x6000 + n;
        k.tcp(6 * S + n, 300, sk, 7, 2, "127.0.0.1", 0, "127.0.0.1", 7777);
        k.tcp(6 * S + n, 0, sk, 2, 7, "127.0.0.1", 1, "127.0.0.1", 7777);
    }
    let f = k
        .all
        .iter()
        .find(|x| x.kind.as_str() == "connect_failures")
        .expect("finding");
    assert!(
        f.summary.contains("note: port 7777 (tcp) is shadowed"),
        "{}",
        f.summary
    );
}

#[test]
fn a_storm_of_failing_binds_is_bounded_in_lookups() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/holder", &["holder"]);
    k.spawn(S, 1, 200, "/bin/storm", &["storm"]);
    for n in 0..400u64 {
        // (Ports far apart: not a prober's tries, which are one incident.)
        let port = 20_000 + 101 * n as u16;
        k.listen(2 * S + n * 1000, 100, "127.0.0.1", port, 0x10_0000 + n);
        k.bind(
            2 * S + n * 1000 + 500,
            200,
            "127.0.0.1",
            port,
            EADDRINUSE,
            true,
        );
    }
    // A failing bind whose incident would not open (its user opened its
    // share of the second, 50) is not looked up: nothing would be written
    // from the answer.
    let share = crate::detect::incident::OPENS_PER_USER_PER_SECOND as u64;
    assert_eq!(k.engine.lookups, share);
    let opened = k
        .all
        .iter()
        .filter(|f| f.kind.as_str() == "port_conflict" && f.state.as_str() == "open")
        .count() as u64;
    assert_eq!(opened, share);
    // Without confirmation the table still names the holder.
    let f = k
        .all
        .iter()
        .rfind(|f| f.kind.as_str() == "port_conflict")
        .unwrap();
    assert!(f.summary.contains("held by pid 100"), "{}", f.summary);
}

#[test]
fn the_workers_lookups_are_bounded_for_all_users_together() {
    // Three users fail 250 binds each within one second on ports whose
    // holder the table does not know (each a question for a namespace
    // worker): 200 each by their own budget, 400 in all.
    let mut k = Kit::new(DetectConfig {
        max_opens_per_user_s: 0,
        ..Default::default()
    });
    for (n, uid) in [(0u32, 1001u32), (1, 1002), (2, 1003)] {
        k.as_user(200 + n, uid);
        k.spawn(S, 1, 200 + n, "/bin/storm", &["storm", &n.to_string()]);
    }
    for i in 0..250u64 {
        for n in 0..3u32 {
            let port = 1_000 + (i * 3 + n as u64) as u16 * 80;
            k.bind(
                2 * S + i * 1_000_000 + n as u64,
                200 + n,
                "127.0.0.1",
                port,
                EADDRINUSE,
                true,
            );
        }
    }
    assert_eq!(
        k.engine.lookups,
        crate::world::lookup::ASKS_PER_SECOND as u64
    );
    assert_eq!(k.engine.lookups_skipped, 3 * 250 - 400);
    // The next second has its share again.
    k.bind(4 * S, 200, "127.0.0.1", 65_000, EADDRINUSE, true);
    assert_eq!(k.engine.lookups, 401);
}

#[test]
fn each_user_has_its_own_lookups_and_none_is_waited_for() {
    // (Every conflict opens: the lookups' own bound is what is tested.)
    let mut k = Kit::new(DetectConfig {
        max_opens_per_user_s: 0,
        ..Default::default()
    });
    k.spawn(S, 1, 100, "/bin/holder", &["holder"]);
    k.as_user(200, 65534);
    k.spawn(S, 1, 200, "/bin/storm", &["storm"]);
    k.spawn(S, 1, 300, "/bin/other", &["other"]);
    // No answer is there at once (as from a helper thread): the engine goes
    // on without it.
    k.slow_lookups
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for n in 0..300u64 {
        // (Ports far apart: not a prober's tries, which are one incident.)
        let port = 10_000 + 150 * n as u16;
        k.listen(2 * S + n * 1000, 100, "127.0.0.1", port, 0x10_0000 + n);
        k.bind(
            2 * S + n * 1000 + 500,
            200,
            "127.0.0.1",
            port,
            EADDRINUSE,
            true,
        );
    }
    let per_user = crate::world::lookup::LOOKUPS_PER_SECOND as u64;
    assert_eq!(k.engine.lookups, per_user);
    assert_eq!(k.engine.lookups_skipped, 300 - per_user);
    // Every conflict was written at once, from the table (the holder named).
    let conflicts = k
        .all
        .iter()
        .filter(|f| f.kind.as_str() == "port_conflict" && f.summary.contains("held by pid 100"))
        .count();
    assert_eq!(conflicts, 300);
    // Another user's conflict in the same second is still looked up.
    k.listen(2 * S + 900_000, 100, "127.0.0.1", 50_000, 0x20_0000);
    k.bind(2 * S + 900_500, 300, "127.0.0.1", 50_000, EADDRINUSE, true);
    assert_eq!(k.engine.lookups, per_user + 1);
    // The answers come later; they say what the table said: no update.
    let before = k.all.len();
    let late = k.late(2 * S + S / 2);
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(k.all.len(), before);
}
