//! Fuzz target: the stream stage's per-frame decision (`PartitionState::process`) on
//! arbitrary input, three ways: the bytes as a raw record; as a signed frame wrapped in a
//! record with a valid edge proof (what a compromised edge-key holder could write); and as
//! a frame payload of a signed frame of a known device (what a device with its own key
//! could send through an honest edge), each decided twice (the second is a replay). No
//! date horizon on one state, so extreme timestamps reach the rules. It must never panic
//! (build with debug assertions: `cargo fuzz` does) and never produce more than
//! 16 x the input + 128 KiB (`services/feeder-stream/tests/process_props.rs` states the
//! same bound and runs in the normal test suite).
//!
//! Run: `cargo +nightly fuzz run stream_process -- -max_len=65536`

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use feeder_core::EdgeProof;
use feeder_core::edge_proof::{EdgeKey, EdgeKeys};
use feeder_proto::v1::SignedFrame;
use feeder_stream::checks::{Outcome, PartitionState};
use feeder_stream::limits::FrameLimits;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

const NOW: i64 = 1_700_000_000_000;

fn key() -> &'static EdgeKey {
    static KEY: OnceLock<EdgeKey> = OnceLock::new();
    // invariant: a fixed id and a 32-byte secret are a valid edge key
    KEY.get_or_init(|| EdgeKey::new("edge-fuzz", &[5; 32]).expect("fixed key"))
}

fn states() -> [PartitionState; 2] {
    // invariant: one key is a valid key set
    let keys = EdgeKeys::new(vec![key().clone()]).expect("one key");
    [
        PartitionState::new(4096).with_edge_proof(EdgeProof::keys(keys)),
        PartitionState::new(64).with_limits(FrameLimits {
            ts_horizon_past_ms: i64::MAX,
            ts_horizon_future_ms: i64::MAX,
            ..FrameLimits::default()
        }),
    ]
}

fn decide(st: &mut PartitionState, offset: i64, value: &[u8]) {
    let out = st.process(offset, value);
    let primary = match &out {
        Outcome::Checked(c) => c.encoded_len(),
        Outcome::Quarantined(q) => q.encoded_len(),
        Outcome::Absorbed { .. } => 0,
    };
    let anomalies: usize = st.take_anomalies().iter().map(|a| a.encoded_len()).sum();
    let n = primary + anomalies;
    assert!(
        n <= 16 * value.len() + 128 * 1024,
        "{n} bytes out for {} in",
        value.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let as_signed = key()
        .raw_frame(Bytes::copy_from_slice(data), NOW, "edge-0")
        .encode_to_vec();
    let signed = SignedFrame {
        device_id: "mtr-1".into(),
        seq: 1 + u64::from(data.first().copied().unwrap_or(0)),
        key_id: "k1".into(),
        payload: Bytes::copy_from_slice(data),
        signature: vec![1; 64].into(),
    };
    let as_payload = key()
        .raw_frame(signed.encode_to_vec().into(), NOW, "edge-0")
        .encode_to_vec();
    for mut st in states() {
        for (i, value) in [data, &as_signed, &as_payload].into_iter().enumerate() {
            decide(&mut st, i as i64, value);
            decide(&mut st, 10 + i as i64, value);
        }
    }
});
