//! `watcher top` in a real terminal (tmux, 200×50): a real port conflict
//! and a real crash loop appear on the screen within 2 s, and `q` exits 0
//! with the terminal given back.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use watcher_tests::{
    actor_any, eventually_within, require_root, spawn_actor, temp_dir, write_config, Feed,
};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

/// A tmux server of this test's own (its own socket, in the test's
/// directory), killed and its socket removed at the end.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// A detached 200×50 session running `script` (its exit status to `exit_file`).
    fn start(dir: &Path, script: &str) -> Tmux {
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let ok = tmux
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                "200",
                "-y",
                "50",
                script,
            ])
            .status()
            .expect("tmux new-session");
        assert!(ok.success(), "tmux new-session failed");
        tmux
    }

    fn keys(&self, keys: &str) {
        let _ = self.cmd().args(["send-keys", "-t", "top", keys]).status();
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What `script`'s `echo exit=$? > FILE` wrote, within a deadline.
fn exit_status(exit_file: &Path) -> String {
    eventually_within(Duration::from_secs(15), "watcher top's exit", || {
        std::fs::read_to_string(exit_file)
            .ok()
            .filter(|s| s.contains("exit="))
    })
    .trim()
    .to_owned()
}

fn tmux_present() -> bool {
    if Path::new("/usr/bin/tmux").exists() {
        return true;
    }
    watcher_tests::unavailable(
        "tmux not found: `cargo xtask test` installs it (apt-get install tmux)",
    );
    false
}

#[test]
fn top_shows_a_port_conflict_and_a_crash_loop_in_a_real_terminal_and_q_quits() {
    if !require_root() || !tmux_present() {
        return;
    }
    let dir = temp_dir("top");
    let exit_file: PathBuf = dir.join("exit");
    let _ = std::fs::remove_file(&exit_file);
    let script = format!(
        "{} top; echo exit=$? > {}",
        watcher_tests::watcher_bin().display(),
        exit_file.display()
    );
    let tmux = Tmux::start(&dir, &script);
    eventually_within(Duration::from_secs(30), "watcher top on the screen", || {
        let s = tmux.screen();
        (s.contains("watcher top") && s.contains("Incidents")).then_some(())
    });

    // A port conflict: the holder listens, a second process fails to bind.
    let mut holder = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0"]);
    let port = holder.value("port");
    let failing = actor_any(ACTOR, &["bind-port", &port]);
    let since = Instant::now();
    let screen = eventually_within(Duration::from_secs(2), "the conflict on the screen", || {
        let s = tmux.screen();
        (s.lines().any(|l| {
            l.contains("port_conflict")
                && l.contains(&format!(":{port}"))
                && l.contains(&format!("holder actor ({})", holder.pid))
        }) && s.lines().any(|l| {
            l.contains(&format!(":{port}"))
                && l.contains(&holder.pid.to_string())
                && l.contains("conflict")
                && !l.contains("port_conflict")
        }))
        .then_some(s)
    });
    eprintln!(
        "MEASURED port conflict → on the screen: ≤ {:.0} ms (failing pid {})\n{screen}",
        since.elapsed().as_secs_f64() * 1e3,
        failing.pid
    );

    // A crash loop: a supervisor restarting a program that exits 1.
    actor_any(ACTOR, &["supervise", "6", "30"]);
    let since = Instant::now();
    let screen = eventually_within(
        Duration::from_secs(2),
        "the crash loop on the screen",
        || {
            let s = tmux.screen();
            s.lines()
                .any(|l| {
                    l.contains("respawn_storm")
                        && l.contains("actor (")
                        && l.contains("exit code 1")
                })
                .then_some(s)
        },
    );
    eprintln!(
        "MEASURED crash loop → on the screen: ≤ {:.0} ms\n{screen}",
        since.elapsed().as_secs_f64() * 1e3
    );
    holder.finish();

    // `?` shows the keys, Esc closes them, q quits with 0.
    tmux.keys("?");
    eventually_within(Duration::from_secs(5), "the keys", || {
        tmux.screen().contains("these keys").then_some(())
    });
    tmux.keys("Escape");
    // Only once the popup is gone: an ESC followed at once by `q` is read
    // as Alt+q (one key, which closes the popup and does not quit).
    eventually_within(Duration::from_secs(5), "the keys popup closed", || {
        (!tmux.screen().contains("these keys")).then_some(())
    });
    tmux.keys("q");
    assert_eq!(
        exit_status(&exit_file),
        "exit=0",
        "watcher top's exit status"
    );
}

#[test]
fn top_attached_to_a_daemons_socket_shows_its_incidents_and_listeners() {
    if !require_root() || !tmux_present() {
        return;
    }
    let dir = temp_dir("top-attach");
    let sock = dir.join("feed.sock");
    let cfg = write_config(
        &dir,
        &format!(
            "[feed]\ntypes = [\"all\"]\nstdout = false\nsocket = \"{}\"\n[metrics]\nlisten = \"\"\n[health]\nstatus_file = \"{}\"\n",
            sock.display(),
            dir.join("status.json").display()
        ),
    );
    let d = Feed::start(&["run", "--config", cfg.to_str().unwrap()]);
    d.wait_stderr("running:");
    let exit_file = dir.join("exit");
    let _ = std::fs::remove_file(&exit_file);
    let script = format!(
        "{} top --attach {}; echo exit=$? > {}",
        watcher_tests::watcher_bin().display(),
        sock.display(),
        exit_file.display()
    );
    let tmux = Tmux::start(&dir, &script);
    eventually_within(Duration::from_secs(30), "watcher top attached", || {
        let s = tmux.screen();
        s.contains(&format!("attached to {}", sock.display()))
            .then_some(())
    });
    let mut holder = spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", "0"]);
    let port = holder.value("port");
    actor_any(ACTOR, &["bind-port", &port]);
    eventually_within(
        Duration::from_secs(2),
        "the conflict and its listener on the attached screen",
        || {
            let s = tmux.screen();
            (s.lines()
                .any(|l| l.contains("port_conflict") && l.contains(&format!(":{port}")))
                && s.lines().any(|l| {
                    l.contains(&format!("0.0.0.0:{port}"))
                        && l.contains(&holder.pid.to_string())
                        && l.contains("conflict")
                        && !l.contains("port_conflict")
                }))
            .then_some(())
        },
    );
    holder.finish();
    tmux.keys("q");
    assert_eq!(
        exit_status(&exit_file),
        "exit=0",
        "watcher top's exit status"
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
}
