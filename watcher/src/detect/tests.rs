//! Detector unit tests: event sequences in, findings out — both ways: the
//! incident is found, and the healthy look-alike is not.
use super::{
    testkit::{ks, listener, opened, resolved, Kit, MS, S},
    DetectConfig, State,
};
use crate::world::sockdiag::KernelSocket;

const EADDRINUSE: i32 = -98;
const EADDRNOTAVAIL: i32 = -99;
const EINPROGRESS: i32 = -115;
const ECONNREFUSED: i32 = -111;
const CODE1: u32 = 0x100;

// ---------------------------------------------------------------- port_conflict

#[test]
fn port_conflict_names_the_confirmed_holder_and_is_one_incident_for_retries() {
    let mut k = Kit::defaults();
    k.spawn(
        S,
        1,
        100,
        "/usr/sbin/nginx",
        &["nginx", "-g", "daemon off;"],
    );
    k.listen(2 * S, 100, "0.0.0.0", 8080, 0xa);
    k.set_kernel(vec![listener("0.0.0.0", 8080, &[100])]);
    k.spawn(3 * S, 1, 200, "/usr/bin/python3", &["python3", "app.py"]);
    let f = k.bind(4 * S, 200, "0.0.0.0", 8080, EADDRINUSE, true);
    assert_eq!(ks(&f), vec![("port_conflict", "open")]);
    let s = &f[0].summary;
    assert!(s.starts_with("pid 200 (python3 app.py) cannot bind tcp 0.0.0.0:8080: held by pid 100 (nginx -g daemon off;) on 0.0.0.0:8080 since "), "{s}");
    assert_eq!(
        f[0].processes
            .iter()
            .map(|p| (p.role, p.proc.key.tgid))
            .collect::<Vec<_>>(),
        vec![("failing", 200), ("holder", 100)]
    );
    // The supervisor retries with new processes of the same program: the same incident.
    let id = f[0].id.clone();
    k.exit(4 * S + 10 * MS, 200, CODE1);
    for n in 0..20u32 {
        let pid = 300 + n;
        let t = 5 * S + n as u64 * S;
        k.spawn(t, 1, pid, "/usr/bin/python3", &["python3", "app.py"]);
        let f = k.bind(t + 5 * MS, pid, "0.0.0.0", 8080, EADDRINUSE, true);
        assert!(
            f.iter().all(|x| x.id == id && x.state == State::Update),
            "{f:?}"
        );
        k.exit(t + 10 * MS, pid, CODE1);
    }
    let updates = k
        .all
        .iter()
        .filter(|x| x.state == State::Update && x.kind.as_str() == "port_conflict")
        .count();
    assert!(updates <= 3, "updates are rate-limited: {updates}");
    // nginx goes away, the next try binds: resolved.
    k.unlisten(30 * S, 100, "0.0.0.0", 8080, 0xa);
    k.set_kernel(vec![]);
    k.spawn(31 * S, 1, 400, "/usr/bin/python3", &["python3", "app.py"]);
    let f = k.bind(32 * S, 400, "0.0.0.0", 8080, 0, true);
    assert_eq!(ks(&f), vec![("port_conflict", "resolved")]);
    assert_eq!(f[0].id, id);
    assert_eq!(f[0].count, 21);
}

#[test]
fn port_conflict_resolves_after_the_failing_process_exits_and_nobody_retries() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/a", &["a"]);
    k.listen(S + 1, 100, "127.0.0.1", 7000, 1);
    k.set_kernel(vec![listener("127.0.0.1", 7000, &[100])]);
    k.spawn(2 * S, 1, 200, "/bin/b", &["b"]);
    assert!(opened(
        &k.bind(3 * S, 200, "127.0.0.1", 7000, EADDRINUSE, true),
        "port_conflict"
    ));
    k.exit(4 * S, 200, CODE1);
    k.reap(4 * S + 1, 1, 200);
    assert!(
        k.run_timers(4 * S + 29 * S).is_empty(),
        "within the grace period"
    );
    assert!(resolved(&k.run_timers(4 * S + 30 * S), "port_conflict"));
}

