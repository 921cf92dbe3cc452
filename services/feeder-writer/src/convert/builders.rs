//! Column builders, one struct per dataset: append a row, finish to a `RecordBatch` in
//! append order. Sorting and date-splitting happen afterwards (`split.rs`), on the
//! compact Arrow columns rather than on per-row structs.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::Result;
use crate::schema::{
    events_schema, frames_schema, quarantine_schema, readings_schema, telematics_schema,
};

fn append_flags<'a>(b: &mut ListBuilder<StringBuilder>, flags: impl Iterator<Item = &'a str>) {
    for f in flags {
        b.values().append_value(f);
    }
    b.append(true);
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The identity and provenance columns every frame-derived row repeats.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameKey<'a> {
    pub device_id: &'a str,
    pub seq: u64,
    pub received_at_ms: i64,
}

pub(crate) struct ReadingRow<'a, F> {
    pub ts_ms: i64,
    pub interval_s: u32,
    pub obis: &'a str,
    pub value: f64,
    pub value_raw: i64,
    pub scaler: i32,
    pub unit: Option<&'a str>,
    pub status: u32,
    pub flags: F,
}

#[derive(Default)]
pub(crate) struct ReadingsBuilder {
    device_id: StringBuilder,
    seq: UInt64Builder,
    ts: TimestampMillisecondBuilder,
    interval_s: UInt32Builder,
    obis: StringBuilder,
    value: Float64Builder,
    value_raw: Int64Builder,
    scaler: Int32Builder,
    unit: StringBuilder,
    status: UInt32Builder,
    flags: ListBuilder<StringBuilder>,
    received_at: TimestampMillisecondBuilder,
}

impl ReadingsBuilder {
    pub fn append<'a, F: Iterator<Item = &'a str>>(
        &mut self,
        k: FrameKey<'_>,
        r: ReadingRow<'_, F>,
    ) {
        self.device_id.append_value(k.device_id);
        self.seq.append_value(k.seq);
        self.ts.append_value(r.ts_ms);
        self.interval_s.append_value(r.interval_s);
        self.obis.append_value(r.obis);
        self.value.append_value(r.value);
        self.value_raw.append_value(r.value_raw);
        self.scaler.append_value(r.scaler);
        self.unit.append_option(r.unit);
        self.status.append_value(r.status);
        append_flags(&mut self.flags, r.flags);
        self.received_at.append_value(k.received_at_ms);
    }

    pub fn finish(mut self) -> Result<RecordBatch> {
        batch(
            readings_schema(),
            vec![
                Arc::new(self.device_id.finish()),
                Arc::new(self.seq.finish()),
                Arc::new(self.ts.finish().with_timezone("UTC")),
                Arc::new(self.interval_s.finish()),
                Arc::new(self.obis.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.value_raw.finish()),
                Arc::new(self.scaler.finish()),
                Arc::new(self.unit.finish()),
                Arc::new(self.status.finish()),
                Arc::new(self.flags.finish()),
                Arc::new(self.received_at.finish().with_timezone("UTC")),
            ],
        )
    }
}

pub(crate) struct SampleRow<F> {
    pub ts_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub speed_m_s: f64,
    pub heading_deg: f64,
    pub odometer_m: u64,
    pub ignition: bool,
    pub battery_v: f64,
    pub flags: F,
}

#[derive(Default)]
pub(crate) struct TelematicsBuilder {
    device_id: StringBuilder,
    seq: UInt64Builder,
    ts: TimestampMillisecondBuilder,
    lat: Float64Builder,
    lon: Float64Builder,
    speed_m_s: Float64Builder,
    heading_deg: Float64Builder,
    odometer_m: UInt64Builder,
    ignition: BooleanBuilder,
    battery_v: Float64Builder,
    flags: ListBuilder<StringBuilder>,
    received_at: TimestampMillisecondBuilder,
}

impl TelematicsBuilder {
    pub fn append<'a, F: Iterator<Item = &'a str>>(&mut self, k: FrameKey<'_>, s: SampleRow<F>) {
        self.device_id.append_value(k.device_id);
        self.seq.append_value(k.seq);
        self.ts.append_value(s.ts_ms);
        self.lat.append_value(s.lat);
        self.lon.append_value(s.lon);
        self.speed_m_s.append_value(s.speed_m_s);
        self.heading_deg.append_value(s.heading_deg);
        self.odometer_m.append_value(s.odometer_m);
        self.ignition.append_value(s.ignition);
        self.battery_v.append_value(s.battery_v);
        append_flags(&mut self.flags, s.flags);
        self.received_at.append_value(k.received_at_ms);
    }

