//! What the zombie fence (`feeder_kafka::fence`) costs the stream stage through Kafka:
//! the stage on the embedded broker, with the fence and without it
//! (`StreamConfig::zombie_fence`), alternately in the same run, on the same records.
//!
//! `cargo bench -p feeder-benches --bench stream_fence`. Each round produces a fresh
//! raw topic (meters of ~90 readings a frame, six partitions, kept under the mock
//! cluster's ~5 MiB a partition), starts the stage and times it from its first record
//! to its last (group join and partition claims are outside the timing, counted
//! apart), then stops it. Prints readings/s per round, the best of each setting and
//! their ratio, and beside them the same records through the checks alone
//! (`PartitionState::process` on one thread, the `stream_checks` bench's measure): the
//! stage's cost through Kafka against its checks, which issue 13 wants within 1.5x. The
//! fence adds one 20-byte header to each output record and four
//! acknowledged claim records per partition at assignment.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use feeder_benches::thread_cpu::{Mark, Sampler};
use feeder_core::keyfile::DeviceKey;
use feeder_core::{DeviceKind, SigningKey};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::RawFrame;
use feeder_sim::fleet::SimDevice;
use feeder_sim::labels::labels_for;
use feeder_stream::checks::PartitionState;
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

/// What one round of the stage measured.
struct Round {
    /// Readings/s from its first record to its last.
    rate: f64,
    /// Readings per CPU-second of the stage's threads (its runtime and its librdkafka
    /// clients) over the same span...
    per_cpu_sec: f64,
    /// ...and of the whole process (with the embedded broker serving them).
    per_process_cpu_sec: f64,
    /// Seconds to the first record.
    join: f64,
}

/// One round of the stage on a fresh broker.
async fn round(
    prefix: &str,
    recs: &[(String, Vec<u8>)],
    rows: u64,
    fence: bool,
    sampler: &Sampler,
) -> Round {
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
    let mut first: Option<(Instant, u64, Mark)> = None;
    loop {
        let seen = stats.records_in.load(Ordering::Relaxed);
        if first.is_none() && seen > 0 {
            first = Some((Instant::now(), seen, sampler.mark()));
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
    let (t0, n0, mark) = first.expect("a first record");
    let cpu = sampler.since(&mark, group);
    stop.cancel();
    task.await.expect("join").expect("stage");
    let timed_rows = rows as f64 * (n - n0) as f64 / n as f64;
    Round {
        rate: timed_rows / done.duration_since(t0).as_secs_f64(),
        per_cpu_sec: timed_rows / cpu.get("stage"),
        per_process_cpu_sec: timed_rows / cpu.process,
        join: t0.duration_since(started).as_secs_f64(),
    }
}

/// A thread's part in the CPU figures: the embedded broker's, the bench's own (the main
/// thread polls the stage's counters), or the stage's (its runtime, blocking pool and
/// librdkafka clients).
fn group(thread: &str) -> &'static str {
    match thread {
        t if t.starts_with("rdk:mock") => "broker",
        "main" | "cpu-sampler" => "bench",
        _ => "stage",
    }
}

/// The same records through `PartitionState::process` alone (one state per partition,
/// as the stage keeps them; the stage's rules), on this thread: readings/s.
fn checks_alone(recs: &[(String, Vec<u8>)], rows: u64) -> f64 {
    let mut cfg = StreamConfig::default();
    cfg.rules.cohort.groupings.clear();
    let mut parts: Vec<PartitionState> = (0..PARTITIONS)
        .map(|_| PartitionState::from_config(&cfg))
        .collect();
    let t0 = Instant::now();
    for (i, (_, value)) in recs.iter().enumerate() {
        let p = &mut parts[i % PARTITIONS as usize];
        std::hint::black_box(p.process(i as i64, value));
        if i % 256 == 0 {
            std::hint::black_box(p.take_anomalies());
        }
    }
    rows as f64 / t0.elapsed().as_secs_f64()
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
        let (mut best_off, mut best_on, mut best_checks) = (0f64, 0f64, 0f64);
        let mut best_cpu_off = 0f64;
        let sampler = Sampler::start(Duration::from_millis(50));
        for r in 0..ROUNDS {
            let checks = checks_alone(&recs, rows);
            println!("round {r} checks alone: {checks:>10.0} readings/s (one thread)");
            best_checks = best_checks.max(checks);
            for fence in [false, true] {
                let label = if fence { "on" } else { "off" };
                let prefix = format!("fence-{label}-{r}");
                let got = round(&prefix, &recs, rows, fence, &sampler).await;
                println!(
                    "round {r} fence {label:>3}: {:>10.0} readings/s, {:>10.0} per CPU-second \
                     of the stage ({:.0} of the process; first record after {:.2} s)",
                    got.rate, got.per_cpu_sec, got.per_process_cpu_sec, got.join
                );
                if fence {
                    best_on = best_on.max(got.rate);
                } else {
                    best_off = best_off.max(got.rate);
                    best_cpu_off = best_cpu_off.max(got.per_cpu_sec);
                }
            }
        }
        println!(
            "best: without the fence {best_off:.0} readings/s, with it {best_on:.0}: ratio {:.3}",
            best_on / best_off
        );
        println!(
            "checks alone {best_checks:.0} readings/s on one thread; the stage (no fence) \
             {best_off:.0} readings/s = {:.2}x slower, {best_cpu_off:.0} per CPU-second of \
             its threads = \
             {:.2}x the CPU per reading (issue 13 asks for at most 1.5x)",
            best_checks / best_off,
            best_checks / best_cpu_off
        );
    });
}
