//! Where a frame is decided: the raw partitions this member holds, each with its state
//! (replay windows, rule state: [`PartitionState`]) and what its recovery found.
//!
//! A partition is held from its first record (or idle-clock tick) after an assignment:
//! it is claimed ([`crate::fence`]) and rebuilt from the logs ([`crate::recovery`])
//! first. After a rebalance everything held may be stale (another member may have
//! processed those partitions meanwhile), so it is all dropped and rebuilt on next
//! sight ([`Partitions::drop_if_rebalanced`]).
//!
//! Deciding is free of I/O: [`Partition::decide`] turns one raw record into the records
//! to produce ([`crate::outputs::Record`]); the loop hands them to the outputs.
//! Snapshots of the state to the changelog: [`snapshot`]. Before a commit, whether
//! another writer's record landed among this owner's outputs (a newer owner's claim):
//! [`continuity`].

pub mod continuity;
pub mod snapshot;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use feeder_kafka::fence::Mark;
use feeder_kafka::{KafkaConfig, Topics};
use feeder_proto::pipeline::Anomaly;
use prost::Message as _;
use rdkafka::producer::FutureProducer;

use crate::admit::Reason;
use crate::changelog::OutputPositions;
use crate::checks::{GAP_BEFORE, Outcome, PartitionState};
use crate::clock::Clock;
use crate::config::DeviceLabels;
use crate::observe::BatchCounts;
use crate::outputs::{Acked, Output, Record, guard};
use crate::rebalance::Rebalances;

use self::continuity::{Interleaved, Landings};
use crate::recovery::recover;
use crate::{Error, Result, StreamConfig, StreamStats, observe};

/// What the partition loop's parts share, read only: settings, clients, counters, clock.
pub(crate) struct Context {
    pub(crate) kafka: KafkaConfig,
    pub(crate) topics: Topics,
    pub(crate) cfg: StreamConfig,
    pub(crate) stats: Arc<StreamStats>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The outputs' producer (a handle to the same client), for the fence's claims.
    pub(crate) producer: FutureProducer,
}

/// One raw partition held by this member.
pub(crate) struct Partition {
    pub(crate) state: PartitionState,
    /// Decided before a crash: produce only the anomalies listed (see `recovery`).
    already_output: HashMap<i64, Vec<Anomaly>>,
    /// Not decided, but this many of its anomalies are already in the log.
    anomalies_present: HashMap<i64, usize>,
    /// Next offsets of this partition's outputs, as acknowledged.
    positions: OutputPositions,
    /// Where the outputs of the batch in hand landed ([`continuity`]).
    landings: Landings,
    /// The raw offset this owner last committed (or resumed at): where it goes back to
    /// if it finds it may have been replaced.
    committed: i64,
    /// Next raw offset to process.
    pub(crate) raw_next: i64,
    /// What this owner's outputs carry: its claim token ([`crate::fence`]).
    pub(crate) owner: Mark,
}

impl Partition {
    /// Claims partition `p` ([`crate::fence::claim`]), then rebuilds its state from the
    /// logs ([`recover`]); processing resumes at raw offset `next`.
    async fn recover(ctx: &Context, p: i32, next: i64) -> Result<Self> {
        let started = Instant::now();
        let owner =
            crate::fence::claim(&ctx.producer, &ctx.topics, p, ctx.cfg.zombie_fence).await?;
        let r = recover(&ctx.kafka, &ctx.topics, p, next, &ctx.cfg).await?;
        observe::skipped(p, &r.skipped, &ctx.stats.undecodable_skipped);
        observe::recovered(
            &ctx.stats,
            r.restored_devices as u64,
            r.checked_records,
            started.elapsed(),
        );
        Ok(Self {
            state: r.state,
            already_output: r.already_output,
            anomalies_present: r.anomalies_present,
            positions: r.positions,
            landings: Landings::default(),
            committed: next,
            raw_next: next,
            owner,
        })
    }

