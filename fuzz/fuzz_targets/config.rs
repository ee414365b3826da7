//! The config parser must never panic, whatever the text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz.toml");
        if let Ok(c) = watcher::cli::config::Config::parse(text, path) {
            let _ = c.validate(text, path);
        }
    }
});