#[test]
fn port_conflict_holder_comes_from_the_kernel_not_a_stale_table() {
    let mut k = Kit::defaults();
    // 100 bound and listened, then forked 150 (inheriting the socket) and exited.
    k.spawn(S, 1, 100, "/usr/sbin/daemon", &["daemon"]);
    k.listen(S + 1, 100, "0.0.0.0", 6000, 7);
    k.fork(S + 2, 100, 150);
    k.exit(S + 3, 100, 0);
    k.reap(S + 4, 1, 100);
    k.set_kernel(vec![listener("0.0.0.0", 6000, &[150])]);
    k.spawn(2 * S, 1, 200, "/bin/other", &["other"]);
    let f = k.bind(3 * S, 200, "0.0.0.0", 6000, EADDRINUSE, true);
    assert!(
        f[0].summary.contains("held by pid 150 (daemon)"),
        "{}",
        f[0].summary
    );
}

#[test]
fn port_conflict_with_only_time_wait_connections_says_so() {
    let mut k = Kit::defaults();
    k.set_kernel(vec![KernelSocket {
        tcp: true,
        addr: "127.0.0.1".parse().unwrap(),
        port: 7100,
        state: 6,
        uid: 0,
        netns: 0,
        inode: 0,
        pids: vec![],
    }]);
    k.spawn(S, 1, 200, "/bin/b", &["b"]);
    let f = k.bind(2 * S, 200, "0.0.0.0", 7100, EADDRINUSE, true);
    assert!(
        f[0].summary.contains("TIME_WAIT") && f[0].summary.contains("SO_REUSEADDR"),
        "{}",
        f[0].summary
    );
}

#[test]
fn allow_listed_ports_are_quiet() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 200, "/usr/sbin/avahi-daemon", &["avahi-daemon"]);
    assert!(k
        .bind(2 * S, 200, "0.0.0.0", 5353, EADDRINUSE, false)
        .is_empty());
}

#[test]
fn holders_existing_at_start_are_named() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/sbin/sshd", &["sshd"]);
    let seed = vec![listener("0.0.0.0", 22, &[100])];
    k.engine.seed(&seed, S);
    k.set_kernel(seed);
    k.spawn(2 * S, 1, 200, "/bin/dropbear", &["dropbear"]);
    let f = k.bind(3 * S, 200, "0.0.0.0", 22, EADDRINUSE, true);
    assert!(
        f[0].summary
            .contains("held by pid 100 (sshd) on 0.0.0.0:22 since before watcher started"),
        "{}",
        f[0].summary
    );
}

// ---------------------------------------------------------------- port_shadowed

#[test]
fn specific_address_shadows_a_wildcard_of_another_program() {
    let mut k = Kit::defaults();
    k.spawn(
        S,
        1,
        100,
        "/usr/bin/docker-proxy",
        &["docker-proxy", "-host-port", "54112"],
    );
    k.listen(2 * S, 100, "0.0.0.0", 54112, 1);
    k.spawn(3 * S, 1, 200, "/usr/bin/node", &["node", "dev.js"]);
    k.set_kernel(vec![
        listener("0.0.0.0", 54112, &[100]),
        listener("127.0.0.1", 54112, &[200]),
    ]);
    let f = k.listen(4 * S, 200, "127.0.0.1", 54112, 2);
    assert_eq!(ks(&f), vec![("port_shadowed", "open")]);
    let s = &f[0].summary;
    assert!(
        s.contains("connections to 127.0.0.1:54112 go to pid 200 (node dev.js)"),
        "{s}"
    );
    assert!(
        s.contains("to pid 100 (docker-proxy -host-port 54112) on 0.0.0.0:54112"),
        "{s}"
    );
    // The dev server stops: resolved.
    assert!(resolved(
        &k.unlisten(5 * S, 200, "127.0.0.1", 54112, 2),
        "port_shadowed"
    ));
}

