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
//! # Atomicity
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
//! One group (at most `target_rows` rows plus one input file) at a time.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::convert::sort_and_split;
use crate::encryption::Encryption;
use crate::naming::{self, ParsedName, RangeName};
use crate::parquet_file::{self, FileProvenance};
use crate::schema::Dataset;
use crate::storage::mode;
use crate::{Error, Result};

/// Where staging directories live, under the data root (outside every dataset, so no
/// dataset glob can match them).
pub const STAGING_DIR: &str = ".feeder-compact";
/// Key-value metadata key listing the ranges a merged file holds.
pub const SOURCE_RANGES_KEY: &str = "feeder.source_ranges";
const MARKER_PREFIX: &str = ".feeder-compact-";

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

/// The topic-partitions with files in `<dataset>/date=D` (to look up committed offsets).
pub fn partitions_in(root: &Path, dataset: Dataset, date: NaiveDate) -> Result<Vec<(String, i32)>> {
    let mut tps: Vec<(String, i32)> = final_files(&root.join(naming::date_dir(dataset, date)))?
        .into_iter()
        .map(|(r, _)| (r.topic, r.partition))
        .collect();
    tps.sort();
    tps.dedup();
    Ok(tps)
}

/// Compacts `<root>/<dataset>/date=<date>`. `committed(topic, partition)` is the writer
/// group's committed offset (the next offset it will read); files whose range is not
/// entirely below it are left alone.
pub fn compact(
    root: &Path,
    dataset: Dataset,
    date: NaiveDate,
    committed: &dyn Fn(&str, i32) -> Option<i64>,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let live = root.join(naming::date_dir(dataset, date));
    let staging_root = root.join(STAGING_DIR);
    let mut report = CompactReport {
        leftovers_cleaned: finish_leftovers(&staging_root, &live, dataset, date)?,
        ..Default::default()
    };
    if !live.is_dir() {
        return Ok(report);
    }

    // Committed files per topic-partition, in offset order.
    let mut by_tp: BTreeMap<(String, i32), Vec<(RangeName, String)>> = BTreeMap::new();
    for (range, name) in final_files(&live)? {
        if committed(&range.topic, range.partition).is_some_and(|c| range.last < c) {
            by_tp
                .entry((range.topic.clone(), range.partition))
                .or_default()
                .push((range, name));
        } else {
            report.uncommitted += 1;
        }
    }
    let mut groups = Vec::new();
    for files in by_tp.into_values() {
        let mut group: Vec<(RangeName, String)> = Vec::new();
        let mut rows = 0u64;
        for (range, name) in files {
            let n = file_rows(&live.join(&name), &opts.encryption)?;
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
    if groups.is_empty() {
        return Ok(report);
    }

    // Build the new directory: links to what stays, plus the merged files.
    let nonce = format!("{:016x}", rand::random::<u64>());
    let staging = staging_root.join(format!("{}-{date}-{nonce}", dataset.name()));
    mode::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    sync_dir(&staging_root)?;
    let inputs: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.iter().map(|(_, n)| n.as_str()))
        .collect();
    for entry in fs::read_dir(&live).map_err(|e| Error::io(&live, e))? {
        let entry = entry.map_err(|e| Error::io(&live, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // temporary files belong to a write in progress in the live directory
        if inputs.contains(&name.as_str()) || name.starts_with('.') {
            continue;
        }
        let to = staging.join(&name);
        fs::hard_link(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
    }
    for group in &groups {
        let (name, rows) = merge(&live, &staging, dataset, date, group, opts)?;
        report.outputs.push(name);
        report.rows += rows;
        report.inputs += group.len();
    }
    write_synced(&staging.join(format!("{MARKER_PREFIX}{nonce}")), b"")?;
    sync_dir(&staging)?;

    // The swap: readers see the old set or the new set, nothing in between.
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        &staging,
        rustix::fs::CWD,
        &live,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| Error::io(&live, e.into()))?;
    sync_dir(&staging_root)?;
    if let Some(parent) = live.parent() {
        sync_dir(parent)?;
    }
    // `staging` now holds the old directory.
    report.late_files_moved = settle(&staging, &live)?;
    remove_leftover(&staging, &live, &nonce)?;
    sync_dir(&staging_root)?;
    Ok(report)
}

/// Merges one group of files of one topic-partition into `<staging>/<union name>`.
fn merge(
    live: &Path,
    staging: &Path,
    dataset: Dataset,
    date: NaiveDate,
    group: &[(RangeName, String)],
    opts: &CompactOptions,
) -> Result<(String, u64)> {
    let schema = dataset.schema();
    let mut batches = Vec::new();
    let mut sources = Vec::new();
    for (range, name) in group {
        let path = live.join(name);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            file,
            opts.encryption.reader_options()?,
        )?;
        // an input may itself be a merged file: keep its exact source ranges
        let listed = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == SOURCE_RANGES_KEY))
            .and_then(|kv| kv.value.clone());
        sources.push(listed.unwrap_or_else(|| format!("{}-{}", range.first, range.last)));
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
                "{}: files of date {date} hold rows of several dates",
                live.display()
            )));
        }
    };
    if part_date != date {
        return Err(Error::Storage(format!(
            "{}: rows belong to date {part_date}, not {date}",
            live.display()
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
    write_synced(&staging.join(&name), &bytes)?;
    Ok((name, sorted.num_rows() as u64))
}

/// After the swap (`old` holds the previous directory): moves into `live` every file the
/// writer added or replaced after the links were made. An input (merged away) is a file
/// missing from `live` whose range lies inside a `live` file's range of its partition.
fn settle(old: &Path, live: &Path) -> Result<usize> {
    let live_files = final_files(live)?;
    let inode = |p: &Path| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let mut moved = 0;
    for (range, name) in final_files(old)? {
        let (from, to) = (old.join(&name), live.join(&name));
        let move_it = match inode(&to) {
            Some(live_ino) => inode(&from) != Some(live_ino),
            None => !live_files.iter().any(|(r, _)| {
                r.topic == range.topic
                    && r.partition == range.partition
                    && r.first <= range.first
                    && range.last <= r.last
            }),
        };
        if move_it {
            fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
            moved += 1;
        }
    }
    if moved > 0 {
        sync_dir(live)?;
    }
    Ok(moved)
}

/// Removes a finished staging directory and the run's marker from `live`.
fn remove_leftover(staging: &Path, live: &Path, nonce: &str) -> Result<()> {
    fs::remove_dir_all(staging).map_err(|e| Error::io(staging, e))?;
    let marker = live.join(format!("{MARKER_PREFIX}{nonce}"));
    match fs::remove_file(&marker) {
        Ok(()) => sync_dir(live),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&marker, e)),
    }
}

/// Finishes (swap happened: the marker is in `live`) or discards (it did not) staging
/// directories an interrupted run left for this dataset and date.
fn finish_leftovers(
    staging_root: &Path,
    live: &Path,
    dataset: Dataset,
    date: NaiveDate,
) -> Result<usize> {
    let prefix = format!("{}-{date}-", dataset.name());
    let entries = match fs::read_dir(staging_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(staging_root, e)),
    };
    let mut cleaned = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(staging_root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(nonce) = name.strip_prefix(&prefix) else {
            continue;
        };
        if live.join(format!("{MARKER_PREFIX}{nonce}")).exists() {
            settle(&entry.path(), live)?;
        }
        remove_leftover(&entry.path(), live, nonce)?;
        cleaned += 1;
    }
    Ok(cleaned)
}

/// Final (visible, writer-named) files of a directory; empty if it does not exist.
fn final_files(dir: &Path) -> Result<Vec<(RangeName, String)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ParsedName::Final(range)) = naming::parse(&name) {
            out.push((range, name));
        }
    }
    out.sort();
    Ok(out)
}

fn file_rows(path: &Path, encryption: &Encryption) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader =
        ParquetRecordBatchReaderBuilder::try_new_with_options(file, encryption.reader_options()?)?;
    Ok(u64::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = mode::create_file(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
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
