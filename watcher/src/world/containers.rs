//! Containers: which container a process belongs to, and what the runtime
//! says about it.
//!
//! The kernel side gives every fork, exec and exit the task's cgroup id (the
//! v2 hierarchy's directory inode) and forwards `cgroup_mkdir`/`cgroup_rmdir`
//! of that hierarchy, so the id → path mapping arrives in the ring buffer
//! before a container's first process enters its cgroup (runtimes move the
//! process in after the clone; its exec then carries the new id). The path
//! names the container (`/docker/<id>`, `/system.slice/docker-<id>.scope`,
//! `…/kubepods…/cri-containerd-<id>.scope`, `crio-<id>.scope`,
//! `libpod-<id>.scope`) and the runtime. Name, image and Kubernetes labels come
//! from the runtime's API on a worker thread ([`crate::world::runtime`]),
//! answered back as [`RuntimeUpdate`]s: nothing here does I/O on the path
//! from the ring buffer to the detectors, except the walk of the cgroup tree
//! once at start.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

/// What is known about one container.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    /// The full id (64 hex digits for Docker/containerd/CRI-O).
    pub id: Arc<str>,
    /// `docker`, `containerd`, `cri-o`, `podman` (from the cgroup path, then the runtime).
    pub runtime: &'static str,
    pub name: Option<Arc<str>>,
    pub image: Option<Arc<str>>,
    /// Kubernetes: the pod's namespace and name (`io.kubernetes.pod.namespace` / `.name`).
    pub pod_namespace: Option<Arc<str>>,
    pub pod_name: Option<Arc<str>>,
    /// The runtime's restart policy (`always`, `on-failure`, `unless-stopped`), when it has one.
    pub restart_policy: Option<Arc<str>>,
    /// Kubernetes: the pod's uid, from the cgroup path (`…pod<uid>…`). A pod's
    /// container restarted by the kubelet is a new container with a new id in
    /// the same pod: programs are told apart within the pod, not the container.
    pub pod_uid: Option<Arc<str>>,
    /// The container's addresses on its networks (Docker's proxy forwards to these).
    pub addresses: Vec<IpAddr>,
    /// The host ports the runtime publishes for it (Docker's
    /// `NetworkSettings.Ports`): whoever holds one of them on the host —
    /// docker-proxy, dockerd itself with `userland-proxy: false`, Podman's
    /// conmon or rootlessport — holds it for this container.
    pub published: Vec<Published>,
}

/// One published port: `host_ip:host_port` on the host forwards to the
/// container's `port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub tcp: bool,
    /// The host address it is published on (`0.0.0.0`, `::` or one address).
    pub host_ip: IpAddr,
    pub host_port: u16,
    /// The port inside the container.
    pub port: u16,
}

impl Published {
    /// Whether a socket bound to `addr:port` on the host is this publication.
    pub fn is_held_by(&self, tcp: bool, addr: IpAddr, port: u16) -> bool {
        self.tcp == tcp && self.host_port == port && self.host_ip == addr
    }
}

impl ContainerInfo {
    /// `web` or, without a name, the short id.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.to_string(),
            None => self.id.get(..12).unwrap_or(&self.id).to_owned(),
        }
    }

    /// `container web (image nginx:1.25)`, for summaries.
    pub fn describe(&self) -> String {
        let mut s = format!("container {}", self.label());
        if let Some(img) = &self.image {
            s.push_str(&format!(" (image {img})"));
        }
        if let (Some(ns), Some(pod)) = (&self.pod_namespace, &self.pod_name) {
            s.push_str(&format!(" in pod {ns}/{pod}"));
        }
        s
    }
}

/// A question for the runtime worker: a container id, and the runtime its
/// cgroup path names (`podman`, `docker`, …; `unknown`).
pub(crate) type Question = (Arc<str>, &'static str);

/// What the runtime worker reports back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeUpdate {
    /// A container's metadata (created, started, renamed, or asked for).
    Container(ContainerInfo),
    /// The container stopped: its addresses are released (another container may get them).
    Stopped { id: Arc<str> },
    /// The container is gone (destroyed) or the runtime does not know it.
    Gone { id: Arc<str> },
    /// Said once: what the worker could reach (`docker at /var/run/docker.sock`)
    /// or why not, and whether it will answer questions.
    Status { line: String, answering: bool },
}

