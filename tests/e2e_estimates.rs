//! VEE estimation end to end on a real broker process (tansu), checked by DuckDB
//! (`tests/python/check_estimates.py`, not Feeder's code): a meter skips a day of frames
//! and reports again, and gets estimates adding up exactly to its register difference;
//! then the pipeline restarts (the stream restores its estimation state from the state
//! changelog), the skipped frame arrives late, supersedes them, and the view documented
//! in docs/datasets.md returns the actuals. A second meter reports every day and gets no
//! estimate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use feeder::pipeline::{Pipeline, PipelineConfig};
use feeder_core::DeviceKind;
use feeder_core::keyfile::load_key_file;
use feeder_kafka::{KafkaConfig, Topics};
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_proto::v1::{PushRequest, SignedFrame};
use feeder_sim::fleet::SimDevice;
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_tests::{Tansu, run_python};

const DAY_MS: i64 = 86_400_000;
const DAYS: usize = 8;
const SKIPPED: usize = 5;

async fn push(url: &str, frames: &[SignedFrame]) -> anyhow::Result<()> {
    let mut client = IngestClient::connect(url.to_string()).await?;
    for f in frames {
        let resp = client
            .push(PushRequest {
                frames: vec![f.clone()],
            })
            .await?
            .into_inner();
        let code = resp.acks.first().map(|a| a.code);
        anyhow::ensure!(code == Some(0), "frame {} refused: {resp:?}", f.seq);
    }
    Ok(())
}

fn check(data: &str, device: &str, from: i64, to: i64, phase: &str) -> serde_json::Value {
    let (from, to) = (from.to_string(), to.to_string());
    let (ok, out) = run_python(
        "check_estimates.py",
        &[
            "--data",
            data,
            "--device",
            device,
            "--from-ms",
            &from,
            "--to-ms",
            &to,
            "--phase",
            phase,
        ],
    )
    .unwrap();
    println!("{phase}: {out}");
    assert!(ok, "independent check ({phase}) failed: {out:#}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skipped_day_is_estimated_then_superseded_on_tansu() {
    let work = tempfile::tempdir().unwrap();
    let broker = Tansu::start(work.path()).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap());
    let topics = Topics::with_prefix("e2e-estimates", 2, 1);
    let registry = work.path().join("registry.jsonl");
    let secrets = work.path().join("device-keys.jsonl");
    let data = work.path().join("data");
    keygen(&KeygenConfig {
        meters: 2,
        vehicles: 0,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(17),
        ..KeygenConfig::default()
    })
    .unwrap();
    let start_pipeline = || {
        let mut cfg = PipelineConfig::new(
            kafka.clone(),
            topics.clone(),
            registry.clone(),
            data.clone(),
        );
        cfg.writer.flush_max_age = Duration::from_millis(300);
        cfg.stream.snapshot_interval = Duration::from_millis(200);
        Pipeline::start(cfg)
    };
    let pipeline = start_pipeline().await.unwrap();
    let url = pipeline.edge_url();

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // whole days in the past: the last frame's day ends at least a day before now
    let start = (now.div_euclid(DAY_MS) - DAYS as i64 - 1) * DAY_MS;
    let keys: Vec<_> = load_key_file(&secrets)
        .unwrap()
        .into_iter()
        .filter(|k| k.kind == DeviceKind::Meter)
        .collect();
    assert_eq!(keys.len(), 2);
    let mut frames: Vec<Vec<SignedFrame>> = keys
        .into_iter()
        .map(|k| {
            let mut dev = SimDevice::from_key(k, start);
            (0..DAYS).map(|_| dev.next_frame(now).frame).collect()
        })
        .collect();
    let skipping = frames[0][0].device_id.clone();
    let late = frames[0].remove(SKIPPED);
    push(&url, &frames[1]).await.unwrap();
    push(&url, &frames[0]).await.unwrap();
    pipeline
        .wait_drained(Duration::from_secs(120))
        .await
        .context("draining after the gap")
        .unwrap();

    // the span between the register read before the skipped day and the one after
    let data = data.to_str().unwrap();
    let from = start + SKIPPED as i64 * DAY_MS;
    let to = from + 2 * DAY_MS;
    let out = check(data, &skipping, from, to, "estimated");
    assert_eq!(out["in_force"], 96);
    assert_eq!(out["methods"], serde_json::json!(["register_proration"]));
    assert_eq!(
        out["in_force_sum"].as_i64().unwrap() + out["actual_sum"].as_i64().unwrap(),
        out["register_difference"].as_i64().unwrap()
    );
    let estimated = pipeline
        .writer_stats
        .estimates_written
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        estimated, 96,
        "only the skipped day is estimated, none for the steady meter"
    );

    // a restart between the gap and the late frame: what supersedes the estimates is
    // the estimation state the new stream stage restored
    pipeline.stop().await.unwrap();
    let pipeline = start_pipeline().await.unwrap();
    push(&pipeline.edge_url(), &[late]).await.unwrap();
    pipeline
        .wait_drained(Duration::from_secs(120))
        .await
        .context("draining after the late frame")
        .unwrap();
    let out = check(data, &skipping, from, to, "superseded");
    assert_eq!(out["superseded_rows"], 96);
    assert_eq!(out["view"]["actual"]["intervals"], 192);
    let superseded = pipeline
        .stream_stats
        .superseded
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(superseded, 96, "superseded by the restarted stage");
    let stats = &pipeline.stream_stats;
    let (restored, replayed) = (
        stats
            .restored_devices
            .load(std::sync::atomic::Ordering::Relaxed),
        stats
            .replayed_checked
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    println!(
        "after the restart: {restored} devices restored from the changelog, {replayed} checked records replayed"
    );
    assert!(
        restored + replayed > 0,
        "the restarted stage rebuilt the state"
    );
    pipeline.stop().await.unwrap();
}
