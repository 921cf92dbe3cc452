//! Topic names, partitioning, and creating topics that are missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{Error, KafkaConfig, Result};

/// The pipeline's topics. Names derive from a prefix so tests and tenants never share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Edge -> stream: one `RawFrame` per accepted frame, key = device_id.
    pub raw: String,
    /// Stream -> writer: one `CheckedFrame` per new frame.
    pub checked: String,
    /// Stream -> writer: one `QuarantinedFrame` per frame refused downstream.
    pub quarantine: String,
    /// Stream -> writer: one `Anomaly` per finding of the checks.
    pub anomalies: String,
    /// The stream stage's state changelog (compacted; key = device id).
    pub stream_state: String,
    /// Stream partitions -> the fleet cohort aggregator: one `WindowTally` per raw
    /// partition and closed window. Only partition 0 is used (one active aggregator per
    /// consumer group); created with one partition.
    pub cohort_tallies: String,
    /// The fleet cohort aggregator's progress (compacted, one partition, one key): the
    /// newest judged window and where its findings end in the anomalies topic.
    pub cohort_progress: String,
    /// The device registry (device contract v1.1; compacted, key = `<device_id>/<key_id>`),
    /// written by provisioning and read whole by every stage that follows it. Not among
    /// [`Topics::all_topics`]: the pipeline never creates it (`feeder devices publish` does).
    pub registry: String,
    pub partitions: i32,
    pub replication: i32,
}

impl Topics {
    pub fn with_prefix(prefix: &str, partitions: i32, replication: i32) -> Self {
        Self {
            raw: format!("{prefix}.raw"),
            checked: format!("{prefix}.checked"),
            quarantine: format!("{prefix}.quarantine"),
            anomalies: format!("{prefix}.anomalies"),
            stream_state: format!("{prefix}.stream-state"),
            cohort_tallies: format!("{prefix}.cohort-tallies"),
            cohort_progress: format!("{prefix}.cohort-progress"),
            registry: format!("{prefix}.registry"),
            partitions,
            replication,
        }
    }

    /// Every topic of the data path; all share one partition count.
    pub fn data_topics(&self) -> [&str; 4] {
        [&self.raw, &self.checked, &self.quarantine, &self.anomalies]
    }

    /// Topics holding state rather than data: compacted, latest record per key kept.
    pub fn state_topics(&self) -> [&str; 1] {
        [&self.stream_state]
    }

    /// Topics of the fleet-wide view: one partition each (more are tolerated, unused).
    pub fn fleet_topics(&self) -> [&str; 2] {
        [&self.cohort_tallies, &self.cohort_progress]
    }

    /// Every topic of the pipeline (data, state and fleet), e.g. to create them up front on a
    /// broker without the CreateTopics API (the embedded mock cluster).
    pub fn all_topics(&self) -> Vec<&str> {
        let mut all = self.data_topics().to_vec();
        all.extend(self.state_topics());
        all.extend(self.fleet_topics());
        all
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::with_prefix("feeder", 6, 3)
    }
}

/// The topic configuration of state topics ([`Topics::state_topics`]).
pub const COMPACTED: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// Creates each topic that is missing, then checks every one has `partitions` partitions.
pub async fn ensure_topics(
    cfg: &KafkaConfig,
    names: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<()> {
    ensure(cfg, names, Some(partitions), replication, &[]).await
}

/// Creates the [`Topics::fleet_topics`] that are missing, with one partition (the
/// progress topic compacted); an existing topic with more partitions is accepted (only
/// partition 0 is read and written).
pub async fn ensure_fleet_topics(cfg: &KafkaConfig, topics: &Topics) -> Result<()> {
    ensure(
        cfg,
        &[&topics.cohort_tallies],
        None,
        topics.replication,
        &[],
    )
    .await?;
    ensure(
        cfg,
        &[&topics.cohort_progress],
        None,
        topics.replication,
        COMPACTED,
    )
    .await
}

/// [`ensure_topics`] for state topics: created with `cleanup.policy=compact`. An existing
/// topic is left as it is (its policy is the operator's, e.g. a Strimzi `KafkaTopic`).
pub async fn ensure_compacted_topics(
    cfg: &KafkaConfig,
    names: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<()> {
    ensure(cfg, names, Some(partitions), replication, COMPACTED).await
}

async fn ensure(
    cfg: &KafkaConfig,
    names: &[&str],
    partitions: Option<i32>,
    replication: i32,
    config: &[(&str, &str)],
) -> Result<()> {
    let existing = existing_partition_counts(cfg, names).await?;
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !existing.iter().any(|(e, _)| e == n))
        .collect();
    if !missing.is_empty() {
        create_topics(cfg, &missing, partitions.unwrap_or(1), replication, config).await?;
    }
    for name in names {
        let got = wait_partition_count(cfg, name, Duration::from_secs(30)).await?;
        let Some(partitions) = partitions else {
            continue;
        };
        if got != partitions {
            return Err(Error::Topic {
                topic: name.to_string(),
                reason: format!(
                    "has {got} partitions, expected {partitions}: the stream stage maps raw \
                     partition p to partition p of its outputs, so data topics must match"
                ),
            });
        }
    }
    Ok(())
}

/// Topics among `names` that exist, with their partition counts (one metadata request).
async fn existing_partition_counts(
    cfg: &KafkaConfig,
    names: &[&str],
) -> Result<Vec<(String, i32)>> {
    let cfg = cfg.clone();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cfg.client().create()?;
        let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && names.iter().any(|n| n == t.name()))
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    })
    .await
    .map_err(|e| Error::Embedded(e.to_string()))?
}

async fn create_topics(
    cfg: &KafkaConfig,
    names: &[&str],
    partitions: i32,
    replication: i32,
    config: &[(&str, &str)],
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = cfg.client().create()?;
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            config.iter().fold(
                NewTopic::new(n, partitions, TopicReplication::Fixed(replication)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for res in admin.create_topics(new.iter(), &opts).await? {
        match res {
            Ok(_) => tracing::info!(topic = ?res, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Topic {
                    topic,
                    reason: format!("create failed: {code}"),
                });
            }
        }
    }
    Ok(())
}

/// The partition count of a topic, waiting until metadata shows it (new topics take a moment).
pub async fn wait_partition_count(
    cfg: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<i32> {
    let cfg = cfg.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cfg.client().create()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5));
            if let Ok(md) = &md
                && let Some(t) = md.topics().iter().find(|t| t.name() == topic)
                && t.error().is_none()
                && !t.partitions().is_empty()
            {
                return Ok(t.partitions().len() as i32);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Topic {
                    topic: topic.clone(),
                    reason: "not visible in metadata".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .map_err(|e| Error::Embedded(e.to_string()))?
}
