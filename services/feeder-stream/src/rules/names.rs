//! Every rule's name, in one table per kind of rule ([`crate::wire_enum!`]): the name an
//! anomaly row, a flag, a metric label and a `disabled` setting use.
//!
//! Why an enum: the names were string constants in each rule's module and a hand-kept
//! list beside them, so a new rule could be left out of the list (and so could not be
//! switched off) without anything noticing. Here the list is the enum, a `match` on it
//! is checked for every rule, and the constants the rules use are read from it.

crate::wire_enum! {
    /// A rule judged per device: what `disabled` and a label override's `disable` may
    /// name. The order is that of [`super::DEVICE_RULES`] (the bit of each rule in the
    /// per-frame mask of rules switched off).
    pub enum DeviceRule (as_str) {
        ClockSkew => "clock_skew",
        FutureReading => "future_reading",
        IntervalMismatch => "interval_mismatch",
        DuplicateReading => "duplicate_reading",
        MissingIntervals => "missing_intervals",
        Spike => "spike",
        ZeroRun => "zero_run",
        ReverseFlow => "reverse_flow",
        RegisterDecrease => "register_decrease",
        RegisterRollover => "register_rollover",
        SumMismatch => "sum_mismatch",
        VoltageOutOfBand => "voltage_out_of_band",
        UnitMismatch => "unit_mismatch",
        NullIsland => "null_island",
        ImpossibleSpeed => "impossible_speed",
        Teleport => "teleport",
        OdometerRollback => "odometer_rollback",
        OdometerMismatch => "odometer_mismatch",
        MovingIgnitionOff => "moving_ignition_off",
        CoverOpened => "cover_opened",
        MagneticTamper => "magnetic_tamper",
        ModuleReset => "module_reset",
        FirmwareUpdated => "firmware_updated",
        ClockAdjusted => "clock_adjusted",
        RegisterProration => "register_proration",
        Linear => "linear",
        Profile => "profile",
        GapNotEstimated => "gap_not_estimated",
    }
}

crate::wire_enum! {
    /// A rule judged over the whole fleet by the cohort aggregator: only `disabled`
    /// switches it off.
    pub enum FleetRule (as_str) {
        CohortSilence => "cohort_silence",
        CohortFirmwareChange => "cohort_firmware_change",
        FleetSilence => "fleet_silence",
    }
}

/// The names of every device rule, in [`DeviceRule::ALL`] order.
pub(crate) const fn device_rule_names() -> [&'static str; DeviceRule::ALL.len()] {
    let mut names = [""; DeviceRule::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = DeviceRule::ALL[i].as_str();
        i += 1;
    }
    names
}

/// The names of every fleet rule, in [`FleetRule::ALL`] order.
pub(crate) const fn fleet_rule_names() -> [&'static str; FleetRule::ALL.len()] {
    let mut names = [""; FleetRule::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = FleetRule::ALL[i].as_str();
        i += 1;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are on the wire (anomaly rows, flags, metric labels, settings): a
    /// change here is a change of the datasets' contract.
    #[test]
    fn the_rule_names_do_not_change() {
        assert_eq!(
            device_rule_names().join(" "),
            "clock_skew future_reading interval_mismatch duplicate_reading \
             missing_intervals spike zero_run reverse_flow register_decrease \
             register_rollover sum_mismatch voltage_out_of_band unit_mismatch null_island \
             impossible_speed teleport odometer_rollback odometer_mismatch \
             moving_ignition_off cover_opened magnetic_tamper module_reset \
             firmware_updated clock_adjusted register_proration linear profile \
             gap_not_estimated"
        );
        assert_eq!(
            fleet_rule_names(),
            ["cohort_silence", "cohort_firmware_change", "fleet_silence"]
        );
        for r in DeviceRule::ALL {
            assert_eq!(DeviceRule::from_wire(r.as_str()), Some(r));
            assert_eq!(FleetRule::from_wire(r.as_str()), None);
        }
    }
}
