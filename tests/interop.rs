//! A client in another language: Python grpcio with stubs generated from proto/, signing
//! with PyCA cryptography, gets code 0 for a frame signed with the device's key and 16 for
//! one signed with another key (tests/python/interop_client.py).

use std::time::Duration;

use feeder::pipeline::{Pipeline, PipelineConfig};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_tests::run_python;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_is_accepted_and_forgeries_refused() {
    let work = tempfile::tempdir().unwrap();
    let registry = work.path().join("registry.jsonl");
    let secrets = work.path().join("device-keys.jsonl");
    keygen(&KeygenConfig {
        meters: 2,
        vehicles: 2,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(11),
        ..KeygenConfig::default()
    })
    .unwrap();
    let topics = Topics::with_prefix("interop", 2, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), topics.partitions).unwrap();
    let cfg = PipelineConfig::new(
        KafkaConfig::new(broker.bootstrap_servers()),
        topics,
        registry,
        work.path().join("data"),
    );
    let pipeline = Pipeline::start(cfg).await.unwrap();
    let target = pipeline.edge_addr.to_string();
    let secrets = secrets.to_str().unwrap().to_string();
    // an Ed25519 meter and an HMAC-SHA256 vehicle (keygen alternates vehicle algorithms)
    for device in ["mtr-000001", "veh-000002"] {
        let (ok, out) = tokio::task::spawn_blocking({
            let (t, s) = (target.clone(), secrets.clone());
            move || {
                run_python(
                    "interop_client.py",
                    &[
                        "--target", &t, "--keys", &s, "--device", device, "--seq", "1",
                    ],
                )
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert!(ok, "{device}: {out:#}");
        let codes: Vec<i64> = out["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_i64().unwrap())
            .collect();
        assert_eq!(codes, vec![0, 16, 0], "{device}: {out:#}");
    }
    pipeline
        .wait_drained(Duration::from_secs(60))
        .await
        .unwrap();
    let stored = pipeline
        .writer_stats
        .frames_written
        .load(std::sync::atomic::Ordering::Relaxed);
    pipeline.stop().await.unwrap();
    assert_eq!(
        stored, 4,
        "the two accepted frames of each device are stored"
    );
}
