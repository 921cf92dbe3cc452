//! Partitions moving between stream processes (a consumer-group rebalance): a member
//! that gets a partition back must not use the state it held before, because another
//! member accepted frames of it meanwhile. Two stages in one group on the embedded
//! broker; every replay of an accepted frame is refused, nothing is checked twice.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame};
use feeder_stream::StreamConfig;
use prost::Message as _;
use rdkafka::producer::FutureProducer;
use support::{produce, raw_frame, read_topic, start, wait_for};

const PARTITIONS: i32 = 4;
const DEVICES: usize = 40;
const T0: i64 = 1_764_000_000_000;

/// Frames `seqs` of every device, each to its device's partition.
fn frames(seqs: std::ops::Range<u64>) -> Vec<(i32, String, Vec<u8>)> {
    let mut out = Vec::new();
    for seq in seqs {
        for d in 0..DEVICES {
            let id = format!("mtr-{d:03}");
            let at = T0 + seq as i64 * 60_000 + d as i64;
            out.push((
                d as i32 % PARTITIONS,
                id.clone(),
                raw_frame(&id, seq, at, "v1"),
            ));
        }
    }
    out
}

fn cfg(client: &str) -> StreamConfig {
    StreamConfig {
        client_id: client.into(),
        ..StreamConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_comes_back_refuses_what_the_other_member_accepted() {
    let topics = Topics::with_prefix("rebalance", PARTITIONS, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), PARTITIONS).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka.producer("test", 100_000, 30_000).create().unwrap();
    let checked = |kafka: &KafkaConfig| read_topic(kafka, &topics.checked, PARTITIONS).len();

    // A alone holds every partition and accepts seqs 1..=5
    let a = start(&kafka, &topics, cfg("a"));
    produce(&producer, &topics.raw, &frames(1..6)).await;
    wait_for("A checked seqs 1..=5", || checked(&kafka) == 5 * DEVICES).await;

    // B joins: the group splits the partitions; seqs 6..=10 go to whoever holds them
    let b = start(&kafka, &topics, cfg("b"));
    let mut seq = 6;
    while b.stats.checked.load(Ordering::Relaxed) == 0 {
        assert!(seq < 200, "B never checked a frame");
        produce(&producer, &topics.raw, &frames(seq..seq + 1)).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let accepted = seq - 1;
    wait_for("every frame so far checked", || {
        checked(&kafka) == accepted as usize * DEVICES
    })
    .await;

    // B leaves: its partitions come back to A, which held (stale) state for them
    assert!(!a.task.is_finished(), "A stopped: {:?}", a.task.await);
    b.stop.cancel();
    b.task.await.unwrap().unwrap();
    // replays of everything accepted so far (B's frames included), then one new frame
    produce(&producer, &topics.raw, &frames(1..accepted + 1)).await;
    produce(&producer, &topics.raw, &frames(accepted + 1..accepted + 2)).await;
    let total_checked = (accepted as usize + 1) * DEVICES;
    let total_quarantined = accepted as usize * DEVICES;
    wait_for("replays refused, new frames checked", || {
        checked(&kafka) >= total_checked
            && read_topic(&kafka, &topics.quarantine, PARTITIONS).len() >= total_quarantined
    })
    .await;
    a.stop.cancel();
    a.task.await.unwrap().unwrap();

    let checked: Vec<CheckedFrame> = read_topic(&kafka, &topics.checked, PARTITIONS)
        .iter()
        .map(|(_, v)| CheckedFrame::decode(&v[..]).unwrap())
        .collect();
    let distinct: HashSet<_> = checked.iter().map(|c| (&c.device_id, c.seq)).collect();
    assert_eq!(checked.len(), total_checked, "a frame checked twice");
    assert_eq!(distinct.len(), total_checked);
    let quarantined: Vec<QuarantinedFrame> = read_topic(&kafka, &topics.quarantine, PARTITIONS)
        .iter()
        .map(|(_, v)| QuarantinedFrame::decode(&v[..]).unwrap())
        .collect();
    assert_eq!(quarantined.len(), total_quarantined);
    assert!(quarantined.iter().all(|q| q.reason == "duplicate"));
    println!(
        "seqs 1..={accepted}: B checked {}, A dropped {} fetched records on rebalance",
        b.stats.checked.load(Ordering::Relaxed),
        a.stats.dropped_on_rebalance.load(Ordering::Relaxed)
    );
}
