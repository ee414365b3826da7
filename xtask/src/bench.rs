//! `cargo xtask bench`: measurements reported as figures, never asserted.
//!
//! Detection latency: the release watcher runs `trace --json --findings` with
//! its stdout on a pipe, real workloads (the `actor` binary) cause each
//! finding many times, and for every `open` record the delay from the kernel
//! timestamp of the deciding event (the record's `mono_ns`, CLOCK_MONOTONIC,
//! taken in the tracepoint) to the moment the line was readable on the pipe
//! (CLOCK_MONOTONIC in the reader) is recorded.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0)).unwrap_or(0)
}

struct Feed {
    lines: Arc<Mutex<Vec<(u64, serde_json::Value)>>>,
    child: std::process::Child,
}

impl Feed {
    fn start(watcher: &Path, args: &[&str]) -> Result<Feed> {
        let mut child = Command::new(watcher)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", watcher.display()))?;
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        let lines: Arc<Mutex<Vec<(u64, serde_json::Value)>>> = Arc::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let at = mono_ns();
                if let Ok(v) = serde_json::from_str(&line) {
                    l.lock().expect("lock").push((at, v));
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("tracepoints") {
                    let _ = tx.send(());
                } else {
                    eprintln!("watcher: {line}");
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60)).context("watcher did not start")?;
        Ok(Feed { lines, child })
    }

    fn stop(mut self) {
        // SAFETY: sending a signal to our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// Wait until `n` open findings of `kind` exist (deadline 60 s).
    fn wait_open(&self, kind: &str, n: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = self.opens(kind).len();
            if c >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .lines
                    .lock()
                    .expect("lock")
                    .iter()
                    .map(|(_, v)| format!("{} {} {}", v["kind"], v["state"], v["summary"]))
                    .collect();
                bail!("only {c} of {n} `{kind}` findings appeared; the feed had:\n{}", seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (read time, record) of the open findings of `kind`.
    fn opens(&self, kind: &str) -> Vec<(u64, u64)> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, v)| v["type"] == "finding" && v["kind"] == kind && v["state"] == "open")
            .filter_map(|(at, v)| v["mono_ns"].as_u64().map(|m| (*at, m)))
            .collect()
    }
}

fn run(actor: &Path, args: &[&str]) -> Result<()> {
    let st = Command::new(actor).args(args).stdout(Stdio::null()).status()?;
    let _ = st;
    Ok(())
}

fn spawn(actor: &Path, args: &[&str]) -> Result<std::process::Child> {
    Ok(Command::new(actor).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?)
}

/// Wait for a `key=` line from a spawned actor.
fn value(c: &mut std::process::Child, key: &str) -> Result<String> {
    let out = c.stdout.as_mut().context("stdout")?;
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("actor ended before printing {key}");
        }
        if let Some(v) = line.trim().strip_prefix(&format!("{key}=")) {
            return Ok(v.to_owned());
        }
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64, usize) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN, 0);
    }
    let at = |q: f64| v[((q * (n - 1) as f64).round() as usize).min(n - 1)];
    (at(0.5), at(0.99), v[n - 1], n)
}

