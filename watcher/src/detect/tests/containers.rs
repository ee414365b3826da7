//! Detector unit tests on a container host: network and pid namespaces,
//! Docker's proxy, containers as the unit of "same program" — both ways.
use crate::detect::testkit::{ks, listener, opened, Kit, MS, S};
use crate::world::sockdiag::KernelSocket;

const EADDRINUSE: i32 = -98;
const SIGKILL: u32 = 9;
const CODE3: u32 = 0x300;
const HOST_NS: u32 = 4026531840;
const CID: &str = "4f1ad7c2b0f0a3c4e5d6b7a8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192";

fn proxy_argv(host_ip: &'static str, port: &'static str) -> [&'static str; 11] {
    [
        "/usr/sbin/docker-proxy",
        "-proto",
        "tcp",
        "-host-ip",
        host_ip,
        "-host-port",
        port,
        "-container-ip",
        "172.17.0.2",
        "-container-port",
        "8080",
    ]
}

#[test]
fn dockers_proxy_pair_is_one_service_and_a_loopback_listener_over_it_names_the_container() {
    let mut k = Kit::defaults();
    k.cgroup(S / 2, 120, &format!("/docker/{CID}"));
    k.runtime_says(CID, "web", "nginx:1.25", Some("172.17.0.2"), None);
    k.spawn(
        S,
        50,
        100,
        "/usr/sbin/docker-proxy",
        &proxy_argv("0.0.0.0", "18080"),
    );
    k.spawn(
        S,
        50,
        101,
        "/usr/sbin/docker-proxy",
        &proxy_argv("::", "18080"),
    );
    let mut f = k.listen_ns(2 * S, 100, HOST_NS, "0.0.0.0", 18080, 0xa);
    k.set_kernel(vec![KernelSocket {
        netns: HOST_NS,
        ..listener("0.0.0.0", 18080, &[100])
    }]);
    f.extend(k.listen_ns(2 * S + MS, 101, HOST_NS, "::", 18080, 0xb));
    assert!(
        f.is_empty(),
        "the IPv4/IPv6 proxy pair of one published port is one service: {f:?}"
    );
    // A native process takes 127.0.0.1 on the published port: the seed's incident.
    k.spawn(
        3 * S,
        1,
        200,
        "/usr/bin/python3",
        &[
            "python3",
            "-m",
            "http.server",
            "18080",
            "--bind",
            "127.0.0.1",
        ],
    );
    let f = k.listen_ns(4 * S, 200, HOST_NS, "127.0.0.1", 18080, 0xc);
    assert_eq!(ks(&f), vec![("port_shadowed", "open")]);
    let s = &f[0].summary;
    assert!(
        s.contains("connections to 127.0.0.1:18080 go to pid 200"),
        "{s}"
    );
    assert!(
        s.contains("Docker's proxy for container web (image nginx:1.25) at 172.17.0.2:8080"),
        "names the container behind the proxy: {s}"
    );
    assert_eq!(f[0].details["published_by_container"]["name"], "web");
}

#[test]
fn the_same_port_in_other_network_namespaces_is_not_shared() {
    let mut k = Kit::defaults();
    k.spawn(
        S,
        1,
        100,
        "/usr/bin/python3",
        &[
            "python3",
            "-m",
            "http.server",
            "8000",
            "--bind",
            "127.0.0.1",
        ],
    );
    k.spawn(
        S,
        1,
        101,
        "/usr/bin/python3",
        &["python3", "-m", "http.server", "8000"],
    );
    k.spawn(
        S,
        1,
        102,
        "/usr/bin/python3",
        &["python3", "-m", "http.server", "8000"],
    );
    let mut f = k.listen_ns(2 * S, 100, HOST_NS, "127.0.0.1", 8000, 0xa);
    f.extend(k.listen_ns(2 * S + 10, 101, HOST_NS + 1, "0.0.0.0", 8000, 0xb));
    f.extend(k.listen_ns(2 * S + 20, 102, HOST_NS + 2, "0.0.0.0", 8000, 0xc));
    assert!(f.is_empty(), "three namespaces, three port spaces: {f:?}");
    // In one namespace the same pair is shadowing.
    k.spawn(3 * S, 1, 103, "/usr/bin/nc", &["nc", "-l", "8000"]);
    assert!(opened(
        &k.listen_ns(4 * S, 103, HOST_NS + 1, "127.0.0.1", 8000, 0xd),
        "port_shadowed"
    ));
}

