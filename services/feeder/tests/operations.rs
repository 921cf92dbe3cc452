//! The operations surface of a running edge, as Kubernetes and Prometheus see it:
//! `/livez`, `/readyz` (not ready until started and the broker answers; not ready once
//! shutting down), `/metrics` counting what the edge did, and gRPC reflection and health.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use feeder::http::Readiness;
use feeder_core::Registry;
use feeder_core::keyfile::load_key_file;
use feeder_edge::{EdgeConfig, SharedRegistry};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::v1::PushRequest;
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_sim::SimDevice;
use feeder_sim::keygen::{KeygenConfig, keygen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const START_MS: i64 = 1_760_000_000_000;

/// A plain HTTP/1.1 GET: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|b| b.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// The value of the first sample whose line starts with `prefix` and contains `needle`.
fn sample(metrics: &str, prefix: &str, needle: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix) && l.contains(needle))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn wait_status(addr: SocketAddr, path: &str, want: u16, within: Duration) -> String {
    let t = Instant::now();
    loop {
        let (status, body) = get(addr, path).await;
        if status == want {
            return body;
        }
        assert!(t.elapsed() < within, "{path} stayed {status} ({body})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_reflection_and_health_of_a_running_edge() {
    let work = tempfile::tempdir().unwrap();
    let registry = work.path().join("registry.jsonl");
    let secrets = work.path().join("keys.jsonl");
    keygen(&KeygenConfig {
        meters: 2,
        vehicles: 0,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(7),
        ..KeygenConfig::default()
    })
    .unwrap();
    let topics = Topics::with_prefix("ops", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());

    let ready = Readiness::default();
    let http_stop = CancellationToken::new();
    let ops = feeder::http::serve(
        Some("127.0.0.1:0".parse().unwrap()),
        ready.clone(),
        http_stop.clone(),
    )
    .await
    .unwrap()
    .expect("an address");
    assert_eq!(get(ops, "/livez").await.0, 200);
    let (status, body) = get(ops, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not ready: starting\n"));
    assert_eq!(get(ops, "/nope").await.0, 404);

    // The stage starts: ready once the broker has answered a metadata request.
    let stop = CancellationToken::new();
    ready.watch_broker(&kafka, stop.clone());
    ready.mark_started();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let edge = {
        let (k, t, s) = (kafka.clone(), topics.clone(), stop.clone());
        let reg = SharedRegistry::new(Registry::load(&registry).unwrap());
        tokio::spawn(async move {
            let cfg = EdgeConfig {
                reflection: true,
                ..EdgeConfig::default()
            };
            feeder_edge::serve(listener, &k, &t, cfg, reg, s).await
        })
    };
    wait_status(ops, "/readyz", 200, Duration::from_secs(30)).await;

    // Traffic: 5 frames accepted, 1 from an unknown device refused.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut keys = load_key_file(&secrets).unwrap();
    let mut device = SimDevice::from_key(keys.remove(0), START_MS);
    let mut frames: Vec<_> = (0..5)
        .map(|i| device.next_frame(START_MS + i * 900_000).frame)
        .collect();
    let mut stranger = frames[0].clone();
    stranger.device_id = "mtr-stranger".into();
    frames.push(stranger);
    let resp = IngestClient::new(channel.clone())
        .push(PushRequest { frames })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = resp.acks.iter().map(|a| a.code).collect();
    assert_eq!(codes, vec![0, 0, 0, 0, 0, 16]);

    let (status, metrics) = get(ops, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(&metrics, "feeder_edge_frames_accepted_total", ""),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "feeder_edge_frames_refused_total{",
            "reason=\"unknown_device\""
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        // recorded once per produce batch
        sample(&metrics, "feeder_edge_ack_latency_seconds_count", "").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "feeder_edge_verify_seconds_count", "").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );

    // gRPC reflection lists the device service and health; health says SERVING.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}")
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"feeder.v1.Ingest"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "feeder.v1.Ingest".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Shutdown: not ready at once, still live.
    ready.mark_stopping();
    let (status, body) = get(ops, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not ready: shutting down\n"));
    assert_eq!(get(ops, "/livez").await.0, 200);
    stop.cancel();
    edge.await.unwrap().unwrap();
    http_stop.cancel();
}
