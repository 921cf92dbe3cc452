//! Fuzz target: arbitrary bytes as a whole `PushRequest`, through the edge's decoder with
//! its limits (`feeder_edge::decode`). It must never panic, and its output is bounded by
//! its input: at most `max_frames` frames and one per 2 input bytes, kept bytes no more
//! than the input, no kept frame over `max_frame_bytes`. The bounded, seeded run of the
//! same property is `cargo test -p feeder-edge --test decode_fuzz`.

#![no_main]

use bytes::Bytes;
use feeder_edge::decode::{FrameLimits, WireFrame, decode_push_request};
use libfuzzer_sys::fuzz_target;

const LIMITS: FrameLimits = FrameLimits {
    max_frames: 16,
    max_frame_bytes: 300,
};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = decode_push_request(&mut Bytes::copy_from_slice(data), LIMITS) else {
        return;
    };
    assert!(req.frames.len() <= LIMITS.max_frames);
    assert!(2 * req.frames.len() <= data.len());
    let mut kept = 0;
    for f in &req.frames {
        if let WireFrame::Bytes(b) = f {
            assert!(b.len() <= LIMITS.max_frame_bytes);
            kept += b.len();
        }
    }
    assert!(kept <= data.len());
});
