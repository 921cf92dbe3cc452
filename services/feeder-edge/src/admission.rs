//! Per-frame admission, cheapest checks first: decoding, device-id syntax, seq, payload
//! size, registry lookup and revocation, and for a meter that signs in its own format
//! (OCMF) the payload's shape, its seq and serial bindings. Only frames that pass reach
//! signature verification, so a flood of junk or unknown devices costs a hash lookup each.

use bytes::Bytes;
use feeder_core::registry::KeyStatus;
use feeder_core::{AckCode, Registry, VerifyingKey, validate_device_id};
use feeder_proto::v1::{FrameAck, SignedFrame};
use prost::Message;

use crate::EdgeConfig;

/// Why a frame was not taken. `reason` is a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: AckCode,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: AckCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }
}

/// A frame that passed the cheap checks and now needs its signature verified.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub frame: SignedFrame,
    /// The SignedFrame bytes exactly as the device sent them.
    pub raw: Bytes,
    pub key: VerifyingKey,
}

/// The outcome for one frame of a request so far.
pub enum Admitted {
    Candidate(Box<Candidate>),
    /// Refused; the device id and seq are echoed when the frame could be decoded.
    Refused(FrameAck, Refusal),
}

pub fn ack(device_id: &str, seq: u64, refusal: Option<&Refusal>) -> FrameAck {
    FrameAck {
        device_id: device_id.to_string(),
        seq,
        code: refusal.map_or(AckCode::Ok, |r| r.code).as_i32(),
        message: refusal.map(|r| r.message.clone()).unwrap_or_default(),
    }
}

/// A frame longer than [`EdgeConfig::max_frame_bytes`]: refused without decoding it.
pub fn frame_too_large(cfg: &EdgeConfig) -> Admitted {
    let r = Refusal::new(
        AckCode::InvalidArgument,
        "payload_too_large",
        format!("frame exceeds {} payload bytes", cfg.max_payload_bytes),
    );
    Admitted::Refused(ack("", 0, Some(&r)), r)
}

pub fn admit(raw: &Bytes, registry: &Registry, cfg: &EdgeConfig) -> Admitted {
    // Bound work before decoding: a frame is its payload plus a small envelope.
    if raw.len() > cfg.max_frame_bytes() {
        return frame_too_large(cfg);
    }
    let frame = match SignedFrame::decode(raw.clone()) {
        Ok(f) => f,
        Err(_) => {
            let r = Refusal::new(
                AckCode::InvalidArgument,
                "malformed_frame",
                "malformed SignedFrame",
            );
            return Admitted::Refused(ack("", 0, Some(&r)), r);
        }
    };
    match check(&frame, registry, cfg) {
        Ok(key) => Admitted::Candidate(Box::new(Candidate {
            frame,
            raw: raw.clone(),
            key,
        })),
        Err(r) => {
            // Do not echo an invalid device id back verbatim.
            let echo = if validate_device_id(&frame.device_id).is_ok() {
                frame.device_id.as_str()
            } else {
                ""
            };
            Admitted::Refused(ack(echo, frame.seq, Some(&r)), r)
        }
    }
}

fn check(
    frame: &SignedFrame,
    registry: &Registry,
    cfg: &EdgeConfig,
) -> Result<VerifyingKey, Refusal> {
    if let Err(e) = validate_device_id(&frame.device_id) {
        return Err(Refusal::new(
            AckCode::InvalidArgument,
            "invalid_device_id",
            e.to_string(),
        ));
    }
    if frame.seq == 0 {
        return Err(Refusal::new(
            AckCode::InvalidArgument,
            "zero_seq",
            "seq must start at 1",
        ));
    }
    if frame.payload.len() > cfg.max_payload_bytes {
        return Err(Refusal::new(
            AckCode::InvalidArgument,
            "payload_too_large",
            format!("payload exceeds {} bytes", cfg.max_payload_bytes),
        ));
    }
    let Some(device) = registry.device(&frame.device_id) else {
        return Err(Refusal::new(
            AckCode::Unauthenticated,
            "unknown_device",
            "unknown device",
        ));
    };
    if device.is_revoked() {
        return Err(Refusal::new(
            AckCode::PermissionDenied,
            "device_revoked",
            "device revoked",
        ));
    }
    let Some(key) = device.key(&frame.key_id) else {
        return Err(Refusal::new(
            AckCode::Unauthenticated,
            "unknown_key",
            "unknown key_id",
        ));
    };
    if key.status == KeyStatus::Revoked {
        return Err(Refusal::new(
            AckCode::Unauthenticated,
            "key_revoked",
            "key revoked",
        ));
    }
    if frame.signature.len() != key.key.alg().signature_len() {
        return Err(Refusal::new(
            AckCode::Unauthenticated,
            "bad_signature_length",
            "signature has the wrong length",
        ));
    }
    // a native format's shape, seq and serial bindings (OCMF): parsing, no cryptography
    if let Err(e) = key.key.check_shape(frame.seq, &frame.payload) {
        return Err(Refusal::new(AckCode::InvalidArgument, e.reason, e.message));
    }
    Ok(key.key.clone())
}
