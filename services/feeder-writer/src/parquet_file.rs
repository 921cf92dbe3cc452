//! One sorted batch to the bytes of one Parquet file, with the settings readers rely on:
//! zstd, page-level statistics and the page index (min/max pruning), a bloom filter on
//! `device_id` (point lookups of one meter), declared sort order, large row groups, and
//! key-value metadata naming the exact Kafka range the file holds (provenance and audit).
//! Datasets the key file lists are encrypted ([`crate::encryption`]).

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::Result;
use crate::encryption::Encryption;
use crate::schema::Dataset;

/// Rows per row group: large, so scans read few, big column chunks.
pub const MAX_ROW_GROUP_ROWS: usize = 1_000_000;
/// zstd level: 3 is zstd's default, a good speed/ratio point for telemetry.
const ZSTD_LEVEL: i32 = 3;
/// False-positive rate of the `device_id` bloom filter.
const BLOOM_FPP: f64 = 0.01;

/// Provenance written into every file's key-value metadata.
#[derive(Debug, Clone, Copy)]
pub struct FileProvenance<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub writer_id: &'a str,
}

impl FileProvenance<'_> {
    fn key_values(&self, dataset: Dataset) -> Vec<KeyValue> {
        let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
        vec![
            kv("feeder.dataset", dataset.name().to_string()),
            kv("feeder.topic", self.topic.to_string()),
            kv("feeder.partition", self.partition.to_string()),
            kv("feeder.first_offset", self.first_offset.to_string()),
            kv("feeder.last_offset", self.last_offset.to_string()),
            kv(
                "feeder.writer_version",
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            kv("feeder.writer_id", self.writer_id.to_string()),
        ]
    }
}

/// Distinct `device_id` values of a batch sorted by `device_id`: sizes the bloom filter
/// to the data instead of the library default (1M values, ~1 MiB per row group).
fn distinct_devices(batch: &RecordBatch) -> u64 {
    use arrow::array::AsArray;
    let Some(dev) = batch
        .column_by_name("device_id")
        .and_then(|c| c.as_string_opt::<i32>())
    else {
        return 1;
    };
    let mut n = 0u64;
    let mut prev: Option<&str> = None;
    for v in dev.iter().flatten() {
        if prev != Some(v) {
            n += 1;
            prev = Some(v);
        }
    }
    n.max(1)
}

/// Columns written without a dictionary: nearly every value is distinct (a frame's
/// payload and signature, a measured value, a position), so the dictionary encoder
/// would hash and compare every value, grow to its size limit and fall back to plain
/// anyway. Everything else keeps the default (dictionary, then RLE of its indices),
/// which pays off on ids, OBIS codes, the 15-minute time grid, units and flags.
fn no_dictionary(dataset: Dataset) -> &'static [&'static str] {
    match dataset {
        Dataset::Readings => &["value", "value_raw"],
        Dataset::Telematics => &["lat", "lon", "odometer_m"],
        Dataset::Frames => &["payload", "signature"],
        Dataset::Quarantine => &["raw"],
        _ => &[],
    }
}

fn properties(
    dataset: Dataset,
    batch: &RecordBatch,
    prov: &FileProvenance<'_>,
    extra: &[(&str, String)],
    encryption: &Encryption,
) -> Result<WriterProperties> {
    let schema = dataset.schema();
    // The sort columns precede every nested column in each schema, so a field's index is
    // also its leaf-column index, which is what Parquet's sorting_columns refer to.
    let leaf = |name: &str| -> Result<i32> {
        let idx = schema.index_of(name)?;
        Ok(i32::try_from(idx).unwrap_or(i32::MAX))
    };
    let sorting = vec![
        SortingColumn {
            column_idx: leaf("device_id")?,
            descending: false,
            nulls_first: false,
        },
        SortingColumn {
            column_idx: leaf(dataset.time_column())?,
            descending: false,
            nulls_first: false,
        },
    ];
    let device = ColumnPath::from("device_id");
    let mut key_values = prov.key_values(dataset);
    key_values.extend(
        extra
            .iter()
            .map(|(k, v)| KeyValue::new((*k).to_string(), v.clone())),
    );
    let mut builder = WriterProperties::builder();
    for column in no_dictionary(dataset) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(*column), false);
    }
    let mut builder = builder
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_size(MAX_ROW_GROUP_ROWS)
        .set_sorting_columns(Some(sorting))
        .set_key_value_metadata(Some(key_values));
    // The parquet crate writes bloom filters in plaintext: none on an encrypted device_id.
    let device_encrypted = encryption
        .dataset(dataset)
        .is_some_and(|k| k.encrypts_column("device_id"));
    if !device_encrypted {
        builder = builder
            .set_column_bloom_filter_enabled(device.clone(), true)
            .set_column_bloom_filter_fpp(device.clone(), BLOOM_FPP)
            .set_column_bloom_filter_ndv(device, distinct_devices(batch));
    }
    if let Some(props) = encryption.file_properties(dataset)? {
        builder = builder.with_file_encryption_properties(props);
    }
    Ok(builder.build())
}

