//! Provenance check (`feeder verify`): re-verifies every stored frame's signature against
//! the registry and proves that the `readings`, `telematics` and `events` rows are
//! exactly the rows the signed payloads imply.
//!
//! This is what makes the datasets trustworthy without trusting the pipeline: the signed
//! bytes are kept in `frames`, so anyone with the registry can recompute every row.
//!
//! # How
//!
//! 1. Read `frames` (every date; with a date filter only frames that belong to the date
//!    or imply rows in it are kept). For each frame: look up `(device_id, key_id)` in the
//!    registry, verify the signature over the protocol's signing input, decode the
//!    payload, and convert it with the writer's own conversion ([`crate::convert`]), so
//!    the expected rows are exactly what the writer would store. Their fingerprints are
//!    summed per frame and dataset ([`digest`]).
//! 2. Read the data datasets and sum the stored rows' fingerprints under their frame.
//! 3. Compare. A frame whose signature fails, whose key is unknown or whose payload does
//!    not decode is a mismatch, and so are rows stored for it, rows with no frame at all,
//!    and any frame whose stored rows differ from its expected rows in values, count or
//!    date directory (duplicates included).
//!
//! `flags` are not compared: they are the stream stage's findings, not signed data.
//! `received_at` is compared with the frame's (it is recorded, not signed).
//!
//! # Memory
//!
//! One small fixed-size entry (~120 bytes plus the device id once per device) per frame
//! in scope, one stored file's bytes and one Parquet batch at a time; rows are never
//! held. Scoping with a date keeps the map to that date's frames.
//!
//! # Where
//!
//! Files are listed and read through [`Storage`], so the same check runs on a local root
//! ([`verify`]) and on a bucket ([`verify_in`] with an [`crate::storage::S3Storage`]).
//! Each file is fetched whole (one request per file on S3) and read from memory.

mod digest;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::RandomState;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{TimestampMillisecondType, UInt64Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use feeder_core::{KeyStatus, Registry};
use feeder_proto::pipeline::CheckedFrame;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

pub use self::digest::Digest;
use self::digest::RowHasher;
use crate::convert::checked_to_batches;
use crate::encryption::Encryption;
use crate::schema::Dataset;
use crate::storage::{Listed, LocalFs, Storage};
use crate::{Error, Result};

/// The datasets whose rows come from frame payloads.
pub const DATA_DATASETS: [Dataset; 3] = [Dataset::Readings, Dataset::Telematics, Dataset::Events];
/// Mismatches listed in a report (all are counted).
pub const MAX_LISTED: usize = 100;
/// Rows per batch read from a file.
const BATCH_ROWS: usize = 8192;

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only rows stored under `date=D` (and the frames they come from, plus the frames
    /// stored under `frames/date=D`).
    pub date: Option<NaiveDate>,
    /// Keys for encrypted datasets (see [`crate::encryption`]).
    pub encryption: Encryption,
}

/// What is wrong with one frame or row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The registry has no such device or no such key for it.
    UnknownKey { key_id: String },
    /// The signature does not verify over the stored fields.
    BadSignature { key_id: String },
    /// The signed payload is not a `Frame`.
    UndecodablePayload,
    /// The frame is stored more than once in `frames`.
    DuplicateFrame,
    /// Rows stored for a frame that did not verify.
    RowsOfUnverifiedFrame { rows: u64 },
    /// A row whose `(device_id, seq)` has no frame in `frames`.
    RowWithoutFrame,
    /// The stored rows of a verified frame are not the rows its payload implies.
    RowsDiffer {
        expected_rows: u64,
        stored_rows: u64,
    },
}

