//! The consumer loop: batch, recover partitions on first sight, decide, produce, wait for
//! every output ack, then commit. Offsets are committed only after what they cover is
//! durable in the output topics. After a commit, once per `snapshot_interval`, changed
//! state goes to the state changelog ([`crate::changelog`]): after, so a checkpoint never
//! covers raw records whose offsets are not committed. Between batches, the cohort idle
//! clock ([`crate::idle_clock`]) closes cohort windows on partitions that have read
//! everything.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use feeder_kafka::fence::Mark;
use feeder_kafka::{KafkaConfig, Topics, ensure_compacted_topics, ensure_topics};
use feeder_proto::pipeline::Anomaly;
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::admit::Reason;
use crate::changelog::{CHECKPOINT_KEY, DeviceSnapshot, OutputPositions, STATE_FORMAT};
use crate::checks::{Outcome, PartitionState};
use crate::fleet::{FLEET_PARTITION, FleetConfig, FleetStats, run_fleet};
use crate::idle_clock::IdleClock;
use crate::outputs::{self, OUTPUT_TOO_LARGE, TooLarge, anomaly_key};
use crate::rebalance::{RebalanceContext, Rebalances};
use crate::recovery::recover;
use crate::rules::cohort_fleet::WindowTally;
use crate::{Error, Result, StreamConfig};

/// Counters the demo and tests read; Prometheus metrics carry the same numbers.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub records_in: AtomicU64,
    pub checked: AtomicU64,
    pub quarantined: AtomicU64,
    pub gaps: AtomicU64,
    /// Anomaly records produced.
    pub anomalies: AtomicU64,
    /// Checked frames carrying any rule flag (besides `gap_before`) on the frame or a row.
    pub flagged: AtomicU64,
    /// Estimate rows (VEE) in checked records: intervals estimated...
    pub estimated: AtomicU64,
    /// ...and estimates superseded by late actuals.
    pub superseded: AtomicU64,
    /// Devices restored from the state changelog when partitions were assigned.
    pub restored_devices: AtomicU64,
    /// Checked records replayed on top of the changelog (all of them without one).
    pub replayed_checked: AtomicU64,
    /// Cohort window tallies sent to the fleet aggregator.
    pub tallies_sent: AtomicU64,
    /// Records fetched before a rebalance and left to the partition's next owner.
    pub dropped_on_rebalance: AtomicU64,
    /// Outputs over the size limit (or refused by the broker for their size): their raw
    /// record went to quarantine as `output_too_large`, or an anomaly was cut
    /// ([`crate::outputs`]).
    pub outputs_too_large: AtomicU64,
    /// Records of the stage's own topics (checked, quarantine, anomalies, changelog,
    /// cohort topics) that did not decode and were skipped.
    pub undecodable_skipped: AtomicU64,
    /// The fleet cohort aggregator of this process.
    pub fleet: FleetStats,
}

pub(crate) struct Partition {
    pub(crate) state: PartitionState,
    /// Decided before a crash: produce only the anomalies listed (see `recovery`).
    already_output: HashMap<i64, Vec<Anomaly>>,
    /// Not decided, but this many of its anomalies are already in the log.
    anomalies_present: HashMap<i64, usize>,
    /// Next offsets of this partition's outputs, as acknowledged.
    positions: OutputPositions,
    /// Next raw offset to process.
    pub(crate) raw_next: i64,
    /// What this owner's outputs carry: its claim token ([`crate::fence`]).
    pub(crate) owner: Mark,
}

