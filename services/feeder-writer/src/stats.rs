//! Counters a caller (the `feeder` binary, the demo, tests) can read while the writer
//! runs. Prometheus metrics carry the same facts with labels; these are plain totals.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::schema::Dataset;

/// Totals since start. Row counters count rows in files made durable (a replayed range
/// counts again: it is counted per write, not per distinct row).
#[derive(Debug, Default)]
pub struct WriterStats {
    pub files_written: AtomicU64,
    pub readings_written: AtomicU64,
    pub telematics_written: AtomicU64,
    pub events_written: AtomicU64,
    pub frames_written: AtomicU64,
    pub quarantine_written: AtomicU64,
    pub anomalies_written: AtomicU64,
    pub estimates_written: AtomicU64,
    pub registry_changes_written: AtomicU64,
    /// Kafka records whose offsets were committed after their files became durable.
    pub records_committed: AtomicU64,
}

impl WriterStats {
    pub(crate) fn add_rows(&self, dataset: Dataset, rows: u64) {
        let counter = match dataset {
            Dataset::Readings => &self.readings_written,
            Dataset::Telematics => &self.telematics_written,
            Dataset::Events => &self.events_written,
            Dataset::Frames => &self.frames_written,
            Dataset::Quarantine => &self.quarantine_written,
            Dataset::Anomalies => &self.anomalies_written,
            Dataset::Estimates => &self.estimates_written,
            Dataset::RegistryChanges => &self.registry_changes_written,
        };
        counter.fetch_add(rows, Ordering::Relaxed);
    }
}
