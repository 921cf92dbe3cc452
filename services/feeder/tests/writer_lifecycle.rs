//! The writer as a real process (`feeder writer`) on the embedded broker:
//! - SIGTERM: exits 0 having written and committed exactly what it consumed;
//! - `--storage s3` against a local S3-protocol server stores every frame in the bucket;
//! - SIGKILL at each crash point (`FEEDER_CRASHPOINT`, see `feeder_writer::crashpoint`):
//!   while buffering, after a temp file is written, after a range's files are renamed
//!   into place but before its offsets are committed. After a restart DuckDB counts every
//!   checked frame and reading exactly once, and no temp file is left anywhere.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use feeder_core::keyfile::load_key_file;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::pipeline::CheckedFrame;
use feeder_sim::SimDevice;
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_testkit::python;
use prost::Message as _;

use support::*;

const PARTITIONS: i32 = 2;
const NOW_MS: i64 = 1_764_028_800_000;
const GROUP: &str = "lifecycle-writer";

struct Setup {
    dir: tempfile::TempDir,
    _broker: EmbeddedBroker,
    kafka: KafkaConfig,
    topics: Topics,
    prefix: String,
    data: PathBuf,
    frames: usize,
    readings: usize,
}

/// 24 meters and 6 vehicles, 30 frames each, straight onto the checked topic (as the
/// stream stage would put them).
async fn setup(prefix: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.jsonl");
    let secrets = dir.path().join("keys.jsonl");
    keygen(&KeygenConfig {
        meters: 24,
        vehicles: 6,
        registry,
        secrets: secrets.clone(),
        seed: Some(3),
        ..KeygenConfig::default()
    })
    .unwrap();
    let topics = Topics::with_prefix(prefix, PARTITIONS, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), PARTITIONS).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let mut devices: Vec<SimDevice> = load_key_file(&secrets)
        .unwrap()
        .into_iter()
        .map(|k| SimDevice::from_key(k, NOW_MS - 60 * 86_400_000))
        .collect();
    let (mut records, mut readings) = (Vec::new(), 0);
    let mut clock = NOW_MS;
    for _ in 0..30 {
        for d in &mut devices {
            clock += 10;
            let f = d.next_frame(clock);
            readings += f.readings;
            let sf = f.frame;
            let c = CheckedFrame {
                device_id: sf.device_id.clone(),
                seq: sf.seq,
                key_id: sf.key_id,
                payload: sf.payload,
                signature: sf.signature,
                received_at_ms: clock,
                edge_id: "edge-0".into(),
                ..Default::default()
            };
            records.push((sf.device_id, c.encode_to_vec()));
        }
    }
    produce_keyed(&kafka, &topics.checked, PARTITIONS, &records).await;
    let data = dir.path().join("data");
    Setup {
        _broker: broker,
        kafka,
        topics,
        prefix: prefix.to_string(),
        data,
        frames: records.len(),
        readings,
        dir,
    }
}

impl Setup {
    fn writer(&self, env: &[(&str, &str)]) -> Stage {
        let data = self.data.display().to_string();
        let mut w = Stage::spawn(
            "writer",
            self.dir.path(),
            &[
                "writer",
                "--data",
                &data,
                "--group",
                GROUP,
                "--brokers",
                &self.kafka.brokers,
                "--topic-prefix",
                &self.prefix,
                "--partitions",
                "2",
                "--replication",
                "1",
            ],
            env,
        );
        w.wait_ready(Duration::from_secs(30));
        w
    }

    fn committed(&self) -> Vec<i64> {
        committed(&self.kafka, GROUP, &self.topics.checked, PARTITIONS)
    }

    fn all_committed(&self) -> bool {
        let c = self.committed();
        (0..PARTITIONS).all(|p| c[p as usize] == watermarks(&self.kafka, &self.topics.checked, p).1)
    }