impl Partition {
    /// Claims partition `p` ([`crate::fence::claim`]), then rebuilds its state from the
    /// logs ([`recover`]); processing resumes at raw offset `next`.
    pub(crate) async fn recover(
        kafka: &KafkaConfig,
        producer: &FutureProducer,
        topics: &Topics,
        p: i32,
        next: i64,
        cfg: &StreamConfig,
        stats: &StreamStats,
    ) -> Result<Self> {
        let owner = crate::fence::claim(producer, topics, p, cfg.zombie_fence).await?;
        let r = recover(kafka, topics, p, next, cfg).await?;
        r.skipped.emit(p, &stats.undecodable_skipped);
        stats
            .restored_devices
            .fetch_add(r.restored_devices as u64, Ordering::Relaxed);
        stats
            .replayed_checked
            .fetch_add(r.checked_records, Ordering::Relaxed);
        Ok(Self {
            state: r.state,
            already_output: r.already_output,
            anomalies_present: r.anomalies_present,
            positions: r.positions,
            raw_next: next,
            owner,
        })
    }
}

/// Which output a produced record went to (to track [`OutputPositions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Checked,
    Quarantine,
    Anomalies,
    /// A cohort tally (not a per-partition output: its position is not tracked).
    Tally,
}

/// Records produced and not yet acknowledged: (raw offset, partition, output, ack).
pub(crate) type Pending = Vec<(i64, i32, Output, DeliveryFuture)>;

/// Runs the stage: the partition loop and, beside it, the fleet cohort aggregator
/// ([`crate::fleet`]), until `shutdown`. Either failing stops both.
pub async fn run(
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: StreamConfig,
    stats: Arc<StreamStats>,
    shutdown: CancellationToken,
) -> Result<()> {
    cfg.validate().map_err(Error::Config)?;
    ensure_topics(
        kafka,
        &topics.data_topics(),
        topics.partitions,
        topics.replication,
    )
    .await?;
    ensure_compacted_topics(
        kafka,
        &topics.state_topics(),
        topics.partitions,
        topics.replication,
    )
    .await?;
    let cohorts = cfg.rules.cohort.clone();
    if cohorts.groupings.is_empty() {
        return run_partitions(kafka, topics, cfg, stats, shutdown).await;
    }
    let fleet_cfg = FleetConfig {
        grace: cfg.cohort_grace,
        disabled: cfg.rules.disabled.clone(),
        instance_id: cfg.instance_id.as_ref().map(|id| id.for_group("cohorts")),
        ..FleetConfig::for_stream_group(&cfg.group_id, &cfg.client_id)
    };
    // a failure of either stops the other, then the first error is returned
    let stop = shutdown.child_token();
    let partitions = async {
        let r = run_partitions(kafka, topics, cfg, stats.clone(), stop.clone()).await;
        stop.cancel();
        r
    };
    let fleet = async {
        let r = run_fleet(
            kafka,
            topics,
            cohorts,
            fleet_cfg,
            stats.clone(),
            stop.clone(),
        )
        .await;
        stop.cancel();
        r
    };
    let (a, b) = tokio::join!(partitions, fleet);
    a.and(b)
}

