//! Integrity rules that need no physics: whether the device's clock agrees with the edge
//! (`clock_skew`), whether it reports the future (`future_reading`), whether a reading's
//! interval length is the one the device usually sends (`interval_mismatch`, via
//! [`UsualInterval`], which the meter channel state holds), and whether a frame carries
//! the same (ts, obis) twice (`duplicate_reading`).
//!
//! "Now" is the edge's `received_at_ms`: simulated meters backfill a year of past days,
//! so readings far in the past are normal, and only readings later than now plus a
//! margin are suspect.

use std::collections::HashSet;

use feeder_proto::v1::{Frame, Reading};

use super::{Effective, Findings, FrameCtx};

pub const CLOCK_SKEW: &str = crate::rules::names::DeviceRule::ClockSkew.as_str();
pub const FUTURE_READING: &str = crate::rules::names::DeviceRule::FutureReading.as_str();
pub const INTERVAL_MISMATCH: &str = crate::rules::names::DeviceRule::IntervalMismatch.as_str();
pub const DUPLICATE_READING: &str = crate::rules::names::DeviceRule::DuplicateReading.as_str();

/// Frame-level integrity checks (the interval check runs with the meter channels).
pub fn check(eff: &Effective<'_>, ctx: FrameCtx<'_>, frame: &Frame, out: &mut Findings) {
    let cfg = eff.integrity;
    if eff.enabled(CLOCK_SKEW)
        && frame.sent_at_ms != 0
        && frame.sent_at_ms.abs_diff(ctx.received_at_ms)
            > cfg.max_clock_skew_ms.max(0).unsigned_abs()
    {
        out.frame(CLOCK_SKEW);
    }
    if eff.enabled(FUTURE_READING) {
        let limit = ctx.received_at_ms.saturating_add(cfg.future_margin_ms);
        for (i, r) in frame.readings.iter().enumerate() {
            if r.ts_ms > limit {
                out.reading(i, FUTURE_READING);
            }
        }
        for (i, s) in frame.samples.iter().enumerate() {
            if s.ts_ms > limit {
                out.sample(i, FUTURE_READING);
            }
        }
    }
    if eff.enabled(DUPLICATE_READING)
        && frame.readings.len() > 1
        && !each_code_moves_forward(&frame.readings)
    {
        let mut seen = HashSet::with_capacity(frame.readings.len());
        for (i, r) in frame.readings.iter().enumerate() {
            if !seen.insert((r.ts_ms, r.obis.as_str())) {
                out.reading(i, DUPLICATE_READING);
            }
        }
    }
}

/// Codes per frame the shortcut of [`each_code_moves_forward`] follows.
const FORWARD_CODES: usize = 8;

/// True when every OBIS code's readings are in strictly increasing time order in the
/// frame (what a meter sends), so no (ts, obis) can repeat: the hashing of every
/// reading is skipped. Readings come grouped by code, so the code of the reading before
/// is compared first. False (the hash set decides) on anything else, or past
/// [`FORWARD_CODES`] codes.
fn each_code_moves_forward(readings: &[Reading]) -> bool {
    let mut codes: [(&str, i64); FORWARD_CODES] = [("", i64::MIN); FORWARD_CODES];
    let (mut n, mut cur) = (0, 0);
    for r in readings {
        let obis = r.obis.as_str();
        if n == 0 || codes[cur].0 != obis {
            match codes[..n].iter().position(|c| c.0 == obis) {
                Some(k) => cur = k,
                None if n < FORWARD_CODES => {
                    codes[n] = (obis, i64::MIN);
                    cur = n;
                    n += 1;
                }
                None => return false,
            }
        }
        if r.ts_ms <= codes[cur].1 {
            return false;
        }
        codes[cur].1 = r.ts_ms;
    }
    true
}

/// The interval length a channel usually has: the length seen in the last
/// [`UsualInterval::CONFIRM`] consecutive readings. A change is flagged until the new
/// length has been confirmed, so a reconfigured meter is flagged for a few readings only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsualInterval {
    usual_s: u32,
    candidate_s: u32,
    streak: u32,
}

impl UsualInterval {
    pub const CONFIRM: u32 = 3;

