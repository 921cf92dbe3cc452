//! Rebuilding a partition's state from the changelog and the stage's own output.
//!
//! The state changelog ([`crate::changelog`]) holds every device's state as of its last
//! checkpoint; the checked topic is the record of what was accepted since, so replaying
//! its partition *p* from the checkpoint in log order through
//! [`PartitionState::replay_checked`] reproduces the replay windows and the rule state
//! exactly (the rules are deterministic: their "now" is the record's `received_at_ms`).
//! Without a usable checkpoint (first start, or a state layout from another version) the
//! whole checked partition is replayed, which is as complete as the topic's retention. The source offsets found in checked and quarantine at or after the
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
use std::time::{Duration, Instant};

use feeder_kafka::fence::{FenceState, Mark, Verdict};
use feeder_kafka::{KafkaConfig, Topics};
use feeder_proto::pipeline::{Anomaly, CheckedFrame};
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::changelog::{OutputPositions, Restored};
use crate::checks::PartitionState;
use crate::skipped::{ReadTopic, Skipped};
use crate::{Error, Result, StreamConfig};

/// The one field recovery needs of an anomaly: decoded alone, the rest skipped (a
/// recovery reads a whole partition of them). Its tag is `Anomaly.source_offset`'s in
/// `records.proto`; `headers_read_the_source_offset_of_the_full_records` fails if they
/// part.
#[derive(Clone, PartialEq, prost::Message)]
struct AnomalyHeader {
    #[prost(int64, tag = "10")]
    source_offset: i64,
}

/// The same for a quarantine record (`QuarantinedFrame.source_offset`).
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
    /// Checked records replayed into the state.
    pub checked_records: u64,
    /// Next offsets of the partition's output topics when recovery read them.
    pub positions: OutputPositions,
    /// Devices restored from the changelog (0: the state comes from a full replay).
    pub restored_devices: usize,
    /// Records of the logs read that did not decode, skipped ([`crate::skipped`]).
    pub skipped: Skipped,
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
    let fresh = PartitionState::from_config(cfg);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut state = fresh;
        let mut changelog = Restored::default();
        let mut skipped = Skipped::default();
        read_partition(
            &kafka,
            &topics.stream_state,
            partition,
            0,
            |_, k, v, mark| {
                changelog.record_marked(k, v, mark);
                Ok(())
            },
        )?;
        skipped.add(ReadTopic::StreamState, changelog.unusable);
        let ends = output_ends(&kafka, &topics, partition)?;
        let (start, ahead, restored_devices) = restore(&mut state, &changelog, partition, ends);
        // the owner in force where each log is read from; then each claim read moves it
        let tokens = crate::changelog::tokens_before(&changelog.claims, start);
        let mut fences =
            [tokens.anomalies, tokens.quarantine, tokens.checked].map(FenceState::starting_at);
        let mut superseded = 0u64;
        let mut keep = |fence: &mut FenceState, mark| match fence.judge(mark) {
            Verdict::Keep => true,
            Verdict::Claim => false,
            Verdict::Superseded => {
                superseded += 1;
                false
            }
        };
        let [fa, fq, fc] = &mut fences;
        let mut r = Reconciler::new(state, committed, ahead);
        let anomalies = read_partition(
            &kafka,
            &topics.anomalies,
            partition,
            start.anomalies,
            |_, _, v, mark| {
                if !keep(fa, mark) {
                    return Ok(());
                }
                // An anomaly we cannot parse counts for nothing: at worst it is produced twice.
                match AnomalyHeader::decode(v) {
                    Ok(h) => r.anomaly(h.source_offset),
                    Err(_) => skipped.add(ReadTopic::Anomalies, 1),
                }
                Ok(())
            },
        )?;
        let quarantine = read_partition(
            &kafka,
            &topics.quarantine,
            partition,
            start.quarantine,
            |_, _, v, mark| {
                if !keep(fq, mark) {
                    return Ok(());
                }
                // A quarantine record we cannot parse marks nothing as done: reprocessing its
                // source at worst quarantines it twice, never loses it.
                match QuarantineHeader::decode(v) {
                    Ok(h) => r.quarantined(h.source_offset),
                    Err(_) => skipped.add(ReadTopic::Quarantine, 1),
                }
                Ok(())
            },
        )?;
        let checked = read_partition(
            &kafka,
            &topics.checked,
            partition,
            start.checked,
            |o, _, v, mark| {
                if !keep(fc, mark) {
                    return Ok(());
                }
                // Not a frame of ours: nothing to replay. If its raw record is not
                // committed, that record is decided again: at worst output twice.
                match CheckedFrame::decode(v) {
                    Ok(c) => r.checked(o, &c),
                    Err(_) => skipped.add(ReadTopic::Checked, 1),
                }
                Ok(())
            },
        )?;
        let Reconciler {
            mut state,
            already_output,
            anomalies_present,
            checked_records,
            ..
        } = r;
        // rule counts of replayed frames were counted by the run that produced them
        state.take_rule_counts();
        if superseded > 0 {
            // a stage that lost the partition while stalled wrote these after the next
            // owner's claim: nobody uses them (`crate::fence`)
            tracing::warn!(partition, superseded, "outputs of a replaced owner ignored");
            crate::observe::superseded_outputs(superseded);
        }
        tracing::info!(
            partition,
            restored_devices,
            checked_records,
            devices = state.devices(),
            skipped = already_output.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition state recovered"
        );
        Ok(Recovered {
            state,
            already_output,
            anomalies_present,
            checked_records,
            positions: OutputPositions {
                checked,
                quarantine,
                anomalies,
            },
            restored_devices,
            skipped,
        })
    })
    .await
    .map_err(|e| Error::Recovery {
        partition,
        source: e.into(),
    })?
}

