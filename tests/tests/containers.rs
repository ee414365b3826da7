//! A container host, end to end: a real Docker Engine (started by `cargo
//! xtask test` when it is not running), containers of a busybox image built
//! locally, `ip netns` namespaces, and the real watcher — also running as a
//! container itself. Every container, namespace and process a test starts is
//! removed when it ends, also when it fails.
use std::process::{Command, Stdio};

use watcher_tests::{
    actor_any, finding, finding_pids, free_port, is, num, require_root,
    runtime::{image, Container, DOCKER},
    spawn_actor, text, Feed, Running, Value,
};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

/// `docker run -d --name wt-<test pid>-<tag> <extra> <image> <cmd>`, removed when dropped.
fn run_container(tag: &str, extra: &[&str], cmd: &[&str]) -> Container {
    Container::run(&DOCKER, tag, extra, cmd)
}

/// A named network namespace (`ip netns add`), deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("wt-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name} failed");
        let _ = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status();
        Netns(name)
    }

    /// `actor <args>` inside the namespace, still running.
    fn spawn(&self, args: &[&str]) -> Running {
        let mut argv = vec!["netns", "exec", &self.0, ACTOR];
        argv.extend_from_slice(args);
        spawn_actor("ip", &argv)
    }

    fn run(&self, args: &[&str]) -> watcher_tests::Run {
        let mut argv = vec!["netns", "exec", &self.0, ACTOR];
        argv.extend_from_slice(args);
        actor_any("ip", &argv)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn port_of(v: &Value) -> Option<u64> {
    num(v, &["details", "port"])
}

fn container_name(v: &Value) -> Option<&str> {
    text(v, &["container", "name"])
}

/// A listener (tcp_state → LISTEN) on `port` whose owner satisfies `who`.
fn listening(v: &Value, port: u16, who: impl Fn(&Value) -> bool) -> bool {
    is(v, "tcp_state")
        && text(v, &["tcp", "new_state"]) == Some("LISTEN")
        && num(v, &["source", "port"]) == Some(port as u64)
        && who(v)
}

/// Run a marker process and wait for its exit record: every finding the
/// events before it could cause has been written by then (findings are
/// emitted while the deciding event is handled). Returns all records so far.
fn records_until_marker(feed: &Feed) -> Vec<Value> {
    let m = actor_any(ACTOR, &["exit", "77"]);
    feed.wait_for("the marker's exit", |v| {
        is(v, "exit") && num(v, &["process", "pid"]) == Some(m.pid as u64)
    });
    feed.records()
}

#[test]
fn dockers_published_port_pair_is_quiet_and_a_loopback_bind_over_it_names_the_container() {
    if !DOCKER.require() {
        return;
    }
    let feed = Feed::shared();
    let port = free_port();
    let publish = format!("{port}:8080");
    let c = run_container("published", &["-p", &publish], &["sleep", "1000"]);
    for family in ["0.0.0.0", "::"] {
        feed.wait_for(
            &format!("docker-proxy listening on {family} port {port}"),
            |v| {
                listening(v, port, |v| {
                    text(v, &["process", "name"]) == Some("docker-proxy")
                        && text(v, &["source", "address"]) == Some(family)
                })
            },
        );
    }
    let shadowed =
        |v: &Value| finding(v, "port_shadowed", "open") && port_of(v) == Some(port as u64);
    let so_far = records_until_marker(&feed);
    assert!(
        !so_far.iter().any(shadowed),
        "Docker's IPv4/IPv6 proxy pair is one service: {:?}",
        so_far.iter().filter(|v| shadowed(v)).collect::<Vec<_>>()
    );
    // A native process wants 127.0.0.1 of the published port. With Docker's
    // proxy holding the wildcard, Linux refuses the bind (both listen
    // without SO_REUSEPORT): a port conflict whose holder is the container
    // behind the proxy, not just "docker-proxy".
    let failing = actor_any(ACTOR, &["bind-port", &port.to_string(), "127.0.0.1"]);
    assert_eq!(
        failing.code,
        Some(1),
        "the kernel refuses 127.0.0.1:{port} under the proxy's wildcard"
    );
    let open = feed.wait_for("port_conflict naming the container behind the proxy", |v| {
        finding(v, "port_conflict", "open")
            && finding_pids(v, Some("failing")).contains(&(failing.pid as u64))
    });
    let summary = text(&open, &["summary"]).unwrap_or_default();
    assert!(
        summary.contains(&format!("Docker's proxy for container {} (image", c.name)),
        "names the container: {summary}"
    );
    assert!(
        summary.contains("172.17.") || summary.contains(":8080"),
        "and where the proxy forwards: {summary}"
    );
    let holders = finding_pids(&open, Some("holder"));
    assert!(!holders.is_empty(), "{open}");
}

#[test]
fn the_same_port_in_two_containers_and_on_host_loopback_is_quiet() {
    if !DOCKER.require() {
        return;
    }
    let feed = Feed::shared();
    let port = free_port();
    let p = port.to_string();
    let a = run_container("same-a", &[], &["nc", "-ll", "-p", &p, "-e", "true"]);
    let b = run_container("same-b", &[], &["nc", "-ll", "-p", &p, "-e", "true"]);
    let mut host = spawn_actor(ACTOR, &["listen-hold", "127.0.0.1", &p]);
    host.value("listening");
    let mut netns = Vec::new();
    for c in [&a, &b] {
        let l = feed.wait_for(&format!("the listener in {}", c.name), |v| {
            listening(v, port, |v| container_name(v) == Some(c.name.as_str()))
        });
        netns.push(num(&l, &["network", "netns"]).expect("a socket names its network namespace"));
    }
    let h = feed.wait_for("the host's listener", |v| {
        listening(v, port, |v| {
            num(v, &["process", "pid"]) == Some(host.pid as u64)
        })
    });
    netns.push(num(&h, &["network", "netns"]).expect("netns"));
    netns.sort();
    netns.dedup();
    assert_eq!(netns.len(), 3, "three network namespaces: {netns:?}");
    let so_far = records_until_marker(&feed);
    let bad: Vec<&Value> = so_far
        .iter()
        .filter(|v| is(v, "finding") && port_of(v) == Some(port as u64))
        .collect();
    assert!(
        bad.is_empty(),
        "one port in three namespaces is three ports: {bad:?}"
    );
    host.finish();
}

#[test]
fn a_port_conflict_inside_a_container_names_the_holder_in_that_container() {
    if !DOCKER.require() {
        return;
    }
    let feed = Feed::shared();
    let port = free_port();
    let p = port.to_string();
    // The same port held on the host too: it must not be named.
    let mut host = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", &p]);
    host.value("listening");
    let script = format!("nc -ll -p {p} -e true & sleep 0.5; exec nc -l -p {p}");
    let c = run_container("conflict", &[], &["sh", "-c", &script]);
    let open = feed.wait_for_related(
        "port_conflict inside the container",
        |v| is(v, "finding"),
        |v| finding(v, "port_conflict", "open") && port_of(v) == Some(port as u64),
    );
    let procs = open["processes"].as_array().cloned().unwrap_or_default();
    let failing = procs
        .iter()
        .find(|x| x["role"] == "failing")
        .expect("a failing process");
    assert_eq!(
        text(failing, &["container", "name"]),
        Some(c.name.as_str()),
        "{open}"
    );
    let holders: Vec<&Value> = procs.iter().filter(|x| x["role"] == "holder").collect();
    assert!(!holders.is_empty(), "the holder is named: {open}");
    assert!(
        holders
            .iter()
            .all(|h| text(h, &["container", "name"]) == Some(c.name.as_str())),
        "the holder in the container: {open}"
    );
    assert!(
        !finding_pids(&open, Some("holder")).contains(&(host.pid as u64)),
        "not the host's listener: {open}"
    );
    let summary = text(&open, &["summary"]).unwrap_or_default();
    assert!(
        summary.contains(&format!("in container {}", c.name)),
        "{summary}"
    );
    assert!(
        num(&open, &["details", "network_namespace"]).is_some(),
        "{open}"
    );
    host.finish();
}

#[test]
fn every_record_of_a_container_process_carries_its_id_name_and_image() {
    if !DOCKER.require() {
        return;
    }
    let feed = Feed::shared();
    let marker = format!("attribution-{}", std::process::id());
    let c = run_container(
        "records",
        &[],
        &[
            "sh",
            "-c",
            &format!("echo {marker} > /dev/null; sleep 0.2; exit 3"),
        ],
    );
    // (The `docker run` client's own exec carries the marker too: the shell is the one in the container.)
    let sh = feed.wait_for("the container's shell", |v| {
        is(v, "exec")
            && text(v, &["process", "executable"]) == Some("/bin/sh")
            && v["args"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.contains(&marker)))
            })
    });
    let pid = num(&sh, &["process", "pid"]).expect("pid");
    feed.wait_for("its exit with code 3", |v| {
        is(v, "exit")
            && num(v, &["process", "pid"]) == Some(pid)
            && num(v, &["process", "exit_code"]) == Some(3)
    });
    let records = feed.records();
    // The shell and what it started (its children and their exits and reaps).
    let mut pids = vec![pid];
    for v in &records {
        if is(v, "fork") && num(v, &["process", "parent", "pid"]) == Some(pid) {
            pids.extend(num(v, &["process", "pid"]));
        }
    }
    let mine: Vec<&Value> = records
        .iter()
        .filter(|v| ["fork", "exec", "exit", "reap"].iter().any(|t| is(v, t)))
        .filter(|v| num(v, &["process", "pid"]).is_some_and(|p| pids.contains(&p)))
        .collect();
    assert!(
        mine.len() >= 5,
        "exec, fork, exec, exit, reap and exit of the container's processes: {mine:?}"
    );
    for v in mine {
        assert_eq!(
            text(v, &["container", "id"]),
            Some(c.id.as_str()),
            "container.id: {v}"
        );
        assert_eq!(
            container_name(v),
            Some(c.name.as_str()),
            "container.name: {v}"
        );
        assert_eq!(
            text(v, &["container", "image", "name"]),
            Some(image().as_str()),
            "container.image.name (as it was run): {v}"
        );
        assert_eq!(
            text(v, &["container", "runtime"]),
            Some("docker"),
            "container.runtime: {v}"
        );
    }
}

