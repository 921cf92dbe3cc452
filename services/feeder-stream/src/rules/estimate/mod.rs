//! VEE estimation (the first E of VEE): fills a device's known gaps with flagged,
//! explainable estimates, and withdraws them when the actual readings arrive late.
//!
//! Pure like the rules: a function of the frame, the device's bounded estimation state
//! and the configuration; time is the frame's `received_at` (`created_at` of every
//! estimate row), never a clock. So replaying the checked log rebuilds the state exactly
//! and the estimates, carried in the checked record of the frame that caused them
//! (`CheckedFrame.estimates`), are exactly-once with it.
//!
//! A gap is known when an interval channel resumes after missing intervals (or an
//! instantaneous channel after missing points). Per channel, in this order:
//! - **register proration**: a cumulative register of the same quantity (same OBIS A and
//!   C, same unit) read at both ends of the span holding the gap, with every other
//!   interval of the span actual: the gap gets exactly register difference − Σ actual
//!   intervals, in integers of the finer of the two scalers (no rounding drift), spread
//!   by the channel's profile when it knows every interval of the gap, evenly otherwise;
//! - **profile**: a gap no register brackets (yet) gets the mean of the same interval on
//!   the last `profile_days` days of the same type (weekday/weekend, UTC); when a
//!   bracketing register read arrives later the gap is prorated, and the new rows replace
//!   these (the latest row of an interval is the one in force);
//! - **linear**: an instantaneous channel (voltage, power) with a usual spacing, missing
//!   points over at most `linear_max_gap_ms`, gets the straight line between its reads.
//!
//! No estimate across a power outage or a tamper event (cover opened, magnetic tamper)
//! dated in the gap, nor for gaps longer than `max_gap_ms` or `max_gap_intervals`: those
//! raise `gap_not_estimated` (anomaly, warning) instead. A late actual for an estimated
//! interval writes a `superseded` row (its value is the actual's) and, for a prorated gap,
//! the rest of the gap is prorated again so the register difference still holds.
//!
//! State per device: at most [`MAX_CHANNELS`] interval channels (a profile of 2 ×
//! `profile_days` × 96 `f32`, 3 KB at the default 4 days, and at most [`MAX_GAPS`] gaps
//! with a bit per interval), [`MAX_REGISTERS`] registers and [`MAX_POINTS`] instantaneous
//! channels of about 80 bytes.

pub mod config;
mod gaps;
mod profile;
pub mod prorate;

use feeder_proto::pipeline::{EstimateRun, EstimateStatus};
use feeder_proto::v1::{EventKind, Frame, Reading};

pub use self::config::EstimateConfig;
use self::gaps::{Emitter, Gap, InForce, Method, RunKey};
use self::profile::Profile;
use super::meter::Obis;
use super::{Effective, Findings, FrameCtx, Severity};

pub const REGISTER_PRORATION: &str = crate::rules::names::DeviceRule::RegisterProration.as_str();
pub const LINEAR: &str = crate::rules::names::DeviceRule::Linear.as_str();
pub const PROFILE: &str = crate::rules::names::DeviceRule::Profile.as_str();
/// The anomaly of a gap left unestimated (outage, tamper, too long, over the cap).
pub const GAP_NOT_ESTIMATED: &str = crate::rules::names::DeviceRule::GapNotEstimated.as_str();
/// `estimates.rule_version`: bump when a method's arithmetic changes.
pub const RULE_VERSION: &str = "feeder-vee/1";

/// Channels and registers with estimation state: as many as the meter rules keep.
pub use super::meter::{MAX_CHANNELS, MAX_REGISTERS};
/// Instantaneous channels with estimation state per device.
pub const MAX_POINTS: usize = 4;
/// Gaps remembered per channel (for late actuals and later registers); the oldest goes.
pub const MAX_GAPS: usize = 8;
const DAY_MS: i64 = 86_400_000;

