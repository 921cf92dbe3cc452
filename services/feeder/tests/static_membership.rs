//! Static group membership (`--instance-id`) on a real broker process (tansu): a stage
//! killed with SIGKILL and restarted with the same instance id gets its partitions back
//! within seconds and resumes, for the stream and for the writer. The same kill and
//! restart without an instance id, in the same run, is measured beside it.
//!
//! Recovery time is from the SIGKILL to every partition processed again: records
//! produced right after the kill are all decided (stream) or stored (writer) and their
//! offsets committed. Both figures are printed (`--nocapture`). Only the static case is
//! asserted: tansu 0.6 never evicts a dead member, so without an instance id the dead
//! process keeps its partitions on tansu (the new one does not process them while the
//! test waits); a real Kafka evicts it after the session timeout (10 s) and rebalances,
//! so there the dynamic case recovers in about the session timeout plus a rebalance.
//!
//! The dynamic case on tansu is also a real orphaned partition: lag that no live member
//! processes. The restarted stage's group watch must report it (per-partition lag > 0
//! and a commit age that grows, the metrics `FeederPartitionsOrphaned` alerts on), and
//! after the static restart, caught up, lag and age 0.

mod support;

use std::time::{Duration, Instant};

use feeder_kafka::{KafkaConfig, Topics, ensure_topics};
use feeder_proto::pipeline::CheckedFrame;
use feeder_sim::SimDevice;
use feeder_testkit::Tansu;
use prost::Message as _;

use support::*;

const PARTITIONS: i32 = 2;
const NOW_MS: i64 = 1_764_028_800_000;
/// The static member must be back well within this (it is a few seconds).
const STATIC_BOUND: Duration = Duration::from_secs(30);
/// How long the dynamic case is waited for before it is reported as not recovered.
const DYNAMIC_WAIT: Duration = Duration::from_secs(30);

/// Which stage, and how to make its input.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Stream,
    Writer,
}

struct Bench {
    dir: tempfile::TempDir,
    _broker: Tansu,
    kafka: KafkaConfig,
    registry: String,
    edge_keys: String,
    devices: Vec<SimDevice>,
    clock: i64,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let f = tansu_fleet(dir.path(), 12, 18, NOW_MS - 30 * 86_400_000);
        Self {
            dir,
            _broker: f.broker,
            kafka: f.kafka,
            registry: f.registry,
            edge_keys: f.edge_keys,
            devices: f.devices,
            clock: NOW_MS,
        }
    }

    /// One frame of every device, as the stage's input records.
    fn batch(&mut self, kind: Kind) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for d in &mut self.devices {
            self.clock += 10;
            let value = match kind {
                Kind::Stream => raw_record(d, self.clock),
                Kind::Writer => {
                    let sf = d.next_frame(self.clock).frame;
                    CheckedFrame {
                        device_id: sf.device_id.clone(),
                        seq: sf.seq,
                        key_id: sf.key_id,
                        payload: sf.payload,
                        signature: sf.signature,
                        received_at_ms: self.clock,
                        edge_id: "edge-0".into(),
                        ..Default::default()
                    }
                    .encode_to_vec()
                }
            };
            out.push((d.device_id.clone(), value));
        }
        out
    }

    fn spawn(&self, kind: Kind, prefix: &str, group: &str, instance: Option<&str>) -> Stage {
        let data = self.dir.path().join(format!("{prefix}-data"));
        let data = data.display().to_string();
        let mut args = vec![
            "--brokers",
            &self.kafka.brokers,
            "--topic-prefix",
            prefix,
            "--partitions",
            "2",
            "--replication",
            "1",
            "--group",
            group,
            "--group-watch-interval",
            "1s",
        ];
        let (name, stage_args): (&'static str, Vec<&str>) = match kind {
            Kind::Stream => (
                "stream",
                vec![
                    "stream",
                    "--registry",
                    &self.registry,
                    "--edge-keys",
                    &self.edge_keys,
                ],
            ),
            Kind::Writer => (
                "writer",
                vec!["writer", "--data", &data, "--flush-max-age", "300ms"],
            ),
        };
        args.splice(0..0, stage_args);
        let env: Vec<(&str, &str)> = instance
            .map(|id| vec![("FEEDER_INSTANCE_ID", id)])
            .unwrap_or_default();
        let mut s = Stage::spawn(name, self.dir.path(), &args, &env);
        s.wait_ready(Duration::from_secs(60));
        s
    }
}

/// What one kill and restart cost.
struct Recovery {
    /// SIGKILL to every partition processed again; `None`: not within the wait.
    took: Option<Duration>,
    /// Partitions caught up when the wait ended.
    caught_up: usize,
    /// (partition, lag, commit age in s) of the input topic as the restarted stage's
    /// group watch reported them at the end.
    watched: Vec<(i32, f64, f64)>,
}

/// The stage's `feeder_<stage>_partition_<what>` gauge for `group`/`topic`, per partition.
fn partition_gauge(stage: &Stage, what: &str, group: &str, topic: &str) -> Vec<(i32, f64)> {
    let name = format!("feeder_{}_partition_{what}", stage.name);
    let Some((200, body)) = http_get(stage.metrics, "/metrics") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(&name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        if label("group").as_deref() == Some(group) && label("topic").as_deref() == Some(topic) {
            let p = label("partition")
                .and_then(|p| p.parse().ok())
                .unwrap_or(-1);
            out.push((p, value.trim().parse().unwrap_or(f64::NAN)));
        }
    }
    out.sort_by_key(|(p, _)| *p);
    out
}

