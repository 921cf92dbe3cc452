//! The state changelog through Kafka, with the real consumer loop on the embedded broker:
//! a device silent for longer than the checked topic keeps its records keeps its replay
//! window across a restart, and a crash between snapshots neither loses nor duplicates a
//! frame.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use feeder_core::keyfile::DeviceKey;
use feeder_core::{DeviceKind, SigningKey};
use feeder_kafka::fence::Mark;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame, RawFrame};
use feeder_sim::fleet::SimDevice;
use feeder_sim::labels::labels_for;
use feeder_stream::changelog::{CHECKPOINT_KEY, Checkpoint, Restored};
use feeder_stream::{StreamConfig, StreamStats};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const DAY_MS: i64 = 86_400_000;
const NOW_MS: i64 = 1_764_028_800_000;

fn meter(i: usize) -> SimDevice {
    SimDevice::from_key(
        DeviceKey {
            device_id: format!("mtr-{i:06}"),
            key_id: "k1".into(),
            kind: DeviceKind::Meter,
            labels: labels_for(DeviceKind::Meter, i),
            key: SigningKey::hmac(&[7; 32]),
        },
        (NOW_MS.div_euclid(DAY_MS) - 365) * DAY_MS,
    )
}

/// The next frame of `dev` as the edge would put it on the raw topic.
fn raw(dev: &mut SimDevice, now_ms: i64) -> Vec<u8> {
    RawFrame {
        signed_frame: dev.next_frame(now_ms).frame.encode_to_vec().into(),
        received_at_ms: now_ms,
        edge_id: "edge-0".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

struct Stage {
    stats: Arc<StreamStats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<feeder_stream::Result<()>>,
}

fn start(kafka: &KafkaConfig, topics: &Topics, cfg: StreamConfig) -> Stage {
    let stats = Arc::new(StreamStats::default());
    let stop = CancellationToken::new();
    let (kafka, topics, s, t) = (kafka.clone(), topics.clone(), stats.clone(), stop.clone());
    let task = tokio::spawn(async move { feeder_stream::run(&kafka, &topics, cfg, s, t).await });
    Stage { stats, stop, task }
}

async fn produce(producer: &FutureProducer, topic: &str, records: &[Vec<u8>]) {
    let mut acks = Vec::new();
    for r in records {
        let rec = FutureRecord::<(), _>::to(topic).partition(0).payload(r);
        acks.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    for a in acks {
        a.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (offset, key, value)
type Record = (i64, Vec<u8>, Vec<u8>);

/// (low, high) watermarks of partition 0.
fn watermarks(kafka: &KafkaConfig, topic: &str) -> (i64, i64) {
    let c: BaseConsumer = kafka.reader("watermarks").create().unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
}

/// (low, high) watermarks and every retained (offset, key, value) of partition 0, but
/// the zombie fence's claims (no data).
fn read_all(kafka: &KafkaConfig, topic: &str) -> (i64, i64, Vec<Record>) {
    let (low, high) = watermarks(kafka, topic);
    let c: BaseConsumer = kafka.reader("changelog-test").create().unwrap();
    let mut out = Vec::new();
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(low))
            .unwrap();
        c.assign(&tpl).unwrap();
        let t0 = Instant::now();
        let mut last = low - 1;
        while last < high - 1 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{topic}: read stalled"
            );
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                last = m.offset();
                if let Mark::Claim(_) = Mark::of(m.headers(), m.offset()) {
                    continue;
                }
                out.push((
                    m.offset(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
    }
    (low, high, out)
}

fn setup(prefix: &str) -> (EmbeddedBroker, KafkaConfig, Topics, FutureProducer) {
    let topics = Topics::with_prefix(prefix, 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), 1).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka.producer("test", 100_000, 30_000).create().unwrap();
    (broker, kafka, topics, producer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_silent_past_the_checked_topics_retention_keeps_its_replay_window() {
    let (_broker, kafka, topics, producer) = setup("cl-silent");
    let cfg = || StreamConfig {
        // only the snapshot of a clean stop: the embedded broker does not compact, and
        // evicts each partition past 5 MiB, the changelog included
        snapshot_interval: Duration::from_secs(3600),
        ..StreamConfig::default()
    };
    let stage = start(&kafka, &topics, cfg());
    let mut silent = meter(0);
    let mut clock = NOW_MS;
    let mut silent_frames = Vec::new();
    for _ in 0..5 {
        clock += 1000;
        silent_frames.push(raw(&mut silent, clock));
    }
    produce(&producer, &topics.raw, &silent_frames).await;
    // then only the others, until the broker has dropped the silent meter's checked
    // records (offsets 0..5) from the checked log: as retention would in production
    let mut others: Vec<SimDevice> = (1..=30).map(meter).collect();
    let mut sent = 5u64;
    loop {
        let chunk: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                clock += 10;
                raw(&mut others[i % 30], clock)
            })
            .collect();
        produce(&producer, &topics.raw, &chunk).await;
        sent += chunk.len() as u64;
        wait_for("stream keeps up", || {
            stage.stats.records_in.load(Ordering::Relaxed) >= sent
        })
        .await;
        if watermarks(&kafka, &topics.checked).0 > 5 {
            break;
        }
        assert!(
            sent < 40_000,
            "the embedded broker never evicted checked records"
        );
    }
    assert_eq!(stage.stats.checked.load(Ordering::Relaxed), sent);
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();

    // the clean stop wrote every device and a checkpoint at the checked log's end
    let (_, checked_end, _) = read_all(&kafka, &topics.checked);
    let (_, _, records) = read_all(&kafka, &topics.stream_state);
    let mut restored = Restored::default();
    for (_, k, v) in &records {
        restored.record(k, v);
    }
    assert!(restored.usable());
    assert_eq!(restored.devices.len(), 31);
    assert!(restored.devices.contains_key("mtr-000000"));
    let cp = records
        .iter()
        .rev()
        .find(|(_, k, _)| k == CHECKPOINT_KEY.as_bytes())
        .map(|(_, _, v)| Checkpoint::decode(&v[..]).unwrap())
        .unwrap();
    assert_eq!(cp.checked_next, checked_end);
    assert_eq!(cp.raw_next as u64, sent);

    // restart: a replay of the silent meter's third frame, then its next frame
    let stage = start(&kafka, &topics, cfg());
    clock += 1000;
    let next = raw(&mut silent, clock);
    produce(&producer, &topics.raw, &[silent_frames[2].clone(), next]).await;
    wait_for("restart decides both", || {
        stage.stats.records_in.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(stage.stats.restored_devices.load(Ordering::Relaxed), 31);
    assert_eq!(
        stage.stats.replayed_checked.load(Ordering::Relaxed),
        0,
        "nothing to replay after a clean stop"
    );
    assert_eq!(stage.stats.quarantined.load(Ordering::Relaxed), 1);
    assert_eq!(stage.stats.checked.load(Ordering::Relaxed), 1);
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
    let (_, _, q) = read_all(&kafka, &topics.quarantine);
    let q = QuarantinedFrame::decode(&q.last().unwrap().2[..]).unwrap();
    assert_eq!(
        (q.device_id.as_str(), q.seq, q.reason.as_str()),
        ("mtr-000000", 3, "duplicate")
    );
    let (_, _, c) = read_all(&kafka, &topics.checked);
    let c = CheckedFrame::decode(&c.last().unwrap().2[..]).unwrap();
    assert_eq!((c.device_id.as_str(), c.seq), ("mtr-000000", 6));
    assert!(
        c.frame_flags.is_empty(),
        "no gap: the window continues: {:?}",
        c.frame_flags
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_snapshots_loses_and_duplicates_nothing() {
    let (_broker, kafka, topics, producer) = setup("cl-crash");
    let cfg = || StreamConfig {
        snapshot_interval: Duration::ZERO, // after every batch
        batch_max_records: 40,
        ..StreamConfig::default()
    };
    let mut devices: Vec<SimDevice> = (0..20).map(meter).collect();
    let mut clock = NOW_MS;
    let frames: Vec<Vec<u8>> = (0..600)
        .map(|i| {
            clock += 10;
            raw(&mut devices[i % 20], clock)
        })
        .collect();
    produce(&producer, &topics.raw, &frames).await;
    let stage = start(&kafka, &topics, cfg());
    wait_for("half decided", || {
        stage.stats.checked.load(Ordering::Relaxed) >= 300
    })
    .await;
    // a crash: the task stops at whatever await it is in, no final snapshot
    stage.task.abort();
    let _ = stage.task.await;
    let decided_before = watermarks(&kafka, &topics.checked).1;

    let stage = start(&kafka, &topics, cfg());
    wait_for("all decided", || {
        watermarks(&kafka, &topics.checked).1 >= 600
    })
    .await;
    // and replays of early frames after the restart
    produce(&producer, &topics.raw, &frames[..5]).await;
    wait_for("replays decided", || {
        stage.stats.quarantined.load(Ordering::Relaxed) == 5
    })
    .await;
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();

    let restored = stage.stats.restored_devices.load(Ordering::Relaxed);
    let replayed = stage.stats.replayed_checked.load(Ordering::Relaxed);
    println!(
        "before the crash {decided_before} checked; restart restored {restored} devices \
         and replayed {replayed} checked records"
    );
    assert_eq!(restored, 20, "restored from the changelog");
    assert!(
        replayed < decided_before as u64,
        "replayed {replayed} of {decided_before}: only the tail past the checkpoint"
    );
    let (_, _, checked) = read_all(&kafka, &topics.checked);
    let mut seen: HashMap<(String, u64), usize> = HashMap::new();
    for (_, _, v) in &checked {
        let c = CheckedFrame::decode(&v[..]).unwrap();
        *seen.entry((c.device_id, c.seq)).or_default() += 1;
    }
    assert_eq!(seen.len(), 600, "every frame checked");
    let twice: BTreeMap<_, _> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "checked twice: {twice:?}");
    let (_, _, q) = read_all(&kafka, &topics.quarantine);
    let reasons: Vec<(String, u64, String)> = q
        .iter()
        .map(|(_, _, v)| {
            let q = QuarantinedFrame::decode(&v[..]).unwrap();
            (q.device_id, q.seq, q.reason)
        })
        .collect();
    assert_eq!(reasons.len(), 5, "only the replays: {reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|(_, seq, r)| *seq == 1 && r == "duplicate")
    );
}
