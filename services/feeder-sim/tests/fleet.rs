//! Simulated frames are well-formed, plausible, deterministic and correctly signed.

use std::collections::BTreeMap;

use feeder_core::keyfile::DeviceKey;
use feeder_core::{DeviceKind, SigningKey, VerifyingKey};
use feeder_proto::v1::{Frame, Reading, Sample, Unit};
use feeder_sim::fleet::geo::haversine_m;
use feeder_sim::fleet::{
    Fleet, INTERVAL_OBIS, INTERVALS_PER_DAY, REGISTER_OBIS, SAMPLES_PER_FRAME, SimDevice,
    VOLTAGE_OBIS, region_box,
};
use prost::Message;

const DAY_MS: i64 = 86_400_000;
/// 2024-03-10T13:20:00Z: not a midnight, to check days are aligned.
const START_MS: i64 = 1_710_076_800_000;
const NOW_MS: i64 = 1_750_000_000_000;

fn key(device_id: &str, kind: DeviceKind, hmac: bool) -> DeviceKey {
    let seed = [device_id.len() as u8; 32];
    DeviceKey {
        device_id: device_id.into(),
        key_id: "k1".into(),
        kind,
        labels: BTreeMap::from([
            ("region".to_string(), "east".to_string()),
            ("firmware".to_string(), "4.2.1".to_string()),
        ]),
        key: if hmac {
            SigningKey::hmac(&seed)
        } else {
            SigningKey::ed25519_from_seed(&seed).unwrap()
        },
    }
}

fn verifying(k: &DeviceKey) -> VerifyingKey {
    match &k.key {
        SigningKey::Ed25519(_) => VerifyingKey::ed25519(k.key.ed25519_public().unwrap()),
        SigningKey::Hmac(_) => VerifyingKey::hmac(&[k.device_id.len() as u8; 32]),
        SigningKey::Ocmf(s, serial) => VerifyingKey::Ocmf(Box::new(
            feeder_core::ocmf::OcmfKey::from_spki_der(&s.spki_der(), Some(serial)).unwrap(),
        )),
    }
}

/// OCMF chargers: one session a frame, PG = seq, begin/end (sometimes intermediate)
/// readings of a register that never decreases, each string verifying under the key.
#[test]
fn ocmf_chargers_play_signed_sessions() {
    let (signer, _) = feeder_core::ocmf::OcmfSigner::generate().unwrap();
    let k = DeviceKey {
        device_id: "evse-000001".into(),
        key_id: "k1".into(),
        kind: DeviceKind::Meter,
        labels: BTreeMap::new(),
        key: SigningKey::Ocmf(Box::new(signer), "SIM000001".into()),
    };
    let vk = verifying(&k);
    let mut dev = feeder_sim::SimDevice::from_key(k, NOW_MS);
    let peeked = dev.peek_payload(NOW_MS);
    let (mut last_register, mut last_ts, mut intermediate) = (i64::MIN, i64::MIN, 0);
    for seq in 1..=30u64 {
        let f = dev.next_frame(NOW_MS);
        if seq == 1 {
            // same session, same PG; ECDSA signatures are randomised, the payload is not
            let cut = |b: &[u8]| b[..b.iter().rposition(|&c| c == b'|').unwrap()].to_vec();
            assert_eq!(cut(&peeked), cut(&f.frame.payload));
        }
        assert_eq!(f.frame.seq, seq);
        assert!(f.frame.signature.is_empty());
        let mut s = Vec::new();
        vk.check_shape(seq, &f.frame.payload).unwrap();
        vk.verify(&mut s, &f.frame.device_id, "k1", seq, &f.frame.payload, &[])
            .unwrap();
        let c = feeder_core::ocmf::convert(&f.frame.payload).unwrap();
        assert_eq!(c.page, ('T', seq));
        let n = c.frame.readings.len();
        assert_eq!(f.readings, n);
        assert!(n >= 2);
        intermediate += usize::from(n > 2);
        assert_eq!(c.flags[0][1], "ocmf_tx_B");
        assert_eq!(c.flags[n - 1][1], "ocmf_tx_E");
        for r in &c.frame.readings {
            assert!(r.value >= last_register && r.ts_ms > last_ts);
            (last_register, last_ts) = (r.value, r.ts_ms);
        }
    }
    assert!(intermediate > 0, "no session had intermediate readings");
}