/// Detection latency per finding kind, as markdown rows.
pub fn latency(watcher: &Path, actor: &Path, reps: usize, wakeup_us: &str) -> Result<Vec<String>> {
    let feed = Feed::start(watcher, &["trace", "--json", "--findings", "--wakeup-us", wakeup_us])?;
    // port_conflict: a listener, a failing bind; a new port each time.
    for _ in 0..reps {
        let mut holder = spawn(actor, &["listen-hold", "0.0.0.0", "0"])?;
        let port = value(&mut holder, "port")?;
        run(actor, &["bind-port", &port])?;
        drop(holder.stdin.take());
        holder.wait()?;
    }
    feed.wait_open("port_conflict", reps)?;
    // port_shadowed: a wildcard and a specific listener of different programs.
    for _ in 0..reps {
        let mut a = spawn(actor, &["listen-hold", "0.0.0.0", "0", "reuseport"])?;
        let port = value(&mut a, "port")?;
        let mut b = spawn(actor, &["listen-hold", "127.0.0.1", &port, "reuseport"])?;
        value(&mut b, "listening")?;
        for c in [&mut a, &mut b] {
            drop(c.stdin.take());
            c.wait()?;
        }
    }
    feed.wait_open("port_shadowed", reps)?;
    // zombie_accumulation: 6 children exit unreaped, reaped 50 ms later.
    for _ in 0..reps {
        run(actor, &["zombies", "6", "50"])?;
    }
    feed.wait_open("zombie_accumulation", reps)?;
    // respawn_storm: a supervisor restarting a child that crashes after 20+i ms (a new program each time).
    for i in 0..reps.min(10) {
        run(actor, &["supervise", "6", &(20 + i).to_string()])?;
    }
    feed.wait_open("respawn_storm", reps.min(10))?;
    // duplicate_instances: 11 copies of a program (a new one each time).
    for i in 0..reps.min(10) {
        run(actor, &["copies", "11", &(300 + i).to_string()])?;
    }
    feed.wait_open("duplicate_instances", reps.min(10))?;
    // connect_failures: 12 refused connects to a new closed port.
    for _ in 0..reps {
        run(actor, &["connect-burst", &free_port().to_string(), "12"])?;
    }
    feed.wait_open("connect_failures", reps)?;
    // fork_storm: 800 forks a second for 2.5 s.
    for _ in 0..2 {
        run(actor, &["fork-fast", "2500", "800"])?;
        std::thread::sleep(Duration::from_secs(3));
    }
    feed.wait_open("fork_storm", 2)?;
    // zombie: the deadline (10 s) — latency from the deadline to the line.
    let zs: Vec<_> = (0..3).map(|_| spawn(actor, &["zombies", "1", "10800"])).collect::<Result<_>>()?;
    feed.wait_open("zombie", 3)?;
    for mut z in zs {
        z.wait()?;
    }
    let mut rows = Vec::new();
    for kind in [
        "port_conflict",
        "port_shadowed",
        "zombie_accumulation",
        "respawn_storm",
        "duplicate_instances",
        "connect_failures",
        "fork_storm",
        "zombie",
    ] {
        let lat: Vec<f64> = feed.opens(kind).iter().map(|(at, m)| at.saturating_sub(*m) as f64 / 1e3).collect();
        let (p50, p99, max, n) = percentiles(lat);
        rows.push(format!("| {kind} | {n} | {p50:.0} | {p99:.0} | {max:.0} |"));
    }
    feed.stop();
    Ok(rows)
}

pub fn bench(root: &Path, watcher: &Path, actor: &Path) -> Result<()> {
    let mut out = String::new();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    out.push_str(&format!(
        "Measured by `cargo xtask bench` on {} CPUs, kernel {}, release build.\n\n",
        cpus,
        host.trim()
    ));
    let wakeup = std::env::var("WATCHER_BENCH_WAKEUP_US").unwrap_or_else(|_| "1000".into());
    eprintln!("xtask bench: detection latency (--wakeup-us {wakeup}) …");
    let rows = latency(watcher, actor, 20, &wakeup)?;
    out.push_str(&format!("### Detection latency: deciding kernel event → finding line readable on stdout (µs), `--wakeup-us {wakeup}`\n\n"));
    out.push_str("| finding | n | p50 | p99 | max |\n|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&r);
        out.push('\n');
    }
    out.push_str("\n`zombie` is measured from its deadline (exit + 10 s) to the line.\n");
    print!("{out}");
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let mut f = std::fs::File::create(dir.join("latest.md"))?;
    f.write_all(out.as_bytes())?;
    eprintln!("xtask bench: written to {}", dir.join("latest.md").display());
    Ok(())
}
