//! Hostile and malformed records on every topic the writer reads, through the embedded
//! broker: bytes that are not the topic's record type, null values, cut-off records, a
//! checked frame with an invalid device id, one whose flags would explode. None may stop
//! the writer or stall its partition: each bad record is counted and kept as one
//! `undecodable_record` quarantine row (never a data row), the offsets advance past it
//! and are committed, and every good record is stored exactly once, also when a crashed
//! run's range holding bad records is replayed by recovery.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::{Array, AsArray, ListArray};
use common::*;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::{Anomaly, CheckedFrame, QuarantinedFrame};
use feeder_proto::v1::{Frame, Reading};
use feeder_writer::convert::MAX_FLAGS_PER_ROW;
use feeder_writer::flush::{RangeSpec, write_range};
use feeder_writer::schema::Dataset;
use feeder_writer::storage::LocalFs;
use feeder_writer::{SourceRecord, TopicKind, WriterConfig, WriterStats, naming, run};
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const GROUP: &str = "hostile-writer";

fn anomaly(seq: u64) -> Anomaly {
    Anomaly {
        detected_at_ms: BASE_TS + seq as i64,
        device_id: "mtr-1".into(),
        rule: "spike".into(),
        severity: "warning".into(),
        ts_from_ms: BASE_TS,
        ts_to_ms: BASE_TS + 1,
        detail: "d".into(),
        seq: Some(seq),
        ..Default::default()
    }
}

/// A frame whose checked record carries 1000 frame flags over 500 readings.
fn exploding(seq: u64) -> CheckedFrame {
    let mut cf = checked_frame("mtr-boom", seq);
    let frame = Frame {
        readings: vec![
            Reading {
                ts_ms: BASE_TS,
                ..Default::default()
            };
            500
        ],
        ..Default::default()
    };
    cf.payload = frame.encode_to_vec().into();
    cf.frame_flags = (0..1000).map(|i| format!("flag_{i}")).collect();
    cf
}

/// Bad values for a topic whose good record encodes to `good`: not protobuf, null, cut off.
fn garbage(good: &[u8]) -> Vec<Option<Vec<u8>>> {
    vec![
        Some(vec![0xff, 0xff, 0xff, 0xff]),
        None,
        Some(good[..good.len() / 2].to_vec()),
    ]
}

