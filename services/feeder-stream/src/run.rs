//! The partition loop: what woke it (`Event`), then for a batch of raw records:
//! recover partitions on first sight, decide each record (`crate::partition`), queue
//! its outputs and the tallies of the windows the batch closed, wait for every ack, then
//! commit ([`crate::outputs`]). Offsets are committed only after what they cover is
//! durable in the output topics. After a commit, once per `snapshot_interval`, changed
//! state goes to the state changelog (`crate::partition::snapshot`): after, so a
//! checkpoint never covers raw records whose offsets are not committed. Between batches,
//! the cohort idle clock ([`crate::idle_clock`]) closes cohort windows on partitions that
//! have read everything. Metrics and [`StreamStats`] are fed once per batch
//! (`crate::observe`).
//!
//! Beside the loop runs the fleet cohort aggregator ([`crate::fleet`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use feeder_kafka::{KafkaConfig, Topics, ensure_compacted_topics, ensure_topics};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::fleet::{FleetConfig, run_fleet};
use crate::idle_clock::IdleClock;
use crate::observe::BatchCounts;
use crate::outputs::{Committed, Outputs, commit};
use crate::partition::snapshot::snapshot;
use crate::partition::{Context, Partitions};
use crate::rebalance::{RebalanceContext, Rebalances, ride_out};
use crate::{Error, Result, StreamConfig, StreamStats, observe};

/// Runs the stage on the system clock until `shutdown` ([`run_with_clock`]).
pub async fn run(
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: StreamConfig,
    stats: Arc<StreamStats>,
    shutdown: CancellationToken,
) -> Result<()> {
    run_with_clock(kafka, topics, cfg, stats, crate::clock::system(), shutdown).await
}

/// Runs the stage: the partition loop and, beside it, the fleet cohort aggregator
/// ([`crate::fleet`]), until `shutdown`. Either failing stops both. `clock` is the wall
/// clock of the idle clock and the aggregator's grace ([`crate::clock`]).
pub async fn run_with_clock(
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: StreamConfig,
    stats: Arc<StreamStats>,
    clock: Arc<dyn Clock>,
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
    let producer: FutureProducer = kafka
        .producer(&cfg.client_id, 200_000, 30_000)
        // what the output guard lets through, the client sends (crate::outputs::guard)
        .set("message.max.bytes", cfg.max_output_record_bytes.to_string())
        .create()?;
    if cohorts.groupings.is_empty() {
        let ctx = Context {
            kafka: kafka.clone(),
            topics: topics.clone(),
            cfg,
            stats,
            clock,
            producer,
        };
        return run_partitions(ctx, shutdown).await;
    }
    let fleet_cfg = FleetConfig::for_stream(&cfg);
    let ctx = Context {
        kafka: kafka.clone(),
        topics: topics.clone(),
        cfg,
        stats: stats.clone(),
        clock: clock.clone(),
        producer,
    };
    // a failure of either stops the other, then the first error is returned
    let stop = shutdown.child_token();
    let partitions = async {
        let r = run_partitions(ctx, stop.clone()).await;
        stop.cancel();
        r
    };
    let fleet = async {
        let r = run_fleet(
            kafka,
            topics,
            cohorts,
            fleet_cfg,
            stats,
            clock,
            stop.clone(),
        )
        .await;
        stop.cancel();
        r
    };
    let (a, b) = tokio::join!(partitions, fleet);
    a.and(b)
}

/// What woke the partition loop.
enum Event {
    Shutdown,
    /// The idle clock's tick ([`IdleClock`]).
    Tick,
    /// A raw record, with the rebalance generation current when it was received.
    Record(u64, OwnedMessage),
    Error(KafkaError),
}