/// Actual intervals since the channel's last register read (the span a register
/// difference will cover).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Span {
    from: i64,
    sum_raw: i128,
    covered_ms: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Channel {
    obis: String,
    code: Option<Obis>,
    unit: i32,
    interval_ms: i64,
    scaler: i32,
    last_ts: i64,
    span: Option<Span>,
    gaps: Vec<Gap>,
    profile: Option<Profile>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Register {
    obis: String,
    code: Obis,
    unit: i32,
    scaler: i32,
    last_ts: i64,
    last_raw: i64,
}

/// An instantaneous channel: its last read and its usual spacing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Point {
    obis: String,
    unit: i32,
    scaler: i32,
    last_ts: i64,
    last_raw: i64,
    step_ms: i64,
    candidate_ms: i64,
    candidate_seen: u8,
    gaps: Vec<Gap>,
}

/// One device's estimation state (bounded: see the module docs).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EstimatorState {
    channels: Vec<Channel>,
    registers: Vec<Register>,
    points: Vec<Point>,
    outage_since: Option<i64>,
}

/// Outages and tamper events known while a frame is processed.
struct Blocks {
    outages: Vec<(i64, i64)>,
    tamper: Vec<i64>,
}

impl Blocks {
    /// Why the gap between `from` and `to` must not be estimated, if it must not.
    fn reason(&self, from: i64, to: i64) -> Option<&'static str> {
        if self.outages.iter().any(|&(a, b)| a < to && b > from) {
            Some("a power outage")
        } else if self.tamper.iter().any(|&t| t >= from && t <= to) {
            Some("a tamper event")
        } else {
            None
        }
    }
}

/// What a frame's processing needs besides the state.
struct Pass<'a, 'b> {
    eff: &'a Effective<'a>,
    cfg: &'a EstimateConfig,
    blocks: Blocks,
    out: &'b mut Findings,
    emit: Emitter,
    received_at_ms: i64,
}

impl Pass<'_, '_> {
    fn report(&mut self, obis: &str, from: i64, to: i64, n: u64, why: String) {
        if self.eff.enabled(GAP_NOT_ESTIMATED) {
            self.out.anomaly(
                GAP_NOT_ESTIMATED,
                Severity::Warning,
                from,
                to,
                format!("{obis}: {n} missing intervals not estimated: {why}"),
            );
        }
    }
}

/// 10^(`a` − `b`) for scalers `a` ≥ `b` (`None` when it does not fit).
fn pow10(a: i32, b: i32) -> Option<i128> {
    10i128.checked_pow(u32::try_from(i64::from(a) - i64::from(b)).ok()?)
}

/// `2026-12-01T00:15:00Z` (UTC, proleptic Gregorian; days from H. Hinnant's algorithm).
pub fn iso(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS) / 1000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

