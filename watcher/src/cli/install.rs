//! `watcher install` / `watcher uninstall`: the systemd unit and a commented
//! default configuration; enable and start where systemd is PID 1, otherwise
//! say exactly what to run.
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::Context as _;

pub const UNIT: &str = include_str!("../../../packaging/watcher.service");
pub const DEFAULT_CONFIG: &str = include_str!("../../../packaging/watcher.toml");

/// Paths below `root` ("/" normally; a directory in tests).
pub struct Layout {
    pub unit: PathBuf,
    pub config: PathBuf,
}

impl Layout {
    pub fn under(root: &Path) -> Layout {
        Layout {
            unit: root.join("etc/systemd/system/watcher.service"),
            config: root.join("etc/watcher/watcher.toml"),
        }
    }
}

fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn install(root: &Path, binary: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let l = Layout::under(root);
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe().context("finding this binary")?,
    };
    let paranoid = crate::kernel::loader::perf_event_paranoid();
    let unit = unit_text(&binary, paranoid);
    if let Some(level) = paranoid.filter(|&l| l > 2) {
        println!(
            "kernel.perf_event_paranoid is {level} here: Debian's and Ubuntu's kernels then let only CAP_SYS_ADMIN attach \
             tracepoints, so the unit keeps CAP_SYS_ADMIN too (set kernel.perf_event_paranoid=2 and install again to drop it)"
        );
    }
    for p in [&l.unit, &l.config] {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    std::fs::write(&l.unit, unit).with_context(|| format!("writing {}", l.unit.display()))?;
    println!("wrote {}", l.unit.display());
    if l.config.exists() {
        println!("kept {} (already there)", l.config.display());
    } else {
        std::fs::write(&l.config, DEFAULT_CONFIG)
            .with_context(|| format!("writing {}", l.config.display()))?;
        println!("wrote {}", l.config.display());
    }
    let cmds = [
        vec!["systemctl", "daemon-reload"],
        vec!["systemctl", "enable", "--now", "watcher.service"],
    ];
    if root == Path::new("/") && systemd_is_pid1() {
        for c in &cmds {
            let st = Command::new(c[0])
                .args(&c[1..])
                .status()
                .with_context(|| format!("running {}", c.join(" ")))?;
            if !st.success() {
                anyhow::bail!("`{}` failed ({st})", c.join(" "));
            }
        }
        println!(
            "watcher is enabled and running: systemctl status watcher; journalctl -u watcher -f"
        );
    } else {
        println!(
            "systemd is not PID 1 here (or --root was given); to start watcher under systemd, run:"
        );
        for c in &cmds {
            println!("  {}", c.join(" "));
        }
        println!(
            "or run it directly: {} run --config /etc/watcher/watcher.toml",
            binary.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The capabilities the unit keeps on every kernel.
const BASE_CAPS: &str = "CAP_BPF CAP_PERFMON CAP_SYS_PTRACE CAP_DAC_READ_SEARCH";

/// The unit for `binary` on a kernel with this `perf_event_paranoid`: above 2
/// it also keeps CAP_SYS_ADMIN, without which such kernels refuse to attach.
pub fn unit_text(binary: &Path, paranoid: Option<i32>) -> String {
    let unit = UNIT.replace("@BINARY@", &binary.display().to_string());
    match paranoid.filter(|&l| l > 2) {
        None => unit,
        Some(level) => unit
            .replace(
                &format!("CapabilityBoundingSet={BASE_CAPS}\n"),
                &format!(
                    "#   CAP_SYS_ADMIN    added by `watcher install`: kernel.perf_event_paranoid was {level}, and then\n\
                     #                    Debian's and Ubuntu's kernels let only CAP_SYS_ADMIN attach tracepoints\n\
                     CapabilityBoundingSet={BASE_CAPS} CAP_SYS_ADMIN\n"
                ),
            )
            .replace(&format!("AmbientCapabilities={BASE_CAPS}\n"), &format!("AmbientCapabilities={BASE_CAPS} CAP_SYS_ADMIN\n")),
    }
}

pub fn uninstall(root: &Path) -> anyhow::Result<ExitCode> {
    let l = Layout::under(root);
    if root == Path::new("/") && systemd_is_pid1() {
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "watcher.service"])
            .status();
    }
    if l.unit.exists() {
        std::fs::remove_file(&l.unit).with_context(|| format!("removing {}", l.unit.display()))?;
        println!("removed {}", l.unit.display());
    }
    if root == Path::new("/") && systemd_is_pid1() {
        let _ = Command::new("systemctl").arg("daemon-reload").status();
    }
    println!(
        "kept {} (your configuration; remove it by hand if you want)",
        l.config.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_is_valid_and_says_the_defaults() {
        let c =
            crate::cli::config::Config::parse(DEFAULT_CONFIG, Path::new("watcher.toml")).unwrap();
        c.validate(DEFAULT_CONFIG, Path::new("watcher.toml"))
            .unwrap();
        assert_eq!(
            c,
            crate::cli::config::Config::default(),
            "the commented file must show the real defaults"
        );
    }

    #[test]
    fn install_writes_unit_and_config_and_uninstall_removes_the_unit() {
        let root = std::env::temp_dir().join(format!("watcher-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        install(&root, Some(PathBuf::from("/usr/local/bin/watcher"))).unwrap();
        let l = Layout::under(&root);
        let unit = std::fs::read_to_string(&l.unit).unwrap();
        assert!(unit
            .contains("ExecStart=/usr/local/bin/watcher run --config /etc/watcher/watcher.toml"));
        assert!(
            unit.contains("Type=notify")
                && unit.contains("CapabilityBoundingSet=CAP_BPF CAP_PERFMON")
        );
        assert!(!unit.contains("@BINARY@"));
        assert_eq!(std::fs::read_to_string(&l.config).unwrap(), DEFAULT_CONFIG);
        // A second install keeps the operator's config.
        std::fs::write(&l.config, "[feed]\nstdout = false\n").unwrap();
        install(&root, Some(PathBuf::from("/usr/local/bin/watcher"))).unwrap();
        assert_eq!(
            std::fs::read_to_string(&l.config).unwrap(),
            "[feed]\nstdout = false\n"
        );
        uninstall(&root).unwrap();
        assert!(!l.unit.exists());
        assert!(l.config.exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_perf_restricted_kernel_gets_cap_sys_admin_and_others_do_not() {
        let caps = |unit: &str, key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::to_owned)
                .expect(key)
        };
        let bin = Path::new("/usr/local/bin/watcher");
        for level in [None, Some(-1), Some(1), Some(2)] {
            let unit = unit_text(bin, level);
            assert_eq!(caps(&unit, "CapabilityBoundingSet="), BASE_CAPS);
            assert_eq!(caps(&unit, "AmbientCapabilities="), BASE_CAPS);
            assert!(unit.contains("ExecStart=/usr/local/bin/watcher run"));
        }
        let unit = unit_text(bin, Some(3));
        assert_eq!(
            caps(&unit, "CapabilityBoundingSet="),
            format!("{BASE_CAPS} CAP_SYS_ADMIN")
        );
        assert_eq!(
            caps(&unit, "AmbientCapabilities="),
            format!("{BASE_CAPS} CAP_SYS_ADMIN")
        );
        assert!(unit.contains("kernel.perf_event_paranoid was 3"), "{unit}");
    }
}
