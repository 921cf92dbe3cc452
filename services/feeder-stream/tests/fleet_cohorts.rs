//! Fleet cohorts through Kafka, with the real stage (partition loop + aggregator) on the
//! embedded broker: 200 meters of one module, spread over 4 raw partitions, go silent
//! while 600 others keep reporting. The silence is raised once for the fleet, not once
//! per partition, and neither a clean restart nor a crash of the stage raises it again.
//!
//! Then the wall-clock idle clock, with 2-second windows on a manual clock (the stage's
//! injected `Clock`): it stands still while a test reports a window's frames, stamped
//! with its time, and moves on only while the test waits for a judgement, so no test
//! races the real clock and they run in parallel. The whole fleet going silent is judged (no partition has a frame to close a
//! window with) and raises `fleet_silence`, on the embedded broker and on tansu (real
//! watermarks over TCP decide when a partition is caught up); a partition without any
//! traffic does not hold the judgement back until the grace; a fleet rule switched off
//! in `rules.disabled` is judged but raises nothing.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use feeder_kafka::{
    EmbeddedBroker, KafkaConfig, Topics, ensure_compacted_topics, ensure_fleet_topics,
    ensure_topics,
};
use feeder_proto::pipeline::Anomaly;
use feeder_stream::rules::RulesConfig;
use feeder_stream::rules::cohort::CohortConfig;
use feeder_stream::{Clock, ManualClock, StreamConfig};
use feeder_testkit::Tansu;
use prost::Message as _;
use rdkafka::producer::FutureProducer;
use support::{Stage, produce, raw_frame, read_topic, wait_for};

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_764_000_000_000 / HOUR * HOUR;
const N: usize = 800;
const PARTITIONS: i32 = 4;
/// Devices 0..200 carry the module that goes silent.
const BRICKED: usize = 200;

fn id(i: usize) -> String {
    format!("mtr-{i:04}")
}

fn labels() -> HashMap<String, Arc<BTreeMap<String, String>>> {
    (0..N)
        .map(|i| {
            let module = if i < BRICKED {
                "bricky"
            } else {
                ["bg95", "ec25", "sara"][i % 3]
            };
            let l = BTreeMap::from([
                ("module".to_string(), module.to_string()),
                ("region".to_string(), ["n", "s"][i % 2].to_string()),
                ("firmware".to_string(), "v1".to_string()),
            ]);
            (id(i), Arc::new(l))
        })
        .collect()
}

fn config() -> StreamConfig {
    StreamConfig {
        rules: RulesConfig {
            cohort: CohortConfig {
                baseline_windows: 4,
                ..CohortConfig::default()
            },
            ..RulesConfig::default()
        },
        device_labels: labels().into(),
        // the frames carry 2025 timestamps: only they move the cohort clock here (the
        // wall-clock idle clock has its own tests below)
        cohort_tick: None,
        ..StreamConfig::default()
    }
}

fn start(kafka: &KafkaConfig, topics: &Topics) -> Stage {
    support::start(kafka, topics, config())
}

/// Sends window `w`'s frames (one per reporting device) to each device's partition.
async fn window(producer: &FutureProducer, topic: &str, w: i64, reports: impl Fn(usize) -> bool) {
    let records: Vec<_> = (0..N)
        .filter(|&i| reports(i))
        .map(|i| {
            let at = T0 + w * HOUR + i as i64 * 1000;
            (
                i as i32 % PARTITIONS,
                id(i),
                raw_frame(&id(i), w as u64 + 1, at, "v1"),
            )
        })
        .collect();
    produce(producer, topic, &records).await;
}

/// Every fleet finding (no device) in the anomalies topic, as (rule, cohort, ts_from).
fn fleet_findings(kafka: &KafkaConfig, topic: &str) -> Vec<(String, String, i64)> {
    let mut out: Vec<_> = fleet_anomalies(kafka, topic)
        .into_iter()
        .map(|a| (a.rule, a.cohort, a.ts_from_ms))
        .collect();
    out.sort();
    out
}

