//! The stream stage as a real process (`feeder stream`) on the embedded broker:
//! - SIGTERM while it works: it exits 0 promptly with every decided record committed and
//!   nothing committed undecided; a restart decides the rest and repeats nothing;
//! - SIGKILL while it works: a restart loses no frame, outputs none twice, and replays
//!   sent after the restart are still quarantined as duplicates;
//! - records on the raw topic that no edge made (a valid device signature without the
//!   edge's proof, a proof by another key, garbage bytes) are quarantined, never checked,
//!   and the stage keeps going.

mod support;

use std::time::Duration;

use feeder_core::keyfile::load_key_file;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame};
use feeder_sim::SimDevice;
use feeder_sim::keygen::{KeygenConfig, keygen};
use prost::Message as _;

use support::*;

const PARTITIONS: i32 = 2;
const METERS: usize = 40;
const FRAMES_EACH: usize = 60;
const NOW_MS: i64 = 1_764_028_800_000;

struct Setup {
    dir: tempfile::TempDir,
    _broker: EmbeddedBroker,
    kafka: KafkaConfig,
    topics: Topics,
    registry: String,
    edge_keys: String,
    prefix: String,
    /// (device id, raw record) in send order.
    records: Vec<(String, Vec<u8>)>,
    /// The devices, after the frames of `records`.
    devices: Vec<SimDevice>,
}

async fn setup(prefix: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.jsonl");
    let secrets = dir.path().join("keys.jsonl");
    keygen(&KeygenConfig {
        meters: METERS,
        vehicles: 0,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(11),
        ..KeygenConfig::default()
    })
    .unwrap();
    let topics = Topics::with_prefix(prefix, PARTITIONS, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), PARTITIONS).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let start = NOW_MS - 400 * 86_400_000;
    let mut devices: Vec<SimDevice> = load_key_file(&secrets)
        .unwrap()
        .into_iter()
        .map(|k| SimDevice::from_key(k, start))
        .collect();
    let mut clock = NOW_MS;
    let mut records = Vec::new();
    for _ in 0..FRAMES_EACH {
        for d in &mut devices {
            clock += 10;
            let id = d.device_id.clone();
            records.push((id, raw_record(d, clock)));
        }
    }
    let edge_keys = write_edge_keys(dir.path());
    Setup {
        dir,
        _broker: broker,
        kafka,
        topics,
        registry: registry.display().to_string(),
        edge_keys,
        prefix: prefix.to_string(),
        records,
        devices,
    }
}

impl Setup {
    fn stream(&self) -> Stage {
        let parts = PARTITIONS.to_string();
        let mut s = Stage::spawn(
            "stream",
            self.dir.path(),
            &[
                "stream",
                "--brokers",
                &self.kafka.brokers,
                "--topic-prefix",
                &self.prefix,
                "--partitions",
                &parts,
                "--replication",
                "1",
                "--registry",
                &self.registry,
                "--group",
                "lifecycle-stream",
                "--state-snapshot-interval",
                "500ms",
                "--edge-keys",
                &self.edge_keys,
            ],
            &[],
        );
        s.wait_ready(Duration::from_secs(30));
        s
    }

    fn checked_total(&self) -> i64 {
        total(&self.kafka, &self.topics.checked, PARTITIONS)
    }

    fn committed(&self) -> Vec<i64> {
        committed(
            &self.kafka,
            "lifecycle-stream",
            &self.topics.raw,
            PARTITIONS,
        )
    }

    /// Waits until every raw record is decided and committed, stops the stage with
    /// SIGTERM (it must exit 0), and checks each good frame was checked once.
    fn stop_once_all_decided(&self, mut stream: Stage, what: &str) {
        wait_until(what, Duration::from_secs(90), || self.all_raw_committed());
        stream.sigterm();
        let (status, _) = stream.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "{}", stream.log());
        assert_each_frame_checked_once(self);
    }

    fn all_raw_committed(&self) -> bool {
        let c = self.committed();
        (0..PARTITIONS).all(|p| c[p as usize] == watermarks(&self.kafka, &self.topics.raw, p).1)
    }

    /// (device, seq) of every checked record, with how often each occurs.
    fn checked(&self) -> std::collections::HashMap<(String, u64), usize> {
        counts(
            read_topic(&self.kafka, &self.topics.checked, PARTITIONS)
                .iter()
                .map(|v| {
                    let c = CheckedFrame::decode(&v[..]).unwrap();
                    (c.device_id, c.seq)
                }),
        )
    }

    fn quarantined(&self) -> Vec<(String, u64, String)> {
        read_topic(&self.kafka, &self.topics.quarantine, PARTITIONS)
            .iter()
            .map(|v| {
                let q = QuarantinedFrame::decode(&v[..]).unwrap();
                (q.device_id, q.seq, q.reason)
            })
            .collect()
    }
}

