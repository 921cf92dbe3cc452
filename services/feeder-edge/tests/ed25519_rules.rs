//! The edge (Ed25519 verified in batches) and `feeder verify` (one frame at a time,
//! `VerifyingKey::verify`, what `services/feeder-writer/src/verify` calls) accept exactly
//! the same signatures, edge cases included: non-canonical S, S >= L, small-order and
//! mixed-order public keys and R, non-canonical encodings, points off the curve. The rule
//! and why it is cofactored: `feeder_core::ed25519`.
//!
//! Each case is checked alone, inside a batch of valid frames (so a failed batch must
//! single out exactly the bad frame), and all together; ring's cofactorless verdict is
//! recorded beside it to show where, and only where, a cofactorless verifier differs.

use bytes::Bytes;
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use feeder_core::signing::signing_input;
use feeder_core::{SigningKey, VerifyingKey};
use feeder_edge::admission::Candidate;
use feeder_edge::verify::verify_all;
use feeder_proto::v1::SignedFrame;
use prost::Message;
use sha2::{Digest, Sha512};

/// The group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn scalar_of(label: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&Sha512::digest(label).into())
}

fn k_of(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(msg);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

fn sig(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    [r.as_slice(), s.as_slice()].concat()
}

/// `a + b` as 256-bit little-endian integers (no overflow for the values used here).
fn add_le(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = a[i] as u16 + b[i] as u16 + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    out
}

/// The non-canonical encoding `y + p` of a curve point whose `y` is below 19.
fn non_canonical_point() -> ([u8; 32], EdwardsPoint) {
    for y in 0u8..19 {
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        if let Some(p) = CompressedEdwardsY(canonical).decompress() {
            if p.is_small_order() {
                continue;
            }
            let mut enc = [0xffu8; 32];
            enc[0] = 0xed + y;
            enc[31] = 0x7f;
            let decoded = CompressedEdwardsY(enc).decompress().expect("y + p decodes");
            assert_eq!(decoded, p);
            return (enc, p);
        }
    }
    panic!("no curve point with y < 19");
}

struct Case {
    name: &'static str,
    public: [u8; 32],
    seq: u64,
    signature: Vec<u8>,
    /// Feeder's rule (edge and `feeder verify` alike).
    accept: bool,
    /// ring's cofactorless verdict.
    ring: bool,
}

const DEVICE: &str = "mtr-1";
const KEY: &str = "k1";
const PAYLOAD: &[u8] = b"\x08\x01";

fn msg(seq: u64) -> Vec<u8> {
    signing_input(DEVICE, KEY, seq, PAYLOAD)
}

fn cases() -> Vec<Case> {
    let a = scalar_of(b"device secret");
    let a_pt = B * a;
    let a_enc = a_pt.compress().to_bytes();
    let t8 = EIGHT_TORSION[1]; // a point of order 8
    assert!(t8.is_small_order() && !(t8 * Scalar::from(4u8)).is_identity_point());
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        seq
    };

    // honest signatures: ring-signed (the simulator's signer) and the contract's vector
    let seed: Vec<u8> = (0u8..32).collect();
    let sk = SigningKey::ed25519_from_seed(&seed).expect("seed");
    let pk = sk.ed25519_public().expect("ed25519");
    let s = next();
    out.push(Case {
        name: "valid (ring signer)",
        public: pk,
        seq: s,
        signature: sk.sign_input(&msg(s)),
        accept: true,
        ring: true,
    });
    // the same key and frame fields as shared/protocol.md's test vector, so this is it
    let vector = sk.sign(DEVICE, KEY, s, PAYLOAD);
    assert_eq!(vector, sk.sign_input(&msg(s)));

    // a signature made here: S = r + k·a, R = [r]B
    let signed = |a_enc: &[u8; 32], r_pt: EdwardsPoint, r: Scalar, seq: u64| {
        let r_enc = r_pt.compress().to_bytes();
        let k = k_of(&r_enc, a_enc, &msg(seq));
        (r_enc, (r + k * a).to_bytes())
    };
    let s = next();
    let r = scalar_of(b"nonce 1");
    let (r_enc, s_enc) = signed(&a_enc, B * r, r, s);
    out.push(Case {
        name: "valid (made here)",
        public: a_enc,
        seq: s,
        signature: sig(&r_enc, &s_enc),
        accept: true,
        ring: true,
    });
    out.push(Case {
        name: "valid signature, another seq",
        public: a_enc,
        seq: s + 1000,
        signature: sig(&r_enc, &s_enc),
        accept: false,
        ring: false,
    });

    // S + L: the same signature, S not reduced
    out.push(Case {
        name: "non-canonical S (S + L)",
        public: a_enc,
        seq: s,
        signature: sig(&r_enc, &add_le(&s_enc, &L)),
        accept: false,
        ring: false,
    });
    out.push(Case {
        name: "S = L",
        public: a_enc,
        seq: s,
        signature: sig(&r_enc, &L),
        accept: false,
        ring: false,
    });
    let mut high = s_enc;
    high[31] |= 0xe0;
    out.push(Case {
        name: "S >= L (top bits set)",
        public: a_enc,
        seq: s,
        signature: sig(&r_enc, &high),
        accept: false,
        ring: false,
    });

    // small-order A: R = [S]B "signs" anything, for every S
    let s = next();
    let any_s = scalar_of(b"any S");
    let forged_r = (B * any_s).compress().to_bytes();
    out.push(Case {
        name: "small-order A (identity): universal forgery",
        public: EIGHT_TORSION[0].compress().to_bytes(),
        seq: s,
        signature: sig(&forged_r, &any_s.to_bytes()),
        accept: false,
        ring: true,
    });
    // order-8 A: cofactored, the forgery always holds; cofactorless iff 8 | k
    let t8_enc = t8.compress().to_bytes();
    let ring_t8 = (t8 * k_of(&forged_r, &t8_enc, &msg(s))).is_identity_point();
    out.push(Case {
        name: "small-order A (order 8)",
        public: t8_enc,
        seq: s,
        signature: sig(&forged_r, &any_s.to_bytes()),
        accept: false,
        ring: ring_t8,
    });

    // small-order R by the key holder: R = T, S = k·a; cofactored holds, cofactorless not
    let s = next();
    let (r_enc, s_enc) = signed(&a_enc, t8, Scalar::ZERO, s);
    out.push(Case {
        name: "small-order R",
        public: a_enc,
        seq: s,
        signature: sig(&r_enc, &s_enc),
        accept: false,
        ring: false,
    });

    // mixed-order R: R = [r]B + T, S = r + k·a. Cofactored holds, cofactorless never.
    let s = next();
    let r = scalar_of(b"nonce 2");
    let (r_enc, s_enc) = signed(&a_enc, B * r + t8, r, s);
    out.push(Case {
        name: "mixed-order R",
        public: a_enc,
        seq: s,
        signature: sig(&r_enc, &s_enc),
        accept: true,
        ring: false,
    });

    // mixed-order A = [a]B + T, honest R: cofactored holds; cofactorless iff k·T = 0
    let mixed_a = (a_pt + t8).compress().to_bytes();
    for n in 0..4u64 {
        let s = next();
        let r = scalar_of(format!("nonce A{n}").as_bytes());
        let (r_enc, s_enc) = signed(&mixed_a, B * r, r, s);
        let k = k_of(&r_enc, &mixed_a, &msg(s));
        out.push(Case {
            name: "mixed-order A",
            public: mixed_a,
            seq: s,
            signature: sig(&r_enc, &s_enc),
            accept: true,
            ring: (t8 * k).is_identity_point(),
        });
    }

    // non-canonical encodings (y + p) of a large-order point, as R and as A
    let (nc, _) = non_canonical_point();
    let s = next();
    out.push(Case {
        name: "non-canonical R (y + p)",
        public: a_enc,
        seq: s,
        signature: sig(&nc, &scalar_of(b"S for nc").to_bytes()),
        accept: false,
        ring: false,
    });
    let mut identity_signed = EIGHT_TORSION[0].compress().to_bytes();
    identity_signed[31] |= 0x80;
    out.push(Case {
        name: "R = identity with the sign bit (non-canonical, small order)",
        public: a_enc,
        seq: s,
        signature: sig(
            &identity_signed,
            &(k_of(&identity_signed, &a_enc, &msg(s)) * a).to_bytes(),
        ),
        accept: false,
        ring: false,
    });
    let s = next();
    let r = scalar_of(b"nonce 3");
    let (r_enc, s_enc) = signed(&nc, B * r, r, s);
    out.push(Case {
        name: "non-canonical A (y + p)",
        public: nc,
        seq: s,
        signature: sig(&r_enc, &s_enc),
        accept: false,
        ring: false,
    });
    // points off the curve (y = 2 has no x)
    let mut off = [0u8; 32];
    off[0] = 2;
    out.push(Case {
        name: "R not on the curve",
        public: a_enc,
        seq: s,
        signature: sig(&off, &s_enc),
        accept: false,
        ring: false,
    });
    out.push(Case {
        name: "A not on the curve",
        public: off,
        seq: s,
        signature: sig(&r_enc, &s_enc),
        accept: false,
        ring: false,
    });
    out
}