/// Loads the changelog into `state` when it is usable. Returns where to start reading
/// the output topics, the devices whose records are newer than the checkpoint, and how
/// many devices were restored. Anything unusable or invalid (`ends`: the output logs'
/// next offsets) falls back to a full replay (start at offset 0, empty state): slower,
/// never wrong. Free of I/O; public for the property and fuzz tests of changelog restore.
pub fn restore(
    state: &mut PartitionState,
    changelog: &Restored,
    partition: i32,
    ends: OutputPositions,
) -> (OutputPositions, HashMap<String, i64>, usize) {
    let full_replay = (OutputPositions::default(), HashMap::new(), 0);
    let Some(cp) = changelog.checkpoint.as_ref().filter(|_| changelog.usable()) else {
        if changelog.unusable > 0 || !changelog.devices.is_empty() {
            tracing::warn!(
                partition,
                unusable = changelog.unusable,
                "state changelog not usable (no checkpoint, or another state format): \
                 replaying the whole checked partition"
            );
            crate::observe::state_rejected("unusable");
        }
        return full_replay;
    };
    if let Err(e) = changelog.validate(ends) {
        // positions past the logs' ends: another cluster's changelog, topics deleted and
        // made again, or a forged record; the checked log is the truth
        tracing::warn!(partition, error = %e, "state changelog invalid: replaying the whole checked partition");
        crate::observe::state_rejected(e.label());
        return full_replay;
    }
    let mut restored = || -> std::result::Result<(), postcard::Error> {
        state.restore_partition(&cp.partition_state)?;
        for (id, d) in &changelog.devices {
            state.restore_device(id, &d.state)?;
        }
        Ok(())
    };
    if let Err(e) = restored() {
        // `restore_*` validate what they decode (a window whose fields contradict each
        // other is refused like bytes that do not decode)
        tracing::warn!(partition, error = %e, "state changelog does not decode or is invalid: replaying the whole checked partition");
        crate::observe::state_rejected("invalid_state");
        let fresh = state.emptied();
        *state = fresh;
        return full_replay;
    }
    let start = OutputPositions {
        checked: cp.checked_next,
        quarantine: cp.quarantine_next,
        anomalies: cp.anomalies_next,
    };
    (
        start,
        changelog.ahead_of_checkpoint(),
        changelog.devices.len(),
    )
}

