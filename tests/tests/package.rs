//! The Debian package `cargo xtask deb` builds (the test command builds it
//! and names it in `$WATCHER_DEB`): installed with apt-get, its files in
//! place, `watcher check` passing with the installed binary, removed and
//! purged again without a trace.
use std::{path::Path, process::Command};

use watcher_tests::require_root;

const FILES: [&str; 8] = [
    "/usr/bin/watcher",
    "/lib/systemd/system/watcher.service",
    "/etc/watcher/watcher.toml",
    "/usr/share/watcher/watcher-rules.yml",
    "/usr/share/watcher/watcher-rules.test.yml",
    "/usr/share/doc/watcher/README.md",
    // (What the README links to.)
    "/usr/share/doc/watcher/docs/events.md",
    "/usr/share/doc/watcher/copyright",
];

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_package_installs_checks_and_removes_cleanly() {
    if !require_root() {
        return;
    }
    let Some(deb) = std::env::var_os("WATCHER_DEB") else {
        watcher_tests::unavailable(
            "WATCHER_DEB is not set: run the tests through `cargo xtask test`, which builds the package",
        );
        return;
    };
    let deb = Path::new(&deb).canonicalize().expect("the package file");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("watcher_") && name.ends_with("_amd64.deb"),
        "{name}"
    );
    // A watcher installed by hand would be overwritten: refuse rather than clobber it.
    let (was_installed, _) = run("dpkg-query", &["-W", "watcher"]);
    assert!(
        !was_installed,
        "a watcher package is already installed here; remove it first (apt-get purge watcher)"
    );
    let (ok, out) = run(
        "apt-get",
        &[
            "install",
            "-y",
            "--no-install-recommends",
            deb.to_str().unwrap(),
        ],
    );
    assert!(ok, "apt-get install: {out}");
    let result = std::panic::catch_unwind(|| {
        for f in FILES {
            assert!(Path::new(f).exists(), "{f} is not installed");
        }
        let (_, conffiles) = run("dpkg-query", &["-W", "-f=${Conffiles}", "watcher"]);
        assert!(
            conffiles.contains("/etc/watcher/watcher.toml"),
            "{conffiles}"
        );
        let unit = std::fs::read_to_string("/lib/systemd/system/watcher.service").unwrap();
        assert!(
            unit.contains("ExecStart=/usr/bin/watcher run --config /etc/watcher/watcher.toml"),
            "{unit}"
        );
        let (ok, out) = run("/usr/bin/watcher", &["--version"]);
        assert!(ok && out.starts_with("watcher "), "{out}");
        let (ok, out) = run("/usr/bin/watcher", &["check"]);
        assert!(ok, "watcher check with the installed binary: {out}");
        // The installed config is the commented default and valid.
        let (ok, out) = run(
            "/usr/bin/watcher",
            &["check", "--config", "/etc/watcher/watcher.toml"],
        );
        assert!(ok, "watcher check --config: {out}");
        // The installed rules are the tested ones.
        if Path::new("/usr/bin/promtool").exists() {
            let out = Command::new("/usr/bin/promtool")
                .args(["test", "rules", "watcher-rules.test.yml"])
                .current_dir("/usr/share/watcher")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    });
    let (ok, out) = run("apt-get", &["purge", "-y", "watcher"]);
    assert!(ok, "apt-get purge: {out}");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    for f in FILES {
        assert!(!Path::new(f).exists(), "{f} is left after purge");
    }
    assert!(!Path::new("/etc/systemd/system/watcher.service.d").exists());
    let (still, _) = run("dpkg-query", &["-W", "-f=${Status}", "watcher"]);
    let (_, status) = run("dpkg-query", &["-W", "-f=${Status}", "watcher"]);
    assert!(!still || status.contains("not-installed"), "{status}");
}