/// Where a `docker-proxy` process forwards (`-container-ip A -container-port P`),
/// if the process is Docker's userland proxy.
pub(crate) fn docker_proxy_target(p: &crate::world::proctable::Proc) -> Option<(IpAddr, u16)> {
    let is_proxy = p.exe.as_deref().and_then(|e| e.rsplit('/').next()) == Some("docker-proxy")
        || &*p.comm == "docker-proxy";
    if !is_proxy {
        return None;
    }
    let argv = p.argv.as_ref()?;
    let arg = |name: &str| {
        let mut args = argv.iter();
        args.position(|a| a == name).and_then(|_| args.next())
    };
    let ip = arg("-container-ip")?.parse().ok()?;
    let port = arg("-container-port")?.parse().ok()?;
    Some((ip, port))
}

/// The uid of the Kubernetes pod a cgroup path is in: `/kubepods/burstable/pod<uid>/…`
/// (cgroupfs driver) or `…kubepods-burstable-pod<uid with _>.slice/…` (systemd driver).
pub(crate) fn pod_uid_of_path(path: &str) -> Option<String> {
    if !path.contains("kubepods") {
        return None;
    }
    path.split('/').find_map(|seg| {
        // "kubepods" itself contains "pod": try every occurrence.
        seg.match_indices("pod").find_map(|(at, _)| {
            let uid: String = seg[at + 3..]
                .chars()
                .take(36)
                .map(|c| if c == '_' { '-' } else { c })
                .collect();
            let ok = uid.len() == 36
                && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
                && uid.matches('-').count() == 4;
            ok.then_some(uid)
        })
    })
}

/// A container id and runtime named by a cgroup path, if it is a container's.
pub(crate) fn container_of_path(path: &str) -> Option<(String, &'static str)> {
    let id = crate::world::proctable::container_id_from_cgroup(path)?;
    let runtime = if path.contains("docker") {
        "docker"
    } else if path.contains("crio-") {
        "cri-o"
    } else if path.contains("libpod") {
        "podman"
    } else {
        // cri-containerd-<id>.scope, /kubepods/…/<id>, containerd's own namespaces.
        "containerd"
    };
    Some((id, runtime))
}

/// The cgroup → container mapping and the runtime's metadata, bounded.
pub struct Containers {
    /// cgroup id → the container id its path names (None: not a container's).
    cgroups: HashMap<u64, Option<Arc<str>>>,
    /// cgroup id → the systemd unit its path names (`nginx.service`), for
    /// naming what systemd restarts.
    units: HashMap<u64, Arc<str>>,
    /// container id → metadata (at least id and runtime).
    meta: HashMap<Arc<str>, Arc<ContainerInfo>>,
    /// Containers asked of the runtime and not answered yet.
    asked: HashSet<Arc<str>>,
    /// Containers the runtime did not answer for in time: not asked (nor waited for) again.
    given_up: HashSet<Arc<str>>,
    requests: Option<tokio::sync::mpsc::Sender<Question>>,
    /// Whether a runtime answers questions (said by the worker's first status).
    answering: bool,
    cap: usize,
    /// Entries dropped because a table was full.
    pub evicted: u64,
    /// Requests to the runtime worker dropped because its queue was full.
    pub requests_dropped: u64,
}

impl Containers {
    pub fn new(cap: usize) -> Containers {
        Containers {
            cgroups: HashMap::new(),
            units: HashMap::new(),
            meta: HashMap::new(),
            asked: HashSet::new(),
            given_up: HashSet::new(),
            requests: None,
            answering: false,
            cap: cap.max(16),
            evicted: 0,
            requests_dropped: 0,
        }
    }

    /// Where to ask for metadata of containers seen before the runtime said anything about them.
    pub fn set_requests(&mut self, tx: tokio::sync::mpsc::Sender<Question>) {
        self.requests = Some(tx);
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    fn bounded<K: Clone + Eq + std::hash::Hash, V>(
        map: &mut HashMap<K, V>,
        cap: usize,
        evicted: &mut u64,
    ) {
        if map.len() >= cap {
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
                *evicted += 1;
            }
        }
    }

