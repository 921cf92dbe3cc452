//! VEE estimation against the simulator: held-out quality figures per method (the
//! numbers in `docs/checks.md`, printed with `--nocapture`), and estimation state that
//! survives a restart (rebuilt from the checked log, or restored from a snapshot) and
//! then estimates exactly like the state that never stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use feeder_core::keyfile::DeviceKey;
use feeder_core::{DeviceKind, SigningKey};
use feeder_proto::pipeline::{CheckedFrame, EstimateMethod, EstimateStatus, RawFrame};
use feeder_proto::v1::{Frame, Reading, Unit};
use feeder_sim::fleet::SimDevice;
use feeder_sim::labels::labels_for;
use feeder_stream::checks::{Outcome, PartitionState};
use feeder_stream::config::DeviceLabels;
use feeder_stream::rules::estimate::{LINEAR, PROFILE, REGISTER_PRORATION};
use feeder_stream::rules::{DeviceRules, Findings, FrameCtx, RulesConfig};
use prost::Message;

const DAY_MS: i64 = 86_400_000;
const NOW_MS: i64 = 1_764_028_800_000; // 2025-11-25
const INTERVAL_OBIS: &str = "1-0:1.29.0";

fn meter(i: usize, start_ms: i64) -> SimDevice {
    SimDevice::from_key(
        DeviceKey {
            device_id: format!("mtr-{i:06}"),
            key_id: "k1".into(),
            kind: DeviceKind::Meter,
            labels: labels_for(DeviceKind::Meter, i),
            key: SigningKey::hmac(&[7; 32]),
        },
        start_ms,
    )
}

/// One raw record per meter-day, in arrival order, plus the frames held out. Meter `i`
/// skips day `d` when `(d + 3i) % 10 == 7` (from day 8 on, so profiles have history,
/// and not in the last 3 days, so a later frame closes every gap);
/// a skipped frame arrives `late_by` frames of that meter later, or never (`None`).
struct Fleet {
    records: Vec<Vec<u8>>,
    held_out: Vec<(String, Frame)>,
    intervals: usize,
}

fn fleet(meters: usize, days: usize, late_by: Option<usize>) -> Fleet {
    let start = (NOW_MS.div_euclid(DAY_MS) - 365) * DAY_MS;
    let mut devs: Vec<_> = (0..meters).map(|i| meter(i, start)).collect();
    let mut pending: Vec<Vec<(usize, Vec<u8>)>> = vec![Vec::new(); meters];
    let mut out = Fleet {
        records: Vec::new(),
        held_out: Vec::new(),
        intervals: 0,
    };
    let mut clock = NOW_MS;
    for d in 0..days {
        for (i, dev) in devs.iter_mut().enumerate() {
            clock += 3;
            let f = dev.next_frame(clock);
            let rec = RawFrame {
                signed_frame: f.frame.encode_to_vec().into(),
                received_at_ms: clock + 40,
                edge_id: "edge-0".into(),
                ..Default::default()
            }
            .encode_to_vec();
            out.intervals += 96;
            if d >= 8 && d + 3 < days && (d + 3 * i) % 10 == 7 {
                let frame = Frame::decode(f.frame.payload.clone()).unwrap();
                out.held_out.push((f.frame.device_id.clone(), frame));
                if let Some(k) = late_by {
                    pending[i].push((d + k, rec));
                }
                continue;
            }
            out.records.push(rec);
            // late frames due now follow this one
            let (due, keep): (Vec<_>, Vec<_>) = pending[i].drain(..).partition(|(at, _)| *at <= d);
            pending[i] = keep;
            out.records.extend(due.into_iter().map(|(_, r)| r));
        }
    }
    out
}

fn labels(meters: usize) -> DeviceLabels {
    (0..meters)
        .map(|i| {
            (
                format!("mtr-{i:06}"),
                Arc::new(labels_for(DeviceKind::Meter, i)),
            )
        })
        .collect::<HashMap<_, _>>()
        .into()
}

/// The estimate in force per (device, interval end): value and method.
type InForce = BTreeMap<(String, i64), (f64, EstimateMethod)>;

/// Mean absolute percentage error and count.
#[derive(Default, Debug)]
struct Error {
    sum: f64,
    n: usize,
}

impl Error {
    fn add(&mut self, est: f64, actual: f64) {
        self.sum += (est - actual).abs() / actual.abs();
        self.n += 1;
    }
    fn mape(&self) -> f64 {
        100.0 * self.sum / self.n.max(1) as f64
    }
}

