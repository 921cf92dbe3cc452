//! OCMF meters at the real edge (in-process, port 0, embedded broker): the contract's
//! vectors and simulated chargers are acked 0, and every OCMF refusal gets its code,
//! reason and metric: the three-section shape, the seq/`PG` binding and the serial
//! binding (3, before any signature check), a tampered string (16), an unaccepted
//! signature algorithm (16), a frame signature where there must be none (16), an unknown
//! key (16), a revoked meter (7). The raw topic then holds exactly the acked frames.

mod common;

use std::collections::HashSet;

use bytes::Bytes;
use feeder_core::keyfile::{DeviceKey, load_key_file};
use feeder_core::ocmf::{SimReading, sim_payload, vectors};
use feeder_core::registry::RegistryLine;
use feeder_core::{Alg, DeviceKind, KeyStatus, SigningKey};
use feeder_edge::EdgeConfig;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_proto::v1::{PushRequest, SignedFrame};
use feeder_sim::SimDevice;
use feeder_sim::keygen::{KeygenConfig, keygen};
use prost::Message;

use common::*;

/// The tests of this binary share its metrics recorder: they run one at a time, so the
/// counts one of them asserts are its own.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn frame(device_id: &str, key_id: &str, seq: u64, payload: &str) -> SignedFrame {
    SignedFrame {
        device_id: device_id.into(),
        seq,
        key_id: key_id.into(),
        payload: Bytes::from(payload.to_string()),
        signature: Bytes::new(),
    }
}

