//! The Kafka offsets a table holds, recorded in its snapshot summaries.
//!
//! Every snapshot Feeder commits carries, besides Iceberg's own counts:
//!
//! | property | value |
//! |---|---|
//! | `feeder.topic`, `feeder.partition` | the range's topic-partition |
//! | `feeder.first-offset`, `feeder.last-offset` | the range's offsets, inclusive |
//! | `feeder.writer-id`, `feeder.attempt` | who committed it, and the flush attempt (also in the data file names) |
//! | `feeder.offsets` | JSON `{"<topic>/<partition>": last}`: the table's committed offset of every topic-partition, this range included |
//!
//! The cumulative `feeder.offsets` makes the current snapshot enough to know what the
//! table holds; snapshots other tools add (a compaction's `replace`) carry no Feeder
//! properties, so the reader walks back through parents to the newest one that does.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::TableMetadata;

pub const TOPIC: &str = "feeder.topic";
pub const PARTITION: &str = "feeder.partition";
pub const FIRST_OFFSET: &str = "feeder.first-offset";
pub const LAST_OFFSET: &str = "feeder.last-offset";
pub const WRITER_ID: &str = "feeder.writer-id";
pub const ATTEMPT: &str = "feeder.attempt";
pub const OFFSETS: &str = "feeder.offsets";

/// Committed `last` offset per `"<topic>/<partition>"` (Kafka topic names never hold `/`).
pub type Committed = BTreeMap<String, i64>;

pub fn key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// One appended range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedRange<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub writer_id: &'a str,
    pub attempt: &'a str,
}

/// The summary properties of the snapshot appending `range` on top of `committed`.
pub fn summary(range: &AppendedRange<'_>, committed: &Committed) -> HashMap<String, String> {
    let mut next = committed.clone();
    next.insert(key(range.topic, range.partition), range.last);
    HashMap::from([
        (TOPIC.to_string(), range.topic.to_string()),
        (PARTITION.to_string(), range.partition.to_string()),
        (FIRST_OFFSET.to_string(), range.first.to_string()),
        (LAST_OFFSET.to_string(), range.last.to_string()),
        (WRITER_ID.to_string(), range.writer_id.to_string()),
        (ATTEMPT.to_string(), range.attempt.to_string()),
        // a map of strings to integers always serializes
        (
            OFFSETS.to_string(),
            serde_json::to_string(&next).unwrap_or_default(),
        ),
    ])
}

/// What the table holds as of its current snapshot: the newest ancestor's `feeder.offsets`.
/// Empty for a table without Feeder snapshots. An unreadable value is an error, never
/// "nothing committed" (that would append every range again).
pub fn committed(metadata: &TableMetadata) -> Result<Committed, String> {
    let mut next = metadata.current_snapshot().map(|s| s.snapshot_id());
    while let Some(id) = next {
        let Some(snap) = metadata.snapshot_by_id(id) else {
            // an expired ancestor: what came before it cannot be known
            return Err(format!(
                "snapshot {id}: expired before any Feeder snapshot was found in the ancestry"
            ));
        };
        if let Some(v) = snap.summary().additional_properties.get(OFFSETS) {
            return serde_json::from_str(v)
                .map_err(|e| format!("snapshot {id}: {OFFSETS} is not a map of offsets: {e}"));
        }
        next = snap.parent_snapshot_id();
    }
    Ok(Committed::new())
}

/// The first offset of `[first, last]` not yet in a table whose committed offset for the
/// range's topic-partition is `done`; `None` when the whole range is there.
pub fn first_missing(done: Option<i64>, first: i64, last: i64) -> Option<i64> {
    match done {
        Some(d) if d >= last => None,
        Some(d) if d >= first => Some(d + 1),
        _ => Some(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_appended_from_the_first_offset_no_snapshot_holds() {
        let cases = [
            (None, 10, 20, Some(10)),
            (Some(9), 10, 20, Some(10)),
            (Some(3), 10, 20, Some(10)),
            (Some(10), 10, 20, Some(11)),
            (Some(15), 10, 20, Some(16)),
            (Some(19), 10, 20, Some(20)),
            (Some(20), 10, 20, None),
            (Some(99), 10, 20, None),
        ];
        for (done, first, last, want) in cases {
            assert_eq!(
                first_missing(done, first, last),
                want,
                "{done:?} {first}..={last}"
            );
        }
    }

    #[test]
    fn the_summary_carries_the_range_and_every_committed_offset() {
        let before = Committed::from([(key("checked", 0), 99), (key("checked", 1), 7)]);
        let range = AppendedRange {
            topic: "checked",
            partition: 1,
            first: 8,
            last: 20,
            writer_id: "writer-0",
            attempt: "ab12",
        };
        let s = summary(&range, &before);
        assert_eq!(s[TOPIC], "checked");
        assert_eq!(s[PARTITION], "1");
        assert_eq!(s[FIRST_OFFSET], "8");
        assert_eq!(s[LAST_OFFSET], "20");
        assert_eq!(s[ATTEMPT], "ab12");
        let after: Committed = serde_json::from_str(&s[OFFSETS]).unwrap();
        assert_eq!(
            after,
            Committed::from([(key("checked", 0), 99), (key("checked", 1), 20)])
        );
    }
}
