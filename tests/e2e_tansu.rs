//! The same end-to-end scenario against tansu, a Kafka-protocol broker in its own process
//! with SQLite storage, so the pipeline is tested against real broker I/O: admin topic
//! creation, idempotent produce, consumer groups and offset commits over TCP.

use feeder_kafka::{KafkaConfig, Topics};
use feeder_tests::{Tansu, assert_scenario, run_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_and_hostile_frames_end_to_end_on_tansu() {
    let work = tempfile::tempdir().unwrap();
    let broker = Tansu::start(work.path()).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap());
    // tansu is a single broker: replication 1; Feeder creates the topics itself here.
    let topics = Topics::with_prefix("e2e-tansu", 3, 1);
    let frames = 300;
    let r = run_scenario(kafka, topics, work.path(), frames)
        .await
        .unwrap();
    assert_scenario(&r, frames);
    println!(
        "e2e tansu: {} readings stored, {:.0} readings/s end to end (debug build)",
        r.check["readings"], r.readings_per_sec_end_to_end
    );
}
