//! `cargo bench -p feeder-benches --bench pipeline`: the whole pipeline in one process
//! (open-loop load generator, edge, stream, writer, the embedded broker), at a few fixed
//! offered loads, one fresh pipeline per load, printing per load: achieved readings/s end
//! to end, ack latency, CPU seconds per million readings for each stage, peak RSS, and
//! whether every acked frame was stored exactly once.
//!
//! - The pipeline is the demo's (`feeder::pipeline`), with each stage on a runtime of
//!   its own whose threads carry its name, and the load generator on the bench's own
//!   runtime (`loadgen`): CPU is charged per thread name ([`feeder_benches::thread_cpu`]).
//!   librdkafka's threads (`rdk:*`) serve every stage's clients and cannot be told
//!   apart, so they are one column; the mock broker's thread is another.
//!   Threads that exit between two samples (the writer's per-flush file threads, probe
//!   clients) are the `exited` column (process CPU minus every sampled thread); the
//!   stages' sum includes it, so that sum is an upper bound.
//! - Open loop (`feeder loadgen --scenario steady`): requests are due at the offered
//!   rate whatever the pipeline does; latency counts from the intended send time.
//! - Each load's fresh pipeline is first warmed up by a small fleet of its own (1 s at
//!   100 frames/s, then drained; not measured): consumer groups joined (the embedded
//!   broker answers a first join at once, `feeder_kafka::embedded`), partitions
//!   recovered, producers connected; that is start-up, not throughput. The warm-up's
//!   length is printed; the demo shows the cold start.
//! - Readings are meter readings plus vehicle samples, offered and stored alike (the
//!   demo's end-to-end figure counts meter readings only); end to end is from
//!   the first send to the moment both consumer groups have no lag.
//! - The embedded broker is memory only and evicts a partition's oldest data past
//!   ~5 MiB: a load the stream cannot keep up with loses raw records there, and the
//!   exactly-once column says so.
//!
//! Settings: `FEEDER_PIPELINE_RATES` (frames/s, comma-separated), `FEEDER_PIPELINE_SECONDS`
//! (per load), `FEEDER_PIPELINE_WORKERS` (threads per stage runtime).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use feeder::pipeline::{Pipeline, PipelineConfig};
use feeder_benches::peak_rss;
use feeder_benches::thread_cpu::{Sampler, Usage};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_sim::loadgen::{OpenLoopConfig, OpenLoopReport, Scenario, run_open_loop};
use tokio_util::sync::CancellationToken;

const DEFAULT_RATES: &[f64] = &[1_000.0, 2_500.0, 4_000.0, 5_500.0];
const DEFAULT_SECONDS: f64 = 10.0;
/// The demo's fleet.
const METERS: usize = 400;
const VEHICLES: usize = 40;
const PARTITIONS: i32 = 6;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The warm-up: its own meters, at a low rate, briefly.
const WARM_DEVICES: usize = 24;
const WARM_RATE: f64 = 100.0;
const WARM_SECONDS: f64 = 1.0;
/// Thread groups, in column order.
const GROUPS: [&str; 7] = [
    "loadgen", "edge", "stream", "writer", "rdkafka", "broker", "other",
];

fn group(thread: &str) -> &'static str {
    match thread {
        "loadgen" | "edge" | "stream" | "writer" => GROUPS
            .iter()
            .find(|g| **g == thread)
            .copied()
            .unwrap_or("other"),
        t if t.starts_with("rdk:mock") => "broker",
        // librdkafka's threads and rust-rdkafka's "producer polling thread"
        t if t.starts_with("rdk:") || t.starts_with("producer") => "rdkafka",
        _ => "other",
    }
}

/// One offered load's figures.
struct Row {
    offered_frames: f64,
    offered_readings: f64,
    achieved_readings: f64,
    acked_frames_per_sec: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    late: u64,
    /// p99 of each second of the run, ms.
    p99_series: Vec<f64>,
    usage: Usage,
    readings: u64,
    peak_rss_mib: f64,
    exactly_once: String,
    /// Seconds from the pipeline's start to the warm-up fleet's frames all stored.
    warm_up: f64,
    /// Where the frames were when sending ended.
    tail: String,
}