fn decode(f: &feeder_sim::SimFrame) -> Frame {
    Frame::decode(f.frame.payload.clone()).unwrap()
}

#[test]
fn meter_frames_cover_successive_days() {
    let mut dev = SimDevice::from_key(key("mtr-000001", DeviceKind::Meter, false), START_MS);
    let first_day = START_MS - START_MS.rem_euclid(DAY_MS);
    let mut prev_register: Option<i64> = None;
    for n in 0..30i64 {
        let f = dev.next_frame(NOW_MS + n);
        assert_eq!(f.frame.seq, n as u64 + 1);
        assert_eq!(
            (f.readings, f.samples, f.events),
            (INTERVALS_PER_DAY + 2, 0, 0)
        );
        let frame = decode(&f);
        assert_eq!(frame.sent_at_ms, NOW_MS + n);
        assert_eq!(frame.firmware, "4.2.1");
        assert_eq!(frame.readings.len(), f.readings);

        let day = first_day + n * DAY_MS;
        let by_obis = |obis: &str| -> Vec<&Reading> {
            frame.readings.iter().filter(|r| r.obis == obis).collect()
        };
        let intervals = by_obis(INTERVAL_OBIS);
        assert_eq!(intervals.len(), 96);
        for (i, r) in intervals.iter().enumerate() {
            assert_eq!(r.ts_ms, day + (i as i64 + 1) * 900_000, "interval end, UTC");
            assert_eq!((r.interval_s, r.scaler, r.unit), (900, 0, Unit::Wh as i32));
            // 4 W .. 10 kW average over 15 minutes
            assert!((1..=2500).contains(&r.value), "{}", r.value);
        }
        let sum: i64 = intervals.iter().map(|r| r.value).sum();
        // a household uses roughly 3..25 kWh a day
        assert!((3_000..=25_000).contains(&sum), "day sum {sum}");

        let register = by_obis(REGISTER_OBIS);
        assert_eq!(register.len(), 1);
        let register = register[0];
        assert_eq!(
            (register.interval_s, register.scaler, register.unit),
            (0, 0, Unit::Wh as i32)
        );
        assert_eq!(register.ts_ms, day + DAY_MS);
        if let Some(prev) = prev_register {
            assert_eq!(
                register.value,
                prev + sum,
                "register = previous + intervals"
            );
        }
        prev_register = Some(register.value);

        let volts = by_obis(VOLTAGE_OBIS);
        assert_eq!(volts.len(), 1);
        let v = volts[0];
        assert_eq!((v.interval_s, v.scaler, v.unit), (0, -1, Unit::V as i32));
        assert!((2231..=2369).contains(&v.value), "{}", v.value);
    }
}

#[test]
fn meter_load_shape_has_night_base_and_evening_peak() {
    let mut night = 0i64;
    let mut evening = 0i64;
    for d in 0..20 {
        let mut dev = SimDevice::from_key(
            key(&format!("mtr-{d:06}"), DeviceKind::Meter, false),
            START_MS,
        );
        for _ in 0..5 {
            let frame = decode(&dev.next_frame(NOW_MS));
            let iv: Vec<i64> = frame.readings[..96].iter().map(|r| r.value).collect();
            night += iv[8..16].iter().sum::<i64>(); // 02:00-04:00
            evening += iv[76..84].iter().sum::<i64>(); // 19:00-21:00
        }
    }
    assert!(evening > 2 * night, "evening {evening} night {night}");
}