#[test]
fn zombies_inside_a_container_name_it_and_removing_it_blames_nobody() {
    if !DOCKER.require() {
        return;
    }
    let feed = Feed::shared();
    let c = run_container(
        "zombies",
        &[],
        &[
            "sh",
            "-c",
            "sleep 0 & sleep 0 & sleep 0 & sleep 0 & sleep 0 & sleep 0 & exec sleep 1000",
        ],
    );
    let open = feed.wait_for_related(
        "zombie_accumulation inside the container",
        |v| is(v, "finding"),
        // (Opened naming the container by its id when the runtime had not named it yet, then updated.)
        |v| {
            (finding(v, "zombie_accumulation", "open")
                || finding(v, "zombie_accumulation", "update"))
                && text(v, &["summary"]).is_some_and(|s| s.contains(&c.name))
        },
    );
    let parent = finding_pids(&open, Some("parent"));
    assert_eq!(parent.len(), 1, "{open}");
    let summary = text(&open, &["summary"]).unwrap_or_default().to_owned();
    assert!(
        summary.contains(&format!("in container {} (image", c.name)),
        "{summary}"
    );
    let removed_at = feed.records().len();
    let id = c.id.clone();
    drop(c);
    feed.wait_for("the incident resolved as the container's init ends", |v| {
        finding(v, "zombie_accumulation", "resolved") && text(v, &["id"]) == text(&open, &["id"])
    });
    let after = records_until_marker(&feed);
    // (Findings about other processes — e.g. a host init slow to reap exited
    // shims — are not this test's business: nothing may name this container's
    // processes, or its init, as a zombie or a parent of zombies.)
    let blamed: Vec<&Value> = after[removed_at..]
        .iter()
        .filter(|v| {
            is(v, "finding")
                && matches!(text(v, &["kind"]), Some("zombie" | "zombie_accumulation"))
                && text(v, &["state"]) == Some("open")
        })
        .filter(|v| {
            v["processes"].as_array().is_some_and(|ps| {
                ps.iter().any(|p| {
                    text(p, &["container", "id"]) == Some(id.as_str())
                        || (p["role"] == "parent"
                            && num(p, &["process", "pid"]) == parent.first().copied())
                })
            })
        })
        .collect();
    assert!(
        blamed.is_empty(),
        "no zombie of the removed container exists; nobody is blamed for one: {blamed:?}"
    );
}

