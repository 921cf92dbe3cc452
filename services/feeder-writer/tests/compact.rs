//! Compaction on a real directory tree: rows, order and provenance survive (readings, and
//! anomalies with null-device fleet findings, read back by pyarrow); only committed
//! ranges are merged; a reader looping during the swap never counts a wrong total; and
//! the writer's recovery still replays exactly once after a rewind over merged files.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, TimestampMillisecondType, UInt64Type};
use chrono::NaiveDate;
use common::*;
use feeder_writer::TopicKind;
use feeder_writer::buffer::{Limits, PartitionBuffer};
use feeder_writer::compact::{CompactOptions, STAGING_DIR, compact};
use feeder_writer::flush::{RangeSpec, write_range_except};
use feeder_writer::naming;
use feeder_writer::recovery::recover;
use feeder_writer::schema::Dataset;
use feeder_writer::storage::LocalFs;
use feeder_writer::verify::{VerifyOptions, verify};
use parquet::file::reader::{FileReader, SerializedFileReader};

const TOPIC: &str = "c.checked";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 11).unwrap()
}

fn ranges(n: i64, len: i64) -> Vec<(i64, i64)> {
    (0..n).map(|i| (i * len, i * len + len - 1)).collect()
}

fn readings_dir(root: &Path) -> std::path::PathBuf {
    root.join(naming::date_dir(Dataset::Readings, day()))
}

/// Every reading of the directory's files, files in name (= offset) order, rows in file order.
fn rows_of_dir(dir: &Path) -> Vec<(String, i64, u64, String, i64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for b in read_file(&f) {
            let dev = b.column_by_name("device_id").unwrap().as_string::<i32>();
            let ts = b
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>();
            let seq = b
                .column_by_name("seq")
                .unwrap()
                .as_primitive::<UInt64Type>();
            let obis = b.column_by_name("obis").unwrap().as_string::<i32>();
            let raw = b
                .column_by_name("value_raw")
                .unwrap()
                .as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.push((
                    dev.value(i).to_string(),
                    ts.value(i),
                    seq.value(i),
                    obis.value(i).to_string(),
                    raw.value(i),
                ));
            }
            assert_eq!(dev.null_count(), 0);
        }
    }
    out
}

fn all_committed(_: &str, _: i32) -> Option<i64> {
    Some(i64::MAX)
}

#[test]
fn compaction_keeps_rows_order_and_provenance() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let registry = write_signed_root(root, TOPIC, &ranges(6, 10));
    let dir = readings_dir(root);
    let before = rows_of_dir(&dir);
    let files_before = all_entries(root, Dataset::Readings).len();

    let report = compact(
        root,
        Dataset::Readings,
        day(),
        &all_committed,
        &CompactOptions::default(),
    )
    .unwrap();
    assert_eq!(report.inputs, 6);
    let merged = naming::file_name(TOPIC, 0, 0, 59);
    assert_eq!(report.outputs, std::slice::from_ref(&merged));
    assert_eq!(report.rows, before.len() as u64);

    // one file in the directory, nothing left behind anywhere
    let entries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, std::slice::from_ref(&merged));
    assert_eq!(
        std::fs::read_dir(root.join(STAGING_DIR)).unwrap().count(),
        0
    );
    assert_eq!(all_entries(root, Dataset::Readings).len(), files_before - 5);

    // same rows; in the order one flush of all of them would give (stable sort)
    let after = rows_of_dir(&dir);
    let mut expected = before.clone();
    expected.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    assert_eq!(after, expected);

    let kv = kv_metadata(&dir.join(&merged));
    assert_eq!(
        kv["feeder.source_ranges"],
        "0-9,10-19,20-29,30-39,40-49,50-59"
    );
    assert_eq!(kv["feeder.first_offset"], "0");
    assert_eq!(kv["feeder.last_offset"], "59");
    assert_eq!(kv["feeder.writer_id"], "compactor");
    assert_eq!(kv["feeder.dataset"], "readings");

    // the provenance check still holds, and a second run has nothing to do
    let v = verify(root, &registry, &VerifyOptions::default()).unwrap();
    assert!(v.is_ok(), "{v}");
    let again = compact(
        root,
        Dataset::Readings,
        day(),
        &all_committed,
        &CompactOptions::default(),
    )
    .unwrap();
    assert!(again.outputs.is_empty());
}

