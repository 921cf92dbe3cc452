//! Appending one flushed offset range to the tables: per table, check what it already
//! holds, write the missing rows' data files under names unique to the attempt, and
//! commit them in one fast-append snapshot pinned to the state checked, retrying on a
//! concurrent commit (see the module docs of [`super`]).

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{DataFile, DataFileFormat, Literal, PartitionKey, Struct, Transform};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, NamespaceIdent};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio::runtime::Handle;

use super::offsets::{self, AppendedRange};
use super::pinned::{Pinned, is_conflict};
use super::settings::IcebergSettings;
use super::{catalog, err, tables};
use crate::convert::{DatasetBatch, records_to_batches};
use crate::crashpoint::{self, Point};
use crate::flush::{FlushReport, RangeSpec};
use crate::record::SourceRecord;
use crate::schema::Dataset;
use crate::{Error, Result, observe};

/// Commits lost to concurrent ones before the flush fails (and the writer with it: the
/// range is replayed after the restart). Each loss means another commit succeeded.
const MAX_ATTEMPTS: u32 = 64;

/// The tables of one catalog namespace, as the writer appends to them.
#[derive(Debug)]
pub struct IcebergTables {
    catalog: Arc<dyn Catalog>,
    namespace: NamespaceIdent,
    writer_id: String,
    handle: Handle,
    /// Tables known to exist (created or loaded once).
    known: Mutex<HashSet<Dataset>>,
}

impl IcebergTables {
    /// Opens the catalog of `settings` (defaults under `root`). Call on the runtime the
    /// blocking [`Self::write_range`] will use.
    pub async fn open(settings: &IcebergSettings, root: &Path, writer_id: &str) -> Result<Self> {
        let (catalog, namespace) = catalog::open(settings, root).await?;
        Ok(Self {
            catalog,
            namespace,
            writer_id: writer_id.to_string(),
            handle: Handle::current(),
            known: Mutex::new(HashSet::new()),
        })
    }

    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    pub fn namespace(&self) -> &NamespaceIdent {
        &self.namespace
    }

    /// [`Self::append_range`] from a blocking thread (the writer's flush threads).
    pub fn write_range(
        &self,
        spec: RangeSpec<'_>,
        records: &[SourceRecord],
    ) -> Result<FlushReport> {
        self.handle.block_on(self.append_range(spec, records))
    }

    /// The table of `dataset`, current (created on first use).
    pub async fn table(&self, dataset: Dataset) -> Result<Table> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&dataset);
        if known {
            let id = tables::ident(&self.namespace, dataset);
            return self
                .catalog
                .load_table(&id)
                .await
                .map_err(|e| err("load_table", e));
        }
        let t = tables::load_or_create(self.catalog.as_ref(), &self.namespace, dataset).await?;
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dataset);
        Ok(t)
    }

    /// Appends the rows of `records` (offsets `spec.first..=spec.last` of one
    /// topic-partition) that each table does not hold yet, one snapshot per table.
    pub async fn append_range(
        &self,
        spec: RangeSpec<'_>,
        records: &[SourceRecord],
    ) -> Result<FlushReport> {
        let started = Instant::now();
        let converted = records_to_batches(spec.kind, records)?;
        let mut report = FlushReport {
            undecodable_records: converted.undecodable_records,
            undecodable_payloads: converted.undecodable_payloads,
            flags_truncated_rows: converted.flags_truncated_rows,
            ..Default::default()
        };
        let datasets: BTreeSet<Dataset> = converted.batches.iter().map(|b| b.dataset).collect();
        for dataset in datasets {
            self.append_to(dataset, spec, records, &converted.batches, &mut report)
                .await?;
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    async fn append_to(
        &self,
        dataset: Dataset,
        spec: RangeSpec<'_>,
        records: &[SourceRecord],
        all: &[DatasetBatch],
        report: &mut FlushReport,
    ) -> Result<()> {
        let key = offsets::key(spec.topic, spec.partition);
        let attempt_id = format!("{:016x}", rand::random::<u64>());
        // files written for a given first offset, reused when a retry starts there again
        let mut written: Option<(i64, Vec<DataFile>, u64, u64)> = None;
        let mut conflicts = 0u32;
        loop {
            let table = self.table(dataset).await?;
            let committed = offsets::committed(table.metadata())
                .map_err(|m| Error::Iceberg(format!("{}: {m}", dataset.name())))?;
            let Some(first) =
                offsets::first_missing(committed.get(&key).copied(), spec.first, spec.last)
            else {
                observe::iceberg_already_held(dataset);
                return Ok(());
            };
            let (files, rows, bytes) = match written.take() {
                Some((f, files, rows, bytes)) if f == first => (files, rows, bytes),
                _ => {
                    let parts = if first == spec.first {
                        all.iter()
                            .filter(|b| b.dataset == dataset)
                            .cloned()
                            .collect()
                    } else {
                        // the table holds the range's head: convert only the rest
                        let tail: Vec<SourceRecord> = records
                            .iter()
                            .filter(|r| r.offset >= first)
                            .cloned()
                            .collect();
                        records_to_batches(spec.kind, &tail)?
                            .batches
                            .into_iter()
                            .filter(|b| b.dataset == dataset)
                            .collect::<Vec<_>>()
                    };
                    if parts.is_empty() {
                        return Ok(());
                    }
                    let prefix = file_prefix(spec, first, &self.writer_id, &attempt_id, conflicts);
                    let files = write_files(&table, dataset, &parts, &prefix).await?;
                    let rows = parts.iter().map(|p| p.batch.num_rows() as u64).sum();
                    let bytes = files.iter().map(DataFile::file_size_in_bytes).sum();
                    crashpoint::reached(Point::AfterDataFiles);
                    (files, rows, bytes)
                }
            };
            let range = AppendedRange {
                topic: spec.topic,
                partition: spec.partition,
                first,
                last: spec.last,
                writer_id: &self.writer_id,
                attempt: &attempt_id,
            };
            let summary = offsets::summary(&range, &committed);
            match commit(self.catalog.as_ref(), &table, files.clone(), summary).await {
                Ok(()) => {
                    crashpoint::reached(Point::AfterSnapshot);
                    observe::iceberg_committed(dataset, conflicts);
                    for f in &files {
                        report.files.push(f.file_path().to_string());
                    }
                    *report.files_by_dataset.entry(dataset).or_default() += files.len() as u64;
                    *report.rows.entry(dataset).or_default() += rows;
                    *report.bytes.entry(dataset).or_default() += bytes;
                    return Ok(());
                }
                Err(e) if is_conflict(&e) && conflicts + 1 < MAX_ATTEMPTS => {
                    conflicts += 1;
                    written = Some((first, files, rows, bytes));
                    tokio::time::sleep(backoff(conflicts)).await;
                }
                Err(e) => return Err(err(&format!("commit to {}", dataset.name()), e)),
            }
        }
    }
}

/// Jittered exponential backoff after the `n`-th lost commit: 5 ms doubling to 500 ms.
fn backoff(n: u32) -> Duration {
    let cap = 5u64.saturating_mul(1 << n.min(7)).min(500);
    Duration::from_millis(rand::random_range(cap / 2..=cap))
}

/// `<topic>+<partition>+<first>+<last>-<writer>-<attempt>-<retry>`: which rows, by whom,
/// and unique to the flush attempt, so no retry or replay ever reuses a name.
fn file_prefix(spec: RangeSpec<'_>, first: i64, writer: &str, attempt: &str, retry: u32) -> String {
    let safe: String = writer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}+{}+{:020}+{:020}-{safe}-{attempt}-{retry}",
        spec.topic, spec.partition, first, spec.last
    )
}

