//! Which batch compression Feeder's producers should use, per topic: the raw topic's
//! records (`RawFrame` as the edge writes them: the device's signed frame) and the
//! checked topic's (`CheckedFrame` as the stream writes them: the same payload with its
//! flags), produced through librdkafka (the codecs the stages really run, at their
//! default levels) to an in-process mock cluster and read back, with `compression.type`
//! each of [`Compression::ALL`] (zstd is not in this build's librdkafka); Feeder's choice
//! is [`PRODUCER_COMPRESSION`].
//!
//! Bytes are what librdkafka sent to the brokers (statistics `txbytes`, so request
//! overhead included, the same for every codec); CPU is the whole process's (producer or
//! consumer threads and the mock broker) while producing, then while consuming, the
//! record set `REPS` times. Two batch shapes bound what a stage sees: one record per
//! batch (a quiet partition: only the record's own redundancy compresses) and batches
//! of up to `FULL_BATCH` records (a busy one). Rounds alternate the codecs; the best of
//! `ROUNDS` is kept for CPU.
//!
//! `cargo bench -p feeder-benches --bench kafka_compression`

use std::sync::Mutex;
use std::time::Duration;

use feeder_benches::raw_records;
use feeder_benches::thread_cpu::process_cpu_secs;
use feeder_core::DeviceKind;
use feeder_kafka::{Compression, KafkaConfig, PRODUCER_COMPRESSION};
use feeder_stream::checks::{Outcome, PartitionState};
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const REPS: usize = 8;
const ROUNDS: usize = 3;
const FULL_BATCH: usize = 64;
/// Records are spread over this many partitions so that none holds more than the mock
/// cluster keeps (about 5 MiB a partition, older segments are dropped).
const PARTITIONS: i32 = 16;

/// Keeps the newest statistics librdkafka reports.
#[derive(Default)]
struct LastStats(Mutex<Option<Statistics>>);

impl ClientContext for LastStats {
    fn stats(&self, s: Statistics) {
        *self.0.lock().expect("stats") = Some(s);
    }
}

impl ProducerContext for LastStats {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        r.as_ref().expect("delivered");
    }
}

struct Run {
    wire_bytes: u64,
    produce_cpu: f64,
    consume_cpu: f64,
}

fn run(records: &[Vec<u8>], codec: Compression, batch: usize) -> Run {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("t", PARTITIONS, 1).expect("topic");
    let kafka = KafkaConfig::new(cluster.bootstrap_servers());
    let mut cfg = kafka.producer("bench", 100_000, 60_000);
    cfg.set("compression.type", codec.as_str())
        .set("batch.num.messages", batch.to_string())
        .set("statistics.interval.ms", "50");
    let producer: BaseProducer<LastStats> = cfg
        .create_with_context(LastStats::default())
        .expect("producer");
    let cpu = process_cpu_secs();
    for _ in 0..REPS {
        for (i, r) in records.iter().enumerate() {
            let mut rec = BaseRecord::to("t")
                .partition(i as i32 % PARTITIONS)
                .payload(r.as_slice())
                .key("");
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        rec = back;
                        producer.poll(Duration::from_millis(1));
                    }
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let produce_cpu = process_cpu_secs() - cpu;
    std::thread::sleep(Duration::from_millis(150));
    producer.poll(Duration::ZERO);
    let wire_bytes = producer
        .context()
        .0
        .lock()
        .expect("stats")
        .as_ref()
        .map(|s| s.brokers.values().map(|b| b.txbytes).sum())
        .unwrap_or(0);

    let consumer: BaseConsumer = kafka.reader("bench").create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("t", p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    let (want, mut got) = (records.len() * REPS, 0);
    let cpu = process_cpu_secs();
    while got < want {
        if let Some(m) = consumer.poll(Duration::from_secs(10)) {
            m.expect("message");
            got += 1;
        }
    }
    let consume_cpu = process_cpu_secs() - cpu;
    Run {
        wire_bytes,
        produce_cpu,
        consume_cpu,
    }
}

fn main() {
    let (mut raw, _) = raw_records(DeviceKind::Meter, 100, 14);
    raw.extend(raw_records(DeviceKind::Vehicle, 100, 10).0);
    let mut st = PartitionState::new(4096);
    let checked: Vec<Vec<u8>> = raw
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match st.process(i as i64, v) {
            Outcome::Checked(c) => Some(c.encode_to_vec()),
            _ => None,
        })
        .collect();
    println!(
        "{REPS} x {} records per topic (100 meters x 14 daily frames, 100 vehicles x 10); \
         CPU best of {ROUNDS} alternating rounds, whole process",
        raw.len()
    );
    println!(
        "{:<8} {:>6} {:<6} {:>12} {:>9} {:>14} {:>14}",
        "topic", "batch", "codec", "bytes/record", "vs none", "produce us/rec", "consume us/rec"
    );
    for (topic, records) in [("raw", &raw), ("checked", &checked)] {
        let n = (records.len() * REPS) as f64;
        let plain: usize = records.iter().map(Vec::len).sum();
        println!(
            "{topic:<8} {:>6} {:<6} {:>12.0}",
            "-",
            "value",
            plain as f64 / records.len() as f64
        );
        for batch in [1, FULL_BATCH] {
            let mut best: Vec<Option<Run>> = Compression::ALL.iter().map(|_| None).collect();
            for _ in 0..ROUNDS {
                for (k, codec) in Compression::ALL.into_iter().enumerate() {
                    let r = run(records, codec, batch);
                    best[k] = Some(match best[k].take() {
                        None => r,
                        Some(b) => Run {
                            wire_bytes: b.wire_bytes.min(r.wire_bytes),
                            produce_cpu: b.produce_cpu.min(r.produce_cpu),
                            consume_cpu: b.consume_cpu.min(r.consume_cpu),
                        },
                    });
                }
            }
            let none = best[0].as_ref().expect("run").wire_bytes as f64;
            for (codec, r) in Compression::ALL.iter().zip(best.iter().flatten()) {
                println!(
                    "{topic:<8} {batch:>6} {:<6} {:>12.0} {:>9.3} {:>14.2} {:>14.2}{}",
                    codec.as_str(),
                    r.wire_bytes as f64 / n,
                    r.wire_bytes as f64 / none,
                    r.produce_cpu / n * 1e6,
                    r.consume_cpu / n * 1e6,
                    if *codec == PRODUCER_COMPRESSION {
                        "  (Feeder's)"
                    } else {
                        ""
                    },
                );
            }
        }
    }
}
