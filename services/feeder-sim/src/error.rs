//! The crate's one error type: everything that can stop keygen or the load generator
//! before it produces a result. Per-frame refusals are not errors; they are counted in
//! the load generator's report.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range (zero devices, zero concurrency...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A registry or key file could not be loaded.
    #[error(transparent)]
    Core(#[from] feeder_core::Error),
    /// Writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A registry or key file line could not be serialized.
    #[error("encoding a JSON line: {0}")]
    Encode(#[from] serde_json::Error),
    /// The load generator could not reach its target.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A request task of the load generator panicked or was aborted.
    #[error("load generator task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
