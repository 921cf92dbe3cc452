//! `feeder loadgen --scenario telematics` against the real edge on the embedded broker:
//! only the key file's vehicles play, each sending one frame a second that carries one
//! fix, so the timeline offers as many frames/s as there are vehicles. Counts and
//! structure only, never timings.

mod common;

use feeder_edge::EdgeConfig;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_sim::loadgen::{self, OpenLoopConfig, Scenario};
use tokio_util::sync::CancellationToken;

use common::*;

const METERS: usize = 3;
/// A power of two: the timeline's 1/8 s steps are exact, so the slot count is too.
const VEHICLES: usize = 8;
const SECONDS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vehicle_sends_one_fix_a_second_and_meters_stay_silent() {
    let work = tempfile::tempdir().unwrap();
    let (registry, _) = provision(work.path(), METERS, VEHICLES);
    let secrets = work.path().join("device-keys.jsonl");
    let topics = Topics::with_prefix("edge-loadgen-telematics", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let edge = Edge::start(&kafka, &topics, EdgeConfig::default(), &registry).await;

    let cfg = OpenLoopConfig {
        scenario: Scenario::Telematics,
        rate: 0.0,
        seconds: SECONDS as f64,
        max_in_flight: 32,
        // each unit calls on its own
        frames_per_request: 1,
        ..OpenLoopConfig::new(format!("http://{}", edge.addr), &secrets)
    };
    let report = play_open_loop(cfg, 3).await;
    edge.stop().await;

    assert_eq!(report.scenario, "telematics");
    assert_eq!(report.devices, VEHICLES, "meters do not play");
    let t = &report.total;
    // one request of one frame per vehicle per second of the timeline
    assert_eq!(t.requests_scheduled, VEHICLES as u64 * SECONDS);
    assert_eq!(t.requests_sent + t.requests_late, t.requests_scheduled);
    assert_eq!(t.frames_sent, t.requests_sent);
    let refused: u64 = report.refused_by_code.values().sum();
    assert_eq!(t.frames_acked + refused + report.abandoned, t.frames_sent);
    assert!(t.frames_acked > 0);
    // a 1 Hz unit's frame carries the one fix it just took
    assert_eq!(t.readings_acked, t.frames_acked);
    assert_eq!(report.series.len(), SECONDS as usize);
    for p in &report.series {
        assert_eq!(p.offered_frames_per_sec, VEHICLES as f64);
    }

    // a key file without vehicles cannot play this scenario
    let meters_only = work.path().join("meters");
    std::fs::create_dir_all(&meters_only).unwrap();
    provision(&meters_only, 2, 0);
    let cfg = OpenLoopConfig {
        scenario: Scenario::Telematics,
        rate: 0.0,
        seconds: 1.0,
        ..OpenLoopConfig::new("http://127.0.0.1:9", meters_only.join("device-keys.jsonl"))
    };
    let err = loadgen::run_open_loop(cfg, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("holds none"), "{err}");
}
