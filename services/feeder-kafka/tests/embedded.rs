//! The embedded broker holds the topics it was started with and the partition check holds.

use feeder_kafka::{EmbeddedBroker, KafkaConfig, ensure_topics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_topics_pass_the_partition_check() {
    let broker = EmbeddedBroker::start(1, &["t.a", "t.b"], 4).unwrap();
    let cfg = KafkaConfig::new(broker.bootstrap_servers());
    ensure_topics(&cfg, &["t.a", "t.b"], 4, 1).await.unwrap();
    // an existing topic with another partition count is refused with a clear reason
    let err = ensure_topics(&cfg, &["t.a"], 3, 1).await.unwrap_err();
    assert!(
        err.to_string().contains("has 4 partitions, expected 3"),
        "{err}"
    );
}
