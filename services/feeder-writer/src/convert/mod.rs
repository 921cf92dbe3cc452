//! Kafka records to dataset rows: the one place that knows how a `CheckedFrame` or a
//! `QuarantinedFrame` becomes rows of `readings`, `telematics`, `events`, `frames` and
//! `quarantine` (the contract in `shared/datasets.md`).
//!
//! Conversion is a pure function of the records (no clock, no randomness, no I/O), so a
//! replayed offset range produces the same rows in the same order. Nothing is dropped:
//! - a record that is not a valid protobuf (or has no `device_id`, or is null) becomes a
//!   `quarantine` row with reason `undecodable_record`, `device_id` empty, `raw` = the
//!   record bytes and `received_at` = the record's log timestamp;
//! - a `CheckedFrame` whose `payload` is not a `Frame` becomes a `quarantine` row with
//!   reason `undecodable_payload` and `raw` = the `SignedFrame` rebuilt from its fields
//!   (so it can still be re-verified); it has no `frames` row, as it contributed no rows;
//! - a `CheckedFrame` whose `device_id` is not a valid device id (the edge admits none)
//!   is an undecodable record too: the id is repeated on every row, so an unbounded one
//!   would multiply the record's size by its row count.
//!
//! Output is bounded by the input: every row comes from an item of the record, and the
//! one field repeated on every row without being repeated in the record, the frame
//! flags, is bounded per row and per record (`flags.rs`).

mod anomalies;
mod builders;
mod dates;
mod estimates;
mod flags;
pub mod registry_changes;
mod split;

use std::borrow::Cow;
use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use feeder_core::units::{scaled_value, unit_name};
use feeder_core::validate_device_id;
use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame};
use feeder_proto::v1::{EventKind, SignedFrame};
use prost::Message;

pub use self::anomalies::anomalies_to_batches;
use self::builders::{
    EventsBuilder, FrameKey, FramesBuilder, QuarantineBuilder, ReadingRow, ReadingsBuilder,
    SampleRow, TelematicsBuilder,
};
pub use self::dates::record_dates;
use self::estimates::EstimatesBuilder;
pub use self::estimates::{MAX_ESTIMATE_ROWS_PER_RECORD, MAX_ESTIMATE_TEXT_BYTES};
pub use self::flags::{
    FLAG_BYTES_PER_RECORD_BYTE, FLAGS_TRUNCATED, MAX_FLAG_BYTES, MAX_FLAG_ENTRIES_PER_RECORD,
    MAX_FLAGS_PER_ROW,
};
use self::flags::{RecordFlags, flags_by_index};
pub use self::split::partition_date;
pub(crate) use self::split::sort_and_split;
use crate::Result;
use crate::record::{SourceRecord, TopicKind};
use crate::schema::Dataset;

/// Quarantine reason of a Kafka record that could not be decoded at all.
pub const REASON_UNDECODABLE_RECORD: &str = "undecodable_record";
/// Quarantine reason of a checked frame whose signed payload is not a `Frame`.
pub const REASON_UNDECODABLE_PAYLOAD: &str = "undecodable_payload";

/// The rows of one dataset for one UTC date, sorted: the content of one file.
#[derive(Debug, Clone)]
pub struct DatasetBatch {
    pub dataset: Dataset,
    pub date: NaiveDate,
    pub batch: RecordBatch,
}

/// The result of converting a run of records.
#[derive(Debug, Default)]
pub struct Converted {
    /// One entry per (dataset, date) with rows, ordered by dataset then date.
    pub batches: Vec<DatasetBatch>,
    /// Records quarantined as `undecodable_record`.
    pub undecodable_records: u64,
    /// Checked frames quarantined as `undecodable_payload`.
    pub undecodable_payloads: u64,
    /// Rows whose `flags` list was cut to its bounds (ending in `flags_truncated`).
    pub flags_truncated_rows: u64,
    /// Estimate rows past a record's cap ([`MAX_ESTIMATE_ROWS_PER_RECORD`]), not written.
    pub estimates_left_out: u64,
}

impl Converted {
    /// Total rows of `dataset` across dates.
    pub fn rows(&self, dataset: Dataset) -> usize {
        self.batches
            .iter()
            .filter(|b| b.dataset == dataset)
            .map(|b| b.batch.num_rows())
            .sum()
    }
}

