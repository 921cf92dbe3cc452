//! Frame-to-Arrow conversion, without Kafka: values, scaling, units, flags, event kind
//! names, sort order, date partitioning, and what happens to records that do not decode.

use arrow::array::{Array, AsArray, ListArray};
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame, RowFlags};
use feeder_proto::v1::{Event, EventKind, Frame, Reading, Sample, SignedFrame, Unit};
use prost::Message;

use super::*;

/// 2024-03-10T23:59:59.000Z: one second before a UTC midnight.
const LATE: i64 = 1_710_115_199_000;
const MIDNIGHT: i64 = 1_710_115_200_000;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn reading(ts_ms: i64, obis: &str, value: i64, scaler: i32, unit: i32) -> Reading {
    Reading {
        ts_ms,
        interval_s: 900,
        obis: obis.into(),
        value,
        scaler,
        unit,
        status: 0x10,
    }
}

fn checked(device: &str, seq: u64, frame: &Frame) -> CheckedFrame {
    CheckedFrame {
        device_id: device.into(),
        seq,
        key_id: "k1".into(),
        payload: frame.encode_to_vec().into(),
        signature: vec![7u8; 64].into(),
        received_at_ms: LATE + 500,
        edge_id: "edge-a".into(),
        ..Default::default()
    }
}

fn only(c: &Converted, dataset: Dataset) -> &RecordBatch {
    let found: Vec<_> = c.batches.iter().filter(|b| b.dataset == dataset).collect();
    assert_eq!(found.len(), 1, "{dataset:?}: {found:?}");
    &found[0].batch
}

fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let a = b.column_by_name(col).unwrap().as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect()
}

fn str_values(b: &RecordBatch, col: &str) -> Vec<String> {
    strings(b, col).into_iter().map(Option::unwrap).collect()
}

fn f64s(b: &RecordBatch, col: &str) -> Vec<f64> {
    b.column_by_name(col)
        .unwrap()
        .as_primitive::<Float64Type>()
        .values()
        .to_vec()
}

fn u64s(b: &RecordBatch, col: &str) -> Vec<u64> {
    b.column_by_name(col)
        .unwrap()
        .as_primitive::<UInt64Type>()
        .values()
        .to_vec()
}

fn times(b: &RecordBatch, col: &str) -> Vec<i64> {
    b.column_by_name(col)
        .unwrap()
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec()
}

fn flags(b: &RecordBatch) -> Vec<Vec<String>> {
    let list: &ListArray = b.column_by_name("flags").unwrap().as_list::<i32>();
    (0..list.len())
        .map(|i| {
            let v = list.value(i);
            let s = v.as_string::<i32>();
            (0..s.len()).map(|j| s.value(j).to_string()).collect()
        })
        .collect()
}

#[test]
fn readings_scale_values_name_units_and_merge_flags() {
    let frame = Frame {
        readings: vec![
            reading(LATE - 1000, "1-0:32.7.0", 2305, -1, Unit::V as i32),
            reading(LATE - 1000, "1-0:1.8.0", 12, 3, Unit::Wh as i32),
            reading(LATE - 1000, "1-0:99.9.9", -7, 0, 0),
            reading(LATE - 1000, "8-0:1.0.0", 5, 0, 12345),
        ],
        ..Default::default()
    };
    let mut cf = checked("mtr-1", 9, &frame);
    cf.frame_flags = vec!["clock_skew".into()];
    cf.reading_flags = vec![
        RowFlags {
            index: 1,
            flags: vec!["register_decrease".into()],
        },
        RowFlags {
            index: 0,
            flags: vec!["voltage_out_of_band".into()],
        },
        RowFlags {
            index: 1,
            flags: vec!["spike".into()],
        },
        // an index past the readings is ignored, not an error
        RowFlags {
            index: 40,
            flags: vec!["spike".into()],
        },
    ];
    let c = checked_to_batches(&[cf]).unwrap();
    let r = only(&c, Dataset::Readings);
    assert_eq!(r.schema(), crate::schema::readings_schema());
    assert_eq!(r.num_rows(), 4);
    assert_eq!(f64s(r, "value"), [230.5, 12000.0, -7.0, 5.0]);
    assert_eq!(
        strings(r, "unit"),
        [Some("V".to_string()), Some("Wh".to_string()), None, None]
    );
    assert_eq!(
        flags(r),
        [
            vec!["clock_skew", "voltage_out_of_band"],
            vec!["clock_skew", "register_decrease", "spike"],
            vec!["clock_skew"],
            vec!["clock_skew"],
        ]
    );
    assert_eq!(str_values(r, "obis")[1], "1-0:1.8.0");
    assert_eq!(u64s(r, "seq"), [9, 9, 9, 9]);
    assert_eq!(times(r, "received_at"), [LATE + 500; 4]);
    let raw = r
        .column_by_name("value_raw")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(raw.values().to_vec(), [2305, 12, -7, 5]);
    let scaler = r
        .column_by_name("scaler")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int32Type>();
    assert_eq!(scaler.values().to_vec(), [-1, 3, 0, 0]);
    let status = r
        .column_by_name("status")
        .unwrap()
        .as_primitive::<arrow::datatypes::UInt32Type>();
    assert_eq!(status.values().to_vec(), [0x10; 4]);
    let interval = r
        .column_by_name("interval_s")
        .unwrap()
        .as_primitive::<arrow::datatypes::UInt32Type>();
    assert_eq!(interval.values().to_vec(), [900; 4]);
    // one frames row per accepted frame, carrying the signed bytes unchanged
    let f = only(&c, Dataset::Frames);
    assert_eq!(f.num_rows(), 1);
    assert_eq!(str_values(f, "key_id"), ["k1"]);
    assert_eq!(str_values(f, "edge_id"), ["edge-a"]);
    let payload = f.column_by_name("payload").unwrap().as_binary::<i32>();
    assert_eq!(payload.value(0), frame.encode_to_vec().as_slice());
    let sig = f.column_by_name("signature").unwrap().as_binary::<i32>();
    assert_eq!(sig.value(0), [7u8; 64].as_slice());
}

