//! Known gaps of a channel (which intervals are still missing, what estimate is in force
//! for them) and the runs of estimate rows a frame causes.

use feeder_proto::pipeline::{EstimateMethod, EstimateRun, EstimateStatus};

use super::RULE_VERSION;

/// The estimate in force for a gap's missing intervals.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InForce {
    pub method: Method,
    /// Register proration: what the still-missing intervals add up to, in 10^`scaler`;
    /// re-spread over the rest when an actual fills part of the gap.
    pub remaining: Option<i128>,
    pub scaler: i32,
    pub basis: String,
}

/// [`EstimateMethod`] as state (serde), without its unspecified value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Method {
    RegisterProration,
    Linear,
    Profile,
}

impl Method {
    pub fn proto(self) -> EstimateMethod {
        match self {
            Method::RegisterProration => EstimateMethod::RegisterProration,
            Method::Linear => EstimateMethod::Linear,
            Method::Profile => EstimateMethod::Profile,
        }
    }
}

/// Consecutive missing intervals (or points) of one channel: ends at `first_end + k ×
/// step_ms` for k < `n`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    pub first_end: i64,
    pub step_ms: i64,
    pub n: u32,
    /// Bit k set: interval k has no actual yet.
    missing: Vec<u64>,
    pub in_force: Option<InForce>,
    /// Found by the frame being processed (not state: cleared at its end).
    #[serde(skip)]
    pub fresh: bool,
    /// Late actuals filled part of it in this frame (not state either).
    #[serde(skip)]
    pub reprorate: bool,
}

impl Gap {
    pub fn new(first_end: i64, step_ms: i64, n: u32) -> Self {
        let words = (n as usize).div_ceil(64);
        let mut missing = vec![u64::MAX; words];
        if !n.is_multiple_of(64)
            && let Some(last) = missing.last_mut()
        {
            *last = (1u64 << (n % 64)) - 1;
        }
        Self {
            first_end,
            step_ms,
            n,
            missing,
            in_force: None,
            fresh: true,
            reprorate: false,
        }
    }

    pub fn end(&self) -> i64 {
        self.first_end
            .saturating_add(self.step_ms.saturating_mul(i64::from(self.n) - 1))
    }

    /// The index of the interval ending at `ts_ms`, if it is in this gap.
    pub fn index(&self, ts_ms: i64) -> Option<u32> {
        let off = ts_ms.checked_sub(self.first_end)?;
        if off < 0 || off % self.step_ms != 0 {
            return None;
        }
        u32::try_from(off / self.step_ms)
            .ok()
            .filter(|&k| k < self.n)
    }

    pub fn is_missing(&self, k: u32) -> bool {
        self.missing[k as usize / 64] & (1 << (k % 64)) != 0
    }

    pub fn fill(&mut self, k: u32) {
        self.missing[k as usize / 64] &= !(1 << (k % 64));
    }

    pub fn missing_count(&self) -> u32 {
        self.missing.iter().map(|w| w.count_ones()).sum()
    }

    /// End times of the intervals still missing, in order.
    pub fn missing_ends(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.n).filter(|&k| self.is_missing(k)).map(|k| {
            self.first_end
                .saturating_add(self.step_ms.saturating_mul(i64::from(k)))
        })
    }

    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.missing.len() * 8
            + self.in_force.as_ref().map_or(0, |f| f.basis.len())
    }
}

/// What every row of a run shares.
#[derive(Debug, Clone, PartialEq)]
pub struct RunKey<'a> {
    pub obis: &'a str,
    pub interval_s: u32,
    pub step_ms: i64,
    pub scaler: i32,
    pub unit: i32,
    pub method: Method,
    pub status: EstimateStatus,
    pub basis: &'a str,
}

/// The estimate runs of one frame, bounded by a row budget.
#[derive(Debug, Default)]
pub struct Emitter {
    pub runs: Vec<EstimateRun>,
    pub rows: usize,
    pub cap: usize,
}

impl Emitter {
    pub fn room(&self, rows: usize) -> bool {
        self.rows.saturating_add(rows) <= self.cap
    }

    /// Appends one row, extending the last run when it continues it.
    pub fn push(&mut self, key: &RunKey<'_>, ts_ms: i64, value_raw: i64) {
        self.rows += 1;
        if let Some(last) = self.runs.last_mut()
            && last.obis == key.obis
            && last.step_ms == key.step_ms
            && last.scaler == key.scaler
            && last.method == key.method.proto() as i32
            && last.status == key.status as i32
            && last.basis == key.basis
            && last
                .step_ms
                .checked_mul(last.values_raw.len() as i64)
                .and_then(|d| last.first_ts_ms.checked_add(d))
                == Some(ts_ms)
        {
            last.values_raw.push(value_raw);
            return;
        }
        let mut run = EstimateRun {
            obis: key.obis.to_string(),
            interval_s: key.interval_s,
            step_ms: key.step_ms,
            first_ts_ms: ts_ms,
            scaler: key.scaler,
            unit: key.unit,
            basis: key.basis.to_string(),
            rule_version: RULE_VERSION.to_string(),
            values_raw: vec![value_raw],
            ..Default::default()
        };
        run.set_method(key.method.proto());
        run.set_status(key.status);
        self.runs.push(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_tracks_what_is_still_missing() {
        let mut g = Gap::new(1_000, 10, 70);
        assert_eq!(g.missing_count(), 70);
        assert_eq!(g.end(), 1_690);
        assert_eq!(
            (g.index(1_000), g.index(1_690), g.index(1_700)),
            (Some(0), Some(69), None)
        );
        assert_eq!((g.index(1_005), g.index(990)), (None, None));
        g.fill(0);
        g.fill(69);
        assert_eq!(g.missing_count(), 68);
        assert_eq!(g.missing_ends().next(), Some(1_010));
        assert!(!g.is_missing(69) && g.is_missing(68));
    }

    #[test]
    fn consecutive_rows_share_a_run() {
        let mut e = Emitter {
            cap: 10,
            ..Emitter::default()
        };
        let key = RunKey {
            obis: "1-0:1.29.0",
            interval_s: 900,
            step_ms: 900_000,
            scaler: 0,
            unit: 1,
            method: Method::Profile,
            status: EstimateStatus::Estimated,
            basis: "b",
        };
        e.push(&key, 900_000, 5);
        e.push(&key, 1_800_000, 6);
        e.push(&key, 3_600_000, 7); // skips one: a new run
        assert_eq!(e.runs.len(), 2);
        assert_eq!(e.runs[0].values_raw, [5, 6]);
        assert_eq!(e.runs[0].method(), EstimateMethod::Profile);
        assert!(e.room(7) && !e.room(8));
    }
}