#[test]
fn ipv4_and_ipv6_wildcards_of_different_programs() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/v4", &["v4"]);
    k.listen(2 * S, 100, "0.0.0.0", 9000, 1);
    k.spawn(3 * S, 1, 200, "/bin/v6", &["v6"]);
    k.set_kernel(vec![
        listener("0.0.0.0", 9000, &[100]),
        listener("::", 9000, &[200]),
    ]);
    let f = k.listen(4 * S, 200, "::", 9000, 2);
    assert!(opened(&f, "port_shadowed"));
    assert!(
        f[0].summary
            .contains("IPv6 connections to port 9000 go to pid 200")
            && f[0].summary.contains("IPv4 ones to pid 100"),
        "{}",
        f[0].summary
    );
    // The v4 holder exits; its listener closes.
    k.exit(5 * S, 100, 0);
    assert!(resolved(
        &k.unlisten(5 * S + 1, 100, "0.0.0.0", 9000, 1),
        "port_shadowed"
    ));
}

#[test]
fn ipv4_mapped_ipv6_is_the_same_address() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/a", &["a"]);
    k.listen(2 * S, 100, "::ffff:127.0.0.1", 9100, 1);
    k.spawn(3 * S, 1, 200, "/bin/b", &["b"]);
    k.set_kernel(vec![listener("::ffff:127.0.0.1", 9100, &[100])]);
    assert!(opened(
        &k.listen(4 * S, 200, "127.0.0.1", 9100, 2),
        "port_shadowed"
    ));
}

#[test]
fn a_reuseport_pool_of_one_program_and_one_process_are_not_shadowing() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/worker", &["worker", "--port", "9200"]);
    k.spawn(S, 1, 101, "/usr/bin/worker", &["worker", "--port", "9200"]);
    k.spawn(S, 1, 102, "/usr/bin/worker", &["worker", "--port", "9200"]);
    for (i, pid) in [100u32, 101, 102].iter().enumerate() {
        assert!(k
            .listen(2 * S + i as u64, *pid, "0.0.0.0", 9200, 10 + i as u64)
            .is_empty());
    }
    // One process on v4 and v6.
    k.spawn(3 * S, 1, 300, "/bin/dual", &["dual"]);
    assert!(k.listen(4 * S, 300, "0.0.0.0", 9300, 20).is_empty());
    assert!(k.listen(4 * S + 5, 300, "::", 9300, 21).is_empty());
    // Different specific addresses do not overlap.
    assert!(k.listen(4 * S + 9, 300, "127.0.0.1", 9301, 22).is_empty());
    k.spawn(5 * S, 1, 400, "/bin/x", &["x"]);
    assert!(k.listen(6 * S, 400, "127.0.0.2", 9301, 30).is_empty());
    assert!(k.all.is_empty(), "{:?}", k.all);
}

#[test]
fn a_shadow_that_is_already_over_when_looked_up_is_still_reported() {
    // Both listeners closed before the lookup ran: their closes are still queued.
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/a", &["a"]);
    k.listen(2 * S, 100, "0.0.0.0", 9500, 1);
    k.spawn(3 * S, 1, 200, "/bin/b", &["b"]);
    k.set_kernel(vec![]);
    assert!(opened(
        &k.listen(4 * S, 200, "127.0.0.1", 9500, 2),
        "port_shadowed"
    ));
    assert!(resolved(
        &k.unlisten(5 * S, 200, "127.0.0.1", 9500, 2),
        "port_shadowed"
    ));
}

#[test]
fn a_socket_the_events_have_not_shown_yet_is_not_a_holder() {
    // Two members of one program's pool: when the first one's listen is
    // confirmed, the kernel already lists the second, whose exec is still
    // queued (the table thinks it is its parent, another program).
    let mut k = Kit::defaults();
    k.spawn(S, 1, 10, "/bin/launcher", &["launcher"]);
    k.spawn(S, 10, 100, "/usr/bin/member", &["member", "9400"]);
    k.listen(2 * S, 100, "0.0.0.0", 9400, 1);
    k.fork(3 * S, 10, 101);
    k.set_kernel(vec![
        listener("0.0.0.0", 9400, &[100]),
        listener("0.0.0.0", 9400, &[101]),
    ]);
    // A third member's listen triggers a confirmation while 101's exec is not yet seen.
    k.spawn(3 * S + 10, 10, 102, "/usr/bin/member", &["member", "9400"]);
    let f = k.listen(4 * S, 102, "0.0.0.0", 9400, 3);
    assert!(f.is_empty(), "{:?}", ks(&f));
    // Then 101's exec and listen arrive: one program, no finding.
    k.exec(3 * S + 1, 101, "/usr/bin/member", &["member", "9400"]);
    assert!(k.listen(4 * S + 5, 101, "0.0.0.0", 9400, 2).is_empty());
    assert!(k.all.is_empty(), "{:?}", ks(&k.all));
}

