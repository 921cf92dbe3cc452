//! Shared by the stream stage's Kafka tests: a stage started in-process, frames as the
//! edge puts them on the raw topic, and reading a topic back.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use feeder_kafka::fence::Mark;
use feeder_kafka::{KafkaConfig, Topics};
use feeder_proto::pipeline::RawFrame;
use feeder_proto::v1::{Frame, SignedFrame};
use feeder_stream::{Clock, StreamConfig, StreamStats};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

pub struct Stage {
    pub stats: Arc<StreamStats>,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<feeder_stream::Result<()>>,
}

pub fn start(kafka: &KafkaConfig, topics: &Topics, cfg: StreamConfig) -> Stage {
    start_with_clock(kafka, topics, cfg, feeder_stream::clock::system())
}

/// [`start`] on the given wall clock (a `ManualClock` the test moves).
pub fn start_with_clock(
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: StreamConfig,
    clock: Arc<dyn Clock>,
) -> Stage {
    let stats = Arc::new(StreamStats::default());
    let stop = CancellationToken::new();
    let (kafka, topics, s, t) = (kafka.clone(), topics.clone(), stats.clone(), stop.clone());
    let task = tokio::spawn(async move {
        feeder_stream::run_with_clock(&kafka, &topics, cfg, s, clock, t).await
    });
    Stage { stats, stop, task }
}

/// A raw record of `device_id` with `seq`, sent and received at `at_ms` (the stream
/// does not verify signatures: the edge did).
pub fn raw_frame(device_id: &str, seq: u64, at_ms: i64, firmware: &str) -> Vec<u8> {
    raw_record(
        device_id,
        seq,
        at_ms,
        Frame {
            sent_at_ms: at_ms,
            firmware: firmware.into(),
            ..Default::default()
        },
    )
}

/// The raw record of `frame`, sent by `device_id` as `seq` and received at `at_ms`.
pub fn raw_record(device_id: &str, seq: u64, at_ms: i64, frame: Frame) -> Vec<u8> {
    let payload = frame.encode_to_vec();
    let sf = SignedFrame {
        device_id: device_id.into(),
        seq,
        key_id: "k1".into(),
        payload: payload.into(),
        signature: vec![0; 64].into(),
    };
    RawFrame {
        signed_frame: sf.encode_to_vec().into(),
        received_at_ms: at_ms,
        edge_id: "e".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Produces (partition, key, value) records and waits for every ack.
pub async fn produce(producer: &FutureProducer, topic: &str, records: &[(i32, String, Vec<u8>)]) {
    let mut acks = Vec::new();
    for (p, key, value) in records {
        let rec = FutureRecord::to(topic)
            .partition(*p)
            .key(key)
            .payload(value);
        acks.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    for a in acks {
        a.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record value of `topic` in partitions `0..partitions`, as (partition, value),
/// but the zombie fence's claims (no data).
pub fn read_topic(kafka: &KafkaConfig, topic: &str, partitions: i32) -> Vec<(i32, Vec<u8>)> {
    let c: BaseConsumer = kafka.reader("stream-test").create().unwrap();
    let mut out = Vec::new();
    for p in 0..partitions {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
        c.assign(&tpl).unwrap();
        let t0 = Instant::now();
        let mut last = low - 1;
        while last < high - 1 {
            assert!(t0.elapsed() < Duration::from_secs(30), "read stalled");
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                last = m.offset();
                if let Mark::Claim(_) = Mark::of(m.headers(), m.offset()) {
                    continue;
                }
                out.push((p, m.payload().unwrap_or_default().to_vec()));
            }
        }
    }
    out
}