    /// Runs a writer without a crash point until everything is committed, then stops it.
    fn finish(&self) {
        let mut w = self.writer(&[]);
        wait_until("restart writes the rest", Duration::from_secs(90), || {
            self.all_committed()
        });
        w.sigterm();
        let (status, _) = w.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "{}", w.log());
    }

    /// DuckDB's counts: (frames, distinct (device_id, seq), readings).
    fn duckdb_counts(&self) -> (usize, usize, usize) {
        let root = self.data.display().to_string();
        let script = "import duckdb, sys\n\
            r = sys.argv[1]\n\
            c = duckdb.connect()\n\
            f = c.execute(f\"select count(*), count(distinct (device_id, seq)) from read_parquet('{r}/frames/**/*.parquet')\").fetchone()\n\
            n = c.execute(f\"select count(*) from read_parquet('{r}/readings/**/*.parquet')\").fetchone()[0]\n\
            print(f[0], f[1], n)\n";
        let v = numbers(&python(&["-c", script, &root]));
        (v[0], v[1], v[2])
    }

    fn assert_exactly_once(&self, what: &str) {
        let (frames, distinct, readings) = self.duckdb_counts();
        println!(
            "{what}: DuckDB counts {frames} frames ({distinct} distinct) and {readings} readings; \
             sent {} frames, {} readings",
            self.frames, self.readings
        );
        assert_eq!((frames, distinct), (self.frames, self.frames), "{what}");
        assert_eq!(readings, self.readings, "{what}");
        let temps = files(&self.data, |n| {
            n.starts_with(".tmp-") || n.ends_with(".tmp")
        });
        assert!(temps.is_empty(), "{what}: temp files left: {temps:?}");
    }
}

/// Files under `root` whose name satisfies `keep`.
fn files(root: &Path, keep: impl Fn(&str) -> bool + Copy) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files(&path, keep));
        } else if keep(&e.file_name().to_string_lossy()) {
            out.push(path);
        }
    }
    out
}

