//! Judged registry-topic records to rows of the `registry_changes` dataset (contract
//! 1.1): one row per accepted change, partitioned by the UTC date of `changed_at`.
//!
//! A registry record cannot be turned into a row on its own: whether it is a change, and
//! what it changed from (`previous_status`), depends on the lines in force before it. The
//! writer judges each record in offset order as it arrives ([`crate::registry_changes`])
//! and buffers the judged change in place of the record's value, as the JSON of a
//! [`JudgedChange`] (or no value: refused, or not a change). Conversion of the buffered
//! records is then a pure function of them, like every other dataset's, so a replayed
//! range (judged again from the same state) rewrites the same rows.

use std::sync::Arc;

use arrow::array::{StringBuilder, TimestampMillisecondBuilder};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::{Converted, DatasetBatch, split};
use crate::record::SourceRecord;
use crate::schema::{Dataset, registry_changes_schema};
use crate::{Error, Result};

/// One accepted change, as buffered between judging and flushing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgedChange {
    pub changed_at_ms: i64,
    pub device_id: String,
    pub key_id: String,
    pub alg: String,
    /// The new status, or `removed` for a tombstone.
    pub status: String,
    pub previous_status: Option<String>,
    /// The line's labels as a JSON object.
    pub labels: String,
    /// The provisioning key whose signature was verified; `None` when none is configured.
    pub signer: Option<String>,
}

impl JudgedChange {
    /// The buffered form (a record value).
    pub fn encode(&self) -> Vec<u8> {
        // invariant: a struct of strings and integers always serializes
        serde_json::to_vec(self).expect("a JudgedChange serializes")
    }
}

#[derive(Default)]
struct Builder {
    changed_at: TimestampMillisecondBuilder,
    device_id: StringBuilder,
    key_id: StringBuilder,
    alg: StringBuilder,
    status: StringBuilder,
    previous_status: StringBuilder,
    labels: StringBuilder,
    signer: StringBuilder,
}

impl Builder {
    fn append(&mut self, c: &JudgedChange) {
        self.changed_at.append_value(c.changed_at_ms);
        self.device_id.append_value(&c.device_id);
        self.key_id.append_value(&c.key_id);
        self.alg.append_value(&c.alg);
        self.status.append_value(&c.status);
        self.previous_status
            .append_option(c.previous_status.as_deref());
        self.labels.append_value(&c.labels);
        self.signer.append_option(c.signer.as_deref());
    }

    fn finish(mut self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            registry_changes_schema(),
            vec![
                Arc::new(self.changed_at.finish().with_timezone("UTC")),
                Arc::new(self.device_id.finish()),
                Arc::new(self.key_id.finish()),
                Arc::new(self.alg.finish()),
                Arc::new(self.status.finish()),
                Arc::new(self.previous_status.finish()),
                Arc::new(self.labels.finish()),
                Arc::new(self.signer.finish()),
            ],
        )?)
    }
}

/// Converts judged registry records (in offset order) to sorted, date-split batches.
/// Records without a value hold no row (refused, or not a change).
pub(crate) fn records_to_batches(records: &[SourceRecord]) -> Result<Converted> {
    let mut rows = Builder::default();
    for rec in records {
        let Some(value) = rec.payload.as_deref() else {
            continue;
        };
        // written by this process's judge a moment ago: a failure is a bug, not input
        let change: JudgedChange = serde_json::from_slice(value).map_err(|e| {
            Error::Registry(format!(
                "registry change buffered at offset {} does not decode: {e}",
                rec.offset
            ))
        })?;
        rows.append(&change);
    }
    let batch = rows.finish()?;
    let mut batches = Vec::new();
    for (date, batch) in split::sort_and_split(Dataset::RegistryChanges, &batch)? {
        batches.push(DatasetBatch {
            dataset: Dataset::RegistryChanges,
            date,
            batch,
        });
    }
    Ok(Converted {
        batches,
        ..Converted::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(at: i64, device: &str, status: &str, previous: Option<&str>) -> JudgedChange {
        JudgedChange {
            changed_at_ms: at,
            device_id: device.into(),
            key_id: "k1".into(),
            alg: "ed25519".into(),
            status: status.into(),
            previous_status: previous.map(Into::into),
            labels: r#"{"region":"north"}"#.into(),
            signer: Some("provisioning-1".into()),
        }
    }

    #[test]
    fn one_row_per_judged_change_split_by_day_of_change() {
        let day = 86_400_000;
        let records = vec![
            SourceRecord {
                offset: 0,
                timestamp_ms: Some(5),
                payload: Some(change(5, "mtr-2", "active", None).encode()),
            },
            // refused or not a change: no row
            SourceRecord {
                offset: 1,
                timestamp_ms: Some(6),
                payload: None,
            },
            SourceRecord {
                offset: 2,
                timestamp_ms: Some(day + 1),
                payload: Some(change(day + 1, "mtr-2", "revoked", Some("active")).encode()),
            },
            SourceRecord {
                offset: 3,
                timestamp_ms: Some(7),
                payload: Some(change(7, "mtr-1", "removed", Some("active")).encode()),
            },
        ];
        let c = records_to_batches(&records).unwrap();
        assert_eq!(c.batches.len(), 2);
        assert_eq!(c.rows(Dataset::RegistryChanges), 3);
        let first = &c.batches[0].batch;
        assert_eq!(first.num_rows(), 2);
        let devices = first
            .column_by_name("device_id")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        // sorted by device, then time
        assert_eq!(devices.value(0), "mtr-1");
        assert_eq!(devices.value(1), "mtr-2");
        let previous = c.batches[1]
            .batch
            .column_by_name("previous_status")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .value(0)
            .to_string();
        assert_eq!(previous, "active");
    }

    #[test]
    fn a_buffered_value_that_does_not_decode_is_an_error_not_a_lost_row() {
        let records = vec![SourceRecord {
            offset: 9,
            timestamp_ms: None,
            payload: Some(b"{".to_vec()),
        }];
        assert!(records_to_batches(&records).is_err());
    }
}
