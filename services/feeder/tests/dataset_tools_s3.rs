//! `feeder verify` and `feeder compact` as real processes on datasets in an S3 bucket (a
//! real S3-protocol server, moto, on 127.0.0.1), with the writer's storage flags:
//! verify passes on what the writer's flush code stored there and finds a deleted frames
//! object; compact merges every committed range of a date (reading the writer group's
//! offsets from the broker) and leaves the uncommitted one; verify passes again, and
//! fails on a prefix that holds nothing.

use std::process::{Command, Output};

use feeder_core::keyfile::load_key_file;
use feeder_kafka::{EmbeddedBroker, KafkaConfig};
use feeder_proto::pipeline::CheckedFrame;
use feeder_sim::SimDevice;
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_testkit::MotoS3;
use feeder_writer::flush::{RangeSpec, write_range};
use feeder_writer::schema::Dataset;
use feeder_writer::storage::{S3Config, S3Storage, Storage};
use feeder_writer::{SourceRecord, TopicKind};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const BUCKET: &str = "utility-data";
const PREFIX: &str = "feeder/tools";
const TOPIC: &str = "tools.checked";
const GROUP: &str = "tools-writer";
const NOW_MS: i64 = 1_764_028_800_000;
/// Ranges the writer flushed; it committed all but the last.
const RANGES: [(i64, i64); 4] = [(0, 29), (30, 59), (60, 89), (90, 119)];

fn s3_flags(endpoint: &str) -> Vec<String> {
    [
        "--storage",
        "s3",
        "--s3-bucket",
        BUCKET,
        "--s3-endpoint",
        endpoint,
        "--s3-allow-http",
        "--s3-prefix",
        PREFIX,
    ]
    .map(String::from)
    .to_vec()
}

fn feeder(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feeder"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", feeder_testkit::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", feeder_testkit::SECRET_KEY)
        .env_remove("FEEDER_CONFIG")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn verify_and_compact_processes_work_on_an_s3_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.jsonl");
    let secrets = dir.path().join("keys.jsonl");
    keygen(&KeygenConfig {
        meters: 6,
        vehicles: 2,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(5),
        ..KeygenConfig::default()
    })
    .unwrap();

    // the writer's flush code stores the ranges in the bucket
    let moto = MotoS3::start(BUCKET);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = S3Storage::new(
        &S3Config {
            endpoint: Some(moto.endpoint.clone()),
            bucket: BUCKET.into(),
            prefix: PREFIX.into(),
            region: "us-east-1".into(),
            access_key_id: Some(feeder_testkit::ACCESS_KEY.into()),
            secret_access_key: Some(feeder_testkit::SECRET_KEY.into()),
            allow_http: true,
        },
        rt.handle().clone(),
    )
    .unwrap();
    let mut devices: Vec<SimDevice> = load_key_file(&secrets)
        .unwrap()
        .into_iter()
        .map(|k| SimDevice::from_key(k, NOW_MS - 60 * 86_400_000))
        .collect();
    let mut clock = NOW_MS;
    for (first, last) in RANGES {
        let records: Vec<SourceRecord> = (first..=last)
            .map(|offset| {
                clock += 10;
                let n = devices.len();
                let f = devices[offset as usize % n].next_frame(clock).frame;
                let checked = CheckedFrame {
                    device_id: f.device_id,
                    seq: f.seq,
                    key_id: f.key_id,
                    payload: f.payload,
                    signature: f.signature,
                    received_at_ms: clock,
                    edge_id: "edge-0".into(),
                    ..Default::default()
                };
                SourceRecord {
                    offset,
                    timestamp_ms: Some(clock),
                    payload: Some(checked.encode_to_vec()),
                }
            })
            .collect();
        let spec = RangeSpec {
            kind: TopicKind::Checked,
            topic: TOPIC,
            partition: 0,
            first,
            last,
            writer_id: "writer-0",
        };
        write_range(&store, spec, &records).unwrap();
    }

    // the writer group committed every range but the last
    let broker = EmbeddedBroker::start(1, &[TOPIC], 1).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let consumer: BaseConsumer = kafka.consumer(GROUP, "test-commit").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(RANGES[3].0))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();

    let registry = registry.display().to_string();
    let verify = || {
        let mut args = vec!["verify".to_string(), "--registry".into(), registry.clone()];
        args.extend(s3_flags(&moto.endpoint));
        feeder(&args)
    };
    let out = verify();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("mismatches: 0"), "{}", text(&out));
    assert!(
        text(&out).contains("frames: 120 checked, 120 verified"),
        "{}",
        text(&out)
    );

    // compact every dataset of the date the frames were received on
    let frames = store.list(Dataset::Frames).unwrap();
    assert_eq!(frames.len(), RANGES.len(), "one frames object per range");
    let date = frames[0].dir.rsplit_once("date=").unwrap().1.to_string();
    let files_before: usize = Dataset::ALL
        .iter()
        .map(|&d| store.list(d).unwrap().len())
        .sum();
    let mut args = vec![
        "compact".to_string(),
        "--dataset".into(),
        "all".into(),
        "--date".into(),
        date.clone(),
        "--group".into(),
        GROUP.into(),
        "--brokers".into(),
        kafka.brokers.clone(),
    ];
    args.extend(s3_flags(&moto.endpoint));
    let out = feeder(&args);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    let merged = feeder_writer::naming::file_name(TOPIC, 0, 0, 89);
    assert!(
        shown.contains(&format!("frames {date}: merged 3 files")),
        "{shown}"
    );
    assert!(shown.contains("left 1 uncommitted"), "{shown}");
    let dir = feeder_writer::naming::date_dir(Dataset::Frames, date.parse().unwrap());
    let mut left = store.list_dir(&dir).unwrap();
    left.sort();
    assert_eq!(
        left,
        [merged, feeder_writer::naming::file_name(TOPIC, 0, 90, 119)]
    );
    let files_after: usize = Dataset::ALL
        .iter()
        .map(|&d| store.list(d).unwrap().len())
        .sum();
    assert!(
        files_after < files_before,
        "{files_before} -> {files_after}"
    );

    // the merged objects verify; a frames object gone is found
    let out = verify();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("frames: 120 checked, 120 verified"),
        "{}",
        text(&out)
    );
    let frames = store.list(Dataset::Frames).unwrap();
    store.delete(&frames[0].dir, &frames[0].name).unwrap();
    let out = verify();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("s3://{BUCKET}/{PREFIX}/")),
        "mismatches name the objects: {}",
        text(&out)
    );
    // a prefix holding nothing (a typo, or Iceberg tables) is not a verified bucket
    let mut args = vec!["verify".to_string(), "--registry".into(), registry.clone()];
    args.extend(s3_flags(&moto.endpoint));
    let at = args.iter().position(|a| a == PREFIX).unwrap();
    args[at] = "feeder/typo".into();
    let out = feeder(&args);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no dataset files"), "{}", text(&out));
    drop(broker);
    drop(moto);
}