#[test]
fn a_restart_always_crash_loop_names_the_container_and_dockers_policy() {
    if !DOCKER.require() {
        return;
    }
    let feed = Feed::shared();
    let c = run_container(
        "crashloop",
        &["--restart", "always"],
        &["sh", "-c", "sleep 0.3; exit 3"],
    );
    let open = feed.wait_for_related(
        "respawn_storm naming the container",
        |v| is(v, "finding"),
        |v| {
            finding(v, "respawn_storm", "open")
                && text(v, &["details", "container", "name"]) == Some(c.name.as_str())
        },
    );
    let summary = text(&open, &["summary"]).unwrap_or_default();
    assert!(
        summary.starts_with(&format!("container {} (image", c.name)),
        "{summary}"
    );
    assert!(
        summary.contains("by Docker's restart policy (always)") && summary.contains("exit code 3"),
        "{summary}"
    );
    assert!(
        !summary.contains("containerd-shim"),
        "the runtime restarts it, not shim pids: {summary}"
    );
    assert_eq!(
        text(&open, &["details", "restarter", "runtime"]),
        Some("docker"),
        "{open}"
    );
}

#[test]
fn an_oom_killed_container_restarted_by_its_policy_says_out_of_memory() {
    if !DOCKER.require() {
        return;
    }
    let feed = Feed::shared();
    // dd's 64 MiB buffer in a 16 MiB container: the OOM killer ends it, every time.
    let c = run_container(
        "oom",
        &[
            "--restart",
            "always",
            "--memory",
            "16m",
            "--memory-swap",
            "16m",
        ],
        &[
            "sh",
            "-c",
            "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
    );
    let exit = feed.wait_for_related(
        "an exit killed by the OOM killer in the container",
        |v| is(v, "exit") && text(v, &["container", "name"]) == Some(c.name.as_str()),
        |v| {
            is(v, "exit")
                && text(v, &["container", "id"]) == Some(c.id.as_str())
                && text(v, &["exit", "cause", "kind"]) == Some("oom_kill")
        },
    );
    assert_eq!(text(&exit, &["exit", "signal"]), Some("SIGKILL"), "{exit}");
    let open = feed.wait_for_related(
        "respawn_storm naming the out-of-memory cause",
        |v| is(v, "finding"),
        |v| {
            finding(v, "respawn_storm", "open")
                && text(v, &["details", "container", "name"]) == Some(c.name.as_str())
        },
    );
    let summary = text(&open, &["summary"]).unwrap_or_default();
    assert!(
        summary.contains("out of memory"),
        "the cause is the OOM killer, not a bare SIGKILL: {summary}"
    );
    assert!(
        summary.contains("by Docker's restart policy (always)"),
        "{summary}"
    );
}

#[test]
fn twelve_replicas_of_one_image_are_not_duplicates() {
    if !DOCKER.require() {
        return;
    }
    let feed = Feed::shared();
    let tag = format!("replica-{}", std::process::id());
    let replicas: Vec<Container> = (0..12)
        .map(|n| run_container(&format!("rep{n}"), &["--label", &tag], &["sleep", "1000"]))
        .collect();
    for c in &replicas {
        feed.wait_for(&format!("sleep in {}", c.name), |v| {
            is(v, "exec") && container_name(v) == Some(c.name.as_str())
        });
    }
    let so_far = records_until_marker(&feed);
    let dup: Vec<&Value> = so_far
        .iter()
        .filter(|v| finding(v, "duplicate_instances", "open"))
        .filter(|v| text(v, &["summary"]).is_some_and(|s| s.contains("sleep 1000")))
        .collect();
    assert!(
        dup.is_empty(),
        "replicas in separate containers are not duplicates: {dup:?}"
    );
}

#[test]
fn watcher_running_as_a_container_sees_a_host_processes_port_conflict() {
    if !DOCKER.require() {
        return;
    }
    let watcher_image = std::env::var("WATCHER_IMAGE").unwrap_or_else(|_| "watcher:latest".into());
    if !DOCKER.has_image(&watcher_image) {
        let msg = format!("the image {watcher_image} is missing: `cargo xtask image` (or `cargo xtask test`) builds it");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let name = format!("wt-{}-watcher", std::process::id());
    let _guard = Container::named(&DOCKER, name.clone());
    // Exactly the `docker run` line of the README.
    let feed = Feed::start_command(&[
        "docker",
        "run",
        "--rm",
        "--name",
        &name,
        "--pid=host",
        "--network=host",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "SYS_PTRACE",
        "--cap-add",
        "DAC_READ_SEARCH",
        "-v",
        "/sys/kernel/tracing:/sys/kernel/tracing",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        &watcher_image,
        "trace",
        "--json",
    ]);
    let mut holder = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0"]);
    let port = holder.value("port");
    let failing = actor_any(ACTOR, &["bind-port", &port]);
    assert_eq!(failing.code, Some(1));
    let open = feed.wait_for_related(
        "port_conflict seen from the container",
        |v| is(v, "finding"),
        |v| {
            finding(v, "port_conflict", "open")
                && finding_pids(v, Some("failing")).contains(&(failing.pid as u64))
        },
    );
    assert_eq!(
        finding_pids(&open, Some("holder")),
        vec![holder.pid as u64],
        "the host's pids, the host's holder: {open}"
    );
    // It attributes containers too.
    let c = run_container("seen-by-watcher", &[], &["sh", "-c", "exit 4"]);
    feed.wait_for("the container's exit, attributed", |v| {
        is(v, "exit") && container_name(v) == Some(c.name.as_str())
    });
    holder.finish();
}

#[test]
fn one_port_in_ip_netns_namespaces_is_quiet_and_a_conflict_inside_one_names_the_holder_there() {
    if !require_root() {
        return;
    }
    let feed = Feed::shared();
    let port = free_port();
    let p = port.to_string();
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let mut in_a = a.spawn(&["listen-hold", "0.0.0.0", &p]);
    in_a.value("listening");
    let mut in_b = b.spawn(&["listen-hold", "0.0.0.0", &p]);
    in_b.value("listening");
    let mut host = spawn_actor(ACTOR, &["listen-hold", "127.0.0.1", &p]);
    host.value("listening");
    for r in [&in_a, &in_b, &host] {
        feed.wait_for("each listener", |v| {
            listening(v, port, |v| {
                num(v, &["process", "pid"]) == Some(r.pid as u64)
            })
        });
    }
    let so_far = records_until_marker(&feed);
    let bad: Vec<&Value> = so_far
        .iter()
        .filter(|v| is(v, "finding") && port_of(v) == Some(port as u64))
        .collect();
    assert!(bad.is_empty(), "three namespaces, three ports: {bad:?}");
    // A second bind inside namespace a: the holder named is a's, looked up in a.
    let failing = a.run(&["bind-port", &p]);
    assert_eq!(
        failing.code,
        Some(1),
        "bind inside the namespace must fail: {:?}",
        failing.values
    );
    let open = feed.wait_for("port_conflict in namespace a", |v| {
        finding(v, "port_conflict", "open")
            && finding_pids(v, Some("failing")).contains(&(failing.pid as u64))
    });
    assert_eq!(
        finding_pids(&open, Some("holder")),
        vec![in_a.pid as u64],
        "{open}"
    );
    in_a.finish();
    in_b.finish();
    host.finish();
}

#[test]
fn sockets_of_every_network_namespace_are_seeded_at_start() {
    if !require_root() {
        return;
    }
    let ns = Netns::new("seed");
    let port = free_port();
    let p = port.to_string();
    // A wildcard listener in the namespace, before this watcher starts.
    let mut early = ns.spawn(&["listen-hold", "0.0.0.0", &p, "reuseport"]);
    early.value("listening");
    let feed = Feed::start(&["trace", "--json"]);
    // Another program takes 127.0.0.1 of the same port in that namespace: only
    // the seed knows the earlier listener (its listen happened before watcher).
    let mut late = ns.spawn(&["listen-hold", "127.0.0.1", &p, "reuseport"]);
    late.value("listening");
    let open = feed.wait_for("port_shadowed against the seeded listener", |v| {
        finding(v, "port_shadowed", "open") && port_of(v) == Some(port as u64)
    });
    let pids = finding_pids(&open, None);
    assert!(
        pids.contains(&(early.pid as u64)) && pids.contains(&(late.pid as u64)),
        "{open}"
    );
    late.finish();
    early.finish();
}

#[test]
fn watcher_refuses_in_one_line_outside_the_hosts_pid_namespace() {
    if !DOCKER.require() {
        return;
    }
    let watcher_image = std::env::var("WATCHER_IMAGE").unwrap_or_else(|_| "watcher:latest".into());
    if !DOCKER.has_image(&watcher_image) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the image {watcher_image} is missing"
        );
        eprintln!("SKIPPED: the image {watcher_image} is missing");
        return;
    }
    let name = format!("wt-{}-nopidns", std::process::id());
    let guard = Container::named(&DOCKER, name.clone());
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--name",
            &name,
            "--cap-add",
            "SYS_ADMIN",
            &watcher_image,
            "trace",
        ])
        .output()
        .expect("docker run");
    drop(guard);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("watcher: not in the host's pid namespace")
            && lines[0].contains("--pid=host"),
        "{err}"
    );
}

