//! Meter validation (the "V" of VEE): per-reading rules against the device's own recent
//! history, run on every accepted meter frame.
//!
//! Readings are sorted into three kinds by shape: interval channels (`interval_s > 0`,
//! e.g. `1-0:1.29.0`), cumulative registers (`interval_s == 0`, OBIS D = 8, e.g.
//! `1-0:1.8.0`) and instantaneous values (the rest, e.g. voltage `1-0:32.7.0`). Interval
//! readings are processed before registers, so the sum check sees the intervals of the
//! same frame whatever their order in it. Readings older than what the channel already
//! saw (a retried, out-of-order frame) get the per-reading checks only: the time-series
//! rules move forward in time.
//!
//! Rules: `missing_intervals`, `interval_mismatch`, `spike` (same time-of-day slot over
//! the last `history_days`, median + k × max(1.4826 × MAD, floor)), `zero_run`
//! (outage-aware), `reverse_flow`, `register_decrease` / `register_rollover`,
//! `sum_mismatch`, `voltage_out_of_band`, `unit_mismatch`.

use feeder_proto::v1::{EventKind, Frame, Reading, Unit};

use super::integrity::{INTERVAL_MISMATCH, UsualInterval};
use super::{Effective, Findings, FrameCtx, Severity};

pub const MISSING_INTERVALS: &str = crate::rules::names::DeviceRule::MissingIntervals.as_str();
pub const SPIKE: &str = crate::rules::names::DeviceRule::Spike.as_str();
pub const ZERO_RUN: &str = crate::rules::names::DeviceRule::ZeroRun.as_str();
pub const REVERSE_FLOW: &str = crate::rules::names::DeviceRule::ReverseFlow.as_str();
pub const REGISTER_DECREASE: &str = crate::rules::names::DeviceRule::RegisterDecrease.as_str();
pub const REGISTER_ROLLOVER: &str = crate::rules::names::DeviceRule::RegisterRollover.as_str();
pub const SUM_MISMATCH: &str = crate::rules::names::DeviceRule::SumMismatch.as_str();
pub const VOLTAGE_OUT_OF_BAND: &str = crate::rules::names::DeviceRule::VoltageOutOfBand.as_str();
pub const UNIT_MISMATCH: &str = crate::rules::names::DeviceRule::UnitMismatch.as_str();

/// Interval channels with time-series state per device; more are checked per reading only.
pub const MAX_CHANNELS: usize = 4;
/// Registers with state per device.
pub const MAX_REGISTERS: usize = 4;
/// Slots per day above which no spike history is kept (intervals shorter than 15 min).
pub const MAX_SLOTS_PER_DAY: i64 = 96;
const DAY_MS: i64 = 86_400_000;

/// The groups of an OBIS code `A-B:C.D.E` that the rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Obis {
    pub a: u8,
    pub c: u8,
    pub d: u8,
}

impl Obis {
    /// A of `A-B:C.D...` (what precedes the first `-` before the first `:`), C and D,
    /// each as `u8::from_str` reads it; the rest is ignored. It runs on every reading, so
    /// it scans bytes (the separators are ASCII, never inside a UTF-8 sequence) instead
    /// of `str::split`'s char searchers: the same codes for every input
    /// (`parse_agrees_with_the_str_splitting_reference` below).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let colon = b.iter().position(|&x| x == b':')?;
        let (ab, cde) = (&b[..colon], &b[colon + 1..]);
        let a_end = ab.iter().position(|&x| x == b'-').unwrap_or(ab.len());
        let a = obis_group(&ab[..a_end])?;
        let mut it = cde.split(|&x| x == b'.');
        let c = obis_group(it.next()?)?;
        let d = obis_group(it.next()?)?;
        Some(Self { a, c, d })
    }

    /// The unit the code's quantity is measured in, when the rules know it.
    pub fn expected_unit(self) -> Option<Unit> {
        match (self.a, self.c, self.d) {
            (7, _, _) | (8, _, _) | (9, _, _) => Some(Unit::M3),
            // energy: cumulative (8), over an interval (29), last billing period (9)
            (1, 1 | 2 | 21 | 22 | 41 | 42 | 61 | 62, 8 | 9 | 29) => Some(Unit::Wh),
            (1, 3..=8, 8 | 9 | 29) => Some(Unit::Varh),
            (1, 9 | 10, 8 | 9 | 29) => Some(Unit::Vah),
            // instantaneous / averages
            (1, 1 | 2 | 16 | 21 | 22 | 41 | 42 | 61 | 62, 4 | 5 | 7 | 24 | 25) => Some(Unit::W),
            (1, 3 | 4, 4 | 5 | 7 | 24 | 25) => Some(Unit::Var),
            (1, 9 | 10, 4 | 5 | 7 | 24 | 25) => Some(Unit::Va),
            (1, 12 | 32 | 52 | 72, 7 | 24 | 25) => Some(Unit::V),
            (1, 11 | 31 | 51 | 71 | 91, 7 | 24 | 25) => Some(Unit::A),
            (1, 14, 7) => Some(Unit::Hz),
            _ => None,
        }
    }

    fn is_voltage(self) -> bool {
        self.a == 1 && matches!(self.c, 12 | 32 | 52 | 72) && self.d == 7
    }

    fn is_import_energy(self) -> bool {
        self.a == 1 && self.c == 1
    }
}

