//! Rebuilding a partition's state from the stage's own output.
//!
//! The checked topic is the record of what was accepted, so replaying its partition *p*
//! through [`PartitionState::apply_accepted`] reproduces the replay windows exactly. The
//! source offsets found in checked and quarantine at or after the committed raw position
//! are outputs of a run that crashed before committing: those raw records are skipped
//! when they are read again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use feeder_kafka::{KafkaConfig, Topics};
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::checks::PartitionState;
use crate::{Error, Result};

/// The fields of a `CheckedFrame` recovery needs; prost skips the rest (the payload).
#[derive(Clone, PartialEq, prost::Message)]
struct CheckedHeader {
    #[prost(string, tag = "1")]
    device_id: String,
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(int64, tag = "11")]
    source_offset: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QuarantineHeader {
    #[prost(int64, tag = "7")]
    source_offset: i64,
}

pub struct Recovered {
    pub state: PartitionState,
    /// Raw offsets (>= the committed position) whose output is already in the log.
    pub already_output: HashSet<i64>,
    pub checked_records: u64,
}

/// Rebuilds partition `partition`'s state; `committed` is the raw offset processing
/// resumes at.
pub async fn recover(
    kafka: &KafkaConfig,
    topics: &Topics,
    partition: i32,
    committed: i64,
    window: u64,
) -> Result<Recovered> {
    let kafka = kafka.clone();
    let topics = topics.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut state = PartitionState::new(window);
        let mut already_output = HashSet::new();
        let mut checked_records = 0u64;
        read_partition(&kafka, &topics.checked, partition, |_, v| {
            let h = CheckedHeader::decode(v).map_err(|e| Error::Recovery {
                partition,
                reason: format!("undecodable checked record: {e}"),
            })?;
            state.apply_accepted(&h.device_id, h.seq);
            checked_records += 1;
            if h.source_offset >= committed {
                already_output.insert(h.source_offset);
            }
            Ok(())
        })?;
        read_partition(&kafka, &topics.quarantine, partition, |_, v| {
            // A quarantine record we cannot parse marks nothing as done: reprocessing its
            // source at worst quarantines it twice, never loses it.
            if let Ok(h) = QuarantineHeader::decode(v)
                && h.source_offset >= committed
            {
                already_output.insert(h.source_offset);
            }
            Ok(())
        })?;
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
            checked_records,
        })
    })
    .await
    .map_err(|e| Error::Recovery {
        partition,
        reason: e.to_string(),
    })?
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
