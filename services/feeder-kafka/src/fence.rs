//! The zombie fence: one owner's outputs per partition, on any Kafka-protocol broker.
//!
//! # Why
//! A stream stage that stalls past its session timeout (a long pause, a frozen node)
//! loses its partitions to another member, and when it resumes it may still produce the
//! outputs of the batch it held: records that the new owner also decides. Kafka
//! transactions are the usual fence, but not every broker Feeder meets supports them
//! (tansu 0.6 refuses `EndTxn`), and they cost a commit round trip per batch. This fence
//! needs nothing from the broker but per-partition order.
//!
//! # How
//! - **Claim.** A stage that starts processing raw partition *p* first appends a *claim*
//!   record to partition *p* of each output topic and waits for the acks, before it
//!   reads those partitions to rebuild its state. Its *token* is the offset of its claim
//!   in the checked topic: offsets only grow, so a later owner's token is larger.
//! - **Owner header.** Every output record the stage writes for *p* carries its token
//!   ([`OWNER_HEADER`]).
//! - **Readers** (the writer, the stream's own recovery) keep, per partition, the
//!   largest claim token seen so far in log order ([`FenceState`]); a record whose owner
//!   token is smaller was written by an owner that had already been replaced when it
//!   landed, and is ignored ([`Verdict::Superseded`]).
//!
//! # Why it is sound
//! Take the new owner *B*'s claim at position *k* of an output partition. *B* rebuilds
//! its state by reading that partition up to its end, which includes *k*: it sees
//! everything the old owner *A* wrote before *k*, and skips the raw records whose
//! outputs are there. Everything *A* writes after *k* carries a token smaller than
//! *B*'s and every reader drops it, wherever it lands among *B*'s records. So each raw
//! record's outputs that count are those of exactly one owner: the last one whose
//! claim precedes them. Records without an owner header (fleet findings, which have
//! their own ids; records written before the fence existed) are never dropped.
//!
//! A reader that starts in the middle of a partition must know the largest claim token
//! before its start: the stream keeps it in its changelog checkpoint, the writer in a
//! small marker object next to its datasets (`feeder_writer`'s recovery).

use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Header of every output record: the token (8 bytes, big endian) of the owner that
/// wrote it.
pub const OWNER_HEADER: &str = "feeder-owner";

/// Header of a claim record: the token it establishes (8 bytes, big endian), or no
/// value for "my own offset" (the first claim of an owner, in the checked topic: its
/// token is not known before the broker assigns the offset).
pub const CLAIM_HEADER: &str = "feeder-claim";

/// What a record says about its ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mark {
    /// No fence header: never dropped.
    Unowned,
    /// Written by the owner holding this token.
    Owner(i64),
    /// A claim establishing this token (holds no data).
    Claim(i64),
}

impl Mark {
    /// Reads the fence headers of the record at `offset` (a malformed value counts as no
    /// header: a record of ours always has a well-formed one).
    pub fn of<H: Headers>(headers: Option<&H>, offset: i64) -> Mark {
        let Some(headers) = headers else {
            return Mark::Unowned;
        };
        let mut mark = Mark::Unowned;
        for h in headers.iter() {
            let token = || {
                h.value
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(i64::from_be_bytes)
            };
            match h.key {
                CLAIM_HEADER => {
                    if h.value.is_none_or(<[u8]>::is_empty) {
                        return Mark::Claim(offset);
                    }
                    if let Some(t) = token() {
                        return Mark::Claim(t);
                    }
                }
                OWNER_HEADER => {
                    if let Some(t) = token() {
                        mark = Mark::Owner(t);
                    }
                }
                _ => {}
            }
        }
        mark
    }

    /// The headers that carry this mark (none for [`Mark::Unowned`]).
    pub fn headers(self) -> Option<OwnedHeaders> {
        let (key, token) = match self {
            Mark::Unowned => return None,
            Mark::Owner(t) => (OWNER_HEADER, t),
            Mark::Claim(t) => (CLAIM_HEADER, t),
        };
        Some(OwnedHeaders::new_with_capacity(1).insert(Header {
            key,
            value: Some(&token.to_be_bytes()),
        }))
    }