/// Converts consumed records of one topic (in offset order) to sorted, date-split batches.
pub fn records_to_batches(kind: TopicKind, records: &[SourceRecord]) -> Result<Converted> {
    match kind {
        TopicKind::Anomalies => return anomalies::records_to_batches(records),
        TopicKind::Registry => return registry_changes::records_to_batches(records),
        TopicKind::Checked | TopicKind::Quarantine => {}
    }
    let mut rows = Rows::default();
    for rec in records {
        match kind {
            TopicKind::Checked => rows.add_checked_record(rec),
            TopicKind::Quarantine => rows.add_quarantine_record(rec),
            TopicKind::Anomalies | TopicKind::Registry => {} // converted above
        }
    }
    rows.finish()
}

/// Converts decoded checked frames (tests and tools).
pub fn checked_to_batches(frames: &[CheckedFrame]) -> Result<Converted> {
    let mut rows = Rows::default();
    for cf in frames {
        rows.add_checked(cf, cf.encoded_len());
    }
    rows.finish()
}

/// Converts decoded quarantined frames (tests and tools).
pub fn quarantined_to_batches(frames: &[QuarantinedFrame]) -> Result<Converted> {
    let mut rows = Rows::default();
    for q in frames {
        rows.add_quarantined(q);
    }
    rows.finish()
}

/// The `events.kind` string: the `EventKind` name in lower case (`cover_opened`);
/// `unspecified` for 0 and `unknown_<n>` for a code this build does not know.
pub fn event_kind_name(code: i32) -> Cow<'static, str> {
    match EventKind::try_from(code) {
        Ok(EventKind::EventUnspecified) => Cow::Borrowed("unspecified"),
        Ok(kind) => Cow::Owned(kind.as_str_name().to_ascii_lowercase()),
        Err(_) => Cow::Owned(format!("unknown_{code}")),
    }
}

#[derive(Default)]
struct Rows {
    readings: ReadingsBuilder,
    telematics: TelematicsBuilder,
    events: EventsBuilder,
    frames: FramesBuilder,
    quarantine: QuarantineBuilder,
    estimates: EstimatesBuilder,
    estimates_left_out: u64,
    undecodable_records: u64,
    undecodable_payloads: u64,
    flags_truncated_rows: u64,
}

impl Rows {
    fn add_checked_record(&mut self, rec: &SourceRecord) {
        match rec.payload.as_deref().map(CheckedFrame::decode) {
            Some(Ok(cf)) => match validate_device_id(&cf.device_id) {
                Ok(()) => self.add_checked(&cf, rec.size()),
                Err(e) => self.add_undecodable(
                    TopicKind::Checked,
                    rec,
                    &format!("CheckedFrame device_id: {e}"),
                ),
            },
            Some(Err(e)) => {
                self.add_undecodable(TopicKind::Checked, rec, &format!("not a CheckedFrame: {e}"))
            }
            None => self.add_undecodable(TopicKind::Checked, rec, "null record value"),
        }
    }

    fn add_quarantine_record(&mut self, rec: &SourceRecord) {
        match rec.payload.as_deref().map(QuarantinedFrame::decode) {
            Some(Ok(q)) => self.add_quarantined(&q),
            Some(Err(e)) => self.add_undecodable(
                TopicKind::Quarantine,
                rec,
                &format!("not a QuarantinedFrame: {e}"),
            ),
            None => self.add_undecodable(TopicKind::Quarantine, rec, "null record value"),
        }
    }

    fn add_undecodable(&mut self, kind: TopicKind, rec: &SourceRecord, why: &str) {
        self.undecodable_records += 1;
        let key = FrameKey {
            device_id: "",
            seq: 0,
            received_at_ms: rec.timestamp_ms.unwrap_or(0),
        };
        let detail = format!(
            "{} topic record at offset {}: {why}",
            kind.name(),
            rec.offset
        );
        let raw = rec.payload.as_deref().unwrap_or(&[]);
        self.quarantine
            .append(key, REASON_UNDECODABLE_RECORD, &detail, raw);
    }

    fn add_quarantined(&mut self, q: &QuarantinedFrame) {
        let key = FrameKey {
            device_id: &q.device_id,
            seq: q.seq,
            received_at_ms: q.received_at_ms,
        };
        self.quarantine.append(key, &q.reason, &q.detail, &q.raw);
    }

