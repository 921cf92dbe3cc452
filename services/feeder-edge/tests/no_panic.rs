//! No input makes the edge's per-frame decision panic: 100,000 seeded inputs (random
//! bytes, and valid frames of both algorithms with bit flips, truncations, insertions and
//! field swaps) through admission and verification. The same decision is the cargo-fuzz
//! target in `fuzz/` (see docs/edge.md); this is its bounded, deterministic run.
//! Also checks that only the untouched valid frames are accepted.

use bytes::Bytes;
use feeder_core::{Registry, SigningKey};
use feeder_edge::EdgeConfig;
use feeder_edge::verify::admit_and_verify;
use feeder_proto::v1::SignedFrame;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: [u8; 32] = [3u8; 32];
const SECRET: [u8; 32] = [9u8; 32];

fn registry() -> Registry {
    let ed = SigningKey::ed25519_from_seed(&SEED).unwrap();
    let pk = hex::encode(ed.ed25519_public().unwrap());
    let text = format!(
        "{{\"device_id\":\"mtr-1\",\"key_id\":\"k1\",\"alg\":\"ed25519\",\"public_key\":\"{pk}\",\"kind\":\"meter\",\"status\":\"active\",\"labels\":{{}}}}\n\
         {{\"device_id\":\"veh-1\",\"key_id\":\"k1\",\"alg\":\"hmac-sha256\",\"secret\":\"{}\",\"kind\":\"vehicle\",\"status\":\"active\",\"labels\":{{}}}}\n\
         {{\"device_id\":\"veh-1\",\"key_id\":\"k0\",\"alg\":\"ed25519\",\"public_key\":\"{pk}\",\"kind\":\"vehicle\",\"status\":\"revoked\",\"labels\":{{}}}}\n",
        hex::encode(SECRET)
    );
    Registry::parse("fuzz", &text).unwrap()
}

fn valid(rng: &mut StdRng) -> SignedFrame {
    let (device_id, key) = if rng.random_bool(0.5) {
        ("mtr-1", SigningKey::ed25519_from_seed(&SEED).unwrap())
    } else {
        ("veh-1", SigningKey::hmac(&SECRET))
    };
    let len = rng.random_range(0..64);
    let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    let seq = rng.random_range(1..u64::MAX);
    SignedFrame {
        device_id: device_id.into(),
        seq,
        key_id: "k1".into(),
        signature: key.sign(device_id, "k1", seq, &payload).into(),
        payload: payload.into(),
    }
}

fn mutate(rng: &mut StdRng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..5) {
            0 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !b.is_empty() => b.truncate(rng.random_range(0..b.len())),
            2 => {
                let i = rng.random_range(0..=b.len());
                b.insert(i, rng.random());
            }
            3 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] = [0x00, 0xff, 0x80, 0x7f][rng.random_range(0..4)];
            }
            _ => b.extend((0..rng.random_range(0..8)).map(|_| rng.random::<u8>())),
        }
    }
    b
}

#[test]
fn no_input_panics_and_only_valid_frames_pass() {
    let reg = registry();
    let cfg = EdgeConfig {
        max_payload_bytes: 256,
        ..EdgeConfig::default()
    };
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let (mut accepted, mut refused) = (0u32, 0u32);
    for i in 0..100_000u32 {
        let (bytes, must_pass) = match i % 4 {
            0 => {
                let len = rng.random_range(0..300);
                ((0..len).map(|_| rng.random()).collect::<Vec<u8>>(), false)
            }
            1 => (valid(&mut rng).encode_to_vec(), true),
            2 => {
                // a valid frame with a field swapped for another device's or key's
                let mut f = valid(&mut rng);
                match rng.random_range(0..3) {
                    0 => {
                        f.device_id = if f.device_id == "mtr-1" {
                            "veh-1"
                        } else {
                            "mtr-1"
                        }
                        .into()
                    }
                    1 => f.key_id = "k0".into(),
                    _ => f.seq ^= 1,
                }
                (f.encode_to_vec(), false)
            }
            _ => {
                let orig = valid(&mut rng).encode_to_vec();
                let m = mutate(&mut rng, orig.clone());
                // a mutation may re-encode to the same frame (e.g. trailing unknown field)
                let same = SignedFrame::decode(m.as_slice()).ok()
                    == SignedFrame::decode(orig.as_slice()).ok();
                (m, same)
            }
        };
        // Every field is signed, so exactly the inputs that decode to an untouched valid
        // frame pass.
        match admit_and_verify(&Bytes::from(bytes), &reg, &cfg) {
            Ok(_) => {
                assert!(must_pass, "input {i}: altered or junk frame accepted");
                accepted += 1;
            }
            Err(r) => {
                assert!(!must_pass, "input {i}: valid frame refused: {r:?}");
                assert_ne!(r.code, feeder_core::AckCode::Ok);
                refused += 1;
            }
        }
    }
    assert_eq!(accepted + refused, 100_000);
    assert!(accepted >= 25_000, "{accepted}");
    assert!(refused >= 50_000, "{refused}");
    println!("no_panic: {accepted} accepted, {refused} refused");
}
