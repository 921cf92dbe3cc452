//! The per-topic-partition buffer: decides, record by record, when a contiguous offset
//! range is complete and must be written, and which records are already durable.
//!
//! Pure logic (time is passed in), so every rule below is unit-tested without Kafka:
//! - a forced range (written by an earlier run, not committed) is flushed exactly at its
//!   `last` offset, whatever the thresholds say, and is never cut short: on revocation
//!   or shutdown its partial buffer is dropped, because writing it under another name
//!   would duplicate rows of the files already stored;
//! - records inside a covered range are skipped (their rows are already stored);
//! - otherwise a buffer flushes at `max_records`, `max_bytes`, or when its oldest record
//!   is `max_age` old, whichever first; buffered records that precede a durable range are
//!   flushed on their own before it;
//! - when the buffer knows its topic (`tracking_dates`), it also flushes before a record
//!   whose rows would take the distinct `date=` partitions of the buffer past
//!   `max_dates` (each is one file per dataset: device clocks must not fan one flush out
//!   to thousands of files), and right after a record that passes `max_dates` alone (a
//!   record's rows are never split). A forced range is replayed whole, as it was first
//!   written, whatever its dates.
//!
//! Memory: at most `max_records` records and `max_bytes` + one record of payload per
//! partition, except while replaying a forced range, which is as large as the flush that
//! wrote it (the limits in force then). The writer-wide cap (`cap.rs`) flushes buffers
//! early through [`PartitionBuffer::take_for_cap`], never one replaying a forced range.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::NaiveDate;

use crate::config::WriterConfig;
use crate::convert::record_dates;
use crate::record::{SourceRecord, TopicKind};
use crate::recovery::{DurableRange, RecoveryPlan};

/// Flush thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
    /// Distinct `date=` partitions one flush may write (when dates are tracked).
    pub max_dates: usize,
}

impl From<&WriterConfig> for Limits {
    fn from(c: &WriterConfig) -> Self {
        Self {
            max_records: c.flush_max_frames,
            max_bytes: c.flush_max_bytes,
            max_age: c.flush_max_age,
            max_dates: c.max_dates_per_flush,
        }
    }
}

/// Why a range was flushed (a metric label: a small fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// Reached the end of a range an earlier run wrote but did not commit.
    Forced,
    Records,
    Bytes,
    Age,
    /// Closed so that a durable range that follows keeps its own file.
    BeforeDurableRange,
    /// Flushed early: the writer's buffers together exceeded `max_buffered_bytes`.
    WriterBytes,
    /// Flushed early: the next record would take the flush past `max_dates` dates.
    WriterDates,
    Revoke,
    Shutdown,
}

impl FlushReason {
    pub fn name(self) -> &'static str {
        match self {
            FlushReason::Forced => "forced",
            FlushReason::Records => "records",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::BeforeDurableRange => "before_durable_range",
            FlushReason::WriterBytes => "writer_bytes",
            FlushReason::WriterDates => "writer_dates",
            FlushReason::Revoke => "revoke",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

/// A complete range to write: records of offsets `first..=last`, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub first: i64,
    pub last: i64,
    pub records: Vec<SourceRecord>,
    pub bytes: usize,
    pub reason: FlushReason,
}

/// What [`PartitionBuffer::offer`] did with a record.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offered {
    /// Ranges now complete, to be written (and committed) in this order.
    pub ready: Vec<Batch>,
    /// Records not buffered because their rows are already stored.
    pub skipped: usize,
}

#[derive(Debug)]
pub struct PartitionBuffer {
    limits: Limits,
    /// Durable ranges not yet passed, in offset order.
    durable: VecDeque<DurableRange>,
    records: Vec<SourceRecord>,
    bytes: usize,
    opened_at: Option<Instant>,
    /// `last` of the forced range being replayed into this buffer.
    forced_end: Option<i64>,
    last_offset: Option<i64>,
    /// The topic whose records are buffered, when dates are tracked.
    kind: Option<TopicKind>,
    /// Distinct partition dates of the buffered records' rows (tracked only).
    dates: BTreeSet<NaiveDate>,
}

impl PartitionBuffer {
    pub fn new(limits: Limits, plan: &RecoveryPlan) -> Self {
        Self {
            limits,
            durable: plan.ranges.iter().copied().collect(),
            records: Vec::new(),
            bytes: 0,
            opened_at: None,
            forced_end: None,
            last_offset: None,
            kind: None,
            dates: BTreeSet::new(),
        }
    }