/// Runs the fleet through a partition and returns the estimate in force per (device,
/// ts) of the interval channel, with its method, plus the superseded rows.
fn estimate(f: &Fleet, cfg: RulesConfig, meters: usize) -> (InForce, usize) {
    let mut st = PartitionState::with_rules(4096, Arc::new(cfg), labels(meters));
    let mut in_force = BTreeMap::new();
    let mut superseded = 0;
    for (i, r) in f.records.iter().enumerate() {
        let Outcome::Checked(c) = st.process(i as i64, r) else {
            panic!("frame {i} refused")
        };
        for run in c.estimates.iter().filter(|r| r.obis == INTERVAL_OBIS) {
            for (k, v) in run.values_raw.iter().enumerate() {
                let ts = run.first_ts_ms + k as i64 * run.step_ms;
                let value = *v as f64 * 10f64.powi(run.scaler);
                match run.status() {
                    EstimateStatus::Estimated => {
                        in_force.insert((c.device_id.clone(), ts), (value, run.method()));
                    }
                    _ => superseded += 1,
                }
            }
        }
    }
    (in_force, superseded)
}

/// Per method: error of each held-out interval, and error of each held-out day's total.
fn score(f: &Fleet, in_force: &InForce) -> BTreeMap<&'static str, (Error, Error)> {
    let mut out: BTreeMap<&'static str, (Error, Error)> = BTreeMap::new();
    for (dev, frame) in &f.held_out {
        let mut day: Option<(&'static str, f64, f64)> = None;
        for r in frame.readings.iter().filter(|r| r.obis == INTERVAL_OBIS) {
            let actual = r.value as f64 * 10f64.powi(r.scaler);
            let Some((est, method)) = in_force.get(&(dev.clone(), r.ts_ms)) else {
                continue;
            };
            let name = method.as_str_name();
            out.entry(leak(name)).or_default().0.add(*est, actual);
            let d = day.get_or_insert((leak(name), 0.0, 0.0));
            d.1 += est;
            d.2 += actual;
        }
        if let Some((name, est, actual)) = day {
            out.entry(name).or_default().1.add(est, actual);
        }
    }
    out
}

fn leak(s: &str) -> &'static str {
    match s {
        "REGISTER_PRORATION" => REGISTER_PRORATION,
        "PROFILE" => PROFILE,
        _ => LINEAR,
    }
}

/// Linear interpolation has no sub-hourly instantaneous channel to work on in the
/// simulator (its voltage is daily), so it is scored on the simulated interval energy
/// turned into 15-minute average power readings (`1-0:1.7.0`, W): runs of 1 to 3
/// consecutive points (gaps up to the 1 h default) held out inside each day.
fn linear_score(meters: usize, days: usize) -> (Error, usize, usize) {
    let start = (NOW_MS.div_euclid(DAY_MS) - 365) * DAY_MS;
    let cfg = RulesConfig::default();
    let mut err = Error::default();
    let (mut held, mut total) = (0, 0);
    for i in 0..meters {
        let mut dev = meter(i, start);
        let mut rules = DeviceRules::default();
        for d in 0..days {
            let f = dev.next_frame(NOW_MS);
            let frame = Frame::decode(f.frame.payload.clone()).unwrap();
            let power: Vec<Reading> = frame
                .readings
                .iter()
                .filter(|r| r.obis == INTERVAL_OBIS)
                .map(|r| Reading::new(r.ts_ms, 0, "1-0:1.7.0", r.value * 4, 0, Unit::W))
                .collect();
            total += power.len();
            let mut actual = BTreeMap::new();
            let mut kept = Vec::new();
            for (s, r) in power.into_iter().enumerate() {
                // hold out 1, 2 or 3 points every 12 (after a warm-up day)
                if d > 0 && (1..=1 + (s / 12 + i + d) % 3).contains(&(s % 12)) {
                    actual.insert(r.ts_ms, r.value as f64);
                    held += 1;
                } else {
                    kept.push(r);
                }
            }
            let sent = Frame {
                sent_at_ms: frame.sent_at_ms,
                readings: kept,
                ..Default::default()
            };
            let mut out = Findings::default();
            let ctx = FrameCtx {
                received_at_ms: NOW_MS,
                labels: None,
            };
            rules.evaluate(&cfg, ctx, &sent, &mut out);
            for run in &out.estimates {
                assert_eq!(run.method(), EstimateMethod::Linear);
                for (k, v) in run.values_raw.iter().enumerate() {
                    let ts = run.first_ts_ms + k as i64 * run.step_ms;
                    if let Some(a) = actual.get(&ts) {
                        err.add(*v as f64, *a);
                    }
                }
            }
        }
    }
    (err, held, total)
}

