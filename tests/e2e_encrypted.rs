//! Encryption at rest end to end: the in-process pipeline on the embedded mock cluster
//! writes `readings` (footer and three columns under two master keys) and `frames`
//! (every column under the footer key) encrypted, the other datasets plaintext. Then:
//!
//! - `feeder compact`'s library merges an encrypted day with the keys (output stays
//!   encrypted);
//! - pyarrow and DuckDB without keys refuse every encrypted file, and pyarrow with the
//!   documented `CryptoFactory` + `KmsClient` snippet reads them all; the decrypted
//!   copy passes the same independent dataset checks as a plaintext run
//!   (tests/python/check_encrypted.py, check_datasets.py);
//! - Apache Spark refuses the encrypted datasets without keys and, with parquet-mr's own
//!   `PropertiesDrivenCryptoFactory` and `InMemoryKMS` holding the master keys, reads
//!   every row (tests/python/check_spark.py);
//! - `verify` re-checks every row against the signed frames: on the encrypted root with
//!   the keys, and on pyarrow's decrypted copy without them (so the values pyarrow
//!   decrypted are exactly the values the devices signed); without keys it fails.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use feeder::pipeline::{Pipeline, PipelineConfig};
use feeder_core::Registry;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_sim::loadgen::{self, LoadgenConfig};
use feeder_tests::{expectations, run_python};
use feeder_writer::Encryption;
use feeder_writer::compact::{self, CompactOptions};
use feeder_writer::schema::Dataset;
use feeder_writer::verify::{VerifyOptions, verify};
use tokio_util::sync::CancellationToken;

const KEY_FILE: &str = r#"# test keys: never use these
[master_keys]
k_footer = "000102030405060708090a0b0c0d0e0f"
k_cols = "base64:EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8="

[datasets.readings]
footer_key = "k_footer"
columns = { k_cols = ["device_id", "value", "value_raw"] }

[datasets.frames]
footer_key = "k_footer"
"#;

