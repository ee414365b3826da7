//! The readable one-line form of a record, for `watcher trace` on a terminal.
use std::fmt::Write as _;

use crate::output::record::{Body, Endpoint, Record};

fn ep(e: &Endpoint) -> String {
    if e.address.contains(':') {
        format!("[{}]:{}", e.address, e.port)
    } else {
        format!("{}:{}", e.address, e.port)
    }
}

/// Control characters (newlines in a `python -c` script, escapes) shown escaped,
/// so one record stays one line and cannot drive the terminal.
pub(crate) fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// A finding: `HH:MM:SS.ffffff FINDING  kind  STATE  summary  [id]`, in colour on a terminal.
pub(crate) fn finding_line(
    r: &Record,
    f: &crate::output::record::FindingRecord,
    color: bool,
) -> String {
    let time = r.time.get(11..26).unwrap_or(&r.time);
    let state = f.state.to_uppercase();
    let count = if f.count > 1 {
        format!(" (×{})", f.count)
    } else {
        String::new()
    };
    let text = format!(
        "{time} FINDING   {:<20} {:<8} {}{count}  [{}]",
        f.kind,
        state,
        clean(&f.summary),
        f.id
    );
    if !color {
        return text;
    }
    let code = match f.state.as_str() {
        "open" => "1;31",
        "update" => "33",
        _ => "32",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// `HH:MM:SS.ffffff  type  pid  comm  details`.
pub(crate) fn line(r: &Record) -> String {
    if let Body::Finding(f) = &r.body {
        return finding_line(r, f, false);
    }
    let time = r.time.get(11..26).unwrap_or(&r.time);
    let (pid, comm) = match &r.body {
        Body::Fork(f) if !f.fork.thread => f
            .process
            .parent
            .as_ref()
            .map(|p| {
                (
                    p.pid.to_string(),
                    p.name.clone().unwrap_or_else(|| f.process.name.clone()),
                )
            })
            .unwrap_or((String::from("?"), f.process.name.clone())),
        _ => match r.body.process() {
            Some(p) => (p.pid.to_string(), p.name.clone()),
            None => ("-".into(), "-".into()),
        },
    };
    let mut d = String::new();
    match &r.body {
        Body::Fork(f) => {
            if f.fork.thread {
                let _ = write!(
                    d,
                    "new thread {}",
                    f.process.thread.as_ref().map(|t| t.id).unwrap_or(0)
                );
            } else {
                let _ = write!(d, "child {}", f.process.pid);
            }
        }
        Body::Exec(x) => {
            let _ = write!(d, "{}", x.process.executable.as_deref().unwrap_or("?"));
            if !x.args.is_empty() {
                let args: String = clean(&x.args.join(" ")).chars().take(200).collect();
                let _ = write!(d, "  [{args}]");
                if x.exec.args_truncated {
                    d.push('…');
                }
            }
        }
        Body::Exit(x) => {
            if let Some(t) = &x.process.thread {
                let _ = write!(d, "thread {} ", t.id);
            }
            match (&x.exit.signal, x.process.exit_code) {
                // The cause says it all when there is more than a code.
                _ if x.exit.cause.as_ref().is_some_and(|c| c.kind != "exit_code") => {
                    d.push_str(
                        &x.exit
                            .cause
                            .as_ref()
                            .map(|c| c.description.clone())
                            .unwrap_or_default(),
                    );
                }
                (Some(s), _) => {
                    let _ = write!(d, "signal {s}");
                    if x.exit.core_dumped {
                        d.push_str(" (core dumped)");
                    }
                }
                (None, Some(c)) => {
                    let _ = write!(d, "code {c}");
                }
                (None, None) => d.push_str("status unknown"),
            }
            if !x.exit.process_exited {
                d.push_str(" (thread; process lives on)");
            }
            if let Some(l) = x.exit.lifetime_ms {
                let _ = write!(d, " after {l} ms");
            }
        }
        Body::Reap(x) => {
            match &x.reap.reaper {
                Some(p) => {
                    let _ = write!(
                        d,
                        "reaped by {} ({}) via {}",
                        p.pid,
                        p.name.as_deref().unwrap_or("?"),
                        x.reap.method
                    );
                }
                None => d.push_str("released without a wait"),
            }
            if let Some(z) = x.reap.zombie_ms {
                let _ = write!(d, ", zombie for {z} ms");
            }
        }
        Body::Bind(s) | Body::Connect(s) => {
            let arrow = if matches!(r.body, Body::Connect(_)) {
                "→ "
            } else {
                ""
            };
            let addr = s
                .source
                .as_ref()
                .or(s.destination.as_ref())
                .map(ep)
                .unwrap_or_default();
            let _ = write!(d, "{} {arrow}{addr} ", s.network.transport);
            match &s.error {
                None => d.push_str("ok"),
                Some(e) => {
                    let _ = write!(d, "{} ({})", e.code, e.message);
                }
            }
            if let Some(fd) = s.socket.fd {
                let _ = write!(d, " fd {fd}");
            }
        }
        Body::TcpState(t) => {
            match (t.tcp.old_state.as_str(), t.tcp.new_state.as_str()) {
                (_, "LISTEN") => {
                    let _ = write!(d, "listening on {}", ep(&t.source));
                }
                ("LISTEN", new) => {
                    let _ = write!(d, "listener on {} closed ({new})", ep(&t.source));
                }
                (old, new) => {
                    let _ = write!(
                        d,
                        "{} > {}  {old} → {new}",
                        ep(&t.source),
                        ep(&t.destination)
                    );
                }
            }
            if let Some(o) = &t.event {
                let _ = write!(d, " ({})", o.outcome);
            }
        }
        Body::Loss(l) => {
            let _ = write!(
                d,
                "LOST {} records ({}), {} in total",
                l.loss.count, l.loss.reason, l.loss.total
            );
        }
        Body::Finding(_) => {}
        Body::Health(h) => {
            let _ = write!(d, "{}: {}", h.health.status.to_uppercase(), h.health.reason);
        }
    }
    let cmdline = match &r.body {
        Body::Exec(_) | Body::Loss(_) | Body::TcpState(_) | Body::Finding(_) | Body::Health(_) => {
            None
        }
        b => b.process().and_then(|p| p.command_line.as_deref()),
    };
    let mut out = format!(
        "{time} {:<9} {:>7} {:<16} {d}",
        r.body.type_name(),
        pid,
        clean(&comm)
    );
    if let Some(c) = r.body.container() {
        let _ = write!(out, "  [container {}]", clean(c.label()));
    }
    if let Some(c) = cmdline {
        let c: String = clean(c).chars().take(60).collect();
        let _ = write!(out, "  <{c}>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            clean("python3 -c \nimport x\tq\u{1b}[31m"),
            "python3 -c \\nimport x\\tq\\u{1b}[31m"
        );
    }
}
