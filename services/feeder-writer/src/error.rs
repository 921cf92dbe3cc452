//! The crate's one error type: everything that stops the writer. Per-record problems
//! (an undecodable record, a bad timestamp) are not errors: they become quarantine rows.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid writer config: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Topics(#[from] feeder_kafka::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("storage {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(String),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("encryption key file {path}: {message}")]
    KeyFile { path: PathBuf, message: String },
    #[error("encryption: {0}")]
    Encryption(String),
    /// What Feeder refuses about a table (a missing column, a date out of range).
    #[error("iceberg: {0}")]
    Iceberg(String),
    /// What iceberg-rust (or the catalog behind it) reported, with what was being done.
    #[error("iceberg: {context}: {source}")]
    IcebergCall {
        context: String,
        #[source]
        source: Box<iceberg::Error>,
    },
    #[error("registry topic: {0}")]
    Registry(String),
    #[error("rebalance handling failed: {0}")]
    Rebalance(String),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