// ---------------------------------------------------------------- address_unavailable

#[test]
fn address_unavailable_opens_and_resolves() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/sbin/keepalived", &["app"]);
    let f = k.bind(2 * S, 100, "192.0.2.10", 80, EADDRNOTAVAIL, true);
    assert_eq!(ks(&f), vec![("address_unavailable", "open")]);
    assert!(
        f[0].summary
            .contains("192.0.2.10 is not an address of this host"),
        "{}",
        f[0].summary
    );
    assert!(
        k.bind(3 * S, 100, "192.0.2.10", 80, EADDRNOTAVAIL, true)
            .is_empty(),
        "rate-limited update"
    );
    assert!(resolved(
        &k.bind(20 * S, 100, "192.0.2.10", 80, 0, true),
        "address_unavailable"
    ));
}

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

// ---------------------------------------------------------------- fork_storm

#[test]
fn forking_faster_than_500_per_second_for_2_seconds() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/spawner", &["spawner"]);
    let mut open_at = None;
    // 800 forks/s for 3 s; children exit at once.
    for n in 0..2400u64 {
        let pid = 1000 + n as u32;
        let t = 2 * S + n * S / 800;
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
    let f = k.run_timers(7 * S);
    assert!(resolved(&f, "fork_storm"), "{:?}", ks(&f));
}

#[test]
fn a_fork_bomb_names_the_root_of_the_growing_tree() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 50, "/bin/bash", &["bash"]);
    k.fork(2 * S, 50, 100);
    let mut pid = 1000;
    let mut t = 3 * S;
    // 10 children of 100, each forking 110 that never exit: 1,110 new descendants in 1.1 s.
    for c in 0..10u32 {
        let child = 200 + c;
        k.fork(t, 100, child);
        for _ in 0..110 {
            t += MS;
            k.fork(t, child, pid);
            pid += 1;
        }
    }
    let f: Vec<_> = k
        .all
        .iter()
        .filter(|x| x.kind.as_str() == "fork_storm")
        .collect();
    assert_eq!(f.len(), 1, "{:?}", ks(&k.all));
    assert_eq!(f[0].processes[0].proc.key.tgid, 100, "{}", f[0].summary);
    assert!(f[0].summary.contains("fork bomb"));
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

// ---------------------------------------------------------------- port probers

#[test]
fn a_port_prober_is_one_incident_resolved_at_its_bind_saying_which_port() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/node", &["node", "vite"]);
    k.spawn(
        S,
        1,
        50,
        "/usr/bin/python3",
        &["python3", "-m", "http.server"],
    );
    k.set_kernel(vec![
        listener("0.0.0.0", 8000, &[50]),
        listener("0.0.0.0", 8001, &[50]),
        listener("0.0.0.0", 8002, &[50]),
    ]);
    let mut f = Vec::new();
    for (n, port) in [8000u16, 8001, 8002].into_iter().enumerate() {
        f.extend(k.bind(2 * S + n as u64 * MS, 100, "127.0.0.1", port, -98, true));
    }
    f.extend(k.bind(2 * S + 5 * MS, 100, "127.0.0.1", 8003, 0, true));
    let conflicts: Vec<_> = f
        .iter()
        .filter(|x| x.kind.as_str() == "port_conflict")
        .collect();
    assert_eq!(
        conflicts
            .iter()
            .filter(|x| x.state.as_str() == "open")
            .count(),
        1,
        "one incident for the probe: {conflicts:?}"
    );
    let r = conflicts
        .iter()
        .find(|x| x.state.as_str() == "resolved")
        .expect("resolved at the successful bind");
    assert!(
        r.summary.contains("got 8003") && r.summary.contains("8000, 8001, 8002"),
        "{}",
        r.summary
    );
    assert_eq!(
        k.engine
            .detectors
            .open_incidents()
            .iter()
            .find(|(kd, _)| kd.as_str() == "port_conflict")
            .map(|x| x.1),
        Some(0)
    );
}

