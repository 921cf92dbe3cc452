//! Records of the stage's own topics that do not decode: counted and skipped, never
//! fatal.
//!
//! Why: the stage reads back what it wrote (checked, quarantine and anomalies during
//! recovery, the state changelog, the cohort tallies and progress), and anything with
//! write access to those topics (a misconfigured producer, an older or newer version, a
//! bit flip) can put a record there that is not ours. Failing on it would fail the
//! partition's recovery on every assignment: that partition would never be processed
//! again. Skipping is safe for each of them (raw records are the pure core's job:
//! quarantined `malformed_record`):
//!
//! - checked: a frame we cannot read is not replayed into the state; its raw record, if
//!   not committed, is decided again (at worst output twice, never lost);
//! - quarantine, anomalies: they mark nothing as done (at worst output twice);
//! - changelog: the partition falls back to the full rebuild from the checked log;
//! - cohort tallies: one partition's counts for one window are missing (the window is
//!   judged after the grace, `partial`);
//! - cohort progress: the last record that decodes (and is valid) is used.
//!
//! Each skip is counted in `feeder_stream_undecodable_records_total{topic}` and in
//! [`crate::StreamStats::undecodable_skipped`] (`crate::observe::skipped`).

crate::wire_enum! {
    /// A topic the stage reads records of its own from (the metric's `topic` label).
    pub enum ReadTopic (label) {
        Checked => "checked",
        Quarantine => "quarantine",
        Anomalies => "anomalies",
        StreamState => "stream_state",
        CohortTallies => "cohort_tallies",
        CohortProgress => "cohort_progress",
    }
}

/// Undecodable records skipped, per topic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped([u64; ReadTopic::ALL.len()]);

impl Skipped {
    pub fn add(&mut self, topic: ReadTopic, n: u64) {
        let c = &mut self.0[topic as usize];
        *c = c.saturating_add(n);
    }

    pub fn get(&self, topic: ReadTopic) -> u64 {
        self.0[topic as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().fold(0, |a, n| a.saturating_add(*n))
    }
}
