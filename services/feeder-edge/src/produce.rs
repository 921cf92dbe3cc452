//! Hands accepted frames to the raw topic and turns broker acks into frame codes.

use std::time::Duration;

use feeder_core::AckCode;
use feeder_kafka::KafkaConfig;
use feeder_proto::pipeline::RawFrame;
use prost::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::admission::Refusal;
use crate::{EdgeConfig, Result};

/// The edge's producer lingers less than the stages' shared default (5 ms): a device's ack
/// waits for its frame's batch to be sent, so linger is on every ack's latency. A
/// request's frames are enqueued together and concurrent requests share batches, so
/// 1 ms still batches.
const EDGE_LINGER_MS: &str = "1";

pub struct RawProducer {
    producer: FutureProducer,
    topic: String,
    ack_timeout: Duration,
}

impl RawProducer {
    pub fn new(kafka: &KafkaConfig, topic: &str, cfg: &EdgeConfig) -> Result<Self> {
        let mut config = kafka.producer(
            &cfg.edge_id,
            cfg.producer_queue_max,
            cfg.ack_timeout.as_millis() as u64,
        );
        // Pass-through properties still win, as for every client.
        if !kafka.properties.iter().any(|(k, _)| k == "linger.ms") {
            config.set("linger.ms", EDGE_LINGER_MS);
        }
        let producer: FutureProducer = config.create()?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            ack_timeout: cfg.ack_timeout,
        })
    }

    /// Enqueues one frame without waiting. A full local queue is refused with code 8.
    pub fn enqueue(&self, device_id: &str, record: &RawFrame) -> Result<DeliveryFuture, Refusal> {
        let payload = record.encode_to_vec();
        let rec = FutureRecord::to(&self.topic)
            .key(device_id)
            .payload(&payload);
        self.producer.send_result(rec).map_err(|(e, _)| match e {
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => Refusal::new(
                AckCode::ResourceExhausted,
                "queue_full",
                "edge is busy, retry later",
            ),
            _ => Refusal::new(
                AckCode::Unavailable,
                "broker_unavailable",
                "broker unavailable",
            ),
        })
    }

    /// Waits for the broker's ack. `Ok` only when the record is durably in the log.
    pub async fn wait(&self, fut: DeliveryFuture) -> Result<(), Refusal> {
        let unavailable = || {
            Refusal::new(
                AckCode::Unavailable,
                "broker_unavailable",
                "broker did not ack in time",
            )
        };
        // librdkafka fails the message itself after message.timeout.ms (= ack_timeout);
        // the outer bound is a safety net.
        match tokio::time::timeout(self.ack_timeout + Duration::from_secs(5), fut).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => {
                tracing::warn!(error = %e, "raw record not acknowledged");
                Err(unavailable())
            }
            Ok(Err(_)) | Err(_) => Err(unavailable()),
        }
    }

    /// Records waiting in the local queue (for metrics).
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Whether a broker answers a metadata request for the raw topic within `timeout`
    /// (blocking: call from the blocking pool).
    pub fn broker_reachable(&self, timeout: Duration) -> bool {
        match self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
        {
            Ok(md) => md
                .topics()
                .iter()
                .any(|t| t.name() == self.topic && t.error().is_none()),
            Err(_) => false,
        }
    }

    /// Flushes the queue on shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush incomplete at shutdown");
        }
    }
}
