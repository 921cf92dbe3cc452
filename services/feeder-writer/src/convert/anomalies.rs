//! `Anomaly` records (the stream stage's findings) to rows of the `anomalies` dataset.
//!
//! Kept apart from the frame conversion because the record and its dataset differ: one
//! row per record, `device_id` null for a fleet finding, `cohort` null for a device
//! finding, `seq` null when no frame raised it, partitioned by the UTC date of `ts_from`.
//! Like the rest of the conversion it is a pure function of the records, so a replayed
//! range rewrites the same rows; an undecodable record becomes a `quarantine` row with
//! reason `undecodable_record`, never a lost one.

use std::sync::Arc;

use arrow::array::{StringBuilder, TimestampMillisecondBuilder, UInt64Builder};
use arrow::record_batch::RecordBatch;
use feeder_proto::pipeline::Anomaly;
use prost::Message;

use super::builders::{FrameKey, QuarantineBuilder};
use super::{Converted, DatasetBatch, REASON_UNDECODABLE_RECORD, split};
use crate::Result;
use crate::record::{SourceRecord, TopicKind};
use crate::schema::{Dataset, anomalies_schema};

#[derive(Default)]
struct AnomaliesBuilder {
    detected_at: TimestampMillisecondBuilder,
    device_id: StringBuilder,
    cohort: StringBuilder,
    rule: StringBuilder,
    severity: StringBuilder,
    ts_from: TimestampMillisecondBuilder,
    ts_to: TimestampMillisecondBuilder,
    detail: StringBuilder,
    seq: UInt64Builder,
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl AnomaliesBuilder {
    fn append(&mut self, a: &Anomaly) {
        self.detected_at.append_value(a.detected_at_ms);
        self.device_id.append_option(non_empty(&a.device_id));
        self.cohort.append_option(non_empty(&a.cohort));
        self.rule.append_value(&a.rule);
        self.severity.append_value(&a.severity);
        self.ts_from.append_value(a.ts_from_ms);
        self.ts_to.append_value(a.ts_to_ms);
        self.detail.append_value(&a.detail);
        self.seq.append_option(a.seq);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            anomalies_schema(),
            vec![
                Arc::new(self.detected_at.finish().with_timezone("UTC")),
                Arc::new(self.device_id.finish()),
                Arc::new(self.cohort.finish()),
                Arc::new(self.rule.finish()),
                Arc::new(self.severity.finish()),
                Arc::new(self.ts_from.finish().with_timezone("UTC")),
                Arc::new(self.ts_to.finish().with_timezone("UTC")),
                Arc::new(self.detail.finish()),
                Arc::new(self.seq.finish()),
            ],
        )?)
    }
}

/// Converts consumed `anomalies` records (in offset order) to sorted, date-split batches.
pub(crate) fn records_to_batches(records: &[SourceRecord]) -> Result<Converted> {
    let mut rows = AnomaliesBuilder::default();
    let mut quarantine = QuarantineBuilder::default();
    let mut undecodable = 0u64;
    for rec in records {
        let why = match rec.payload.as_deref().map(Anomaly::decode) {
            Some(Ok(a)) => {
                rows.append(&a);
                continue;
            }
            Some(Err(e)) => format!("not an Anomaly: {e}"),
            None => "null record value".to_string(),
        };
        undecodable += 1;
        let key = FrameKey {
            device_id: "",
            seq: 0,
            received_at_ms: rec.timestamp_ms.unwrap_or(0),
        };
        let detail = format!(
            "{} topic record at offset {}: {why}",
            TopicKind::Anomalies.name(),
            rec.offset
        );
        let raw = rec.payload.as_deref().unwrap_or(&[]);
        quarantine.append(key, REASON_UNDECODABLE_RECORD, &detail, raw);
    }
    let mut batches = Vec::new();
    for (dataset, batch) in [
        (Dataset::Quarantine, quarantine.finish()?),
        (Dataset::Anomalies, rows.finish()?),
    ] {
        for (date, batch) in split::sort_and_split(dataset, &batch)? {
            batches.push(DatasetBatch {
                dataset,
                date,
                batch,
            });
        }
    }
    batches.sort_by_key(|b| (b.dataset, b.date));
    Ok(Converted {
        batches,
        undecodable_records: undecodable,
        ..Converted::default()
    })
}

/// Converts decoded anomalies (tests and tools).
pub fn anomalies_to_batches(anomalies: &[Anomaly]) -> Result<Converted> {
    let records: Vec<_> = anomalies
        .iter()
        .enumerate()
        .map(|(i, a)| SourceRecord {
            offset: i as i64,
            timestamp_ms: None,
            payload: Some(a.encode_to_vec()),
        })
        .collect();
    records_to_batches(&records)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{TimestampMillisecondType, UInt64Type};

    use super::*;
    use crate::convert::partition_date;

    fn anomaly(device: &str, cohort: &str, ts_from_ms: i64, seq: Option<u64>) -> Anomaly {
        Anomaly {
            detected_at_ms: ts_from_ms + 5,
            device_id: device.into(),
            cohort: cohort.into(),
            rule: "spike".into(),
            severity: "warning".into(),
            ts_from_ms,
            ts_to_ms: ts_from_ms + 1,
            detail: "d".into(),
            seq,
            source_offset: 0,
        }
    }

    #[test]
    fn rows_are_split_by_ts_from_with_nulls_for_missing_device_cohort_and_seq() {
        let day = 86_400_000;
        let got = anomalies_to_batches(&[
            anomaly("m2", "", 10 * day + 7, Some(3)),
            anomaly("", "module=bg95", 10 * day + 1, None),
            anomaly("m1", "", 11 * day, Some(9)),
        ])
        .unwrap();
        assert_eq!(got.rows(Dataset::Anomalies), 3);
        assert_eq!(got.undecodable_records, 0);
        let dates: Vec<_> = got.batches.iter().map(|b| b.date).collect();
        assert_eq!(dates, [partition_date(10 * day), partition_date(11 * day)]);
        let b = &got.batches[0].batch;
        assert_eq!(b.schema(), anomalies_schema());
        let device = b.column_by_name("device_id").unwrap().as_string::<i32>();
        let cohort = b.column_by_name("cohort").unwrap().as_string::<i32>();
        let seq = b
            .column_by_name("seq")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let from = b
            .column_by_name("ts_from")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        // the fleet finding (null device) sorts first
        assert!(device.is_null(0) && !cohort.is_null(0) && seq.is_null(0));
        assert_eq!(cohort.value(0), "module=bg95");
        assert_eq!((device.value(1), seq.value(1)), ("m2", 3));
        assert!(cohort.is_null(1));
        assert_eq!(from.value(1), 10 * day + 7);
    }

    #[test]
    fn an_undecodable_record_becomes_a_quarantine_row() {
        let got = records_to_batches(&[SourceRecord {
            offset: 4,
            timestamp_ms: Some(1000),
            payload: Some(vec![0xff, 0xff]),
        }])
        .unwrap();
        assert_eq!(got.undecodable_records, 1);
        assert_eq!(got.rows(Dataset::Quarantine), 1);
        assert_eq!(got.rows(Dataset::Anomalies), 0);
    }
}
