//! One suite, every backend: the [`Storage`] contract (put, get, tail reads, list,
//! delete), then `verify` and `compact` on datasets the writer's own flush code stored
//! there, run against a local root and against a real S3-protocol server on 127.0.0.1
//! (`moto_server` from tests/python/requirements.txt, the one `tests/s3.rs` starts;
//! without it this test FAILS, saying so).
//!
//! The backends run one after the other in one test so that the server starts once;
//! every case gets a fresh root (a directory, or a key prefix in the bucket).

mod common;

use bytes::Bytes;
use chrono::NaiveDate;
use common::*;
use feeder_core::Registry;
use feeder_testkit::MotoS3;
use feeder_writer::Encryption;
use feeder_writer::TopicKind;
use feeder_writer::compact::{
    CompactOptions, FOOTER_READ, compact_in, compact_objects, partitions_in_store,
};
use feeder_writer::flush::{RangeSpec, write_range};
use feeder_writer::naming;
use feeder_writer::parquet_file::{self, FileProvenance};
use feeder_writer::schema::Dataset;
use feeder_writer::storage::{LocalFs, S3Storage, Storage};
use feeder_writer::verify::{Problem, VerifyOptions, verify_in};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const TOPIC: &str = "suite.checked";
const BUCKET: &str = "feeder-suite";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 11).unwrap()
}

/// Makes a fresh, empty root per case.
trait Backend {
    fn name(&self) -> &'static str;
    fn root(&self, case: &str) -> Box<dyn Storage>;
}

struct Local(tempfile::TempDir);

impl Backend for Local {
    fn name(&self) -> &'static str {
        "local"
    }
    fn root(&self, case: &str) -> Box<dyn Storage> {
        Box::new(LocalFs::new(self.0.path().join(case)).unwrap())
    }
}

struct S3 {
    moto: MotoS3,
    rt: tokio::runtime::Runtime,
}

impl Backend for S3 {
    fn name(&self) -> &'static str {
        "s3"
    }
    fn root(&self, case: &str) -> Box<dyn Storage> {
        let cfg = s3_config(&self.moto.endpoint, BUCKET, &format!("suite/{case}"));
        Box::new(S3Storage::new(&cfg, self.rt.handle().clone()).unwrap())
    }
}

#[test]
fn every_backend_keeps_the_storage_contract_and_runs_verify_and_compact() {
    let s3 = S3 {
        moto: MotoS3::start(BUCKET),
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    };
    let local = Local(tempfile::tempdir().unwrap());
    for backend in [&local as &dyn Backend, &s3] {
        let name = backend.name();
        contract(&*backend.root("contract"), name);
        verify_finds_tampering(&*backend.root("verify"), name);
        compaction_keeps_every_row(&*backend.root("compact"), name);
        an_interrupted_object_compaction_is_finished(&*backend.root("interrupted"), name);
        a_footer_longer_than_the_tail_read_is_read_whole(&*backend.root("footer"), name);
    }
}

fn contract(store: &dyn Storage, backend: &str) {
    let dir = "readings/date=2024-03-11";
    let name = naming::file_name(TOPIC, 0, 0, 9);
    assert!(
        store.list(Dataset::Readings).unwrap().is_empty(),
        "{backend}"
    );
    assert!(store.list_dir(dir).unwrap().is_empty(), "{backend}");
    let err = store.get(dir, &name).unwrap_err().to_string();
    assert!(
        err.contains(&name),
        "{backend}: a missing file is named: {err}"
    );

    let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    store.put(dir, &name, &bytes).unwrap();
    assert_eq!(store.get(dir, &name).unwrap(), bytes, "{backend}");
    // a tail shorter than the file, and one longer (the whole file)
    let tail = store.get_tail(dir, &name, 100).unwrap();
    assert_eq!(tail.len, 10_000, "{backend}");
    assert_eq!(tail.bytes, bytes[9_900..], "{backend}");
    assert!(!tail.is_whole());
    let whole = store.get_tail(dir, &name, 1 << 20).unwrap();
    assert!(whole.is_whole(), "{backend}");
    assert_eq!(whole.bytes, bytes, "{backend}");

    // put replaces
    store.put(dir, &name, b"second").unwrap();
    assert_eq!(store.get(dir, &name).unwrap(), &b"second"[..], "{backend}");
    assert_eq!(
        store.list_dir(dir).unwrap(),
        std::slice::from_ref(&name),
        "{backend}"
    );
    let listed = store.list(Dataset::Readings).unwrap();
    assert_eq!(listed.len(), 1, "{backend}");
    assert_eq!((listed[0].dir.as_str(), &listed[0].name), (dir, &name));
    let located = store.locate(dir, &name).display().to_string();
    assert!(
        located.ends_with(&format!("contract/{dir}/{name}")),
        "{backend}: {located}"
    );

    // delete is idempotent
    store.delete(dir, &name).unwrap();
    store.delete(dir, &name).unwrap();
    assert!(store.list_dir(dir).unwrap().is_empty(), "{backend}");

    // several at once, a missing one among them
    let names: Vec<String> = (0..3)
        .map(|i| naming::file_name(TOPIC, 0, i * 10, i * 10 + 9))
        .collect();
    for n in &names {
        store.put(dir, n, b"x").unwrap();
    }
    store
        .delete_many(dir, &[&names[0], &names[2], "missing.parquet"])
        .unwrap();
    assert_eq!(store.list_dir(dir).unwrap(), names[1..2], "{backend}");
}

