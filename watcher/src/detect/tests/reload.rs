//! Detector unit tests, a reload of the detectors' settings: event sequences in, findings out —
//! both ways: the incident is found, and the healthy look-alike is not.
use crate::detect::{
    testkit::{ks, listener, opened, resolved, Kit, MS, S},
    DetectConfig,
};

use super::EADDRINUSE;

// ---------------------------------------------------------------- reload

#[test]
fn a_reload_keeps_open_incidents_and_resolves_a_disabled_detectors() {
    let mut k = Kit::defaults();
    k.spawn(S, 1, 100, "/usr/bin/master", &["master"]);
    for n in 0..6u32 {
        k.fork(2 * S, 100, 200 + n);
        k.exit(2 * S + MS, 200 + n, 0);
    }
    k.run_timers(4 * S);
    assert!(opened(&k.all, "zombie_accumulation"), "{:?}", ks(&k.all));
    k.spawn(S, 1, 300, "/usr/sbin/nginx", &["nginx"]);
    k.set_kernel(vec![listener("0.0.0.0", 80, &[300])]);
    k.spawn(S, 1, 400, "/usr/sbin/apache2", &["apache2"]);
    assert!(opened(
        &k.bind(5 * S, 400, "0.0.0.0", 80, EADDRINUSE, true),
        "port_conflict"
    ));

    let mut cfg = DetectConfig::default();
    cfg.zombie_accumulation.threshold = 3;
    cfg.port_conflict.enabled = false;
    let f = k.engine.detectors.reconfigure(cfg, 6 * S);
    assert_eq!(ks(&f), vec![("port_conflict", "resolved")]);
    assert!(
        f[0].summary.contains("disabled by a configuration reload"),
        "{}",
        f[0].summary
    );
    // The zombies' incident is still open, and resolves when they are reaped.
    let mut f = Vec::new();
    for n in 0..6u32 {
        f.extend(k.reap(7 * S, 100, 200 + n));
    }
    assert!(resolved(&f, "zombie_accumulation"), "{:?}", ks(&f));
    // The disabled detector is quiet now.
    assert!(!k
        .bind(8 * S, 400, "0.0.0.0", 80, EADDRINUSE, true)
        .iter()
        .any(|x| x.kind.as_str() == "port_conflict"));
}
