//! Compaction on an object store (S3 and compatible): no rename, no directory, so no
//! swap. Each group's merged object is stored first (an S3 `PUT` is atomic: the object
//! appears whole or not at all), then its inputs are deleted.
//!
//! What a reader sees: between that `PUT` and the `DeleteObjects` request that removes
//! its inputs (one request per 1,000 inputs, [`Storage::delete_many`]), a reader that
//! lists the date's objects gets the merged object *and* some inputs, and counts their
//! rows twice.
//! That is why compaction runs on closed dates (the CronJob in `deploy/`), at an hour
//! when nobody queries them, and never on today's date. A reader that listed before the
//! `PUT` and fetches an input after its `DELETE` gets "not found" (retry; never a wrong
//! count), as on a local root.
//!
//! What a crash leaves: killed after a `PUT` and before its inputs' deletion, the merged object
//! and some of its inputs are both stored (the duplicate window above, held open until
//! the next run). The writer's recovery is unaffected: the merged object's name covers
//! its inputs' ranges, and recovery never writes a piece into a directory where such a
//! container holds it ([`crate::recovery::Container`]). The next run's first step finishes
//! the job: it deletes every file whose range is exactly a run of a merged object's
//! `feeder.source_ranges` (those rows are in the merged object), then plans as usual.
//! Killed before a `PUT` completes: nothing changed.
//!
//! One compactor per date directory at a time, as on a local root.

use chrono::NaiveDate;

use super::merge::{
    CompactOptions, CompactReport, Plan, SOURCE_RANGES_KEY, final_names, footer, merge, plan,
    source_ranges,
};
use crate::naming::{self, RangeName};
use crate::schema::Dataset;
use crate::storage::Storage;
use crate::{Error, Result};

/// Compacts `<dataset>/date=<date>` of `store` (any backend; meant for object stores,
/// where [`super::compact`]'s directory swap is impossible). `committed` as for
/// [`super::compact`].
pub fn compact_objects(
    store: &dyn Storage,
    dataset: Dataset,
    date: NaiveDate,
    committed: &dyn Fn(&str, i32) -> Option<i64>,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let dir = naming::date_dir(dataset, date);
    let mut report = CompactReport {
        leftovers_cleaned: finish_interrupted(store, &dir, opts)?,
        ..Default::default()
    };
    let Plan {
        groups,
        uncommitted,
    } = plan(
        store,
        &dir,
        final_names(store.list_dir(&dir)?),
        committed,
        opts,
    )?;
    report.uncommitted = uncommitted;
    for group in &groups {
        let merged = merge(store, &dir, dataset, date, group, opts)?;
        store.put(&dir, &merged.name, &merged.bytes)?;
        let inputs: Vec<&str> = group.iter().map(|(_, n)| n.as_str()).collect();
        store.delete_many(&dir, &inputs)?;
        report.outputs.push(merged.name);
        report.rows += merged.rows;
        report.inputs += group.len();
    }
    Ok(report)
}

/// Deletes the inputs an interrupted run left beside their merged object; returns how
/// many merged objects had some.
fn finish_interrupted(store: &dyn Storage, dir: &str, opts: &CompactOptions) -> Result<usize> {
    let files = final_names(store.list_dir(dir)?);
    let mut finished = 0;
    for (outer, outer_name) in &files {
        let inside: Vec<&(RangeName, String)> = files
            .iter()
            .filter(|(r, _)| {
                r != outer
                    && r.topic == outer.topic
                    && r.partition == outer.partition
                    && outer.first <= r.first
                    && r.last <= outer.last
            })
            .collect();
        if inside.is_empty() {
            continue;
        }
        let meta = footer(store, dir, outer_name, &opts.encryption)?;
        let Some(sources) = source_ranges(&meta) else {
            // not a merged file: leave both alone (recovery's business, not ours)
            continue;
        };
        let sources = parse_sources(&sources).ok_or_else(|| {
            Error::Storage(format!(
                "{}: {SOURCE_RANGES_KEY} {sources:?} is not first-last,...",
                store.locate(dir, outer_name).display()
            ))
        })?;
        let mut deleted = false;
        for (r, name) in inside {
            // exactly a run of the merged object's sources: its rows are all in there
            if sources.iter().any(|s| s.0 == r.first) && sources.iter().any(|s| s.1 == r.last) {
                store.delete(dir, name)?;
                deleted = true;
            }
        }
        finished += usize::from(deleted);
    }
    Ok(finished)
}

/// `first-last,first-last,...`.
fn parse_sources(text: &str) -> Option<Vec<(i64, i64)>> {
    text.split(',')
        .map(|r| {
            let (f, l) = r.split_once('-')?;
            Some((f.parse().ok()?, l.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_sources;

    #[test]
    fn source_ranges_parse() {
        assert_eq!(parse_sources("0-9,10-19"), Some(vec![(0, 9), (10, 19)]));
        assert_eq!(parse_sources("0-9,x"), None);
        assert_eq!(parse_sources(""), None);
    }
}
