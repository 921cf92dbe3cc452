//! Device events that an operator must see become anomalies with a severity: physical
//! tampering is critical, a module reset a warning, a firmware update or clock
//! adjustment informational, and a reported reverse flow a warning unless the device is
//! net-metered (the `reverse_flow` rule is disabled for it by label). Power outage and
//! restore events are not anomalies: they make the `zero_run` rule outage-aware.

use feeder_proto::v1::{EventKind, Frame};

use super::{Effective, Findings, Severity};

pub const COVER_OPENED: &str = crate::rules::names::DeviceRule::CoverOpened.as_str();
pub const MAGNETIC_TAMPER: &str = crate::rules::names::DeviceRule::MagneticTamper.as_str();
pub const MODULE_RESET: &str = crate::rules::names::DeviceRule::ModuleReset.as_str();
pub const FIRMWARE_UPDATED: &str = crate::rules::names::DeviceRule::FirmwareUpdated.as_str();
pub const CLOCK_ADJUSTED: &str = crate::rules::names::DeviceRule::ClockAdjusted.as_str();

/// The anomaly rule and severity of an event kind, if it raises one.
pub fn rule_of(kind: EventKind) -> Option<(&'static str, Severity)> {
    Some(match kind {
        EventKind::CoverOpened => (COVER_OPENED, Severity::Critical),
        EventKind::MagneticTamper => (MAGNETIC_TAMPER, Severity::Critical),
        EventKind::ModuleReset => (MODULE_RESET, Severity::Warning),
        EventKind::FirmwareUpdated => (FIRMWARE_UPDATED, Severity::Info),
        EventKind::ClockAdjusted => (CLOCK_ADJUSTED, Severity::Info),
        EventKind::ReverseFlow => (super::meter::REVERSE_FLOW, Severity::Warning),
        EventKind::PowerOutage | EventKind::PowerRestored | EventKind::EventUnspecified => {
            return None;
        }
    })
}

pub fn check(eff: &Effective<'_>, frame: &Frame, out: &mut Findings) {
    for e in &frame.events {
        let Ok(kind) = EventKind::try_from(e.kind) else {
            continue;
        };
        if let Some((rule, severity)) = rule_of(kind)
            && eff.enabled(rule)
        {
            out.anomaly(rule, severity, e.ts_ms, e.ts_ms, e.detail.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RulesConfig;
    use feeder_proto::v1::Event;
    use std::collections::BTreeMap;

    fn ev(kind: EventKind, ts_ms: i64) -> Event {
        Event {
            ts_ms,
            kind: kind as i32,
            detail: format!("{kind:?}"),
        }
    }

    #[test]
    fn events_become_anomalies_with_severity() {
        let frame = Frame {
            events: vec![
                ev(EventKind::PowerOutage, 1),
                ev(EventKind::CoverOpened, 2),
                ev(EventKind::MagneticTamper, 3),
                ev(EventKind::ModuleReset, 4),
                ev(EventKind::FirmwareUpdated, 5),
                ev(EventKind::PowerRestored, 6),
                ev(EventKind::ReverseFlow, 7),
            ],
            ..Default::default()
        };
        let cfg = RulesConfig::default();
        let mut out = Findings::default();
        check(&cfg.effective(None), &frame, &mut out);
        let got: Vec<_> = out
            .anomalies
            .iter()
            .map(|a| (a.rule, a.severity.as_str(), a.ts_from_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("cover_opened", "critical", 2),
                ("magnetic_tamper", "critical", 3),
                ("module_reset", "warning", 4),
                ("firmware_updated", "info", 5),
                ("reverse_flow", "warning", 7),
            ]
        );
        assert!(out.frame_flags.is_empty() && out.reading_flags.is_empty());

        // a net-metered meter reports reverse flow as a matter of course
        let labels = BTreeMap::from([("net_metered".to_string(), "true".to_string())]);
        let mut out = Findings::default();
        check(&cfg.effective(Some(&labels)), &frame, &mut out);
        assert!(out.anomalies.iter().all(|a| a.rule != "reverse_flow"));
        assert_eq!(out.anomalies.len(), 4);
    }
}
