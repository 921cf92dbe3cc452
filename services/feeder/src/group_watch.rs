//! The group watch of the stream and the writer: per partition of each consumer group's
//! input, the lag and the commit age (how long the committed offset has not moved while
//! there is lag), as Prometheus gauges. The one place these metrics are emitted.
//!
//! Why in the stages and not only from Kafka's exporter: an orphaned partition (no member
//! processes it: nobody was assigned it, or a dead member still is, as on a broker that
//! never evicts dead members, or while a removed static member's session runs out) has
//! lag that grows and a commit that does not move. The commit age says so directly, and
//! `FeederPartitionsOrphaned` alerts on it (deploy/k8s/base/alerts.yaml). Every replica
//! reports the group-wide view, so queries take `max by (group, topic, partition)`.
//! Labels are bounded: the stage's own groups and topics and the partition numbers.

use std::time::Duration;

use feeder_kafka::lag::{PartitionProgress, watch_group};
use feeder_kafka::{KafkaConfig, Topics};
use tokio_util::sync::CancellationToken;

/// Which stage's metric names to use.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// `cohorts`: the stage runs the cohort aggregator (its rules have cohort groupings),
    /// so `<group>-cohorts` exists and is watched too.
    Stream {
        cohorts: bool,
    },
    Writer,
}

/// Starts one watch per group the stage joins: the stream's group (raw) and its
/// cohort aggregator's `<group>-cohorts` (cohort tallies), or the writer's group (checked,
/// quarantine, anomalies). They stop with `shutdown`.
pub fn spawn(
    stage: Stage,
    kafka: &KafkaConfig,
    topics: &Topics,
    group: &str,
    every: Duration,
    shutdown: &CancellationToken,
) {
    let n = topics.partitions;
    let groups = match stage {
        Stage::Stream { cohorts } => {
            let mut g = vec![(group.to_string(), vec![(topics.raw.clone(), n)])];
            if cohorts {
                let tallies = vec![(topics.cohort_tallies.clone(), 1)];
                g.push((format!("{group}-cohorts"), tallies));
            }
            g
        }
        Stage::Writer => vec![(
            group.to_string(),
            vec![
                (topics.checked.clone(), n),
                (topics.quarantine.clone(), n),
                (topics.anomalies.clone(), n),
            ],
        )],
    };
    for (group, inputs) in groups {
        let label = group.clone();
        tokio::spawn(watch_group(
            kafka.clone(),
            group,
            inputs,
            every,
            shutdown.clone(),
            move |progress| emit(stage, &label, progress),
        ));
    }
}

fn emit(stage: Stage, group: &str, progress: &[PartitionProgress]) {
    for p in progress {
        let labels = [
            ("group", group.to_string()),
            ("topic", p.topic.clone()),
            ("partition", p.partition.to_string()),
        ];
        let (lag, age) = (p.lag as f64, p.commit_age.as_secs_f64());
        match stage {
            Stage::Stream { .. } => {
                metrics::gauge!("feeder_stream_partition_lag_records", &labels).set(lag);
                metrics::gauge!("feeder_stream_partition_commit_age_seconds", &labels).set(age);
            }
            Stage::Writer => {
                metrics::gauge!("feeder_writer_partition_lag_records", &labels).set(lag);
                metrics::gauge!("feeder_writer_partition_commit_age_seconds", &labels).set(age);
            }
        }
    }
}
