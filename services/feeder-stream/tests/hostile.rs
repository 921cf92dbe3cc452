//! Hostile raw records through the stream's per-frame decision
//! (`PartitionState::process`): each one has a bounded outcome, none touches a device's
//! state unless it is a proven, well-formed frame, and none can stop the stage.

use feeder_core::EdgeProof;
use feeder_core::edge_proof::{EdgeKey, EdgeKeys};
use feeder_proto::pipeline::{QuarantinedFrame, RawFrame};
use feeder_proto::v1::{Event, EventKind, Frame, Reading, SignedFrame, Unit};
use feeder_stream::checks::{Outcome, PartitionState};
use feeder_stream::limits::{FLAGS_TRUNCATED, FrameLimits};
use prost::Message as _;

const NOW: i64 = 1_700_000_000_000;
const DAY_MS: i64 = 86_400_000;

fn key() -> EdgeKey {
    EdgeKey::new("edge-2026", &[7; 32]).unwrap()
}

fn proof() -> EdgeProof {
    EdgeProof::keys(EdgeKeys::new(vec![key()]).unwrap())
}

fn signed(device: &str, seq: u64, frame: &Frame) -> bytes::Bytes {
    SignedFrame {
        device_id: device.into(),
        seq,
        key_id: "k1".into(),
        payload: frame.encode_to_vec().into(),
        signature: vec![3; 64].into(),
    }
    .encode_to_vec()
    .into()
}

/// What an edge holding the edge key produces.
fn proven(device: &str, seq: u64, frame: &Frame) -> Vec<u8> {
    key()
        .raw_frame(signed(device, seq, frame), NOW, "edge-0")
        .encode_to_vec()
}

