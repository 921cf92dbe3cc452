//! Data-quality rules run on every accepted frame: pure functions of the frame, the
//! device's bounded rule state and the configuration, so that replaying the checked log
//! in order rebuilds the state exactly (see [`crate::recovery`]).
//!
//! Rules never read the wall clock: "now" is the edge's `received_at_ms` of the record.
//! Each rule family lives in its own module and writes into [`Findings`]: flags on the
//! frame, flags on individual readings/samples, and anomalies (findings worth a row in the
//! `anomalies` dataset). Flags never quarantine anything.
//!
//! # State size per device
//! [`DeviceRules`] holds, for a meter, at most [`meter::MAX_CHANNELS`] interval channels
//! (each: last ts, usual interval, zero-run and sum accumulators, and a same-slot
//! history of `history_days` × 96 `f32` values = 2,688 bytes at the default 7 days),
//! at most [`meter::MAX_REGISTERS`] registers (40 bytes each) and the open-outage mark;
//! for a vehicle, the last fix (40 bytes). A typical meter with one interval channel and
//! one register costs about 3 KB; the worst case about 11 KB. The replay window
//! ([`crate::window::SeqWindow`]) comes on top.

pub mod cohort;
pub mod cohort_fleet;
pub mod config;
pub mod estimate;
pub mod events;
pub mod fleet_silence;
pub mod integrity;
pub mod meter;
pub mod names;
pub mod telematics;

use std::collections::BTreeMap;

use feeder_proto::pipeline::{Anomaly, RowFlags};
use feeder_proto::v1::Frame;

pub use config::{LabelOverride, RulesConfig};

/// Every rule judged per device: what `disabled` and a label override's `disable` may
/// name (checked when the configuration is loaded, so a misspelt name is an error rather
/// than a rule left running). The names of [`names::DeviceRule`], in its order.
pub const DEVICE_RULES: &[&str] = &names::device_rule_names();

/// Rules judged over the whole fleet by the cohort aggregator (`cohort_fleet`): only
/// `disabled` switches them off, since they concern no single device's labels. The names
/// of [`names::FleetRule`].
pub const FLEET_RULES: &[&str] = &names::fleet_rule_names();

/// Anomaly severity, as the `anomalies` dataset spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One finding worth an `anomalies` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub ts_from_ms: i64,
    pub ts_to_ms: i64,
    pub detail: String,
    /// The cohort of a fleet-level finding (`module=bg95,region=north`); empty for a
    /// device finding.
    pub cohort: String,
}

/// Everything the rules found in one frame. Rule names are `&'static str` so that they
/// double as bounded metric labels.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings {
    pub frame_flags: Vec<&'static str>,
    /// index into `Frame.readings` -> flags, in index order.
    pub reading_flags: BTreeMap<u32, Vec<&'static str>>,
    pub sample_flags: BTreeMap<u32, Vec<&'static str>>,
    pub anomalies: Vec<Finding>,
    /// VEE estimates the frame caused ([`estimate`]).
    pub estimates: Vec<feeder_proto::pipeline::EstimateRun>,
}

impl Findings {
    pub fn frame(&mut self, rule: &'static str) {
        if !self.frame_flags.contains(&rule) {
            self.frame_flags.push(rule);
        }
    }

    pub fn reading(&mut self, index: usize, rule: &'static str) {
        push_unique(self.reading_flags.entry(index as u32).or_default(), rule);
    }

    pub fn sample(&mut self, index: usize, rule: &'static str) {
        push_unique(self.sample_flags.entry(index as u32).or_default(), rule);
    }

