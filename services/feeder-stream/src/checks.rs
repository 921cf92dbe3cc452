//! The per-record decision, free of I/O: admit (decode, edge proof, row cap, date
//! horizon: [`crate::admit`]), classify against the device's replay window, then run the
//! data rules ([`crate::rules`]) on accepted frames, their findings cut to the per-frame
//! caps ([`crate::limits`]). Everything refused keeps the device's bytes and a snake_case
//! reason (further copies of one refused frame are only counted, [`crate::replays`]);
//! rule findings become flags on the checked frame and anomaly records, and never refuse
//! a frame.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use feeder_core::EdgeProof;
use feeder_proto::pipeline::{Anomaly, CheckedFrame, QuarantinedFrame, RawFrame};
use feeder_proto::v1::{Frame, SignedFrame};

use crate::admit::{Admitted, Reason, Refusal, admit};
use crate::config::{DeviceLabels, StreamConfig};
use crate::limits::FrameLimits;
use crate::replays::{Replay, ReplayLog};
use crate::rules::cohort::{self, CohortDevice, WindowCounts};
use crate::rules::{DeviceRules, Findings, FrameCtx, RulesConfig};
use crate::window::{SeqWindow, Verdict};

/// The frame flag of a frame with seqs missing before it (the one flag that is not a
/// rule's finding).
pub const GAP_BEFORE: &str = "gap_before";

/// What one raw record becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Checked(CheckedFrame),
    Quarantined(QuarantinedFrame),
    /// A further copy of a frame already quarantined for the device, not the 2nd, 4th,
    /// 8th...: counted in its state, nothing to write ([`crate::replays`]).
    Absorbed {
        device_id: String,
        reason: Reason,
    },
}

impl Outcome {
    pub fn device_id(&self) -> &str {
        match self {
            Outcome::Checked(c) => &c.device_id,
            Outcome::Quarantined(q) => &q.device_id,
            Outcome::Absorbed { device_id, .. } => device_id,
        }
    }
}

/// One device's state: its replay window and its rule state (what the changelog
/// stores per device, [`crate::changelog`]).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Device {
    window: SeqWindow,
    rules: DeviceRules,
    cohort: CohortDevice,
    /// Refused frames seen more than once. Serialized after the fields above, only when
    /// not empty ([`Device::to_bytes`]): a record without it is what version 1 wrote.
    #[serde(skip)]
    replays: ReplayLog,
    /// Changed since the last [`PartitionState::take_dirty`] (not part of the state).
    #[serde(skip)]
    dirty: bool,
}

impl Device {
    /// The changelog encoding: postcard of the fields, then the replay log when there
    /// is one. `postcard::from_bytes` ignores trailing bytes, so a stage of the previous
    /// version restores such a record too (without the counts), and this one restores
    /// the previous version's records: the format stays [`crate::changelog::STATE_FORMAT`].
    /// The estimation state (VEE, [`crate::rules::estimate`]) follows the replay log the
    /// same way (the log, empty or not, is then always written).
    fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = postcard::to_stdvec(self)?;
        let estimates = !self.rules.estimates.is_empty();
        if !self.replays.is_empty() || estimates {
            out.extend(postcard::to_stdvec(&self.replays)?);
        }
        if estimates {
            out.extend(postcard::to_stdvec(&self.rules.estimates)?);
        }
        Ok(out)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let (mut d, rest): (Device, _) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            let (replays, rest) = postcard::take_from_bytes(rest)?;
            d.replays = replays;
            if !d.replays.is_valid() {
                return Err(postcard::Error::DeserializeBadEncoding);
            }
            if !rest.is_empty() {
                d.rules.estimates = postcard::from_bytes(rest)?;
            }
        }
        Ok(d)
    }
}

