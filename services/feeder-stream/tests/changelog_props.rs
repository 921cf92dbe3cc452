//! Property tests of changelog restore (`Restored::record`, `Restored::validate`,
//! `recovery::restore`): arbitrary records, valid envelopes around arbitrary or mutated
//! state bytes, and forged checkpoints never panic (tests run in debug, so an arithmetic
//! overflow panics too), whatever is restored is bounded by the bytes read, and the
//! restored state then processes frames without panicking.
//!
//! Bounded time: 256 cases of at most 8 records (about a second in a debug build).
//! `cargo fuzz run changelog_restore` (fuzz/) runs the same path for long.

use std::sync::OnceLock;

use feeder_proto::pipeline::RawFrame;
use feeder_proto::v1::{Event, EventKind, Frame, Reading, Sample, SignedFrame};
use feeder_stream::changelog::{
    CHECKPOINT_KEY, Checkpoint, DeviceSnapshot, OutputPositions, Restored, STATE_FORMAT,
};
use feeder_stream::checks::PartitionState;
use feeder_stream::recovery::restore;
use proptest::prelude::*;
use prost::Message as _;

const NOW: i64 = 1_700_000_000_000;

/// Restored state per byte of changelog read, at most (a window hole is 1..10 bytes of
/// varint, 16 in memory), plus a fixed allowance per device.
const PER_INPUT_BYTE: usize = 32;
const PER_DEVICE: usize = 4096;

