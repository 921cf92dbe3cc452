//! Property tests of the stream's per-frame decision (`PartitionState::process`): for
//! arbitrary bytes and for well-formed but hostile frames (extreme seqs, timestamps,
//! values, scalers, intervals; duplicated rows; tamper events), it never panics (tests
//! run in debug, so an arithmetic overflow panics too) and what one record produces (its
//! checked or quarantine record and its anomalies, encoded) is bounded by a fixed
//! multiple of the record's size plus a constant (the anomaly cap).
//!
//! Bounded time: a few hundred cases of at most a few hundred rows (about a second in a
//! debug build). `cargo fuzz run stream_process` (fuzz/) runs the same target for long.

use feeder_core::EdgeProof;
use feeder_core::edge_proof::{EdgeKey, EdgeKeys};
use feeder_proto::v1::{Event, Frame, Reading, Sample, SignedFrame};
use feeder_stream::checks::{Outcome, PartitionState};
use feeder_stream::limits::FrameLimits;
use proptest::prelude::*;
use prost::Message as _;

/// Output bytes per input byte, at most (a 2-byte empty reading can carry a ~25-byte
/// flag entry).
const PER_INPUT_BYTE: usize = 16;
/// Plus at most this much: the anomaly cap (101 records of at most ~700 bytes).
const CONSTANT: usize = 128 * 1024;

const NOW: i64 = 1_700_000_000_000;

fn key() -> EdgeKey {
    EdgeKey::new("edge-k", &[5; 32]).unwrap()
}

fn output_bytes(st: &mut PartitionState, o: &Outcome) -> usize {
    let primary = match o {
        Outcome::Checked(c) => c.encoded_len(),
        Outcome::Quarantined(q) => q.encoded_len(),
        Outcome::Absorbed { .. } => 0,
    };
    primary
        + st.take_anomalies()
            .iter()
            .map(|a| a.encoded_len())
            .sum::<usize>()
}

fn check_bounded(st: &mut PartitionState, offset: i64, value: &[u8]) -> Result<(), TestCaseError> {
    let out = st.process(offset, value);
    let n = output_bytes(st, &out);
    prop_assert!(
        n <= PER_INPUT_BYTE * value.len() + CONSTANT,
        "{n} bytes out for {} in",
        value.len()
    );
    Ok(())
}

fn edge_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        i64::MIN..i64::MIN + 10_000_000_000_000,
        i64::MAX - 10_000_000_000_000..=i64::MAX,
        Just(0),
        Just(-1),
        (NOW - 500 * 86_400_000)..(NOW + 2 * 86_400_000),
        any::<i64>(),
    ]
}

fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        1u64..10,
        any::<u64>(),
    ]
}

fn obis() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1-0:1.29.0".to_string()),
        Just("1-0:1.8.0".to_string()),
        Just("1-0:32.7.0".to_string()),
        Just("1-0:2.29.0".to_string()),
        Just(String::new()),
        "[0-9:.-]{0,12}",
    ]
}

prop_compose! {
    fn reading()(ts_ms in edge_i64(), interval_s in prop_oneof![Just(0u32), Just(900), Just(u32::MAX), any::<u32>()],
                 obis in obis(), value in edge_i64(), scaler in prop_oneof![Just(0i32), -3i32..3, any::<i32>()],
                 unit in 0i32..50, status in any::<u32>()) -> Reading {
        Reading { ts_ms, interval_s, obis, value, scaler, unit, status }
    }
}

prop_compose! {
    fn sample()(ts_ms in edge_i64(), lat_e7 in any::<i32>(), lon_e7 in any::<i32>(), speed_cm_s in any::<u32>(),
                heading_cdeg in any::<u32>(), odometer_m in edge_u64(), ignition in any::<bool>(),
                battery_mv in any::<u32>()) -> Sample {
        Sample { ts_ms, lat_e7, lon_e7, speed_cm_s, heading_cdeg, odometer_m, ignition, battery_mv }
    }
}

prop_compose! {
    fn event()(ts_ms in edge_i64(), kind in 0i32..12, detail in ".{0,40}") -> Event {
        Event { ts_ms, kind, detail }
    }
}

prop_compose! {
    /// A frame whose rows are the same few rows repeated (duplicates, runs) or varied.
    fn frame()(readings in prop::collection::vec(reading(), 0..40), repeat in 1usize..8,
               samples in prop::collection::vec(sample(), 0..20),
               events in prop::collection::vec(event(), 0..10),
               sent_at_ms in edge_i64(), firmware in ".{0,10}") -> Frame {
        let readings = readings.iter().cycle().take(readings.len() * repeat).cloned().collect();
        Frame { sent_at_ms, firmware, readings, samples, events }
    }
}

prop_compose! {
    fn record()(frame in frame(), device in prop_oneof![Just("mtr-1".to_string()), Just("mtr-2".to_string()), "[a-z0-9.:_-]{0,70}"],
                seq in edge_u64(), received_at in edge_i64(), prove in any::<bool>()) -> Vec<u8> {
        let sf = SignedFrame {
            device_id: device,
            seq,
            key_id: "k1".into(),
            payload: frame.encode_to_vec().into(),
            signature: vec![1; 64].into(),
        }
        .encode_to_vec()
        .into();
        if prove {
            key().raw_frame(sf, received_at, "edge-0").encode_to_vec()
        } else {
            EdgeProof::Off.raw_frame(sf, received_at, "edge-0").encode_to_vec()
        }
    }
}

/// Default limits; no date horizon (so extreme timestamps reach the rules); proof on
/// with small caps.
fn states() -> [PartitionState; 3] {
    let proof = EdgeProof::keys(EdgeKeys::new(vec![key()]).unwrap());
    [
        PartitionState::new(4096),
        PartitionState::new(64).with_limits(FrameLimits {
            ts_horizon_past_ms: i64::MAX,
            ts_horizon_future_ms: i64::MAX,
            ..FrameLimits::default()
        }),
        PartitionState::new(4096)
            .with_edge_proof(proof)
            .with_limits(FrameLimits {
                max_rows: 100,
                max_row_flags: 50,
                max_anomalies: 5,
                ..FrameLimits::default()
            }),
    ]
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N for a longer run
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 1..8)) {
        for mut st in states() {
            for (i, v) in values.iter().enumerate() {
                check_bounded(&mut st, i as i64, v)?;
            }
        }
    }

    #[test]
    fn hostile_frames_never_panic_and_stay_bounded(records in prop::collection::vec(record(), 1..6)) {
        for mut st in states() {
            for (i, v) in records.iter().enumerate() {
                check_bounded(&mut st, i as i64, v)?;
                // a replay of the same record right after
                check_bounded(&mut st, 100 + i as i64, v)?;
            }
        }
    }

    #[test]
    fn corrupted_records_never_panic_and_stay_bounded(r in record(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut v = r;
        for (at, byte) in flips {
            let i = at.index(v.len().max(1));
            if let Some(b) = v.get_mut(i) {
                *b ^= byte;
            }
        }
        for mut st in states() {
            check_bounded(&mut st, 0, &v)?;
        }
    }
}
