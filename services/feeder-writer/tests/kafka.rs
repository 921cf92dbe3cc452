//! End to end against the embedded broker: produce checked and quarantined records, run
//! the writer until everything is committed, stop it, read the Parquet back, check the
//! committed offsets; then simulate a crash between write and commit and restart: the
//! replay must rewrite the same files and no row may be duplicated.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_writer::flush::{RangeSpec, write_range};
use feeder_writer::schema::Dataset;
use feeder_writer::storage::LocalFs;
use feeder_writer::{SourceRecord, TopicKind, WriterConfig, WriterStats, naming, run};
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const GROUP: &str = "it-writer";

fn topics() -> Topics {
    Topics {
        partitions: 2,
        replication: 1,
        ..Topics::with_prefix("it", 2, 1)
    }
}

fn cfg(root: &Path, writer_id: &str) -> WriterConfig {
    WriterConfig {
        data_root: root.to_path_buf(),
        group_id: GROUP.into(),
        writer_id: writer_id.into(),
        flush_max_frames: 7,
        flush_max_bytes: 1 << 20,
        flush_max_age: Duration::from_millis(300),
        ..WriterConfig::default()
    }
}

/// Runs the writer until `records_committed` reaches `expect` and at least `min` has
/// passed, then stops it.
async fn run_until_committed(
    kafka: &KafkaConfig,
    cfg: WriterConfig,
    expect: u64,
    min: Duration,
) -> Arc<WriterStats> {
    let stats = Arc::new(WriterStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (kafka, topics, stats, stop) = (kafka.clone(), topics(), stats.clone(), stop.clone());
        async move { run(&kafka, &topics, cfg, stats, stop).await }
    });
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(90);
    while stats.records_committed.load(Ordering::Relaxed) < expect || started.elapsed() < min {
        assert!(!task.is_finished(), "writer exited early: {:?}", task.await);
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {} of {expect} committed",
            stats.records_committed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(stats.records_committed.load(Ordering::Relaxed), expect);
    stats
}

