//! Health and shutdown of the real edge: NOT_SERVING until a registry is loaded (and the
//! broker reachable, see refusals.rs), and a shutdown that does not wait on a device's
//! open stream longer than the configured deadline.

mod common;

use std::time::{Duration, Instant};

use feeder_core::Registry;
use feeder_edge::{EdgeConfig, SharedRegistry};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::v1::PushRequest;
use feeder_proto::v1::ingest_client::IngestClient;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_until_the_registry_is_loaded() {
    let work = tempfile::tempdir().unwrap();
    let (registry, _) = provision(work.path(), 1, 0);
    let topics = Topics::with_prefix("edge-health", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = SharedRegistry::default();
    let stop = CancellationToken::new();
    let task = {
        let (k, t, r, s) = (kafka.clone(), topics.clone(), shared.clone(), stop.clone());
        tokio::spawn(async move {
            feeder_edge::serve(listener, &k, &t, EdgeConfig::default(), r, s).await
        })
    };
    let edge = Edge {
        addr,
        stop,
        task,
        registry: shared.clone(),
    };
    // the broker is up, but no registry yet
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(edge.health().await, Some(ServingStatus::NotServing));
    shared.replace(Registry::load(&registry).unwrap());
    let took = edge
        .wait_health(ServingStatus::Serving, Duration::from_secs(10))
        .await;
    println!("SERVING {took:?} after the registry was loaded");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drops_open_streams_at_the_deadline() {
    let work = tempfile::tempdir().unwrap();
    let (registry, mut keys) = provision(work.path(), 1, 0);
    let topics = Topics::with_prefix("edge-shutdown", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let cfg = EdgeConfig {
        shutdown_deadline: Duration::from_secs(1),
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&kafka, &topics, cfg, &registry).await;
    let mut d = device(&mut keys, "mtr-000001");

    // a device holds a PushStream open: one request answered, then it stays idle
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut client = IngestClient::new(edge.channel().await);
    tx.send(PushRequest {
        frames: vec![d.next_frame(START_MS).frame],
    })
    .await
    .unwrap();
    let mut acks = client
        .push_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = acks.next().await.unwrap().unwrap();
    assert_eq!(first.acks[0].code, 0);

    let started = Instant::now();
    edge.stop.cancel();
    edge.task.await.unwrap().unwrap();
    let took = started.elapsed();
    println!("edge stopped {took:?} after shutdown with a stream open (deadline 1 s)");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(tx);
}