/// The partition loop: batches of raw records in, outputs and tallies out, commit.
async fn run_partitions(mut ctx: Context, shutdown: CancellationToken) -> Result<()> {
    let (labels_tx, mut labels) = tokio::sync::watch::channel(ctx.cfg.device_labels.clone());
    // the watcher stops with this loop, however it ends
    let watcher = shutdown.child_token();
    let _stop_watcher = watcher.clone().drop_guard();
    if let Some(source) = ctx.cfg.registry.clone() {
        tokio::spawn(crate::labels_reload::watch_labels(
            source, labels_tx, watcher,
        ));
    } else if let Some(src) = ctx.cfg.registry_topic.clone() {
        // the whole topic before the first batch, which takes its labels
        let sink = Box::new(move |reg: feeder_core::Registry| {
            let _ = labels_tx.send(crate::config::DeviceLabels::sharing(reg));
        });
        feeder_kafka::registry_follow::follow(&ctx.kafka, src, "stream", sink, watcher).await?;
    }
    let rebalances = Rebalances::default();
    let consumer: Arc<StreamConsumer<RebalanceContext>> = Arc::new(
        ctx.kafka
            .group_member(
                &ctx.cfg.group_id,
                &ctx.cfg.client_id,
                ctx.cfg.instance_id.as_ref(),
            )
            .create_with_context(RebalanceContext::new(rebalances.clone()))?,
    );
    consumer.subscribe(&[&ctx.topics.raw])?;
    let mut outputs = Outputs::new(ctx.producer.clone(), &ctx.topics);
    let mut parts = Partitions::new(&rebalances);
    tracing::info!(topic = %ctx.topics.raw, group = %ctx.cfg.group_id, "stream stage consuming");

    let mut idle = IdleClock::new(&ctx.kafka, &ctx.cfg);
    let mut last_snapshot = Instant::now();
    loop {
        let event = tokio::select! {
            // a stop request wins over records that are ready: finish the batch in hand,
            // take no new one
            biased;
            _ = shutdown.cancelled() => Event::Shutdown,
            // before records, or a busy stage would never tick (a tick is ready once per
            // period); `recv` is cancel-safe, so losing this race loses no record
            _ = idle.tick() => Event::Tick,
            m = consumer.recv() => match m {
                Ok(m) => Event::Record(rebalances.generation(), m.detach()),
                Err(e) => Event::Error(e),
            },
        };
        let first = match event {
            Event::Shutdown => break,
            Event::Tick => {
                parts.drop_if_rebalanced(&rebalances);
                idle.close_windows(&ctx, &consumer, &mut outputs, &mut parts)
                    .await?;
                continue;
            }
            Event::Error(e) => {
                ride_out(e, "raw").await?;
                continue;
            }
            Event::Record(generation, m) => (generation, m),
        };
        let batch = next_batch(first, &consumer, &ctx.cfg, &rebalances).await?;
        let generation = parts.drop_if_rebalanced(&rebalances);
        if labels.has_changed().unwrap_or(false) {
            // one set of labels per batch; recovery of a new partition uses them too
            ctx.cfg.device_labels = labels.borrow_and_update().clone();
            parts.set_labels(&ctx.cfg.device_labels);
        }
        let fetched = batch.len();
        // records of an older generation, or fetched before their partition was sought
        // back (`Partitions::rewind`), are fetched again
        let batch: Vec<OwnedMessage> = batch
            .into_iter()
            .filter(|(g, m)| *g == generation && parts.accepts(m.partition(), m.offset()))
            .map(|(_, m)| m)
            .collect();
        let mut counts = BatchCounts::default();
        counts.dropped_on_rebalance = (fetched - batch.len()) as u64;
        if batch.is_empty() {
            observe::dropped_on_rebalance(&ctx.stats, counts.dropped_on_rebalance);
            continue;
        }
        let rewinds = process_batch(
            &ctx,
            &consumer,
            &mut outputs,
            &mut parts,
            batch,
            &mut counts,
        )
        .await?;
        // a partition revoked meanwhile is not sought (a seek of it fails): its next
        // owner starts from the last commit anyway
        for (p, at) in rewinds {
            let sought = rewind(&consumer, &ctx.topics.raw, p, at).await;
            if rebalances.generation() == generation {
                sought?;
            }
        }
        if last_snapshot.elapsed() >= ctx.cfg.snapshot_interval {
            snapshot(&mut parts, &mut outputs).await?;
            last_snapshot = Instant::now();
        }
    }
    // a clean stop leaves a fresh checkpoint: the next owner replays nothing
    snapshot(&mut parts, &mut outputs).await?;
    tracing::info!("stream stage stopped");
    Ok(())
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

/// Seeks raw partition `p` back to offset `at` (on the blocking pool: librdkafka's seek
/// waits for the fetcher).
async fn rewind(
    consumer: &Arc<StreamConsumer<RebalanceContext>>,
    raw: &str,
    p: i32,
    at: i64,
) -> Result<()> {
    let (c, raw) = (Arc::clone(consumer), raw.to_string());
    let sought = tokio::task::spawn_blocking(move || {
        c.seek(
            &raw,
            p,
            Offset::Offset(at),
            std::time::Duration::from_secs(10),
        )
    })
    .await
    .map_err(|e| Error::Delivery {
        offset: at,
        source: format!("seek task: {e}").into(),
    })?;
    // a seek that fails leaves the fetch position past records whose offsets must not be
    // committed: the stage stops rather than go on (its commits are safe to restart from)
    sought.map_err(|e| Error::Recovery {
        partition: p,
        source: format!("seek back to raw offset {at}: {e}").into(),
    })
}

/// One batch: decide, produce, wait for every ack, commit, count. Returns the partitions
/// to seek back, and where to ([`Partitions::rewind`]).
async fn process_batch(
    ctx: &Context,
    consumer: &Arc<StreamConsumer<RebalanceContext>>,
    outputs: &mut Outputs,
    parts: &mut Partitions,
    batch: Vec<OwnedMessage>,
    counts: &mut BatchCounts,
) -> Result<Vec<(i32, i64)>> {
    let started = Instant::now();
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut first_seen: BTreeMap<i32, i64> = BTreeMap::new();
    for m in batch.iter().filter(|m| !parts.holds(m.partition())) {
        first_seen.entry(m.partition()).or_insert(m.offset());
    }
    parts.recover_all(ctx, first_seen).await?;
    crate::fence::pause_point();
    let max = ctx.cfg.max_output_record_bytes;
    for m in &batch {
        let p = m.partition();
        let part = parts.get_or_recover(ctx, p, m.offset()).await?;
        next_offsets.insert(p, m.offset().saturating_add(1));
        let value = m.payload().unwrap_or_default();
        let records = part.decide(p, (m.offset(), value), max, counts);
        let owner = part.owner;
        outputs.send(p, m.offset(), owner, &records).await?;
    }
    // windows the batch closed (and those a recovery replayed), once per batch
    for (p, part) in parts.iter_mut() {
        let last = part.raw_next.saturating_sub(1);
        outputs
            .tallies(p, last, part.owner, &mut part.state)
            .await?;
    }
    let raw = |p: i32, offset: i64| {
        let m = batch
            .iter()
            .find(|m| m.partition() == p && m.offset() == offset)?;
        Some(m.payload().unwrap_or_default().to_vec())
    };
    for acked in outputs.acks(raw).await? {
        if let Some(what) = acked.landed.replaced {
            counts.refused(what);
        }
        if acked.landed.output == crate::outputs::Output::Tally {
            counts.tallies_sent += 1;
        }
        parts.landed(&acked);
    }
    // a partition whose outputs another writer's record landed among may have a newer
    // owner: none of its offsets are committed, it is claimed and recovered again
    let interleaved = parts.settle(ctx.cfg.zombie_fence);
    for (p, _) in &interleaved {
        next_offsets.remove(p);
    }
    let mut tpl = TopicPartitionList::new();
    for (p, next) in &next_offsets {
        tpl.add_partition_offset(&ctx.topics.raw, *p, Offset::Offset(*next))?;
    }
    let committed = if next_offsets.is_empty() {
        Committed::Yes // nothing to commit (librdkafka refuses an empty list)
    } else {
        commit(consumer, tpl).await?
    };
    match committed {
        Committed::Yes => parts.committed(&next_offsets),
        Committed::LostToRebalance(e) => {
            // The group moved partitions while the batch was in hand. Its outputs are
            // durable and tagged with their source offsets: whoever owns each partition
            // now (this member included) skips them on recovery. Held state may be stale.
            tracing::warn!(error = %e, "commit refused by a rebalance; partition state dropped");
            observe::commit_lost_to_rebalance();
            parts.clear();
        }
    }
    let mut rewinds = Vec::new();
    for (p, found) in interleaved {
        let Some(at) = parts.rewind(p) else { continue };
        tracing::warn!(
            partition = p,
            log = found.output.label(),
            offset = found.at,
            resume = at,
            "another writer's record among this stage's outputs (a newer owner?): \
             nothing committed, partition claimed and recovered again"
        );
        observe::rewound(found.output);
        rewinds.push((p, at));
    }
    parts.take_counts(counts);
    counts.records_in = batch.len() as u64;
    observe::batch(&ctx.stats, counts, started.elapsed());
    Ok(rewinds)
}
