use std::collections::BTreeMap;

use feeder_proto::pipeline::{EstimateMethod, EstimateStatus};
use feeder_proto::v1::{Event, Unit};
use proptest::prelude::*;

use super::*;
use crate::rules::{DeviceRules, RulesConfig};

const T0: i64 = 1_700_438_400_000; // 2023-11-20T00:00Z, a Monday
const IV: i64 = 900_000;

/// A simulated-style meter: a day of 96 intervals (scaler `iv_scaler`), the import
/// register at the day's end (scaler `reg_scaler`), then the voltage.
struct Meter {
    rules: DeviceRules,
    cfg: RulesConfig,
    day: i64,
    /// register in 10^iv_scaler units
    register: i64,
    iv_scaler: i32,
    reg_scaler: i32,
}

fn shape(slot: i64) -> i64 {
    40 + (slot % 24) * 5 + if (70..80).contains(&slot) { 200 } else { 0 }
}

impl Meter {
    fn new() -> Self {
        Self {
            rules: DeviceRules::default(),
            cfg: RulesConfig::default(),
            day: T0,
            register: 5_000_000,
            iv_scaler: 0,
            reg_scaler: 0,
        }
    }

    fn frame(&mut self, values: &[i64], with_register: bool, events: Vec<Event>) -> Frame {
        let mut readings: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(s, v)| {
                Reading::new(
                    self.day + (s as i64 + 1) * IV,
                    900,
                    "1-0:1.29.0",
                    *v,
                    self.iv_scaler,
                    Unit::Wh,
                )
            })
            .collect();
        self.register += values.iter().sum::<i64>();
        self.day += DAY_MS;
        if with_register {
            let k = 10i64.pow((self.reg_scaler - self.iv_scaler) as u32);
            readings.push(Reading::new(
                self.day,
                0,
                "1-0:1.8.0",
                self.register / k,
                self.reg_scaler,
                Unit::Wh,
            ));
        }
        readings.push(Reading::new(self.day, 0, "1-0:32.7.0", 2300, -1, Unit::V));
        Frame {
            sent_at_ms: self.day,
            readings,
            events,
            ..Default::default()
        }
    }

    fn day_values(&self) -> Vec<i64> {
        (0..96).map(shape).collect()
    }

    fn run(&mut self, frame: &Frame) -> Findings {
        let mut out = Findings::default();
        let ctx = FrameCtx {
            received_at_ms: frame.sent_at_ms.saturating_add(60_000),
            labels: None,
        };
        self.rules.evaluate(&self.cfg, ctx, frame, &mut out);
        out
    }

    fn day(&mut self) -> Findings {
        let v = self.day_values();
        let f = self.frame(&v, true, vec![]);
        self.run(&f)
    }

    /// Skips a day (its frame is returned, not processed).
    fn skip(&mut self) -> Frame {
        let v = self.day_values();
        self.frame(&v, true, vec![])
    }
}

/// (ts, value_raw, scaler, method, status) of every row.
fn rows(out: &Findings) -> Vec<(i64, i64, i32, EstimateMethod, EstimateStatus)> {
    out.estimates
        .iter()
        .flat_map(|r| {
            r.values_raw.iter().enumerate().map(move |(k, v)| {
                (
                    r.first_ts_ms + k as i64 * r.step_ms,
                    *v,
                    r.scaler,
                    r.method(),
                    r.status(),
                )
            })
        })
        .collect()
}

#[test]
fn a_skipped_day_is_prorated_to_the_register_difference_and_superseded_late() {
    let mut m = Meter::new();
    for _ in 0..3 {
        assert!(m.day().estimates.is_empty());
    }
    let skipped = m.skip();
    let out = m.day();
    let r = rows(&out);
    assert_eq!(r.len(), 96);
    assert!(
        r.iter()
            .all(|x| x.3 == EstimateMethod::RegisterProration && x.4 == EstimateStatus::Estimated)
    );
    let gap_total: i64 = r.iter().map(|x| x.1).sum();
    assert_eq!(gap_total, m.day_values().iter().sum::<i64>());
    // shaped by the profile: the evening block is estimated higher than the night
    assert!(r[75].1 > 3 * r[0].1, "{:?} {:?}", r[75], r[0]);
    assert!(
        out.estimates[0].basis.starts_with("1-0:1.8.0 "),
        "{}",
        out.estimates[0].basis
    );
    assert_eq!(out.estimates[0].first_ts_ms, T0 + 3 * DAY_MS + IV);

    // the skipped frame arrives: every estimate is superseded by its actual
    let out = m.run(&skipped);
    let r = rows(&out);
    assert_eq!(r.len(), 96);
    assert!(r.iter().all(|x| x.4 == EstimateStatus::Superseded));
    assert_eq!(r.iter().map(|x| x.1).collect::<Vec<_>>(), m.day_values());
    assert!(m.rules.estimates.channels[0].gaps.is_empty());
    // and a second copy would supersede nothing
    assert!(m.run(&skipped).estimates.is_empty());
}