    /// The headers of an owner's first claim, whose token is its own offset.
    pub fn claim_here() -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(1).insert(Header::<&[u8]> {
            key: CLAIM_HEADER,
            value: None,
        })
    }
}

/// What a reader does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Data of the owner in force (or unowned): use it.
    Keep,
    /// A claim: no data; the token in force may have grown.
    Claim,
    /// Written by an owner replaced before the record landed: ignore it.
    Superseded,
}

/// A reader's view of one partition: the largest claim token seen in log order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FenceState {
    current: i64,
}

impl FenceState {
    /// Starts at `current`, the largest claim token before the first record read (0 when
    /// reading from the start, or before any claim).
    pub fn starting_at(current: i64) -> Self {
        Self { current }
    }

    /// The largest claim token seen so far.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Judges the next record of the partition, in log order.
    pub fn judge(&mut self, mark: Mark) -> Verdict {
        match mark {
            Mark::Unowned => Verdict::Keep,
            Mark::Owner(t) if t < self.current => Verdict::Superseded,
            Mark::Owner(_) => Verdict::Keep,
            Mark::Claim(t) => {
                self.current = self.current.max(t);
                Verdict::Claim
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_through_headers() {
        for mark in [Mark::Owner(0), Mark::Owner(42), Mark::Claim(i64::MAX)] {
            let h = mark.headers().unwrap();
            assert_eq!(Mark::of(Some(&h), 7), mark);
        }
        assert!(Mark::Unowned.headers().is_none());
        assert_eq!(Mark::of::<OwnedHeaders>(None, 7), Mark::Unowned);
        assert_eq!(Mark::of(Some(&Mark::claim_here()), 7), Mark::Claim(7));
        let other = OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some("x"),
        });
        assert_eq!(Mark::of(Some(&other), 7), Mark::Unowned);
        let short = OwnedHeaders::new().insert(Header {
            key: OWNER_HEADER,
            value: Some(&[1u8, 2][..]),
        });
        assert_eq!(Mark::of(Some(&short), 7), Mark::Unowned);
    }

    /// A's claim at 10, A's records, B's claim at 20, then A's late records interleaved
    /// with B's: only A's records before B's claim and B's records are kept.
    #[test]
    fn a_replaced_owner_is_dropped_wherever_its_records_land() {
        let mut f = FenceState::default();
        let log = [
            (Mark::Claim(10), Verdict::Claim),
            (Mark::Owner(10), Verdict::Keep),
            (Mark::Unowned, Verdict::Keep),
            (Mark::Claim(20), Verdict::Claim),
            (Mark::Owner(10), Verdict::Superseded),
            (Mark::Owner(20), Verdict::Keep),
            (Mark::Owner(10), Verdict::Superseded),
            (Mark::Unowned, Verdict::Keep),
            // A claims again later (a new assignment): B is the zombie now
            (Mark::Claim(30), Verdict::Claim),
            (Mark::Owner(20), Verdict::Superseded),
            (Mark::Owner(30), Verdict::Keep),
            // a stale claim that lands late changes nothing
            (Mark::Claim(25), Verdict::Claim),
            (Mark::Owner(30), Verdict::Keep),
            (Mark::Owner(25), Verdict::Superseded),
        ];
        for (i, (mark, want)) in log.into_iter().enumerate() {
            assert_eq!(f.judge(mark), want, "record {i}: {mark:?}");
        }
        assert_eq!(f.current(), 30);
    }

    #[test]
    fn a_reader_starting_mid_partition_starts_from_the_token_in_force() {
        let mut f = FenceState::starting_at(20);
        assert_eq!(f.judge(Mark::Owner(10)), Verdict::Superseded);
        assert_eq!(f.judge(Mark::Owner(20)), Verdict::Keep);
    }
}