/// The partition loop: batches of raw records in, outputs and tallies out, commit.
async fn run_partitions(
    kafka: &KafkaConfig,
    topics: &Topics,
    mut cfg: StreamConfig,
    stats: Arc<StreamStats>,
    shutdown: CancellationToken,
) -> Result<()> {
    let (labels_tx, mut labels) = tokio::sync::watch::channel(cfg.device_labels.clone());
    // the watcher stops with this loop, however it ends
    let watcher = shutdown.child_token();
    let _stop_watcher = watcher.clone().drop_guard();
    if let Some(source) = cfg.registry.clone() {
        tokio::spawn(crate::labels_reload::watch_labels(
            source, labels_tx, watcher,
        ));
    } else if let Some(src) = cfg.registry_topic.clone() {
        // the whole topic before the first batch, which takes its labels
        let sink = Box::new(move |reg: feeder_core::Registry| {
            let _ = labels_tx.send(crate::config::labels_from_registry(&reg));
        });
        feeder_kafka::registry_follow::follow(kafka, src, "stream", sink, watcher).await?;
    }
    let rebalances = Rebalances::default();
    let consumer: StreamConsumer<RebalanceContext> = kafka
        .group_member(&cfg.group_id, &cfg.client_id, cfg.instance_id.as_ref())
        .create_with_context(RebalanceContext::new(rebalances.clone()))?;
    consumer.subscribe(&[&topics.raw])?;
    let producer: FutureProducer = kafka
        .producer(&cfg.client_id, 200_000, 30_000)
        // what the output guard lets through, the client sends (crate::outputs)
        .set("message.max.bytes", cfg.max_output_record_bytes.to_string())
        .create()?;
    let mut parts: HashMap<i32, Partition> = HashMap::new();
    let mut held_generation = rebalances.generation();
    tracing::info!(topic = %topics.raw, group = %cfg.group_id, "stream stage consuming");

    let mut idle = IdleClock::new(kafka, &cfg);
    let mut last_snapshot = Instant::now();
    loop {
        let first = tokio::select! {
            // a stop request wins over records that are ready: finish the batch in hand,
            // take no new one
            biased;
            _ = shutdown.cancelled() => break,
            // before records, or a busy stage would never tick (a tick is ready once per
            // period); `recv` is cancel-safe, so losing this race loses no record
            _ = idle.tick() => {
                drop_if_rebalanced(&rebalances, &mut held_generation, &mut parts);
                idle.close_windows(topics, &cfg, &consumer, &producer, &mut parts, &stats).await?;
                continue;
            }
            m = consumer.recv() => match m {
                Ok(m) => (rebalances.generation(), m.detach()),
                Err(e) => {
                    ride_out(e, "raw").await?;
                    continue;
                }
            },
        };
        let batch = next_batch(first, &consumer, &cfg, &rebalances).await?;
        let generation = drop_if_rebalanced(&rebalances, &mut held_generation, &mut parts);
        if labels.has_changed().unwrap_or(false) {
            // one set of labels per batch; recovery of a new partition uses them too
            cfg.device_labels = labels.borrow_and_update().clone();
            for part in parts.values_mut() {
                part.state.set_labels(cfg.device_labels.clone());
            }
        }
        let fetched = batch.len();
        let batch: Vec<OwnedMessage> = batch
            .into_iter()
            .filter(|(g, _)| *g == generation)
            .map(|(_, m)| m)
            .collect();
        stats
            .dropped_on_rebalance
            .fetch_add((fetched - batch.len()) as u64, Ordering::Relaxed);
        if batch.is_empty() {
            continue;
        }
        process_batch(
            kafka, topics, &cfg, &consumer, &producer, &mut parts, &stats, batch,
        )
        .await?;
        if last_snapshot.elapsed() >= cfg.snapshot_interval {
            snapshot(&producer, topics, &mut parts).await?;
            last_snapshot = Instant::now();
        }
    }
    // a clean stop leaves a fresh checkpoint: the next owner replays nothing
    snapshot(&producer, topics, &mut parts).await?;
    tracing::info!("stream stage stopped");
    Ok(())
}

/// After a rebalance, state and records fetched before it may be stale: another member
/// may have processed those partitions since. Drops the state (the records are dropped
/// by the caller, fetched again from the committed offsets; the state is rebuilt from
/// the logs). Returns the current generation.
fn drop_if_rebalanced(
    rebalances: &Rebalances,
    held_generation: &mut u64,
    parts: &mut HashMap<i32, Partition>,
) -> u64 {
    let generation = rebalances.generation();
    if generation != *held_generation {
        if !parts.is_empty() {
            tracing::info!(
                partitions = parts.len(),
                "rebalance: partition state dropped, rebuilt on next record"
            );
        }
        parts.clear();
        *held_generation = generation;
    }
    generation
}

/// Given the first record (with its rebalance generation), collects more until the batch
/// is full or lingered enough. Each record comes with the rebalance generation current
/// when it was received. Not cancel-safe: records in hand would be lost, so it is never
/// raced against anything.
async fn next_batch(
    first: (u64, OwnedMessage),
    consumer: &StreamConsumer<RebalanceContext>,
    cfg: &StreamConfig,
    rebalances: &Rebalances,
) -> Result<Vec<(u64, OwnedMessage)>> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + cfg.batch_linger;
    while batch.len() < cfg.batch_max_records {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push((rebalances.generation(), m.detach())),
            Ok(Err(e)) => {
                ride_out(e, "raw").await?;
                break;
            }
            Err(_) => break,
        }
    }
    Ok(batch)
}

