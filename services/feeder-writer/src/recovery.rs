//! What storage says about a topic-partition when the writer (re)gains it: which offset
//! ranges are already in files, which of those must be rewritten identically, and which
//! temporary files are debris of an interrupted write.
//!
//! Given `C`, the offset of the first record received after assignment (the committed
//! position), each distinct range `[first, last]` named by the partition's files is:
//! - **committed** if `last < C`: never touched again (no record at or below it arrives
//!   in this assignment; a rewind is handled by planning again with the new `C`);
//! - **forced** if `first >= C`: a flush wrote some or all of its files but did not
//!   commit. The buffer must flush exactly at `last`, so the same name is written again
//!   with the same rows, atomically replacing what exists and adding what a crash left
//!   unwritten;
//! - **covered** if `first < C <= last`: the start of the range is no longer readable
//!   (retention, or a reset into the middle of it), so it cannot be reproduced; its
//!   files already hold every row of it, so its remaining records are skipped.
//!
//! Scanning lists every date directory of every dataset, so its cost grows with the
//! number of files kept; it runs once per partition per assignment.

use std::collections::BTreeMap;

use crate::Result;
use crate::naming::{self, ParsedName};
use crate::schema::Dataset;
use crate::storage::Storage;

/// A range present in storage that still matters for this assignment (`last >= C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableRange {
    pub first: i64,
    pub last: i64,
    /// True for a forced range (rewrite it identically), false for a covered one (skip).
    pub replay: bool,
}

/// The recovery facts for one topic-partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// `C`: the first offset received after assignment.
    pub resume_from: i64,
    /// Ranges with `last >= C`, sorted by offset and non-overlapping.
    pub ranges: Vec<DurableRange>,
    /// Distinct committed ranges found (`last < C`).
    pub committed_ranges: usize,
    /// Temporary files of this topic-partition that were removed.
    pub stale_temp_removed: usize,
    /// Ranges that overlapped an earlier one and were ignored (never produced by this
    /// writer; reported so an operator can look).
    pub overlapping_ignored: usize,
}

impl RecoveryPlan {
    /// The offsets at which the buffer must flush: `last` of every forced range.
    pub fn forced_boundaries(&self) -> Vec<i64> {
        self.ranges
            .iter()
            .filter(|r| r.replay)
            .map(|r| r.last)
            .collect()
    }

    /// Classifies distinct `(first, last)` ranges against `resume_from` (pure; no I/O).
    pub fn from_ranges(resume_from: i64, ranges: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let distinct: BTreeMap<i64, i64> =
            ranges.into_iter().fold(BTreeMap::new(), |mut m, (f, l)| {
                // same first, different last (never written by this writer): keep the longer
                let e = m.entry(f).or_insert(l);
                *e = (*e).max(l);
                m
            });
        let mut plan = RecoveryPlan {
            resume_from,
            ..Default::default()
        };
        let mut end_of_previous: Option<i64> = None;
        for (first, last) in distinct {
            if end_of_previous.is_some_and(|end| first <= end) {
                plan.overlapping_ignored += 1;
                continue;
            }
            end_of_previous = Some(last);
            if last < resume_from {
                plan.committed_ranges += 1;
            } else {
                plan.ranges.push(DurableRange {
                    first,
                    last,
                    replay: first >= resume_from,
                });
            }
        }
        plan
    }
}

/// Scans storage for `topic`/`partition`, deletes its stale temporary files, and plans
/// against `resume_from` (the first offset received). Blocking I/O.
pub fn recover(
    storage: &dyn Storage,
    topic: &str,
    partition: i32,
    resume_from: i64,
) -> Result<RecoveryPlan> {
    let mut ranges = Vec::new();
    let mut temps = Vec::new();
    for dataset in Dataset::ALL {
        for listed in storage.list(dataset)? {
            let (range, temp) = match naming::parse(&listed.name) {
                Some(ParsedName::Final(r)) => (r, false),
                Some(ParsedName::Temp(r)) => (r, true),
                None => continue,
            };
            if range.topic != topic || range.partition != partition {
                continue;
            }
            if temp {
                temps.push(listed);
            } else {
                ranges.push((range.first, range.last));
            }
        }
    }
    // Safe to delete: this writer owns the partition now, and a temporary file is never
    // renamed by anyone but the `put` that created it, which has ended.
    for t in &temps {
        storage.delete(&t.dir, &t.name)?;
    }
    let mut plan = RecoveryPlan::from_ranges(resume_from, ranges);
    plan.stale_temp_removed = temps.len();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: i64, last: i64, replay: bool) -> DurableRange {
        DurableRange {
            first,
            last,
            replay,
        }
    }

    #[test]
    fn classifies_committed_forced_and_covered_ranges() {
        // the same range appears once per dataset/date file: duplicates collapse
        let files = [
            (0, 99),
            (100, 199),
            (100, 199),
            (200, 349),
            (350, 400),
            (0, 99),
        ];
        let plan = RecoveryPlan::from_ranges(200, files);
        assert_eq!(plan.committed_ranges, 2);
        assert_eq!(plan.ranges, [r(200, 349, true), r(350, 400, true)]);
        assert_eq!(plan.forced_boundaries(), [349, 400]);

        // resuming inside a range: it is covered (skipped), later ones forced
        let plan = RecoveryPlan::from_ranges(150, files);
        assert_eq!(
            plan.ranges,
            [r(100, 199, false), r(200, 349, true), r(350, 400, true)]
        );
        assert_eq!(plan.forced_boundaries(), [349, 400]);

        // everything committed
        let plan = RecoveryPlan::from_ranges(401, files);
        assert!(plan.ranges.is_empty());
        assert_eq!(plan.committed_ranges, 4);

        // a rewind to 0 forces every range
        let plan = RecoveryPlan::from_ranges(0, files);
        assert_eq!(plan.forced_boundaries(), [99, 199, 349, 400]);
    }

    #[test]
    fn overlapping_ranges_are_reported_not_trusted() {
        let plan = RecoveryPlan::from_ranges(0, [(0, 10), (5, 20), (0, 3), (21, 30)]);
        assert_eq!(plan.ranges, [r(0, 10, true), r(21, 30, true)]);
        assert_eq!(plan.overlapping_ignored, 1);
    }
}
