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

/// A new group's first member gets the partitions (the embedded broker answers a first
/// join without Kafka's `group.initial.rebalance.delay.ms`; the time is printed, never
/// asserted: `cargo test -p feeder-kafka --test embedded -- --nocapture`).
#[test]
fn a_new_groups_first_member_is_assigned_every_partition() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let broker = EmbeddedBroker::start(1, &["t.join"], 3).unwrap();
    let cfg = KafkaConfig::new(broker.bootstrap_servers());
    let consumer: BaseConsumer = cfg.consumer("g.join", "join-test").create().unwrap();
    consumer.subscribe(&["t.join"]).unwrap();
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(30);
    while consumer.assignment().unwrap().count() < 3 {
        assert!(std::time::Instant::now() < deadline, "never assigned");
        let _ = consumer.poll(std::time::Duration::from_millis(20));
    }
    eprintln!(
        "first join assigned 3 partitions after {:?}",
        started.elapsed()
    );
}
