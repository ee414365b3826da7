//! Crash causes and real supervisors' cadences, replayed with each one's
//! exact timing: both ways — the loop is found, and the look-alike is not.
use crate::detect::testkit::*;
use crate::detect::Finding;

const CODE1: u32 = 0x100;
const CODE3: u32 = 0x300;
const CODE7: u32 = 0x700;
const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;
const CID: &str = "7d4c0ffee0000000000000000000000000000000000000000000000000000001";

fn storm(f: &[Finding]) -> Vec<&Finding> {
    f.iter()
        .filter(|x| x.kind.as_str() == "respawn_storm")
        .collect()
}

/// Crash → restart cycles of `argv` under `parent`, with crash → restart
/// delays from `gaps`: each instance lives `life` and ends with `end`
/// (after `before_end`, e.g. a signal record, at the same instant).
#[expect(
    clippy::too_many_arguments,
    reason = "one supervisor's timing, spelled out at each call"
)]
fn cycles(
    k: &mut Kit,
    parent: u32,
    first_pid: u32,
    mut t: u64,
    life: u64,
    gaps: &[u64],
    end: u32,
    argv: &[&str],
) -> (u64, u32) {
    let mut pid = first_pid;
    for (n, gap) in std::iter::once(&0).chain(gaps.iter()).enumerate() {
        t += gap;
        k.spawn(t, parent, pid, argv[0], argv);
        t += life;
        k.exit(t, pid, end);
        k.reap(t + 1, parent, pid);
        if n < gaps.len() {
            pid += 1;
        }
    }
    (t, pid)
}

#[test]
fn supervisord_restarting_at_once_is_a_loop_naming_it_and_the_exit_code() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/supervisord", &["supervisord"]);
    // supervisord (autorestart) restarts a program that lived > startsecs at once.
    cycles(
        &mut k,
        100,
        200,
        2 * S,
        1_100 * MS,
        &[MS; 6],
        CODE1,
        &["/srv/app", "--port", "9"],
    );
    let f = storm(&k.all);
    let open = f
        .iter()
        .find(|x| x.state.as_str() == "open")
        .expect("respawn_storm opens");
    assert!(
        open.summary
            .contains("`/srv/app --port 9` keeps crashing: restarted 5 times"),
        "{}",
        open.summary
    );
    assert!(
        open.summary
            .contains(" at once by supervisord (pid 100 (supervisord))"),
        "{}",
        open.summary
    );
    assert!(
        open.summary.contains("exit code 1 after 1.1 s"),
        "{}",
        open.summary
    );
    assert_eq!(open.details["cadence"], "immediate");
}

#[test]
fn supervisorctl_restarting_a_healthy_program_is_not_a_crash_loop() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/supervisord", &["supervisord"]);
    let mut t = 2 * S;
    for n in 0..8u32 {
        let pid = 200 + n;
        k.spawn(t, 100, pid, "/bin/sleep", &["sleep", "1000"]);
        t += 2 * S;
        // `supervisorctl restart`: supervisord sends SIGTERM, the child dies of it.
        k.kill(t, 100, pid, SIGTERM);
        k.exit(t + MS, pid, SIGTERM);
        k.reap(t + 2 * MS, 100, pid);
        t += 3 * MS;
    }
    k.run_timers(t + 120 * S);
    assert!(
        storm(&k.all).is_empty(),
        "a stop by its own supervisor is not a crash: {:?}",
        k.all
    );
}

