//! What compaction merges and how, whatever the backend: its settings and report, the
//! grouping of a directory's committed files (footers only), and the merge of one group
//! into the bytes of one file. `swap.rs` and `objects.rs` put those bytes in place.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::convert::sort_and_split;
use crate::encryption::Encryption;
use crate::naming::{self, ParsedName, RangeName};
use crate::parquet_file::{self, FileProvenance};
use crate::schema::Dataset;
use crate::storage::Storage;
use crate::{Error, Result};

/// Key-value metadata key listing the ranges a merged file holds.
pub const SOURCE_RANGES_KEY: &str = "feeder.source_ranges";
/// Bytes read from the end of a file to get its footer. The writer's footers are 2-3 KiB
/// (1.9 KiB for `frames`, 2.8 KiB for `readings` and `telematics`, measured on `feeder
/// demo` output with pyarrow's `serialized_size`); a longer one costs a second,
/// whole-file read.
pub const FOOTER_READ: u64 = 16 * 1024;

/// Compaction settings.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Rows per merged file (a group closes when the next file would exceed it).
    pub target_rows: u64,
    /// Recorded as `feeder.writer_id` of merged files.
    pub compactor_id: String,
    /// Keys to read encrypted inputs; merged files of a dataset the key file lists are
    /// encrypted again (fresh data keys), so compaction never decrypts a dataset at rest.
    pub encryption: Encryption,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            target_rows: 2_000_000,
            compactor_id: "compactor".into(),
            encryption: Encryption::none(),
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Files merged away.
    pub inputs: usize,
    /// Names of the merged files written.
    pub outputs: Vec<String>,
    /// Rows in the merged files.
    pub rows: u64,
    /// Files left alone because their range is not committed (or its partition unknown).
    pub uncommitted: usize,
    /// Files that appeared during the swap and were moved into the new directory.
    pub late_files_moved: usize,
    /// Staging directories of earlier interrupted runs that were finished or discarded.
    pub leftovers_cleaned: usize,
}

impl std::fmt::Display for CompactReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "merged {} files ({} rows) into {}; left {} uncommitted; moved {} late; cleaned {} interrupted runs",
            self.inputs,
            self.rows,
            self.outputs.len(),
            self.uncommitted,
            self.late_files_moved,
            self.leftovers_cleaned
        )?;
        for name in &self.outputs {
            writeln!(f, "  {name}")?;
        }
        Ok(())
    }
}

