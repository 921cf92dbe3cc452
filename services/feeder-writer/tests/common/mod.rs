//! Helpers shared by the writer's integration tests: frames to feed it, and reading the
//! Parquet it wrote back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{TimestampMillisecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use feeder_core::{Registry, SigningKey};
use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame};
use feeder_proto::v1::{Event, Frame, Reading};
use feeder_writer::flush::{RangeSpec, write_range};
use feeder_writer::schema::Dataset;
use feeder_writer::storage::LocalFs;
use feeder_writer::{SourceRecord, TopicKind};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

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

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Two Ed25519 meters and one HMAC device, with their registry.
pub fn fleet() -> (Vec<(String, SigningKey)>, Registry) {
    let mut keys = Vec::new();
    let mut lines = String::new();
    for (n, dev) in ["mtr-0", "mtr-1"].iter().enumerate() {
        let seed = [n as u8 + 1; 32];
        let sk = SigningKey::ed25519_from_seed(&seed).unwrap();
        let pk = sk.ed25519_public().unwrap();
        lines.push_str(&format!(
            r#"{{"device_id":"{dev}","key_id":"k1","alg":"ed25519","public_key":"{}","kind":"meter","status":"active","labels":{{}}}}"#,
            hex(&pk)
        ));
        lines.push('\n');
        keys.push((dev.to_string(), sk));
    }
    let secret = [7u8; 32];
    lines.push_str(&format!(
        r#"{{"device_id":"mtr-2","key_id":"k1","alg":"hmac-sha256","secret":"{}","kind":"meter","status":"active","labels":{{}}}}"#,
        hex(&secret)
    ));
    keys.push(("mtr-2".into(), SigningKey::hmac(&secret)));
    (keys, Registry::parse("test", &lines).unwrap())
}

pub fn signed(dev: &str, sk: &SigningKey, seq: u64) -> CheckedFrame {
    let mut cf = checked_frame(dev, seq);
    cf.signature = sk.sign(dev, &cf.key_id, seq, &cf.payload).into();
    cf
}

/// Writes signed frames (three devices round robin, seq = offset / 3 + 1, straddling
/// midnight) as the writer flushes them, one range per `(first, last)`; returns the registry.
pub fn write_signed_root(root: &Path, topic: &str, ranges: &[(i64, i64)]) -> Registry {
    let fs = LocalFs::new(root).unwrap();
    for &(first, last) in ranges {
        let spec = RangeSpec {
            kind: TopicKind::Checked,
            topic,
            partition: 0,
            first,
            last,
            writer_id: "w",
        };
        write_range(&fs, spec, &signed_records(first..last + 1)).unwrap();
    }
    fleet().1
}

/// The records `write_signed_root` writes, for replays.
pub fn signed_records(offsets: std::ops::Range<i64>) -> Vec<SourceRecord> {
    let (keys, _) = fleet();
    offsets
        .map(|o| {
            let (dev, sk) = &keys[o as usize % 3];
            SourceRecord {
                offset: o,
                timestamp_ms: Some(BASE_TS),
                payload: Some(signed(dev, sk, o as u64 / 3 + 1).encode_to_vec()),
            }
        })
        .collect()
}

/// Produces one record to `topic`/`partition`.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    bytes: &[u8],
) {
    producer
        .send(
            FutureRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(bytes),
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The settings of bucket `bucket` under `prefix` on a local S3 test server (moto) at
/// `endpoint`, with the test credentials.
pub fn s3_config(endpoint: &str, bucket: &str, prefix: &str) -> feeder_writer::storage::S3Config {
    feeder_writer::storage::S3Config {
        endpoint: Some(endpoint.into()),
        bucket: bucket.into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        access_key_id: Some(feeder_testkit::ACCESS_KEY.into()),
        secret_access_key: Some(feeder_testkit::SECRET_KEY.into()),
        allow_http: true,
    }
}
