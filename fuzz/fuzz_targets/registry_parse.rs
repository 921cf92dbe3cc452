//! Fuzz target: arbitrary text as a device registry (JSON Lines). Must never panic; a
//! registry has at most one key per line, and an error message is bounded (it names the
//! line and the problem per bad line, never repeats the line).

#![no_main]

use feeder_core::Registry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Registry::parse("fuzz", text) {
        Ok(reg) => assert!(reg.key_count() <= text.lines().count()),
        Err(e) => {
            // a line number and a reason per bad line
            let bound = 2 * text.len() + 256 * (text.lines().count() + 1);
            let n = e.to_string().len();
            assert!(n <= bound, "{n} > {bound}");
        }
    }
});