#[test]
fn systemd_gives_up_after_start_limit_burst_and_the_finding_says_it_is_down() {
    let mut k = Kit::defaults();
    k.spawn(S / 2, 0, 1, "/usr/lib/systemd/systemd", &["/sbin/init"]);
    // Restart=on-failure, RestartSec=100ms, StartLimitBurst=5 in 10 s: five
    // starts, four restarts, then the unit fails. Each start is in the unit's cgroup.
    k.cgroup(S / 2, 700, "/system.slice/flaky.service");
    let mut t = S;
    let mut last = 0;
    for n in 0..5u32 {
        last = 300 + n;
        k.spawn_in(
            t,
            1,
            last,
            700,
            "/usr/bin/flaky",
            &["/usr/bin/flaky", "--serve"],
        );
        t += 20 * MS;
        k.exit(t, last, CODE3);
        k.reap(t + 1, 1, last);
        if n < 4 {
            t += 100 * MS;
        }
    }
    assert!(
        storm(&k.all).is_empty(),
        "four restarts are below the threshold"
    );
    // Not restarted within the expected delay (2.5 × 100 ms, at least 3 s more): given up.
    assert!(
        storm(&k.run_timers(t + 2 * S)).is_empty(),
        "not before the expected delay"
    );
    let f = k.run_timers(t + 4 * S);
    let open = storm(&f)
        .into_iter()
        .find(|x| x.state.as_str() == "open")
        .expect("given up: the service is down");
    assert!(
        open.summary
            .contains("`/usr/bin/flaky --serve` is down: it crashed 5 times"),
        "{}",
        open.summary
    );
    assert!(
        open.summary
            .contains("every ~100 ms by systemd (unit flaky.service)")
            && open.summary.contains("StartLimitBurst"),
        "{}",
        open.summary
    );
    assert!(
        open.summary
            .contains(&format!("pid {last} ended with exit code 3")),
        "{}",
        open.summary
    );
    assert_eq!(open.details["gave_up"], true);
    // Stays open while it is down …
    assert!(storm(&k.run_timers(t + 600 * S)).is_empty());
    // … until someone starts it again.
    let f = k.spawn(
        t + 700 * S,
        1,
        400,
        "/usr/bin/flaky",
        &["/usr/bin/flaky", "--serve"],
    );
    assert!(
        storm(&f).iter().any(|x| x.state.as_str() == "resolved"),
        "{f:?}"
    );
}

#[test]
fn dockers_doubling_backoff_is_one_loop_with_the_next_restart_due() {
    let mut k = Kit::defaults();
    k.cgroup(S / 2, 120, &format!("/docker/{CID}"));
    k.runtime_says(CID, "crashy", "busybox", None, Some("always"));
    let mut t = S;
    let mut delay = 100 * MS;
    let mut f = Vec::new();
    for n in 0..9u32 {
        let shim = 300 + n * 2;
        k.spawn(
            t,
            1,
            shim,
            "/usr/bin/containerd-shim-runc-v2",
            &["containerd-shim-runc-v2", "-id", CID],
        );
        f.extend(k.spawn_in(t + 300 * MS, shim, shim + 1, 120, "/bin/app", &["/bin/app"]));
        t += 800 * MS;
        f.extend(k.exit(t, shim + 1, CODE1));
        t += delay;
        delay = (delay * 2).min(60 * S);
    }
    let s = storm(&f);
    let open = s
        .iter()
        .find(|x| x.state.as_str() == "open")
        .expect("opens");
    assert!(
        open.summary.contains("by Docker's restart policy (always)"),
        "{}",
        open.summary
    );
    assert!(
        open.summary.contains("with a growing backoff"),
        "{}",
        open.summary
    );
    assert!(
        open.summary.contains("the next restart is due"),
        "{}",
        open.summary
    );
    assert_eq!(open.details["cadence"], "backoff");
    assert!(
        !s.iter().any(|x| x.state.as_str() == "resolved"),
        "one loop, however long the delays grow"
    );
}

#[test]
fn kubernetes_crash_loop_backoff_reaches_the_threshold_minutes_later() {
    let mut k = Kit::defaults();
    k.spawn(S / 2, 1, 100, "/usr/bin/kubelet-sim", &["kubelet-sim"]);
    // CrashLoopBackOff: 10 s, 20 s, 40 s, 80 s, 160 s, 300 s, 300 s.
    let gaps = [10 * S, 20 * S, 40 * S, 80 * S, 160 * S, 300 * S, 300 * S];
    let mut t = S;
    let mut opened_after = None;
    for (pid, (n, gap)) in (500u32..).zip(std::iter::once(&0).chain(gaps.iter()).enumerate()) {
        t += gap;
        // Timers run as they would between events.
        assert!(
            storm(&k.run_timers(t - 1))
                .iter()
                .all(|x| x.state.as_str() != "resolved"),
            "the loop holds through the backoff"
        );
        if storm(&k.spawn(t, 100, pid, "/app/server", &["/app/server"]))
            .iter()
            .any(|x| x.state.as_str() == "open")
        {
            opened_after.get_or_insert(n);
        }
        t += 2 * S;
        k.exit(t, pid, CODE1);
    }
    assert_eq!(
        opened_after,
        Some(5),
        "the fifth restart opens it, 5 minutes in"
    );
    let open = k
        .all
        .iter()
        .find(|x| x.kind.as_str() == "respawn_storm")
        .expect("opened");
    assert!(
        open.summary
            .contains("with a growing backoff (10.0 s → 2 min)"),
        "{}",
        open.summary
    );
}

