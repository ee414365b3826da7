//! The ring-buffer record decoder must never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = watcher::kernel::decode::decode(data) {
        // A decoded record must also survive enrichment into an output record.
        let mut e = watcher::output::enrich::Enricher::new(64, 64, watcher::kernel::clock::Clock::fixed(0));
        let r = e.record(&ev);
        let _ = serde_json::to_string(&r);
    }
});