    /// A cgroup was created: when it is a container's the runtime knows
    /// nothing of yet, ask it now — its first process is still being set up.
    pub fn cgroup_made(&mut self, id: u64, path: &str) {
        self.cgroup_created(id, path);
        if let Some(cid) = self.id_of_cgroup(id) {
            self.ask(&cid);
        }
    }

    /// A cgroup was created (or found at start) at `path`.
    pub fn cgroup_created(&mut self, id: u64, path: &str) {
        Self::bounded(&mut self.cgroups, self.cap, &mut self.evicted);
        let pod_uid: Option<Arc<str>> = pod_uid_of_path(path).map(Into::into);
        let container = container_of_path(path).map(|(cid, runtime)| {
            let cid: Arc<str> = cid.into();
            match self.meta.get_mut(&cid) {
                Some(m) if m.pod_uid.is_none() && pod_uid.is_some() => {
                    Arc::make_mut(m).pod_uid = pod_uid.clone()
                }
                Some(_) => {}
                None => {
                    Self::bounded(&mut self.meta, self.cap, &mut self.evicted);
                    self.meta.insert(
                        cid.clone(),
                        Arc::new(ContainerInfo {
                            id: cid.clone(),
                            runtime,
                            pod_uid: pod_uid.clone(),
                            ..Default::default()
                        }),
                    );
                }
            }
            cid
        });
        if let Some(unit) = path.rsplit('/').find(|seg| seg.ends_with(".service")) {
            Self::bounded(&mut self.units, self.cap, &mut self.evicted);
            self.units.insert(id, unit.into());
        }
        self.cgroups.insert(id, container);
    }

    /// A cgroup was removed: forget it (its container's metadata stays until the runtime says it is gone).
    pub fn cgroup_removed(&mut self, id: u64) {
        self.cgroups.remove(&id);
        self.units.remove(&id);
    }

    /// The systemd unit of a cgroup id (`nginx.service`), when its path names one.
    pub fn unit_of_cgroup(&self, cgroup_id: u64) -> Option<Arc<str>> {
        self.units.get(&cgroup_id).cloned()
    }

    /// The container id of a cgroup id, if it is a container's.
    pub fn id_of_cgroup(&self, cgroup_id: u64) -> Option<Arc<str>> {
        self.cgroups.get(&cgroup_id).cloned().flatten()
    }

    /// The scope a container's programs are told apart in: its pod (`pod:<uid>`) on
    /// Kubernetes, else the container itself.
    pub fn identity_scope(&self, id: &Arc<str>) -> Arc<str> {
        match self.meta.get(id).and_then(|m| m.pod_uid.as_ref()) {
            Some(pod) => format!("pod:{pod}").into(),
            None => id.clone(),
        }
    }

    /// Ask the runtime (without waiting) about a container it has not named
    /// yet; a container not heard of before is known by its id from now on.
    pub fn ask(&mut self, id: &Arc<str>) {
        if !self.meta.contains_key(id) {
            Self::bounded(&mut self.meta, self.cap, &mut self.evicted);
            self.meta.insert(
                id.clone(),
                Arc::new(ContainerInfo {
                    id: id.clone(),
                    runtime: "unknown",
                    ..Default::default()
                }),
            );
        }
        let named = self.meta.get(id).is_some_and(|i| i.name.is_some());
        if named || self.asked.contains(id) || self.given_up.contains(id) {
            return;
        }
        if let Some(tx) = &self.requests {
            if self.asked.len() < self.cap {
                self.asked.insert(id.clone());
            }
            let hint = self.meta.get(id).map_or("unknown", |i| i.runtime);
            if tx.try_send((id.clone(), hint)).is_err() {
                self.requests_dropped += 1;
            }
        }
    }

    /// The runtime did not answer for `id` in time, or does not know it:
    /// stop asking and waiting for it.
    pub fn give_up(&mut self, id: &str) {
        self.asked.remove(id);
        if self.given_up.len() >= self.cap {
            self.given_up.clear();
        }
        self.given_up.insert(Arc::from(id));
    }

