//! `fleet_silence`: the whole fleet reports far less than it has recently, an absolute
//! rule beside `cohort_silence` (`rules::cohort`).
//!
//! Why: `cohort_silence` compares a cohort with the rest of the fleet, so when every
//! cohort goes silent together (a bricking of the only module vendor a utility uses,
//! the attack the stage exists to detect) the rest of the fleet predicts nothing and
//! nothing is raised. Here the fleet is compared with its own past: the share of its
//! usually reporting devices that reported in a window, against the lowest share of
//! the previous `baseline_windows` judged windows. The minimum, not a mean, because
//! reporting is diurnal (a night window reports less than a day window, every night)
//! and with the default 24 hourly windows the minimum is last night's low: only a fall
//! well below the deepest normal dip raises.
//!
//! Windows that raised are left out of the history, so a silence lasting several
//! windows does not become the new normal while it lasts. No judgement until the
//! history holds `baseline_windows` windows (cold start): a first window already silent
//! is not known to be unusual. The history is part of the aggregator's progress record
//! (`crate::fleet`), so a restart does not start cold again.

use std::collections::VecDeque;

use super::cohort::CohortConfig;
use super::{Finding, Severity};

pub const FLEET_SILENCE: &str = crate::rules::names::FleetRule::FleetSilence.as_str();
/// The `cohort` of a `fleet_silence` finding: it is about every device.
pub const FLEET_COHORT: &str = "fleet";

/// The reporting shares (reported / usual) of the last judged windows that did not raise,
/// oldest first; at most `keep` (8 bytes each).
#[derive(Debug, Clone, PartialEq)]
pub struct ShareHistory {
    keep: usize,
    shares: VecDeque<f64>,
}

impl ShareHistory {
    /// An empty history keeping `baseline_windows` shares (cold start).
    pub fn new(cfg: &CohortConfig) -> Self {
        Self {
            keep: cfg.baseline_windows.max(1) as usize,
            shares: VecDeque::new(),
        }
    }

    /// Replaces the history with `shares` (oldest first; values that are not a share
    /// are dropped, and only the newest `keep` are kept).
    pub fn restore(&mut self, shares: &[f64]) {
        self.shares = shares
            .iter()
            .copied()
            .filter(|s| (0.0..=1.0).contains(s))
            .collect();
        while self.shares.len() > self.keep {
            self.shares.pop_front();
        }
    }

    /// The shares held, oldest first.
    pub fn shares(&self) -> Vec<f64> {
        self.shares.iter().copied().collect()
    }

    /// Judges window `w` from the fleet's totals; `note` is appended to the detail.
    /// A window that does not raise joins the history.
    pub fn judge(
        &mut self,
        cfg: &CohortConfig,
        w: i64,
        usual: u64,
        reported: u64,
        note: &str,
    ) -> Option<Finding> {
        if usual == 0 {
            return None; // nobody usually reports: nothing to compare
        }
        let share = reported as f64 / usual as f64;
        if self.shares.len() >= self.keep {
            let lowest = self.shares.iter().copied().fold(f64::INFINITY, f64::min);
            let expected = usual as f64 * lowest;
            if expected >= cfg.min_expected
                && (reported as f64) <= (1.0 - cfg.silent_share) * expected
            {
                return Some(Finding {
                    rule: FLEET_SILENCE,
                    severity: Severity::Critical,
                    ts_from_ms: w.saturating_mul(cfg.window_ms),
                    ts_to_ms: w.saturating_add(1).saturating_mul(cfg.window_ms),
                    detail: format!(
                        "{reported} of {usual} usually reporting devices of the whole fleet \
                         reported; the lowest share of the last {} windows ({lowest:.3}) \
                         predicts {expected:.0}{note}",
                        self.shares.len()
                    ),
                    cohort: FLEET_COHORT.to_string(),
                });
            }
        }
        self.shares.push_back(share);
        if self.shares.len() > self.keep {
            self.shares.pop_front();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CohortConfig {
        CohortConfig {
            baseline_windows: 24,
            ..CohortConfig::default()
        }
    }

    /// A day of hourly shares: 0.95 by day, down to 0.40 at night.
    fn diurnal(hour: i64) -> f64 {
        if (6..22).contains(&hour.rem_euclid(24)) {
            0.95
        } else {
            0.40
        }
    }

    #[test]
    fn normal_diurnal_reporting_raises_nothing() {
        let cfg = cfg();
        let mut h = ShareHistory::new(&cfg);
        for w in 0..24 * 7 {
            let reported = (1000.0 * diurnal(w)) as u64;
            assert_eq!(h.judge(&cfg, w, 1000, reported, ""), None, "window {w}");
        }
        assert_eq!(h.shares().len(), 24);
    }

    #[test]
    fn a_whole_fleet_going_silent_raises_after_the_cold_start_only() {
        let cfg = cfg();
        let mut h = ShareHistory::new(&cfg);
        // cold start: a silent window among the first 24 is not known to be unusual
        assert_eq!(h.judge(&cfg, 0, 1000, 0, ""), None);
        let mut h = ShareHistory::new(&cfg);
        for w in 0..24 {
            assert_eq!(
                h.judge(&cfg, w, 1000, (1000.0 * diurnal(w)) as u64, ""),
                None
            );
        }
        let f = h.judge(&cfg, 24, 1000, 0, " (note)").expect("raised");
        assert_eq!(
            (f.rule, f.severity, f.cohort.as_str()),
            (FLEET_SILENCE, Severity::Critical, FLEET_COHORT)
        );
        assert_eq!(
            (f.ts_from_ms, f.ts_to_ms),
            (24 * cfg.window_ms, 25 * cfg.window_ms)
        );
        assert!(f.detail.starts_with("0 of 1000 "), "{}", f.detail);
        assert!(f.detail.ends_with("predicts 400 (note)"), "{}", f.detail);
        // the silent window did not join the history: the next one raises too
        assert!(h.judge(&cfg, 25, 1000, 10, "").is_some());
        // half of the night's low (0.40 → 0.2 of 1000 = 200 reporting) is no silence
        assert_eq!(h.judge(&cfg, 26, 1000, 200, ""), None);
        // a fleet too small to judge: 40 usual × 0.4 = 16 < min_expected 20
        let mut small = ShareHistory::new(&cfg);
        for w in 0..24 {
            small.judge(&cfg, w, 40, (40.0 * diurnal(w)) as u64, "");
        }
        assert_eq!(small.judge(&cfg, 24, 40, 0, ""), None);
    }

    #[test]
    fn restored_history_judges_at_once_and_keeps_the_newest() {
        let cfg = cfg();
        let mut h = ShareHistory::new(&cfg);
        let old: Vec<f64> = (0..30).map(diurnal).collect();
        h.restore(&old);
        assert_eq!(h.shares(), old[6..]);
        assert!(h.judge(&cfg, 30, 1000, 0, "").is_some());
        // not a share: dropped
        h.restore(&[0.5, f64::NAN, 2.0]);
        assert_eq!(h.shares(), [0.5]);
    }
}
