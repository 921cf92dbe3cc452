//! Every refusal the edge can give, next to the happy path, in one table, against the real
//! edge (in-process, port 0) and the embedded broker. Each row asserts the exact code of
//! every frame (or of the call) and that the raw topic grew by exactly the frames acked
//! 0; at the end the raw topic is read back and must hold exactly the acked frames' bytes.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use feeder_core::keyfile::DeviceKey;
use feeder_core::registry::RegistryLine;
use feeder_core::{Alg, KeyStatus, SigningKey};
use feeder_edge::EdgeConfig;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_proto::v1::{PushRequest, SignedFrame};
use feeder_sim::SimDevice;
use feeder_sim::attacks;
use prost::Message;
use tonic_health::pb::health_check_response::ServingStatus;

use common::*;

/// Which edge a row talks to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// Small limits: 8 frames a request, 4096-byte payloads, 3-frame burst per device.
    Main,
    /// A producer queue of one message.
    TinyQueue,
}

enum Send {
    /// Through the generated client, as a device would.
    Frames(Vec<SignedFrame>),
    /// Arbitrary bytes as the request's frames.
    Raw(Vec<Bytes>),
}

enum Expect {
    /// One code per frame, and a substring of the message of the first non-zero ack.
    Acks(Vec<i32>, &'static str),
    /// The whole call fails with this status.
    Call(tonic::Code),
}

struct Row {
    name: &'static str,
    target: Target,
    send: Send,
    expect: Expect,
}

fn resign(dev: &SimDevice, mut f: SignedFrame) -> SignedFrame {
    f.signature = dev.sign(f.seq, &f.payload).into();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_and_the_happy_path() {
    let work = tempfile::tempdir().unwrap();
    let (registry, mut keys) = provision(work.path(), 8, 4);

    // Registry edits: mtr-000002 revoked (all keys); mtr-000003 rotated to k2 with k1
    // revoked.
    let k2_key = SigningKey::ed25519_from_seed(&[7u8; 32]).unwrap();
    let mut lines = read_lines(&registry);
    for l in lines.iter_mut() {
        if l.device_id == "mtr-000002" || l.device_id == "mtr-000003" {
            l.status = KeyStatus::Revoked;
        }
    }
    let mut k2: RegistryLine = lines
        .iter()
        .find(|l| l.device_id == "mtr-000003")
        .unwrap()
        .clone();
    k2.key_id = "k2".into();
    k2.status = KeyStatus::Active;
    k2.public_key = Some(hex::encode(k2_key.ed25519_public().unwrap()));
    lines.push(k2.clone());
    write_lines(&registry, &lines);

    let topics = Topics::with_prefix("edge-refusals", 3, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let main_cfg = EdgeConfig {
        edge_id: "edge-main".into(),
        max_frames_per_request: 8,
        max_payload_bytes: 4096,
        device_rate_per_sec: 0.01,
        device_burst: 3,
        ..EdgeConfig::default()
    };
    let tiny_cfg = EdgeConfig {
        edge_id: "edge-tiny-queue".into(),
        producer_queue_max: 1,
        ..EdgeConfig::default()
    };
    let main = Edge::start(&kafka, &topics, main_cfg, &registry).await;
    let tiny = Edge::start(&kafka, &topics, tiny_cfg, &registry).await;

    let now = START_MS;
    let mut m1 = device(&mut keys, "mtr-000001");
    let m2 = device(&mut keys, "mtr-000002");
    let mut m3 = device(&mut keys, "mtr-000003");
    let mut m3k2 = SimDevice::from_key(
        DeviceKey {
            device_id: "mtr-000003".into(),
            key_id: "k2".into(),
            kind: m3.kind,
            labels: m3.labels.clone(),
            key: SigningKey::ed25519_from_seed(&[7u8; 32]).unwrap(),
        },
        START_MS,
    );
    let mut m4 = device(&mut keys, "mtr-000004");
    let mut m5 = device(&mut keys, "mtr-000005");
    let mut m6 = device(&mut keys, "mtr-000006");
    let mut m7 = device(&mut keys, "mtr-000007");
    let mut m8 = device(&mut keys, "mtr-000008");
    let mut v1 = device(&mut keys, "veh-000001");
    let mut v2 = device(&mut keys, "veh-000002");
    assert_eq!(v1.alg(), Alg::Ed25519);
    assert_eq!(v2.alg(), Alg::HmacSha256);

    let oversized = |dev: &mut SimDevice, len: usize| {
        let f = dev.next_frame(now).frame;
        resign(
            dev,
            SignedFrame {
                payload: vec![0u8; len].into(),
                ..f
            },
        )
    };
    let too_many: Vec<SignedFrame> = (0..9).map(|_| m5.next_frame(now).frame).collect();
    let valid_bytes = m1.next_frame(now).frame.encode_to_vec();

    let rows = vec![
        Row {
            name: "happy: meter, ed25519",
            target: Target::Main,
            send: Send::Frames(vec![m1.next_frame(now).frame]),
            expect: Expect::Acks(vec![0], ""),
        },
        Row {
            name: "happy: vehicles, ed25519 and hmac-sha256",
            target: Target::Main,
            send: Send::Frames(vec![v1.next_frame(now).frame, v2.next_frame(now).frame]),
            expect: Expect::Acks(vec![0, 0], ""),
        },
        Row {
            name: "happy: rotated key k2",
            target: Target::Main,
            send: Send::Frames(vec![m3k2.next_frame(now).frame]),
            expect: Expect::Acks(vec![0], ""),
        },
        Row {
            name: "happy: a frame and its resend are both acked (the stream dedups)",
            target: Target::Main,
            send: Send::Frames({
                let f = m8.next_frame(now).frame;
                vec![attacks::replay(&f), f]
            }),
            expect: Expect::Acks(vec![0, 0], ""),
        },
        Row {
            name: "mixed: good, forged, good in one request",
            target: Target::Main,
            send: Send::Frames(vec![
                m4.next_frame(now).frame,
                attacks::forged(&m4, m4.next_seq(), now),
                m4.next_frame(now).frame,
            ]),
            expect: Expect::Acks(vec![0, 16, 0], "bad signature"),
        },
        Row {
            name: "bad signature (forged key)",
            target: Target::Main,
            send: Send::Frames(vec![attacks::forged(&m1, m1.next_seq(), now)]),
            expect: Expect::Acks(vec![16], "bad signature"),
        },
        Row {
            name: "bad signature (tampered payload, hmac)",
            target: Target::Main,
            send: Send::Frames(vec![attacks::tampered(&v2.next_frame(now).frame)]),
            expect: Expect::Acks(vec![16], "bad signature"),
        },
        Row {
            name: "wrong-length signature (ed25519, 63 bytes)",
            target: Target::Main,
            send: Send::Frames(vec![{
                let mut f = m1.next_frame(now).frame;
                f.signature = f.signature.slice(..63);
                f
            }]),
            expect: Expect::Acks(vec![16], "wrong length"),
        },
        Row {
            name: "wrong-length signature (hmac key, ed25519-sized signature)",
            target: Target::Main,
            send: Send::Frames(vec![{
                let mut f = v2.next_frame(now).frame;
                f.signature = vec![0u8; 64].into();
                f
            }]),
            expect: Expect::Acks(vec![16], "wrong length"),
        },
        Row {
            name: "unknown device",
            target: Target::Main,
            send: Send::Frames(vec![attacks::unknown_device("mtr-999999", now)]),
            expect: Expect::Acks(vec![16], "unknown device"),
        },
        Row {
            name: "unknown key_id",
            target: Target::Main,
            send: Send::Frames(vec![{
                let mut f = m1.next_frame(now).frame;
                f.key_id = "k9".into();
                f
            }]),
            expect: Expect::Acks(vec![16], "unknown key_id"),
        },
        Row {
            name: "revoked key (k1 of a rotated device)",
            target: Target::Main,
            send: Send::Frames(vec![m3.next_frame(now).frame]),
            expect: Expect::Acks(vec![16], "key revoked"),
        },
        Row {
            name: "revoked device",
            target: Target::Main,
            send: Send::Frames(vec![{
                let mut d = m2;
                d.next_frame(now).frame
            }]),
            expect: Expect::Acks(vec![7], "device revoked"),
        },
        Row {
            name: "seq 0",
            target: Target::Main,
            send: Send::Frames(vec![{
                let f = SignedFrame {
                    seq: 0,
                    ..m1.next_frame(now).frame
                };
                resign(&m1, f)
            }]),
            expect: Expect::Acks(vec![3], "seq"),
        },
        Row {
            name: "payload one byte over the limit",
            target: Target::Main,
            send: Send::Frames(vec![oversized(&mut m6, 4097)]),
            expect: Expect::Acks(vec![3], "4096"),
        },
        Row {
            name: "frame far over the payload limit (refused before decoding)",
            target: Target::Main,
            send: Send::Frames(vec![oversized(&mut m6, 8000)]),
            expect: Expect::Acks(vec![3], "4096"),
        },
        Row {
            name: "too many frames: the call fails",
            target: Target::Main,
            send: Send::Frames(too_many),
            expect: Expect::Call(tonic::Code::InvalidArgument),
        },
        Row {
            name: "empty request: the call fails",
            target: Target::Main,
            send: Send::Raw(vec![]),
            expect: Expect::Call(tonic::Code::InvalidArgument),
        },
        Row {
            name: "malformed protobuf: garbage, truncated frame, and a good frame",
            target: Target::Main,
            send: Send::Raw(vec![
                Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]),
                Bytes::copy_from_slice(&valid_bytes[..valid_bytes.len() - 5]),
                Bytes::from(m7.next_frame(now).frame.encode_to_vec()),
            ]),
            expect: Expect::Acks(vec![3, 3, 0], "malformed"),
        },
        Row {
            name: "invalid device_id (syntax)",
            target: Target::Main,
            send: Send::Frames(vec![{
                let mut f = m1.next_frame(now).frame;
                f.device_id = "mtr 1/..".into();
                f
            }]),
            expect: Expect::Acks(vec![3], ""),
        },
        Row {
            name: "invalid device_id (65 bytes)",
            target: Target::Main,
            send: Send::Frames(vec![{
                let mut f = m1.next_frame(now).frame;
                f.device_id = "m".repeat(65);
                f
            }]),
            expect: Expect::Acks(vec![3], ""),
        },
        Row {
            name: "rate limit: burst of 3, the 4th frame is refused (retryable)",
            target: Target::Main,
            send: Send::Frames((0..4).map(|_| m7.next_frame(now).frame).collect()),
            // m7 already spent one token in the malformed row
            expect: Expect::Acks(vec![0, 0, 8, 8], "rate limit"),
        },
        Row {
            name: "producer queue full (queue of one message)",
            target: Target::TinyQueue,
            send: Send::Frames(vec![
                m8.next_frame(now).frame,
                v1.next_frame(now).frame,
                v2.next_frame(now).frame,
            ]),
            expect: Expect::Acks(vec![0, 8, 8], "busy"),
        },
    ];

    let mut acked: HashSet<Vec<u8>> = HashSet::new();
    let mut refused: Vec<Vec<u8>> = Vec::new();
    for row in rows {
        let edge = match row.target {
            Target::Main => &main,
            Target::TinyQueue => &tiny,
        };
        let before = raw_count(&kafka, &topics).await;
        let sent: Vec<Bytes> = match &row.send {
            Send::Frames(f) => f.iter().map(|f| f.encode_to_vec().into()).collect(),
            Send::Raw(b) => b.clone(),
        };
        let result = match row.send {
            Send::Frames(frames) => IngestClient::new(edge.channel().await)
                .push(PushRequest { frames })
                .await
                .map(|r| r.into_inner()),
            Send::Raw(b) => raw_push(edge.channel().await, b).await,
        };
        let mut zeros = 0;
        match (&row.expect, result) {
            (Expect::Acks(codes, msg), Ok(resp)) => {
                let got: Vec<i32> = resp.acks.iter().map(|a| a.code).collect();
                assert_eq!(&got, codes, "{}: {:?}", row.name, resp.acks);
                if let Some(a) = resp.acks.iter().find(|a| a.code != 0) {
                    assert!(a.message.contains(msg), "{}: {:?}", row.name, a.message);
                }
                for (a, bytes) in resp.acks.iter().zip(&sent) {
                    if a.code == 0 {
                        zeros += 1;
                        acked.insert(bytes.to_vec());
                    } else {
                        refused.push(bytes.to_vec());
                    }
                }
            }
            (Expect::Call(code), Err(status)) => {
                assert_eq!(status.code(), *code, "{}: {status:?}", row.name);
                refused.extend(sent.iter().map(|b| b.to_vec()));
            }
            (_, other) => panic!("{}: unexpected {other:?}", row.name),
        }
        let after = raw_count(&kafka, &topics).await;
        assert_eq!(
            after - before,
            zeros,
            "{}: raw topic grew by {}",
            row.name,
            after - before
        );
    }

    // The raw topic holds exactly the acked frames, byte for byte, and none refused.
    let records = raw_records(&kafka, &topics).await;
    let stored: HashSet<Vec<u8>> = records.iter().map(|r| r.signed_frame.to_vec()).collect();
    assert_eq!(stored, acked);
    for r in &refused {
        assert!(!stored.contains(r), "a refused frame reached the raw topic");
    }
    assert!(records.iter().all(|r| r.edge_id.starts_with("edge-")));

    main.stop().await;
    tiny.stop().await;
}

/// Broker down: frames get 14 after the bounded wait and health turns NOT_SERVING;
/// meanwhile the bound on frames in flight answers 8 at once; nothing reaches the raw topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_down_gives_14_and_the_in_flight_bound_gives_8() {
    let work = tempfile::tempdir().unwrap();
    let (registry, mut keys) = provision(work.path(), 3, 0);
    let topics = Topics::with_prefix("edge-broker-down", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let cfg = EdgeConfig {
        ack_timeout: Duration::from_secs(2),
        max_frames_per_request: 2,
        max_frames_in_flight: 2,
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&kafka, &topics, cfg, &registry).await;
    let mut m1 = device(&mut keys, "mtr-000001");
    let mut m2 = device(&mut keys, "mtr-000002");

    broker.broker_down(1).unwrap();
    let took = edge
        .wait_health(ServingStatus::NotServing, Duration::from_secs(20))
        .await;
    println!("health NOT_SERVING {took:?} after the broker went down");

    let ch = edge.channel().await;
    let frames = vec![m1.next_frame(START_MS).frame, m1.next_frame(START_MS).frame];
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        IngestClient::new(ch)
            .push(PushRequest { frames })
            .await
            .map(|r| r.into_inner())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = IngestClient::new(edge.channel().await)
        .push(PushRequest {
            frames: vec![m2.next_frame(START_MS).frame],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(busy.acks[0].code, 8, "{:?}", busy.acks);
    let slow = slow.await.unwrap().unwrap();
    let waited = started.elapsed();
    let codes: Vec<i32> = slow.acks.iter().map(|a| a.code).collect();
    assert_eq!(codes, vec![14, 14], "{:?}", slow.acks);
    assert!(waited < Duration::from_secs(10), "bounded wait: {waited:?}");
    println!("broker down: code 14 after {waited:?} (ack_timeout 2s)");

    broker.broker_up(1).unwrap();
    edge.wait_health(ServingStatus::Serving, Duration::from_secs(30))
        .await;
    assert_eq!(
        raw_count(&kafka, &topics).await,
        0,
        "nothing reached the raw topic"
    );
    // and the edge recovers: the same frames are now taken
    let ok = IngestClient::new(edge.channel().await)
        .push(PushRequest {
            frames: vec![m2.next_frame(START_MS).frame],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.acks[0].code, 0, "{:?}", ok.acks);
    edge.stop().await;
}
