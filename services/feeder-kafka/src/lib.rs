//! Kafka plumbing shared by Feeder's stages.
//!
//! - [`KafkaConfig`]: bootstrap servers plus pass-through librdkafka properties (TLS, SASL,
//!   tuning), so production clusters need no code change.
//! - [`Topics`]: the pipeline's topic names and partitioning. The stream stage writes a
//!   record read from raw partition *p* to partition *p* of its output topics, so all
//!   data topics share one partition count (checked by [`topics::ensure_topics`]).
//! - [`InstanceId`]: static group membership, so a restarted stage gets its partitions
//!   back without waiting for a session timeout and a rebalance ([`membership`]).
//! - [`fence`]: the zombie fence, claim records and owner headers that let readers
//!   ignore the outputs of a stream stage that lost its partitions while it stalled.
//! - [`registry_follow`]: the registry read from its compacted topic and followed, for
//!   the edge and the stream.
//! - [`EmbeddedBroker`]: librdkafka's in-process mock cluster, for the demo and fast tests
//!   only: memory only, evicts old data past ~5 MiB per partition, no transaction isolation.

pub mod config;
pub mod consumer_error;
pub mod embedded;
pub mod error;
pub mod fence;
pub mod lag;
pub mod membership;
pub mod redact;
pub mod registry_follow;
pub mod topics;

pub use config::{Compression, KafkaConfig, PRODUCER_COMPRESSION};
pub use embedded::EmbeddedBroker;
pub use error::{Error, Result};
pub use membership::InstanceId;
pub use topics::{Topics, ensure_compacted_topics, ensure_fleet_topics, ensure_topics};
