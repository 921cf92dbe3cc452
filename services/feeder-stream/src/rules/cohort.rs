//! Fleet cohorts: devices grouped by registry labels (by default `module`, `firmware`
//! and `module`+`region`). Per cohort and time window the stage compares how many of the
//! devices that usually report did report, against the rest of the fleet in the same
//! window, and raises
//! - `cohort_silence` (critical) when a cohort reports far less than the rest of the
//!   fleet would predict: the signature of a module-level bricking. Normal diurnal
//!   reporting lowers every cohort alike, so it raises nothing;
//! - `cohort_firmware_change` (warning) when many devices of a cohort change firmware in
//!   one window.
//!
//! # Scope: the whole fleet
//! Each stream partition counts, per cohort, its own devices for every window it closes
//! ([`count`], called by `checks::PartitionState`); the counts of every partition are
//! summed and judged once by the fleet aggregator (`rules::cohort_fleet`, run by
//! `crate::fleet`), because a cohort spread over many partitions holds too few devices in
//! any one of them to be judged there. The clock is the `received_at` of checked frames:
//! a partition closes a window when the first frame of a later window arrives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Finding, Severity};

pub const COHORT_SILENCE: &str = crate::rules::names::FleetRule::CohortSilence.as_str();
pub const COHORT_FIRMWARE_CHANGE: &str =
    crate::rules::names::FleetRule::CohortFirmwareChange.as_str();

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CohortConfig {
    /// Label sets that define cohorts; a device lacking a label is in no cohort of that set.
    pub groupings: Vec<Vec<String>>,
    /// Window length, ms.
    pub window_ms: i64,
    /// A device "usually reports" when it reported in one of this many previous windows.
    pub baseline_windows: i64,
    /// `cohort_silence`: raised when the cohort's reports fall below (1 − this) of what
    /// the rest of the fleet's reporting ratio predicts...
    pub silent_share: f64,
    /// ...and that prediction is at least this many devices (statistical floor).
    pub min_expected: f64,
    /// `cohort_firmware_change`: at least this share of the cohort's usual devices...
    pub firmware_change_share: f64,
    /// ...and at least this many devices changed firmware in one window.
    pub firmware_change_min: u64,
}

impl Default for CohortConfig {
    fn default() -> Self {
        Self {
            groupings: vec![
                vec!["module".into()],
                vec!["firmware".into()],
                vec!["module".into(), "region".into()],
            ],
            window_ms: 3_600_000,
            baseline_windows: 24,
            silent_share: 0.8,
            min_expected: 20.0,
            firmware_change_share: 0.2,
            firmware_change_min: 10,
        }
    }
}

/// Per-device cohort bookkeeping (40 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CohortDevice {
    last_window: i64,
    prev_window: i64,
    firmware_hash: u64,
    firmware_changed_window: i64,
}

impl Default for CohortDevice {
    fn default() -> Self {
        Self {
            last_window: i64::MIN,
            prev_window: i64::MIN,
            firmware_hash: 0,
            firmware_changed_window: i64::MIN,
        }
    }
}

impl CohortDevice {
    /// Records a report in window `w` with `firmware`.
    pub fn seen(&mut self, w: i64, firmware: &str) {
        if w > self.last_window {
            self.prev_window = self.last_window;
            self.last_window = w;
        }
        let h = fnv1a64(firmware.as_bytes());
        if self.firmware_hash != 0 && self.firmware_hash != h {
            self.firmware_changed_window = self.last_window;
        }
        self.firmware_hash = h;
    }

    fn usual(&self, w: i64, baseline: i64) -> bool {
        let in_base = |x: i64| x < w && x >= w.saturating_sub(baseline);
        in_base(self.last_window) || (self.last_window >= w && in_base(self.prev_window))
    }
}

/// FNV-1a, 64 bits: a stable hash (it is part of the persisted state).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `module=bg95,region=north`, or `None` when a label is missing.
fn cohort_key(grouping: &[String], labels: &BTreeMap<String, String>) -> Option<String> {
    let mut key = String::new();
    for l in grouping {
        let v = labels.get(l)?;
        if !key.is_empty() {
            key.push(',');
        }
        key.push_str(l);
        key.push('=');
        key.push_str(v);
    }
    Some(key)
}