    /// Decides the raw record `value` at `offset` of partition `p`: the records to
    /// produce for it, each at most `max_bytes` ([`guard::encode`]), counted in
    /// `counts`. A record decided by a run that crashed before committing gets only the
    /// anomalies that run left out. Free of I/O.
    pub(crate) fn decide(
        &mut self,
        p: i32,
        (offset, value): (i64, &[u8]),
        max_bytes: usize,
        counts: &mut BatchCounts,
    ) -> Vec<Record> {
        self.raw_next = offset.saturating_add(1);
        if let Some(missing) = self.already_output.remove(&offset) {
            counts.anomalies += missing.len() as u64;
            return missing
                .iter()
                .map(|a| Record {
                    output: Output::Anomalies,
                    key: guard::anomaly_key(a).to_string(),
                    bytes: a.encode_to_vec(),
                })
                .collect();
        }
        let outcome = self.state.process(offset, value);
        let mut found = self.state.take_anomalies();
        if let Some(n) = self.anomalies_present.remove(&offset) {
            found.drain(..n.min(found.len()));
        }
        let out = guard::encode(&outcome, &found, value, offset, max_bytes);
        match (&outcome, out.too_large) {
            (_, Some(what)) => {
                counts.guarded(what);
                tracing::warn!(
                    offset,
                    partition = p,
                    output = what.label(),
                    "output over the size limit: quarantined as output_too_large"
                );
            }
            (Outcome::Checked(c), None) => {
                counts.checked += 1;
                counts.gaps += u64::from(c.frame_flags.iter().any(|f| f == GAP_BEFORE));
                counts.flagged += u64::from(
                    c.frame_flags.iter().any(|f| f != GAP_BEFORE)
                        || !c.reading_flags.is_empty()
                        || !c.sample_flags.is_empty(),
                );
            }
            (Outcome::Quarantined(q), None) => match Reason::from_wire(&q.reason) {
                Some(reason) => counts.quarantined(reason),
                // invariant: the pure core writes reasons only as `Reason::as_str`
                None => {
                    tracing::error!(reason = %q.reason, "quarantine reason not a Reason");
                    counts.quarantined += 1;
                }
            },
            (Outcome::Absorbed { reason, .. }, None) => counts.absorbed(*reason),
        }
        counts.anomalies += out.anomalies.len() as u64;
        out.primary.into_iter().chain(out.anomalies).collect()
    }
}

/// The raw partitions this member holds, and the rebalance generation they belong to.
pub(crate) struct Partitions {
    held: HashMap<i32, Partition>,
    generation: u64,
    /// Partitions sought back to this raw offset ([`Partitions::rewind`]): records of
    /// theirs fetched before the seek are dropped until the one at that offset comes.
    rewound: HashMap<i32, i64>,
}

impl Partitions {
    pub(crate) fn new(rebalances: &Rebalances) -> Self {
        Self {
            held: HashMap::new(),
            generation: rebalances.generation(),
            rewound: HashMap::new(),
        }
    }

    /// After a rebalance, state and records fetched before it may be stale: another
    /// member may have processed those partitions since. Drops the state (the records
    /// are dropped by the caller, fetched again from the committed offsets; the state is
    /// rebuilt from the logs). Returns the current generation.
    pub(crate) fn drop_if_rebalanced(&mut self, rebalances: &Rebalances) -> u64 {
        let generation = rebalances.generation();
        if generation != self.generation {
            if !self.held.is_empty() {
                tracing::info!(
                    partitions = self.held.len(),
                    "rebalance: partition state dropped, rebuilt on next record"
                );
            }
            self.held.clear();
            self.rewound.clear();
            self.generation = generation;
        }
        generation
    }

    /// Drops everything held (a commit lost to a rebalance: held state may be stale).
    pub(crate) fn clear(&mut self) {
        self.held.clear();
        self.rewound.clear();
    }

    pub(crate) fn holds(&self, p: i32) -> bool {
        self.held.contains_key(&p)
    }

    pub(crate) fn raw_next(&self, p: i32) -> Option<i64> {
        self.held.get(&p).map(|part| part.raw_next)
    }