fn vector_line(device_id: &str, key: &str, serial: &str) -> RegistryLine {
    RegistryLine {
        device_id: device_id.into(),
        key_id: "k1".into(),
        alg: Alg::Ocmf,
        public_key: Some(key.into()),
        secret: None,
        serial: Some(serial.into()),
        kind: DeviceKind::Meter,
        status: KeyStatus::Active,
        labels: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ocmf_accepted_and_every_refusal() {
    let _serial = SERIAL.lock().await;
    let work = tempfile::tempdir().unwrap();
    let registry = work.path().join("registry.jsonl");
    let secrets = work.path().join("device-keys.jsonl");
    keygen(&KeygenConfig {
        meters: 1,
        vehicles: 0,
        ocmf: 3,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(42),
        ..KeygenConfig::default()
    })
    .unwrap();
    // the contract's two vectors as registered meters; evse-000003 revoked
    let mut lines = read_lines(&registry);
    for l in &mut lines {
        if l.device_id == "evse-000003" {
            l.status = KeyStatus::Revoked;
        }
    }
    lines.push(vector_line("evse-vector1", vectors::V1_KEY, "MTR0001"));
    lines.push(vector_line("evse-vector2", vectors::V2_KEY, "17619300"));
    write_lines(&registry, &lines);
    let mut keys = load_key_file(&secrets).unwrap();

    let topics = Topics::with_prefix("edge-ocmf", 3, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let edge = Edge::start(&kafka, &topics, EdgeConfig::default(), &registry).await;
    metrics();

    // a second signer for evse-000002's key, to build strings the simulator would not
    let i = keys
        .iter()
        .position(|k| k.device_id == "evse-000002")
        .unwrap();
    let k2: DeviceKey = keys.swap_remove(i);
    let SigningKey::Ocmf(signer2, serial2) = &k2.key else {
        panic!("not an ocmf key")
    };
    let session = [
        SimReading {
            ts_ms: START_MS,
            tx: 'B',
            register_dwh: 100,
        },
        SimReading {
            ts_ms: START_MS + 3_600_000,
            tx: 'E',
            register_dwh: 74_100,
        },
    ];
    let good2 = signer2.sign(&sim_payload(serial2, 1, &session)).unwrap();
    let wrong_serial = signer2.sign(&sim_payload("SIM999", 2, &session)).unwrap();
    let bad_sa = good2.replace("ECDSA-secp256r1-SHA256", "ECDSA-brainpool256r1-SHA256");
    let mut charger = device(&mut keys, "evse-000001");
    let revoked = device(&mut keys, "evse-000003");
    let mut with_sig = frame("evse-000002", "k1", 1, &good2);
    with_sig.signature = Bytes::from_static(&[0u8; 64]);

    let tampered = vectors::V1.replace("1234.5670", "1234.5671");
    let two_sections = &vectors::V1[..vectors::V1.rfind('|').unwrap()];
    // (name, frame, code, reason of the refusal)
    let rows: Vec<(&str, SignedFrame, i32, &str)> = vec![
        (
            "vector 1",
            frame("evse-vector1", "k1", 7, vectors::V1),
            0,
            "",
        ),
        (
            "vector 2 (KEBA)",
            frame("evse-vector2", "k1", 32, vectors::V2),
            0,
            "",
        ),
        (
            "charger session 1",
            charger.next_frame(START_MS).frame,
            0,
            "",
        ),
        (
            "charger session 2",
            charger.next_frame(START_MS).frame,
            0,
            "",
        ),
        (
            "simulated key, own string",
            frame("evse-000002", "k1", 1, &good2),
            0,
            "",
        ),
        (
            "vector 1 tampered",
            frame("evse-vector1", "k1", 7, &tampered),
            16,
            "bad_signature",
        ),
        (
            "seq is not PG",
            frame("evse-vector1", "k1", 8, vectors::V1),
            3,
            "ocmf_seq_mismatch",
        ),
        (
            "serial not registered",
            frame("evse-000002", "k1", 2, &wrong_serial),
            3,
            "ocmf_serial_mismatch",
        ),
        (
            "two sections",
            frame("evse-vector1", "k1", 7, two_sections),
            3,
            "ocmf_shape",
        ),
        (
            "payload not JSON",
            frame("evse-vector1", "k1", 7, "OCMF|{PG:T7}|{}"),
            3,
            "ocmf_payload",
        ),
        (
            "unaccepted SA",
            frame("evse-000002", "k1", 1, &bad_sa),
            16,
            "bad_signature_encoding",
        ),
        (
            "frame signature present",
            with_sig,
            16,
            "bad_signature_length",
        ),
        (
            "unknown key",
            frame("evse-vector1", "k9", 7, vectors::V1),
            16,
            "unknown_key",
        ),
        ("revoked meter", revoked_frame(revoked), 7, "device_revoked"),
        (
            "unknown meter",
            frame("evse-nobody", "k1", 7, vectors::V1),
            16,
            "unknown_device",
        ),
    ];

    let ch = edge.channel().await;
    let failed_before = counter("feeder_edge_verifications_total", &[("result", "failed")]);
    let mut accepted = HashSet::new();
    for (name, f, code, reason) in rows {
        let before = counter("feeder_edge_frames_refused_total", &[("reason", reason)]);
        let resp = IngestClient::new(ch.clone())
            .push(PushRequest {
                frames: vec![f.clone()],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.acks.len(), 1, "{name}");
        assert_eq!(resp.acks[0].code, code, "{name}: {:?}", resp.acks[0]);
        if code == 0 {
            accepted.insert(f.encode_to_vec());
        } else {
            let after = counter("feeder_edge_frames_refused_total", &[("reason", reason)]);
            assert_eq!(after - before, 1.0, "{name}: metric reason {reason}");
            // the message never echoes the OCMF string
            assert!(!resp.acks[0].message.contains("OCMF|"), "{name}");
        }
    }
    // shape refusals cost no signature check: only the tampered string and the bad SA failed
    let failed = counter("feeder_edge_verifications_total", &[("result", "failed")]);
    assert_eq!(failed - failed_before, 2.0);

    let stored: HashSet<Vec<u8>> = raw_records(&kafka, &topics)
        .await
        .into_iter()
        .map(|r| r.signed_frame.to_vec())
        .collect();
    assert_eq!(
        stored, accepted,
        "the raw topic holds exactly the acked frames"
    );
    edge.stop().await;
}

fn revoked_frame(mut dev: SimDevice) -> SignedFrame {
    dev.next_frame(START_MS).frame
}

/// A request of 300 charger frames is verified on all cores (chunks of at least 64) and
/// every frame is answered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_ocmf_request_is_verified_in_chunks() {
    let _serial = SERIAL.lock().await;
    let work = tempfile::tempdir().unwrap();
    let registry = work.path().join("registry.jsonl");
    let secrets = work.path().join("device-keys.jsonl");
    keygen(&KeygenConfig {
        meters: 0,
        vehicles: 0,
        ocmf: 3,
        registry: registry.clone(),
        secrets: secrets.clone(),
        ..KeygenConfig::default()
    })
    .unwrap();
    let topics = Topics::with_prefix("edge-ocmf-large", 3, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let cfg = EdgeConfig {
        device_rate_per_sec: 1000.0,
        device_burst: 1000,
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&kafka, &topics, cfg, &registry).await;
    let mut fleet = feeder_sim::fleet::Fleet::from_keys(load_key_file(&secrets).unwrap(), START_MS);
    let mut frames: Vec<SignedFrame> = (0..300)
        .map(|_| fleet.next_frame(START_MS).unwrap().frame)
        .collect();
    // one in the middle tampered: only it is refused
    let mut p = frames[150].payload.to_vec();
    let at = p.iter().position(|&b| b == b'.').unwrap();
    p[at - 1] = if p[at - 1] == b'1' { b'2' } else { b'1' };
    frames[150].payload = p.into();
    let resp = IngestClient::new(edge.channel().await)
        .push(PushRequest {
            frames: frames.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    for (i, (a, f)) in resp.acks.iter().zip(&frames).enumerate() {
        assert_eq!((a.device_id.as_str(), a.seq), (f.device_id.as_str(), f.seq));
        assert_eq!(a.code, if i == 150 { 16 } else { 0 }, "frame {i}: {a:?}");
    }
    assert_eq!(resp.acks.len(), 300);
    assert_eq!(raw_count(&kafka, &topics).await, 299);
    edge.stop().await;
}