#[test]
fn a_retry_loop_on_one_fixed_port_stays_one_open_incident() {
    let mut k = Kit::defaults();
    k.spawn(
        S,
        1,
        100,
        "/usr/sbin/haproxy",
        &["haproxy", "-f", "/etc/haproxy.cfg"],
    );
    k.spawn(S, 1, 50, "/usr/sbin/nginx", &["nginx"]);
    k.set_kernel(vec![listener("0.0.0.0", 443, &[50])]);
    for n in 0..20u64 {
        k.bind(2 * S + n * S, 100, "0.0.0.0", 443, -98, true);
    }
    // A bind of another, unrelated port (not a probe's next try) does not resolve it.
    k.bind(30 * S, 100, "0.0.0.0", 9100, 0, true);
    let opens = k
        .all
        .iter()
        .filter(|x| x.kind.as_str() == "port_conflict" && x.state.as_str() == "open")
        .count();
    assert_eq!(opens, 1);
    assert!(!resolved(&k.all, "port_conflict"), "still failing on 443");
}

#[test]
fn a_failed_bind_to_port_0_is_not_a_port_conflict() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/python3", &["python3", "client.py"]);
    let f = k.bind(2 * S, 100, "127.0.0.1", 0, -98, true);
    assert!(
        !f.iter().any(|x| x.kind.as_str() == "port_conflict"),
        "{f:?}"
    );
}

// ---------------------------------------------------------------- reload

#[test]
fn a_reload_keeps_open_incidents_and_resolves_a_disabled_detectors() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/master", &["master"]);
    for n in 0..6u32 {
        k.fork(2 * S, 100, 200 + n);
        k.exit(2 * S + MS, 200 + n, 0);
    }
    k.run_timers(4 * S);
    assert!(opened(&k.all, "zombie_accumulation"), "{:?}", ks(&k.all));
    k.spawn(S, 1, 300, "/usr/sbin/nginx", &["nginx"]);
    k.set_kernel(vec![listener("0.0.0.0", 80, &[300])]);
    k.spawn(S, 1, 400, "/usr/sbin/apache2", &["apache2"]);
    assert!(opened(
        &k.bind(5 * S, 400, "0.0.0.0", 80, EADDRINUSE, true),
        "port_conflict"
    ));

    let mut cfg = DetectConfig::default();
    cfg.zombie_accumulation.threshold = 3;
    cfg.port_conflict.enabled = false;
    let f = k.engine.detectors.reconfigure(cfg, 6 * S);
    assert_eq!(ks(&f), vec![("port_conflict", "resolved")]);
    assert!(
        f[0].summary.contains("disabled by a configuration reload"),
        "{}",
        f[0].summary
    );
    // The zombies' incident is still open, and resolves when they are reaped.
    let mut f = Vec::new();
    for n in 0..6u32 {
        f.extend(k.reap(7 * S, 100, 200 + n));
    }
    assert!(resolved(&f, "zombie_accumulation"), "{:?}", ks(&f));
    // The disabled detector is quiet now.
    assert!(!k
        .bind(8 * S, 400, "0.0.0.0", 80, EADDRINUSE, true)
        .iter()
        .any(|x| x.kind.as_str() == "port_conflict"));
}

// ---------------------------------------------------------------- ports_exhausted

fn exhausted_summary() -> crate::world::sockdiag::PortSummary {
    crate::world::sockdiag::PortSummary {
        range: Some((40000, 40001)),
        ports_in_use: 2,
        sockets: 2,
        time_wait: 1,
        by_process: vec![(100, "python3 client.py".into(), 1)],
        by_destination: vec![(("10.0.0.5".parse().unwrap(), 5432), 2, 1)],
    }
}

