//! Storage and recovery without Kafka: files of a range are written, the writer
//! "restarts", and recovery must find the uncommitted range as a forced boundary, remove
//! stale temporary files of its own partition only, and a replay must reproduce the
//! identical files (restoring one a crash kept from being written).

mod common;

use std::time::Instant;

use common::*;
use feeder_writer::buffer::{FlushReason, Limits, PartitionBuffer};
use feeder_writer::flush::{RangeSpec, write_range};
use feeder_writer::naming;
use feeder_writer::recovery::recover;
use feeder_writer::schema::Dataset;
use feeder_writer::storage::{LocalFs, Storage};
use feeder_writer::{SourceRecord, TopicKind};
use prost::Message;

const TOPIC: &str = "t1.checked";

fn records(offsets: std::ops::Range<i64>) -> Vec<SourceRecord> {
    offsets
        .map(|o| SourceRecord {
            offset: o,
            timestamp_ms: Some(BASE_TS),
            payload: Some(checked_frame(&format!("mtr-{}", o % 3), o as u64 + 1).encode_to_vec()),
        })
        .collect()
}

fn spec(first: i64, last: i64, writer_id: &'static str) -> RangeSpec<'static> {
    RangeSpec {
        kind: TopicKind::Checked,
        topic: TOPIC,
        partition: 0,
        first,
        last,
        writer_id,
    }
}

fn write(fs: &LocalFs, first: i64, last: i64, writer: &'static str) -> Vec<String> {
    let recs = records(first..last + 1);
    write_range(fs, spec(first, last, writer), &recs)
        .unwrap()
        .files
}

#[test]
fn local_put_is_atomic_and_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = LocalFs::new(tmp.path().join("root")).unwrap();
    fs.put("readings/date=2024-01-01", "a.parquet", b"one")
        .unwrap();
    fs.put("readings/date=2024-01-01", "a.parquet", b"two")
        .unwrap();
    let dir = tmp.path().join("root/readings/date=2024-01-01");
    assert_eq!(std::fs::read(dir.join("a.parquet")).unwrap(), b"two");
    let names: Vec<String> = fs
        .list(Dataset::Readings)
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["a.parquet"], "no temporary file is left behind");
    assert!(fs.list(Dataset::Events).unwrap().is_empty());
    fs.delete("readings/date=2024-01-01", "a.parquet").unwrap();
    fs.delete("readings/date=2024-01-01", "a.parquet").unwrap();
    assert!(fs.list(Dataset::Readings).unwrap().is_empty());
}

#[test]
fn one_flush_writes_one_name_per_dataset_and_date() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = LocalFs::new(tmp.path()).unwrap();
    let files = write(&fs, 0, 9, "w");
    let name = naming::file_name(TOPIC, 0, 0, 9);
    assert!(files.iter().all(|f| f.ends_with(&name)), "{files:?}");
    // frames straddle midnight: readings land in two date directories
    assert_eq!(
        all_entries(tmp.path(), Dataset::Readings),
        [
            format!("date=2024-03-10/{name}"),
            format!("date=2024-03-11/{name}")
        ]
    );
    assert_eq!(rows(tmp.path(), Dataset::Readings), 20);
    assert_eq!(rows(tmp.path(), Dataset::Frames), 10);
    let kv = kv_metadata(&parquet_files(tmp.path(), Dataset::Frames)[0]);
    assert_eq!(kv["feeder.first_offset"], "0");
    assert_eq!(kv["feeder.last_offset"], "9");
}

