//! The crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] feeder_kafka::Error),
    #[error("kafka client: {0}")]
    KafkaClient(#[from] rdkafka::error::KafkaError),
    #[error("output record for raw offset {offset} not acknowledged: {reason}")]
    Delivery { offset: i64, reason: String },
    #[error("recovery of partition {partition}: {reason}")]
    Recovery { partition: i32, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("state snapshot of partition {partition}: {reason}")]
    Snapshot { partition: i32, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
