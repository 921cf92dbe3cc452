//! The whole pipeline in-process on the embedded mock cluster: a fleet plus forged,
//! tampered, replayed, stale, unknown-device and revoked frames; the datasets are then
//! read by DuckDB and pyarrow (tests/python/check_datasets.py) and by Apache Spark
//! (tests/python/check_spark.py), not by our own code.

use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_tests::{assert_scenario, run_python, run_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_and_hostile_frames_end_to_end_on_mock_cluster() {
    let work = tempfile::tempdir().unwrap();
    let topics = Topics::with_prefix("e2e-mock", 4, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let frames = 600;
    let r = run_scenario(kafka, topics, work.path(), frames)
        .await
        .unwrap();
    assert_scenario(&r, frames);
    let path = |p: &str| work.path().join(p).to_str().unwrap().to_string();
    let (ok, spark) = run_python(
        "check_spark.py",
        &["--data", &path("data"), "--expect", &path("expect.json")],
    )
    .unwrap();
    assert!(ok, "check_spark.py: {spark:#}");
    assert_eq!(spark["rows"]["readings"], r.check["readings"], "{spark:#}");
    assert_eq!(spark["rows"]["frames"], r.check["frames"], "{spark:#}");
    println!(
        "e2e mock: {} readings stored, {:.0} readings/s end to end (debug build); Spark {} read them",
        r.check["readings"], r.readings_per_sec_end_to_end, spark["spark"]
    );
}
