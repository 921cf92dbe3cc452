//! A Kafka record as the writer keeps it between poll and flush: owned bytes, so the
//! consumer's message memory is released at once, plus what a replay must reproduce
//! identically (offset, log timestamp).

/// Which topic a record came from, which decides how it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `CheckedFrame` records: readings, telematics, events and frames rows.
    Checked,
    /// `QuarantinedFrame` records: quarantine rows.
    Quarantine,
    /// `Anomaly` records: anomalies rows.
    Anomalies,
    /// Registry-topic records, judged on arrival (`registry_changes`): registry_changes rows.
    Registry,
}

impl TopicKind {
    pub fn name(self) -> &'static str {
        match self {
            TopicKind::Checked => "checked",
            TopicKind::Quarantine => "quarantine",
            TopicKind::Anomalies => "anomalies",
            TopicKind::Registry => "registry",
        }
    }
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub offset: i64,
    /// The record's log timestamp (create or append time), if the broker gave one. Used as
    /// `received_at` of an undecodable record: it is stored in the log, so a replay of the
    /// same offset produces the same row.
    pub timestamp_ms: Option<i64>,
    /// `None` for a null (tombstone) value.
    pub payload: Option<Vec<u8>>,
}

impl SourceRecord {
    /// Bytes counted against `flush_max_bytes`.
    pub fn size(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len)
    }
}
