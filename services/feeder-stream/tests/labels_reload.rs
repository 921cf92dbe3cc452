//! Registry hot reload in the stream stage: labelling a meter `net_metered=true` in the
//! registry file stops `reverse_flow` flags on its negative import readings without a
//! restart, and a malformed rewrite keeps the labels in force.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use feeder_core::registry::RegistryLine;
use feeder_core::{FileStamp, Registry};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::CheckedFrame;
use feeder_proto::v1::{Frame, Reading, Unit};
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_stream::StreamConfig;
use feeder_stream::config::labels_from_registry;
use feeder_stream::labels_reload::RegistrySource;
use prost::Message as _;
use rdkafka::producer::FutureProducer;
use support::{produce, raw_record, read_topic, start, wait_for};

const T0: i64 = 1_764_000_000_000;

/// A frame whose one interval import reading is negative (energy flowing back).
fn reverse_flow_frame(device: &str, seq: u64) -> Vec<u8> {
    let at = T0 + seq as i64 * 900_000;
    let frame = Frame {
        sent_at_ms: at,
        readings: vec![Reading {
            ts_ms: at,
            interval_s: 900,
            obis: "1-0:1.8.0".into(),
            value: -30,
            scaler: 0,
            unit: Unit::Wh as i32,
            status: 0,
        }],
        ..Default::default()
    };
    raw_record(device, seq, at, frame)
}

/// Rewrites the registry with `net_metered` set as given (rename into place, as kubelet
/// and config tools do).
fn write_registry(path: &Path, lines: &[RegistryLine], net_metered: bool) {
    let text: String = lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.labels.remove("net_metered");
            if net_metered {
                l.labels.insert("net_metered".into(), "true".into());
            }
            serde_json::to_string(&l).unwrap() + "\n"
        })
        .collect();
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_change_reaches_the_rules_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.jsonl");
    keygen(&KeygenConfig {
        meters: 1,
        vehicles: 0,
        registry: registry.clone(),
        secrets: dir.path().join("device-keys.jsonl"),
        seed: Some(7),
        ..KeygenConfig::default()
    })
    .unwrap();
    let lines: Vec<RegistryLine> = std::fs::read_to_string(&registry)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    write_registry(&registry, &lines, false);
    let device = lines[0].device_id.clone();

    let topics = Topics::with_prefix("labels", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), 1).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka.producer("test", 1000, 30_000).create().unwrap();
    let loaded_from = FileStamp::of(&registry);
    let cfg = StreamConfig {
        device_labels: labels_from_registry(&Registry::load(&registry).unwrap()),
        registry: Some(RegistrySource {
            path: registry.clone(),
            poll: Duration::from_millis(100),
            loaded_from,
        }),
        ..StreamConfig::default()
    };
    let stage = start(&kafka, &topics, cfg);

    // sends frame `seq`, waits until it is checked, says whether it was flagged
    let mut seq = 0;
    let mut next_flagged = async || {
        seq += 1;
        produce(
            &producer,
            &topics.raw,
            &[(0, device.clone(), reverse_flow_frame(&device, seq))],
        )
        .await;
        wait_for("frame checked", || {
            stage.stats.checked.load(Ordering::Relaxed) >= seq
        })
        .await;
        let last = read_topic(&kafka, &topics.checked, 1).pop().unwrap().1;
        let c = CheckedFrame::decode(&last[..]).unwrap();
        assert_eq!(c.seq, seq);
        c.reading_flags
            .iter()
            .any(|r| r.flags.iter().any(|f| f == "reverse_flow"))
    };
    assert!(
        next_flagged().await,
        "not net-metered: reverse flow is flagged"
    );

    write_registry(&registry, &lines, true);
    let t0 = Instant::now();
    while next_flagged().await {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the new label never applied"
        );
    }
    println!("net_metered applied {:?} after the rewrite", t0.elapsed());

    // a malformed rewrite: the labels in force (net-metered) stay
    std::fs::write(&registry, "{ not json\n").unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(600) {
        assert!(
            !next_flagged().await,
            "a malformed registry changed the labels"
        );
    }
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
}