/// One mismatch, with where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub dataset: Dataset,
    pub device_id: String,
    pub seq: u64,
    pub problem: Problem,
    /// A file involved: the row's file, or the frame's.
    pub file: Option<PathBuf>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} device_id={} seq={}: ",
            self.dataset.name(),
            self.device_id,
            self.seq
        )?;
        match &self.problem {
            Problem::UnknownKey { key_id } => write!(f, "key {key_id} is not in the registry")?,
            Problem::BadSignature { key_id } => {
                write!(f, "signature does not verify with key {key_id}")?
            }
            Problem::UndecodablePayload => f.write_str("signed payload is not a Frame")?,
            Problem::DuplicateFrame => f.write_str("frame stored more than once")?,
            Problem::RowsOfUnverifiedFrame { rows } => {
                write!(f, "{rows} rows stored for a frame that does not verify")?
            }
            Problem::RowWithoutFrame => f.write_str("row has no frame in `frames`")?,
            Problem::RowsDiffer {
                expected_rows,
                stored_rows,
            } => write!(
                f,
                "stored rows differ from the signed payload ({expected_rows} expected, {stored_rows} stored)"
            )?,
        }
        if let Some(file) = &self.file {
            write!(f, " [{}]", file.display())?;
        }
        Ok(())
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub files_read: u64,
    /// Frames checked (in scope).
    pub frames_checked: u64,
    /// Frames whose signature verified and whose payload decoded.
    pub frames_verified: u64,
    /// Verified frames signed by a key the registry now marks revoked (not a mismatch:
    /// the key was valid when the edge accepted the frame).
    pub frames_with_revoked_key: u64,
    /// Stored rows checked, per data dataset.
    pub rows_checked: BTreeMap<Dataset, u64>,
    /// Every mismatch counted.
    pub mismatch_count: u64,
    /// The first [`MAX_LISTED`] mismatches.
    pub mismatches: Vec<Mismatch>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.mismatch_count == 0
    }

    fn push(&mut self, m: Mismatch) {
        self.mismatch_count += 1;
        if self.mismatches.len() < MAX_LISTED {
            self.mismatches.push(m);
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "files read: {}", self.files_read)?;
        writeln!(
            f,
            "frames: {} checked, {} verified ({} signed with a key now revoked)",
            self.frames_checked, self.frames_verified, self.frames_with_revoked_key
        )?;
        for (d, n) in &self.rows_checked {
            writeln!(f, "{}: {n} rows checked", d.name())?;
        }
        writeln!(f, "mismatches: {}", self.mismatch_count)?;
        for m in &self.mismatches {
            writeln!(f, "  {m}")?;
        }
        if self.mismatch_count > self.mismatches.len() as u64 {
            writeln!(
                f,
                "  ... and {} more",
                self.mismatch_count - self.mismatches.len() as u64
            )?;
        }
        Ok(())
    }
}

/// What verification knows about one stored frame.
#[derive(Debug, Default)]
struct Entry {
    verified: bool,
    /// Index into `Verifier::files` of the frame's file.
    file: u32,
    expected: [Digest; 3],
    stored: [Digest; 3],
    /// A file holding stored rows, per data dataset.
    stored_file: [Option<u32>; 3],
}

struct Verifier<'a> {
    registry: &'a Registry,
    date: Option<NaiveDate>,
    hashers: Vec<RowHasher>,
    /// device_id -> seq -> entry.
    frames: HashMap<Box<str>, HashMap<u64, Entry>>,
    files: Vec<PathBuf>,
    report: VerifyReport,
    scratch: Vec<u8>,
}

/// Verifies the datasets under the local root `root` against `registry`.
pub fn verify(root: &Path, registry: &Registry, opts: &VerifyOptions) -> Result<VerifyReport> {
    verify_in(&LocalFs::existing(root), registry, opts)
}

/// Verifies the datasets `store` holds (a local root or a bucket) against `registry`.
pub fn verify_in(
    store: &dyn Storage,
    registry: &Registry,
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    let state = RandomState::new();
    let hashers = DATA_DATASETS
        .iter()
        .map(|&d| RowHasher::new(d, state.clone()))
        .collect::<Result<_>>()?;
    let mut v = Verifier {
        registry,
        date: opts.date,
        hashers,
        frames: HashMap::new(),
        files: Vec::new(),
        report: VerifyReport::default(),
        scratch: Vec::new(),
    };
    for (date, f) in dataset_files(store, Dataset::Frames, None)? {
        let file = v.add_file(store.locate(&f.dir, &f.name));
        for batch in read_batches(store, &f, &opts.encryption)? {
            v.add_frames(&batch?, date, file)?;
        }
    }
    for (i, dataset) in DATA_DATASETS.into_iter().enumerate() {
        for (date, f) in dataset_files(store, dataset, opts.date)? {
            let file = v.add_file(store.locate(&f.dir, &f.name));
            for batch in read_batches(store, &f, &opts.encryption)? {
                v.add_stored(i, &batch?, date, file)?;
            }
        }
    }
    Ok(v.finish())
}

