//! Counters a caller (the `feeder` binary, the demo, tests) can read while the stage
//! runs. They are written only by `crate::observe`, from the same counts the
//! Prometheus metrics are emitted from: one source for both.

use std::sync::atomic::AtomicU64;

/// Totals since start.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub records_in: AtomicU64,
    pub checked: AtomicU64,
    pub quarantined: AtomicU64,
    pub gaps: AtomicU64,
    /// Anomaly records produced.
    pub anomalies: AtomicU64,
    /// Checked frames carrying any rule flag (besides `gap_before`) on the frame or a row.
    pub flagged: AtomicU64,
    /// Estimate rows (VEE) in checked records: intervals estimated...
    pub estimated: AtomicU64,
    /// ...and estimates superseded by late actuals.
    pub superseded: AtomicU64,
    /// Devices restored from the state changelog when partitions were assigned.
    pub restored_devices: AtomicU64,
    /// Checked records replayed on top of the changelog (all of them without one).
    pub replayed_checked: AtomicU64,
    /// Cohort window tallies sent to the fleet aggregator.
    pub tallies_sent: AtomicU64,
    /// Records fetched before a rebalance and left to the partition's next owner.
    pub dropped_on_rebalance: AtomicU64,
    /// Outputs over the size limit (or refused by the broker for their size): their raw
    /// record went to quarantine as `output_too_large`, or an anomaly was cut
    /// ([`crate::outputs::guard`]).
    pub outputs_too_large: AtomicU64,
    /// Records of the stage's own topics (checked, quarantine, anomalies, changelog,
    /// cohort topics) that did not decode and were skipped.
    pub undecodable_skipped: AtomicU64,
    /// The fleet cohort aggregator of this process.
    pub fleet: FleetStats,
}

/// The fleet cohort aggregator's counters ([`crate::fleet`]).
#[derive(Debug, Default)]
pub struct FleetStats {
    pub tallies: AtomicU64,
    pub windows_judged: AtomicU64,
    pub findings: AtomicU64,
}