fn main() -> anyhow::Result<()> {
    let rates = env_list("FEEDER_PIPELINE_RATES").unwrap_or_else(|| DEFAULT_RATES.to_vec());
    let seconds = env_f64("FEEDER_PIPELINE_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let workers = env_f64("FEEDER_PIPELINE_WORKERS").map_or(2, |w| w.max(1.0) as usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loadgen")
        .thread_keep_alive(Duration::from_secs(600))
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("feeder-pipeline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // on a worker (named `loadgen`), not on this thread: `block_on` polls its future here
    let task = rt.spawn({
        let dir = dir.clone();
        async move { run(&dir, &rates, seconds, workers).await }
    });
    let result = rt
        .block_on(task)
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
    let _ = std::fs::remove_dir_all(&dir);
    rt.shutdown_background();
    result
}

async fn run(dir: &Path, rates: &[f64], seconds: f64, workers: usize) -> anyhow::Result<()> {
    let fleet = dir.join("fleet");
    std::fs::create_dir_all(&fleet)?;
    let (registry, secrets) = (fleet.join("registry.jsonl"), fleet.join("keys.jsonl"));
    keygen(&KeygenConfig {
        meters: METERS,
        vehicles: VEHICLES,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(13),
        ..KeygenConfig::default()
    })?;
    // a small fleet of its own warms each pipeline up (the measured fleet's seqs start at 1)
    let warm = fleet.join("warm-keys.jsonl");
    let warm_registry = fleet.join("warm-registry.jsonl");
    keygen(&KeygenConfig {
        meters: WARM_DEVICES,
        vehicles: 0,
        registry: warm_registry.clone(),
        secrets: warm.clone(),
        seed: Some(14),
        id_prefix_meter: "warm-".into(),
        ..KeygenConfig::default()
    })?;
    let mut both = std::fs::read_to_string(&registry)?;
    both.push_str(&std::fs::read_to_string(&warm_registry)?);
    std::fs::write(&registry, both)?;
    let fleets = Fleets {
        registry,
        secrets,
        warm,
    };
    println!(
        "pipeline bench: {METERS} meters + {VEHICLES} vehicles, {PARTITIONS} partitions, \
         embedded broker, {seconds} s per load, {workers} threads per stage runtime, \
         {} cores, load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let sampler = Sampler::start(Duration::from_millis(200));
    let mut rows = Vec::new();
    for (i, &rate) in rates.iter().enumerate() {
        let data = dir.join(format!("run-{i}"));
        match one_load(i, &data, &fleets, rate, seconds, workers, &sampler).await {
            Ok(row) => {
                print_row(&row);
                rows.push(row);
            }
            Err(e) => println!("offered {rate:.0} frames/s: failed: {e:#}"),
        }
        let _ = std::fs::remove_dir_all(&data);
    }
    println!("\nload average after: {}", load_average());
    print_table(&rows);
    Ok(())
}

/// The key files: the measured fleet, the warm-up fleet, and one registry for both.
struct Fleets {
    registry: PathBuf,
    secrets: PathBuf,
    warm: PathBuf,
}

/// Plays `secrets` open loop, steady at `rate` frames/s for `seconds`.
async fn play(
    pipeline: &Pipeline,
    secrets: &Path,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<OpenLoopReport> {
    let mut lg = OpenLoopConfig::new(pipeline.edge_url(), secrets);
    lg.scenario = Scenario::Steady;
    lg.rate = rate;
    lg.seconds = seconds;
    lg.max_in_flight = 256;
    Ok(run_open_loop(lg, CancellationToken::new()).await?)
}

async fn one_load(
    i: usize,
    data: &Path,
    fleets: &Fleets,
    rate: f64,
    seconds: f64,
    workers: usize,
    sampler: &Sampler,
) -> anyhow::Result<Row> {
    let run_id = format!("bench-{}-{i}", std::process::id());
    let topics = Topics::with_prefix(&run_id, PARTITIONS, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), topics.partitions)?;
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let mut cfg = PipelineConfig::new(kafka, topics, fleets.registry.clone(), data.into());
    cfg.stream.group_id = format!("{run_id}-stream");
    cfg.writer.group_id = format!("{run_id}-writer");
    cfg.stage_workers = Some(workers);
    let pipeline = Pipeline::start(cfg).await?;
    // warm-up, not measured: consumer groups joined, partitions recovered, producers
    // connected
    let warm_started = Instant::now();
    play(&pipeline, &fleets.warm, WARM_RATE, WARM_SECONDS).await?;
    pipeline.wait_drained(DRAIN_TIMEOUT).await?;
    let warm_up = warm_started.elapsed().as_secs_f64();
    let (warm_readings, warm_frames) = (
        readings_stored(&pipeline.writer_stats),
        pipeline.writer_stats.frames_written.load(Ordering::Relaxed),
    );

    peak_rss::reset();
    let mark = sampler.mark();
    let started = Instant::now();
    let report = play(&pipeline, &fleets.secrets, rate, seconds).await?;
    let sent_for = started.elapsed().as_secs_f64();
    let stored_when_sent =
        pipeline.writer_stats.frames_written.load(Ordering::Relaxed) - warm_frames;
    let checked_when_sent = pipeline.stream_stats.checked.load(Ordering::Relaxed);
    let drained = pipeline.wait_drained(DRAIN_TIMEOUT).await;
    let elapsed = started.elapsed().as_secs_f64();
    let usage = sampler.since(&mark, group);
    let peak_rss_mib = peak_rss::peak_mib();

    let ws = pipeline.writer_stats.clone();
    let ss = pipeline.stream_stats.clone();
    pipeline.stop().await?;
    drop(broker);
    drained?;
    let readings = readings_stored(&ws) - warm_readings;
    let stored = ws.frames_written.load(Ordering::Relaxed) - warm_frames;
    let t = &report.total;
    let quarantined = ss.quarantined.load(Ordering::Relaxed);
    let exactly_once = if stored == t.frames_acked && quarantined == 0 {
        "ok".to_string()
    } else {
        format!(
            "NO: {stored} stored of {} acked, {quarantined} quarantined",
            t.frames_acked
        )
    };
    let per_frame = t.readings_acked as f64 / t.frames_acked.max(1) as f64;
    Ok(Row {
        offered_frames: rate,
        offered_readings: rate * per_frame,
        achieved_readings: readings as f64 / elapsed,
        acked_frames_per_sec: t.achieved_frames_per_sec,
        p50: t.ack_latency_ms.p50,
        p99: t.ack_latency_ms.p99,
        p999: t.ack_latency_ms.p999,
        late: t.requests_late,
        p99_series: report.series.iter().map(|p| p.ack_latency_ms.p99).collect(),
        usage,
        readings,
        peak_rss_mib,
        exactly_once,
        warm_up,
        tail: format!(
            "sending {sent_for:.1} s; then {:.1} s until stored; when sending ended, \
             {} frames were acked, {} checked (warm-up included), {} stored",
            elapsed - sent_for,
            t.frames_acked,
            checked_when_sent,
            stored_when_sent
        ),
    })
}

/// Meter readings and vehicle samples stored: what the load generator counts as
/// readings offered and acked.
fn readings_stored(ws: &feeder_writer::WriterStats) -> u64 {
    ws.readings_written.load(Ordering::Relaxed) + ws.telematics_written.load(Ordering::Relaxed)
}

fn print_row(r: &Row) {
    println!(
        "offered {:.0} frames/s: acked {:.0} frames/s, {:.0} readings/s end to end, \
         p50/p99/p999 {:.1}/{:.1}/{:.1} ms, late {}, CPU {:.1} s (unaccounted {:.2} s), \
         peak RSS {:.0} MiB, exactly once: {} (warm-up {:.1} s)",
        r.offered_frames,
        r.acked_frames_per_sec,
        r.achieved_readings,
        r.p50,
        r.p99,
        r.p999,
        r.late,
        r.usage.process,
        r.usage.unaccounted,
        r.peak_rss_mib,
        r.exactly_once,
        r.warm_up
    );
    let series: Vec<String> = r.p99_series.iter().map(|p| format!("{p:.0}")).collect();
    println!("  p99 ms per second: {}", series.join(" "));
    println!("  {}", r.tail);
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| offered frames/s | offered readings/s | achieved readings/s e2e | ack p50 / p99 / p999 ms \
         | CPU s per M readings: {} / exited | edge+stream+writer (+rdkafka) | peak RSS MiB | exactly once |",
        GROUPS.join(" / ")
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let m = r.readings.max(1) as f64 / 1e6;
        let mut per: Vec<String> = GROUPS
            .iter()
            .map(|g| format!("{:.2}", r.usage.get(g) / m))
            .collect();
        per.push(format!("{:.2}", r.usage.unaccounted / m));
        // threads gone before a sample: mostly the writer's per-flush file threads, so
        // the stages' sum includes them (an upper bound)
        let stages = ["edge", "stream", "writer"]
            .iter()
            .map(|g| r.usage.get(g))
            .sum::<f64>()
            + r.usage.unaccounted.max(0.0);
        println!(
            "| {:.0} | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} | {} | {:.2} ({:.2}) | {:.0} | {} |",
            r.offered_frames,
            r.offered_readings,
            r.achieved_readings,
            r.p50,
            r.p99,
            r.p999,
            per.join(" / "),
            stages / m,
            (stages + r.usage.get("rdkafka")) / m,
            r.peak_rss_mib,
            r.exactly_once
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn env_list(name: &str) -> Option<Vec<f64>> {
    let v = std::env::var(name).ok()?;
    let list: Vec<f64> = v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    (!list.is_empty()).then_some(list)
}
