//! Orders a dataset's rows for readers and cuts them into one batch per UTC date.
//!
//! Rows are sorted by `device_id`, then the dataset's time column, then `seq`; the sort
//! is stable, so rows that tie (several readings of one frame at one ts) keep frame
//! order. The result depends only on the input rows, which is what lets a replayed
//! range reproduce a file row for row.

use std::collections::BTreeMap;

use arrow::array::{AsArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{TimestampMillisecondType, UInt64Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;

use crate::Result;
use crate::schema::Dataset;

/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;
/// 0000-01-01 and 9999-12-31 as days since the Unix epoch: the dates a `date=YYYY-MM-DD`
/// directory can name with four digits.
const MIN_DAY: i64 = -719_528;
const MAX_DAY: i64 = 2_932_896;
const MS_PER_DAY: i64 = 86_400_000;

/// The UTC date whose `date=` directory holds a row with this time. A device clock far
/// outside years 0000..=9999 is clamped to the nearest end, so the row is still stored
/// (its time column keeps the value as sent); the stream stage flags such clocks.
pub fn partition_date(ms: i64) -> NaiveDate {
    let day = ms.div_euclid(MS_PER_DAY).clamp(MIN_DAY, MAX_DAY);
    // In range by the clamp above, so chrono always has the date; the fallback is never taken.
    i32::try_from(day + UNIX_EPOCH_DAYS_FROM_CE)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .unwrap_or_default()
}

fn missing(dataset: Dataset, col: &str) -> ArrowError {
    ArrowError::SchemaError(format!(
        "{}: column {col} missing or mistyped",
        dataset.name()
    ))
}

/// Sorts `batch` (rows of `dataset` in append order) and splits it by partition date.
pub(crate) fn sort_and_split(
    dataset: Dataset,
    batch: &RecordBatch,
) -> Result<Vec<(NaiveDate, RecordBatch)>> {
    let n = batch.num_rows();
    if n == 0 {
        return Ok(Vec::new());
    }
    let time_col = dataset.time_column();
    let device = batch
        .column_by_name("device_id")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| missing(dataset, "device_id"))?;
    let time = batch
        .column_by_name(time_col)
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or_else(|| missing(dataset, time_col))?;
    // every dataset but `registry_changes` (ordered by offset within a change time)
    let seq = match batch.column_by_name("seq") {
        None if dataset == Dataset::RegistryChanges => None,
        c => Some(
            c.and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| missing(dataset, "seq"))?,
        ),
    };
    let n = u32::try_from(n)
        .map_err(|_| ArrowError::InvalidArgumentError(format!("{n} rows do not fit one file")))?;

    let mut order: Vec<u32> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        device
            .value(a)
            .cmp(device.value(b))
            .then(time.value(a).cmp(&time.value(b)))
            .then_with(|| seq.map_or(std::cmp::Ordering::Equal, |s| s.value(a).cmp(&s.value(b))))
    });

    let mut by_date: BTreeMap<NaiveDate, Vec<u32>> = BTreeMap::new();
    for i in order {
        by_date
            .entry(partition_date(time.value(i as usize)))
            .or_default()
            .push(i);
    }
    by_date
        .into_iter()
        .map(|(date, idx)| Ok((date, take_record_batch(batch, &UInt32Array::from(idx))?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn dates_are_utc_and_split_at_midnight() {
        // 2024-03-10T23:59:59.999Z and 2024-03-11T00:00:00.000Z
        assert_eq!(partition_date(1_710_115_199_999), d(2024, 3, 10));
        assert_eq!(partition_date(1_710_115_200_000), d(2024, 3, 11));
        assert_eq!(partition_date(0), d(1970, 1, 1));
        assert_eq!(partition_date(-1), d(1969, 12, 31));
    }

    #[test]
    fn absurd_clocks_are_clamped_to_four_digit_years() {
        assert_eq!(partition_date(i64::MAX), d(9999, 12, 31));
        assert_eq!(partition_date(i64::MIN), d(0, 1, 1));
        assert_eq!(partition_date(253_402_300_799_999), d(9999, 12, 31));
        assert_eq!(partition_date(-62_167_219_200_000), d(0, 1, 1));
    }
}