    /// Whether the runtime has been asked about `id` and may still answer:
    /// its records are worth holding back a moment for the name.
    pub fn awaiting(&self, id: &str) -> bool {
        self.answering && self.asked.contains(id)
    }

    /// The metadata known now, without asking anyone.
    pub fn peek(&self, id: &str) -> Option<Arc<ContainerInfo>> {
        self.meta.get(id).cloned()
    }

    /// The container that has `addr` on one of its networks.
    pub fn by_address(&self, addr: IpAddr) -> Option<Arc<ContainerInfo>> {
        self.meta
            .values()
            .find(|c| c.addresses.contains(&addr))
            .cloned()
    }

    /// The running container the runtime publishes `addr:port` for.
    pub fn by_published(
        &self,
        tcp: bool,
        addr: IpAddr,
        port: u16,
    ) -> Option<(Arc<ContainerInfo>, Published)> {
        self.meta.values().find_map(|c| {
            c.published
                .iter()
                .find(|p| p.is_held_by(tcp, addr, port))
                .map(|p| (c.clone(), *p))
        })
    }

    /// Apply what the runtime worker said. Returns a status line to say
    /// once, if any, and how a container was described before and is now
    /// when that changed.
    pub fn apply(&mut self, u: RuntimeUpdate) -> (Option<String>, Option<(String, String)>) {
        match u {
            RuntimeUpdate::Container(mut c) => {
                self.asked.remove(&c.id);
                let mut renamed = None;
                if let Some(old) = self.meta.get(&c.id) {
                    let (before, after) = (old.describe(), c.describe());
                    if before != after && c.name.is_some() {
                        renamed = Some((before, after));
                    }
                    if c.runtime == "unknown" {
                        c.runtime = old.runtime;
                    }
                    if c.addresses.is_empty() {
                        c.addresses = old.addresses.clone();
                    }
                    if c.published.is_empty() {
                        c.published = old.published.clone();
                    }
                    if c.pod_uid.is_none() {
                        c.pod_uid = old.pod_uid.clone();
                    }
                } else {
                    Self::bounded(&mut self.meta, self.cap, &mut self.evicted);
                }
                self.meta.insert(c.id.clone(), Arc::new(c));
                (None, renamed)
            }
            RuntimeUpdate::Stopped { id } | RuntimeUpdate::Gone { id } => {
                // Gone: destroyed, or not the runtime's (another runtime's
                // container): never asked again.
                self.give_up(&id);
                // Keep its name: records of its last processes may still be on
                // their way. Its addresses and published ports go: they may
                // be another's now.
                if let Some(old) = self.meta.get(&id) {
                    if !old.addresses.is_empty() || !old.published.is_empty() {
                        let mut c = (**old).clone();
                        c.addresses.clear();
                        c.published.clear();
                        self.meta.insert(id, Arc::new(c));
                    }
                }
                (None, None)
            }
            RuntimeUpdate::Status { line, answering } => {
                self.answering = answering;
                (Some(line), None)
            }
        }
    }

    /// Learn every cgroup that exists now under `root` (the v2 hierarchy's
    /// mount), by walking it once: a directory's inode is its cgroup id.
    pub fn seed_from(&mut self, root: &Path) -> usize {
        use std::os::unix::fs::MetadataExt as _;
        let mut n = 0;
        let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(md) = e.metadata() else { continue };
                if !md.is_dir() {
                    continue;
                }
                let p = e.path();
                let rel = format!("/{}", p.strip_prefix(root).unwrap_or(&p).to_string_lossy());
                self.cgroup_created(md.ino(), &rel);
                n += 1;
                if n < self.cap {
                    stack.push(p);
                }
            }
        }
        n
    }
}

