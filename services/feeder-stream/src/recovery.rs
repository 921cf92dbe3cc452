//! Rebuilding a partition's state from the stage's own output.
//!
//! The checked topic is the record of what was accepted, so replaying its partition *p*
//! in log order through [`PartitionState::replay_checked`] reproduces the replay windows
//! and the rule state exactly (the rules are deterministic: their "now" is the record's
//! `received_at_ms`). The source offsets found in checked and quarantine at or after the
//! committed raw position are outputs of a run that crashed before committing: those raw
//! records are not decided again when they are read again.
//!
//! One raw record may have outputs in two topics (its checked frame and its anomalies),
//! and a crash can leave any subset of them in the log. Recovery therefore counts, per
//! source offset, the anomalies already in anomalies *p*: for a frame already in checked,
//! replaying it recomputes the same anomalies, and only those past the count are still
//! to produce ([`Recovered::already_output`]); for a frame not in checked, it is decided
//! again and its first *count* anomalies are not produced again
//! ([`Recovered::anomalies_present`]). The producer is idempotent and per-partition
//! ordered, so what a crash leaves of one record's anomalies is a prefix.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use feeder_kafka::{KafkaConfig, Topics};
use feeder_proto::pipeline::{Anomaly, CheckedFrame};
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::checks::PartitionState;
use crate::{Error, Result, StreamConfig};

#[derive(Clone, PartialEq, prost::Message)]
struct AnomalyHeader {
    #[prost(int64, tag = "10")]
    source_offset: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QuarantineHeader {
    #[prost(int64, tag = "7")]
    source_offset: i64,
}

pub struct Recovered {
    pub state: PartitionState,
    /// Raw offsets (>= the committed position) whose checked or quarantine output is
    /// already in the log, with the anomalies of theirs still missing from it.
    pub already_output: HashMap<i64, Vec<Anomaly>>,
    /// Raw offsets (>= the committed position) with no checked/quarantine output but
    /// this many anomalies in the log: skip that many when deciding them again.
    pub anomalies_present: HashMap<i64, usize>,
    pub checked_records: u64,
}

/// Rebuilds partition `partition`'s state; `committed` is the raw offset processing
/// resumes at.
pub async fn recover(
    kafka: &KafkaConfig,
    topics: &Topics,
    partition: i32,
    committed: i64,
    cfg: &StreamConfig,
) -> Result<Recovered> {
    let kafka = kafka.clone();
    let topics = topics.clone();
    let (window, rules, labels) = (
        cfg.replay_window,
        Arc::new(cfg.rules.clone()),
        cfg.device_labels.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut r = Reconciler::new(PartitionState::with_rules(window, rules, labels), committed);
        read_partition(&kafka, &topics.anomalies, partition, |_, v| {
            // An anomaly we cannot parse counts for nothing: at worst it is produced twice.
            if let Ok(h) = AnomalyHeader::decode(v) {
                r.anomaly(h.source_offset);
            }
            Ok(())
        })?;
        read_partition(&kafka, &topics.quarantine, partition, |_, v| {
            // A quarantine record we cannot parse marks nothing as done: reprocessing its
            // source at worst quarantines it twice, never loses it.
            if let Ok(h) = QuarantineHeader::decode(v) {
                r.quarantined(h.source_offset);
            }
            Ok(())
        })?;
        read_partition(&kafka, &topics.checked, partition, |_, v| {
            let c = CheckedFrame::decode(v).map_err(|e| Error::Recovery {
                partition,
                reason: format!("undecodable checked record: {e}"),
            })?;
            r.checked(&c);
            Ok(())
        })?;
        let Reconciler {
            mut state,
            already_output,
            anomalies_present,
            checked_records,
            ..
        } = r;
        // rule counts of replayed frames were counted by the run that produced them
        state.take_rule_counts();
        tracing::info!(
            partition,
            checked_records,
            devices = state.devices(),
            skipped = already_output.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition state recovered"
        );
        metrics::histogram!("feeder_stream_recovery_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(Recovered {
            state,
            already_output,
            anomalies_present,
            checked_records,
        })
    })
    .await
    .map_err(|e| Error::Recovery {
        partition,
        reason: e.to_string(),
    })?
}