#[test]
fn a_conflict_inside_a_namespace_names_the_holder_there_not_the_hosts() {
    let mut k = Kit::defaults();
    let ns = HOST_NS + 7;
    k.cgroup(S / 2, 120, &format!("/docker/{CID}"));
    k.runtime_says(CID, "api", "busybox", None, None);
    k.spawn(S, 1, 100, "/usr/sbin/nginx", &["nginx"]);
    k.listen_ns(S + 1, 100, HOST_NS, "0.0.0.0", 9000, 0xa);
    k.spawn_in(2 * S, 50, 200, 120, "/bin/nc", &["nc", "-l", "-p", "9000"]);
    k.listen_ns(3 * S, 200, ns, "0.0.0.0", 9000, 0xb);
    // The kernel's table of that namespace (the lookup runs inside it).
    k.set_kernel(vec![
        KernelSocket {
            netns: HOST_NS,
            ..listener("0.0.0.0", 9000, &[100])
        },
        KernelSocket {
            netns: ns,
            ..listener("0.0.0.0", 9000, &[200])
        },
    ]);
    k.spawn_in(
        4 * S,
        50,
        201,
        120,
        "/bin/nc",
        &["nc", "-l", "-p", "9000", "-e", "x"],
    );
    let f = k.bind_ns(5 * S, 201, ns, "0.0.0.0", 9000, EADDRINUSE);
    assert_eq!(ks(&f), vec![("port_conflict", "open")]);
    let holders: Vec<u32> = f[0]
        .processes
        .iter()
        .filter(|p| p.role == "holder")
        .map(|p| p.proc.key.tgid)
        .collect();
    assert_eq!(
        holders,
        vec![200],
        "the holder in the container's namespace, not the host's nginx"
    );
    assert!(
        f[0].summary.contains("in container api (image busybox)"),
        "{}",
        f[0].summary
    );
}

#[test]
fn replicas_in_separate_containers_are_not_duplicates_but_copies_in_one_are() {
    let mut k = Kit::defaults();
    let mut f = Vec::new();
    for n in 0..12u64 {
        let id = format!("{:064x}", n + 1);
        k.cgroup(S, 500 + n, &format!("/docker/{id}"));
        f.extend(k.spawn_in(
            2 * S + n * MS,
            40 + n as u32,
            1000 + n as u32,
            500 + n,
            "/bin/sleep",
            &["sleep", "1000"],
        ));
    }
    assert!(
        f.is_empty(),
        "twelve replicas of one image in twelve containers: {f:?}"
    );
    // Twelve copies inside one container are duplicates.
    for n in 0..12u32 {
        f.extend(k.spawn_in(
            3 * S + n as u64 * MS,
            40,
            2000 + n,
            500,
            "/bin/worker",
            &["worker"],
        ));
    }
    assert!(opened(&f, "duplicate_instances"), "{f:?}");
}

#[test]
fn a_crash_loop_restarted_by_dockers_policy_names_the_container_and_the_policy() {
    let mut k = Kit::defaults();
    k.cgroup(S / 2, 120, &format!("/docker/{CID}"));
    k.runtime_says(CID, "crashy", "busybox", None, Some("always"));
    let mut f = Vec::new();
    let mut t = S;
    let mut delay = 100 * MS;
    for n in 0..7u32 {
        // A new shim for every start; the container's init is its child.
        let shim = 300 + n * 2;
        k.spawn(
            t,
            1,
            shim,
            "/usr/bin/containerd-shim-runc-v2",
            &["containerd-shim-runc-v2", "-namespace", "moby", "-id", CID],
        );
        f.extend(k.spawn_in(
            t + MS,
            shim,
            shim + 1,
            120,
            "/bin/sh",
            &["sh", "-c", "sleep 0.3; exit 3"],
        ));
        t += 300 * MS;
        f.extend(k.exit(t, shim + 1, CODE3));
        t += delay;
        delay *= 2;
    }
    let open = f
        .iter()
        .find(|x| x.kind.as_str() == "respawn_storm")
        .expect("respawn_storm");
    let s = &open.summary;
    assert!(
        s.starts_with(
            "container crashy (image busybox) (`sh -c sleep 0.3; exit 3`) keeps crashing"
        ),
        "{s}"
    );
    assert!(
        s.contains("by Docker's restart policy (always)") && s.contains("exit code 3"),
        "{s}"
    );
    assert!(
        !s.contains("containerd-shim"),
        "the runtime, not shim pids: {s}"
    );
    assert_eq!(
        open.processes
            .iter()
            .filter(|p| p.role == "restarter")
            .count(),
        1
    );
}