fn readings(n: usize, ts: i64) -> Frame {
    Frame {
        sent_at_ms: NOW,
        readings: (0..n)
            .map(|i| Reading {
                ts_ms: ts,
                interval_s: 900,
                obis: "1-0:1.29.0".into(),
                value: i as i64,
                unit: Unit::Wh as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn quarantined(o: Outcome) -> QuarantinedFrame {
    match o {
        Outcome::Quarantined(q) => q,
        Outcome::Checked(c) => panic!("checked, not quarantined: {}/{}", c.device_id, c.seq),
        Outcome::Absorbed { reason, .. } => panic!("counted only, not quarantined: {reason:?}"),
    }
}

fn is_checked(o: &Outcome) -> bool {
    matches!(o, Outcome::Checked(_))
}

#[test]
fn forged_records_are_quarantined_not_from_edge_before_any_state() {
    let mut st = PartitionState::new(4096).with_edge_proof(proof());
    let frame = readings(96, NOW - DAY_MS);
    let sf = signed("mtr-1", 1, &frame);
    let other = EdgeKey::new("edge-2026", &[8; 32]).unwrap();
    let mut moved = key().raw_frame(sf.clone(), NOW, "edge-0");
    moved.edge_id = "edge-9".into(); // proof made for another edge
    let forged = [
        (
            EdgeProof::Off.raw_frame(sf.clone(), NOW, "edge-0"),
            "no edge proof",
        ),
        (
            other.raw_frame(sf.clone(), NOW, "edge-0"),
            "edge proof does not verify",
        ),
        (moved, "edge proof does not verify"),
        (
            EdgeKey::new("stolen", &[7; 32])
                .unwrap()
                .raw_frame(sf.clone(), NOW, "edge-0"),
            "edge key id not known",
        ),
    ];
    for (i, (raw, detail)) in forged.iter().enumerate() {
        let q = quarantined(st.process(i as i64, &raw.encode_to_vec()));
        assert_eq!(
            (q.reason.as_str(), q.detail.as_str()),
            ("not_from_edge", *detail)
        );
        assert_eq!(q.raw, sf, "the signed bytes are kept");
        assert_eq!(q.source_offset, i as i64);
        assert!(
            q.device_id.is_empty(),
            "an unproven device id is not trusted"
        );
    }
    assert_eq!(st.devices(), 0, "no state touched");
    assert!(st.take_anomalies().is_empty() && st.take_rule_counts().is_empty());
    // the genuine record of the same seq is new: the forgeries consumed nothing
    assert!(is_checked(&st.process(10, &proven("mtr-1", 1, &frame))));
    // and proof off (the default) still takes records without proof
    let mut off = PartitionState::new(4096);
    let raw = EdgeProof::Off.raw_frame(sf, NOW, "edge-0").encode_to_vec();
    assert!(is_checked(&off.process(0, &raw)));
}

#[test]
fn garbage_is_quarantined_malformed_record_and_never_checked() {
    let mut st = PartitionState::new(4096).with_edge_proof(proof());
    for (i, garbage) in [
        vec![0xff, 0x01],
        vec![0x0a, 0xff],
        vec![0x08; 3],
        b"hello".to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        let q = quarantined(st.process(i as i64, &garbage));
        assert_eq!(q.reason, "malformed_record", "{garbage:?}");
        assert_eq!(q.raw.as_ref(), garbage.as_slice());
    }
    // a proven record whose frame is garbage keeps the device's bytes
    let junk = key()
        .raw_frame(vec![0xff, 0xff].into(), NOW, "e")
        .encode_to_vec();
    assert_eq!(quarantined(st.process(9, &junk)).reason, "malformed_frame");
    assert_eq!(st.devices(), 0);
}

#[test]
fn a_signed_frame_of_100k_empty_readings_is_quarantined_too_many_rows() {
    let mut st = PartitionState::new(4096).with_edge_proof(proof());
    let frame = Frame {
        readings: vec![Reading::default(); 100_000],
        ..Default::default()
    };
    let value = proven("mtr-1", 1, &frame);
    assert!(
        value.len() < 250_000,
        "{} bytes: fits a Kafka record",
        value.len()
    );
    let q = quarantined(st.process(0, &value));
    assert_eq!(q.reason, "too_many_rows");
    assert_eq!(q.detail, "100000 rows, more than 10000");
    assert_eq!((q.device_id.as_str(), q.seq), ("mtr-1", 1));
    assert_eq!(
        q.raw,
        RawFrame::decode(value.as_slice()).unwrap().signed_frame
    );
    assert!(q.encoded_len() < value.len() + 200);
    // the seq was not consumed: nothing of the frame moved the replay window
    assert!(is_checked(
        &st.process(1, &proven("mtr-1", 1, &readings(3, NOW)))
    ));
}

#[test]
fn a_frame_whose_every_row_is_flagged_is_stored_with_its_flags_capped() {
    // 9,999 readings of one (ts, obis): every one after the first is a duplicate_reading
    let limits = FrameLimits::default();
    let mut st = PartitionState::new(4096).with_limits(limits);
    let frame = readings(9_999, NOW);
    let value = proven("mtr-1", 1, &frame);
    let Outcome::Checked(c) = st.process(0, &value) else {
        panic!("quarantined")
    };
    let flags: usize = c.reading_flags.iter().map(|r| r.flags.len()).sum();
    assert!(flags <= limits.max_row_flags as usize, "{flags}");
    let size = c.encoded_len();
    assert!(
        size < 1_000_000,
        "checked record of {size} bytes must fit the broker"
    );
    // with a lower cap the rows past it lose their flags and the frame says so
    let mut capped = PartitionState::new(4096).with_limits(FrameLimits {
        max_row_flags: 100,
        ..limits
    });
    let Outcome::Checked(c) = capped.process(0, &value) else {
        panic!("quarantined")
    };
    assert_eq!(c.reading_flags.len(), 100);
    assert!(
        c.frame_flags.iter().any(|f| f == FLAGS_TRUNCATED),
        "{:?}",
        c.frame_flags
    );
    // rows above the cap of 10,000 are quarantined instead, at any flag count
    let big = proven("mtr-1", 2, &readings(10_001, NOW));
    assert_eq!(quarantined(capped.process(1, &big)).reason, "too_many_rows");
}

#[test]
fn anomalies_of_one_frame_are_capped() {
    let mut st = PartitionState::new(4096);
    let frame = Frame {
        events: (0..5_000)
            .map(|i| Event {
                ts_ms: NOW - i,
                kind: EventKind::CoverOpened as i32,
                detail: "x".repeat(2_000),
            })
            .collect(),
        ..Default::default()
    };
    assert!(is_checked(&st.process(0, &proven("mtr-1", 1, &frame))));
    let a = st.take_anomalies();
    assert_eq!(a.len(), 101);
    assert_eq!(a[100].rule, "anomalies_truncated");
    assert!(a[100].detail.starts_with("4900 more"), "{}", a[100].detail);
    assert!(a.iter().all(|a| a.detail.len() <= 512));
}

#[test]
fn a_seq_near_u64_max_is_quarantined_seq_jump_and_locks_nobody_out() {
    let mut st = PartitionState::new(4096);
    let f = readings(1, NOW);
    assert!(is_checked(&st.process(0, &proven("mtr-1", 1, &f))));
    for (i, seq) in [u64::MAX, u64::MAX - 1, 1 + (1 << 32) + 1]
        .into_iter()
        .enumerate()
    {
        let q = quarantined(st.process(1 + i as i64, &proven("mtr-1", seq, &f)));
        assert_eq!((q.reason.as_str(), q.seq), ("seq_jump", seq));
    }
    // the device goes on where it was
    assert!(is_checked(&st.process(9, &proven("mtr-1", 2, &f))));
    assert!(is_checked(
        &st.process(10, &proven("mtr-1", 2 + (1 << 32), &f))
    ));
    // a first frame far from 0 is a jump too (devices start at 1)
    assert_eq!(
        quarantined(st.process(11, &proven("mtr-2", u64::MAX, &f))).reason,
        "seq_jump"
    );
}

#[test]
fn device_values_at_the_ends_of_their_ranges_neither_panic_nor_overflow() {
    // tests run in debug: any overflow on these would panic
    let limits = FrameLimits {
        ts_horizon_past_ms: i64::MAX,
        ts_horizon_future_ms: i64::MAX,
        ..FrameLimits::default()
    };
    let mut st = PartitionState::new(4096).with_limits(limits);
    let extremes = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
    let mut seq = 0;
    for &ts in &extremes {
        for &value in &extremes {
            for scaler in [i32::MIN, -300, 0, 300, i32::MAX] {
                for (obis, interval_s) in [
                    ("1-0:1.29.0", u32::MAX),
                    ("1-0:1.29.0", 900),
                    ("1-0:1.8.0", 0),
                    ("1-0:32.7.0", 0),
                ] {
                    seq += 1;
                    let frame = Frame {
                        sent_at_ms: ts,
                        readings: vec![Reading {
                            ts_ms: ts,
                            interval_s,
                            obis: obis.into(),
                            value,
                            scaler,
                            unit: Unit::Wh as i32,
                            status: u32::MAX,
                        }],
                        samples: vec![feeder_proto::v1::Sample {
                            ts_ms: ts,
                            lat_e7: value as i32,
                            lon_e7: i32::MAX,
                            speed_cm_s: u32::MAX,
                            heading_cdeg: u32::MAX,
                            odometer_m: value as u64,
                            ignition: false,
                            battery_mv: u32::MAX,
                        }],
                        events: vec![Event {
                            ts_ms: ts,
                            kind: if value % 2 == 0 {
                                EventKind::PowerOutage
                            } else {
                                EventKind::PowerRestored
                            } as i32,
                            detail: String::new(),
                        }],
                        ..Default::default()
                    };
                    for received in [i64::MIN, 0, i64::MAX] {
                        let raw = key()
                            .raw_frame(signed("mtr-x", seq, &frame), received, "e")
                            .encode_to_vec();
                        st.process(seq as i64, &raw);
                    }
                }
            }
        }
    }
    assert_eq!(st.devices(), 1);
}

#[test]
fn rows_outside_the_date_horizon_quarantine_the_frame() {
    let mut st = PartitionState::new(4096);
    let mut frame = readings(96, NOW - DAY_MS);
    frame.readings[50].ts_ms = NOW - 3_000 * DAY_MS; // one row from 2015
    let q = quarantined(st.process(0, &proven("mtr-1", 1, &frame)));
    assert_eq!(q.reason, "ts_out_of_horizon");
    assert!(
        q.detail.contains(&(NOW - 3_000 * DAY_MS).to_string()),
        "{}",
        q.detail
    );
    frame.readings[50].ts_ms = NOW + 2 * DAY_MS;
    assert_eq!(
        quarantined(st.process(1, &proven("mtr-1", 2, &frame))).reason,
        "ts_out_of_horizon"
    );
    // a year of backfill is within it, and an hour ahead is only flagged
    frame.readings[50].ts_ms = NOW - 365 * DAY_MS;
    frame.readings[51].ts_ms = NOW + 3_600_000;
    let Outcome::Checked(c) = st.process(2, &proven("mtr-1", 3, &frame)) else {
        panic!("quarantined")
    };
    assert!(
        c.reading_flags
            .iter()
            .any(|r| r.index == 51 && r.flags.iter().any(|f| f == "future_reading"))
    );
}

#[test]
fn replays_of_one_frame_are_stored_once_then_counted() {
    let mut st = PartitionState::new(4096);
    let value = proven("mtr-1", 1, &readings(96, NOW));
    assert!(is_checked(&st.process(0, &value)));
    let sf = RawFrame::decode(value.as_slice()).unwrap().signed_frame;
    let mut written = Vec::new();
    let mut stored = 0;
    for i in 1..=1000 {
        match st.process(i, &value) {
            Outcome::Quarantined(q) => {
                assert_eq!(q.reason, "duplicate");
                stored += q.encoded_len();
                if q.raw.is_empty() {
                    written.push(q.detail.split(',').next().unwrap_or_default().to_string());
                } else {
                    assert_eq!(q.raw, sf);
                    written.push("with bytes".into());
                }
            }
            Outcome::Absorbed { device_id, reason } => {
                assert_eq!(
                    (device_id.as_str(), reason.as_str()),
                    ("mtr-1", "duplicate")
                );
            }
            Outcome::Checked(_) => panic!("a replay checked"),
        }
    }
    let want: Vec<String> = std::iter::once("with bytes".to_string())
        .chain((1..10).map(|k| format!("replayed {} times", 1u64 << k)))
        .collect();
    assert_eq!(
        written, want,
        "the bytes once, then a count at powers of two"
    );
    assert!(
        stored < sf.len() + 10 * 200,
        "{stored} bytes for 1000 replays of a {}-byte frame",
        sf.len()
    );
    // the count survives the state changelog: the 1024th copy is counted, not the 1st
    let snapshot = st.take_dirty().unwrap();
    let mut restored = st.emptied();
    for (id, bytes) in &snapshot {
        restored.restore_device(id, bytes).unwrap();
    }
    for i in 1001..1024 {
        assert!(matches!(
            restored.process(i, &value),
            Outcome::Absorbed { .. }
        ));
    }
    let q = quarantined(restored.process(1024, &value));
    assert_eq!(q.detail.split(',').next(), Some("replayed 1024 times"));
    assert!(q.raw.is_empty());
}
