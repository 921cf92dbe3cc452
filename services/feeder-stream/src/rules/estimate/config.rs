//! Estimation limits (`rules.estimate` in the stream's configuration, or per label in a
//! `label_overrides` entry's `estimate`). Methods are switched off by name like rules:
//! `disabled: [profile]`, or a label override's `disable: [linear]`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EstimateConfig {
    /// Estimation at all: off keeps no estimation state and writes no estimate.
    pub enabled: bool,
    /// `linear`: gaps of an instantaneous channel up to this long are interpolated.
    pub linear_max_gap_ms: i64,
    /// Gaps longer than this are reported (`gap_not_estimated`), not estimated.
    pub max_gap_ms: i64,
    /// ...and so are gaps of more intervals than this (bounds one gap's rows).
    pub max_gap_intervals: u32,
    /// `profile`: same-type days (weekday / weekend) the profile averages.
    pub profile_days: usize,
    /// Estimate rows one frame may cause; a gap past it is reported instead.
    pub max_rows_per_frame: usize,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            linear_max_gap_ms: 3_600_000,
            max_gap_ms: 7 * 86_400_000,
            max_gap_intervals: 7 * 96,
            profile_days: 4,
            max_rows_per_frame: 4096,
        }
    }
}

impl EstimateConfig {
    /// Checks value ranges; `at` names the section in errors.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.linear_max_gap_ms <= 0 || self.max_gap_ms <= 0 {
            return Err(format!(
                "{at}.linear_max_gap_ms and {at}.max_gap_ms must be positive"
            ));
        }
        if !(1..=52).contains(&self.profile_days) {
            return Err(format!("{at}.profile_days must be in 1..=52"));
        }
        if self.max_gap_intervals == 0 || self.max_gap_intervals > 10_080 {
            return Err(format!("{at}.max_gap_intervals must be in 1..=10080"));
        }
        if self.max_rows_per_frame == 0 || self.max_rows_per_frame > 20_000 {
            return Err(format!("{at}.max_rows_per_frame must be in 1..=20000"));
        }
        Ok(())
    }
}
