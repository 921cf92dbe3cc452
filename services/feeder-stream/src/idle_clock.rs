//! The cohort idle clock: closes cohort windows by the wall clock, on partitions that
//! have read everything there is to read.
//!
//! Why: a partition's cohort clock is the `received_at` of its frames, so a partition
//! with no traffic closes no window: the fleet aggregator waits `cohort_grace` for it,
//! and when the whole fleet goes silent (a vendor bricking every module, the attack this
//! stage exists to raise) no partition closes anything and nothing is ever judged. So
//! every tick (min(`cohort_tick`, window / 4)) the partition loop moves the cohort clock
//! of every raw partition assigned to this member to `now − cohort_lateness`, closing
//! the windows that end at or before it, and sends their tallies as the batch path does
//! (acknowledged before the next batch; no raw offset to commit: nothing was read).
//!
//! Only for a partition that is caught up, its next offset to process at or past its
//! high watermark: while records are unread, the frames' own clock decides, or a
//! lagging stage would raise silences that are only its own backlog. `cohort_lateness`
//! (2 min) covers the edge's stamping-to-append delay and clock skew; a frame stamped in
//! a window already closed is late: it counts as seen in the open window and nothing is
//! tallied again (`PartitionState::advance_cohort_clock`).
//!
//! A failed watermark query (broker unreachable for longer than the 10 s query timeout)
//! closes nothing that tick and is counted
//! (`feeder_stream_cohort_idle_query_failures_total`); it never stops the stage.
//!
//! A partition this member holds no state for yet (first tick, or after a rebalance
//! dropped it) is recovered first, from its committed offset, like the batch path does
//! on its first record, so its tally counts its devices.
//!
//! The clock's advance is not logged anywhere, so after a crash or a move the rebuilt
//! clock may be behind and the same windows are closed again. That duplicate tally (same
//! window and partition) is ignored by the aggregator, or falls in a window it has
//! already judged: nothing is counted twice. The same holds if the group moved the
//! partition away a moment before this member noticed (rebalances are seen in `recv`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use feeder_kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::outputs::{Output, Outputs};
use crate::partition::{Context, Partitions};
use crate::rebalance::RebalanceContext;
use crate::{Error, Result, StreamConfig, observe};

/// How long a committed-offset or watermark query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The partition loop's idle clock (see the module docs).
pub(crate) struct IdleClock {
    kafka: KafkaConfig,
    group_id: String,
    client_id: String,
    /// `None`: off (no cohorts, or `cohort_tick` unset).
    interval: Option<tokio::time::Interval>,
    lateness_ms: i64,
    /// Reads committed offsets and watermarks on the blocking pool (made on first use;
    /// never joins the group).
    reader: Option<Arc<BaseConsumer>>,
}

