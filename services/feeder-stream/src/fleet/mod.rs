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
//!   its progress, and are not written again (deterministic ids, [`anomaly_id`]).
//!
//! (Progress is a record, not offset-commit metadata: tansu drops commit metadata, and a
//! record is what every Kafka-protocol broker keeps.)
//!
//! Fleet findings carry `source_offset = -1`, so a stream partition recovering from
//! anomalies partition 0 does not take them for its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use feeder_kafka::fence::Mark;
use feeder_kafka::{KafkaConfig, Topics, ensure_fleet_topics};
use feeder_proto::pipeline::Anomaly;
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::rebalance::{RebalanceContext, Rebalances};
use crate::recovery::read_partition;
use crate::rules::cohort::CohortConfig;
use crate::rules::cohort_fleet::{FleetAggregator, WindowTally, fleet_id};
use crate::run::{acked, lost_to_rebalance, send};
use crate::skipped::{ReadTopic, Skipped};

/// The progress topic's one key.
const PROGRESS_KEY: &str = "progress";
use crate::{Error, Result};

/// The partition of the tallies topic that is used, and of the anomalies topic that
/// fleet findings go to.
pub const FLEET_PARTITION: i32 = 0;

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
    pub fn for_stream_group(group: &str, client_id: &str) -> Self {
        Self {
            group_id: format!("{group}-cohorts"),
            client_id: format!("{client_id}-cohorts"),
            instance_id: None,
            grace: Duration::from_secs(600),
            tick: Duration::from_secs(1),
            disabled: Vec::new(),
        }
    }
}

/// Counters for tests and the demo (Prometheus carries the same numbers).
#[derive(Debug, Default)]
pub struct FleetStats {
    pub tallies: AtomicU64,
    pub windows_judged: AtomicU64,
    pub findings: AtomicU64,
}

/// What the aggregator's progress record holds.
#[derive(Debug, Clone, PartialEq)]
struct Progress {
    judged_up_to: i64,
    anomalies_next: i64,
    /// The fleet's recent reporting shares, oldest first (`fleet_silence` history).
    shares: Vec<f64>,
}

impl Progress {
    /// `feeder-cohorts/2 judged=W anomalies=N shares=S1,S2,...` (f64 `Display` is the
    /// shortest text that parses back to the same value).
    fn encode(&self) -> String {
        let shares: Vec<String> = self.shares.iter().map(f64::to_string).collect();
        format!(
            "feeder-cohorts/2 judged={} anomalies={} shares={}",
            self.judged_up_to,
            self.anomalies_next,
            shares.join(",")
        )
    }

    /// Reads version 2, and version 1 (written before `fleet_silence`: no shares, so
    /// the rule starts cold after the upgrade).
    fn decode(s: &str) -> Option<Self> {
        let (rest, v2) = match s.strip_prefix("feeder-cohorts/2 ") {
            Some(rest) => (rest, true),
            None => (s.strip_prefix("feeder-cohorts/1 ")?, false),
        };
        let mut it = rest.split(' ');
        let judged_up_to = it.next()?.strip_prefix("judged=")?.parse().ok()?;
        let anomalies_next = it.next()?.strip_prefix("anomalies=")?.parse().ok()?;
        let shares = if v2 {
            let list = it.next()?.strip_prefix("shares=")?;
            if list.is_empty() {
                Vec::new()
            } else {
                list.split(',')
                    .map(|x| x.parse().ok())
                    .collect::<Option<Vec<f64>>>()?
            }
        } else {
            Vec::new()
        };
        if it.next().is_some() {
            return None;
        }
        Some(Self {
            judged_up_to,
            anomalies_next,
            shares,
        })
    }
}

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

