//! Replays of one frame are stored once: the first copy refused for a device goes to
//! quarantine with its bytes, later copies of the same frame are only counted.
//!
//! Why: the edge verifies and appends every copy it is sent (a device retrying, or anyone
//! replaying a captured frame, and each copy's signature is valid), and quarantining every
//! copy with its full bytes lets one captured frame fill the quarantine dataset. Here the
//! n-th copy of a frame (same device, seq and signed bytes) writes a record only when n is
//! a power of two, and then without the bytes and with `detail` "replayed n times":
//! log2(N) small records for N replays.
//!
//! The count lives in the device's state, in [`ReplayLog::SLOTS`] slots (the frames
//! refused most recently; 24 bytes each, 0 when the device was never replayed), and is
//! written to the state changelog with the rest of it. Bounds and limits:
//! - state: at most `SLOTS` entries per device;
//! - more than `SLOTS` distinct frames of one device replayed in turn evict each other, and
//!   each copy is stored again with its bytes: output never exceeds the replayed input;
//! - after a crash the counts since the last state snapshot are lost (the records written
//!   are not replayed into the state), so a copy may be stored with its bytes once more.

use crate::rules::cohort::fnv1a64;

/// What to do with the copy just counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// The first copy refused: quarantine it with its bytes.
    First,
    /// The n-th copy, n a power of two: a record without bytes that counts it.
    Count(u64),
    /// The n-th copy, n not a power of two: counted, nothing to write.
    Absorbed(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Entry {
    seq: u64,
    /// FNV-1a of the signed frame's bytes: a different frame with the same seq (a
    /// firmware that reuses seqs) is not a replay of the first.
    hash: u64,
    count: u64,
}

/// The frames of one device refused most recently, with how often each was seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayLog {
    /// Most recently seen last.
    entries: Vec<Entry>,
}

impl ReplayLog {
    pub const SLOTS: usize = 8;

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn approx_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Counts one refused copy of frame `seq` with signed bytes `signed`.
    pub fn count(&mut self, seq: u64, signed: &[u8]) -> Replay {
        let hash = fnv1a64(signed);
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.seq == seq && e.hash == hash)
        {
            let mut e = self.entries.remove(i);
            e.count = e.count.saturating_add(1);
            self.entries.push(e);
            return if e.count.is_power_of_two() {
                Replay::Count(e.count)
            } else {
                Replay::Absorbed(e.count)
            };
        }
        if self.entries.len() >= Self::SLOTS {
            self.entries.remove(0);
        }
        self.entries.push(Entry {
            seq,
            hash,
            count: 1,
        });
        Replay::First
    }

    /// Whether the log is one this code could have written (a changelog record is
    /// input too).
    pub fn is_valid(&self) -> bool {
        self.entries.len() <= Self::SLOTS && self.entries.iter().all(|e| e.count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_replayed_many_times_writes_log2_records() {
        let mut log = ReplayLog::default();
        let mut written = Vec::new();
        for n in 1..=1000u64 {
            match log.count(7, b"frame") {
                Replay::First => written.push((n, 0)),
                Replay::Count(c) => written.push((n, c)),
                Replay::Absorbed(_) => {}
            }
        }
        assert_eq!(
            written,
            [
                (1, 0),
                (2, 2),
                (4, 4),
                (8, 8),
                (16, 16),
                (32, 32),
                (64, 64),
                (128, 128),
                (256, 256),
                (512, 512)
            ]
        );
        // another frame with the same seq is not a replay of the first
        assert_eq!(log.count(7, b"other"), Replay::First);
        assert_eq!(log.count(8, b"frame"), Replay::First);
        assert_eq!(log.count(7, b"frame"), Replay::Absorbed(1001));
    }

    #[test]
    fn the_log_is_bounded_and_keeps_the_most_recent() {
        let mut log = ReplayLog::default();
        for s in 0..100u64 {
            assert_eq!(log.count(s, b"f"), Replay::First);
        }
        assert_eq!(log.entries.len(), ReplayLog::SLOTS);
        assert!(log.is_valid());
        assert_eq!(log.count(99, b"f"), Replay::Count(2));
        assert_eq!(log.count(0, b"f"), Replay::First, "evicted long ago");
        let bytes = postcard::to_stdvec(&log).unwrap();
        assert!(bytes.len() < 8 * 3 * 10 + 2, "{}", bytes.len());
        assert_eq!(postcard::from_bytes::<ReplayLog>(&bytes).unwrap(), log);
    }
}
