//! Helpers shared by the writer's integration tests: frames to feed it, and reading the
//! Parquet it wrote back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{TimestampMillisecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame};
use feeder_proto::v1::{Event, Frame, Reading};
use feeder_writer::schema::Dataset;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;

/// 2024-03-10T23:59:00Z: frames straddle a UTC midnight.
pub const BASE_TS: i64 = 1_710_115_140_000;

/// A meter frame with two readings and, every third seq, an event.
pub fn checked_frame(device: &str, seq: u64) -> CheckedFrame {
    let ts = BASE_TS + seq as i64 * 15_000;
    let frame = Frame {
        sent_at_ms: ts,
        firmware: "4.2.1".into(),
        readings: vec![
            Reading {
                ts_ms: ts,
                interval_s: 900,
                obis: "1-0:1.8.0".into(),
                value: seq as i64 * 10,
                scaler: 0,
                unit: 30,
                status: 0,
            },
            Reading {
                ts_ms: ts,
                interval_s: 0,
                obis: "1-0:32.7.0".into(),
                value: 2305,
                scaler: -1,
                unit: 35,
                status: 0,
            },
        ],
        events: if seq.is_multiple_of(3) {
            vec![Event {
                ts_ms: ts,
                kind: 3,
                detail: String::new(),
            }]
        } else {
            vec![]
        },
        ..Default::default()
    };
    CheckedFrame {
        device_id: device.into(),
        seq,
        key_id: "k1".into(),
        payload: frame.encode_to_vec().into(),
        signature: vec![1u8; 64].into(),
        received_at_ms: ts + 500,
        edge_id: "edge-0".into(),
        ..Default::default()
    }
}

pub fn quarantined_frame(device: &str, seq: u64) -> QuarantinedFrame {
    QuarantinedFrame {
        received_at_ms: BASE_TS + seq as i64,
        device_id: device.into(),
        seq,
        reason: "too_old".into(),
        detail: "outside the replay window".into(),
        raw: vec![9u8; 16].into(),
        source_offset: 0,
        edge_id: "edge-0".into(),
    }
}

/// Every `*.parquet` file of a dataset (the glob readers use), sorted.
pub fn parquet_files(root: &Path, dataset: Dataset) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dates) = std::fs::read_dir(root.join(dataset.name())) else {
        return out;
    };
    for d in dates {
        let d = d.unwrap().path();
        for f in std::fs::read_dir(&d).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "parquet")
                && !f.file_name().unwrap().to_string_lossy().starts_with('.')
            {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

/// Every entry (temporary ones included) in a dataset's date directories.
pub fn all_entries(root: &Path, dataset: Dataset) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dates) = std::fs::read_dir(root.join(dataset.name())) else {
        return out;
    };
    for d in dates {
        let d = d.unwrap();
        for f in std::fs::read_dir(d.path()).unwrap() {
            out.push(format!(
                "{}/{}",
                d.file_name().to_string_lossy(),
                f.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    out.sort();
    out
}

pub fn read_file(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn kv_metadata(path: &Path) -> BTreeMap<String, String> {
    let file = std::fs::File::open(path).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    b.metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect()
}

pub fn read_dataset(root: &Path, dataset: Dataset) -> Vec<RecordBatch> {
    parquet_files(root, dataset)
        .iter()
        .flat_map(|p| read_file(p))
        .collect()
}

pub fn rows(root: &Path, dataset: Dataset) -> usize {
    read_dataset(root, dataset)
        .iter()
        .map(RecordBatch::num_rows)
        .sum()
}

/// `(device_id, seq, time)` of every row of a dataset.
pub fn keys(root: &Path, dataset: Dataset) -> Vec<(String, u64, i64)> {
    let mut out = Vec::new();
    for b in read_dataset(root, dataset) {
        let dev = b.column_by_name("device_id").unwrap().as_string::<i32>();
        let seq = b
            .column_by_name("seq")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let ts = b
            .column_by_name(dataset.time_column())
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            out.push((dev.value(i).to_string(), seq.value(i), ts.value(i)));
        }
    }
    out
}

/// `(device_id, seq, ts, obis)` of every reading: the contract's uniqueness key.
pub fn reading_keys(root: &Path) -> Vec<(String, u64, i64, String)> {
    let mut out = Vec::new();
    for b in read_dataset(root, Dataset::Readings) {
        let dev = b.column_by_name("device_id").unwrap().as_string::<i32>();
        let seq = b
            .column_by_name("seq")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let obis = b.column_by_name("obis").unwrap().as_string::<i32>();
        assert_eq!(obis.null_count(), 0);
        for i in 0..b.num_rows() {
            out.push((
                dev.value(i).to_string(),
                seq.value(i),
                ts.value(i),
                obis.value(i).to_string(),
            ));
        }
    }
    out
}

/// Panics if any key occurs twice.
pub fn assert_unique<T: Ord + Clone + std::fmt::Debug>(keys: &[T]) {
    let mut sorted = keys.to_vec();
    sorted.sort();
    for w in sorted.windows(2) {
        assert_ne!(w[0], w[1], "duplicate row");
    }
}