/// `(partition date, file)` of every `*.parquet` file of `dataset` (the files readers
/// see: temporary files start with a dot), optionally of one date only, sorted.
pub fn dataset_files(
    store: &dyn Storage,
    dataset: Dataset,
    only: Option<NaiveDate>,
) -> Result<Vec<(NaiveDate, Listed)>> {
    let mut out: Vec<(NaiveDate, Listed)> = store
        .list(dataset)?
        .into_iter()
        .filter(|f| f.name.ends_with(".parquet") && !f.name.starts_with('.'))
        .filter_map(|f| {
            let date = f
                .dir
                .rsplit_once("/date=")
                .and_then(|(_, d)| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())?;
            only.is_none_or(|d| d == date).then_some((date, f))
        })
        .collect();
    out.sort_by(|a, b| (a.0, &a.1.dir, &a.1.name).cmp(&(b.0, &b.1.dir, &b.1.name)));
    Ok(out)
}

fn read_batches(
    store: &dyn Storage,
    file: &Listed,
    encryption: &Encryption,
) -> Result<ParquetRecordBatchReader> {
    let bytes = store.get(&file.dir, &file.name)?;
    Ok(
        ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, encryption.reader_options()?)?
            .with_batch_size(BATCH_ROWS)
            .build()?,
    )
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| ArrowError::SchemaError(format!("frames: column {name} missing")).into())
}

fn mistyped(name: &str) -> Error {
    ArrowError::SchemaError(format!("frames: column {name} mistyped")).into()
}

