//! `CheckedFrame.estimates` (the stream's VEE estimates, `EstimateRun`s) to rows of the
//! `estimates` dataset: one row per value of a run, `ts = first_ts + k × step`,
//! `created_at` = the frame's `received_at` (the stream's "now" when it estimated), `seq`
//! = the frame that carried them.
//!
//! Bounded by the input whatever a record holds: at most [`MAX_ESTIMATE_ROWS_PER_RECORD`]
//! rows per record (the stream writes at most 20,000 estimated plus one superseded row per
//! reading of the frame), and the strings repeated on every row cut to
//! [`MAX_ESTIMATE_TEXT_BYTES`], so one record's rows stay within about 16 × its size.

use std::sync::Arc;

use arrow::array::{
    Float64Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;
use feeder_core::units::{scaled_value, unit_name};
use feeder_proto::pipeline::{EstimateMethod, EstimateRun, EstimateStatus};

use super::builders::FrameKey;
use crate::Result;
use crate::schema::estimates_schema;

/// Rows one checked record may add to `estimates`; the rest are not written (counted).
pub const MAX_ESTIMATE_ROWS_PER_RECORD: usize = 40_000;
/// `obis`, `basis` and `rule_version` are cut to this many bytes (at a char boundary).
pub const MAX_ESTIMATE_TEXT_BYTES: usize = 256;

fn cut(s: &str) -> &str {
    if s.len() <= MAX_ESTIMATE_TEXT_BYTES {
        return s;
    }
    let mut end = MAX_ESTIMATE_TEXT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The row times of a run (saturating: a hostile step cannot overflow).
pub(crate) fn run_times(run: &EstimateRun) -> impl Iterator<Item = i64> + '_ {
    (0..run.values_raw.len() as i64).map(|k| {
        run.first_ts_ms
            .saturating_add(run.step_ms.saturating_mul(k))
    })
}

#[derive(Default)]
pub(crate) struct EstimatesBuilder {
    device_id: StringBuilder,
    obis: StringBuilder,
    ts: TimestampMillisecondBuilder,
    interval_s: UInt32Builder,
    value: Float64Builder,
    value_raw: Int64Builder,
    scaler: Int32Builder,
    unit: StringBuilder,
    method: StringBuilder,
    basis: StringBuilder,
    rule_version: StringBuilder,
    status: StringBuilder,
    created_at: TimestampMillisecondBuilder,
    seq: UInt64Builder,
}

impl EstimatesBuilder {
    /// Appends the rows of one record's runs; returns how many were left out by the cap.
    pub fn append(&mut self, k: FrameKey<'_>, runs: &[EstimateRun]) -> u64 {
        let mut budget = MAX_ESTIMATE_ROWS_PER_RECORD;
        let mut left_out = 0u64;
        for run in runs {
            let (obis, basis, version) = (cut(&run.obis), cut(&run.basis), cut(&run.rule_version));
            let (method, status) = (
                EstimateMethod::name_of(run.method),
                EstimateStatus::name_of(run.status),
            );
            let unit = unit_name(run.unit);
            for (ts, &raw) in run_times(run).zip(&run.values_raw) {
                if budget == 0 {
                    left_out += 1;
                    continue;
                }
                budget -= 1;
                self.device_id.append_value(k.device_id);
                self.obis.append_value(obis);
                self.ts.append_value(ts);
                self.interval_s.append_value(run.interval_s);
                self.value.append_value(scaled_value(raw, run.scaler));
                self.value_raw.append_value(raw);
                self.scaler.append_value(run.scaler);
                self.unit.append_option(unit);
                self.method.append_value(method);
                self.basis.append_value(basis);
                self.rule_version.append_value(version);
                self.status.append_value(status);
                self.created_at.append_value(k.received_at_ms);
                self.seq.append_value(k.seq);
            }
        }
        left_out
    }

    pub fn finish(mut self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            estimates_schema(),
            vec![
                Arc::new(self.device_id.finish()),
                Arc::new(self.obis.finish()),
                Arc::new(self.ts.finish().with_timezone("UTC")),
                Arc::new(self.interval_s.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.value_raw.finish()),
                Arc::new(self.scaler.finish()),
                Arc::new(self.unit.finish()),
                Arc::new(self.method.finish()),
                Arc::new(self.basis.finish()),
                Arc::new(self.rule_version.finish()),
                Arc::new(self.status.finish()),
                Arc::new(self.created_at.finish().with_timezone("UTC")),
                Arc::new(self.seq.finish()),
            ],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};
    use feeder_proto::pipeline::CheckedFrame;
    use feeder_proto::v1::{Frame, Unit};
    use prost::Message;

    use super::*;
    use crate::convert::checked_to_batches;
    use crate::schema::Dataset;

    fn run(first: i64, values: Vec<i64>, status: EstimateStatus) -> EstimateRun {
        let mut r = EstimateRun {
            obis: "1-0:1.29.0".into(),
            interval_s: 900,
            step_ms: 900_000,
            first_ts_ms: first,
            scaler: -1,
            unit: Unit::Wh as i32,
            basis: "b".repeat(300),
            rule_version: "v".into(),
            values_raw: values,
            ..Default::default()
        };
        r.set_method(EstimateMethod::RegisterProration);
        r.set_status(status);
        r
    }

    #[test]
    fn runs_become_rows_split_by_the_date_of_ts() {
        let day = 86_400_000;
        let cf = CheckedFrame {
            device_id: "mtr-1".into(),
            seq: 9,
            received_at_ms: 12 * day,
            payload: Frame::default().encode_to_vec().into(),
            estimates: vec![
                run(
                    11 * day - 900_000,
                    vec![10, 20, 30],
                    EstimateStatus::Estimated,
                ),
                run(5 * day, vec![7], EstimateStatus::Superseded),
            ],
            ..Default::default()
        };
        let got = checked_to_batches(&[cf]).unwrap();
        assert_eq!(got.rows(Dataset::Estimates), 4);
        let b: Vec<_> = got
            .batches
            .iter()
            .filter(|b| b.dataset == Dataset::Estimates)
            .collect();
        assert_eq!(b.len(), 3, "days 5, 10 and 11");
        let last = &b[2].batch;
        assert_eq!(last.schema(), estimates_schema());
        let col = |n: &str| last.column_by_name(n).unwrap().clone();
        assert_eq!(
            col("value_raw").as_primitive::<Int64Type>().values(),
            &[20, 30]
        );
        assert_eq!(
            col("ts")
                .as_primitive::<TimestampMillisecondType>()
                .value(0),
            11 * day
        );
        assert_eq!(
            col("method").as_string::<i32>().value(0),
            "register_proration"
        );
        assert_eq!(col("status").as_string::<i32>().value(0), "estimated");
        assert_eq!(col("basis").as_string::<i32>().value(0).len(), 256);
        assert_eq!(
            col("created_at")
                .as_primitive::<TimestampMillisecondType>()
                .value(0),
            12 * day
        );
        let first = &b[0].batch;
        let status = first.column_by_name("status").unwrap().as_string::<i32>();
        assert_eq!(status.value(0), "superseded");
    }

    #[test]
    fn a_hostile_run_is_capped() {
        let mut b = EstimatesBuilder::default();
        let k = FrameKey {
            device_id: "d",
            seq: 1,
            received_at_ms: 0,
        };
        let mut r = run(
            i64::MAX - 5,
            vec![1; MAX_ESTIMATE_ROWS_PER_RECORD + 3],
            EstimateStatus::Estimated,
        );
        r.step_ms = i64::MAX;
        r.method = 77;
        assert_eq!(b.append(k, &[r]), 3);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), MAX_ESTIMATE_ROWS_PER_RECORD);
        let m = batch.column_by_name("method").unwrap().as_string::<i32>();
        assert_eq!(m.value(0), "unknown");
    }
}
