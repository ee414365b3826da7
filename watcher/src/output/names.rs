//! Records of a container the runtime has not named yet wait here briefly
//! (see [`NameWait`]), so that every record of its processes carries its
//! name and image.
use crate::world::containers::Containers;

/// How long event records of a container wait for the runtime to name it.
pub(crate) const NAME_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

/// Event records of a container the runtime has been asked about and not
/// answered yet wait here, in order, up to [`NAME_WAIT`], so that every
/// record of a container's process carries its name and image (the runtime
/// names a new container a few milliseconds after its cgroup appears).
/// Findings, loss and health records never wait: detection and its output
/// are not delayed; a finding that named a container by its id is updated
/// when the name comes (see `Detectors::container_renamed`).
#[derive(Default)]
pub(crate) struct NameWait {
    queue: std::collections::VecDeque<(std::time::Instant, crate::output::record::Record)>,
    /// Records released without the name because the runtime did not answer in time.
    pub unnamed: u64,
}

fn waiting_for(r: &crate::output::record::Record, c: &Containers) -> Option<String> {
    if matches!(
        r.body,
        crate::output::record::Body::Finding(_)
            | crate::output::record::Body::Loss(_)
            | crate::output::record::Body::Health(_)
    ) {
        return None;
    }
    let container = r.body.container()?;
    (container.name.is_none() && c.awaiting(&container.id)).then(|| container.id.clone())
}

/// Fill in what is known now of a record's container (name, image, pod).
fn complete(r: &mut crate::output::record::Record, c: &Containers) {
    let Some(container) = r.body.container_mut() else {
        return;
    };
    if c.peek(&container.id).is_none() {
        return;
    }
    let (fresh, orchestrator) =
        crate::output::enrich::container_fields(c, Some(&container.id.clone()));
    if let Some(fresh) = fresh {
        *container = fresh;
    }
    if let Some(o) = orchestrator {
        r.body.set_orchestrator(o);
    }
}

impl NameWait {
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the oldest waiting record must go, named or not.
    pub(crate) fn deadline(&self) -> Option<std::time::Instant> {
        self.queue.front().map(|(t, _)| *t + NAME_WAIT)
    }

    /// Pass `records` through: what may go now, in order (findings, loss and
    /// health records at once; event records behind a waiting one wait with it).
    pub(crate) fn pass(
        &mut self,
        records: Vec<crate::output::record::Record>,
        c: &mut Containers,
        now: std::time::Instant,
    ) -> Vec<crate::output::record::Record> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let bypass = matches!(
                r.body,
                crate::output::record::Body::Finding(_)
                    | crate::output::record::Body::Loss(_)
                    | crate::output::record::Body::Health(_)
            );
            if bypass {
                out.push(r);
            } else if !self.queue.is_empty() || waiting_for(&r, c).is_some() {
                self.queue.push_back((now, r));
            } else {
                out.push(r);
            }
        }
        self.release(c, now, &mut out);
        out
    }

    /// Release what no longer waits: named since, or out of time.
    pub(crate) fn release(
        &mut self,
        c: &mut Containers,
        now: std::time::Instant,
        out: &mut Vec<crate::output::record::Record>,
    ) {
        while let Some((since, r)) = self.queue.front() {
            let still = waiting_for(r, c);
            let late = now.duration_since(*since) >= NAME_WAIT;
            if still.is_some() && !late {
                break;
            }
            let (_, mut r) = self.queue.pop_front().expect("front exists");
            if let Some(id) = still {
                self.unnamed += 1;
                c.give_up(&id);
            }
            complete(&mut r, c);
            out.push(r);
        }
    }

    /// Everything still waiting (at the end), completed as far as known.
    pub(crate) fn flush(&mut self, c: &Containers) -> Vec<crate::output::record::Record> {
        self.queue
            .drain(..)
            .map(|(_, mut r)| {
                complete(&mut r, c);
                r
            })
            .collect()
    }
}

