//! Fuzz target: arbitrary text as an edge key file (`EdgeKeys::parse`). Must never
//! panic; at most one key per line; an error message is bounded (a line number and a reason
//! per bad line).

#![no_main]

use feeder_core::edge_proof::EdgeKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match EdgeKeys::parse("fuzz", text) {
        Ok(keys) => assert!(keys.key_ids().count() <= text.lines().count()),
        Err(e) => {
            // a line number and a reason per bad line
            let bound = 2 * text.len() + 256 * (text.lines().count() + 1);
            let n = e.to_string().len();
            assert!(n <= bound, "{n} > {bound}");
        }
    }
});
