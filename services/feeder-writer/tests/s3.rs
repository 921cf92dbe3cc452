//! The S3 backend against a real S3-protocol server on 127.0.0.1 (`moto_server`, from
//! tests/python/requirements.txt, run with the virtualenv's python named by
//! `FEEDER_PYTHON`; `tests/run.sh` sets it). Without it this test FAILS, saying so: a
//! missing dependency is never a pass.
//!
//! It writes ranges through the writer's own flush code, lists them back as recovery
//! does, plans a restart from what the bucket holds, replays the uncommitted range to the
//! same keys, and reads the Parquet back.

mod common;

use bytes::Bytes;
use common::*;
use feeder_testkit::MotoS3;
use feeder_writer::TopicKind;
use feeder_writer::flush::{RangeSpec, write_range};
use feeder_writer::naming;
use feeder_writer::recovery::recover;
use feeder_writer::schema::Dataset;
use feeder_writer::storage::{S3Config, S3Storage, Storage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const TOPIC: &str = "s3.checked";
const BUCKET: &str = "feeder-data";

fn config(endpoint: &str, prefix: &str) -> S3Config {
    s3_config(endpoint, BUCKET, prefix)
}

fn spec(first: i64, last: i64, writer_id: &'static str) -> RangeSpec<'static> {
    RangeSpec {
        kind: TopicKind::Checked,
        topic: TOPIC,
        partition: 0,
        first,
        last,
        writer_id,
    }
}

fn rows_in(bytes: Bytes) -> usize {
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum()
}

#[test]
fn s3_backend_writes_lists_recovers_and_replays() {
    let moto = MotoS3::start(BUCKET);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s3 = S3Storage::new(
        &config(&moto.endpoint, "utility/feeder"),
        rt.handle().clone(),
    )
    .unwrap();
    // another root in the same bucket must stay invisible to this one
    let other = S3Storage::new(&config(&moto.endpoint, "elsewhere"), rt.handle().clone()).unwrap();
    other
        .put(
            "readings/date=2024-03-11",
            &naming::file_name(TOPIC, 0, 0, 99),
            b"x",
        )
        .unwrap();

    assert!(s3.list(Dataset::Readings).unwrap().is_empty());
    for (first, last) in [(0, 9), (10, 19), (20, 26)] {
        write_range(
            &s3,
            spec(first, last, "run-1"),
            &signed_records(first..last + 1),
        )
        .unwrap();
    }
    let mut listed: Vec<String> = s3
        .list(Dataset::Readings)
        .unwrap()
        .into_iter()
        .map(|l| format!("{}/{}", l.dir, l.name))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            format!(
                "readings/date=2024-03-10/{}",
                naming::file_name(TOPIC, 0, 0, 9)
            ),
            format!(
                "readings/date=2024-03-11/{}",
                naming::file_name(TOPIC, 0, 0, 9)
            ),
            format!(
                "readings/date=2024-03-11/{}",
                naming::file_name(TOPIC, 0, 10, 19)
            ),
            format!(
                "readings/date=2024-03-11/{}",
                naming::file_name(TOPIC, 0, 20, 26)
            ),
        ]
    );

    // restart after [20, 26] was written but not committed: recovery reads the bucket
    let plan = recover(&s3, TOPIC, 0, 20).unwrap();
    assert_eq!(plan.forced_boundaries(), [26]);
    assert_eq!(plan.committed_ranges, 2);
    // the replay rewrites the same keys: no second copy
    let before = s3.list(Dataset::Frames).unwrap().len();
    write_range(&s3, spec(20, 26, "run-2"), &signed_records(20..27)).unwrap();
    assert_eq!(s3.list(Dataset::Frames).unwrap().len(), before);

    // the objects are complete Parquet files with every row
    let frames: usize = s3
        .list(Dataset::Frames)
        .unwrap()
        .iter()
        .map(|l| rows_in(s3.get(&l.dir, &l.name).unwrap()))
        .sum();
    assert_eq!(frames, 27);

    // delete is idempotent
    let name = naming::file_name(TOPIC, 0, 0, 9);
    s3.delete("readings/date=2024-03-10", &name).unwrap();
    s3.delete("readings/date=2024-03-10", &name).unwrap();
    assert_eq!(s3.list(Dataset::Readings).unwrap().len(), 3);
    drop(moto);
}

#[test]
fn s3_config_is_checked_and_never_prints_secrets() {
    let mut c = config("http://127.0.0.1:1", "a/b");
    c.validate().unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("test\""), "{shown}");
    c.prefix = "/a".into();
    assert!(c.validate().is_err());
    c.prefix = String::new();
    c.secret_access_key = None;
    assert!(c.validate().is_err());
    c.access_key_id = None;
    c.bucket = String::new();
    assert!(c.validate().is_err());
}