#[cfg(test)]
mod name_wait_tests {
    use super::*;
    use crate::output::record::{Body, Container, ExecInfo, ExecRecord, Process, Record};
    use crate::world::containers::{ContainerInfo, RuntimeUpdate};
    use std::sync::Arc;

    const ID: &str = "4f1ad7c2b0f0a3c4e5d6b7a8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192";

    fn exec(pid: u32, container: Option<&str>) -> Record {
        Record {
            schema: 1,
            time: String::new(),
            mono_ns: pid as u64,
            body: Body::Exec(ExecRecord {
                process: Process {
                    pid,
                    thread: None,
                    name: "sh".into(),
                    executable: None,
                    command_line: None,
                    entity_id: None,
                    parent: None,
                    user: None,
                    exit_code: None,
                },
                args: Vec::new(),
                exec: ExecInfo {
                    args_truncated: false,
                },
                container: container.map(|id| Container {
                    id: id.into(),
                    name: None,
                    image: None,
                    runtime: "docker".into(),
                }),
                orchestrator: None,
            }),
        }
    }

    fn pids(rs: &[Record]) -> Vec<u64> {
        rs.iter().map(|r| r.mono_ns).collect()
    }

    #[test]
    fn a_new_containers_records_wait_in_order_for_its_name_and_no_longer() {
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let mut c = Containers::new(100);
        c.set_requests(tx);
        c.apply(RuntimeUpdate::Status {
            line: "docker at /var/run/docker.sock: 0 running container(s)".into(),
            answering: true,
        });
        c.cgroup_made(120, &format!("/docker/{ID}"));
        let mut w = NameWait::default();
        let t0 = std::time::Instant::now();
        // A host record goes at once; the container's waits, and the host record behind it waits too (order).
        let out = w.pass(
            vec![exec(1, None), exec(2, Some(ID)), exec(3, None)],
            &mut c,
            t0,
        );
        assert_eq!(pids(&out), vec![1]);
        assert_eq!(w.deadline(), Some(t0 + NAME_WAIT));
        // The runtime answers: both go, the container's named.
        c.apply(RuntimeUpdate::Container(ContainerInfo {
            id: ID.into(),
            runtime: "docker",
            name: Some("web".into()),
            image: Some("nginx".into()),
            ..Default::default()
        }));
        let out = w.pass(Vec::new(), &mut c, t0 + std::time::Duration::from_millis(5));
        assert_eq!(pids(&out), vec![2, 3]);
        let named = out[0].body.container().expect("container");
        assert_eq!(
            (
                named.name.as_deref(),
                named.image.as_ref().map(|i| i.name.as_str())
            ),
            (Some("web"), Some("nginx"))
        );
        assert!(w.is_empty());
        // A runtime that does not answer: the records go at the deadline, and that container is not waited for again.
        const OTHER: &str = "0000000000000000000000000000000000000000000000000000000000000001";
        c.cgroup_made(121, &format!("/docker/{OTHER}"));
        let out = w.pass(vec![exec(4, Some(OTHER))], &mut c, t0);
        assert!(out.is_empty());
        let out = w.pass(Vec::new(), &mut c, t0 + NAME_WAIT);
        assert_eq!((pids(&out), w.unnamed), (vec![4], 1));
        c.ask(&Arc::from(OTHER));
        assert_eq!(
            pids(&w.pass(vec![exec(5, Some(OTHER))], &mut c, t0 + NAME_WAIT)),
            vec![5],
            "given up: no more waiting"
        );
    }

    #[test]
    fn nothing_waits_without_a_runtime() {
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let mut c = Containers::new(100);
        c.set_requests(tx);
        c.apply(RuntimeUpdate::Status {
            line: "no container runtime socket at /var/run/docker.sock: …".into(),
            answering: false,
        });
        c.cgroup_made(120, &format!("/docker/{ID}"));
        let mut w = NameWait::default();
        assert_eq!(
            pids(&w.pass(vec![exec(1, Some(ID))], &mut c, std::time::Instant::now())),
            vec![1]
        );
    }
}