impl EstimatorState {
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .channels
                .iter()
                .map(|c| {
                    std::mem::size_of::<Channel>()
                        + c.obis.len()
                        + c.profile.as_ref().map_or(0, Profile::bytes)
                        + c.gaps.iter().map(Gap::bytes).sum::<usize>()
                })
                .sum::<usize>()
            + self.registers.len() * std::mem::size_of::<Register>()
            + self
                .points
                .iter()
                .map(|p| {
                    std::mem::size_of::<Point>() + p.gaps.iter().map(Gap::bytes).sum::<usize>()
                })
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
            && self.registers.is_empty()
            && self.points.is_empty()
            && self.outage_since.is_none()
    }

    /// Runs estimation on an accepted frame: updates the state, puts `gap_not_estimated`
    /// findings in `out` and returns the frame's estimate runs.
    pub fn run(
        &mut self,
        eff: &Effective<'_>,
        ctx: FrameCtx<'_>,
        frame: &Frame,
        out: &mut Findings,
    ) -> Vec<EstimateRun> {
        let cfg = eff.estimate;
        if !cfg.enabled || (frame.readings.is_empty() && frame.events.is_empty()) {
            return Vec::new();
        }
        let blocks = self.blocks(frame);
        let mut pass = Pass {
            eff,
            cfg,
            blocks,
            out,
            emit: Emitter {
                cap: cfg.max_rows_per_frame,
                ..Emitter::default()
            },
            received_at_ms: ctx.received_at_ms,
        };
        for r in frame.readings.iter().filter(|r| r.interval_s > 0) {
            self.interval(&mut pass, r);
        }
        for r in frame.readings.iter().filter(|r| r.interval_s == 0) {
            match Obis::parse(&r.obis) {
                Some(code) if code.d == 8 => self.register(&mut pass, r, code),
                _ => self.point(&mut pass, r),
            }
        }
        for ch in &mut self.channels {
            for gi in 0..ch.gaps.len() {
                if std::mem::take(&mut ch.gaps[gi].reprorate) {
                    reprorate(&mut pass, ch, gi);
                }
            }
            profile_fresh_gaps(&mut pass, ch);
            ch.gaps.iter_mut().for_each(|g| g.fresh = false);
        }
        for p in &mut self.points {
            p.gaps.iter_mut().for_each(|g| g.fresh = false);
        }
        pass.emit.runs
    }

    /// Outage spans touching this frame (carried across frames) and its tamper events.
    fn blocks(&mut self, frame: &Frame) -> Blocks {
        let mut events: Vec<_> = frame.events.iter().collect();
        events.sort_by_key(|e| e.ts_ms);
        let mut outages = Vec::new();
        let mut tamper = Vec::new();
        let mut open = self.outage_since;
        for e in events {
            match EventKind::try_from(e.kind) {
                Ok(EventKind::PowerOutage) => {
                    open.get_or_insert(e.ts_ms);
                }
                Ok(EventKind::PowerRestored) => {
                    outages.push((open.take().unwrap_or(i64::MIN), e.ts_ms));
                }
                Ok(EventKind::CoverOpened | EventKind::MagneticTamper) => tamper.push(e.ts_ms),
                _ => {}
            }
        }
        if let Some(t) = open {
            outages.push((t, i64::MAX));
        }
        self.outage_since = open;
        Blocks { outages, tamper }
    }

    fn interval(&mut self, pass: &mut Pass<'_, '_>, r: &Reading) {
        let interval_ms = i64::from(r.interval_s) * 1000;
        let idx = match self.channels.iter().position(|c| c.obis == r.obis) {
            Some(i) => i,
            None if self.channels.len() < MAX_CHANNELS => {
                self.channels.push(Channel {
                    obis: r.obis.clone(),
                    code: Obis::parse(&r.obis),
                    unit: r.unit,
                    interval_ms,
                    scaler: r.scaler,
                    last_ts: i64::MIN,
                    span: None,
                    gaps: Vec::new(),
                    profile: Profile::new(interval_ms, pass.cfg.profile_days),
                });
                self.channels.len() - 1
            }
            None => return,
        };
        let ch = &mut self.channels[idx];
        if ch.interval_ms != interval_ms || ch.scaler != r.scaler || ch.unit != r.unit {
            return; // another length or scale: not this channel's series
        }
        if r.ts_ms <= ch.last_ts {
            late_interval(pass, ch, r);
            return;
        }
        let start = r.ts_ms.saturating_sub(interval_ms);
        if ch.last_ts != i64::MIN && start > ch.last_ts {
            new_gap(pass, ch, start);
        }
        ch.last_ts = r.ts_ms;
        if let Some(s) = ch.span.as_mut()
            && start >= s.from
        {
            s.sum_raw += i128::from(r.value);
            s.covered_ms = s.covered_ms.saturating_add(interval_ms);
        }
        if let Some(p) = ch.profile.as_mut() {
            p.push(r.ts_ms, r.value as f64);
        }
    }

    fn register(&mut self, pass: &mut Pass<'_, '_>, r: &Reading, code: Obis) {
        let idx = match self.registers.iter().position(|g| g.obis == r.obis) {
            Some(i) => i,
            None if self.registers.len() < MAX_REGISTERS => {
                self.registers.push(Register {
                    obis: r.obis.clone(),
                    code,
                    unit: r.unit,
                    scaler: r.scaler,
                    last_ts: i64::MIN,
                    last_raw: 0,
                });
                self.registers.len() - 1
            }
            None => return,
        };
        let reg = &mut self.registers[idx];
        if r.ts_ms <= reg.last_ts {
            return; // a late register read brackets nothing new
        }
        let prev = (reg.last_ts != i64::MIN && reg.scaler == r.scaler && reg.unit == r.unit)
            .then(|| reg.clone());
        reg.last_ts = r.ts_ms;
        reg.last_raw = r.value;
        reg.scaler = r.scaler;
        reg.unit = r.unit;
        for ch in self.channels.iter_mut().filter(|c| {
            c.code.is_some_and(|cc| cc.a == code.a && cc.c == code.c) && c.unit == r.unit
        }) {
            if let Some(prev) = &prev {
                prorate(pass, ch, prev, r);
            }
            ch.span = (ch.last_ts <= r.ts_ms).then_some(Span {
                from: r.ts_ms,
                sum_raw: 0,
                covered_ms: 0,
            });
        }
    }

    fn point(&mut self, pass: &mut Pass<'_, '_>, r: &Reading) {
        let idx = match self.points.iter().position(|p| p.obis == r.obis) {
            Some(i) => i,
            None if self.points.len() < MAX_POINTS => {
                self.points.push(Point {
                    obis: r.obis.clone(),
                    unit: r.unit,
                    scaler: r.scaler,
                    last_ts: i64::MIN,
                    last_raw: 0,
                    step_ms: 0,
                    candidate_ms: 0,
                    candidate_seen: 0,
                    gaps: Vec::new(),
                });
                self.points.len() - 1
            }
            None => return,
        };
        let p = &mut self.points[idx];
        if p.scaler != r.scaler || p.unit != r.unit {
            return;
        }
        if r.ts_ms <= p.last_ts {
            if let Some(gi) = p.gaps.iter().position(|g| g.index(r.ts_ms).is_some()) {
                supersede(pass, &p.obis, 0, p.unit, &mut p.gaps, gi, r);
            }
            return;
        }
        if p.last_ts != i64::MIN {
            let d = r.ts_ms.saturating_sub(p.last_ts);
            if p.step_ms > 0 && d > p.step_ms && d % p.step_ms == 0 {
                interpolate(pass, p, r, d);
            }
            if d == p.candidate_ms {
                p.candidate_seen = p.candidate_seen.saturating_add(1);
            } else {
                p.candidate_ms = d;
                p.candidate_seen = 1;
            }
            if p.candidate_seen >= 2 {
                p.step_ms = p.candidate_ms;
            }
        }
        p.last_ts = r.ts_ms;
        p.last_raw = r.value;
    }
}

