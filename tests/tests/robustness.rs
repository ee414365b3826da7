//! Faults survived, with a stated and tested behaviour each: the daemon
//! killed with SIGKILL and restarted while zombies and listeners exist (it
//! re-discovers them from /proc and the kernel's socket table), and garbage
//! or oversize configuration values (one clear line, exit 1, never a panic).
use nix::sys::signal::Signal;
use watcher_tests::{
    actor_any, finding, finding_pids, require_root, spawn_actor, temp_dir, text, watcher_bin,
    write_config, Feed,
};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

#[test]
fn a_restarted_daemon_rediscovers_zombies_and_listeners() {
    if !require_root() {
        return;
    }
    let dir = temp_dir("restart");
    let cfg = write_config(
        &dir,
        &format!(
            "[metrics]\nlisten = \"\"\n[health]\nstatus_file = \"{}\"\n",
            dir.join("s.json").display()
        ),
    );
    let first = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    // Zombies and a listener come into being while the first daemon runs…
    let mut parent = spawn_actor(ACTOR, &["zombies", "6", "stdin"]);
    let children: Vec<u64> = parent
        .value("children")
        .split(',')
        .map(|c| c.parse().unwrap())
        .collect();
    let mut holder = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0"]);
    let port = holder.value("port");
    first.wait_for("zombie_accumulation in the first daemon", |v| {
        finding(v, "zombie_accumulation", "open")
            && finding_pids(v, Some("parent")) == vec![parent.pid as u64]
    });
    // …which is killed without a chance to clean up.
    first.signal(Signal::SIGKILL);
    assert_eq!(first.wait_exit(), None, "killed by a signal");
    let second = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    // At start it reports the zombies it finds in /proc…
    let z = second.wait_for("zombie_accumulation found at start", |v| {
        finding(v, "zombie_accumulation", "open")
            && finding_pids(v, Some("parent")) == vec![parent.pid as u64]
    });
    let named = finding_pids(&z, Some("zombie"));
    assert!(
        !named.is_empty() && named.iter().all(|p| children.contains(p)),
        "{z}"
    );
    // …and names the listener that was there before it started.
    let failing = actor_any(ACTOR, &["bind-port", &port]);
    let f = second.wait_for("port_conflict naming the old listener", |v| {
        finding(v, "port_conflict", "open")
            && finding_pids(v, Some("failing")) == vec![failing.pid as u64]
    });
    assert_eq!(
        finding_pids(&f, Some("holder")),
        vec![holder.pid as u64],
        "{f}"
    );
    assert!(
        text(&f, &["summary"])
            .unwrap()
            .contains("since before watcher started"),
        "{f}"
    );
    holder.finish();
    parent.finish();
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(), Some(0));
}

#[test]
fn garbage_and_oversize_config_values_are_one_clear_line() {
    let dir = temp_dir("garbage");
    let cases: &[(&str, &str)] = &[
        ("[detect.zombie]\nmax_age_s = 1e400\n", "w.toml:2:"),
        (
            "[detect.zombie_accumulation]\nthreshold = 99999999999999\n",
            "w.toml:2:",
        ),
        (
            "[detect]\nmax_incidents = 18446744073709551615\n",
            "w.toml:2:",
        ),
        ("[detect]\nallow_ports = [-1]\n", "w.toml:2:"),
        ("[detect.fork_storm]\nrate_per_s = \"fast\"\n", "w.toml:2:"),
        ("[health]\ncanary_interval_s = 1e9\n", "w.toml:2:"),
        ("[feed]\ntypes = [\"finding\", 3]\n", "w.toml:2:"),
        ("\u{0}\u{1}\u{2}garbage", "w.toml:1:"),
        ("[detect.respawn_storm]\nwindow_s = nan\n", "w.toml:2:"),
    ];
    for (text, at) in cases {
        let cfg = write_config(&dir, text);
        for sub in [&["run", "--config"][..], &["trace", "--config"][..]] {
            let out = std::process::Command::new(watcher_bin())
                .args(sub)
                .arg(&cfg)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{text:?} with {sub:?}: {err}");
            assert_eq!(
                err.trim().lines().count(),
                1,
                "one line for {text:?}: {err}"
            );
            assert!(
                err.contains(&format!("{}", dir.join(at).display())),
                "file and line for {text:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // Oversize files are refused, not read into memory without end.
    let big = dir.join("big.toml");
    std::fs::write(
        &big,
        format!(
            "[detect]\nallow_programs = [{}]\n",
            vec!["\"x\""; 400_000].join(",")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(watcher_bin())
        .args(["trace", "--config"])
        .arg(&big)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("big.toml:1:1") && err.contains("at most 1048576 bytes"),
        "{err}"
    );
}