/// supervisord's BACKOFF (startretries=3): the n-th restart is due n s after
/// the crash and made at its main loop's next turn (once a second). When a
/// turn comes just before a delay is due, that restart waits for the next
/// turn: 1.0 s, then 3.0+ s, then 3.9 s. One loop all the same, given up
/// when the fourth crash is not restarted.
#[test]
fn supervisords_backoff_with_its_loop_turn_late_is_one_loop_given_up() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/supervisord", &["supervisord"]);
    let (t, last) = cycles(
        &mut k,
        100,
        200,
        2 * S,
        10 * MS,
        &[1_000 * MS, 3_050 * MS, 3_900 * MS],
        CODE1,
        &["sh", "-c", "echo flaky; exit 1"],
    );
    assert!(
        storm(&k.all).is_empty(),
        "three restarts: below the threshold"
    );
    let f = k.run_timers(t + 30 * S);
    let open = storm(&f)
        .into_iter()
        .find(|x| x.state.as_str() == "open")
        .expect("supervisord gave up on a loop of four crashes");
    assert_eq!(open.details["gave_up"], true);
    assert!(
        open.summary.contains("by supervisord")
            && open
                .summary
                .contains(&format!("pid {last} ended with exit code 1")),
        "{}",
        open.summary
    );
}

#[test]
fn a_restarted_instance_that_lives_ends_the_loop() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/supervisord", &["supervisord"]);
    let (t, _) = cycles(
        &mut k,
        100,
        200,
        2 * S,
        50 * MS,
        &[MS; 5],
        CODE1,
        &["/srv/app"],
    );
    assert!(storm(&k.all).iter().any(|x| x.state.as_str() == "open"));
    k.spawn(t + MS, 100, 300, "/srv/app", &["/srv/app"]);
    let f = k.run_timers(t + 40 * S);
    let r = storm(&f)
        .into_iter()
        .find(|x| x.state.as_str() == "resolved")
        .expect("resolved");
    assert!(
        r.summary.contains("pid 300 has run for 30.0 s"),
        "{}",
        r.summary
    );
}

#[test]
fn a_curl_loop_waiting_for_a_dependency_is_not_a_crash_loop() {
    let mut k = Kit::defaults();
    k.spawn(
        S,
        1,
        100,
        "/bin/bash",
        &[
            "bash",
            "-c",
            "until curl -sf http://127.0.0.1:8080/; do sleep 0.15; done",
        ],
    );
    let mut t = 2 * S;
    let mut pid = 200;
    for _ in 0..60 {
        k.spawn(
            t,
            100,
            pid,
            "/usr/bin/curl",
            &["curl", "-sf", "http://127.0.0.1:8080/"],
        );
        k.exit(t + 3 * MS, pid, CODE7);
        k.reap(t + 4 * MS, 100, pid);
        k.spawn(t + 5 * MS, 100, pid + 1, "/bin/sleep", &["sleep", "0.15"]);
        k.exit(t + 155 * MS, pid + 1, 0);
        k.reap(t + 156 * MS, 100, pid + 1);
        t += 160 * MS;
        pid += 2;
    }
    k.run_timers(t + 120 * S);
    assert!(
        storm(&k.all).is_empty(),
        "curl's 7 is an answer: {:?}",
        storm(&k.all)
    );
}

#[test]
fn an_oom_killed_container_restarted_by_its_policy_says_out_of_memory() {
    let mut k = Kit::defaults();
    k.cgroup(S / 2, 120, &format!("/docker/{CID}"));
    k.runtime_says(CID, "hog", "busybox", None, Some("always"));
    let mut t = S;
    let mut delay = 100 * MS;
    for n in 0..7u32 {
        let shim = 300 + n * 2;
        k.spawn(
            t,
            1,
            shim,
            "/usr/bin/containerd-shim-runc-v2",
            &["containerd-shim-runc-v2"],
        );
        k.spawn_in(t + 100 * MS, shim, shim + 1, 120, "/bin/hog", &["/bin/hog"]);
        t += 500 * MS;
        k.oom_kill(t, shim + 1);
        k.exit(t + MS, shim + 1, SIGKILL);
        t += delay;
        delay *= 2;
    }
    let open = storm(&k.all)
        .into_iter()
        .find(|x| x.state.as_str() == "open")
        .expect("opens");
    assert!(
        open.summary
            .contains("SIGKILL from the OOM killer (out of memory)"),
        "{}",
        open.summary
    );
    assert!(
        !open.summary.contains("ended with SIGKILL after"),
        "{}",
        open.summary
    );
}