#[test]
fn a_namespace_inits_end_reaps_its_zombies_and_blames_nobody() {
    let mut k = Kit::defaults();
    let pidns = 4026532100;
    k.spawn(
        S,
        1,
        100,
        "/usr/bin/containerd-shim-runc-v2",
        &["containerd-shim-runc-v2"],
    );
    k.spawn(S + MS, 100, 101, "/bin/sleep", &["sleep", "1000"]);
    let mut f = Vec::new();
    for n in 0..6u32 {
        k.fork(2 * S + n as u64 * MS, 101, 110 + n);
        f.extend(k.exit_in_pidns(2 * S + n as u64 * MS + 500, 110 + n, 0, pidns, 2 + n));
    }
    let open = f
        .iter()
        .find(|x| x.kind.as_str() == "zombie_accumulation")
        .expect("zombies of the container's init");
    assert!(
        open.summary
            .starts_with("pid 101 (sleep 1000) has 5 exited children"),
        "opens on the exit that crosses the threshold: {}",
        open.summary
    );
    // Another process of the container with children of its own.
    k.fork(3 * S, 101, 150);
    for n in 0..6u32 {
        k.fork(3 * S + MS + n as u64, 150, 160 + n);
    }
    // docker rm -f: the init dies; the kernel kills and reaps everything in its namespace.
    let f = k.exit_in_pidns(5 * S, 101, SIGKILL, pidns, 1);
    assert_eq!(ks(&f), vec![("zombie_accumulation", "resolved")], "{f:?}");
    // What the kernel then kills says so (EXIT_PIDNS_DYING): none of it is a zombie to count.
    let mut f = Vec::new();
    for n in 0..6u32 {
        f.extend(k.exit_in_pidns_flags(
            5 * S + MS + n as u64,
            160 + n,
            SIGKILL,
            pidns,
            20 + n,
            watcher_common::EXIT_PIDNS_DYING,
        ));
    }
    f.extend(k.exit_in_pidns_flags(
        5 * S + 2 * MS,
        150,
        SIGKILL,
        pidns,
        19,
        watcher_common::EXIT_PIDNS_DYING,
    ));
    assert!(f.is_empty(), "the teardown's exits are not zombies: {f:?}");
    // Nothing lands on PID 1 or the shim, now or at the zombie deadline.
    let later = k.run_timers(60 * S);
    assert!(
        later.iter().all(|x| x.state != crate::detect::State::Open),
        "{later:?}"
    );
    assert!(
        !k.all
            .iter()
            .any(|x| x.state == crate::detect::State::Open && x.kind.as_str() == "zombie"),
        "{:?}",
        k.all
    );
}

#[test]
fn an_incident_opened_before_the_runtime_named_its_container_is_updated_with_the_name() {
    let mut k = Kit::defaults();
    k.cgroup(S / 2, 120, &format!("/docker/{CID}"));
    k.spawn_in(S, 50, 101, 120, "/bin/sleep", &["sleep", "1000"]);
    let mut f = Vec::new();
    for n in 0..5u32 {
        k.fork(2 * S + n as u64 * MS, 101, 110 + n);
        f.extend(k.exit(2 * S + n as u64 * MS + 500, 110 + n, 0));
    }
    let open = f
        .iter()
        .find(|x| x.kind.as_str() == "zombie_accumulation")
        .expect("opened");
    assert!(
        open.summary
            .contains(&format!("in container {}", &CID[..12])),
        "named by its id first: {}",
        open.summary
    );
    let u = k.runtime_says(CID, "batch", "busybox", None, None);
    assert_eq!(ks(&u), vec![("zombie_accumulation", "update")]);
    assert_eq!(u[0].id, open.id);
    assert!(
        u[0].summary.contains("in container batch (image busybox)")
            && !u[0].summary.contains(&CID[..12]),
        "{}",
        u[0].summary
    );
    assert!(
        k.runtime_says(CID, "batch", "busybox", None, None)
            .is_empty(),
        "said once"
    );
}