impl Channel {
    /// The run key of this channel's estimated rows.
    fn key<'a>(&'a self, scaler: i32, method: Method, basis: &'a str) -> RunKey<'a> {
        RunKey {
            obis: &self.obis,
            interval_s: (self.interval_ms / 1000) as u32,
            step_ms: self.interval_ms,
            scaler,
            unit: self.unit,
            method,
            status: EstimateStatus::Estimated,
            basis,
        }
    }

    /// Proration weights of the intervals ending at `ends`: the profile's means when it
    /// knows every one, else even.
    fn weights(&self, ends: &[i64]) -> Vec<u64> {
        means(self, ends)
            .map(|m| prorate::weights_from_means(&m))
            .unwrap_or_else(|| vec![1; ends.len()])
    }
}

/// Records the gap before an interval starting at `start` (or reports it).
fn new_gap(pass: &mut Pass<'_, '_>, ch: &mut Channel, start: i64) {
    let (from, len) = (ch.last_ts, start.saturating_sub(ch.last_ts));
    if !(pass.eff.enabled(REGISTER_PRORATION) || pass.eff.enabled(PROFILE)) {
        return;
    }
    if len % ch.interval_ms != 0 {
        ch.span = None; // a misaligned hole: no register difference can be reconciled
        return;
    }
    let n = len / ch.interval_ms;
    let why = if len > pass.cfg.max_gap_ms || n > i64::from(pass.cfg.max_gap_intervals) {
        Some(format!(
            "longer than the limit ({} ms or {} intervals)",
            pass.cfg.max_gap_ms, pass.cfg.max_gap_intervals
        ))
    } else {
        pass.blocks
            .reason(from, start)
            .map(|b| format!("across {b}"))
    };
    if let Some(why) = why {
        ch.span = None;
        pass.report(&ch.obis, from, start, n.unsigned_abs(), why);
        return;
    }
    if ch.gaps.len() == MAX_GAPS {
        ch.gaps.remove(0);
    }
    // n ≤ max_gap_intervals ≤ 10,080 by the check above
    ch.gaps.push(Gap::new(
        from.saturating_add(ch.interval_ms),
        ch.interval_ms,
        n as u32,
    ));
}