/// One data file per (dataset, day) batch, in the table's day partition of its date.
async fn write_files(
    table: &Table,
    dataset: Dataset,
    parts: &[DatasetBatch],
    prefix: &str,
) -> Result<Vec<DataFile>> {
    let md = table.metadata();
    let schema = Arc::clone(md.current_schema());
    let arrow_schema = Arc::new(schema_to_arrow_schema(&schema).map_err(|e| err("schema", e))?);
    let spec = md.default_partition_spec().as_ref().clone();
    let time_id = schema.field_by_name(dataset.time_column()).map(|f| f.id);
    let by_day = spec.fields().len() == 1
        && spec.fields()[0].transform == Transform::Day
        && Some(spec.fields()[0].source_id) == time_id;
    if !by_day {
        return Err(Error::Iceberg(format!(
            "{}: partitioned otherwise than by day({}), which is all this writer writes",
            dataset.name(),
            dataset.time_column()
        )));
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let location = DefaultLocationGenerator::new(md.clone()).map_err(|e| err("location", e))?;
    let names = DefaultFileNameGenerator::new(prefix.to_string(), None, DataFileFormat::Parquet);
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let mut files = Vec::with_capacity(parts.len());
    for part in parts {
        let rolling = RollingFileWriterBuilder::new_with_default_file_size(
            ParquetWriterBuilder::new(props.clone(), Arc::clone(&schema)),
            table.file_io().clone(),
            location.clone(),
            names.clone(),
        );
        let day = i32::try_from((part.date - epoch).num_days())
            .map_err(|_| Error::Iceberg(format!("date {} out of range", part.date)))?;
        let key = PartitionKey::new(
            spec.clone(),
            Arc::clone(&schema),
            Struct::from_iter([Some(Literal::date(day))]),
        );
        let mut w = DataFileWriterBuilder::new(rolling)
            .build(Some(key))
            .await
            .map_err(|e| err("data file writer", e))?;
        w.write(tables::fit(&part.batch, &arrow_schema)?)
            .await
            .map_err(|e| err("write data file", e))?;
        files.extend(w.close().await.map_err(|e| err("close data file", e))?);
    }
    Ok(files)
}

/// Appends `files` in one snapshot on top of `table`'s current one, or fails with a
/// conflict if another commit landed since.
async fn commit(
    catalog: &dyn Catalog,
    table: &Table,
    files: Vec<DataFile>,
    summary: std::collections::HashMap<String, String>,
) -> iceberg::Result<()> {
    let pinned = Pinned {
        inner: catalog,
        table: table.identifier(),
        snapshot: table.metadata().current_snapshot_id(),
    };
    let tx = Transaction::new(table);
    // names are unique per attempt, so no scan of every manifest for duplicates
    let tx = tx
        .fast_append()
        .with_check_duplicate(false)
        .add_data_files(files)
        .set_snapshot_properties(summary)
        .apply(tx)?;
    tx.commit(&pinned).await.map(|_| ())
}