/// Highest `last` offset + 1 of the `frames` files of checked partition `p` (0: none).
fn written_through(data: &Path, checked: &str, p: i32) -> i64 {
    let prefix = format!("{checked}+{p}+");
    files(&data.join("frames"), |n| {
        n.starts_with(&prefix) && n.ends_with(".parquet")
    })
    .iter()
    .filter_map(|f| {
        let name = f.file_name()?.to_string_lossy().into_owned();
        let last = name.trim_end_matches(".parquet").rsplit('+').next()?;
        last.parse::<i64>().ok()
    })
    .max()
    .map_or(0, |l| l + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_and_commits_exactly_what_was_consumed() {
    let s = setup("life-writer-term").await;
    let mut w = s.writer(&[]);
    // records reached both partitions' buffers (each is recovered from storage on its
    // first record) and are not flushed yet (the age limit is 5 s): the stop must write them
    wait_until("records consumed", Duration::from_secs(60), || {
        metric(w.metrics, "feeder_writer_recoveries_total") >= PARTITIONS as f64
    });
    assert_eq!(
        metric(w.metrics, "feeder_writer_records_committed_total"),
        0.0
    );
    w.sigterm();
    let (status, took) = w.wait_exit(Duration::from_secs(30));
    println!("writer: exit {status} in {took:?}");
    assert!(status.success(), "{}", w.log());
    let committed = s.committed();
    for p in 0..PARTITIONS {
        assert_eq!(
            committed[p as usize],
            written_through(&s.data, &s.topics.checked, p),
            "partition {p}: committed == written"
        );
        assert!(committed[p as usize] > 0, "partition {p}: nothing written");
    }
    s.finish();
    s.assert_exactly_once("after SIGTERM");
}

/// Runs a writer armed with `FEEDER_CRASHPOINT=<spec>`, waits for it to stop there,
/// SIGKILLs it, checks `at_crash` on what it left, restarts, checks exactly-once.
async fn crash_at(prefix: &str, spec: &str, at_crash: impl Fn(&Setup)) {
    let s = setup(prefix).await;
    let mut w = s.writer(&[("FEEDER_CRASHPOINT", spec)]);
    let point = spec.split(':').next().unwrap();
    let marker = format!("crashpoint {point} reached");
    wait_until(&marker, Duration::from_secs(60), || {
        w.log().contains(&marker)
    });
    w.sigkill();
    at_crash(&s);
    s.finish();
    s.assert_exactly_once(&format!("SIGKILL at {spec}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_buffering() {
    crash_at("life-writer-buf", "buffering:200", |s| {
        let parquet = files(&s.data, |n| n.ends_with(".parquet"));
        assert!(parquet.is_empty(), "no file yet: {parquet:?}");
        assert!(s.committed().iter().all(|c| *c <= 0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_a_temp_file_is_written() {
    crash_at("life-writer-tmp", "after_temp_write:2", |s| {
        // the writer stores up to 4 files of a range at once (feeder-writer's
        // `parallel`): the crash leaves the stopped one's temp file and maybe others'
        let temps = files(&s.data, |n| n.starts_with(".tmp-"));
        assert!(
            (1..=4).contains(&temps.len()),
            "the crash leaves 1 to 4 temp files: {temps:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_rename_before_commit() {
    crash_at("life-writer-ren", "after_rename:1", |s| {
        let parquet = files(&s.data, |n| n.ends_with(".parquet"));
        assert!(!parquet.is_empty(), "the range's files are in place");
        assert!(
            s.committed().iter().all(|c| *c <= 0),
            "and not committed: {:?}",
            s.committed()
        );
    })
    .await;
}

/// `feeder writer --storage s3` against a real S3-protocol server (moto, from the test
/// virtualenv) on 127.0.0.1: every frame lands in the bucket under the prefix, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_process_stores_to_an_s3_bucket() {
    let s = setup("life-writer-s3").await;
    let moto = feeder_testkit::MotoS3::start("utility-data");
    let endpoint = moto.endpoint.clone();
    let py = |code: &str| moto.boto3(code);
    let creds = [
        ("AWS_ACCESS_KEY_ID", feeder_testkit::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", feeder_testkit::SECRET_KEY),
    ];
    let mut w = Stage::spawn(
        "writer-s3",
        s.dir.path(),
        &[
            "writer",
            "--storage",
            "s3",
            "--s3-bucket",
            "utility-data",
            "--s3-endpoint",
            &endpoint,
            "--s3-allow-http",
            "--s3-prefix",
            "feeder/prod",
            "--flush-max-age",
            "1s",
            "--group",
            GROUP,
            "--brokers",
            &s.kafka.brokers,
            "--topic-prefix",
            &s.prefix,
            "--partitions",
            "2",
            "--replication",
            "1",
        ],
        &creds,
    );
    w.wait_ready(Duration::from_secs(30));
    wait_until("everything committed", Duration::from_secs(90), || {
        s.all_committed()
    });
    w.sigterm();
    let (status, _) = w.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", w.log());
    // Objects are fetched by boto3 and read by pyarrow in separate interpreters:
    // pyarrow and boto3 in one process have aborted at exit ("terminate called without
    // an active exception") on CI, whatever the files held.
    let fetched = s.dir.path().join("fetched");
    let keys = py(&format!(
        "out = '{}'\n\
         keys = 0\n\
         for page in s3.get_paginator('list_objects_v2').paginate(Bucket='utility-data', Prefix='feeder/prod/frames/'):\n\
         \x20   for o in page.get('Contents', []):\n\
         \x20       keys += 1\n\
         \x20       path = os.path.join(out, '%06d.parquet' % keys)\n\
         \x20       os.makedirs(out, exist_ok=True)\n\
         \x20       open(path, 'wb').write(s3.get_object(Bucket='utility-data', Key=o['Key'])['Body'].read())\n\
         print(keys)\n",
        fetched.display()
    ));
    let rows = python(&[
        "-c",
        &format!(
            "import glob, pyarrow.parquet as pq\n\
             print(sum(pq.read_table(f).num_rows for f in glob.glob('{}/*.parquet')))\n",
            fetched.display()
        ),
    ]);
    let counted = format!("{keys} {rows}");
    let v = numbers(&counted);
    println!(
        "s3: {} frames files, {} frame rows (sent {})",
        v[0], v[1], s.frames
    );
    assert!(v[0] > 0);
    assert_eq!(v[1], s.frames);
    assert!(!s.data.exists(), "nothing written to local disk");
}

/// `FEEDER_ENCRYPTION_KEYS` on the writer process: a bad key file stops it at start with
/// the line at fault; a good one (one master key from the environment) encrypts exactly
/// the datasets it lists, and `feeder verify` reads them only with the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_process_encrypts_the_datasets_its_key_file_lists() {
    let s = setup("life-writer-enc").await;
    let dir = s.dir.path();
    let (bad, good) = (dir.join("bad-keys.toml"), dir.join("keys.toml"));
    std::fs::write(&bad, "[master_keys]\nk_footer = \"00112233\"\n").unwrap();
    std::fs::write(
        &good,
        "[master_keys]\nk_footer = \"000102030405060708090a0b0c0d0e0f\"\n\
         k_cols = \"env:FEEDER_TEST_K_COLS\"\n\
         [datasets.readings]\nfooter_key = \"k_footer\"\ncolumns = { k_cols = [\"device_id\", \"value\"] }\n\
         [datasets.frames]\nfooter_key = \"k_footer\"\n",
    )
    .unwrap();
    let data = s.data.display().to_string();
    let mut refused = Stage::spawn(
        "writer-bad-keys",
        dir,
        &["writer", "--data", &data, "--brokers", &s.kafka.brokers],
        &[("FEEDER_ENCRYPTION_KEYS", bad.to_str().unwrap())],
    );
    let (status, _) = refused.wait_exit(Duration::from_secs(30));
    let log = refused.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("line 2: master key \"k_footer\": 32 bits"),
        "{log}"
    );
    assert!(
        !s.data.exists(),
        "nothing written before the key file is valid"
    );

    // k_cols comes from the environment, as a Kubernetes secret would provide it
    let k_cols = (
        "FEEDER_TEST_K_COLS",
        "EBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8=",
    );
    let mut w = s.writer(&[("FEEDER_ENCRYPTION_KEYS", good.to_str().unwrap()), k_cols]);
    wait_until("everything committed", Duration::from_secs(90), || {
        s.all_committed()
    });
    w.sigterm();
    let (status, _) = w.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", w.log());
    let magic = |p: &PathBuf| {
        let b = std::fs::read(p).unwrap();
        b[b.len() - 4..].to_vec()
    };
    let parquet = |n: &str| n.ends_with(".parquet");
    for dataset in ["readings", "frames"] {
        let f = files(&s.data.join(dataset), parquet);
        assert!(!f.is_empty(), "{dataset}");
        assert!(f.iter().all(|p| magic(p) == b"PARE"), "{dataset} encrypted");
    }
    let telematics = files(&s.data.join("telematics"), parquet);
    assert!(!telematics.is_empty());
    assert!(
        telematics.iter().all(|p| magic(p) == b"PAR1"),
        "not listed: plaintext"
    );

    let verify = |keys: Option<&Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_feeder"));
        cmd.args(["verify", "--data", &data, "--registry"])
            .arg(dir.join("registry.jsonl"))
            .env_remove("FEEDER_ENCRYPTION_KEYS")
            .env(k_cols.0, k_cols.1);
        if let Some(k) = keys {
            cmd.arg("--encryption-keys").arg(k);
        }
        cmd.output().unwrap()
    };
    let with_keys = verify(Some(&good));
    let shown = String::from_utf8_lossy(&with_keys.stdout).into_owned()
        + &String::from_utf8_lossy(&with_keys.stderr);
    assert!(with_keys.status.success(), "{shown}");
    let without = verify(None);
    assert!(
        !without.status.success(),
        "verify read encrypted files without keys"
    );
    println!(
        "encrypted writer process: {} frames, {} readings; verify with keys:\n{shown}",
        s.frames, s.readings
    );
}
