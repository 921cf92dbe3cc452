//! What an operator tunes: where files go, which consumer group, and when buffers flush.
//!
//! The flush thresholds are also the memory bound: each assigned topic-partition buffers
//! at most `flush_max_frames` records and about `flush_max_bytes` payload bytes (plus one
//! record) before it is written out, and `max_buffered_bytes` caps the sum over all
//! assigned partitions, since per-partition limits alone grow with the assignment (4
//! topics x 48 partitions x 64 MiB). See the crate docs for the one exception (replaying
//! a range that an earlier run wrote but did not commit).

use std::path::PathBuf;
use std::time::Duration;

use crate::encryption::Encryption;
use crate::iceberg::TableFormat;
use crate::{Error, Result};

/// Writer settings. `Default` gives the production defaults with `data_root = "data"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Root of the datasets: `<root>/<dataset>/date=YYYY-MM-DD/<file>.parquet`.
    pub data_root: PathBuf,
    /// Kafka consumer group. One group per data root: file names are derived from
    /// topic, partition and offsets, so two groups writing one root would collide.
    pub group_id: String,
    /// Identifies this writer instance in each file's key-value metadata and the client id.
    pub writer_id: String,
    /// Static group membership ([`feeder_kafka::membership`]): this process's stable name
    /// in `group_id`, so a restart gets its partitions back at once. `None`: dynamic.
    pub instance_id: Option<feeder_kafka::InstanceId>,
    /// Flush a topic-partition's buffer at this many records.
    pub flush_max_frames: usize,
    /// Flush a topic-partition's buffer at this many buffered payload bytes.
    pub flush_max_bytes: usize,
    /// Flush a buffer whose oldest record is this old: data becomes visible at least this often.
    pub flush_max_age: Duration,
    /// Cap on the payload bytes buffered over all assigned partitions: above it, the
    /// largest buffers are flushed early (see `cap.rs`).
    pub max_buffered_bytes: usize,
    /// Distinct `date=` partitions one flush may write into (one file per dataset and
    /// date): a buffer flushes early before a record that would pass it (`buffer.rs`).
    pub max_dates_per_flush: usize,
    /// Which datasets are encrypted, with which keys (default: none, all plaintext).
    pub encryption: Encryption,
    /// What the files become: Hive-partitioned Parquet (default) or Iceberg tables.
    pub tables: TableFormat,
    // named from feeder-kafka, not `registry_changes`: that module reports through
    // `observe`, which knows the buffer, which knows this config (no module cycle)
    /// The registry topic to audit into `registry_changes` (none: no such dataset).
    pub registry_audit: Option<feeder_kafka::registry_follow::TopicSource>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            data_root: PathBuf::from("data"),
            group_id: "feeder-writer".into(),
            writer_id: "writer-0".into(),
            instance_id: None,
            flush_max_frames: 20_000,
            flush_max_bytes: 64 * 1024 * 1024,
            flush_max_age: Duration::from_secs(5),
            max_buffered_bytes: 256 * 1024 * 1024,
            max_dates_per_flush: 64,
            encryption: Encryption::none(),
            tables: TableFormat::Parquet,
            registry_audit: None,
        }
    }
}

impl WriterConfig {
    /// Rejects settings that cannot work (zero thresholds, empty ids).
    pub fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(Error::Config(m.to_string()));
        if self.group_id.is_empty() {
            return fail("group_id must not be empty");
        }
        if self.writer_id.is_empty() {
            return fail("writer_id must not be empty");
        }
        if self.flush_max_frames == 0 {
            return fail("flush_max_frames must be at least 1");
        }
        if self.flush_max_bytes == 0 {
            return fail("flush_max_bytes must be at least 1");
        }
        if self.max_buffered_bytes == 0 {
            return fail("max_buffered_bytes must be at least 1");
        }
        if self.max_dates_per_flush == 0 {
            return fail("max_dates_per_flush must be at least 1");
        }
        if self.flush_max_age.is_zero() {
            return fail("flush_max_age must be positive");
        }
        if let TableFormat::Iceberg(s) = &self.tables {
            s.validate()?;
            if self.encryption.is_enabled() {
                return fail(
                    "encryption: this writer cannot encrypt iceberg tables (docs/datasets.md)",
                );
            }
        }
        Ok(())
    }

    /// How often idle buffers are checked for age: a fraction of the age limit, so a
    /// buffer is written at most ~25% later than `flush_max_age`.
    pub(crate) fn tick_period(&self) -> Duration {
        (self.flush_max_age / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = WriterConfig::default();
        c.validate().unwrap();
        assert_eq!(c.group_id, "feeder-writer");
        assert_eq!(c.writer_id, "writer-0");
        assert_eq!(c.flush_max_frames, 20_000);
        assert_eq!(c.flush_max_bytes, 64 << 20);
        assert_eq!(c.flush_max_age, Duration::from_secs(5));
        assert_eq!(c.max_buffered_bytes, 256 << 20);
        assert_eq!(c.max_dates_per_flush, 64);
        assert_eq!(c.tick_period(), Duration::from_secs(1));
    }

    #[test]
    fn rejects_unworkable_settings() {
        type Breaker = fn(&mut WriterConfig);
        let cases: [(&str, Breaker); 7] = [
            ("group_id", |c| c.group_id.clear()),
            ("writer_id", |c| c.writer_id.clear()),
            ("flush_max_frames", |c| c.flush_max_frames = 0),
            ("flush_max_bytes", |c| c.flush_max_bytes = 0),
            ("flush_max_age", |c| c.flush_max_age = Duration::ZERO),
            ("max_buffered_bytes", |c| c.max_buffered_bytes = 0),
            ("max_dates_per_flush", |c| c.max_dates_per_flush = 0),
        ];
        for (field, break_it) in cases {
            let mut c = WriterConfig::default();
            break_it(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
