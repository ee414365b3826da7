//! `cargo xtask deb`: `watcher_<version>_amd64.deb` from the static (musl)
//! build, assembled here and packed by `dpkg-deb`: the binary, the systemd
//! unit, the commented default configuration (a conffile: an upgrade keeps
//! the operator's edits), the Prometheus rule file and its tests, the docs.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{check, workspace_root};

/// The workspace's version (`[workspace.package] version`).
fn version() -> Result<String> {
    let text = fs::read_to_string(workspace_root().join("Cargo.toml"))?;
    let mut in_package = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            in_package = t == "[workspace.package]";
        } else if in_package {
            if let Some(v) = t.strip_prefix("version") {
                let v = v
                    .trim_start()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"');
                return Ok(v.to_owned());
            }
        }
    }
    anyhow::bail!("no version in [workspace.package] of Cargo.toml")
}

fn put(root: &Path, path: &str, text: &[u8], mode: u32) -> Result<()> {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().expect("a file in a directory"))?;
    fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    # Debian's and Ubuntu's kernels (kernel.perf_event_paranoid above 2) let
    # only CAP_SYS_ADMIN attach tracepoints: the unit then keeps it too.
    dropin=/etc/systemd/system/watcher.service.d/10-perf-event-paranoid.conf
    level=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 2)
    if [ "$level" -gt 2 ]; then
        mkdir -p "$(dirname "$dropin")"
        printf '# Written by the watcher package: kernel.perf_event_paranoid was %s.\n[Service]\nCapabilityBoundingSet=CAP_SYS_ADMIN\nAmbientCapabilities=CAP_SYS_ADMIN\n' "$level" > "$dropin"
    else
        rm -f "$dropin"
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl enable watcher.service || true
        systemctl restart watcher.service || echo "watcher: not started; see: systemctl status watcher" >&2
    else
        echo "watcher: systemd is not running here; start it with: watcher run --config /etc/watcher/watcher.toml" >&2
    fi
fi
exit 0
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl disable --now watcher.service || true
fi
exit 0
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -f /etc/systemd/system/watcher.service.d/10-perf-event-paranoid.conf
    rmdir /etc/systemd/system/watcher.service.d 2>/dev/null || true
    rm -rf /var/log/watcher
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
"#;

/// Build the package from the static `binary`; its path.
pub fn build(binary: &Path, out_dir: &Path) -> Result<PathBuf> {
    let version = version()?;
    let ws = workspace_root();
    let pk = ws.join("packaging");
    let stage = out_dir.join("deb-root");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    put(
        &stage,
        "/usr/bin/watcher",
        &fs::read(binary).with_context(|| format!("reading {}", binary.display()))?,
        0o755,
    )?;
    let unit = fs::read_to_string(pk.join("watcher.service"))?
        .replace("@BINARY@", "/usr/bin/watcher")
        .replace(
            "Installed by `watcher install`.",
            "Installed by the watcher package.",
        );
    put(
        &stage,
        "/lib/systemd/system/watcher.service",
        unit.as_bytes(),
        0o644,
    )?;
    put(
        &stage,
        "/etc/watcher/watcher.toml",
        &fs::read(pk.join("watcher.toml"))?,
        0o644,
    )?;
    for f in ["watcher-rules.yml", "watcher-rules.test.yml"] {
        put(
            &stage,
            &format!("/usr/share/watcher/{f}"),
            &fs::read(pk.join(f))?,
            0o644,
        )?;
    }
    put(
        &stage,
        "/usr/share/doc/watcher/README.md",
        &fs::read(ws.join("README.md"))?,
        0o644,
    )?;
    // The README links to docs/: the same files beside it.
    let mut docs: Vec<_> = fs::read_dir(ws.join("docs"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    for d in docs {
        let name = d
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        put(
            &stage,
            &format!("/usr/share/doc/watcher/docs/{name}"),
            &fs::read(&d)?,
            0o644,
        )?;
    }
    put(
        &stage,
        "/usr/share/doc/watcher/copyright",
        b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: watcher\n\nFiles: *\nLicense: MIT or Apache-2.0\n",
        0o644,
    )?;
    let size_kib: u64 = walk(&stage)?
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
        / 1024;
    let control = format!(
        "Package: watcher\nVersion: {version}\nArchitecture: amd64\nMaintainer: watcher developers <watcher@example.invalid>\nInstalled-Size: {size_kib}\nSection: admin\nPriority: optional\nHomepage: https://example.invalid/watcher\nDescription: kernel-event incident detector (eBPF): port conflicts, crash loops\n watcher follows fork, exec, exit, reap, bind, connect and TCP state changes\n through eBPF tracepoints and names the process responsible for a port\n conflict, a crash loop, zombies, duplicate instances, a fork storm, an\n unreachable dependency or exhausted ports — in containers too. Findings go\n to the journal, a file, syslog, a socket and Prometheus Alertmanager.\n"
    );
    put(&stage, "/DEBIAN/control", control.as_bytes(), 0o644)?;
    put(
        &stage,
        "/DEBIAN/conffiles",
        b"/etc/watcher/watcher.toml\n",
        0o644,
    )?;
    put(&stage, "/DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    put(&stage, "/DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    put(&stage, "/DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
    let deb = out_dir.join(format!("watcher_{version}_amd64.deb"));
    check(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb)
            .stdout(std::process::Stdio::null())
            .status()
            .context("running dpkg-deb (Debian's dpkg)")?,
        "dpkg-deb --build",
    )?;
    let _ = fs::remove_dir_all(&stage);
    Ok(deb)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
