//! Docker Engine for the container tests: Debian's `docker.io`, installed when
//! missing, `dockerd` started when not running (and stopped again by whoever
//! started it), and the images the tests use, built locally — there is no
//! registry: a busybox image imported from a rootfs made of `busybox-static`,
//! and watcher's own image `FROM scratch` with the static build.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// The busybox image the end-to-end tests run containers of.
pub const TEST_IMAGE: &str = "watcher-test/busybox:latest";
/// Watcher's own image, as `cargo xtask image` tags it.
pub const WATCHER_IMAGE: &str = "watcher:latest";

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `dockerd` this process started; stopped (SIGTERM, then waited for) on drop.
pub struct Daemon {
    child: Option<Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            eprintln!("xtask: stopping the dockerd it started");
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Docker Engine installed and answering: starts `dockerd` when it is not
/// running (the returned guard stops it again).
pub fn ensure_daemon(log_dir: &Path) -> Result<Daemon> {
    if !crate::on_path("dockerd")
        || !Path::new("/usr/sbin/runc").exists() && !crate::on_path("runc")
    {
        crate::ensure_packages(&["docker.io"])?;
    }
    if docker_answers() {
        return Ok(Daemon { child: None });
    }
    fs::create_dir_all(log_dir)?;
    let log = log_dir.join("dockerd.log");
    eprintln!("xtask: starting dockerd (log: {})", log.display());
    let out = fs::File::create(&log)?;
    let child = Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting dockerd")?;
    let daemon = Daemon { child: Some(child) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker_answers() {
        if Instant::now() > deadline {
            bail!("dockerd did not answer within 60 s; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(daemon)
}

fn image_exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The busybox test image, imported from a rootfs of `busybox-static` (once).
pub fn ensure_test_image(work: &Path) -> Result<()> {
    if image_exists(TEST_IMAGE) {
        return Ok(());
    }
    let busybox = Path::new("/bin/busybox");
    let is_static = Command::new("dpkg")
        .args(["-s", "busybox-static"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !is_static {
        crate::ensure_packages(&["busybox-static"])?;
    }
    let root = work.join("busybox-rootfs");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("bin"))?;
    fs::copy(busybox, root.join("bin/busybox"))?;
    let list = crate::output(Command::new(busybox).arg("--list"))?;
    for applet in list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    for d in ["tmp", "proc", "sys", "dev", "etc"] {
        fs::create_dir_all(root.join(d))?;
    }
    eprintln!("xtask: importing {TEST_IMAGE} from busybox-static");
    let sh = format!(
        "tar -C {} -c . | docker import -c 'ENV PATH=/bin' - {TEST_IMAGE}",
        root.display()
    );
    crate::check(
        Command::new("sh")
            .args(["-c", &sh])
            .stdout(Stdio::null())
            .status()?,
        "docker import",
    )?;
    let _ = fs::remove_dir_all(&root);
    Ok(())
}

/// The busybox test image in Podman's store too (copied from Docker's:
/// `docker save | podman load`), once.
pub fn ensure_podman_image() -> Result<()> {
    let has = Command::new("podman")
        .args(["image", "exists", TEST_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has {
        return Ok(());
    }
    eprintln!("xtask: loading {TEST_IMAGE} into Podman's store");
    crate::check(
        Command::new("sh")
            .args(["-c", &format!("docker save {TEST_IMAGE} | podman load -q")])
            .stdout(Stdio::null())
            .status()?,
        "docker save | podman load",
    )
}

/// Watcher's image: `packaging/Dockerfile` (FROM scratch) around the static build.
pub fn build_image(static_watcher: &Path, work: &Path, tag: &str) -> Result<()> {
    let ctx = work.join("image");
    let _ = fs::remove_dir_all(&ctx);
    fs::create_dir_all(&ctx)?;
    fs::copy(static_watcher, ctx.join("watcher"))?;
    let dockerfile: PathBuf = crate::workspace_root().join("packaging/Dockerfile");
    eprintln!("xtask: building the image {tag} (FROM scratch, the static watcher)");
    let id = |tag: &str| {
        Command::new("docker")
            .args(["image", "inspect", "-f", "{{.Id}}", tag])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let before = id(tag);
    crate::check(
        Command::new("docker")
            .args(["build", "-q", "-t", tag, "-f"])
            .arg(&dockerfile)
            .arg(&ctx)
            .env("DOCKER_BUILDKIT", "0")
            .stdout(Stdio::null())
            .status()?,
        "docker build",
    )?;
    // The image this tag named before is left untagged by the new build:
    // removed, so that every test run does not leave one behind (not when a
    // container still uses it: that one stays, and says so).
    if let Some(old) = before.filter(|old| Some(old) != id(tag).as_ref()) {
        let _ = Command::new("docker")
            .args(["image", "rm", &old])
            .stdout(Stdio::null())
            .status();
    }
    Ok(())
}