/// Replay windows and rule state of the devices of one partition.
#[derive(Debug, Default)]
pub struct PartitionState {
    devices: HashMap<String, Device>,
    window: u64,
    rules: Arc<RulesConfig>,
    labels: DeviceLabels,
    /// Raw records without a valid proof are quarantined `not_from_edge`.
    edge_proof: EdgeProof,
    limits: FrameLimits,
    /// Anomalies of the frames processed since the last [`Self::take_anomalies`].
    anomalies: Vec<Anomaly>,
    /// Flag and anomaly counts per rule since the last [`Self::take_rule_counts`].
    rule_counts: BTreeMap<&'static str, u64>,
    /// Estimate rows per (method, status) since the last [`Self::take_estimate_counts`].
    estimate_counts: BTreeMap<(&'static str, &'static str), u64>,
    /// The cohort window the partition's clock (received_at of checked frames) is in.
    cohort_window: i64,
    /// How many devices have `dirty` set.
    dirty: usize,
    /// Cohort counts of the windows closed since the last [`Self::take_tallies`].
    tallies: Vec<(i64, WindowCounts)>,
}

/// The partition-wide part of the state (the changelog's checkpoint record carries it).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PartitionWide {
    cohort_window: i64,
}

impl PartitionState {
    /// Replay windows only, default rules and no labels (tests, tools).
    pub fn new(window: u64) -> Self {
        Self::with_rules(window, Arc::default(), DeviceLabels::default())
    }

    pub fn with_rules(window: u64, rules: Arc<RulesConfig>, labels: DeviceLabels) -> Self {
        Self {
            devices: HashMap::new(),
            window,
            rules,
            labels,
            edge_proof: EdgeProof::Off,
            limits: FrameLimits::default(),
            anomalies: Vec::new(),
            rule_counts: BTreeMap::new(),
            estimate_counts: BTreeMap::new(),
            cohort_window: i64::MIN,
            dirty: 0,
            tallies: Vec::new(),
        }
    }

    /// The stage's settings: replay window, rules, labels, edge proof and frame limits.
    pub fn from_config(cfg: &StreamConfig) -> Self {
        Self::with_rules(
            cfg.replay_window,
            Arc::new(cfg.rules.clone()),
            cfg.device_labels.clone(),
        )
        .with_edge_proof(cfg.edge_proof.clone())
        .with_limits(cfg.frame_limits)
    }

    /// Raw records must carry a valid edge proof from now on.
    pub fn with_edge_proof(mut self, proof: EdgeProof) -> Self {
        self.edge_proof = proof;
        self
    }

