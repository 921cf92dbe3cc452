//! Per-device replay window, as the device contract defines it.
//!
//! A replay is a seq that was already accepted, not merely a seq below the highest seen:
//! devices retry, so seq 7 may be accepted before a retried seq 6. The window keeps the
//! highest accepted seq and the seqs within `window` behind it that were *not* accepted
//! yet (holes). A device that sends in order has no holes, so the common case costs 16
//! bytes; the worst case is bounded by `window` holes.
//!
//! Seqs are device-supplied, so every step is saturating, and a seq further ahead of the
//! highest than `max_ahead` is refused ([`Verdict::TooFarAhead`]) instead of moving the
//! window: one frame with `seq = u64::MAX` would otherwise make every later frame of the
//! device `too_old`, for ever.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: accept. `gap_before` when seqs between the previous highest and
    /// this one are missing.
    New { gap_before: bool },
    /// Already accepted: store once, drop this copy.
    Duplicate,
    /// Older than the window: cannot tell, so quarantine as `too_old`.
    TooOld,
    /// More than `max_ahead` past the highest: quarantined as `seq_jump`, the window
    /// stays where it is.
    TooFarAhead,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeqWindow {
    highest: u64,
    holes: BTreeSet<u64>,
}

impl SeqWindow {
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Classifies `seq` without changing state.
    pub fn classify(&self, seq: u64, window: u64, max_ahead: u64) -> Verdict {
        if seq > self.highest {
            // no underflow: seq > highest
            let ahead = seq - self.highest;
            if ahead > max_ahead {
                return Verdict::TooFarAhead;
            }
            return Verdict::New {
                gap_before: ahead > 1,
            };
        }
        // no underflow: seq <= highest
        if self.highest - seq >= window {
            return Verdict::TooOld;
        }
        if self.holes.contains(&seq) {
            Verdict::New { gap_before: false }
        } else {
            Verdict::Duplicate
        }
    }

    /// Records `seq` as accepted. Idempotent.
    pub fn accept(&mut self, seq: u64, window: u64) {
        if seq > self.highest {
            // no overflow: seq > highest, so highest + 1 <= seq
            let low = (seq.saturating_sub(window).saturating_add(1)).max(self.highest + 1);
            for s in low..seq {
                self.holes.insert(s);
            }
            self.highest = seq;
            let floor = seq.saturating_sub(window);
            // drop holes that fell out of the window
            while let Some(&first) = self.holes.first() {
                if first > floor {
                    break;
                }
                self.holes.pop_first();
            }
        } else {
            self.holes.remove(&seq);
        }
    }

    /// Approximate heap + inline bytes, for the state-size bound.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.holes.len() * 2 * std::mem::size_of::<u64>()
    }

    /// Whether this window is one [`Self::accept`] could have built with a window of
    /// `window` seqs: holes are seqs ≥ 1 below the highest, fewer than `window` of them.
    /// A changelog record is input too: one that decodes but contradicts itself is
    /// refused, and the partition is rebuilt from the checked log.
    pub fn validate(&self, window: u64) -> Result<(), &'static str> {
        if self.holes.len() as u64 >= window.max(1) {
            return Err("more holes than the replay window");
        }
        match (self.holes.first(), self.holes.last()) {
            (Some(&0), _) => Err("a hole at seq 0"),
            (_, Some(&last)) if last >= self.highest => Err("a hole at or above the highest seq"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 4096;
    const A: u64 = 1 << 32;

    #[test]
    fn a_window_that_contradicts_itself_is_invalid() {
        let mut w = SeqWindow::default();
        w.accept(10, 4096);
        w.accept(8, 4096);
        assert_eq!(w.validate(4096), Ok(()));
        assert!(
            w.validate(8).is_err(),
            "8 holes (1..=9 but 8) in a window of 8"
        );
        let forged = |highest, holes: &[u64]| SeqWindow {
            highest,
            holes: holes.iter().copied().collect(),
        };
        assert!(forged(5, &[5]).validate(4096).is_err());
        assert!(forged(5, &[9]).validate(4096).is_err());
        assert!(forged(5, &[0]).validate(4096).is_err());
        assert!(forged(0, &[]).validate(4096).is_ok());
    }

    #[test]
    fn in_order_retry_and_out_of_order() {
        let mut w = SeqWindow::default();
        assert_eq!(w.classify(1, W, A), Verdict::New { gap_before: false });
        w.accept(1, W);
        assert_eq!(w.classify(1, W, A), Verdict::Duplicate);
        // seq 3 before a retried seq 2: 3 flags a gap, 2 is then new, not a replay
        assert_eq!(w.classify(3, W, A), Verdict::New { gap_before: true });
        w.accept(3, W);
        assert_eq!(w.classify(2, W, A), Verdict::New { gap_before: false });
        w.accept(2, W);
        assert_eq!(w.classify(2, W, A), Verdict::Duplicate);
        assert_eq!(w.classify(3, W, A), Verdict::Duplicate);
        assert_eq!(w.approx_bytes(), std::mem::size_of::<SeqWindow>());
    }

    #[test]
    fn first_frame_after_missing_start_flags_gap() {
        let w = SeqWindow::default();
        assert_eq!(w.classify(5, W, A), Verdict::New { gap_before: true });
    }

    #[test]
    fn too_old_is_outside_the_window() {
        let mut w = SeqWindow::default();
        w.accept(10_000, W);
        assert_eq!(w.classify(10_000 - W, W, A), Verdict::TooOld);
        assert_eq!(
            w.classify(10_000 - W + 1, W, A),
            Verdict::New { gap_before: false }
        );
        // holes are bounded by the window
        assert!(w.holes.len() < W as usize);
        w.accept(20_000, W);
        assert!(w.holes.iter().all(|&h| h > 20_000 - W));
    }

    #[test]
    fn accept_is_idempotent_so_replaying_a_log_rebuilds_state() {
        let seqs = [1u64, 2, 5, 3, 9, 4];
        let mut a = SeqWindow::default();
        for s in seqs {
            a.accept(s, W);
        }
        let mut b = a.clone();
        for s in seqs {
            b.accept(s, W);
        }
        assert_eq!(a, b);
        assert_eq!(a.classify(6, W, A), Verdict::New { gap_before: false });
        assert_eq!(a.classify(4, W, A), Verdict::Duplicate);
    }

    #[test]
    fn seqs_near_the_top_of_u64_neither_overflow_nor_lock_the_device_out() {
        let mut w = SeqWindow::default();
        w.accept(10, W);
        // a jump past max_ahead is refused and leaves the window where it was
        assert_eq!(w.classify(u64::MAX, W, A), Verdict::TooFarAhead);
        assert_eq!(w.classify(10 + A + 1, W, A), Verdict::TooFarAhead);
        assert_eq!(w.classify(10 + A, W, A), Verdict::New { gap_before: true });
        assert_eq!(w.classify(11, W, A), Verdict::New { gap_before: false });
        // with no limit, u64::MAX is accepted without overflow, and every step after it
        // saturates (debug builds panic on overflow)
        w.accept(u64::MAX, W);
        assert_eq!(w.highest(), u64::MAX);
        assert_eq!(w.classify(u64::MAX, W, u64::MAX), Verdict::Duplicate);
        assert_eq!(
            w.classify(u64::MAX - 1, W, u64::MAX),
            Verdict::New { gap_before: false }
        );
        assert_eq!(w.classify(5, W, u64::MAX), Verdict::TooOld);
        w.accept(u64::MAX - 1, W);
        w.accept(u64::MAX, W);
        assert!(w.holes.len() < W as usize);
    }
}