#[test]
fn a_pods_container_carries_its_namespace_and_pod_from_the_runtimes_kubernetes_labels() {
    if !DOCKER.require() {
        return;
    }
    let feed = Feed::shared();
    // The labels the kubelet puts on a pod's containers (as with cri-dockerd).
    let c = run_container(
        "pod",
        &[
            "--label",
            "io.kubernetes.pod.namespace=shop",
            "--label",
            "io.kubernetes.pod.name=web-7d9f8",
            "--label",
            "io.kubernetes.container.name=web",
        ],
        &["sh", "-c", "exit 5"],
    );
    let exit = feed.wait_for("the pod container's exit", |v| {
        is(v, "exit") && text(v, &["container", "id"]) == Some(c.id.as_str())
    });
    assert_eq!(
        text(&exit, &["orchestrator", "namespace"]),
        Some("shop"),
        "{exit}"
    );
    assert_eq!(
        text(&exit, &["orchestrator", "resource", "name"]),
        Some("web-7d9f8"),
        "{exit}"
    );
    assert_eq!(
        text(&exit, &["orchestrator", "resource", "type"]),
        Some("pod"),
        "{exit}"
    );
    assert_eq!(
        text(&exit, &["orchestrator", "type"]),
        Some("kubernetes"),
        "{exit}"
    );
}

