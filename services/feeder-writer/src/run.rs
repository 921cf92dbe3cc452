//! The consumer loop: subscribe, feed records to their partition's buffer, write
//! completed ranges on a blocking thread, commit each after its files are durable, flush
//! aged buffers on a timer, and on shutdown flush everything and commit before returning.
//!
//! Shutdown order: stop polling (no new records), write every buffer (a partially
//! replayed range is dropped instead, see `buffer.rs`), commit, close the consumer
//! (leaving the group, so partitions move at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use feeder_kafka::fence::{Mark, Verdict};
use feeder_kafka::{KafkaConfig, Topics};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::buffer::{Batch, FlushReason};
use crate::iceberg::{IcebergTables, TableFormat};
use crate::partitions::{Shared, TpKey, WriterContext, commit};
use crate::record::{SourceRecord, TopicKind};
use crate::registry_changes::{Auditor, RegistryRecord};
use crate::storage::{LocalFs, Storage};
use crate::{Error, Result, WriterConfig, WriterStats, crashpoint, fences, observe, recovery};

/// Runs the writer against the local data root `cfg.data_root` until `shutdown` is
/// cancelled. Creates the checked and quarantine topics if missing.
pub async fn run(
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: WriterConfig,
    stats: Arc<WriterStats>,
    shutdown: CancellationToken,
) -> Result<()> {
    cfg.validate()?;
    ensure_input_topics(kafka, topics).await?;
    let storage = Arc::new(LocalFs::new(&cfg.data_root)?);
    run_with_storage(kafka, topics, cfg, stats, storage, shutdown).await
}

/// Creates the topics the writer reads (checked, quarantine, anomalies) if missing.
pub async fn ensure_input_topics(kafka: &KafkaConfig, topics: &Topics) -> Result<()> {
    feeder_kafka::ensure_topics(
        kafka,
        &[&topics.checked, &topics.quarantine, &topics.anomalies],
        topics.partitions,
        topics.replication,
    )
    .await?;
    Ok(())
}

/// [`run`] with any storage backend, for topics that already exist. `cfg.data_root` is
/// not used.
pub async fn run_with_storage(
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: WriterConfig,
    stats: Arc<WriterStats>,
    storage: Arc<dyn Storage>,
    shutdown: CancellationToken,
) -> Result<()> {
    cfg.validate()?;
    let mut kinds = HashMap::from([
        (topics.checked.clone(), TopicKind::Checked),
        (topics.quarantine.clone(), TopicKind::Quarantine),
        (topics.anomalies.clone(), TopicKind::Anomalies),
    ]);
    let mut auditor = cfg.registry_audit.clone().map(|a| {
        kinds.insert(a.topic.clone(), TopicKind::Registry);
        Auditor::new(a, kafka.clone())
    });
    let tables = match &cfg.tables {
        TableFormat::Parquet => None,
        TableFormat::Iceberg(s) => {
            let t = IcebergTables::open(s, &cfg.data_root, &cfg.writer_id).await?;
            info!(namespace = %t.namespace(), "iceberg catalog open");
            Some(Arc::new(t))
        }
    };
    let shared = Arc::new(Shared::new(storage, cfg, stats, kinds).with_tables(tables));
    let consumer: StreamConsumer<WriterContext> = kafka
        .group_member(
            &shared.cfg.group_id,
            &shared.cfg.writer_id,
            shared.cfg.instance_id.as_ref(),
        )
        .create_with_context(WriterContext::new(Arc::clone(&shared)))?;
    let subscribed: Vec<&str> = shared.topics().collect();
    consumer.subscribe(&subscribed)?;
    info!(
        group = %shared.cfg.group_id,
        writer = %shared.cfg.writer_id,
        checked = %topics.checked,
        quarantine = %topics.quarantine,
        "writer started"
    );

    let mut tick = tokio::time::interval(shared.cfg.tick_period());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        if let Some(e) = shared.take_fatal() {
            return Err(Error::Rebalance(e));
        }
        let event = tokio::select! {
            biased;
            () = shutdown.cancelled() => Event::Shutdown,
            msg = consumer.recv() => Event::from_message(msg, auditor.as_ref().map(Auditor::topic)),
            _ = tick.tick() => Event::Tick,
        };
        match event {
            Event::Shutdown => break,
            Event::Record {
                topic,
                partition,
                rec,
                mark,
                registry,
            } => {
                let key = (topic, partition);
                let rec = match (registry, auditor.as_mut()) {
                    (Some(r), Some(a)) => judged(&shared, a, &key, rec, &r).await?,
                    _ => rec,
                };
                on_record(&shared, &consumer, key, rec, mark).await?;
            }
            Event::Tick => {
                for (key, batch) in shared.due(Instant::now()) {
                    flush(&shared, &consumer, &key, batch).await?;
                }
                for (key, last) in shared.idle_skips() {
                    commit(&consumer, &key, last);
                }
            }
            Event::Error(e) => {
                // waited out unless fatal, which stops the writer
                observe::consumer_error();
                feeder_kafka::consumer_error::wait_out(e, "writer").await?;
            }
        }
    }

    info!("writer stopping: flushing buffers");
    for (key, batch) in shared.close_all(FlushReason::Shutdown) {
        flush(&shared, &consumer, &key, batch).await?;
    }
    shared.retry_commits(&consumer);
    if let Some(e) = shared.take_fatal() {
        return Err(Error::Rebalance(e));
    }
    consumer.unsubscribe();
    info!("writer stopped");
    Ok(())
}

