//! The writer's half of the zombie fence (`feeder_kafka::fence`), against the embedded
//! broker: records of a stream owner that had been replaced when they landed are not
//! stored, claims hold no rows, a restarted writer that resumes after a claim still
//! drops the replaced owner's records (from its fence markers), and a partition whose
//! log ends with such records is committed to its end (no false lag).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use feeder_kafka::fence::Mark;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_writer::schema::Dataset;
use feeder_writer::{WriterConfig, WriterStats, fences, run};
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const GROUP: &str = "fence-writer";

fn topics() -> Topics {
    Topics::with_prefix("fw", 1, 1)
}

fn cfg(root: &Path) -> WriterConfig {
    WriterConfig {
        data_root: root.to_path_buf(),
        group_id: GROUP.into(),
        writer_id: "writer-1".into(),
        flush_max_frames: 3,
        flush_max_bytes: 1 << 20,
        flush_max_age: Duration::from_millis(200),
        ..WriterConfig::default()
    }
}

/// Produces frame `seq` of device `m-1` (or a claim, for `seq` 0) with `mark`; returns
/// its offset.
async fn put(producer: &FutureProducer, topic: &str, seq: u64, mark: Mark) -> i64 {
    let bytes = if seq == 0 {
        Vec::new()
    } else {
        checked_frame("m-1", seq).encode_to_vec()
    };
    let mut rec = FutureRecord::to(topic)
        .partition(0)
        .key("m-1")
        .payload(&bytes);
    if let Some(h) = mark.headers() {
        rec = rec.headers(h);
    }
    producer
        .send(rec, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap()
        .offset
}

/// The group's committed offset of checked partition 0.
fn committed(kafka: &KafkaConfig) -> Option<i64> {
    let consumer: BaseConsumer = kafka.consumer(GROUP, "fence-check").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topics().checked, 0);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    match got.elements()[0].offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Runs the writer until checked partition 0 is committed up to `end`, then stops it.
async fn write_up_to(kafka: &KafkaConfig, root: &Path, end: i64) {
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (kafka, stop, cfg) = (kafka.clone(), stop.clone(), cfg(root));
        async move {
            run(
                &kafka,
                &topics(),
                cfg,
                Arc::new(WriterStats::default()),
                stop,
            )
            .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while committed(kafka) != Some(end) {
        assert!(!task.is_finished(), "writer exited: {:?}", task.await);
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {:?}, want {end}",
            committed(kafka)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}

fn seqs(root: &Path) -> Vec<u64> {
    let mut s: Vec<u64> = keys(root, Dataset::Frames)
        .into_iter()
        .map(|(_, seq, _)| seq)
        .collect();
    s.sort_unstable();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_owners_records_are_never_stored_across_writer_restarts() {
    let t = topics();
    let broker = EmbeddedBroker::start(1, &t.data_topics(), t.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka
        .producer("fence-producer", 1000, 10_000)
        .create()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let topic = &t.checked;

    // A token is the offset of its claim, as the stream writes it (a fresh topic starts
    // at 0). Owner A claims and writes 1..=4; B claims; A, stalled, lands 5 after B's
    // claim, B decides 5 too; A's late 6 is the last record.
    let (a, b) = (0, 5);
    let log = [
        (0, Mark::Claim(a)),
        (1, Mark::Owner(a)),
        (2, Mark::Owner(a)),
        (3, Mark::Owner(a)),
        (4, Mark::Owner(a)),
        (0, Mark::Claim(b)),
        (5, Mark::Owner(a)),
        (5, Mark::Owner(b)),
        (6, Mark::Owner(a)),
    ];
    for (i, (seq, mark)) in log.into_iter().enumerate() {
        assert_eq!(put(&producer, topic, seq, mark).await, i as i64);
    }
    let end = log.len() as i64;
    write_up_to(&kafka, root, end).await;
    assert_eq!(
        seqs(root),
        vec![1, 2, 3, 4, 5],
        "A's late 5 and 6 are not stored"
    );
    assert_eq!(
        fences::token_before(
            &feeder_writer::storage::LocalFs::new(root).unwrap(),
            topic,
            0,
            end
        )
        .unwrap(),
        b
    );

    // a new writer resumes after B's claim: A's next late record is still dropped,
    // B's records and unowned ones (fleet findings, older versions) are kept
    put(&producer, topic, 7, Mark::Owner(a)).await;
    put(&producer, topic, 6, Mark::Owner(b)).await;
    put(&producer, topic, 7, Mark::Owner(b)).await;
    let end = put(&producer, topic, 8, Mark::Unowned).await + 1;
    write_up_to(&kafka, root, end).await;
    assert_eq!(seqs(root), (1..=8).collect::<Vec<u64>>());
    assert_unique(&reading_keys(root));
}
