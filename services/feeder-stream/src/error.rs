//! The crate's one error type. Each variant says where (raw offset, partition) and keeps
//! what went wrong as its `source`, so a caller can walk the chain.

/// The cause under a stage error: a Kafka or codec error, or a sentence when there is
/// no error value (a producer dropped, a refusal explained).
pub type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] feeder_kafka::Error),
    #[error("kafka client: {0}")]
    KafkaClient(#[from] rdkafka::error::KafkaError),
    #[error("output record for raw offset {offset} not acknowledged: {source}")]
    Delivery {
        offset: i64,
        #[source]
        source: Source,
    },
    #[error("recovery of partition {partition}: {source}")]
    Recovery {
        partition: i32,
        #[source]
        source: Source,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("state snapshot of partition {partition}: {source}")]
    Snapshot {
        partition: i32,
        #[source]
        source: postcard::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
