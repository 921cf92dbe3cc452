//! `feeder demo`: the whole pipeline in one process against a simulated fleet, ending in
//! a summary and queries to paste.
//!
//! Without `--brokers` it runs on librdkafka's in-process mock cluster: an evaluation
//! broker, NOT durable (memory only). With `--brokers` the same run targets a real Kafka.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_sim::loadgen::{self, LoadgenConfig, LoadgenProgress};
use tokio_util::sync::CancellationToken;

use crate::attacks;
use crate::cli::DemoArgs;
use crate::pipeline::{Pipeline, PipelineConfig};

const MARKER: &str = ".feeder-demo";

/// Provisions the fleet as a utility would at scale: a provisioning key, and the registry
/// published to its topic with every line signed; the stages read the topic and take only
/// lines signed by that key.
async fn provision(
    kafka: &KafkaConfig,
    fleet: &Path,
    registry: &Path,
    topic: &str,
    create_topic: bool,
) -> anyhow::Result<feeder_kafka::registry_follow::TopicSource> {
    let key_file = fleet.join("provisioning.key");
    let public = crate::registry_publish::provisioning_key(&key_file, "demo-provisioning")?;
    let keys = feeder_core::registry_topic::ProvisioningKeys::parse("provisioning key", &public)?;
    if create_topic {
        feeder_kafka::ensure_compacted_topics(kafka, &[topic], 1, 1).await?;
    }
    let signer = crate::registry_publish::Signer::load(&key_file)?;
    let text = std::fs::read_to_string(registry)?;
    let published =
        crate::registry_publish::publish(kafka, topic, &text, Some(&signer), false).await?;
    println!(
        "registry: {} lines published to topic {topic}, signed by provisioning key demo-provisioning",
        published.lines
    );
    Ok(feeder_kafka::registry_follow::TopicSource {
        topic: topic.to_string(),
        keys,
    })
}

