//! The registry a receiver holds while it follows the topic, changed record by record.
//!
//! # Why not rebuild
//! Rebuilding the registry from every line after each burst of changes took the file
//! loader's time (7.6 s for 10^6 devices, 84 s for 10^7 on this project's machine), so
//! a revocation waited that long, the receiver held every line beside the registry
//! (twice the memory), and one signed line that contradicted another key of its device
//! made every later rebuild fail: no change, revocations included, was taken until
//! someone fixed it. Here each record changes one device in place and the registry is
//! handed over as a copy that shares everything else ([`crate::registry::shards`]).
//!
//! # A device's keys that disagree
//! In a file, a device's keys must agree on its kind and labels. In the topic, the keys
//! of one device are records that may sit in different partitions, so a change of
//! labels arrives key by key. While they disagree, the device's keys (material and
//! status: a revocation takes effect at once) follow their records, and its kind and
//! labels stay those in force before; once every key's line agrees again, the device
//! takes them. Each key's own kind and labels are kept only for such devices.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Change, Refused, parse_record};
use crate::registry::{DeviceKind, Registry, RegistryEntry, RegistryKey};

type Labels = Arc<BTreeMap<String, String>>;

/// What a record accepted by [`TopicRegistry::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The device's entry is what its keys' lines say.
    InForce,
    /// The key took effect, but the device's keys disagree on its kind or labels: those
    /// in force stay until they agree (module docs).
    KindOrLabelsHeld,
}

/// One key's line, as a receiver keeps it for a device whose keys disagree.
#[derive(Debug, Clone)]
struct KeyLine {
    key: RegistryKey,
    kind: DeviceKind,
    labels: Labels,
}

/// The registry in force, fed the topic's records in order.
#[derive(Debug, Default)]
pub struct TopicRegistry {
    registry: Registry,
    /// Each key's line of the devices whose keys disagree on kind or labels.
    disagreeing: HashMap<Box<str>, Vec<KeyLine>>,
    /// One copy of each distinct label set (as the file loader shares them).
    label_sets: HashMap<BTreeMap<String, String>, Labels>,
}