/// The profile means of `ends`, when the profile knows every one.
fn means(ch: &Channel, ends: &[i64]) -> Option<Vec<f64>> {
    let p = ch.profile.as_ref()?;
    ends.iter().map(|&t| p.mean(t)).collect()
}

/// Spreads a register difference over the gaps of the span it covers, if it can.
fn prorate(pass: &mut Pass<'_, '_>, ch: &mut Channel, prev: &Register, r: &Reading) {
    let (t0, t1) = (prev.last_ts, r.ts_ms);
    let Some(span) = ch.span.as_ref().filter(|s| s.from == t0) else {
        return;
    };
    if ch.last_ts != t1 || !pass.eff.enabled(REGISTER_PRORATION) {
        return;
    }
    let pending: Vec<usize> = (0..ch.gaps.len())
        .filter(|&i| {
            let g = &ch.gaps[i];
            g.first_end.saturating_sub(g.step_ms) >= t0
                && g.end() <= t1
                && g.missing_count() > 0
                && g.in_force
                    .as_ref()
                    .is_none_or(|f| f.method == Method::Profile)
        })
        .collect();
    if pending.is_empty() {
        return;
    }
    let ends: Vec<i64> = pending
        .iter()
        .flat_map(|&i| ch.gaps[i].missing_ends().collect::<Vec<_>>())
        .collect();
    let missing_ms = ch.interval_ms.saturating_mul(ends.len() as i64);
    if span.covered_ms.saturating_add(missing_ms) != t1.saturating_sub(t0) {
        return; // part of the span is neither actual nor a known gap
    }
    let (first, last) = (ends[0], ends[ends.len() - 1]);
    let n = ends.len() as u64;
    let scaler = prev.scaler.min(ch.scaler);
    let delta = i128::from(r.value) - i128::from(prev.last_raw);
    let shares = (|| {
        let total = pow10(prev.scaler, scaler)
            .zip(pow10(ch.scaler, scaler))
            .and_then(|(rk, ck)| {
                delta
                    .checked_mul(rk)?
                    .checked_sub(span.sum_raw.checked_mul(ck)?)
            });
        let total = match total {
            Some(t) if t >= 0 => t,
            _ if delta < 0 => return Err(format!("{} went down", r.obis)),
            _ => {
                return Err(format!("{} difference below the actual intervals", r.obis));
            }
        };
        if !pass.emit.room(ends.len()) {
            return Err("over the per-frame estimate cap".to_string());
        }
        prorate::distribute(total, &ch.weights(&ends)).ok_or_else(|| "out of range".to_string())
    })();
    let shares = match shares {
        Ok(s) => s,
        Err(why) => {
            let from = first.saturating_sub(ch.interval_ms);
            pass.report(&ch.obis, from, last, n, why);
            // reported, so not estimated by the profile either (gaps estimated by an
            // earlier frame keep their rows, and are still superseded by late actuals)
            for &gi in pending.iter().rev() {
                if ch.gaps[gi].in_force.is_none() {
                    ch.gaps.remove(gi);
                }
            }
            return;
        }
    };
    let basis = format!(
        "{} {} at {} and {} at {} (x10^{}), {} actual intervals",
        r.obis,
        prev.last_raw,
        iso(t0),
        r.value,
        iso(t1),
        prev.scaler,
        span.covered_ms / ch.interval_ms.max(1),
    );
    let mut it = shares.into_iter();
    let key = ch.key(scaler, Method::RegisterProration, &basis);
    let mut sums = Vec::with_capacity(pending.len());
    for &gi in &pending {
        let mut sum = 0i128;
        for t in ch.gaps[gi].missing_ends() {
            let v = it.next().unwrap_or(0);
            sum += i128::from(v);
            pass.emit.push(&key, t, v);
        }
        sums.push(sum);
    }
    for (&gi, sum) in pending.iter().zip(sums) {
        let g = &mut ch.gaps[gi];
        g.in_force = Some(InForce {
            method: Method::RegisterProration,
            remaining: Some(sum),
            scaler,
            basis: basis.clone(),
        });
    }
}

