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
//! # Compacted files
//!
//! `feeder compact` replaces a directory's files of one partition by one file named by
//! the union of their ranges ([`crate::compact`]), so files of one partition may overlap:
//! the frames of range `[100, 199]` are still in `frames/date=D/…+100+199.parquet` while
//! its readings are inside `readings/date=D/…+0+299.parquet`. Every name's endpoints are
//! endpoints of ranges the writer flushed, so cutting the union of all named ranges at
//! every endpoint gives pieces that are whole flushed ranges (or unions of them); those
//! pieces are the durable ranges above. A file whose range spans several pieces is a
//! [`Container`]: replaying a piece writes every (dataset, date) file of it except into
//! directories where a container already holds the piece's rows ([`crate::flush`]).
//!
//! The plan also carries the zombie-fence token in force at `C`, from the markers of
//! [`crate::fences`].
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
    /// Named ranges that span several pieces (compacted files), counted once per range.
    pub containing_ranges: usize,
    /// Files whose range spans several pieces and ends at or after `C`, by directory.
    pub containers: Vec<Container>,
    /// The zombie-fence token in force at `C` ([`crate::fences`]).
    pub fence: i64,
}

/// A file holding the rows of several pieces (a compacted file): a replayed piece inside
/// `[first, last]` must not be written again into `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// `<dataset>/date=YYYY-MM-DD`.
    pub dir: String,
    pub first: i64,
    pub last: i64,
}

impl Container {
    /// True when a range `[first, last]` written into `dir` is already inside this file.
    pub fn holds(&self, dir: &str, first: i64, last: i64) -> bool {
        self.dir == dir
            && self.first <= first
            && last <= self.last
            && (self.first, self.last) != (first, last)
    }
}

/// Cuts the union of `ranges` at every range's endpoints: sorted, disjoint pieces, each
/// covered by at least one range and split by none.
pub fn pieces(ranges: impl IntoIterator<Item = (i64, i64)>) -> Vec<(i64, i64)> {
    // +1 where a range starts, -1 just after it ends
    let mut delta: BTreeMap<i64, i64> = BTreeMap::new();
    for (first, last) in ranges {
        *delta.entry(first).or_default() += 1;
        *delta.entry(last.saturating_add(1)).or_default() -= 1;
    }
    let mut out = Vec::new();
    let mut active = 0;
    let mut iter = delta.into_iter().peekable();
    while let Some((at, d)) = iter.next() {
        active += d;
        if let Some(&(next, _)) = iter.peek()
            && active > 0
        {
            out.push((at, next - 1));
        }
    }
    out
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

    /// Classifies the pieces of the named `(first, last)` ranges against `resume_from`
    /// (pure; no I/O). Ranges that span several pieces are counted in
    /// `containing_ranges`; `containers` is left to the caller, which knows directories.
    pub fn from_ranges(resume_from: i64, ranges: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let mut distinct: Vec<(i64, i64)> = ranges.into_iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let pieces = pieces(distinct.iter().copied());
        let mut plan = RecoveryPlan {
            resume_from,
            containing_ranges: distinct
                .iter()
                .filter(|r| pieces.binary_search(r).is_err())
                .count(),
            ..Default::default()
        };
        for (first, last) in pieces {
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
    let mut named = Vec::new();
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
                named.push((listed.dir, range.first, range.last));
            }
        }
    }
    // Safe to delete: this writer owns the partition now, and a temporary file is never
    // renamed by anyone but the `put` that created it, which has ended.
    for t in &temps {
        storage.delete(&t.dir, &t.name)?;
    }
    let mut plan = RecoveryPlan::from_ranges(resume_from, ranges);
    let pieces: Vec<(i64, i64)> = plan.ranges.iter().map(|r| (r.first, r.last)).collect();
    plan.containers = named
        .into_iter()
        .filter(|&(_, first, last)| {
            last >= resume_from && pieces.binary_search(&(first, last)).is_err()
        })
        .map(|(dir, first, last)| Container { dir, first, last })
        .collect();
    plan.stale_temp_removed = temps.len();
    plan.fence = crate::fences::token_before(storage, topic, partition, resume_from)?;
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
    fn compacted_ranges_are_cut_into_the_flushed_pieces() {
        // frames kept the flushed ranges, readings were compacted into (0, 299), and a
        // second directory into (100, 399): every endpoint is a flushed boundary
        let files = [
            (0, 99),
            (100, 199),
            (200, 299),
            (0, 299),
            (100, 399),
            (300, 399),
        ];
        assert_eq!(pieces(files), [(0, 99), (100, 199), (200, 299), (300, 399)]);
        let plan = RecoveryPlan::from_ranges(0, files);
        assert_eq!(plan.forced_boundaries(), [99, 199, 299, 399]);
        assert_eq!(plan.containing_ranges, 2);
        // a compacted file with no flushed range left elsewhere is one piece
        let plan = RecoveryPlan::from_ranges(150, [(0, 299), (300, 310)]);
        assert_eq!(plan.ranges, [r(0, 299, false), r(300, 310, true)]);
        assert_eq!(plan.containing_ranges, 0);
        // disjoint and gapped ranges stay as they are
        assert_eq!(pieces([(0, 3), (10, 12)]), [(0, 3), (10, 12)]);
        assert!(pieces([]).is_empty());
    }

    #[test]
    fn containers_hold_strictly_inner_ranges_of_their_directory() {
        let c = Container {
            dir: "readings/date=2024-01-01".into(),
            first: 0,
            last: 299,
        };
        assert!(c.holds("readings/date=2024-01-01", 100, 199));
        assert!(
            !c.holds("readings/date=2024-01-01", 0, 299),
            "same name: replace"
        );
        assert!(!c.holds("frames/date=2024-01-01", 100, 199));
        assert!(!c.holds("readings/date=2024-01-01", 250, 310));
    }
}