/// A consumer error: waited out (logged, counted, a short pause) unless it is fatal,
/// which stops the stage (`feeder_kafka::consumer_error`). `consumer` names which one
/// for the metric: `raw` (the partition loop) or `cohort_tallies` (the aggregator).
pub(crate) async fn ride_out(e: KafkaError, consumer: &'static str) -> Result<()> {
    metrics::counter!("feeder_stream_consumer_errors_total", "consumer" => consumer).increment(1);
    Ok(feeder_kafka::consumer_error::wait_out(e, consumer).await?)
}

#[allow(clippy::too_many_arguments)]
async fn process_batch(
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: &StreamConfig,
    consumer: &StreamConsumer<RebalanceContext>,
    producer: &FutureProducer,
    parts: &mut HashMap<i32, Partition>,
    stats: &StreamStats,
    batch: Vec<OwnedMessage>,
) -> Result<()> {
    let started = Instant::now();
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut pending = Vec::with_capacity(batch.len());
    let mut counts = BatchCounts::default();
    // Partitions first seen in this batch are recovered together, not one after another:
    // each recovery reads four topics, mostly waiting on the broker, and a stage that is
    // assigned six partitions at start waited for six recoveries in a row before its
    // first decision (the start-up stall of issue 13).
    let mut first_seen: BTreeMap<i32, i64> = BTreeMap::new();
    for m in batch.iter().filter(|m| !parts.contains_key(&m.partition())) {
        first_seen.entry(m.partition()).or_insert(m.offset());
    }
    let recovered =
        futures::future::try_join_all(first_seen.into_iter().map(|(p, next)| async move {
            Ok::<_, Error>((
                p,
                Partition::recover(kafka, producer, topics, p, next, cfg, stats).await?,
            ))
        }))
        .await?;
    parts.extend(recovered);
    crate::fence::pause_point();
    for m in &batch {
        let p = m.partition();
        let part = match parts.entry(p) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(
                Partition::recover(kafka, producer, topics, p, m.offset(), cfg, stats).await?,
            ),
        };
        next_offsets.insert(p, m.offset().saturating_add(1));
        part.raw_next = m.offset().saturating_add(1);
        if let Some(missing) = part.already_output.remove(&m.offset()) {
            // decided by a run that crashed before committing: only what it left out
            send_anomalies(
                producer,
                &topics.anomalies,
                p,
                m.offset(),
                &missing,
                part.owner,
                &mut pending,
            )
            .await?;
            counts.anomalies += missing.len() as u64;
        } else {
            let max = cfg.max_output_record_bytes;
            decide(part, p, m, topics, producer, max, &mut pending, &mut counts).await?;
        }
    }
    // windows the batch closed (and those a recovery replayed), once per batch
    for (&p, part) in parts.iter_mut() {
        let last = part.raw_next.saturating_sub(1);
        send_tallies(
            producer,
            topics,
            p,
            last,
            &mut part.state,
            part.owner,
            &mut pending,
        )
        .await?;
    }
    for (offset, p, output, fut) in pending {
        let raw = || {
            let m = batch
                .iter()
                .find(|m| m.partition() == p && m.offset() == offset)?;
            Some(m.payload().unwrap_or_default().to_vec())
        };
        let landed =
            outputs::settle(producer, &topics.quarantine, offset, output, fut, raw).await?;
        if let Some(what) = landed.replaced {
            counts.refused(what, output);
        }
        let (output, at) = (landed.output, landed.offset);
        if let Some(part) = parts.get_mut(&p) {
            let next = match output {
                Output::Checked => &mut part.positions.checked,
                Output::Quarantine => &mut part.positions.quarantine,
                Output::Anomalies => &mut part.positions.anomalies,
                Output::Tally => {
                    stats.tallies_sent.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            *next = (*next).max(at.saturating_add(1));
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (p, next) in &next_offsets {
        tpl.add_partition_offset(&topics.raw, *p, Offset::Offset(*next))?;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        if !lost_to_rebalance(&e) {
            return Err(e.into());
        }
        // The group moved partitions while the batch was in hand. Its outputs are
        // durable and tagged with their source offsets: whoever owns each partition now
        // (this member included) skips them on recovery. Held state may be stale.
        tracing::warn!(error = %e, "commit refused by a rebalance; partition state dropped");
        metrics::counter!("feeder_stream_commits_lost_to_rebalance_total").increment(1);
        parts.clear();
    }

    stats
        .records_in
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    stats.checked.fetch_add(counts.checked, Ordering::Relaxed);
    stats
        .quarantined
        .fetch_add(counts.quarantined, Ordering::Relaxed);
    stats.gaps.fetch_add(counts.gaps, Ordering::Relaxed);
    stats
        .anomalies
        .fetch_add(counts.anomalies, Ordering::Relaxed);
    stats.flagged.fetch_add(counts.flagged, Ordering::Relaxed);
    metrics::counter!("feeder_stream_anomalies_total").increment(counts.anomalies);
    metrics::counter!("feeder_stream_flagged_frames_total").increment(counts.flagged);
    for part in parts.values_mut() {
        for (rule, n) in part.state.take_rule_counts() {
            metrics::counter!("feeder_stream_rule_findings_total", "rule" => rule).increment(n);
        }
        for ((method, status), n) in part.state.take_estimate_counts() {
            metrics::counter!("feeder_stream_estimates_total", "method" => method, "status" => status)
                .increment(n);
            let total = match status {
                "superseded" => &stats.superseded,
                _ => &stats.estimated,
            };
            total.fetch_add(n, Ordering::Relaxed);
        }
    }
    metrics::counter!("feeder_stream_records_total").increment(batch.len() as u64);
    metrics::counter!("feeder_stream_checked_total").increment(counts.checked);
    metrics::counter!("feeder_stream_gap_flags_total").increment(counts.gaps);
    stats
        .outputs_too_large
        .fetch_add(counts.too_large.iter().sum(), Ordering::Relaxed);
    for what in TooLarge::ALL {
        let n = counts.too_large[what as usize];
        if n > 0 {
            metrics::counter!("feeder_stream_outputs_too_large_total", "output" => what.label())
                .increment(n);
        }
    }
    if counts.quarantined_too_large > 0 {
        *counts
            .quarantined_by_reason
            .entry(OUTPUT_TOO_LARGE)
            .or_default() += counts.quarantined_too_large;
    }
    for (reason, n) in &counts.quarantined_by_reason {
        metrics::counter!("feeder_stream_quarantined_total", "reason" => *reason).increment(*n);
    }
    for (reason, n) in &counts.replays_absorbed {
        metrics::counter!("feeder_stream_replays_counted_total", "reason" => *reason).increment(*n);
    }
    metrics::histogram!("feeder_stream_batch_seconds").record(started.elapsed().as_secs_f64());
    Ok(())
}

/// What a batch produced, for stats and metrics.
#[derive(Debug, Default)]
struct BatchCounts {
    checked: u64,
    quarantined: u64,
    gaps: u64,
    anomalies: u64,
    flagged: u64,
    /// Outputs over the size limit or refused for their size, by output.
    too_large: [u64; 3],
    /// Raw records quarantined as `output_too_large` for it.
    quarantined_too_large: u64,
    /// Quarantined records by reason label, and replays absorbed (counted, not
    /// written) by reason: emitted once per batch.
    quarantined_by_reason: BTreeMap<&'static str, u64>,
    replays_absorbed: BTreeMap<&'static str, u64>,
}

impl BatchCounts {
    /// The guard replaced a record's outputs by an `output_too_large` entry.
    fn guarded(&mut self, what: TooLarge) {
        self.too_large[what as usize] += 1;
        self.quarantined += 1;
        self.quarantined_too_large += 1;
    }

    /// The broker refused an output of kind `output` for its size and it was replaced.
    fn refused(&mut self, what: TooLarge, output: Output) {
        self.too_large[what as usize] += 1;
        if what == TooLarge::Anomaly {
            return; // replaced by a cut anomaly: the frame's own output stands
        }
        self.quarantined_too_large += 1;
        if output == Output::Checked {
            self.checked = self.checked.saturating_sub(1);
            self.quarantined += 1;
        }
    }
}

/// Decides raw record `m` of partition `p` and enqueues its outputs, each at most
/// `max_bytes` ([`outputs::encode`]).
#[allow(clippy::too_many_arguments)]
async fn decide(
    part: &mut Partition,
    p: i32,
    m: &OwnedMessage,
    topics: &Topics,
    producer: &FutureProducer,
    max_bytes: usize,
    pending: &mut Pending,
    counts: &mut BatchCounts,
) -> Result<()> {
    let value = m.payload().unwrap_or_default();
    let outcome = part.state.process(m.offset(), value);
    let mut found = part.state.take_anomalies();
    if let Some(n) = part.anomalies_present.remove(&m.offset()) {
        found.drain(..n.min(found.len()));
    }
    let out = outputs::encode(&outcome, &found, value, m.offset(), max_bytes);
    if let Some(what) = out.too_large {
        counts.guarded(what);
        tracing::warn!(
            offset = m.offset(),
            partition = p,
            output = what.label(),
            "output over the size limit: quarantined as output_too_large"
        );
    }
    match &outcome {
        _ if out.too_large.is_some() => {}
        Outcome::Checked(c) => {
            counts.checked += 1;
            counts.gaps += u64::from(c.frame_flags.iter().any(|f| f == "gap_before"));
            counts.flagged += u64::from(
                c.frame_flags.iter().any(|f| f != "gap_before")
                    || !c.reading_flags.is_empty()
                    || !c.sample_flags.is_empty(),
            );
        }
        Outcome::Quarantined(q) => {
            counts.quarantined += 1;
            *counts
                .quarantined_by_reason
                .entry(reason_label(&q.reason))
                .or_default() += 1;
        }
        Outcome::Absorbed { reason, .. } => {
            counts.quarantined += 1;
            *counts.replays_absorbed.entry(reason.as_str()).or_default() += 1;
        }
    }
    for r in out.primary.iter().chain(&out.anomalies) {
        let topic = match r.output {
            Output::Checked => &topics.checked,
            Output::Quarantine => &topics.quarantine,
            _ => &topics.anomalies,
        };
        let fut = send(producer, topic, p, &r.key, &r.bytes, m.offset(), part.owner).await?;
        pending.push((m.offset(), p, r.output, fut));
    }
    counts.anomalies += out.anomalies.len() as u64;
    Ok(())
}

/// Enqueues the anomalies raised by the raw record at `offset` (partition `partition`).
async fn send_anomalies(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    offset: i64,
    anomalies: &[Anomaly],
    owner: Mark,
    pending: &mut Pending,
) -> Result<()> {
    for a in anomalies {
        let bytes = a.encode_to_vec();
        let fut = send(
            producer,
            topic,
            partition,
            anomaly_key(a),
            &bytes,
            offset,
            owner,
        )
        .await?;
        pending.push((offset, partition, Output::Anomalies, fut));
    }
    Ok(())
}

/// Enqueues the cohort tallies of the windows partition `partition` closed (at least
/// once: acknowledged before the batch that closed them is committed); `offset` names
/// the batch's last raw record in errors.
pub(crate) async fn send_tallies(
    producer: &FutureProducer,
    topics: &Topics,
    partition: i32,
    offset: i64,
    state: &mut PartitionState,
    owner: Mark,
    pending: &mut Pending,
) -> Result<()> {
    for (window, counts) in state.take_tallies() {
        let t = WindowTally::new(window, partition as u32, counts);
        let bytes = serde_json::to_vec(&t).map_err(|e| Error::Delivery {
            offset,
            reason: format!("cohort tally: {e}"),
        })?;
        let key = format!("{window}/{partition}");
        let fut = send(
            producer,
            &topics.cohort_tallies,
            FLEET_PARTITION,
            &key,
            &bytes,
            offset,
            owner,
        )
        .await?;
        pending.push((offset, partition, Output::Tally, fut));
    }
    Ok(())
}

/// Writes every partition's changed device state, then its checkpoint, to the state
/// changelog, and waits for the acks. Called only after the raw offsets the state
/// covers are committed.
async fn snapshot(
    producer: &FutureProducer,
    topics: &Topics,
    parts: &mut HashMap<i32, Partition>,
) -> Result<()> {
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut written = 0u64;
    for (&p, part) in parts.iter_mut() {
        if part.state.dirty_devices() == 0 {
            continue;
        }
        let encode = |e: postcard::Error| Error::Snapshot {
            partition: p,
            reason: e.to_string(),
        };
        let devices = part.state.take_dirty().map_err(encode)?;
        let checked_next = part.positions.checked;
        for (id, state) in devices {
            let rec = DeviceSnapshot {
                checked_next,
                format: STATE_FORMAT,
                state,
            };
            let fut = send(
                producer,
                &topics.stream_state,
                p,
                &id,
                &rec.encode_to_vec(),
                part.raw_next,
                part.owner,
            )
            .await?;
            pending.push((part.raw_next, fut));
            written += 1;
        }
        let cp = part
            .positions
            .checkpoint(part.state.partition_bytes().map_err(encode)?, part.raw_next);
        let fut = send(
            producer,
            &topics.stream_state,
            p,
            CHECKPOINT_KEY,
            &cp.encode_to_vec(),
            part.raw_next,
            part.owner,
        )
        .await?;
        pending.push((part.raw_next, fut));
    }
    for (offset, fut) in pending {
        acked(offset, fut).await?;
    }
    if written > 0 {
        metrics::counter!("feeder_stream_state_snapshot_devices_total").increment(written);
        metrics::histogram!("feeder_stream_state_snapshot_seconds")
            .record(started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Waits for the broker's ack of the record produced for raw offset `offset`.
pub(crate) async fn acked(offset: i64, fut: DeliveryFuture) -> Result<Delivery> {
    match fut.await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err((e, _))) => Err(Error::Delivery {
            offset,
            reason: e.to_string(),
        }),
        Err(_) => Err(Error::Delivery {
            offset,
            reason: "producer dropped".into(),
        }),
    }
}

/// Queues one output record ([`enqueue`]) carrying `mark` ([`crate::fence`]); `offset`
/// names the raw record in errors.
pub(crate) async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &[u8],
    offset: i64,
    mark: Mark,
) -> Result<DeliveryFuture> {
    enqueue(producer, topic, partition, key, payload, mark.headers())
        .await
        .map_err(|e| Error::Delivery {
            offset,
            reason: e.to_string(),
        })
}

/// Queues one record; a full local queue means the broker is slow: wait for room (the
/// queue is bounded), never drop.
pub(crate) async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> std::result::Result<DeliveryFuture, KafkaError> {
    let mut rec = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(payload);
    if let Some(h) = headers {
        rec = rec.headers(h);
    }
    loop {
        match producer.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// A commit refused because the member's assignment changed under it: not a failure of
/// the stage (see the caller).
pub(crate) fn lost_to_rebalance(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::State
        )
    )
}

/// Quarantine reasons are a closed set ([`Reason`] and `output_too_large`); anything
/// else is folded into "other".
fn reason_label(reason: &str) -> &'static str {
    if reason == OUTPUT_TOO_LARGE {
        return OUTPUT_TOO_LARGE;
    }
    Reason::label(reason)
}
