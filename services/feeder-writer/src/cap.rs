//! The writer-wide cap on buffered bytes: which buffers to flush early when the sum over
//! every assigned partition exceeds `max_buffered_bytes`.
//!
//! Per-partition limits alone do not bound a writer, because the number of partitions it
//! is assigned is not its choice (4 topics x 48 partitions x 64 MiB is 12 GiB). So after
//! each record the writer checks the total and, above the cap, flushes the largest
//! buffers first (fewest, largest files) until the total is at or under the cap.
//!
//! Exactly once is unaffected: an early flush is an ordinary range whose boundary is in
//! its files' names, so a later recovery follows it like any other. The one exception is
//! a buffer replaying a forced range (a range an earlier run wrote but did not commit):
//! it must end exactly at its recorded boundary, so it is never chosen. While such a
//! replay is buffered the total may exceed the cap by at most its size (the size of the
//! flush that first wrote it).
//!
//! Pure logic over [`Candidate`]s, so the choice is unit-tested without Kafka.

/// One partition's buffer as the cap sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<K> {
    pub key: K,
    /// Payload bytes buffered.
    pub bytes: usize,
    /// Replaying a forced range: never flushed early.
    pub replaying: bool,
}

/// The keys of the buffers to flush, in flush order, so that the total of `buffers` comes
/// down to at most `cap`: largest first (ties by key, so the choice is deterministic),
/// skipping replays and empty buffers. Empty when the total is already within the cap.
/// When only replays remain the result brings the total down as far as it can.
pub fn choose<K: Ord + Clone>(buffers: &[Candidate<K>], cap: usize) -> Vec<K> {
    let mut total: usize = buffers.iter().map(|c| c.bytes).sum();
    if total <= cap {
        return Vec::new();
    }
    let mut order: Vec<&Candidate<K>> = buffers
        .iter()
        .filter(|c| !c.replaying && c.bytes > 0)
        .collect();
    order.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.key.cmp(&b.key)));
    let mut out = Vec::new();
    for c in order {
        if total <= cap {
            break;
        }
        total -= c.bytes;
        out.push(c.key.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::buffer::{FlushReason, Limits, PartitionBuffer};
    use crate::record::SourceRecord;
    use crate::recovery::RecoveryPlan;

    fn c(key: u32, bytes: usize, replaying: bool) -> Candidate<u32> {
        Candidate {
            key,
            bytes,
            replaying,
        }
    }

    #[test]
    fn within_the_cap_nothing_is_flushed() {
        assert!(choose(&[c(1, 40, false), c(2, 60, false)], 100).is_empty());
        assert!(choose::<u32>(&[], 1).is_empty());
    }

    #[test]
    fn the_largest_buffers_go_first_until_under_the_cap() {
        let bufs = [
            c(1, 30, false),
            c(2, 50, false),
            c(3, 40, false),
            c(4, 0, false),
        ];
        // 120 > 100: flushing the largest (50) is enough
        assert_eq!(choose(&bufs, 100), [2]);
        // 120 > 50: 50, then 40 leaves 30
        assert_eq!(choose(&bufs, 50), [2, 3]);
        // down to nothing, never naming an empty buffer
        assert_eq!(choose(&bufs, 0), [2, 3, 1]);
        // ties: by key
        assert_eq!(choose(&[c(9, 10, false), c(3, 10, false)], 15), [3]);
    }

    #[test]
    fn replays_are_never_chosen() {
        let bufs = [c(1, 90, true), c(2, 20, false), c(3, 5, false)];
        assert_eq!(choose(&bufs, 100), [2]);
        // only the replay could bring it under: flush what may be flushed
        assert_eq!(choose(&bufs, 10), [2, 3]);
        assert!(choose(&[c(1, 500, true)], 10).is_empty());
    }

    /// A model of the writer: many partitions' buffers fed records of varied sizes in a
    /// scrambled order, the cap applied after each record as `run.rs` does. The total never
    /// exceeds the cap, except by a replay being buffered.
    #[test]
    fn the_total_stays_bounded() {
        const CAP: usize = 10_000;
        let limits = Limits {
            max_records: usize::MAX,
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(3600),
            max_dates: 64,
        };
        let t0 = Instant::now();
        // partition 0 replays a forced range 0..=49 that an earlier run wrote
        let (replay, fresh) = (
            RecoveryPlan::from_ranges(0, [(0, 49)]),
            RecoveryPlan::default(),
        );
        let mut bufs: Vec<PartitionBuffer> = (0..24)
            .map(|p| PartitionBuffer::new(limits, if p == 0 { &replay } else { &fresh }))
            .collect();
        let mut next = vec![0_i64; bufs.len()];
        let (mut flushed_bytes, mut offered_bytes, mut early) = (0, 0, 0);
        let mut replayed_whole = false;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = (x % bufs.len() as u64) as usize;
            let size = 20 + (x >> 32) as usize % 400;
            let rec = SourceRecord {
                offset: next[p],
                timestamp_ms: None,
                payload: Some(vec![0; size]),
            };
            next[p] += 1;
            offered_bytes += size;
            let out = bufs[p].offer(rec, t0);
            flushed_bytes += out.ready.iter().map(|b| b.bytes).sum::<usize>();
            replayed_whole |= out
                .ready
                .iter()
                .any(|b| (b.first, b.last, b.reason) == (0, 49, FlushReason::Forced));

            let candidates: Vec<Candidate<usize>> = bufs
                .iter()
                .enumerate()
                .map(|(k, b)| Candidate {
                    key: k,
                    bytes: b.bytes(),
                    replaying: b.is_replaying(),
                })
                .collect();
            for k in choose(&candidates, CAP) {
                assert!(!bufs[k].is_replaying(), "a replay was chosen");
                let b = bufs[k].take_for_cap().expect("chosen buffers flush");
                assert_eq!(b.reason, FlushReason::WriterBytes);
                flushed_bytes += b.bytes;
                early += 1;
            }
            let total: usize = bufs.iter().map(PartitionBuffer::bytes).sum();
            let replaying: usize = bufs
                .iter()
                .filter(|b| b.is_replaying())
                .map(PartitionBuffer::bytes)
                .sum();
            assert!(
                total <= CAP + replaying,
                "total {total} over cap {CAP} (+{replaying} replaying)"
            );
        }
        let left: usize = bufs.iter().map(PartitionBuffer::bytes).sum();
        assert_eq!(
            flushed_bytes + left,
            offered_bytes,
            "no byte lost or doubled"
        );
        assert!(early > 100, "the cap flushed only {early} times");
        assert!(replayed_whole, "the forced range was not written whole");
    }
}
