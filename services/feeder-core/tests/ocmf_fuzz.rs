//! Fuzzing, in the normal test suite, of the OCMF parser and verifier (hostile input from
//! any device or relay): the contract's vectors with bytes flipped, inserted, deleted or
//! cut off, OCMF strings built from the format's own fields with wrong values, and
//! arbitrary bytes behind the prefix. The checks must never panic, a refusal message
//! stays bounded and never echoes the string, a converted string keeps at most
//! `MAX_READINGS` readings, and only strings whose payload section is a vector's verify.

use feeder_core::ocmf::{self, OcmfKey, vectors};
use proptest::prelude::*;

const CASES: u32 = 3000;

fn keys() -> [(OcmfKey, &'static str, u64); 2] {
    [
        (
            OcmfKey::from_spki_hex(vectors::V1_KEY, Some("MTR0001")).unwrap(),
            vectors::V1,
            7,
        ),
        (
            OcmfKey::from_spki_hex(vectors::V2_KEY, Some("17619300")).unwrap(),
            vectors::V2,
            32,
        ),
    ]
}

/// Runs every check on `s` and the invariants; returns whether it verified.
fn check(key: &OcmfKey, seq: u64, s: &[u8]) -> bool {
    match ocmf::check_shape(key, seq, s) {
        Ok(c) => {
            assert!(c.frame.readings.len() <= ocmf::MAX_READINGS);
            assert_eq!(c.flags.len(), c.frame.readings.len());
        }
        Err(e) => {
            assert!(e.message.len() <= 300, "unbounded message: {}", e.message);
            assert!(!e.message.contains("OCMF|"), "{}", e.message);
        }
    }
    let _ = feeder_core::payload::decode(s);
    key.verify(s).is_ok() && ocmf::check_shape(key, seq, s).is_ok()
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"T7\"".to_string()),
        Just("\"F7\"".to_string()),
        Just("\"T0\"".to_string()),
        Just("\"T99999999999999999999999\"".to_string()),
        Just("\"2026-11-25T10:00:00,000+0000 S\"".to_string()),
        Just("\"2026-13-45T99:00:00,000+9999 S\"".to_string()),
        Just("\"kWh\"".to_string()),
        Just("\"mOhm\"".to_string()),
        Just("1234.5670".to_string()),
        Just("-0.0e-99999".to_string()),
        Just("9".repeat(40)),
        Just(format!("\"{}\"", "x".repeat(600))),
        Just("x".repeat(600)),
        Just("\"B\"".to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        "\"[A-Za-z0-9 :.,+-]{0,24}\"",
        "-?[0-9]{1,25}(\\.[0-9]{0,25})?",
    ]
}

const FIELDS: [&str; 12] = [
    "PG", "MS", "GS", "RD", "TM", "TX", "RV", "RI", "RU", "ST", "SA", "SD",
];

fn reading() -> impl Strategy<Value = String> {
    prop::collection::vec((0..FIELDS.len(), field_value()), 0..8).prop_map(|fs| {
        let body: Vec<String> = fs
            .iter()
            .map(|(i, v)| format!("\"{}\":{v}", FIELDS[*i]))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

fn built_string() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((0..FIELDS.len(), field_value()), 0..6),
        prop::collection::vec(reading(), 0..4),
        reading(),
    )
        .prop_map(|(fs, rd, sig)| {
            let mut body: Vec<String> = fs
                .iter()
                .map(|(i, v)| format!("\"{}\":{v}", FIELDS[*i]))
                .collect();
            body.push(format!("\"RD\":[{}]", rd.join(",")));
            format!("OCMF|{{{}}}|{sig}", body.join(","))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn mutated_vectors_never_panic_and_never_verify(
        which in 0usize..2,
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..4),
    ) {
        let [a, b] = keys();
        let (key, vector, seq) = if which == 0 { a } else { b };
        let mut s = vector.as_bytes().to_vec();
        for (at, op, byte) in &edits {
            let i = at.index(s.len().max(1));
            match op {
                0 if i < s.len() => s[i] ^= byte | 1,
                1 => s.insert(i.min(s.len()), *byte),
                2 if i < s.len() => { s.remove(i); }
                _ => s.truncate(i),
            }
        }
        let verified = check(&key, seq, &s);
        // only a string whose signed section is the vector's may verify (the signature
        // section may differ harmlessly: hex in another case)
        let section = |b: &[u8]| ocmf::split(b).map(|(p, _)| p.to_vec()).ok();
        prop_assert!(
            !verified || section(&s) == section(vector.as_bytes()),
            "a changed payload section verified"
        );
    }

    #[test]
    fn built_strings_never_panic(s in built_string(), seq in 0u64..10) {
        let [(key, _, _), _] = keys();
        prop_assert!(!check(&key, seq, s.as_bytes()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..400)) {
        let [(key, _, _), _] = keys();
        let s = [b"OCMF|".as_slice(), &tail].concat();
        prop_assert!(!check(&key, 7, &s));
        prop_assert!(!check(&key, 7, &tail));
    }
}

#[test]
fn the_vectors_themselves_verify() {
    for (key, vector, seq) in keys() {
        assert!(check(&key, seq, vector.as_bytes()));
    }
}