/// The containerd socket Docker uses (its own, or a system containerd).
fn containerd_socket() -> Option<&'static str> {
    [
        "/run/containerd/containerd.sock",
        "/var/run/docker/containerd/containerd.sock",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
}

/// containerd's socket, with the busybox image in its Kubernetes namespace
/// (`k8s.io`); and the image's reference there.
fn containerd_with_image() -> (&'static str, String) {
    let Some(sock) = containerd_socket() else {
        panic!("Docker Engine runs but no containerd socket was found (looked for /run/containerd/containerd.sock and /var/run/docker/containerd/containerd.sock)");
    };
    let import = format!(
        "docker save {} | ctr -a {sock} -n k8s.io images import -",
        image()
    );
    let ok = Command::new("sh")
        .args(["-c", &import])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "importing the image into containerd failed: {import}");
    (sock, format!("docker.io/{}", image()))
}

/// A containerd container (namespace `k8s.io`) removed when dropped, also
/// when the test fails.
struct CtrContainer<'a>(&'a str, String);

impl Drop for CtrContainer<'_> {
    fn drop(&mut self) {
        let _ = ctr(self.0, &["tasks", "kill", "-s", "SIGKILL", &self.1]);
        let _ = ctr(self.0, &["tasks", "rm", "-f", &self.1]);
        let _ = ctr(self.0, &["containers", "rm", &self.1]);
    }
}

