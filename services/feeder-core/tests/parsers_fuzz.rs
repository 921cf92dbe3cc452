//! Fuzzing, in the normal test suite, of the parsers of files that may hold secrets: the
//! device registry, the device key file and the edge key file. Inputs are lines built
//! from the real formats (some fields wrong, unquoted, of the wrong type, lines cut off
//! anywhere) mixed with arbitrary text. Each parser must never panic, never return more
//! keys than lines, keep its error message bounded by the input, and never repeat the
//! secret-looking value planted in the lines. Long runs: `fuzz/fuzz_targets/`
//! (`registry_parse`, `key_file_parse`, `edge_keys_parse`).

use feeder_core::Registry;
use feeder_core::edge_proof::EdgeKeys;
use feeder_core::keyfile::parse_key_file;
use proptest::prelude::*;

/// Planted in key fields; never to appear in an error.
const SECRET: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
const DIGITS: &str = "1234567890123456789012345678901234567890123456789012345678901234";
const CASES: u32 = 3000;

fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("\"{SECRET}\"")),
        Just(DIGITS.to_string()),
        Just("\"ed25519\"".to_string()),
        Just("\"hmac-sha256\"".to_string()),
        Just("\"meter\"".to_string()),
        Just("\"vehicle\"".to_string()),
        Just("\"active\"".to_string()),
        Just("\"revoked\"".to_string()),
        Just("\"mtr-1\"".to_string()),
        Just("\"k1\"".to_string()),
        Just("{}".to_string()),
        Just("{\"region\":\"north\"}".to_string()),
        Just("null".to_string()),
        Just("[1,2]".to_string()),
        "\"[a-z0-9 _:.-]{0,12}\"",
        "-?[0-9]{1,20}",
    ]
}

const FIELDS: [&str; 11] = [
    "device_id",
    "key_id",
    "alg",
    "public_key",
    "secret",
    "seed",
    "kind",
    "status",
    "labels",
    "signer",
    "x",
];

/// A JSON object line with some of the formats' fields, maybe cut off.
fn object_line() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((0..FIELDS.len(), json_value()), 0..10),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(fields, cut, whole)| {
            let body: Vec<String> = fields
                .iter()
                .map(|(f, v)| format!("\"{}\":{v}", FIELDS[*f]))
                .collect();
            let line = format!("{{{}}}", body.join(","));
            if whole {
                line
            } else {
                // ASCII only, so every byte index is a char boundary
                let at = cut.index(line.len() + 1);
                line[..at].to_string()
            }
        })
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => object_line(),
            1 => any::<String>(),
            1 => Just(String::new()),
        ],
        0..8,
    )
    .prop_map(|lines| lines.join("\n"))
}

/// The bound on an error message: a line number and a reason per bad line.
fn assert_error_bounded(text: &str, message: &str) {
    let bound = 2 * text.len() + 256 * (text.lines().count() + 1);
    assert!(message.len() <= bound, "{} > {bound}", message.len());
    assert!(!message.contains(&SECRET[..16]), "secret echoed: {message}");
    assert!(!message.contains(&DIGITS[..16]), "secret echoed: {message}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn registry_parse_is_total_and_bounded(text in text()) {
        match Registry::parse("fuzz", &text) {
            Ok(reg) => prop_assert!(reg.key_count() <= text.lines().count()),
            Err(e) => assert_error_bounded(&text, &e.to_string()),
        }
    }

    #[test]
    fn key_file_parse_is_total_and_bounded(text in text()) {
        match parse_key_file("fuzz", &text) {
            Ok(keys) => prop_assert!(keys.len() <= text.lines().count()),
            Err(e) => assert_error_bounded(&text, &e.to_string()),
        }
    }

    #[test]
    fn edge_keys_parse_is_total_and_bounded(text in text()) {
        match EdgeKeys::parse("fuzz", &text) {
            Ok(keys) => prop_assert!(keys.key_ids().count() <= text.lines().count()),
            Err(e) => assert_error_bounded(&text, &e.to_string()),
        }
    }
}
