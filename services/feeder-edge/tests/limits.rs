//! The edge's whole-call limits against the real edge (in-process, port 0): each refusal
//! has its exact gRPC code and message, and is counted with its reason in
//! `feeder_edge_requests_refused_total` (or `feeder_edge_connections_refused_total`).
//! Also: the rate token is taken before verification, reflection is off unless enabled,
//! and plaintext is refused on a non-loopback address.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use feeder_edge::EdgeConfig;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_proto::v1::{PushRequest, SignedFrame};
use feeder_sim::attacks;
use prost::Message;
use tokio_util::sync::CancellationToken;

use common::*;

fn refused(reason: &str) -> f64 {
    counter("feeder_edge_frames_refused_total", &[("reason", reason)])
}

fn calls_refused(reason: &str) -> f64 {
    counter("feeder_edge_requests_refused_total", &[("reason", reason)])
}

struct Fixture {
    _work: tempfile::TempDir,
    _broker: EmbeddedBroker,
    kafka: KafkaConfig,
    topics: Topics,
    registry: std::path::PathBuf,
    keys: Vec<feeder_core::keyfile::DeviceKey>,
}

fn fixture(prefix: &str) -> Fixture {
    metrics();
    let work = tempfile::tempdir().unwrap();
    let (registry, keys) = provision(work.path(), 2, 0);
    let topics = Topics::with_prefix(prefix, 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    Fixture {
        _work: work,
        _broker: broker,
        kafka,
        topics,
        registry,
        keys,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_call_refusals_have_their_code_message_and_count() {
    let mut f = fixture("edge-call-limits");
    let cfg = EdgeConfig {
        max_frames_per_request: 8,
        max_payload_bytes: 4096,
        ..EdgeConfig::default()
    };
    // the decode limit in force: 8 frames of 4096 + 256 bytes and their headers
    let limit = cfg.request_limit();
    assert_eq!(limit, 8 * (4096 + 256 + 11));
    let edge = Edge::start(&f.kafka, &f.topics, cfg, &f.registry).await;
    let mut dev = device(&mut f.keys, "mtr-000001");
    let good = dev.next_frame(START_MS).frame.encode_to_vec();
    let request = |frames: Vec<Vec<u8>>| -> Bytes {
        let mut out = Vec::new();
        for fr in frames {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
            prost::encoding::encode_varint(fr.len() as u64, &mut out);
            out.extend_from_slice(&fr);
        }
        out.into()
    };
    let rows: Vec<(&str, Bytes, tonic::Code, &str, &str)> = vec![
        (
            "empty request",
            Bytes::new(),
            tonic::Code::InvalidArgument,
            "no frames",
            "empty_request",
        ),
        (
            "9 frames: stopped at the 9th",
            request(vec![good[..40].to_vec(); 9]),
            tonic::Code::InvalidArgument,
            "more than the limit of 8 frames",
            "too_many_frames",
        ),
        (
            "5000 empty frames",
            Bytes::from([0x0a, 0x00].repeat(5000)),
            tonic::Code::InvalidArgument,
            "more than the limit of 8 frames",
            "too_many_frames",
        ),
        (
            "one byte over the decode limit",
            Bytes::from(vec![0x10; limit + 1]),
            tonic::Code::InvalidArgument,
            &*format!("exceeds the limit of {limit} bytes").leak(),
            "request_too_large",
        ),
        (
            "truncated frame",
            Bytes::from_static(&[0x0a, 0x05, 0x01]),
            tonic::Code::InvalidArgument,
            "malformed PushRequest",
            "malformed_request",
        ),
        (
            "a group (wire type 3)",
            Bytes::from_static(&[0x0b, 0x0c]),
            tonic::Code::InvalidArgument,
            "malformed PushRequest",
            "malformed_request",
        ),
    ];
    for (name, body, code, message, reason) in rows {
        let before = calls_refused(reason);
        let status = raw_request(edge.channel().await, body)
            .await
            .expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(status.message().contains(message), "{name}: {status:?}");
        assert_eq!(calls_refused(reason), before + 1.0, "{name}: counted");
    }

    // a frame over its size is skipped while decoding and answered 3 in its own ack; the
    // others of the request are still taken
    let big = SignedFrame {
        payload: vec![0u8; 5000].into(),
        ..dev.next_frame(START_MS).frame
    };
    let before = refused("payload_too_large");
    let resp = raw_request(
        edge.channel().await,
        request(vec![
            big.encode_to_vec(),
            dev.next_frame(START_MS).frame.encode_to_vec(),
        ]),
    )
    .await
    .unwrap();
    let codes: Vec<i32> = resp.acks.iter().map(|a| a.code).collect();
    assert_eq!(codes, vec![3, 0], "{:?}", resp.acks);
    assert!(resp.acks[0].message.contains("4096"));
    assert_eq!(refused("payload_too_large"), before + 1.0);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_push_stream_is_ended_and_counted() {
    let f = fixture("edge-stream-idle");
    let cfg = EdgeConfig {
        stream_idle_timeout: Duration::from_secs(1),
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&f.kafka, &f.topics, cfg, &f.registry).await;
    let before = calls_refused("stream_idle");
    let (tx, rx) = tokio::sync::mpsc::channel::<PushRequest>(1);
    let started = Instant::now();
    let mut responses = IngestClient::new(edge.channel().await)
        .push_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let status = responses
        .message()
        .await
        .expect_err("idle stream not ended");
    let took = started.elapsed();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("idle"), "{status:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(calls_refused("stream_idle"), before + 1.0);
    drop(tx);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_are_closed_and_counted() {
    let f = fixture("edge-conn-cap");
    let cfg = EdgeConfig {
        max_connections: 1,
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&f.kafka, &f.topics, cfg, &f.registry).await;
    let check = tonic_health::pb::HealthCheckRequest::default();
    // the start-up health probes' connections may still hold the one slot for a moment
    let (held, mut health) = loop {
        let ep = tonic::transport::Channel::from_shared(format!("http://{}", edge.addr)).unwrap();
        if let Ok(ch) = ep.connect().await {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
            if h.check(check.clone()).await.is_ok() {
                break (ch, h);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let before = counter("feeder_edge_connections_refused_total", &[]);
    let second = tonic::transport::Channel::from_shared(format!("http://{}", edge.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    let refused_call = match second.connect().await {
        Ok(ch) => tonic_health::pb::health_client::HealthClient::new(ch)
            .check(check.clone())
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused_call, "a second connection was served");
    assert!(counter("feeder_edge_connections_refused_total", &[]) >= before + 1.0);
    // the first connection still works; once it closes, a new one is served
    health.check(check.clone()).await.unwrap();
    drop((health, held));
    tokio::time::timeout(Duration::from_secs(10), async {
        while edge.health().await.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a new connection after the first closed");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reflection_is_off_unless_enabled() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let f = fixture("edge-reflection");
    for enabled in [false, true] {
        let cfg = EdgeConfig {
            reflection: enabled,
            ..EdgeConfig::default()
        };
        let edge = Edge::start(&f.kafka, &f.topics, cfg, &f.registry).await;
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let answer = ServerReflectionClient::new(edge.channel().await)
            .server_reflection_info(tokio_stream::iter([req]))
            .await;
        match (enabled, answer) {
            (false, Err(s)) => assert_eq!(s.code(), tonic::Code::Unimplemented),
            (true, Ok(mut stream)) => {
                let msg = stream.get_mut().message().await.unwrap().unwrap();
                assert!(format!("{msg:?}").contains("feeder.v1.Ingest"), "{msg:?}");
            }
            (e, other) => panic!("reflection {e}: {other:?}"),
        }
        // health is served either way
        assert!(edge.health().await.is_some());
        edge.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_a_non_loopback_address_needs_insecure_plaintext() {
    let f = fixture("edge-plaintext");
    let reg = feeder_edge::SharedRegistry::new(feeder_core::Registry::load(&f.registry).unwrap());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = feeder_edge::serve(
        listener,
        &f.kafka,
        &f.topics,
        EdgeConfig::default(),
        reg.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("refusing to serve plaintext"), "{err}");
    assert!(err.contains("--insecure-plaintext"), "{err}");
    // with the flag it serves (until stopped)
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let stop = CancellationToken::new();
    stop.cancel();
    let cfg = EdgeConfig {
        insecure_plaintext: true,
        shutdown_deadline: Duration::from_millis(100),
        ..EdgeConfig::default()
    };
    feeder_edge::serve(listener, &f.kafka, &f.topics, cfg, reg, stop)
        .await
        .unwrap();
}

/// The rate token is taken before verification: forged frames spend the device's burst,
/// so its next valid frame gets 8 (`rate_limited`). That price is what the peer budget
/// bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_frames_spend_the_devices_tokens_before_verification() {
    let mut f = fixture("edge-charge-first");
    let cfg = EdgeConfig {
        device_rate_per_sec: 0.001,
        device_burst: 3,
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&f.kafka, &f.topics, cfg, &f.registry).await;
    let mut dev = device(&mut f.keys, "mtr-000002");
    let limited_before = refused("rate_limited");
    let mut frames: Vec<SignedFrame> = (0..3)
        .map(|i| attacks::forged(&dev, 100 + i, START_MS))
        .collect();
    frames.push(dev.next_frame(START_MS).frame);
    let resp = IngestClient::new(edge.channel().await)
        .push(PushRequest { frames })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = resp.acks.iter().map(|a| a.code).collect();
    assert_eq!(codes, vec![16, 16, 16, 8], "{:?}", resp.acks);
    assert!(resp.acks[3].message.contains("rate limit"));
    assert_eq!(refused("rate_limited"), limited_before + 1.0);
    edge.stop().await;
}
