//! Compaction (`feeder compact`): merges the small files of one closed `date=` directory
//! into large ones, without readers ever seeing a row twice or missing one, and without
//! breaking the writer's exactly-once recovery.
//!
//! # What is merged, and what the merged file is called
//!
//! Only files the writer has *committed* are merged: a range whose `last` is below the
//! consumer group's committed offset of its topic-partition is never rewritten by the
//! writer in normal operation. Files of one topic-partition, in offset order, are grouped
//! up to [`CompactOptions::target_rows`] rows, and each group of two or more becomes one
//! file named by the union of its ranges, `{topic}+{partition}+{first of the first}+{last
//! of the last}.parquet`, with the exact list of merged ranges in the key-value metadata
//! (`feeder.source_ranges`, `first-last,first-last,...`).
//!
//! That name keeps recovery exact even if the group's offsets are later rewound (expired
//! offsets, a reset): recovery cuts the union of all named ranges at every endpoint
//! (every endpoint is one the writer flushed at), replays those pieces with their own
//! boundaries, and writes nothing into a directory where a merged file already holds the
//! piece ([`crate::recovery::Container`], [`crate::flush::write_range_except`]).
//!
//! # Two ways to replace files
//!
//! Planning and merging are shared and read through [`Storage`]; how the merged files
//! replace their inputs depends on what the backend can do atomically:
//! - a local root: the directory swap below ([`compact`], `swap.rs`), readers never see
//!   a row twice;
//! - an object store (S3), which has no rename and no directory: new object first, then
//!   the inputs are deleted ([`compact_objects`], `objects.rs`), with a short window in
//!   which a reader may count rows twice (its docs say how short, and what a crash does).
//!
//! # Atomicity on a local root
//!
//! Replacing N files by one is not atomic on any filesystem if done file by file: after
//! the merged file appears and before the last input goes, a reader counts rows twice.
//! Instead the new directory content is built beside the data (hard links to every file
//! that stays, plus the merged files, all fsynced) and swapped with the live `date=`
//! directory in one `renameat2(RENAME_EXCHANGE)` (Linux; ext4, xfs, btrfs, tmpfs). A
//! reader that lists the directory sees either all old files or all new ones. What
//! remains:
//! - a reader that listed the old directory and opens an input *after* the swap gets
//!   "file not found" (an error it can retry, never a wrong count); files it had already
//!   opened stay readable;
//! - a file the writer adds to the directory (late data) between the linking and the
//!   swap is moved into the new directory right after the swap, so it is invisible for
//!   that moment; a write whose temporary file was created before the swap and renamed
//!   after it fails, and the writer replays that uncommitted range after a restart.
//!
//! A crash leaves the staging directory under `<root>/.feeder-compact/`; the next run for
//! the same dataset and date finishes or discards it (a marker file named after the run
//! tells whether the swap happened). One compactor per directory at a time.
//!
//! # Memory
//!
//! One group (at most `target_rows` rows plus one input file) at a time. Planning reads
//! only each input's footer (one ranged read of its last [`FOOTER_READ`] bytes).

mod objects;
mod swap;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub use self::objects::compact_objects;
pub use self::swap::{STAGING_DIR, compact};
use crate::convert::sort_and_split;
use crate::encryption::Encryption;
use crate::naming::{self, ParsedName, RangeName};
use crate::parquet_file::{self, FileProvenance};
use crate::schema::Dataset;
use crate::storage::{LocalFs, Storage};
use crate::{Error, Result};

/// Key-value metadata key listing the ranges a merged file holds.
pub const SOURCE_RANGES_KEY: &str = "feeder.source_ranges";
/// Bytes read from the end of a file to get its footer; a longer footer costs a second,
/// whole-file read.
pub const FOOTER_READ: u64 = 64 * 1024;

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

/// The dataset named `name` (`readings`, ...), if this writer produces it.
pub fn dataset_by_name(name: &str) -> Option<Dataset> {
    Dataset::ALL.into_iter().find(|d| d.name() == name)
}

/// The datasets `name` means: one dataset's name, or `all`.
pub fn datasets_by_name(name: &str) -> Option<Vec<Dataset>> {
    match name {
        "all" => Some(Dataset::ALL.to_vec()),
        _ => dataset_by_name(name).map(|d| vec![d]),
    }
}