fn samples_of(dev: &mut SimDevice, frames: usize) -> Vec<Sample> {
    let mut out = Vec::new();
    for _ in 0..frames {
        let f = dev.next_frame(NOW_MS);
        assert_eq!((f.readings, f.samples, f.events), (0, SAMPLES_PER_FRAME, 0));
        out.extend(decode(&f).samples);
    }
    out
}

#[test]
fn vehicle_tracks_are_plausible() {
    let boxed = region_box("east");
    let mut moved_total = 0.0;
    let mut saw_stop = false;
    let mut saw_fast = false;
    for v in 0..6 {
        let mut dev = SimDevice::from_key(
            key(&format!("veh-{v:06}"), DeviceKind::Vehicle, v % 2 == 1),
            START_MS,
        );
        let samples = samples_of(&mut dev, 60); // one simulated hour
        assert_eq!(samples[0].ts_ms, START_MS);
        let mut track = 0.0;
        for w in samples.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert_eq!(b.ts_ms - a.ts_ms, 1000, "1 Hz, no gaps between frames");
            let d = haversine_m(
                f64::from(a.lat_e7) / 1e7,
                f64::from(a.lon_e7) / 1e7,
                f64::from(b.lat_e7) / 1e7,
                f64::from(b.lon_e7) / 1e7,
            );
            assert!(d < 60.0, "teleport: {d} m in 1 s");
            // the distance matches the reported speeds (trapezoid rule)
            let v_avg = f64::from(a.speed_cm_s + b.speed_cm_s) / 200.0;
            assert!((d - v_avg).abs() < 0.1, "moved {d} m at {v_avg} m/s");
            assert!(b.odometer_m >= a.odometer_m, "odometer rollback");
            if d > 0.0 {
                assert!(a.ignition || b.ignition, "moving with the ignition off");
            }
            let dh = (f64::from(b.heading_cdeg) - f64::from(a.heading_cdeg) + 54_000.0)
                .rem_euclid(36_000.0)
                - 18_000.0;
            assert!(dh.abs() <= 601.0, "heading jumped {dh} cdeg");
            track += d;
        }
        for s in &samples {
            assert!(s.speed_cm_s <= 3000, "{}", s.speed_cm_s);
            assert!(s.heading_cdeg < 36_000);
            assert!(
                (12_600..=14_400).contains(&s.battery_mv),
                "{}",
                s.battery_mv
            );
            if s.speed_cm_s > 0 {
                assert!(s.ignition);
            }
            // stays near its region box (it steers back within its margin)
            let (lat, lon) = (f64::from(s.lat_e7) / 1e7, f64::from(s.lon_e7) / 1e7);
            assert!(
                lat > boxed.lat_min - 0.05 && lat < boxed.lat_max + 0.05,
                "{lat}"
            );
            assert!(
                lon > boxed.lon_min - 0.05 && lon < boxed.lon_max + 0.05,
                "{lon}"
            );
            saw_stop |= s.speed_cm_s == 0;
            saw_fast |= s.speed_cm_s > 1500;
        }
        let odo = (samples.last().unwrap().odometer_m - samples[0].odometer_m) as f64;
        assert!(
            (odo - track).abs() <= 0.02 * track + 2.0,
            "odometer {odo} m vs track {track} m"
        );
        moved_total += track;
    }
    assert!(
        moved_total > 10_000.0,
        "vehicles barely moved: {moved_total} m"
    );
    assert!(saw_stop && saw_fast);
}

