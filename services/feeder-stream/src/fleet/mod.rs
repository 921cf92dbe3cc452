//! The fleet cohort aggregator task: reads every stream partition's per-window cohort
//! counts from the tallies topic, judges each (cohort, window) once over the whole fleet
//! ([`FleetAggregator`]) and writes the findings to the anomalies topic.
//!
//! Why a separate consumer group (`<group>-cohorts`) on a one-partition topic: the
//! judgement needs every partition's counts in one place, and exactly one aggregator must
//! hold them. Every stream replica runs this task; the group gives partition 0 of the
//! tallies topic to one of them, and moves it on failure.
//!
//! # No finding lost or repeated
//! - Stream partitions send a tally before committing the raw offset that closed its
//!   window (at least once; a recovering partition re-sends what it may not have sent).
//!   The aggregator ignores a tally for a window it has judged or from a partition it
//!   already counted for that window.
//! - After judging, the aggregator waits for its findings' acks, then writes its progress
//!   (the newest judged window, the next offset of anomalies partition 0, where
//!   findings go, and the fleet's recent reporting shares that `fleet_silence` compares
//!   with) to the compacted `<prefix>.cohort-progress` topic, then commits its
//!   tallies offset at the oldest tally of a window still open (those are read again
//!   after a restart).
//! - On (re)assignment it reads the latest progress record, ignores tallies of windows up
//!   to the judged one, and reads anomalies partition 0 from the recorded offset to its
//!   end: fleet findings found there were written by a run that crashed before recording
//!   its progress, and are not written again (deterministic ids, `anomaly_id`).
//!
//! (Progress is a record, not offset-commit metadata: tansu drops commit metadata, and a
//! record is what every Kafka-protocol broker keeps.)
//!
//! Fleet findings carry `source_offset = -1`, so a stream partition recovering from
//! anomalies partition 0 does not take them for its own.

mod progress;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use feeder_kafka::fence::Mark;
use feeder_kafka::{KafkaConfig, Topics, ensure_fleet_topics};
use feeder_proto::pipeline::Anomaly;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use self::progress::Progress;
use crate::clock::Clock;
use crate::observe::FleetCounts;
pub use crate::outputs::FLEET_PARTITION;
use crate::outputs::{Committed, Output, Outputs, Record, commit};
use crate::rebalance::{RebalanceContext, Rebalances, ride_out};
use crate::recovery::read_partition;
use crate::rules::cohort::CohortConfig;
use crate::rules::cohort_fleet::{FleetAggregator, WindowTally, fleet_id};
use crate::skipped::{ReadTopic, Skipped};
use crate::{Error, Result, StreamStats, observe};

/// The progress topic's one key.
const PROGRESS_KEY: &str = "progress";

#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Consumer group of the aggregator (the stage's group + `-cohorts`).
    pub group_id: String,
    pub client_id: String,
    /// The stage's instance id for this group (`<id>-cohorts`), if it has one.
    pub instance_id: Option<feeder_kafka::InstanceId>,
    /// A window some raw partition has not closed is judged this long after its first
    /// tally (a partition without traffic never closes one).
    pub grace: Duration,
    /// How often open windows are checked against the grace when no tally arrives.
    pub tick: Duration,
    /// Rules switched off (`rules.disabled`); the fleet rules among them raise nothing.
    pub disabled: Vec<String>,
}

impl FleetConfig {
    /// The aggregator's settings, all taken from the stage's (one default per setting:
    /// the grace is `StreamConfig::cohort_grace`'s).
    pub fn for_stream(cfg: &crate::StreamConfig) -> Self {
        Self {
            group_id: format!("{}-cohorts", cfg.group_id),
            client_id: format!("{}-cohorts", cfg.client_id),
            instance_id: cfg.instance_id.as_ref().map(|id| id.for_group("cohorts")),
            grace: cfg.cohort_grace,
            tick: Duration::from_secs(1),
            disabled: cfg.rules.disabled.clone(),
        }
    }
}

