//! The layers point down: a module may use its own layer and those below
//! it, never one above. The order (lib.rs says what each holds):
//!
//!   kernel → world → detect → output → pipeline → cli
//!
//! (`pipeline` runs the loop that feeds `detect` and writes through
//! `output`, so it sits above both; `cli` starts everything.) This test reads
//! every source file of `watcher/src` and fails on a `crate::<layer>` path
//! that runs up — in a `use` or written out in the code — unless it is one
//! of the few listed in `KNOWN`, each with why it is still there. A listed
//! one that is gone fails too, so the list only shrinks.
use std::path::{Path, PathBuf};

const ORDER: [&str; 6] = ["kernel", "world", "detect", "output", "pipeline", "cli"];

/// (file under watcher/src, the higher layer it still uses): why.
const KNOWN: &[(&str, &str, &str)] = &[(
    "detect/testkit.rs",
    "pipeline",
    "the detectors' test kit replays events through the real engine (enrichment and lookups included), so a detector's unit test sees what it sees in a run; test code only",
)];

fn rank(layer: &str) -> Option<usize> {
    ORDER.iter().position(|l| *l == layer)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The layers a source text names: `crate::<layer>` written out, and the
/// first names inside a `crate::{ … }` group.
fn layers_named(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level entries of the group.
            let (mut depth, mut start) = (0usize, true);
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        start = true;
                        continue;
                    }
                    _ => {}
                }
                if start && depth == 0 {
                    if c.is_alphanumeric() || c == '_' {
                        word.push(c);
                        continue;
                    }
                    if !word.is_empty() {
                        out.push(std::mem::take(&mut word));
                        start = false;
                    }
                }
            }
            if !word.is_empty() {
                out.push(word);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.sort();
    let mut up = Vec::new();
    for f in &all {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let Some(own) = rel
            .split('/')
            .next()
            .and_then(|l| rank(l).map(|r| (l.to_owned(), r)))
        else {
            continue; // lib.rs, main.rs
        };
        let text = std::fs::read_to_string(f).unwrap();
        let mut seen: Vec<String> = Vec::new();
        for named in layers_named(&text) {
            if let Some(r) = rank(&named) {
                if r > own.1 && !seen.contains(&named) {
                    seen.push(named.clone());
                    up.push((rel.clone(), named));
                }
            }
        }
    }
    let new: Vec<String> = up
        .iter()
        .filter(|(f, l)| !KNOWN.iter().any(|(kf, kl, _)| kf == f && kl == l))
        .map(|(f, l)| format!("{f} uses {l}"))
        .collect();
    let gone: Vec<String> = KNOWN
        .iter()
        .filter(|(kf, kl, _)| !up.iter().any(|(f, l)| f == kf && l == kl))
        .map(|(f, l, _)| format!("{f} no longer uses {l}: take it off KNOWN"))
        .collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "imports that run up the layers ({}):\n{}\n{}",
        ORDER.join(" → "),
        new.join("\n"),
        gone.join("\n")
    );
}

#[test]
fn the_reader_sees_groups_and_written_out_paths() {
    let t = "use crate::{\n    kernel::clock::Clock,\n    output::record::{Body, Record},\n};\nfn f() { crate::pipeline::x(); }";
    assert_eq!(layers_named(t), ["kernel", "output", "pipeline"]);
}
