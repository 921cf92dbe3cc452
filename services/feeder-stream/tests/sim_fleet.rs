//! The rules against the simulator (`feeder-sim`), whose invariants say clean data must
//! pass every data check: a false-positive test over simulated fleet data, and a
//! restart tests showing that state rebuilt from the checked log, or restored from a
//! changelog snapshot, decides the following frames exactly as the state that never
//! stopped.

use std::sync::Arc;

use feeder_core::keyfile::DeviceKey;
use feeder_core::{DeviceKind, SigningKey};
use feeder_proto::pipeline::{CheckedFrame, RawFrame};
use feeder_proto::v1::{Event, EventKind, Frame, SignedFrame};
use feeder_sim::fleet::SimDevice;
use feeder_sim::labels::labels_for;
use feeder_stream::checks::{Outcome, PartitionState};
use feeder_stream::config::DeviceLabels;
use feeder_stream::rules::RulesConfig;
use prost::Message;

const DAY_MS: i64 = 86_400_000;
/// A fixed "now" (2025-11-25), like the load generator's wall clock.
const NOW_MS: i64 = 1_764_028_800_000;

fn device(kind: DeviceKind, i: usize, start_ms: i64) -> SimDevice {
    let prefix = match kind {
        DeviceKind::Meter => "mtr",
        DeviceKind::Vehicle => "veh",
    };
    SimDevice::from_key(
        DeviceKey {
            device_id: format!("{prefix}-{i:06}"),
            key_id: "k1".into(),
            kind,
            labels: labels_for(kind, i),
            key: SigningKey::hmac(&[7; 32]),
        },
        start_ms,
    )
}

fn raw(dev: &mut SimDevice, now_ms: i64) -> (Vec<u8>, usize) {
    let f = dev.next_frame(now_ms);
    let rows = f.readings + f.samples;
    let rec = RawFrame {
        signed_frame: f.frame.encode_to_vec().into(),
        received_at_ms: now_ms + 40,
        edge_id: "edge-0".into(),
        ..Default::default()
    };
    (rec.encode_to_vec(), rows)
}

/// Meters backfill as the load generator does (from one year ago, a day per frame);
/// vehicles play one simulated day, a minute per frame. Frames are interleaved across
/// devices as a concentrator would send them.
fn fleet_frames(
    meters: usize,
    meter_days: usize,
    vehicles: usize,
    vehicle_minutes: usize,
) -> Vec<(Vec<u8>, usize)> {
    let start = (NOW_MS.div_euclid(DAY_MS) - 365) * DAY_MS;
    let mut ms: Vec<_> = (0..meters)
        .map(|i| device(DeviceKind::Meter, i, start))
        .collect();
    let mut vs: Vec<_> = (0..vehicles)
        .map(|i| device(DeviceKind::Vehicle, i, start))
        .collect();
    let mut out = Vec::new();
    let mut clock = NOW_MS;
    for step in 0..meter_days.max(vehicle_minutes) {
        if step < meter_days {
            for m in &mut ms {
                clock += 3;
                out.push(raw(m, clock));
            }
        }
        if step < vehicle_minutes {
            for v in &mut vs {
                clock += 3;
                out.push(raw(v, clock));
            }
        }
    }
    out
}

fn labels(meters: usize, vehicles: usize) -> DeviceLabels {
    let mut m = std::collections::HashMap::new();
    for i in 0..meters {
        m.insert(
            format!("mtr-{i:06}"),
            Arc::new(labels_for(DeviceKind::Meter, i)),
        );
    }
    for i in 0..vehicles {
        m.insert(
            format!("veh-{i:06}"),
            Arc::new(labels_for(DeviceKind::Vehicle, i)),
        );
    }
    m.into()
}

#[test]
fn clean_simulated_fleet_raises_no_flag_and_no_anomaly() {
    // 60 meters over 45 days (the spike rule judges from day 5 on) and 12 vehicles over
    // a simulated day (1,440 one-minute frames each)
    let (meters, vehicles) = (60, 12);
    let frames = fleet_frames(meters, 45, vehicles, 1440);
    let mut st = PartitionState::with_rules(
        4096,
        Arc::new(RulesConfig::default()),
        labels(meters, vehicles),
    );
    let mut rows = 0usize;
    let mut flagged_rows = 0usize;
    let mut examples = Vec::new();
    for (i, (v, n)) in frames.iter().enumerate() {
        rows += n;
        match st.process(i as i64, v) {
            Outcome::Checked(c) => {
                let bad = c.reading_flags.len() + c.sample_flags.len();
                flagged_rows += bad;
                if (!c.frame_flags.is_empty() || bad > 0) && examples.len() < 5 {
                    examples.push((
                        c.device_id.clone(),
                        c.seq,
                        c.frame_flags.clone(),
                        c.reading_flags.clone(),
                        c.sample_flags.clone(),
                    ));
                }
            }
            Outcome::Quarantined(q) => panic!("clean frame quarantined: {}", q.reason),
            Outcome::Absorbed { reason, .. } => panic!("clean frame refused: {reason:?}"),
        }
    }
    let anomalies = st.take_anomalies();
    eprintln!(
        "rows {rows}, flagged rows {flagged_rows}, anomalies {}",
        anomalies.len()
    );
    assert!(examples.is_empty(), "flags on clean data: {examples:?}");
    assert!(
        anomalies.is_empty(),
        "anomalies on clean data: {:?}",
        &anomalies[..anomalies.len().min(5)]
    );
    assert!(rows > 1_000_000);
    // stated bound: a meter's rule state stays about 3 KB plus 3.3 KB of estimation
    // profile (docs/checks.md), a vehicle's is tiny
    let meter = st.device_bytes("mtr-000000").unwrap();
    let vehicle = st.device_bytes("veh-000000").unwrap();
    assert!(meter < 8_192, "{meter}");
    assert!(vehicle < 512, "{vehicle}");
}

