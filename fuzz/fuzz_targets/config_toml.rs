//! Fuzz target: arbitrary text as Feeder's TOML config file (`ConfigFile::parse`: TOML
//! syntax, sections, every flag's own parser, the typed stream rules). Must never panic,
//! and an error is bounded by the input (it names a line and a kind, plus key names).

#![no_main]

use feeder::config_file::ConfigFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = ConfigFile::parse(std::path::Path::new("fuzz.toml"), text) {
        let n = e.to_string().len();
        assert!(n <= 4096 + 2 * text.len(), "{n} bytes of error");
    }
});
