//! Feeder's writer: Kafka -> Arrow -> Parquet -> storage -> offset commit.
//!
//! It consumes the `checked` topic (`CheckedFrame`) and the `quarantine` topic
//! (`QuarantinedFrame`) as one consumer group and writes the analysts' datasets
//! (`readings`, `telematics`, `events`, `frames`, `quarantine`; see
//! `shared/datasets.md`) as Hive-partitioned Parquet:
//! `<root>/<dataset>/date=YYYY-MM-DD/<topic>+<partition>+<first:020>+<last:020>.parquet`.
//!
//! # Exactly once
//!
//! Each (device_id, seq) frame's rows are stored once across crashes and restarts:
//!
//! 1. **Ranges.** Records are buffered per topic-partition. A flush covers a contiguous
//!    offset range `[first, last]` of one topic-partition (records that yield no rows, and
//!    offsets that never arrive such as transaction markers, still belong to it) and
//!    writes one file per (dataset, date) present, all with the same name derived from
//!    the range ([`naming`]). Conversion is deterministic ([`convert`]), so the same range
//!    always gives the same files.
//! 2. **Atomic, durable files.** Each file is written to a `.tmp-*` name in its
//!    directory, fsynced, renamed, and the directory fsynced ([`storage`]). Readers'
//!    `*.parquet` globs never match temporary files.
//! 3. **Commit after durability.** Only when all files of a range are durable is offset
//!    `last + 1` committed, synchronously; only then is `records_committed` counted.
//! 4. **Recovery.** When a topic-partition is first seen after (re)assignment (or the
//!    consumer rewinds), storage is scanned for its files and its stale temporary files
//!    are deleted ([`recovery`]). With `C` the first offset received: files whose range
//!    starts at or after `C` were written but not committed, so their `last` offsets are
//!    forced flush boundaries. The buffer flushes exactly there, whatever the thresholds,
//!    rewriting the identical files under the identical names (which also restores any
//!    file a crash kept from being written; an encrypted file holds the identical rows
//!    under fresh data keys, see [`encryption`]). Files ending before `C` are committed and
//!    never rewritten; records inside a stored range that cannot be replayed from its
//!    start are skipped ([`buffer`]).
//! 5. **Revocation and shutdown** flush and commit before the partition moves. A forced
//!    range that is only partly buffered is dropped instead of written short (a shorter
//!    name would duplicate the stored rows); the next owner replays it.
//!
//! # Tools over stored data
//!
//! - [`verify`] (`feeder verify`) re-verifies every stored frame's signature against the
//!   registry and checks every data row against the signed payload it came from.
//! - [`compact`] (`feeder compact`) merges a closed date directory's committed files into
//!   large ones with one atomic directory swap; merged files are named by the union of
//!   their ranges, which recovery understands ([`recovery`], `write_range_except`).
//!
//! Both read encrypted datasets with the writer's key file, and compaction keeps them
//! encrypted ([`encryption`]: Parquet modular encryption with standard key material, so
//! pyarrow or Spark read the files with a KMS client for the utility's master keys).
//!
//! Undecodable records are never dropped: they become `quarantine` rows with reason
//! `undecodable_record` and are counted in `feeder_writer_undecodable_records_total`.
//!
//! # Memory
//!
//! Each assigned topic-partition buffers at most `flush_max_frames` records and about
//! `flush_max_bytes` of payload (a forced replay is as large as the flush that wrote it),
//! and all of them together at most `max_buffered_bytes` ([`cap`]: above it the largest
//! buffers are flushed early, with reason `writer_bytes`; a buffer replaying a forced
//! range is never cut short, so it may exceed the cap by that range). A flush holds its
//! Arrow batches and one encoded file at a time, and no file stays open between
//! flushes, so many dates or devices at once cost no open files. Measured with 10^5
//! devices over 60 dates and late data (`services/feeder/tests/writer_memory.rs`): see
//! `docs/operations.md`.
//!
//! # Limits
//!
//! One consumer group per data root. A writer that stalls past the group session timeout
//! while another instance takes its partitions (a "zombie") can still finish a write;
//! fencing that needs storage-side conditional writes.

pub mod buffer;
pub mod cap;
pub mod compact;
pub mod config;
pub mod convert;
pub mod crashpoint;
pub mod encryption;
pub mod error;
pub mod fences;
pub mod flush;
pub mod iceberg;
pub mod naming;
pub mod parquet_file;
pub mod record;
pub mod recovery;
pub mod registry_changes;
pub mod schema;
pub mod stats;
pub mod storage;
pub mod verify;

mod observe;
mod parallel;
mod partitions;
mod run;

/// The date type of `date=` partitions, re-exported for callers that name one.
pub use chrono::NaiveDate;
pub use config::WriterConfig;
pub use convert::{checked_to_batches, quarantined_to_batches, records_to_batches};
pub use encryption::Encryption;
pub use error::{Error, Result};
pub use record::{SourceRecord, TopicKind};
pub use run::{ensure_input_topics, run, run_with_storage};
pub use stats::WriterStats;