/// The mount of the cgroup v2 hierarchy (`/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one), from /proc/self/mountinfo.
pub(crate) fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(pre.split_whitespace().nth(4)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1ad7c2b0f0a3c4e5d6b7a8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192";

    #[test]
    fn a_pods_uid_comes_from_either_cgroup_driver() {
        let uid = "0a1b2c3d-0000-4000-8000-00000000abcd";
        let cid = "a".repeat(64);
        assert_eq!(
            pod_uid_of_path(&format!("/kubepods/burstable/pod{uid}/{cid}")).as_deref(),
            Some(uid)
        );
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope",
            uid.replace('-', "_")
        );
        assert_eq!(pod_uid_of_path(&systemd).as_deref(), Some(uid));
        assert_eq!(pod_uid_of_path(&format!("/docker/{cid}")), None);
    }

    #[test]
    fn paths_name_container_and_runtime() {
        assert_eq!(
            container_of_path(&format!("/docker/{ID}")),
            Some((ID.into(), "docker"))
        );
        assert_eq!(
            container_of_path(&format!("/system.slice/docker-{ID}.scope")),
            Some((ID.into(), "docker"))
        );
        assert_eq!(
            container_of_path(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope")),
            Some((ID.into(), "containerd"))
        );
        assert_eq!(
            container_of_path(&format!("/kubepods/besteffort/pod1234/{ID}")),
            Some((ID.into(), "containerd"))
        );
        assert_eq!(
            container_of_path(&format!("/machine.slice/libpod-{ID}.scope")),
            Some((ID.into(), "podman"))
        );
        assert_eq!(
            container_of_path(&format!("/kubepods.slice/crio-{ID}.scope")),
            Some((ID.into(), "cri-o"))
        );
        assert_eq!(container_of_path("/system.slice/ssh.service"), None);
        assert_eq!(container_of_path("/"), None);
    }

    #[test]
    fn cgroup_ids_map_to_containers_and_metadata_arrives_later() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let mut c = Containers::new(100);
        c.set_requests(tx);
        c.cgroup_created(120, &format!("/docker/{ID}"));
        c.cgroup_created(7, "/system.slice/cron.service");
        assert_eq!(c.id_of_cgroup(7), None);
        let id = c.id_of_cgroup(120).expect("a container's cgroup");
        c.ask(&id);
        let info = c.peek(&id).expect("known");
        assert_eq!((info.runtime, info.name.as_deref()), ("docker", None));
        assert_eq!(
            rx.try_recv().ok().map(|q| q.0).as_deref(),
            Some(ID),
            "the runtime is asked once"
        );
        c.ask(&id);
        assert!(
            rx.try_recv().is_err(),
            "not asked twice while the answer is on its way"
        );
        c.apply(RuntimeUpdate::Container(ContainerInfo {
            id: id.clone(),
            runtime: "unknown",
            name: Some("web".into()),
            image: Some("nginx:1.25".into()),
            addresses: vec!["172.17.0.2".parse().unwrap()],
            ..Default::default()
        }));
        let info = c.peek(&id).unwrap();
        assert_eq!(
            (info.runtime, info.label(), info.describe()),
            (
                "docker",
                "web".to_owned(),
                "container web (image nginx:1.25)".to_owned()
            )
        );
        assert_eq!(
            c.by_address("172.17.0.2".parse().unwrap())
                .map(|c| c.label()),
            Some("web".into())
        );
        // Stopped: its address may be another container's next.
        c.apply(RuntimeUpdate::Stopped { id: id.clone() });
        // A container the runtime does not know (another runtime's) is not asked about again.
        c.cgroup_created(121, "/kubepods/besteffort/pod1/0000000000000000000000000000000000000000000000000000000000000abc");
        let other = c.id_of_cgroup(121).unwrap();
        c.ask(&other);
        assert_eq!(rx.try_recv().ok().map(|q| q.0).as_deref(), Some(&*other));
        c.apply(RuntimeUpdate::Gone { id: other.clone() });
        c.ask(&other);
        assert!(rx.try_recv().is_err(), "not asked again");
        assert_eq!(c.by_address("172.17.0.2".parse().unwrap()), None);
        assert_eq!(
            c.peek(&id).unwrap().label(),
            "web",
            "the name stays for its last records"
        );
        c.cgroup_removed(120);
        assert_eq!(c.id_of_cgroup(120), None);
    }

    #[test]
    fn bounded() {
        let mut c = Containers::new(16);
        for i in 0..100u64 {
            c.cgroup_created(i, &format!("/docker/{:064x}", i));
        }
        assert!(c.cgroups.len() <= 16 && c.meta.len() <= 16);
        assert!(c.evicted > 0);
    }
}
