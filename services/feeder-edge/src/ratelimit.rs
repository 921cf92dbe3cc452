//! Per-device rate limit: a token bucket per device, in a sharded table of bounded size.
//!
//! Memory is bounded by `capacity` entries (about 100 bytes each with the map's overhead).
//! A bucket that has refilled completely carries no information (a fresh bucket is full),
//! so such entries are dropped whenever a shard is full: the table only needs to hold the
//! devices that sent within the last `burst / rate` seconds. If a shard is still full
//! after that sweep, the frame is refused (code 8, retryable) rather than letting the
//! table grow: fail closed, never unbounded. Only registered devices reach the limiter,
//! so junk device ids cannot fill it.
//!
//! The edge [`takes`](RateLimiter::take) a device's token *before* verifying the frame's
//! signature, so the number of verifications spent on one device id is bounded by its
//! rate, forged or not. The price: a forged frame for a real device spends that device's
//! token. The per-peer budget of failed verifications ([`crate::peer_budget`]) bounds that
//! price: one peer can spend at most its budget of a device's tokens per cool-off.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 64;
/// A full shard is swept at most this often, so a flood cannot make every insert O(n).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Shard {
    buckets: HashMap<Box<str>, Bucket>,
    last_sweep: Option<Instant>,
}

/// Why [`RateLimiter::take`] said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The device is over its rate.
    OverRate,
    /// The limiter's table is full of active devices.
    TableFull,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    shard_capacity: usize,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: u32, capacity: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    buckets: HashMap::new(),
                    last_sweep: None,
                })
            })
            .collect();
        Self {
            rate: rate_per_sec,
            burst: f64::from(burst),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards,
        }
    }

    fn shard(&self, device_id: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(device_id) as usize) % SHARDS;
        // A poisoned shard holds plain numbers that are valid in any state.
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Takes one token for the device.
    pub fn take(&self, device_id: &str, now: Instant) -> Result<(), Limited> {
        let mut shard = self.shard(device_id);
        if let Some(b) = shard.buckets.get_mut(device_id) {
            let dt = now.saturating_duration_since(b.at).as_secs_f64();
            let tokens = (b.tokens + dt * self.rate).min(self.burst);
            if tokens < 1.0 {
                return Err(Limited::OverRate);
            }
            *b = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            return Ok(());
        }
        if shard.buckets.len() >= self.shard_capacity {
            let may_sweep = shard
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
            if may_sweep {
                shard.last_sweep = Some(now);
                let (rate, burst) = (self.rate, self.burst);
                shard.buckets.retain(|_, b| {
                    b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
                });
            }
            if shard.buckets.len() >= self.shard_capacity {
                return Err(Limited::TableFull);
            }
        }
        shard.buckets.insert(
            device_id.into(),
            Bucket {
                tokens: self.burst - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    /// Devices currently tracked (for the gauge).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| match s.lock() {
                Ok(g) => g.buckets.len(),
                Err(p) => p.into_inner().buckets.len(),
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(2.0, 3, 1000);
        let takes = |at: Instant| (0..10).filter(|_| rl.take("a", at).is_ok()).count();
        assert_eq!(takes(t0), 3);
        assert_eq!(rl.take("a", t0), Err(Limited::OverRate));
        // another device is independent
        rl.take("b", t0).unwrap();
        // 2 per second: after 500 ms one more frame
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(takes(t1), 1);
        // never more than the burst, however long idle
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(takes(t2), 3);
    }

    #[test]
    fn table_is_bounded_and_idle_devices_are_evicted() {
        let t0 = Instant::now();
        // capacity 64 = one entry per shard
        let rl = RateLimiter::new(1.0, 2, SHARDS);
        let ids: Vec<String> = (0..10_000).map(|i| format!("d{i}")).collect();
        let mut full = 0;
        for id in &ids {
            if rl.take(id, t0) == Err(Limited::TableFull) {
                full += 1;
            }
        }
        assert!(rl.tracked() <= SHARDS, "{}", rl.tracked());
        assert!(full >= 10_000 - SHARDS);
        // once their buckets refill, entries are evicted and new devices get in
        let later = t0 + Duration::from_secs(5);
        for id in &ids {
            rl.take(id, later).ok();
        }
        assert!(rl.tracked() <= SHARDS);
        let mut admitted = 0;
        let much_later = later + Duration::from_secs(5);
        for id in ids.iter().rev() {
            if rl.take(id, much_later).is_ok() {
                admitted += 1;
            }
        }
        assert!(admitted >= 1);
    }
}