fn ctr(sock: &str, args: &[&str]) -> std::process::Output {
    Command::new("ctr")
        .args(["-a", sock, "-n", "k8s.io"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ctr")
}

#[test]
fn a_container_only_containerd_knows_is_named_from_its_kubernetes_labels() {
    if !DOCKER.require() {
        return;
    }
    let (sock, image_ref) = containerd_with_image();
    // Its own watcher, told where containerd listens.
    let feed = Feed::start_with(&["trace", "--json"], &[("CONTAINERD_ADDRESS", sock)], &[]);
    let id = format!("{:064x}", 0xc0de_0000_0000_u64 + std::process::id() as u64);
    let _guard = CtrContainer(sock, id.clone());
    let out = ctr(
        sock,
        &[
            "run",
            "--rm",
            "--label",
            "io.kubernetes.pod.namespace=prod",
            "--label",
            "io.kubernetes.pod.name=api-7c4d",
            "--label",
            "io.kubernetes.container.name=api",
            &image_ref,
            &id,
            "sh",
            "-c",
            "exit 7",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "ctr run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = feed.wait_for("the containerd container's `sh` exiting with 7", |v| {
        is(v, "exit")
            && text(v, &["container", "id"]) == Some(id.as_str())
            && num(v, &["process", "exit_code"]) == Some(7)
    });
    assert_eq!(
        text(&exit, &["container", "runtime"]),
        Some("containerd"),
        "{exit}"
    );
    assert_eq!(
        container_name(&exit),
        Some("api"),
        "named from io.kubernetes.container.name: {exit}"
    );
    assert_eq!(
        text(&exit, &["container", "image", "name"]),
        Some(image_ref.as_str()),
        "{exit}"
    );
    assert_eq!(
        text(&exit, &["orchestrator", "namespace"]),
        Some("prod"),
        "{exit}"
    );
    assert_eq!(
        text(&exit, &["orchestrator", "resource", "name"]),
        Some("api-7c4d"),
        "{exit}"
    );
}

/// The cgroup directories runc makes for `--cgroup /kubepods/burstable/pod<uid>/<id>`
/// in every hierarchy: the pod's removed when dropped, and `kubepods` and
/// `kubepods/burstable` too where they did not exist before (runc removes
/// only the container's own).
struct PodCgroups {
    pod: String,
    made: Vec<std::path::PathBuf>,
}

impl PodCgroups {
    fn hierarchies() -> Vec<std::path::PathBuf> {
        let mut h = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            h.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        h
    }

    fn new(pod: &str) -> PodCgroups {
        let made = Self::hierarchies()
            .into_iter()
            .flat_map(|h| [h.join("kubepods/burstable"), h.join("kubepods")])
            .filter(|d| !d.exists())
            .collect();
        PodCgroups {
            pod: pod.to_owned(),
            made,
        }
    }
}

impl Drop for PodCgroups {
    fn drop(&mut self) {
        for h in Self::hierarchies() {
            let _ = std::fs::remove_dir(h.join(format!("kubepods/burstable/pod{}", self.pod)));
        }
        // (`made` lists burstable before kubepods: children first.)
        for d in &self.made {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The kubelet's CrashLoopBackOff without a kubelet: a pod's container
/// OOM-killed at every start and started again as a new container of the
/// same pod (the kubelet's cgroup path and `io.kubernetes.*` labels,
/// through containerd's API) after the kubelet's delays — 10 s doubling,
/// capped at 5 min — scaled down 50 times; watcher's windows are scaled the
/// same way through its config (`[detect.respawn_storm]`), no special path.
#[test]
fn a_pods_container_restarted_at_the_kubelets_backoff_is_crash_loop_backoff_out_of_memory() {
    if !DOCKER.require() {
        return;
    }
    let (sock, image_ref) = containerd_with_image();
    let dir = watcher_tests::temp_dir("kubelet-cadence");
    let cfg = watcher_tests::write_config(
        &dir,
        "[detect.respawn_storm]\n\
         restarts = 4\n\
         window_s = 6.6        # the kubelet's 5 min cap (330 s), / 50\n\
         restart_within_s = 2.0\n\
         short_life_s = 2.0\n",
    );
    let feed = Feed::start_with(
        &["trace", "--json", "--config", cfg.to_str().unwrap()],
        &[("CONTAINERD_ADDRESS", sock)],
        &[],
    );
    let me = std::process::id() as u64;
    let pod = format!("{:08x}-0000-4000-8000-{:012x}", me, me);
    let _cgroups = PodCgroups::new(&pod);
    let scale = 50;
    let mut backoff = std::time::Duration::from_secs(10) / scale;
    let cap = std::time::Duration::from_secs(300) / scale;
    let storm = |v: &Value| {
        finding(v, "respawn_storm", "open")
            && text(v, &["summary"]).is_some_and(|s| s.contains("pod shop/api-"))
            && text(v, &["summary"]).is_some_and(|s| s.contains(&format!("{me}")))
    };
    let mut found = None;
    for n in 0..8u64 {
        let id = format!("{:064x}", 0xcb00_0000_0000_u64 + me * 16 + n);
        let _guard = CtrContainer(sock, id.clone());
        // dd's 64 MiB buffer under a 16 MiB limit: the OOM killer, every start.
        let out = ctr(
            sock,
            &[
                "run",
                "--rm",
                "--cgroup",
                &format!("/kubepods/burstable/pod{pod}/{id}"),
                "--memory-limit",
                "16777216",
                "--label",
                "io.kubernetes.pod.namespace=shop",
                "--label",
                &format!("io.kubernetes.pod.name=api-{me}"),
                "--label",
                &format!("io.kubernetes.pod.uid={pod}"),
                "--label",
                "io.kubernetes.container.name=api",
                &image_ref,
                &id,
                "sh",
                "-c",
                "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(137),
            "ctr run: the OOM killer ends it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        found = feed.records().into_iter().find(|v| storm(v));
        if found.is_some() {
            break;
        }
        // The kubelet's back-off before it starts the next container
        // (the scenario's own timing, as a supervisor's delay is).
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(cap);
    }
    let open = match found {
        Some(v) => v,
        None => feed.wait_for_related(
            "respawn_storm naming the pod's CrashLoopBackOff",
            |v| {
                is(v, "finding")
                    || (is(v, "exit") && text(v, &["orchestrator", "namespace"]) == Some("shop"))
            },
            storm,
        ),
    };
    let summary = text(&open, &["summary"]).unwrap_or_default();
    assert!(
        summary.contains("Kubernetes' CrashLoopBackOff (kubelet, through containerd)"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "container api (image {image_ref}) in pod shop/api-{me}"
        )),
        "{summary}"
    );
    assert!(
        summary.contains("SIGKILL from the OOM killer (out of memory)"),
        "{summary}"
    );
    assert_eq!(num(&open, &["details", "restarts"]), Some(4), "{open}");
}

/// A second Docker Engine with `--userland-proxy=false`, in network and
/// mount namespaces of its own (its bridge, iptables rules and overlay
/// mounts never touch the host's engine), with its own managed containerd
/// and the test image loaded. Its containers are removed and the engine
/// stopped when dropped; the namespaces go with it.
struct NoProxyDocker {
    dir: std::path::PathBuf,
    host: String,
    daemon: watcher_tests::ChildGuard,
}

impl NoProxyDocker {
    fn start() -> NoProxyDocker {
        let dir = std::env::temp_dir().join(format!("watcher-dockerd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dockerd's directory");
        let d = dir.display();
        // A tmpfs over /run/containerd hides a system containerd's socket:
        // dockerd starts its own then (one that sees its mounts).
        let script = format!(
            "mount --make-rprivate / && \
             if [ -d /run/containerd ]; then mount -t tmpfs none /run/containerd; fi && \
             exec dockerd --userland-proxy=false --data-root {d}/data --exec-root {d}/exec \
             --pidfile {d}/docker.pid -H unix://{d}/docker.sock"
        );
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("log");
        let daemon = watcher_tests::ChildGuard::spawn(
            Command::new("unshare")
                .args(["--net", "--mount", "sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        );
        let me = NoProxyDocker {
            host: format!("unix://{d}/docker.sock"),
            dir,
            daemon,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !me.docker_ok(&["version"]) {
            assert!(
                std::time::Instant::now() < deadline,
                "the second dockerd did not answer within 60 s: {}",
                std::fs::read_to_string(me.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let load = Command::new("sh")
            .args([
                "-c",
                &format!("docker save {} | docker -H {} load -q", image(), me.host),
            ])
            .output()
            .expect("docker save | load");
        assert!(
            load.status.success(),
            "loading the test image: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        me
    }

    fn docker_ok(&self, args: &[&str]) -> bool {
        Command::new("docker")
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn docker(&self, args: &[&str]) -> String {
        let mut all = vec!["-H", &self.host];
        all.extend_from_slice(args);
        DOCKER.run(&all)
    }

    /// The engine's network namespace, for processes that meet its ports.
    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.daemon.id())
    }
}

impl Drop for NoProxyDocker {
    fn drop(&mut self) {
        // (No panic here: this also runs while a failed start unwinds.)
        let ids = Command::new("docker")
            .args(["-H", &self.host, "ps", "-aq"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = self.docker_ok(&["rm", "-f", id]);
        }
        let pid = nix::unistd::Pid::from_raw(self.daemon.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline && matches!(self.daemon.0.try_wait(), Ok(None)) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // (The guard kills what is left; the mounts die with the namespace.)
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_port_dockerd_holds_itself_without_the_userland_proxy_names_its_container() {
    if !DOCKER.require() {
        return;
    }
    let engine = NoProxyDocker::start();
    // `watcher check` says what it can name through this engine.
    let check = Command::new(watcher_tests::watcher_bin())
        .arg("check")
        .env("DOCKER_HOST", &engine.host)
        .output()
        .expect("watcher check");
    let check = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.lines().any(|l| l.contains("runtime docker")
            && l.contains(&format!(
                "at {}:",
                engine.host.trim_start_matches("unix://")
            ))
            && l.contains("published ports (held by docker-proxy or by dockerd itself)")),
        "{check}"
    );
    let feed = Feed::start_with(&["trace", "--json"], &[("DOCKER_HOST", &engine.host)], &[]);
    let port: u16 = 18089;
    let name = format!("wt-{}-noproxy", std::process::id());
    engine.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("{port}:80"),
        &image(),
        "sleep",
        "1000",
    ]);
    // dockerd itself holds the published port in its namespace.
    let dockerd = engine.daemon.id() as u64;
    feed.wait_for(
        &format!("dockerd (pid {dockerd}) listening on port {port}"),
        |v| listening(v, port, |v| num(v, &["process", "pid"]) == Some(dockerd)),
    );
    let shadowed =
        |v: &Value| finding(v, "port_shadowed", "open") && port_of(v) == Some(port as u64);
    // A host program (in the engine's namespace: where the port is) wants it.
    let ns = engine.netns();
    let failing = actor_any(
        "nsenter",
        &[
            &format!("--net={ns}"),
            ACTOR,
            "bind-port",
            &port.to_string(),
        ],
    );
    assert_eq!(failing.code, Some(1), "dockerd holds 0.0.0.0:{port}");
    // (Written at once from what is known; when the runtime's answer to the
    // container's start comes later, an update names the container.)
    let open = feed.wait_for(
        "port_conflict naming the container dockerd holds it for",
        |v| {
            (finding(v, "port_conflict", "open") || finding(v, "port_conflict", "update"))
                && finding_pids(v, Some("failing")).contains(&(failing.pid as u64))
                && v["details"].get("published_by_container").is_some()
        },
    );
    let summary = text(&open, &["summary"]).unwrap_or_default();
    assert!(
        summary.contains("(dockerd")
            && summary.contains(&format!("Docker's port for container {name} (image")),
        "names dockerd and the container it holds the port for: {summary}"
    );
    assert_eq!(
        text(&open, &["details", "published_by_container", "name"]),
        Some(name.as_str()),
        "{open}"
    );
    assert_eq!(
        num(&open, &["details", "published_by_container", "port"]),
        Some(80),
        "{open}"
    );
    assert!(
        text(&open, &["details", "published_by_container", "address"])
            .is_some_and(|a| a.starts_with("172.")),
        "the container's own address: {open}"
    );
    assert_eq!(finding_pids(&open, Some("holder")), vec![dockerd], "{open}");
    // Nothing else was said about the published port.
    let so_far = records_until_marker(&feed);
    assert!(
        !so_far.iter().any(shadowed),
        "a published port's sockets are one service: {:?}",
        so_far.iter().filter(|v| shadowed(v)).collect::<Vec<_>>()
    );
}
