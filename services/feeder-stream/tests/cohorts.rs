//! Fleet cohorts, from one partition's tallies to the fleet aggregator's judgement: a
//! module going silent raises `cohort_silence` for its cohorts only, a fleet-wide diurnal
//! dip raises nothing, and a mass firmware change raises `cohort_firmware_change`.
//! (`fleet_cohorts.rs` runs the same over several partitions through Kafka.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use feeder_proto::pipeline::RawFrame;
use feeder_proto::v1::{Frame, SignedFrame};
use feeder_stream::checks::{Outcome, PartitionState};
use feeder_stream::rules::cohort_fleet::{FleetAggregator, WindowTally};
use feeder_stream::rules::{Finding, RulesConfig};
use prost::Message;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_764_000_000_000 / HOUR * HOUR;
const MODULES: [&str; 3] = ["bg95", "ec25", "sara"];
const N: usize = 600;

fn id(i: usize) -> String {
    format!("mtr-{i:04}")
}

/// 200 devices per module; regions and firmware cycle independently.
fn labels() -> HashMap<String, Arc<BTreeMap<String, String>>> {
    (0..N)
        .map(|i| {
            let l = BTreeMap::from([
                ("module".to_string(), MODULES[i / 200].to_string()),
                (
                    "region".to_string(),
                    ["n", "s", "e", "w"][i % 4].to_string(),
                ),
                ("firmware".to_string(), ["1", "2", "3"][i % 3].to_string()),
            ]);
            (id(i), Arc::new(l))
        })
        .collect()
}

struct Fleet {
    st: PartitionState,
    agg: FleetAggregator,
    seq: Vec<u64>,
    firmware: Vec<String>,
    offset: i64,
}

impl Fleet {
    fn new() -> Self {
        Self {
            st: PartitionState::with_rules(4096, Arc::new(RulesConfig::default()), labels().into()),
            agg: FleetAggregator::new(RulesConfig::default().cohort, 1, 60_000),
            seq: vec![0; N],
            firmware: vec!["v1".to_string(); N],
            offset: 0,
        }
    }

    /// Window `w`: the devices `reports(i)` says report, one frame each; returns what the
    /// aggregator judges of the windows this closes.
    fn window(&mut self, w: i64, reports: impl Fn(usize) -> bool) -> Vec<Finding> {
        for i in (0..N).filter(|&i| reports(i)) {
            self.seq[i] += 1;
            let at = T0 + w * HOUR + i as i64 * 1000;
            let payload = Frame {
                sent_at_ms: at,
                firmware: self.firmware[i].clone(),
                ..Default::default()
            }
            .encode_to_vec();
            let sf = SignedFrame {
                device_id: id(i),
                seq: self.seq[i],
                key_id: "k1".into(),
                payload: payload.into(),
                signature: vec![0; 64].into(),
            };
            let raw = RawFrame {
                signed_frame: sf.encode_to_vec().into(),
                received_at_ms: at,
                edge_id: "e".into(),
                ..Default::default()
            };
            self.offset += 1;
            let out = self.st.process(self.offset, &raw.encode_to_vec());
            assert!(matches!(out, Outcome::Checked(_)));
        }
        assert!(self.st.take_anomalies().is_empty(), "no device anomalies");
        for (w, counts) in self.st.take_tallies() {
            self.agg.add(&WindowTally::new(w, 0, counts), 0);
        }
        self.agg.poll(0)
    }
}

fn cohorts(a: &[Finding], rule: &str) -> Vec<String> {
    a.iter()
        .filter(|a| a.rule == rule)
        .map(|a| a.cohort.clone())
        .collect()
}