pub use crate::stats::FleetStats;

/// The aggregator while it holds the tallies partition.
struct Held {
    agg: FleetAggregator,
    /// Rebalance generation it was built in.
    generation: u64,
    /// Offset of the oldest tally of each open window.
    first_offset: BTreeMap<i64, i64>,
    /// Next tallies offset to read.
    next: i64,
    anomalies_next: i64,
}

/// The aggregator task's clients and settings.
struct Aggregator {
    kafka: KafkaConfig,
    topics: Topics,
    cohort: CohortConfig,
    cfg: FleetConfig,
    raw_partitions: u32,
    consumer: Arc<StreamConsumer<RebalanceContext>>,
    rebalances: Rebalances,
    outputs: Outputs,
    stats: Arc<StreamStats>,
    clock: Arc<dyn Clock>,
}

/// Runs the aggregator until `shutdown`; `clock` is the wall clock of the grace.
pub async fn run_fleet(
    kafka: &KafkaConfig,
    topics: &Topics,
    cohort: CohortConfig,
    cfg: FleetConfig,
    stats: Arc<StreamStats>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<()> {
    ensure_fleet_topics(kafka, topics).await?;
    let raw_partitions =
        feeder_kafka::topics::wait_partition_count(kafka, &topics.raw, Duration::from_secs(30))
            .await? as u32;
    let rebalances = Rebalances::default();
    let consumer: Arc<StreamConsumer<RebalanceContext>> = Arc::new(
        kafka
            .group_member(&cfg.group_id, &cfg.client_id, cfg.instance_id.as_ref())
            .create_with_context(RebalanceContext::new(rebalances.clone()))?,
    );
    consumer.subscribe(&[&topics.cohort_tallies])?;
    let producer: FutureProducer = kafka.producer(&cfg.client_id, 10_000, 30_000).create()?;
    tracing::info!(topic = %topics.cohort_tallies, group = %cfg.group_id, raw_partitions, "fleet cohort aggregator consuming");
    let mut agg = Aggregator {
        kafka: kafka.clone(),
        topics: topics.clone(),
        cohort,
        cfg,
        raw_partitions,
        consumer,
        rebalances,
        outputs: Outputs::new(producer, topics),
        stats,
        clock,
    };
    agg.run(shutdown).await?;
    tracing::info!("fleet cohort aggregator stopped");
    Ok(())
}

impl Aggregator {
    async fn run(&mut self, shutdown: CancellationToken) -> Result<()> {
        let consumer = Arc::clone(&self.consumer);
        let mut held: Option<Held> = None;
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut counts = FleetCounts::default();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                m = consumer.recv() => {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            ride_out(e, "cohort_tallies").await?;
                            continue;
                        }
                    };
                    if m.partition() != FLEET_PARTITION {
                        continue;
                    }
                    let h = match held.take() {
                        Some(h) if h.generation == self.rebalances.generation() => h,
                        _ => self.take_over(&m).await?,
                    };
                    let h = held.insert(h);
                    self.add_tally(h, &m, &mut counts);
                }
                _ = tick.tick() => {}
            }
            let mut judged = None;
            if let Some(h) = held.as_mut() {
                if h.generation != self.rebalances.generation() {
                    // the partition may have moved: rebuild from the log when it comes back
                    held = None;
                } else {
                    match self.judge(h, &mut counts).await? {
                        Judged::Nothing => {}
                        Judged::Committed => {
                            judged = Some((
                                h.agg.judged_up_to(),
                                h.agg.windows_judged(),
                                h.agg.open_windows(),
                            ));
                        }
                        Judged::Moved => held = None,
                    }
                }
            }
            observe::fleet_pass(&self.stats.fleet, &counts, judged);
        }
        Ok(())
    }

    /// Builds the aggregator for a newly held tallies partition: the committed progress,
    /// plus the fleet findings written after it.
    async fn take_over(&mut self, first: &BorrowedMessage<'_>) -> Result<Held> {
        let generation = self.rebalances.generation();
        let mut agg = FleetAggregator::new(
            self.cohort.clone(),
            self.raw_partitions,
            self.cfg.grace.as_millis() as i64,
        )
        .with_disabled(&self.cfg.disabled);
        let (recorded, anomalies_end, mut skipped) =
            blocking(&self.kafka, &self.topics, |kafka, topics| {
                let mut last = None;
                let mut skipped = Skipped::default();
                read_partition(
                    kafka,
                    &topics.cohort_progress,
                    FLEET_PARTITION,
                    0,
                    |_, _, v, _| {
                        match Progress::decode(v) {
                            Some(p) => last = Some(p),
                            None => skipped.add(ReadTopic::CohortProgress, 1),
                        }
                        Ok(())
                    },
                )?;
                let consumer: rdkafka::consumer::BaseConsumer =
                    kafka.reader("stream-cohorts").create()?;
                let (_, end) = consumer.fetch_watermarks(
                    &topics.anomalies,
                    FLEET_PARTITION,
                    Duration::from_secs(30),
                )?;
                Ok((last, end, skipped))
            })
            .await?;
        // a progress record past the anomalies log's end (topics made again, forged) would
        // fail every take-over: start as on a first run instead
        let recorded = recorded.filter(|p| {
            let valid = (0..=anomalies_end).contains(&p.anomalies_next);
            if !valid {
                tracing::warn!(
                    anomalies_next = p.anomalies_next,
                    anomalies_end,
                    "cohort progress past the anomalies log's end: ignored"
                );
                skipped.add(ReadTopic::CohortProgress, 1);
            }
            valid
        });
        let progress = match recorded {
            Some(p) => p,
            None => {
                // first run of this group: nothing of ours is in the anomalies log yet;
                // record where it ends now, so a crash before the first judgement reads
                // back from here
                let p = Progress {
                    judged_up_to: i64::MIN,
                    anomalies_next: anomalies_end,
                    shares: Vec::new(),
                };
                self.record_progress(&p).await?;
                p
            }
        };
        agg.resume(progress.judged_up_to);
        agg.restore_fleet_shares(&progress.shares);
        let from = progress.anomalies_next;
        let (end, emitted, undecodable) =
            blocking(&self.kafka, &self.topics, move |kafka, topics| {
                let mut emitted = Vec::new();
                let mut undecodable = 0;
                let end = read_partition(
                    kafka,
                    &topics.anomalies,
                    FLEET_PARTITION,
                    from,
                    |_, _, v, _| {
                        match Anomaly::decode(v) {
                            Ok(a) if a.device_id.is_empty() && a.source_offset < 0 => {
                                emitted.push(a)
                            }
                            Ok(_) => {}
                            Err(_) => undecodable += 1,
                        }
                        Ok(())
                    },
                )?;
                Ok((end, emitted, undecodable))
            })
            .await?;
        skipped.add(ReadTopic::Anomalies, undecodable);
        observe::skipped(FLEET_PARTITION, &skipped, &self.stats.undecodable_skipped);
        for a in &emitted {
            let id = fleet_id(&a.rule, &a.cohort, a.ts_from_ms);
            agg.already_emitted(agg.window_of(a.ts_from_ms), id);
        }
        tracing::info!(
            judged_up_to = agg.judged_up_to(),
            read_back = emitted.len(),
            "fleet cohort aggregator took over"
        );
        Ok(Held {
            agg,
            generation,
            first_offset: BTreeMap::new(),
            next: first.offset(),
            anomalies_next: end,
        })
    }

    /// Writes the progress record and waits for its ack.
    async fn record_progress(&mut self, p: &Progress) -> Result<()> {
        let record = Record {
            output: Output::Progress,
            key: PROGRESS_KEY.to_string(),
            bytes: p.encode(),
        };
        self.outputs
            .send(FLEET_PARTITION, -1, Mark::Unowned, &[record])
            .await?;
        self.outputs.acks(|_, _| None).await?;
        Ok(())
    }

    fn add_tally(&self, h: &mut Held, m: &BorrowedMessage<'_>, counts: &mut FleetCounts) {
        h.next = m.offset().saturating_add(1);
        let payload = m.payload().unwrap_or_default();
        let t = match WindowTally::decode(payload) {
            Some(t) => t,
            None => {
                // a record of another version or not ours: counted, skipped, never fatal
                let mut skipped = Skipped::default();
                skipped.add(ReadTopic::CohortTallies, 1);
                observe::skipped(FLEET_PARTITION, &skipped, &self.stats.undecodable_skipped);
                return;
            }
        };
        counts.tallies += 1;
        if t.window > h.agg.judged_up_to() {
            h.first_offset.entry(t.window).or_insert(m.offset());
        }
        h.agg.add(&t, self.clock.now_ms());
    }

    /// Judges what is due; writes the findings, waits for their acks, records progress,
    /// then commits.
    async fn judge(&mut self, h: &mut Held, counts: &mut FleetCounts) -> Result<Judged> {
        let before = h.agg.judged_up_to();
        let now = self.clock.now_ms();
        let findings = h.agg.poll(now);
        let judged = h.agg.judged_up_to();
        if judged == before {
            return Ok(Judged::Nothing);
        }
        let mut records = Vec::with_capacity(findings.len());
        for f in &findings {
            let a = f.record(None, now, -1);
            records.push(Record {
                output: Output::Finding,
                key: a.cohort.clone(),
                bytes: a.encode_to_vec(),
            });
            *counts.findings.entry(f.rule).or_default() += 1;
            tracing::warn!(rule = f.rule, cohort = %f.cohort, detail = %f.detail, "fleet cohort finding");
        }
        // fleet findings have deterministic ids of their own, no partition owner
        self.outputs
            .send(FLEET_PARTITION, -1, Mark::Unowned, &records)
            .await?;
        for acked in self.outputs.acks(|_, _| None).await? {
            h.anomalies_next = h.anomalies_next.max(acked.landed.offset.saturating_add(1));
        }
        h.first_offset = h.first_offset.split_off(&judged.saturating_add(1));
        let progress = Progress {
            judged_up_to: judged,
            anomalies_next: h.anomalies_next,
            shares: h.agg.fleet_shares(),
        };
        self.record_progress(&progress).await?;
        let resume_at = h.first_offset.values().copied().min().unwrap_or(h.next);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topics.cohort_tallies,
            FLEET_PARTITION,
            Offset::Offset(resume_at),
        )?;
        if let Committed::LostToRebalance(e) = commit(&self.consumer, tpl).await? {
            // the partition moved: its next holder re-reads these tallies and our progress
            tracing::warn!(error = %e, "tallies commit refused by a rebalance");
            return Ok(Judged::Moved);
        }
        Ok(Judged::Committed)
    }
}

/// How a judgement pass ended.
enum Judged {
    /// No window was due.
    Nothing,
    /// Windows judged, findings and progress written, tallies offset committed.
    Committed,
    /// The tallies commit was refused by a rebalance: the partition may have moved.
    Moved,
}

/// Runs blocking Kafka reads off the runtime.
async fn blocking<T: Send + 'static>(
    kafka: &KafkaConfig,
    topics: &Topics,
    f: impl FnOnce(&KafkaConfig, &Topics) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (kafka, topics) = (kafka.clone(), topics.clone());
    tokio::task::spawn_blocking(move || f(&kafka, &topics))
        .await
        .map_err(|e| Error::Recovery {
            partition: FLEET_PARTITION,
            source: e.into(),
        })?
}
