//! Ports with real processes: a dev server probing for a free port (one
//! incident at most, resolved at its bind, naming the port it got), and a
//! network namespace with a two-port ephemeral range run dry by bind(0) and
//! by connects (`ports_exhausted`, with the range, the ports in use and the
//! holders from the kernel's table; resolved when a port is free again).
use watcher_tests::{
    finding, finding_pids, num, require_root, spawn_actor, text, Feed, Running, Value,
};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

/// `actor exhaust <what> …` in a new network namespace whose ephemeral range is two ports.
fn in_tiny_namespace(args: &str) -> Running {
    let script = format!(
        "ip link set lo up && echo '40000 40001' > /proc/sys/net/ipv4/ip_local_port_range && exec {ACTOR} exhaust {args}"
    );
    spawn_actor("unshare", &["-n", "sh", "-c", &script])
}

fn exhausted(
    feed: &Feed,
    netns: u64,
    state: &str,
    what: &str,
    also: impl Fn(&Value) -> bool,
) -> Value {
    feed.wait_for_related(
        what,
        |v| text(v, &["kind"]) == Some("ports_exhausted"),
        |v| {
            finding(v, "ports_exhausted", state)
                && num(v, &["details", "network_namespace"]) == Some(netns)
                && also(v)
        },
    )
}

#[test]
fn a_port_prober_is_one_incident_resolved_where_it_bound() {
    if !require_root() {
        return;
    }
    let feed = Feed::shared();
    // Three ports in use, a free one after them.
    let base = loop {
        let p = watcher_tests::free_port();
        if p < 60000 && (1..4).all(|k| watcher_tests::can_listen(("127.0.0.1", p + k))) {
            break p;
        }
    };
    let mut holders: Vec<Running> = (0..3)
        .map(|k| {
            spawn_actor(
                ACTOR,
                &["listen-hold", "127.0.0.1", &(base + k).to_string()],
            )
        })
        .collect();
    for h in &mut holders {
        h.value("listening");
    }
    let mut prober = spawn_actor(ACTOR, &["probe-ports", &base.to_string()]);
    let got: u16 = prober.value("bound").parse().unwrap();
    assert!(got >= base + 3, "it probed past the held ports: {got}");
    let resolved = feed.wait_for_related(
        "the prober's incident resolved at its bind",
        |v| text(v, &["kind"]) == Some("port_conflict"),
        |v| {
            finding(v, "port_conflict", "resolved")
                && text(v, &["summary"]).is_some_and(|s| watcher_tests::names_pid(s, prober.pid))
        },
    );
    assert!(
        text(&resolved, &["summary"])
            .unwrap()
            .contains(&format!("got {got}")),
        "{resolved}"
    );
    let opened: Vec<Value> = feed
        .records()
        .into_iter()
        .filter(|v| {
            finding(v, "port_conflict", "open")
                && finding_pids(v, Some("failing")).contains(&(prober.pid as u64))
        })
        .collect();
    assert_eq!(
        opened.len(),
        1,
        "one incident for the whole probe: {opened:?}"
    );
    prober.finish();
    for h in holders {
        h.finish();
    }
}

/// A socket bound and never listening holds its port: the kernel follows it
/// to its end (tcp_destroy_sock), so a bind that fails on a port the kernel
/// picked for it names it; once it is gone (the port left in TIME_WAIT by a
/// process still alive), the same failure names no holder but the
/// lingering connection.
#[test]
fn a_bound_socket_is_named_until_its_close_and_not_after() {
    if !require_root() {
        return;
    }
    watcher_tests::bound_then_lingering(&Feed::shared(), ACTOR);
}

#[test]
fn bind_to_port_0_in_a_namespace_without_free_ports_is_ports_exhausted() {
    if !require_root() {
        return;
    }
    let feed = Feed::shared();
    let mut a = in_tiny_namespace("bind 3");
    let netns: u64 = a.value("netns").parse().unwrap();
    assert_eq!(
        a.value("errno"),
        "98",
        "the third bind(0) finds no free port"
    );
    let open = exhausted(
        &feed,
        netns,
        "open",
        "ports_exhausted opened for the namespace",
        |_| true,
    );
    assert!(
        text(&open, &["summary"])
            .is_some_and(|s| s.contains("a bind to 127.0.0.1:0 (any free port)")
                && watcher_tests::names_pid(s, a.pid)),
        "{open}"
    );
    // Not a port conflict on "port 0".
    assert!(
        !feed
            .records()
            .iter()
            .any(|v| finding(v, "port_conflict", "open")
                && finding_pids(v, Some("failing")).contains(&(a.pid as u64))),
        "no port_conflict for bind(0)"
    );
    // The kernel's table, summarized off the detector's path, follows as an update.
    let up = exhausted(
        &feed,
        netns,
        "update",
        "the namespace's port summary",
        |v| v["details"].get("ephemeral_range").is_some(),
    );
    assert_eq!(
        num(&up, &["details", "ephemeral_range", "size"]),
        Some(2),
        "{up}"
    );
    assert_eq!(num(&up, &["details", "ports_in_use"]), Some(2), "{up}");
    assert!(
        up["details"]["top_processes"]
            .as_array()
            .is_some_and(|t| t.iter().any(|p| num(p, &["pid"]) == Some(a.pid as u64))),
        "the holder is named: {up}"
    );
    // One port freed: the next bind(0) works and resolves it.
    a.line();
    assert_eq!(a.value("again"), "ok");
    exhausted(&feed, netns, "resolved", "ports_exhausted resolved", |_| {
        true
    });
    a.finish();
}

