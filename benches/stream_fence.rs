//! What the zombie fence (`feeder_kafka::fence`) costs the stream stage through Kafka:
//! the stage on the embedded broker, with the fence and without it
//! (`StreamConfig::zombie_fence`), alternately in the same run, on the same records.
//!
//! `cargo bench -p feeder-benches --bench stream_fence`. Each round produces a fresh
//! raw topic (meters of ~90 readings a frame, six partitions, kept under the mock
//! cluster's ~5 MiB a partition), starts the stage and times it from its first record
//! to its last (group join and partition claims are outside the timing, counted
//! apart), then stops it. Prints readings/s per round, the best of each setting and
//! their ratio. The fence adds one 20-byte header to each output record and four
//! acknowledged claim records per partition at assignment.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use feeder_core::keyfile::DeviceKey;
use feeder_core::{DeviceKind, SigningKey};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::RawFrame;
use feeder_sim::fleet::SimDevice;
use feeder_sim::labels::labels_for;
use feeder_stream::{StreamConfig, StreamStats};
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const NOW_MS: i64 = 1_764_028_800_000;
const DAY_MS: i64 = 86_400_000;
const PARTITIONS: i32 = 6;
const METERS: usize = 300;
const FRAMES_PER_METER: usize = 40;
const ROUNDS: usize = 3;

/// Raw records (key, value) of `METERS` meters, `FRAMES_PER_METER` each; and the rows.
fn records() -> (Vec<(String, Vec<u8>)>, u64) {
    let start = (NOW_MS / DAY_MS - 30) * DAY_MS;
    let mut devs: Vec<SimDevice> = (0..METERS)
        .map(|i| {
            SimDevice::from_key(
                DeviceKey {
                    device_id: format!("mtr-{i:06}"),
                    key_id: "k1".into(),
                    kind: DeviceKind::Meter,
                    labels: labels_for(DeviceKind::Meter, i),
                    key: SigningKey::hmac(&[7; 32]),
                },
                start,
            )
        })
        .collect();
    let (mut out, mut rows, mut clock) = (Vec::new(), 0u64, NOW_MS);
    for _ in 0..FRAMES_PER_METER {
        for d in &mut devs {
            clock += 5;
            let f = d.next_frame(clock);
            rows += (f.readings + f.samples) as u64;
            let raw = RawFrame {
                signed_frame: f.frame.encode_to_vec().into(),
                received_at_ms: clock + 30,
                edge_id: "e".into(),
                ..Default::default()
            };
            out.push((d.device_id.clone(), raw.encode_to_vec()));
        }
    }
    (out, rows)
}

/// One round: returns (readings/s from first to last record, seconds to the first).
async fn round(prefix: &str, recs: &[(String, Vec<u8>)], rows: u64, fence: bool) -> (f64, f64) {
    let topics = Topics::with_prefix(prefix, PARTITIONS, 1);
    // a broker per round: each starts empty, well under the mock's eviction threshold
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), PARTITIONS).expect("broker");
    let kafka = &KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka
        .producer("bench-producer", 100_000, 30_000)
        .create()
        .expect("producer");
    let mut acks = Vec::with_capacity(recs.len());
    for (i, (key, value)) in recs.iter().enumerate() {
        let rec = FutureRecord::to(&topics.raw)
            .partition(i as i32 % PARTITIONS)
            .key(key)
            .payload(value);
        acks.push(producer.send_result(rec).map_err(|(e, _)| e).expect("send"));
    }
    for a in acks {
        a.await.expect("ack").map_err(|(e, _)| e).expect("ack");
    }
    let mut cfg = StreamConfig {
        group_id: format!("{prefix}-group"),
        zombie_fence: fence,
        cohort_tick: None,
        ..StreamConfig::default()
    };
    cfg.rules.cohort.groupings.clear();
    let stats = Arc::new(StreamStats::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (kafka, topics, stats, stop) =
            (kafka.clone(), topics.clone(), stats.clone(), stop.clone());
        async move { feeder_stream::run(&kafka, &topics, cfg, stats, stop).await }
    });
    let started = Instant::now();
    let n = recs.len() as u64;
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let seen = stats.records_in.load(Ordering::Relaxed);
        if first.is_none() && seen > 0 {
            first = Some((Instant::now(), seen));
        }
        if seen >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "stage stalled at {seen} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let done = Instant::now();
    stop.cancel();
    task.await.expect("join").expect("stage");
    let (t0, n0) = first.expect("a first record");
    let timed_rows = rows as f64 * (n - n0) as f64 / n as f64;
    (
        timed_rows / done.duration_since(t0).as_secs_f64(),
        t0.duration_since(started).as_secs_f64(),
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (recs, rows) = records();
        println!(
            "stream stage through the embedded broker: {} frames, {rows} readings a round",
            recs.len()
        );
        let (mut best_off, mut best_on) = (0f64, 0f64);
        for r in 0..ROUNDS {
            for fence in [false, true] {
                let label = if fence { "on" } else { "off" };
                let (rate, join) = round(&format!("fence-{label}-{r}"), &recs, rows, fence).await;
                println!("round {r} fence {label:>3}: {rate:>10.0} readings/s (first record after {join:.2} s)");
                if fence {
                    best_on = best_on.max(rate);
                } else {
                    best_off = best_off.max(rate);
                }
            }
        }
        println!(
            "best: without the fence {best_off:.0} readings/s, with it {best_on:.0}: ratio {:.3}",
            best_on / best_off
        );
    });
}
