//! Record filters of `watcher trace`.
use crate::output::record::{Body, Record};

/// A record passes when it matches every filter that is set. Loss records always pass:
/// they say the watcher was partly blind.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// The record's process (or a fork's parent, a reap's reaper) has one of these pids.
    pub pids: Vec<u32>,
    /// The process's `comm` or executable basename is one of these.
    pub comms: Vec<String>,
    /// Source or destination port is one of these (socket records only).
    pub ports: Vec<u16>,
    /// Record type names.
    pub types: Vec<String>,
    /// Containers (name, id, or id prefix): only records of their processes.
    pub containers: Vec<String>,
    /// Show thread creations and thread (not process) exits.
    pub threads: bool,
}

impl Filter {
    fn finding_matches(&self, f: &crate::output::record::FindingRecord) -> bool {
        if !self.containers.is_empty()
            && !f.processes.iter().any(|x| {
                x.container
                    .as_ref()
                    .is_some_and(|c| self.containers.iter().any(|k| c.matches(k)))
            })
        {
            return false;
        }
        if !self.pids.is_empty()
            && !f
                .processes
                .iter()
                .any(|x| self.pids.contains(&x.process.pid))
        {
            return false;
        }
        if !self.comms.is_empty()
            && !f.processes.iter().any(|x| {
                let base = x
                    .process
                    .executable
                    .as_deref()
                    .and_then(|e| e.rsplit('/').next());
                self.comms
                    .iter()
                    .any(|c| *c == x.process.name || Some(c.as_str()) == base)
            })
        {
            return false;
        }
        if !self.ports.is_empty() {
            let port = f.details.get("port").and_then(|p| p.as_u64());
            let dest_port = f
                .details
                .get("destination")
                .and_then(|d| d.as_str())
                .and_then(|d| d.rsplit(':').next())
                .and_then(|p| p.parse::<u64>().ok());
            if !self
                .ports
                .iter()
                .any(|x| Some(*x as u64) == port || Some(*x as u64) == dest_port)
            {
                return false;
            }
        }
        true
    }

    pub fn matches(&self, r: &Record) -> bool {
        if matches!(r.body, Body::Loss(_) | Body::Health(_)) {
            return true;
        }
        if !self.types.is_empty() && !self.types.iter().any(|t| t == r.body.type_name()) {
            return false;
        }
        if !self.threads {
            match &r.body {
                Body::Fork(f) if f.fork.thread => return false,
                Body::Exit(x) if !x.exit.process_exited => return false,
                _ => {}
            }
        }
        if let Body::Finding(f) = &r.body {
            return self.finding_matches(f);
        }
        let p = r.body.process();
        if !self.containers.is_empty()
            && !r
                .body
                .container()
                .is_some_and(|c| self.containers.iter().any(|k| c.matches(k)))
        {
            return false;
        }
        if !self.pids.is_empty() {
            let mut pids = Vec::with_capacity(3);
            if let Some(p) = p {
                pids.push(p.pid);
                if let Some(t) = &p.thread {
                    pids.push(t.id);
                }
                if let (Body::Fork(_), Some(pp)) = (&r.body, &p.parent) {
                    pids.push(pp.pid);
                }
            }
            if let Body::Reap(x) = &r.body {
                if let Some(rp) = &x.reap.reaper {
                    pids.push(rp.pid);
                }
            }
            if !pids.iter().any(|x| self.pids.contains(x)) {
                return false;
            }
        }
        if !self.comms.is_empty() {
            let Some(p) = p else { return false };
            let base = p.executable.as_deref().and_then(|e| e.rsplit('/').next());
            if !self
                .comms
                .iter()
                .any(|c| *c == p.name || Some(c.as_str()) == base)
            {
                return false;
            }
        }
        if !self.ports.is_empty() {
            let ports: Vec<u16> = match &r.body {
                Body::Bind(s) | Body::Connect(s) => s
                    .source
                    .iter()
                    .chain(s.destination.iter())
                    .map(|e| e.port)
                    .collect(),
                Body::TcpState(t) => vec![t.source.port, t.destination.port],
                _ => Vec::new(),
            };
            if !ports.iter().any(|x| self.ports.contains(x)) {
                return false;
            }
        }
        true
    }
}

/// Whether output types (empty: everything) include event records, not only
/// findings, loss and health records.
pub(crate) fn carries_events(types: &[String]) -> bool {
    types.is_empty()
        || types
            .iter()
            .any(|t| !matches!(t.as_str(), "finding" | "loss" | "health"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_in(container: Option<(&str, Option<&str>)>) -> Record {
        let line = match container {
            Some((id, name)) => {
                let name = name
                    .map(|n| format!(r#","name":"{n}""#))
                    .unwrap_or_default();
                format!(r#","container":{{"id":"{id}"{name},"runtime":"docker"}}"#)
            }
            None => String::new(),
        };
        serde_json::from_str(&format!(
            r#"{{"schema":1,"time":"2026-11-28T00:00:00.000000Z","mono_ns":1,"type":"exec","process":{{"pid":7,"name":"sh"}},"args":["sh"],"exec":{{"args_truncated":false}}{line}}}"#
        ))
        .expect("a record")
    }

    #[test]
    fn container_filter_by_name_id_or_id_prefix() {
        let id = "4f1ad7c2b0f0a3c4e5d6b7a8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192";
        let f = |k: &str| Filter {
            containers: vec![k.to_owned()],
            ..Filter::default()
        };
        let named = exec_in(Some((id, Some("web"))));
        let unnamed = exec_in(Some((id, None)));
        let host = exec_in(None);
        assert!(
            f("web").matches(&named) && f(id).matches(&named) && f("4f1ad7c2").matches(&unnamed)
        );
        assert!(
            !f("db").matches(&named) && !f("4f1").matches(&named),
            "a 3-digit prefix is too short"
        );
        assert!(
            !f("web").matches(&host),
            "a host process is in no container"
        );
        assert!(Filter::default().matches(&host));
        // The human line says which container.
        assert!(
            crate::output::human::line(&named).contains("  [container web]"),
            "{}",
            crate::output::human::line(&named)
        );
        assert!(crate::output::human::line(&unnamed).contains("  [container 4f1ad7c2b0f0]"));
        assert!(!crate::output::human::line(&host).contains("[container"));
    }
}