fn raw(device: &str, seq: u64, frame: Frame) -> Vec<u8> {
    RawFrame {
        signed_frame: SignedFrame {
            device_id: device.into(),
            seq,
            key_id: "k1".into(),
            payload: frame.encode_to_vec().into(),
            signature: vec![0; 64].into(),
        }
        .encode_to_vec()
        .into(),
        received_at_ms: NOW + seq as i64 * 900_000,
        edge_id: "e".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn meter_frame(seq: u64) -> Frame {
    let at = NOW + seq as i64 * 900_000;
    Frame {
        sent_at_ms: at,
        firmware: format!("fw{}", seq % 3),
        readings: vec![
            Reading {
                ts_ms: at - 1000,
                interval_s: 900,
                obis: "1-0:1.8.0".into(),
                value: seq as i64 * 10,
                ..Default::default()
            },
            Reading {
                ts_ms: at - 1000,
                obis: "1-0:1.8.0".into(),
                value: 1000 + seq as i64,
                ..Default::default()
            },
        ],
        events: vec![Event {
            ts_ms: at - 500,
            kind: EventKind::PowerOutage as i32,
            detail: String::new(),
        }],
        ..Default::default()
    }
}

fn vehicle_frame(seq: u64) -> Frame {
    let at = NOW + seq as i64 * 900_000;
    Frame {
        sent_at_ms: at,
        samples: vec![Sample {
            ts_ms: at - 1000,
            lat_e7: 520_000_000 + seq as i32 * 10_000,
            lon_e7: 40_000_000,
            speed_cm_s: 1000,
            odometer_m: 1000 * seq,
            ignition: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Device state records as the stage writes them: a meter with a hole in its window, a
/// vehicle, rule state of both kinds.
fn seeds() -> &'static [(String, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut st = PartitionState::new(4096);
        for (offset, seq) in [1u64, 2, 4, 5, 7].into_iter().enumerate() {
            st.process(offset as i64, &raw("mtr-1", seq, meter_frame(seq)));
            st.process(offset as i64, &raw("veh-1", seq, vehicle_frame(seq)));
        }
        // invariant: the state of these devices serializes (postcard of plain data)
        st.take_dirty().expect("serializable state")
    })
}

/// One changelog record's value: garbage, or a valid envelope around arbitrary or
/// mutated state bytes, or a checkpoint with arbitrary positions and partition state.
fn value() -> impl Strategy<Value = (bool, Vec<u8>)> {
    let garbage = proptest::collection::vec(any::<u8>(), 0..64).prop_map(|v| (false, v));
    let mutated = (
        0..2usize,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
        -2i64..20,
    )
        .prop_map(|(which, edits, cut, checked_next)| {
            let mut state = seeds()[which].1.clone();
            for (at, b) in edits {
                let i = at.index(state.len());
                state[i] = b;
            }
            state.truncate(cut.index(state.len() + 1));
            let d = DeviceSnapshot {
                checked_next,
                format: STATE_FORMAT,
                state: state.into(),
            };
            (false, d.encode_to_vec())
        });
    let arbitrary_state = (proptest::collection::vec(any::<u8>(), 0..128), -2i64..20).prop_map(
        |(state, checked_next)| {
            let d = DeviceSnapshot {
                checked_next,
                format: STATE_FORMAT,
                state: state.into(),
            };
            (false, d.encode_to_vec())
        },
    );
    let checkpoint = (
        prop_oneof![Just(i64::MIN), -2i64..20, Just(i64::MAX)],
        -2i64..20,
        -2i64..20,
        proptest::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(checked, quarantine, anomalies, partition_state)| {
            let cp = Checkpoint {
                checked_next: checked,
                quarantine_next: quarantine,
                anomalies_next: anomalies,
                format: STATE_FORMAT,
                partition_state: partition_state.into(),
                raw_next: 0,
            };
            (true, cp.encode_to_vec())
        });
    prop_oneof![garbage, mutated, arbitrary_state, checkpoint]
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"mtr-1".to_vec()),
        Just(b"veh-1".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_changelog_records_restore_bounded_and_without_panic(
        records in proptest::collection::vec((key(), value()), 0..8),
        checked_end in 0i64..20,
    ) {
        let mut changelog = Restored::default();
        let mut read = 0usize;
        for (key, (is_checkpoint, value)) in &records {
            let key: &[u8] = if *is_checkpoint { CHECKPOINT_KEY.as_bytes() } else { key };
            read += key.len() + value.len();
            changelog.record(key, value);
        }
        let ends = OutputPositions { checked: checked_end, quarantine: 10, anomalies: 10 };
        let mut state = PartitionState::new(4096);
        let (start, ahead, restored) = restore(&mut state, &changelog, 0, ends);
        if start == OutputPositions::default() && restored == 0 {
            // a full replay (or a usable checkpoint at the start of every log, no device)
            prop_assert!(ahead.is_empty());
        } else {
            // the checkpoint was used: it was valid, and reading starts inside the logs
            // (a checkpoint with no device record restores no device but still counts)
            prop_assert!(changelog.validate(ends).is_ok());
            prop_assert!((0..=ends.checked).contains(&start.checked));
            prop_assert!((0..=ends.quarantine).contains(&start.quarantine));
            prop_assert!((0..=ends.anomalies).contains(&start.anomalies));
        }
        let ids: Vec<String> = changelog.devices.keys().cloned().collect();
        let held: usize = ids.iter().filter_map(|id| state.device_bytes(id)).sum();
        prop_assert!(
            held <= read * PER_INPUT_BYTE + ids.len() * PER_DEVICE,
            "{held} bytes of state from {read} bytes read"
        );
        // the restored state is used: later frames of its devices, and one far ahead
        for (i, id) in ids.iter().enumerate() {
            for seq in [1u64, 8, 9, 4_000] {
                let frame = if id.starts_with("veh") { vehicle_frame(seq) } else { meter_frame(seq) };
                state.process(100 + i as i64, &raw(id, seq, frame));
            }
        }
        state.take_dirty().expect("restored state serializes again");
    }
}

/// The property's seeds restore as they are (so the mutated cases start from states the
/// stage writes, windows with holes included), and restored devices refuse their replays.
#[test]
fn the_seed_states_restore_and_refuse_their_replays() {
    let mut changelog = Restored::default();
    for (id, state) in seeds() {
        let d = DeviceSnapshot {
            checked_next: 10,
            format: STATE_FORMAT,
            state: state.clone().into(),
        };
        changelog.record(id.as_bytes(), &d.encode_to_vec());
    }
    let ends = OutputPositions {
        checked: 10,
        quarantine: 0,
        anomalies: 0,
    };
    let cp = ends.checkpoint(PartitionState::new(4096).partition_bytes().unwrap(), 10);
    changelog.record(CHECKPOINT_KEY.as_bytes(), &cp.encode_to_vec());
    let mut state = PartitionState::new(4096);
    let (start, _, restored) = restore(&mut state, &changelog, 0, ends);
    assert_eq!((start.checked, restored), (10, 2));
    let outcome = state.process(50, &raw("mtr-1", 4, meter_frame(4)));
    assert!(
        matches!(outcome, feeder_stream::checks::Outcome::Quarantined(q) if q.reason == "duplicate")
    );
    let outcome = state.process(51, &raw("mtr-1", 3, meter_frame(3)));
    assert!(
        matches!(outcome, feeder_stream::checks::Outcome::Checked(_)),
        "seq 3 was a hole"
    );
}
