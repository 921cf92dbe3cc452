//! Every metric of the stream stage, in one place, named `feeder_stream_<what>_<unit>`
//! with bounded labels (reasons, rules, outputs, topics: fixed sets; never a device id or
//! a partition).
//!
//! Why one place: the stage's numbers are read twice, by Prometheus and by the callers of
//! [`StreamStats`] (the binary, the demo, tests). Both are fed here from one set of
//! counts ([`BatchCounts`]), emitted once per batch, recovery, snapshot or judgement,
//! never per record, so the two can never disagree or drift apart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::admit::Reason;
use crate::limits::TooLarge;
use crate::skipped::{ReadTopic, Skipped};
use crate::stats::{FleetStats, StreamStats};

/// What one batch of the partition loop did: the one set of counts its metrics and
/// [`StreamStats`] are fed from ([`batch`]).
#[derive(Debug, Default)]
pub(crate) struct BatchCounts {
    pub(crate) records_in: u64,
    pub(crate) dropped_on_rebalance: u64,
    pub(crate) checked: u64,
    pub(crate) quarantined: u64,
    pub(crate) gaps: u64,
    pub(crate) anomalies: u64,
    pub(crate) flagged: u64,
    pub(crate) tallies_sent: u64,
    /// Outputs over the size limit or refused for their size, by output.
    too_large: [u64; TooLarge::ALL.len()],
    /// Quarantined records by reason label, and replays absorbed (counted, not
    /// written) by reason.
    quarantined_by_reason: BTreeMap<Reason, u64>,
    replays_absorbed: BTreeMap<Reason, u64>,
    /// Rule findings by rule, estimates by (method, status), taken from the partitions'
    /// states.
    rule_findings: BTreeMap<&'static str, u64>,
    estimates: BTreeMap<(&'static str, &'static str), u64>,
}

impl BatchCounts {
    pub(crate) fn quarantined(&mut self, reason: Reason) {
        self.quarantined += 1;
        *self.quarantined_by_reason.entry(reason).or_default() += 1;
    }

    pub(crate) fn absorbed(&mut self, reason: Reason) {
        self.quarantined += 1;
        *self.replays_absorbed.entry(reason).or_default() += 1;
    }

    /// The guard replaced a record's outputs by an `output_too_large` entry.
    pub(crate) fn guarded(&mut self, what: TooLarge) {
        self.too_large[what as usize] += 1;
        self.quarantined(Reason::OutputTooLarge);
    }

    /// The broker refused an output for its size (`what` names the output) and it was
    /// replaced.
    pub(crate) fn refused(&mut self, what: TooLarge) {
        self.too_large[what as usize] += 1;
        if what == TooLarge::Anomaly {
            return; // replaced by a cut anomaly: the frame's own output stands
        }
        *self
            .quarantined_by_reason
            .entry(Reason::OutputTooLarge)
            .or_default() += 1;
        if what == TooLarge::Checked {
            self.checked = self.checked.saturating_sub(1);
            self.quarantined += 1;
        }
    }

    pub(crate) fn rule_findings(&mut self, counts: BTreeMap<&'static str, u64>) {
        for (rule, n) in counts {
            *self.rule_findings.entry(rule).or_default() += n;
        }
    }

    pub(crate) fn estimates(&mut self, counts: BTreeMap<(&'static str, &'static str), u64>) {
        for (k, n) in counts {
            *self.estimates.entry(k).or_default() += n;
        }
    }
}

fn add(total: &AtomicU64, n: u64) {
    total.fetch_add(n, Ordering::Relaxed);
}

/// A batch decided, produced and committed (or its commit lost to a rebalance).
pub(crate) fn batch(stats: &StreamStats, c: &BatchCounts, elapsed: Duration) {
    add(&stats.records_in, c.records_in);
    add(&stats.checked, c.checked);
    add(&stats.quarantined, c.quarantined);
    add(&stats.gaps, c.gaps);
    add(&stats.anomalies, c.anomalies);
    add(&stats.flagged, c.flagged);
    add(&stats.tallies_sent, c.tallies_sent);
    add(&stats.dropped_on_rebalance, c.dropped_on_rebalance);
    counter!("feeder_stream_records_total").increment(c.records_in);
    counter!("feeder_stream_checked_total").increment(c.checked);
    counter!("feeder_stream_gap_flags_total").increment(c.gaps);
    counter!("feeder_stream_anomalies_total").increment(c.anomalies);
    counter!("feeder_stream_flagged_frames_total").increment(c.flagged);
    for (rule, n) in &c.rule_findings {
        counter!("feeder_stream_rule_findings_total", "rule" => *rule).increment(*n);
    }
    for (&(method, status), &n) in &c.estimates {
        counter!("feeder_stream_estimates_total", "method" => method, "status" => status)
            .increment(n);
        add(
            match status {
                "superseded" => &stats.superseded,
                _ => &stats.estimated,
            },
            n,
        );
    }
    add(&stats.outputs_too_large, c.too_large.iter().sum());
    for what in TooLarge::ALL {
        let n = c.too_large[what as usize];
        if n > 0 {
            counter!("feeder_stream_outputs_too_large_total", "output" => what.label())
                .increment(n);
        }
    }
    for (reason, n) in &c.quarantined_by_reason {
        counter!("feeder_stream_quarantined_total", "reason" => reason.as_str()).increment(*n);
    }
    for (reason, n) in &c.replays_absorbed {
        counter!("feeder_stream_replays_counted_total", "reason" => reason.as_str()).increment(*n);
    }
    histogram!("feeder_stream_batch_seconds").record(elapsed.as_secs_f64());
}

