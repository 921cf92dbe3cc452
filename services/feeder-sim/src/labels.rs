//! Fleet labels (region, cellular module, firmware) assigned at provisioning.
//!
//! Fleet-level checks group devices by these labels, so every cohort must be populated
//! even in small fleets. Assignment depends only on the device's kind and index, never on
//! the key seed: two fleets of the same size have the same cohorts.

use std::collections::BTreeMap;

use feeder_core::DeviceKind;

pub const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
pub const MODULES: [&str; 3] = ["bg95", "sara-r410m", "ec25"];
/// Meter firmware; the first version is listed twice so it is the most common.
const METER_FIRMWARE: [&str; 4] = ["4.2.1", "4.2.1", "4.1.7", "4.3.0"];
const VEHICLE_FIRMWARE: [&str; 4] = ["2.9.0", "2.9.0", "2.8.3", "3.0.1"];

/// Labels of the `index`-th device (0-based) of a kind.
///
/// Region cycles fastest and module next, so any 12 consecutive devices cover every
/// region x module cohort; firmware is scrambled so it does not line up with either.
pub fn labels_for(kind: DeviceKind, index: usize) -> BTreeMap<String, String> {
    let firmware = match kind {
        DeviceKind::Meter => &METER_FIRMWARE,
        DeviceKind::Vehicle => &VEHICLE_FIRMWARE,
    };
    let scrambled = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    BTreeMap::from([
        (
            "region".to_string(),
            REGIONS[index % REGIONS.len()].to_string(),
        ),
        (
            "module".to_string(),
            MODULES[(index / REGIONS.len()) % MODULES.len()].to_string(),
        ),
        (
            "firmware".to_string(),
            firmware[(scrambled % firmware.len() as u64) as usize].to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn twelve_devices_cover_every_region_module_cohort() {
        let cohorts: BTreeSet<(String, String)> = (0..12)
            .map(|i| {
                let l = labels_for(DeviceKind::Meter, i);
                (l["region"].clone(), l["module"].clone())
            })
            .collect();
        assert_eq!(cohorts.len(), 12);
    }

    #[test]
    fn firmware_uses_several_versions_and_is_stable() {
        let versions: BTreeSet<String> = (0..40)
            .map(|i| labels_for(DeviceKind::Vehicle, i)["firmware"].clone())
            .collect();
        assert!(versions.len() >= 3, "{versions:?}");
        assert_eq!(
            labels_for(DeviceKind::Meter, 7),
            labels_for(DeviceKind::Meter, 7)
        );
    }
}