/// Records produced to partition 0 of a new topic, `None` as a null value, each with its
/// own create time (an undecodable record's row is dated by it). Returns the records as
/// the writer will see them.
async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    values: Vec<Option<Vec<u8>>>,
) -> Vec<SourceRecord> {
    let mut out = Vec::new();
    for (offset, v) in (0i64..).zip(values) {
        let ts = BASE_TS + offset;
        let mut rec = FutureRecord::to(topic).partition(0).key("k").timestamp(ts);
        if let Some(b) = &v {
            rec = rec.payload(b);
        }
        producer
            .send(rec, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        out.push(SourceRecord {
            offset,
            timestamp_ms: Some(ts),
            payload: v,
        });
    }
    out
}

fn committed(kafka: &KafkaConfig, t: &Topics) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = kafka.consumer(GROUP, "offset-checker").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for topic in [&t.checked, &t.quarantine, &t.anomalies] {
        tpl.add_partition(topic, 0);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn reasons(root: &std::path::Path) -> Vec<String> {
    read_dataset(root, Dataset::Quarantine)
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name("reason").unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_on_every_topic_are_counted_and_passed() {
    let t = Topics::with_prefix("hostile", 1, 1);
    let broker = EmbeddedBroker::start(1, &t.data_topics(), t.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka
        .producer("hostile-producer", 10_000, 10_000)
        .create()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    // checked: 12 good frames (one with exploding flags), 3 garbage values and a frame
    // with a 10 KiB device id, interleaved
    let good_cf = checked_frame("mtr-1", 1).encode_to_vec();
    assert!(CheckedFrame::decode(&good_cf[..good_cf.len() / 2]).is_err());
    let mut bad_id = checked_frame("mtr-1", 99);
    bad_id.device_id = "x".repeat(10 * 1024);
    let mut checked_bad = garbage(&good_cf);
    checked_bad.push(Some(bad_id.encode_to_vec()));
    let mut checked_values = Vec::new();
    for seq in 1..=12u64 {
        let cf = if seq == 7 {
            exploding(seq)
        } else {
            checked_frame(&format!("mtr-{}", seq % 3), seq)
        };
        checked_values.push(Some(cf.encode_to_vec()));
        if seq % 3 == 0 {
            checked_values.extend(checked_bad.pop());
        }
    }
    let good_q = quarantined_frame("mtr-9", 1).encode_to_vec();
    assert!(QuarantinedFrame::decode(&good_q[..good_q.len() / 2]).is_err());
    let mut q_values: Vec<_> = (1..=3)
        .map(|s| Some(quarantined_frame("mtr-9", s).encode_to_vec()))
        .collect();
    q_values.splice(1..1, garbage(&good_q));
    let good_a = anomaly(1).encode_to_vec();
    assert!(Anomaly::decode(&good_a[..good_a.len() / 2]).is_err());
    let mut a_values: Vec<_> = (1..=4).map(|s| Some(anomaly(s).encode_to_vec())).collect();
    a_values.splice(2..2, garbage(&good_a));

    let checked_recs = produce_all(&producer, &t.checked, checked_values).await;
    let n_q = produce_all(&producer, &t.quarantine, q_values).await.len();
    let n_a = produce_all(&producer, &t.anomalies, a_values).await.len();
    let (n_c, bad) = (checked_recs.len(), 4 + 3 + 3);
    assert_eq!((n_c, n_q, n_a), (16, 6, 7));

    // a run crashed after writing [0, 9] of checked (two bad records and the exploding
    // frame inside) and before committing: recovery replays that range identically
    let storage = LocalFs::new(root).unwrap();
    let spec = RangeSpec {
        kind: TopicKind::Checked,
        topic: &t.checked,
        partition: 0,
        first: 0,
        last: 9,
        writer_id: "crashed",
    };
    let crashed = write_range(&storage, spec, &checked_recs[..10]).unwrap();
    assert_eq!(crashed.undecodable_records, 2);

    let cfg = WriterConfig {
        data_root: root.to_path_buf(),
        group_id: GROUP.into(),
        writer_id: "w-hostile".into(),
        flush_max_frames: 4,
        flush_max_age: Duration::from_millis(300),
        ..WriterConfig::default()
    };
    let total = (n_c + n_q + n_a) as u64;
    let stats = Arc::new(WriterStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (kafka, t, stats, stop, cfg) = (
            kafka.clone(),
            t.clone(),
            stats.clone(),
            stop.clone(),
            cfg.clone(),
        );
        async move { run(&kafka, &t, cfg, stats, stop).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while stats.records_committed.load(Ordering::Relaxed) < total {
        assert!(!task.is_finished(), "writer stopped: {:?}", task.await);
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled: {} of {total} committed",
            stats.records_committed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();

    assert_eq!(
        committed(&kafka, &t),
        [Some(n_c as i64), Some(n_q as i64), Some(n_a as i64)],
        "every partition committed to its end"
    );
    // every good record exactly once, every bad one as one quarantine row
    assert_eq!(rows(root, Dataset::Frames), 12);
    assert_unique(&keys(root, Dataset::Frames));
    assert_eq!(rows(root, Dataset::Readings), 11 * 2 + 500);
    assert_unique(
        &reading_keys(root)
            .into_iter()
            .filter(|k| k.0 != "mtr-boom")
            .collect::<Vec<_>>(),
    );
    assert_eq!(rows(root, Dataset::Anomalies), 4);
    let reasons = reasons(root);
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "undecodable_record")
            .count(),
        bad
    );
    assert_eq!(reasons.iter().filter(|r| *r == "too_old").count(), 3);
    // the replayed range was rewritten under its own name, not stored twice
    for f in &crashed.files {
        assert_eq!(
            kv_metadata(&root.join(f))["feeder.writer_id"],
            "w-hostile",
            "{f}"
        );
    }
    let name = naming::file_name(&t.checked, 0, 0, 9);
    assert!(crashed.files.iter().all(|f| f.ends_with(&name)));
    // the exploding frame's rows carry bounded flag lists
    for b in read_dataset(root, Dataset::Readings) {
        let list: &ListArray = b.column_by_name("flags").unwrap().as_list::<i32>();
        for i in 0..list.len() {
            assert!(list.value(i).len() <= MAX_FLAGS_PER_ROW);
        }
    }
    drop(producer);
    broker.stop();
}
