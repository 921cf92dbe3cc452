//! The registry in force, shared by the calls (which read it), the hot reload
//! ([`crate::reload`]) and the registry topic follower ([`crate::registry_topic`]) (which
//! replace it), and health (which asks whether one is loaded). Its own module so that
//! each of those depends on it and none on another.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use feeder_core::Registry;

/// The registry in force. Readers take a cheap `Arc` snapshot per request; a reload swaps
/// the whole registry at once, so a request never sees half of two registries.
#[derive(Clone, Default)]
pub struct SharedRegistry {
    current: Arc<RwLock<Arc<Registry>>>,
    /// False for `default()` until a registry is put in (health reports NOT_SERVING).
    loaded: Arc<AtomicBool>,
    /// The file version the first registry was read from (see [`Self::load`]).
    loaded_from: Option<feeder_core::FileStamp>,
}

impl SharedRegistry {
    pub fn new(reg: Registry) -> Self {
        metrics::gauge!("feeder_edge_registry_devices").set(reg.len() as f64);
        Self {
            current: Arc::new(RwLock::new(Arc::new(reg))),
            loaded: Arc::new(AtomicBool::new(true)),
            loaded_from: None,
        }
    }

    /// Loads the registry file, remembering which version of the file it read (taken
    /// before reading), so the hot-reload watcher started later still notices a change
    /// made in between.
    pub fn load(path: &std::path::Path) -> feeder_core::Result<Self> {
        let stamp = feeder_core::FileStamp::of(path);
        let reg = Registry::load(path)?;
        Ok(Self {
            loaded_from: stamp,
            ..Self::new(reg)
        })
    }

    /// See [`Self::load`].
    pub(crate) fn loaded_from(&self) -> Option<feeder_core::FileStamp> {
        self.loaded_from.clone()
    }

    /// Devices in the registry in force.
    pub fn devices(&self) -> usize {
        self.snapshot().len()
    }

    pub fn snapshot(&self) -> Arc<Registry> {
        // A poisoned lock still holds a complete registry (swaps are a single assignment).
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn replace(&self, reg: Registry) {
        metrics::gauge!("feeder_edge_registry_devices").set(reg.len() as f64);
        let reg = Arc::new(reg);
        let old = {
            let mut g = match self.current.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            std::mem::replace(&mut *g, reg)
        };
        self.loaded.store(true, Ordering::Release);
        // A big registry is freed outside the lock, so readers never wait on it.
        drop(old);
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }
}