/// Per-cohort counts for one window: what a partition tallies and the fleet
/// aggregator sums (`rules::cohort_fleet`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub usual: u64,
    pub reported: u64,
    pub fw_changed: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.usual += o.usual;
        self.reported += o.reported;
        self.fw_changed += o.fw_changed;
    }
}

/// One window's counts over some devices: per cohort key (keys carry their label
/// names, so groupings never collide) and the totals of every usually-reporting device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowCounts {
    pub cohorts: BTreeMap<String, Counts>,
    pub fleet_usual: u64,
    pub fleet_reported: u64,
}

/// Counts window `w` over `devices` (each with its labels).
pub fn count<'a>(
    cfg: &CohortConfig,
    w: i64,
    devices: impl Iterator<Item = (&'a CohortDevice, &'a BTreeMap<String, String>)>,
) -> WindowCounts {
    let mut out = WindowCounts::default();
    for (d, labels) in devices {
        let usual = d.usual(w, cfg.baseline_windows);
        let reported = usual && d.last_window >= w;
        let changed = d.firmware_changed_window == w;
        if !usual && !changed {
            continue;
        }
        out.fleet_usual += u64::from(usual);
        out.fleet_reported += u64::from(reported);
        for g in &cfg.groupings {
            if let Some(key) = cohort_key(g, labels) {
                let c = out.cohorts.entry(key).or_default();
                c.usual += u64::from(usual);
                c.reported += u64::from(reported);
                c.fw_changed += u64::from(changed);
            }
        }
    }
    out
}

/// Judges window `w` over `devices` (each with its labels) alone: the findings, ordered
/// by cohort key (deterministic). Tests only: the stage judges fleet-wide counts.
#[cfg(test)]
pub fn judge<'a>(
    cfg: &CohortConfig,
    w: i64,
    devices: impl Iterator<Item = (&'a CohortDevice, &'a BTreeMap<String, String>)>,
) -> Vec<Finding> {
    judge_counts(cfg, w, &count(cfg, w, devices), "")
}

/// The judgement proper, over counts of any scope (one partition or the whole fleet);
/// `note` is appended to each finding's detail.
pub fn judge_counts(cfg: &CohortConfig, w: i64, counts: &WindowCounts, note: &str) -> Vec<Finding> {
    let (all_usual, all_reported) = (counts.fleet_usual, counts.fleet_reported);
    let (from, to) = (
        w.saturating_mul(cfg.window_ms),
        w.saturating_add(1).saturating_mul(cfg.window_ms),
    );
    let mut out = Vec::new();
    for (key, c) in &counts.cohorts {
        let others_usual = all_usual.saturating_sub(c.usual);
        if others_usual > 0 && c.usual > 0 {
            let ratio = all_reported.saturating_sub(c.reported) as f64 / others_usual as f64;
            let expected = c.usual as f64 * ratio;
            if expected >= cfg.min_expected
                && (c.reported as f64) <= (1.0 - cfg.silent_share) * expected
            {
                out.push(Finding {
                    rule: COHORT_SILENCE,
                    severity: Severity::Critical,
                    ts_from_ms: from,
                    ts_to_ms: to,
                    detail: format!(
                        "{} of {} usually reporting devices reported; the rest of the fleet predicts {:.0}{note}",
                        c.reported, c.usual, expected
                    ),
                    cohort: key.clone(),
                });
            }
        }
        if c.fw_changed >= cfg.firmware_change_min
            && c.fw_changed as f64 >= cfg.firmware_change_share * c.usual.max(1) as f64
        {
            out.push(Finding {
                rule: COHORT_FIRMWARE_CHANGE,
                severity: Severity::Warning,
                ts_from_ms: from,
                ts_to_ms: to,
                detail: format!(
                    "{} of {} devices changed firmware in the window{note}",
                    c.fw_changed, c.usual
                ),
                cohort: key.clone(),
            });
        }
    }
    out
}
