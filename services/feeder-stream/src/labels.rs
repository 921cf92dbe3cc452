//! Device labels from the registry, as the rules read them (per-label overrides such as
//! `net_metered=true`, cohort membership). A leaf: the settings ([`crate::config`]) and
//! the hot reload ([`crate::labels_reload`]) both use it, neither uses the other's code.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Registry labels by device id, shared by every partition (rules are overridden by
/// label, e.g. `net_metered=true`). Devices missing from it get the default rules.
pub type DeviceLabels = Arc<HashMap<String, Arc<BTreeMap<String, String>>>>;

/// Labels of every device in a registry.
pub fn labels_from_registry(registry: &feeder_core::Registry) -> DeviceLabels {
    Arc::new(
        registry
            .iter()
            .map(|(id, e)| (id.to_string(), e.labels.clone()))
            .collect(),
    )
}
