//! No input makes the edge's per-frame decision panic: 100,000 seeded inputs (random
//! bytes, and valid frames of both algorithms with bit flips, truncations, insertions and
//! field swaps) through admission and verification. The same decision is the cargo-fuzz
//! target in `fuzz/` (see docs/edge.md); this is its bounded, deterministic run.
//! Also checks that only the untouched valid frames are accepted, and that a large request,
//! verified in chunks on several threads, gets each frame's own answer in its place.

use bytes::Bytes;
use feeder_core::{Registry, SigningKey};
use feeder_edge::EdgeConfig;
use feeder_edge::admission::{Admitted, admit};
use feeder_edge::verify::{MIN_CHUNK, admit_and_verify, chunks_for, verify_off_runtime};
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

#[test]
fn requests_split_into_at_most_one_chunk_per_core() {
    assert_eq!(chunks_for(0, 8), 1);
    assert_eq!(chunks_for(2 * MIN_CHUNK - 1, 8), 1);
    assert_eq!(chunks_for(2 * MIN_CHUNK, 8), 2);
    assert_eq!(chunks_for(1000, 2), 2);
    assert_eq!(chunks_for(1000, 8), 8);
    assert_eq!(chunks_for(1000, 0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_verified_in_chunks_answers_each_frame_in_place() {
    let reg = registry();
    let cfg = EdgeConfig::default();
    let mut rng = StdRng::seed_from_u64(7);
    // 1000 frames (the default per-request maximum), every 7th with a flipped signature bit
    let cands: Vec<_> = (0..1000u64)
        .map(|i| {
            let mut f = valid(&mut rng);
            f.seq = i + 1;
            let key = if f.device_id == "mtr-1" {
                SigningKey::ed25519_from_seed(&SEED).unwrap()
            } else {
                SigningKey::hmac(&SECRET)
            };
            let mut sig = key.sign(&f.device_id, "k1", f.seq, &f.payload);
            if i % 7 == 0 {
                sig[3] ^= 0x10;
            }
            f.signature = sig.into();
            match admit(&Bytes::from(f.encode_to_vec()), &reg, &cfg) {
                Admitted::Candidate(c) => *c,
                Admitted::Refused(_, r) => panic!("frame {i} refused at admission: {r:?}"),
            }
        })
        .collect();
    let (back, results) = verify_off_runtime(cands).await;
    assert_eq!(back.len(), 1000);
    assert_eq!(results.len(), 1000);
    for (i, (c, r)) in back.iter().zip(&results).enumerate() {
        assert_eq!(c.frame.seq, i as u64 + 1, "candidate {i} out of place");
        match r {
            Ok(()) => assert_ne!(i % 7, 0, "frame {i}: a bad signature passed"),
            Err(e) => {
                assert_eq!(i % 7, 0, "frame {i}: a good signature refused: {e:?}");
                assert_eq!(e.reason, "bad_signature");
            }
        }
    }
}
