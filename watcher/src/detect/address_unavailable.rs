//! `address_unavailable`: a bind fails with EADDRNOTAVAIL — the address is
//! not on this host (taken by or reserved for another machine, an interface
//! not up yet). One incident per address; resolves when a bind to it succeeds.
use std::net::IpAddr;

use serde::Serialize;

use super::{
    addr_port, incident::Incidents, sockets::normalize, who, DetectConfig, Finding,
    Input, Involved, Kind,
};
use crate::world::domain::{BindError, DomainEvent};
use super::registry::{detector, Declared};

crate::detect::config::section!(
    /// `[detect.address_unavailable]`
    AddressUnavailableCfg {}
);

impl Declared for AddressUnavailable {
    const NAME: &'static str = "address_unavailable";
    const SEVERITY: &'static str = "warning";
    const ADVICE: &'static str = "A program binds an address this host does not have (a moved IP, an interface not up yet, a wrong bind address in its config). Fix its bind address or bring the address up.";
    type Config = AddressUnavailableCfg;
    fn new(cfg: &DetectConfig) -> Self {
        AddressUnavailable::new(cfg)
    }
}

detector!(AddressUnavailable, |s, i, _c| {
    AddressUnavailable::on_event(s, i)
}, wants: [Bound, BindFailed]);

/// What an `address_unavailable` finding says.
#[derive(Serialize)]
struct NotLocal {
    #[serde(skip)]
    who: String,
    address: IpAddr,
    port: u16,
    network_namespace: u32,
}

impl std::fmt::Display for NotLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cannot bind {}: {} is not an address of this host (taken by or reserved for another machine, or its interface is down)",
            self.who,
            addr_port(self.address, self.port),
            self.address
        )
    }
}

pub struct AddressUnavailable {
    /// Keyed by (network namespace, address).
    pub incidents: Incidents<(u32, IpAddr)>,
    cfg: DetectConfig,
}

impl AddressUnavailable {
    pub fn new(cfg: &DetectConfig) -> AddressUnavailable {
        AddressUnavailable {
            incidents: Incidents::new(
                Kind::AddressUnavailable,
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

    pub fn on_event(&mut self, i: &Input) -> Vec<Finding> {
        let (b, failed) = match *i.event {
            DomainEvent::Bound { local, .. } => (local, false),
            DomainEvent::BindFailed {
                local,
                error: BindError::NotAvailable,
            } => (local, true),
            _ => return Vec::new(),
        };
        let ip = normalize(b.ip);
        let ts = i.ev.header.ts_ns;
        if failed {
            let Some(p) = i.subject else {
                return Vec::new();
            };
            if self.cfg.allowed_port(b.port) || self.cfg.allowed_program(p) {
                return Vec::new();
            }
            let facts = NotLocal {
                who: who(p),
                address: ip,
                port: b.port,
                network_namespace: b.netns,
            };
            let processes = vec![Involved {
                role: "failing",
                proc: p.clone(),
                address: Some(addr_port(ip, b.port)),
                since_ns: None,
            }];
            return self
                .incidents
                .raise(
                    (b.netns, ip),
                    &format!("{}/{ip}", b.netns),
                    ts,
                    1,
                    &facts,
                    processes,
                )
                .into_iter()
                .collect();
        }
        if self.incidents.is_open(&(b.netns, ip)) {
            let by = i
                .subject
                .map(who)
                .unwrap_or_else(|| format!("pid {}", i.ev.header.tgid));
            return self
                .incidents
                .resolve(
                    &(b.netns, ip),
                    ts,
                    format_args!(
                        "{by} bound {}: {ip} is available now",
                        addr_port(ip, b.port)
                    ),
                )
                .into_iter()
                .collect();
        }
        Vec::new()
    }
}
