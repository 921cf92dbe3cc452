//! The budget of failed signature verifications per peer: cheap before expensive, for
//! attackers too.
//!
//! A signature check is the edge's most expensive per-frame step (~30 µs for Ed25519), and
//! a forged frame for a real device passes every cheaper check. So each peer (its
//! connection, and its address: an IPv6 address counts by its /64, which one subscriber
//! usually holds whole) may fail at most `per_connection` / `per_address` verifications
//! within `window`; past that its frames are refused with code 8 *without* verification
//! for `cool_off`.
//!
//! The budget is strict, also across a peer's concurrent calls: a call first
//! [`reserves`](PeerBudget::reserve) as many verifications as it may still fail, verifies
//! that many, then [`settles`](PeerBudget::settle) (successes are given back). A peer can
//! therefore never cost more than its budget in failed verifications per window + cool-off,
//! however it spreads its frames over calls. Valid frames cost no budget.
//!
//! Memory is bounded: at most `capacity` peers are tracked. Entries that carry nothing (no
//! reservation, no failure in the current window, not cooling off) are dropped when the
//! table is full; if it is still full, new peers share one overflow entry with the
//! per-address budget, so a flood of addresses can exhaust only that shared entry, never
//! the memory, and never the budget of the peers already tracked.
//!
//! Pure: time is a parameter, so the rules are unit-tested with made-up instants.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::FailureBudget;

/// A full table is swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// What a peer's failures are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// One TCP connection (the client's address and port).
    Connection(SocketAddr),
    /// One address (IPv4) or /64 (IPv6).
    Address(IpAddr),
    /// Peers that found the table full.
    Overflow,
    /// A transport without a peer address (never the case over TCP).
    Unknown,
}

impl PeerKey {
    /// The connection and address keys of a peer.
    pub fn of(remote: Option<SocketAddr>) -> [PeerKey; 2] {
        match remote {
            Some(a) => [Self::Connection(a), Self::Address(network(a.ip()))],
            None => [Self::Unknown, Self::Unknown],
        }
    }
}

/// An IPv4 address as is; an IPv6 address cut to its /64 (IPv4-mapped ones as IPv4).
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// The answer to [`PeerBudget::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Verify this many frames (at least 1), then settle them.
    Verify(u32),
    /// The peer is cooling off: refuse its frames without verification.
    Blocked,
    /// The peer's remaining budget is all reserved by its other calls in progress: try
    /// again shortly.
    Busy,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    reserved: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            reserved: 0,
            window_start: now,
            blocked_until: None,
        }
    }

    /// Ends a finished cool-off or window.
    fn refresh(&mut self, now: Instant, window: Duration) {
        let expired = match self.blocked_until {
            Some(until) => now >= until,
            None => now.saturating_duration_since(self.window_start) >= window,
        };
        if expired {
            *self = Self {
                reserved: self.reserved,
                ..Self::new(now)
            };
        }
    }

    fn carries_nothing(&self, now: Instant, window: Duration) -> bool {
        let mut e = *self;
        e.refresh(now, window);
        e.reserved == 0 && e.failures == 0 && e.blocked_until.is_none()
    }
}

#[derive(Debug)]
struct Table {
    entries: HashMap<PeerKey, Entry>,
    last_sweep: Option<Instant>,
}

#[derive(Debug)]
pub struct PeerBudget {
    cfg: FailureBudget,
    table: Mutex<Table>,
}

