//! What `watcher top` shows, built from records alone (the same records the
//! feed carries, so a daemon's socket feeds it as well as its own pipeline):
//! open incidents, listeners per network namespace, event rates per
//! program and container, and the status. Time is the records' own
//! CLOCK_MONOTONIC (`now` is passed in): the same stream renders the same
//! screen.
use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::output::record::{Body, FindingRecord, Record};

/// A resolved incident stays on screen (fading) this long.
pub(crate) const RESOLVED_FADE_NS: u64 = 5_000_000_000;
/// Rates are over this many one-second buckets.
pub(crate) const RATE_SECONDS: usize = 10;
/// Incidents kept at most (oldest resolved, then oldest, go first).
pub(crate) const MAX_INCIDENTS: usize = 1000;
/// Listeners and programs kept at most.
pub(crate) const MAX_ROWS: usize = 10_000;
/// Outgoing TCP sockets followed at most (for ports in use per destination).
pub(crate) const MAX_OUTGOING: usize = 200_000;
/// A destination with at least this many local ports in use is shown.
pub(crate) const BUSY_PORTS: u32 = 100;

/// One incident as a row.
#[derive(Clone, Debug)]
pub(crate) struct Incident {
    pub id: String,
    pub kind: String,
    /// The main process: program, pid, container.
    pub program: String,
    pub pid: u32,
    pub container: Option<String>,
    /// The second process and its role (the holder of a port, the parent
    /// of zombies, the restarter of a crash loop).
    pub other: Option<String>,
    /// The port or destination, where there is one.
    pub place: Option<String>,
    pub cause: Option<String>,
    pub occurrences: u64,
    pub opened_ns: u64,
    pub resolved_ns: Option<u64>,
    /// The whole last record (Enter shows it).
    pub record: FindingRecord,
}

/// A socket someone listens on (TCP) or has bound (UDP).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ListenKey {
    pub netns: u32,
    pub transport: String,
    pub port: u16,
    pub address: String,
    pub pid: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Listener {
    pub program: String,
    pub container: Option<String>,
    /// An open port_conflict / port_shadowed incident names this port.
    pub trouble: Option<String>,
}

/// Event counts of one program (in one container) per second.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rates {
    /// (second, forks, execs, exits, crashes), newest last.
    buckets: VecDeque<(u64, [u32; 4])>,
}

impl Rates {
    fn add(&mut self, sec: u64, what: usize) {
        if self.buckets.back().map(|b| b.0) != Some(sec) {
            self.buckets.push_back((sec, [0; 4]));
        }
        while self.buckets.len() > RATE_SECONDS + 1 {
            self.buckets.pop_front();
        }
        if let Some(b) = self.buckets.back_mut() {
            b.1[what] += 1;
        }
    }

    /// Forks, execs, exits and crashes over the last RATE_SECONDS before `now_sec`.
    pub(crate) fn totals(&self, now_sec: u64) -> [u32; 4] {
        let mut t = [0u32; 4];
        for (s, c) in &self.buckets {
            if *s + RATE_SECONDS as u64 > now_sec {
                for i in 0..4 {
                    t[i] += c[i];
                }
            }
        }
        t
    }
}

/// Where the records come from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Source {
    Standalone,
    Attached(String),
}

#[derive(Debug)]
pub(crate) struct Model {
    pub incidents: Vec<Incident>,
    pub listeners: BTreeMap<ListenKey, Listener>,
    pub programs: HashMap<(String, Option<String>), Rates>,
    /// Local ports in use now per (namespace, destination): TCP sockets
    /// between their SYN_SENT and their CLOSE.
    pub ports_in_use: HashMap<(u32, String), u32>,
    /// Those sockets (by kernel address), to count each close once.
    outgoing: HashMap<String, (u32, String)>,
    pub source: Source,
    /// Events seen (not findings, losses, health).
    pub events: u64,
    per_second: VecDeque<(u64, u64)>,
    pub lost: u64,
    /// The last health record's status and reason.
    pub health: Option<(String, String)>,
    /// The newest record's time.
    pub now_ns: u64,
    pub first_ns: Option<u64>,
    /// Bumped on every change the screen shows.
    pub version: u64,
    /// Bumped when an incident opens (redraw at once).
    pub opened: u64,
    /// Something the person should know about the view itself.
    pub hint: Option<String>,
}

fn container_label(c: Option<&crate::output::record::Container>) -> Option<String> {
    c.map(|c| c.label().to_owned())
}