impl IdleClock {
    pub(crate) fn new(kafka: &KafkaConfig, cfg: &StreamConfig) -> Self {
        let cohort = &cfg.rules.cohort;
        let interval = cfg
            .cohort_tick
            .filter(|_| !cohort.groupings.is_empty() && cohort.window_ms > 0)
            .map(|tick| {
                let quarter = Duration::from_millis((cohort.window_ms / 4) as u64);
                let mut i = tokio::time::interval(tick.min(quarter).max(Duration::from_millis(10)));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
        Self {
            kafka: kafka.clone(),
            group_id: cfg.group_id.clone(),
            client_id: format!("{}-idle-clock", cfg.client_id),
            interval,
            lateness_ms: cfg.cohort_lateness.as_millis() as i64,
            reader: None,
        }
    }

    /// Completes at the next tick; never when the clock is off.
    pub(crate) async fn tick(&mut self) {
        match self.interval.as_mut() {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Closes the windows ending at or before `now − lateness` (now by `ctx.clock`) on
    /// every caught-up partition assigned to this member, and waits for their tallies'
    /// acks.
    pub(crate) async fn close_windows(
        &mut self,
        ctx: &Context,
        consumer: &StreamConsumer<RebalanceContext>,
        outputs: &mut Outputs,
        parts: &mut Partitions,
    ) -> Result<()> {
        let raw = ctx.topics.raw.clone();
        let assigned: Vec<i32> = consumer
            .assignment()?
            .elements()
            .iter()
            .filter(|e| e.topic() == raw)
            .map(|e| e.partition())
            .collect();
        if assigned.is_empty() {
            return Ok(());
        }
        let unheld: Vec<i32> = assigned
            .iter()
            .copied()
            .filter(|p| !parts.holds(*p))
            .collect();
        let reader = self.reader()?;
        let ends = tokio::task::spawn_blocking(move || ends(&reader, &raw, &assigned, &unheld))
            .await
            .map_err(|e| Error::Recovery {
                partition: -1,
                source: format!("idle clock query: {e}").into(),
            })?;
        let ends = match ends {
            Ok(ends) => ends,
            Err(e) => {
                // the broker is unreachable or slow: this tick closes nothing, and the
                // next one (or the frames, once they flow again) catches up
                tracing::warn!(error = %e, "idle clock: watermark query failed; no window closed this tick");
                observe::idle_query_failed();
                return Ok(());
            }
        };
        let until = ctx.clock.now_ms().saturating_sub(self.lateness_ms);
        let mut closed = 0;
        for End {
            partition,
            committed,
            high,
        } in ends
        {
            let next = parts.raw_next(partition).unwrap_or(committed);
            if next < high {
                continue; // records unread: the frames' clock decides
            }
            let part = parts.get_or_recover(ctx, partition, next).await?;
            let n = part.state.advance_cohort_clock(until);
            if n > 0 {
                closed += n as u64;
                let last = part.raw_next.saturating_sub(1);
                outputs
                    .tallies(partition, last, part.owner, &mut part.state)
                    .await?;
            }
        }
        // tallies are not guarded: any refusal fails the tick
        let acked = outputs.acks(|_, _| None).await?;
        let tallies = acked
            .iter()
            .filter(|a| a.landed.output == Output::Tally)
            .count() as u64;
        if closed > 0 {
            tracing::debug!(windows = closed, "idle clock closed cohort windows");
        }
        observe::idle_closed(&ctx.stats, tallies, closed);
        Ok(())
    }

    fn reader(&mut self) -> Result<Arc<BaseConsumer>> {
        if let Some(r) = &self.reader {
            return Ok(r.clone());
        }
        let r: Arc<BaseConsumer> = Arc::new(
            self.kafka
                .consumer(&self.group_id, &self.client_id)
                .create()?,
        );
        self.reader = Some(r.clone());
        Ok(r)
    }
}

/// Where a raw partition stands.
struct End {
    partition: i32,
    /// The group's committed offset (the low watermark when there is none: the
    /// consumer starts from the earliest record); used only for a partition not held.
    committed: i64,
    high: i64,
}

/// Blocking: the high watermark of every `assigned` partition, and the committed offset
/// of the `unheld` ones.
fn ends(reader: &BaseConsumer, raw: &str, assigned: &[i32], unheld: &[i32]) -> Result<Vec<End>> {
    let mut committed = HashMap::new();
    if !unheld.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for &p in unheld {
            tpl.add_partition(raw, p);
        }
        for e in reader.committed_offsets(tpl, QUERY_TIMEOUT)?.elements() {
            if let Offset::Offset(o) = e.offset() {
                committed.insert(e.partition(), o);
            }
        }
    }
    let mut out = Vec::with_capacity(assigned.len());
    for &p in assigned {
        let (low, high) = reader.fetch_watermarks(raw, p, QUERY_TIMEOUT)?;
        out.push(End {
            partition: p,
            committed: committed.get(&p).copied().unwrap_or(low),
            high,
        });
    }
    Ok(out)
}