impl PeerBudget {
    pub fn new(cfg: FailureBudget) -> Self {
        Self {
            cfg,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    fn limit(&self, key: PeerKey) -> u32 {
        match key {
            PeerKey::Connection(_) => self.cfg.per_connection,
            _ => self.cfg.per_address,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Entries are plain numbers, valid in any state a panic could leave them in.
        match self.table.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The key a peer's entry is under: its own, or the overflow entry when the table is
    /// full (after dropping the entries that carry nothing).
    fn slot(&self, t: &mut Table, key: PeerKey, now: Instant) -> PeerKey {
        if t.entries.contains_key(&key) || t.entries.len() < self.cfg.capacity {
            return key;
        }
        let may_sweep = t
            .last_sweep
            .is_none_or(|s| now.saturating_duration_since(s) >= SWEEP_EVERY);
        if may_sweep {
            t.last_sweep = Some(now);
            let window = self.cfg.window;
            t.entries
                .retain(|k, e| *k == PeerKey::Overflow || !e.carries_nothing(now, window));
        }
        if t.entries.len() < self.cfg.capacity {
            key
        } else {
            PeerKey::Overflow
        }
    }

    /// Whether the peer is cooling off (checked before anything is spent on its frames).
    pub fn is_blocked(&self, remote: Option<SocketAddr>, now: Instant) -> bool {
        let t = self.lock();
        PeerKey::of(remote).iter().any(|k| {
            t.entries
                .get(k)
                .and_then(|e| e.blocked_until)
                .is_some_and(|until| now < until)
        })
    }

    /// Reserves up to `want` verifications for the peer (see the module docs).
    pub fn reserve(&self, remote: Option<SocketAddr>, want: u32, now: Instant) -> Grant {
        let mut t = self.lock();
        let keys = PeerKey::of(remote).map(|k| self.slot(&mut t, k, now));
        let mut grant = want;
        for k in keys {
            let e = t.entries.entry(k).or_insert_with(|| Entry::new(now));
            e.refresh(now, self.cfg.window);
            if e.blocked_until.is_some() {
                return Grant::Blocked;
            }
            let left = self.limit(k).saturating_sub(e.failures + e.reserved);
            grant = grant.min(left);
        }
        if grant == 0 {
            return Grant::Busy;
        }
        for k in dedup(keys) {
            if let Some(e) = t.entries.get_mut(&k) {
                e.reserved += grant;
            }
        }
        Grant::Verify(grant)
    }

    /// Settles a reservation of `granted` of which `failed` failed verification; a peer
    /// whose failures reach its budget starts cooling off.
    pub fn settle(&self, remote: Option<SocketAddr>, granted: u32, failed: u32, now: Instant) {
        let mut t = self.lock();
        for k in dedup(PeerKey::of(remote).map(|k| self.slot(&mut t, k, now))) {
            let limit = self.limit(k);
            let Some(e) = t.entries.get_mut(&k) else {
                continue;
            };
            e.reserved = e.reserved.saturating_sub(granted);
            e.failures = e.failures.saturating_add(failed);
            if e.failures >= limit && e.blocked_until.is_none() {
                e.blocked_until = Some(now + self.cfg.cool_off);
            }
        }
    }

    /// Peers tracked (for the gauge and tests).
    pub fn tracked(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Both keys, once each (they coincide only as `Overflow` or `Unknown`).
fn dedup(keys: [PeerKey; 2]) -> impl Iterator<Item = PeerKey> {
    let second = (keys[1] != keys[0]).then_some(keys[1]);
    std::iter::once(keys[0]).chain(second)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_connection: u32, per_address: u32, capacity: usize) -> PeerBudget {
        PeerBudget::new(FailureBudget {
            per_connection,
            per_address,
            window: Duration::from_secs(60),
            cool_off: Duration::from_secs(300),
            capacity,
        })
    }

    fn peer(ip: &str, port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), port))
    }

    /// Spends `frames` forged frames' worth of verifications the way the edge does;
    /// returns how many were verified.
    fn forge(b: &PeerBudget, p: Option<SocketAddr>, frames: u32, now: Instant) -> u32 {
        let (mut left, mut verified) = (frames, 0);
        while left > 0 {
            match b.reserve(p, left, now) {
                Grant::Verify(n) => {
                    b.settle(p, n, n, now);
                    verified += n;
                    left -= n;
                }
                Grant::Blocked | Grant::Busy => break,
            }
        }
        verified
    }

    #[test]
    fn a_connection_is_cut_off_after_its_budget_then_recovers_after_the_cool_off() {
        let t0 = Instant::now();
        let b = budget(10, 100, 1000);
        let p = peer("10.0.0.1", 4000);
        assert_eq!(forge(&b, p, 10_000, t0), 10);
        assert!(b.is_blocked(p, t0));
        assert_eq!(
            b.reserve(p, 1, t0 + Duration::from_secs(299)),
            Grant::Blocked
        );
        // after the cool-off the budget is whole again
        let t1 = t0 + Duration::from_secs(300);
        assert!(!b.is_blocked(p, t1));
        assert_eq!(b.reserve(p, 50, t1), Grant::Verify(10));
    }

    #[test]
    fn valid_frames_cost_nothing_and_failures_age_out_with_the_window() {
        let t0 = Instant::now();
        let b = budget(10, 100, 1000);
        let p = peer("10.0.0.1", 4000);
        for _ in 0..1000 {
            let Grant::Verify(n) = b.reserve(p, 5, t0) else {
                panic!("valid frames were refused");
            };
            b.settle(p, n, 0, t0);
        }
        assert_eq!(forge(&b, p, 9, t0), 9);
        // a new window forgets the 9 failures
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(b.reserve(p, 50, t1), Grant::Verify(10));
    }

    #[test]
    fn the_address_budget_holds_across_connections_and_ipv6_counts_by_64() {
        let t0 = Instant::now();
        let b = budget(10, 25, 1000);
        let mut spent = 0;
        for port in 0..100 {
            spent += forge(&b, peer("10.0.0.1", port), 1000, t0);
        }
        assert_eq!(spent, 25);
        // another address is not affected
        assert_eq!(forge(&b, peer("10.0.0.2", 1), 1000, t0), 10);
        // every address of one /64 shares the budget
        let mut spent6 = 0;
        for i in 0..100u16 {
            spent6 += forge(&b, peer(&format!("2001:db8::{i:x}"), 1), 1000, t0);
        }
        assert_eq!(spent6, 25);
        assert_eq!(forge(&b, peer("2001:db8:0:1::1", 1), 1000, t0), 10);
    }

    #[test]
    fn concurrent_reservations_never_overspend() {
        let t0 = Instant::now();
        let b = budget(10, 100, 1000);
        let p = peer("10.0.0.1", 4000);
        // three calls reserve at once: together no more than the budget
        let grants: Vec<Grant> = (0..3).map(|_| b.reserve(p, 8, t0)).collect();
        assert_eq!(
            grants,
            vec![Grant::Verify(8), Grant::Verify(2), Grant::Busy]
        );
        b.settle(p, 8, 0, t0); // all valid: given back
        assert_eq!(b.reserve(p, 8, t0), Grant::Verify(8));
    }

    #[test]
    fn the_table_is_bounded_and_a_flood_of_addresses_shares_one_entry() {
        let t0 = Instant::now();
        let b = budget(10, 50, 64);
        let mut spent = 0;
        for i in 0..10_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            spent += forge(&b, Some(SocketAddr::new(ip.into(), 1)), 3, t0);
        }
        assert!(b.tracked() <= 64 + 1, "{}", b.tracked());
        // the first peers' entries plus one shared overflow budget
        assert!(spent <= 64 * 3 + 50, "{spent}");
        // idle entries make room again once their window is over
        let later = t0 + Duration::from_secs(400);
        assert_eq!(forge(&b, peer("192.168.0.1", 1), 3, later), 3);
        assert!(b.tracked() <= 64 + 1);
    }
}
