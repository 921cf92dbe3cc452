//! The writer in Iceberg mode (`feeder writer --table-format iceberg`) as a real process
//! on a real broker process (tansu), judged by pyiceberg (not Feeder's code) through the
//! default SQLite catalog:
//!
//! 1. A simulated fleet's checked frames; the writer is SIGKILLed at each commit step
//!    (`FEEDER_CRASHPOINT`): data files written but no snapshot (`after_data_files`),
//!    one table's snapshot committed but not the range's other tables
//!    (`after_snapshot`), every snapshot committed but no Kafka offset
//!    (`after_rename`). Each restart (same `--instance-id`: tansu 0.6 never evicts a dead
//!    member) replays from the last Kafka commit.
//! 2. More frames, stored by two writer processes at once (one partition each), both
//!    committing to the same tables.
//! 3. A column added to `readings` with pyiceberg, as a later version would, one row
//!    that carries it; then more frames from this version.
//!
//! After 2 and 3, `tests/python/check_iceberg.py` counts every frame and reading once,
//! finds no data file added twice and no offset range in two snapshots.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use feeder_core::keyfile::load_key_file;
use feeder_kafka::{KafkaConfig, Topics};
use feeder_proto::pipeline::CheckedFrame;
use feeder_sim::SimDevice;
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_testkit::Tansu;
use feeder_testkit::python;
use prost::Message as _;

use support::*;

const PARTITIONS: i32 = 2;
const NOW_MS: i64 = 1_764_028_800_000;
const GROUP: &str = "iceberg-writer";
const PREFIX: &str = "ice";

struct Setup {
    dir: tempfile::TempDir,
    _broker: Tansu,
    kafka: KafkaConfig,
    topics: Topics,
    devices: Vec<SimDevice>,
    clock: i64,
    data: PathBuf,
    frames: usize,
    readings: usize,
}

