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
    /// One copy of each distinct label set (as the file loader shares them). Sets no
    /// key uses any more are dropped once the map has doubled ([`Self::intern`]), so
    /// label changes over the years do not pile up.
    label_sets: HashMap<BTreeMap<String, String>, Labels>,
    /// Size of `label_sets` that triggers the next sweep.
    sweep_at: usize,
}

/// The smallest `sweep_at`.
const MIN_SWEEP: usize = 1024;

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
                let labels = self.intern(&parsed.labels);
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

    /// The shared copy of `labels`; sweeps out sets no key holds when the map has
    /// doubled since the last sweep (amortised O(1) per record).
    fn intern(&mut self, labels: &BTreeMap<String, String>) -> Labels {
        if let Some(l) = self.label_sets.get(labels) {
            return l.clone();
        }
        if self.label_sets.len() >= self.sweep_at.max(MIN_SWEEP) {
            self.label_sets.retain(|_, l| Arc::strong_count(l) > 1);
            self.sweep_at = (self.label_sets.len() * 2).max(MIN_SWEEP);
        }
        let l = Arc::new(labels.clone());
        self.label_sets.insert(labels.clone(), l.clone());
        l
    }

    /// Changes `device`'s key lines with `change` and puts the result in force.
    fn update(&mut self, device: &str, change: impl FnOnce(&mut Vec<KeyLine>)) -> Applied {
        let in_force = self.registry.device(device);
        // what stays in force if the keys come to disagree
        let before = in_force.map(|e| (e.kind, e.labels.clone()));
        let mut keys = match self.disagreeing.remove(device) {
            Some(keys) => keys,
            None => in_force.map_or_else(Vec::new, |e| {
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
        let (kind, labels) = before.unwrap_or((kind, labels));
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

    /// Records anyone with write access could put on the topic: none of them is taken,
    /// none leaves anything held, and the entry in force stays.
    #[test]
    fn hostile_records_are_refused_and_nothing_of_them_is_kept() {
        let mut t = TopicRegistry::default();
        put(&mut t, "k1", &line("k1", PK1, "active", "n"));
        let huge_label = line("k1", PK1, "revoked", &"x".repeat(4 << 20));
        let many_labels = format!(
            r#"{{"device_id":"mtr-000001","key_id":"k1","alg":"ed25519","public_key":"{PK1}","kind":"meter","status":"revoked","labels":{{{}}}}}"#,
            (0..10_000)
                .map(|i| format!(r#""l{i}":"v""#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let hostile: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
            (b"mtr-000001/k1".to_vec(), Some(vec![0xff, 0xfe, 0x00])),
            (
                vec![0xff; 64],
                Some(line("k1", PK1, "revoked", "n").into_bytes()),
            ),
            (b"mtr-000001/k1".to_vec(), Some(b"{\"device_id\":".to_vec())),
            (b"mtr-000001/k1".to_vec(), Some(vec![b' '; 4 << 20])),
            (vec![b'a'; 4 << 20], None),
            (
                b"mtr-000001/k1".to_vec(),
                Some(line("k1", "00", "revoked", "n").into_bytes()),
            ),
        ];
        for (key, value) in &hostile {
            assert_eq!(t.apply(key, value.as_deref()), Err(Refused::Malformed));
        }
        // valid but oversized lines are taken as any line would be (their size is the
        // broker's message limit)
        assert!(
            t.apply(b"mtr-000001/k1", Some(huge_label.as_bytes()))
                .is_ok()
        );
        assert!(
            t.apply(b"mtr-000001/k1", Some(many_labels.as_bytes()))
                .is_ok()
        );
        put(&mut t, "k1", &line("k1", PK1, "active", "n"));
        assert_eq!((t.len(), t.disagreeing()), (1, 0));
        // label sets no key holds any more do not pile up: thousands of distinct ones
        // published over one key leave at most one sweep's worth behind
        for i in 0..5_000 {
            put(&mut t, "k1", &line("k1", PK1, "active", &format!("r{i}")));
        }
        assert!(
            t.label_sets.len() <= 2 * MIN_SWEEP,
            "{}",
            t.label_sets.len()
        );
        put(&mut t, "k1", &line("k1", PK1, "active", "n"));
        assert_eq!(status(&t, "k1"), KeyStatus::Active);
        assert_eq!(region(&t), "n");
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