/// One OBIS group as `u8::from_str` reads it: an optional `+`, then 1+ decimal digits,
/// at most 255.
fn obis_group(b: &[u8]) -> Option<u8> {
    let digits = b.strip_prefix(b"+").unwrap_or(b);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u8, |v, &x| {
        let d = x.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v.checked_mul(10)?.checked_add(d)
    })
}

fn value_of(r: &Reading) -> f64 {
    r.value as f64 * 10f64.powi(r.scaler)
}

/// Same-time-of-day history of one interval channel: `days` values per slot, a ring per
/// slot; `NaN` marks an empty place.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SlotHistory {
    interval_ms: i64,
    slots: usize,
    days: usize,
    values: Vec<f32>,
    next: Vec<u8>,
}

impl SlotHistory {
    fn new(interval_s: u32, days: usize) -> Option<Self> {
        let interval_ms = i64::from(interval_s) * 1000;
        if interval_ms == 0 || DAY_MS % interval_ms != 0 || DAY_MS / interval_ms > MAX_SLOTS_PER_DAY
        {
            return None;
        }
        let slots = (DAY_MS / interval_ms) as usize;
        Some(Self {
            interval_ms,
            slots,
            days,
            values: vec![f32::NAN; slots * days],
            next: vec![0; slots],
        })
    }

    fn slot(&self, ts_ms: i64) -> usize {
        (ts_ms.div_euclid(self.interval_ms)).rem_euclid(self.slots as i64) as usize
    }

    /// (median, MAD) of the slot's history, when it holds at least `min` values.
    fn stats(&self, slot: usize, min: usize, scratch: &mut Vec<f32>) -> Option<(f64, f64)> {
        scratch.clear();
        scratch.extend(
            self.values[slot * self.days..(slot + 1) * self.days]
                .iter()
                .filter(|v| !v.is_nan()),
        );
        if scratch.len() < min {
            return None;
        }
        let med = median(scratch);
        Some((med, median_deviation(scratch, med as f32)))
    }

    fn push(&mut self, slot: usize, v: f64) {
        let k = usize::from(self.next[slot]);
        self.values[slot * self.days + k] = v as f32;
        self.next[slot] = ((k + 1) % self.days) as u8;
    }

    fn bytes(&self) -> usize {
        self.values.len() * 4 + self.next.len()
    }
}

/// The median of `|v - med|` over `sorted` (ascending by `total_cmp`), what [`median`]
/// of the deviations gives, without sorting them again (the spike rule asks once per
/// interval reading): the deviations of the values below `med` grow leftwards and those
/// of the rest rightwards, so the middle ones are found by merging the two runs. Values
/// that are not all finite (a NaN deviation would break the runs) take the sort.
fn median_deviation(sorted: &mut [f32], med: f32) -> f64 {
    let n = sorted.len();
    let finite = |v: Option<&f32>| v.is_some_and(|v| v.is_finite());
    if !(finite(sorted.first()) && finite(sorted.last())) {
        for v in sorted.iter_mut() {
            *v = (*v - med).abs();
        }
        return median(sorted);
    }
    let split = sorted.partition_point(|v| *v < med);
    let (mut left, mut right) = (split, split);
    let (mut prev, mut cur) = (0f32, 0f32);
    for _ in 0..=n / 2 {
        let dl = left.checked_sub(1).map(|i| (sorted[i] - med).abs());
        let dr = sorted.get(right).map(|v| (v - med).abs());
        prev = cur;
        cur = match (dl, dr) {
            (Some(a), Some(b)) if a.total_cmp(&b).is_le() => {
                left -= 1;
                a
            }
            (Some(a), None) => {
                left -= 1;
                a
            }
            (_, Some(b)) => {
                right += 1;
                b
            }
            (None, None) => unreachable!("n / 2 + 1 steps over n values"),
        };
    }
    if n % 2 == 1 {
        f64::from(cur)
    } else {
        (f64::from(prev) + f64::from(cur)) / 2.0
    }
}