#[test]
fn clean_rows_have_empty_flag_lists() {
    let frame = Frame {
        readings: vec![reading(LATE, "1-0:1.8.0", 1, 0, Unit::Wh as i32)],
        ..Default::default()
    };
    let c = checked_to_batches(&[checked("mtr-1", 1, &frame)]).unwrap();
    assert_eq!(flags(only(&c, Dataset::Readings)), [Vec::<String>::new()]);
}

#[test]
fn telematics_are_converted_to_si_units() {
    let frame = Frame {
        samples: vec![
            Sample {
                ts_ms: LATE,
                lat_e7: 525_200_000,
                lon_e7: -134_050_000,
                speed_cm_s: 1234,
                heading_cdeg: 35_999,
                odometer_m: 123_456_789,
                ignition: true,
                battery_mv: 12_650,
            },
            Sample {
                ts_ms: LATE + 1,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let mut cf = checked("veh-1", 3, &frame);
    cf.sample_flags = vec![RowFlags {
        index: 1,
        flags: vec!["null_island".into()],
    }];
    let c = checked_to_batches(&[cf]).unwrap();
    let t = only(&c, Dataset::Telematics);
    assert_eq!(t.schema(), crate::schema::telematics_schema());
    assert_eq!(f64s(t, "lat"), [52.52, 0.0]);
    assert_eq!(f64s(t, "lon"), [-13.405, 0.0]);
    assert_eq!(f64s(t, "speed_m_s"), [12.34, 0.0]);
    assert_eq!(f64s(t, "heading_deg"), [359.99, 0.0]);
    assert_eq!(f64s(t, "battery_v"), [12.65, 0.0]);
    assert_eq!(u64s(t, "odometer_m"), [123_456_789, 0]);
    let ign = t.column_by_name("ignition").unwrap().as_boolean();
    assert!(ign.value(0) && !ign.value(1));
    assert_eq!(flags(t), [vec![], vec!["null_island".to_string()]]);
    assert!(c.batches.iter().all(|b| b.dataset != Dataset::Readings));
}

#[test]
fn event_kinds_are_lower_snake_names() {
    let table = [
        (EventKind::PowerOutage as i32, "power_outage"),
        (EventKind::PowerRestored as i32, "power_restored"),
        (EventKind::CoverOpened as i32, "cover_opened"),
        (EventKind::MagneticTamper as i32, "magnetic_tamper"),
        (EventKind::ReverseFlow as i32, "reverse_flow"),
        (EventKind::FirmwareUpdated as i32, "firmware_updated"),
        (EventKind::ClockAdjusted as i32, "clock_adjusted"),
        (EventKind::ModuleReset as i32, "module_reset"),
        (0, "unspecified"),
        (77, "unknown_77"),
    ];
    for (code, name) in table {
        assert_eq!(event_kind_name(code), name);
    }
    let frame = Frame {
        events: vec![Event {
            ts_ms: LATE,
            kind: EventKind::CoverOpened as i32,
            detail: "lid".into(),
        }],
        ..Default::default()
    };
    let c = checked_to_batches(&[checked("mtr-1", 1, &frame)]).unwrap();
    let e = only(&c, Dataset::Events);
    assert_eq!(e.schema(), crate::schema::events_schema());
    assert_eq!(str_values(e, "kind"), ["cover_opened"]);
    assert_eq!(str_values(e, "detail"), ["lid"]);
}

#[test]
fn rows_are_sorted_by_device_then_ts_then_seq() {
    let one = |ts| Frame {
        readings: vec![reading(ts, "1-0:1.8.0", ts, 0, Unit::Wh as i32)],
        ..Default::default()
    };
    let frames = [
        checked("mtr-b", 5, &one(LATE - 10)),
        checked("mtr-a", 7, &one(LATE - 20)),
        checked("mtr-a", 6, &one(LATE - 20)),
        checked("mtr-a", 4, &one(LATE - 30)),
        checked("mtr-b", 1, &one(LATE - 40)),
    ];
    let c = checked_to_batches(&frames).unwrap();
    let r = only(&c, Dataset::Readings);
    assert_eq!(
        str_values(r, "device_id"),
        ["mtr-a", "mtr-a", "mtr-a", "mtr-b", "mtr-b"]
    );
    assert_eq!(
        times(r, "ts"),
        [LATE - 30, LATE - 20, LATE - 20, LATE - 40, LATE - 10]
    );
    assert_eq!(u64s(r, "seq"), [4, 6, 7, 1, 5]);
    // frames order by device, received_at (all equal here), then seq
    assert_eq!(u64s(only(&c, Dataset::Frames), "seq"), [4, 6, 7, 1, 5]);
}

#[test]
fn rows_split_by_utc_date_across_midnight() {
    let frame = Frame {
        readings: vec![
            reading(MIDNIGHT, "1-0:1.8.0", 2, 0, Unit::Wh as i32),
            reading(MIDNIGHT - 1, "1-0:1.8.0", 1, 0, Unit::Wh as i32),
            reading(MIDNIGHT + 86_400_000, "1-0:1.8.0", 3, 0, Unit::Wh as i32),
        ],
        events: vec![Event {
            ts_ms: MIDNIGHT + 5,
            kind: 1,
            detail: String::new(),
        }],
        ..Default::default()
    };
    let c = checked_to_batches(&[checked("mtr-1", 1, &frame)]).unwrap();
    let got: Vec<(Dataset, NaiveDate, usize)> = c
        .batches
        .iter()
        .map(|b| (b.dataset, b.date, b.batch.num_rows()))
        .collect();
    assert_eq!(
        got,
        [
            (Dataset::Readings, date("2024-03-10"), 1),
            (Dataset::Readings, date("2024-03-11"), 1),
            (Dataset::Readings, date("2024-03-12"), 1),
            (Dataset::Events, date("2024-03-11"), 1),
            // frames are dated by received_at (LATE + 500 ms, still 2024-03-10)
            (Dataset::Frames, date("2024-03-10"), 1),
        ]
    );
    assert_eq!(times(&c.batches[0].batch, "ts"), [MIDNIGHT - 1]);
    assert_eq!(f64s(&c.batches[2].batch, "value"), [3.0]);
}

#[test]
fn undecodable_records_become_quarantine_rows() {
    let good = checked("mtr-1", 1, &Frame::default()).encode_to_vec();
    let no_device = CheckedFrame::default().encode_to_vec();
    let records = [
        SourceRecord {
            offset: 10,
            timestamp_ms: Some(LATE),
            payload: Some(vec![0xff, 0xff, 0xff]),
        },
        SourceRecord {
            offset: 11,
            timestamp_ms: Some(LATE),
            payload: Some(good),
        },
        SourceRecord {
            offset: 12,
            timestamp_ms: None,
            payload: None,
        },
        SourceRecord {
            offset: 13,
            timestamp_ms: Some(MIDNIGHT),
            payload: Some(no_device.clone()),
        },
    ];
    let c = records_to_batches(TopicKind::Checked, &records).unwrap();
    assert_eq!(c.undecodable_records, 3);
    assert_eq!(c.rows(Dataset::Frames), 1);
    let q: Vec<&DatasetBatch> = c
        .batches
        .iter()
        .filter(|b| b.dataset == Dataset::Quarantine)
        .collect();
    // dated by the record's log timestamp (0 when the broker gave none)
    let dates: Vec<NaiveDate> = q.iter().map(|b| b.date).collect();
    assert_eq!(
        dates,
        [date("1970-01-01"), date("2024-03-10"), date("2024-03-11")]
    );
    let all: Vec<String> = q
        .iter()
        .flat_map(|b| str_values(&b.batch, "reason"))
        .collect();
    assert_eq!(all, [REASON_UNDECODABLE_RECORD; 3]);
    let late = &q[1].batch;
    assert_eq!(str_values(late, "device_id"), [""]);
    assert!(str_values(late, "detail")[0].contains("offset 10"));
    let raw = late.column_by_name("raw").unwrap().as_binary::<i32>();
    assert_eq!(raw.value(0), [0xff, 0xff, 0xff].as_slice());
    let raw = q[2].batch.column_by_name("raw").unwrap().as_binary::<i32>();
    assert_eq!(raw.value(0), no_device.as_slice());
}

#[test]
fn undecodable_payload_is_quarantined_with_a_verifiable_signed_frame() {
    let mut cf = checked("mtr-1", 4, &Frame::default());
    cf.payload = vec![0x0a, 0xff].into(); // field 1, length 255, truncated
    let c = checked_to_batches(std::slice::from_ref(&cf)).unwrap();
    assert_eq!(c.undecodable_payloads, 1);
    assert_eq!(c.rows(Dataset::Frames), 0);
    let q = only(&c, Dataset::Quarantine);
    assert_eq!(str_values(q, "reason"), [REASON_UNDECODABLE_PAYLOAD]);
    assert_eq!(str_values(q, "device_id"), ["mtr-1"]);
    let raw = q.column_by_name("raw").unwrap().as_binary::<i32>();
    let sf = SignedFrame::decode(raw.value(0)).unwrap();
    assert_eq!((sf.device_id.as_str(), sf.seq), ("mtr-1", 4));
    assert_eq!(sf.payload, cf.payload);
    assert_eq!(sf.signature, cf.signature);
}

#[test]
fn quarantined_frames_map_one_to_one() {
    let q = QuarantinedFrame {
        received_at_ms: MIDNIGHT,
        device_id: "mtr-9".into(),
        seq: 3,
        reason: "too_old".into(),
        detail: "seq 3 < window".into(),
        raw: vec![1, 2, 3].into(),
        source_offset: 99,
        edge_id: "edge-b".into(),
    };
    let bytes = q.encode_to_vec();
    let records = [SourceRecord {
        offset: 0,
        timestamp_ms: Some(0),
        payload: Some(bytes),
    }];
    let c = records_to_batches(TopicKind::Quarantine, &records).unwrap();
    assert_eq!(c.undecodable_records, 0);
    let b = only(&c, Dataset::Quarantine);
    assert_eq!(b.schema(), crate::schema::quarantine_schema());
    assert_eq!(c.batches[0].date, date("2024-03-11"));
    assert_eq!(str_values(b, "reason"), ["too_old"]);
    assert_eq!(str_values(b, "detail"), ["seq 3 < window"]);
    assert_eq!(u64s(b, "seq"), [3]);
    assert_eq!(times(b, "received_at"), [MIDNIGHT]);
    // a garbage record on the quarantine topic is kept too
    let bad = [SourceRecord {
        offset: 1,
        timestamp_ms: Some(MIDNIGHT),
        payload: Some(vec![0xff]),
    }];
    let c = records_to_batches(TopicKind::Quarantine, &bad).unwrap();
    assert_eq!(c.undecodable_records, 1);
    assert_eq!(c.rows(Dataset::Quarantine), 1);
}

#[test]
fn conversion_is_deterministic() {
    let frames: Vec<CheckedFrame> = (0..50u64)
        .map(|i| {
            let frame = Frame {
                readings: vec![
                    reading(LATE + (i as i64 % 7) * 1000, "1-0:1.8.0", i as i64, 0, 30),
                    reading(LATE + (i as i64 % 7) * 1000, "1-0:2.8.0", i as i64, 0, 30),
                ],
                ..Default::default()
            };
            checked(&format!("mtr-{}", i % 5), i, &frame)
        })
        .collect();
    let a = checked_to_batches(&frames).unwrap();
    let b = checked_to_batches(&frames).unwrap();
    assert_eq!(a.batches.len(), b.batches.len());
    for (x, y) in a.batches.iter().zip(&b.batches) {
        assert_eq!((x.dataset, x.date), (y.dataset, y.date));
        assert_eq!(x.batch, y.batch);
    }
    assert_eq!(a.rows(Dataset::Readings), 100);
}

/// A hostile checked record: 1000 frame flags (and a 10 KiB one) over 5000 readings,
/// 1000 entries for row 0, an index far past the rows, 100 flags for the last row.
/// Unbounded, that is 5 million list entries; bounded, every row has at most
/// `MAX_FLAGS_PER_ROW`, ending in `flags_truncated`, and the record at most
/// `MAX_FLAG_ENTRIES_PER_RECORD` kept flags.
#[test]
fn hostile_flag_lists_are_bounded() {
    const ROWS: usize = 5000;
    let frame = Frame {
        readings: vec![Reading::default(); ROWS],
        samples: vec![Sample::default(); 3],
        ..Default::default()
    };
    let mut cf = checked("mtr-1", 1, &frame);
    cf.frame_flags = (0..1000).map(|i| format!("f{i}")).collect();
    cf.frame_flags.push("x".repeat(10 * 1024));
    let entry = |index: u32, flags: Vec<String>| RowFlags { index, flags };
    cf.reading_flags = (0..1000)
        .map(|_| entry(0, vec!["spike".into()]))
        .chain([entry(u32::MAX, vec!["huge_index".into(); 50])])
        .chain([entry(
            ROWS as u32 - 1,
            (0..100).map(|i| format!("r{i}")).collect(),
        )])
        .collect();
    cf.sample_flags = vec![entry(2, vec!["null_island".into()])];
    let bytes = cf.encode_to_vec();
    let c = records_to_batches(
        TopicKind::Checked,
        &[SourceRecord {
            offset: 0,
            timestamp_ms: None,
            payload: Some(bytes.clone()),
        }],
    )
    .unwrap();
    let r = only(&c, Dataset::Readings);
    assert_eq!(r.num_rows(), ROWS);
    let lists = flags(r);
    let mut expected_first: Vec<String> = (0..MAX_FLAGS_PER_ROW - 1)
        .map(|i| format!("f{i}"))
        .collect();
    expected_first.push(FLAGS_TRUNCATED.into());
    assert_eq!(lists[0], expected_first);
    let kept: usize = lists
        .iter()
        .map(|l| {
            assert!(l.len() <= MAX_FLAGS_PER_ROW, "{} flags", l.len());
            assert_eq!(l.last().map(String::as_str), Some(FLAGS_TRUNCATED));
            assert!(l.iter().all(|f| f.len() <= MAX_FLAG_BYTES));
            assert!(!l.contains(&"huge_index".to_string()));
            l.len() - 1
        })
        .sum();
    // 31 a row exhaust the record's budget early; later rows keep only the marker
    assert_eq!(kept, MAX_FLAG_ENTRIES_PER_RECORD);
    assert_eq!(lists[ROWS - 1], [FLAGS_TRUNCATED]);
    let t = only(&c, Dataset::Telematics);
    assert!(flags(t).iter().all(|l| l == &[FLAGS_TRUNCATED]));
    assert_eq!(c.flags_truncated_rows, (ROWS + 3) as u64);
    // the whole output stays a small multiple of the record
    let out: usize = c
        .batches
        .iter()
        .map(|b| b.batch.get_array_memory_size())
        .sum();
    assert!(out < 64 * bytes.len(), "{out} bytes from {}", bytes.len());
}

/// A device id the edge never admits is an undecodable record: repeated on every row,
/// a long one would multiply the record by its row count.
#[test]
fn an_invalid_device_id_is_an_undecodable_record() {
    let frame = Frame {
        readings: vec![Reading::default(); 10],
        ..Default::default()
    };
    for bad in ["x".repeat(10_000), "mtr 1".into(), String::new()] {
        let cf = checked(&bad, 1, &frame);
        let c = records_to_batches(
            TopicKind::Checked,
            &[SourceRecord {
                offset: 3,
                timestamp_ms: Some(5),
                payload: Some(cf.encode_to_vec()),
            }],
        )
        .unwrap();
        assert_eq!(c.undecodable_records, 1);
        assert_eq!(c.rows(Dataset::Readings), 0);
        assert_eq!(c.rows(Dataset::Quarantine), 1);
    }
}
