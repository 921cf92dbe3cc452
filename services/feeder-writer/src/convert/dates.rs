//! The `date=` partitions one record's rows land in, known before conversion, so a buffer
//! can stop growing before a flush would write one file into each of thousands of date
//! directories (device clocks are the device's to choose).
//!
//! Mirrors the conversion (`mod.rs`, `anomalies.rs`) row source by row source: readings,
//! samples and events by their `ts`, the `frames` row by `received_at`, quarantine rows
//! by `received_at` (an undecodable record by its log timestamp), anomalies by `ts_from`,
//! estimates (carried by checked frames) by their `ts`.
//! A mismatch would only move a flush boundary, never a row: boundaries are recorded in
//! file names, which is all recovery follows.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use feeder_core::validate_device_id;
use feeder_proto::pipeline::{Anomaly, CheckedFrame, QuarantinedFrame};
use prost::Message;

use super::partition_date;
use crate::record::{SourceRecord, TopicKind};

/// Adds the partition dates of `rec`'s rows to `dates`, stopping once `dates` holds more
/// than `limit` (the caller flushes such a record alone; the exact count no longer matters).
pub fn record_dates(
    kind: TopicKind,
    rec: &SourceRecord,
    limit: usize,
    dates: &mut BTreeSet<NaiveDate>,
) {
    let undecodable = rec.timestamp_ms.unwrap_or(0);
    let Some(bytes) = rec.payload.as_deref() else {
        dates.insert(partition_date(undecodable));
        return;
    };
    match kind {
        TopicKind::Checked => match CheckedFrame::decode(bytes) {
            Ok(cf) if validate_device_id(&cf.device_id).is_ok() => checked_dates(&cf, limit, dates),
            _ => {
                dates.insert(partition_date(undecodable));
            }
        },
        TopicKind::Quarantine => {
            let at = QuarantinedFrame::decode(bytes).map_or(undecodable, |q| q.received_at_ms);
            dates.insert(partition_date(at));
        }
        TopicKind::Anomalies => {
            let at = Anomaly::decode(bytes).map_or(undecodable, |a| a.ts_from_ms);
            dates.insert(partition_date(at));
        }
        TopicKind::Registry => {
            // a judged change is dated by its record's timestamp (`changed_at`)
            dates.insert(partition_date(undecodable));
        }
    }
}

fn checked_dates(cf: &CheckedFrame, limit: usize, dates: &mut BTreeSet<NaiveDate>) {
    // the frames row, or the quarantine row of an undecodable payload
    dates.insert(partition_date(cf.received_at_ms));
    let Ok(feeder_core::payload::Decoded { frame, .. }) = feeder_core::payload::decode(&cf.payload)
    else {
        return;
    };
    let times = frame
        .readings
        .iter()
        .map(|r| r.ts_ms)
        .chain(frame.samples.iter().map(|s| s.ts_ms))
        .chain(frame.events.iter().map(|e| e.ts_ms))
        .chain(cf.estimates.iter().flat_map(super::estimates::run_times));
    for ts in times {
        dates.insert(partition_date(ts));
        if dates.len() > limit {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use feeder_proto::v1::{Event, Frame, Reading, Sample};

    use super::*;

    const DAY: i64 = 86_400_000;

    fn rec(payload: Option<Vec<u8>>) -> SourceRecord {
        SourceRecord {
            offset: 0,
            timestamp_ms: Some(3 * DAY),
            payload,
        }
    }

    fn dates_of(kind: TopicKind, r: &SourceRecord, limit: usize) -> Vec<i64> {
        let mut d = BTreeSet::new();
        record_dates(kind, r, limit, &mut d);
        let epoch = partition_date(0);
        d.iter().map(|x| (*x - epoch).num_days()).collect()
    }

    #[test]
    fn every_row_source_counts_by_its_time_column() {
        let frame = Frame {
            readings: vec![Reading {
                ts_ms: 10 * DAY,
                ..Default::default()
            }],
            samples: vec![Sample {
                ts_ms: 11 * DAY,
                ..Default::default()
            }],
            events: vec![Event {
                ts_ms: 12 * DAY + 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let cf = CheckedFrame {
            device_id: "mtr-1".into(),
            received_at_ms: 20 * DAY,
            payload: frame.encode_to_vec().into(),
            ..Default::default()
        };
        let r = rec(Some(cf.encode_to_vec()));
        assert_eq!(dates_of(TopicKind::Checked, &r, 64), [10, 11, 12, 20]);
        // the limit stops the count once passed
        assert_eq!(dates_of(TopicKind::Checked, &r, 1).len(), 2);
        // undecodable and null records: the log timestamp's date
        assert_eq!(
            dates_of(TopicKind::Checked, &rec(Some(vec![0xff])), 64),
            [3]
        );
        assert_eq!(dates_of(TopicKind::Anomalies, &rec(None), 64), [3]);
        let a = Anomaly {
            ts_from_ms: 7 * DAY,
            ..Default::default()
        };
        let r = rec(Some(a.encode_to_vec()));
        assert_eq!(dates_of(TopicKind::Anomalies, &r, 64), [7]);
        let q = QuarantinedFrame {
            received_at_ms: 8 * DAY,
            ..Default::default()
        };
        let r = rec(Some(q.encode_to_vec()));
        assert_eq!(dates_of(TopicKind::Quarantine, &r, 64), [8]);
    }
}
