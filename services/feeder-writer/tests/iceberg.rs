//! Iceberg tables without Kafka: ranges appended through [`IcebergTables`] into a real
//! SQLite catalog (iceberg-rust's SQL catalog, the one pyiceberg's `SqlCatalog` reads),
//! read back with iceberg-rust's own scan. A replayed range adds nothing, a range whose
//! head a table already holds adds only its tail, and writers committing at once to the
//! same tables (other partitions, or a zombie owner of the same one) lose and duplicate
//! nothing. The end-to-end test with a broker, SIGKILLs and pyiceberg as the reader is
//! `services/feeder/tests/iceberg_lifecycle.rs`.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::*;
use feeder_writer::flush::RangeSpec;
use feeder_writer::iceberg::{IcebergSettings, IcebergTables, offsets};
use feeder_writer::schema::Dataset;
use feeder_writer::{SourceRecord, TopicKind};
use futures::TryStreamExt;
use prost::Message;

const TOPIC: &str = "t1.checked";

fn records(partition: i32, offsets: std::ops::RangeInclusive<i64>) -> Vec<SourceRecord> {
    offsets
        .map(|o| SourceRecord {
            offset: o,
            timestamp_ms: Some(BASE_TS),
            payload: Some(
                checked_frame(&format!("mtr-p{partition}"), o as u64 + 1).encode_to_vec(),
            ),
        })
        .collect()
}

fn spec(partition: i32, first: i64, last: i64, writer_id: &str) -> RangeSpec<'_> {
    RangeSpec {
        kind: TopicKind::Checked,
        topic: TOPIC,
        partition,
        first,
        last,
        writer_id,
    }
}

async fn open(root: &Path, writer: &str) -> IcebergTables {
    IcebergTables::open(&IcebergSettings::default(), root, writer)
        .await
        .unwrap()
}

async fn append(t: &IcebergTables, partition: i32, first: i64, last: i64) -> u64 {
    let recs = records(partition, first..=last);
    let report = t
        .append_range(spec(partition, first, last, "w"), &recs)
        .await
        .unwrap();
    report.rows.get(&Dataset::Readings).copied().unwrap_or(0)
}

/// (device_id, seq, obis) of every reading in the table, and the data files read.
async fn readings(t: &IcebergTables) -> (Vec<(String, i64, String)>, Vec<String>) {
    let table = t.table(Dataset::Readings).await.unwrap();
    let scan = table.scan().select_all().build().unwrap();
    let files: Vec<String> = scan
        .plan_files()
        .await
        .unwrap()
        .map_ok(|task| task.data_file_path.clone())
        .try_collect()
        .await
        .unwrap();
    let batches: Vec<_> = scan.to_arrow().await.unwrap().try_collect().await.unwrap();
    let mut keys = Vec::new();
    for b in batches {
        use arrow::array::AsArray;
        let dev = b.column_by_name("device_id").unwrap().as_string::<i32>();
        let seq = b
            .column_by_name("seq")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let obis = b.column_by_name("obis").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            keys.push((
                dev.value(i).to_string(),
                seq.value(i),
                obis.value(i).to_string(),
            ));
        }
    }
    keys.sort();
    (keys, files)
}

fn assert_unique<T: Ord + Clone + std::fmt::Debug + std::hash::Hash>(items: &[T], what: &str) {
    let set: HashSet<&T> = items.iter().collect();
    assert_eq!(set.len(), items.len(), "{what} repeated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_is_appended_once_and_a_held_head_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let t = open(tmp.path(), "w").await;

    let first = append(&t, 0, 0, 9).await;
    assert!(first > 0);
    let table = t.table(Dataset::Readings).await.unwrap();
    assert_eq!(table.metadata().snapshots().len(), 1);

    // the replay after a crash between the snapshot and the Kafka commit adds nothing
    assert_eq!(append(&t, 0, 0, 9).await, 0);
    // a range whose head the table holds (a zombie's, or regrouped): only the tail
    let tail = append(&t, 0, 5, 14).await;
    assert_eq!(tail, first / 2, "offsets 10..=14 only");

    let table = t.table(Dataset::Readings).await.unwrap();
    let snaps: Vec<_> = table.metadata().snapshots().collect();
    assert_eq!(snaps.len(), 2, "one snapshot per range that added rows");
    let summary = &table
        .metadata()
        .current_snapshot()
        .unwrap()
        .summary()
        .additional_properties;
    assert_eq!(summary[offsets::FIRST_OFFSET], "10");
    assert_eq!(summary[offsets::LAST_OFFSET], "14");
    assert_eq!(summary[offsets::OFFSETS], format!("{{\"{TOPIC}/0\":14}}"));

    let (keys, files) = readings(&t).await;
    assert_eq!(keys.len() as u64, first + tail);
    assert_unique(&keys, "reading");
    assert_unique(&files, "data file");
    // both days of the straddled midnight, one file per day and range
    assert!(
        files.iter().all(|f| f.contains("/data/ts_day=")),
        "{files:?}"
    );

    // a restarted writer (a new process) sees the same offsets
    drop(t);
    let again = open(tmp.path(), "w2").await;
    assert_eq!(append(&again, 0, 0, 14).await, 0);
}

/// Three writers commit at once into the same tables: two own other partitions, the
/// third is a zombie replaying partition 0's ranges while its owner writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // create the tables once, so the writers race on commits, not on creation
    let setup = open(tmp.path(), "setup").await;
    let seed = append(&setup, 9, 0, 0).await;
    let (a, b, zombie) = (
        open(tmp.path(), "a").await,
        open(tmp.path(), "b").await,
        open(tmp.path(), "zombie").await,
    );
    const RANGES: i64 = 8;
    let run = |t: IcebergTables, partition: i32| async move {
        let mut rows = 0;
        for r in 0..RANGES {
            rows += append(&t, partition, r * 5, r * 5 + 4).await;
        }
        rows
    };
    let (ra, rb, rz) = tokio::join!(run(a, 0), run(b, 1), run(zombie, 0));
    let per_range = append(&setup, 8, 0, 4).await;
    assert_eq!(
        ra + rz,
        per_range * RANGES as u64,
        "partition 0 exactly once"
    );
    assert_eq!(rb, per_range * RANGES as u64);

    let (keys, files) = readings(&setup).await;
    assert_unique(&keys, "reading");
    assert_unique(&files, "data file");
    assert_eq!(
        keys.len() as u64,
        seed + per_range + 2 * per_range * RANGES as u64
    );
    let table = setup.table(Dataset::Readings).await.unwrap();
    let committed = offsets::committed(table.metadata()).unwrap();
    assert_eq!(committed[&offsets::key(TOPIC, 0)], RANGES * 5 - 1);
    assert_eq!(committed[&offsets::key(TOPIC, 1)], RANGES * 5 - 1);
}