/// What the output logs say about raw offsets at or after `committed`, fed in topic
/// order: anomalies, then quarantine, then checked (the checked frames in log order,
/// replayed into the state). Free of I/O so the bookkeeping is unit-tested.
struct Reconciler {
    state: PartitionState,
    committed: i64,
    already_output: HashMap<i64, Vec<Anomaly>>,
    anomalies_present: HashMap<i64, usize>,
    checked_records: u64,
}

impl Reconciler {
    fn new(state: PartitionState, committed: i64) -> Self {
        Self {
            state,
            committed,
            already_output: HashMap::new(),
            anomalies_present: HashMap::new(),
            checked_records: 0,
        }
    }

    fn anomaly(&mut self, source_offset: i64) {
        if source_offset >= self.committed {
            *self.anomalies_present.entry(source_offset).or_default() += 1;
        }
    }

    fn quarantined(&mut self, source_offset: i64) {
        if source_offset >= self.committed {
            self.already_output.insert(source_offset, Vec::new());
        }
    }

    fn checked(&mut self, c: &CheckedFrame) {
        let anomalies = self.state.replay_checked(c);
        self.checked_records += 1;
        if c.source_offset >= self.committed {
            let present = self.anomalies_present.remove(&c.source_offset).unwrap_or(0);
            let missing = anomalies.into_iter().skip(present).collect();
            self.already_output.insert(c.source_offset, missing);
        }
    }
}

/// Calls `f(offset, value)` for every record of `topic`/`partition` up to its current end.
fn read_partition(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    mut f: impl FnMut(i64, &[u8]) -> Result<()>,
) -> Result<()> {
    let consumer: BaseConsumer = kafka.reader("stream-recovery").create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    if high <= low {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let deadline = Duration::from_secs(60);
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                f(m.offset(), m.payload().unwrap_or_default())?;
                if m.offset() >= high - 1 {
                    return Ok(());
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None if last_progress.elapsed() > deadline => {
                return Err(Error::Recovery {
                    partition,
                    reason: format!("{topic}: no progress reading up to offset {high}"),
                });
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use feeder_proto::v1::{Event, EventKind, Frame};

    use super::*;

    /// A checked frame at raw offset `offset` whose payload raises `events` tamper anomalies.
    fn checked(seq: u64, offset: i64, events: usize) -> CheckedFrame {
        let frame = Frame {
            sent_at_ms: 1000,
            events: (0..events)
                .map(|i| Event {
                    ts_ms: i as i64,
                    kind: EventKind::CoverOpened as i32,
                    detail: String::new(),
                })
                .collect(),
            ..Default::default()
        };
        CheckedFrame {
            device_id: "m".into(),
            seq,
            payload: frame.encode_to_vec().into(),
            received_at_ms: 1000,
            source_offset: offset,
            ..Default::default()
        }
    }

    #[test]
    fn outputs_split_across_topics_are_completed_never_repeated() {
        let mut r = Reconciler::new(PartitionState::new(4096), 10);
        // offset 5 is committed: whatever it left is history
        r.anomaly(5);
        // offset 10: checked and 1 of its 2 anomalies made it before the crash
        r.anomaly(10);
        // offset 11: only its first anomaly made it, not its checked frame
        r.anomaly(11);
        // offset 12: quarantined
        r.quarantined(12);
        r.checked(&checked(1, 5, 1));
        r.checked(&checked(2, 10, 2));
        assert_eq!(r.checked_records, 2);
        assert_eq!(r.already_output.len(), 2);
        let missing = &r.already_output[&10];
        assert_eq!(missing.len(), 1);
        assert_eq!((missing[0].ts_from_ms, missing[0].source_offset), (1, 10));
        assert!(r.already_output[&12].is_empty());
        assert_eq!(r.anomalies_present, HashMap::from([(11, 1)]));
        // the rebuilt state refuses the replayed seqs and holds the rule state
        let mut st = r.state;
        assert_eq!(st.devices(), 1);
        assert!(st.take_anomalies().is_empty());
    }
}
