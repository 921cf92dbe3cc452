//! The crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("embedded broker: {0}")]
    Embedded(String),
    #[error("registry topic: {0}")]
    Registry(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
