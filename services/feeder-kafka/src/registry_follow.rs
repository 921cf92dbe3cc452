//! Following the registry's compacted Kafka topic (device contract v1.1; the records and
//! their signatures: [`feeder_core::registry_topic`]), for every stage that needs the
//! registry (the edge: keys; the stream: labels).
//!
//! # Why a topic
//! A Kubernetes Secret holds about 4,500 registry lines; a utility with millions of
//! meters and a dozen edges needs a registry that scales and a revocation that reaches
//! every receiver in seconds. Every receiver reads the whole topic (no consumer group:
//! each needs every record), from its beginning before it reports ready, then follows it.
//!
//! # How
//! One thread per receiver owns a consumer assigned to every partition of the topic. It
//! reads up to the ends it saw at start, hands the registry to the receiver's sink, and
//! signals [`follow`]'s caller; then it keeps polling, and hands over the registry after
//! each burst of changes (at most every [`REBUILD_EVERY`]). Records refused by
//! the provisioning keys (unsigned, unknown signer, bad signature) or that do not parse
//! are counted (`feeder_<stage>_registry_records_refused_total{reason}`) and logged by
//! record key only (never the line), and the entry in force stays.
//!
//! Each record changes its device in place ([`TopicRegistry`]) and a hand-over is a copy
//! sharing every unchanged shard of the registry, so a revocation is in force within
//! [`REBUILD_EVERY`] whatever the fleet's size. A record that makes a device's keys
//! disagree on its kind or labels takes effect for its key (a revocation always does)
//! and is counted in `feeder_<stage>_registry_devices_disagreeing` until they agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use feeder_core::Registry;
use feeder_core::registry_topic::{
    Applied, ProvisioningKeys, Refused, SIGNATURE_HEADER, SIGNER_HEADER, TopicRegistry,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::{Error, KafkaConfig, Result};

/// Changes are swapped in at most this often.
pub const REBUILD_EVERY: Duration = Duration::from_millis(250);

/// Where the registry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSource {
    pub topic: String,
    /// Empty: records need not be signed.
    pub keys: ProvisioningKeys,
}

/// What the follower did, for tests and the health report.
#[derive(Debug, Default)]
pub struct TopicStats {
    pub applied: AtomicU64,
    pub refused: AtomicU64,
    pub swaps: AtomicU64,
}

/// Where a handed-over registry goes (the edge swaps it in; the stream reads its labels).
pub type Sink = Box<dyn FnMut(Registry) + Send>;

