//! Counting consumer-group rebalances, so a loop can tell that what it holds may be stale;
//! and riding out consumer errors (`ride_out`).
//!
//! Why: the stream stage keeps per-partition state, and the cohort aggregator keeps the
//! fleet's open windows. With the eager (`range`) assignment every rebalance revokes every
//! partition; another member may process a partition meanwhile, so whatever this member
//! held for it must be rebuilt from the logs before it is used again. librdkafka serves
//! the callbacks inside `recv()`, on the loop's own task, so a loop reads the generation
//! right after each `recv()` and compares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

/// The number of rebalances seen, shared with the consumer's context.
#[derive(Debug, Clone, Default)]
pub struct Rebalances(Arc<AtomicU64>);

impl Rebalances {
    pub fn generation(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A consumer context that bumps [`Rebalances`] on every assignment change.
pub struct RebalanceContext {
    rebalances: Rebalances,
}

impl RebalanceContext {
    pub fn new(rebalances: Rebalances) -> Self {
        Self { rebalances }
    }
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let what = match rebalance {
            Rebalance::Assign(tpl) => format!("assigned {} partitions", tpl.count()),
            Rebalance::Revoke(tpl) => format!("revoked {} partitions", tpl.count()),
            Rebalance::Error(e) => format!("error: {e}"),
        };
        let g = self.rebalances.0.fetch_add(1, Ordering::AcqRel) + 1;
        crate::observe::rebalance();
        tracing::info!(generation = g, "rebalance: {what}");
    }
}

/// A consumer error: waited out (logged, counted, a short pause) unless it is fatal,
/// which stops the stage (`feeder_kafka::consumer_error`). `consumer` names which one
/// for the metric: `raw` (the partition loop) or `cohort_tallies` (the aggregator).
pub(crate) async fn ride_out(
    e: rdkafka::error::KafkaError,
    consumer: &'static str,
) -> crate::Result<()> {
    crate::observe::consumer_error(consumer);
    Ok(feeder_kafka::consumer_error::wait_out(e, consumer).await?)
}
