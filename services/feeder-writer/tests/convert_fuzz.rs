//! Fuzzing, in the normal test suite, of the writer's record conversion: whatever bytes a
//! record of the checked, quarantine or anomalies topic holds, conversion never fails or
//! panics (a bad record is one quarantine row), and the rows' Arrow memory stays within
//! a fixed multiple of the record. Inputs: structurally valid but hostile `CheckedFrame`s
//! (many readings and samples, frame and row flags, huge and repeated row indexes, long
//! strings, extreme timestamps), the same bytes cut off or with one byte changed, and
//! arbitrary bytes. Long runs: `fuzz/fuzz_targets/writer_records.rs`.

use feeder_proto::pipeline::{CheckedFrame, RowFlags};
use feeder_proto::v1::{Frame, Reading, Sample};
use feeder_writer::{SourceRecord, TopicKind, records_to_batches};
use proptest::prelude::*;
use prost::Message;

/// Arrow bytes allowed per record byte, plus a constant for the builders of one record.
/// The worst case is a frame of empty readings (2 bytes on the wire, a row of ~100
/// bytes with a 64-byte device id) under many frame flags; copying those flags onto
/// every row, as the writer once did, exceeds this several times over.
const MULTIPLE: usize = 128;
const CONSTANT: usize = 16 * 1024;

fn flag() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("spike".to_string()),
        Just("gap_before".to_string()),
        "[a-z_]{0,8}",
        "x{60,70}",
    ]
}

fn row_flags(max_index: u32) -> impl Strategy<Value = Vec<RowFlags>> {
    prop::collection::vec(
        (
            prop_oneof![0..max_index.max(1), Just(u32::MAX), any::<u32>()],
            prop::collection::vec(flag(), 0..40),
        )
            .prop_map(|(index, flags)| RowFlags { index, flags }),
        0..20,
    )
}

fn reading() -> impl Strategy<Value = Reading> {
    (
        prop_oneof![Just(0i64), Just(i64::MIN), Just(i64::MAX), any::<i64>()],
        any::<i64>(),
        any::<i32>(),
        "[0-9:.-]{0,12}",
        any::<i32>(),
    )
        .prop_map(|(ts_ms, value, scaler, obis, unit)| Reading {
            ts_ms,
            interval_s: 900,
            obis,
            value,
            scaler,
            unit,
            status: 0,
        })
}

fn checked() -> impl Strategy<Value = CheckedFrame> {
    (
        prop_oneof![
            Just("mtr-1".to_string()),
            Just("m".repeat(64)),
            "[a-z0-9-]{0,70}"
        ],
        prop::collection::vec(prop_oneof![reading(), Just(Reading::default())], 0..300),
        0usize..50,
        prop::collection::vec(flag(), 0..80),
        row_flags(300),
        row_flags(50),
        any::<i64>(),
    )
        .prop_map(
            |(device_id, readings, samples, frame_flags, reading_flags, sample_flags, at)| {
                let frame = Frame {
                    readings,
                    samples: vec![Sample::default(); samples],
                    ..Default::default()
                };
                CheckedFrame {
                    device_id,
                    seq: 1,
                    key_id: "k1".into(),
                    payload: frame.encode_to_vec().into(),
                    signature: vec![1; 64].into(),
                    received_at_ms: at,
                    edge_id: "e".into(),
                    frame_flags,
                    reading_flags,
                    sample_flags,
                    source_offset: 0,
                    estimates: Vec::new(),
                }
            },
        )
}

/// A record's bytes: a hostile frame as is, cut off, or with one byte changed; or noise.
fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => checked().prop_map(|cf| cf.encode_to_vec()),
        1 => (checked(), any::<prop::sample::Index>())
            .prop_map(|(cf, i)| {
                let b = cf.encode_to_vec();
                b[..i.index(b.len() + 1)].to_vec()
            }),
        1 => (checked(), any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(cf, i, x)| {
                let mut b = cf.encode_to_vec();
                if !b.is_empty() {
                    let at = i.index(b.len());
                    b[at] ^= x | 1;
                }
                b
            }),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn convert(kind: TopicKind, bytes: &[u8]) -> usize {
    let rec = SourceRecord {
        offset: 0,
        timestamp_ms: Some(0),
        payload: Some(bytes.to_vec()),
    };
    let out = records_to_batches(kind, &[rec]).expect("conversion never fails");
    out.batches
        .iter()
        .map(|b| b.batch.get_array_memory_size())
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 600,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_record_converts_within_a_multiple_of_its_size(
        bytes in record_bytes(),
        kind in prop_oneof![
            Just(TopicKind::Checked),
            Just(TopicKind::Quarantine),
            Just(TopicKind::Anomalies),
        ],
    ) {
        let memory = convert(kind, &bytes);
        prop_assert!(
            memory <= MULTIPLE * bytes.len() + CONSTANT,
            "{memory} bytes of rows from a {}-byte record",
            bytes.len()
        );
    }
}
