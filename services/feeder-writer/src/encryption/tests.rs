use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use feeder_proto::pipeline::CheckedFrame;
use feeder_proto::v1::{Frame, Reading};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;

use super::*;
use crate::convert::checked_to_batches;
use crate::parquet_file::{FileProvenance, encode_with};

const K_FOOTER: &str = "000102030405060708090a0b0c0d0e0f";
const K_COLS: &str = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f";

fn keys(footer: &str, cols: &str) -> Encryption {
    Encryption::from_toml(&format!(
        "[master_keys]\nk_footer = \"{footer}\"\nk_cols = \"{cols}\"\n\
         [datasets.readings]\nfooter_key = \"k_footer\"\ncolumns = {{ k_cols = [\"value\", \"device_id\"] }}\n\
         [datasets.frames]\nfooter_key = \"k_footer\"\n"
    ))
    .unwrap()
}

fn prov() -> FileProvenance<'static> {
    FileProvenance {
        topic: "feeder.checked",
        partition: 0,
        first_offset: 0,
        last_offset: 19,
        writer_id: "writer-enc",
    }
}

/// (readings batch, frames batch) of 20 frames of 4 meters.
fn sample() -> (RecordBatch, RecordBatch) {
    let frames: Vec<CheckedFrame> = (0..20u64)
        .map(|i| CheckedFrame {
            device_id: format!("mtr-{}", i % 4),
            seq: i + 1,
            payload: Frame {
                readings: vec![Reading {
                    ts_ms: 1_700_000_000_000 + i as i64,
                    obis: "1-0:1.8.0".into(),
                    value: i as i64 * 10,
                    unit: 30,
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
            received_at_ms: 1_700_000_000_500,
            ..Default::default()
        })
        .collect();
    let c = checked_to_batches(&frames).unwrap();
    let find = |d: Dataset| {
        c.batches
            .iter()
            .find(|p| p.dataset == d)
            .map(|p| p.batch.clone())
            .unwrap()
    };
    (find(Dataset::Readings), find(Dataset::Frames))
}

fn encode(dataset: Dataset, batch: &RecordBatch, enc: &Encryption) -> Bytes {
    Bytes::from(encode_with(dataset, batch, &prov(), &[], enc).unwrap())
}

fn read(bytes: &Bytes, enc: &Encryption) -> crate::Result<Vec<RecordBatch>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        bytes.clone(),
        enc.reader_options()?,
    )?;
    Ok(builder.build()?.collect::<Result<_, _>>()?)
}

#[test]
fn encrypted_files_round_trip_with_the_key_file_only() {
    let enc = keys(K_FOOTER, K_COLS);
    let (readings, frames) = sample();
    for (dataset, batch) in [(Dataset::Readings, &readings), (Dataset::Frames, &frames)] {
        let bytes = encode(dataset, batch, &enc);
        assert_eq!(
            &bytes[bytes.len() - 4..],
            b"PARE",
            "{dataset:?}: encrypted footer"
        );
        let back = read(&bytes, &enc).unwrap();
        assert_eq!(back, vec![batch.clone()], "{dataset:?}");
        // no keys: the footer cannot even be parsed
        let err = read(&bytes, &Encryption::none()).unwrap_err().to_string();
        assert!(err.to_lowercase().contains("encrypt"), "{dataset:?}: {err}");
    }
}

#[test]
fn wrong_or_missing_master_key_fails_without_leaking_keys() {
    let (readings, _) = sample();
    let bytes = encode(Dataset::Readings, &readings, &keys(K_FOOTER, K_COLS));
    let other = K_FOOTER.replace("0f", "ff");
    let err = read(&bytes, &keys(&other, K_COLS)).unwrap_err().to_string();
    assert!(err.contains("\"k_footer\" does not unwrap"), "{err}");
    assert!(!err.contains(K_FOOTER) && !err.contains(&other), "{err}");
    // right footer key, wrong column key: the footer opens, the columns do not
    let err = read(&bytes, &keys(K_FOOTER, &K_COLS.replace("2f", "00")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"k_cols\" does not unwrap"), "{err}");
    // a key file without the file's master key
    let only_other =
        Encryption::from_toml(&format!("[master_keys]\nk_x = \"{K_FOOTER}\"\n")).unwrap();
    let err = read(&bytes, &only_other).unwrap_err().to_string();
    assert!(err.contains("needs master key \"k_footer\""), "{err}");
}

#[test]
fn file_metadata_carries_standard_key_material_and_fresh_keys() {
    let enc = keys(K_FOOTER, K_COLS);
    let (readings, _) = sample();
    let a = encode(Dataset::Readings, &readings, &enc);
    let b = encode(Dataset::Readings, &readings, &enc);
    assert_ne!(a, b, "every file gets fresh data keys");
    let props = enc.file_properties(Dataset::Readings).unwrap().unwrap();
    let footer: serde_json::Value =
        serde_json::from_slice(props.footer_key_metadata().unwrap()).unwrap();
    assert_eq!(footer["masterKeyID"], "k_footer");
    assert_eq!(footer["isFooterKey"], true);
    let (names, _, metas) = props.column_keys();
    assert_eq!(names.len(), 2);
    for meta in metas {
        let m: serde_json::Value = serde_json::from_slice(&meta).unwrap();
        assert_eq!(m["masterKeyID"], "k_cols");
        assert_eq!(m["isFooterKey"], false);
    }
    // the device_id column is encrypted: no plaintext bloom filter for it
    let builder =
        ParquetRecordBatchReaderBuilder::try_new_with_options(a, enc.reader_options().unwrap())
            .unwrap();
    let rg = builder.metadata().row_group(0);
    assert_eq!(rg.column(0).column_path().string(), "device_id");
    assert!(rg.column(0).bloom_filter_offset().is_none());
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    assert!(kv.iter().any(|kv| kv.key == "feeder.writer_id"));
}

#[test]
fn unlisted_datasets_stay_plaintext_and_read_with_or_without_keys() {
    let enc = keys(K_FOOTER, K_COLS);
    assert!(enc.file_properties(Dataset::Telematics).unwrap().is_none());
    assert!(
        Encryption::none()
            .decryption_properties()
            .unwrap()
            .is_none()
    );
    let (readings, _) = sample();
    let plain = encode(Dataset::Readings, &readings, &Encryption::none());
    assert_eq!(&plain[plain.len() - 4..], b"PAR1");
    assert_eq!(read(&plain, &enc).unwrap(), vec![readings.clone()]);
    assert_eq!(read(&plain, &Encryption::none()).unwrap(), vec![readings]);
}

#[test]
fn debug_and_summary_show_names_never_bytes() {
    let enc = keys(K_FOOTER, K_COLS);
    let shown = format!("{enc:?}");
    assert!(
        shown.contains("k_cols") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert!(
        !shown.contains("16, 17") && !shown.contains(K_COLS),
        "{shown}"
    );
    let summary = enc.summary();
    assert_eq!(
        summary["readings"],
        "footer k_footer; k_cols:value,device_id"
    );
    assert_eq!(summary["frames"], "footer k_footer; all columns");
    assert_eq!(format!("{:?}", Encryption::none()), "Encryption(none)");
}
