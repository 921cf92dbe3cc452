//! Producing one record: which topic an output goes to, the bounded wait for room in the
//! producer's queue, and the ack. The lowest layer of [`crate::outputs`]; the zombie
//! fence's claims ([`crate::fence`]) use it too.

use feeder_kafka::Topics;
use feeder_kafka::fence::Mark;
use futures::channel::oneshot::Canceled;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::{Delivery, OwnedDeliveryResult};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::{Error, Result};

/// The partition of the tallies topic that is used, and of the anomalies topic that
/// fleet findings go to.
pub const FLEET_PARTITION: i32 = 0;

/// What a produced record is, which says where it goes and how its ack is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Checked *p* (a raw record's output).
    Checked,
    /// Quarantine *p* (a raw record's output).
    Quarantine,
    /// Anomalies *p* (a raw record's findings).
    Anomalies,
    /// A cohort tally: tallies partition 0 (its position is not tracked).
    Tally,
    /// A device state or checkpoint: the state changelog *p*.
    State,
    /// A fleet finding: anomalies partition 0.
    Finding,
    /// The fleet aggregator's progress: cohort progress partition 0.
    Progress,
}

impl Output {
    /// Its name in logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Output::Checked => "checked",
            Output::Quarantine => "quarantine",
            Output::Anomalies => "anomalies",
            Output::Tally => "tally",
            Output::State => "state",
            Output::Finding => "finding",
            Output::Progress => "progress",
        }
    }

    /// The topic and partition of this output for raw partition `p`.
    pub fn destination(self, topics: &Topics, p: i32) -> (&str, i32) {
        match self {
            Output::Checked => (&topics.checked, p),
            Output::Quarantine => (&topics.quarantine, p),
            Output::Anomalies => (&topics.anomalies, p),
            Output::State => (&topics.stream_state, p),
            Output::Tally => (&topics.cohort_tallies, FLEET_PARTITION),
            Output::Finding => (&topics.anomalies, FLEET_PARTITION),
            Output::Progress => (&topics.cohort_progress, FLEET_PARTITION),
        }
    }
}

/// One record to produce: what, under which key.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub output: Output,
    pub key: String,
    pub bytes: Vec<u8>,
}

/// Waits for the broker's ack of the record produced for raw offset `offset`.
pub(crate) async fn acked(offset: i64, fut: DeliveryFuture) -> Result<Delivery> {
    delivered(offset, fut.await)
}

/// What a delivery future gave, as the stage's result; `offset` names the raw record in
/// errors.
pub(crate) fn delivered(
    offset: i64,
    r: std::result::Result<OwnedDeliveryResult, Canceled>,
) -> Result<Delivery> {
    match r {
        Ok(Ok(d)) => Ok(d),
        Ok(Err((e, _))) => Err(Error::Delivery {
            offset,
            source: e.into(),
        }),
        Err(_) => Err(Error::Delivery {
            offset,
            source: "producer dropped".into(),
        }),
    }
}

/// Queues one output record ([`enqueue`]) carrying `mark` ([`crate::fence`]); `offset`
/// names the raw record in errors.
pub(crate) async fn send(
    producer: &FutureProducer,
    (topic, partition): (&str, i32),
    key: &str,
    payload: &[u8],
    offset: i64,
    mark: Mark,
) -> Result<DeliveryFuture> {
    enqueue(producer, topic, partition, key, payload, mark.headers())
        .await
        .map_err(|e| Error::Delivery {
            offset,
            source: e.into(),
        })
}

/// Queues one record; a full local queue means the broker is slow: wait for room (the
/// queue is bounded), never drop.
pub(crate) async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> std::result::Result<DeliveryFuture, KafkaError> {
    let mut rec = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(payload);
    if let Some(h) = headers {
        rec = rec.headers(h);
    }
    loop {
        match producer.send_result(rec) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
