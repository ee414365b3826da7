//! Detector unit tests, port_conflict, port_shadowed, address_unavailable, ports_exhausted and port probers: event sequences in, findings out —
//! both ways: the incident is found, and the healthy look-alike is not.
use crate::detect::{
    testkit::{ks, listener, opened, resolved, time_wait, Kit, MS, S},
    State,
};

use super::{CODE1, EADDRINUSE, EADDRNOTAVAIL, EINPROGRESS};
use crate::world::sockdiag::KernelSocket;
use std::sync::atomic::Ordering::Relaxed;

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
    k.set_kernel(vec![time_wait("127.0.0.1", 7100)]);
    k.spawn(S, 1, 200, "/bin/b", &["b"]);
    let f = k.bind(2 * S, 200, "0.0.0.0", 7100, EADDRINUSE, true);
    assert!(
        f[0].summary.contains("TIME_WAIT") && f[0].summary.contains("SO_REUSEADDR"),
        "{}",
        f[0].summary
    );
}

#[test]
fn only_a_question_that_needs_a_ports_connections_asks_for_them() {
    // (Without a listener on the port, the kernel answers for its
    // connections by walking its whole connection table.)
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/bin/a", &["a"]);
    k.listen(S + 1, 100, "0.0.0.0", 7200, 1);
    k.set_kernel(vec![listener("0.0.0.0", 7200, &[100])]);
    k.port_questions();
    // Another program listens beside it (SO_REUSEPORT): its bind and its
    // listen are confirmed, listeners only.
    k.spawn(2 * S, 1, 200, "/bin/b", &["b"]);
    k.listen(3 * S, 200, "127.0.0.1", 7200, 2);
    let asked = k.port_questions();
    assert!(!asked.is_empty(), "the new holder is confirmed");
    assert!(
        asked
            .iter()
            .all(|(key, connections)| *key == (0, true, 7200) && !connections),
        "{asked:?}"
    );
    // A bind that fails where the table knows no holder: its blocker may
    // be a connection.
    k.spawn(4 * S, 1, 300, "/bin/c", &["c"]);
    k.set_kernel(vec![time_wait("127.0.0.1", 7300)]);
    let f = k.bind(5 * S, 300, "0.0.0.0", 7300, EADDRINUSE, true);
    assert!(opened(&f, "port_conflict"));
    assert_eq!(k.port_questions(), vec![((0, true, 7300), true)]);
    // While that conflict is open, a later bind's confirmation restates it
    // from the kernel's word: connections too.
    k.spawn(6 * S, 1, 400, "/bin/d", &["d"]);
    k.bind_sk(7 * S, 400, "127.0.0.1", 7300, 4);
    k.bind_sk(7 * S + 1, 300, "127.0.0.2", 7300, 5);
    let asked = k.port_questions();
    assert!(
        !asked.is_empty() && asked.iter().all(|(_, connections)| *connections),
        "{asked:?}"
    );
}

#[test]
fn a_tracked_bound_socket_is_named_without_a_lookup_until_its_close() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/client", &["client"]);
    // 100 binds 127.0.0.1:0 (no listen); the kernel picked 41000 and tracks the socket.
    k.bind_tracked(2 * S, 100, "127.0.0.1", 0, 41000, 0xbeef);
    k.spawn(3 * S, 1, 200, "/usr/bin/server", &["server"]);
    let f = k.bind(4 * S, 200, "0.0.0.0", 41000, EADDRINUSE, true);
    assert_eq!(ks(&f), vec![("port_conflict", "open")]);
    assert!(
        f[0].summary
            .contains("held by pid 100 (client) on 127.0.0.1:41000 since"),
        "{}",
        f[0].summary
    );
    assert_eq!(k.engine.lookups, 0, "the table's word is exact: no lookup");
    // Its close comes (in another task's context): the table no longer names
    // it, and the next failure asks the kernel (a TIME_WAIT, say).
    k.sock_closed(5 * S, "127.0.0.1", 41000, 0xbeef);
    k.set_kernel(vec![time_wait("127.0.0.1", 41000)]);
    k.spawn(6 * S, 1, 300, "/usr/bin/other", &["other"]);
    let f = k.bind(7 * S, 300, "127.0.0.1", 41000, EADDRINUSE, true);
    assert_eq!(k.engine.lookups, 1);
    assert!(
        f[0].summary
            .contains("no process listens there, but 1 connection(s)"),
        "{}",
        f[0].summary
    );
}

