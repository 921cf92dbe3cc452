//! Consumer-group progress: how far a group's committed offsets are behind the log end.
//! Used to know when a pipeline has drained (demo, tests) and for operators' checks, and
//! by the stages' group watch ([`watch_group`]): per partition, the lag and how long the
//! committed offset has not moved while there is lag. That age is what shows a partition
//! nobody processes, whether no member owns it or a dead member still does (a broker
//! that never evicts, or one waiting out a session timeout): the group's own view of
//! assignment cannot tell a live owner from a dead one, progress can.

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

/// Where one partition of a group's input stands, as the group watch sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionProgress {
    pub topic: String,
    pub partition: i32,
    /// Records after the group's committed offset (from the low watermark when the group
    /// never committed).
    pub lag: i64,
    /// How long the committed offset has not moved while `lag > 0`; zero when caught up.
    /// A partition no live member processes (nobody owns it, or a dead member still
    /// does, as on a broker that never evicts) shows a growing age.
    pub commit_age: Duration,
}

/// Remembers when each partition's committed offset last moved, to turn snapshots of
/// (committed, log end) into [`PartitionProgress`]. Pure: the caller gives the time.
#[derive(Debug, Default)]
pub struct ProgressTracker {
    /// (position, since when it has waited with lag; `None`: caught up last time).
    last_move: std::collections::HashMap<(String, i32), (i64, Option<std::time::Instant>)>,
}

impl ProgressTracker {
    /// One observation of `topic`/`partition`: committed offset (`None`: never
    /// committed) and the low and high watermarks, at `now`.
    pub fn observe(
        &mut self,
        now: std::time::Instant,
        topic: &str,
        partition: i32,
        committed: Option<i64>,
        (low, high): (i64, i64),
    ) -> PartitionProgress {
        let pos = committed.unwrap_or(low).max(low);
        let lag = (high - pos).max(0);
        let key = (topic.to_string(), partition);
        let since = match self.last_move.get(&key) {
            _ if lag == 0 => None,
            // the same position, already waiting with lag: still waiting
            Some(&(was, Some(since))) if was == pos => Some(since),
            // first seen, the offset moved, or the lag just appeared: counts from now
            _ => Some(now),
        };
        self.last_move.insert(key, (pos, since));
        PartitionProgress {
            topic: topic.to_string(),
            partition,
            lag,
            commit_age: since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
        }
    }
}

/// Every `every` until `shutdown`, reads `group`'s committed offsets and the log ends
/// of `topics` (each with `partitions` partitions) and hands the progress of every
/// partition to `report`. Joins no group (a reader with the group's id only queries
/// offsets). A failed query is logged and skipped: the watch never stops the stage.
pub async fn watch_group(
    cfg: KafkaConfig,
    group: String,
    topics: Vec<(String, i32)>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut report: impl FnMut(&[PartitionProgress]) + Send + 'static,
) {
    let mut tracker = ProgressTracker::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let consumer: std::sync::Arc<BaseConsumer> =
        match cfg.reader("group-watch").set("group.id", &group).create() {
            Ok(c) => std::sync::Arc::new(c),
            Err(e) => {
                tracing::warn!(%group, error = %e, "group watch not started");
                return;
            }
        };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (c, t) = (consumer.clone(), topics.clone());
        let snap = tokio::task::spawn_blocking(move || snapshot(&c, &t)).await;
        match snap {
            Ok(Ok(rows)) => {
                let now = std::time::Instant::now();
                let progress: Vec<PartitionProgress> = rows
                    .into_iter()
                    .map(|(topic, p, committed, marks)| {
                        tracker.observe(now, &topic, p, committed, marks)
                    })
                    .collect();
                report(&progress);
            }
            Ok(Err(e)) => tracing::debug!(%group, error = %e, "group watch query failed"),
            Err(e) => tracing::debug!(%group, error = %e, "group watch task failed"),
        }
    }
}

type Snapshot = Vec<(String, i32, Option<i64>, (i64, i64))>;

fn snapshot(consumer: &BaseConsumer, topics: &[(String, i32)]) -> Result<Snapshot> {
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    for (t, n) in topics {
        for p in 0..*n {
            tpl.add_partition(t, p);
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut out = Vec::new();
    for e in committed.elements() {
        let marks = consumer.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let c = match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        out.push((e.topic().to_string(), e.partition(), c, marks));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn commit_age_grows_only_while_lag_waits_unprocessed() {
        let mut t = ProgressTracker::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // never committed, 10 records: lag from the low watermark, age starts at 0
        let p = t.observe(at(0), "raw", 0, None, (0, 10));
        assert_eq!((p.lag, p.commit_age), (10, Duration::ZERO));
        // nothing committed 60 s later: orphaned for 60 s
        let p = t.observe(at(60), "raw", 0, None, (0, 12));
        assert_eq!((p.lag, p.commit_age), (12, Duration::from_secs(60)));
        // progress resets the age, even with lag left
        let p = t.observe(at(70), "raw", 0, Some(5), (0, 12));
        assert_eq!((p.lag, p.commit_age), (7, Duration::ZERO));
        let p = t.observe(at(100), "raw", 0, Some(5), (0, 12));
        assert_eq!(p.commit_age, Duration::from_secs(30));
        // caught up: no age, however long since the last commit
        let p = t.observe(at(500), "raw", 0, Some(12), (0, 12));
        assert_eq!((p.lag, p.commit_age), (0, Duration::ZERO));
        // new records after a quiet hour: the age counts from when they were seen
        let p = t.observe(at(4100), "raw", 0, Some(12), (0, 13));
        assert_eq!((p.lag, p.commit_age), (1, Duration::ZERO));
        let p = t.observe(at(4160), "raw", 0, Some(12), (0, 13));
        assert_eq!(p.commit_age, Duration::from_secs(60));
        // partitions are tracked apart; a committed offset below retention counts from low
        let p = t.observe(at(4160), "raw", 1, Some(3), (8, 9));
        assert_eq!((p.lag, p.commit_age), (1, Duration::ZERO));
    }
}
