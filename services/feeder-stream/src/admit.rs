//! Admission of a raw record, before any device state is read or written: decode the
//! record, check the edge's proof, count the frame's rows on the wire, decode the frame
//! and check its dates. Every refusal is a [`Reason`] (the quarantine topic's snake_case
//! wire string) with a detail.
//!
//! Why before the state: a record whose proof fails may name any device and seq, and a
//! frame past the row cap or the date horizon must not move a replay window either (its
//! retries would then be `duplicate`, stored without ever being judged). Cheap before
//! expensive: the proof is one HMAC pass, the row count one scan of the field headers, so
//! a 100,000-row frame is refused without allocating its rows.

use bytes::Bytes;
use feeder_core::EdgeProof;
use feeder_proto::pipeline::RawFrame;
use feeder_proto::v1::{Frame, SignedFrame};
use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};

use crate::limits::FrameLimits;

crate::wire_enum! {
    /// Why a raw record went to quarantine; the wire name (`as_str`) is
    /// `QuarantinedFrame.reason`, the `quarantine` dataset's `reason` and the
    /// `reason` label of `feeder_stream_quarantined_total`.
    pub enum Reason (as_str) {
        /// The seq was already accepted.
        Duplicate => "duplicate",
        /// The seq is older than the replay window behind the highest.
        TooOld => "too_old",
        /// The seq is more than `max_seq_ahead` past the highest.
        SeqJump => "seq_jump",
        /// The raw record is not a `RawFrame`.
        MalformedRecord => "malformed_record",
        /// Its `signed_frame` is not a `SignedFrame`.
        MalformedFrame => "malformed_frame",
        /// The payload is not a `Frame`.
        MalformedPayload => "malformed_payload",
        /// The record carries no valid edge proof.
        NotFromEdge => "not_from_edge",
        /// More rows than `max_rows`.
        TooManyRows => "too_many_rows",
        /// A row dated outside the horizon around `received_at`.
        TsOutOfHorizon => "ts_out_of_horizon",
        /// An output of the record would be over the size limit, or the broker refused
        /// it for its size (`crate::outputs::guard`).
        OutputTooLarge => "output_too_large",
    }
}

/// A record refused at admission: what its quarantine record says.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
    pub received_at_ms: i64,
    pub edge_id: String,
    pub device_id: String,
    pub seq: u64,
    /// The signed frame's bytes as the edge received them (the whole record when it does
    /// not decode).
    pub raw: Bytes,
}

/// A record that passed admission.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub raw: RawFrame,
    pub signed: SignedFrame,
    pub frame: Frame,
    /// An OCMF fiscal page: its seq counts in a replay window of its own
    /// (`feeder_core::payload::window_key`).
    pub separate_window: bool,
}

/// Admits the raw record `value`, or says why not.
pub fn admit(
    value: &[u8],
    proof: &EdgeProof,
    limits: &FrameLimits,
) -> Result<Admitted, Box<Refusal>> {
    let raw = RawFrame::decode(value).map_err(|e| {
        Box::new(Refusal {
            reason: Reason::MalformedRecord,
            detail: e.to_string(),
            received_at_ms: 0,
            edge_id: String::new(),
            device_id: String::new(),
            seq: 0,
            raw: Bytes::copy_from_slice(value),
        })
    })?;
    let refuse = |raw: &RawFrame, reason, detail: String, device_id: &str, seq| {
        Box::new(Refusal {
            reason,
            detail,
            received_at_ms: raw.received_at_ms,
            edge_id: raw.edge_id.clone(),
            device_id: device_id.to_string(),
            seq,
            raw: raw.signed_frame.clone(),
        })
    };
    if let Err(why) = proof.check(&raw) {
        // nothing in an unproven record is trusted, not even its device id
        return Err(refuse(&raw, Reason::NotFromEdge, why.to_string(), "", 0));
    }
    let signed = SignedFrame::decode(raw.signed_frame.clone())
        .map_err(|e| refuse(&raw, Reason::MalformedFrame, e.to_string(), "", 0))?;
    let at = |reason, detail| refuse(&raw, reason, detail, &signed.device_id, signed.seq);
    // an OCMF string (a meter signing in its own format) holds at most
    // `ocmf::MAX_READINGS` readings, bounded by its parser
    let ocmf = feeder_core::ocmf::is_ocmf(&signed.payload);
    let rows = match ocmf {
        true => 0,
        false => count_rows(&signed.payload).map_err(|e| at(Reason::MalformedPayload, e))?,
    };
    if rows > u64::from(limits.max_rows) {
        return Err(at(
            Reason::TooManyRows,
            format!("{rows} rows, more than {}", limits.max_rows),
        ));
    }
    let (frame, separate_window) = match ocmf {
        true => feeder_core::payload::decode(&signed.payload)
            .map(|d| {
                let separate = d.separate_window();
                (d.frame, separate)
            })
            .map_err(|e| at(Reason::MalformedPayload, e))?,
        false => (
            Frame::decode(signed.payload.clone())
                .map_err(|e| at(Reason::MalformedPayload, e.to_string()))?,
            false,
        ),
    };
    if let Some(ts) = out_of_horizon(&frame, raw.received_at_ms, limits) {
        return Err(at(
            Reason::TsOutOfHorizon,
            format!(
                "a row at ts {ts} ms is outside received_at {} - {} ms / + {} ms",
                raw.received_at_ms, limits.ts_horizon_past_ms, limits.ts_horizon_future_ms
            ),
        ));
    }
    Ok(Admitted {
        raw,
        signed,
        frame,
        separate_window,
    })
}

