//! `port_shadowed`: a socket starts receiving on a port (a TCP listen, a UDP
//! bind) while another process holds an overlapping address of the same
//! protocol: a wildcard and a specific address (the specific one wins for its
//! address), IPv4 and IPv6 wildcards (split by family), or SO_REUSEPORT
//! members of different programs or users (connections split between them).
//! Members of one program's SO_REUSEPORT pool, one process's own sockets and
//! allow-listed ports are not findings. Resolves when one of them releases the port.
//!
//! Only sockets of one network namespace are compared. Docker's proxy holds a
//! published port twice (0.0.0.0 and [::], two processes forwarding to the
//! same container address and port): one service, never shadowing. A host
//! process that takes 127.0.0.1:P over it *is* the incident, and the finding
//! names the container behind the proxy.
use crate::world::sockdiag::PortKey;
use std::{net::IpAddr, sync::Arc};

use serde::Serialize;

use super::{
    addr_port,
    incident::Incidents,
    sockets::{is_wildcard, normalize, overlaps, Changes, Holder, SocketTable},
    who, who_in, ContainerView, DetectConfig, Finding, Input, Involved, Kind,
};
use crate::world::containers::{docker_proxy_target, ContainerInfo};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.port_shadowed]`
    PortShadowedCfg {}
);

impl Declared for PortShadowed {
    const NAME: &'static str = "port_shadowed";
    const SEVERITY: &'static str = "warning";
    const ADVICE: &'static str = "Two programs listen on overlapping addresses of one port: connections go to one of them, not necessarily the intended one. Stop one, or bind them to distinct ports or addresses.";
    type Config = PortShadowedCfg;
    fn new(cfg: &DetectConfig) -> Self {
        PortShadowed::new(cfg)
    }
}

detector!(PortShadowed, |s, i, c| {
    PortShadowed::on_event(s, i, c.sockets, c.changes)
}, wants: [Bound, ListenStarted, ListenStopped, SockClosed, Exited]);

type Key = PortKey;

pub struct PortShadowed {
    pub incidents: Incidents<Key>,
    cfg: DetectConfig,
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Who a host socket is held for, when a container runtime holds it for a
/// container.
pub(crate) struct HeldFor {
    /// The container, when the runtime has said which.
    pub container: Option<Arc<ContainerInfo>>,
    /// Where it forwards: the container's address (when known) and port.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// Docker's userland proxy (it names its target in its arguments).
    pub proxy: bool,
}

impl HeldFor {
    /// Two holders of one publication (the IPv4 and IPv6 sockets of one
    /// published port, in one process or two): one service.
    fn same(&self, other: &HeldFor) -> bool {
        match (&self.container, &other.container) {
            (Some(a), Some(b)) => a.id == b.id && self.port == other.port,
            _ => self.ip.is_some() && self.ip == other.ip && self.port == other.port,
        }
    }
}

/// The container a host socket is held for: Docker's proxy names the
/// container address it forwards to; any other holder (dockerd itself with
/// `userland-proxy: false`, Podman's conmon or rootlessport) is found in the
/// runtime's own port map by the exact address and port it holds. A process
/// inside a container holds its own ports.
pub(crate) fn held_for(h: &Holder, view: &dyn ContainerView) -> Option<HeldFor> {
    if let Some((ip, port)) = docker_proxy_target(&h.proc) {
        return Some(HeldFor {
            container: view.by_address(ip),
            ip: Some(ip),
            port,
            proxy: true,
        });
    }
    if h.proc.container_id.is_some() || !is_runtime_process(&h.proc) {
        return None;
    }
    let (c, p) = view.by_published(h.tcp, h.addr, h.port)?;
    Some(HeldFor {
        ip: c.addresses.first().copied(),
        container: Some(c),
        port: p.port,
        proxy: false,
    })
}

/// Programs that hold host ports for containers: Docker's engine and
/// proxy, rootless Docker's and Podman's port forwarders, Podman's conmon
/// and netavark, user-mode networking. A host program holding a published
/// address in another network namespace is not one of them.
fn is_runtime_process(p: &crate::world::proctable::Proc) -> bool {
    const HOLDERS: &[&str] = &[
        "dockerd",
        "docker-proxy",
        "rootlesskit",
        "rootlessport",
        "slirp4netns",
        "pasta",
        "pasta.avx2",
        "conmon",
        "podman",
        "netavark",
        "containerd",
        "crio",
    ];
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let names = [
        p.exe.as_deref().map(base),
        Some(base(&p.comm)),
        p.argv.as_ref().and_then(|a| a.first()).map(|a| base(&a)),
    ];
    names
        .iter()
        .flatten()
        .any(|n| HOLDERS.contains(&n.as_str()))
}

/// A runtime's name as people write it.
fn runtime_name(runtime: &str) -> &str {
    match runtime {
        "docker" => "Docker",
        "podman" => "Podman",
        "containerd" => "containerd",
        "cri-o" => "CRI-O",
        other => other,
    }
}

/// A holder in a summary: `pid 7 (nginx …)`, with the container it runs in,
/// or for a port a runtime holds the container it is published for.
pub(crate) fn holder_name(h: &Holder, view: &dyn ContainerView) -> String {
    let Some(f) = held_for(h, view) else {
        return who_in(&h.proc, view);
    };
    let at = match f.ip {
        Some(ip) => addr_port(ip, f.port),
        None => format!("port {}", f.port),
    };
    match (&f.container, f.proxy) {
        (Some(c), true) => format!(
            "{}, Docker's proxy for {} at {at}",
            who(&h.proc),
            c.describe()
        ),
        (None, _) => format!("{}, Docker's proxy for the container at {at}", who(&h.proc)),
        (Some(c), false) => format!(
            "{}, {}'s port for {} at {at}",
            who(&h.proc),
            runtime_name(c.runtime),
            c.describe(),
        ),
    }
}

/// `published_by_container` in a port finding's details: the container a
/// runtime holds the port for, and where it forwards.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct PublishedBy {
    pub id: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub runtime: &'static str,
    pub address: Option<String>,
    pub port: u16,
}

/// [`PublishedBy`] of a holder, when a runtime has said which container.
pub(crate) fn published_details(f: &HeldFor) -> Option<PublishedBy> {
    let c = f.container.as_ref()?;
    Some(PublishedBy {
        id: c.id.to_string(),
        name: c.name.as_deref().map(str::to_owned),
        image: c.image.as_deref().map(str::to_owned),
        runtime: c.runtime,
        address: f.ip.map(|ip| ip.to_string()),
        port: f.port,
    })
}

/// One of a shadowed port's two holders.
#[derive(Serialize)]
struct HolderAt {
    pid: u32,
    address: String,
}

/// What a `port_shadowed` finding says.
#[derive(Serialize)]
struct Shadowed {
    transport: &'static str,
    port: u16,
    network_namespace: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    published_by_container: Option<PublishedBy>,
    /// The new holder, then the one it shadows.
    holders: [HolderAt; 2],
    #[serde(skip)]
    routes: Routes,
}

impl std::fmt::Display for Shadowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "port {} ({}) is shadowed: {}",
            self.port, self.transport, self.routes
        )
    }
}

/// Who receives a shadowed port's connections.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Routes {
    /// Both bound the same address (SO_REUSEPORT): connections are split.
    Split { a: String, b: String, addr: String },
    /// Wildcards of two families: each family's connections go to one.
    ByFamily {
        fa: &'static str,
        a: String,
        aaddr: String,
        fb: &'static str,
        b: String,
        baddr: String,
    },
    /// A specific address wins over the wildcard for its address.
    Specific {
        spec_addr: String,
        spec: String,
        family: &'static str,
        port: u16,
        wild: String,
        wild_addr: String,
    },
}

impl std::fmt::Display for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Routes::Split { a, b, addr } => {
                write!(f, "{a} and {b} both receive {addr} (SO_REUSEPORT): connections are split between them")
            }
            Routes::ByFamily { fa, a, aaddr, fb, b, baddr } => {
                // (The port of `1.2.3.4:80` / `[::1]:80`.)
                let port = aaddr.rsplit(':').next().unwrap_or("");
                write!(f, "{fa} connections to port {port} go to {a} ({aaddr}), {fb} ones to {b} ({baddr})")
            }
            Routes::Specific { spec_addr, spec, family, port, wild, wild_addr } => write!(
                f,
                "connections to {spec_addr} go to {spec}, all other {family} connections to port {port} to {wild} on {wild_addr}"
            ),
        }
    }
}

/// Who receives what, for two overlapping holders named by `name`.
pub(crate) fn routes(a: &Holder, b: &Holder, name: &dyn Fn(&Holder) -> String) -> Routes {
    let (aa, ba) = (normalize(a.addr), normalize(b.addr));
    let port = a.port;
    if aa == ba {
        return Routes::Split {
            a: name(a),
            b: name(b),
            addr: addr_port(aa, port),
        };
    }
    let (wild, spec) = if is_wildcard(aa) && !is_wildcard(ba) {
        (a, b)
    } else if is_wildcard(ba) && !is_wildcard(aa) {
        (b, a)
    } else {
        // Both wildcards of different families.
        return Routes::ByFamily {
            fa: family(aa),
            a: name(a),
            aaddr: addr_port(aa, port),
            fb: family(ba),
            b: name(b),
            baddr: addr_port(ba, port),
        };
    };
    Routes::Specific {
        spec_addr: addr_port(spec.addr, port),
        spec: name(spec),
        family: family(wild.addr),
        port,
        wild: name(wild),
        wild_addr: addr_port(wild.addr, port),
    }
}

/// What a shadowing of `old` by `new` says, and the two processes.
fn said(new: &Holder, old: &Holder, view: &dyn ContainerView) -> (Shadowed, Vec<Involved>) {
    let name = |h: &Holder| holder_name(h, view);
    let facts = Shadowed {
        transport: if new.tcp { "tcp" } else { "udp" },
        port: new.port,
        network_namespace: new.netns,
        published_by_container: [new, old]
            .iter()
            .find_map(|h| held_for(h, view).and_then(|f| published_details(&f))),
        holders: [
            HolderAt {
                pid: new.proc.key.tgid,
                address: new.addr.to_string(),
            },
            HolderAt {
                pid: old.proc.key.tgid,
                address: old.addr.to_string(),
            },
        ],
        routes: routes(new, old, &name),
    };
    let processes = vec![
        Involved {
            role: "new_holder",
            proc: new.proc.clone(),
            address: Some(addr_port(new.addr, new.port)),
            since_ns: new.since_ns,
        },
        Involved {
            role: "holder",
            proc: old.proc.clone(),
            address: Some(addr_port(old.addr, old.port)),
            since_ns: old.since_ns,
        },
    ];
    (facts, processes)
}

impl PortShadowed {
    pub fn new(cfg: &DetectConfig) -> PortShadowed {
        PortShadowed {
            incidents: Incidents::new(
                Kind::PortShadowed,
                cfg.update_interval_ns(),
                cfg.max_incidents,
            ),
            cfg: cfg.clone(),
        }
    }

    /// Settings from a reloaded configuration: what comes next uses them;
    /// state and open incidents stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.incidents
            .set_limits(cfg.update_interval_ns(), cfg.max_incidents);
        self.cfg = cfg.clone();
    }

    /// A conflicting pair: different processes, overlapping addresses, and
    /// different programs or users (one program's REUSEPORT pool is fine).
    fn conflicts(&self, a: &Holder, b: &Holder, view: &dyn ContainerView) -> bool {
        a.proc.key.tgid != b.proc.key.tgid
            && a.netns == b.netns
            && overlaps(a.addr, b.addr)
            && !one_published_port(a, b, view)
            && (a.proc.program != b.proc.program || a.proc.uid != b.proc.uid)
            && !self.cfg.allowed_program(&a.proc)
            && !self.cfg.allowed_program(&b.proc)
    }

    fn pair(
        &self,
        sockets: &SocketTable,
        key: Key,
        view: &dyn ContainerView,
    ) -> Option<(Holder, Holder)> {
        self.pair_where(sockets, key, view, &|_, _| true)
    }

    /// The first conflicting pair `want` accepts, the newer holder first
    /// (one bound before watcher started is the older).
    fn pair_where(
        &self,
        sockets: &SocketTable,
        key: Key,
        view: &dyn ContainerView,
        want: &dyn Fn(&Holder, &Holder) -> bool,
    ) -> Option<(Holder, Holder)> {
        let hs = sockets.holders(key);
        for (x, a) in hs.iter().enumerate() {
            for b in &hs[x + 1..] {
                if self.conflicts(a, b, view) && want(a, b) {
                    let (new, old) = if a.since_ns >= b.since_ns { (a, b) } else { (b, a) };
                    return Some((new.clone(), old.clone()));
                }
            }
        }
        None
    }

    pub fn on_event(
        &mut self,
        i: &Input,
        sockets: &SocketTable,
        changes: &Changes<'_>,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let ts = i.ev.header.ts_ns;
        if let Some(new) = &changes.receiving {
            let key = new.key();
            if !self.cfg.allowed_port(new.port) {
                let other = sockets
                    .holders(key)
                    .iter()
                    .find(|h| self.conflicts(h, new, i.containers))
                    .cloned();
                if let Some(old) = other {
                    let (facts, processes) = said(new, &old, i.containers);
                    out.extend(self.incidents.raise(
                        key,
                        &format!("{key:?}"),
                        ts,
                        1,
                        &facts,
                        processes,
                    ));
                }
            }
        }
        // Something went away: resolve incidents whose pair no longer exists.
        if !changes.removed.is_empty() || changes.exited.is_some() {
            let mut keys: Vec<Key> = changes.removed.iter().map(Holder::key).collect();
            if let Some(p) = &changes.exited {
                keys.extend(
                    self.incidents
                        .keys()
                        .filter(|k| {
                            self.incidents.get(k).is_some_and(|inc| {
                                inc.processes.iter().any(|x| x.proc.key == p.key)
                            })
                        })
                        .copied(),
                );
            }
            keys.sort();
            keys.dedup();
            for key in keys {
                if self.incidents.is_open(&key) && self.pair(sockets, key, i.containers).is_none() {
                    let gone = changes
                        .removed
                        .iter()
                        .find(|h| h.key() == key)
                        .map(|h| who(&h.proc))
                        .or_else(|| changes.exited.map(who))
                        .unwrap_or_else(|| "a holder".into());
                    out.extend(
                        self.incidents.resolve(
                            &key,
                            ts,
                            format_args!(
                                "{gone} released port {}: it is no longer shadowed",
                                key.2
                            ),
                        ),
                    );
                }
            }
        }
        out
    }

    /// The kernel's table of `key` answered late (asked at `asked_ns`, event
    /// time), and the socket table was corrected with it: an incident whose
    /// pair it no longer holds is restated with the pair it does hold, or
    /// resolved when none is left; a shadowing the correction shows, of a
    /// holder that came with the event the question was about (or after
    /// it), opens — what the answer would have opened had it come at once.
    pub fn reconfirm(
        &mut self,
        key: Key,
        sockets: &SocketTable,
        view: &dyn ContainerView,
        now: u64,
        asked_ns: Option<u64>,
    ) -> Option<Finding> {
        let Some(inc) = self.incidents.get(&key) else {
            let t = asked_ns.filter(|_| !self.cfg.allowed_port(key.2))?;
            let (new, old) = self.pair_where(sockets, key, view, &|a, b| {
                a.since_ns.max(b.since_ns).is_some_and(|s| s >= t)
            })?;
            let (facts, processes) = said(&new, &old, view);
            return self
                .incidents
                .raise(key, &format!("{key:?}"), now, 1, &facts, processes);
        };
        let named: Vec<crate::world::proctable::ProcKey> =
            inc.processes.iter().map(|x| x.proc.key).collect();
        let still = |a: &Holder, b: &Holder| named.contains(&a.proc.key) && named.contains(&b.proc.key);
        if self.pair_where(sockets, key, view, &still).is_some() {
            return None;
        }
        match self.pair(sockets, key, view) {
            Some((new, old)) => {
                let (facts, processes) = said(&new, &old, view);
                self.incidents.restate(&key, &facts, processes, now)
            }
            None => self.incidents.resolve(
                &key,
                now,
                format_args!(
                    "the kernel's socket table shows port {} no longer shadowed",
                    key.2
                ),
            ),
        }
    }

    /// The open shadowing of a TCP port of one namespace, as a sentence, for other findings to mention.
    pub fn shadowed_port(&self, netns: u32, port: u16) -> Option<String> {
        self.incidents
            .get(&(netns, true, port))
            .map(|inc| inc.summary.clone())
    }
}

/// Two holders of the same published port of one container (Docker's
/// proxies for IPv4 and IPv6, or a runtime's own two sockets): one service.
pub(crate) fn one_published_port(a: &Holder, b: &Holder, view: &dyn ContainerView) -> bool {
    match (held_for(a, view), held_for(b, view)) {
        (Some(x), Some(y)) => x.same(&y),
        _ => false,
    }
}

#[cfg(test)]
mod words {
    use super::*;

    #[test]
    fn routes_say_who_receives_what() {
        let r = Routes::ByFamily {
            fa: "IPv4",
            a: "pid 1 (a)".into(),
            aaddr: "0.0.0.0:80".into(),
            fb: "IPv6",
            b: "pid 2 (b)".into(),
            baddr: "[::]:80".into(),
        };
        assert_eq!(r.to_string(), "IPv4 connections to port 80 go to pid 1 (a) (0.0.0.0:80), IPv6 ones to pid 2 (b) ([::]:80)");
    }
}
