//! `verify` against datasets written by the writer's own flush code: a clean root passes,
//! and each kind of tampering (a changed value, a changed signature, a deleted frames
//! file, a duplicated file, an unknown key) is found and named.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use common::*;
use feeder_core::Registry;
use feeder_writer::parquet_file::{self, FileProvenance};
use feeder_writer::schema::Dataset;
use feeder_writer::verify::{Problem, VerifyOptions, verify};

const TOPIC: &str = "t.checked";

fn write_root(root: &Path) -> Registry {
    let ranges: Vec<(i64, i64)> = (0..3).map(|i| (i * 10, i * 10 + 9)).collect();
    write_signed_root(root, TOPIC, &ranges)
}

/// Rewrites `path` (a file of `dataset`) with `edit` applied to its rows.
fn rewrite(path: &Path, dataset: Dataset, edit: impl Fn(RecordBatch) -> RecordBatch) {
    let batches = read_file(path);
    let batch = arrow::compute::concat_batches(&dataset.schema(), &batches).unwrap();
    let prov = FileProvenance {
        topic: TOPIC,
        partition: 0,
        first_offset: 0,
        last_offset: 0,
        writer_id: "tamper",
    };
    let bytes = parquet_file::encode(dataset, &edit(batch), &prov).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn replace_column(batch: &RecordBatch, name: &str, col: ArrayRef) -> RecordBatch {
    let idx = batch.schema().index_of(name).unwrap();
    let mut cols = batch.columns().to_vec();
    cols[idx] = col;
    RecordBatch::try_new(batch.schema(), cols).unwrap()
}

#[test]
fn a_clean_root_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_root(tmp.path());
    let report = verify(tmp.path(), &registry, &VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.frames_checked, 30);
    assert_eq!(report.frames_verified, 30);
    assert_eq!(report.rows_checked[&Dataset::Readings], 60);
    assert_eq!(
        report.rows_checked[&Dataset::Events],
        rows(tmp.path(), Dataset::Events) as u64
    );

    // scoped to one date: only that date's rows, and the frames behind them
    let d = NaiveDate::from_ymd_opt(2024, 3, 11).unwrap();
    let report = verify(
        tmp.path(),
        &registry,
        &VerifyOptions {
            date: Some(d),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{report}");
    assert!(report.rows_checked[&Dataset::Readings] < 60);
    assert!(report.frames_checked < 30);
}

#[test]
fn a_tampered_value_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_root(tmp.path());
    let file = parquet_files(tmp.path(), Dataset::Readings)[0].clone();
    rewrite(&file, Dataset::Readings, |b| {
        let raw = b
            .column_by_name("value_raw")
            .unwrap()
            .as_primitive::<Int64Type>();
        let mut v: Vec<i64> = raw.values().to_vec();
        v[0] += 1;
        replace_column(&b, "value_raw", Arc::new(Int64Array::from(v)))
    });
    let report = verify(tmp.path(), &registry, &VerifyOptions::default()).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.mismatch_count, 1, "{report}");
    let m = &report.mismatches[0];
    assert_eq!(m.dataset, Dataset::Readings);
    assert_eq!(
        m.problem,
        Problem::RowsDiffer {
            expected_rows: 2,
            stored_rows: 2
        }
    );
    assert_eq!(m.file.as_deref(), Some(file.as_path()));
    assert!(report.to_string().contains("differ"), "{report}");
}

#[test]
fn a_tampered_signature_is_found_with_the_rows_it_vouched_for() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_root(tmp.path());
    let file = parquet_files(tmp.path(), Dataset::Frames)[0].clone();
    rewrite(&file, Dataset::Frames, |b| {
        let sig = b.column_by_name("signature").unwrap().as_binary::<i32>();
        let mut sigs: Vec<Vec<u8>> = sig.iter().map(|s| s.unwrap().to_vec()).collect();
        sigs[0][5] ^= 1;
        let arr = arrow::array::BinaryArray::from_iter_values(sigs.iter());
        replace_column(&b, "signature", Arc::new(arr))
    });
    // the first row of the rewritten (sorted) file is the victim
    let b = read_file(&file).remove(0);
    let dev = b
        .column_by_name("device_id")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_string();
    let seq = b
        .column_by_name("seq")
        .unwrap()
        .as_primitive::<arrow::datatypes::UInt64Type>()
        .value(0);
    let report = verify(tmp.path(), &registry, &VerifyOptions::default()).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.frames_verified, 29, "{report}");
    let problems: Vec<(Dataset, &str, u64, &Problem)> = report
        .mismatches
        .iter()
        .map(|m| (m.dataset, m.device_id.as_str(), m.seq, &m.problem))
        .collect();
    let (vdev, vseq) = (dev, seq);
    assert!(
        problems.contains(&(
            Dataset::Frames,
            vdev.as_str(),
            vseq,
            &Problem::BadSignature {
                key_id: "k1".into()
            }
        )),
        "{report}"
    );
    assert!(
        problems.contains(&(
            Dataset::Readings,
            vdev.as_str(),
            vseq,
            &Problem::RowsOfUnverifiedFrame { rows: 2 }
        )),
        "{report}"
    );
}

#[test]
fn missing_frames_duplicated_files_and_unknown_keys_are_found() {
    // rows whose frames file is gone
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_root(tmp.path());
    let frames = parquet_files(tmp.path(), Dataset::Frames);
    std::fs::remove_file(&frames[0]).unwrap();
    let report = verify(tmp.path(), &registry, &VerifyOptions::default()).unwrap();
    assert!(!report.is_ok());
    assert!(
        report
            .mismatches
            .iter()
            .all(|m| m.problem == Problem::RowWithoutFrame),
        "{report}"
    );

    // a readings file copied under another name: every row stored twice
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_root(tmp.path());
    let file = parquet_files(tmp.path(), Dataset::Readings)[0].clone();
    let copy = file.with_file_name("copy+0+0+0.parquet");
    std::fs::copy(&file, &copy).unwrap();
    let report = verify(tmp.path(), &registry, &VerifyOptions::default()).unwrap();
    assert!(!report.is_ok());
    assert!(
        report.mismatches.iter().all(|m| matches!(
            m.problem,
            Problem::RowsDiffer { expected_rows, stored_rows } if stored_rows == 2 * expected_rows
        )),
        "{report}"
    );

    // a registry without one of the devices
    let tmp = tempfile::tempdir().unwrap();
    let registry = write_root(tmp.path());
    let _ = registry;
    let partial: Registry = {
        let (keys, _) = fleet();
        let mut lines = String::new();
        for (dev, sk) in keys.iter().take(2) {
            lines.push_str(&format!(
                r#"{{"device_id":"{dev}","key_id":"k1","alg":"ed25519","public_key":"{}","kind":"meter","status":"active","labels":{{}}}}"#,
                hex(&sk.ed25519_public().unwrap())
            ));
            lines.push('\n');
        }
        Registry::parse("partial", &lines).unwrap()
    };
    let report = verify(tmp.path(), &partial, &VerifyOptions::default()).unwrap();
    assert_eq!(report.frames_verified, 20, "{report}");
    assert!(report.mismatches.iter().any(|m| m.device_id == "mtr-2"
        && m.problem
            == Problem::UnknownKey {
                key_id: "k1".into()
            }));
}