#[test]
fn restart_finds_forced_boundaries_removes_stale_temps_and_replays_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fs = LocalFs::new(root).unwrap();

    // run 1: [0, 9] written and committed (next = 10), [10, 16] written, then a crash
    // before its commit, in the middle of writing: its frames file never appeared, and a
    // temporary file was left behind.
    write(&fs, 0, 9, "run-1");
    let uncommitted = write(&fs, 10, 16, "run-1");
    let frames_file = uncommitted
        .iter()
        .find(|f| f.starts_with("frames/"))
        .unwrap();
    std::fs::remove_file(root.join(frames_file)).unwrap();
    let name = naming::file_name(TOPIC, 0, 10, 16);
    let stale = format!(
        "frames/date=2024-03-11/{}",
        naming::temp_name(&name, 0xdead)
    );
    std::fs::write(root.join(&stale), b"partial").unwrap();
    // a temporary file of another partition (another writer's business) stays
    let other = format!(
        "frames/date=2024-03-11/{}",
        naming::temp_name(&naming::file_name(TOPIC, 1, 0, 5), 1)
    );
    std::fs::write(root.join(&other), b"theirs").unwrap();
    let readings_before: Vec<(String, Vec<u8>)> = parquet_files(root, Dataset::Readings)
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
        .collect();

    // restart: the first record received is the committed position, 10
    let plan = recover(&fs, TOPIC, 0, 10).unwrap();
    assert_eq!(plan.forced_boundaries(), [16]);
    assert_eq!(plan.committed_ranges, 1);
    assert_eq!(plan.stale_temp_removed, 1);
    assert!(!root.join(&stale).exists());
    assert!(root.join(&other).exists());

    // the buffer's thresholds (3 records) would cut [10, 16] elsewhere: the boundary wins
    let limits = Limits {
        max_records: 3,
        max_bytes: 1 << 20,
        max_age: std::time::Duration::from_secs(5),
        max_dates: 64,
    };
    let mut buf = PartitionBuffer::new(limits, &plan);
    let mut written = Vec::new();
    for rec in records(10..20) {
        for batch in buf.offer(rec, Instant::now()).ready {
            let report =
                write_range(&fs, spec(batch.first, batch.last, "run-2"), &batch.records).unwrap();
            written.push((batch.first, batch.last, batch.reason, report.files.len()));
        }
    }
    assert_eq!(written[0].0..=written[0].1, 10..=16);
    assert_eq!(written[0].2, FlushReason::Forced);
    assert_eq!(written[1].0..=written[1].1, 17..=19);

    // the replayed range has the same names, the missing frames file is back, and the
    // readings files hold the same rows (only the writer id in the metadata differs)
    assert!(root.join(frames_file).exists());
    let readings_after = parquet_files(root, Dataset::Readings);
    for (path, _) in &readings_before {
        assert!(
            readings_after
                .iter()
                .any(|p| &p.display().to_string() == path)
        );
    }
    for (path, _) in readings_before.iter().filter(|(p, _)| p.contains(&name)) {
        let p = std::path::Path::new(path);
        assert_eq!(kv_metadata(p)["feeder.writer_id"], "run-2");
    }
    assert_eq!(rows(root, Dataset::Frames), 20);
    assert_eq!(rows(root, Dataset::Readings), 40);
    assert_unique(&reading_keys(root));
    assert_unique(&keys(root, Dataset::Frames));
    assert!(
        all_entries(root, Dataset::Readings)
            .iter()
            .all(|e| !e.contains(".tmp-"))
    );
}

#[test]
fn a_rewind_into_stored_ranges_skips_or_replays_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fs = LocalFs::new(root).unwrap();
    write(&fs, 0, 4, "run-1");
    write(&fs, 5, 9, "run-1");
    let before = all_entries(root, Dataset::Readings);
    // the group's offsets expired and the log start is now 2: [0, 4] cannot be replayed
    // from its start (skip the rest of it), [5, 9] is replayed to the same name
    let plan = recover(&fs, TOPIC, 0, 2).unwrap();
    assert_eq!(plan.forced_boundaries(), [9]);
    let mut buf = PartitionBuffer::new(
        Limits {
            max_records: 100,
            max_bytes: 1 << 20,
            max_age: std::time::Duration::from_secs(5),
            max_dates: 64,
        },
        &plan,
    );
    let mut skipped = 0;
    for rec in records(2..10) {
        let out = buf.offer(rec, Instant::now());
        skipped += out.skipped;
        for b in out.ready {
            write_range(&fs, spec(b.first, b.last, "run-2"), &b.records).unwrap();
        }
    }
    assert_eq!(skipped, 3);
    assert_eq!(all_entries(root, Dataset::Readings), before);
    assert_eq!(rows(root, Dataset::Frames), 10);
    assert_unique(&reading_keys(root));
}