#[test]
fn another_programs_sigkill_is_a_crash_naming_the_sender_and_a_persons_kill_is_not() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/supervisord", &["supervisord"]);
    k.spawn(
        S,
        1,
        90,
        "/usr/local/bin/reaper-bot",
        &["reaper-bot", "--every", "1s"],
    );
    let mut t = 2 * S;
    for n in 0..6u32 {
        let pid = 200 + n;
        k.spawn(t, 100, pid, "/srv/app", &["/srv/app"]);
        t += 200 * MS;
        k.kill(t, 90, pid, SIGKILL);
        k.exit(t + MS, pid, SIGKILL);
        t += 2 * MS;
    }
    let open = storm(&k.all)
        .into_iter()
        .find(|x| x.state.as_str() == "open")
        .expect("another program's kills are crashes");
    assert!(
        open.summary
            .contains("SIGKILL from pid 90 (reaper-bot --every 1s)"),
        "{}",
        open.summary
    );

    // The same from a person's shell: stops.
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/supervisord", &["supervisord"]);
    k.spawn(S, 1, 90, "/bin/bash", &["-bash"]);
    let mut t = 2 * S;
    for n in 0..6u32 {
        let pid = 200 + n;
        k.spawn(t, 100, pid, "/srv/app", &["/srv/app"]);
        t += 200 * MS;
        k.kill(t, 90, pid, SIGKILL);
        k.exit(t + MS, pid, SIGKILL);
        t += 2 * MS;
    }
    assert!(storm(&k.all).is_empty(), "{:?}", storm(&k.all));
}

#[test]
fn faults_are_crashes_even_when_restarted_by_the_parent() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/sbin/prefork", &["prefork"]);
    let mut f = Vec::new();
    for n in 0..6u32 {
        let t = 2 * S + n as u64 * 100 * MS;
        k.fork(t, 100, 200 + n);
        k.fault(t + 10 * MS, 200 + n, 11);
        f.extend(k.exit(t + 10 * MS + 1, 200 + n, 11 | 0x80));
        k.reap(t + 11 * MS, 100, 200 + n);
    }
    let k_all = storm(&k.all);
    let open = k_all
        .iter()
        .find(|x| x.state.as_str() == "open")
        .expect("storm");
    assert!(
        open.summary.contains("SIGSEGV (a fault, core dumped)"),
        "{}",
        open.summary
    );
}

/// The kubelet's CrashLoopBackOff (10 s doubling, capped at 5 min) scaled
/// down `scale` times, for a container OOM-killed at every start; the
/// detector's windows scaled the same way through the config. Returns the
/// findings.
fn kubelet_cadence(scale: u64, restarts: u32) -> Vec<crate::detect::Finding> {
    let mut cfg = crate::detect::DetectConfig::default();
    let s = |secs: f64| secs / scale as f64;
    cfg.respawn_storm.window_s = s(330.0);
    cfg.respawn_storm.restart_within_s = s(30.0);
    cfg.respawn_storm.short_life_s = s(30.0);
    cfg.respawn_storm.restarts = restarts;
    let mut k = Kit::new(cfg);
    let pod = "0a1b2c3d-0000-4000-8000-00000000abcd";
    k.spawn(
        S / 2,
        1,
        300,
        "/usr/bin/containerd-shim-runc-v2",
        &["containerd-shim-runc-v2", "-namespace", "k8s.io"],
    );
    let mut t = S;
    let mut backoff = 10 * S / scale;
    let mut out = Vec::new();
    for n in 0..8u64 {
        let cid = format!("{:064x}", n + 1);
        let cg = 500 + n;
        k.cgroup(
            t - MS / scale,
            cg,
            &format!("/kubepods/burstable/pod{pod}/{cid}"),
        );
        // (The runtime's answer for every other new container comes too
        // late for its own start: the loop is still the pod's.)
        if n % 2 == 0 {
            k.engine.runtime_update(
                crate::world::containers::RuntimeUpdate::Container(
                    crate::world::containers::ContainerInfo {
                        id: cid.as_str().into(),
                        runtime: "containerd",
                        name: Some("api".into()),
                        image: Some("registry.local/api:1".into()),
                        pod_namespace: Some("shop".into()),
                        pod_name: Some("api-7d9f".into()),
                        ..Default::default()
                    },
                ),
                t,
            );
        }
        let pid = 600 + n as u32;
        out.extend(k.spawn_in(t, 300, pid, cg, "/app/server", &["/app/server"]));
        // It grows past its memory limit within 2 s (scaled).
        t += 2 * S / scale;
        out.extend(k.oom_kill(t, pid));
        out.extend(k.exit(t + MS / scale, pid, 9));
        t += backoff;
        backoff = (backoff * 2).min(300 * S / scale);
    }
    out
}

