//! OCMF meters end to end on a real broker process (tansu), checked by an OCMF verifier
//! that is not Feeder's (`tests/python/check_ocmf.py`: pyocmf and DuckDB): simulated
//! chargers and the contract's vector 1 are stored exactly once; a tampered string is
//! refused at the edge (16) and stored nowhere; a replayed string is acked again (the
//! contract's safe resend) and quarantined as `duplicate`, never a second row; a fiscal
//! page `F1` counts in its own window; `feeder verify` re-verifies every stored frame.

use std::time::Duration;

use anyhow::Context;
use feeder::pipeline::{Pipeline, PipelineConfig};
use feeder_core::keyfile::load_key_file;
use feeder_core::ocmf::vectors;
use feeder_core::registry::RegistryLine;
use feeder_core::{Alg, DeviceKind, KeyStatus, Registry};
use feeder_kafka::{KafkaConfig, Topics};
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_proto::v1::{PushRequest, SignedFrame};
use feeder_sim::fleet::Fleet;
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_tests::{Tansu, run_python};

const SESSIONS: usize = 6;

async fn push(url: &str, frames: &[SignedFrame]) -> anyhow::Result<Vec<i32>> {
    let mut client = IngestClient::connect(url.to_string()).await?;
    let resp = client
        .push(PushRequest {
            frames: frames.to_vec(),
        })
        .await?
        .into_inner();
    Ok(resp.acks.iter().map(|a| a.code).collect())
}

fn ocmf_frame(device_id: &str, seq: u64, payload: &str) -> SignedFrame {
    SignedFrame {
        device_id: device_id.into(),
        seq,
        key_id: "k1".into(),
        payload: payload.as_bytes().to_vec().into(),
        signature: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ocmf_meters_are_stored_once_and_verified_independently_on_tansu() {
    let work = tempfile::tempdir().unwrap();
    let broker = Tansu::start(work.path()).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap());
    let topics = Topics::with_prefix("e2e-ocmf", 2, 1);
    let registry = work.path().join("registry.jsonl");
    let secrets = work.path().join("device-keys.jsonl");
    let data = work.path().join("data");
    keygen(&KeygenConfig {
        meters: 1,
        vehicles: 0,
        ocmf: 3,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(14),
        ..KeygenConfig::default()
    })
    .unwrap();
    // the contract's vector 1 as a registered meter (its readings are dated 2026-11-25)
    let mut text = std::fs::read_to_string(&registry).unwrap();
    let line = RegistryLine {
        device_id: "evse-vector1".into(),
        key_id: "k1".into(),
        alg: Alg::Ocmf,
        public_key: Some(vectors::V1_KEY.into()),
        secret: None,
        serial: Some("MTR0001".into()),
        kind: DeviceKind::Meter,
        status: KeyStatus::Active,
        labels: Default::default(),
    };
    text.push_str(&serde_json::to_string(&line).unwrap());
    text.push('\n');
    std::fs::write(&registry, text).unwrap();

    let mut cfg = PipelineConfig::new(kafka, topics, registry.clone(), data.clone());
    cfg.writer.flush_max_age = Duration::from_millis(300);
    let pipeline = Pipeline::start(cfg).await.unwrap();
    let url = pipeline.edge_url();

    // chargers start a week back: sessions move forward a few hours each
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start = now - 7 * 86_400_000;
    let keys: Vec<_> = load_key_file(&secrets)
        .unwrap()
        .into_iter()
        .filter(|k| k.device_id.starts_with("evse-"))
        .collect();
    let mut fleet = Fleet::from_keys(keys, start);
    let frames: Vec<SignedFrame> = (0..3 * SESSIONS)
        .map(|_| fleet.next_frame(now).unwrap().frame)
        .collect();
    let codes = push(&url, &frames).await.unwrap();
    assert!(codes.iter().all(|&c| c == 0), "{codes:?}");
    let vector = ocmf_frame("evse-vector1", 7, vectors::V1);
    let tampered = ocmf_frame(
        "evse-vector1",
        7,
        &vectors::V1.replace("1234.5670", "1234.5671"),
    );
    let codes = push(&url, &[vector.clone(), tampered]).await.unwrap();
    assert_eq!(codes, [0, 16], "vector accepted, tampered copy refused");
    pipeline
        .wait_drained(Duration::from_secs(120))
        .await
        .context("draining")
        .unwrap();
    // a replay of a stored string: acked (safe resend), quarantined, stored once
    let replayed = frames[0].clone();
    assert_eq!(push(&url, &[replayed]).await.unwrap(), [0]);
    pipeline
        .wait_drained(Duration::from_secs(120))
        .await
        .context("draining the replay")
        .unwrap();
    pipeline.stop().await.unwrap();

    let data_s = data.to_str().unwrap();
    let (ok, out) = run_python(
        "check_ocmf.py",
        &["--data", data_s, "--registry", registry.to_str().unwrap()],
    )
    .unwrap();
    println!("check_ocmf.py: {out}");
    assert!(ok, "independent OCMF check failed: {out:#}");
    assert_eq!(out["ocmf_frames"], 3 * SESSIONS as u64 + 1);
    assert_eq!(out["tampered_verified"], false);
    let readings = out["readings"].as_u64().unwrap();
    assert!(readings >= 2 * (3 * SESSIONS as u64 + 1), "{readings}");

    // the replay is in quarantine as a duplicate (the tampered string never passed the edge)
    assert_eq!(out["quarantined_duplicates"], 1);
    let reg = Registry::load(&registry).unwrap();
    let report = feeder_writer::verify::verify(&data, &reg, &Default::default()).unwrap();
    println!(
        "feeder verify: {} frames checked, {} verified, {} mismatches",
        report.frames_checked, report.frames_verified, report.mismatch_count
    );
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.frames_verified, 3 * SESSIONS as u64 + 1);
}