/// A batch fetched before a rebalance and dropped whole (left to the partitions' next
/// owner).
pub(crate) fn dropped_on_rebalance(stats: &StreamStats, records: u64) {
    add(&stats.dropped_on_rebalance, records);
}

/// Tallies the idle clock sent (outside a batch) and the windows it closed.
pub(crate) fn idle_closed(stats: &StreamStats, tallies: u64, windows: u64) {
    add(&stats.tallies_sent, tallies);
    if windows > 0 {
        counter!("feeder_stream_cohort_idle_closed_windows_total").increment(windows);
    }
}

pub(crate) fn idle_query_failed() {
    counter!("feeder_stream_cohort_idle_query_failures_total").increment(1);
}

/// A partition sought back and claimed again: another writer's record landed among its
/// outputs, in log `output` (`crate::partition::continuity`).
pub(crate) fn rewound(output: crate::outputs::Output) {
    counter!("feeder_stream_partition_rewinds_total", "log" => output.label()).increment(1);
}

/// A raw offset commit refused because the group moved partitions meanwhile.
pub(crate) fn commit_lost_to_rebalance() {
    counter!("feeder_stream_commits_lost_to_rebalance_total").increment(1);
}

/// A consumer error waited out; `consumer` is `raw` or `cohort_tallies`.
pub(crate) fn consumer_error(consumer: &'static str) {
    counter!("feeder_stream_consumer_errors_total", "consumer" => consumer).increment(1);
}

pub(crate) fn rebalance() {
    counter!("feeder_stream_rebalances_total").increment(1);
}

pub(crate) fn partition_claimed() {
    counter!("feeder_stream_partition_claims_total").increment(1);
}

/// A partition's state rebuilt from the logs.
pub(crate) fn recovered(
    stats: &StreamStats,
    restored_devices: u64,
    replayed_checked: u64,
    elapsed: Duration,
) {
    add(&stats.restored_devices, restored_devices);
    add(&stats.replayed_checked, replayed_checked);
    histogram!("feeder_stream_recovery_seconds").record(elapsed.as_secs_f64());
}

/// Outputs of a replaced owner met during recovery (`crate::fence`).
pub(crate) fn superseded_outputs(n: u64) {
    counter!("feeder_stream_superseded_outputs_total").increment(n);
}

/// A changelog not used by recovery, and why.
pub(crate) fn state_rejected(cause: &'static str) {
    counter!("feeder_stream_state_rejected_total", "cause" => cause).increment(1);
}

/// Device states and checkpoints written to the changelog.
pub(crate) fn snapshot(devices: u64, elapsed: Duration) {
    if devices > 0 {
        counter!("feeder_stream_state_snapshot_devices_total").increment(devices);
        histogram!("feeder_stream_state_snapshot_seconds").record(elapsed.as_secs_f64());
    }
}

/// Undecodable records skipped (`crate::skipped`), once per recovery or batch.
pub(crate) fn skipped(partition: i32, skipped: &Skipped, total: &AtomicU64) {
    for topic in ReadTopic::ALL {
        let n = skipped.get(topic);
        if n > 0 {
            tracing::warn!(
                partition,
                topic = topic.label(),
                records = n,
                "undecodable records skipped"
            );
            counter!("feeder_stream_undecodable_records_total", "topic" => topic.label())
                .increment(n);
        }
    }
    add(total, skipped.total());
}

/// A registry file reload (`crate::labels_reload`), taken or refused.
pub(crate) fn registry_reload(ok: bool) {
    if ok {
        counter!("feeder_stream_registry_reloads_total").increment(1);
    } else {
        counter!("feeder_stream_registry_reload_failures_total").increment(1);
    }
}

/// What one pass of the fleet aggregator did ([`fleet_pass`]).
#[derive(Debug, Default)]
pub(crate) struct FleetCounts {
    pub(crate) tallies: u64,
    pub(crate) findings: BTreeMap<&'static str, u64>,
}

/// Tallies read and findings written by the aggregator since its last pass; the judged
/// window and open windows when it judged.
pub(crate) fn fleet_pass(stats: &FleetStats, c: &FleetCounts, judged: Option<(i64, u64, usize)>) {
    if c.tallies > 0 {
        add(&stats.tallies, c.tallies);
        counter!("feeder_stream_cohort_tallies_total").increment(c.tallies);
    }
    for (rule, n) in &c.findings {
        add(&stats.findings, *n);
        counter!("feeder_stream_rule_findings_total", "rule" => *rule).increment(*n);
    }
    if let Some((judged, windows_judged, open)) = judged {
        stats
            .windows_judged
            .store(windows_judged, Ordering::Relaxed);
        gauge!("feeder_stream_cohort_judged_window").set(judged as f64);
        gauge!("feeder_stream_cohort_open_windows").set(open as f64);
    }
}