#[test]
fn a_confirmation_slower_than_its_wait_corrects_the_finding_with_an_update() {
    let mut k = Kit::defaults();
    // A UDP socket of pid 100 closed without an event; pid 101 holds the port now.
    k.spawn(S, 1, 100, "/usr/bin/old", &["old"]);
    k.bind(S + 1, 100, "0.0.0.0", 5000, 0, false);
    k.spawn(2 * S, 1, 101, "/usr/bin/new", &["new"]);
    k.spawn(3 * S, 1, 200, "/usr/bin/app", &["app"]);
    k.set_kernel(vec![KernelSocket {
        tcp: false,
        state: 7,
        ..listener("0.0.0.0", 5000, &[101])
    }]);
    k.slow_lookups
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // The finding is written at once, with what the table knows.
    let f = k.bind(4 * S, 200, "0.0.0.0", 5000, EADDRINUSE, false);
    assert_eq!(ks(&f), vec![("port_conflict", "open")]);
    assert!(
        f[0].summary.contains("held by pid 100 (old)"),
        "{}",
        f[0].summary
    );
    // The kernel's answer comes later: the holder is corrected in an update.
    let u = k.late(4 * S + 30 * MS);
    assert_eq!(ks(&u), vec![("port_conflict", "update")]);
    assert_eq!(u[0].id, f[0].id);
    assert!(
        u[0].summary.contains("held by pid 101 (new)") && !u[0].summary.contains("pid 100"),
        "{}",
        u[0].summary
    );
    let holders: Vec<u32> = u[0]
        .processes
        .iter()
        .filter(|p| p.role == "holder")
        .map(|p| p.proc.key.tgid)
        .collect();
    assert_eq!(holders, vec![101]);
    assert!(k.late(5 * S).is_empty(), "nothing more on its way");
}

/// `web` (nginx:1.25 at 172.17.0.2) publishes its port 80 on 0.0.0.0:18081
/// and [::]:18081, held by `holder` in the host's namespace.
fn published_web(k: &mut Kit) -> Vec<crate::detect::Finding> {
    use crate::world::containers::{ContainerInfo, Published};
    k.cgroup(S / 2, 120, &format!("/docker/{CID}"));
    let p = |ip: &str| Published {
        tcp: true,
        host_ip: ip.parse().unwrap(),
        host_port: 18081,
        port: 80,
    };
    k.runtime_knows(ContainerInfo {
        id: CID.into(),
        runtime: "docker",
        name: Some("web".into()),
        image: Some("nginx:1.25".into()),
        addresses: vec!["172.17.0.2".parse().unwrap()],
        published: vec![p("0.0.0.0"), p("::")],
        ..Default::default()
    })
}

#[test]
fn a_port_dockerd_holds_without_the_userland_proxy_names_the_container_it_is_published_for() {
    let mut k = Kit::defaults();
    let _ = published_web(&mut k);
    // dockerd (userland-proxy: false) holds both families itself: quiet.
    k.spawn(
        S,
        1,
        90,
        "/usr/sbin/dockerd",
        &["dockerd", "--userland-proxy=false"],
    );
    let mut f = k.listen_ns(2 * S, 90, HOST_NS, "0.0.0.0", 18081, 0xa);
    f.extend(k.listen_ns(2 * S + MS, 90, HOST_NS, "::", 18081, 0xb));
    k.set_kernel(vec![
        KernelSocket {
            netns: HOST_NS,
            ..listener("0.0.0.0", 18081, &[90])
        },
        KernelSocket {
            netns: HOST_NS,
            ..listener("::", 18081, &[90])
        },
    ]);
    assert!(
        f.is_empty(),
        "a published port's two sockets are one service: {f:?}"
    );
    // A host program fails to bind it: told which container it is published for.
    k.spawn(
        3 * S,
        1,
        300,
        "/usr/bin/python3",
        &["python3", "-m", "http.server", "18081"],
    );
    let f = k.bind_ns(4 * S, 300, HOST_NS, "0.0.0.0", 18081, EADDRINUSE);
    assert_eq!(ks(&f), vec![("port_conflict", "open")]);
    let s = &f[0].summary;
    assert!(
        s.contains("pid 90 (dockerd --userland-proxy=false), Docker's port for container web (image nginx:1.25) at 172.17.0.2:80 on 0.0.0.0:18081"),
        "{s}"
    );
    let c = &f[0].details["published_by_container"];
    assert_eq!(c["name"], "web", "{c}");
    assert_eq!(c["image"], "nginx:1.25", "{c}");
    assert_eq!(c["address"], "172.17.0.2", "{c}");
    assert_eq!(c["port"], 80, "{c}");
    assert_eq!(c["runtime"], "docker", "{c}");
}