#[test]
fn a_failed_bind_to_port_0_opens_ports_exhausted_and_the_summary_follows_as_an_update() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/python3", &["python3", "client.py"]);
    let f = k.bind(2 * S, 100, "127.0.0.1", 0, EADDRINUSE, true);
    let open = f
        .iter()
        .find(|x| x.kind.as_str() == "ports_exhausted")
        .expect("opens at once");
    assert_eq!(open.state, State::Open);
    assert!(open.summary.starts_with("no free local port in network namespace 0: a bind to 127.0.0.1:0 (any free port) by pid 100"), "{}", open.summary);
    assert!(
        !f.iter().any(|x| x.kind.as_str() == "port_conflict"),
        "not a port conflict: {f:?}"
    );
    assert_eq!(
        k.summaries_asked(),
        vec![0],
        "one summary asked, off the detector's path"
    );
    // A second failure within 10 s asks nothing more.
    k.bind(3 * S, 100, "127.0.0.1", 0, EADDRINUSE, true);
    assert_eq!(k.summaries_asked(), vec![0]);
    k.set_summary(Some(exhausted_summary()));
    let f = k.late(4 * S);
    let up = f
        .iter()
        .find(|x| x.kind.as_str() == "ports_exhausted")
        .expect("the summary as an update");
    assert_eq!(up.state, State::Update);
    assert!(
        up.summary.contains("ephemeral range 40000–40001 (2 ports"),
        "{}",
        up.summary
    );
    assert!(
        up.summary
            .contains("2 in use by 2 sockets (1 in TIME_WAIT)"),
        "{}",
        up.summary
    );
    assert!(
        up.summary.contains("pid 100 (python3 client.py) 1")
            && up.summary.contains("10.0.0.5:5432 2 (1 in TIME_WAIT)"),
        "{}",
        up.summary
    );
    assert_eq!(up.details["ephemeral_range"]["size"], 2);
    // A later bind to port 0 that works resolves it.
    let f = k.bind(5 * S, 100, "127.0.0.1", 0, 0, true);
    assert!(resolved(&f, "ports_exhausted"), "{:?}", ks(&f));
}

#[test]
fn a_connect_without_a_free_local_port_is_ports_exhausted_not_connect_failures() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/python3", &["python3", "client.py"]);
    for n in 0..20u64 {
        k.connect(2 * S + n * MS, 100, "10.0.0.5", 5432, -99, 0x9000 + n);
    }
    let kinds = ks(&k.all);
    assert!(kinds.contains(&("ports_exhausted", "open")), "{kinds:?}");
    assert!(
        !kinds.iter().any(|(kd, _)| *kd == "connect_failures"),
        "the destination is not at fault: {kinds:?}"
    );
    let f = k.connect(3 * S, 100, "10.0.0.5", 5432, EINPROGRESS, 0x9100);
    assert!(resolved(&f, "ports_exhausted"));
}

// ---------------------------------------------------------------- repair after loss

/// A parent whose six children exited while records were lost (their reaps among them).
fn lost_reaps(k: &mut Kit) {
    k.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    k.engine.loss_seen();
    for n in 0..6u32 {
        k.fork(2 * S, 100, 200 + n);
        k.exit(2 * S + MS, 200 + n, 0);
    }
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
    let d = super::Detectors::new(DetectConfig::default());
    let kinds: Vec<_> = d.all().iter().map(|x| x.kind()).collect();
    assert_eq!(kinds, super::Kind::ALL.to_vec());
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

#[test]
fn a_zombie_finding_is_confirmed_against_proc_before_it_opens() {
    // /proc says the children are gone (their reaps were never seen, no loss
    // said so): the finding is not written, and the table is corrected.
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    let parent = k.engine.enricher.procs.get(100).cloned().unwrap();
    k.confirm_with(vec![parent]);
    for n in 0..6u32 {
        k.fork(2 * S, 100, 200 + n);
        k.exit(2 * S + MS, 200 + n, 0);
    }
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
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    for n in 0..6u32 {
        k.fork(2 * S, 100, 200 + n);
        k.exit(2 * S + MS, 200 + n, 0);
    }
    let now: Vec<_> = [100u32, 200, 201, 202, 203, 204, 205]
        .iter()
        .map(|p| k.engine.enricher.procs.get(*p).cloned().unwrap())
        .collect();
    let mut k2 = Kit::defaults();
    k2.confirm_with(now);
    k2.spawn(S, 1, 100, "/usr/bin/loop", &["loop"]);
    for n in 0..6u32 {
        k2.fork(2 * S, 100, 200 + n);
        k2.exit(2 * S + MS, 200 + n, 0);
    }
    k2.run_timers(4 * S);
    assert!(opened(&k2.all, "zombie_accumulation"), "{:?}", ks(&k2.all));
    assert_eq!(k2.engine.confirmations, 1);
}