    /// Records a reading's length; true when it disagrees with an established usual one.
    pub fn observe(&mut self, interval_s: u32) -> bool {
        if interval_s == self.usual_s {
            self.streak = 0;
            return false;
        }
        if interval_s == self.candidate_s {
            self.streak += 1;
        } else {
            self.candidate_s = interval_s;
            self.streak = 1;
        }
        let established = self.usual_s != 0;
        if self.streak >= Self::CONFIRM || !established {
            self.usual_s = interval_s;
            self.streak = 0;
        }
        established
    }

    pub fn usual_s(&self) -> u32 {
        self.usual_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RulesConfig;
    use feeder_proto::v1::{Reading, Sample};

    fn reading(ts_ms: i64, obis: &str) -> Reading {
        Reading {
            ts_ms,
            interval_s: 900,
            obis: obis.into(),
            value: 1,
            ..Default::default()
        }
    }

    fn run(frame: &Frame, received_at_ms: i64) -> Findings {
        let cfg = RulesConfig::default();
        let mut out = Findings::default();
        let ctx = FrameCtx {
            received_at_ms,
            labels: None,
        };
        check(&cfg.effective(None), ctx, frame, &mut out);
        out
    }

    #[test]
    fn clock_skew_beyond_the_limit_flags_the_frame() {
        let now = 1_700_000_000_000;
        for (sent, flagged) in [
            (now, false),
            (now - 5 * 60_000, false),
            (now - 5 * 60_000 - 1, true),
            (now + 3_600_000, true),
        ] {
            let f = Frame {
                sent_at_ms: sent,
                ..Default::default()
            };
            assert_eq!(
                run(&f, now).frame_flags.contains(&CLOCK_SKEW),
                flagged,
                "{sent}"
            );
        }
    }

    #[test]
    fn future_readings_and_samples_beyond_the_margin() {
        let now = 1_700_000_000_000;
        let f = Frame {
            sent_at_ms: now,
            readings: vec![
                reading(now - 86_400_000 * 300, "1-0:1.29.0"), // backfill: fine
                reading(now + 15 * 60_000, "1-0:1.29.0"),      // within margin
                reading(now + 15 * 60_000 + 1, "1-0:1.29.0"),
            ],
            samples: vec![Sample {
                ts_ms: now + 86_400_000,
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = run(&f, now);
        assert_eq!(out.reading_flags.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(out.sample_flags[&0], [FUTURE_READING]);
        assert!(out.frame_flags.is_empty());
    }

    #[test]
    fn duplicate_ts_and_obis_in_a_frame_flags_the_second() {
        let f = Frame {
            readings: vec![
                reading(1000, "1-0:1.29.0"),
                reading(1000, "1-0:1.8.0"),
                reading(1000, "1-0:1.29.0"),
            ],
            ..Default::default()
        };
        let out = run(&f, 1000);
        assert_eq!(out.reading_flags.len(), 1);
        assert_eq!(out.reading_flags[&2], [DUPLICATE_READING]);
    }

    proptest::proptest! {
        /// The shortcut for frames whose codes move forward flags exactly what the hash
        /// set alone flags, on frames of up to 10 codes with colliding times.
        #[test]
        fn duplicates_are_what_the_hash_set_alone_finds(
            rows in proptest::collection::vec((0i64..6, 0usize..10), 0..40),
        ) {
            let codes: Vec<String> = (0..10).map(|c| format!("1-0:{c}.29.0")).collect();
            let f = Frame {
                readings: rows.iter().map(|&(ts, c)| reading(ts, &codes[c])).collect(),
                ..Default::default()
            };
            let mut seen = HashSet::new();
            let want: Vec<u32> = f
                .readings
                .iter()
                .enumerate()
                .filter(|(_, r)| !seen.insert((r.ts_ms, r.obis.as_str())))
                .map(|(i, _)| i as u32)
                .collect();
            let got: Vec<u32> = run(&f, 0)
                .reading_flags
                .iter()
                .filter(|(_, f)| f.contains(&DUPLICATE_READING))
                .map(|(i, _)| *i)
                .collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn usual_interval_is_learned_and_a_change_is_flagged_until_confirmed() {
        let mut u = UsualInterval::default();
        assert!(!u.observe(900));
        assert!(!u.observe(900));
        assert_eq!(u.usual_s(), 900);
        assert!(u.observe(300));
        assert!(!u.observe(900)); // back to usual
        assert!(u.observe(300));
        assert!(u.observe(300));
        assert!(u.observe(300)); // third in a row: now the usual one
        assert_eq!(u.usual_s(), 300);
        assert!(!u.observe(300));
    }
}