#[test]
fn without_a_profile_the_difference_is_spread_evenly() {
    let mut m = Meter::new();
    m.day -= 3 * DAY_MS; // a Friday, then a weekend missing: no weekend profile
    m.day();
    m.skip();
    m.skip();
    let out = m.day();
    let r = rows(&out);
    assert_eq!(r.len(), 192);
    let total: i64 = r.iter().map(|x| x.1).sum();
    assert_eq!(total, 2 * m.day_values().iter().sum::<i64>());
    let (lo, hi) = (r.iter().map(|x| x.1).min(), r.iter().map(|x| x.1).max());
    assert!(hi.unwrap() - lo.unwrap() <= 1, "even: {lo:?}..{hi:?}");
}

#[test]
fn a_partial_late_arrival_keeps_the_rest_adding_up() {
    let mut m = Meter::new();
    m.day();
    m.day();
    let mut skipped = m.skip();
    let expected: i64 = m.day_values().iter().sum();
    m.day();
    // only the first 10 intervals of the skipped day arrive (no register in that frame)
    skipped.readings.truncate(10);
    let out = m.run(&skipped);
    let r = rows(&out);
    let sup: Vec<_> = r
        .iter()
        .filter(|x| x.4 == EstimateStatus::Superseded)
        .collect();
    let est: Vec<_> = r
        .iter()
        .filter(|x| x.4 == EstimateStatus::Estimated)
        .collect();
    assert_eq!((sup.len(), est.len()), (10, 86));
    let sum = sup.iter().chain(&est).map(|x| x.1).sum::<i64>();
    assert_eq!(sum, expected);
}

#[test]
fn a_gap_without_a_register_gets_the_profile_then_the_register_scales_it() {
    let mut m = Meter::new();
    for _ in 0..8 {
        m.day();
    }
    // a frame that skipped its first 8 intervals and has no register
    let v = m.day_values();
    let day_start = m.day;
    let mut f = m.frame(&v, false, vec![]);
    f.readings.drain(..8);
    let out = m.run(&f);
    let r = rows(&out);
    assert_eq!(r.len(), 8);
    assert!(r.iter().all(|x| x.3 == EstimateMethod::Profile));
    assert_eq!(
        r.iter().map(|x| x.1).collect::<Vec<_>>(),
        &v[..8],
        "flat history"
    );
    assert_eq!(r[0].0, day_start + IV);
    // the next day's register brackets the gap: prorated rows replace the profile ones
    let out = m.day();
    let r = rows(&out);
    assert_eq!(r.len(), 8);
    assert!(r.iter().all(|x| x.3 == EstimateMethod::RegisterProration));
    assert_eq!(
        r.iter().map(|x| x.1).sum::<i64>(),
        v[..8].iter().sum::<i64>()
    );
}

#[test]
fn no_estimate_across_an_outage_or_a_tamper_or_past_the_limit() {
    for kind in [EventKind::PowerOutage, EventKind::MagneticTamper] {
        let mut m = Meter::new();
        m.day();
        m.skip();
        let v = m.day_values();
        let at = m.day - DAY_MS / 2; // in the skipped day
        let mut events = vec![Event {
            ts_ms: at,
            kind: kind as i32,
            detail: String::new(),
        }];
        if kind == EventKind::PowerOutage {
            events.push(Event {
                ts_ms: at + 3_600_000,
                kind: EventKind::PowerRestored as i32,
                detail: String::new(),
            });
        }
        let f = m.frame(&v, true, events);
        let out = m.run(&f);
        assert!(out.estimates.is_empty(), "{kind:?}");
        let a: Vec<_> = out
            .anomalies
            .iter()
            .filter(|a| a.rule == GAP_NOT_ESTIMATED)
            .collect();
        assert_eq!(a.len(), 1, "{kind:?}");
        assert!(a[0].detail.contains("across a"), "{}", a[0].detail);
    }
    let mut m = Meter::new();
    m.day();
    for _ in 0..8 {
        m.skip();
    }
    let out = m.day();
    assert!(out.estimates.is_empty());
    assert!(out.anomalies.iter().any(|a| a.rule == GAP_NOT_ESTIMATED
        && a.detail.contains("768 missing intervals")
        && a.detail.contains("longer than the limit")));
}