/// The same SQL catalog on Postgres (`--iceberg-catalog postgres://...`): a range once,
/// its replay nothing. The server is a real one: tests/run.sh starts it
/// (tests/setup-postgres.sh) and sets `FEEDER_TEST_POSTGRES`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_catalog_works_on_postgres() {
    let uri = std::env::var("FEEDER_TEST_POSTGRES").expect(
        "FEEDER_TEST_POSTGRES is not set: run tests/run.sh, or start a server with \
         `tests/setup-postgres.sh start DIR` and set it to the URL it prints",
    );
    let tmp = tempfile::tempdir().unwrap();
    let settings = IcebergSettings {
        catalog_uri: Some(uri),
        // a name of its own per run: rows of other names are other catalogs
        catalog_name: format!("feeder-{}", std::process::id()),
        ..IcebergSettings::default()
    };
    let t = IcebergTables::open(&settings, tmp.path(), "w")
        .await
        .unwrap();
    let rows = append(&t, 0, 0, 9).await;
    assert!(rows > 0);
    assert_eq!(append(&t, 0, 0, 9).await, 0, "the replay adds nothing");
    let (keys, files) = readings(&t).await;
    assert_eq!(keys.len() as u64, rows);
    assert_unique(&files, "data file");
}

/// The warehouse on S3 (a real S3-protocol server, moto), the catalog in SQLite: ranges
/// appended through the writer's S3 client land as objects under the writer's prefix, a
/// replay adds nothing, and pyiceberg (its own S3 `FileIO`, pyarrow's) reads every row
/// once from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_on_s3_are_written_once_and_read_by_pyiceberg() {
    let moto = feeder_testkit::MotoS3::start("feeder-ice");
    let tmp = tempfile::tempdir().unwrap();
    let s3 = s3_config(&moto.endpoint, "feeder-ice", "utility/feeder");
    let catalog = tmp.path().join("catalog.db");
    let settings = IcebergSettings {
        catalog_uri: Some(format!("sqlite://{}?mode=rwc", catalog.display())),
        s3: Some(Box::new(s3.clone())),
        ..IcebergSettings::default()
    };
    // the default catalog is a file under --data, which S3 storage has none of
    let no_catalog = IcebergSettings {
        s3: Some(Box::new(s3.clone())),
        ..IcebergSettings::default()
    };
    assert!(no_catalog.validate().is_err());

    let t = IcebergTables::open(&settings, tmp.path(), "w")
        .await
        .unwrap();
    let first = append(&t, 0, 0, 9).await;
    assert!(first > 0);
    assert_eq!(
        append(&t, 0, 0, 9).await,
        0,
        "a replayed range adds nothing"
    );
    let tail = append(&t, 0, 5, 14).await;
    let (keys, files) = readings(&t).await;
    assert_eq!(keys.len() as u64, first + tail);
    assert_unique(&keys, "reading");
    assert_unique(&files, "data file");
    assert!(
        files
            .iter()
            .all(|f| f.starts_with("s3://feeder-ice/utility/feeder/iceberg/warehouse/")),
        "{files:?}"
    );
    // nothing of the warehouse on local disk
    assert!(!tmp.path().join("iceberg").exists());

    let script = format!(
        "from pyiceberg.catalog.sql import SqlCatalog\n\
         c = SqlCatalog('feeder', uri='sqlite:///{db}', **{{'s3.endpoint': '{ep}', \
         's3.access-key-id': '{ak}', 's3.secret-access-key': '{sk}', 's3.region': 'us-east-1'}})\n\
         t = c.load_table('feeder.readings').scan().to_arrow()\n\
         keys = set(zip(t['device_id'].to_pylist(), t['seq'].to_pylist(), t['obis'].to_pylist()))\n\
         print(t.num_rows, len(keys))",
        db = catalog.display(),
        ep = moto.endpoint,
        ak = feeder_testkit::ACCESS_KEY,
        sk = feeder_testkit::SECRET_KEY,
    );
    let out = feeder_testkit::python(&["-c", &script]);
    let n: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
    assert_eq!(
        n,
        vec![first + tail, first + tail],
        "pyiceberg: rows, distinct"
    );
}
