//! Rule thresholds: one typed section per rule family, every field with a default, and
//! overrides selected by a device's registry labels (for example `net_metered=true`
//! disables `reverse_flow`, or a 120 V region gets its own nominal voltage).
//! `docs/checks.md` lists every key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cohort::CohortConfig;
use super::estimate::EstimateConfig;
use super::{DEVICE_RULES, Effective, FLEET_RULES};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Rule names switched off for every device.
    pub disabled: Vec<String>,
    pub integrity: IntegrityConfig,
    pub meter: MeterConfig,
    pub telematics: TelematicsConfig,
    /// Fleet cohorts (`cohort_silence`, `cohort_firmware_change`).
    pub cohort: CohortConfig,
    /// VEE estimation limits (methods are switched off by name in `disabled`).
    pub estimate: EstimateConfig,
    /// Applied in order to devices whose label `label` equals `value`; the first match
    /// with a section replaces that section, and every match's `disable` applies.
    pub label_overrides: Vec<LabelOverride>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            disabled: Vec::new(),
            integrity: IntegrityConfig::default(),
            meter: MeterConfig::default(),
            telematics: TelematicsConfig::default(),
            cohort: CohortConfig::default(),
            estimate: EstimateConfig::default(),
            label_overrides: vec![LabelOverride {
                label: "net_metered".into(),
                value: "true".into(),
                disable: vec!["reverse_flow".into()],
                ..LabelOverride::default()
            }],
        }
    }
}

