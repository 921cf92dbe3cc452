//! Metrics, emitted once per flush, commit or recovery (never per record), named
//! `feeder_writer_<what>_<unit>` with bounded labels: `dataset` and `reason` take a few
//! fixed values, and no label ever carries a device id, topic or partition.

use metrics::{counter, histogram};

use crate::buffer::FlushReason;
use crate::flush::FlushReport;
use crate::recovery::RecoveryPlan;

pub(crate) fn flushed(
    report: &FlushReport,
    reason: FlushReason,
    records: usize,
    payload_bytes: usize,
) {
    counter!("feeder_writer_flushes_total", "reason" => reason.name()).increment(1);
    counter!("feeder_writer_records_flushed_total").increment(records as u64);
    counter!("feeder_writer_payload_bytes_flushed_total").increment(payload_bytes as u64);
    histogram!("feeder_writer_flush_duration_seconds").record(report.duration.as_secs_f64());
    histogram!("feeder_writer_flush_records").record(records as f64);
    for (dataset, rows) in &report.rows {
        counter!("feeder_writer_rows_written_total", "dataset" => dataset.name()).increment(*rows);
    }
    for (dataset, files) in &report.files_by_dataset {
        counter!("feeder_writer_files_written_total", "dataset" => dataset.name())
            .increment(*files);
    }
    for (dataset, bytes) in &report.bytes {
        counter!("feeder_writer_file_bytes_written_total", "dataset" => dataset.name())
            .increment(*bytes);
    }
    if report.undecodable_records > 0 {
        counter!("feeder_writer_undecodable_records_total").increment(report.undecodable_records);
    }
    if report.undecodable_payloads > 0 {
        counter!("feeder_writer_undecodable_payloads_total").increment(report.undecodable_payloads);
    }
    if report.flags_truncated_rows > 0 {
        counter!("feeder_writer_flags_truncated_rows_total").increment(report.flags_truncated_rows);
    }
}

pub(crate) fn committed(records: u64) {
    counter!("feeder_writer_records_committed_total").increment(records);
    // For "writer commit age" alerts: time() - this.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!("feeder_writer_last_commit_timestamp_seconds").set(now.as_secs_f64());
}

pub(crate) fn commit_failed() {
    counter!("feeder_writer_commit_failures_total").increment(1);
}

pub(crate) fn skipped(records: usize) {
    if records > 0 {
        counter!("feeder_writer_records_skipped_total").increment(records as u64);
    }
}

/// A stream claim met (rare: one per stream reassignment and topic-partition).
pub(crate) fn claim() {
    counter!("feeder_writer_fence_claims_total").increment(1);
}

/// A registry-topic record refused by the provisioning keys or the line rules: no
/// `registry_changes` row (rare: once per record is bounded by the topic's write rate).
pub(crate) fn registry_refused(why: feeder_core::registry_topic::Refused) {
    counter!("feeder_writer_registry_records_refused_total", "reason" => why.label()).increment(1);
}

/// A record of a replaced stream owner ignored (exceptional: a stalled stream stage).
pub(crate) fn superseded() {
    counter!("feeder_writer_superseded_records_total").increment(1);
}

pub(crate) fn dropped(records: usize) {
    if records > 0 {
        counter!("feeder_writer_records_dropped_uncommitted_total").increment(records as u64);
    }
}

pub(crate) fn recovered(plan: &RecoveryPlan) {
    counter!("feeder_writer_recoveries_total").increment(1);
    counter!("feeder_writer_forced_ranges_total").increment(plan.forced_boundaries().len() as u64);
    counter!("feeder_writer_stale_temp_files_removed_total")
        .increment(plan.stale_temp_removed as u64);
}

/// Set after flushes and on each tick, not per record.
pub(crate) fn buffered(bytes: usize) {
    metrics::gauge!("feeder_writer_buffered_bytes").set(bytes as f64);
}

pub(crate) fn consumer_error() {
    counter!("feeder_writer_consumer_errors_total").increment(1);
}

/// One Iceberg snapshot committed (one per table and flushed range), after `conflicts`
/// commits lost to concurrent ones.
pub(crate) fn iceberg_committed(dataset: crate::schema::Dataset, conflicts: u32) {
    counter!("feeder_writer_iceberg_snapshots_total", "dataset" => dataset.name()).increment(1);
    if conflicts > 0 {
        counter!("feeder_writer_iceberg_commit_conflicts_total").increment(u64::from(conflicts));
    }
}

/// A table already held a flushed range (a replay after a crash, or a zombie's range).
pub(crate) fn iceberg_already_held(dataset: crate::schema::Dataset) {
    counter!("feeder_writer_iceberg_ranges_already_held_total", "dataset" => dataset.name())
        .increment(1);
}
