//! A healthy host produces no findings: a parallel build of hundreds of C
//! files (thousands of short-lived processes), a server accepting hundreds of
//! connections, a SO_REUSEPORT pool of one program, a master with a dozen
//! forked workers, and a shell loop whose `grep -q` answers 1 every 0.1 s —
//! all at once, under the real watcher with its default thresholds. (Its own
//! test binary, so no other test's deliberate incidents run beside it.)
use std::{
    collections::HashSet,
    process::Command,
    time::{Duration, Instant},
};

use watcher_tests::{actor, free_port, mono_ns, num, require_root, spawn_actor, text, Feed, Value};

const ACTOR: &str = env!("CARGO_BIN_EXE_actor");

fn write_project(dir: &std::path::Path, files: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut objs = Vec::new();
    let mut decls = String::new();
    let mut calls = String::new();
    for i in 0..files {
        std::fs::write(
            dir.join(format!("f{i}.c")),
            format!("int f{i}(int x) {{ return x * {i} + 1; }}\n"),
        )
        .unwrap();
        objs.push(format!("f{i}.o"));
        decls.push_str(&format!("int f{i}(int);\n"));
        calls.push_str(&format!("  s += f{i}(s);\n"));
    }
    std::fs::write(
        dir.join("main.c"),
        format!("{decls}int main(void) {{\n  int s = 0;\n{calls}  return s == 42;\n}}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("Makefile"),
        format!(
            "all: prog\nprog: main.o {}\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O0 -c -o $@ $<\n",
            objs.join(" ")
        ),
    )
    .unwrap();
}

#[test]
fn a_healthy_host_produces_no_findings() {
    if !require_root() {
        return;
    }
    for tool in ["make", "cc"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false),
            "`{tool}` is needed for the parallel-build workload (Debian: build-essential)"
        );
    }
    let feed = Feed::start(&["trace", "--json"]);
    let me = std::process::id();
    let dir = std::env::temp_dir().join(format!("watcher-healthy-{me}"));
    let _ = std::fs::remove_dir_all(&dir);
    write_project(&dir, 400);

    // A pool of SO_REUSEPORT workers of one program.
    let pool_port = free_port().to_string();
    let mut pool: Vec<_> = (0..4)
        .map(|_| spawn_actor(ACTOR, &["listen-hold", "0.0.0.0", &pool_port, "reuseport"]))
        .collect();
    for p in &mut pool {
        p.value("listening");
    }
    // A server accepting hundreds of connections.
    let mut server = spawn_actor(ACTOR, &["serve", "0", "300"]);
    let server_port = server.value("port");
    let clients = std::thread::spawn({
        let port = server_port.clone();
        move || actor(ACTOR, &["clients", &port, "300"])
    });
    // A master with a dozen forked workers.
    let master = std::thread::spawn(|| actor(ACTOR, &["prefork", "12", "3000"]));
    // A shell loop whose grep -q answers 1.
    let poll = std::thread::spawn(|| {
        Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 40 ]; do grep -q watcher-no-such-line /etc/hostname; i=$((i+1)); sleep 0.1; done"])
            .status()
            .expect("sh")
    });
    // The parallel build.
    let build = Command::new("make")
        .args(["-j4", "-s"])
        .current_dir(&dir)
        .output()
        .expect("make");
    assert!(
        build.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    clients.join().expect("clients");
    server.finish();
    master.join().expect("master");
    assert!(poll.join().expect("poll").success());
    for p in pool {
        p.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let end = mono_ns();

    // Deadline-driven findings (a zombie's 10 s age) could still come: watch
    // until the feed has moved 10.5 s past the end of the workload.
    let settle = end + 10_500_000_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = actor(ACTOR, &["exit", "0"]);
        let seen = feed.records().iter().any(|v| {
            text(v, &["type"]) == Some("exit")
                && num(v, &["process", "pid"]) == Some(run.pid as u64)
                && num(v, &["mono_ns"]).unwrap_or(0) >= settle
        });
        if seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the feed never got past the settling point"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let records = feed.records();
    // Every process of the workload: descendants of this test process.
    let mut ours: HashSet<u64> = HashSet::from([me as u64]);
    for v in &records {
        if text(v, &["type"]) == Some("fork") && v["fork"]["thread"] == false {
            if let (Some(parent), Some(child)) = (
                num(v, &["process", "parent", "pid"]),
                num(v, &["process", "pid"]),
            ) {
                if ours.contains(&parent) {
                    ours.insert(child);
                }
            }
        }
    }
    let count = |pred: &dyn Fn(&Value) -> bool| records.iter().filter(|v| pred(v)).count();
    let compilers = count(&|v| {
        text(v, &["type"]) == Some("exec") && text(v, &["process", "name"]) == Some("cc1")
    });
    let accepted = count(&|v| {
        text(v, &["type"]) == Some("connect")
            && text(v, &["event", "outcome"]) == Some("success")
            && num(v, &["destination", "port"]).map(|p| p.to_string()) == Some(server_port.clone())
    });
    let greps = count(&|v| {
        text(v, &["type"]) == Some("exit")
            && text(v, &["process", "name"]) == Some("grep")
            && num(v, &["process", "exit_code"]) == Some(1)
    });
    eprintln!("workload: {} processes, {compilers} cc1 runs, {accepted} connections, {greps} grep exits with 1", ours.len());
    assert!(
        ours.len() > 1200,
        "the workload ran thousands of processes: {}",
        ours.len()
    );
    assert!(compilers >= 400, "{compilers} compiler runs");
    assert!(accepted >= 300, "{accepted} accepted connections");
    assert!(greps >= 40, "{greps} grep -q answers");

    // Nothing was lost: a finding missing because its records were dropped
    // would make this test pass for the wrong reason.
    let losses: Vec<&Value> = records
        .iter()
        .filter(|v| text(v, &["type"]) == Some("loss"))
        .collect();
    assert!(
        losses.is_empty(),
        "records were lost during the healthy workload: {losses:?}"
    );

    let findings: Vec<&Value> = records
        .iter()
        .filter(|v| text(v, &["type"]) == Some("finding"))
        .collect();
    let about_us: Vec<&&Value> = findings
        .iter()
        .filter(|v| {
            v["processes"].as_array().is_some_and(|a| {
                a.iter().any(|p| {
                    p["process"]["pid"]
                        .as_u64()
                        .is_some_and(|pid| ours.contains(&pid))
                })
            })
        })
        .collect();
    for f in findings.iter().filter(|f| !about_us.contains(f)) {
        eprintln!("note: a finding about something else on this host: {f}");
    }
    assert!(
        about_us.is_empty(),
        "a healthy workload produced findings:\n{}",
        about_us
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
