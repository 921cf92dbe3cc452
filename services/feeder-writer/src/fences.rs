//! The writer's side of the zombie fence (`feeder_kafka::fence`): where a partition's
//! claim tokens are kept so that a writer resuming in the middle of a partition knows
//! which owner is in force.
//!
//! # Why markers
//! The writer drops a record whose owner token is below the largest claim token before it
//! in the partition. Resuming at the committed offset *C*, it has not read the claims
//! before *C*. Kafka's offset-commit metadata would be the natural home, but tansu drops
//! it; storage the writer already owns works everywhere. When the writer meets a claim,
//! it stores an empty marker object named by the claim, `_feeder/fences/<topic>+<partition>+<offset>+<token>`,
//! before it goes on, so the marker is durable before any offset past the claim is
//! committed. On (re)assignment, the token in force at *C* is the largest token of the
//! markers whose claim offset is below *C*. A marker past *C* (its claim was read, the
//! offsets not committed) is ignored: the claim is read again.
//!
//! Claims are rare (one per stream reassignment and output partition), so markers are
//! few and tiny; recovery lists names only, like the rest of the writer's recovery.
//! The directory starts with `_`, which dataset readers (pyarrow, Spark, DuckDB's
//! `**/*.parquet` globs) skip, and sits outside every dataset directory.

use crate::Result;
use crate::storage::Storage;

/// Directory of the fence markers, relative to the storage root.
pub const FENCE_DIR: &str = "_feeder/fences";

fn marker_name(topic: &str, partition: i32, claim_offset: i64, token: i64) -> String {
    format!("{topic}+{partition}+{claim_offset}+{token}")
}

/// `(topic, partition, claim offset, token)` of a marker name.
fn parse_marker(name: &str) -> Option<(&str, i32, i64, i64)> {
    let mut parts = name.rsplitn(4, '+');
    let token = parts.next()?.parse().ok()?;
    let claim_offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    Some((topic, partition, claim_offset, token))
}

/// Durably records that partition `partition` of `topic` holds a claim with `token` at
/// `claim_offset`. Idempotent (the same name is written again).
pub fn record_claim(
    storage: &dyn Storage,
    topic: &str,
    partition: i32,
    claim_offset: i64,
    token: i64,
) -> Result<()> {
    storage.put(
        FENCE_DIR,
        &marker_name(topic, partition, claim_offset, token),
        &[],
    )
}

/// The largest claim token of `topic`/`partition` recorded at an offset below
/// `resume_from` (0 if none).
pub fn token_before(
    storage: &dyn Storage,
    topic: &str,
    partition: i32,
    resume_from: i64,
) -> Result<i64> {
    Ok(token_in(
        &storage.list_dir(FENCE_DIR)?,
        topic,
        partition,
        resume_from,
    ))
}

fn token_in(names: &[String], topic: &str, partition: i32, resume_from: i64) -> i64 {
    names
        .iter()
        .filter_map(|n| parse_marker(n))
        .filter(|&(t, p, at, _)| t == topic && p == partition && at < resume_from)
        .map(|(_, _, _, token)| token)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_even_with_plus_in_the_topic() {
        let n = marker_name("a+b.checked", 3, 120, 100);
        assert_eq!(parse_marker(&n), Some(("a+b.checked", 3, 120, 100)));
        assert_eq!(parse_marker("x+1+2"), None);
        assert_eq!(parse_marker("x+1+2+y"), None);
    }

    #[test]
    fn the_token_in_force_is_the_largest_claimed_before_the_resume_point() {
        let names: Vec<String> = [
            marker_name("t", 0, 10, 10),
            marker_name("t", 0, 50, 40),
            marker_name("t", 0, 90, 90),
            marker_name("t", 1, 5, 500),
            marker_name("u", 0, 5, 700),
            ".tmp-junk".to_string(),
        ]
        .into();
        assert_eq!(token_in(&names, "t", 0, 0), 0);
        assert_eq!(token_in(&names, "t", 0, 11), 10);
        assert_eq!(
            token_in(&names, "t", 0, 50),
            10,
            "claim at 50 not yet passed"
        );
        assert_eq!(token_in(&names, "t", 0, 51), 40);
        assert_eq!(token_in(&names, "t", 0, 1000), 90);
        assert_eq!(token_in(&names, "t", 1, 1000), 500);
    }

    #[test]
    fn markers_survive_on_local_storage() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::storage::LocalFs::new(dir.path()).unwrap();
        assert_eq!(token_before(&fs, "t", 0, 100).unwrap(), 0);
        record_claim(&fs, "t", 0, 7, 7).unwrap();
        record_claim(&fs, "t", 0, 7, 7).unwrap();
        record_claim(&fs, "t", 0, 30, 20).unwrap();
        assert_eq!(token_before(&fs, "t", 0, 8).unwrap(), 7);
        assert_eq!(token_before(&fs, "t", 0, 31).unwrap(), 20);
    }
}