/// Encodes `batch` (rows of `dataset`, already sorted) as a complete Parquet file.
pub fn encode(dataset: Dataset, batch: &RecordBatch, prov: &FileProvenance<'_>) -> Result<Vec<u8>> {
    encode_with(dataset, batch, prov, &[], &Encryption::none())
}

/// [`encode`] with extra key-value metadata (`feeder.*` keys of other tools, e.g. the
/// compactor's source ranges), encrypted when `encryption` lists `dataset`.
pub fn encode_with(
    dataset: Dataset,
    batch: &RecordBatch,
    prov: &FileProvenance<'_>,
    extra: &[(&str, String)],
    encryption: &Encryption,
) -> Result<Vec<u8>> {
    let props = properties(dataset, batch, prov, extra, encryption)?;
    let mut writer = ArrowWriter::try_new(Vec::new(), dataset.schema(), Some(props))?;
    writer.write(batch)?;
    Ok(writer.into_inner()?)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use feeder_proto::pipeline::CheckedFrame;
    use feeder_proto::v1::{Frame, Reading};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use prost::Message;

    use super::*;
    use crate::convert::checked_to_batches;

    fn sample() -> RecordBatch {
        let frames: Vec<CheckedFrame> = (0..20u64)
            .map(|i| CheckedFrame {
                device_id: format!("mtr-{}", i % 4),
                seq: i,
                payload: Frame {
                    readings: vec![Reading {
                        ts_ms: 1_700_000_000_000,
                        obis: "1-0:1.8.0".into(),
                        value: i as i64,
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
        c.batches[0].batch.clone()
    }

    #[test]
    fn file_round_trips_with_metadata_bloom_filter_and_page_index() {
        let batch = sample();
        assert_eq!(distinct_devices(&batch), 4);
        let prov = FileProvenance {
            topic: "feeder.checked",
            partition: 3,
            first_offset: 100,
            last_offset: 119,
            writer_id: "writer-7",
        };
        let bytes = Bytes::from(encode(Dataset::Readings, &batch, &prov).unwrap());

        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
        let md = reader.metadata().clone();
        let kv: Vec<(String, String)> = md
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .filter(|kv| kv.key.starts_with("feeder."))
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
            .collect();
        let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("feeder.topic"), Some("feeder.checked"));
        assert_eq!(get("feeder.partition"), Some("3"));
        assert_eq!(get("feeder.first_offset"), Some("100"));
        assert_eq!(get("feeder.last_offset"), Some("119"));
        assert_eq!(get("feeder.writer_id"), Some("writer-7"));
        assert_eq!(
            get("feeder.writer_version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(get("feeder.dataset"), Some("readings"));

        let rg = md.row_group(0);
        let cols: Vec<String> = rg
            .columns()
            .iter()
            .map(|c| c.column_path().string())
            .collect();
        let sorting = rg.sorting_columns().unwrap();
        assert_eq!(cols[sorting[0].column_idx as usize], "device_id");
        assert_eq!(cols[sorting[1].column_idx as usize], "ts");
        let dev = rg.column(0);
        assert_eq!(dev.column_path().string(), "device_id");
        assert!(
            dev.bloom_filter_offset().is_some(),
            "bloom filter on device_id"
        );
        assert!(rg.column(1).bloom_filter_offset().is_none());
        assert!(dev.column_index_offset().is_some(), "page index written");
        assert!(dev.offset_index_offset().is_some());
        assert!(dev.statistics().is_some());
        assert!(matches!(dev.compression(), Compression::ZSTD(_)));

        let back: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0], batch);

        // the bloom filter answers for a present device and (very likely) not an absent one
        let file = SerializedFileReader::new_with_options(
            bytes,
            parquet::file::serialized_reader::ReadOptionsBuilder::new()
                .with_reader_properties(
                    parquet::file::properties::ReaderProperties::builder()
                        .set_read_bloom_filter(true)
                        .build(),
                )
                .build(),
        )
        .unwrap();
        let rg = file.get_row_group(0).unwrap();
        let bloom = rg.get_column_bloom_filter(0).unwrap();
        assert!(bloom.check(&"mtr-2"));
        assert!(!bloom.check(&"not-a-device-in-this-file"));
    }
}