/// Profile estimates for the gaps this frame found that no register bracketed.
fn profile_fresh_gaps(pass: &mut Pass<'_, '_>, ch: &mut Channel) {
    if !pass.eff.enabled(PROFILE) {
        return;
    }
    let basis = format!(
        "{}: mean of the same interval on the last {} same-type days (weekday/weekend, UTC)",
        ch.obis, pass.cfg.profile_days
    );
    for gi in 0..ch.gaps.len() {
        let g = &ch.gaps[gi];
        if !g.fresh || g.in_force.is_some() {
            continue;
        }
        let ends: Vec<i64> = g.missing_ends().collect();
        let Some(m) = means(ch, &ends) else {
            continue; // no profile yet: left for a register
        };
        if !pass.emit.room(ends.len()) {
            let (from, to) = (g.first_end.saturating_sub(g.step_ms), g.end());
            pass.report(
                &ch.obis,
                from,
                to,
                ends.len() as u64,
                "over the per-frame estimate cap".into(),
            );
            continue;
        }
        let key = ch.key(ch.scaler, Method::Profile, &basis);
        for (t, v) in ends.iter().zip(m) {
            pass.emit.push(&key, *t, v.round() as i64);
        }
        ch.gaps[gi].in_force = Some(InForce {
            method: Method::Profile,
            remaining: None,
            scaler: ch.scaler,
            basis: basis.clone(),
        });
    }
}

/// A late actual of an interval channel: fills its gap, supersedes the estimate in force,
/// and keeps a prorated gap's remaining intervals adding up to the register difference.
fn late_interval(pass: &mut Pass<'_, '_>, ch: &mut Channel, r: &Reading) {
    let Some(gi) = ch
        .gaps
        .iter()
        .position(|g| g.index(r.ts_ms).is_some_and(|k| g.is_missing(k)))
    else {
        return;
    };
    let g = &ch.gaps[gi];
    let start = r.ts_ms.saturating_sub(ch.interval_ms);
    let pending = g.in_force.as_ref().is_none_or(|f| f.remaining.is_none());
    if pending
        && let Some(s) = ch.span.as_mut()
        && start >= s.from
    {
        s.sum_raw += i128::from(r.value);
        s.covered_ms = s.covered_ms.saturating_add(ch.interval_ms);
    }
    let interval_s = (ch.interval_ms / 1000) as u32;
    let Some(g) = supersede(pass, &ch.obis, interval_s, ch.unit, &mut ch.gaps, gi, r) else {
        return; // the gap is complete
    };
    let Some(f) = g.in_force.as_mut() else { return };
    let Some(rest) = f.remaining else { return };
    // re-spread once per frame, after its readings ([`reprorate`])
    f.remaining = pow10(ch.scaler, f.scaler)
        .and_then(|k| i128::from(r.value).checked_mul(k))
        .and_then(|actual| rest.checked_sub(actual));
    g.reprorate = true;
}