fn median(v: &mut [f32]) -> f64 {
    v.sort_unstable_by(f32::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        f64::from(v[n / 2])
    } else {
        (f64::from(v[n / 2 - 1]) + f64::from(v[n / 2])) / 2.0
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Channel {
    obis: String,
    code: Option<Obis>,
    unit: i32,
    last_ts: i64,
    usual: UsualInterval,
    zero_run_start: Option<i64>,
    zero_run_reported: bool,
    /// Σ interval values since the last register snapshot of the same quantity...
    sum: f64,
    /// ...their total length, s...
    covered_s: i64,
    /// ...and the latest interval end included.
    sum_to_ts: i64,
    history: Option<SlotHistory>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Register {
    obis: String,
    code: Option<Obis>,
    last_ts: i64,
    last_raw: i64,
    scaler: i32,
}

/// A meter's rule state (bounded: see the `rules` module docs).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeterState {
    channels: Vec<Channel>,
    registers: Vec<Register>,
    /// Start of a power outage reported and not yet restored.
    outage_since: Option<i64>,
    /// Working space of the spike rule, not state.
    #[serde(skip)]
    scratch: Vec<f32>,
}

impl MeterState {
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .channels
                .iter()
                .map(|c| {
                    std::mem::size_of::<Channel>()
                        + c.obis.len()
                        + c.history.as_ref().map_or(0, SlotHistory::bytes)
                })
                .sum::<usize>()
            + self
                .registers
                .iter()
                .map(|r| std::mem::size_of::<Register>() + r.obis.len())
                .sum::<usize>()
            + self.scratch.capacity() * 4
    }

    /// Outage periods touching this frame: `[from, to]`, `to = i64::MAX` while open.
    fn outages(&mut self, frame: &Frame) -> Vec<(i64, i64)> {
        let mut events: Vec<_> = frame
            .events
            .iter()
            .filter(|e| {
                e.kind == EventKind::PowerOutage as i32 || e.kind == EventKind::PowerRestored as i32
            })
            .collect();
        if events.is_empty() {
            return self
                .outage_since
                .map(|t| vec![(t, i64::MAX)])
                .unwrap_or_default();
        }
        events.sort_by_key(|e| e.ts_ms);
        let mut out = Vec::new();
        let mut open = self.outage_since;
        for e in events {
            if e.kind == EventKind::PowerOutage as i32 {
                open.get_or_insert(e.ts_ms);
            } else {
                // a restore without its outage event still says power was off before it
                out.push((open.take().unwrap_or(i64::MIN), e.ts_ms));
            }
        }
        if let Some(t) = open {
            out.push((t, i64::MAX));
        }
        self.outage_since = open;
        out
    }

    pub fn check(
        &mut self,
        eff: &Effective<'_>,
        _ctx: FrameCtx<'_>,
        frame: &Frame,
        out: &mut Findings,
    ) {
        let outages = self.outages(frame);
        // pass 1: interval channels
        for (i, r) in frame.readings.iter().enumerate() {
            if r.interval_s > 0 {
                let code = self.check_unit(eff, i, r, out);
                self.interval(eff, i, r, code, &outages, out);
            }
        }
        // pass 2: registers and instantaneous values
        for (i, r) in frame.readings.iter().enumerate() {
            if r.interval_s > 0 {
                continue;
            }
            let code = self.check_unit(eff, i, r, out);
            match code {
                Some(c) if c.d == 8 => self.register(eff, i, r, c, out),
                Some(c) if c.is_voltage() && r.unit == Unit::V as i32 => {
                    let m = eff.meter;
                    let v = value_of(r);
                    let band = m.nominal_voltage_v * m.voltage_band_pct / 100.0;
                    if eff.enabled(VOLTAGE_OUT_OF_BAND) && (v - m.nominal_voltage_v).abs() > band {
                        out.reading(i, VOLTAGE_OUT_OF_BAND);
                    }
                }
                _ => {}
            }
        }
    }

    /// The reading's OBIS groups: those parsed when its channel or register was first
    /// seen (the same text parses the same), else parsed now.
    fn code_of(&self, r: &Reading) -> Option<Obis> {
        let known = self.channels.iter().map(|c| (&c.obis, c.code));
        let mut known = known.chain(self.registers.iter().map(|g| (&g.obis, g.code)));
        match known.find(|(obis, _)| **obis == r.obis) {
            Some((_, code)) => code,
            None => Obis::parse(&r.obis),
        }
    }

    fn check_unit(
        &self,
        eff: &Effective<'_>,
        i: usize,
        r: &Reading,
        out: &mut Findings,
    ) -> Option<Obis> {
        let code = self.code_of(r);
        if let Some(want) = code.and_then(Obis::expected_unit)
            && want as i32 != r.unit
            && eff.enabled(UNIT_MISMATCH)
        {
            out.reading(i, UNIT_MISMATCH);
        }
        code
    }

    fn interval(
        &mut self,
        eff: &Effective<'_>,
        i: usize,
        r: &Reading,
        code: Option<Obis>,
        outages: &[(i64, i64)],
        out: &mut Findings,
    ) {
        let m = eff.meter;
        let v = value_of(r);
        if v < 0.0 && code.is_some_and(Obis::is_import_energy) && eff.enabled(REVERSE_FLOW) {
            out.reading(i, REVERSE_FLOW);
        }
        let idx = match self.channels.iter().position(|c| c.obis == r.obis) {
            Some(idx) => idx,
            None if self.channels.len() < MAX_CHANNELS => {
                self.channels.push(Channel {
                    obis: r.obis.clone(),
                    code,
                    unit: r.unit,
                    last_ts: i64::MIN,
                    usual: UsualInterval::default(),
                    zero_run_start: None,
                    zero_run_reported: false,
                    sum: 0.0,
                    covered_s: 0,
                    sum_to_ts: i64::MIN,
                    history: SlotHistory::new(r.interval_s, m.history_days),
                });
                self.channels.len() - 1
            }
            None => return,
        };
        let scratch = &mut self.scratch;
        let ch = &mut self.channels[idx];
        if ch.usual.observe(r.interval_s) && eff.enabled(INTERVAL_MISMATCH) {
            out.reading(i, INTERVAL_MISMATCH);
        }
        if r.ts_ms <= ch.last_ts {
            return; // late reading: per-reading checks only
        }
        let interval_ms = i64::from(r.interval_s) * 1000;
        if ch.last_ts != i64::MIN
            && r.ts_ms.saturating_sub(interval_ms) > ch.last_ts
            && eff.enabled(MISSING_INTERVALS)
        {
            out.reading(i, MISSING_INTERVALS);
        }
        ch.last_ts = r.ts_ms;
        ch.sum += v;
        ch.covered_s = ch.covered_s.saturating_add(i64::from(r.interval_s));
        ch.sum_to_ts = r.ts_ms;

        // spike, against the slot's history before this value
        if let Some(h) = ch.history.as_mut()
            && h.interval_ms == interval_ms
        {
            let slot = h.slot(r.ts_ms);
            if eff.enabled(SPIKE)
                && let Some((med, mad)) = h.stats(slot, m.spike_min_history, scratch)
            {
                let sigma = (1.4826 * mad).max(m.spike_min_sigma_frac * med.abs());
                if v > med + m.spike_mad_factor * sigma && v - med > m.spike_min_delta {
                    out.reading(i, SPIKE);
                }
            }
            h.push(slot, v);
        }

        // zero run, not counting intervals that overlap an outage
        let from = r.ts_ms.saturating_sub(interval_ms);
        let in_outage = outages.iter().any(|&(a, b)| from < b && r.ts_ms > a);
        if r.value == 0 && !in_outage {
            let start = *ch.zero_run_start.get_or_insert(from);
            if r.ts_ms.saturating_sub(start) >= m.zero_run_min_s.saturating_mul(1000)
                && eff.enabled(ZERO_RUN)
            {
                out.reading(i, ZERO_RUN);
                if !ch.zero_run_reported {
                    ch.zero_run_reported = true;
                    out.anomaly(
                        ZERO_RUN,
                        Severity::Warning,
                        start,
                        r.ts_ms,
                        format!("{}: zero consumption outside an outage", r.obis),
                    );
                }
            }
        } else {
            ch.zero_run_start = None;
            ch.zero_run_reported = false;
        }
    }

    fn register(
        &mut self,
        eff: &Effective<'_>,
        i: usize,
        r: &Reading,
        code: Obis,
        out: &mut Findings,
    ) {
        let m = eff.meter;
        let idx = match self.registers.iter().position(|g| g.obis == r.obis) {
            Some(idx) => idx,
            None if self.registers.len() < MAX_REGISTERS => {
                self.registers.push(Register {
                    obis: r.obis.clone(),
                    code: Some(code),
                    last_ts: i64::MIN,
                    last_raw: 0,
                    scaler: r.scaler,
                });
                self.registers.len() - 1
            }
            None => return,
        };
        let reg = &mut self.registers[idx];
        if r.ts_ms <= reg.last_ts {
            return;
        }
        // the interval channel measuring the same quantity (same medium and C group)
        let channel = self.channels.iter_mut().find(|c| {
            c.code.is_some_and(|cc| cc.a == code.a && cc.c == code.c) && c.unit == r.unit
        });
        let first = reg.last_ts == i64::MIN || reg.scaler != r.scaler;
        let mut delta_raw = None;
        if !first {
            if r.value >= reg.last_raw {
                delta_raw = Some(r.value.saturating_sub(reg.last_raw));
            } else {
                let modulus = 10i64.saturating_pow(m.register_digits);
                let wrapped = r.value.saturating_add(modulus).saturating_sub(reg.last_raw);
                let rollover = reg.last_raw < modulus
                    && r.value >= 0
                    && (wrapped as f64) <= m.rollover_max_fraction * modulus as f64;
                if rollover {
                    delta_raw = Some(wrapped);
                    if eff.enabled(REGISTER_ROLLOVER) {
                        out.reading(i, REGISTER_ROLLOVER);
                        out.anomaly(
                            REGISTER_ROLLOVER,
                            Severity::Info,
                            reg.last_ts,
                            r.ts_ms,
                            format!(
                                "{}: {} -> {} (wrap at 10^{})",
                                r.obis, reg.last_raw, r.value, m.register_digits
                            ),
                        );
                    }
                } else if eff.enabled(REGISTER_DECREASE) {
                    out.reading(i, REGISTER_DECREASE);
                    out.anomaly(
                        REGISTER_DECREASE,
                        Severity::Warning,
                        reg.last_ts,
                        r.ts_ms,
                        format!("{}: {} -> {}", r.obis, reg.last_raw, r.value),
                    );
                }
            }
        }
        if let Some(ch) = channel {
            if let Some(d) = delta_raw
                && ch.sum_to_ts == r.ts_ms
                && ch.covered_s.checked_mul(1000).is_some()
                && ch.covered_s.checked_mul(1000) == r.ts_ms.checked_sub(reg.last_ts)
                && eff.enabled(SUM_MISMATCH)
            {
                let delta = d as f64 * 10f64.powi(r.scaler);
                let tol = m.sum_tolerance_abs.max(m.sum_tolerance_rel * delta.abs());
                if (delta - ch.sum).abs() > tol {
                    out.reading(i, SUM_MISMATCH);
                }
            }
            // the next span starts at this snapshot
            ch.sum = 0.0;
            ch.covered_s = 0;
        }
        reg.last_ts = r.ts_ms;
        reg.last_raw = r.value;
        reg.scaler = r.scaler;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use feeder_proto::v1::Event;

    use super::*;
    use crate::rules::{DeviceRules, RulesConfig};

    const T0: i64 = 1_700_006_400_000; // a UTC midnight
    const N: usize = 96;

    /// A meter like the simulator's, but fed the interval values the test chooses.
    struct Meter {
        rules: DeviceRules,
        cfg: RulesConfig,
        labels: Option<BTreeMap<String, String>>,
        day: i64,
        register: i64,
    }

    fn normal() -> Vec<i64> {
        (0..N as i64).map(|s| 50 + (s % 7) * 3).collect()
    }

    impl Meter {
        fn new() -> Self {
            Self {
                rules: DeviceRules::default(),
                cfg: RulesConfig::default(),
                labels: None,
                day: T0,
                register: 5_000_000,
            }
        }

        /// One day's frame: intervals, then the register (prev + Σ unless `register`
        /// says otherwise), then the voltage in 0.1 V.
        fn frame(
            &mut self,
            values: &[i64],
            register: Option<i64>,
            dv: i64,
            events: Vec<Event>,
        ) -> Frame {
            let mut readings: Vec<_> = values
                .iter()
                .enumerate()
                .map(|(s, v)| {
                    Reading::new(
                        self.day + (s as i64 + 1) * 900_000,
                        900,
                        "1-0:1.29.0",
                        *v,
                        0,
                        Unit::Wh,
                    )
                })
                .collect();
            self.register = register.unwrap_or(self.register + values.iter().sum::<i64>());
            self.day += DAY_MS;
            readings.push(Reading::new(
                self.day,
                0,
                "1-0:1.8.0",
                self.register,
                0,
                Unit::Wh,
            ));
            readings.push(Reading::new(self.day, 0, "1-0:32.7.0", dv, -1, Unit::V));
            Frame {
                sent_at_ms: self.day,
                firmware: "4.2.1".into(),
                readings,
                events,
                ..Default::default()
            }
        }

        fn run(&mut self, frame: &Frame) -> Findings {
            let mut out = Findings::default();
            let ctx = FrameCtx {
                received_at_ms: frame.sent_at_ms,
                labels: self.labels.as_ref(),
            };
            self.rules.evaluate(&self.cfg, ctx, frame, &mut out);
            out
        }

        fn day(&mut self, values: &[i64]) -> Findings {
            let f = self.frame(values, None, 2300, vec![]);
            self.run(&f)
        }

        fn warm_up(&mut self, days: usize) {
            for _ in 0..days {
                let out = self.day(&normal());
                assert!(out.is_empty(), "{out:?}");
            }
        }
    }

    fn flags(out: &Findings) -> Vec<(u32, Vec<&'static str>)> {
        out.reading_flags
            .iter()
            .map(|(i, f)| (*i, f.clone()))
            .collect()
    }

    fn rules(out: &Findings) -> Vec<(&'static str, &'static str)> {
        out.anomalies
            .iter()
            .map(|a| (a.rule, a.severity.as_str()))
            .collect()
    }

    #[test]
    fn obis_codes_and_units() {
        let o = Obis::parse("1-0:32.7.0").unwrap();
        assert_eq!(o, Obis { a: 1, c: 32, d: 7 });
        assert_eq!(o.expected_unit(), Some(Unit::V));
        assert_eq!(
            Obis::parse("1-0:1.8.0").unwrap().expected_unit(),
            Some(Unit::Wh)
        );
        assert_eq!(
            Obis::parse("1-0:1.29.0").unwrap().expected_unit(),
            Some(Unit::Wh)
        );
        assert_eq!(
            Obis::parse("8-0:1.0.0").unwrap().expected_unit(),
            Some(Unit::M3)
        );
        assert_eq!(
            Obis::parse("1-0:14.7.0").unwrap().expected_unit(),
            Some(Unit::Hz)
        );
        assert_eq!(Obis::parse("0-0:96.1.0").unwrap().expected_unit(), None);
        assert_eq!(Obis::parse("garbage"), None);
    }

    #[test]
    fn spike_against_the_same_slot_history() {
        let mut m = Meter::new();
        // before `spike_min_history` days the rule does not judge
        let mut v = normal();
        v[10] = 5_000;
        let out = m.day(&v);
        assert!(out.reading_flags.is_empty());
        m.warm_up(6);
        let mut v = normal();
        v[40] = 400; // ~8x the slot's usual ~53 Wh
        v[41] = 70; // +30 %: ordinary noise
        let out = m.day(&v);
        assert_eq!(flags(&out), [(40, vec![SPIKE])]);
        assert!(out.anomalies.is_empty());
    }

    #[test]
    fn zero_run_is_flagged_outside_an_outage_only() {
        let zeros = |v: &mut Vec<i64>| v[20..36].iter_mut().for_each(|x| *x = 0); // 4 h
        // without an outage: readings from the 3 h mark on are flagged, one anomaly
        let mut m = Meter::new();
        m.warm_up(1);
        let mut v = normal();
        zeros(&mut v);
        let out = m.day(&v);
        let want: Vec<_> = (31..36).map(|i| (i, vec![ZERO_RUN])).collect();
        assert_eq!(flags(&out), want);
        assert_eq!(rules(&out), [(ZERO_RUN, "warning")]);
        assert_eq!(out.anomalies[0].ts_from_ms, T0 + DAY_MS + 20 * 900_000);

        // across a power outage: nothing
        let mut m = Meter::new();
        m.warm_up(1);
        let mut v = normal();
        zeros(&mut v);
        let day = m.day;
        let ev = |kind: EventKind, slot: i64| Event {
            ts_ms: day + slot * 900_000,
            kind: kind as i32,
            detail: String::new(),
        };
        let f = m.frame(
            &v,
            None,
            2300,
            vec![
                ev(EventKind::PowerOutage, 20),
                ev(EventKind::PowerRestored, 36),
            ],
        );
        assert!(m.run(&f).is_empty());

        // an outage left open in one frame still covers the next one
        let mut v = normal();
        v[..20].iter_mut().for_each(|x| *x = 0);
        let f = m.frame(&v, None, 2300, vec![ev(EventKind::PowerOutage, 95)]);
        assert!(m.run(&f).is_empty());
        let mut v = normal();
        v[..16].iter_mut().for_each(|x| *x = 0);
        let restored = m.day + 16 * 900_000;
        let f = m.frame(
            &v,
            None,
            2300,
            vec![Event {
                ts_ms: restored,
                kind: EventKind::PowerRestored as i32,
                detail: String::new(),
            }],
        );
        assert!(m.run(&f).is_empty());
    }

    #[test]
    fn register_decrease_rollover_and_sum_check() {
        let mut m = Meter::new();
        m.warm_up(2);
        // sum check: register moved 500 Wh more than the intervals say
        let v = normal();
        let reg = m.register + v.iter().sum::<i64>() + 500;
        let f = m.frame(&v, Some(reg), 2300, vec![]);
        let out = m.run(&f);
        assert_eq!(flags(&out), [(96, vec![SUM_MISMATCH])]);
        assert!(out.anomalies.is_empty());

        // decrease: flagged, with a warning
        let f = m.frame(&normal(), Some(reg - 1_000), 2300, vec![]);
        let out = m.run(&f);
        assert_eq!(flags(&out), [(96, vec![REGISTER_DECREASE])]);
        assert_eq!(rules(&out), [(REGISTER_DECREASE, "warning")]);

        // rollover at 10^9: flagged separately, and the sum check uses the wrapped delta
        m.register = 999_999_900;
        let f = m.frame(&normal(), Some(999_999_900), 2300, vec![]);
        assert_eq!(flags(&m.run(&f)), [(96, vec![SUM_MISMATCH])]);
        let v = normal();
        let sum: i64 = v.iter().sum();
        let f = m.frame(&v, Some(999_999_900 + sum - 1_000_000_000), 2300, vec![]);
        let out = m.run(&f);
        assert_eq!(flags(&out), [(96, vec![REGISTER_ROLLOVER])]);
        assert_eq!(rules(&out), [(REGISTER_ROLLOVER, "info")]);
        m.warm_up(1);
    }

    #[test]
    fn voltage_band_unit_and_reverse_flow() {
        let mut m = Meter::new();
        m.warm_up(1);
        for (dv, flagged) in [
            (2300, false),
            (2415, false),
            (2416, true),
            (2185, false),
            (2184, true),
        ] {
            let f = m.frame(&normal(), None, dv, vec![]);
            let out = m.run(&f);
            assert_eq!(
                out.reading_flags
                    .get(&97)
                    .is_some_and(|f| f == &[VOLTAGE_OUT_OF_BAND]),
                flagged,
                "{dv}"
            );
        }
        // voltage sent in W: the unit is wrong, so the band is not judged
        let mut f = m.frame(&normal(), None, 9999, vec![]);
        f.readings[97].unit = Unit::W as i32;
        assert_eq!(flags(&m.run(&f)), [(97, vec![UNIT_MISMATCH])]);

        // negative import on a meter not labelled net-metered
        let mut v = normal();
        v[50] = -30;
        let f = m.frame(&v, None, 2300, vec![]);
        assert_eq!(flags(&m.run(&f)), [(50, vec![REVERSE_FLOW])]);
        m.labels = Some(BTreeMap::from([("net_metered".into(), "true".into())]));
        let f = m.frame(&v, None, 2300, vec![]);
        assert!(m.run(&f).is_empty());
    }

    #[test]
    fn missing_and_mismatched_intervals() {
        let mut m = Meter::new();
        m.warm_up(1);
        let mut f = m.frame(&normal(), None, 2300, vec![]);
        f.readings.remove(30); // slot 30 never arrives: 31 follows 29
        let out = m.run(&f);
        // the sum check cannot judge a span with a hole, so only the hole is flagged
        assert_eq!(flags(&out), [(30, vec![MISSING_INTERVALS])]);

        // a whole day missing between frames
        m.frame(&normal(), None, 2300, vec![]);
        let f = m.frame(&normal(), None, 2300, vec![]);
        assert_eq!(flags(&m.run(&f)), [(0, vec![MISSING_INTERVALS])]);

        // one 5-minute reading in a 15-minute channel: it also leaves 10 minutes
        // uncovered, so the day's sum check does not judge
        let mut f = m.frame(&normal(), None, 2300, vec![]);
        f.readings[10].interval_s = 300;
        let out = m.run(&f);
        assert_eq!(
            flags(&out),
            [(10, vec![INTERVAL_MISMATCH, MISSING_INTERVALS])]
        );
    }

    #[test]
    fn a_late_frame_gets_per_reading_checks_only() {
        let mut m = Meter::new();
        m.warm_up(1);
        let late = m.frame(&normal(), None, 2600, vec![]);
        let next = m.frame(&normal(), None, 2300, vec![]);
        assert_eq!(flags(&m.run(&next)), [(0, vec![MISSING_INTERVALS])]);
        // older than what the channel and register saw: no missing/decrease/sum findings
        assert_eq!(flags(&m.run(&late)), [(97, vec![VOLTAGE_OUT_OF_BAND])]);
    }

    /// What `Obis::parse` was before it scanned bytes (`str::split`), the reference.
    fn parse_by_splitting(s: &str) -> Option<Obis> {
        let (ab, cde) = s.split_once(':')?;
        let a = ab.split('-').next()?.parse().ok()?;
        let mut it = cde.split('.');
        let c = it.next()?.parse().ok()?;
        let d = it.next()?.parse().ok()?;
        Some(Obis { a, c, d })
    }

    #[test]
    fn parse_agrees_with_the_str_splitting_reference() {
        for s in [
            "1-0:1.8.0",
            "1-0:1.29.0*255",
            "7:3.8",
            "+1-0:+1.8",
            "1-0:1.8",
            "1-0:1",
            "1-0:",
            ":1.8.0",
            "1-0:1..0",
            "1-0:.8.0",
            "256-0:1.8.0",
            "1-0:255.255.0",
            "+-0:1.8.0",
            "1-0:-1.8.0",
            "1-0:1.8.0:2.3",
            "é-0:1.8.0",
            "1-0:1.8é.0",
            "",
            ":",
            "1:2.3",
        ] {
            assert_eq!(Obis::parse(s), parse_by_splitting(s), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_agrees_with_the_reference_on_any_text(s in "[0-9+\\-:.*é a]{0,16}") {
            proptest::prop_assert_eq!(Obis::parse(&s), parse_by_splitting(&s));
        }
    }

    /// The sort-based MAD the spike rule used before `median_deviation`, the reference.
    fn mad_by_sorting(sorted: &[f32], med: f32) -> f64 {
        let mut d: Vec<f32> = sorted.iter().map(|v| (v - med).abs()).collect();
        median(&mut d)
    }

    proptest::proptest! {
        #[test]
        fn median_deviation_is_the_sorted_one(
            mut v in proptest::collection::vec(
                proptest::prop_oneof![
                    -5i8..5i8,
                    proptest::strategy::Just(i8::MAX),
                    proptest::strategy::Just(i8::MIN),
                ],
                1..32,
            ),
            scale in proptest::prop_oneof![
                proptest::strategy::Just(1f32),
                proptest::strategy::Just(0.1f32),
                proptest::strategy::Just(3e37f32),
            ],
        ) {
            // i8::MAX/MIN stand for +/- infinity, -0 for negative zero
            let mut v: Vec<f32> = v
                .drain(..)
                .map(|x| match x {
                    i8::MAX => f32::INFINITY,
                    i8::MIN => f32::NEG_INFINITY,
                    0 if scale < 1.0 => -0.0,
                    x => f32::from(x) * scale,
                })
                .collect();
            let med = median(&mut v);
            let want = mad_by_sorting(&v, med as f32);
            let got = median_deviation(&mut v.clone(), med as f32);
            proptest::prop_assert_eq!(got.to_bits(), want.to_bits(), "{:?}", v);
        }
    }
}