/// The first row timestamp outside the horizon, if any.
fn out_of_horizon(frame: &Frame, received_at_ms: i64, limits: &FrameLimits) -> Option<i64> {
    let ts = frame
        .readings
        .iter()
        .map(|r| r.ts_ms)
        .chain(frame.samples.iter().map(|s| s.ts_ms))
        .chain(frame.events.iter().map(|e| e.ts_ms));
    ts.into_iter()
        .find(|&t| !limits.in_horizon(received_at_ms, t))
}

/// The `Frame` fields that are rows: readings, samples, events.
const ROW_FIELDS: [u32; 3] = [3, 4, 5];

/// Counts the rows of an encoded `Frame` from its field headers, without decoding them
/// (a length-delimited field is skipped by its length). Errors on a truncated field.
pub fn count_rows(mut payload: &[u8]) -> Result<u64, String> {
    let mut rows = 0u64;
    while !payload.is_empty() {
        let (tag, wire) = decode_key(&mut payload).map_err(|e| e.to_string())?;
        let skip = match wire {
            WireType::Varint => {
                decode_varint(&mut payload).map_err(|e| e.to_string())?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut payload).map_err(|e| e.to_string())?;
                usize::try_from(len).map_err(|_| "field length overflows".to_string())?
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err("groups are not part of a Frame".into());
            }
        };
        if skip > payload.len() {
            return Err(format!("field {tag} truncated"));
        }
        payload = &payload[skip..];
        if ROW_FIELDS.contains(&tag) {
            rows += 1;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use feeder_core::edge_proof::{EdgeKey, EdgeKeys};
    use feeder_proto::v1::{Event, Reading, Sample};

    fn frame(readings: usize, samples: usize, events: usize, ts: i64) -> Frame {
        Frame {
            sent_at_ms: ts,
            firmware: "1.0".into(),
            readings: vec![
                Reading {
                    ts_ms: ts,
                    ..Default::default()
                };
                readings
            ],
            samples: vec![
                Sample {
                    ts_ms: ts,
                    ..Default::default()
                };
                samples
            ],
            events: vec![
                Event {
                    ts_ms: ts,
                    ..Default::default()
                };
                events
            ],
        }
    }

    #[test]
    fn rows_are_counted_on_the_wire_like_the_decoder_sees_them() {
        for (r, s, e) in [(0, 0, 0), (1, 0, 0), (96, 0, 2), (0, 60, 1), (1000, 3, 7)] {
            for ts in [0, 1_700_000_000_000, -5] {
                let bytes = frame(r, s, e, ts).encode_to_vec();
                assert_eq!(count_rows(&bytes), Ok((r + s + e) as u64));
            }
        }
        // an empty reading is two bytes on the wire
        let empties = Frame {
            readings: vec![Reading::default(); 100_000],
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(empties.len(), 200_000);
        assert_eq!(count_rows(&empties), Ok(100_000));
        // truncation and garbage are errors, never a panic
        let whole = frame(3, 0, 0, 9).encode_to_vec();
        assert!(count_rows(&whole[..whole.len() - 1]).is_err());
        assert!(count_rows(&[0xff; 11]).is_err());
        assert!(count_rows(&[0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }

    fn signed(payload: Vec<u8>) -> Bytes {
        SignedFrame {
            device_id: "mtr-1".into(),
            seq: 7,
            key_id: "k1".into(),
            payload: payload.into(),
            signature: vec![1; 64].into(),
        }
        .encode_to_vec()
        .into()
    }

    fn key() -> EdgeKey {
        EdgeKey::new("edge-k", &[9; 32]).unwrap()
    }

    fn keys() -> EdgeProof {
        EdgeProof::keys(EdgeKeys::new(vec![key()]).unwrap())
    }

    const NOW: i64 = 1_700_000_000_000;

    fn reason(value: &[u8], proof: &EdgeProof) -> Result<(), (Reason, String)> {
        admit(value, proof, &FrameLimits::default())
            .map(|_| ())
            .map_err(|r| (r.reason, r.device_id))
    }

    #[test]
    fn refusals_in_order_of_cost() {
        let good = signed(frame(2, 0, 1, NOW).encode_to_vec());
        let proven = key().raw_frame(good.clone(), NOW, "edge-0").encode_to_vec();
        let unproven = EdgeProof::Off.raw_frame(good.clone(), NOW, "edge-0");
        let mut bad_mac = key().raw_frame(good.clone(), NOW, "edge-0");
        bad_mac.received_at_ms += 1; // moved after signing
        let other_key =
            EdgeKey::new("edge-k", &[8; 32])
                .unwrap()
                .raw_frame(good.clone(), NOW, "edge-0");
        let on = keys();
        let off = EdgeProof::Off;
        let nf = |d: &str| Err((Reason::NotFromEdge, d.to_string()));
        assert_eq!(reason(&proven, &on), Ok(()));
        assert_eq!(reason(&proven, &off), Ok(()));
        assert_eq!(reason(&unproven.encode_to_vec(), &on), nf(""));
        assert_eq!(reason(&unproven.encode_to_vec(), &off), Ok(()));
        assert_eq!(reason(&bad_mac.encode_to_vec(), &on), nf(""));
        assert_eq!(reason(&other_key.encode_to_vec(), &on), nf(""));
        // garbage never reaches the proof
        assert_eq!(
            reason(&[0xff, 0x01], &on),
            Err((Reason::MalformedRecord, String::new()))
        );
        let too_many = signed(frame(10_001, 0, 0, NOW).encode_to_vec());
        let too_many = key().raw_frame(too_many, NOW, "e").encode_to_vec();
        assert_eq!(
            reason(&too_many, &on),
            Err((Reason::TooManyRows, "mtr-1".into()))
        );
        let just_fits = signed(frame(9_000, 999, 1, NOW).encode_to_vec());
        let just_fits = key().raw_frame(just_fits, NOW, "e").encode_to_vec();
        assert_eq!(reason(&just_fits, &on), Ok(()));
        for ts in [
            0,
            NOW - 401 * 86_400_000,
            NOW + 2 * 86_400_000,
            i64::MIN,
            i64::MAX,
        ] {
            let far = signed(frame(1, 0, 0, ts).encode_to_vec());
            let far = key().raw_frame(far, NOW, "e").encode_to_vec();
            assert_eq!(
                reason(&far, &on),
                Err((Reason::TsOutOfHorizon, "mtr-1".into())),
                "{ts}"
            );
        }
    }

    #[test]
    fn refusals_keep_the_signed_bytes() {
        let sf = signed(frame(1, 0, 0, 0).encode_to_vec());
        let r = admit(
            &key().raw_frame(sf.clone(), NOW, "edge-3").encode_to_vec(),
            &keys(),
            &FrameLimits::default(),
        )
        .unwrap_err();
        assert_eq!(
            (r.reason, r.raw, r.edge_id.as_str(), r.seq),
            (Reason::TsOutOfHorizon, sf, "edge-3", 7)
        );
    }

    #[test]
    fn every_reason_has_its_own_label() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_wire(r.as_str()), Some(r));
        }
        assert_eq!(Reason::from_wire("undecodable_record"), None);
    }
}