#[test]
fn a_module_going_silent_raises_cohort_silence_for_its_cohorts_only() {
    let mut f = Fleet::new();
    for w in 0..30 {
        // night: only a third of every cohort reports (a pattern, not a failure)
        let night = (10..16).contains(&w);
        let found = f.window(w, |i| {
            !night || (i.wrapping_mul(2_654_435_761) >> 8) % 3 == 0
        });
        assert!(found.is_empty(), "window {w}: {found:?}");
    }
    // bg95 (devices 0..200) goes silent in window 30; judged when window 31 starts
    assert!(f.window(30, |i| i >= 200).is_empty());
    let found = f.window(31, |i| i >= 200);
    assert_eq!(
        cohorts(&found, "cohort_silence"),
        [
            "module=bg95",
            "module=bg95,region=e",
            "module=bg95,region=n",
            "module=bg95,region=s",
            "module=bg95,region=w"
        ]
    );
    let a = &found[0];
    assert_eq!(a.severity.as_str(), "critical");
    assert_eq!((a.ts_from_ms, a.ts_to_ms), (T0 + 30 * HOUR, T0 + 31 * HOUR));
    assert!(a.detail.starts_with("0 of 200"), "{}", a.detail);
    assert_eq!(found.len(), 5);
}

#[test]
fn many_devices_changing_firmware_at_once_raise_cohort_firmware_change() {
    let mut f = Fleet::new();
    for w in 0..5 {
        assert!(f.window(w, |_| true).is_empty());
    }
    // 60 of the 200 ec25 modules (devices 200..260) update in window 5
    for i in 200..260 {
        f.firmware[i] = "v2".into();
    }
    assert!(f.window(5, |_| true).is_empty());
    let found = f.window(6, |_| true);
    let got = cohorts(&found, "cohort_firmware_change");
    assert!(got.contains(&"module=ec25".to_string()), "{got:?}");
    assert!(got.iter().all(|c| c.contains("ec25")), "{got:?}");
    assert!(cohorts(&found, "cohort_silence").is_empty());
    // one device updating is no cohort event
    f.firmware[300] = "v3".into();
    assert!(f.window(7, |_| true).is_empty());
    assert!(f.window(8, |_| true).is_empty());
}

#[test]
fn a_week_of_normal_reporting_raises_nothing() {
    // 7 days of hourly windows: every device misses reports at random (5 % by day, 60 %
    // at night, independently), and a whole region dips together for an afternoon
    let mut f = Fleet::new();
    let mut judged = 0;
    for w in 0..7 * 24 {
        let hour = w % 24;
        let night = !(6..22).contains(&hour);
        let drop = if night { 60 } else { 5 };
        let found = f.window(w, |i| {
            let h =
                (i as u64 * 1_000_003 + w as u64 * 7_919).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            let regional_dip = w == 100 && i % 4 == 0;
            h % 100 >= drop && !(regional_dip && h % 100 < 50)
        });
        assert!(found.is_empty(), "window {w}: {found:?}");
        judged += 1;
    }
    assert_eq!(
        f.agg.windows_judged(),
        judged - 1,
        "every closed window was judged"
    );
    // fleet_silence was live, not cold: its history is full
    assert_eq!(
        f.agg.fleet_shares().len(),
        RulesConfig::default().cohort.baseline_windows as usize
    );
}

#[test]
fn the_whole_fleet_going_silent_raises_fleet_silence_for_the_silent_windows() {
    // Every module at once: cohort_silence, comparing each cohort with the rest, sees
    // nothing. The windows nobody reported in are tallied when the partition's clock
    // jumps over them (here a single frame, 3 windows later).
    let mut f = Fleet::new();
    for w in 0..30 {
        let night = !(6..22).contains(&(w % 24));
        let found = f.window(w, |i| {
            !night || (i.wrapping_mul(2_654_435_761) >> 8) % 3 == 0
        });
        assert!(found.is_empty(), "window {w}: {found:?}");
    }
    assert!(f.window(30, |_| false).is_empty(), "nothing closes yet");
    let found = f.window(33, |i| i == 7);
    let got: Vec<_> = found
        .iter()
        .map(|a| (a.rule, a.cohort.as_str(), (a.ts_from_ms - T0) / HOUR))
        .collect();
    assert_eq!(
        got,
        [
            ("fleet_silence", "fleet", 30),
            ("fleet_silence", "fleet", 31),
            ("fleet_silence", "fleet", 32)
        ]
    );
    assert!(
        found[0].detail.starts_with("0 of 600 "),
        "{}",
        found[0].detail
    );
}
