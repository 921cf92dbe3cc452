//! Request decoding under seeded random input (part of the normal test suite; the
//! cargo-fuzz target `push_request` runs the same property for as long as asked).
//! 200,000 inputs: random bytes, valid requests, the same mutated (byte flips, cuts,
//! insertions), and floods of empty or oversized frames. For each: no panic, and the
//! output is bounded by the input: at most one frame per 2 input bytes and never more than
//! `max_frames`, kept bytes never more than the input, no kept frame over its limit.
//! Every decoded frame then goes through the edge's per-frame decision (admission and
//! signature), which must answer it without panicking.

use bytes::Bytes;
use feeder_core::Registry;
use feeder_edge::EdgeConfig;
use feeder_edge::decode::{DecodeRefusal, FrameLimits, WireFrame, decode_push_request};
use feeder_edge::verify::admit_and_verify;
use feeder_proto::v1::{PushRequest, SignedFrame};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const INPUTS: usize = 200_000;
const LIMITS: FrameLimits = FrameLimits {
    max_frames: 16,
    max_frame_bytes: 300,
};

fn request(rng: &mut StdRng) -> Vec<u8> {
    let frames = (0..rng.random_range(0..24))
        .map(|i| SignedFrame {
            device_id: format!("mtr-{i}"),
            seq: rng.random(),
            key_id: "k1".into(),
            payload: vec![7u8; rng.random_range(0..400)].into(),
            signature: vec![1u8; 64].into(),
        })
        .collect();
    PushRequest { frames }.encode_to_vec()
}

fn mutate(rng: &mut StdRng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..4) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..4) {
            0 => b[i] = rng.random(),
            1 => b.truncate(i),
            2 => b.insert(i, rng.random()),
            _ => b[i] ^= 0x80,
        }
    }
    b
}

fn input(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..5) {
        0 => (0..rng.random_range(0..256))
            .map(|_| rng.random())
            .collect(),
        1 => request(rng),
        2 => {
            let r = request(rng);
            mutate(rng, r)
        }
        3 => [0x0a, 0x00].repeat(rng.random_range(0..100)),
        _ => {
            // frames with huge claimed lengths, and varints of every size
            let mut b = vec![0x0a];
            b.extend((0..rng.random_range(1..11)).map(|_| rng.random::<u8>() | 0x80));
            b.push(rng.random::<u8>() & 0x7f);
            b
        }
    }
}

#[test]
fn decoding_never_panics_and_its_output_is_bounded_by_its_input() {
    let mut rng = StdRng::seed_from_u64(12);
    let cfg = EdgeConfig {
        max_frames_per_request: LIMITS.max_frames,
        max_payload_bytes: LIMITS.max_frame_bytes - 256,
        ..EdgeConfig::default()
    };
    let registry = Registry::default();
    let (mut ok, mut too_many, mut malformed, mut frames_seen) = (0, 0, 0, 0);
    for _ in 0..INPUTS {
        let bytes = input(&mut rng);
        match decode_push_request(&mut Bytes::from(bytes.clone()), LIMITS) {
            Ok(req) => {
                ok += 1;
                let n = req.frames.len();
                assert!(n <= LIMITS.max_frames && 2 * n <= bytes.len(), "{bytes:?}");
                let kept: usize = req
                    .frames
                    .iter()
                    .map(|f| match f {
                        WireFrame::Bytes(b) => {
                            assert!(b.len() <= LIMITS.max_frame_bytes);
                            b.len()
                        }
                        WireFrame::Oversized => 0,
                    })
                    .sum();
                assert!(kept <= bytes.len());
                for f in &req.frames {
                    frames_seen += 1;
                    if let WireFrame::Bytes(b) = f {
                        // an empty registry: nothing may pass, nothing may panic
                        assert!(admit_and_verify(b, &registry, &cfg).is_err());
                    }
                }
            }
            Err(DecodeRefusal::TooManyFrames { limit }) => {
                assert_eq!(limit, LIMITS.max_frames);
                too_many += 1;
            }
            Err(DecodeRefusal::Malformed) => malformed += 1,
        }
    }
    println!(
        "{INPUTS} inputs: {ok} decoded ({frames_seen} frames admitted), {too_many} too many \
         frames, {malformed} malformed"
    );
    // the generator reaches every outcome
    assert!(ok > 10_000 && too_many > 1_000 && malformed > 10_000);
}