#[test]
fn a_host_socket_that_is_not_the_published_address_is_not_the_containers() {
    let mut k = Kit::defaults();
    let _ = published_web(&mut k);
    k.spawn(S, 1, 90, "/usr/sbin/dockerd", &["dockerd"]);
    k.listen_ns(2 * S, 90, HOST_NS, "0.0.0.0", 18081, 0xa);
    // A host program on 127.0.0.1 of the same port shadows the published
    // port for loopback: the incident names it as itself, and dockerd as
    // holding the port for the container.
    k.spawn(
        3 * S,
        1,
        300,
        "/usr/bin/python3",
        &["python3", "-m", "http.server"],
    );
    let f = k.listen_ns(4 * S, 300, HOST_NS, "127.0.0.1", 18081, 0xc);
    assert_eq!(ks(&f), vec![("port_shadowed", "open")]);
    let s = &f[0].summary;
    assert!(
        s.contains("connections to 127.0.0.1:18081 go to pid 300 (python3"),
        "{s}"
    );
    assert!(
        !s.contains("pid 300 (python3 -m http.server), Docker's"),
        "{s}"
    );
    assert!(
        s.contains("pid 90 (dockerd), Docker's port for container web"),
        "{s}"
    );
    // Once the container stopped, its published ports are nobody's: a
    // socket dockerd still holds there is dockerd's own.
    k.runtime_stopped(CID);
    k.spawn(5 * S, 1, 301, "/usr/bin/python3", &["python3"]);
    let f = k.bind_ns(6 * S, 301, HOST_NS, "0.0.0.0", 18081, EADDRINUSE);
    assert_eq!(ks(&f), vec![("port_conflict", "open")]);
    assert!(!f[0].summary.contains("'s port for"), "{}", f[0].summary);
    assert!(f[0].details.get("published_by_container").is_none());
}

#[test]
fn a_process_inside_the_container_holds_its_own_port() {
    let mut k = Kit::defaults();
    let _ = published_web(&mut k);
    // Host networking: the container's own nginx on the host port is not
    // "held for" the container, it is the container's process.
    k.spawn_in(S, 50, 400, 120, "/usr/sbin/nginx", &["nginx"]);
    k.listen_ns(2 * S, 400, HOST_NS, "0.0.0.0", 18081, 0xa);
    k.set_kernel(vec![KernelSocket {
        netns: HOST_NS,
        ..listener("0.0.0.0", 18081, &[400])
    }]);
    k.spawn(3 * S, 1, 300, "/usr/bin/python3", &["python3"]);
    let f = k.bind_ns(4 * S, 300, HOST_NS, "0.0.0.0", 18081, EADDRINUSE);
    assert_eq!(ks(&f), vec![("port_conflict", "open")]);
    let s = &f[0].summary;
    assert!(
        s.contains("pid 400 (nginx) in container web (image nginx:1.25)"),
        "{s}"
    );
    assert!(!s.contains("'s port for"), "{s}");
}

