//! The wall clock of the stage's I/O layer, injected.
//!
//! Why: two decisions of the stage depend on the wall clock, not on the frames' own
//! time: the idle clock closes cohort windows of partitions without traffic
//! ([`crate::idle_clock`]) and the fleet aggregator judges a window some partition never
//! closed after the grace ([`crate::fleet`]). The pure cores take that time as a
//! parameter; this is where the I/O layer gets it, so a test can hold time still and
//! move it on purpose ([`ManualClock`]) instead of sleeping through real windows.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where "now" comes from.
pub trait Clock: Debug + Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that stands still until told to move (tests): clones share one time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at(now_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(now_ms)))
    }

    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The clock a stage runs on when none is given.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