#[test]
fn after_a_loss_a_tracked_holder_is_confirmed_again() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/client", &["client"]);
    k.bind_tracked(2 * S, 100, "127.0.0.1", 42000, 42000, 0xcafe);
    // Records were lost: its close may have been among them.
    k.engine.loss_seen();
    k.spawn(3 * S, 1, 200, "/usr/bin/server", &["server"]);
    k.bind(4 * S, 200, "127.0.0.1", 42000, EADDRINUSE, true);
    assert_eq!(k.engine.lookups, 1);
}

#[test]
fn a_process_that_holds_the_port_itself_is_named() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/app", &["app"]);
    k.bind_tracked(2 * S, 100, "0.0.0.0", 9100, 9100, 0xd00d);
    let f = k.bind(3 * S, 100, "127.0.0.1", 9100, EADDRINUSE, true);
    assert!(
        f[0].summary.starts_with(
            "pid 100 (app) cannot bind tcp 127.0.0.1:9100: held by itself on 0.0.0.0:9100 since"
        ),
        "{}",
        f[0].summary
    );
    assert_eq!(
        f[0].processes.iter().map(|p| p.role).collect::<Vec<_>>(),
        vec!["failing"],
        "named once"
    );
    assert_eq!(k.engine.lookups, 0);
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

/// The kernel's answer to a port question comes after the finding: the
/// shadowing is written at once from the socket table, with no question put
/// on the deciding thread; an answer that agrees writes nothing more.
#[test]
fn a_shadowing_is_written_from_the_table_at_once_and_an_agreeing_answer_adds_nothing() {
    let mut k = Kit::defaults();
    k.slow_lookups.store(true, Relaxed);
    k.spawn(S, 1, 100, "/bin/a", &["a"]);
    k.listen(2 * S, 100, "0.0.0.0", 9600, 1);
    k.spawn(3 * S, 1, 200, "/bin/b", &["b"]);
    k.set_kernel(vec![
        listener("0.0.0.0", 9600, &[100]),
        listener("127.0.0.1", 9600, &[200]),
    ]);
    let f = k.listen(4 * S, 200, "127.0.0.1", 9600, 2);
    assert_eq!(ks(&f), vec![("port_shadowed", "open")]);
    assert_eq!(
        k.lookups_in_place.load(Relaxed),
        0,
        "nothing asked on this thread"
    );
    assert!(k.late(4 * S + MS).is_empty(), "{:?}", ks(&k.all));
}

/// With `confirm_before_open` the kernel is asked on the deciding thread
/// before a port finding opens (the in-place sock_diag question).
#[test]
fn with_confirm_before_open_a_port_question_is_asked_in_place_first() {
    let mut k = Kit::new(crate::detect::DetectConfig {
        confirm_before_open: true,
        ..Default::default()
    });
    k.spawn(S, 1, 100, "/bin/a", &["a"]);
    k.listen(2 * S, 100, "0.0.0.0", 9610, 1);
    k.spawn(3 * S, 1, 200, "/bin/b", &["b"]);
    k.set_kernel(vec![
        listener("0.0.0.0", 9610, &[100]),
        listener("127.0.0.1", 9610, &[200]),
    ]);
    assert!(opened(
        &k.listen(4 * S, 200, "127.0.0.1", 9610, 2),
        "port_shadowed"
    ));
    assert_eq!(
        k.lookups_in_place.load(Relaxed),
        2,
        "the bind's and the listen's"
    );
}

/// A holder whose socket closed unseen (a UDP socket: no close event) makes
/// the table's shadowing false; it is written at once, and the kernel's
/// answer resolves it.
#[test]
fn a_shadowing_the_kernel_answer_shows_false_is_resolved_by_it() {
    let mut k = Kit::defaults();
    k.slow_lookups.store(true, Relaxed);
    k.spawn(S, 1, 100, "/bin/a", &["a"]);
    k.bind(2 * S, 100, "0.0.0.0", 5300, 0, false);
    k.spawn(3 * S, 1, 200, "/bin/b", &["b"]);
    // The kernel: 100's socket is gone.
    k.set_kernel(vec![KernelSocket {
        tcp: false,
        state: 7,
        ..listener("127.0.0.1", 5300, &[200])
    }]);
    let f = k.bind(4 * S, 200, "127.0.0.1", 5300, 0, false);
    assert_eq!(ks(&f), vec![("port_shadowed", "open")]);
    let r = k.late(4 * S + MS);
    assert_eq!(ks(&r), vec![("port_shadowed", "resolved")]);
    assert_eq!(r[0].id, f[0].id);
    assert!(
        r[0].summary
            .contains("the kernel's socket table shows port 5300 no longer shadowed"),
        "{}",
        r[0].summary
    );
}

