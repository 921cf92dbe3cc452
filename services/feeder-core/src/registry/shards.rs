//! The registry's device map, split into shards that are copied on write.
//!
//! # Why
//! A receiver following the registry topic hands a new registry to the edge's readers
//! after each burst of changes, while those readers still hold the previous one. With
//! one map, every hand-over copied (or rebuilt) all of it: seconds for 10^6 devices, a
//! minute and several GB for 10^7, so a revocation took that long to be in force. Here a
//! registry is [`SHARDS`] shared maps: a copy shares them all (a copy is 256 reference
//! counts), and a change copies only the shard it touches, the first time after a copy.
//!
//! The shard of a key comes from a hasher of its own, not the maps': keys of one shard
//! would otherwise share the hash bits the maps use to place them.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

/// Shards per map: a change to one device copies about 1/256 of the registry.
pub const SHARDS: usize = 256;

/// A map from device id to `V`, in copy-on-write shards.
#[derive(Debug, Clone)]
pub struct Shards<V> {
    pick: RandomState,
    shards: Vec<Arc<HashMap<Box<str>, V>>>,
}

impl<V> Default for Shards<V> {
    fn default() -> Self {
        Self {
            pick: RandomState::new(),
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
        }
    }
}

impl<V: Clone> Shards<V> {
    fn index(&self, key: &str) -> usize {
        (self.pick.hash_one(key) % SHARDS as u64) as usize
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.shards[self.index(key)].get(key)
    }

    /// The shard that holds (or would hold) `key`, for changing: copied first if a copy
    /// of this map still shares it.
    pub fn shard_mut(&mut self, key: &str) -> &mut HashMap<Box<str>, V> {
        let i = self.index(key);
        Arc::make_mut(&mut self.shards[i])
    }

    pub fn insert(&mut self, key: Box<str>, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.shard_mut(key).remove(key)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (&**k, v)))
    }

    /// Gives back spare capacity (after a bulk load).
    pub fn shrink_to_fit(&mut self) {
        for s in &mut self.shards {
            Arc::make_mut(s).shrink_to_fit();
        }
    }

    /// How many shards this map shares with its copies (for tests and the bench).
    pub fn shared_shards(&self) -> usize {
        self.shards
            .iter()
            .filter(|s| Arc::strong_count(s) > 1)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_shares_every_shard_and_a_change_copies_one() {
        let mut a: Shards<u32> = Shards::default();
        for i in 0..10_000u32 {
            a.insert(format!("mtr-{i:06}").into(), i);
        }
        assert_eq!(a.len(), 10_000);
        let b = a.clone();
        assert_eq!(a.shared_shards(), SHARDS);
        a.insert("mtr-000042".into(), 7);
        assert_eq!(
            a.shared_shards(),
            SHARDS - 1,
            "only the changed shard copied"
        );
        assert_eq!(a.get("mtr-000042"), Some(&7));
        assert_eq!(b.get("mtr-000042"), Some(&42), "the copy keeps what it had");
        assert_eq!(a.remove("mtr-000001"), Some(1));
        assert_eq!(b.get("mtr-000001"), Some(&1));
        assert_eq!((a.len(), b.len()), (9_999, 10_000));
        let mut keys: Vec<&str> = b.iter().map(|(k, _)| k).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let mut a: Shards<()> = Shards::default();
        for i in 0..25_600u32 {
            a.insert(format!("mtr-{i:06}").into(), ());
        }
        let biggest = a.shards.iter().map(|s| s.len()).max().unwrap();
        assert!(biggest < 200, "a shard of {biggest} for a mean of 100");
    }
}
