//! OCMF meters in the stream stage (contract v1.1): their readings go through the same
//! rules as any meter's (a register that goes down inside a charging session is
//! flagged), a simulated charger's sessions raise nothing, replay windows are kept per
//! device and `PG` letter (`T` and `F` count independently), and a stage rebuilt from
//! the checked log refuses the same replays.

use std::sync::Arc;

use feeder_core::keyfile::DeviceKey;
use feeder_core::ocmf::{OcmfSigner, SimReading, sim_payload};
use feeder_core::{DeviceKind, SigningKey};
use feeder_proto::pipeline::{CheckedFrame, RawFrame};
use feeder_proto::v1::SignedFrame;
use feeder_sim::fleet::SimDevice;
use feeder_stream::checks::{Outcome, PartitionState};
use feeder_stream::rules::RulesConfig;
use prost::Message;

/// 2025-11-25, like the load generator's wall clock.
const NOW_MS: i64 = 1_764_028_800_000;
const HOUR_MS: i64 = 3_600_000;

fn record(device_id: &str, seq: u64, ocmf: &str) -> Vec<u8> {
    let sf = SignedFrame {
        device_id: device_id.into(),
        seq,
        key_id: "k1".into(),
        payload: ocmf.as_bytes().to_vec().into(),
        signature: Default::default(),
    };
    RawFrame {
        signed_frame: sf.encode_to_vec().into(),
        received_at_ms: NOW_MS,
        edge_id: "edge-0".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn session(start_ms: i64, registers: &[i64]) -> Vec<SimReading> {
    let n = registers.len();
    (0..n)
        .map(|i| SimReading {
            ts_ms: start_ms + i as i64 * 900_000,
            tx: match i {
                0 => 'B',
                _ if i == n - 1 => 'E',
                _ => 'C',
            },
            register_dwh: registers[i],
        })
        .collect()
}

fn state() -> PartitionState {
    PartitionState::with_rules(4096, Arc::new(RulesConfig::default()), Default::default())
}

fn checked(o: Outcome) -> CheckedFrame {
    match o {
        Outcome::Checked(c) => c,
        Outcome::Quarantined(q) => panic!("quarantined: {} {}", q.reason, q.detail),
        Outcome::Absorbed { reason, .. } => panic!("absorbed: {reason:?}"),
    }
}

fn quarantined(o: Outcome) -> String {
    match o {
        Outcome::Quarantined(q) => q.reason,
        Outcome::Checked(c) => panic!("checked seq {}", c.seq),
        Outcome::Absorbed { reason, .. } => reason.as_str().to_string(),
    }
}

#[test]
fn register_down_in_a_session_is_flagged_and_pages_have_their_own_windows() {
    let (signer, _) = OcmfSigner::generate().unwrap();
    let sign = |page: &str, registers: &[i64], start: i64| {
        let json = sim_payload("SIM1", 1, &session(start, registers));
        signer
            .sign(&json.replace("\"PG\":\"T1\"", &format!("\"PG\":\"{page}\"")))
            .unwrap()
    };
    let mut st = state();
    let mut log = Vec::new();
    let t1 = sign("T1", &[10_000, 20_000], NOW_MS - 10 * HOUR_MS);
    let c = checked(st.process(0, &record("evse-1", 1, &t1)));
    assert!(c.reading_flags.is_empty(), "{:?}", c.reading_flags);
    log.push(c);
    // T2: the register goes down inside the session (reading 1 of 3)
    let t2 = sign("T2", &[30_000, 25_000, 40_000], NOW_MS - 8 * HOUR_MS);
    let c = checked(st.process(1, &record("evse-1", 2, &t2)));
    let flagged: Vec<(u32, Vec<String>)> = c
        .reading_flags
        .iter()
        .map(|r| (r.index, r.flags.clone()))
        .collect();
    assert_eq!(flagged, [(1, vec!["register_decrease".to_string()])]);
    let anomalies = st.take_anomalies();
    assert!(anomalies.iter().any(|a| a.rule == "register_decrease"));
    log.push(c);
    // F1, a fiscal page: its own window, so seq 1 again is new
    let f1 = sign("F1", &[40_000, 41_000], NOW_MS - 6 * HOUR_MS);
    log.push(checked(st.process(2, &record("evse-1", 1, &f1))));
    // replays: the same strings again, in both windows
    let replays = [(1, &t1), (1, &f1), (2, &t2)];
    for (i, (seq, s)) in replays.iter().enumerate() {
        let o = st.process(3 + i as i64, &record("evse-1", *seq, s));
        assert_eq!(quarantined(o), "duplicate", "replay {i}");
    }

    // a stage rebuilt from the checked log refuses the same replays
    let mut rebuilt = state();
    for c in &log {
        rebuilt.replay_checked(c);
    }
    for (i, (seq, s)) in replays.iter().enumerate() {
        let o = rebuilt.process(6 + i as i64, &record("evse-1", *seq, s));
        assert_eq!(quarantined(o), "duplicate", "replay {i} after the rebuild");
    }
    let t3 = sign("T3", &[40_000, 45_000], NOW_MS - 4 * HOUR_MS);
    let c = checked(rebuilt.process(9, &record("evse-1", 3, &t3)));
    assert!(
        c.reading_flags.is_empty() && c.frame_flags.is_empty(),
        "{c:?}"
    );
    // a string that does not parse is quarantined, never a row
    let broken = t3.replace("\"RU\":\"kWh\"", "\"RU\":\"furlong\"");
    assert_eq!(
        quarantined(rebuilt.process(10, &record("evse-1", 4, &broken))),
        "malformed_payload"
    );
}

/// A simulated charger's sessions are clean data: no flag, no anomaly.
#[test]
fn simulated_charging_sessions_raise_nothing() {
    let (signer, _) = OcmfSigner::generate().unwrap();
    let mut dev = SimDevice::from_key(
        DeviceKey {
            device_id: "evse-000001".into(),
            key_id: "k1".into(),
            kind: DeviceKind::Meter,
            labels: Default::default(),
            key: SigningKey::Ocmf(Box::new(signer), "SIM000001".into()),
        },
        NOW_MS - 30 * 24 * HOUR_MS,
    );
    let mut st = state();
    let mut readings = 0;
    for i in 0..100 {
        let f = dev.next_frame(NOW_MS);
        readings += f.readings;
        let rec = RawFrame {
            signed_frame: f.frame.encode_to_vec().into(),
            received_at_ms: NOW_MS,
            edge_id: "edge-0".into(),
            ..Default::default()
        };
        let c = checked(st.process(i, &rec.encode_to_vec()));
        assert!(c.reading_flags.is_empty(), "{:?}", c.reading_flags);
        assert!(c.frame_flags.is_empty(), "{:?}", c.frame_flags);
    }
    assert!(st.take_anomalies().is_empty());
    assert!(readings >= 200);
}