#[test]
fn only_committed_ranges_are_merged_in_groups_of_the_target_size() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_signed_root(root, TOPIC, &ranges(6, 10));
    let dir = readings_dir(root);
    let total = rows_of_dir(&dir).len();
    // the writer committed up to offset 40: [40, 49] and [50, 59] may still be replayed
    let committed = |t: &str, p: i32| (t == TOPIC && p == 0).then_some(40);
    let file_rows = |first: i64, last: i64| {
        read_file(&dir.join(naming::file_name(TOPIC, 0, first, last)))
            .iter()
            .map(|b| b.num_rows() as u64)
            .sum::<u64>()
    };
    // the first range has fewer rows on this date (its first frames are on the day before)
    let pairs = [
        file_rows(0, 9) + file_rows(10, 19),
        file_rows(20, 29) + file_rows(30, 39),
    ];
    let opts = CompactOptions {
        target_rows: pairs[0].max(pairs[1]),
        ..CompactOptions::default()
    };
    assert!(file_rows(0, 9) + file_rows(10, 19) + file_rows(20, 29) > opts.target_rows);
    let report = compact(root, Dataset::Readings, day(), &committed, &opts).unwrap();
    assert_eq!(report.uncommitted, 2);
    assert_eq!(
        report.outputs,
        [
            naming::file_name(TOPIC, 0, 0, 19),
            naming::file_name(TOPIC, 0, 20, 39)
        ]
    );
    assert!(dir.join(naming::file_name(TOPIC, 0, 40, 49)).exists());
    assert!(dir.join(naming::file_name(TOPIC, 0, 50, 59)).exists());
    assert_eq!(rows_of_dir(&dir).len(), total);
    // unknown partitions are never touched
    let report = compact(root, Dataset::Readings, day(), &|_, _| None, &opts).unwrap();
    assert!(report.outputs.is_empty());
}

