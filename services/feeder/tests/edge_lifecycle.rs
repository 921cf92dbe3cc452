//! The edge as a real process (`feeder edge`): SIGTERM while a load generator pushes
//! frames. It must exit 0 within its shutdown deadline, and every frame it acked with
//! code 0 must be in the raw topic; frames sent after the stop are refused or fail at
//! the transport, never acked and lost.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::RawFrame;
use feeder_proto::v1::SignedFrame;
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_sim::loadgen::{self, LoadgenConfig, LoadgenProgress, RetryPolicy};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use support::*;

const PARTITIONS: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_in_time_and_every_acked_frame_is_in_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.jsonl");
    let secrets = dir.path().join("keys.jsonl");
    keygen(&KeygenConfig {
        meters: 20,
        vehicles: 4,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(5),
        ..KeygenConfig::default()
    })
    .unwrap();
    let topics = Topics::with_prefix("life-edge", PARTITIONS, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), PARTITIONS).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut edge = spawn_edge(
        dir.path(),
        &listen,
        &registry,
        &kafka,
        "life-edge",
        PARTITIONS,
        &[
            "--shutdown-deadline",
            "5s",
            "--device-rate",
            "10000",
            "--device-burst",
            "10000",
        ],
    );

    let (tx, rx) = tokio::sync::watch::channel(LoadgenProgress::default());
    let cfg = LoadgenConfig {
        seconds: 5.0,
        concurrency: 8,
        frames_per_request: 8,
        record_acked: true,
        progress: Some(tx),
        ..LoadgenConfig::new(format!("http://{listen}"), &secrets)
    };
    let policy = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    let load = tokio::spawn(loadgen::run_with_policy(
        cfg,
        policy,
        CancellationToken::new(),
    ));
    let progress = rx.clone();
    wait_until("frames acked", Duration::from_secs(30), || {
        progress.borrow().frames_acked > 300
    });
    edge.sigterm();
    let (status, took) = edge.wait_exit(Duration::from_secs(15));
    let report = load.await.unwrap().unwrap();
    println!(
        "edge: SIGTERM after {} acked; exit {status} in {took:?}; loadgen: {} sent, {} acked, \
         {} refused, {} abandoned, {} failed calls",
        rx.borrow().frames_acked,
        report.frames_sent,
        report.frames_acked,
        report.frames_refused(),
        report.abandoned,
        report.failed_calls
    );
    assert!(status.success(), "exit {status}:\n{}", edge.log());
    assert!(
        took < Duration::from_secs(5) + Duration::from_secs(2),
        "deadline 5 s, took {took:?}"
    );
    assert!(
        report.frames_acked < report.frames_sent,
        "the stop must have cut the load short"
    );

    // every record carries the proof of the edge key it was given
    let keys = feeder_core::EdgeKeys::load(&dir.path().join("edge-keys.jsonl")).unwrap();
    let in_raw: HashSet<(String, u64)> = read_topic(&kafka, &topics.raw, PARTITIONS)
        .iter()
        .map(|v| {
            let r = RawFrame::decode(&v[..]).unwrap();
            assert_eq!(
                keys.check_raw(&r),
                Ok(()),
                "raw record without a valid edge proof"
            );
            let f = SignedFrame::decode(r.signed_frame).unwrap();
            (f.device_id, f.seq)
        })
        .collect();
    let lost: Vec<_> = report
        .acked
        .iter()
        .filter(|a| !in_raw.contains(&(a.device_id.clone(), a.seq)))
        .collect();
    assert_eq!(report.acked.len() as u64, report.frames_acked);
    assert!(lost.is_empty(), "acked but not in Kafka: {lost:?}");
}
