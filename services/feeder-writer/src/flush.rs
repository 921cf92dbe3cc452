//! Writing one complete offset range: convert its records, encode one Parquet file per
//! (dataset, date), and store each under the range's name. Blocking (CPU and I/O); the
//! consumer loop runs it on a blocking thread. Committing the range is the caller's
//! job, and only after this returns `Ok`: then every file of the range is durable (or,
//! for a replayed range, already held by a compacted file).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::Result;
use crate::convert::records_to_batches;
use crate::encryption::Encryption;
use crate::naming;
use crate::parallel;
use crate::parquet_file::{self, FileProvenance};
use crate::record::{SourceRecord, TopicKind};
use crate::recovery::Container;
use crate::schema::Dataset;
use crate::storage::Storage;

/// Files of one range encoded and stored at once: storing is mostly waiting (fsync, an
/// object store request), and a range spreads over as many files as it has dates.
const PARALLEL_FILES: usize = 4;

/// Which range of which topic-partition, written by whom.
#[derive(Debug, Clone, Copy)]
pub struct RangeSpec<'a> {
    pub kind: TopicKind,
    pub topic: &'a str,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub writer_id: &'a str,
}

/// What a range write produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Relative paths of the files written, `<dataset>/date=.../<name>`.
    pub files: Vec<String>,
    /// Files written per dataset.
    pub files_by_dataset: BTreeMap<Dataset, u64>,
    /// Rows written per dataset.
    pub rows: BTreeMap<Dataset, u64>,
    /// Encoded bytes written per dataset.
    pub bytes: BTreeMap<Dataset, u64>,
    pub undecodable_records: u64,
    pub undecodable_payloads: u64,
    /// Rows whose `flags` list was cut to its bounds (`convert/flags.rs`).
    pub flags_truncated_rows: u64,
    /// Files not written because a compacted file already holds their rows.
    pub files_in_compacted: u64,
    pub duration: Duration,
}

/// Writes the files of range `spec` holding `records` (offsets `first..=last`).
pub fn write_range(
    storage: &dyn Storage,
    spec: RangeSpec<'_>,
    records: &[SourceRecord],
) -> Result<FlushReport> {
    write_range_except(storage, spec, records, &[])
}

/// [`write_range`], except into directories where one of `containers` (compacted files
/// found by recovery) already holds the range's rows: writing there would store them twice.
pub fn write_range_except(
    storage: &dyn Storage,
    spec: RangeSpec<'_>,
    records: &[SourceRecord],
    containers: &[Container],
) -> Result<FlushReport> {
    write_range_encrypted(storage, spec, records, containers, &Encryption::none())
}

/// [`write_range_except`], encrypting the files of the datasets `encryption` lists.
pub fn write_range_encrypted(
    storage: &dyn Storage,
    spec: RangeSpec<'_>,
    records: &[SourceRecord],
    containers: &[Container],
    encryption: &Encryption,
) -> Result<FlushReport> {
    let started = Instant::now();
    let converted = records_to_batches(spec.kind, records)?;
    let name = naming::file_name(spec.topic, spec.partition, spec.first, spec.last);
    let prov = FileProvenance {
        topic: spec.topic,
        partition: spec.partition,
        first_offset: spec.first,
        last_offset: spec.last,
        writer_id: spec.writer_id,
    };
    let mut report = FlushReport {
        undecodable_records: converted.undecodable_records,
        undecodable_payloads: converted.undecodable_payloads,
        flags_truncated_rows: converted.flags_truncated_rows,
        ..Default::default()
    };
    let mut todo = Vec::with_capacity(converted.batches.len());
    for part in &converted.batches {
        let dir = naming::date_dir(part.dataset, part.date);
        if containers
            .iter()
            .any(|c| c.holds(&dir, spec.first, spec.last))
        {
            report.files_in_compacted += 1;
            continue;
        }
        todo.push((dir, part));
    }
    // every file durable before this returns; several stored at once (`parallel`)
    let sizes = parallel::map_all(&todo, PARALLEL_FILES, |(dir, part)| {
        let bytes = parquet_file::encode_with(part.dataset, &part.batch, &prov, &[], encryption)?;
        storage.put(dir, &name, &bytes)?;
        Ok::<_, crate::Error>(bytes.len())
    })?;
    for ((dir, part), size) in todo.iter().zip(sizes) {
        report.files.push(format!("{dir}/{name}"));
        *report.files_by_dataset.entry(part.dataset).or_default() += 1;
        *report.rows.entry(part.dataset).or_default() += part.batch.num_rows() as u64;
        *report.bytes.entry(part.dataset).or_default() += size as u64;
    }
    report.duration = started.elapsed();
    Ok(report)
}
