//! No record on the stage's own topics can stop it: undecodable records on checked,
//! quarantine, anomalies, the state changelog and the cohort topics are counted and
//! skipped (`feeder_stream::skipped`), and a changelog that decodes but names positions
//! past the logs' ends is not used (full rebuild from the checked log). Each test: the
//! stage still takes the partition and checks the good frames after the bad records.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame};
use feeder_stream::StreamConfig;
use feeder_stream::changelog::{CHECKPOINT_KEY, Checkpoint};
use prost::Message as _;
use rdkafka::producer::FutureProducer;
use support::{Stage, produce, raw_frame, read_topic, wait_for};

const NOW_MS: i64 = 1_764_028_800_000;

/// Field 1 as length-delimited with a length varint that never ends: no protobuf
/// message decodes it, nor JSON, nor the progress text.
const GARBAGE: &[u8] = b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";

fn config() -> StreamConfig {
    let mut cfg = StreamConfig {
        batch_linger: Duration::from_millis(5),
        cohort_tick: None,
        ..StreamConfig::default()
    };
    cfg.rules.cohort.groupings.clear();
    cfg
}

fn setup(prefix: &str) -> (EmbeddedBroker, KafkaConfig, Topics, FutureProducer) {
    let topics = Topics::with_prefix(prefix, 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), 1).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka.producer("test", 1000, 30_000).create().unwrap();
    (broker, kafka, topics, producer)
}

fn frames(seqs: std::ops::RangeInclusive<u64>) -> Vec<(i32, String, Vec<u8>)> {
    seqs.map(|s| {
        (
            0,
            "m".to_string(),
            raw_frame("m", s, NOW_MS + s as i64, "1.0"),
        )
    })
    .collect()
}

fn garbage(key: &str) -> (i32, String, Vec<u8>) {
    (0, key.to_string(), GARBAGE.to_vec())
}

fn checked_seqs(kafka: &KafkaConfig, topics: &Topics) -> Vec<u64> {
    read_topic(kafka, &topics.checked, 1)
        .iter()
        .filter_map(|(_, v)| CheckedFrame::decode(v.as_slice()).ok())
        .map(|c| c.seq)
        .collect()
}

async fn processed(stage: &Stage, n: u64) {
    wait_for(&format!("{n} raw records"), || {
        assert!(!stage.task.is_finished(), "the stage stopped");
        stage.stats.records_in.load(Ordering::Relaxed) == n
    })
    .await;
}

async fn stop(stage: Stage) {
    assert!(!stage.task.is_finished(), "the stage stopped on its own");
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_output_topics_and_the_changelog_is_skipped_by_recovery() {
    let (_broker, kafka, topics, producer) = setup("undec-outputs");
    for topic in [&topics.checked, &topics.quarantine, &topics.anomalies] {
        produce(&producer, topic, &[garbage("m")]).await;
    }
    produce(
        &producer,
        &topics.stream_state,
        &[garbage("m"), garbage(CHECKPOINT_KEY)],
    )
    .await;
    produce(&producer, &topics.raw, &frames(1..=3)).await;

    let stage = support::start(&kafka, &topics, config());
    processed(&stage, 3).await;
    assert_eq!(stage.stats.checked.load(Ordering::Relaxed), 3);
    // checked, quarantine, anomalies, and the changelog's two records
    assert_eq!(stage.stats.undecodable_skipped.load(Ordering::Relaxed), 5);
    assert_eq!(stage.stats.restored_devices.load(Ordering::Relaxed), 0);
    assert_eq!(checked_seqs(&kafka, &topics), [1, 2, 3]);
    stop(stage).await;

    // a second run recovers over the same garbage (and its own clean checkpoint)
    produce(&producer, &topics.raw, &frames(3..=4)).await;
    let stage = support::start(&kafka, &topics, config());
    processed(&stage, 2).await;
    assert_eq!(stage.stats.checked.load(Ordering::Relaxed), 1, "seq 4");
    assert_eq!(
        stage.stats.quarantined.load(Ordering::Relaxed),
        1,
        "seq 3 again"
    );
    assert_eq!(checked_seqs(&kafka, &topics), [1, 2, 3, 4]);
    stop(stage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_checkpoint_past_the_logs_ends_means_a_full_rebuild_not_a_stop() {
    let (_broker, kafka, topics, producer) = setup("undec-checkpoint");
    produce(&producer, &topics.raw, &frames(1..=3)).await;
    let stage = support::start(&kafka, &topics, config());
    processed(&stage, 3).await;
    stop(stage).await;
    // decodes, but names checked offset 1,000,000 of a log that ends at 3: another
    // cluster's changelog, topics made again, or forged
    let forged = Checkpoint {
        checked_next: 1_000_000,
        format: feeder_stream::changelog::STATE_FORMAT,
        ..Default::default()
    };
    produce(
        &producer,
        &topics.stream_state,
        &[(0, CHECKPOINT_KEY.to_string(), forged.encode_to_vec())],
    )
    .await;
    // a replay of seq 2 and a new seq 4
    produce(&producer, &topics.raw, &frames(2..=2)).await;
    produce(&producer, &topics.raw, &frames(4..=4)).await;

    let stage = support::start(&kafka, &topics, config());
    processed(&stage, 2).await;
    assert_eq!(stage.stats.restored_devices.load(Ordering::Relaxed), 0);
    assert_eq!(stage.stats.replayed_checked.load(Ordering::Relaxed), 3);
    assert_eq!(stage.stats.checked.load(Ordering::Relaxed), 1);
    let q: Vec<QuarantinedFrame> = read_topic(&kafka, &topics.quarantine, 1)
        .iter()
        .map(|(_, v)| QuarantinedFrame::decode(v.as_slice()).unwrap())
        .collect();
    assert_eq!(
        (q.len(), q[0].seq, q[0].reason.as_str()),
        (1, 2, "duplicate")
    );
    assert_eq!(checked_seqs(&kafka, &topics), [1, 2, 3, 4]);
    stop(stage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_cohort_topics_is_skipped_by_the_aggregator() {
    let (_broker, kafka, topics, producer) = setup("undec-cohorts");
    produce(&producer, &topics.cohort_progress, &[garbage("progress")]).await;
    produce(&producer, &topics.cohort_tallies, &[garbage("0/0")]).await;
    produce(&producer, &topics.raw, &frames(1..=3)).await;
    let cfg = StreamConfig {
        batch_linger: Duration::from_millis(5),
        cohort_tick: None,
        ..StreamConfig::default()
    };
    assert!(!cfg.rules.cohort.groupings.is_empty());
    let stage = support::start(&kafka, &topics, cfg);
    processed(&stage, 3).await;
    // the aggregator took the tallies partition over (reading the progress topic) and
    // read the garbage tally
    wait_for("both skipped", || {
        assert!(!stage.task.is_finished(), "the stage stopped");
        stage.stats.undecodable_skipped.load(Ordering::Relaxed) == 2
    })
    .await;
    let seqs: BTreeSet<u64> = checked_seqs(&kafka, &topics).into_iter().collect();
    assert_eq!(seqs, BTreeSet::from([1, 2, 3]));
    stop(stage).await;
}