    pub fn anomaly(
        &mut self,
        rule: &'static str,
        severity: Severity,
        ts_from_ms: i64,
        ts_to_ms: i64,
        detail: String,
    ) {
        self.anomalies.push(Finding {
            rule,
            severity,
            ts_from_ms,
            ts_to_ms,
            detail,
            cohort: String::new(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.frame_flags.is_empty()
            && self.reading_flags.is_empty()
            && self.sample_flags.is_empty()
            && self.anomalies.is_empty()
            && self.estimates.is_empty()
    }

    /// Every flag and anomaly rule name, once per occurrence (for per-batch metrics).
    pub fn rule_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.frame_flags
            .iter()
            .chain(self.reading_flags.values().flatten())
            .chain(self.sample_flags.values().flatten())
            .copied()
    }

    pub fn row_flags(map: &BTreeMap<u32, Vec<&'static str>>) -> Vec<RowFlags> {
        map.iter()
            .map(|(i, f)| RowFlags {
                index: *i,
                flags: f.iter().map(|s| s.to_string()).collect(),
            })
            .collect()
    }

    /// The anomaly records for a frame of `device_id`/`seq` read at raw `source_offset`.
    pub fn anomaly_records(
        &self,
        device_id: &str,
        seq: u64,
        received_at_ms: i64,
        source_offset: i64,
    ) -> Vec<Anomaly> {
        self.anomalies
            .iter()
            .map(|f| f.record(Some((device_id, seq)), received_at_ms, source_offset))
            .collect()
    }
}

impl Finding {
    /// The anomaly record of this finding: about a device's frame (`device` = id and
    /// seq), or about the fleet (`None`; `source_offset` is then -1).
    pub fn record(
        &self,
        device: Option<(&str, u64)>,
        detected_at_ms: i64,
        source_offset: i64,
    ) -> Anomaly {
        Anomaly {
            detected_at_ms,
            device_id: device.map(|d| d.0.to_string()).unwrap_or_default(),
            cohort: self.cohort.clone(),
            rule: self.rule.to_string(),
            severity: self.severity.as_str().to_string(),
            ts_from_ms: self.ts_from_ms,
            ts_to_ms: self.ts_to_ms,
            detail: self.detail.clone(),
            seq: device.map(|d| d.1),
            source_offset,
        }
    }
}

fn push_unique(v: &mut Vec<&'static str>, rule: &'static str) {
    if !v.contains(&rule) {
        v.push(rule);
    }
}

/// What the rules know about the frame besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct FrameCtx<'a> {
    pub received_at_ms: i64,
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// Rule state of one device; bounded (see the module docs).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRules {
    pub meter: meter::MeterState,
    pub vehicle: telematics::VehicleState,
    /// Estimation state: not in this struct's encoding, the changelog appends it after
    /// the device's other fields (`checks::Device::to_bytes`), so records stay readable
    /// by the previous version and this one reads theirs.
    #[serde(skip)]
    pub estimates: estimate::EstimatorState,
}

impl DeviceRules {
    /// Runs every enabled rule on `frame`, updating the state.
    pub fn evaluate(
        &mut self,
        cfg: &RulesConfig,
        ctx: FrameCtx<'_>,
        frame: &Frame,
        out: &mut Findings,
    ) {
        let eff = cfg.effective(ctx.labels);
        integrity::check(&eff, ctx, frame, out);
        events::check(&eff, frame, out);
        if !frame.readings.is_empty() || !frame.events.is_empty() {
            self.meter.check(&eff, ctx, frame, out);
        }
        if !frame.samples.is_empty() {
            self.vehicle.check(&eff, frame, out);
        }
        out.estimates = self.estimates.run(&eff, ctx, frame, out);
    }

    pub fn approx_bytes(&self) -> usize {
        self.meter.approx_bytes()
            + std::mem::size_of::<telematics::VehicleState>()
            + self.estimates.approx_bytes()
    }
}

/// The configuration after a device's label overrides are applied.
#[derive(Debug, Clone, Copy)]
pub struct Effective<'a> {
    pub cfg: &'a RulesConfig,
    pub meter: &'a config::MeterConfig,
    pub telematics: &'a config::TelematicsConfig,
    pub integrity: &'a config::IntegrityConfig,
    pub estimate: &'a estimate::EstimateConfig,
    labels: Option<&'a BTreeMap<String, String>>,
    /// The rules switched off for this device, worked out once per frame
    /// ([`RulesConfig::effective`]) so that [`Self::enabled`], asked per reading, compares
    /// no strings: bit `i` is [`DEVICE_RULES`]`[i]`...
    off: u64,
    /// ...and whether a name outside [`DEVICE_RULES`] is switched off too (a fleet rule).
    off_other: bool,
}

const _: () = assert!(DEVICE_RULES.len() <= 64, "Effective::off is a u64");

impl<'a> Effective<'a> {
    /// Every rule on, no override applied.
    pub(crate) fn new(cfg: &'a RulesConfig, labels: Option<&'a BTreeMap<String, String>>) -> Self {
        Self {
            cfg,
            meter: &cfg.meter,
            telematics: &cfg.telematics,
            integrity: &cfg.integrity,
            estimate: &cfg.estimate,
            labels,
            off: 0,
            off_other: false,
        }
    }

    /// Whether `rule` runs for this device: not disabled globally, nor by an override
    /// whose label matches the device.
    pub fn enabled(&self, rule: &str) -> bool {
        if self.off == 0 && !self.off_other {
            return true;
        }
        match device_rule_index(rule) {
            Some(i) => self.off & (1 << i) == 0,
            None => !self.off_other || self.enabled_by_name(rule),
        }
    }

    /// [`Self::enabled`] by comparing names (for a rule outside [`DEVICE_RULES`]).
    fn enabled_by_name(&self, rule: &str) -> bool {
        !self.cfg.disabled.iter().any(|r| r == rule)
            && !self
                .cfg
                .matching(self.labels)
                .any(|o| o.disable.iter().any(|r| r == rule))
    }

    /// Switches `rule` off (building the effective configuration).
    pub(crate) fn switch_off(&mut self, rule: &str) {
        match device_rule_index(rule) {
            Some(i) => self.off |= 1 << i,
            None => self.off_other = true,
        }
    }
}

/// Where `rule` is in [`DEVICE_RULES`]: the rules pass their own constants, so the
/// address usually matches before any text is compared.
fn device_rule_index(rule: &str) -> Option<usize> {
    DEVICE_RULES
        .iter()
        .position(|r| std::ptr::eq(*r, rule))
        .or_else(|| DEVICE_RULES.iter().position(|r| *r == rule))
}
