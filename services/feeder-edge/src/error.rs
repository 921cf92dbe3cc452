//! The crate's one error type, and its single mapping to gRPC status.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] feeder_kafka::Error),
    #[error("kafka client: {0}")]
    KafkaClient(#[from] rdkafka::error::KafkaError),
    #[error("registry: {0}")]
    Registry(#[from] feeder_core::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid edge config: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::Kafka(_) | Error::KafkaClient(_) => tonic::Status::unavailable(e.to_string()),
            // Never leak internals (paths, key material) to devices.
            _ => tonic::Status::internal("internal error"),
        }
    }
}
