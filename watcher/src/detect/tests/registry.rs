//! The list of detectors ([`crate::detect::with_detectors`]) is the one
//! place a detector is registered; this checks that everything made from
//! it agrees, and that what is written by hand (the README's tables, the
//! config reference) names every kind. (The records' schema is checked in
//! output::record, the layer that owns it.)
use std::collections::HashSet;

use crate::detect::{config::DetectConfig, Detectors, Kind};

#[test]
fn every_listed_kind_is_declared_everywhere() {
    let mut d = Detectors::new(DetectConfig::default());
    // The detectors, in the list's order, each of its own kind.
    let kinds: Vec<Kind> = d.registry().iter().map(|d| d.kind()).collect();
    assert_eq!(kinds, Kind::ALL.to_vec());
    assert_eq!(Kind::ALL.len(), Kind::COUNT);
    // The n-th detector is of kind n: the enabled kinds' bits are read by
    // position at every event.
    for (n, k) in kinds.iter().enumerate() {
        assert_eq!(*k as usize, n);
    }

    let config = toml::to_string(&DetectConfig::default()).unwrap();
    let readme = include_str!("../../../../README.md");
    let reference = include_str!("../../../../docs/configuration.md");
    let mut names = HashSet::new();
    let mut advice = HashSet::new();
    for k in Kind::ALL {
        let name = k.as_str();
        assert!(names.insert(name), "{name} is listed twice");
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{name}: a kind's name is snake_case"
        );
        assert_eq!(Kind::from_name(name), Some(k));
        assert!(
            ["critical", "warning", "info"].contains(&k.severity()),
            "{name}: severity {}",
            k.severity()
        );
        assert!(
            k.advice().len() > 40 && advice.insert(k.advice()),
            "{name}: its alerts need their own advice"
        );
        assert!(
            config.contains(&format!("[{name}]\nenabled = true")),
            "{name}: no [detect.{name}] section in the default config:\n{config}"
        );
        let on = toml::from_str::<DetectConfig>(&format!("[{name}]\nenabled = false\n")).unwrap();
        assert!(!on.enabled(k), "{name}: [detect.{name}] enabled = false");
        assert!(
            Kind::ALL.iter().all(|o| *o == k || on.enabled(*o)),
            "{name}: turning it off turned off another"
        );
        assert!(
            readme.contains(&format!("\n| `{name}` |")),
            "{name}: no row in the README's table of findings"
        );
        assert!(
            readme.contains(&format!("`[detect.{name}]`")),
            "{name}: the README's config table does not name [detect.{name}]"
        );
        assert!(
            reference.contains(&format!("[detect.{name}]")),
            "{name}: docs/configuration.md does not show [detect.{name}]"
        );
    }
}