/// (partition, lag, commit age) from the stage's group watch.
fn watched(stage: &Stage, group: &str, topic: &str) -> Vec<(i32, f64, f64)> {
    let lag = partition_gauge(stage, "lag_records", group, topic);
    let age = partition_gauge(stage, "commit_age_seconds", group, topic);
    lag.iter()
        .filter_map(|&(p, l)| age.iter().find(|(q, _)| *q == p).map(|&(_, a)| (p, l, a)))
        .collect()
}

fn input_topic(kind: Kind, topics: &Topics) -> String {
    match kind {
        Kind::Stream => topics.raw.clone(),
        Kind::Writer => topics.checked.clone(),
    }
}

fn caught_up(kafka: &KafkaConfig, group: &str, topic: &str) -> usize {
    let committed = committed(kafka, group, topic, PARTITIONS);
    (0..PARTITIONS)
        .filter(|&p| committed[p as usize] == watermarks(kafka, topic, p).1)
        .count()
}

/// Runs the stage until it has processed a first batch, kills it (SIGKILL), produces a
/// second batch, restarts it with the same settings and times how long until every
/// partition has processed the second batch.
async fn kill_and_restart(
    bench: &mut Bench,
    kind: Kind,
    instance: Option<&str>,
    wait: Duration,
) -> Recovery {
    let label = if instance.is_some() {
        "static"
    } else {
        "dynamic"
    };
    let prefix = format!("sm-{kind:?}-{label}").to_lowercase();
    let group = format!("{prefix}-group");
    let topics = Topics::with_prefix(&prefix, PARTITIONS, 1);
    ensure_topics(&bench.kafka, &topics.data_topics(), PARTITIONS, 1)
        .await
        .unwrap();
    let topic = input_topic(kind, &topics);

    let mut first = bench.spawn(kind, &prefix, &group, instance);
    let batch = bench.batch(kind);
    produce_keyed(&bench.kafka, &topic, PARTITIONS, &batch).await;
    let (kafka, g, t) = (bench.kafka.clone(), group.clone(), topic.clone());
    wait_until(
        "the first run processes its batch",
        Duration::from_secs(90),
        || caught_up(&kafka, &g, &t) == PARTITIONS as usize,
    );

    first.sigkill();
    let killed = Instant::now();
    let batch = bench.batch(kind);
    produce_keyed(&bench.kafka, &topic, PARTITIONS, &batch).await;
    let restarted = bench.spawn(kind, &prefix, &group, instance);
    let mut n = 0;
    while killed.elapsed() < wait {
        n = caught_up(&bench.kafka, &group, &topic);
        if n == PARTITIONS as usize {
            let took = killed.elapsed();
            // the watch sees the caught-up group within a few of its 1 s periods
            let mut seen = Vec::new();
            let settled = Instant::now();
            while settled.elapsed() < Duration::from_secs(10) {
                seen = watched(&restarted, &group, &topic);
                if seen.len() == PARTITIONS as usize
                    && seen.iter().all(|&(_, l, a)| l == 0.0 && a == 0.0)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            return Recovery {
                took: Some(took),
                caught_up: n,
                watched: seen,
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{kind:?} {label} log after the wait:\n{}", restarted.log());
    Recovery {
        took: None,
        caught_up: n,
        watched: watched(&restarted, &group, &topic),
    }
}

fn report(kind: Kind, label: &str, r: &Recovery, wait: Duration) -> String {
    match r.took {
        Some(t) => format!("{kind:?} {label}: kill -9 to every partition processed again: {t:.1?}"),
        None => format!(
            "{kind:?} {label}: {} of {PARTITIONS} partitions processed again {wait:?} after kill -9",
            r.caught_up
        ),
    }
}

async fn static_and_dynamic(kind: Kind) {
    let mut bench = Bench::new();
    let id = format!("feeder-{kind:?}-0").to_lowercase();
    let with_id = kill_and_restart(&mut bench, kind, Some(&id), STATIC_BOUND).await;
    let without = kill_and_restart(&mut bench, kind, None, DYNAMIC_WAIT).await;
    println!(
        "{}",
        report(kind, "with --instance-id", &with_id, STATIC_BOUND)
    );
    println!(
        "{} (tansu 0.6 never evicts the dead member)",
        report(kind, "without an instance id", &without, DYNAMIC_WAIT)
    );
    let took = with_id.took.unwrap_or_else(|| {
        panic!(
            "{kind:?}: restarted with its instance id, {} of {PARTITIONS} partitions processed \
             within {STATIC_BOUND:?}; logs in {}",
            with_id.caught_up,
            bench.dir.path().display()
        )
    });
    assert!(took < STATIC_BOUND, "{took:?}");
    assert!(
        with_id.watched.len() == PARTITIONS as usize
            && with_id
                .watched
                .iter()
                .all(|&(_, l, a)| l == 0.0 && a == 0.0),
        "caught up, the watch must show no lag and no age: {:?}",
        with_id.watched
    );
    println!(
        "{kind:?} without an instance id, the watch (partition, lag, commit age s): {:?}",
        without.watched
    );
    if without.took.is_none() {
        // Orphaned partitions: lag the restarted stage cannot process. Its watch started
        // within seconds of the kill and the wait is 30 s, so the age is well past 10 s
        // on every partition still behind.
        let behind: Vec<_> = without.watched.iter().filter(|w| w.1 > 0.0).collect();
        assert!(
            PARTITIONS as usize - without.caught_up <= behind.len(),
            "every partition behind reports lag: {:?}",
            without.watched
        );
        assert!(
            behind.iter().all(|w| w.2 >= 10.0),
            "orphaned partitions show a growing commit age: {:?}",
            without.watched
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_restarted_with_its_instance_id_gets_its_partitions_back() {
    static_and_dynamic(Kind::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_restarted_with_its_instance_id_gets_its_partitions_back() {
    static_and_dynamic(Kind::Writer).await;
}
