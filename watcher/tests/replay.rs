//! The replay corpus: kernel records recorded while the end-to-end tests
//! ran (`watcher/tests/corpus/*.rec`, see its README), replayed through
//! decode → enrich → detect with the detectors' deadlines fired at their
//! times; the findings must be exactly those checked in beside each
//! recording (`*.findings.ndjson`). A change that alters what any detector
//! finds on real records fails here; when the change is meant, rewrite
//! the expected findings with `UPDATE_CORPUS=1` and review their diff.
use std::path::{Path, PathBuf};

use watcher::{
    detect::{DetectConfig, Finding},
    kernel::{
        clock::Clock,
        decode::{decode, read_recording},
    },
    pipeline::engine::Engine,
    world::proctable::ProcessTable,
};

/// The findings of one recording, one JSON record per line.
fn replay(bytes: &[u8]) -> Vec<String> {
    // Nothing from this machine: no /proc parents, no socket tables (the
    // kernel is said to know no socket), a fixed wall clock. Opens about
    // processes are held for their confirmation (`confirm_before_open`),
    // as when the corpus was checked in, and the confirmation says at once
    // that the recorded processes are not in /proc (`Recorded`): such an
    // open is withdrawn unless a later record of the recording settles it.
    // (The real worker read this machine's /proc on a thread of its own:
    // whether its answer came before the replay moved on depended on the
    // machine — 13 findings on one, 19 on another.)
    let table = ProcessTable::with_parent_lookup(65_536, Box::new(|_| None));
    let mut engine = Engine::new(
        DetectConfig {
            confirm_before_open: true,
            ..DetectConfig::default()
        },
        table,
        Clock::fixed(0),
        Box::new(watcher::world::Recorded),
    );
    let mut out = Vec::new();
    let mut last = 0u64;
    for record in read_recording(bytes) {
        let Ok(ev) = decode(record) else {
            out.push("undecodable record".to_owned());
            continue;
        };
        fire_deadlines(&mut engine, ev.header.ts_ns, &mut out);
        let fs = engine.handle_opt(&ev, None);
        say(&engine, fs, &mut out);
        last = last.max(ev.header.ts_ns);
    }
    engine.caught_up();
    // What the recording's end leaves open decides within ten minutes.
    fire_deadlines(&mut engine, last + 600_000_000_000, &mut out);
    out
}

/// Findings as their records.
fn say(engine: &Engine, fs: Vec<Finding>, out: &mut Vec<String>) {
    for f in fs {
        let r = engine.finding_record(&f);
        out.push(serde_json::to_string(&r).expect("serializes"));
    }
}

/// Fire every deadline up to `until`, each at its own time.
fn fire_deadlines(engine: &mut Engine, until: u64, out: &mut Vec<String>) {
    let mut fired = 0;
    while let Some(d) = engine.next_deadline().filter(|&d| d <= until) {
        let fs = engine.tick(d);
        say(engine, fs, out);
        fired += 1;
        assert!(fired < 1_000_000, "a deadline at {d} does not move");
    }
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("watcher/tests/corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rec"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_recorded_scenarios_give_the_findings_checked_in() {
    let update = std::env::var_os("UPDATE_CORPUS").is_some();
    let recordings = corpus();
    assert!(
        !recordings.is_empty(),
        "no recordings in watcher/tests/corpus"
    );
    let mut kinds = std::collections::BTreeSet::new();
    let mut differ = Vec::new();
    for rec in &recordings {
        let bytes = std::fs::read(rec).expect("read recording");
        let got = replay(&bytes);
        for line in &got {
            let v: serde_json::Value = serde_json::from_str(line).expect("a finding record");
            kinds.insert(v["kind"].as_str().unwrap_or("?").to_owned());
        }
        let expected_path = rec.with_extension("findings.ndjson");
        let got_text: String = got.iter().map(|l| format!("{l}\n")).collect();
        if update {
            std::fs::write(&expected_path, &got_text).expect("write expected findings");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (make it with UPDATE_CORPUS=1)",
                expected_path.display()
            )
        });
        if expected != got_text {
            let first = expected
                .lines()
                .zip(got_text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(expected.lines().count().min(got.len()));
            differ.push(format!(
                "{}: {} findings expected, {} now; first difference at line {}:\n  expected: {}\n  now:      {}",
                rec.display(),
                expected.lines().count(),
                got.len(),
                first + 1,
                expected.lines().nth(first).unwrap_or("(none)"),
                got_text.lines().nth(first).unwrap_or("(none)")
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "the replay corpus finds something else now (if meant: UPDATE_CORPUS=1, and review the diff):\n{}",
        differ.join("\n")
    );
    // The corpus is worth its bytes only if it exercises the detectors.
    assert!(
        kinds.len() >= 3,
        "the corpus's findings cover only {kinds:?}"
    );
}