/// Runs the aggregator until `shutdown`.
pub async fn run_fleet(
    kafka: &KafkaConfig,
    topics: &Topics,
    cohort: CohortConfig,
    cfg: FleetConfig,
    stats: Arc<crate::StreamStats>,
    shutdown: CancellationToken,
) -> Result<()> {
    let all = stats;
    let stats = &all.fleet;
    ensure_fleet_topics(kafka, topics).await?;
    let raw_partitions =
        feeder_kafka::topics::wait_partition_count(kafka, &topics.raw, Duration::from_secs(30))
            .await? as u32;
    let rebalances = Rebalances::default();
    let consumer: StreamConsumer<RebalanceContext> = kafka
        .group_member(&cfg.group_id, &cfg.client_id, cfg.instance_id.as_ref())
        .create_with_context(RebalanceContext::new(rebalances.clone()))?;
    consumer.subscribe(&[&topics.cohort_tallies])?;
    let producer: FutureProducer = kafka.producer(&cfg.client_id, 10_000, 30_000).create()?;
    tracing::info!(topic = %topics.cohort_tallies, group = %cfg.group_id, raw_partitions, "fleet cohort aggregator consuming");
    let mut held: Option<Held> = None;
    let mut tick = tokio::time::interval(cfg.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        crate::run::ride_out(e, "cohort_tallies").await?;
                        continue;
                    }
                };
                if m.partition() != FLEET_PARTITION {
                    continue;
                }
                let h = match held.take() {
                    Some(h) if h.generation == rebalances.generation() => h,
                    _ => take_over(kafka, topics, &producer, &cohort, &cfg, raw_partitions, &rebalances, &m, &all).await?,
                };
                let h = held.insert(h);
                add_tally(h, &m, &all);
            }
            _ = tick.tick() => {}
        }
        if let Some(h) = held.as_mut() {
            if h.generation != rebalances.generation() {
                // the partition may have moved: rebuild from the log when it comes back
                held = None;
                continue;
            }
            if !judge(h, &consumer, &producer, topics, stats).await? {
                held = None;
            }
        }
    }
    tracing::info!("fleet cohort aggregator stopped");
    Ok(())
}

