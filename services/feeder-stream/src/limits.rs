//! Per-frame bounds of the stream stage: what one raw record may cost, whatever a device
//! (or anything that can write the raw topic) puts in it.
//!
//! Why: the checked record carries a frame's payload *and* its flags, so a frame whose
//! rows are all flagged (100,000 empty readings, each a `duplicate_reading` of the first)
//! grows past the broker's message size, the output is refused and the stage stops on
//! the same offset after every restart. Each bound here turns such a frame into a bounded
//! outcome instead:
//!
//! - more rows than [`FrameLimits::max_rows`]: quarantined `too_many_rows` before it is
//!   decoded (the rows are counted on the wire, [`crate::admit`]);
//! - more row flags than [`FrameLimits::max_row_flags`]: the rows past the cap keep no
//!   flags and the frame gets the flag `flags_truncated` (the frame is stored in full:
//!   its rows are data, only their judgement is cut short);
//! - more anomalies than [`FrameLimits::max_anomalies`]: the rest are replaced by one
//!   `anomalies_truncated` anomaly that counts them; details are cut at
//!   [`MAX_DETAIL_BYTES`];
//! - a seq more than [`FrameLimits::max_seq_ahead`] past the device's highest:
//!   quarantined `seq_jump`, the replay window stays;
//! - a row dated more than [`FrameLimits::ts_horizon_past_ms`] before or
//!   [`FrameLimits::ts_horizon_future_ms`] after the edge's `received_at`: the frame is
//!   quarantined `ts_out_of_horizon`, so one frame cannot spread over thousands of date
//!   partitions.
//!
//! With these, the checked record of a frame is at most its payload plus
//! `max_row_flags` short entries (about 30 bytes each: 300 KB at the default), and a
//! frame raises at most `max_anomalies + 1` anomaly records.

use crate::rules::{Finding, Findings, Severity};

/// The frame flag of a frame whose row flags were cut at [`FrameLimits::max_row_flags`].
pub const FLAGS_TRUNCATED: &str = "flags_truncated";
/// The anomaly that stands for those past [`FrameLimits::max_anomalies`].
pub const ANOMALIES_TRUNCATED: &str = "anomalies_truncated";
/// Longest anomaly detail kept (device event details are free text).
pub const MAX_DETAIL_BYTES: usize = 512;

/// Room kept within `message.max.bytes` for an output's key and framing (librdkafka
/// counts both; its own overhead is under 100 bytes) ([`crate::outputs`]).
pub const RECORD_OVERHEAD: usize = 512;

/// Raw bytes kept by a quarantine entry the output size guard writes.
pub const RAW_CAP: usize = 64 * 1024;

/// Raw bytes kept by the replacement of an output the broker refused (its limit is
/// unknown, so the replacement is small).
pub const REFUSED_RAW_CAP: usize = 1024;

/// The smallest `max_output_record_bytes` accepted: a guard entry (raw cap and fields)
/// must fit under it.
pub const MIN_MAX_OUTPUT_RECORD_BYTES: usize = RAW_CAP + 4 * 1024;

crate::wire_enum! {
    /// Which output of a raw record was too large (the metric's `output` label).
    pub enum TooLarge (label) {
        Checked => "checked",
        Quarantine => "quarantine",
        Anomaly => "anomaly",
    }
}

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrameLimits {
    /// Rows (readings + samples + events) a frame may carry. A simulated meter's day is 98,
    /// a vehicle's minute 60; the edge's 256 KiB payload limit allows about 130,000 empty
    /// ones.
    pub max_rows: u32,
    /// Row flag entries kept per frame (each row's flags count one per flag).
    pub max_row_flags: u32,
    /// Anomaly records per frame (plus one `anomalies_truncated` past it).
    pub max_anomalies: u32,
    /// Largest accepted step of a device's seq past its highest accepted one.
    pub max_seq_ahead: u64,
    /// Rows older than `received_at` minus this quarantine the frame (`i64::MAX`: no
    /// bound).
    pub ts_horizon_past_ms: i64,
    /// Rows later than `received_at` plus this quarantine the frame (rows between the
    /// `future_reading` margin and this are flagged `future_reading`; `i64::MAX`: no
    /// bound).
    pub ts_horizon_future_ms: i64,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            max_row_flags: 10_000,
            max_anomalies: 100,
            max_seq_ahead: 1 << 32,
            ts_horizon_past_ms: 400 * DAY_MS,
            ts_horizon_future_ms: DAY_MS,
        }
    }
}