impl RulesConfig {
    pub(crate) fn matching<'a>(
        &'a self,
        labels: Option<&'a BTreeMap<String, String>>,
    ) -> impl Iterator<Item = &'a LabelOverride> + 'a {
        self.label_overrides
            .iter()
            .filter(move |o| labels.is_some_and(|l| l.get(&o.label).is_some_and(|v| *v == o.value)))
    }

    /// The thresholds for a device with `labels`, and the rules switched off for it:
    /// one pass over the overrides (the first match with a section replaces it).
    pub fn effective<'a>(&'a self, labels: Option<&'a BTreeMap<String, String>>) -> Effective<'a> {
        let mut eff = Effective::new(self, labels);
        for r in &self.disabled {
            eff.switch_off(r);
        }
        if self.label_overrides.is_empty() || labels.is_none() {
            return eff;
        }
        let (mut meter, mut telematics, mut integrity, mut estimate) = (None, None, None, None);
        for o in self.matching(labels) {
            meter = meter.or(o.meter.as_ref());
            telematics = telematics.or(o.telematics.as_ref());
            integrity = integrity.or(o.integrity.as_ref());
            estimate = estimate.or(o.estimate.as_ref());
            for r in &o.disable {
                eff.switch_off(r);
            }
        }
        eff.meter = meter.unwrap_or(eff.meter);
        eff.telematics = telematics.unwrap_or(eff.telematics);
        eff.integrity = integrity.unwrap_or(eff.integrity);
        eff.estimate = estimate.unwrap_or(eff.estimate);
        eff
    }

    /// Checks value ranges; called when the configuration is loaded.
    pub fn validate(&self) -> Result<(), String> {
        let m = &self.meter;
        if !(m.voltage_band_pct > 0.0 && m.voltage_band_pct < 100.0) {
            return Err("meter.voltage_band_pct must be in (0, 100)".into());
        }
        if m.history_days == 0 || m.history_days > 31 {
            return Err("meter.history_days must be in 1..=31".into());
        }
        if m.spike_min_history == 0 || m.spike_min_history > m.history_days {
            return Err("meter.spike_min_history must be in 1..=history_days".into());
        }
        if !(1..=18).contains(&m.register_digits) {
            return Err("meter.register_digits must be in 1..=18".into());
        }
        if self.cohort.window_ms <= 0 || self.cohort.baseline_windows <= 0 {
            return Err("cohort.window_ms and cohort.baseline_windows must be positive".into());
        }
        self.estimate.validate("estimate")?;
        for (i, o) in self.label_overrides.iter().enumerate() {
            if let Some(e) = &o.estimate {
                e.validate(&format!("label_overrides[{i}].estimate"))?;
            }
        }
        for r in &self.disabled {
            if !DEVICE_RULES.contains(&r.as_str()) && !FLEET_RULES.contains(&r.as_str()) {
                return Err(format!("disabled: unknown rule `{r}` ({})", rule_list()));
            }
        }
        for (i, o) in self.label_overrides.iter().enumerate() {
            for r in &o.disable {
                if FLEET_RULES.contains(&r.as_str()) {
                    return Err(format!(
                        "label_overrides[{i}].disable: `{r}` is judged over the whole fleet, \
                         not per device; switch it off in `disabled`"
                    ));
                }
                if !DEVICE_RULES.contains(&r.as_str()) {
                    return Err(format!(
                        "label_overrides[{i}].disable: unknown rule `{r}` ({})",
                        rule_list()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The names a configuration may switch off, for error messages.
fn rule_list() -> String {
    format!(
        "device rules: {}; fleet rules: {}",
        DEVICE_RULES.join(", "),
        FLEET_RULES.join(", ")
    )
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelOverride {
    pub label: String,
    pub value: String,
    pub disable: Vec<String>,
    pub integrity: Option<IntegrityConfig>,
    pub meter: Option<MeterConfig>,
    pub telematics: Option<TelematicsConfig>,
    pub estimate: Option<EstimateConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrityConfig {
    /// `clock_skew`: |sent_at − received_at| above this.
    pub max_clock_skew_ms: i64,
    /// `future_reading`: a reading or sample time later than received_at plus this.
    pub future_margin_ms: i64,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        Self {
            max_clock_skew_ms: 5 * 60_000,
            future_margin_ms: 15 * 60_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeterConfig {
    /// `spike`: days of same-time-of-day history kept per interval channel.
    pub history_days: usize,
    /// `spike`: history values needed in the slot before the rule judges.
    pub spike_min_history: usize,
    /// `spike`: value above median + this × robust sigma (1.4826 × MAD).
    pub spike_mad_factor: f64,
    /// `spike`: floor of the robust sigma, as a fraction of the median (noise floor).
    pub spike_min_sigma_frac: f64,
    /// `spike`: and at least this far above the median, in the reading's unit.
    pub spike_min_delta: f64,
    /// `zero_run`: consecutive zero intervals, outside outages, lasting at least this.
    pub zero_run_min_s: i64,
    /// `register_rollover`: registers wrap at 10^digits (raw value units).
    pub register_digits: u32,
    /// `register_rollover`: a wrapped delta counts as rollover only below this fraction
    /// of the register's range; larger ones are `register_decrease`.
    pub rollover_max_fraction: f64,
    /// `sum_mismatch`: allowed |register delta − Σ intervals|, absolute, in Wh...
    pub sum_tolerance_abs: f64,
    /// ...or relative to the register delta, whichever is larger.
    pub sum_tolerance_rel: f64,
    /// `voltage_out_of_band`: nominal voltage, V.
    pub nominal_voltage_v: f64,
    /// `voltage_out_of_band`: band around nominal, percent (ANSI C84.1 range A: 5).
    pub voltage_band_pct: f64,
}

impl Default for MeterConfig {
    fn default() -> Self {
        Self {
            history_days: 7,
            spike_min_history: 4,
            spike_mad_factor: 6.0,
            spike_min_sigma_frac: 0.1,
            spike_min_delta: 50.0,
            zero_run_min_s: 3 * 3600,
            register_digits: 9,
            rollover_max_fraction: 0.1,
            sum_tolerance_abs: 1.0,
            sum_tolerance_rel: 0.005,
            nominal_voltage_v: 230.0,
            voltage_band_pct: 5.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelematicsConfig {
    /// `impossible_speed`: implied speed between consecutive fixes above this, m/s.
    pub max_speed_m_s: f64,
    /// Position noise allowed per fix, metres (subtracted before judging speed).
    pub gps_tolerance_m: f64,
    /// `teleport`: an impossible jump longer than this, metres.
    pub teleport_m: f64,
    /// `odometer_mismatch`: allowed |odometer delta − GPS distance| over a frame, metres...
    pub odometer_tolerance_m: f64,
    /// ...or relative to the GPS distance, whichever is larger.
    pub odometer_tolerance_rel: f64,
    /// `moving_ignition_off`: reported speed above this with the ignition off, m/s, or
    /// a move of more than `gps_tolerance_m` between two ignition-off fixes.
    pub ignition_off_speed_m_s: f64,
}

impl Default for TelematicsConfig {
    fn default() -> Self {
        Self {
            max_speed_m_s: 70.0,
            gps_tolerance_m: 25.0,
            teleport_m: 5_000.0,
            odometer_tolerance_m: 100.0,
            odometer_tolerance_rel: 0.05,
            ignition_off_speed_m_s: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_metered_label_disables_reverse_flow_only() {
        let cfg = RulesConfig::default();
        let mut labels = BTreeMap::new();
        assert!(cfg.effective(Some(&labels)).enabled("reverse_flow"));
        labels.insert("net_metered".to_string(), "true".to_string());
        let eff = cfg.effective(Some(&labels));
        assert!(!eff.enabled("reverse_flow"));
        assert!(eff.enabled("spike"));
        assert!(cfg.effective(None).enabled("reverse_flow"));
    }

    #[test]
    fn override_replaces_a_section_and_parses_from_json() {
        let cfg: RulesConfig = serde_json::from_str(
            r#"{"disabled":["spike"],"label_overrides":[{"label":"region","value":"us",
                "meter":{"nominal_voltage_v":120.0}}]}"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        let labels = BTreeMap::from([("region".to_string(), "us".to_string())]);
        assert_eq!(cfg.effective(Some(&labels)).meter.nominal_voltage_v, 120.0);
        assert_eq!(cfg.effective(None).meter.nominal_voltage_v, 230.0);
        assert!(!cfg.effective(None).enabled("spike"));
        assert!(serde_json::from_str::<RulesConfig>(r#"{"nope":1}"#).is_err());
        RulesConfig::default().validate().unwrap();
    }

    #[test]
    fn rule_names_are_checked_at_load() {
        let parse = |j: &str| serde_json::from_str::<RulesConfig>(j).unwrap().validate();
        parse(r#"{"disabled":["fleet_silence","cohort_silence","teleport"]}"#).unwrap();
        let e = parse(r#"{"disabled":["spkie"]}"#).unwrap_err();
        assert!(
            e.contains("unknown rule `spkie`") && e.contains("spike"),
            "{e}"
        );
        let e = parse(
            r#"{"label_overrides":[{"label":"a","value":"b","disable":["spike"]},
                {"label":"c","value":"d","disable":["cohort_silence"]}]}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "label_overrides[1].disable: `cohort_silence` is judged over the whole fleet"
            ),
            "{e}"
        );
        let e = parse(r#"{"label_overrides":[{"label":"a","value":"b","disable":["nope"]}]}"#)
            .unwrap_err();
        assert!(
            e.contains("label_overrides[0].disable: unknown rule `nope`"),
            "{e}"
        );
    }
}