    pub fn with_limits(mut self, limits: FrameLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Device labels from now on (a reloaded registry).
    pub fn set_labels(&mut self, labels: DeviceLabels) {
        self.labels = labels;
    }

    /// A state with the same settings and no devices.
    pub fn emptied(&self) -> Self {
        Self::with_rules(self.window, self.rules.clone(), self.labels.clone())
            .with_edge_proof(self.edge_proof.clone())
            .with_limits(self.limits)
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Approximate bytes of state held for `device_id` (window + rules).
    pub fn device_bytes(&self, device_id: &str) -> Option<usize> {
        self.devices
            .get(device_id)
            .map(|d| d.window.approx_bytes() + d.rules.approx_bytes() + d.replays.approx_bytes())
    }

    /// Replays an accepted frame's seq only (tests; recovery uses [`Self::replay_checked`]).
    pub fn apply_accepted(&mut self, device_id: &str, seq: u64) {
        let window = self.window;
        self.device_mut(device_id).window.accept(seq, window);
    }

    /// Replays a frame from the checked log: accepts its seq and runs the rules on it,
    /// so rule state is what it was after the frame was first processed. Returns the
    /// anomalies it raised then (the rules are deterministic), which recovery compares
    /// with what the anomalies topic holds.
    pub fn replay_checked(&mut self, c: &CheckedFrame) -> Vec<Anomaly> {
        let window = self.window;
        let Ok(decoded) = feeder_core::payload::decode(&c.payload) else {
            self.device_mut(&c.device_id).window.accept(c.seq, window);
            return Vec::new(); // cannot happen: only decodable payloads are checked
        };
        let key = feeder_core::payload::window_key(&c.device_id, decoded.separate_window());
        self.device_mut(&key).window.accept(c.seq, window);
        let findings = self.evaluate(&key, c.received_at_ms, &decoded.frame);
        findings.anomaly_records(&c.device_id, c.seq, c.received_at_ms, c.source_offset)
    }

    /// The anomalies raised since the last call, in processing order.
    pub fn take_anomalies(&mut self) -> Vec<Anomaly> {
        std::mem::take(&mut self.anomalies)
    }

    /// This partition's cohort counts of each window closed since the last call, oldest
    /// first: what it contributes to the fleet-wide judgement ([`crate::fleet`]).
    pub fn take_tallies(&mut self) -> Vec<(i64, WindowCounts)> {
        std::mem::take(&mut self.tallies)
    }

    /// Flags and anomalies per rule since the last call (for per-batch metrics).
    pub fn take_rule_counts(&mut self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut self.rule_counts)
    }

    /// Estimate rows per (method, status) since the last call, as the `estimates`
    /// dataset spells them (for per-batch metrics).
    pub fn take_estimate_counts(&mut self) -> BTreeMap<(&'static str, &'static str), u64> {
        std::mem::take(&mut self.estimate_counts)
    }

    /// How many devices changed since the last [`Self::take_dirty`].
    pub fn dirty_devices(&self) -> usize {
        self.dirty
    }

    /// The serialized state of every device changed since the last call, in device-id
    /// order: the changelog's device records.
    pub fn take_dirty(&mut self) -> Result<Vec<(String, Vec<u8>)>, postcard::Error> {
        let mut out = Vec::with_capacity(self.dirty);
        for (id, d) in self.devices.iter_mut().filter(|(_, d)| d.dirty) {
            out.push((id.clone(), d.to_bytes()?));
            d.dirty = false;
        }
        self.dirty = 0;
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The partition-wide state (the cohort clock), serialized.
    pub fn partition_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(&PartitionWide {
            cohort_window: self.cohort_window,
        })
    }

    /// Restores what [`Self::partition_bytes`] produced.
    pub fn restore_partition(&mut self, bytes: &[u8]) -> Result<(), postcard::Error> {
        let p: PartitionWide = postcard::from_bytes(bytes)?;
        self.cohort_window = p.cohort_window;
        Ok(())
    }

    /// Restores one device from its changelog record (see [`Self::take_dirty`]).
    pub fn restore_device(&mut self, device_id: &str, bytes: &[u8]) -> Result<(), postcard::Error> {
        let d = Device::from_bytes(bytes)?;
        // decoded is not valid: a record contradicting itself is refused like bad bytes
        if d.window.validate(self.window).is_err() {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        self.devices.insert(device_id.to_string(), d);
        Ok(())
    }

    fn device_mut(&mut self, device_id: &str) -> &mut Device {
        if !self.devices.contains_key(device_id) {
            self.devices
                .insert(device_id.to_string(), Device::default());
        }
        // invariant: inserted just above when missing
        let d = self
            .devices
            .get_mut(device_id)
            .expect("device inserted above");
        if !d.dirty {
            d.dirty = true;
            self.dirty += 1;
        }
        d
    }

    fn evaluate(&mut self, device_id: &str, received_at_ms: i64, frame: &Frame) -> Findings {
        let labels = self.labels.get(device_id).map(|l| &**l);
        let ctx = FrameCtx {
            received_at_ms,
            labels,
        };
        let mut findings = Findings::default();
        let rules = &self.rules;
        // `device_mut` without borrowing all of self: labels and rules are read above
        let Some(dev) = self.devices.get_mut(device_id) else {
            return findings;
        };
        dev.rules.evaluate(rules, ctx, frame, &mut findings);
        // in the replay of the checked log too, so recovery finds the same anomalies
        self.limits.cap(&mut findings);
        self.cohort_step(device_id, received_at_ms, &frame.firmware);
        findings
    }

    /// Advances the partition's cohort clock to the window of `received_at_ms` (closing
    /// the windows it leaves) and marks the device seen. A frame of a window already
    /// closed is late: it counts as seen in the open window and closes nothing, so no
    /// window is ever tallied twice by one run.
    fn cohort_step(&mut self, device_id: &str, received_at_ms: i64, firmware: &str) {
        let cfg = &self.rules.cohort;
        if cfg.groupings.is_empty() || cfg.window_ms <= 0 {
            return;
        }
        self.close_windows_before(received_at_ms.div_euclid(cfg.window_ms));
        let now = self.cohort_window;
        if let Some(dev) = self.devices.get_mut(device_id) {
            dev.cohort.seen(now, firmware);
        }
    }

    /// Moves the cohort clock to `now_ms` without a frame (the stage's idle clock, for a
    /// partition that has read everything there is to read): every window ending at or
    /// before `now_ms` is closed and tallied. Returns how many were closed. Without it a
    /// partition with no traffic closes nothing, and a fleet gone silent is never judged.
    pub fn advance_cohort_clock(&mut self, now_ms: i64) -> usize {
        let cfg = &self.rules.cohort;
        if cfg.groupings.is_empty() || cfg.window_ms <= 0 {
            return 0;
        }
        let before = self.tallies.len();
        self.close_windows_before(now_ms.div_euclid(cfg.window_ms));
        self.tallies.len() - before
    }

    /// The cohort window the partition's clock is in (`i64::MIN` before its first frame
    /// or tick).
    pub fn cohort_window(&self) -> i64 {
        self.cohort_window
    }

    /// Makes `w` the open window: counts the window the clock leaves and every window
    /// skipped on the way (nobody of this partition reported in those, which is what a
    /// silence looks like). Gap windows stop `baseline_windows` after the last open one:
    /// past that no device "usually reports", the counts are empty. The first call only
    /// starts the clock.
    fn close_windows_before(&mut self, w: i64) {
        if self.cohort_window == i64::MIN {
            self.cohort_window = w;
            return;
        }
        if w <= self.cohort_window {
            return;
        }
        let cfg = &self.rules.cohort;
        let last = w.min(
            self.cohort_window
                .saturating_add(cfg.baseline_windows.max(0))
                .saturating_add(1),
        );
        let labels = &self.labels;
        for closing in self.cohort_window..last {
            let counts = cohort::count(
                cfg,
                closing,
                self.devices
                    .iter()
                    .filter_map(|(id, d)| labels.get(id).map(|l| (&d.cohort, &**l))),
            );
            self.tallies.push((closing, counts));
        }
        self.cohort_window = w;
    }

    /// Decides what the raw record at `offset` becomes, and updates the window. Every
    /// record has a bounded outcome (`docs/checks.md`, "Refusals"): admission
    /// ([`crate::admit`]) runs before any device state is touched.
    pub fn process(&mut self, offset: i64, value: &[u8]) -> Outcome {
        let Admitted {
            raw,
            signed: sf,
            frame,
            separate_window,
        } = match admit(value, &self.edge_proof, &self.limits) {
            Ok(a) => a,
            Err(r) => return self.refused(offset, *r),
        };
        let (window, max_ahead) = (self.window, self.limits.max_seq_ahead);
        let key = feeder_core::payload::window_key(&sf.device_id, separate_window);
        let w = &mut self.device_mut(&key).window;
        let (reason, detail) = match w.classify(sf.seq, window, max_ahead) {
            Verdict::New { gap_before } => {
                w.accept(sf.seq, window);
                let key = key.into_owned();
                return self.accepted(offset, raw, sf, &key, &frame, gap_before);
            }
            Verdict::Duplicate => (Reason::Duplicate, "seq already accepted".to_string()),
            Verdict::TooOld => (
                Reason::TooOld,
                format!(
                    "seq older than the replay window ({window}) behind {}",
                    w.highest()
                ),
            ),
            Verdict::TooFarAhead => (
                Reason::SeqJump,
                format!(
                    "seq more than {max_ahead} ahead of the highest accepted, {}",
                    w.highest()
                ),
            ),
        };
        let refusal = Refusal {
            reason,
            detail,
            received_at_ms: raw.received_at_ms,
            edge_id: raw.edge_id,
            device_id: sf.device_id,
            seq: sf.seq,
            raw: raw.signed_frame,
        };
        self.refused(offset, refusal)
    }

    /// The quarantine record of a refusal; a further copy of a frame the device already
    /// had refused is only counted ([`crate::replays`]).
    fn refused(&mut self, offset: i64, r: Refusal) -> Outcome {
        let replay = if r.device_id.is_empty() {
            Replay::First // no device to count it for: malformed or unproven
        } else {
            self.device_mut(&r.device_id).replays.count(r.seq, &r.raw)
        };
        let (detail, raw) = match replay {
            Replay::First => (r.detail, r.raw),
            Replay::Count(n) => (
                format!(
                    "replayed {n} times, bytes stored with the first copy: {}",
                    r.detail
                ),
                bytes::Bytes::new(),
            ),
            Replay::Absorbed(_) => {
                return Outcome::Absorbed {
                    device_id: r.device_id,
                    reason: r.reason,
                };
            }
        };
        Outcome::Quarantined(QuarantinedFrame {
            received_at_ms: r.received_at_ms,
            device_id: r.device_id,
            seq: r.seq,
            reason: r.reason.as_str().to_string(),
            detail,
            raw,
            source_offset: offset,
            edge_id: r.edge_id,
        })
    }

    /// The checked record of a frame whose seq was just accepted.
    fn accepted(
        &mut self,
        offset: i64,
        raw: RawFrame,
        sf: SignedFrame,
        state_key: &str,
        frame: &Frame,
        gap_before: bool,
    ) -> Outcome {
        let mut findings = self.evaluate(state_key, raw.received_at_ms, frame);
        let estimates = std::mem::take(&mut findings.estimates);
        for run in &estimates {
            let key = (run.method().name(), run.status().name());
            *self.estimate_counts.entry(key).or_default() += run.values_raw.len() as u64;
        }
        let mut frame_flags = Vec::with_capacity(findings.frame_flags.len() + 1);
        if gap_before {
            frame_flags.push(GAP_BEFORE.to_string());
        }
        frame_flags.extend(findings.frame_flags.iter().map(|f| f.to_string()));
        for rule in findings
            .rule_names()
            .chain(findings.anomalies.iter().map(|a| a.rule))
        {
            *self.rule_counts.entry(rule).or_default() += 1;
        }
        self.anomalies.extend(findings.anomaly_records(
            &sf.device_id,
            sf.seq,
            raw.received_at_ms,
            offset,
        ));
        Outcome::Checked(CheckedFrame {
            device_id: sf.device_id,
            seq: sf.seq,
            key_id: sf.key_id,
            payload: sf.payload,
            signature: sf.signature,
            received_at_ms: raw.received_at_ms,
            edge_id: raw.edge_id,
            frame_flags,
            reading_flags: Findings::row_flags(&findings.reading_flags),
            sample_flags: Findings::row_flags(&findings.sample_flags),
            source_offset: offset,
            estimates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn raw(device: &str, seq: u64, payload: Vec<u8>) -> Vec<u8> {
        let sf = SignedFrame {
            device_id: device.into(),
            seq,
            key_id: "k1".into(),
            payload: payload.into(),
            signature: vec![1; 64].into(),
        };
        RawFrame {
            signed_frame: sf.encode_to_vec().into(),
            received_at_ms: 1000,
            edge_id: "e".into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn frame() -> Vec<u8> {
        Frame {
            sent_at_ms: 1,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn reason(o: &Outcome) -> &str {
        match o {
            Outcome::Checked(_) => "checked",
            Outcome::Quarantined(q) => &q.reason,
            Outcome::Absorbed { .. } => "absorbed",
        }
    }

    #[test]
    fn table_of_outcomes() {
        let mut st = PartitionState::new(4);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (raw("d1", 1, frame()), "checked"),
            (raw("d1", 1, frame()), "duplicate"),
            (raw("d1", 3, frame()), "checked"), // gap_before
            (raw("d1", 2, frame()), "checked"), // late, inside the window
            (raw("d1", 10, frame()), "checked"),
            (raw("d1", 5, frame()), "too_old"),
            (raw("d2", 1, vec![0xff, 0xff]), "malformed_payload"),
            (
                RawFrame {
                    signed_frame: vec![0xff].into(),
                    received_at_ms: 1,
                    edge_id: "e".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                "malformed_frame",
            ),
            (vec![0xff, 0x01], "malformed_record"),
        ];
        for (i, (value, want)) in cases.iter().enumerate() {
            let out = st.process(i as i64, value);
            assert_eq!(reason(&out), *want, "case {i}");
            match &out {
                Outcome::Quarantined(q) => {
                    assert_eq!(q.source_offset, i as i64);
                    assert!(!q.raw.is_empty());
                }
                Outcome::Checked(c) => {
                    assert_eq!(c.source_offset, i as i64);
                    assert_eq!(
                        c.frame_flags.contains(&"gap_before".to_string()),
                        i == 2 || i == 4,
                        "case {i}"
                    );
                }
                Outcome::Absorbed { .. } => panic!("case {i}: nothing replayed twice"),
            }
        }
    }

    #[test]
    fn quarantine_keeps_the_exact_signed_bytes() {
        let mut st = PartitionState::new(4096);
        let v = raw("d", 1, frame());
        st.process(0, &v);
        let Outcome::Quarantined(q) = st.process(1, &v) else {
            panic!()
        };
        let r = RawFrame::decode(v.as_slice()).unwrap();
        assert_eq!(q.raw, r.signed_frame);
    }

    #[test]
    fn rule_findings_become_row_flags_and_anomaly_records() {
        use feeder_proto::v1::{Event, EventKind, Reading, Unit};
        let payload = Frame {
            sent_at_ms: 1000,
            readings: vec![Reading {
                ts_ms: 900,
                obis: "1-0:32.7.0".into(),
                value: 2600,
                scaler: -1,
                unit: Unit::V as i32,
                ..Default::default()
            }],
            events: vec![Event {
                ts_ms: 950,
                kind: EventKind::MagneticTamper as i32,
                detail: "field".into(),
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let mut st = PartitionState::new(4096);
        let Outcome::Checked(c) = st.process(7, &raw("m", 1, payload)) else {
            panic!()
        };
        assert!(c.frame_flags.is_empty());
        assert_eq!(
            c.reading_flags,
            [feeder_proto::pipeline::RowFlags {
                index: 0,
                flags: vec!["voltage_out_of_band".into()]
            }]
        );
        let a = st.take_anomalies();
        assert_eq!(a.len(), 1);
        assert_eq!(
            (
                a[0].rule.as_str(),
                a[0].severity.as_str(),
                a[0].seq,
                a[0].source_offset
            ),
            ("magnetic_tamper", "critical", Some(1), 7)
        );
        assert_eq!(
            (
                a[0].device_id.as_str(),
                a[0].detected_at_ms,
                a[0].ts_from_ms
            ),
            ("m", 1000, 950)
        );
        assert!(st.take_anomalies().is_empty());
        let counts = st.take_rule_counts();
        assert_eq!(counts.get("voltage_out_of_band"), Some(&1));
        assert_eq!(counts.get("magnetic_tamper"), Some(&1));
    }

    /// 30 devices of one module, 1 s cohort windows, a 3-window baseline.
    fn cohort_partition() -> PartitionState {
        use crate::rules::cohort::CohortConfig;
        let rules = RulesConfig {
            cohort: CohortConfig {
                groupings: vec![vec!["module".into()]],
                window_ms: 1000,
                baseline_windows: 3,
                ..CohortConfig::default()
            },
            ..RulesConfig::default()
        };
        let labels = (0..30)
            .map(|i| {
                let l = BTreeMap::from([("module".to_string(), "m1".to_string())]);
                (format!("d{i}"), Arc::new(l))
            })
            .collect::<std::collections::HashMap<_, _>>();
        PartitionState::with_rules(4096, Arc::new(rules), DeviceLabels::from(labels))
    }

    fn raw_at(device: &str, seq: u64, at_ms: i64) -> Vec<u8> {
        let mut r = RawFrame::decode(raw(device, seq, frame()).as_slice()).unwrap();
        r.received_at_ms = at_ms;
        r.encode_to_vec()
    }

    /// (window, fleet usual, fleet reported) of each tally taken.
    fn taken(st: &mut PartitionState) -> Vec<(i64, u64, u64)> {
        st.take_tallies()
            .into_iter()
            .map(|(w, c)| (w, c.fleet_usual, c.fleet_reported))
            .collect()
    }

    #[test]
    fn a_clock_jump_tallies_the_skipped_windows_up_to_the_baseline() {
        let mut st = cohort_partition();
        let mut off = 0;
        for w in 0..2 {
            for i in 0..30 {
                off += 1;
                st.process(off, &raw_at(&format!("d{i}"), w as u64 + 1, w * 1000 + 10));
            }
        }
        assert_eq!(taken(&mut st), [(0, 0, 0)]);
        // silence in windows 2..=8, then one frame in window 9: window 1 closes, and so
        // do the silent windows while a device seen in window 1 still "usually reports"
        st.process(off + 1, &raw_at("d0", 3, 9 * 1000 + 10));
        assert_eq!(
            taken(&mut st),
            [(1, 30, 30), (2, 30, 0), (3, 30, 0), (4, 30, 0)],
            "window 1 and the gap windows 2..=4; 5..=8 would count nobody"
        );
        assert_eq!(st.cohort_window(), 9);
    }

    #[test]
    fn the_idle_clock_closes_windows_and_late_frames_reopen_none() {
        let mut st = cohort_partition();
        // a partition that never saw a frame: the first tick starts its clock
        assert_eq!(st.advance_cohort_clock(5_500), 0);
        assert_eq!(st.cohort_window(), 5);
        for i in 0..30 {
            st.process(i, &raw_at(&format!("d{i}"), 1, 5_600));
        }
        assert_eq!(st.advance_cohort_clock(5_999), 0, "window 5 ends at 6000");
        assert_eq!(st.advance_cohort_clock(6_000), 1);
        assert_eq!(taken(&mut st), [(5, 0, 0)]);
        assert_eq!(st.advance_cohort_clock(7_000), 1);
        assert_eq!(taken(&mut st), [(6, 30, 0)]);
        // a frame stamped in the closed window 6 is late: seen in the open window 7,
        // and window 6 is not tallied again
        st.process(100, &raw_at("d1", 2, 6_500));
        assert!(st.take_tallies().is_empty());
        assert_eq!(st.advance_cohort_clock(8_000), 1);
        assert_eq!(taken(&mut st), [(7, 30, 1)]);
        // the clock never goes back
        assert_eq!(st.advance_cohort_clock(1_000), 0);
        assert_eq!(st.cohort_window(), 8);
    }

    #[test]
    fn device_records_with_replay_counts_stay_readable_by_both_versions() {
        let mut st = PartitionState::new(4096);
        let v = raw("d", 1, frame());
        st.process(0, &v);
        st.process(1, &v); // a replay: counted in the device's state
        let recs = st.take_dirty().unwrap();
        let with_counts = &recs[0].1;
        // what the previous version decodes: the fields before the replay log
        #[derive(serde::Deserialize)]
        struct V1 {
            window: SeqWindow,
            _rules: DeviceRules,
            _cohort: CohortDevice,
        }
        let old: V1 = postcard::from_bytes(with_counts).unwrap();
        assert_eq!(old.window.highest(), 1);
        // a record of the previous version (no replay log) restores with no counts
        let v1 = postcard::to_stdvec(&st.devices["d"]).unwrap();
        assert!(v1.len() < with_counts.len());
        assert!(Device::from_bytes(&v1).unwrap().replays.is_empty());
        assert!(!Device::from_bytes(with_counts).unwrap().replays.is_empty());
        // a replay log this code could not have written is refused (recovery rebuilds)
        let mut bad = v1.clone();
        bad.push(9); // nine entries, more than the slots
        bad.extend([1u8; 27]);
        assert!(Device::from_bytes(&bad).is_err());
    }

    #[test]
    fn rebuilt_state_refuses_replays() {
        let mut st = PartitionState::new(4096);
        st.apply_accepted("d", 1);
        st.apply_accepted("d", 2);
        assert_eq!(reason(&st.process(5, &raw("d", 2, frame()))), "duplicate");
        assert_eq!(reason(&st.process(6, &raw("d", 3, frame()))), "checked");
    }
}
