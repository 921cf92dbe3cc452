//! The output size guard through Kafka (`feeder_stream::outputs`): a frame whose checked
//! record is over the size limit, or that the broker refuses as too large, is quarantined
//! as `output_too_large`; the stage keeps running and checks the frames after it.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame, RawFrame};
use feeder_proto::v1::{Frame, Reading};
use feeder_stream::StreamConfig;
use feeder_stream::outputs::{
    MIN_MAX_OUTPUT_RECORD_BYTES, OUTPUT_TOO_LARGE, RAW_CAP, REFUSED_RAW_CAP,
};
use prost::Message as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use support::{Stage, produce, raw_frame, raw_record, read_topic, wait_for};

const NOW_MS: i64 = 1_764_028_800_000;

fn config(max_output_record_bytes: usize) -> StreamConfig {
    let mut cfg = StreamConfig {
        batch_linger: Duration::from_millis(5),
        cohort_tick: None,
        max_output_record_bytes,
        // no claims either (`crate::fence`): the injected produce errors must meet the
        // frames' outputs, not the claims
        zombie_fence: false,
        ..StreamConfig::default()
    };
    // no cohort aggregator: the stage's outputs are its only produce requests
    cfg.rules.cohort.groupings.clear();
    cfg
}

/// A frame of `n` readings at one (ts, obis): every reading after the first is flagged
/// `duplicate_reading`, so its checked record is about 2.2 × the payload.
fn flagged_frame(n: usize) -> Frame {
    Frame {
        sent_at_ms: NOW_MS,
        readings: (0..n)
            .map(|i| Reading {
                ts_ms: NOW_MS - 60_000,
                interval_s: 900,
                obis: "1-0:1.8.0".into(),
                value: i as i64,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn record(raw: Vec<u8>) -> (i32, String, Vec<u8>) {
    (0, "m".to_string(), raw)
}

fn good(seq: u64) -> (i32, String, Vec<u8>) {
    record(raw_frame("m", seq, NOW_MS + seq as i64, "1.0"))
}

fn checked_seqs(kafka: &KafkaConfig, topics: &Topics) -> BTreeSet<u64> {
    read_topic(kafka, &topics.checked, 1)
        .iter()
        .map(|(_, v)| CheckedFrame::decode(v.as_slice()).unwrap().seq)
        .collect()
}

fn quarantined(kafka: &KafkaConfig, topics: &Topics) -> Vec<QuarantinedFrame> {
    read_topic(kafka, &topics.quarantine, 1)
        .iter()
        .map(|(_, v)| QuarantinedFrame::decode(v.as_slice()).unwrap())
        .collect()
}

async fn stop(stage: Stage) {
    assert!(!stage.task.is_finished(), "the stage stopped on its own");
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_size_limit_is_quarantined_and_the_next_frames_are_checked() {
    let topics = Topics::with_prefix("out-guard", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), 1).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka.producer("test", 1000, 30_000).create().unwrap();
    let max = MIN_MAX_OUTPUT_RECORD_BYTES;
    // 2200 rows: a raw record of about 57 KB, a checked record of about twice that
    let big = raw_record("m", 2, NOW_MS + 2, flagged_frame(2200));
    assert!(big.len() < max, "the raw record itself fits: {}", big.len());
    produce(
        &producer,
        &topics.raw,
        &[good(1), record(big.clone()), good(3)],
    )
    .await;

    let stage = support::start(&kafka, &topics, config(max));
    wait_for("3 records", || {
        stage.stats.records_in.load(Ordering::Relaxed) == 3
    })
    .await;
    produce(&producer, &topics.raw, &[good(4)]).await;
    wait_for("4 records", || {
        stage.stats.records_in.load(Ordering::Relaxed) == 4
    })
    .await;

    assert_eq!(stage.stats.outputs_too_large.load(Ordering::Relaxed), 1);
    assert_eq!(stage.stats.checked.load(Ordering::Relaxed), 3);
    assert_eq!(stage.stats.quarantined.load(Ordering::Relaxed), 1);
    assert_eq!(checked_seqs(&kafka, &topics), BTreeSet::from([1, 3, 4]));
    let q = quarantined(&kafka, &topics);
    assert_eq!(q.len(), 1);
    assert_eq!(
        (q[0].reason.as_str(), q[0].seq, q[0].source_offset),
        (OUTPUT_TOO_LARGE, 2, 1)
    );
    assert!(
        q[0].detail.starts_with("checked record of "),
        "{}",
        q[0].detail
    );
    // the signed frame as received (under the cap here; cut past it, unit tests)
    let signed = RawFrame::decode(big.as_slice()).unwrap().signed_frame;
    assert!(signed.len() <= RAW_CAP);
    assert_eq!(q[0].raw, signed);
    stop(stage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_broker_refuses_as_too_large_is_replaced_not_fatal() {
    // the embedded broker does not enforce a size: the mock cluster is told to refuse
    let cluster = MockCluster::new(1).unwrap();
    let topics = Topics::with_prefix("out-refused", 1, 1);
    for t in topics.all_topics() {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let kafka = KafkaConfig::new(cluster.bootstrap_servers());
    let producer: FutureProducer = kafka.producer("test", 1000, 30_000).create().unwrap();
    produce(&producer, &topics.raw, &[good(1)]).await;
    // the stage's first produce request (seq 1's checked record) and its retry alone
    // are refused, as a topic with a smaller max.message.bytes would
    let too_large = RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
    cluster.request_errors(RDKafkaApiKey::Produce, &[too_large, too_large]);

    let stage = support::start(&kafka, &topics, config(1_000_000));
    wait_for("seq 1", || {
        stage.stats.records_in.load(Ordering::Relaxed) == 1
    })
    .await;
    produce(&producer, &topics.raw, &[good(2), good(3)]).await;
    wait_for("3 records", || {
        stage.stats.records_in.load(Ordering::Relaxed) == 3
    })
    .await;

    assert_eq!(stage.stats.outputs_too_large.load(Ordering::Relaxed), 1);
    assert_eq!(checked_seqs(&kafka, &topics), BTreeSet::from([2, 3]));
    let q = quarantined(&kafka, &topics);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        (q[0].reason.as_str(), q[0].seq, q[0].source_offset),
        (OUTPUT_TOO_LARGE, 1, 0)
    );
    assert!(
        q[0].detail.contains("refused by the broker"),
        "{}",
        q[0].detail
    );
    assert!(q[0].raw.len() <= REFUSED_RAW_CAP && !q[0].raw.is_empty());
    assert_eq!(stage.stats.checked.load(Ordering::Relaxed), 2);
    assert_eq!(stage.stats.quarantined.load(Ordering::Relaxed), 1);
    stop(stage).await;
}
