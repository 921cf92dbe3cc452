//! Helpers for the end-to-end tests: the independent Python readers, a tansu broker in
//! its own process, and the scenario every broker is put through.
//!
//! `tests/run.sh` (the README's test command) prepares the Python virtualenv and the tansu
//! binary and passes them as `FEEDER_PYTHON` and `FEEDER_TANSU`. A test that needs one and
//! does not find it FAILS with a message saying so: a missing dependency is never a pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use feeder::attacks::{self, AttackCase, RawForgery};
use feeder::pipeline::{Pipeline, PipelineConfig};
use feeder_kafka::{KafkaConfig, Topics};
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_sim::loadgen::{self, LoadgenConfig, LoadgenReport};
pub use feeder_testkit::{Tansu, free_port};
use tokio_util::sync::CancellationToken;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs a script under tests/python with the venv's python; returns (exit ok, stdout JSON).
pub fn run_python(script: &str, args: &[&str]) -> anyhow::Result<(bool, serde_json::Value)> {
    let out = Command::new(feeder_testkit::python_path())
        .arg(repo_root().join("tests/python").join(script))
        .args(args)
        .output()
        .with_context(|| format!("running {script}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("{script} printed no JSON; stdout: {stdout}\nstderr: {stderr}"))?;
    if !out.status.success() {
        eprintln!("{script} stderr:\n{stderr}");
    }
    Ok((out.status.success(), json))
}

/// What a scenario run produced and measured.
pub struct ScenarioResult {
    pub report: LoadgenReport,
    pub attacks: Vec<AttackCase>,
    /// Records written straight to the raw topic, not through an edge.
    pub raw_forgeries: Vec<RawForgery>,
    pub check: serde_json::Value,
    pub readings_per_sec_end_to_end: f64,
}

/// The fleet, hostile frames, drain, and an independent check of the datasets.
pub async fn run_scenario(
    kafka: KafkaConfig,
    topics: Topics,
    work: &Path,
    frames: u64,
) -> anyhow::Result<ScenarioResult> {
    let registry = work.join("registry.jsonl");
    let secrets = work.join("device-keys.jsonl");
    let data = work.join("data");
    keygen(&KeygenConfig {
        meters: 24,
        vehicles: 6,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(7),
        ..KeygenConfig::default()
    })?;
    let revoked = attacks::provision_revocations(&registry, "mtr-000001")?;
    let raw_topic = topics.raw.clone();
    let mut cfg = PipelineConfig::new(kafka.clone(), topics, registry, data.clone());
    cfg.writer.flush_max_age = Duration::from_millis(500);
    let pipeline = Pipeline::start(cfg).await?;

    let started = Instant::now();
    let mut lg = LoadgenConfig::new(pipeline.edge_url(), secrets.clone());
    lg.seconds = 120.0;
    lg.max_frames = Some(frames);
    lg.record_acked = true;
    lg.concurrency = 8;
    let report = loadgen::run(lg, CancellationToken::new()).await?;
    let attacks = attacks::run(&pipeline.edge_url(), &secrets, revoked).await?;
    let raw_forgeries = attacks::run_raw_topic(&kafka, &raw_topic, &secrets).await?;
    pipeline.wait_drained(Duration::from_secs(240)).await?;
    let elapsed = started.elapsed();
    pipeline.stop().await?;

    let expect = expectations(&report, &attacks, &raw_forgeries);
    let expect_path = work.join("expect.json");
    std::fs::write(&expect_path, serde_json::to_vec_pretty(&expect)?)?;
    let (ok, check) = run_python(
        "check_datasets.py",
        &[
            "--data",
            data.to_str().context("utf-8 path")?,
            "--expect",
            expect_path.to_str().context("utf-8 path")?,
        ],
    )?;
    if !ok {
        bail!("independent check failed: {check:#}");
    }
    let readings = check["readings"].as_f64().unwrap_or(0.0);
    Ok(ScenarioResult {
        report,
        attacks,
        raw_forgeries,
        check,
        readings_per_sec_end_to_end: readings / elapsed.as_secs_f64(),
    })
}

/// Builds check_datasets.py's expectations from what the devices were told.
pub fn expectations(
    report: &LoadgenReport,
    attacks: &[AttackCase],
    raw_forgeries: &[RawForgery],
) -> serde_json::Value {
    let mut acked: Vec<serde_json::Value> = report
        .acked
        .iter()
        .map(|a| serde_json::json!({"device_id": a.device_id, "seq": a.seq, "readings": a.readings, "samples": a.samples, "events": a.events}))
        .collect();
    let mut absent = Vec::new();
    let mut quarantined = Vec::new();
    for a in attacks {
        if let Some(r) = a.stored_readings {
            acked.push(serde_json::json!({"device_id": a.device_id, "seq": a.seq, "readings": r, "samples": 0, "events": 0}));
        }
        if a.expected_code != 0 {
            absent.push(serde_json::json!({"device_id": a.device_id, "seq": a.seq}));
        }
        if let Some(reason) = a.quarantine_reason {
            quarantined.push(
                serde_json::json!({"device_id": a.device_id, "seq": a.seq, "reason": reason}),
            );
        }
    }
    // a forged record names a real device: none of its rows may exist; the stream
    // quarantines it without trusting its device id (counted in assert_scenario)
    for f in raw_forgeries.iter().filter(|f| !f.device_id.is_empty()) {
        absent.push(serde_json::json!({"device_id": f.device_id, "seq": f.seq}));
    }
    serde_json::json!({"acked": acked, "absent": absent, "quarantined": quarantined})
}

/// Asserts what every scenario must show, whatever the broker.
pub fn assert_scenario(r: &ScenarioResult, frames: u64) {
    assert_eq!(
        r.report.frames_acked, frames,
        "every generated frame acked: {:?}",
        r.report.refused_by_code
    );
    assert_eq!(r.report.acked.len() as u64, frames);
    for a in &r.attacks {
        assert_eq!(
            a.code, a.expected_code,
            "attack {} got code {} ({})",
            a.case, a.code, a.message
        );
    }
    let expected_readings: u64 = r.report.readings_acked
        + r.attacks
            .iter()
            .filter_map(|a| a.stored_readings)
            .sum::<usize>() as u64;
    assert_eq!(
        r.check["readings"].as_u64(),
        Some(expected_readings),
        "{:#}",
        r.check
    );
    assert_eq!(
        r.check["frames"].as_u64(),
        Some(frames + 1),
        "{:#}",
        r.check
    );
    assert_eq!(
        r.check["quarantine"].as_u64(),
        Some(2 + r.raw_forgeries.len() as u64),
        "duplicate, too_old and the raw-topic forgeries only: {:#}",
        r.check
    );
    assert!(
        r.check["telematics"].as_u64().unwrap_or(0) > 0,
        "vehicles stored samples"
    );
}
