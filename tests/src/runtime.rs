//! The container runtimes' command lines, as the container tests drive them:
//! Docker's and Podman's CLIs (`docker run`, `podman run`, `rm -f`), the
//! check that a runtime and the test image are there, and a container that
//! is removed when its guard drops — also when the test fails, and also when
//! its own `run` failed after creating it.
use std::process::{Command, Stdio};

/// One runtime's CLI.
pub struct Cli {
    pub program: &'static str,
    /// Before every command.
    global: &'static [&'static str],
    /// After `run -d --name <name>`.
    run_flags: &'static [&'static str],
    /// Extra arguments of `rm -f`.
    rm_flags: &'static [&'static str],
    /// What the tests need when it is missing.
    needs: &'static str,
}

/// Docker Engine's `docker`.
pub const DOCKER: Cli = Cli {
    program: "docker",
    global: &[],
    run_flags: &[],
    rm_flags: &[],
    needs: "a running Docker Engine (`cargo xtask test` installs docker.io, starts dockerd and builds the image)",
};

/// Podman's `podman`, rootful, with runc as its OCI runtime: Debian's Podman
/// prefers crun when it is installed (a fresh machine gets it with podman),
/// and crun refuses this machine kind's hybrid cgroups ("cgroups in hybrid
/// mode not supported, drop all controllers from cgroupv2": the v2 hierarchy
/// has `hugetlb`); runc (installed with docker.io) runs them. Podman gives
/// containers file and process limits above this machine's hard limits
/// (runc then fails to set them): these are well below.
pub const PODMAN: Cli = Cli {
    program: "podman",
    global: &["--runtime", "runc"],
    run_flags: &[
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ],
    rm_flags: &["-t", "0"],
    needs: "podman (`cargo xtask test` installs it and loads the image into its store)",
};

/// The image every test container runs (busybox, built locally by xtask).
pub fn image() -> String {
    std::env::var("WATCHER_TEST_IMAGE").unwrap_or_else(|_| "watcher-test/busybox:latest".into())
}

impl Cli {
    /// `<program> <global flags>`, ready for more arguments.
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.program);
        c.args(self.global);
        c
    }

    /// The runtime answers and has the test image. Under CI a missing one
    /// fails the test with a clear message; elsewhere it is skipped, said.
    pub fn require(&self) -> bool {
        if !crate::require_root() {
            return false;
        }
        if self.has_image(&image()) {
            return true;
        }
        let msg = format!("these tests need {} and the image {}", self.needs, image());
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (CI=true: refusing to skip)");
        }
        eprintln!("SKIPPED: {msg}");
        false
    }

    /// Whether the runtime answers and has `image`.
    pub fn has_image(&self, image: &str) -> bool {
        self.command()
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Run a command to its end; its stdout, trimmed. Panics on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.program));
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            self.program,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A container of `<cli> run -d`, removed (`rm -f`) when dropped.
pub struct Container {
    cli: &'static Cli,
    pub name: String,
    pub id: String,
}

impl Container {
    /// The guard of a container the test runs itself under `name` (one of
    /// its own, `wt-<test pid>-…`): one left by an earlier run is removed
    /// now, and this one when the guard drops.
    pub fn named(cli: &'static Cli, name: String) -> Container {
        let guard = Container {
            cli,
            name,
            id: String::new(),
        };
        guard.remove();
        guard
    }

    /// `<cli> run -d --name wt-<test pid>-<tag> <flags> <extra> <image> <cmd>`.
    pub fn run(cli: &'static Cli, tag: &str, extra: &[&str], cmd: &[&str]) -> Container {
        let name = format!("wt-{}-{tag}", std::process::id());
        // (The guard first: a `run` that fails may leave the container
        // created, and the guard removes it.)
        let mut guard = Container::named(cli, name.clone());
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(cli.run_flags);
        args.extend_from_slice(extra);
        let img = image();
        args.push(&img);
        args.extend_from_slice(cmd);
        guard.id = cli.run(&args);
        guard
    }

    /// `rm -f` until it is gone (at most 10 s): a container the runtime is
    /// restarting (`--restart always`) can refuse one `rm -f` ("container is
    /// being restarted"; seen with Podman).
    fn remove(&self) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let _ = self
                .cli
                .command()
                .args(["rm", "-f"])
                .args(self.cli.rm_flags)
                .arg(&self.name)
                .output();
            let exists = self
                .cli
                .command()
                .args(["container", "inspect", &self.name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !exists || std::time::Instant::now() > until {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.remove();
    }
}