    /// Tracks the dates of `kind`'s records against `max_dates` (decoding each record
    /// once more on arrival).
    pub fn tracking_dates(mut self, kind: TopicKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Distinct dates of the buffered rows (0 when not tracked).
    pub fn dates(&self) -> usize {
        self.dates.len()
    }

    /// True when `offset` is not after the last one offered: the consumer went back
    /// (an offset reset), so the partition must be planned again from storage.
    pub fn is_rewind(&self, offset: i64) -> bool {
        self.last_offset.is_some_and(|last| offset <= last)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Payload bytes buffered.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True while a forced range is being replayed: it must end exactly at its boundary.
    pub fn is_replaying(&self) -> bool {
        self.forced_end.is_some()
    }

    /// The buffer, flushed early for the writer-wide cap; `None` while replaying a forced
    /// range (cutting it short would duplicate stored rows) or when empty. The range is
    /// an ordinary flush boundary, named in its files, so recovery follows it later.
    pub fn take_for_cap(&mut self) -> Option<Batch> {
        if self.forced_end.is_some() {
            return None;
        }
        self.take(FlushReason::WriterBytes)
    }

    /// Takes a record; records must come in increasing offset order (see [`Self::is_rewind`]).
    pub fn offer(&mut self, rec: SourceRecord, now: Instant) -> Offered {
        let o = rec.offset;
        let mut out = Offered::default();
        self.last_offset = Some(o);

        // Ranges wholly before `o` can no longer match: offsets only grow.
        while let Some(r) = self.durable.front().copied().filter(|r| r.last < o) {
            if self.forced_end == Some(r.last) {
                // The range's last offset never arrived (deleted from the log): the stored
                // files hold these rows, and a shorter rewrite would duplicate them.
                tracing::warn!(
                    first = r.first,
                    last = r.last,
                    next = o,
                    "offsets of a range being replayed are gone; keeping the stored files"
                );
                out.skipped += self.drop_buffer();
            }
            self.durable.pop_front();
        }

        let covering = self.durable.front().copied().filter(|r| r.first <= o);
        let Some(range) = covering else {
            if let Some(kind) = self.kind {
                let mut dates = BTreeSet::new();
                record_dates(kind, &rec, self.limits.max_dates, &mut dates);
                let merged = self.dates.union(&dates).count();
                if !self.records.is_empty() && merged > self.limits.max_dates {
                    out.ready.extend(self.take(FlushReason::WriterDates));
                }
                self.dates.extend(dates);
            }
            self.push(rec, now);
            let reason = if self.dates.len() > self.limits.max_dates {
                Some(FlushReason::WriterDates)
            } else {
                self.threshold_reached(now)
            };
            if let Some(reason) = reason {
                out.ready.extend(self.take(reason));
            }
            return out;
        };

        let continuing = self.forced_end == Some(range.last);
        if !continuing && !self.records.is_empty() {
            out.ready.extend(self.take(FlushReason::BeforeDurableRange));
        }
        if continuing || (range.replay && o == range.first) {
            self.forced_end = Some(range.last);
            self.push(rec, now);
            if o == range.last {
                out.ready.extend(self.take(FlushReason::Forced));
                self.durable.pop_front();
            }
        } else {
            out.skipped += 1;
        }
        out
    }

    /// The buffer, if its oldest record is `max_age` old (never while replaying a range).
    pub fn take_if_due(&mut self, now: Instant) -> Option<Batch> {
        if self.forced_end.is_some() {
            return None;
        }
        match self.opened_at {
            Some(t) if now.saturating_duration_since(t) >= self.limits.max_age => {
                self.take(FlushReason::Age)
            }
            _ => None,
        }
    }

    /// Empties the buffer for revocation or shutdown: the buffered range to write, or
    /// `None`. A partly replayed forced range is dropped instead (returned count): it is
    /// not committed, and the next owner replays it whole.
    pub fn take_for_close(&mut self, reason: FlushReason) -> (Option<Batch>, usize) {
        if self.forced_end.is_some() {
            return (None, self.drop_buffer());
        }
        (self.take(reason), 0)
    }

    fn push(&mut self, rec: SourceRecord, now: Instant) {
        if self.records.is_empty() {
            self.opened_at = Some(now);
        }
        self.bytes += rec.size();
        self.records.push(rec);
    }

    fn threshold_reached(&self, now: Instant) -> Option<FlushReason> {
        if self.forced_end.is_some() {
            None
        } else if self.records.len() >= self.limits.max_records {
            Some(FlushReason::Records)
        } else if self.bytes >= self.limits.max_bytes {
            Some(FlushReason::Bytes)
        } else if self
            .opened_at
            .is_some_and(|t| now.saturating_duration_since(t) >= self.limits.max_age)
        {
            Some(FlushReason::Age)
        } else {
            None
        }
    }

    fn take(&mut self, reason: FlushReason) -> Option<Batch> {
        let records = std::mem::take(&mut self.records);
        let bytes = std::mem::take(&mut self.bytes);
        self.opened_at = None;
        self.forced_end = None;
        self.dates.clear();
        let first = records.first()?.offset;
        let last = records.last()?.offset;
        Some(Batch {
            first,
            last,
            records,
            bytes,
            reason,
        })
    }

    fn drop_buffer(&mut self) -> usize {
        let n = self.records.len();
        self.records.clear();
        self.bytes = 0;
        self.opened_at = None;
        self.forced_end = None;
        self.dates.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_records: 3,
        max_bytes: 1000,
        max_age: Duration::from_secs(5),
        max_dates: 64,
    };

    fn rec(offset: i64) -> SourceRecord {
        SourceRecord {
            offset,
            timestamp_ms: None,
            payload: Some(vec![0; 10]),
        }
    }

    fn ranges(ready: &[Batch]) -> Vec<(i64, i64, FlushReason)> {
        ready.iter().map(|b| (b.first, b.last, b.reason)).collect()
    }

    /// Offers `offsets`, returning every flushed range and the skipped count.
    fn feed(
        buf: &mut PartitionBuffer,
        offsets: impl IntoIterator<Item = i64>,
        now: Instant,
    ) -> (Vec<(i64, i64, FlushReason)>, usize) {
        let mut flushed = Vec::new();
        let mut skipped = 0;
        for o in offsets {
            let out = buf.offer(rec(o), now);
            flushed.extend(ranges(&out.ready));
            skipped += out.skipped;
        }
        (flushed, skipped)
    }

    #[test]
    fn flushes_at_record_byte_and_age_thresholds() {
        let t0 = Instant::now();
        let mut buf = PartitionBuffer::new(LIMITS, &RecoveryPlan::default());
        let (flushed, _) = feed(&mut buf, 0..7, t0);
        assert_eq!(
            flushed,
            [(0, 2, FlushReason::Records), (3, 5, FlushReason::Records)]
        );
        assert_eq!(buf.len(), 1);

        let mut big = PartitionBuffer::new(
            Limits {
                max_bytes: 25,
                ..LIMITS
            },
            &RecoveryPlan::default(),
        );
        let (flushed, _) = feed(&mut big, 10..13, t0);
        assert_eq!(flushed, [(10, 12, FlushReason::Records)]);
        let mut big = PartitionBuffer::new(
            Limits {
                max_bytes: 15,
                ..LIMITS
            },
            &RecoveryPlan::default(),
        );
        let (flushed, _) = feed(&mut big, 10..12, t0);
        assert_eq!(flushed, [(10, 11, FlushReason::Bytes)]);

        // age: from the timer, and on the next record
        assert!(buf.take_if_due(t0 + Duration::from_secs(4)).is_none());
        let b = buf.take_if_due(t0 + Duration::from_secs(5)).unwrap();
        assert_eq!((b.first, b.last, b.reason), (6, 6, FlushReason::Age));
        assert!(
            buf.take_if_due(t0 + Duration::from_secs(60)).is_none(),
            "empty buffers never flush"
        );
        buf.offer(rec(7), t0);
        let out = buf.offer(rec(8), t0 + Duration::from_secs(6));
        assert_eq!(ranges(&out.ready), [(7, 8, FlushReason::Age)]);
    }

    #[test]
    fn forced_ranges_flush_exactly_at_their_boundaries() {
        let t0 = Instant::now();
        // an earlier run wrote 100..=104 (5 records, its limits were larger) and 105..=105
        let plan = RecoveryPlan::from_ranges(100, [(0, 99), (100, 104), (105, 105)]);
        assert_eq!(plan.forced_boundaries(), [104, 105]);
        let mut buf = PartitionBuffer::new(LIMITS, &plan);
        let (flushed, skipped) = feed(&mut buf, 100..110, t0);
        assert_eq!(
            flushed,
            [
                (100, 104, FlushReason::Forced),
                (105, 105, FlushReason::Forced),
                (106, 108, FlushReason::Records)
            ]
        );
        assert_eq!(skipped, 0);
    }

    #[test]
    fn a_forced_range_is_never_cut_short() {
        let t0 = Instant::now();
        let plan = RecoveryPlan::from_ranges(100, [(100, 104)]);
        let mut buf = PartitionBuffer::new(LIMITS, &plan);
        feed(&mut buf, 100..103, t0);
        assert!(buf.take_if_due(t0 + Duration::from_secs(3600)).is_none());
        let (batch, dropped) = buf.take_for_close(FlushReason::Revoke);
        assert_eq!((batch, dropped), (None, 3));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_gap_in_offsets_is_part_of_the_range() {
        // transaction markers and aborted records leave offsets that never arrive
        let t0 = Instant::now();
        let plan = RecoveryPlan::from_ranges(10, [(10, 20)]);
        let mut buf = PartitionBuffer::new(LIMITS, &plan);
        let (flushed, _) = feed(&mut buf, [10, 12, 15, 20, 22], t0);
        assert_eq!(flushed, [(10, 20, FlushReason::Forced)]);
        let (b, _) = buf.take_for_close(FlushReason::Shutdown);
        let b = b.unwrap();
        assert_eq!((b.first, b.last, b.reason), (22, 22, FlushReason::Shutdown));
    }

    #[test]
    fn covered_ranges_are_skipped_and_preceding_records_closed_first() {
        let t0 = Instant::now();
        // resumed inside 100..=109: its remaining records are stored already
        let plan = RecoveryPlan::from_ranges(105, [(100, 109), (110, 111)]);
        let mut buf = PartitionBuffer::new(LIMITS, &plan);
        let (flushed, skipped) = feed(&mut buf, 105..113, t0);
        assert_eq!(skipped, 5);
        assert_eq!(flushed, [(110, 111, FlushReason::Forced)]);
        assert_eq!(buf.len(), 1);

        // records before a durable range that starts later get their own file
        let plan = RecoveryPlan::from_ranges(50, [(53, 54)]);
        let mut buf = PartitionBuffer::new(LIMITS, &plan);
        let (flushed, _) = feed(&mut buf, [50, 52, 53, 54], t0);
        assert_eq!(
            flushed,
            [
                (50, 52, FlushReason::BeforeDurableRange),
                (53, 54, FlushReason::Forced)
            ]
        );
    }

    #[test]
    fn a_vanished_boundary_keeps_the_stored_files() {
        let t0 = Instant::now();
        let plan = RecoveryPlan::from_ranges(10, [(10, 14)]);
        let mut buf = PartitionBuffer::new(LIMITS, &plan);
        let (flushed, skipped) = feed(&mut buf, [10, 11, 30], t0);
        assert!(flushed.is_empty());
        assert_eq!(skipped, 2);
        assert_eq!(buf.len(), 1);
    }

    #[test]
    fn the_cap_takes_ordinary_buffers_but_never_a_replay() {
        let t0 = Instant::now();
        let mut buf = PartitionBuffer::new(LIMITS, &RecoveryPlan::default());
        assert!(buf.take_for_cap().is_none(), "empty");
        feed(&mut buf, [4, 5], t0);
        assert_eq!(buf.bytes(), 20);
        let b = buf.take_for_cap().unwrap();
        assert_eq!(
            (b.first, b.last, b.reason),
            (4, 5, FlushReason::WriterBytes)
        );
        assert_eq!((buf.bytes(), buf.len()), (0, 0));

        let plan = RecoveryPlan::from_ranges(100, [(100, 104)]);
        let mut buf = PartitionBuffer::new(LIMITS, &plan);
        feed(&mut buf, 100..102, t0);
        assert!(buf.is_replaying());
        assert!(buf.take_for_cap().is_none());
        assert_eq!(buf.len(), 2, "the replay stays whole");
        let (flushed, _) = feed(&mut buf, 102..105, t0);
        assert_eq!(flushed, [(100, 104, FlushReason::Forced)]);
        assert!(!buf.is_replaying());
    }

    #[test]
    fn rewinds_are_detected() {
        let mut buf = PartitionBuffer::new(LIMITS, &RecoveryPlan::default());
        assert!(!buf.is_rewind(0));
        buf.offer(rec(5), Instant::now());
        assert!(buf.is_rewind(5) && buf.is_rewind(4));
        assert!(!buf.is_rewind(6));
    }

    /// A checked frame at offset `o` whose one reading is dated `day` days after the epoch.
    fn dated(o: i64, day: i64) -> SourceRecord {
        use feeder_proto::pipeline::CheckedFrame;
        use feeder_proto::v1::{Frame, Reading};
        use prost::Message;
        let ms = day * 86_400_000;
        let frame = Frame {
            readings: vec![Reading {
                ts_ms: ms,
                ..Default::default()
            }],
            ..Default::default()
        };
        let cf = CheckedFrame {
            device_id: "mtr-1".into(),
            received_at_ms: ms,
            payload: frame.encode_to_vec().into(),
            ..Default::default()
        };
        SourceRecord {
            offset: o,
            timestamp_ms: None,
            payload: Some(cf.encode_to_vec()),
        }
    }

    /// Device clocks spread over many dates: a flush never writes more than `max_dates`
    /// date partitions, records of a date already buffered never cut it, and a record
    /// that alone passes the cap is flushed on its own.
    #[test]
    fn a_flush_spans_at_most_max_dates() {
        let t0 = Instant::now();
        let limits = Limits {
            max_records: 1000,
            max_dates: 3,
            ..LIMITS
        };
        let mut buf = PartitionBuffer::new(limits, &RecoveryPlan::default())
            .tracking_dates(TopicKind::Checked);
        let mut flushed = Vec::new();
        // days 0,0,1,2 fit; 3 does not; then 3,3,4,5 fit; 6 does not
        for (o, day) in [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 3),
            (5, 3),
            (6, 4),
            (7, 5),
            (8, 6),
        ] {
            flushed.extend(ranges(&buf.offer(dated(o, day), t0).ready));
        }
        assert_eq!(
            flushed,
            [
                (0, 3, FlushReason::WriterDates),
                (4, 7, FlushReason::WriterDates)
            ]
        );
        assert_eq!((buf.len(), buf.dates()), (1, 1));

        // a frame whose readings span 10 dates alone: written by itself, at once
        use feeder_proto::pipeline::CheckedFrame;
        use feeder_proto::v1::{Frame, Reading};
        use prost::Message;
        let frame = Frame {
            readings: (0..10)
                .map(|d| Reading {
                    ts_ms: (100 + d) * 86_400_000,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let wide = CheckedFrame {
            device_id: "mtr-1".into(),
            received_at_ms: 100 * 86_400_000,
            payload: frame.encode_to_vec().into(),
            ..Default::default()
        };
        let out = buf.offer(
            SourceRecord {
                offset: 9,
                timestamp_ms: None,
                payload: Some(wide.encode_to_vec()),
            },
            t0,
        );
        assert_eq!(
            ranges(&out.ready),
            [
                (8, 8, FlushReason::WriterDates),
                (9, 9, FlushReason::WriterDates)
            ]
        );
        assert!(buf.is_empty() && buf.dates() == 0);
    }

    /// A forced range is replayed whole whatever its dates: it was written by a run with
    /// other limits (or none), and rewriting it under another name would duplicate rows.
    #[test]
    fn a_forced_range_ignores_the_date_cap() {
        let t0 = Instant::now();
        let limits = Limits {
            max_records: 1000,
            max_dates: 2,
            ..LIMITS
        };
        let plan = RecoveryPlan::from_ranges(0, [(0, 5)]);
        let mut buf = PartitionBuffer::new(limits, &plan).tracking_dates(TopicKind::Checked);
        let mut flushed = Vec::new();
        for o in 0..9 {
            flushed.extend(ranges(&buf.offer(dated(o, o), t0).ready));
        }
        assert_eq!(
            flushed,
            [
                (0, 5, FlushReason::Forced),
                (6, 7, FlushReason::WriterDates)
            ]
        );
    }
}