trait IsIdentityPoint {
    fn is_identity_point(&self) -> bool;
}

impl IsIdentityPoint for EdwardsPoint {
    fn is_identity_point(&self) -> bool {
        *self == EdwardsPoint::default()
    }
}

fn candidate(public: [u8; 32], seq: u64, signature: Vec<u8>) -> Candidate {
    let frame = SignedFrame {
        device_id: DEVICE.into(),
        seq,
        key_id: KEY.into(),
        payload: Bytes::from_static(PAYLOAD),
        signature: signature.into(),
    };
    Candidate {
        raw: frame.encode_to_vec().into(),
        frame,
        key: VerifyingKey::ed25519(public),
    }
}

/// `feeder verify`'s path: one frame, `VerifyingKey::verify`.
fn feeder_verify(c: &Candidate) -> bool {
    let f = &c.frame;
    c.key
        .verify(
            &mut Vec::new(),
            &f.device_id,
            &f.key_id,
            f.seq,
            &f.payload,
            &f.signature,
        )
        .is_ok()
}

fn ring_verify(public: &[u8; 32], seq: u64, signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(&msg(seq), signature)
        .is_ok()
}

fn valid_frames(n: usize) -> Vec<Candidate> {
    let seed = [7u8; 32];
    let sk = SigningKey::ed25519_from_seed(&seed).expect("seed");
    let pk = sk.ed25519_public().expect("ed25519");
    (0..n as u64)
        .map(|i| candidate(pk, 10_000 + i, sk.sign_input(&msg(10_000 + i))))
        .collect()
}