/// Writes signed frames as the writer flushes them (`common::write_signed_root`'s data,
/// through `store`); returns the registry.
fn write_signed(store: &dyn Storage, ranges: &[(i64, i64)]) -> Registry {
    for &(first, last) in ranges {
        let spec = RangeSpec {
            kind: TopicKind::Checked,
            topic: TOPIC,
            partition: 0,
            first,
            last,
            writer_id: "w",
        };
        write_range(store, spec, &signed_records(first..last + 1)).unwrap();
    }
    fleet().1
}

fn ranges(n: i64, len: i64) -> Vec<(i64, i64)> {
    (0..n).map(|i| (i * len, i * len + len - 1)).collect()
}

/// Rows of a Parquet file, from its footer.
fn rows_in(bytes: Bytes) -> usize {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap()
}

/// Rows of every file of `dataset`, read through `store`.
fn stored_rows(store: &dyn Storage, dataset: Dataset) -> usize {
    store
        .list(dataset)
        .unwrap()
        .iter()
        .map(|l| rows_in(store.get(&l.dir, &l.name).unwrap()))
        .sum()
}

fn verify_finds_tampering(store: &dyn Storage, backend: &str) {
    let registry = write_signed(store, &ranges(3, 10));
    let report = verify_in(store, &registry, &VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{backend}: {report}");
    assert_eq!(report.frames_checked, 30, "{backend}");
    assert_eq!(report.frames_verified, 30, "{backend}");
    assert_eq!(report.rows_checked[&Dataset::Readings], 60, "{backend}");

    // a frames file gone: its rows have no frame, and the report says where they are
    let gone = naming::file_name(TOPIC, 0, 10, 19);
    let located = |dataset: Dataset| -> Vec<std::path::PathBuf> {
        let listed = store.list(dataset).unwrap();
        listed
            .iter()
            .filter(|l| l.name == gone)
            .map(|l| store.locate(&l.dir, &l.name))
            .collect()
    };
    for l in store.list(Dataset::Frames).unwrap() {
        if l.name == gone {
            store.delete(&l.dir, &l.name).unwrap();
        }
    }
    let report = verify_in(store, &registry, &VerifyOptions::default()).unwrap();
    assert!(!report.is_ok(), "{backend}");
    let readings = located(Dataset::Readings);
    for m in &report.mismatches {
        assert_eq!(m.problem, Problem::RowWithoutFrame, "{backend}: {report}");
        let file = m.file.clone().unwrap();
        assert!(
            readings.contains(&file) || m.dataset != Dataset::Readings,
            "{backend}: {} not among {readings:?}",
            file.display()
        );
    }
}

fn all_committed(_: &str, _: i32) -> Option<i64> {
    Some(i64::MAX)
}

fn compaction_keeps_every_row(store: &dyn Storage, backend: &str) {
    let registry = write_signed(store, &ranges(6, 10));
    let dir = naming::date_dir(Dataset::Readings, day());
    let rows = stored_rows(store, Dataset::Readings);
    let files = store.list(Dataset::Readings).unwrap().len();
    assert_eq!(
        partitions_in_store(store, Dataset::Readings, day()).unwrap(),
        [(TOPIC.to_string(), 0)],
        "{backend}"
    );

    // the writer committed up to offset 50: [50, 59] may still be replayed
    let committed = |t: &str, p: i32| (t == TOPIC && p == 0).then_some(50);
    let opts = CompactOptions::default();
    let report = compact_in(store, Dataset::Readings, day(), &committed, &opts).unwrap();
    let merged = naming::file_name(TOPIC, 0, 0, 49);
    assert_eq!(report.inputs, 5, "{backend}: {report}");
    assert_eq!(report.uncommitted, 1, "{backend}");
    assert_eq!(report.outputs, std::slice::from_ref(&merged), "{backend}");
    let mut left = store.list_dir(&dir).unwrap();
    left.sort();
    assert_eq!(
        left,
        [merged.clone(), naming::file_name(TOPIC, 0, 50, 59)],
        "{backend}"
    );
    assert_eq!(stored_rows(store, Dataset::Readings), rows, "{backend}");
    assert_eq!(
        store.list(Dataset::Readings).unwrap().len(),
        files - 4,
        "{backend}"
    );

    // provenance still holds; a second run has nothing to do
    let v = verify_in(store, &registry, &VerifyOptions::default()).unwrap();
    assert!(v.is_ok(), "{backend}: {v}");
    let again = compact_in(store, Dataset::Readings, day(), &committed, &opts).unwrap();
    assert!(again.outputs.is_empty(), "{backend}: {again}");
    // later, everything committed: the merged file is merged again with the last range
    let report = compact_in(store, Dataset::Readings, day(), &all_committed, &opts).unwrap();
    assert_eq!(
        report.outputs,
        [naming::file_name(TOPIC, 0, 0, 59)],
        "{backend}"
    );
    assert_eq!(stored_rows(store, Dataset::Readings), rows, "{backend}");
    let v = verify_in(store, &registry, &VerifyOptions::default()).unwrap();
    assert!(v.is_ok(), "{backend}: {v}");
}

/// The state a compaction killed between storing the merged object and deleting its
/// inputs leaves (rows stored twice), and the next run clearing it.
fn an_interrupted_object_compaction_is_finished(store: &dyn Storage, backend: &str) {
    let registry = write_signed(store, &ranges(4, 10));
    let dir = naming::date_dir(Dataset::Readings, day());
    let rows = stored_rows(store, Dataset::Readings);
    let mut names = store.list_dir(&dir).unwrap();
    names.sort();
    let inputs: Vec<(String, Bytes)> = names
        .into_iter()
        .map(|n| {
            let b = store.get(&dir, &n).unwrap();
            (n, b)
        })
        .collect();
    let opts = CompactOptions::default();
    let report = compact_objects(store, Dataset::Readings, day(), &all_committed, &opts).unwrap();
    assert_eq!(report.outputs, [naming::file_name(TOPIC, 0, 0, 39)]);
    // killed after the PUT: two of the inputs still there beside the merged object
    for (name, bytes) in &inputs[1..3] {
        store.put(&dir, name, bytes).unwrap();
    }
    assert!(stored_rows(store, Dataset::Readings) > rows, "{backend}");

    let report = compact_objects(store, Dataset::Readings, day(), &|_, _| None, &opts).unwrap();
    assert_eq!(report.leftovers_cleaned, 1, "{backend}: {report}");
    assert!(report.outputs.is_empty(), "{backend}");
    assert_eq!(
        store.list_dir(&dir).unwrap(),
        [naming::file_name(TOPIC, 0, 0, 39)],
        "{backend}"
    );
    assert_eq!(stored_rows(store, Dataset::Readings), rows, "{backend}");
    let v = verify_in(store, &registry, &VerifyOptions::default()).unwrap();
    assert!(v.is_ok(), "{backend}: {v}");
}

/// Planning reads footers from a file's last [`FOOTER_READ`] bytes; a file whose footer
/// is longer (here: a large key-value entry) is read whole instead, not refused.
fn a_footer_longer_than_the_tail_read_is_read_whole(store: &dyn Storage, backend: &str) {
    write_signed(store, &ranges(2, 10));
    let dir = naming::date_dir(Dataset::Readings, day());
    let rows = stored_rows(store, Dataset::Readings);
    let name = naming::file_name(TOPIC, 0, 0, 9);
    let reader = ParquetRecordBatchReaderBuilder::try_new(store.get(&dir, &name).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let batch = arrow::compute::concat_batches(&Dataset::Readings.schema(), &batches).unwrap();
    let prov = FileProvenance {
        topic: TOPIC,
        partition: 0,
        first_offset: 0,
        last_offset: 9,
        writer_id: "w",
    };
    let padding = "x".repeat(2 * FOOTER_READ as usize);
    let bytes = parquet_file::encode_with(
        Dataset::Readings,
        &batch,
        &prov,
        &[("padding", padding)],
        &Encryption::none(),
    )
    .unwrap();
    store.put(&dir, &name, &bytes).unwrap();
    assert!(!store.get_tail(&dir, &name, FOOTER_READ).unwrap().is_whole());

    let opts = CompactOptions::default();
    let report = compact_in(store, Dataset::Readings, day(), &all_committed, &opts).unwrap();
    assert_eq!(report.inputs, 2, "{backend}: {report}");
    assert_eq!(stored_rows(store, Dataset::Readings), rows, "{backend}");
}