    /// `record_bytes`: the record's size, which bounds the flags its rows may carry.
    fn add_checked(&mut self, cf: &CheckedFrame, record_bytes: usize) {
        let key = FrameKey {
            device_id: &cf.device_id,
            seq: cf.seq,
            received_at_ms: cf.received_at_ms,
        };
        // Feeder's own Frame, or a meter's own format (OCMF) with the flags it implies
        let decoded = match feeder_core::payload::decode(&cf.payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.undecodable_payloads += 1;
                let raw = SignedFrame {
                    device_id: cf.device_id.clone(),
                    seq: cf.seq,
                    key_id: cf.key_id.clone(),
                    payload: cf.payload.clone(),
                    signature: cf.signature.clone(),
                }
                .encode_to_vec();
                let detail = format!("payload is not a Frame: {e}");
                self.quarantine
                    .append(key, REASON_UNDECODABLE_PAYLOAD, &detail, &raw);
                return;
            }
        };
        let frame = &decoded.frame;
        self.frames
            .append(key, &cf.key_id, &cf.edge_id, &cf.payload, &cf.signature);

        let mut flags = RecordFlags::new(&cf.frame_flags, record_bytes);
        let mut row_flags = Vec::new();
        let reading_flags = flags_by_index(frame.readings.len(), &cf.reading_flags);
        let mut merged = Vec::new();
        for (i, r) in (0u32..).zip(&frame.readings) {
            match decoded.reading_flags.get(i as usize) {
                None => flags.row(own_flags(&reading_flags, i), &mut row_flags),
                Some(format_flags) => {
                    merged.clear();
                    merged.extend_from_slice(own_flags(&reading_flags, i));
                    merged.extend(format_flags.iter().map(String::as_str));
                    flags.row(&merged, &mut row_flags);
                }
            }
            let row = ReadingRow {
                ts_ms: r.ts_ms,
                interval_s: r.interval_s,
                obis: &r.obis,
                value: scaled_value(r.value, r.scaler),
                value_raw: r.value,
                scaler: r.scaler,
                unit: unit_name(r.unit),
                status: r.status,
                flags: row_flags.iter().copied(),
            };
            self.readings.append(key, row);
        }

        let sample_flags = flags_by_index(frame.samples.len(), &cf.sample_flags);
        for (i, s) in (0u32..).zip(&frame.samples) {
            flags.row(own_flags(&sample_flags, i), &mut row_flags);
            let row = SampleRow {
                ts_ms: s.ts_ms,
                lat: f64::from(s.lat_e7) / 1e7,
                lon: f64::from(s.lon_e7) / 1e7,
                speed_m_s: f64::from(s.speed_cm_s) / 100.0,
                heading_deg: f64::from(s.heading_cdeg) / 100.0,
                odometer_m: s.odometer_m,
                ignition: s.ignition,
                battery_v: f64::from(s.battery_mv) / 1000.0,
                flags: row_flags.iter().copied(),
            };
            self.telematics.append(key, row);
        }
        self.flags_truncated_rows += flags.truncated_rows;

        for e in &frame.events {
            self.events
                .append(key, e.ts_ms, &event_kind_name(e.kind), &e.detail);
        }
        self.estimates_left_out += self.estimates.append(key, &cf.estimates);
    }

    fn finish(self) -> Result<Converted> {
        let parts = [
            (Dataset::Readings, self.readings.finish()?),
            (Dataset::Telematics, self.telematics.finish()?),
            (Dataset::Events, self.events.finish()?),
            (Dataset::Frames, self.frames.finish()?),
            (Dataset::Quarantine, self.quarantine.finish()?),
            (Dataset::Estimates, self.estimates.finish()?),
        ];
        let mut batches = Vec::new();
        for (dataset, batch) in &parts {
            for (date, batch) in split::sort_and_split(*dataset, batch)? {
                batches.push(DatasetBatch {
                    dataset: *dataset,
                    date,
                    batch,
                });
            }
        }
        Ok(Converted {
            batches,
            undecodable_records: self.undecodable_records,
            undecodable_payloads: self.undecodable_payloads,
            flags_truncated_rows: self.flags_truncated_rows,
            estimates_left_out: self.estimates_left_out,
        })
    }
}

/// The row's own flags from [`flags_by_index`] (empty when it has none).
fn own_flags<'m, 'a>(by_index: &'m BTreeMap<u32, Vec<&'a str>>, i: u32) -> &'m [&'a str] {
    by_index.get(&i).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests;