/// Adds a cover-opened event to the frame and multiplies one interval reading by ten (a
/// spike once the meter has history); the stream stage does not verify signatures.
fn tamper(v: &[u8]) -> Vec<u8> {
    let mut raw = RawFrame::decode(v).unwrap();
    let mut sf = SignedFrame::decode(raw.signed_frame.clone()).unwrap();
    let mut f = Frame::decode(sf.payload.clone()).unwrap();
    if let Some(r) = f.readings.get_mut(40) {
        r.value *= 10;
    }
    let ts_ms = f.readings.first().map(|r| r.ts_ms).unwrap_or(f.sent_at_ms);
    f.events.push(Event {
        ts_ms,
        kind: EventKind::CoverOpened as i32,
        detail: "test".into(),
    });
    sf.payload = f.encode_to_vec().into();
    raw.signed_frame = sf.encode_to_vec().into();
    raw.encode_to_vec()
}

/// Simulated fleet frames with every fifth tampered (cover-opened events, spikes), and
/// where a restart test splits them.
fn frames_with_findings() -> (Vec<(Vec<u8>, usize)>, usize) {
    let mut frames = fleet_frames(12, 20, 4, 40);
    for (i, (v, _)) in frames.iter_mut().enumerate() {
        if i % 5 == 0 {
            *v = tamper(v);
        }
    }
    let split = frames.len() * 2 / 3;
    (frames, split)
}

/// `resumed` (after a restart) refuses a replay and decides every frame past `split`
/// exactly as `live`, the state that never stopped, with the same anomalies.
fn assert_decides_like(
    live: &mut PartitionState,
    resumed: &mut PartitionState,
    frames: &[(Vec<u8>, usize)],
    split: usize,
) {
    let Outcome::Quarantined(q) = resumed.process(99_999, &frames[0].0) else {
        panic!("replay accepted after the restart")
    };
    assert_eq!(q.reason, "duplicate");
    for (i, (v, _)) in frames.iter().enumerate().skip(split) {
        assert_eq!(
            live.process(i as i64, v),
            resumed.process(i as i64, v),
            "frame {i}"
        );
    }
    let after = live.take_anomalies();
    assert!(!after.is_empty());
    assert_eq!(after, resumed.take_anomalies());
}

#[test]
fn state_rebuilt_from_the_checked_log_decides_like_the_state_that_never_stopped() {
    let (frames, split) = frames_with_findings();
    let cfg = Arc::new(RulesConfig::default());
    let mut live = PartitionState::with_rules(4096, cfg.clone(), labels(12, 4));
    let mut log: Vec<CheckedFrame> = Vec::new();
    for (i, (v, _)) in frames[..split].iter().enumerate() {
        if let Outcome::Checked(c) = live.process(i as i64, v) {
            log.push(c);
        }
    }
    let before = live.take_anomalies();
    assert!(before.iter().any(|a| a.rule == "cover_opened"));
    assert!(
        log.iter()
            .any(|c| c.reading_flags.iter().any(|r| r.flags == ["spike"]))
    );
    let mut rebuilt = PartitionState::with_rules(4096, cfg, labels(12, 4));
    let replayed: Vec<_> = log.iter().flat_map(|c| rebuilt.replay_checked(c)).collect();
    assert_eq!(replayed, before, "replay recomputes the same anomalies");
    assert_decides_like(&mut live, &mut rebuilt, &frames, split);
}

#[test]
fn state_restored_from_a_snapshot_decides_like_the_state_that_never_stopped() {
    let (frames, split) = frames_with_findings();
    let cfg = Arc::new(RulesConfig::default());
    let mut live = PartitionState::with_rules(4096, cfg, labels(12, 4));
    for (i, (v, _)) in frames[..split].iter().enumerate() {
        live.process(i as i64, v);
    }
    live.take_anomalies();
    // what the changelog would hold: every device (all changed), then the checkpoint
    assert_eq!(live.dirty_devices(), 16);
    let devices = live.take_dirty().unwrap();
    assert_eq!(live.dirty_devices(), 0);
    assert_eq!(devices.len(), 16);
    let largest = devices.iter().map(|(_, b)| b.len()).max().unwrap();
    println!("largest device snapshot: {largest} bytes");
    let partition = live.partition_bytes().unwrap();
    let mut restored = live.emptied();
    assert_eq!(restored.devices(), 0);
    restored.restore_partition(&partition).unwrap();
    for (id, bytes) in &devices {
        restored.restore_device(id, bytes).unwrap();
    }
    assert_eq!(restored.devices(), 16);
    assert_eq!(
        restored.dirty_devices(),
        0,
        "restored state is already stored"
    );
    // rule state included (spike history, registers, positions, cohort clock)
    assert_decides_like(&mut live, &mut restored, &frames, split);
    // a corrupt snapshot is an error, not a panic or a silently empty device
    assert!(restored.restore_device("mtr-000001", &[0xff; 3]).is_err());
}