    /// One set of labels for every partition (a batch is decided with one set).
    pub(crate) fn set_labels(&mut self, labels: &DeviceLabels) {
        for part in self.held.values_mut() {
            part.state.set_labels(labels.clone());
        }
    }

    /// Recovers the partitions first seen (each with the raw offset it resumes at)
    /// together, not one after another: each recovery reads four topics, mostly waiting
    /// on the broker, and a stage assigned six partitions at start waited for six
    /// recoveries in a row before its first decision (the start-up stall of issue 13).
    pub(crate) async fn recover_all(
        &mut self,
        ctx: &Context,
        first_seen: BTreeMap<i32, i64>,
    ) -> Result<()> {
        let recovered = futures::future::try_join_all(
            first_seen
                .into_iter()
                .filter(|(p, _)| !self.held.contains_key(p))
                .map(|(p, next)| async move {
                    Ok::<_, Error>((p, Partition::recover(ctx, p, next).await?))
                }),
        )
        .await?;
        self.held.extend(recovered);
        Ok(())
    }

    /// Partition `p`, recovered first (to resume at raw offset `next`) if not held.
    pub(crate) async fn get_or_recover(
        &mut self,
        ctx: &Context,
        p: i32,
        next: i64,
    ) -> Result<&mut Partition> {
        Ok(match self.held.entry(p) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Partition::recover(ctx, p, next).await?),
        })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (i32, &mut Partition)> {
        self.held.iter_mut().map(|(&p, part)| (p, part))
    }

    /// Records where an acknowledged output landed (the positions a checkpoint names,
    /// once the batch is settled).
    pub(crate) fn landed(&mut self, acked: &Acked) {
        if let Some(part) = self.held.get_mut(&acked.partition) {
            part.landings.note(acked.landed.output, acked.landed.offset);
        }
    }

    /// Ends a batch's acks: moves every partition's output positions past what it wrote,
    /// and returns the partitions where another writer's record landed among this
    /// owner's outputs ([`continuity`]; only with the zombie fence on).
    pub(crate) fn settle(&mut self, fence: bool) -> Vec<(i32, Interleaved)> {
        let mut found = Vec::new();
        for (&p, part) in &mut self.held {
            let pos = &mut part.positions;
            let next = [&mut pos.checked, &mut pos.quarantine, &mut pos.anomalies];
            let follow_anomalies = p != crate::outputs::FLEET_PARTITION;
            let interleaved = part.landings.settle(next, follow_anomalies);
            if let Some(i) = interleaved.filter(|_| fence) {
                found.push((p, i));
            }
        }
        found
    }

    /// The raw offsets of `committed` are committed.
    pub(crate) fn committed(&mut self, committed: &BTreeMap<i32, i64>) {
        for (p, &next) in committed {
            if let Some(part) = self.held.get_mut(p) {
                part.committed = next;
            }
        }
    }

    /// Drops partition `p` (its owner may have been replaced, [`continuity`]) and returns
    /// the raw offset to seek it back to, its last commit; its records are dropped until
    /// the one at that offset comes ([`Partitions::accepts`]), and it is claimed again.
    pub(crate) fn rewind(&mut self, p: i32) -> Option<i64> {
        let at = self.held.remove(&p)?.committed;
        self.rewound.insert(p, at);
        Some(at)
    }

    /// Whether the record at `offset` of partition `p` is to be decided: not one fetched
    /// before `p` was sought back.
    pub(crate) fn accepts(&mut self, p: i32, offset: i64) -> bool {
        if self.rewound.is_empty() {
            return true; // the usual case: no lookup per record
        }
        match self.rewound.get(&p) {
            None => true,
            Some(&at) if at == offset => {
                self.rewound.remove(&p);
                true
            }
            Some(_) => false,
        }
    }

    /// Moves the rule and estimate counts of every partition into `counts`.
    pub(crate) fn take_counts(&mut self, counts: &mut BatchCounts) {
        for part in self.held.values_mut() {
            counts.rule_findings(part.state.take_rule_counts());
            counts.estimates(part.state.take_estimate_counts());
        }
    }
}