impl FrameLimits {
    /// Checks value ranges; called when the configuration is loaded.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_rows == 0 {
            return Err("max_rows must be at least 1".into());
        }
        if self.max_seq_ahead == 0 {
            return Err("max_seq_ahead must be at least 1".into());
        }
        if self.ts_horizon_past_ms < 0 || self.ts_horizon_future_ms < 0 {
            return Err("the ts horizons must not be negative".into());
        }
        Ok(())
    }

    /// Whether `ts_ms` lies within the horizon around `received_at_ms`.
    pub fn in_horizon(&self, received_at_ms: i64, ts_ms: i64) -> bool {
        let unbounded = i64::MAX;
        let from = received_at_ms.saturating_sub(self.ts_horizon_past_ms);
        let to = received_at_ms.saturating_add(self.ts_horizon_future_ms);
        (self.ts_horizon_past_ms == unbounded || ts_ms >= from)
            && (self.ts_horizon_future_ms == unbounded || ts_ms <= to)
    }

    /// Cuts `findings` to the per-frame caps (see the module docs). Returns whether
    /// anything was cut.
    pub fn cap(&self, findings: &mut Findings) -> bool {
        let mut cut = false;
        let mut budget = self.max_row_flags as usize;
        for rows in [&mut findings.reading_flags, &mut findings.sample_flags] {
            // BTreeMap in index order: the first rows keep their flags
            let mut keep = 0;
            for flags in rows.values_mut() {
                if budget == 0 {
                    break;
                }
                if flags.len() > budget {
                    flags.truncate(budget);
                    cut = true;
                }
                budget -= flags.len();
                keep += 1;
            }
            if keep < rows.len() {
                cut = true;
                let first_cut = rows.keys().nth(keep).copied();
                if let Some(first_cut) = first_cut {
                    rows.split_off(&first_cut);
                }
            }
        }
        if cut {
            findings.frame(FLAGS_TRUNCATED);
        }
        let max = self.max_anomalies as usize;
        if findings.anomalies.len() > max {
            let dropped = findings.anomalies.split_off(max);
            let from = dropped.iter().map(|a| a.ts_from_ms).min().unwrap_or(0);
            let to = dropped.iter().map(|a| a.ts_to_ms).max().unwrap_or(0);
            findings.anomalies.push(Finding {
                rule: ANOMALIES_TRUNCATED,
                severity: Severity::Warning,
                ts_from_ms: from,
                ts_to_ms: to,
                detail: format!(
                    "{} more anomalies of this frame not recorded (cap {max})",
                    dropped.len()
                ),
                cohort: String::new(),
            });
            cut = true;
        }
        for a in &mut findings.anomalies {
            truncate_utf8(&mut a.detail, MAX_DETAIL_BYTES);
        }
        cut
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(rows: u32, flags_per_row: usize, anomalies: usize) -> Findings {
        const RULES: [&str; 3] = ["spike", "zero_run", "unit_mismatch"];
        let mut f = Findings::default();
        for i in 0..rows {
            for r in &RULES[..flags_per_row] {
                f.reading(i as usize, r);
            }
        }
        for i in 0..anomalies {
            f.anomaly(
                "cover_opened",
                Severity::Critical,
                i as i64,
                i as i64,
                "é".repeat(400),
            );
        }
        f
    }

    #[test]
    fn row_flags_past_the_cap_are_cut_and_the_frame_says_so() {
        let limits = FrameLimits {
            max_row_flags: 7,
            ..FrameLimits::default()
        };
        let mut f = findings(10, 2, 0);
        assert!(limits.cap(&mut f));
        let kept: Vec<(u32, usize)> = f.reading_flags.iter().map(|(i, v)| (*i, v.len())).collect();
        assert_eq!(kept, [(0, 2), (1, 2), (2, 2), (3, 1)]);
        assert_eq!(f.frame_flags, [FLAGS_TRUNCATED]);
        // within the cap nothing changes
        let mut g = findings(3, 2, 0);
        let before = g.clone();
        assert!(!limits.cap(&mut g));
        assert_eq!(g, before);
    }

    #[test]
    fn anomalies_past_the_cap_become_one_that_counts_them() {
        let limits = FrameLimits {
            max_anomalies: 3,
            ..FrameLimits::default()
        };
        let mut f = findings(0, 0, 10);
        assert!(limits.cap(&mut f));
        assert_eq!(f.anomalies.len(), 4);
        let last = &f.anomalies[3];
        assert_eq!(last.rule, ANOMALIES_TRUNCATED);
        assert_eq!((last.ts_from_ms, last.ts_to_ms), (3, 9));
        assert!(last.detail.starts_with("7 more"), "{}", last.detail);
        // a two-byte character is never split
        assert!(f.anomalies[0].detail.len() <= MAX_DETAIL_BYTES);
        assert_eq!(f.anomalies[0].detail.chars().count(), MAX_DETAIL_BYTES / 2);
    }

    #[test]
    fn the_horizon_saturates_at_the_ends_of_time() {
        let l = FrameLimits::default();
        assert!(l.in_horizon(i64::MIN, i64::MIN));
        assert!(l.in_horizon(i64::MAX, i64::MAX));
        assert!(!l.in_horizon(i64::MAX, 0));
        let now = 1_700_000_000_000;
        assert!(l.in_horizon(now, now - 400 * DAY_MS));
        assert!(!l.in_horizon(now, now - 400 * DAY_MS - 1));
        assert!(l.in_horizon(now, now + DAY_MS));
        assert!(!l.in_horizon(now, now + DAY_MS + 1));
        let open = FrameLimits {
            ts_horizon_past_ms: i64::MAX,
            ts_horizon_future_ms: i64::MAX,
            ..l
        };
        for (at, ts) in [(now, i64::MIN), (now, i64::MAX), (i64::MIN, i64::MAX)] {
            assert!(open.in_horizon(at, ts));
        }
    }
}
