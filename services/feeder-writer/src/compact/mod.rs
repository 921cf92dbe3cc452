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
mod merge;
mod objects;
mod swap;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::NaiveDate;

use self::merge::final_names;
pub use self::merge::{CompactOptions, CompactReport, FOOTER_READ, SOURCE_RANGES_KEY};
pub use self::objects::compact_objects;
pub use self::swap::{STAGING_DIR, compact};
use crate::schema::Dataset;
use crate::storage::{LocalFs, Storage};
use crate::{Result, naming};

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
