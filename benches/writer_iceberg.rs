//! Iceberg mode against plain Parquet, same records, same run: flushes of checked meter
//! frames written as Hive-partitioned Parquet files (`flush::write_range` on local disk:
//! temp file, fsync, rename) and appended to Iceberg tables (`IcebergTables::append_range`:
//! data files, then one snapshot per table through the SQLite catalog). Prints readings/s
//! and flushes/s of each, snapshots (commits)/s for Iceberg, and the ratio, best of
//! [`ROUNDS`] alternating rounds; also the last round's Iceberg rate against its first, as
//! the tables' history grows (each commit rewrites the table metadata, which lists every
//! snapshot).
//!
//! `cargo bench -p feeder-benches --bench writer_iceberg`

use std::time::Instant;

use feeder_proto::pipeline::CheckedFrame;
use feeder_proto::v1::{Frame, Reading};
use feeder_writer::flush::{RangeSpec, write_range};
use feeder_writer::iceberg::{IcebergSettings, IcebergTables};
use feeder_writer::schema::Dataset;
use feeder_writer::storage::LocalFs;
use feeder_writer::{SourceRecord, TopicKind};
use prost::Message;

/// Frames per flush (4 readings each), flushes per round, rounds.
const FRAMES: usize = 2_000;
const FLUSHES: usize = 10;
const ROUNDS: usize = 5;
const DEVICES: usize = 500;
const TOPIC: &str = "feeder.checked";

fn records(flush: usize) -> Vec<SourceRecord> {
    let t0 = 1_710_028_800_000i64;
    (0..FRAMES)
        .map(|j| {
            let i = flush * FRAMES + j;
            let dev = i % DEVICES;
            let seq = (i / DEVICES) as u64 + 1;
            let ts = t0 + seq as i64 * 900_000;
            let r = |obis: &str, value: i64, unit: i32, interval_s: u32| Reading {
                ts_ms: ts,
                interval_s,
                obis: obis.into(),
                value,
                scaler: 0,
                unit,
                status: 0,
            };
            let frame = Frame {
                sent_at_ms: ts,
                firmware: "4.2.1".into(),
                readings: vec![
                    r("1-0:1.8.0", 1_000_000 + seq as i64 * 250, 30, 900),
                    r("1-0:2.8.0", 5_000 + seq as i64 * 3, 30, 900),
                    r("1-0:1.7.0", 800 + (i as i64 * 7919) % 400, 27, 0),
                    r("1-0:32.7.0", 2290 + (i as i64 * 31) % 30, 35, 0),
                ],
                ..Default::default()
            };
            let cf = CheckedFrame {
                device_id: format!("mtr-{dev:06}"),
                seq,
                key_id: "k1".into(),
                payload: frame.encode_to_vec().into(),
                signature: vec![7; 64].into(),
                received_at_ms: ts + 1_000,
                edge_id: "edge-0".into(),
                ..Default::default()
            };
            SourceRecord {
                offset: i as i64,
                timestamp_ms: Some(ts),
                payload: Some(cf.encode_to_vec()),
            }
        })
        .collect()
}

fn spec(flush: usize) -> RangeSpec<'static> {
    RangeSpec {
        kind: TopicKind::Checked,
        topic: TOPIC,
        partition: 0,
        first: (flush * FRAMES) as i64,
        last: ((flush + 1) * FRAMES - 1) as i64,
        writer_id: "bench",
    }
}

/// Seconds for `FLUSHES` flushes starting at flush number `base`, and readings written.
fn parquet_round(fs: &LocalFs, base: usize, input: &[Vec<SourceRecord>]) -> (f64, u64) {
    let t = Instant::now();
    let mut readings = 0;
    for (k, recs) in input.iter().enumerate() {
        let r = write_range(fs, spec(base + k), recs).expect("parquet flush");
        readings += r.rows.get(&Dataset::Readings).copied().unwrap_or(0);
    }
    (t.elapsed().as_secs_f64(), readings)
}

async fn iceberg_round(
    t: &IcebergTables,
    base: usize,
    input: &[Vec<SourceRecord>],
) -> (f64, u64, u64) {
    let start = Instant::now();
    let (mut rows, mut snapshots) = (0, 0);
    for (k, recs) in input.iter().enumerate() {
        let r = t
            .append_range(spec(base + k), recs)
            .await
            .expect("iceberg flush");
        rows += r.rows.get(&Dataset::Readings).copied().unwrap_or(0);
        snapshots += r.files_by_dataset.len() as u64;
    }
    (start.elapsed().as_secs_f64(), rows, snapshots)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists bench targets
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = LocalFs::new(dir.path().join("parquet")).expect("parquet root");
    let tables = rt
        .block_on(IcebergTables::open(
            &IcebergSettings::default(),
            &dir.path().join("iceberg-root"),
            "bench",
        ))
        .expect("catalog");
    let (mut best_pq, mut best_ice, mut first_ice, mut last_ice) = (0f64, 0f64, 0f64, 0f64);
    let mut snaps_per_s = 0f64;
    let mut rows_per_flush = 0;
    for round in 0..ROUNDS {
        let base = round * FLUSHES;
        let input: Vec<_> = (base..base + FLUSHES).map(records).collect();
        let (pq_s, pq_rows) = parquet_round(&fs, base, &input);
        let (ice_s, ice_rows, snaps) = rt.block_on(iceberg_round(&tables, base, &input));
        assert_eq!(pq_rows, ice_rows, "same rows both ways");
        rows_per_flush = pq_rows / FLUSHES as u64;
        let (pq_rate, ice_rate) = (pq_rows as f64 / pq_s, ice_rows as f64 / ice_s);
        eprintln!(
            "round {round}: parquet {:.0} readings/s ({:.1} flushes/s), iceberg {:.0} readings/s ({:.1} flushes/s, {:.1} snapshots/s)",
            pq_rate,
            FLUSHES as f64 / pq_s,
            ice_rate,
            FLUSHES as f64 / ice_s,
            snaps as f64 / ice_s
        );
        if round == 0 {
            first_ice = ice_rate;
        }
        last_ice = ice_rate;
        best_pq = best_pq.max(pq_rate);
        if ice_rate > best_ice {
            best_ice = ice_rate;
            snaps_per_s = snaps as f64 / ice_s;
        }
    }
    println!(
        "writer_iceberg: {FRAMES} frames ({rows_per_flush} readings) a flush, best of {ROUNDS} rounds of {FLUSHES}: \
         parquet {:.0} readings/s ({:.1} flushes/s), iceberg {:.0} readings/s ({:.1} flushes/s, {:.1} snapshots/s) = {:.2}x parquet; \
         last iceberg round {:.2}x the first ({} snapshots a table by then)",
        best_pq,
        best_pq / rows_per_flush as f64,
        best_ice,
        best_ice / rows_per_flush as f64,
        snaps_per_s,
        best_ice / best_pq,
        last_ice / first_ice,
        ROUNDS * FLUSHES
    );
}