/// Pid 100 (`first`) listens on 0.0.0.0:`port`, starts pid 101 (`/bin/c`),
/// which inherits the listener, and exits; pid 200 (`second`) is started.
fn inherited_listener(k: &mut Kit, port: u16, first: &str, second: &str) {
    k.spawn(S, 1, 100, first, &[first.rsplit('/').next().unwrap()]);
    k.listen(2 * S, 100, "0.0.0.0", port, 1);
    k.spawn(2 * S + 10, 100, 101, "/bin/c", &["c"]);
    k.exit(2 * S + 20, 100, 0);
    k.spawn(3 * S, 1, 200, second, &[second.rsplit('/').next().unwrap()]);
}

/// The table names a holder that has exited; the kernel says which process
/// holds its listener now (a child of another program that inherited it):
/// the shadowing is restated naming it.
#[test]
fn a_shadowing_is_restated_with_the_holder_the_kernel_answer_names() {
    let mut k = Kit::defaults();
    k.slow_lookups.store(true, Relaxed);
    inherited_listener(&mut k, 9620, "/bin/a", "/bin/b");
    k.set_kernel(vec![
        listener("0.0.0.0", 9620, &[101]),
        listener("127.0.0.1", 9620, &[200]),
    ]);
    let f = k.listen(4 * S, 200, "127.0.0.1", 9620, 2);
    assert_eq!(ks(&f), vec![("port_shadowed", "open")]);
    assert!(f[0].summary.contains("pid 100 (a)"), "{}", f[0].summary);
    let u = k.late(4 * S + MS);
    assert_eq!(ks(&u), vec![("port_shadowed", "update")]);
    assert_eq!(u[0].id, f[0].id);
    assert!(
        u[0].summary.contains("pid 101 (c)") && !u[0].summary.contains("pid 100"),
        "{}",
        u[0].summary
    );
}

/// The table shows one program's pool; the kernel's answer shows the
/// first member's listener held by a process of another program now (it
/// inherited it, and the member exited): the shadowing opens when the
/// answer comes — what an answer at once would have opened.
#[test]
fn a_shadowing_only_the_kernel_answer_shows_opens_when_it_comes() {
    let mut k = Kit::defaults();
    k.slow_lookups.store(true, Relaxed);
    inherited_listener(&mut k, 9630, "/usr/bin/pool", "/usr/bin/pool");
    k.set_kernel(vec![
        listener("0.0.0.0", 9630, &[101]),
        listener("127.0.0.1", 9630, &[200]),
    ]);
    assert!(
        k.listen(4 * S, 200, "127.0.0.1", 9630, 2).is_empty(),
        "one program's pool, as the table says"
    );
    let o = k.late(4 * S + MS);
    assert_eq!(ks(&o), vec![("port_shadowed", "open")]);
    assert!(
        o[0].summary.contains("pid 101 (c)") && o[0].summary.contains("pid 200 (pool)"),
        "{}",
        o[0].summary
    );
    assert_eq!(o[0].processes[0].role, "new_holder");
    assert_eq!(o[0].processes[0].proc.key.tgid, 200);
    // Answered at once, the same answer opens it with the listen.
    let mut q = Kit::defaults();
    inherited_listener(&mut q, 9630, "/usr/bin/pool", "/usr/bin/pool");
    q.set_kernel(vec![listener("0.0.0.0", 9630, &[101])]);
    assert!(
        opened(&q.listen(4 * S, 200, "127.0.0.1", 9630, 2), "port_shadowed"),
        "{:?}",
        ks(&q.all)
    );
}

/// A late answer about a port opens only a shadowing of the holder the
/// question was about: two holders that shadowed each other before watcher
/// started (seeded, never an event) are not reported because a third,
/// unrelated listener was looked up.
#[test]
fn a_late_answer_opens_nothing_about_holders_from_before_its_question() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/pool", &["pool"]);
    k.spawn(S, 1, 101, "/bin/c", &["c"]);
    let seed = vec![
        listener("0.0.0.0", 9640, &[100]),
        listener("127.0.0.1", 9640, &[101]),
    ];
    k.engine.seed(&seed, S);
    k.spawn(2 * S, 1, 200, "/usr/bin/pool", &["pool"]);
    k.set_kernel(seed);
    k.slow_lookups.store(true, Relaxed);
    // One program's pool beside its first member, and no overlap with 127.0.0.1.
    assert!(k.listen(3 * S, 200, "127.0.0.3", 9640, 2).is_empty());
    assert!(k.late(3 * S + MS).is_empty(), "{:?}", ks(&k.all));
}