/// Spreads what is left of a prorated gap over its still-missing intervals, after late
/// actuals filled part of it in this frame.
fn reprorate(pass: &mut Pass<'_, '_>, ch: &mut Channel, gi: usize) {
    let g = &ch.gaps[gi];
    let ends: Vec<i64> = g.missing_ends().collect();
    let Some(f) = g.in_force.as_ref() else { return };
    let Some(rest) = f.remaining else { return };
    if rest < 0 || !pass.emit.room(ends.len()) {
        if let Some(f) = ch.gaps[gi].in_force.as_mut() {
            f.remaining = None; // the rows in force stay
        }
        return;
    }
    let weights = ch.weights(&ends);
    let Some(shares) = prorate::distribute(rest, &weights) else {
        return;
    };
    let basis = format!("{} less actuals received since", f.basis);
    let key = ch.key(f.scaler, Method::RegisterProration, &basis);
    for (t, v) in ends.into_iter().zip(shares) {
        pass.emit.push(&key, t, v);
    }
}

/// Marks the interval of `r` actual in gap `gi`; writes a superseded row if an estimate
/// was in force for it. Returns the gap, or `None` when it became complete (removed).
fn supersede<'g>(
    pass: &mut Pass<'_, '_>,
    obis: &str,
    interval_s: u32,
    unit: i32,
    gaps: &'g mut Vec<Gap>,
    gi: usize,
    r: &Reading,
) -> Option<&'g mut Gap> {
    let g = &mut gaps[gi];
    let k = g.index(r.ts_ms)?;
    if !g.is_missing(k) {
        return Some(&mut gaps[gi]);
    }
    g.fill(k);
    if let Some(f) = &g.in_force {
        let basis = format!("actual reading received at {}", iso(pass.received_at_ms));
        let key = RunKey {
            obis,
            interval_s,
            step_ms: g.step_ms,
            scaler: r.scaler,
            unit,
            method: f.method,
            status: EstimateStatus::Superseded,
            basis: &basis,
        };
        pass.emit.rows = pass.emit.rows.saturating_sub(1); // superseding is never capped
        pass.emit.push(&key, r.ts_ms, r.value);
    }
    if g.missing_count() == 0 {
        gaps.remove(gi);
        return None;
    }
    Some(&mut gaps[gi])
}

/// Linear estimates for the points missing between `p`'s last read and `r`.
fn interpolate(pass: &mut Pass<'_, '_>, p: &mut Point, r: &Reading, d: i64) {
    if d > pass.cfg.linear_max_gap_ms || !pass.eff.enabled(LINEAR) {
        return;
    }
    let n = d / p.step_ms - 1; // ≥ 1: d > step and a multiple of it
    if let Some(b) = pass.blocks.reason(p.last_ts, r.ts_ms) {
        pass.report(
            &p.obis,
            p.last_ts,
            r.ts_ms,
            n.unsigned_abs(),
            format!("across {b}"),
        );
        return;
    }
    let Ok(n32) = u32::try_from(n) else { return };
    if n32 > pass.cfg.max_gap_intervals || !pass.emit.room(n32 as usize) {
        return;
    }
    let basis = format!(
        "{} {} at {} and {} at {} (x10^{})",
        r.obis,
        p.last_raw,
        iso(p.last_ts),
        r.value,
        iso(r.ts_ms),
        r.scaler
    );
    let key = RunKey {
        obis: &p.obis,
        interval_s: 0,
        step_ms: p.step_ms,
        scaler: p.scaler,
        unit: p.unit,
        method: Method::Linear,
        status: EstimateStatus::Estimated,
        basis: &basis,
    };
    let (v0, v1) = (i128::from(p.last_raw), i128::from(r.value));
    let parts = i128::from(n) + 1;
    for j in 1..=n {
        let num = (v1 - v0) * i128::from(j);
        // round half away from zero
        let q = (2 * num + parts * num.signum()) / (2 * parts);
        let v = i64::try_from(v0 + q).unwrap_or(r.value);
        pass.emit.push(&key, p.last_ts + j * p.step_ms, v);
    }
    if p.gaps.len() == MAX_GAPS {
        p.gaps.remove(0);
    }
    let mut g = Gap::new(p.last_ts + p.step_ms, p.step_ms, n32);
    g.in_force = Some(InForce {
        method: Method::Linear,
        remaining: None,
        scaler: p.scaler,
        basis,
    });
    p.gaps.push(g);
}

#[cfg(test)]
mod tests;
