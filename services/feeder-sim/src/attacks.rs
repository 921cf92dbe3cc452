//! Frames that a correct receiver must refuse or deduplicate: what a compromised cellular
//! module, a relay or a stranger could send. The demo and the tests use them to exercise
//! the rejection paths next to the happy path.
//!
//! | function | what it models | expected receiver answer |
//! |---|---|---|
//! | [`forged`] | a plausible payload for a real device, signed with a key the utility never provisioned | code 16, signature mismatch |
//! | [`replay`] | a frame resent byte for byte | acked again, stored once (a duplicate) |
//! | [`unknown_device`] | a device id absent from the registry | code 16, unknown device |
//! | [`tampered`] | a real frame with one payload bit flipped in transit | code 16, signature mismatch |
//!
//! None of them advances the simulated device, so the device's own later frames stay
//! valid.

use feeder_core::keyfile::DeviceKey;
use feeder_core::{Alg, DeviceKind, SigningKey};
use feeder_proto::v1::SignedFrame;
use rand::Rng;

use crate::fleet::SimDevice;

/// The payload `dev` would send next, for frame `seq`, signed with a fresh random key of
/// the device's own algorithm (so the signature has the right length and only its value
/// is wrong). Pass `dev.next_seq()` to forge a seq the device has not used yet.
pub fn forged(dev: &SimDevice, seq: u64, now_ms: i64) -> SignedFrame {
    let payload = dev.peek_payload(now_ms);
    let key = random_key(dev.alg());
    SignedFrame {
        device_id: dev.device_id.clone(),
        seq,
        key_id: dev.key_id.clone(),
        signature: key.sign(&dev.device_id, &dev.key_id, seq, &payload).into(),
        payload,
    }
}

/// An exact copy of `frame`.
pub fn replay(frame: &SignedFrame) -> SignedFrame {
    frame.clone()
}

/// Seq 1 of a meter `device_id` (which must not be in the registry), with a valid meter
/// payload signed by a fresh Ed25519 key under key id `k1`.
pub fn unknown_device(device_id: &str, now_ms: i64) -> SignedFrame {
    let key = DeviceKey {
        device_id: device_id.to_string(),
        key_id: "k1".into(),
        kind: DeviceKind::Meter,
        labels: Default::default(),
        key: random_key(Alg::Ed25519),
    };
    SimDevice::from_key(key, now_ms).next_frame(now_ms).frame
}

/// `frame` with the lowest bit of its last payload byte flipped and the signature kept.
///
/// The last byte of an encoded frame ends a varint or a string, so the payload usually
/// still decodes: the change is a silently altered value, not garbage.
pub fn tampered(frame: &SignedFrame) -> SignedFrame {
    let mut payload = frame.payload.to_vec();
    match payload.last_mut() {
        Some(b) => *b ^= 1,
        None => payload.push(1),
    }
    SignedFrame {
        payload: payload.into(),
        ..frame.clone()
    }
}

/// An OCMF frame with one digit of its first reading value changed, the string's
/// signature kept: well formed (it passes the edge's shape checks) but refused by the
/// signature check (16). A frame that is not OCMF is returned unchanged.
pub fn tampered_ocmf(frame: &SignedFrame) -> SignedFrame {
    let mut payload = frame.payload.to_vec();
    let rv = payload.windows(5).position(|w| w == b"\"RV\":");
    if let Some(at) = rv.map(|i| i + 5)
        && let Some(b) = payload.get_mut(at)
        && b.is_ascii_digit()
    {
        *b = if *b == b'9' { b'8' } else { *b + 1 };
    }
    SignedFrame {
        payload: payload.into(),
        ..frame.clone()
    }
}

fn random_key(alg: Alg) -> SigningKey {
    let bytes: [u8; 32] = rand::rng().random();
    match alg {
        Alg::HmacSha256 => SigningKey::hmac(&bytes),
        Alg::Ocmf => match feeder_core::ocmf::OcmfSigner::generate() {
            Ok((signer, _)) => SigningKey::Ocmf(Box::new(signer), "SIM-UNKNOWN".into()),
            Err(_) => SigningKey::hmac(&bytes),
        },
        // ring accepts every 32-byte seed; the HMAC fallback is unreachable but keeps
        // this function total
        Alg::Ed25519 => {
            SigningKey::ed25519_from_seed(&bytes).unwrap_or_else(|| SigningKey::hmac(&bytes))
        }
    }
}