/// An answer is the kernel's table as it was when it was asked: a holder
/// that bound after the question is not in it, and stays in the table.
#[test]
fn a_holder_newer_than_a_question_stays_when_its_late_answer_comes() {
    let mut k = Kit::defaults();
    let udp = |ip: &str, pid: u32| KernelSocket {
        tcp: false,
        state: 7,
        ..listener(ip, 5310, &[pid])
    };
    k.spawn(S, 1, 100, "/bin/a", &["a"]);
    k.bind(2 * S, 100, "0.0.0.0", 5310, 0, false);
    k.spawn(3 * S, 1, 200, "/bin/b", &["b"]);
    k.spawn(3 * S, 1, 300, "/bin/c", &["c"]);
    k.slow_lookups.store(true, Relaxed);
    assert!(opened(
        &k.bind(4 * S, 200, "127.0.0.1", 5310, 0, false),
        "port_shadowed"
    ));
    // 300 binds before that answer comes (its own question answered at once).
    k.slow_lookups.store(false, Relaxed);
    k.set_kernel(vec![
        udp("0.0.0.0", 100),
        udp("127.0.0.1", 200),
        udp("127.0.0.2", 300),
    ]);
    k.bind(4 * S + MS, 300, "127.0.0.2", 5310, 0, false);
    // The first answer, as the kernel's table was at 4 s.
    k.set_kernel(vec![udp("0.0.0.0", 100), udp("127.0.0.1", 200)]);
    k.late(4 * S + 2 * MS);
    let holders: Vec<u32> = k
        .engine
        .detectors
        .sockets
        .holders((0, false, 5310))
        .iter()
        .map(|h| h.proc.key.tgid)
        .collect();
    assert!(holders.contains(&300), "{holders:?}");
    assert!(
        holders.contains(&100) && holders.contains(&200),
        "{holders:?}"
    );
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

// ---------------------------------------------------------------- ports_exhausted

fn exhausted_summary() -> crate::world::sockdiag::PortSummary {
    crate::world::sockdiag::PortSummary {
        range: Some((40000, 40001)),
        ports_in_use: 2,
        sockets: 2,
        time_wait: 1,
        by_process: vec![(100, "python3 client.py".into(), 1)],
        by_destination: vec![(("10.0.0.5".parse().unwrap(), 5432), 2, 1)],
        cost_ns: 2_000_000,
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

/// Namespaces that run out of ports together have their summaries paced:
/// each walks the kernel's whole TCP table, so one starts at least 250 ms
/// after the last, and after one that took `c` to make, 100 × `c` after it.
#[test]
fn summaries_of_namespaces_failing_together_are_paced_and_each_still_comes() {
    let mut k = Kit::defaults();
    for (n, pid) in [(1u32, 100u32), (2, 101), (3, 102)] {
        k.spawn(S, 1, pid, "/usr/bin/python3", &["python3", "client.py"]);
        let f = k.bind_ns(
            2 * S + n as u64 * MS,
            pid,
            4026531000 + n,
            "127.0.0.1",
            0,
            EADDRINUSE,
        );
        assert!(
            opened(&f, "ports_exhausted"),
            "every namespace's finding at once: {:?}",
            ks(&f)
        );
    }
    assert_eq!(
        k.summaries_asked(),
        vec![4026531001],
        "the first at once, the others wait"
    );
    assert_eq!(k.engine.detectors.ports_exhausted.summaries_delayed(), 2);
    // The next slot: 250 ms after the first was asked.
    assert_eq!(k.engine.next_deadline(), Some(2 * S + MS + 250 * MS));
    k.run_timers(2 * S + 250 * MS);
    assert_eq!(k.summaries_asked(), vec![4026531001], "not before the slot");
    k.run_timers(2 * S + MS + 250 * MS);
    assert_eq!(k.summaries_asked(), vec![4026531001, 4026531002]);
    // The second's answer took 5 ms to make: the third waits 500 ms after it.
    let mut slow = exhausted_summary();
    slow.cost_ns = 5_000_000;
    k.set_summary(Some(slow));
    let f = k.late(2 * S + 300 * MS);
    assert_eq!(
        f.len(),
        2,
        "both answers restate their findings: {:?}",
        ks(&f)
    );
    k.set_summary(None);
    assert_eq!(k.engine.next_deadline(), Some(2 * S + MS + 750 * MS));
    k.run_timers(2 * S + 700 * MS);
    assert!(k.summaries_asked().is_empty(), "not before 100 × its cost");
    k.run_timers(3 * S);
    assert_eq!(
        k.summaries_asked(),
        vec![4026531003],
        "the third, in its turn"
    );
    assert_eq!(
        k.engine.detectors.ports_exhausted.next_deadline(),
        None,
        "nothing waits"
    );
}

/// A waiting summary is let go when its namespace no longer fails, or when
/// no failing process is alive to enter it through.
#[test]
fn a_waiting_summary_is_let_go_when_its_namespace_recovered_or_its_processes_ended() {
    let mut k = Kit::defaults();
    for pid in [100u32, 101, 102] {
        k.spawn(S, 1, pid, "/usr/bin/python3", &["python3", "client.py"]);
    }
    k.bind_ns(2 * S, 100, 11, "127.0.0.1", 0, EADDRINUSE);
    k.bind_ns(2 * S + MS, 101, 12, "127.0.0.1", 0, EADDRINUSE);
    k.bind_ns(2 * S + 2 * MS, 102, 13, "127.0.0.1", 0, EADDRINUSE);
    assert_eq!(k.summaries_asked(), vec![11]);
    // Namespace 12 gets a port again; 13's only failing process ends.
    let f = k.bind_ns(2 * S + 10 * MS, 101, 12, "127.0.0.1", 0, 0);
    assert!(resolved(&f, "ports_exhausted"), "{:?}", ks(&f));
    k.exit(2 * S + 20 * MS, 102, 0);
    k.run_timers(4 * S);
    assert_eq!(k.summaries_asked(), vec![11], "neither is asked");
    assert_eq!(
        k.engine.detectors.ports_exhausted.next_deadline(),
        None,
        "and neither waits on"
    );
    // Namespace 13 fails again through a live process: due, and asked
    // (the slot is free).
    k.spawn(5 * S, 1, 103, "/usr/bin/python3", &["python3", "client.py"]);
    k.bind_ns(5 * S + MS, 103, 13, "127.0.0.1", 0, EADDRINUSE);
    assert_eq!(k.summaries_asked(), vec![11, 13]);
}

/// A namespace that ran out of ports and then went away (its container
/// removed, `unshare -n` ended) leaves no incident open: once none of its
/// failing processes lives, the second's work asks whether it still
/// exists, and a gone one resolves.
#[test]
fn ports_exhausted_resolves_when_its_namespace_is_gone() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/python3", &["python3", "client.py"]);
    k.spawn(S, 1, 101, "/usr/bin/python3", &["python3", "client.py"]);
    let f = k.bind_ns(2 * S, 100, 21, "127.0.0.1", 0, EADDRINUSE);
    assert!(opened(&f, "ports_exhausted"));
    let f = k.bind_ns(2 * S, 101, 22, "127.0.0.1", 0, EADDRINUSE);
    assert!(opened(&f, "ports_exhausted"));
    // While a failing process lives, nothing is asked.
    assert!(k.second(3 * S).is_empty());
    assert!(k.gone_checks().is_empty());
    // Both end; namespace 22 lives on (another process is in it).
    k.exit(4 * S, 100, 0);
    k.exit(4 * S, 101, 0);
    k.set_gone(vec![21]);
    let f = k.second(5 * S);
    let mut asked = k.gone_checks();
    asked.iter_mut().for_each(|v| v.sort());
    assert_eq!(asked, vec![vec![21, 22]], "one question for both");
    let gone = f
        .iter()
        .find(|x| x.kind.as_str() == "ports_exhausted")
        .expect("namespace 21's incident resolves");
    assert_eq!(gone.state, State::Resolved);
    assert!(
        gone.summary
            .contains("network namespace 21 is gone (no process is in it and it is not mounted)"),
        "{}",
        gone.summary
    );
    assert_eq!(f.len(), 1, "22 stays open: {:?}", ks(&f));
    // 22 is asked about again only after 10 s.
    assert!(k.second(6 * S).is_empty());
    assert!(k.gone_checks().is_empty());
    k.set_gone(vec![21, 22]);
    let f = k.second(15 * S + 1);
    assert_eq!(k.gone_checks(), vec![vec![22]]);
    assert!(resolved(&f, "ports_exhausted"), "{:?}", ks(&f));
}
