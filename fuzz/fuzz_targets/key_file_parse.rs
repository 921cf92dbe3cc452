//! Fuzz target: arbitrary text as a device key file (JSON Lines of private keys). Must
//! never panic; at most one key per line; an error message is bounded and never holds
//! the line.

#![no_main]

use feeder_core::keyfile::parse_key_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_key_file("fuzz", text) {
        Ok(keys) => assert!(keys.len() <= text.lines().count()),
        Err(e) => assert!(e.to_string().len() <= 512, "{}", e.to_string().len()),
    }
});