impl Setup {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker = Tansu::start(dir.path()).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap());
        let topics = Topics::with_prefix(PREFIX, PARTITIONS, 1);
        feeder_writer::ensure_input_topics(&kafka, &topics)
            .await
            .unwrap();
        let secrets = dir.path().join("keys.jsonl");
        keygen(&KeygenConfig {
            meters: 24,
            vehicles: 6,
            registry: dir.path().join("registry.jsonl"),
            secrets: secrets.clone(),
            seed: Some(5),
            ..KeygenConfig::default()
        })
        .unwrap();
        let devices = load_key_file(&secrets)
            .unwrap()
            .into_iter()
            .map(|k| SimDevice::from_key(k, NOW_MS - 60 * 86_400_000))
            .collect();
        let data = dir.path().join("data");
        Self {
            _broker: broker,
            kafka,
            topics,
            devices,
            clock: NOW_MS,
            data,
            frames: 0,
            readings: 0,
            dir,
        }
    }

    /// `rounds` frames of every device onto the checked topic, as the stream would.
    async fn produce(&mut self, rounds: usize) {
        let mut records = Vec::new();
        for _ in 0..rounds {
            for d in &mut self.devices {
                self.clock += 10;
                let f = d.next_frame(self.clock);
                self.readings += f.readings;
                let sf = f.frame;
                let c = CheckedFrame {
                    device_id: sf.device_id.clone(),
                    seq: sf.seq,
                    key_id: sf.key_id,
                    payload: sf.payload,
                    signature: sf.signature,
                    received_at_ms: self.clock,
                    edge_id: "edge-0".into(),
                    ..Default::default()
                };
                records.push((sf.device_id, c.encode_to_vec()));
            }
        }
        self.frames += records.len();
        produce_keyed(&self.kafka, &self.topics.checked, PARTITIONS, &records).await;
    }

    fn writer(&self, instance: &str, env: &[(&str, &str)]) -> Stage {
        let data = self.data.display().to_string();
        let mut env = env.to_vec();
        env.push(("FEEDER_INSTANCE_ID", instance));
        let mut w = Stage::spawn(
            "writer",
            self.dir.path(),
            &[
                "writer",
                "--table-format",
                "iceberg",
                "--data",
                &data,
                "--writer-id",
                instance,
                "--group",
                GROUP,
                "--flush-max-frames",
                "60",
                "--flush-max-age",
                "500ms",
                "--brokers",
                &self.kafka.brokers,
                "--topic-prefix",
                PREFIX,
                "--partitions",
                "2",
                "--replication",
                "1",
            ],
            &env,
        );
        w.wait_ready(Duration::from_secs(60));
        w
    }

    fn all_committed(&self) -> bool {
        let c = committed(&self.kafka, GROUP, &self.topics.checked, PARTITIONS);
        (0..PARTITIONS).all(|p| c[p as usize] == watermarks(&self.kafka, &self.topics.checked, p).1)
    }

    fn wait_committed(&self, what: &str) {
        wait_until(what, Duration::from_secs(120), || self.all_committed());
    }

    fn catalog_args(&self) -> [String; 4] {
        let ice = self.data.join("iceberg");
        [
            "--uri".into(),
            format!("sqlite:///{}", ice.join("catalog.db").display()),
            "--warehouse".into(),
            ice.join("warehouse").display().to_string(),
        ]
    }

    /// `check_iceberg.py <command>`; its JSON line.
    fn pyiceberg(&self, command: &str, extra: &[String]) -> serde_json::Value {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/python/check_iceberg.py"
        );
        let mut args: Vec<String> = vec![script.into(), command.into()];
        args.extend(self.catalog_args());
        args.extend(extra.iter().cloned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = python(&argv);
        let line = out.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn assert_exactly_once(&self, what: &str, extra_readings: usize) -> serde_json::Value {
        let v = self.pyiceberg(
            "check",
            &[
                "--frames".into(),
                self.frames.to_string(),
                "--readings".into(),
                (self.readings + extra_readings).to_string(),
            ],
        );
        println!("{what}: pyiceberg {v}");
        assert_eq!(v["failures"], serde_json::json!([]), "{what}");
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_tables_hold_every_frame_once_across_kills_concurrency_and_evolution() {
    let mut s = Setup::new().await;
    s.produce(30).await;

    // 1. a SIGKILL at each commit step, each followed by a restart that replays
    for spec in ["after_data_files:2", "after_snapshot:3", "after_rename:2"] {
        let mut w = s.writer("writer-a", &[("FEEDER_CRASHPOINT", spec)]);
        let marker = format!("crashpoint {} reached", spec.split(':').next().unwrap());
        wait_until(&marker, Duration::from_secs(90), || {
            w.log().contains(&marker)
        });
        w.sigkill();
    }

    // 2. two writers at once: one partition each, commits to the same tables
    s.produce(30).await;
    let mut a = s.writer("writer-a", &[]);
    let mut b = s.writer("writer-b", &[]);
    s.wait_committed("two writers store everything");
    for w in [&mut a, &mut b] {
        w.sigterm();
        let (status, _) = w.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "{}", w.log());
    }
    let both = [a.log(), b.log()];
    assert!(
        both.iter().all(|l| l.contains("range written")),
        "both writers committed ranges"
    );
    let v = s.assert_exactly_once("after kills and two concurrent writers", 0);
    assert!(
        v["tables"]["readings"]["feeder_snapshots"]
            .as_u64()
            .unwrap()
            > 4
    );

    // 3. a later version's column, then this version keeps appending
    let evolved = s.pyiceberg("evolve", &[]);
    println!("schema evolution: {evolved}");
    assert_eq!(evolved["failures"], serde_json::json!([]));
    s.produce(10).await;
    let mut w = s.writer("writer-a", &[]);
    s.wait_committed("the writer appends under the evolved schema");
    w.sigterm();
    let (status, _) = w.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", w.log());
    let v = s.assert_exactly_once("after the schema change", 1);
    assert_eq!(
        v["tables"]["readings"]["other_snapshots"], 1,
        "pyiceberg's own append"
    );

    // the Hive-layout verifier refuses the root instead of finding nothing to check
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_feeder"))
        .args(["verify", "--data"])
        .arg(&s.data)
        .arg("--registry")
        .arg(s.dir.path().join("registry.jsonl"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("holds Iceberg tables"),
        "{err}"
    );
}