#[test]
fn a_reader_looping_during_compaction_never_counts_a_wrong_total() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    write_signed_root(&root, TOPIC, &ranges(60, 3));
    let dir = readings_dir(&root);
    let total = rows_of_dir(&dir).len() as u64;
    let files = std::fs::read_dir(&dir).unwrap().count();

    let stop = Arc::new(AtomicBool::new(false));
    let (good, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (dir, stop, good, failed) = (dir.clone(), stop.clone(), good.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // what a reader does: glob the directory, then open every file
                let count = || -> std::io::Result<u64> {
                    let mut n = 0;
                    for e in std::fs::read_dir(&dir)? {
                        let p = e?.path();
                        if p.extension().is_some_and(|x| x == "parquet")
                            && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                        {
                            let f = std::fs::File::open(&p)?;
                            let r = SerializedFileReader::new(f)
                                .map_err(|e| std::io::Error::other(e.to_string()))?;
                            n += r.metadata().file_metadata().num_rows() as u64;
                        }
                    }
                    Ok(n)
                };
                match count() {
                    Ok(n) => {
                        assert_eq!(n, total, "a reader saw a wrong total");
                        good.fetch_add(1, Ordering::Relaxed);
                    }
                    // listed before the swap, opened after: retry, never a wrong answer
                    Err(e) => {
                        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    while good.load(Ordering::Relaxed) < 3 {
        std::thread::yield_now();
    }
    let report = compact(
        &root,
        Dataset::Readings,
        day(),
        &all_committed,
        &CompactOptions::default(),
    )
    .unwrap();
    let reads_before_stop = good.load(Ordering::Relaxed);
    while good.load(Ordering::Relaxed) < reads_before_stop + 3 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(report.inputs, files);
    assert_eq!(rows_of_dir(&dir).len() as u64, total);
    eprintln!(
        "reader: {} exact counts, {} retried reads, {:?}",
        good.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed()
    );
}

#[test]
fn a_rewind_over_compacted_files_replays_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let registry = write_signed_root(root, TOPIC, &ranges(4, 10));
    for dataset in [Dataset::Readings, Dataset::Events] {
        for date in [day(), day().pred_opt().unwrap()] {
            compact(
                root,
                dataset,
                date,
                &all_committed,
                &CompactOptions::default(),
            )
            .unwrap();
        }
    }
    let readings_before = rows(root, Dataset::Readings);

    // the group's offsets are gone and the consumer starts over at 0
    let fs = LocalFs::new(root).unwrap();
    let plan = recover(&fs, TOPIC, 0, 0).unwrap();
    assert_eq!(plan.forced_boundaries(), [9, 19, 29, 39], "{plan:?}");
    assert!(plan.containing_ranges > 0);
    assert!(!plan.containers.is_empty());
    let limits = Limits {
        max_records: 7,
        max_bytes: 1 << 20,
        max_age: std::time::Duration::from_secs(60),
        max_dates: 64,
    };
    let mut buf = PartitionBuffer::new(limits, &plan);
    let mut in_compacted = 0;
    for rec in signed_records(0..40) {
        for b in buf.offer(rec, Instant::now()).ready {
            let spec = RangeSpec {
                kind: TopicKind::Checked,
                topic: TOPIC,
                partition: 0,
                first: b.first,
                last: b.last,
                writer_id: "replay",
            };
            let report = write_range_except(&fs, spec, &b.records, &plan.containers).unwrap();
            in_compacted += report.files_in_compacted;
        }
    }
    assert!(in_compacted > 0);
    assert_eq!(rows(root, Dataset::Readings), readings_before);
    assert_unique(&reading_keys(root));
    let v = verify(root, &registry, &VerifyOptions::default()).unwrap();
    assert!(v.is_ok(), "{v}");
}

#[test]
fn interrupted_runs_are_finished_or_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_signed_root(root, TOPIC, &ranges(3, 10));
    let dir = readings_dir(root);
    let total = rows_of_dir(&dir).len();
    let staging = root.join(STAGING_DIR);

    // crashed before the swap: its staging directory holds a merged file; discard it
    let before_swap = staging.join("readings-2024-03-11-00000000000000aa");
    std::fs::create_dir_all(&before_swap).unwrap();
    std::fs::copy(
        dir.join(naming::file_name(TOPIC, 0, 0, 9)),
        before_swap.join(naming::file_name(TOPIC, 0, 0, 29)),
    )
    .unwrap();
    // crashed after the swap: the old directory still holds a late file (a new range
    // the writer added during the swap); it must move into the live directory
    let after_swap = staging.join("readings-2024-03-11-00000000000000bb");
    std::fs::create_dir_all(&after_swap).unwrap();
    let late = naming::file_name(TOPIC, 0, 30, 39);
    write_signed_root(&tmp.path().join("other"), TOPIC, &[(30, 39)]);
    std::fs::copy(
        tmp.path()
            .join("other")
            .join(naming::date_dir(Dataset::Readings, day()))
            .join(&late),
        after_swap.join(&late),
    )
    .unwrap();
    std::fs::write(dir.join(".feeder-compact-00000000000000bb"), b"").unwrap();

    let report = compact(
        root,
        Dataset::Readings,
        day(),
        &|_, _| Some(30),
        &CompactOptions::default(),
    )
    .unwrap();
    assert_eq!(report.leftovers_cleaned, 2);
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    assert!(!dir.join(".feeder-compact-00000000000000bb").exists());
    assert!(dir.join(&late).exists());
    // the three committed files were merged; the late one stays as it is
    assert_eq!(report.outputs, [naming::file_name(TOPIC, 0, 0, 29)]);
    assert!(rows_of_dir(&dir).len() > total);
    assert_unique(&reading_keys(root));
}

/// pyarrow's view of Parquet files, in the order given: every row (timestamps as
/// epoch milliseconds) and each file's `feeder.*` key-value metadata.
fn pyarrow_read(files: &[std::path::PathBuf]) -> serde_json::Value {
    let script = "import json, sys\n\
        import pyarrow as pa, pyarrow.parquet as pq\n\
        rows, meta = [], []\n\
        for f in sys.argv[1:]:\n\
        \x20   t = pq.read_table(f)\n\
        \x20   t = t.cast(pa.schema([pa.field(c.name, pa.int64() if pa.types.is_timestamp(c.type) else c.type) for c in t.schema]))\n\
        \x20   rows += t.to_pylist()\n\
        \x20   md = pq.read_metadata(f).metadata or {}\n\
        \x20   meta.append({k.decode(): v.decode() for k, v in md.items() if k.startswith(b'feeder.')})\n\
        print(json.dumps({'rows': rows, 'meta': meta}))\n";
    let out = std::process::Command::new(feeder_testkit::python_path())
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Device and fleet findings alike (device_id, cohort and seq null where absent): the
/// merged file holds the same rows, in the order one flush of them all would give, and
/// the provenance and writer metadata, as pyarrow reads it.
#[test]
fn compacting_anomalies_keeps_fleet_findings_order_and_metadata() {
    use feeder_proto::pipeline::Anomaly;
    use prost::Message as _;

    const ANOMALIES: &str = "c.anomalies";
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fs = LocalFs::new(root).unwrap();
    let midnight = 1_710_115_200_000; // 2024-03-11T00:00:00Z
    let anomaly = |o: i64| {
        let fleet = o % 3 == 0;
        Anomaly {
            detected_at_ms: midnight + 3_600_000 + o * 1000,
            device_id: if fleet {
                String::new()
            } else {
                format!("veh-{:04}", 7 - o % 5)
            },
            cohort: if fleet {
                format!("module=bg95,region=r{}", o % 2)
            } else {
                String::new()
            },
            rule: if fleet { "cohort_silence" } else { "gps_jump" }.into(),
            severity: ["info", "warning", "critical"][(o % 3) as usize].into(),
            // later ranges hold earlier findings too: the merge must re-sort
            ts_from_ms: midnight + (30 - o) % 7 * 60_000,
            ts_to_ms: midnight + 600_000,
            detail: format!("finding {o}"),
            seq: (!fleet && o % 2 == 0).then_some(o as u64 * 10),
            source_offset: -1,
        }
    };
    for (first, last) in [(0, 9), (10, 19), (20, 29)] {
        let records: Vec<_> = (first..=last)
            .map(|o| feeder_writer::SourceRecord {
                offset: o,
                timestamp_ms: Some(midnight + o),
                payload: Some(anomaly(o).encode_to_vec()),
            })
            .collect();
        let spec = RangeSpec {
            kind: TopicKind::Anomalies,
            topic: ANOMALIES,
            partition: 0,
            first,
            last,
            writer_id: "writer-3",
        };
        let report = write_range_except(&fs, spec, &records, &[]).unwrap();
        assert_eq!(report.rows.get(&Dataset::Anomalies), Some(&10));
    }
    let dir = root.join(naming::date_dir(Dataset::Anomalies, day()));
    let inputs: Vec<_> = [(0, 9), (10, 19), (20, 29)]
        .map(|(f, l)| dir.join(naming::file_name(ANOMALIES, 0, f, l)))
        .to_vec();
    let before = pyarrow_read(&inputs);

    let report = compact(
        root,
        Dataset::Anomalies,
        day(),
        &all_committed,
        &CompactOptions::default(),
    )
    .unwrap();
    let merged = naming::file_name(ANOMALIES, 0, 0, 29);
    assert_eq!(report.inputs, 3);
    assert_eq!(report.outputs, std::slice::from_ref(&merged));
    assert_eq!(report.rows, 30);
    let parquet: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(parquet, std::slice::from_ref(&merged));
    let after = pyarrow_read(&[dir.join(&merged)]);

    // rows: the inputs' rows (offset order), stably sorted by device_id (null first),
    // ts_from, seq (null first): what the writer does within one file
    let rows = |v: &serde_json::Value| v["rows"].as_array().unwrap().clone();
    let mut expected = rows(&before);
    let key = |r: &serde_json::Value| {
        (
            r["device_id"].as_str().unwrap_or("").to_string(),
            r["ts_from"].as_i64().unwrap(),
            r["seq"].as_u64().unwrap_or(0),
        )
    };
    expected.sort_by_key(key);
    assert_ne!(
        rows(&before),
        expected,
        "the inputs are already in merged order"
    );
    let got = rows(&after);
    assert_eq!(got.len(), 30);
    assert_eq!(got, expected);
    let fleet = got.iter().filter(|r| r["device_id"].is_null()).count();
    assert_eq!(fleet, 10, "fleet findings keep a null device_id");
    assert!(
        got.iter()
            .filter(|r| r["device_id"].is_null())
            .all(|r| r["cohort"].is_string() && r["seq"].is_null())
    );
    assert!(got.windows(2).all(|w| key(&w[0]) <= key(&w[1])), "sorted");

    // metadata: provenance of the union, everything else as the writer wrote it
    let meta = &after["meta"][0];
    assert_eq!(meta["feeder.source_ranges"], "0-9,10-19,20-29");
    assert_eq!(meta["feeder.first_offset"], "0");
    assert_eq!(meta["feeder.last_offset"], "29");
    assert_eq!(meta["feeder.writer_id"], "compactor");
    for k in [
        "feeder.dataset",
        "feeder.topic",
        "feeder.partition",
        "feeder.writer_version",
    ] {
        assert_eq!(meta[k], before["meta"][0][k], "{k}");
    }
    assert_eq!(meta["feeder.dataset"], "anomalies");
}