/// Every fleet finding (no device) in the anomalies topic, in log order.
fn fleet_anomalies(kafka: &KafkaConfig, topic: &str) -> Vec<Anomaly> {
    read_topic(kafka, topic, PARTITIONS)
        .into_iter()
        .filter_map(|(p, v)| {
            let a = Anomaly::decode(&v[..]).unwrap();
            a.device_id.is_empty().then(|| {
                assert_eq!(
                    (a.source_offset, p),
                    (-1, 0),
                    "fleet findings go to partition 0"
                );
                a
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_module_spread_over_partitions_is_raised_once_across_restarts_and_a_crash() {
    let (_broker, kafka, topics) = embedded("fleet");
    scenario(kafka, topics).await;
}

/// The same on tansu (its own process, SQLite storage): real topic creation (the
/// compacted progress topic included), group joins and commits over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_tansu() {
    let work = tempfile::tempdir().unwrap();
    let (_broker, kafka, topics) = tansu_with_topics(work.path(), "fleet-tansu").await;
    scenario(kafka, topics).await;
}

/// The embedded broker with every topic of the stage, topics named `prefix.*`.
fn embedded(prefix: &str) -> (EmbeddedBroker, KafkaConfig, Topics) {
    let topics = Topics::with_prefix(prefix, PARTITIONS, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), PARTITIONS).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    (broker, kafka, topics)
}

/// The test's producer of raw records (a 60 s delivery timeout rides out the outage
/// test's broker restart).
fn producer(kafka: &KafkaConfig) -> FutureProducer {
    kafka.producer("test", 100_000, 60_000).create().unwrap()
}

/// A tansu broker in `dir` with every topic of the stage created (tansu does not
/// auto-create topics, and the test produces before the stage would create them).
async fn tansu_with_topics(dir: &std::path::Path, prefix: &str) -> (Tansu, KafkaConfig, Topics) {
    let broker = Tansu::start(dir).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap());
    let topics = Topics::with_prefix(prefix, PARTITIONS, 1);
    ensure_topics(&kafka, &topics.data_topics(), PARTITIONS, 1)
        .await
        .unwrap();
    ensure_compacted_topics(&kafka, &topics.state_topics(), PARTITIONS, 1)
        .await
        .unwrap();
    ensure_fleet_topics(&kafka, &topics).await.unwrap();
    (broker, kafka, topics)
}

async fn scenario(kafka: KafkaConfig, topics: Topics) {
    let producer = producer(&kafka);
    let silent = T0 + 6 * HOUR;
    let expected: Vec<(String, String, i64)> = [
        "module=bricky",
        "module=bricky,region=n",
        "module=bricky,region=s",
    ]
    .iter()
    .map(|c| ("cohort_silence".to_string(), c.to_string(), silent))
    .collect();

    let stage = start(&kafka, &topics);
    // windows 0..6: everyone reports; 6: the module is silent; 7, 8: everyone again
    for w in 0..9 {
        window(&producer, &topics.raw, w, |i| w != 6 || i >= BRICKED).await;
    }
    // each partition closes window 7 when window 8 arrives: windows 0..=7 get judged
    wait_for("windows 0..=7 judged", || {
        stage.stats.fleet.windows_judged.load(Ordering::Relaxed) >= 8
    })
    .await;
    // counted after the partition loop's ack, which can trail the aggregator's read
    wait_for("tallies acknowledged", || {
        stage.stats.tallies_sent.load(Ordering::Relaxed) >= 8 * PARTITIONS as u64
    })
    .await;
    assert_eq!(
        stage.stats.tallies_sent.load(Ordering::Relaxed),
        8 * PARTITIONS as u64,
        "one tally per partition and closed window"
    );
    assert_eq!(
        stage.stats.fleet.tallies.load(Ordering::Relaxed),
        8 * PARTITIONS as u64
    );
    assert_eq!(fleet_findings(&kafka, &topics.anomalies), expected);
    assert_eq!(stage.stats.fleet.findings.load(Ordering::Relaxed), 3);
    // Judged per partition (50 of the module in each, above the 20-device floor), each
    // of the 4 would have raised its own 3: the test can tell.

    // clean restart: nothing is judged twice
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
    let stage = start(&kafka, &topics);
    window(&producer, &topics.raw, 9, |_| true).await;
    wait_for("window 8 judged after the restart", || {
        stage.stats.fleet.windows_judged.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(fleet_findings(&kafka, &topics.anomalies), expected);

    // crash (task dropped mid-run, nothing flushed), then the module goes silent again in
    // window 11: raised once for window 11, and window 6 not again
    window(&producer, &topics.raw, 10, |_| true).await;
    stage.task.abort();
    let _ = stage.task.await;
    let stage = start(&kafka, &topics);
    window(&producer, &topics.raw, 11, |i| i >= BRICKED).await;
    window(&producer, &topics.raw, 12, |_| true).await;
    window(&producer, &topics.raw, 13, |_| true).await;
    wait_for("window 12 judged after the crash", || {
        let f = fleet_findings(&kafka, &topics.anomalies);
        f.len() >= 6 && stage.stats.fleet.windows_judged.load(Ordering::Relaxed) >= 2
    })
    .await;
    let again: Vec<_> = expected
        .iter()
        .map(|(r, c, _)| (r.clone(), c.clone(), T0 + 11 * HOUR))
        .collect();
    let mut want = expected.clone();
    want.extend(again);
    want.sort();
    assert_eq!(fleet_findings(&kafka, &topics.anomalies), want);
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
}

// ---- the idle clock: a manual wall clock, 2-second windows ----

const WINDOW_MS: i64 = 2000;

/// Where the manual clock starts (a window boundary).
const CLOCK_START: i64 = 1_764_000_000_000;

/// The stage's wall clock in these tests ([`feeder_stream::ManualClock`]).
fn manual_clock() -> ManualClock {
    ManualClock::at(CLOCK_START)
}

/// Starts the stage on `clock`.
fn start_on(kafka: &KafkaConfig, topics: &Topics, cfg: StreamConfig, clock: &ManualClock) -> Stage {
    support::start_with_clock(kafka, topics, cfg, Arc::new(clock.clone()))
}

/// Waits for `cond` while the clock moves on at 5 times real time (windows end and their
/// lateness passes; the 10-minute grace is never reached within a test's 60-second wait).
async fn wait_advancing(clock: &ManualClock, what: &str, mut cond: impl FnMut() -> bool) {
    let (from, t0) = (clock.now_ms(), std::time::Instant::now());
    wait_for(what, || {
        clock.set(from + 5 * t0.elapsed().as_millis() as i64);
        cond()
    })
    .await;
}

/// 2-second windows and a 3-window baseline; a grace of 10 minutes, so within a test
/// only complete windows (every partition closed them) can be judged.
fn clock_config() -> StreamConfig {
    StreamConfig {
        rules: RulesConfig {
            cohort: CohortConfig {
                window_ms: WINDOW_MS,
                baseline_windows: 3,
                ..CohortConfig::default()
            },
            ..RulesConfig::default()
        },
        device_labels: labels().into(),
        cohort_grace: std::time::Duration::from_secs(600),
        cohort_lateness: std::time::Duration::from_millis(300),
        cohort_tick: Some(std::time::Duration::from_millis(100)),
        ..StreamConfig::default()
    }
}

/// Moves the clock to window `w`'s start (plus a margin), then sends one frame stamped
/// now from each device `reports(i)` picks, device `i` on partition `partition(i)`.
async fn report_in_window(
    (clock, producer): (&ManualClock, &FutureProducer),
    topic: &str,
    w: i64,
    reports: impl Fn(usize) -> bool,
    partition: impl Fn(usize) -> i32,
) {
    let start = w * WINDOW_MS + 100;
    if start > clock.now_ms() {
        clock.set(start);
    }
    let at = clock.now_ms();
    assert_eq!(
        at.div_euclid(WINDOW_MS),
        w,
        "the test fell behind the clock"
    );
    let records: Vec<_> = (0..N)
        .filter(|&i| reports(i))
        .map(|i| (partition(i), id(i), raw_frame(&id(i), w as u64, at, "v1")))
        .collect();
    produce(producer, topic, &records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_fleet_going_silent_is_judged_by_the_clock_and_raises_fleet_silence() {
    let (_broker, kafka, topics) = embedded("fleet-silent");
    whole_fleet_silence(kafka, topics).await;
}

/// The same on tansu: whether a partition is caught up (so its windows may close by the
/// clock) comes from the broker's watermarks over TCP, and the aggregator's progress from
/// a compacted topic tansu keeps in SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_fleet_going_silent_on_tansu() {
    let work = tempfile::tempdir().unwrap();
    let (_broker, kafka, topics) = tansu_with_topics(work.path(), "fleet-silent-tansu").await;
    whole_fleet_silence(kafka, topics).await;
}

async fn whole_fleet_silence(kafka: KafkaConfig, topics: Topics) {
    let producer = producer(&kafka);
    let clock = manual_clock();
    let stage = start_on(&kafka, &topics, clock_config(), &clock);
    // 4 windows of everyone reporting (3 shares of history after the first), then
    // silence: every module at once, so no cohort is silent relative to the others
    let w0 = clock.now_ms().div_euclid(WINDOW_MS) + 1;
    for w in w0..w0 + 4 {
        report_in_window(
            (&clock, &producer),
            &topics.raw,
            w,
            |_| true,
            |i| i as i32 % PARTITIONS,
        )
        .await;
    }
    let silent = (w0 + 4) * WINDOW_MS;
    let t = std::time::Instant::now();
    wait_advancing(&clock, "fleet_silence raised", || {
        fleet_findings(&kafka, &topics.anomalies)
            .iter()
            .any(|(rule, _, from)| rule == "fleet_silence" && *from == silent)
    })
    .await;
    // judged once the window ended (+ lateness, + a tick), not after the 10-min grace
    eprintln!(
        "fleet_silence raised {:?} after the last report",
        t.elapsed()
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
    let found = fleet_anomalies(&kafka, &topics.anomalies);
    let first = found.iter().find(|a| a.ts_from_ms == silent).unwrap();
    assert_eq!(
        (
            first.rule.as_str(),
            first.cohort.as_str(),
            first.severity.as_str()
        ),
        ("fleet_silence", "fleet", "critical")
    );
    assert!(first.detail.starts_with("0 of 800 "), "{}", first.detail);
    assert!(!first.detail.contains("partial"), "{}", first.detail);
    // nothing before the silence, nothing but fleet_silence, each window once
    let mut ids: Vec<_> = found
        .iter()
        .map(|a| (a.rule.clone(), a.ts_from_ms))
        .collect();
    assert!(
        ids.iter()
            .all(|(r, from)| r == "fleet_silence" && *from >= silent),
        "{ids:?}"
    );
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a window raised twice");
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
}

/// Every device on partitions 0..3 (partition 3 never receives a frame); the module
/// `bricky` (200 devices) is silent in the third window. Returns the silent window's
/// start, and the window count by which it has been judged.
async fn bricky_silent_on_three_partitions(
    clock: &ManualClock,
    producer: &FutureProducer,
    topics: &Topics,
) -> (i64, u64) {
    let on_three = |i: usize| i as i32 % 3;
    let w0 = clock.now_ms().div_euclid(WINDOW_MS) + 1;
    for w in w0..w0 + 3 {
        report_in_window(
            (clock, producer),
            &topics.raw,
            w,
            |i| w < w0 + 2 || i >= BRICKED,
            on_three,
        )
        .await;
    }
    // windows are judged oldest first from the first one any partition tallied (w0 or,
    // if the idle clock started one earlier, w0 - 1)
    ((w0 + 2) * WINDOW_MS, 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_without_traffic_does_not_hold_the_judgement_until_the_grace() {
    let (_broker, kafka, topics) = embedded("fleet-idle");
    let producer = producer(&kafka);
    let clock = manual_clock();
    let stage = start_on(&kafka, &topics, clock_config(), &clock);
    let (silent, _) = bricky_silent_on_three_partitions(&clock, &producer, &topics).await;
    let t = std::time::Instant::now();
    wait_advancing(&clock, "cohort_silence raised", || {
        fleet_findings(&kafka, &topics.anomalies)
            .iter()
            .any(|(rule, _, from)| rule == "cohort_silence" && *from == silent)
    })
    .await;
    eprintln!(
        "cohort_silence raised {:?} after the last report",
        t.elapsed()
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
    let found = fleet_anomalies(&kafka, &topics.anomalies);
    let bricky: Vec<_> = found
        .iter()
        .filter(|a| a.rule == "cohort_silence" && a.ts_from_ms == silent)
        .collect();
    assert_eq!(bricky.len(), 3, "{found:?}");
    for a in bricky {
        assert!(a.cohort.starts_with("module=bricky"), "{}", a.cohort);
        assert!(
            !a.detail.contains("partial"),
            "judged complete: {}",
            a.detail
        );
    }
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
}

/// The scenario just above, with `cohort_silence` switched off in `rules.disabled`: the
/// stage judges the silent window (its count of judged windows passes it) and raises
/// nothing for it. With the rule on, the same scenario raises it three times (above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rule_switched_off_is_judged_but_raises_nothing() {
    let (_broker, kafka, topics) = embedded("fleet-off");
    let producer = producer(&kafka);
    let mut cfg = clock_config();
    cfg.rules.disabled = vec!["cohort_silence".into()];
    let clock = manual_clock();
    let stage = start_on(&kafka, &topics, cfg, &clock);
    let (_, judged_by) = bricky_silent_on_three_partitions(&clock, &producer, &topics).await;
    wait_advancing(&clock, "the silent window judged", || {
        stage.stats.fleet.windows_judged.load(Ordering::Relaxed) >= judged_by
    })
    .await;
    let found = fleet_anomalies(&kafka, &topics.anomalies);
    assert!(
        found.iter().all(|a| a.rule != "cohort_silence"),
        "a disabled rule raised: {found:?}"
    );
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
}

/// A broker outage longer than the idle clock's query timeout (10 s): librdkafka reports
/// transport failures to the consumers and the watermark queries fail, and the stage
/// (partition loop and aggregator) must wait them out, not stop. Once the broker is back
/// the frames sent after it are checked and windows are judged again. Fails if either
/// consumer's error, or a failed watermark query, stops the stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stage_rides_out_a_broker_outage() {
    let (broker, kafka, topics) = embedded("fleet-outage");
    let producer = producer(&kafka);
    let clock = manual_clock();
    let mut stage = start_on(&kafka, &topics, clock_config(), &clock);
    let everyone = |w: i64| {
        report_in_window(
            (&clock, &producer),
            &topics.raw,
            w,
            |_| true,
            |i| i as i32 % PARTITIONS,
        )
    };
    let w0 = clock.now_ms().div_euclid(WINDOW_MS) + 1;
    for w in w0..w0 + 2 {
        everyone(w).await;
    }
    wait_advancing(&clock, "the first window judged", || {
        stage.stats.fleet.windows_judged.load(Ordering::Relaxed) >= 1
    })
    .await;
    broker.broker_down(1).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(14)).await;
    assert_running(&mut stage, "during the outage").await;
    broker.broker_up(1).unwrap();
    let judged = stage.stats.fleet.windows_judged.load(Ordering::Relaxed);
    everyone(clock.now_ms().div_euclid(WINDOW_MS) + 1).await;
    wait_advancing(
        &clock,
        "the frames after the outage checked, windows judged",
        || {
            stage.task.is_finished()
                || (stage.stats.checked.load(Ordering::Relaxed) >= 3 * N as u64
                    && stage.stats.fleet.windows_judged.load(Ordering::Relaxed) > judged + 1)
        },
    )
    .await;
    assert_running(&mut stage, "after the outage").await;
    stage.stop.cancel();
    stage.task.await.unwrap().unwrap();
}

/// Fails with the stage's own result if it has stopped.
async fn assert_running(stage: &mut Stage, when: &str) {
    if stage.task.is_finished() {
        panic!("the stage stopped {when}: {:?}", (&mut stage.task).await);
    }
}