#[test]
fn the_kubelets_crash_loop_backoff_scaled_down_by_config_names_the_pod_and_the_oom_kills() {
    for scale in [1, 100] {
        let f = kubelet_cadence(scale, 5);
        let open = storm(&f)
            .into_iter()
            .find(|x| x.state.as_str() == "open")
            .unwrap_or_else(|| panic!("scale {scale}: no loop in {:?}", storm(&f)));
        let s = &open.summary;
        assert!(
            s.contains("Kubernetes' CrashLoopBackOff (kubelet, through containerd)"),
            "scale {scale}: {s}"
        );
        assert!(s.contains("in pod shop/api-7d9f"), "scale {scale}: {s}");
        assert!(
            s.contains("SIGKILL from the OOM killer (out of memory)"),
            "scale {scale}: {s}"
        );
        assert!(
            s.contains("backoff"),
            "the kubelet's backoff, scale {scale}: {s}"
        );
        assert_eq!(open.details["restarter"]["runtime"], "containerd");
    }
    // The restarts the config asks for: 7 restarts are needed for 7.
    let f = kubelet_cadence(100, 7);
    let opens: Vec<_> = storm(&f)
        .into_iter()
        .filter(|x| x.state.as_str() == "open")
        .collect();
    assert_eq!(opens.len(), 1, "{opens:?}");
    assert!(
        opens[0].summary.contains("restarted 7 times"),
        "{}",
        opens[0].summary
    );
}

#[test]
fn a_kubelet_restarting_a_pods_container_as_new_containers_is_one_loop() {
    let mut k = Kit::defaults();
    let pod = "0a1b2c3d-0000-4000-8000-00000000abcd";
    // One shim serves the pod; every restart is a new container (new id, new cgroup).
    k.spawn(
        S / 2,
        1,
        300,
        "/usr/bin/containerd-shim-runc-v2",
        &["containerd-shim-runc-v2", "-namespace", "k8s.io"],
    );
    let gaps = [10 * S, 20 * S, 40 * S, 80 * S, 160 * S, 300 * S];
    let mut t = S;
    let mut opened = None;
    for (n, gap) in std::iter::once(&0).chain(gaps.iter()).enumerate() {
        t += gap;
        let cid = format!("{:064x}", n + 1);
        let cg = 500 + n as u64;
        k.cgroup(t - MS, cg, &format!("/kubepods/burstable/pod{pod}/{cid}"));
        k.engine.runtime_update(
            crate::world::containers::RuntimeUpdate::Container(
                crate::world::containers::ContainerInfo {
                    id: cid.as_str().into(),
                    runtime: "containerd",
                    name: Some("api".into()),
                    pod_namespace: Some("shop".into()),
                    pod_name: Some("api-7d9f".into()),
                    ..Default::default()
                },
            ),
            t,
        );
        let pid = 600 + n as u32;
        let f = k.spawn_in(
            t,
            300,
            pid,
            cg,
            "/app/server",
            &["/app/server", "--port", "8080"],
        );
        if storm(&f).iter().any(|x| x.state.as_str() == "open") {
            opened.get_or_insert(n);
        }
        t += 2 * S;
        k.exit(t, pid, CODE1);
    }
    assert_eq!(
        opened,
        Some(5),
        "one program across the pod's containers: {:?}",
        storm(&k.all)
    );
    let open = k
        .all
        .iter()
        .find(|x| x.kind.as_str() == "respawn_storm")
        .unwrap();
    assert!(open.summary.contains("Kubernetes"), "{}", open.summary);
    assert!(
        open.summary.contains("in pod shop/api-7d9f"),
        "{}",
        open.summary
    );
}