/// The final (visible, writer-named) files among `names`, in range order.
pub(super) fn final_names(names: Vec<String>) -> Vec<(RangeName, String)> {
    let mut out: Vec<(RangeName, String)> = names
        .into_iter()
        .filter_map(|name| match naming::parse(&name) {
            Some(ParsedName::Final(range)) => Some((range, name)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// What to merge in one directory.
pub(super) struct Plan {
    /// Groups of two or more committed files of one topic-partition, in offset order.
    pub groups: Vec<Vec<(RangeName, String)>>,
    /// Files left alone because their range is not committed.
    pub uncommitted: usize,
}

/// Groups the committed files among `files` (final files of `dir`, in range order).
pub(super) fn plan(
    store: &dyn Storage,
    dir: &str,
    files: Vec<(RangeName, String)>,
    committed: &dyn Fn(&str, i32) -> Option<i64>,
    opts: &CompactOptions,
) -> Result<Plan> {
    let mut uncommitted = 0;
    let mut by_tp: BTreeMap<(String, i32), Vec<(RangeName, String)>> = BTreeMap::new();
    for (range, name) in files {
        if committed(&range.topic, range.partition).is_some_and(|c| range.last < c) {
            by_tp
                .entry((range.topic.clone(), range.partition))
                .or_default()
                .push((range, name));
        } else {
            uncommitted += 1;
        }
    }
    let mut groups = Vec::new();
    for files in by_tp.into_values() {
        let mut group: Vec<(RangeName, String)> = Vec::new();
        let mut rows = 0u64;
        for (range, name) in files {
            let n = file_rows(store, dir, &name, &opts.encryption)?;
            if !group.is_empty() && rows + n > opts.target_rows {
                groups.push(std::mem::take(&mut group));
                rows = 0;
            }
            rows += n;
            group.push((range, name));
        }
        groups.push(group);
    }
    groups.retain(|g| g.len() >= 2);
    Ok(Plan {
        groups,
        uncommitted,
    })
}

/// One merged file, not yet stored.
pub(super) struct Merged {
    pub name: String,
    pub bytes: bytes::Bytes,
    pub rows: u64,
}

/// Merges one group of files of one topic-partition of `dir` into one file named by the
/// union of their ranges.
pub(super) fn merge(
    store: &dyn Storage,
    dir: &str,
    dataset: Dataset,
    date: NaiveDate,
    group: &[(RangeName, String)],
    opts: &CompactOptions,
) -> Result<Merged> {
    let schema = dataset.schema();
    let mut batches = Vec::new();
    let mut sources = Vec::new();
    for (range, name) in group {
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            store.get(dir, name)?,
            opts.encryption.reader_options()?,
        )?;
        // an input may itself be a merged file: keep its exact source ranges
        sources.push(
            source_ranges(builder.metadata())
                .unwrap_or_else(|| format!("{}-{}", range.first, range.last)),
        );
        for batch in builder.build()? {
            let batch = batch?;
            batches.push(RecordBatch::try_new(
                schema.clone(),
                batch.columns().to_vec(),
            )?);
        }
    }
    let all = arrow::compute::concat_batches(&schema, &batches)?;
    drop(batches);
    // Inputs are in offset order and the sort is stable: rows that tie keep frame order,
    // exactly as one flush of the whole union would have ordered them.
    let mut parts = sort_and_split(dataset, &all)?;
    drop(all);
    let (part_date, sorted) = match (parts.pop(), parts.is_empty()) {
        (Some(p), true) => p,
        _ => {
            return Err(Error::Storage(format!(
                "{dir}: files of date {date} hold rows of several dates"
            )));
        }
    };
    if part_date != date {
        return Err(Error::Storage(format!(
            "{dir}: rows belong to date {part_date}, not {date}"
        )));
    }
    // Non-empty group: the first and last entries exist (callers keep groups of >= 2).
    let (first, last) = match (group.first(), group.last()) {
        (Some((f, _)), Some((l, _))) => (f, l),
        _ => return Err(Error::Storage("empty compaction group".into())),
    };
    let name = naming::file_name(&first.topic, first.partition, first.first, last.last);
    let prov = FileProvenance {
        topic: &first.topic,
        partition: first.partition,
        first_offset: first.first,
        last_offset: last.last,
        writer_id: &opts.compactor_id,
    };
    let bytes = parquet_file::encode_with(
        dataset,
        &sorted,
        &prov,
        &[(SOURCE_RANGES_KEY, sources.join(","))],
        &opts.encryption,
    )?;
    Ok(Merged {
        name,
        bytes: bytes.into(),
        rows: sorted.num_rows() as u64,
    })
}

/// The `feeder.source_ranges` of a merged file's metadata.
pub(super) fn source_ranges(meta: &parquet::file::metadata::ParquetMetaData) -> Option<String> {
    meta.file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == SOURCE_RANGES_KEY))
        .and_then(|kv| kv.value.clone())
}

/// The footer of `<dir>/<name>`, read from its last [`FOOTER_READ`] bytes (the whole
/// file when the footer is longer).
pub(super) fn footer(
    store: &dyn Storage,
    dir: &str,
    name: &str,
    encryption: &Encryption,
) -> Result<std::sync::Arc<parquet::file::metadata::ParquetMetaData>> {
    let tail = store.get_tail(dir, name, FOOTER_READ)?;
    let whole = tail.is_whole();
    match ParquetRecordBatchReaderBuilder::try_new_with_options(tail, encryption.reader_options()?)
    {
        Ok(b) => Ok(b.metadata().clone()),
        Err(_) if !whole => Ok(ParquetRecordBatchReaderBuilder::try_new_with_options(
            store.get(dir, name)?,
            encryption.reader_options()?,
        )?
        .metadata()
        .clone()),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn file_rows(
    store: &dyn Storage,
    dir: &str,
    name: &str,
    encryption: &Encryption,
) -> Result<u64> {
    let meta = footer(store, dir, name, encryption)?;
    Ok(u64::try_from(meta.file_metadata().num_rows()).unwrap_or(0))
}
