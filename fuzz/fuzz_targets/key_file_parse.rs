//! Fuzz target: arbitrary text as a device key file (JSON Lines of private keys). Must
//! never panic; at most one key per line; an error message is bounded (a line number
//! and a reason per bad line).

#![no_main]

use feeder_core::keyfile::parse_key_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_key_file("fuzz", text) {
        Ok(keys) => assert!(keys.len() <= text.lines().count()),
        Err(e) => {
            // a line number and a reason per bad line
            let bound = 2 * text.len() + 256 * (text.lines().count() + 1);
            let n = e.to_string().len();
            assert!(n <= bound, "{n} > {bound}");
        }
    }
});
