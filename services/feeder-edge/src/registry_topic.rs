//! The edge's registry read from its compacted Kafka topic (device contract v1.1):
//! [`feeder_kafka::registry_follow`] swapping each registry it hands over (a copy sharing
//! every unchanged shard) into the [`SharedRegistry`] the calls read, so a revocation
//! written to the topic is refused within a second at every edge.

use std::sync::Arc;

use feeder_kafka::KafkaConfig;
pub use feeder_kafka::registry_follow::{REBUILD_EVERY, TopicSource, TopicStats};
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::shared_registry::SharedRegistry;

/// Reads the topic whole into `registry`, then follows it until `shutdown`. Returns once
/// the first registry is in force.
pub async fn load(
    kafka: &KafkaConfig,
    src: TopicSource,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) -> Result<Arc<TopicStats>> {
    let sink = Box::new(move |reg| registry.replace(reg));
    Ok(feeder_kafka::registry_follow::follow(kafka, src, "edge", sink, shutdown).await?)
}