#[test]
fn frames_are_deterministic_and_signed() {
    for (id, kind, hmac) in [
        ("mtr-000007", DeviceKind::Meter, false),
        ("veh-000001", DeviceKind::Vehicle, false),
        ("veh-000002", DeviceKind::Vehicle, true),
    ] {
        let k = key(id, kind, hmac);
        let vk = verifying(&k);
        let mut a = SimDevice::from_key(key(id, kind, hmac), START_MS);
        let mut b = SimDevice::from_key(k, START_MS);
        let mut scratch = Vec::new();
        for seq in 1..=5 {
            assert_eq!(a.next_seq(), seq);
            let peeked = a.peek_payload(NOW_MS);
            let fa = a.next_frame(NOW_MS);
            assert_eq!(fa.frame.payload, peeked, "peek does not advance the device");
            assert_eq!(fa, b.next_frame(NOW_MS), "{id} frame {seq}");
            let f = &fa.frame;
            assert_eq!(
                (f.device_id.as_str(), f.key_id.as_str(), f.seq),
                (id, "k1", seq)
            );
            assert_eq!(f.signature.len(), if hmac { 32 } else { 64 });
            vk.verify(&mut scratch, id, "k1", seq, &f.payload, &f.signature)
                .unwrap();
            assert_eq!(a.sign(seq, &f.payload), f.signature.to_vec());
        }
    }
    // different devices, different data
    let mut m1 = SimDevice::from_key(key("mtr-000001", DeviceKind::Meter, false), START_MS);
    let mut m2 = SimDevice::from_key(key("mtr-000002", DeviceKind::Meter, false), START_MS);
    assert_ne!(
        decode(&m1.next_frame(NOW_MS)).readings,
        decode(&m2.next_frame(NOW_MS)).readings
    );
}

#[test]
fn skip_to_seq_only_moves_forward() {
    let mut dev = SimDevice::from_key(key("mtr-000001", DeviceKind::Meter, false), START_MS);
    dev.skip_to_seq(100);
    assert_eq!(dev.next_frame(NOW_MS).frame.seq, 100);
    dev.skip_to_seq(5);
    assert_eq!(dev.next_frame(NOW_MS).frame.seq, 101);
}

#[test]
fn fleet_is_round_robin_in_seq_order() {
    let keys = vec![
        key("mtr-000001", DeviceKind::Meter, false),
        key("veh-000001", DeviceKind::Vehicle, false),
        key("veh-000002", DeviceKind::Vehicle, true),
    ];
    let mut fleet = Fleet::from_keys(keys, START_MS);
    let order: Vec<(String, u64)> = (0..7)
        .map(|_| {
            let f = fleet.next_frame(NOW_MS).unwrap().frame;
            (f.device_id, f.seq)
        })
        .collect();
    let want: Vec<(String, u64)> = [
        ("mtr-000001", 1),
        ("veh-000001", 1),
        ("veh-000002", 1),
        ("mtr-000001", 2),
        ("veh-000001", 2),
        ("veh-000002", 2),
        ("mtr-000001", 3),
    ]
    .iter()
    .map(|(d, s)| (d.to_string(), *s))
    .collect();
    assert_eq!(order, want);
    assert!(Fleet::from_keys(Vec::new(), 0).next_frame(NOW_MS).is_none());
}

#[test]
fn a_1hz_telematics_fleet_is_its_vehicles_each_sending_every_fix_once_a_round() {
    let keys = vec![
        key("mtr-000001", DeviceKind::Meter, false),
        key("veh-000001", DeviceKind::Vehicle, false),
        key("mtr-000002", DeviceKind::Meter, true),
        key("veh-000002", DeviceKind::Vehicle, true),
    ];
    let mut fleet = Fleet::from_keys(keys, START_MS).telematics_1hz();
    assert_eq!(fleet.len(), 2);
    let mut last_ts: BTreeMap<String, i64> = BTreeMap::new();
    for round in 0..5u64 {
        for id in ["veh-000001", "veh-000002"] {
            let f = fleet.next_frame(NOW_MS).unwrap();
            assert_eq!((f.frame.device_id.as_str(), f.frame.seq), (id, round + 1));
            assert_eq!((f.readings, f.samples, f.events), (0, 1, 0));
            let ts = decode(&f).samples[0].ts_ms;
            if let Some(prev) = last_ts.insert(id.to_string(), ts) {
                assert_eq!(ts - prev, 1000, "{id}: one fix a second");
            }
        }
    }
}
