//! The chaos schedule: which fault comes next, after how long, for how long; a pure
//! function of a seed, so a failing run is replayed by its seed (`FEEDER_CHAOS_SEED`).
//!
//! The faults come in rounds: each round is every stage fault once (kill -9 and pause of
//! the edge, the stream and the writer), in an order the seed shuffles, each after a quiet
//! gap the seed draws. So the short run in the suite (one round) covers every fault, and
//! a long run (`tests/chaos.sh`) meets them in ever new orders and timings. The broker
//! restart is not in the rounds: the test restarts the broker once, after the last round
//! ([`Schedule::gap`] draws its gap), because tansu 0.6 cannot take much after a restart
//! (its sqlite storage can panic when a producer starts later; docs/brokers.md).
//!
//! The generator is SplitMix64, written out here so a seed means the same schedule
//! whatever version of `rand` the workspace locks.

use std::fmt;
use std::time::Duration;

/// A process the schedule hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Edge,
    Stream,
    Writer,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Edge, Target::Stream, Target::Writer];

    pub fn name(self) -> &'static str {
        match self {
            Target::Edge => "edge",
            Target::Stream => "stream",
            Target::Writer => "writer",
        }
    }
}

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then started again at once (the same instance id).
    Kill(Target),
    /// SIGSTOP for the duration, then SIGCONT.
    Pause(Target, Duration),
    /// SIGKILL of the broker, started again on the same storage and port.
    RestartBroker,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(t) => write!(f, "kill -9 {}", t.name()),
            Fault::Pause(t, d) => write!(f, "pause {} {:.1} s", t.name(), d.as_secs_f64()),
            Fault::RestartBroker => write!(f, "restart broker"),
        }
    }
}

/// A fault and the quiet time before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub after: Duration,
    pub fault: Fault,
}

/// Bounds of the draws.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Quiet time before each fault, at least / at most.
    pub gap: (Duration, Duration),
    /// Pause length, at least / at most.
    pub pause: (Duration, Duration),
}

/// An endless sequence of [`Step`]s, in rounds of every fault once.
pub struct Schedule {
    rng: SplitMix64,
    bounds: Bounds,
    round: Vec<Step>,
}

impl Schedule {
    /// Faults in one round.
    pub const ROUND: usize = 6;

    pub fn new(seed: u64, bounds: Bounds) -> Self {
        Self {
            rng: SplitMix64(seed),
            bounds,
            round: Vec::new(),
        }
    }

    fn next_round(&mut self) -> Vec<Step> {
        let mut faults = Vec::new();
        for t in Target::ALL {
            faults.push(Fault::Kill(t));
            faults.push(Fault::Pause(t, Duration::ZERO));
        }
        // Fisher-Yates
        for i in (1..faults.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            faults.swap(i, j);
        }
        let mut steps: Vec<Step> = faults
            .into_iter()
            .map(|fault| {
                let fault = match fault {
                    Fault::Pause(t, _) => Fault::Pause(t, self.rng.between(self.bounds.pause)),
                    other => other,
                };
                Step {
                    after: self.rng.between(self.bounds.gap),
                    fault,
                }
            })
            .collect();
        steps.reverse(); // popped from the back
        steps
    }

    /// A quiet gap, drawn like the steps' (for the broker restart at the end).
    pub fn gap(&mut self) -> Duration {
        self.rng.between(self.bounds.gap)
    }
}

impl Iterator for Schedule {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.round.is_empty() {
            self.round = self.next_round();
        }
        self.round.pop()
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, and every seed, 0 included, is good.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is below 2^-40 for the small n used here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[lo, hi]`, to the millisecond.
    fn between(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        gap: (Duration::from_secs(2), Duration::from_secs(9)),
        pause: (Duration::from_secs(1), Duration::from_secs(6)),
    };

    #[test]
    fn a_seed_is_a_schedule() {
        let a: Vec<Step> = Schedule::new(7, BOUNDS).take(20).collect();
        let b: Vec<Step> = Schedule::new(7, BOUNDS).take(20).collect();
        let c: Vec<Step> = Schedule::new(8, BOUNDS).take(20).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_round_has_every_fault_once_within_bounds() {
        let steps: Vec<Step> = Schedule::new(18, BOUNDS)
            .take(3 * Schedule::ROUND)
            .collect();
        for round in steps.chunks(Schedule::ROUND) {
            let mut kinds: Vec<String> = round
                .iter()
                .map(|s| match s.fault {
                    Fault::Pause(t, _) => format!("pause {}", t.name()),
                    f => f.to_string(),
                })
                .collect();
            kinds.sort();
            assert_eq!(
                kinds,
                [
                    "kill -9 edge",
                    "kill -9 stream",
                    "kill -9 writer",
                    "pause edge",
                    "pause stream",
                    "pause writer",
                ]
            );
            for s in round {
                assert!(BOUNDS.gap.0 <= s.after && s.after <= BOUNDS.gap.1, "{s:?}");
                if let Fault::Pause(_, d) = s.fault {
                    assert!(BOUNDS.pause.0 <= d && d <= BOUNDS.pause.1, "{s:?}");
                }
            }
        }
        // the order changes between rounds
        assert_ne!(
            steps[..Schedule::ROUND]
                .iter()
                .map(|s| s.fault.to_string())
                .collect::<Vec<_>>(),
            steps[Schedule::ROUND..2 * Schedule::ROUND]
                .iter()
                .map(|s| s.fault.to_string())
                .collect::<Vec<_>>()
        );
    }
}