#[test]
fn connects_without_a_free_local_port_are_ports_exhausted_not_connect_failures() {
    if !require_root() {
        return;
    }
    let feed = Feed::shared();
    let mut a = in_tiny_namespace("connect 3 5000");
    let netns: u64 = a.value("netns").parse().unwrap();
    assert_eq!(
        a.value("errno"),
        "99",
        "the third connect finds no local port (EADDRNOTAVAIL)"
    );
    let open = exhausted(
        &feed,
        netns,
        "open",
        "ports_exhausted for the connects",
        |_| true,
    );
    assert!(
        text(&open, &["summary"]).is_some_and(|s| s.contains("a connect to 127.0.0.1:5000")),
        "{open}"
    );
    let up = exhausted(
        &feed,
        netns,
        "update",
        "the summary naming the destination",
        |v| v["details"].get("top_destinations").is_some(),
    );
    assert!(
        up["details"]["top_destinations"]
            .as_array()
            .is_some_and(|t| t
                .iter()
                .any(|d| text(d, &["address"]) == Some("127.0.0.1:5000"))),
        "{up}"
    );
    assert!(
        !feed
            .records()
            .iter()
            .any(|v| finding(v, "connect_failures", "open")
                && text(v, &["details", "destination"]) == Some("127.0.0.1:5000")),
        "the destination is not at fault"
    );
    a.finish();
}

/// A namespace that ran out of ports and then went away (its only process
/// killed, as a removed container's) leaves no incident open: it resolves,
/// saying the namespace is gone — not firing on forever.
#[test]
fn ports_exhausted_resolves_when_its_namespace_is_gone() {
    if !require_root() {
        return;
    }
    let feed = Feed::shared();
    let mut a = in_tiny_namespace("bind 3");
    let netns: u64 = a.value("netns").parse().unwrap();
    assert_eq!(a.value("errno"), "98");
    exhausted(&feed, netns, "open", "ports_exhausted opened", |_| true);
    // Killed before it frees a port: nothing in the namespace gets one again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the actor");
    let gone = exhausted(
        &feed,
        netns,
        "resolved",
        "ports_exhausted resolved when its namespace went",
        |_| true,
    );
    assert!(
        text(&gone, &["summary"]).is_some_and(|s| s.contains(&format!(
            "network namespace {netns} is gone (no process is in it and it is not mounted)"
        ))),
        "{gone}"
    );
    a.finish();
}

#[test]
fn command_lines_differing_after_512_bytes_are_two_programs() {
    if !require_root() {
        return;
    }
    let feed = Feed::shared();
    let port = watcher_tests::free_port().to_string();
    // `java -cp <long classpath> A` and `… B`, as two REUSEPORT listeners:
    // one program's pool would be fine, two programs shadow each other.
    let classpath = format!("/opt/app/lib/{}.jar", "dependency-".repeat(60));
    let mut a = spawn_actor(
        ACTOR,
        &[
            "listen-hold",
            "0.0.0.0",
            &port,
            "reuseport",
            &classpath,
            "com.example.A",
        ],
    );
    a.value("listening");
    let mut b = spawn_actor(
        ACTOR,
        &[
            "listen-hold",
            "0.0.0.0",
            &port,
            "reuseport",
            &classpath,
            "com.example.B",
        ],
    );
    b.value("listening");
    let exec = feed.wait_for("B's exec", |v| {
        watcher_tests::is(v, "exec") && num(v, &["process", "pid"]) == Some(b.pid as u64)
    });
    assert!(
        text(&exec, &["process", "command_line"])
            .is_some_and(|c| c.ends_with("com.example.B") && c.len() > 600),
        "the whole command line: {exec}"
    );
    assert!(
        exec["exec"]
            .get("args_truncated")
            .is_none_or(|t| t == false),
        "whole, from the kernel's exec record: {exec}"
    );
    let f = feed.wait_for_related(
        "port_shadowed between the two programs",
        |v| text(v, &["kind"]) == Some("port_shadowed"),
        |v| {
            finding(v, "port_shadowed", "open") && {
                let pids = finding_pids(v, None);
                pids.contains(&(a.pid as u64)) && pids.contains(&(b.pid as u64))
            }
        },
    );
    assert!(text(&f, &["summary"]).is_some(), "{f}");
    a.finish();
    b.finish();
}
