//! Podman, end to end: real rootful `podman run` (Debian's podman, installed
//! and given the busybox test image by `cargo xtask test`), with and without
//! Podman's API service. Every container and service a test starts is
//! removed when it ends, also when it fails.
use std::process::{Command, Stdio};

use watcher_tests::{
    actor_any, finding, finding_pids, is, num,
    runtime::{image, Container, PODMAN},
    text, watcher_bin, ChildGuard, Feed, Value,
};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

/// `podman run -d --name wt-<test pid>-<tag> <extra> <image> <cmd>`, removed when dropped.
fn run_container(tag: &str, extra: &[&str], cmd: &[&str]) -> Container {
    Container::run(&PODMAN, tag, extra, cmd)
}

/// `watcher check`'s line about Podman, with `PODMAN_SOCKET` set to `socket`.
fn check_line(socket: &str) -> String {
    let out = Command::new(watcher_bin())
        .arg("check")
        .env("PODMAN_SOCKET", socket)
        .output()
        .expect("watcher check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("runtime podman"))
        .unwrap_or_else(|| panic!("watcher check says nothing of Podman:\n{text}"))
        .to_owned()
}

fn container_name(v: &Value) -> Option<&str> {
    text(v, &["container", "name"])
}

#[test]
fn a_podman_containers_name_comes_from_its_store_and_its_crash_loop_is_podmans() {
    if !PODMAN.require() {
        return;
    }
    // No API service: what Podman wrote on disk names it.
    let line = check_line("/nonexistent/podman.sock");
    assert!(
        line.contains("Podman's store at")
            && line.contains("not its restart policy or published ports"),
        "{line}"
    );
    let feed = Feed::start_with(
        &["trace", "--json"],
        &[("PODMAN_SOCKET", "/nonexistent/podman.sock")],
        &[],
    );
    let c = run_container("crashy", &["--restart", "always"], &["sh", "-c", "exit 3"]);
    let open = feed.wait_for_related(
        "respawn_storm naming the Podman container",
        |v| is(v, "finding"),
        |v| {
            finding(v, "respawn_storm", "open")
                && text(v, &["details", "container", "name"]) == Some(c.name.as_str())
        },
    );
    let summary = text(&open, &["summary"]).unwrap_or_default();
    assert!(
        summary.starts_with(&format!(
            "container {} (image localhost/{}",
            c.name,
            image()
        )),
        "{summary}"
    );
    assert!(
        summary.contains("by Podman's restart policy") && summary.contains("exit code 3"),
        "{summary}"
    );
    assert!(
        !summary.contains("conmon"),
        "Podman, not conmon pids: {summary}"
    );
    assert_eq!(
        text(&open, &["details", "restarter", "runtime"]),
        Some("podman"),
        "{open}"
    );
    // Its processes' records carry the container, named once the store answered.
    let named = feed.wait_for("the shell's exit record naming the container", |v| {
        is(v, "exit")
            && container_name(v) == Some(c.name.as_str())
            && num(v, &["process", "exit_code"]) == Some(3)
    });
    assert_eq!(
        text(&named, &["container", "runtime"]),
        Some("podman"),
        "{named}"
    );
    assert_eq!(
        text(&named, &["container", "image", "name"]),
        Some(format!("localhost/{}", image()).as_str()),
        "{named}"
    );
}

/// `podman system service` on a socket of the test's own, stopped when dropped.
struct Service {
    socket: std::path::PathBuf,
    _child: ChildGuard,
}

impl Service {
    fn start() -> Service {
        let dir = watcher_tests::temp_dir("podman-service");
        let socket = dir.join("podman.sock");
        let child = ChildGuard::spawn(
            PODMAN
                .command()
                .args(["system", "service", "--time=0"])
                .arg(format!("unix://{}", socket.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        watcher_tests::eventually("podman's API socket", || {
            std::os::unix::net::UnixStream::connect(&socket).ok()
        });
        Service {
            socket,
            _child: child,
        }
    }
}

#[test]
fn with_podmans_service_a_port_conmon_holds_names_the_container_it_is_published_for() {
    if !PODMAN.require() {
        return;
    }
    let service = Service::start();
    let line = check_line(service.socket.to_str().unwrap());
    assert!(
        line.contains("Podman 4")
            && line.contains("its API at")
            && line.contains("published ports"),
        "{line}"
    );
    let feed = Feed::start_with(
        &["trace", "--json"],
        &[("PODMAN_SOCKET", service.socket.to_str().unwrap())],
        &[],
    );
    assert!(
        feed.wait_stderr("podman at").contains("podman"),
        "watcher says it follows Podman's API"
    );
    let port = watcher_tests::free_port();
    let c = run_container(
        "published",
        &["-p", &format!("{port}:80")],
        &["sleep", "1000"],
    );
    // `podman run` binds the published port and hands it to the
    // container's conmon, which holds it on the host.
    feed.wait_for(&format!("podman listening on port {port}"), |v| {
        is(v, "tcp_state")
            && text(v, &["tcp", "new_state"]) == Some("LISTEN")
            && num(v, &["source", "port"]) == Some(port as u64)
            && text(v, &["process", "name"]) == Some("podman")
    });
    let failing = actor_any(ACTOR, &["bind-port", &port.to_string()]);
    assert_eq!(failing.code, Some(1), "conmon holds 0.0.0.0:{port}");
    let open = feed.wait_for(
        "port_conflict naming the container conmon holds it for",
        |v| {
            (finding(v, "port_conflict", "open") || finding(v, "port_conflict", "update"))
                && finding_pids(v, Some("failing")).contains(&(failing.pid as u64))
                && v["details"].get("published_by_container").is_some()
        },
    );
    let summary = text(&open, &["summary"]).unwrap_or_default();
    assert!(
        summary.contains(&format!("Podman's port for container {} (image", c.name)),
        "{summary}"
    );
    let holders: Vec<&str> = open["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["role"] == "holder")
        .filter_map(|p| p["process"]["name"].as_str())
        .collect();
    // (`podman run` may still hold the socket it handed over when the bind fails.)
    assert!(
        !holders.is_empty() && holders.iter().all(|h| ["conmon", "podman"].contains(h)),
        "{open}"
    );
    assert_eq!(
        text(&open, &["details", "published_by_container", "runtime"]),
        Some("podman"),
        "{open}"
    );
    assert_eq!(
        num(&open, &["details", "published_by_container", "port"]),
        Some(80),
        "{open}"
    );
    // Through the API the restart policy is named too.
    let crashy = run_container(
        "api-crashy",
        &["--restart", "always"],
        &["sh", "-c", "exit 3"],
    );
    let storm = feed.wait_for_related(
        "respawn_storm naming Podman's restart policy (always)",
        |v| is(v, "finding"),
        |v| {
            finding(v, "respawn_storm", "open")
                && text(v, &["details", "container", "name"]) == Some(crashy.name.as_str())
        },
    );
    let summary = text(&storm, &["summary"]).unwrap_or_default();
    assert!(
        summary.contains("by Podman's restart policy (always)"),
        "{summary}"
    );
    assert_eq!(
        text(&storm, &["details", "restarter", "restart_policy"]),
        Some("always"),
        "{storm}"
    );
}