/// The closed dates (before `today`, UTC) of the last `days` days, newest first. A daily
/// schedule compacts them all, so a run that failed is caught up by the next one (a date
/// already compacted costs a listing and a few footer reads).
pub fn closed_dates(today: NaiveDate, days: u32) -> Vec<NaiveDate> {
    today
        .iter_days()
        .rev()
        .skip(1)
        .take(usize::try_from(days).unwrap_or(usize::MAX))
        .collect()
}

/// Compacts `<dataset>/date=<date>` of `store` the way its backend allows: the directory
/// swap on a local root ([`compact`]), new objects first on an object store
/// ([`compact_objects`]).
pub fn compact_in(
    store: &dyn Storage,
    dataset: Dataset,
    date: NaiveDate,
    committed: &dyn Fn(&str, i32) -> Option<i64>,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    match store.local_root() {
        Some(root) => compact(root, dataset, date, committed, opts),
        None => compact_objects(store, dataset, date, committed, opts),
    }
}

/// The topic-partitions with files in `<root>/<dataset>/date=D` (to look up committed
/// offsets).
pub fn partitions_in(root: &Path, dataset: Dataset, date: NaiveDate) -> Result<Vec<(String, i32)>> {
    partitions_in_store(&LocalFs::existing(root), dataset, date)
}

/// The topic-partitions with files in `<dataset>/date=D` of `store`.
pub fn partitions_in_store(
    store: &dyn Storage,
    dataset: Dataset,
    date: NaiveDate,
) -> Result<Vec<(String, i32)>> {
    let dir = naming::date_dir(dataset, date);
    let mut tps: Vec<(String, i32)> = final_names(store.list_dir(&dir)?)
        .into_iter()
        .map(|(r, _)| (r.topic, r.partition))
        .collect();
    tps.sort();
    tps.dedup();
    Ok(tps)
}

/// The final (visible, writer-named) files among `names`, in range order.
fn final_names(names: Vec<String>) -> Vec<(RangeName, String)> {
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
struct Plan {
    /// Groups of two or more committed files of one topic-partition, in offset order.
    groups: Vec<Vec<(RangeName, String)>>,
    /// Files left alone because their range is not committed.
    uncommitted: usize,
}

/// Groups the committed files among `files` (final files of `dir`, in range order).
fn plan(
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
struct Merged {
    name: String,
    bytes: bytes::Bytes,
    rows: u64,
}

/// Merges one group of files of one topic-partition of `dir` into one file named by the
/// union of their ranges.
fn merge(
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
fn source_ranges(meta: &parquet::file::metadata::ParquetMetaData) -> Option<String> {
    meta.file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == SOURCE_RANGES_KEY))
        .and_then(|kv| kv.value.clone())
}

/// The footer of `<dir>/<name>`, read from its last [`FOOTER_READ`] bytes (the whole
/// file when the footer is longer).
fn footer(
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

fn file_rows(store: &dyn Storage, dir: &str, name: &str, encryption: &Encryption) -> Result<u64> {
    let meta = footer(store, dir, name, encryption)?;
    Ok(u64::try_from(meta.file_metadata().num_rows()).unwrap_or(0))
}

/// The writer group's committed offsets of `tps` (absent: nothing committed), read from
/// the broker without joining the group. Blocking.
pub fn committed_offsets(
    kafka: &feeder_kafka::KafkaConfig,
    group_id: &str,
    tps: &[(String, i32)],
    timeout: Duration,
) -> Result<HashMap<(String, i32), i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = kafka.consumer(group_id, "feeder-compact").create()?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in tps {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_dates_end_yesterday() {
        let d = |m, day| NaiveDate::from_ymd_opt(2024, m, day).unwrap();
        assert_eq!(closed_dates(d(3, 1), 3), [d(2, 29), d(2, 28), d(2, 27)]);
        assert!(closed_dates(d(3, 1), 0).is_empty());
    }

    #[test]
    fn all_means_every_dataset() {
        assert_eq!(datasets_by_name("all").unwrap(), Dataset::ALL);
        assert_eq!(datasets_by_name("readings").unwrap(), [Dataset::Readings]);
        assert!(datasets_by_name("nope").is_none());
    }
}