#[test]
fn methods_switch_off_by_name_and_by_label() {
    let mut m = Meter::new();
    m.cfg.disabled = vec![REGISTER_PRORATION.into(), PROFILE.into()];
    m.day();
    m.skip();
    assert!(m.day().estimates.is_empty());

    let mut m = Meter::new();
    m.cfg.estimate.enabled = false;
    m.day();
    m.skip();
    assert!(m.day().estimates.is_empty());
    assert!(m.rules.estimates.is_empty(), "no state kept when off");

    let cfg: RulesConfig = serde_json::from_str(
        r#"{"label_overrides":[{"label":"kind","value":"pilot","disable":["linear"],
            "estimate":{"max_gap_ms":3600000}}]}"#,
    )
    .unwrap();
    cfg.validate().unwrap();
    let labels = BTreeMap::from([("kind".to_string(), "pilot".to_string())]);
    let eff = cfg.effective(Some(&labels));
    assert_eq!(eff.estimate.max_gap_ms, 3_600_000);
    assert!(!eff.enabled(LINEAR) && eff.enabled(PROFILE));
    let bad: RulesConfig = serde_json::from_str(r#"{"estimate":{"profile_days":0}}"#).unwrap();
    assert_eq!(
        bad.validate().unwrap_err(),
        "estimate.profile_days must be in 1..=52"
    );
}

fn volt(ts: i64, dv: i64) -> Frame {
    Frame {
        sent_at_ms: ts,
        readings: vec![Reading::new(ts, 0, "1-0:32.7.0", dv, -1, Unit::V)],
        ..Default::default()
    }
}

#[test]
fn short_gaps_of_instantaneous_channels_are_interpolated() {
    let mut m = Meter::new();
    let mut ts = T0;
    for dv in [2300, 2302, 2304] {
        assert!(m.run(&volt(ts, dv)).estimates.is_empty());
        ts += IV;
    }
    // two points missing (45 min): the line from 2304 to 2310
    let late = volt(ts, 2306);
    let out = m.run(&volt(ts + 2 * IV, 2310));
    let r = rows(&out);
    assert_eq!(
        r.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        [(ts, 2306), (ts + IV, 2308)]
    );
    assert!(r.iter().all(|x| x.3 == EstimateMethod::Linear && x.2 == -1));
    assert_eq!(out.estimates[0].interval_s, 0);
    assert_eq!(out.estimates[0].step_ms, IV);
    let r = rows(&m.run(&late));
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].1, r[0].4), (2306, EstimateStatus::Superseded));
    // past the 1 h default: nothing
    assert!(
        m.run(&volt(ts + 2 * IV + 5 * IV, 2300))
            .estimates
            .is_empty()
    );
}

#[test]
fn iso_times() {
    assert_eq!(iso(0), "1970-01-01T00:00:00Z");
    assert_eq!(iso(T0 + IV), "2023-11-20T00:15:00Z");
    assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
    assert_eq!(iso(-1000), "1969-12-31T23:59:59Z");
    assert_eq!(
        iso(i64::MIN).len(),
        iso(i64::MAX).len() + 1,
        "no overflow at the ends"
    );
    assert_eq!((pow10(2, 0), pow10(0, 1)), (Some(100), None));
    assert_eq!(pow10(i32::MAX, i32::MIN), None);
}

