//! tansu 0.6 and librdkafka's idempotent producer epoch bump (docs/brokers.md).
//!
//! When a record of an idempotent, non-transactional librdkafka producer fails for good
//! (it outlived `message.timeout.ms`, or the broker refused its batch), the producer
//! drains its partitions and bumps its own producer epoch, without asking the broker
//! (`rd_kafka_idemp_drain_done`: "All partitions drained, bumped epoch to ..."); Kafka
//! accepts the higher epoch. tansu 0.6 never recorded that epoch: its sqlite storage's
//! `idempotent_message_check` runs `producer_select_for_update.sql` with `query_one`,
//! which panics on no row (tansu-storage 0.6.0 `lite.rs:503`, "more or less than one
//! row"), and from then on the broker answers every request with an error.
//!
//! These tests use Feeder's own producer settings (`KafkaConfig::producer`), no stage
//! and no zombie fence: a broker stall longer than the producer's delivery timeout is
//! enough. They pin the broker's behaviour, so that a tansu upgrade that fixes it shows.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use feeder_kafka::KafkaConfig;
use feeder_testkit::Tansu;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

const PANIC: &str = "more or less than one row";

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("feeder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(broker: &Tansu, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &broker.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} tansu");
}

async fn topic(kafka: &KafkaConfig, name: &str) {
    let admin: AdminClient<DefaultClientContext> = kafka.client().create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for r in admin.create_topics([&t], &opts).await.unwrap() {
        r.unwrap();
    }
}

fn send(p: &FutureProducer, topic: &str, i: usize) -> DeliveryFuture {
    let payload = format!("record {i}");
    p.send_result(
        FutureRecord::<str, _>::to(topic)
            .partition(0)
            .payload(&payload),
    )
    .map_err(|(e, _)| e)
    .unwrap()
}

/// Produces 20 records and waits for their acks, stalls the broker (SIGSTOP) for
/// `stall` while 20 more are sent, resumes it, then sends 20 more. Returns how many of
/// the last 40 were acked.
async fn stall_while_producing(
    broker: &Tansu,
    kafka: &KafkaConfig,
    delivery_timeout: Duration,
    stall: Duration,
) -> usize {
    topic(kafka, "t").await;
    let p: FutureProducer = kafka
        .producer("epoch-bump", 1_000, delivery_timeout.as_millis() as u64)
        .create()
        .unwrap();
    for i in 0..20 {
        send(&p, "t", i).await.unwrap().unwrap();
    }
    signal(broker, "STOP");
    let mut pending: Vec<_> = (20..40).map(|i| send(&p, "t", i)).collect();
    tokio::time::sleep(stall).await;
    signal(broker, "CONT");
    // give the producer time to notice its timed-out records before the next ones
    tokio::time::sleep(Duration::from_millis(500)).await;
    pending.extend((40..60).map(|i| send(&p, "t", i)));
    let mut acked = 0;
    let mut failed = std::collections::BTreeMap::<String, usize>::new();
    for f in pending {
        match tokio::time::timeout(delivery_timeout + Duration::from_secs(10), f).await {
            Ok(Ok(Ok(_))) => acked += 1,
            Ok(Ok(Err((e, _)))) => *failed.entry(e.to_string()).or_default() += 1,
            other => *failed.entry(format!("{other:?}")).or_default() += 1,
        }
    }
    println!("acked {acked} of 40, not acked: {failed:?}");
    acked
}

/// A stall longer than the delivery timeout: records time out, librdkafka bumps the
/// epoch, and tansu's storage panics on the next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_timeout_bumps_the_epoch_and_tansu_panics() {
    let dir = Dir::new("tansu-epoch-bump");
    let broker = Tansu::start(&dir.0).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap());
    let acked = stall_while_producing(
        &broker,
        &kafka,
        Duration::from_secs(2),
        Duration::from_secs(4),
    )
    .await;
    let log = broker.log();
    assert!(
        log.contains(PANIC),
        "expected tansu 0.6's storage panic ({PANIC}); if tansu was upgraded and answers \
         the bumped epoch, update docs/brokers.md. Log:\n{log}"
    );
    assert!(
        acked < 40,
        "the broker cannot ack after its storage panicked"
    );
}

/// The same stall within the delivery timeout: no record fails, the epoch stays, and
/// tansu acks everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_within_the_delivery_timeout_leaves_the_epoch_alone() {
    let dir = Dir::new("tansu-no-epoch-bump");
    let broker = Tansu::start(&dir.0).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap());
    let acked = stall_while_producing(
        &broker,
        &kafka,
        Duration::from_secs(30),
        Duration::from_secs(4),
    )
    .await;
    let log = broker.log();
    assert!(!log.contains(PANIC), "tansu panicked:\n{log}");
    assert_eq!(acked, 40, "every record acked after the stall");
}