impl TopicRegistry {
    /// Takes one record (after [`super::ProvisioningKeys::check`]): a line replaces its
    /// key's line, a tombstone (`None`) removes the key. A record that does not parse,
    /// or whose line names another device or key than its record key, is refused and
    /// the entry in force stays.
    pub fn apply(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> std::result::Result<Applied, Refused> {
        match parse_record(key, value)? {
            Change::Removed { key } => {
                let (device, key_id) = key.split_once('/').ok_or(Refused::Malformed)?;
                Ok(self.update(device, |keys| keys.retain(|k| &*k.key.key_id != key_id)))
            }
            Change::Line {
                parsed,
                verifying_key: key,
                ..
            } => {
                let labels = match self.label_sets.get(&parsed.labels) {
                    Some(l) => l.clone(),
                    None => {
                        let l = Arc::new(parsed.labels.clone());
                        self.label_sets.insert(parsed.labels.clone(), l.clone());
                        l
                    }
                };
                let line = KeyLine {
                    key: RegistryKey {
                        key_id: parsed.key_id.as_str().into(),
                        key: *key,
                        status: parsed.status,
                    },
                    kind: parsed.kind,
                    labels,
                };
                Ok(self.update(&parsed.device_id, |keys| {
                    match keys.iter_mut().find(|k| k.key.key_id == line.key.key_id) {
                        Some(k) => *k = line,
                        None => keys.push(line),
                    }
                }))
            }
        }
    }

    /// Changes `device`'s key lines with `change` and puts the result in force.
    fn update(&mut self, device: &str, change: impl FnOnce(&mut Vec<KeyLine>)) -> Applied {
        let before = self.registry.device(device).cloned();
        let mut keys = match self.disagreeing.remove(device) {
            Some(keys) => keys,
            None => before.as_ref().map_or_else(Vec::new, |e| {
                e.keys
                    .iter()
                    .map(|k| KeyLine {
                        key: k.clone(),
                        kind: e.kind,
                        labels: e.labels.clone(),
                    })
                    .collect()
            }),
        };
        change(&mut keys);
        let Some(first) = keys.first() else {
            self.registry.set_device(device, None);
            return Applied::InForce;
        };
        let (kind, labels) = (first.kind, first.labels.clone());
        let agree = keys.iter().all(|k| k.kind == kind && k.labels == labels);
        let entry = |kind, labels, keys: &[KeyLine]| RegistryEntry {
            kind,
            labels,
            keys: keys.iter().map(|k| k.key.clone()).collect(),
        };
        if agree {
            self.registry
                .set_device(device, Some(entry(kind, labels, &keys)));
            return Applied::InForce;
        }
        // the keys follow their records; kind and labels stay those in force (a device
        // first seen disagreeing takes its first key's)
        let (kind, labels) = before.map_or((kind, labels), |e| (e.kind, e.labels));
        self.registry
            .set_device(device, Some(entry(kind, labels, &keys)));
        self.disagreeing.insert(device.into(), keys);
        Applied::KindOrLabelsHeld
    }

    /// The registry in force: a copy that shares its devices with this one.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// Keys in force.
    pub fn len(&self) -> usize {
        self.registry.key_count()
    }

    pub fn is_empty(&self) -> bool {
        self.registry.key_count() == 0
    }

    /// Devices whose keys disagree on kind or labels now.
    pub fn disagreeing(&self) -> usize {
        self.disagreeing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::KeyStatus;

    const PK1: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    const PK2: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn line(key_id: &str, pk: &str, status: &str, region: &str) -> String {
        format!(
            r#"{{"device_id":"mtr-000001","key_id":"{key_id}","alg":"ed25519","public_key":"{pk}","kind":"meter","status":"{status}","labels":{{"region":"{region}"}}}}"#
        )
    }

    fn put(t: &mut TopicRegistry, key_id: &str, l: &str) -> Applied {
        t.apply(
            format!("mtr-000001/{key_id}").as_bytes(),
            Some(l.as_bytes()),
        )
        .unwrap()
    }

    fn region(t: &TopicRegistry) -> String {
        t.registry().device("mtr-000001").unwrap().labels["region"].clone()
    }

    fn status(t: &TopicRegistry, key_id: &str) -> KeyStatus {
        let r = t.registry();
        r.device("mtr-000001").unwrap().key(key_id).unwrap().status
    }

    #[test]
    fn lines_replace_and_tombstones_remove_keys() {
        let mut t = TopicRegistry::default();
        assert_eq!(
            put(&mut t, "k1", &line("k1", PK1, "active", "n")),
            Applied::InForce
        );
        assert_eq!(
            put(&mut t, "k2", &line("k2", PK2, "active", "n")),
            Applied::InForce
        );
        assert_eq!((t.registry().len(), t.len()), (1, 2));
        let before = t.registry();
        put(&mut t, "k1", &line("k1", PK1, "revoked", "n"));
        assert_eq!(status(&t, "k1"), KeyStatus::Revoked);
        // a registry handed over earlier keeps what it had
        let k1 = before.device("mtr-000001").unwrap().key("k1").unwrap();
        assert_eq!(k1.status, KeyStatus::Active);
        assert_eq!(t.apply(b"mtr-000001/k1", None).unwrap(), Applied::InForce);
        assert!(
            t.registry()
                .device("mtr-000001")
                .unwrap()
                .key("k1")
                .is_none()
        );
        t.apply(b"mtr-000001/k2", None).unwrap();
        assert!(t.registry().device("mtr-000001").is_none(), "no key left");
        assert!(t.is_empty());
        // removing what is not there changes nothing
        assert_eq!(t.apply(b"mtr-000001/k9", None).unwrap(), Applied::InForce);
        assert!(t.registry().is_empty());
    }

    /// The labels change key by key: between the two records the device keeps its old
    /// labels, a revocation meanwhile still takes effect, and once both keys agree the
    /// new labels are in force. Before, the first record made every rebuild fail.
    #[test]
    fn keys_that_disagree_hold_kind_and_labels_not_revocations() {
        let mut t = TopicRegistry::default();
        put(&mut t, "k1", &line("k1", PK1, "active", "north"));
        put(&mut t, "k2", &line("k2", PK2, "active", "north"));
        assert_eq!(
            put(&mut t, "k1", &line("k1", PK1, "active", "south")),
            Applied::KindOrLabelsHeld
        );
        assert_eq!(region(&t), "north");
        assert_eq!(t.disagreeing(), 1);
        // a revocation of the other key is in force at once
        assert_eq!(
            put(&mut t, "k2", &line("k2", PK2, "revoked", "north")),
            Applied::KindOrLabelsHeld
        );
        assert_eq!(status(&t, "k2"), KeyStatus::Revoked);
        assert_eq!(region(&t), "north");
        assert_eq!(
            put(&mut t, "k2", &line("k2", PK2, "revoked", "south")),
            Applied::InForce
        );
        assert_eq!(region(&t), "south");
        assert_eq!(t.disagreeing(), 0);
        assert_eq!(status(&t, "k2"), KeyStatus::Revoked);
        // removing the key that disagrees also ends the disagreement
        put(&mut t, "k1", &line("k1", PK1, "active", "west"));
        assert_eq!(t.disagreeing(), 1);
        t.apply(b"mtr-000001/k2", None).unwrap();
        assert_eq!((region(&t), t.disagreeing()), ("west".to_string(), 0));
    }

    #[test]
    fn a_refused_record_changes_nothing() {
        let mut t = TopicRegistry::default();
        put(&mut t, "k1", &line("k1", PK1, "active", "n"));
        let other_key = line("k2", PK2, "revoked", "n");
        assert_eq!(
            t.apply(b"mtr-000001/k1", Some(other_key.as_bytes())),
            Err(Refused::Malformed),
            "a line under another record key"
        );
        assert_eq!(
            t.apply(b"mtr-000001/k1", Some(b"{not json")),
            Err(Refused::Malformed)
        );
        assert_eq!(t.apply(b"no-slash", None), Err(Refused::Malformed));
        assert_eq!(status(&t, "k1"), KeyStatus::Active);
        assert_eq!(t.len(), 1);
    }
}