#[test]
fn edge_batches_and_feeder_verify_agree_on_edge_cases() {
    let cases = cases();
    let mut ring_differs = Vec::new();
    for case in &cases {
        let c = candidate(case.public, case.seq, case.signature.clone());
        assert_eq!(
            feeder_verify(&c),
            case.accept,
            "feeder verify: {}",
            case.name
        );
        assert_eq!(
            ring_verify(&case.public, case.seq, &case.signature),
            case.ring,
            "ring: {}",
            case.name
        );
        if case.ring != case.accept {
            ring_differs.push(case.name);
        }
        // alone, and in the middle of a batch of valid frames (the batch fails when the
        // case is bad; the fallback must pin it on this frame and on no other)
        assert_eq!(
            verify_all(std::slice::from_ref(&c))[0].is_ok(),
            case.accept,
            "{}",
            case.name
        );
        let mut batch = valid_frames(100);
        batch.insert(37, c);
        let res = verify_all(&batch);
        assert_eq!(res.len(), 101);
        for (i, r) in res.iter().enumerate() {
            let want = if i == 37 { case.accept } else { true };
            assert_eq!(r.is_ok(), want, "{}: frame {i}", case.name);
            if let Err(refusal) = r {
                assert_eq!(refusal.code, feeder_core::AckCode::Unauthenticated);
                assert_eq!(refusal.reason, "bad_signature");
            }
        }
    }
    // ring (cofactorless) differs exactly where the doc says: a small-order A it accepts,
    // a mixed-order R it refuses, and a mixed-order A it refuses 7 times in 8
    assert!(ring_differs.contains(&"small-order A (identity): universal forgery"));
    assert!(ring_differs.contains(&"mixed-order R"));
    assert!(
        ring_differs
            .iter()
            .all(|n| n.contains("small-order A") || n.contains("mixed-order"))
    );

    // every case at once, interleaved with valid frames, in batches of every alignment
    let mut all = valid_frames(3);
    let mut want = vec![true; 3];
    for (i, case) in cases.iter().enumerate() {
        all.push(candidate(case.public, case.seq, case.signature.clone()));
        want.push(case.accept);
        all.extend(valid_frames(i % 5));
        want.extend(std::iter::repeat_n(true, i % 5));
    }
    let edge: Vec<bool> = verify_all(&all).iter().map(Result::is_ok).collect();
    let single: Vec<bool> = all.iter().map(feeder_verify).collect();
    assert_eq!(edge, want);
    assert_eq!(single, want);
}

#[test]
fn protocol_vector_verifies_on_both_paths() {
    let public: [u8; 32] =
        hex::decode("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
            .expect("hex")
            .try_into()
            .expect("32 bytes");
    let signature = hex::decode("08ca64975c3947c61615bbe51ae965fa8253219e5d2bf4f9111e96a4cfae809fac4c002b047810a7e38a7d9aaa3e091ae980bbc3ef62e1cd152a0979022f2200").expect("hex");
    let frame = SignedFrame {
        device_id: "mtr-000001".into(),
        seq: 7,
        key_id: "k1".into(),
        payload: Bytes::from_static(&[0x08, 0x01]),
        signature: signature.clone().into(),
    };
    let good = Candidate {
        raw: frame.encode_to_vec().into(),
        frame,
        key: VerifyingKey::ed25519(public),
    };
    let mut bad = good.clone();
    bad.frame.seq = 8;
    assert!(feeder_verify(&good));
    assert!(!feeder_verify(&bad));
    let res = verify_all(&[good.clone(), bad, good]);
    let ok: Vec<bool> = res.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, false, true]);
}

#[test]
fn a_batch_of_many_bad_frames_answers_each() {
    // every other frame forged: each batch fails and each frame gets its own answer
    let mut frames = valid_frames(200);
    for (i, f) in frames.iter_mut().enumerate().filter(|(i, _)| i % 2 == 1) {
        let mut s = f.frame.signature.to_vec();
        s[i % 32] ^= 1;
        f.frame.signature = s.into();
    }
    let ok: Vec<bool> = verify_all(&frames).iter().map(Result::is_ok).collect();
    let want: Vec<bool> = (0..200).map(|i| i % 2 == 0).collect();
    assert_eq!(ok, want);
}