/// What woke the loop, with the message already copied out of the consumer's memory.
enum Event {
    Shutdown,
    Tick,
    Record {
        topic: String,
        partition: i32,
        rec: SourceRecord,
        mark: Mark,
        /// What the registry audit needs of a registry-topic record.
        registry: Option<RegistryRecord>,
    },
    Error(KafkaError),
}

impl Event {
    fn from_message(msg: Result<BorrowedMessage<'_>, KafkaError>, registry: Option<&str>) -> Self {
        match msg {
            Ok(m) => Event::Record {
                topic: m.topic().to_string(),
                partition: m.partition(),
                rec: SourceRecord {
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis(),
                    payload: m.payload().map(<[u8]>::to_vec),
                },
                mark: Mark::of(m.headers(), m.offset()),
                registry: (registry == Some(m.topic())).then(|| RegistryRecord::of(&m)),
            },
            Err(e) => Event::Error(e),
        }
    }
}

/// A registry-topic record judged by the audit, in offset order: its buffered value
/// becomes the judged change (or none). A partition first seen, or rewound, has its audit
/// state rebuilt from the topic first.
async fn judged(
    shared: &Shared,
    auditor: &mut Auditor,
    key: &TpKey,
    mut rec: SourceRecord,
    raw: &RegistryRecord,
) -> Result<SourceRecord> {
    if shared.needs_plan(key, rec.offset) {
        auditor.restart(key.1, rec.offset).await?;
    }
    rec.payload = auditor.take(key.1, raw);
    Ok(rec)
}

async fn on_record(
    shared: &Arc<Shared>,
    consumer: &StreamConsumer<WriterContext>,
    key: TpKey,
    rec: SourceRecord,
    mark: Mark,
) -> Result<()> {
    let Some(kind) = shared.kind_of(&key.0) else {
        warn!(topic = %key.0, "record from a topic not subscribed to");
        return Ok(());
    };
    if shared.needs_plan(&key, rec.offset) {
        let (s, k, offset) = (Arc::clone(shared), key.clone(), rec.offset);
        let plan = tokio::task::spawn_blocking(move || {
            recovery::recover(s.storage.as_ref(), &k.0, k.1, offset)
        })
        .await??;
        observe::recovered(&plan);
        info!(
            topic = %key.0,
            partition = key.1,
            resume_from = offset,
            forced_boundaries = ?plan.forced_boundaries(),
            committed_ranges = plan.committed_ranges,
            stale_temp_removed = plan.stale_temp_removed,
            containing_ranges = plan.containing_ranges,
            "partition recovered from storage"
        );
        shared.install(key.clone(), kind, &plan);
    }
    match shared.judge(&key, mark) {
        Verdict::Keep => {}
        Verdict::Claim => {
            if let Mark::Claim(token) = mark {
                // durable before any offset past the claim can be committed (`fences`)
                let (s, k, at) = (Arc::clone(shared), key.clone(), rec.offset);
                tokio::task::spawn_blocking(move || {
                    fences::record_claim(s.storage.as_ref(), &k.0, k.1, at, token)
                })
                .await??;
                observe::claim();
            }
            shared.skipped(&key, rec.offset);
            return Ok(());
        }
        Verdict::Superseded => {
            // written by a stream stage that had lost the partition when it landed
            observe::superseded();
            shared.skipped(&key, rec.offset);
            return Ok(());
        }
    }
    let offered = shared.offer(&key, rec, Instant::now());
    crashpoint::reached(crashpoint::Point::Buffering);
    for batch in offered.ready {
        flush(shared, consumer, &key, batch).await?;
    }
    // After this record's own ranges, so their bytes are already out of the total.
    for (other, batch) in shared.over_cap() {
        flush(shared, consumer, &other, batch).await?;
    }
    Ok(())
}

/// Writes `batch` on a blocking thread, then commits it.
async fn flush(
    shared: &Arc<Shared>,
    consumer: &StreamConsumer<WriterContext>,
    key: &TpKey,
    batch: Batch,
) -> Result<()> {
    let Some(kind) = shared.kind_of(&key.0) else {
        return Ok(());
    };
    let (s, k) = (Arc::clone(shared), key.clone());
    let (batch, report) = tokio::task::spawn_blocking(move || {
        let report = s.write(&k, kind, &batch)?;
        Ok::<_, Error>((batch, report))
    })
    .await??;
    shared.account_write(key, &batch, &report);
    crashpoint::reached(crashpoint::Point::AfterRename);
    let committed = commit(consumer, key, shared.commit_point(key, batch.last));
    shared.mark_written(key, &batch, committed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The binary spawns `run` on the runtime, so its future must be `Send`.
    #[test]
    fn run_future_is_send() {
        let kafka = KafkaConfig::new("127.0.0.1:1");
        let topics = Topics::default();
        let fut = run(
            &kafka,
            &topics,
            WriterConfig::default(),
            Arc::default(),
            CancellationToken::new(),
        );
        assert_send(&fut);
    }
}
