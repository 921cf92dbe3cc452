//! Iceberg tables (`--table-format iceberg`): the same datasets committed as Apache
//! Iceberg tables (format v2), one table per dataset in namespace `feeder`, partitioned
//! by day of the dataset's time column (`shared/datasets.md`, "Iceberg tables").
//!
//! # Exactly once
//!
//! The Parquet mode's range discipline carries over, with the table snapshot in place
//! of the file rename as the durability point:
//!
//! 1. A flush of a topic-partition's offset range `[first, last]` writes one data file
//!    per (dataset, day) under a name unique to the flush attempt ([`append`]): a retry
//!    or a replay never overwrites a file a snapshot already references.
//! 2. Each table gets the range's files in **one** fast-append snapshot whose summary
//!    records the range and the table's committed offset of every topic-partition so far
//!    ([`offsets`]).
//! 3. Before each commit the writer reads the committed offset `w` of the range's
//!    topic-partition from the table's current snapshot (walking back past snapshots
//!    other tools made) and appends only the records after `w`; the commit is pinned to
//!    the snapshot it checked ([`pinned`]), so a concurrent writer's commit in between
//!    (another partition, or a zombie owner of this one) sends it back to re-check
//!    instead of appending on top unseen. Conversion is per record and deterministic, so
//!    the rows after `w` are exactly the ones no snapshot holds.
//! 4. Kafka offsets are committed only after every table of the range has its snapshot
//!    (the caller's job, as in Parquet mode). A crash anywhere (files written, some
//!    tables committed, all committed but Kafka not) replays the range from the last
//!    Kafka commit, and step 3 skips what the tables already hold.
//!
//! A flush spans several tables (`frames`, `readings`, ...) and Iceberg has no
//! multi-table transactions: between two tables' commits a reader may see a frame in
//! `frames` before its readings. Each table on its own only ever holds whole ranges.
//!
//! # Limits (iceberg-rust 0.9)
//!
//! No rewrite (compaction) or snapshot expiry actions, no Parquet encryption through its
//! writer, and no S3 `FileIO` of its own: the warehouse on S3 goes through the writer's
//! S3 client ([`s3_warehouse`]). See `docs/datasets.md`, "Iceberg tables".

pub mod append;
pub mod catalog;
pub mod offsets;
mod pinned;
pub mod s3_warehouse;
pub mod settings;
pub mod tables;

pub use append::IcebergTables;
pub use settings::{CatalogKind, IcebergSettings, TableFormat};

/// An iceberg-rust error as the crate's error.
pub(crate) fn err(context: &str, e: iceberg::Error) -> crate::Error {
    crate::Error::IcebergCall {
        context: context.to_string(),
        source: Box::new(e),
    }
}