/// Builds the aggregator for a newly held tallies partition: the committed progress,
/// plus the fleet findings written after it.
#[allow(clippy::too_many_arguments)]
async fn take_over(
    kafka: &KafkaConfig,
    topics: &Topics,
    producer: &FutureProducer,
    cohort: &CohortConfig,
    cfg: &FleetConfig,
    raw_partitions: u32,
    rebalances: &Rebalances,
    first: &BorrowedMessage<'_>,
    stats: &crate::StreamStats,
) -> Result<Held> {
    let generation = rebalances.generation();
    let mut agg =
        FleetAggregator::new(cohort.clone(), raw_partitions, cfg.grace.as_millis() as i64)
            .with_disabled(&cfg.disabled);
    let (recorded, anomalies_end, mut skipped) = blocking(kafka, topics, |kafka, topics| {
        let mut last = None;
        let mut skipped = Skipped::default();
        read_partition(
            kafka,
            &topics.cohort_progress,
            FLEET_PARTITION,
            0,
            |_, _, v, _| {
                match std::str::from_utf8(v).ok().and_then(Progress::decode) {
                    Some(p) => last = Some(p),
                    None => skipped.add(ReadTopic::CohortProgress, 1),
                }
                Ok(())
            },
        )?;
        let consumer: rdkafka::consumer::BaseConsumer = kafka.reader("stream-cohorts").create()?;
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
            // first run of this group: nothing of ours is in the anomalies log yet; record
            // where it ends now, so a crash before the first judgement reads back from here
            let p = Progress {
                judged_up_to: i64::MIN,
                anomalies_next: anomalies_end,
                shares: Vec::new(),
            };
            record_progress(producer, topics, &p).await?;
            p
        }
    };
    agg.resume(progress.judged_up_to);
    agg.restore_fleet_shares(&progress.shares);
    let from = progress.anomalies_next;
    let (end, emitted, undecodable) = blocking(kafka, topics, move |kafka, topics| {
        let mut emitted = Vec::new();
        let mut undecodable = 0;
        let end = read_partition(
            kafka,
            &topics.anomalies,
            FLEET_PARTITION,
            from,
            |_, _, v, _| {
                match Anomaly::decode(v) {
                    Ok(a) if a.device_id.is_empty() && a.source_offset < 0 => emitted.push(a),
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
    skipped.emit(FLEET_PARTITION, &stats.undecodable_skipped);
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
            reason: e.to_string(),
        })?
}

/// Writes the progress record and waits for its ack.
async fn record_progress(producer: &FutureProducer, topics: &Topics, p: &Progress) -> Result<()> {
    let value = p.encode();
    let fut = send(
        producer,
        &topics.cohort_progress,
        FLEET_PARTITION,
        PROGRESS_KEY,
        value.as_bytes(),
        -1,
        Mark::Unowned,
    )
    .await?;
    acked(-1, fut).await?;
    Ok(())
}

fn add_tally(h: &mut Held, m: &BorrowedMessage<'_>, all: &crate::StreamStats) {
    let stats = &all.fleet;
    h.next = m.offset().saturating_add(1);
    let payload = m.payload().unwrap_or_default();
    let t: WindowTally = match serde_json::from_slice(payload) {
        Ok(t) => t,
        Err(_) => {
            // a record of another version or not ours: counted, skipped, never fatal
            let mut skipped = Skipped::default();
            skipped.add(ReadTopic::CohortTallies, 1);
            skipped.emit(FLEET_PARTITION, &all.undecodable_skipped);
            return;
        }
    };
    stats.tallies.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("feeder_stream_cohort_tallies_total").increment(1);
    if t.window > h.agg.judged_up_to() {
        h.first_offset.entry(t.window).or_insert(m.offset());
    }
    h.agg.add(&t, now_ms());
}

/// Judges what is due; writes the findings, waits for their acks, records progress, then
/// commits. False when a rebalance took the partition meanwhile.
async fn judge(
    h: &mut Held,
    consumer: &StreamConsumer<RebalanceContext>,
    producer: &FutureProducer,
    topics: &Topics,
    stats: &FleetStats,
) -> Result<bool> {
    let before = h.agg.judged_up_to();
    let now = now_ms();
    let findings = h.agg.poll(now);
    let judged = h.agg.judged_up_to();
    if judged == before {
        return Ok(true);
    }
    let mut pending = Vec::with_capacity(findings.len());
    for f in &findings {
        let a = f.record(None, now, -1);
        let bytes = a.encode_to_vec();
        let fut = send(
            producer,
            &topics.anomalies,
            FLEET_PARTITION,
            &a.cohort,
            &bytes,
            -1,
            // fleet findings have deterministic ids of their own, no partition owner
            Mark::Unowned,
        )
        .await?;
        pending.push(fut);
        metrics::counter!("feeder_stream_rule_findings_total", "rule" => f.rule).increment(1);
        tracing::warn!(rule = f.rule, cohort = %f.cohort, detail = %f.detail, "fleet cohort finding");
    }
    for fut in pending {
        let d = acked(-1, fut).await?;
        h.anomalies_next = h.anomalies_next.max(d.offset.saturating_add(1));
    }
    h.first_offset = h.first_offset.split_off(&judged.saturating_add(1));
    record_progress(
        producer,
        topics,
        &Progress {
            judged_up_to: judged,
            anomalies_next: h.anomalies_next,
            shares: h.agg.fleet_shares(),
        },
    )
    .await?;
    let resume_at = h.first_offset.values().copied().min().unwrap_or(h.next);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(
        &topics.cohort_tallies,
        FLEET_PARTITION,
        Offset::Offset(resume_at),
    )?;
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        if !lost_to_rebalance(&e) {
            return Err(e.into());
        }
        // the partition moved: its next holder re-reads these tallies and our progress
        tracing::warn!(error = %e, "tallies commit refused by a rebalance");
        return Ok(false);
    }
    stats
        .windows_judged
        .store(h.agg.windows_judged(), Ordering::Relaxed);
    stats
        .findings
        .fetch_add(findings.len() as u64, Ordering::Relaxed);
    metrics::gauge!("feeder_stream_cohort_judged_window").set(judged as f64);
    metrics::gauge!("feeder_stream_cohort_open_windows").set(h.agg.open_windows() as f64);
    Ok(true)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_rejects_foreign_metadata() {
        let p = Progress {
            judged_up_to: 493_251,
            anomalies_next: 17,
            shares: vec![0.95, 0.4, 1.0 / 3.0, 0.0, 1.0],
        };
        assert_eq!(Progress::decode(&p.encode()), Some(p.clone()));
        let first = Progress {
            judged_up_to: i64::MIN,
            anomalies_next: 0,
            shares: Vec::new(),
        };
        assert_eq!(Progress::decode(&first.encode()), Some(first));
        assert_eq!(Progress::decode(""), None);
        for bad in [
            "feeder-cohorts/3 judged=1 anomalies=2 shares=",
            "feeder-cohorts/1 judged=x anomalies=2",
            "feeder-cohorts/2 judged=1 anomalies=2",
            "feeder-cohorts/2 judged=1 anomalies=2 shares=0.5,x",
            "feeder-cohorts/2 judged=1 anomalies=2 shares=0.5 more",
        ] {
            assert_eq!(Progress::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_version_1_record_still_reads() {
        // what the aggregator wrote before fleet_silence: no shares (cold start)
        assert_eq!(
            Progress::decode("feeder-cohorts/1 judged=493251 anomalies=17"),
            Some(Progress {
                judged_up_to: 493_251,
                anomalies_next: 17,
                shares: Vec::new(),
            })
        );
    }
}
