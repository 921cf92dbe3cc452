//! Order-independent fingerprints of dataset rows, so that the rows a frame's payload
//! implies can be compared with the rows stored for it without holding either in memory.
//!
//! Each row is hashed over every column except `flags` (the stream stage's annotations,
//! not signed data) plus the partition date of the directory it sits in (a row moved to
//! another `date=` directory is a mismatch). A frame's rows of one dataset are summarised
//! as `(row count, wrapping sum of row hashes)`: equal multisets give equal digests, and
//! a changed, missing, extra or duplicated row changes the digest. The hash is SipHash
//! with a random key drawn per run, so someone who edits files cannot precompute a
//! colliding change.

use std::hash::{BuildHasher, Hasher, RandomState};

use arrow::array::{ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{SchemaRef, UInt64Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use chrono::{Datelike, NaiveDate};

use crate::Result;
use crate::schema::Dataset;

/// The column left out of the fingerprint: check results added by Feeder, not signed.
const UNSIGNED_COLUMN: &str = "flags";

/// `(rows, wrapping sum of row hashes)` of a multiset of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub rows: u64,
    sum: u64,
}

impl Digest {
    pub fn add(&mut self, hash: u64) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(hash);
    }
}

/// One row's identity and fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowHash<'a> {
    pub device_id: &'a str,
    pub seq: u64,
    pub hash: u64,
}

/// Hashes rows of one dataset; the same instance must hash both sides of a comparison.
pub struct RowHasher {
    dataset: Dataset,
    schema: SchemaRef,
    columns: Vec<usize>,
    converter: RowConverter,
    state: RandomState,
}

impl RowHasher {
    pub fn new(dataset: Dataset, state: RandomState) -> Result<Self> {
        let schema = dataset.schema();
        let columns: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| schema.field(i).name() != UNSIGNED_COLUMN)
            .collect();
        let fields = columns
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect();
        Ok(Self {
            dataset,
            converter: RowConverter::new(fields)?,
            schema,
            columns,
            state,
        })
    }

    /// The fingerprinted columns of `batch`, by name, cast to the contract's types (a
    /// file rewritten by another tool may use an equivalent type, e.g. another UTC name).
    fn columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.columns
            .iter()
            .map(|&i| {
                let field = self.schema.field(i);
                let col = batch.column_by_name(field.name()).ok_or_else(|| {
                    ArrowError::SchemaError(format!(
                        "{}: column {} missing",
                        self.dataset.name(),
                        field.name()
                    ))
                })?;
                if col.data_type() == field.data_type() {
                    Ok(col.clone())
                } else {
                    Ok(cast(col, field.data_type())?)
                }
            })
            .collect()
    }

    /// Calls `each` with the identity and hash of every row of `batch`, stored (or to be
    /// stored) under the directory of `date`.
    pub fn for_each_row(
        &self,
        batch: &RecordBatch,
        date: NaiveDate,
        mut each: impl FnMut(RowHash<'_>),
    ) -> Result<()> {
        let missing = |c: &str| {
            ArrowError::SchemaError(format!(
                "{}: column {c} missing or mistyped",
                self.dataset.name()
            ))
        };
        let device = batch
            .column_by_name("device_id")
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| missing("device_id"))?;
        let seq = batch
            .column_by_name("seq")
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| missing("seq"))?;
        let rows = self.converter.convert_columns(&self.columns(batch)?)?;
        for i in 0..batch.num_rows() {
            let mut h = self.state.build_hasher();
            h.write_i32(date.num_days_from_ce());
            h.write(rows.row(i).as_ref());
            each(RowHash {
                device_id: device.value(i),
                seq: seq.value(i),
                hash: h.finish(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_ignore_order_but_not_duplicates() {
        let mut a = Digest::default();
        let mut b = Digest::default();
        a.add(1);
        a.add(u64::MAX);
        b.add(u64::MAX);
        b.add(1);
        assert_eq!(a, b);
        b.add(1);
        assert_ne!(a, b);
    }
}
