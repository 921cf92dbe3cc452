//! Writer throughput for the `readings` dataset on one core: checked records to Arrow
//! (the writer's conversion) and Arrow to zstd Parquet (the writer's file settings). The
//! encode-only number is the one to set beside `benches/pyarrow_baseline.py`, which writes
//! the very same Arrow data (read back from the file this bench leaves behind) with the
//! same settings; bytes per row are printed for both.
//!
//! `cargo bench -p feeder-benches --bench writer_readings` runs the baseline itself when
//! `FEEDER_PYTHON` names a python with pyarrow (the venv of tests/setup-python.sh):
//! Feeder's encode and pyarrow's, alternating [`ROUNDS`] times in the same run, best
//! against best, and prints the ratio. Without `FEEDER_PYTHON`, run
//! `python benches/pyarrow_baseline.py` after it.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use feeder_proto::pipeline::CheckedFrame;
use feeder_proto::v1::{Frame, Reading};
use feeder_writer::parquet_file::{self, FileProvenance};
use feeder_writer::schema::Dataset;
use feeder_writer::{SourceRecord, TopicKind, records_to_batches};
use prost::Message;

/// Frames per flush and readings per frame: 20,000 frames is the writer's default flush.
const FRAMES: usize = 20_000;
const DEVICES: usize = 2_000;

const PROV: FileProvenance<'static> = FileProvenance {
    topic: "feeder.checked",
    partition: 0,
    first_offset: 0,
    last_offset: FRAMES as i64 - 1,
    writer_id: "bench",
};

