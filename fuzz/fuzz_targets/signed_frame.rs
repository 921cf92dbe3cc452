//! Fuzz target: arbitrary bytes as one `SignedFrame` of a `Push` request, through the
//! edge's whole per-frame decision (size bound, decoding, device-id syntax, seq, payload
//! limit, registry lookup, revocation, signature length and value). It must never panic,
//! and since every field is signed, it must never accept anything (the registry's keys
//! are not derivable from the input).

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use feeder_core::{Registry, SigningKey};
use feeder_edge::EdgeConfig;
use feeder_edge::verify::admit_and_verify;
use libfuzzer_sys::fuzz_target;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        // invariant: a fixed 32-byte seed is always a valid Ed25519 seed
        let pk = SigningKey::ed25519_from_seed(&[3u8; 32])
            .and_then(|k| k.ed25519_public())
            .expect("fixed seed");
        let text = format!(
            "{{\"device_id\":\"mtr-1\",\"key_id\":\"k1\",\"alg\":\"ed25519\",\"public_key\":\"{}\",\"kind\":\"meter\",\"status\":\"active\",\"labels\":{{}}}}\n\
             {{\"device_id\":\"veh-1\",\"key_id\":\"k1\",\"alg\":\"hmac-sha256\",\"secret\":\"{}\",\"kind\":\"vehicle\",\"status\":\"active\",\"labels\":{{}}}}\n\
             {{\"device_id\":\"veh-2\",\"key_id\":\"k1\",\"alg\":\"hmac-sha256\",\"secret\":\"{}\",\"kind\":\"vehicle\",\"status\":\"revoked\",\"labels\":{{}}}}\n",
            hex(&pk),
            hex(&[9u8; 32]),
            hex(&[9u8; 32]),
        );
        Registry::parse("fuzz", &text).expect("fixed registry")
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let cfg = EdgeConfig {
        max_payload_bytes: 4096,
        ..EdgeConfig::default()
    };
    let raw = Bytes::copy_from_slice(data);
    if let Ok(frame) = admit_and_verify(&raw, registry(), &cfg) {
        panic!("fuzz input accepted as a signed frame: {frame:?}");
    }
});
