//! Where outputs are produced and committed: the `Outputs` object queues a batch's
//! records (a raw record's checked or quarantine record and anomalies, the cohort
//! tallies of the windows it closed, device states and checkpoints, the fleet's findings
//! and progress), waits for every ack, and then, only then, the raw offsets the batch
//! covers are committed (`commit`).
//!
//! That order is the stage's durability boundary (`docs/ARCHITECTURE.md`): an offset is
//! committed only after everything it caused is acknowledged by the broker, so a crash
//! at any point leaves outputs without a commit (recovery skips them), never a commit
//! without outputs.
//!
//! - [`produce`]: one record, its destination, the bounded wait for queue room, its ack;
//! - [`guard`]: the output size guard (a record too large for the broker is replaced by
//!   an `output_too_large` quarantine entry instead of stopping the stage).
//!
//! The commit runs on the blocking pool: librdkafka's synchronous commit waits for the
//! broker, and a runtime thread must not.

pub mod guard;
pub mod produce;

use std::sync::Arc;

use feeder_kafka::Topics;
use feeder_kafka::fence::Mark;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer};

pub use self::guard::{MIN_MAX_OUTPUT_RECORD_BYTES, OUTPUT_TOO_LARGE, RAW_CAP, REFUSED_RAW_CAP};
pub use self::produce::{FLEET_PARTITION, Output, Record};
use crate::checks::PartitionState;
use crate::rules::cohort_fleet::WindowTally;
use crate::{Error, Result};

/// A record queued and not yet acknowledged.
struct Pending {
    /// The raw offset it was produced for (-1: none, e.g. a fleet record).
    offset: i64,
    /// Raw partition it belongs to.
    partition: i32,
    output: Output,
    fut: DeliveryFuture,
}

/// An acknowledged output: the raw partition it belongs to, and where it landed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acked {
    pub(crate) partition: i32,
    pub(crate) landed: guard::Landed,
}

/// The stage's producer and the records it has queued (see the module docs).
pub(crate) struct Outputs {
    producer: FutureProducer,
    topics: Topics,
    pending: Vec<Pending>,
}

impl Outputs {
    pub(crate) fn new(producer: FutureProducer, topics: &Topics) -> Self {
        Self {
            producer,
            topics: topics.clone(),
            pending: Vec::new(),
        }
    }

    /// Queues `records` for raw offset `offset` of raw partition `p`, each carrying
    /// `mark` ([`crate::fence`]).
    pub(crate) async fn send(
        &mut self,
        p: i32,
        offset: i64,
        mark: Mark,
        records: &[Record],
    ) -> Result<()> {
        for r in records {
            let to = r.output.destination(&self.topics, p);
            let fut = produce::send(&self.producer, to, &r.key, &r.bytes, offset, mark).await?;
            self.pending.push(Pending {
                offset,
                partition: p,
                output: r.output,
                fut,
            });
        }
        Ok(())
    }

    /// Queues the cohort tallies of the windows partition `p` closed (at least once:
    /// acknowledged before the batch that closed them is committed); `offset` names the
    /// batch's last raw record in errors.
    pub(crate) async fn tallies(
        &mut self,
        p: i32,
        offset: i64,
        mark: Mark,
        state: &mut PartitionState,
    ) -> Result<()> {
        let mut records = Vec::new();
        for (window, counts) in state.take_tallies() {
            records.push(Record {
                output: Output::Tally,
                key: format!("{window}/{p}"),
                bytes: WindowTally::new(window, p as u32, counts).encode(),
            });
        }
        self.send(p, offset, mark, &records).await
    }

    /// Waits for the ack of every queued record, in the order queued. A raw record's
    /// output the broker refused for its size is settled by the guard ([`guard::settle`]:
    /// sent again alone, then replaced); `raw(p, offset)` gives the raw record's bytes
    /// for the replacement. Any other refusal fails the batch.
    pub(crate) async fn acks(
        &mut self,
        raw: impl Fn(i32, i64) -> Option<Vec<u8>>,
    ) -> Result<Vec<Acked>> {
        let mut acked = Vec::with_capacity(self.pending.len());
        for Pending {
            offset,
            partition,
            output,
            fut,
        } in std::mem::take(&mut self.pending)
        {
            let landed = guard::settle(
                &self.producer,
                &self.topics.quarantine,
                offset,
                output,
                fut,
                || raw(partition, offset),
            )
            .await?;
            acked.push(Acked { partition, landed });
        }
        Ok(acked)
    }
}

/// How a commit ended.
#[derive(Debug)]
pub(crate) enum Committed {
    Yes,
    /// Refused because the group moved partitions meanwhile: not a failure of the stage
    /// (what the commit covered is durable and tagged with its source offsets; whoever
    /// owns each partition now skips it on recovery), but state held may be stale.
    LostToRebalance(KafkaError),
}

/// Commits `offsets` (synchronously, on the blocking pool). Call only once every output
/// they cover is acknowledged ([`Outputs::acks`]).
pub(crate) async fn commit<C: ConsumerContext + 'static>(
    consumer: &Arc<StreamConsumer<C>>,
    offsets: TopicPartitionList,
) -> Result<Committed> {
    let c = Arc::clone(consumer);
    let done = tokio::task::spawn_blocking(move || c.commit(&offsets, CommitMode::Sync))
        .await
        .map_err(|e| Error::Delivery {
            offset: -1,
            source: format!("commit task: {e}").into(),
        })?;
    match done {
        Ok(()) => Ok(Committed::Yes),
        Err(e) if lost_to_rebalance(&e) => Ok(Committed::LostToRebalance(e)),
        Err(e) => Err(e.into()),
    }
}

/// A commit refused because the member's assignment changed under it.
fn lost_to_rebalance(e: &KafkaError) -> bool {
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