/// Where the readings batch is left for the pyarrow baseline (uncompressed Parquet).
fn handoff_path() -> PathBuf {
    std::env::var_os("FEEDER_BENCH_READINGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("feeder-bench-readings.parquet"))
}

/// A typical 15-minute meter frame: import/export registers, power, voltage.
fn records() -> Vec<SourceRecord> {
    let t0 = 1_710_028_800_000i64; // 2024-03-10T00:00:00Z
    (0..FRAMES)
        .map(|i| {
            let dev = i % DEVICES;
            let seq = (i / DEVICES) as u64 + 1;
            let ts = t0 + seq as i64 * 900_000;
            let r = |obis: &str, value: i64, scaler: i32, unit: i32, interval_s: u32| Reading {
                ts_ms: ts,
                interval_s,
                obis: obis.into(),
                value,
                scaler,
                unit,
                status: 0,
            };
            let frame = Frame {
                sent_at_ms: ts,
                firmware: "4.2.1".into(),
                readings: vec![
                    r(
                        "1-0:1.8.0",
                        1_000_000 + (dev as i64) * 37 + seq as i64 * 250,
                        0,
                        30,
                        900,
                    ),
                    r("1-0:2.8.0", 5_000 + seq as i64 * 3, 0, 30, 900),
                    r("1-0:1.7.0", 800 + (i as i64 * 7919) % 400, 0, 27, 0),
                    r("1-0:32.7.0", 2290 + (i as i64 * 31) % 30, -1, 35, 0),
                ],
                ..Default::default()
            };
            let cf = CheckedFrame {
                device_id: format!("mtr-{dev:06}"),
                seq,
                key_id: "k1".into(),
                payload: frame.encode_to_vec().into(),
                signature: vec![0x5a; 64].into(),
                received_at_ms: ts + 1_500,
                edge_id: "edge-0".into(),
                source_offset: i as i64,
                ..Default::default()
            };
            SourceRecord {
                offset: i as i64,
                timestamp_ms: Some(ts + 1_600),
                payload: Some(cf.encode_to_vec()),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let records = records();
    let converted = records_to_batches(TopicKind::Checked, &records).expect("convert");
    let readings: Vec<_> = converted
        .batches
        .iter()
        .filter(|b| b.dataset == Dataset::Readings)
        .map(|b| b.batch.clone())
        .collect();
    let rows: usize = readings.iter().map(|b| b.num_rows()).sum();

    // bytes per row with the writer's settings, and the hand-off file for pyarrow
    let bytes: usize = readings
        .iter()
        .map(|b| {
            parquet_file::encode(Dataset::Readings, b, &PROV)
                .expect("encode")
                .len()
        })
        .sum();
    eprintln!(
        "readings: {rows} rows in {} file(s), {bytes} bytes, {:.2} bytes/row (feeder writer)",
        readings.len(),
        bytes as f64 / rows as f64
    );
    write_handoff(&readings);
    let encode_all = || {
        for batch in &readings {
            black_box(parquet_file::encode(Dataset::Readings, batch, &PROV).expect("encode"));
        }
    };
    let python = std::env::var_os("FEEDER_PYTHON");
    let (mut feeder_best, mut pyarrow_best) = (0.0f64, 0.0f64);
    for round in 1..=if python.is_some() { ROUNDS } else { 1 } {
        let (best, median) = best_and_median(BEST_OF, encode_all);
        let best = rows as f64 / best / 1e6;
        feeder_best = feeder_best.max(best);
        eprintln!(
            "round {round}: encode_parquet: best of {BEST_OF} {best:.3} Mrows/s, median {:.3} \
             Mrows/s",
            rows as f64 / median / 1e6
        );
        if let Some(py) = &python {
            match pyarrow_best_mrows(py) {
                Some(b) => {
                    pyarrow_best = pyarrow_best.max(b);
                    eprintln!("round {round}: pyarrow best {b:.3} Mrows/s (feeder's settings)");
                }
                None => eprintln!("round {round}: pyarrow baseline did not run"),
            }
        }
    }
    if pyarrow_best > 0.0 {
        eprintln!(
            "writer vs pyarrow, same rows, same settings, best against best over {ROUNDS} \
             alternating rounds: {feeder_best:.3} vs {pyarrow_best:.3} Mrows/s = {:.2}x",
            feeder_best / pyarrow_best
        );
    }

    let mut g = c.benchmark_group("writer_readings");
    g.throughput(Throughput::Elements(rows as u64));
    g.sample_size(10);
    g.bench_function("encode_parquet", |b| {
        b.iter(|| {
            for batch in &readings {
                black_box(parquet_file::encode(Dataset::Readings, batch, &PROV).expect("encode"));
            }
        })
    });
    g.bench_function("convert_and_encode", |b| {
        b.iter(|| {
            let c = records_to_batches(TopicKind::Checked, &records).expect("convert");
            for part in c.batches.iter().filter(|p| p.dataset == Dataset::Readings) {
                black_box(
                    parquet_file::encode(Dataset::Readings, &part.batch, &PROV).expect("encode"),
                );
            }
        })
    });
    g.finish();
}

/// Runs timed for the printed summary (after one warm-up).
const BEST_OF: usize = 15;
/// Alternating rounds of Feeder's encode and pyarrow's, so load from elsewhere on the
/// machine falls on both.
const ROUNDS: usize = 3;

/// Runs `benches/pyarrow_baseline.py` on the hand-off file; its best Mrows/s with
/// Feeder's settings (the script's last line).
fn pyarrow_best_mrows(python: &std::ffi::OsStr) -> Option<f64> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pyarrow_baseline.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .env("FEEDER_BENCH_READINGS", handoff_path())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("pyarrow best Mrows/s (feeder's settings): "))
        .and_then(|v| v.trim().parse().ok())
}

/// The best and the median seconds of `runs` runs of `f`, after one warm-up run.
fn best_and_median(runs: usize, f: impl Fn()) -> (f64, f64) {
    f();
    let mut secs: Vec<f64> = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    (secs[0], secs[secs.len() / 2])
}

/// Writes the readings batches, uncompressed, for `pyarrow_baseline.py` to load.
fn write_handoff(batches: &[arrow::record_batch::RecordBatch]) {
    use parquet::arrow::ArrowWriter;
    let path = handoff_path();
    let file = std::fs::File::create(&path).expect("handoff file");
    let mut w = ArrowWriter::try_new(file, Dataset::Readings.schema(), None).expect("writer");
    for b in batches {
        w.write(b).expect("write");
    }
    w.close().expect("close");
    eprintln!("arrow data for pyarrow_baseline.py: {}", path.display());
}

criterion_group!(benches, bench);
criterion_main!(benches);
