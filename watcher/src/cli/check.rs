//! `watcher check`: each prerequisite, ok or not, and what to do.
use std::process::ExitCode;

use crate::{kernel::btf::Btf, kernel::error::SetupError, kernel::loader, kernel::tracefs};

struct Line {
    ok: bool,
    what: String,
    detail: String,
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `major.minor` of a release string like `6.18.44-fc-v657`.
pub fn parse_release(r: &str) -> Option<(u32, u32)> {
    let mut it = r.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn run() -> anyhow::Result<ExitCode> {
    let mut lines: Vec<Line> = Vec::new();
    fn add(lines: &mut Vec<Line>, ok: bool, what: &str, detail: String) {
        lines.push(Line {
            ok,
            what: what.to_owned(),
            detail,
        });
    }
    macro_rules! push {
        ($ok:expr, $what:expr, $detail:expr $(,)?) => {
            add(&mut lines, $ok, $what, $detail)
        };
    }

    let privileged = match loader::check_privileges() {
        Ok(d) => {
            push!(true, "privileges", d);
            true
        }
        Err(e) => {
            push!(false, "privileges", e.to_string());
            false
        }
    };

    match loader::check_pid_namespace() {
        Ok(()) => push!(
            true,
            "pid namespace",
            "the host's (all processes are visible)".to_owned()
        ),
        Err(e) => push!(false, "pid namespace", e.to_string()),
    }

    let release = kernel_release();
    match parse_release(&release) {
        Some(v) if v >= (5, 8) => push!(
            true,
            "kernel",
            format!("{release} (BPF ring buffer needs 5.8+)")
        ),
        _ => push!(
            false,
            "kernel",
            format!("{release}: watcher needs Linux 5.8 or newer (BPF ring buffer)")
        ),
    }

    let tracefs_root = if privileged {
        tracefs::ensure_mounted()
    } else {
        tracefs::find().ok_or(SetupError::TracefsMissing {
            why: "not mounted, and mounting it needs root".into(),
        })
    };
    let tracefs_root = match tracefs_root {
        Ok(p) => {
            push!(true, "tracefs", p.display().to_string());
            Some(p)
        }
        Err(e) => {
            push!(false, "tracefs", e.to_string());
            None
        }
    };

    let btf = match Btf::from_sys_fs() {
        Ok(b) => {
            let mut missing = Vec::new();
            for (s, m, _, _) in loader::BTF_MEMBERS {
                if let Err(e) = b.member_offset(s, m) {
                    missing.push(e.to_string());
                }
            }
            if missing.is_empty() {
                push!(
                    true,
                    "btf",
                    format!(
                        "/sys/kernel/btf/vmlinux ({} members located)",
                        loader::BTF_MEMBERS.len()
                    )
                );
                Some(b)
            } else {
                push!(false, "btf", missing.join("; "));
                None
            }
        }
        Err(e) => {
            push!(
                false,
                "btf",
                format!("{e}; use a kernel built with CONFIG_DEBUG_INFO_BTF=y")
            );
            None
        }
    };

    if let Some(root) = &tracefs_root {
        for h in loader::HOOKS {
            let name = format!("tracepoint {}/{}", h.category, h.name);
            match tracefs::read_format(root, h.category, h.name) {
                Ok(f) => push!(true, &name, format!("{} fields", f.fields.len())),
                Err(_) if h.optional.is_some() => {
                    push!(
                        true,
                        &name,
                        format!("absent (optional): {}", h.optional.unwrap_or_default())
                    )
                }
                Err(e) => push!(false, &name, e.to_string()),
            }
        }
        if let Some(btf) = &btf {
            match loader::kernel_config(root, btf) {
                Ok(c) => push!(
                    true,
                    "layout",
                    format!(
                        "offsets from format files and BTF (sched_process_exit.group_dead {})",
                        if c.tp_exit_group_dead == watcher_common::OFFSET_NONE {
                            "absent: derived from signal_struct.live"
                        } else {
                            "present"
                        }
                    ),
                ),
                Err(e) => push!(false, "layout", e.to_string()),
            }
            let mut c = watcher_common::Config::empty();
            match loader::reaper_layout(btf, &mut c) {
                Ok(()) => push!(
                    true,
                    "new parents",
                    "an ending process's children: their new parent read by the kernel side (pid_namespace.child_reaper, signal_struct subreaper flags)".to_string()
                ),
                // Degraded, not failed: the rest works.
                Err(e) => push!(
                    true,
                    "new parents",
                    format!("asked of /proc/<pid>/stat when a process ends with children ({e})")
                ),
            }
        }
    }

    // Container runtimes: informational (none is needed).
    for (what, detail) in crate::world::runtime::survey() {
        push!(true, &what, detail);
    }

    let all_ok = lines.iter().all(|l| l.ok);
    if all_ok {
        let opts = loader::LoadOptions::default();
        match loader::load(&opts) {
            Ok(p) => push!(
                true,
                "load",
                format!(
                    "{} loaded and attached (ring buffer {} KiB)",
                    p.attachment(),
                    opts.ring_bytes / 1024
                ),
            ),
            Err(e) => push!(false, "load", e.to_string()),
        }
    } else {
        push!(
            false,
            "load",
            "skipped: fix the failures above first".into()
        );
    }

    let mut failed = 0;
    for l in &lines {
        if !l.ok {
            failed += 1;
        }
        println!(
            "{:<4}  {:<40} {}",
            if l.ok { "ok" } else { "FAIL" },
            l.what,
            l.detail
        );
    }
    if failed == 0 {
        println!("watcher can run here.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} check(s) failed.");
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn releases() {
        assert_eq!(super::parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(super::parse_release("5.4.0"), Some((5, 4)));
        assert_eq!(super::parse_release("garbage"), None);
    }
}