proptest! {
    /// Whatever days a meter skips (and in whatever scalers it reports), the estimate in
    /// force for every skipped interval plus the actual intervals add up exactly to the
    /// register difference over the span: register proration never disagrees with it.
    #[test]
    fn proration_always_matches_the_register_difference(
        skips in prop::collection::vec(any::<bool>(), 3..14),
        scalers in prop_oneof![Just((0, 0)), Just((-1, 0)), Just((-2, 1))],
        noise in prop::collection::vec(0i64..500, 96),
    ) {
        let mut m = Meter::new();
        (m.iv_scaler, m.reg_scaler) = scalers;
        m.register = 7_000_000 * 10i64.pow((m.reg_scaler - m.iv_scaler) as u32);
        let k = 10i64.pow((m.reg_scaler - m.iv_scaler) as u32);
        // intervals whose daily sum is a multiple of the register's resolution
        let mut values: Vec<i64> = noise.iter().enumerate().map(|(s, n)| shape(s as i64) * k + n).collect();
        let rem = values.iter().sum::<i64>() % k;
        values[0] += k - rem;
        let mut first = true;
        // in force: ts -> (value in 10^est_scaler, est_scaler)
        let mut in_force: BTreeMap<i64, (i64, i32)> = BTreeMap::new();
        let mut skipped_days = Vec::new();
        let mut reg_at: BTreeMap<i64, i64> = BTreeMap::new();
        for skip in skips.iter().copied().chain([false]) {
            let day_start = m.day;
            let f = m.frame(&values, true, vec![]);
            reg_at.insert(m.day, m.register);
            if skip && !first {
                skipped_days.push(day_start);
                continue;
            }
            first = false;
            for (ts, v, sc, _, status) in rows(&m.run(&f)) {
                prop_assert!(v >= 0);
                if status == EstimateStatus::Estimated {
                    in_force.insert(ts, (v, sc));
                }
            }
        }
        // every skipped day is estimated, and each run of skipped days (one register
        // span) adds up to its actual sum
        let mut spans: Vec<(i64, i64)> = Vec::new();
        for d in skipped_days {
            match spans.last_mut() {
                Some(s) if s.1 == d => s.1 = d + DAY_MS,
                _ => spans.push((d, d + DAY_MS)),
            }
        }
        for (from, to) in spans {
            let est: Vec<_> = in_force.range(from + 1..=to).map(|(_, v)| *v).collect();
            let days = (to - from) / DAY_MS;
            if days > 7 {
                prop_assert!(est.is_empty(), "past max_gap_ms: reported, not estimated");
                continue;
            }
            prop_assert_eq!(est.len() as i64, 96 * days);
            let sc = est[0].1;
            let sum: i128 = est.iter().map(|(v, _)| i128::from(*v)).sum();
            let want = i128::from(days * values.iter().sum::<i64>())
                * 10i128.pow((m.iv_scaler - sc) as u32);
            prop_assert_eq!(sum, want, "span {}..{}", from, to);
        }
    }
}

#[test]
fn device_values_at_the_ends_of_their_ranges_neither_panic_nor_overflow() {
    // debug build: any overflow panics. Channels resume across absurd gaps, registers
    // jump between the ends of i64, scalers are extreme, late readings land anywhere.
    let extremes = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
    let scalers = [i32::MIN, -38, 0, 38, i32::MAX];
    let mut m = Meter::new();
    m.cfg.estimate.max_gap_ms = i64::MAX;
    m.cfg.estimate.max_gap_intervals = 10_080;
    for &ts in &extremes {
        for &value in &extremes {
            for &scaler in &scalers {
                for (obis, interval_s, unit) in [
                    ("1-0:1.29.0", 900, Unit::Wh),
                    ("1-0:1.29.0", u32::MAX, Unit::Wh),
                    ("1-0:1.8.0", 0, Unit::Wh),
                    ("1-0:32.7.0", 0, Unit::V),
                ] {
                    for base in [ts, ts.saturating_sub(IV), ts.saturating_add(2 * IV)] {
                        let f = Frame {
                            sent_at_ms: base,
                            readings: vec![Reading::new(
                                base, interval_s, obis, value, scaler, unit,
                            )],
                            events: vec![Event {
                                ts_ms: base,
                                kind: EventKind::CoverOpened as i32,
                                detail: String::new(),
                            }],
                            ..Default::default()
                        };
                        m.run(&f);
                    }
                }
            }
        }
    }
    assert!(m.rules.estimates.approx_bytes() < 64 * 1024);
}

#[test]
fn a_register_that_cannot_cover_the_gap_is_reported() {
    for (register_delta, why) in [
        (-5, "1-0:1.8.0 went down"),
        (100, "1-0:1.8.0 difference below the actual intervals"),
    ] {
        let mut m = Meter::new();
        m.day();
        m.skip();
        let before = m.register;
        let mut f = m.frame(&m.day_values(), true, vec![]);
        let reg = f
            .readings
            .iter_mut()
            .find(|r| r.obis == "1-0:1.8.0")
            .unwrap();
        // the register read two days before the frame's end, plus `register_delta`
        reg.value = before - m.day_values().iter().sum::<i64>() + register_delta;
        let out = m.run(&f);
        assert!(out.estimates.is_empty(), "{why}");
        let a: Vec<_> = out
            .anomalies
            .iter()
            .filter(|a| a.rule == GAP_NOT_ESTIMATED)
            .collect();
        assert_eq!(a.len(), 1, "{why}");
        assert!(a[0].detail.ends_with(why), "{}", a[0].detail);
        assert!(
            a[0].detail.contains("96 missing intervals"),
            "{}",
            a[0].detail
        );
    }
}