fn assert_each_frame_checked_once(s: &Setup) {
    let checked = s.checked();
    assert_eq!(checked.len(), METERS * FRAMES_EACH, "frames checked");
    let twice: Vec<_> = checked.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "checked twice: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_what_was_decided_and_a_restart_repeats_nothing() {
    let s = setup("life-stream-term").await;
    let mut stream = s.stream();
    // records keep arriving in small chunks, so the stop lands mid-stream
    let (kafka, topic, records) = (s.kafka.clone(), s.topics.raw.clone(), s.records.clone());
    let sender = tokio::spawn(async move {
        for chunk in records.chunks(100) {
            produce_keyed(&kafka, &topic, PARTITIONS, chunk).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    wait_until("stream started deciding", Duration::from_secs(60), || {
        s.checked_total() > 300
    });
    stream.sigterm();
    let (status, took) = stream.wait_exit(Duration::from_secs(30));
    let decided = s.checked_total();
    println!(
        "stream: SIGTERM with {decided} of {} checked; exit {status} in {took:?}",
        s.records.len()
    );
    assert!(status.success(), "exit {status}:\n{}", stream.log());
    // every decided record committed, nothing committed that was not decided
    let committed = s.committed();
    for p in 0..PARTITIONS {
        // one output per decided raw record (claims of the zombie fence are not outputs)
        let out = (read_partition(&s.kafka, &s.topics.checked, p).len()
            + read_partition(&s.kafka, &s.topics.quarantine, p).len()) as i64;
        assert_eq!(committed[p as usize], out, "partition {p}");
    }
    assert!(
        stream.log().contains("stream stage stopped"),
        "{}",
        stream.log()
    );

    let mut stream = s.stream();
    sender.await.unwrap();
    wait_until("restart decides the rest", Duration::from_secs(90), || {
        s.all_raw_committed()
    });
    stream.sigterm();
    let (status, _) = stream.wait_exit(Duration::from_secs(30));
    assert!(status.success());
    assert_each_frame_checked_once(&s);
    assert!(s.quarantined().is_empty(), "{:?}", s.quarantined());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_nothing_repeats_nothing_and_replays_stay_refused() {
    let s = setup("life-stream-kill").await;
    let mut stream = s.stream();
    produce_keyed(&s.kafka, &s.topics.raw, PARTITIONS, &s.records).await;
    wait_until("stream started deciding", Duration::from_secs(60), || {
        s.checked_total() > 300
    });
    stream.sigkill();
    let decided = s.checked_total();
    let committed: i64 = s.committed().iter().map(|c| c.max(&0)).sum();
    println!("stream: SIGKILL after {decided} checked, {committed} committed");

    let stream = s.stream();
    wait_until("restart decides the rest", Duration::from_secs(90), || {
        s.all_raw_committed()
    });
    // replays of the first 10 frames, sent after the restart
    produce_keyed(&s.kafka, &s.topics.raw, PARTITIONS, &s.records[..10]).await;
    s.stop_once_all_decided(stream, "replays decided");
    let q = s.quarantined();
    assert_eq!(q.len(), 10, "{q:?}");
    assert!(
        q.iter().all(|(_, seq, r)| *seq == 1 && r == "duplicate"),
        "{q:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_no_edge_made_are_quarantined_never_checked_and_the_stage_goes_on() {
    let mut s = setup("life-stream-forged").await;
    let stream = s.stream();
    // what a producer that is not an edge can write: frames with valid device
    // signatures but no edge proof, a proof made with a key the stream does not hold,
    // and bytes that are no record at all; then the edges' frames
    let mut hostile = Vec::new();
    let stranger = feeder_core::EdgeKey::new("test", &[9u8; 32]).unwrap();
    let later = NOW_MS + 86_400_000;
    for (i, d) in s.devices.iter_mut().take(10).enumerate() {
        let id = d.device_id.clone();
        hostile.push((id.clone(), unproven_raw_record(d, later + i as i64)));
        let sf = d.next_frame(later + i as i64).frame.encode_to_vec();
        let forged = stranger.raw_frame(sf.into(), later, "edge-0");
        hostile.push((id, forged.encode_to_vec()));
    }
    for i in 0..5u8 {
        hostile.push((format!("junk-{i}"), vec![0xff, 0x07, i, 0x80]));
    }
    produce_keyed(&s.kafka, &s.topics.raw, PARTITIONS, &hostile).await;
    produce_keyed(&s.kafka, &s.topics.raw, PARTITIONS, &s.records).await;
    s.stop_once_all_decided(stream, "every record decided");
    let q = s.quarantined();
    let reasons = counts(q.iter().map(|(_, _, r)| r.as_str()));
    assert_eq!(reasons.get("not_from_edge"), Some(&20), "{q:?}");
    assert_eq!(reasons.get("malformed_record"), Some(&5), "{q:?}");
    assert_eq!(q.len(), 25, "{q:?}");
    // no forged frame was checked
    let checked = s.checked();
    assert!(
        q.iter()
            .filter(|(_, _, r)| r == "not_from_edge")
            .all(|(d, seq, _)| !checked.contains_key(&(d.clone(), *seq))),
        "a forged frame was checked"
    );
}