impl Verifier<'_> {
    fn add_file(&mut self, path: PathBuf) -> u32 {
        self.report.files_read += 1;
        self.files.push(path);
        // More than 4 billion files would already have exhausted memory for the paths.
        u32::try_from(self.files.len() - 1).unwrap_or(u32::MAX)
    }

    fn entry(&mut self, device_id: &str, seq: u64) -> Option<&mut Entry> {
        self.frames.get_mut(device_id)?.get_mut(&seq)
    }

    fn mismatch(
        &mut self,
        dataset: Dataset,
        device_id: &str,
        seq: u64,
        problem: Problem,
        file: Option<u32>,
    ) {
        let file = file.map(|i| self.files[i as usize].clone());
        self.report.push(Mismatch {
            dataset,
            device_id: device_id.to_string(),
            seq,
            problem,
            file,
        });
    }

    /// One batch of `frames` rows stored under `date`.
    fn add_frames(&mut self, batch: &RecordBatch, date: NaiveDate, file: u32) -> Result<()> {
        let device = column(batch, "device_id")?
            .as_string_opt::<i32>()
            .ok_or_else(|| mistyped("device_id"))?;
        let seq = column(batch, "seq")?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| mistyped("seq"))?;
        let key_id = column(batch, "key_id")?
            .as_string_opt::<i32>()
            .ok_or_else(|| mistyped("key_id"))?;
        let received = column(batch, "received_at")?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| mistyped("received_at"))?;
        let edge = column(batch, "edge_id")?
            .as_string_opt::<i32>()
            .ok_or_else(|| mistyped("edge_id"))?;
        let payload = column(batch, "payload")?
            .as_binary_opt::<i32>()
            .ok_or_else(|| mistyped("payload"))?;
        let signature = column(batch, "signature")?
            .as_binary_opt::<i32>()
            .ok_or_else(|| mistyped("signature"))?;

        let frame_in_scope = self.date.is_none_or(|d| d == date);
        // Frames of this batch that decode, to convert together.
        let mut decodable = Vec::new();
        // Rows that are the first occurrence of their frame.
        let mut fresh = vec![false; batch.num_rows()];
        for (i, fresh) in fresh.iter_mut().enumerate() {
            let (dev, s) = (device.value(i), seq.value(i));
            if self.entry(dev, s).is_some() {
                self.mismatch(Dataset::Frames, dev, s, Problem::DuplicateFrame, Some(file));
                continue;
            }
            *fresh = true;
            self.frames.entry(dev.into()).or_default().insert(
                s,
                Entry {
                    file,
                    ..Entry::default()
                },
            );
            if feeder_core::payload::decode(payload.value(i)).is_err() {
                // reported below if in scope
                continue;
            }
            decodable.push(CheckedFrame {
                device_id: dev.to_string(),
                seq: s,
                key_id: key_id.value(i).to_string(),
                payload: payload.value(i).to_vec().into(),
                signature: signature.value(i).to_vec().into(),
                received_at_ms: received.value(i),
                edge_id: edge.value(i).to_string(),
                ..CheckedFrame::default()
            });
        }

        // The rows each frame implies, in the date directories in scope.
        let converted = checked_to_batches(&decodable)?;
        for part in &converted.batches {
            let Some(idx) = DATA_DATASETS.iter().position(|&d| d == part.dataset) else {
                continue;
            };
            if self.date.is_some_and(|d| d != part.date) {
                continue;
            }
            let frames = &mut self.frames;
            self.hashers[idx].for_each_row(&part.batch, part.date, |row| {
                if let Some(e) = frames
                    .get_mut(row.device_id)
                    .and_then(|m| m.get_mut(&row.seq))
                {
                    e.expected[idx].add(row.hash);
                }
            })?;
        }

        // Verify the frames in scope; forget the others.
        for (i, _) in fresh.iter().enumerate().filter(|(_, f)| **f) {
            let (dev, s) = (device.value(i), seq.value(i));
            let Some(e) = self.entry(dev, s) else {
                continue;
            };
            let implies_rows = e.expected.iter().any(|d| d.rows > 0);
            if !frame_in_scope && !implies_rows {
                if let Some(m) = self.frames.get_mut(dev) {
                    m.remove(&s);
                    if m.is_empty() {
                        self.frames.remove(dev);
                    }
                }
                continue;
            }
            self.report.frames_checked += 1;
            let kid = key_id.value(i);
            let problem = match self.registry.device(dev).and_then(|d| d.key(kid)) {
                None => Some(Problem::UnknownKey {
                    key_id: kid.to_string(),
                }),
                Some(key) => {
                    // a native format's bindings (OCMF: PG = seq, the serial) first
                    let ok = key.key.check_shape(s, payload.value(i)).is_ok()
                        && key
                            .key
                            .verify(
                                &mut self.scratch,
                                dev,
                                kid,
                                s,
                                payload.value(i),
                                signature.value(i),
                            )
                            .is_ok();
                    if ok && key.status == KeyStatus::Revoked {
                        self.report.frames_with_revoked_key += 1;
                    }
                    (!ok).then(|| Problem::BadSignature {
                        key_id: kid.to_string(),
                    })
                }
            };
            let problem = problem.or_else(|| {
                feeder_core::payload::decode(payload.value(i))
                    .is_err()
                    .then_some(Problem::UndecodablePayload)
            });
            match problem {
                Some(p) => self.mismatch(Dataset::Frames, dev, s, p, Some(file)),
                None => {
                    self.report.frames_verified += 1;
                    if let Some(e) = self.entry(dev, s) {
                        e.verified = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// One batch of stored rows of `DATA_DATASETS[idx]` under `date`.
    fn add_stored(
        &mut self,
        idx: usize,
        batch: &RecordBatch,
        date: NaiveDate,
        file: u32,
    ) -> Result<()> {
        *self
            .report
            .rows_checked
            .entry(DATA_DATASETS[idx])
            .or_default() += batch.num_rows() as u64;
        let frames = &mut self.frames;
        let mut orphans = Vec::new();
        self.hashers[idx].for_each_row(batch, date, |row| {
            match frames
                .get_mut(row.device_id)
                .and_then(|m| m.get_mut(&row.seq))
            {
                Some(e) => {
                    e.stored[idx].add(row.hash);
                    e.stored_file[idx].get_or_insert(file);
                }
                None => orphans.push((row.device_id.to_string(), row.seq)),
            }
        })?;
        for (dev, s) in orphans {
            self.mismatch(
                DATA_DATASETS[idx],
                &dev,
                s,
                Problem::RowWithoutFrame,
                Some(file),
            );
        }
        Ok(())
    }

    fn finish(mut self) -> VerifyReport {
        let mut found = Vec::new();
        for (dev, seqs) in &self.frames {
            for (&s, e) in seqs {
                for (idx, dataset) in DATA_DATASETS.into_iter().enumerate() {
                    let (exp, got) = (e.expected[idx], e.stored[idx]);
                    let file = e.stored_file[idx].or(Some(e.file));
                    let problem = if !e.verified && got.rows > 0 {
                        Problem::RowsOfUnverifiedFrame { rows: got.rows }
                    } else if e.verified && exp != got {
                        Problem::RowsDiffer {
                            expected_rows: exp.rows,
                            stored_rows: got.rows,
                        }
                    } else {
                        continue;
                    };
                    found.push((dataset, dev.to_string(), s, problem, file));
                }
            }
        }
        found.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        for (dataset, dev, s, problem, file) in found {
            self.mismatch(dataset, &dev, s, problem, file);
        }
        self.report
    }
}
