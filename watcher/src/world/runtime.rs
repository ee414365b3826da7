//! The container runtime's own account of its containers, on a worker thread
//! beside the pipeline: Docker Engine API over its unix socket (HTTP/1.1 by
//! hyper) and, for containers Docker does not know, containerd's gRPC API.
//! At start it lists Docker's running containers; then it follows Docker's
//! event stream (create/start/rename/die/destroy) and answers the pipeline's
//! questions about containers it has not heard of, several side by side.
//! Every call has a deadline; a runtime that hangs or is absent only means
//! records carry the container id without a name. Kubernetes pods are named
//! by the `io.kubernetes.*` labels the kubelet puts on its containers.
use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

use super::containers::{ContainerInfo, Question, RuntimeUpdate};

/// Deadline of one API call.
const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// The Docker socket to use: `$DOCKER_HOST` when it is `unix://…`, else the default.
pub(crate) fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

async fn request(socket: &PathBuf, uri: &str) -> anyhow::Result<Response<Incoming>> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(uri)
        .header("Host", "docker")
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(req).await?)
}

/// GET `uri` and parse the JSON body, within the deadline.
async fn get_json(socket: &PathBuf, uri: &str) -> anyhow::Result<Option<Value>> {
    let call = async {
        let resp = request(socket, uri).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status == hyper::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            anyhow::bail!(
                "{uri}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(Some(serde_json::from_slice(&body)?))
    };
    tokio::time::timeout(CALL_DEADLINE, call)
        .await
        .map_err(|_| anyhow::anyhow!("{uri}: no answer within {CALL_DEADLINE:?}"))?
}

fn s(v: &Value) -> Option<Arc<str>> {
    v.as_str().filter(|x| !x.is_empty()).map(Arc::from)
}

/// Metadata from `GET /containers/{id}/json`.
pub(crate) fn from_inspect(v: &Value) -> Option<ContainerInfo> {
    let id = s(&v["Id"])?;
    let labels = &v["Config"]["Labels"];
    let mut addresses = Vec::new();
    if let Some(nets) = v["NetworkSettings"]["Networks"].as_object() {
        for n in nets.values() {
            for k in ["IPAddress", "GlobalIPv6Address"] {
                if let Some(ip) = n[k].as_str().and_then(|a| a.parse().ok()) {
                    addresses.push(ip);
                }
            }
        }
    }
    Some(ContainerInfo {
        id,
        runtime: "docker",
        published: published_ports(&v["NetworkSettings"]["Ports"]),
        name: v["Name"]
            .as_str()
            .map(|n| Arc::from(n.trim_start_matches('/')))
            .filter(|n: &Arc<str>| !n.is_empty()),
        image: s(&v["Config"]["Image"]),
        pod_namespace: s(&labels["io.kubernetes.pod.namespace"]),
        pod_name: s(&labels["io.kubernetes.pod.name"]),
        restart_policy: s(&v["HostConfig"]["RestartPolicy"]["Name"]).filter(|p| &**p != "no"),
        addresses,
        pod_uid: s(&labels["io.kubernetes.pod.uid"]),
    })
}

/// Docker's (and Podman's compatible API's) port map:
/// `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "53/udp": null}`.
/// An empty `HostIp` is every address of both families.
pub(crate) fn published_ports(ports: &Value) -> Vec<super::containers::Published> {
    let mut out = Vec::new();
    let Some(map) = ports.as_object() else {
        return out;
    };
    for (inside, bindings) in map {
        let Some((port, proto)) = inside.split_once('/') else {
            continue;
        };
        let (Ok(port), tcp) = (port.parse::<u16>(), proto == "tcp") else {
            continue;
        };
        if proto != "tcp" && proto != "udp" {
            continue;
        }
        for b in bindings.as_array().into_iter().flatten() {
            let Some(host_port) = b["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            let ips: Vec<std::net::IpAddr> = match b["HostIp"].as_str().unwrap_or("") {
                "" => vec![
                    std::net::Ipv4Addr::UNSPECIFIED.into(),
                    std::net::Ipv6Addr::UNSPECIFIED.into(),
                ],
                ip => ip.parse().into_iter().collect(),
            };
            for host_ip in ips {
                let p = super::containers::Published {
                    tcp,
                    host_ip,
                    host_port,
                    port,
                };
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Metadata from an event's actor attributes (create/rename carry name, image and labels).
pub(crate) fn from_event(v: &Value, runtime: &'static str) -> Option<ContainerInfo> {
    let id = s(&v["Actor"]["ID"]).or_else(|| s(&v["id"]))?;
    let a = &v["Actor"]["Attributes"];
    Some(ContainerInfo {
        id,
        runtime,
        name: s(&a["name"]),
        image: s(&a["image"]),
        pod_namespace: s(&a["io.kubernetes.pod.namespace"]),
        pod_name: s(&a["io.kubernetes.pod.name"]),
        restart_policy: None,
        addresses: Vec::new(),
        published: Vec::new(),
        pod_uid: s(&a["io.kubernetes.pod.uid"]),
    })
}

/// An engine that speaks Docker's API: Docker itself, or Podman's
/// compatible service (`podman system service`).
#[derive(Clone, Debug)]
struct Engine {
    socket: PathBuf,
    runtime: &'static str,
}

async fn inspect(engine: &Engine, id: &str) -> Option<RuntimeUpdate> {
    match get_json(&engine.socket, &format!("/containers/{id}/json")).await {
        Ok(Some(v)) => from_inspect(&v).map(|mut c| {
            c.runtime = engine.runtime;
            RuntimeUpdate::Container(c)
        }),
        Ok(None) => Some(RuntimeUpdate::Gone { id: id.into() }),
        Err(e) => {
            tracing::debug!("{}: inspect {id}: {e:#}", engine.runtime);
            None
        }
    }
}

/// Follow the event stream until it ends; each container event becomes an update.
async fn follow_events(
    engine: &Engine,
    out: &std::sync::mpsc::Sender<RuntimeUpdate>,
) -> anyhow::Result<()> {
    let filters = r#"{"type":["container"]}"#;
    let uri = format!("/events?filters={}", percent(filters));
    let resp = tokio::time::timeout(CALL_DEADLINE, request(&engine.socket, &uri)).await??;
    if !resp.status().is_success() {
        anyhow::bail!("/events: HTTP {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let action = ev["Action"]
                .as_str()
                .or_else(|| ev["status"].as_str())
                .unwrap_or("");
            let update = match action {
                "create" | "rename" => {
                    from_event(&ev, engine.runtime).map(RuntimeUpdate::Container)
                }
                // At start the runtime knows its addresses and restart policy.
                "start" | "restart" => match s(&ev["Actor"]["ID"]) {
                    Some(id) => inspect(engine, &id)
                        .await
                        .or_else(|| from_event(&ev, engine.runtime).map(RuntimeUpdate::Container)),
                    None => None,
                },
                "die" | "stop" => s(&ev["Actor"]["ID"]).map(|id| RuntimeUpdate::Stopped { id }),
                "destroy" => s(&ev["Actor"]["ID"]).map(|id| RuntimeUpdate::Gone { id }),
                _ => None,
            };
            if let Some(u) = update {
                if out.send(u).is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Podman's Docker-compatible API (`podman system service`, rootful):
/// `$PODMAN_SOCKET` (`unix://…` or a path), else `/run/podman/podman.sock`.
pub(crate) fn podman_socket() -> PathBuf {
    std::env::var("PODMAN_SOCKET")
        .ok()
        .map(|h| PathBuf::from(h.strip_prefix("unix://").unwrap_or(&h)))
        .unwrap_or_else(|| PathBuf::from("/run/podman/podman.sock"))
}

/// Podman's container store (containers/storage's `graphroot`, rootful):
/// `$PODMAN_STORAGE`, else `/var/lib/containers/storage`.
pub(crate) fn podman_storage() -> PathBuf {
    std::env::var_os("PODMAN_STORAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/containers/storage"))
}

/// A container from containers/storage's `overlay-containers/containers.json`
/// (what Podman writes at create, without a service running): its name and
/// image. Published ports and the restart policy live in Podman's own
/// database; they come from its API when it runs.
pub(crate) fn from_podman_storage(list: &Value, id: &str) -> Option<ContainerInfo> {
    let c = list
        .as_array()?
        .iter()
        .find(|c| c["id"].as_str() == Some(id))?;
    let meta: Value = c["metadata"]
        .as_str()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(Value::Null);
    Some(ContainerInfo {
        id: id.into(),
        runtime: "podman",
        name: s(&c["names"][0]).or_else(|| s(&meta["name"])),
        image: s(&meta["image-name"]),
        ..Default::default()
    })
}

/// Podman: its API when the service runs, else its store on disk.
#[derive(Clone, Debug)]
struct Podman {
    api: Engine,
    storage: PathBuf,
}

impl Podman {
    fn found() -> Option<Podman> {
        let p = Podman {
            api: Engine {
                socket: podman_socket(),
                runtime: "podman",
            },
            storage: podman_storage(),
        };
        // (Its store has `libpod/` — Podman's own state — from the first
        // image pulled or loaded; `containers.json` from the first container.)
        (p.api.socket.exists() || p.containers_json().exists() || p.storage.join("libpod").is_dir())
            .then_some(p)
    }

    fn containers_json(&self) -> PathBuf {
        self.storage.join("overlay-containers/containers.json")
    }

    async fn get(&self, id: &str) -> Option<ContainerInfo> {
        if self.api.socket.exists() {
            if let Some(RuntimeUpdate::Container(c)) = inspect(&self.api, id).await {
                return Some(c);
            }
        }
        // (A local file on the worker's thread: never the pipeline's.)
        let bytes = std::fs::read(self.containers_json()).ok()?;
        let list: Value = serde_json::from_slice(&bytes).ok()?;
        from_podman_storage(&list, id)
    }

    /// What it says at start when its API does not answer (or does not run).
    fn store_status(&self) -> String {
        format!(
            "podman: its store at {} (names and images; published ports and restart policies need `podman system service`)",
            self.storage.display()
        )
    }
}

/// containerd's socket: `$CONTAINERD_ADDRESS`, else the default, when it exists.
pub(crate) fn containerd_socket() -> Option<PathBuf> {
    let p = std::env::var_os("CONTAINERD_ADDRESS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/containerd/containerd.sock"));
    p.exists().then_some(p)
}

/// Metadata from a containerd container (its labels: the kubelet's
/// `io.kubernetes.*` on a Kubernetes node). containerd's container id is its
/// name where no Kubernetes container name is given.
pub(crate) fn from_containerd(
    id: &str,
    image: &str,
    labels: &std::collections::HashMap<String, String>,
) -> ContainerInfo {
    let label = |k: &str| {
        labels
            .get(k)
            .filter(|v| !v.is_empty())
            .map(|v| Arc::<str>::from(v.as_str()))
    };
    ContainerInfo {
        id: id.into(),
        runtime: "containerd",
        name: label("io.kubernetes.container.name").or_else(|| Some(id.into())),
        image: (!image.is_empty()).then(|| image.into()),
        pod_namespace: label("io.kubernetes.pod.namespace"),
        pod_name: label("io.kubernetes.pod.name"),
        restart_policy: None,
        addresses: Vec::new(),
        published: Vec::new(),
        pod_uid: label("io.kubernetes.pod.uid"),
    }
}

/// containerd's API (gRPC over its socket), connected when first needed;
/// cheap to clone (one connection shared by concurrent questions).
#[derive(Clone)]
struct Containerd {
    socket: PathBuf,
    channel: Arc<tokio::sync::Mutex<Option<tonic::transport::Channel>>>,
}

impl Containerd {
    fn new(socket: PathBuf) -> Containerd {
        Containerd {
            socket,
            channel: Arc::default(),
        }
    }

    /// The container `id` in any of containerd's namespaces (`k8s.io`, `moby`, `default`, …).
    async fn get(&self, id: &str) -> Option<ContainerInfo> {
        use containerd_client::{
            services::v1::{
                containers_client::ContainersClient, namespaces_client::NamespacesClient,
                GetContainerRequest, ListNamespacesRequest,
            },
            with_namespace,
        };
        use tonic::Request;
        let call = async {
            let ch = {
                let mut slot = self.channel.lock().await;
                if slot.is_none() {
                    *slot = Some(containerd_client::connect(&self.socket).await.ok()?);
                }
                slot.clone()?
            };
            let namespaces = NamespacesClient::new(ch.clone())
                .list(Request::new(ListNamespacesRequest {
                    filter: String::new(),
                }))
                .await
                .ok()?
                .into_inner()
                .namespaces;
            let mut client = ContainersClient::new(ch);
            for ns in namespaces {
                let req = GetContainerRequest { id: id.to_owned() };
                if let Ok(resp) = client.get(with_namespace!(req, ns.name.as_str())).await {
                    let c = resp.into_inner().container?;
                    return Some(from_containerd(id, &c.image, &c.labels));
                }
            }
            None
        };
        match tokio::time::timeout(CALL_DEADLINE, call).await {
            Ok(v) => v,
            Err(_) => {
                // A hung connection is dropped; the next question reconnects.
                *self.channel.lock().await = None;
                None
            }
        }
    }
}

/// One question, asked of the runtime the container's cgroup names first
/// (Podman for `libpod-…`, containerd for `cri-containerd-…` and its own
/// namespaces), then Docker, then Podman, then containerd for what none of
/// the others knows.
async fn answer(
    id: Arc<str>,
    hint: &'static str,
    docker: Option<Engine>,
    podman: Option<Podman>,
    containerd: Option<Containerd>,
) -> Option<RuntimeUpdate> {
    let known = |a: &Option<RuntimeUpdate>| matches!(a, Some(RuntimeUpdate::Container(_)));
    let mut answer = None;
    // A cgroup that says containerd is asked of containerd first: a
    // container that lives a few milliseconds (`ctr run --rm`, a crash
    // loop) can be gone from it by the time Docker's and Podman's "not
    // mine" came back (session 35: a 23 ms container went unnamed so, once,
    // in CI).
    let alone = docker.is_none() && podman.is_none();
    let containerd_first = hint == "containerd" && containerd.is_some();
    if hint == "containerd" {
        if let Some(cd) = &containerd {
            answer = containerd_answer(cd, &id, alone).await;
        }
    }
    if hint == "podman" {
        if let Some(p) = &podman {
            answer = p.get(&id).await.map(RuntimeUpdate::Container);
        }
    }
    if !known(&answer) {
        if let Some(d) = &docker {
            answer = inspect(d, &id).await.or(answer);
        }
    }
    if !known(&answer) && hint != "podman" {
        if let Some(p) = &podman {
            if let Some(c) = p.get(&id).await {
                answer = Some(RuntimeUpdate::Container(c));
            }
        }
    }
    if !known(&answer) && !containerd_first {
        if let Some(cd) = &containerd {
            answer = containerd_answer(cd, &id, alone).await.or(answer);
        }
    }
    if answer.is_none() && docker.is_none() && podman.is_some() && containerd.is_none() {
        // Podman alone, and its store does not have it: not Podman's.
        answer = Some(RuntimeUpdate::Gone { id: id.clone() });
    }
    answer
}

/// containerd's answer: the container, or gone when it is the only
/// runtime to ask (`alone`), else nothing.
async fn containerd_answer(cd: &Containerd, id: &Arc<str>, alone: bool) -> Option<RuntimeUpdate> {
    match cd.get(id).await {
        Some(info) => Some(RuntimeUpdate::Container(info)),
        None if alone => Some(RuntimeUpdate::Gone { id: id.clone() }),
        None => None,
    }
}

/// Questions answered at once, at most (the rest wait their turn).
const CONCURRENT_QUESTIONS: usize = 16;

/// Docker's list of running containers, each inspected: what to say at start.
async fn docker_listing(engine: &Engine, out: &std::sync::mpsc::Sender<RuntimeUpdate>) -> bool {
    let socket = &engine.socket;
    match get_json(socket, "/containers/json").await {
        Ok(Some(Value::Array(list))) => {
            let line = format!(
                "{} at {}: {} running container(s)",
                engine.runtime,
                socket.display(),
                list.len()
            );
            let _ = out.send(RuntimeUpdate::Status {
                line,
                answering: true,
            });
            for c in list {
                if let Some(id) = c["Id"].as_str() {
                    if let Some(u) = inspect(engine, id).await {
                        let _ = out.send(u);
                    }
                }
            }
            true
        }
        Ok(_) => false,
        Err(e) => {
            let line = format!(
                "the container runtime at {} does not answer ({e:#}): containers are named by their cgroup id only until it does",
                socket.display()
            );
            let _ = out.send(RuntimeUpdate::Status {
                line,
                answering: false,
            });
            false
        }
    }
}

/// Follow an engine's event stream (reconnecting after a pause when it ends).
fn follow_docker(engine: Engine, out: std::sync::mpsc::Sender<RuntimeUpdate>) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = follow_events(&engine, &out).await {
                tracing::debug!("{} events: {e:#}", engine.runtime);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Start the worker. Updates arrive on the returned receiver (drained by the
/// pipeline between batches); questions go in through the sender. Docker is
/// asked first (Podman first for a `libpod-…` cgroup); a container neither
/// knows is asked of containerd (where its socket exists: a Kubernetes
/// node's runtime).
pub(crate) fn spawn(
    socket: PathBuf,
) -> (
    mpsc::Sender<Question>,
    std::sync::mpsc::Receiver<RuntimeUpdate>,
) {
    let (req_tx, mut req_rx) = mpsc::channel::<Question>(1024);
    let (out_tx, out_rx) = std::sync::mpsc::channel::<RuntimeUpdate>();
    let spawned = std::thread::Builder::new().name("watcher-runtime".into()).spawn(move || {
        crate::kernel::sched::run_as_helper();
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let containerd = containerd_socket().map(Containerd::new);
            let engine = Engine { socket: socket.clone(), runtime: "docker" };
            let podman = Podman::found();
            let mut docker = socket.exists();
            let mut any = false;
            if docker {
                docker_listing(&engine, &out_tx).await;
                follow_docker(engine.clone(), out_tx.clone());
                any = true;
            }
            if let Some(p) = &podman {
                any = true;
                if p.api.socket.exists() && docker_listing(&p.api, &out_tx).await {
                    follow_docker(p.api.clone(), out_tx.clone());
                } else {
                    let _ = out_tx.send(RuntimeUpdate::Status { line: p.store_status(), answering: true });
                }
            }
            if let Some(cd) = &containerd {
                let line = format!("containerd at {}", cd.socket.display());
                let _ = out_tx.send(RuntimeUpdate::Status { line, answering: true });
                any = true;
            }
            if !any {
                let line = format!(
                    "no container runtime socket at {}: containers are named by their cgroup id only (set DOCKER_HOST=unix://… if Docker listens elsewhere, CONTAINERD_ADDRESS for containerd, PODMAN_SOCKET for Podman's service)",
                    socket.display()
                );
                let _ = out_tx.send(RuntimeUpdate::Status { line, answering: false });
            }
            // Questions are answered side by side (a new container's name must
            // not wait behind other containers' calls), at most 16 at once.
            let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_QUESTIONS));
            loop {
                tokio::select! {
                    q = req_rx.recv() => {
                        let Some((id, hint)) = q else { return };
                        let Ok(permit) = permits.clone().acquire_owned().await else { return };
                        let (docker, podman, containerd, out) =
                            (docker.then(|| engine.clone()), podman.clone(), containerd.clone(), out_tx.clone());
                        tokio::spawn(async move {
                            if let Some(u) = answer(id, hint, docker, podman, containerd).await {
                                let _ = out.send(u);
                            }
                            drop(permit);
                        });
                    }
                    // A Docker Engine started after watcher is followed from when its socket appears.
                    _ = tokio::time::sleep(Duration::from_secs(5)), if !docker => {
                        if socket.exists() {
                            docker = docker_listing(&engine, &out_tx).await;
                            if docker {
                                follow_docker(engine.clone(), out_tx.clone());
                            }
                        }
                    }
                }
            }
        });
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the container runtime worker: {e}");
    }
    (req_tx, out_rx)
}

/// For `watcher check`: each container runtime found on this host, what
/// watcher can name through it and what not. Blocking (a CLI's question,
/// never the pipeline's); every call has the usual deadline.
pub(crate) fn survey() -> Vec<(String, String)> {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    rt.block_on(async {
        let mut out = Vec::new();
        let version = |e: Engine| async move {
            get_json(&e.socket, "/version")
                .await
                .ok()
                .flatten()
                .and_then(|v| v["Version"].as_str().map(str::to_owned))
        };
        let docker = docker_socket();
        if docker.exists() {
            let e = Engine { socket: docker.clone(), runtime: "docker" };
            out.push(("runtime docker".to_owned(), match version(e).await {
                Some(v) => format!(
                    "Docker {v} at {}: names id, name, image, restart policy, addresses and published ports (held by docker-proxy or by dockerd itself), Kubernetes labels",
                    docker.display()
                ),
                None => format!(
                    "{} exists but does not answer: Docker's containers are named by their cgroup id only",
                    docker.display()
                ),
            }));
        }
        if let Some(p) = Podman::found() {
            let api = if p.api.socket.exists() { version(p.api.clone()).await } else { None };
            out.push(("runtime podman".to_owned(), match api {
                Some(v) => format!(
                    "Podman {v}, its API at {}: names id, name, image, restart policy, addresses and published ports (held by conmon)",
                    p.api.socket.display()
                ),
                None => format!(
                    "Podman's store at {}: names id, name and image; not its restart policy or published ports (they need its API: `podman system service`, or PODMAN_SOCKET)",
                    p.storage.display()
                ),
            }));
        }
        if let Some(sock) = containerd_socket() {
            let cd = Containerd::new(sock.clone());
            let answers = tokio::time::timeout(CALL_DEADLINE, containerd_client::connect(&cd.socket))
                .await
                .is_ok_and(|r| r.is_ok());
            out.push(("runtime containerd".to_owned(), if answers {
                format!(
                    "containerd at {}: names id, image, and the pod, namespace and container name from the kubelet's io.kubernetes.* labels; not restart policies (the kubelet's) or published ports",
                    sock.display()
                )
            } else {
                format!("{} exists but does not answer: its containers are named by their cgroup id only", sock.display())
            }));
        }
        let crio = PathBuf::from("/var/run/crio/crio.sock");
        if crio.exists() {
            out.push(("runtime cri-o".to_owned(), format!(
                "CRI-O at {}: its containers are told by their cgroup (crio-<id>.scope) and pod uid; not asked for names or images (no client for its API yet)",
                crio.display()
            )));
        }
        if out.is_empty() {
            out.push(("runtime".to_owned(), "none found (Docker, Podman, containerd, CRI-O): containers, if any, are named by their cgroup id only".to_owned()));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_map_is_every_published_address() {
        let v: Value = serde_json::from_str(
            r#"{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"},{"HostIp":"::","HostPort":"8080"}],
                "53/udp":[{"HostIp":"","HostPort":"5353"}],
                "9000/tcp":null, "bad":[{"HostIp":"0.0.0.0","HostPort":"1"}],
                "81/tcp":[{"HostIp":"127.0.0.1","HostPort":"not a port"}]}"#,
        )
        .unwrap();
        let mut got: Vec<String> = published_ports(&v)
            .iter()
            .map(|p| {
                format!(
                    "{} {} {}->{}",
                    if p.tcp { "tcp" } else { "udp" },
                    p.host_ip,
                    p.host_port,
                    p.port
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "tcp 0.0.0.0 8080->80",
                "tcp :: 8080->80",
                "udp 0.0.0.0 5353->53",
                "udp :: 5353->53"
            ]
        );
        assert!(published_ports(&Value::Null).is_empty());
    }

    #[test]
    fn podmans_store_names_its_containers() {
        let v: Value = serde_json::from_str(
            r#"[{"id":"4eb1","names":["pw1"],"image":"4ca8",
                 "metadata":"{\"image-name\":\"localhost/watcher-test/busybox:latest\",\"image-id\":\"4ca8\",\"name\":\"pw1\"}"},
                {"id":"77aa","names":[],"metadata":"not json"}]"#,
        )
        .unwrap();
        let c = from_podman_storage(&v, "4eb1").unwrap();
        assert_eq!(
            (c.runtime, c.name.as_deref(), c.image.as_deref()),
            (
                "podman",
                Some("pw1"),
                Some("localhost/watcher-test/busybox:latest")
            )
        );
        let c = from_podman_storage(&v, "77aa").unwrap();
        assert_eq!((c.name, c.image), (None, None));
        assert!(from_podman_storage(&v, "ffff").is_none());
        assert!(from_podman_storage(&Value::Null, "4eb1").is_none());
    }

    #[test]
    fn inspect_and_event_bodies() {
        let v: Value = serde_json::from_str(
            r#"{"Id":"abc","Name":"/web","Config":{"Image":"nginx:1.25","Labels":{"io.kubernetes.pod.namespace":"shop","io.kubernetes.pod.name":"web-7d9"}},
                "HostConfig":{"RestartPolicy":{"Name":"always"}},
                "NetworkSettings":{"Networks":{"bridge":{"IPAddress":"172.17.0.2","GlobalIPv6Address":""}}}}"#,
        )
        .unwrap();
        let c = from_inspect(&v).unwrap();
        assert_eq!(c.name.as_deref(), Some("web"));
        assert_eq!(c.image.as_deref(), Some("nginx:1.25"));
        assert_eq!(
            (c.pod_namespace.as_deref(), c.pod_name.as_deref()),
            (Some("shop"), Some("web-7d9"))
        );
        assert_eq!(c.restart_policy.as_deref(), Some("always"));
        assert_eq!(
            c.addresses,
            vec!["172.17.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
        let e: Value = serde_json::from_str(
            r#"{"Type":"container","Action":"create","Actor":{"ID":"abc","Attributes":{"image":"busybox","name":"t1"}}}"#,
        )
        .unwrap();
        let c = from_event(&e, "docker").unwrap();
        assert_eq!(
            (c.id.as_ref(), c.name.as_deref(), c.image.as_deref()),
            ("abc", Some("t1"), Some("busybox"))
        );
        assert_eq!(percent(r#"{"a":["b"]}"#), "%7B%22a%22%3A%5B%22b%22%5D%7D");
        let labels: std::collections::HashMap<String, String> = [
            ("io.kubernetes.pod.namespace", "prod"),
            ("io.kubernetes.pod.name", "api-1"),
            ("io.kubernetes.container.name", "api"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = from_containerd("abc", "docker.io/library/api:1", &labels);
        assert_eq!(
            (c.runtime, c.name.as_deref(), c.image.as_deref()),
            ("containerd", Some("api"), Some("docker.io/library/api:1"))
        );
        assert_eq!(
            (c.pod_namespace.as_deref(), c.pod_name.as_deref()),
            (Some("prod"), Some("api-1"))
        );
        let bare = from_containerd("redis-1", "", &Default::default());
        assert_eq!(
            (bare.name.as_deref(), bare.image),
            (Some("redis-1"), None),
            "containerd's id is its name"
        );
    }
}
