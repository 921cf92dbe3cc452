//! The S3 backend against a real S3-protocol server on 127.0.0.1 (`moto_server`, from
//! tests/python/requirements.txt, run with the virtualenv's python named by
//! `FEEDER_PYTHON`; `tests/run.sh` sets it). Without it this test FAILS, saying so: a
//! missing dependency is never a pass.
//!
//! It writes ranges through the writer's own flush code, lists them back as recovery
//! does, plans a restart from what the bucket holds, replays the uncommitted range to the
//! same keys, and reads the Parquet back.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use feeder_writer::TopicKind;
use feeder_writer::flush::{RangeSpec, write_range};
use feeder_writer::naming;
use feeder_writer::recovery::recover;
use feeder_writer::schema::Dataset;
use feeder_writer::storage::{S3Config, S3Storage, Storage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const TOPIC: &str = "s3.checked";
const BUCKET: &str = "feeder-data";

fn python() -> PathBuf {
    match std::env::var_os("FEEDER_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "FEEDER_PYTHON is not set: the S3 test needs moto_server from the test virtualenv; \
             run tests/run.sh, or set FEEDER_PYTHON to the python of `tests/setup-python.sh | tail -1`"
        ),
    }
}

/// A moto server process, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python())
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server (is moto[server] installed in the FEEDER_PYTHON venv?)");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Buckets are made by the utility, not by Feeder: create it like an operator would.
    let made = Command::new(python())
        .args([
            "-c",
            &format!(
                "import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
                 aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='{BUCKET}')",
                moto.endpoint
            ),
        ])
        .status()
        .expect("python");
    assert!(made.success(), "creating the bucket failed");
    moto
}

fn config(endpoint: &str, prefix: &str) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.into()),
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: true,
    }
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
    let moto = start_moto();
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