fn place(f: &FindingRecord) -> Option<String> {
    let d = &f.details;
    if let Some(port) = d.get("port").and_then(|v| v.as_u64()) {
        let addr = d.get("address").and_then(|v| v.as_str()).unwrap_or("*");
        let t = d.get("transport").and_then(|v| v.as_str()).unwrap_or("");
        let addr = if addr.contains(':') {
            format!("[{addr}]")
        } else {
            addr.to_owned()
        };
        return Some(format!("{t} {addr}:{port}").trim().to_owned());
    }
    d.get("destination")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

fn cause(f: &FindingRecord) -> Option<String> {
    let d = &f.details;
    d.get("causes")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("cause"))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
        .or_else(|| {
            ["last_error", "failure"]
                .iter()
                .find_map(|k| d.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
        })
}

impl Model {
    pub(crate) fn new(source: Source) -> Model {
        Model {
            incidents: Vec::new(),
            listeners: BTreeMap::new(),
            programs: HashMap::new(),
            ports_in_use: HashMap::new(),
            outgoing: HashMap::new(),
            source,
            events: 0,
            per_second: VecDeque::new(),
            lost: 0,
            health: None,
            now_ns: 0,
            first_ns: None,
            version: 0,
            opened: 0,
            hint: None,
        }
    }

    /// Take one record.
    pub(crate) fn apply(&mut self, r: &Record) {
        self.now_ns = self.now_ns.max(r.mono_ns);
        self.first_ns.get_or_insert(r.mono_ns);
        self.version += 1;
        let sec = r.mono_ns / 1_000_000_000;
        match &r.body {
            Body::Finding(f) => self.finding(f, r.mono_ns),
            Body::Loss(l) => self.lost += l.loss.count,
            Body::Health(h) => {
                self.health = Some((h.health.status.clone(), h.health.reason.clone()))
            }
            body => {
                self.events += 1;
                match self.per_second.back_mut() {
                    Some((s, n)) if *s == sec => *n += 1,
                    _ => self.per_second.push_back((sec, 1)),
                }
                while self.per_second.len() > RATE_SECONDS + 1 {
                    self.per_second.pop_front();
                }
                self.event(body, sec);
            }
        }
    }

    fn rates(&mut self, program: &str, container: Option<String>) -> Option<&mut Rates> {
        let key = (program.to_owned(), container);
        if !self.programs.contains_key(&key) && self.programs.len() >= MAX_ROWS {
            return None;
        }
        Some(self.programs.entry(key).or_default())
    }

    fn event(&mut self, body: &Body, sec: u64) {
        match body {
            Body::Fork(x) if !x.fork.thread => {
                let name = x
                    .process
                    .parent
                    .as_ref()
                    .and_then(|p| p.name.clone())
                    .unwrap_or_else(|| x.process.name.clone());
                if let Some(r) = self.rates(&name, container_label(x.container.as_ref())) {
                    r.add(sec, 0);
                }
            }
            Body::Exec(x) => {
                if let Some(r) = self.rates(&x.process.name, container_label(x.container.as_ref()))
                {
                    r.add(sec, 1);
                }
            }
            Body::Exit(x) if x.exit.process_exited => {
                let c = container_label(x.container.as_ref());
                // An abnormal end: a fault, the OOM killer, a fatal signal,
                // or a non-zero exit code.
                let crashed = match x.exit.cause.as_ref().map(|c| c.kind.as_str()) {
                    Some("fault" | "oom_kill" | "signal") => true,
                    _ => x.process.exit_code.is_some_and(|c| c != 0),
                };
                if let Some(r) = self.rates(&x.process.name, c) {
                    r.add(sec, 2);
                    if crashed {
                        r.add(sec, 3);
                    }
                }
                let pid = x.process.pid;
                self.listeners.retain(|k, _| k.pid != pid);
            }
            Body::TcpState(t) if t.tcp.new_state == "LISTEN" => {
                if let Some(p) = &t.process {
                    self.listen(
                        t.network.netns.unwrap_or(0),
                        "tcp",
                        &t.source,
                        p.pid,
                        &p.name,
                        container_label(t.container.as_ref()),
                    );
                }
            }
            Body::TcpState(t) if t.tcp.old_state == "LISTEN" => {
                let (ns, port) = (t.network.netns.unwrap_or(0), t.source.port);
                let pid = t.process.as_ref().map(|p| p.pid);
                self.listeners.retain(|k, _| {
                    !(k.netns == ns && k.port == port && k.transport == "tcp" && Some(k.pid) == pid)
                });
            }
            Body::Bind(b) if b.network.transport == "udp" && b.event.outcome == "success" => {
                if let Some(e) = &b.source {
                    self.listen(
                        b.network.netns.unwrap_or(0),
                        "udp",
                        e,
                        b.process.pid,
                        &b.process.name,
                        container_label(b.container.as_ref()),
                    );
                }
            }
            Body::TcpState(t) if t.tcp.new_state == "SYN_SENT" => {
                if let Some(sk) = t.socket.sk.clone() {
                    if self.outgoing.len() < MAX_OUTGOING && !self.outgoing.contains_key(&sk) {
                        let key = (
                            t.network.netns.unwrap_or(0),
                            format!("{}:{}", t.destination.address, t.destination.port),
                        );
                        *self.ports_in_use.entry(key.clone()).or_default() += 1;
                        self.outgoing.insert(sk, key);
                    }
                }
            }
            Body::TcpState(t) if t.tcp.new_state == "CLOSE" => {
                if let Some(key) = t.socket.sk.as_ref().and_then(|sk| self.outgoing.remove(sk)) {
                    if let Some(n) = self.ports_in_use.get_mut(&key) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            self.ports_in_use.remove(&key);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A socket that listened before the records began (read at start).
    pub(crate) fn seed_listener(
        &mut self,
        netns: u32,
        tcp: bool,
        addr: &str,
        port: u16,
        pid: u32,
        program: &str,
    ) {
        let e = crate::output::record::Endpoint {
            address: addr.to_owned(),
            port,
        };
        self.listen(
            netns,
            if tcp { "tcp" } else { "udp" },
            &e,
            pid,
            program,
            None,
        );
    }

    fn listen(
        &mut self,
        netns: u32,
        transport: &str,
        e: &crate::output::record::Endpoint,
        pid: u32,
        program: &str,
        container: Option<String>,
    ) {
        if self.listeners.len() >= MAX_ROWS {
            return;
        }
        let key = ListenKey {
            netns,
            transport: transport.to_owned(),
            port: e.port,
            address: e.address.clone(),
            pid,
        };
        let trouble = self.trouble_of(e.port);
        self.listeners.insert(
            key,
            Listener {
                program: program.to_owned(),
                container,
                trouble,
            },
        );
    }

    /// The open port incident that names `port`, if any.
    fn trouble_of(&self, port: u16) -> Option<String> {
        self.incidents
            .iter()
            .filter(|i| i.resolved_ns.is_none())
            .filter(|i| i.kind == "port_conflict" || i.kind == "port_shadowed")
            .find(|i| i.record.details.get("port").and_then(|p| p.as_u64()) == Some(port as u64))
            .map(|i| {
                if i.kind == "port_conflict" {
                    "conflict".to_owned()
                } else {
                    "shadowed".to_owned()
                }
            })
    }

    fn finding(&mut self, f: &FindingRecord, ts: u64) {
        let main = f.processes.first();
        let row = Incident {
            id: f.id.clone(),
            kind: f.kind.clone(),
            program: main.map(|p| p.process.name.clone()).unwrap_or_default(),
            pid: main.map(|p| p.process.pid).unwrap_or(0),
            container: main
                .and_then(|p| p.container.as_ref())
                .map(|c| c.label().to_owned()),
            other: f
                .processes
                .get(1)
                .map(|p| format!("{} {} ({})", p.role, p.process.name, p.process.pid)),
            place: place(f),
            cause: cause(f),
            occurrences: f.count,
            opened_ns: ts,
            resolved_ns: (f.state == "resolved").then_some(ts),
            record: f.clone(),
        };
        match self.incidents.iter_mut().find(|i| i.id == f.id) {
            Some(i) => {
                let opened = i.opened_ns;
                *i = row;
                i.opened_ns = opened;
            }
            None => {
                if f.state == "resolved" {
                    return;
                }
                self.opened += 1;
                if self.incidents.len() >= MAX_INCIDENTS {
                    let victim = self
                        .incidents
                        .iter()
                        .position(|i| i.resolved_ns.is_some())
                        .unwrap_or(0);
                    self.incidents.remove(victim);
                }
                self.incidents.push(row);
            }
        }
        // Listeners on a port this incident is about are marked (or cleared).
        if let Some(port) = f.details.get("port").and_then(|p| p.as_u64()) {
            let trouble = self.trouble_of(port as u16);
            for (k, l) in self.listeners.iter_mut() {
                if k.port as u64 == port {
                    l.trouble = trouble.clone();
                }
            }
        }
    }

    /// Forget what faded out by `now`; whether anything went.
    pub(crate) fn expire(&mut self, now_ns: u64) -> bool {
        let before = self.incidents.len();
        self.incidents
            .retain(|i| i.resolved_ns.is_none_or(|t| now_ns < t + RESOLVED_FADE_NS));
        let gone = self.incidents.len() != before;
        if gone {
            self.version += 1;
        }
        gone
    }

    /// Events per second over the last full seconds before `now`.
    pub(crate) fn events_per_s(&self, now_ns: u64) -> f64 {
        let now = now_ns / 1_000_000_000;
        let span = self
            .first_ns
            .map(|f| (now.saturating_sub(f / 1_000_000_000)).clamp(1, RATE_SECONDS as u64))
            .unwrap_or(1);
        let n: u64 = self
            .per_second
            .iter()
            .filter(|(s, _)| *s < now && *s + span >= now)
            .map(|(_, n)| n)
            .sum();
        n as f64 / span as f64
    }

    /// Incidents, newest first.
    pub(crate) fn incidents_newest_first(&self) -> Vec<&Incident> {
        let mut v: Vec<&Incident> = self.incidents.iter().collect();
        v.sort_by(|a, b| b.opened_ns.cmp(&a.opened_ns).then(a.id.cmp(&b.id)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn records(text: &str) -> Vec<Record> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn incidents_open_update_and_fade_after_resolving() {
        let mut m = Model::new(Source::Standalone);
        for r in records(include_str!("testdata/stream.ndjson")) {
            m.apply(&r);
        }
        let open: Vec<&str> = m
            .incidents_newest_first()
            .iter()
            .filter(|i| i.resolved_ns.is_none())
            .map(|i| i.kind.as_str())
            .collect();
        assert_eq!(open, ["respawn_storm", "port_conflict"]);
        let resolved = m.incidents.iter().find(|i| i.kind == "zombie").unwrap();
        assert!(resolved.resolved_ns.is_some());
        assert!(!m.expire(m.now_ns));
        assert!(m.expire(m.now_ns + RESOLVED_FADE_NS));
        assert!(m.incidents.iter().all(|i| i.kind != "zombie"));
    }

    #[test]
    fn listeners_are_marked_while_their_port_is_fought_over_and_leave_with_their_process() {
        let mut m = Model::new(Source::Standalone);
        for r in records(include_str!("testdata/stream.ndjson")) {
            m.apply(&r);
        }
        let l: Vec<(&ListenKey, &Listener)> =
            m.listeners.iter().filter(|(k, _)| k.port == 8080).collect();
        assert_eq!(l.len(), 1, "{:?}", m.listeners);
        assert_eq!(l[0].1.trouble.as_deref(), Some("conflict"));
        assert_eq!(l[0].1.program, "python3");
        // The UDP bind of the resolver is a listener too; the exited server is not.
        assert!(m
            .listeners
            .keys()
            .any(|k| k.transport == "udp" && k.port == 5353));
        assert!(!m.listeners.keys().any(|k| k.port == 9000));
    }

    #[test]
    fn ports_in_use_per_destination_follow_syn_sent_and_close() {
        let mut m = Model::new(Source::Standalone);
        let line = |i: u32, old: &str, new: &str| {
            format!(
                r#"{{"schema":1,"time":"2026-12-03T09:00:00.000000Z","mono_ns":{},"type":"tcp_state","process":{{"pid":9,"name":"curl"}},"source":{{"address":"10.0.0.1","port":{}}},"destination":{{"address":"10.0.0.5","port":443}},"network":{{"transport":"tcp","type":"ipv4","netns":7}},"tcp":{{"old_state":"{old}","new_state":"{new}"}},"socket":{{"sk":"0x{i:x}"}}}}"#,
                1000 + i,
                30000 + i
            )
        };
        for i in 0..150 {
            m.apply(&records(&line(i, "CLOSE", "SYN_SENT"))[0]);
        }
        // A second SYN_SENT of one socket counts once; 50 close.
        m.apply(&records(&line(0, "CLOSE", "SYN_SENT"))[0]);
        for i in 0..50 {
            m.apply(&records(&line(i, "ESTABLISHED", "CLOSE"))[0]);
        }
        assert_eq!(
            m.ports_in_use.get(&(7, "10.0.0.5:443".to_owned())),
            Some(&100)
        );
        for i in 50..150 {
            m.apply(&records(&line(i, "ESTABLISHED", "CLOSE"))[0]);
        }
        assert!(m.ports_in_use.is_empty());
    }

    #[test]
    fn rates_count_the_last_ten_seconds_per_program_and_container() {
        let mut m = Model::new(Source::Standalone);
        for r in records(include_str!("testdata/stream.ndjson")) {
            m.apply(&r);
        }
        let now = m.now_ns / 1_000_000_000;
        let api = m
            .programs
            .get(&("api".to_owned(), Some("shop-api".to_owned())))
            .unwrap();
        let [forks, execs, exits, crashes] = api.totals(now);
        assert_eq!((execs, exits, crashes), (4, 4, 4), "forks {forks}");
        assert!(m.events_per_s(m.now_ns + 1_000_000_000) > 0.0);
    }
}