/// Reads `src` from its beginning and hands the registry to `sink`, then follows the
/// topic on a thread of its own until `shutdown`. Returns once `sink` has the first
/// registry. `stage` names the metrics (`feeder_<stage>_registry_...`).
pub async fn follow(
    kafka: &KafkaConfig,
    src: TopicSource,
    stage: &'static str,
    sink: Sink,
    shutdown: CancellationToken,
) -> Result<Arc<TopicStats>> {
    let consumer: BaseConsumer = kafka.reader(&format!("{stage}-registry")).create()?;
    let stats = Arc::new(TopicStats::default());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s = stats.clone();
    std::thread::Builder::new()
        .name("registry-topic".into())
        .spawn(move || {
            let mut f = Follower {
                consumer,
                state: State {
                    src,
                    stage,
                    sink,
                    in_force: TopicRegistry::default(),
                    stats: s,
                    dirty: false,
                },
            };
            match f.catch_up() {
                Ok(()) => {
                    let _ = tx.send(Ok(()));
                    f.follow(&shutdown);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(|e| Error::Registry(format!("registry topic thread: {e}")))?;
    rx.await
        .map_err(|_| Error::Registry("registry topic thread ended".into()))??;
    Ok(stats)
}

struct Follower {
    consumer: BaseConsumer,
    state: State,
}

/// What the follower holds besides its consumer (whose messages borrow it).
struct State {
    src: TopicSource,
    stage: &'static str,
    sink: Sink,
    in_force: TopicRegistry,
    stats: Arc<TopicStats>,
    dirty: bool,
}

impl Follower {
    /// Assigns every partition from its beginning and reads up to the ends seen now.
    fn catch_up(&mut self) -> Result<()> {
        let timeout = Duration::from_secs(30);
        let md = self
            .consumer
            .fetch_metadata(Some(&self.state.src.topic), timeout)?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(Error::Registry(format!(
                "registry topic {} has no partitions (does it exist?)",
                self.state.src.topic
            )));
        }
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for &p in &partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.state.src.topic, p, timeout)?;
            tpl.add_partition_offset(&self.state.src.topic, p, Offset::Beginning)?;
            if high > low {
                ends.push((p, high));
            }
        }
        self.consumer.assign(&tpl)?;
        let started = Instant::now();
        let mut next: Vec<(i32, i64)> = ends.iter().map(|&(p, _)| (p, -1)).collect();
        let caught_up = |next: &[(i32, i64)]| {
            ends.iter()
                .all(|(p, end)| next.iter().any(|(q, n)| q == p && *n >= *end))
        };
        while !caught_up(&next) {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let Some(n) = next.iter_mut().find(|(p, _)| *p == m.partition()) {
                        n.1 = m.offset() + 1;
                    }
                    self.state.take(&m);
                }
                Some(Err(e)) => return Err(e.into()),
                None if started.elapsed() > Duration::from_secs(300) => {
                    return Err(Error::Registry(format!(
                        "registry topic {}: no progress reading it to its end",
                        self.state.src.topic
                    )));
                }
                None => {}
            }
        }
        self.state.swap();
        Ok(())
    }

    /// Polls until `shutdown`, handing the registry over after each burst of changes.
    fn follow(&mut self, shutdown: &CancellationToken) {
        let mut last_swap = Instant::now();
        while !shutdown.is_cancelled() {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => self.state.take(&m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "registry topic: consumer error");
                    metrics::counter!(format!(
                        "feeder_{}_registry_topic_errors_total",
                        self.state.stage
                    ))
                    .increment(1);
                }
                None => {}
            }
            if self.state.dirty && last_swap.elapsed() >= REBUILD_EVERY {
                self.state.swap();
                last_swap = Instant::now();
            }
        }
    }
}

impl State {
    /// Applies one record, or counts why not.
    fn take(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let key = m.key().unwrap_or_default();
        let value = m.payload();
        let header = |name: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
        };
        let outcome = self
            .src
            .keys
            .check(key, value, header(SIGNER_HEADER), header(SIGNATURE_HEADER))
            .and_then(|()| self.in_force.apply(key, value));
        match outcome {
            Ok(applied) => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                self.dirty = true;
                if applied == Applied::KindOrLabelsHeld {
                    let key: String = String::from_utf8_lossy(key).chars().take(64).collect();
                    tracing::warn!(
                        key,
                        "registry record in force for its key, but the device's keys disagree \
                         on its kind or labels: those in force stay until they agree"
                    );
                }
            }
            Err(why) => self.refused(key, why),
        }
    }

    fn refused(&self, key: &[u8], why: Refused) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            format!("feeder_{}_registry_records_refused_total", self.stage),
            "reason" => why.label()
        )
        .increment(1);
        // the record key only, cut: never the line
        let key: String = String::from_utf8_lossy(key).chars().take(64).collect();
        tracing::warn!(key, reason = %why, "registry record refused; the entry in force stays");
    }

    /// Hands the registry in force to the sink: a copy sharing every unchanged shard.
    fn swap(&mut self) {
        let reg = self.in_force.registry();
        tracing::info!(devices = reg.len(), keys = reg.key_count(), topic = %self.src.topic, "registry from the topic in force");
        metrics::counter!(format!("feeder_{}_registry_reloads_total", self.stage)).increment(1);
        metrics::gauge!(format!(
            "feeder_{}_registry_devices_disagreeing",
            self.stage
        ))
        .set(self.in_force.disagreeing() as f64);
        (self.sink)(reg);
        self.stats.swaps.fetch_add(1, Ordering::Relaxed);
        self.dirty = false;
    }
}
