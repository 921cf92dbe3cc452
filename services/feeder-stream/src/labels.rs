//! Device labels from the registry, as the rules read them (per-label overrides such as
//! `net_metered=true`, cohort membership). A leaf: the settings ([`crate::config`]) and
//! the hot reload ([`crate::labels_reload`]) both use it, neither uses the other's code.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One device's labels, shared between devices with the same set.
pub type Labels = Arc<BTreeMap<String, String>>;

/// Registry labels by device id, shared by every partition (rules are overridden by
/// label, e.g. `net_metered=true`). Devices missing from it get the default rules.
///
/// From a registry file the labels are copied out and the registry dropped; from the
/// registry topic they are read from the registry the follower hands over, which shares
/// its devices with the follower's own (`feeder_core::registry::shards`), so a change of
/// one device costs one shard, not a copy of every device's labels.
#[derive(Debug, Clone, Default)]
pub struct DeviceLabels(Source);

#[derive(Debug, Clone, Default)]
enum Source {
    #[default]
    None,
    Copied(Arc<HashMap<String, Labels>>),
    Registry(feeder_core::Registry),
}

impl DeviceLabels {
    /// The labels of `device_id`, if it is registered.
    pub fn get(&self, device_id: &str) -> Option<&Labels> {
        match &self.0 {
            Source::None => None,
            Source::Copied(map) => map.get(device_id),
            Source::Registry(registry) => registry.device(device_id).map(|e| &e.labels),
        }
    }

    /// No device has labels here (no registry given).
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Source::None => true,
            Source::Copied(map) => map.is_empty(),
            Source::Registry(registry) => registry.is_empty(),
        }
    }

    /// Reads the labels from `registry` itself (a copy that shares its devices).
    pub fn sharing(registry: feeder_core::Registry) -> Self {
        Self(Source::Registry(registry))
    }
}

impl From<HashMap<String, Labels>> for DeviceLabels {
    fn from(map: HashMap<String, Labels>) -> Self {
        Self(Source::Copied(Arc::new(map)))
    }
}

/// Labels of every device in a registry, copied (the registry itself can be dropped).
pub fn labels_from_registry(registry: &feeder_core::Registry) -> DeviceLabels {
    registry
        .iter()
        .map(|(id, e)| (id.to_string(), e.labels.clone()))
        .collect::<HashMap<_, _>>()
        .into()
}