/// Makes `root` an empty demo directory; refuses to touch a directory the demo did not make.
fn prepare_root(root: &Path) -> anyhow::Result<()> {
    if root.exists() {
        let non_empty = std::fs::read_dir(root)?.next().is_some();
        if non_empty && !root.join(MARKER).exists() {
            anyhow::bail!(
                "{} exists and was not made by `feeder demo`; pass an empty --data directory",
                root.display()
            );
        }
        if non_empty {
            std::fs::remove_dir_all(root)?;
        }
    }
    std::fs::create_dir_all(root)?;
    std::fs::write(
        root.join(MARKER),
        "made by feeder demo; rerunning the demo replaces it\n",
    )?;
    Ok(())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let root = args.data.clone();
    prepare_root(&root)?;
    let root = root.canonicalize()?;
    let fleet = root.join("fleet");
    std::fs::create_dir_all(&fleet)?;
    let registry = fleet.join("registry.jsonl");
    let secrets = fleet.join("device-keys.jsonl");
    let summary = keygen(&KeygenConfig {
        meters: args.meters,
        vehicles: args.vehicles,
        ocmf: args.ocmf,
        registry: registry.clone(),
        secrets: secrets.clone(),
        ..KeygenConfig::default()
    })?;
    let victim = "mtr-000001";
    let revoked = attacks::provision_revocations(&registry, victim)?;
    println!(
        "fleet: {} meters, {} vehicles, {} EV chargers signing in OCMF ({} ed25519 + {} hmac-sha256 + {} P-256 keys) -> {}",
        summary.meters,
        summary.vehicles,
        summary.ocmf_keys,
        summary.ed25519_keys,
        summary.hmac_keys,
        summary.ocmf_keys,
        fleet.display()
    );

    // Every run gets its own topics and groups: a new fleet restarts its seqs at 1.
    let run_id = format!(
        "demo-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let registry_topic = Topics::with_prefix(&run_id, 6, 1).registry;
    let (broker, kafka, topics) = match &args.brokers {
        Some(b) => {
            println!("broker: Kafka at {b}");
            (
                None,
                KafkaConfig::new(b.clone()),
                Topics::with_prefix(&run_id, 6, 1),
            )
        }
        None => {
            let topics = Topics::with_prefix(&run_id, 6, 1);
            let mut all = topics.all_topics();
            all.push(&registry_topic);
            let broker = EmbeddedBroker::start(1, &all, topics.partitions)?;
            println!(
                "broker: EMBEDDED evaluation broker (librdkafka mock cluster at {}): in memory, NOT durable; \
                 use --brokers for a real Kafka",
                broker.bootstrap_servers()
            );
            let kafka = KafkaConfig::new(broker.bootstrap_servers());
            (Some(broker), kafka, topics)
        }
    };

    let source = provision(&kafka, &fleet, &registry, &registry_topic, broker.is_none()).await?;
    let raw_topic = topics.raw.clone();
    let mut cfg = PipelineConfig::new(kafka.clone(), topics, registry.clone(), root.clone());
    cfg.registry_topic = Some(source);
    cfg.stream.group_id = format!("{run_id}-stream");
    cfg.writer.group_id = format!("{run_id}-writer");
    if args.iceberg {
        cfg.writer.tables = feeder_writer::iceberg::TableFormat::Iceberg(Default::default());
    }
    let pipeline = Pipeline::start(cfg).await?;
    println!(
        "edge: {}  datasets: {}",
        pipeline.edge_url(),
        root.display()
    );
    println!("sending for {:.0} s...", args.seconds);

    let started = Instant::now();
    let (tx, rx) = tokio::sync::watch::channel(LoadgenProgress::default());
    let mut lg = LoadgenConfig::new(pipeline.edge_url(), secrets.clone());
    lg.seconds = args.seconds;
    let stop_progress = CancellationToken::new();
    if broker.is_some() {
        // the embedded broker drops unconsumed data past ~5 MiB per partition: never let
        // the stream stage fall that far behind the edge
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
        lg.hold = Some(hold_rx);
        tokio::spawn(hold_while_lagging(
            rx.clone(),
            pipeline.stream_stats.clone(),
            hold_tx,
            stop_progress.clone(),
        ));
    }
    lg.progress = Some(tx);
    let progress = tokio::spawn(show_progress(
        rx,
        stop_progress.clone(),
        pipeline.writer_stats.clone(),
        pipeline.stream_stats.clone(),
    ));
    let report = loadgen::run(lg, CancellationToken::new()).await?;
    stop_progress.cancel();
    let _ = progress.await;

    let cases = attacks::run(&pipeline.edge_url(), &secrets, revoked).await?;
    let vee = skipped_day(&pipeline.edge_url(), &secrets).await?;
    let forgeries = attacks::run_raw_topic(&kafka, &raw_topic, &secrets).await?;
    println!("draining...");
    pipeline.wait_drained(Duration::from_secs(180)).await?;
    let elapsed = started.elapsed();
    let ws = pipeline.writer_stats.clone();
    let ss = pipeline.stream_stats.clone();
    pipeline.stop().await?;
    drop(broker);

    let readings = ws.readings_written.load(Ordering::Relaxed);
    // every acked frame stored exactly once: the loadgen's plus the hostile frames that
    // were accepted as new
    let accepted_hostile = cases
        .iter()
        .filter(|c| c.code == 0 && c.quarantine_reason.is_none())
        .count() as u64;
    let expected_frames = report.frames_acked + accepted_hostile + VEE_FRAMES as u64;
    let stored_frames = ws.frames_written.load(Ordering::Relaxed);
    println!("\n=== Feeder demo summary ===");
    println!("frames sent         {}", report.frames_sent);
    println!("frames acked        {}", report.frames_acked);
    for (code, n) in &report.refused_by_code {
        println!("frames refused      {n} with code {code}");
    }
    println!("retries             {}", report.retries);
    println!(
        "ack latency         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(report.latency_us.p50),
        ms(report.latency_us.p99),
        ms(report.latency_us.max)
    );
    println!("hostile frames:");
    let mut all_ok = true;
    for c in &cases {
        all_ok &= c.ok();
        let downstream = c
            .quarantine_reason
            .map(|r| format!(", then quarantined as {r}"))
            .unwrap_or_default();
        println!(
            "  {:<15} {} seq {:<8} -> code {:>2} {}{}{}",
            c.case,
            c.device_id,
            c.seq,
            c.code,
            if c.message.is_empty() {
                String::new()
            } else {
                format!("({})", c.message)
            },
            downstream,
            if c.ok() { "" } else { "   << UNEXPECTED" }
        );
    }
    println!("written straight to the raw topic, not through an edge:");
    for f in &forgeries {
        println!(
            "  {:<22} {} seq {:<8} -> must be quarantined as {} (never stored as readings)",
            f.case,
            if f.device_id.is_empty() {
                "-"
            } else {
                &f.device_id
            },
            f.seq,
            f.quarantine_reason
        );
    }
    println!(
        "stream: {} checked, {} quarantined, {} gap flags",
        ss.checked.load(Ordering::Relaxed),
        ss.quarantined.load(Ordering::Relaxed),
        ss.gaps.load(Ordering::Relaxed)
    );
    println!(
        "stored: {} readings, {} telematics samples, {} events, {} frames, {} quarantined, in {} Parquet files",
        readings,
        ws.telematics_written.load(Ordering::Relaxed),
        ws.events_written.load(Ordering::Relaxed),
        ws.frames_written.load(Ordering::Relaxed),
        ws.quarantine_written.load(Ordering::Relaxed),
        ws.files_written.load(Ordering::Relaxed)
    );
    println!(
        "estimated: {} estimated rows (an interval of a gap, again when part of its gap arrived), {} superseded by late actuals (VEE; {} rows in dataset `estimates`): {vee} skipped a day, estimated by register proration when it reported again, then superseded when the day arrived late; the load generator keeps several frames of a meter in flight, so frames it delivered out of order did the same",
        ss.estimated.load(Ordering::Relaxed),
        ss.superseded.load(Ordering::Relaxed),
        ws.estimates_written.load(Ordering::Relaxed)
    );
    println!(
        "registry audit: {} changes in dataset `registry_changes` (every line the provisioning key signed, read back from the topic)",
        ws.registry_changes_written.load(Ordering::Relaxed)
    );
    println!(
        "throughput: {:.0} frames/s acked at the edge, {:.0} readings/s acked; {:.0} readings/s end to end (send start to all stored, {:.1} s)",
        report.frames_per_sec(),
        report.readings_per_sec(),
        readings as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "exactly once:       {stored_frames} frames stored for {expected_frames} acked and new ({})",
        if stored_frames == expected_frames {
            "ok"
        } else {
            "MISMATCH"
        }
    );
    if args.iceberg {
        print_iceberg_snippet(&root);
    } else {
        print_queries(&root);
    }
    if stored_frames != expected_frames {
        anyhow::bail!("{stored_frames} frames stored, {expected_frames} expected");
    }
    if !all_ok {
        anyhow::bail!("a hostile frame got an unexpected code");
    }
    Ok(())
}

/// Frames [`skipped_day`] sends.
const VEE_FRAMES: usize = 3;

/// VEE estimation on show: the fleet's last meter, at a fresh seq, sends its day `d`,
/// then `d + 2`: day `d + 1` is a known gap, estimated from the register difference;
/// then day `d + 1` arrives late and supersedes the estimates. Returns the meter's id.
async fn skipped_day(url: &str, secrets: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    use feeder_proto::v1::PushRequest;
    use feeder_proto::v1::ingest_client::IngestClient;

    const DAY_MS: i64 = 86_400_000;
    let key = feeder_core::keyfile::load_key_file(secrets)?
        .into_iter()
        // a household meter (an OCMF charger reports sessions, not days)
        .rfind(|k| {
            k.kind == feeder_core::DeviceKind::Meter && k.key.alg() != feeder_core::Alg::Ocmf
        })
        .context("no meter in the key file")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut dev = feeder_sim::fleet::SimDevice::from_key(key, now - 5 * DAY_MS);
    dev.skip_to_seq(5_000_000);
    let mut days: Vec<_> = (0..VEE_FRAMES).map(|_| dev.next_frame(now).frame).collect();
    let late = days.remove(1);
    days.push(late);
    let mut client = IngestClient::connect(url.to_string()).await?;
    for f in days {
        let seq = f.seq;
        let resp = client
            .push(PushRequest { frames: vec![f] })
            .await?
            .into_inner();
        let code = resp.acks.first().map(|a| a.code);
        anyhow::ensure!(code == Some(0), "VEE demo frame {seq}: code {code:?}");
    }
    Ok(dev.device_id.clone())
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn show_progress(
    mut rx: tokio::sync::watch::Receiver<LoadgenProgress>,
    stop: CancellationToken,
    ws: std::sync::Arc<feeder_writer::WriterStats>,
    ss: std::sync::Arc<feeder_stream::StreamStats>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let p = rx.borrow_and_update().clone();
        println!(
            "  {:>5.1} s  sent {:>8}  acked {:>8}  refused {:>4}  | checked {:>8} | readings stored {:>10}",
            p.elapsed.as_secs_f64(),
            p.frames_sent,
            p.frames_acked,
            p.frames_refused,
            ss.checked.load(Ordering::Relaxed),
            ws.readings_written.load(Ordering::Relaxed)
        );
    }
}

/// Raw records acked by the edge and not yet decided by the stream stage above which the
/// demo's load generator pauses: 6 partitions x 1,000 frames of 1-2 KB is well under the
/// embedded broker's ~5 MiB per partition.
const HOLD_ABOVE_LAG: u64 = 6_000;
const RESUME_BELOW_LAG: u64 = 3_000;

async fn hold_while_lagging(
    progress: tokio::sync::watch::Receiver<LoadgenProgress>,
    ss: std::sync::Arc<feeder_stream::StreamStats>,
    hold: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !stop.is_cancelled() {
        tick.tick().await;
        let lag = progress
            .borrow()
            .frames_acked
            .saturating_sub(ss.records_in.load(Ordering::Relaxed));
        let held = *hold.borrow();
        if (!held && lag > HOLD_ABOVE_LAG) || (held && lag < RESUME_BELOW_LAG) {
            let _ = hold.send(!held);
        }
    }
    let _ = hold.send(false);
}

/// The pyiceberg lines that open the demo's tables through its SQLite catalog.
fn print_iceberg_snippet(root: &Path) {
    use feeder_writer::iceberg::IcebergSettings;
    let s = IcebergSettings::default();
    let db = IcebergSettings::default_catalog_file(root);
    println!("\nRead the Iceberg tables (pip install \"pyiceberg[sql-sqlite]\" pandas):");
    println!("python3 - <<'PY'");
    println!("from pyiceberg.catalog.sql import SqlCatalog");
    println!(
        "cat = SqlCatalog({:?}, uri=\"sqlite:///{}\", warehouse={:?})",
        s.catalog_name,
        db.display(),
        s.warehouse(root)
    );
    println!("readings = cat.load_table(\"{}.readings\")", s.namespace);
    println!(
        "print(readings.scan(selected_fields=(\"device_id\", \"ts\", \"obis\", \"value\")).to_pandas().head())"
    );
    println!("for snap in readings.snapshots()[-3:]:");
    println!("    print(snap.snapshot_id, dict(snap.summary.additional_properties))");
    println!("PY");
}

fn print_queries(root: &Path) {
    let r = root.display();
    println!("\nQuery the datasets (pip install duckdb pyarrow):");
    println!(
        "  duckdb -c \"SELECT date, count(*) AS readings, count(DISTINCT device_id) AS meters FROM read_parquet('{r}/readings/**/*.parquet', hive_partitioning = true) GROUP BY date ORDER BY date LIMIT 10\""
    );
    println!(
        "  duckdb -c \"SELECT reason, count(*) FROM read_parquet('{r}/quarantine/**/*.parquet', hive_partitioning = true) GROUP BY reason\""
    );
    println!(
        "  duckdb -c \"SELECT status, signer, count(*) FROM read_parquet('{r}/registry_changes/**/*.parquet', hive_partitioning = true) GROUP BY ALL\""
    );
    println!(
        "  python3 -c \"import pyarrow.dataset as ds; t = ds.dataset('{r}/readings', format='parquet', partitioning='hive').to_table(); print(t.num_rows, t.schema)\""
    );
}
