//! A channel's recent load profile: per interval of the day, the values of the last
//! `days` weekdays and, apart, of the last `days` weekend days (UTC), as `f32` rings.
//! Its mean is the `profile` estimate of a missing interval and the shape register
//! proration spreads a register difference by.

use super::DAY_MS;
/// Intervals per day above which no profile is kept (shorter than 15 minutes).
use crate::rules::meter::MAX_SLOTS_PER_DAY as MAX_SLOTS;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    interval_ms: i64,
    slots: usize,
    days: usize,
    /// `[kind][slot][day]`, kind 0 = weekday, 1 = weekend; `NaN` = no value yet.
    values: Vec<f32>,
    /// `[kind][slot]`: the ring position written next.
    next: Vec<u8>,
}

/// 0 for Monday to Friday, 1 for Saturday and Sunday (UTC), of the interval ending at
/// `ts_ms` (its start decides).
pub fn day_kind(ts_ms: i64, interval_ms: i64) -> usize {
    let day = ts_ms.saturating_sub(interval_ms).div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday: +3 makes Monday 0
    usize::from((day + 3).rem_euclid(7) >= 5)
}

impl Profile {
    pub fn new(interval_ms: i64, days: usize) -> Option<Self> {
        if interval_ms <= 0 || DAY_MS % interval_ms != 0 || DAY_MS / interval_ms > MAX_SLOTS {
            return None;
        }
        let days = days.clamp(1, 255);
        let slots = (DAY_MS / interval_ms) as usize;
        Some(Self {
            interval_ms,
            slots,
            days,
            values: vec![f32::NAN; 2 * slots * days],
            next: vec![0; 2 * slots],
        })
    }

    fn row(&self, ts_ms: i64) -> usize {
        let slot = ts_ms
            .saturating_sub(self.interval_ms)
            .div_euclid(self.interval_ms)
            .rem_euclid(self.slots as i64) as usize;
        day_kind(ts_ms, self.interval_ms) * self.slots + slot
    }

    /// Records the actual value of the interval ending at `ts_ms`.
    pub fn push(&mut self, ts_ms: i64, value: f64) {
        let row = self.row(ts_ms);
        let k = usize::from(self.next[row]) % self.days;
        self.values[row * self.days + k] = value as f32;
        self.next[row] = ((k + 1) % self.days) as u8;
    }

    /// The mean of the interval ending at `ts_ms` over the recent same-kind days, when
    /// there is at least one.
    pub fn mean(&self, ts_ms: i64) -> Option<f64> {
        let row = self.row(ts_ms);
        let (sum, n) = self.values[row * self.days..(row + 1) * self.days]
            .iter()
            .filter(|v| !v.is_nan())
            .fold((0.0f64, 0u32), |(s, n), v| (s + f64::from(*v), n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }

    pub fn bytes(&self) -> usize {
        self.values.len() * 4 + self.next.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONDAY: i64 = 1_700_438_400_000; // 2023-11-20T00:00Z, a Monday

    #[test]
    fn weekdays_and_weekends_are_kept_apart() {
        assert_eq!(day_kind(MONDAY + 900_000, 900_000), 0);
        assert_eq!(
            day_kind(MONDAY, 900_000),
            1,
            "the interval ending at midnight is Sunday's"
        );
        assert_eq!(day_kind(MONDAY + 5 * DAY_MS + 900_000, 900_000), 1);
        let mut p = Profile::new(900_000, 2).unwrap();
        assert_eq!(p.mean(MONDAY + 900_000), None);
        for (day, v) in [(0, 10.0), (1, 20.0), (2, 30.0), (5, 100.0)] {
            p.push(MONDAY + day * DAY_MS + 900_000, v);
        }
        // the last 2 weekdays (20, 30), the weekend apart
        assert_eq!(p.mean(MONDAY + 7 * DAY_MS + 900_000), Some(25.0));
        assert_eq!(p.mean(MONDAY + 6 * DAY_MS + 900_000), Some(100.0));
        assert_eq!(p.mean(MONDAY + 2 * 900_000), None, "another slot");
        assert!(Profile::new(60_000, 4).is_none());
        assert!(Profile::new(7 * 60_000, 4).is_none());
    }
}
