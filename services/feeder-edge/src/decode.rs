//! Decoding a `PushRequest` with its limits applied while decoding, not after.
//!
//! prost would decode the whole request first and let the edge count frames afterwards:
//! an empty `SignedFrame` is 2 bytes on the wire but a 32-byte `Bytes` in memory, so a
//! 40 MiB request of empty frames cost ~640 MB before the count check refused it. Here
//! the request's single field is walked by hand: the call is refused
//! ([`DecodeRefusal::TooManyFrames`]) the moment frame `max_frames + 1` is seen, and a
//! frame longer than `max_frame_bytes` is skipped without being kept (it is answered code 3
//! in its own ack, so the other frames of the request still count). Frames are zero-copy
//! slices of the request buffer, so one request costs at most its own (already bounded)
//! size plus `max_frames` × 32 bytes.
//!
//! The wire format parsed is the protobuf encoding of
//! `message PushRequest { repeated SignedFrame frames = 1; }`: unknown fields of the
//! scalar wire types are skipped as protobuf requires; groups (deprecated, never part of
//! this contract) and truncated input are refused as malformed.

use bytes::{Buf, Bytes};

/// The request's limits, from [`crate::EdgeConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// More frames than this: the call is refused while decoding.
    pub max_frames: usize,
    /// A frame longer than this is not kept (its ack says code 3).
    pub max_frame_bytes: usize,
}

/// One `frames` entry of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireFrame {
    /// The `SignedFrame` bytes exactly as sent.
    Bytes(Bytes),
    /// Longer than `max_frame_bytes`; its bytes were skipped, not kept.
    Oversized,
}

/// A decoded request: its frames, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushFrames {
    pub frames: Vec<WireFrame>,
}

/// Why a request could not be decoded within its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeRefusal {
    /// Frame `limit + 1` was reached; decoding stopped there.
    TooManyFrames { limit: usize },
    /// Not a valid `PushRequest` encoding (truncated, bad varint, group, wire type 6/7).
    Malformed,
}

const FRAMES_FIELD: u64 = 1;

/// Decodes a whole `PushRequest` from `buf` (consumes all of it).
pub fn decode_push_request(
    buf: &mut impl Buf,
    limits: FrameLimits,
) -> Result<PushFrames, DecodeRefusal> {
    let mut frames = Vec::new();
    while buf.has_remaining() {
        let key = varint(buf)?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 {
            return Err(DecodeRefusal::Malformed);
        }
        match wire_type {
            // varint
            0 => {
                varint(buf)?;
            }
            // 64-bit, 32-bit
            1 => skip(buf, 8)?,
            5 => skip(buf, 4)?,
            2 => {
                let len = usize::try_from(varint(buf)?).map_err(|_| DecodeRefusal::Malformed)?;
                if len > buf.remaining() {
                    return Err(DecodeRefusal::Malformed);
                }
                if field != FRAMES_FIELD {
                    buf.advance(len);
                    continue;
                }
                if frames.len() == limits.max_frames {
                    return Err(DecodeRefusal::TooManyFrames {
                        limit: limits.max_frames,
                    });
                }
                if len > limits.max_frame_bytes {
                    buf.advance(len);
                    frames.push(WireFrame::Oversized);
                } else {
                    frames.push(WireFrame::Bytes(buf.copy_to_bytes(len)));
                }
            }
            _ => return Err(DecodeRefusal::Malformed),
        }
    }
    Ok(PushFrames { frames })
}

fn skip(buf: &mut impl Buf, n: usize) -> Result<(), DecodeRefusal> {
    if buf.remaining() < n {
        return Err(DecodeRefusal::Malformed);
    }
    buf.advance(n);
    Ok(())
}

/// A base-128 varint of at most 10 bytes.
fn varint(buf: &mut impl Buf) -> Result<u64, DecodeRefusal> {
    let mut value = 0u64;
    for i in 0..10 {
        if !buf.has_remaining() {
            return Err(DecodeRefusal::Malformed);
        }
        let b = buf.get_u8();
        // the 10th byte may only hold the top bit of a u64
        if i == 9 && b > 1 {
            return Err(DecodeRefusal::Malformed);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(DecodeRefusal::Malformed)
}

#[cfg(test)]
mod tests {
    use feeder_proto::v1::{PushRequest, SignedFrame};
    use prost::Message;

    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_frames: 3,
        max_frame_bytes: 64,
    };

    fn frame(payload: usize) -> SignedFrame {
        SignedFrame {
            device_id: "mtr-1".into(),
            seq: 1,
            key_id: "k1".into(),
            payload: vec![7u8; payload].into(),
            signature: vec![1u8; 16].into(),
        }
    }

    fn decode(bytes: &[u8]) -> Result<PushFrames, DecodeRefusal> {
        decode_push_request(&mut Bytes::copy_from_slice(bytes), LIMITS)
    }

    #[test]
    fn decodes_what_prost_encodes_byte_for_byte() {
        let req = PushRequest {
            frames: vec![frame(3), SignedFrame::default(), frame(10)],
        };
        let got = decode(&req.encode_to_vec()).unwrap();
        let want: Vec<WireFrame> = req
            .frames
            .iter()
            .map(|f| WireFrame::Bytes(f.encode_to_vec().into()))
            .collect();
        assert_eq!(got.frames, want);
        assert_eq!(decode(&[]).unwrap().frames, vec![]);
    }

    #[test]
    fn stops_at_the_frame_past_the_limit() {
        // a million empty frames: refused at the 4th, whatever follows
        let mut wire = [0x0a, 0x00].repeat(1_000_000);
        assert_eq!(
            decode(&wire),
            Err(DecodeRefusal::TooManyFrames { limit: 3 })
        );
        // even when the rest of the request is garbage
        wire.truncate(8);
        wire.extend_from_slice(&[0xff; 20]);
        assert_eq!(
            decode(&wire),
            Err(DecodeRefusal::TooManyFrames { limit: 3 })
        );
        wire.truncate(6);
        assert_eq!(decode(&wire).unwrap().frames.len(), 3);
    }

    #[test]
    fn an_oversized_frame_is_skipped_not_kept() {
        let req = PushRequest {
            frames: vec![frame(1), frame(200)],
        };
        let got = decode(&req.encode_to_vec()).unwrap();
        assert_eq!(got.frames[1], WireFrame::Oversized);
        assert!(matches!(got.frames[0], WireFrame::Bytes(_)));
    }

    #[test]
    fn unknown_fields_are_skipped_and_broken_input_is_malformed() {
        // field 2 varint, field 3 fixed64, field 4 bytes, field 5 fixed32, then a frame
        let mut wire = vec![0x10, 0x96, 0x01, 0x19, 1, 2, 3, 4, 5, 6, 7, 8];
        wire.extend_from_slice(&[0x22, 2, 9, 9, 0x2d, 1, 2, 3, 4, 0x0a, 1, 0x42]);
        let got = decode(&wire).unwrap();
        assert_eq!(
            got.frames,
            vec![WireFrame::Bytes(Bytes::from_static(&[0x42]))]
        );
        for bad in [
            &[0x0a, 5, 1][..],       // length past the end
            &[0x0a][..],             // key without length
            &[0x0b][..],             // start group
            &[0x0e][..],             // wire type 6
            &[0x02, 0][..],          // field 0
            &[0x08, 0xff, 0xff][..], // truncated varint
            &[0x19, 1, 2][..],       // truncated fixed64
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ][..],
        ] {
            assert_eq!(decode(bad), Err(DecodeRefusal::Malformed), "{bad:?}");
        }
    }
}