/// What the output logs say about raw offsets at or after `committed`, fed in topic
/// order: anomalies, then quarantine, then checked (the checked frames in log order,
/// replayed into the state). Free of I/O so the bookkeeping is unit-tested.
struct Reconciler {
    state: PartitionState,
    committed: i64,
    /// Devices restored from a snapshot newer than the checkpoint: checked offsets below
    /// the value are already in their state.
    ahead: HashMap<String, i64>,
    already_output: HashMap<i64, Vec<Anomaly>>,
    anomalies_present: HashMap<i64, usize>,
    checked_records: u64,
}

impl Reconciler {
    fn new(state: PartitionState, committed: i64, ahead: HashMap<String, i64>) -> Self {
        Self {
            state,
            committed,
            ahead,
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

    /// A checked record at `offset` of the checked partition.
    fn checked(&mut self, offset: i64, c: &CheckedFrame) {
        if self
            .ahead
            .get(&c.device_id)
            .is_some_and(|next| offset < *next)
        {
            // already in the device's snapshot, and every output of it was acknowledged
            // before the snapshot was written
            if c.source_offset >= self.committed {
                self.anomalies_present.remove(&c.source_offset);
                self.already_output.insert(c.source_offset, Vec::new());
            }
            return;
        }
        let anomalies = self.state.replay_checked(c);
        self.checked_records += 1;
        if c.source_offset < self.committed {
            // tallies of windows closed by committed records were acknowledged then
            self.state.take_tallies();
        }
        if c.source_offset >= self.committed {
            let present = self.anomalies_present.remove(&c.source_offset).unwrap_or(0);
            let missing = anomalies.into_iter().skip(present).collect();
            self.already_output.insert(c.source_offset, missing);
        }
    }
}

/// The next offsets of partition `partition` of the output topics now.
fn output_ends(kafka: &KafkaConfig, topics: &Topics, partition: i32) -> Result<OutputPositions> {
    let consumer: BaseConsumer = kafka.reader("stream-recovery").create()?;
    let high = |topic: &str| -> Result<i64> {
        Ok(consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(30))?
            .1)
    };
    Ok(OutputPositions {
        checked: high(&topics.checked)?,
        quarantine: high(&topics.quarantine)?,
        anomalies: high(&topics.anomalies)?,
    })
}

/// Calls `f(offset, key, value, fence mark)` for every record of `topic`/`partition` from offset
/// `from` (or the oldest retained) up to its current end; returns that end (the next
/// offset).
pub(crate) fn read_partition(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    from: i64,
    mut f: impl FnMut(i64, &[u8], &[u8], Mark) -> Result<()>,
) -> Result<i64> {
    let consumer: BaseConsumer = kafka.reader("stream-recovery").create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    if from > high {
        return Err(Error::Recovery {
            partition,
            source: format!(
                "{topic} ends at offset {high}, before the checkpoint's {from}: \
                 was the topic deleted and created again?"
            )
            .into(),
        });
    }
    let start = from.max(low);
    if high <= start {
        return Ok(high);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let deadline = Duration::from_secs(60);
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                f(
                    m.offset(),
                    m.key().unwrap_or_default(),
                    m.payload().unwrap_or_default(),
                    Mark::of(m.headers(), m.offset()),
                )?;
                if m.offset() >= high.saturating_sub(1) {
                    return Ok(high);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None if last_progress.elapsed() > deadline => {
                return Err(Error::Recovery {
                    partition,
                    source: format!("{topic}: no progress reading up to offset {high}").into(),
                });
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use feeder_proto::pipeline::{Anomaly, QuarantinedFrame};
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
        let mut r = Reconciler::new(PartitionState::new(4096), 10, HashMap::new());
        // offset 5 is committed: whatever it left is history
        r.anomaly(5);
        // offset 10: checked and 1 of its 2 anomalies made it before the crash
        r.anomaly(10);
        // offset 11: only its first anomaly made it, not its checked frame
        r.anomaly(11);
        // offset 12: quarantined
        r.quarantined(12);
        r.checked(0, &checked(1, 5, 1));
        r.checked(1, &checked(2, 10, 2));
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

    #[test]
    fn a_device_snapshot_that_decodes_but_contradicts_itself_means_a_full_rebuild() {
        let mut live = PartitionState::new(4096);
        for seq in 1..=5 {
            live.apply_accepted("m", seq);
        }
        let (id, good) = live.take_dirty().unwrap().remove(0);
        // postcard: the window's highest seq (5), then its holes (none), then the rest
        assert_eq!(&good[..2], &[5, 0]);
        // the same record with one hole, seq 9, above the highest: decodes, is invalid
        let mut forged = vec![5, 1, 9];
        forged.extend_from_slice(&good[2..]);
        let ends = OutputPositions {
            checked: 10,
            quarantine: 0,
            anomalies: 0,
        };
        let changelog = |state: Vec<u8>| {
            let mut c = Restored::default();
            let device = crate::changelog::DeviceSnapshot {
                checked_next: 10,
                format: crate::changelog::STATE_FORMAT,
                state: state.into(),
            };
            c.record(id.as_bytes(), &device.encode_to_vec());
            let cp = ends.checkpoint(live.partition_bytes().unwrap(), 20);
            c.record(
                crate::changelog::CHECKPOINT_KEY.as_bytes(),
                &cp.encode_to_vec(),
            );
            c
        };
        let mut state = PartitionState::new(4096);
        let (start, _, restored) = restore(&mut state, &changelog(good), 0, ends);
        assert_eq!((start.checked, restored, state.devices()), (10, 1, 1));
        let mut state = PartitionState::new(4096);
        let (start, ahead, restored) = restore(&mut state, &changelog(forged), 0, ends);
        assert_eq!(
            (start, restored, state.devices()),
            (OutputPositions::default(), 0, 0)
        );
        assert!(ahead.is_empty());
    }

    #[test]
    fn records_already_in_a_snapshot_newer_than_the_checkpoint_are_not_replayed() {
        // m's snapshot includes checked offsets < 3; the checkpoint is older
        let ahead = HashMap::from([("m".to_string(), 3)]);
        let mut r = Reconciler::new(PartitionState::new(4096), 12, ahead);
        r.anomaly(12);
        r.checked(1, &checked(1, 11, 1));
        r.checked(2, &checked(2, 12, 1));
        r.checked(3, &checked(3, 13, 0));
        assert_eq!(r.checked_records, 1, "only offset 3 is replayed");
        // offset 12 was output in full before the snapshot: nothing left to produce
        assert_eq!(r.already_output[&12], Vec::new());
        assert!(r.anomalies_present.is_empty());
        assert!(r.already_output[&13].is_empty());
        assert!(!r.already_output.contains_key(&11), "committed: history");
    }

    #[test]
    fn headers_read_the_source_offset_of_the_full_records() {
        let a = Anomaly {
            device_id: "m".into(),
            rule: "spike".into(),
            detail: "d".into(),
            source_offset: 4_242,
            ..Default::default()
        };
        let h = AnomalyHeader::decode(a.encode_to_vec().as_slice()).unwrap();
        assert_eq!(h.source_offset, 4_242);
        let q = QuarantinedFrame {
            device_id: "m".into(),
            reason: "duplicate".into(),
            raw: vec![1, 2].into(),
            source_offset: 77,
            ..Default::default()
        };
        let h = QuarantineHeader::decode(q.encode_to_vec().as_slice()).unwrap();
        assert_eq!(h.source_offset, 77);
    }
}