/// The `date=` partitions of `dataset` under `root`.
fn dates(root: &Path, dataset: Dataset) -> Vec<feeder_writer::NaiveDate> {
    let mut out: Vec<_> = std::fs::read_dir(root.join(dataset.name()))
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let name = e.ok()?.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("date=")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_datasets_are_opaque_without_keys_and_exact_with_them() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let work = work.path();
    let topics = Topics::with_prefix("e2e-enc", 2, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), topics.partitions)?;
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let (registry_path, secrets, data) = (
        work.join("registry.jsonl"),
        work.join("device-keys.jsonl"),
        work.join("data"),
    );
    let keys_path = work.join("feeder-keys.toml");
    std::fs::write(&keys_path, KEY_FILE)?;
    let encryption = Encryption::load(&keys_path)?;
    keygen(&KeygenConfig {
        meters: 12,
        vehicles: 3,
        registry: registry_path.clone(),
        secrets: secrets.clone(),
        seed: Some(11),
        ..KeygenConfig::default()
    })?;

    let mut cfg = PipelineConfig::new(kafka.clone(), topics, registry_path.clone(), data.clone());
    cfg.writer.flush_max_age = Duration::from_millis(300);
    cfg.writer.flush_max_frames = 40; // several files per day, so compaction has work
    cfg.writer.encryption = encryption.clone();
    let group = cfg.writer.group_id.clone();
    let pipeline = Pipeline::start(cfg).await?;
    let frames = 300;
    let mut lg = LoadgenConfig::new(pipeline.edge_url(), secrets);
    lg.seconds = 60.0;
    lg.max_frames = Some(frames);
    lg.record_acked = true;
    lg.concurrency = 4;
    let report = loadgen::run(lg, CancellationToken::new()).await?;
    assert_eq!(report.frames_acked, frames, "{:?}", report.refused_by_code);
    pipeline.wait_drained(Duration::from_secs(120)).await?;
    pipeline.stop().await?;

    // Compact every readings day with the keys, through the writer group's commits.
    let (root, enc) = (data.clone(), encryption.clone());
    let merged = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let mut merged = 0;
        for date in dates(&root, Dataset::Readings) {
            let tps = compact::partitions_in(&root, Dataset::Readings, date)?;
            let committed =
                compact::committed_offsets(&kafka, &group, &tps, Duration::from_secs(10))?;
            let lookup = |t: &str, p: i32| committed.get(&(t.to_string(), p)).copied();
            let opts = CompactOptions {
                encryption: enc.clone(),
                ..CompactOptions::default()
            };
            merged += compact::compact(&root, Dataset::Readings, date, &lookup, &opts)?
                .outputs
                .len();
        }
        Ok(merged)
    })
    .await??;
    assert!(merged > 0, "compaction merged encrypted files");

    let expect_path = work.join("expect.json");
    std::fs::write(
        &expect_path,
        serde_json::to_vec_pretty(&expectations(&report, &[], &[]))?,
    )?;
    let mirror = work.join("decrypted");
    let utf8 = |p: &Path| p.to_str().map(str::to_string).context("utf-8 path");
    let (ok, check) = run_python(
        "check_encrypted.py",
        &[
            "--data",
            &utf8(&data)?,
            "--keys",
            &utf8(&keys_path)?,
            "--out",
            &utf8(&mirror)?,
            "--expect",
            &utf8(&expect_path)?,
        ],
    )?;
    assert!(ok, "check_encrypted.py: {check:#}");
    let files = check["encrypted_files"].as_u64().unwrap_or(0);
    assert!(files > 0, "{check:#}");
    assert_eq!(
        check["refused_without_keys"]["pyarrow"].as_u64(),
        Some(files)
    );
    assert_eq!(
        check["refused_without_keys"]["duckdb"].as_u64(),
        Some(files)
    );
    assert_eq!(
        check["rows_with_keys"]["readings"].as_u64(),
        Some(report.readings_acked),
        "{check:#}"
    );
    assert_eq!(check["rows_with_keys"]["frames"].as_u64(), Some(frames));
    assert_eq!(
        check["check"]["readings"].as_u64(),
        Some(report.readings_acked)
    );

    // Spark (parquet-mr): refuses the encrypted datasets without keys, and reads them with
    // parquet-mr's own crypto factory and in-memory KMS given the master keys.
    let (ok, spark) = run_python(
        "check_spark.py",
        &[
            "--data",
            &utf8(&data)?,
            "--expect",
            &utf8(&expect_path)?,
            "--keys",
            &utf8(&keys_path)?,
        ],
    )?;
    assert!(ok, "check_spark.py: {spark:#}");
    assert_eq!(
        spark["refused_without_keys"],
        serde_json::json!(["frames", "readings"]),
        "{spark:#}"
    );
    assert_eq!(
        spark["rows"]["readings"].as_u64(),
        Some(report.readings_acked),
        "{spark:#}"
    );
    assert_eq!(spark["rows"]["frames"].as_u64(), Some(frames), "{spark:#}");

    let registry = Registry::load(&registry_path)?;
    let (data2, mirror2) = (data.clone(), mirror.clone());
    let (with_keys, no_keys, decrypted) = tokio::task::spawn_blocking(move || {
        let keyed = VerifyOptions {
            encryption,
            ..VerifyOptions::default()
        };
        (
            verify(&data2, &registry, &keyed),
            verify(&data2, &registry, &VerifyOptions::default()),
            verify(&mirror2, &registry, &VerifyOptions::default()),
        )
    })
    .await?;
    let with_keys = with_keys?;
    assert!(with_keys.is_ok(), "{with_keys}");
    assert_eq!(with_keys.frames_verified, frames);
    assert!(
        no_keys.is_err(),
        "verify without keys cannot read the encrypted datasets"
    );
    let decrypted = decrypted?;
    assert!(decrypted.is_ok(), "pyarrow's decrypted values: {decrypted}");
    assert_eq!(decrypted.frames_verified, frames);
    assert_eq!(decrypted.rows_checked, with_keys.rows_checked);
    assert_eq!(
        with_keys.rows_checked.get(&Dataset::Readings).copied(),
        Some(report.readings_acked)
    );
    println!(
        "e2e encrypted: {} encrypted files ({} merged), {} readings decrypted by pyarrow and verified",
        files, merged, report.readings_acked
    );
    Ok(())
}