#[test]
fn held_out_error_per_method() {
    let (meters, days) = (60, 45);
    let f = fleet(meters, days, None);
    let held: usize = f.held_out.len() * 96;
    let (proration, _) = estimate(&f, RulesConfig::default(), meters);
    let no_proration = RulesConfig {
        disabled: vec![REGISTER_PRORATION.into()],
        ..RulesConfig::default()
    };
    let (profile, _) = estimate(&f, no_proration, meters);
    let mut figures = score(&f, &proration);
    figures.extend(
        score(&f, &profile)
            .into_iter()
            .filter(|(m, _)| *m == PROFILE),
    );
    let (lin, lin_held, lin_total) = linear_score(meters, days);
    println!(
        "held out: {} meter-days of {} ({} intervals of {}), share estimated {:.2} %",
        f.held_out.len(),
        meters * days,
        held,
        f.intervals,
        100.0 * proration.len() as f64 / f.intervals as f64
    );
    for (m, (iv, day)) in &figures {
        println!(
            "{m}: {} intervals, MAPE {:.2} % per interval, {:.4} % per held-out day total ({} days)",
            iv.n,
            iv.mape(),
            day.mape(),
            day.n
        );
    }
    println!(
        "linear: {} points of {} held out, {} estimated, MAPE {:.2} %",
        lin_held,
        lin_total,
        lin.n,
        lin.mape()
    );
    // every held-out interval is estimated, by proration (the next day's register
    // brackets it) or, with proration off, by the profile
    assert_eq!(proration.len(), held);
    assert!(
        proration
            .values()
            .all(|v| v.1 == EstimateMethod::RegisterProration)
    );
    assert_eq!(profile.len(), held);
    let (p_iv, p_day) = &figures[REGISTER_PRORATION];
    let (h_iv, _) = &figures[PROFILE];
    assert_eq!(p_iv.n, held);
    // a prorated day adds up to its register difference: its total is exact
    assert!(p_day.mape() < 1e-9, "{}", p_day.mape());
    assert!(p_iv.mape() < h_iv.mape(), "proration knows the day's total");
    assert!(h_iv.mape() < 40.0 && lin.mape() < 40.0);
    assert_eq!(lin.n, lin_held);
}

/// A late arrival of each skipped frame supersedes every one of its estimates.
#[test]
fn late_frames_supersede_every_estimate() {
    let f = fleet(20, 30, Some(2));
    let (in_force, superseded) = estimate(&f, RulesConfig::default(), 20);
    assert_eq!(superseded, f.held_out.len() * 96);
    assert_eq!(in_force.len(), f.held_out.len() * 96);
}

fn split_run(
    live: &mut PartitionState,
    resumed: &mut PartitionState,
    records: &[Vec<u8>],
    split: usize,
) {
    let mut estimates = 0;
    for (i, r) in records.iter().enumerate().skip(split) {
        let a = live.process(i as i64, r);
        if let Outcome::Checked(c) = &a {
            estimates += c.estimates.len();
        }
        assert_eq!(a, resumed.process(i as i64, r), "record {i}");
    }
    assert!(estimates > 0, "the second part estimates something");
}

#[test]
fn estimation_state_survives_a_restart() {
    let f = fleet(12, 30, Some(3));
    let split = f.records.len() / 2 + 7;
    let cfg = Arc::new(RulesConfig::default());
    // rebuilt from the checked log
    let mut live = PartitionState::with_rules(4096, cfg.clone(), labels(12));
    let mut log: Vec<CheckedFrame> = Vec::new();
    for (i, r) in f.records[..split].iter().enumerate() {
        if let Outcome::Checked(c) = live.process(i as i64, r) {
            log.push(c);
        }
    }
    assert!(log.iter().any(|c| !c.estimates.is_empty()));
    let mut rebuilt = PartitionState::with_rules(4096, cfg.clone(), labels(12));
    for c in &log {
        rebuilt.replay_checked(c);
    }
    let mut live2 = PartitionState::with_rules(4096, cfg, labels(12));
    for (i, r) in f.records[..split].iter().enumerate() {
        live2.process(i as i64, r);
    }
    split_run(&mut live, &mut rebuilt, &f.records, split);

    // restored from a changelog snapshot
    let devices = live2.take_dirty().unwrap();
    let mut restored = live2.emptied();
    restored
        .restore_partition(&live2.partition_bytes().unwrap())
        .unwrap();
    for (id, bytes) in &devices {
        restored.restore_device(id, bytes).unwrap();
    }
    let largest = devices.iter().map(|(_, b)| b.len()).max().unwrap();
    println!("largest device snapshot with estimation state: {largest} bytes");
    split_run(&mut live2, &mut restored, &f.records, split);
}
