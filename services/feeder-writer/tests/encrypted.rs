//! Encrypted datasets through the crate's own tools: range writes encrypt exactly the
//! datasets the key file lists, `verify` and `compact` read them with the key file and
//! refuse without it, and compaction's merged files stay encrypted under fresh data keys.

mod common;

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use common::*;
use feeder_core::Registry;
use feeder_writer::compact::{CompactOptions, compact};
use feeder_writer::encryption::Encryption;
use feeder_writer::flush::{RangeSpec, write_range_encrypted};
use feeder_writer::schema::Dataset;
use feeder_writer::storage::LocalFs;
use feeder_writer::verify::{VerifyOptions, verify};
use feeder_writer::{Error, TopicKind};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const TOPIC: &str = "enc.checked";
const K_FOOTER: &str = "000102030405060708090a0b0c0d0e0f";
const K_COLS: &str = "EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8=";

fn key_file(footer: &str) -> String {
    format!(
        "[master_keys]\nk_footer = \"{footer}\"\nk_cols = \"{K_COLS}\"\n\n\
         [datasets.readings]\nfooter_key = \"k_footer\"\ncolumns = {{ k_cols = [\"value\", \"device_id\"] }}\n\n\
         [datasets.frames]\nfooter_key = \"k_footer\"\n"
    )
}

fn keys() -> Encryption {
    Encryption::from_toml(&key_file(K_FOOTER)).unwrap()
}

fn days() -> [NaiveDate; 2] {
    let d = NaiveDate::from_ymd_opt(2024, 3, 11).unwrap();
    [d.pred_opt().unwrap(), d]
}

fn all_committed(_: &str, _: i32) -> Option<i64> {
    Some(i64::MAX)
}

/// Writes four ranges of signed frames as the writer does with `enc`; returns the registry.
fn write_root(root: &Path, enc: &Encryption) -> Registry {
    let fs = LocalFs::new(root).unwrap();
    for first in [0, 10, 20, 30] {
        let spec = RangeSpec {
            kind: TopicKind::Checked,
            topic: TOPIC,
            partition: 0,
            first,
            last: first + 9,
            writer_id: "w",
        };
        write_range_encrypted(&fs, spec, &signed_records(first..first + 10), &[], enc).unwrap();
    }
    fleet().1
}

fn footer_magic(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    bytes[bytes.len() - 4..].to_vec()
}

fn read_with(path: &Path, enc: &Encryption) -> feeder_writer::Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(file, enc.reader_options()?)?;
    Ok(b.build()?.collect::<Result<_, _>>()?)
}

/// Every row of `dataset`, files in path order, read with `enc`.
fn dataset_rows(root: &Path, dataset: Dataset, enc: &Encryption) -> Vec<RecordBatch> {
    let files: Vec<PathBuf> = parquet_files(root, dataset);
    files
        .iter()
        .flat_map(|f| read_with(f, enc).unwrap())
        .collect()
}

/// (device_id, seq, ts, obis, value bits) of every reading, sorted.
fn tuples(batches: &[RecordBatch]) -> Vec<(String, u64, i64, String, u64)> {
    let mut out = Vec::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (dev, seq, ts, obis, value) = (
            col("device_id"),
            col("seq"),
            col("ts"),
            col("obis"),
            col("value"),
        );
        for i in 0..b.num_rows() {
            out.push((
                dev.as_string::<i32>().value(i).to_string(),
                seq.as_primitive::<UInt64Type>().value(i),
                ts.as_primitive::<TimestampMillisecondType>().value(i),
                obis.as_string::<i32>().value(i).to_string(),
                value.as_primitive::<Float64Type>().value(i).to_bits(),
            ));
        }
    }
    out.sort();
    out
}

fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[test]
fn only_listed_datasets_are_encrypted_and_verify_needs_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let registry = write_root(root, &keys());
    for dataset in [Dataset::Readings, Dataset::Frames] {
        let files = parquet_files(root, dataset);
        assert!(!files.is_empty());
        for f in &files {
            assert_eq!(footer_magic(f), b"PARE", "{}", f.display());
            let err = read_with(f, &Encryption::none()).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("encrypt"), "{err}");
        }
    }
    for f in parquet_files(root, Dataset::Events) {
        assert_eq!(
            footer_magic(&f),
            b"PAR1",
            "events are not listed: plaintext"
        );
    }

    let err = verify(root, &registry, &VerifyOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Parquet(_)), "{err}");
    let with_keys = VerifyOptions {
        encryption: keys(),
        ..VerifyOptions::default()
    };
    let report = verify(root, &registry, &with_keys).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.frames_verified, 40);
    assert!(report.rows_checked[&Dataset::Readings] > 0);

    // a key file whose footer master key has other bytes: verify fails and says which key
    let wrong = VerifyOptions {
        encryption: Encryption::from_toml(&key_file(&K_FOOTER.replace("0f", "ff"))).unwrap(),
        ..VerifyOptions::default()
    };
    let err = verify(root, &registry, &wrong).unwrap_err().to_string();
    assert!(err.contains("\"k_footer\" does not unwrap"), "{err}");
}

#[test]
fn compaction_reads_with_keys_and_keeps_the_dataset_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let registry = write_root(root, &keys());
    let before = dataset_rows(root, Dataset::Readings, &keys());
    let files_before = parquet_files(root, Dataset::Readings);

    // without keys compaction stops before changing anything
    let err = compact(
        root,
        Dataset::Readings,
        days()[1],
        &all_committed,
        &CompactOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("encrypt"), "{err}");
    assert_eq!(parquet_files(root, Dataset::Readings), files_before);

    let opts = CompactOptions {
        encryption: keys(),
        ..CompactOptions::default()
    };
    let mut merged = 0;
    for date in days() {
        for dataset in [Dataset::Readings, Dataset::Frames, Dataset::Events] {
            merged += compact(root, dataset, date, &all_committed, &opts)
                .unwrap()
                .outputs
                .len();
        }
    }
    assert!(merged >= 2, "merged {merged} files");
    let after_files = parquet_files(root, Dataset::Readings);
    assert!(after_files.len() < files_before.len());
    for f in after_files
        .iter()
        .chain(&parquet_files(root, Dataset::Frames))
    {
        assert_eq!(footer_magic(f), b"PARE", "{} stays encrypted", f.display());
    }
    for f in parquet_files(root, Dataset::Events) {
        assert_eq!(footer_magic(&f), b"PAR1");
    }
    let after = dataset_rows(root, Dataset::Readings, &keys());
    assert_eq!(total_rows(&after), total_rows(&before));
    assert_eq!(tuples(&after), tuples(&before), "the same rows");

    let report = verify(
        root,
        &registry,
        &VerifyOptions {
            encryption: keys(),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.frames_verified, 40);
}

#[test]
fn key_file_errors_name_the_file_and_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("feeder-keys.toml");
    let err = Encryption::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("feeder-keys.toml") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::write(
        &path,
        format!(
            "[master_keys]\nk_footer = \"{K_FOOTER}\"\n[datasets.readings]\nfooter_key = \"k_x\"\n"
        ),
    )
    .unwrap();
    let err = Encryption::load(&path).unwrap_err().to_string();
    assert!(err.contains("feeder-keys.toml"), "{err}");
    assert!(
        err.contains("line 4: footer_key \"k_x\" is not in [master_keys]"),
        "{err}"
    );
    std::fs::write(&path, key_file(K_FOOTER)).unwrap();
    let loaded = Encryption::load(&path).unwrap();
    assert_eq!(loaded, keys());
    let shown = format!("{loaded:?}");
    assert!(
        !shown.contains(K_FOOTER) && !shown.contains(K_COLS),
        "{shown}"
    );
}