#[test]
fn a_conflict_written_before_the_runtime_answered_is_restated_with_the_container() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 90, "/usr/sbin/dockerd", &["dockerd"]);
    k.listen_ns(2 * S, 90, HOST_NS, "0.0.0.0", 18081, 0xa);
    k.spawn(3 * S, 1, 300, "/usr/bin/python3", &["python3"]);
    let f = k.bind_ns(4 * S, 300, HOST_NS, "0.0.0.0", 18081, EADDRINUSE);
    assert_eq!(ks(&f), vec![("port_conflict", "open")]);
    assert!(!f[0].summary.contains("'s port for"), "{}", f[0].summary);
    // The answer to the container's start arrives: an update names it.
    let f = published_web(&mut k);
    assert_eq!(ks(&f), vec![("port_conflict", "update")]);
    assert!(
        f[0].summary.contains(
            "pid 90 (dockerd), Docker's port for container web (image nginx:1.25) at 172.17.0.2:80"
        ),
        "{}",
        f[0].summary
    );
    assert_eq!(f[0].details["published_by_container"]["name"], "web");
    let f = k.runtime_knows(crate::world::containers::ContainerInfo {
        id: CID.into(),
        runtime: "docker",
        name: Some("web".into()),
        image: Some("nginx:1.25".into()),
        addresses: vec!["172.17.0.2".parse().unwrap()],
        published: vec![crate::world::containers::Published {
            tcp: true,
            host_ip: "0.0.0.0".parse().unwrap(),
            host_port: 18081,
            port: 80,
        }],
        ..Default::default()
    });
    assert!(
        f.is_empty(),
        "what was already known is not said again: {f:?}"
    );
}

#[test]
fn a_host_program_on_a_published_address_in_another_namespace_is_its_own() {
    let mut k = Kit::defaults();
    let _ = published_web(&mut k);
    // An `ip netns` namespace's nc on 0.0.0.0:18081 is not the runtime.
    k.spawn(S, 1, 500, "/bin/nc", &["nc", "-l", "-p", "18081"]);
    k.listen_ns(2 * S, 500, 4026532999, "0.0.0.0", 18081, 0xa);
    k.spawn(
        3 * S,
        1,
        501,
        "/bin/nc",
        &["nc", "-l", "-p", "18081", "-e", "x"],
    );
    let f = k.bind_ns(4 * S, 501, 4026532999, "0.0.0.0", 18081, EADDRINUSE);
    assert_eq!(ks(&f), vec![("port_conflict", "open")]);
    assert!(!f[0].summary.contains("'s port for"), "{}", f[0].summary);
    assert!(f[0].details.get("published_by_container").is_none());
}

#[test]
fn a_crash_loop_restarted_by_podmans_policy_names_the_container_and_podman() {
    use crate::world::containers::ContainerInfo;
    let mut k = Kit::defaults();
    k.cgroup(S / 2, 120, &format!("/machine.slice/libpod-{CID}.scope"));
    let mut f = Vec::new();
    let mut t = S;
    for n in 0..8u32 {
        // Podman restarts at once: a new conmon for every start, the
        // container's process its child.
        let conmon = 300 + n * 2;
        k.spawn(
            t,
            1,
            conmon,
            "/usr/bin/conmon",
            &["/usr/bin/conmon", "--api-version", "1", "-c", CID],
        );
        // (One instance orphaned before its conmon adopted it: pid 1 is its
        // parent then, and restarts nothing.)
        let parent = if n == 3 { 1 } else { conmon };
        f.extend(k.spawn_in(
            t + MS,
            parent,
            conmon + 1,
            120,
            "/bin/sh",
            &["sh", "-c", "exit 3"],
        ));
        if n == 0 {
            // The name arrives after the first event (the store's answer).
            f.extend(k.runtime_knows(ContainerInfo {
                id: CID.into(),
                runtime: "podman",
                name: Some("crashy".into()),
                image: Some("localhost/busybox:latest".into()),
                restart_policy: Some("always".into()),
                ..Default::default()
            }));
        }
        t += 60 * MS;
        f.extend(k.exit(t, conmon + 1, CODE3));
        t += 150 * MS;
    }
    let open = f
        .iter()
        .find(|x| x.kind.as_str() == "respawn_storm")
        .unwrap_or_else(|| {
            panic!(
                "respawn_storm: {:?}",
                f.iter()
                    .map(|x| (x.kind.as_str(), x.state.as_str(), x.summary.clone()))
                    .collect::<Vec<_>>()
            )
        });
    let s = &open.summary;
    assert!(
        s.starts_with("container crashy (image localhost/busybox:latest)"),
        "{s}"
    );
    assert!(s.contains("by Podman's restart policy (always)"), "{s}");
    assert!(!s.contains("conmon"), "the runtime, not conmon pids: {s}");
    assert_eq!(
        open.details["restarter"]["runtime"], "podman",
        "{:?}",
        open.details
    );
}