    pub fn finish(mut self) -> Result<RecordBatch> {
        batch(
            telematics_schema(),
            vec![
                Arc::new(self.device_id.finish()),
                Arc::new(self.seq.finish()),
                Arc::new(self.ts.finish().with_timezone("UTC")),
                Arc::new(self.lat.finish()),
                Arc::new(self.lon.finish()),
                Arc::new(self.speed_m_s.finish()),
                Arc::new(self.heading_deg.finish()),
                Arc::new(self.odometer_m.finish()),
                Arc::new(self.ignition.finish()),
                Arc::new(self.battery_v.finish()),
                Arc::new(self.flags.finish()),
                Arc::new(self.received_at.finish().with_timezone("UTC")),
            ],
        )
    }
}

#[derive(Default)]
pub(crate) struct EventsBuilder {
    device_id: StringBuilder,
    seq: UInt64Builder,
    ts: TimestampMillisecondBuilder,
    kind: StringBuilder,
    detail: StringBuilder,
    received_at: TimestampMillisecondBuilder,
}

impl EventsBuilder {
    pub fn append(&mut self, k: FrameKey<'_>, ts_ms: i64, kind: &str, detail: &str) {
        self.device_id.append_value(k.device_id);
        self.seq.append_value(k.seq);
        self.ts.append_value(ts_ms);
        self.kind.append_value(kind);
        self.detail.append_value(detail);
        self.received_at.append_value(k.received_at_ms);
    }

    pub fn finish(mut self) -> Result<RecordBatch> {
        batch(
            events_schema(),
            vec![
                Arc::new(self.device_id.finish()),
                Arc::new(self.seq.finish()),
                Arc::new(self.ts.finish().with_timezone("UTC")),
                Arc::new(self.kind.finish()),
                Arc::new(self.detail.finish()),
                Arc::new(self.received_at.finish().with_timezone("UTC")),
            ],
        )
    }
}

#[derive(Default)]
pub(crate) struct FramesBuilder {
    device_id: StringBuilder,
    seq: UInt64Builder,
    key_id: StringBuilder,
    received_at: TimestampMillisecondBuilder,
    edge_id: StringBuilder,
    payload: BinaryBuilder,
    signature: BinaryBuilder,
}

impl FramesBuilder {
    pub fn append(
        &mut self,
        k: FrameKey<'_>,
        key_id: &str,
        edge_id: &str,
        payload: &[u8],
        signature: &[u8],
    ) {
        self.device_id.append_value(k.device_id);
        self.seq.append_value(k.seq);
        self.key_id.append_value(key_id);
        self.received_at.append_value(k.received_at_ms);
        self.edge_id.append_value(edge_id);
        self.payload.append_value(payload);
        self.signature.append_value(signature);
    }

    pub fn finish(mut self) -> Result<RecordBatch> {
        batch(
            frames_schema(),
            vec![
                Arc::new(self.device_id.finish()),
                Arc::new(self.seq.finish()),
                Arc::new(self.key_id.finish()),
                Arc::new(self.received_at.finish().with_timezone("UTC")),
                Arc::new(self.edge_id.finish()),
                Arc::new(self.payload.finish()),
                Arc::new(self.signature.finish()),
            ],
        )
    }
}

#[derive(Default)]
pub(crate) struct QuarantineBuilder {
    received_at: TimestampMillisecondBuilder,
    device_id: StringBuilder,
    seq: UInt64Builder,
    reason: StringBuilder,
    detail: StringBuilder,
    raw: BinaryBuilder,
}

impl QuarantineBuilder {
    pub fn append(&mut self, k: FrameKey<'_>, reason: &str, detail: &str, raw: &[u8]) {
        self.received_at.append_value(k.received_at_ms);
        self.device_id.append_value(k.device_id);
        self.seq.append_value(k.seq);
        self.reason.append_value(reason);
        self.detail.append_value(detail);
        self.raw.append_value(raw);
    }

    pub fn finish(mut self) -> Result<RecordBatch> {
        batch(
            quarantine_schema(),
            vec![
                Arc::new(self.received_at.finish().with_timezone("UTC")),
                Arc::new(self.device_id.finish()),
                Arc::new(self.seq.finish()),
                Arc::new(self.reason.finish()),
                Arc::new(self.detail.finish()),
                Arc::new(self.raw.finish()),
            ],
        )
    }
}
