//! Consumer-group progress: how far a group's committed offsets are behind the log end.
//! Used to know when a pipeline has drained (demo, tests) and for operators' checks.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{Error, KafkaConfig, Result};

/// Total records of `topics` (each with `partitions` partitions) not yet committed by
/// `group`. A partition the group never committed counts from its low watermark.
pub async fn group_lag(
    cfg: &KafkaConfig,
    group: &str,
    topics: &[&str],
    partitions: i32,
) -> Result<i64> {
    let cfg = cfg.clone();
    let group = group.to_string();
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cfg.reader("lag-probe").set("group.id", &group).create()?;
        let mut tpl = TopicPartitionList::new();
        for t in &topics {
            for p in 0..partitions {
                tpl.add_partition(t, p);
            }
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let mut lag = 0i64;
        for e in committed.elements() {
            let (low, high) =
                consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?;
            let pos = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            lag += (high - pos).max(0);
        }
        Ok(lag)
    })
    .await
    .map_err(|e| Error::Embedded(e.to_string()))?
}