/// The group's committed offset of every partition (`None`: nothing committed).
fn committed_offsets(kafka: &KafkaConfig) -> Vec<(String, i32, Option<i64>)> {
    let consumer: BaseConsumer = kafka.consumer(GROUP, "offset-checker").create().unwrap();
    let t = topics();
    let mut tpl = TopicPartitionList::new();
    for topic in [&t.checked, &t.quarantine] {
        for p in 0..t.partitions {
            tpl.add_partition(topic, p);
        }
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements()
        .iter()
        .map(|e| {
            let off = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.topic().to_string(), e.partition(), off)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commits_and_restarts_without_duplicates() {
    let t = topics();
    let broker = EmbeddedBroker::start(1, &t.data_topics(), t.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka
        .producer("it-producer", 10_000, 10_000)
        .create()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    // partition 0: 20 frames; partition 1: 12 frames and one garbage record;
    // quarantine: 3 frames on partition 0
    let mut frames = 0u64;
    for seq in 1..=20 {
        let cf = checked_frame(&format!("mtr-{}", seq % 4), seq);
        produce(&producer, &t.checked, 0, &cf.device_id, &cf.encode_to_vec()).await;
        frames += 1;
    }
    for seq in 1..=12 {
        let cf = checked_frame(&format!("mtr-{}", 10 + seq % 3), seq);
        produce(&producer, &t.checked, 1, &cf.device_id, &cf.encode_to_vec()).await;
        frames += 1;
        if seq == 6 {
            produce(&producer, &t.checked, 1, "", &[0xff, 0xff, 0xff]).await;
        }
    }
    for seq in 1..=3 {
        let q = quarantined_frame("mtr-9", seq);
        produce(
            &producer,
            &t.quarantine,
            0,
            &q.device_id,
            &q.encode_to_vec(),
        )
        .await;
    }
    let total = frames + 1 + 3;

    // run 1
    let stats = run_until_committed(&kafka, cfg(root, "writer-1"), total, Duration::ZERO).await;
    assert_eq!(stats.frames_written.load(Ordering::Relaxed), frames);
    assert_eq!(stats.readings_written.load(Ordering::Relaxed), 2 * frames);
    assert_eq!(stats.quarantine_written.load(Ordering::Relaxed), 4);
    assert!(stats.files_written.load(Ordering::Relaxed) >= 6);
    assert_eq!(rows(root, Dataset::Frames) as u64, frames);
    assert_eq!(rows(root, Dataset::Readings) as u64, 2 * frames);
    assert_eq!(rows(root, Dataset::Events), 6 + 4);
    assert_eq!(rows(root, Dataset::Quarantine), 4);
    let reasons: Vec<String> = read_dataset(root, Dataset::Quarantine)
        .iter()
        .flat_map(|b| {
            let a = arrow::array::AsArray::as_string::<i32>(b.column_by_name("reason").unwrap());
            (0..b.num_rows())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "undecodable_record")
            .count(),
        1
    );
    assert_eq!(reasons.iter().filter(|r| *r == "too_old").count(), 3);
    assert_unique(&reading_keys(root));
    for path in parquet_files(root, Dataset::Frames) {
        let kv = kv_metadata(&path);
        assert_eq!(kv["feeder.writer_id"], "writer-1");
        assert_eq!(kv["feeder.topic"], t.checked);
    }
    let mut offsets = committed_offsets(&kafka);
    offsets.sort();
    assert_eq!(
        offsets,
        [
            (t.checked.clone(), 0, Some(20)),
            (t.checked.clone(), 1, Some(13)),
            (t.quarantine.clone(), 0, Some(3)),
            (t.quarantine.clone(), 1, None),
        ]
    );

    // Crash between write and commit: 10 more frames arrive on partition 0 (offsets
    // 20..=29), a writer wrote the files of [20, 24] and died before committing.
    let mut new_records = Vec::new();
    for seq in 21..=30 {
        let cf = checked_frame(&format!("mtr-{}", seq % 4), seq);
        let bytes = cf.encode_to_vec();
        produce(&producer, &t.checked, 0, &cf.device_id, &bytes).await;
        new_records.push(SourceRecord {
            offset: 20 + (seq as i64 - 21),
            timestamp_ms: None,
            payload: Some(bytes),
        });
    }
    let storage = LocalFs::new(root).unwrap();
    let spec = RangeSpec {
        kind: TopicKind::Checked,
        topic: &t.checked,
        partition: 0,
        first: 20,
        last: 24,
        writer_id: "crashed",
    };
    let crashed = write_range(&storage, spec, &new_records[..5]).unwrap();
    assert!(!crashed.files.is_empty());
    let stale = format!(
        "readings/date=2024-03-11/{}",
        naming::temp_name(&naming::file_name(&t.checked, 0, 25, 29), 7)
    );
    std::fs::write(root.join(&stale), b"torn").unwrap();

    // run 2 (restart): replays [20, 24] to the same names, then the rest
    let stats = run_until_committed(&kafka, cfg(root, "writer-2"), 10, Duration::ZERO).await;
    assert_eq!(stats.frames_written.load(Ordering::Relaxed), 10);
    assert!(!root.join(&stale).exists(), "stale temporary file removed");
    for f in &crashed.files {
        let kv = kv_metadata(&root.join(f));
        assert_eq!(
            kv["feeder.writer_id"], "writer-2",
            "{f} was rewritten by the replay"
        );
        assert_eq!(
            (
                kv["feeder.first_offset"].as_str(),
                kv["feeder.last_offset"].as_str()
            ),
            ("20", "24")
        );
    }
    let all = frames + 10;
    assert_eq!(rows(root, Dataset::Frames) as u64, all);
    assert_eq!(rows(root, Dataset::Readings) as u64, 2 * all);
    assert_unique(&reading_keys(root));
    assert_unique(&keys(root, Dataset::Frames));
    let offsets = committed_offsets(&kafka);
    assert!(
        offsets.contains(&(t.checked.clone(), 0, Some(30))),
        "{offsets:?}"
    );

    // run 3 (restart with nothing new, long enough to join the group and poll): nothing
    // is rewritten or duplicated
    let before = all_entries(root, Dataset::Readings);
    let stats = run_until_committed(&kafka, cfg(root, "writer-3"), 0, Duration::from_secs(6)).await;
    assert_eq!(stats.files_written.load(Ordering::Relaxed), 0);
    assert_eq!(all_entries(root, Dataset::Readings), before);
    assert_eq!(rows(root, Dataset::Frames) as u64, all);
    drop(producer);
    broker.stop();
}

/// A broker outage of 14 s while the writer runs: librdkafka reports transport failures
/// to the consumer, and commits fail. The writer must keep running, and once the broker
/// is back store every frame sent before and after the outage exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_rides_out_a_broker_outage() {
    let t = Topics::with_prefix("outage", 2, 1);
    let broker = EmbeddedBroker::start(1, &t.data_topics(), t.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka
        .producer("outage-producer", 10_000, 60_000)
        .create()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let send = |from: u64, to: u64| {
        let (producer, topic) = (&producer, &t.checked);
        async move {
            for seq in from..=to {
                let cf = checked_frame(&format!("mtr-{}", seq % 5), seq);
                produce(
                    producer,
                    topic,
                    (seq % 2) as i32,
                    &cf.device_id,
                    &cf.encode_to_vec(),
                )
                .await;
            }
        }
    };
    send(1, 20).await;
    let stats = Arc::new(WriterStats::default());
    let stop = CancellationToken::new();
    let writer_cfg = cfg(root, "w-outage");
    let mut task = tokio::spawn({
        let (kafka, t, stats, stop) = (kafka.clone(), t.clone(), stats.clone(), stop.clone());
        async move { run(&kafka, &t, writer_cfg, stats, stop).await }
    });
    let committed = |n: u64| {
        let stats = stats.clone();
        move || stats.records_committed.load(Ordering::Relaxed) >= n
    };
    wait_writer(&mut task, "the first 20 committed", committed(20)).await;
    broker.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(14)).await;
    if task.is_finished() {
        panic!(
            "the writer stopped during the outage: {:?}",
            (&mut task).await
        );
    }
    broker.broker_up(1).unwrap();
    send(21, 40).await;
    wait_writer(
        &mut task,
        "all 40 committed after the outage",
        committed(40),
    )
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(rows(root, Dataset::Frames), 40);
    assert_unique(&keys(root, Dataset::Frames));
}

/// Waits up to 90 s for `done`, failing with the writer's own result if it stops.
async fn wait_writer(
    task: &mut tokio::task::JoinHandle<feeder_writer::Result<()>>,
    what: &str,
    done: impl Fn() -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !done() {
        if task.is_finished() {
            panic!("the writer stopped before {what}: {:?}", task.await);
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
