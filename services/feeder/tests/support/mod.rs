//! Running `feeder` stages as real child processes against a broker on 127.0.0.1, for
//! the lifecycle tests: spawn, wait until `/readyz`, SIGTERM or SIGKILL, and read what
//! the topics hold afterwards.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use feeder_kafka::KafkaConfig;
use feeder_kafka::fence::Mark;
use feeder_proto::pipeline::RawFrame;
use feeder_sim::fleet::SimDevice;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

pub use feeder_testkit::free_port;

/// A `feeder` child process; killed if still running when dropped.
pub struct Stage {
    pub name: &'static str,
    pub child: Child,
    pub metrics: SocketAddr,
    log: PathBuf,
}

impl Stage {
    /// Starts `feeder <args>` with `--metrics-listen` on a free port; stdout and stderr
    /// go to `<dir>/<name>.log`.
    pub fn spawn(name: &'static str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_feeder"))
            .args(args)
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Self {
            name,
            child,
            metrics,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, within: Duration) {
        let t0 = Instant::now();
        loop {
            if http_status(self.metrics, "/readyz") == Some(200) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before ready:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                t0.elapsed() < within,
                "{} not ready after {within:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {}", self.child.id());
    }

    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the process to exit; panics after `within`. Returns its status and how
    /// long it took.
    pub fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, t0.elapsed());
            }
            if t0.elapsed() > within {
                let _ = self.child.kill();
                panic!(
                    "{} still running after {within:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of a plain HTTP/1.1 GET, or `None` when nothing answers.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

/// A plain HTTP/1.1 GET: (status, body), or `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    Some((status, body))
}

/// The value of an unlabelled Prometheus sample `name` on a stage's `/metrics` (0 when
/// not exported yet).
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    let Some((200, body)) = http_get(addr, "/metrics") else {
        return 0.0;
    };
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// (low, high) watermarks of `topic`/`partition`.
pub fn watermarks(kafka: &KafkaConfig, topic: &str, partition: i32) -> (i64, i64) {
    let c: BaseConsumer = kafka.reader("lifecycle-test").create().unwrap();
    c.fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap()
}

/// Sum of the high watermarks of `topic` over `partitions`.
pub fn total(kafka: &KafkaConfig, topic: &str, partitions: i32) -> i64 {
    (0..partitions).map(|p| watermarks(kafka, topic, p).1).sum()
}

/// Every value in `topic`/`partition`, in offset order, with its offset, but the zombie
/// fence's claims (no data).
pub fn read_partition(kafka: &KafkaConfig, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
    let (low, high) = watermarks(kafka, topic, partition);
    let mut out = Vec::new();
    if high <= low {
        return out;
    }
    let c: BaseConsumer = kafka.reader("lifecycle-read").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))
        .unwrap();
    c.assign(&tpl).unwrap();
    let t0 = Instant::now();
    let mut last = low - 1;
    while last < high - 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{topic}: read stalled"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            last = m.offset();
            if let Mark::Claim(_) = Mark::of(m.headers(), m.offset()) {
                continue;
            }
            out.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

/// Every value of `topic` across `partitions`.
pub fn read_topic(kafka: &KafkaConfig, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
    (0..partitions)
        .flat_map(|p| read_partition(kafka, topic, p).into_iter().map(|(_, v)| v))
        .collect()
}

/// The committed offset of `group` per partition of `topic` (-1: none).
pub fn committed(kafka: &KafkaConfig, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = kafka.consumer(group, "lifecycle-probe").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// How many times each key occurs.
pub fn counts<K: std::hash::Hash + Eq>(keys: impl IntoIterator<Item = K>) -> HashMap<K, usize> {
    let mut m = HashMap::new();
    for k in keys {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// Starts `feeder edge` on `listen` against `kafka` (topics `<prefix>.*` with `partitions`,
/// replication 1), with `registry` and the tests' edge key file in `dir`, and `extra`
/// flags after those; waits until it is ready.
pub fn spawn_edge(
    dir: &Path,
    listen: &str,
    registry: &Path,
    kafka: &KafkaConfig,
    prefix: &str,
    partitions: i32,
    extra: &[&str],
) -> Stage {
    let registry = registry.display().to_string();
    let edge_keys = write_edge_keys(dir);
    let partitions = partitions.to_string();
    let mut args = vec![
        "edge",
        "--listen",
        listen,
        "--registry",
        &registry,
        "--brokers",
        &kafka.brokers,
        "--topic-prefix",
        prefix,
        "--partitions",
        &partitions,
        "--replication",
        "1",
        "--edge-keys",
        &edge_keys,
    ];
    args.extend_from_slice(extra);
    let mut edge = Stage::spawn("edge", dir, &args, &[]);
    edge.wait_ready(Duration::from_secs(30));
    edge
}

/// A tansu broker and a provisioned fleet of meters, for the tests that run stages as
/// processes on a real broker.
pub struct TansuFleet {
    pub broker: feeder_testkit::Tansu,
    pub kafka: KafkaConfig,
    /// `--registry` and `--edge-keys` paths.
    pub registry: String,
    pub edge_keys: String,
    pub devices: Vec<SimDevice>,
}

/// Starts tansu in `dir` and provisions `meters` meters (keygen `seed`) whose simulated
/// clocks start at `devices_from_ms`.
pub fn tansu_fleet(dir: &Path, meters: usize, seed: u64, devices_from_ms: i64) -> TansuFleet {
    let broker = feeder_testkit::Tansu::start(dir).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap());
    let registry = dir.join("registry.jsonl");
    let secrets = dir.join("keys.jsonl");
    feeder_sim::keygen::keygen(&feeder_sim::keygen::KeygenConfig {
        meters,
        vehicles: 0,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(seed),
        ..Default::default()
    })
    .unwrap();
    let devices = feeder_core::keyfile::load_key_file(&secrets)
        .unwrap()
        .into_iter()
        .map(|k| SimDevice::from_key(k, devices_from_ms))
        .collect();
    TansuFleet {
        broker,
        kafka,
        registry: registry.display().to_string(),
        edge_keys: write_edge_keys(dir),
        devices,
    }
}

/// The edge key the test stages share (`write_edge_keys`, `raw_record`).
const TEST_EDGE_KEY: &str = "7e57ed9e7e57ed9e7e57ed9e7e57ed9e7e57ed9e7e57ed9e7e57ed9e7e57ed9e";

/// Writes the tests' edge key file into `dir`; returns its path for `--edge-keys`.
pub fn write_edge_keys(dir: &Path) -> String {
    let path = dir.join("edge-keys.jsonl");
    std::fs::write(
        &path,
        feeder_core::EdgeKeys::file_line("test", TEST_EDGE_KEY),
    )
    .unwrap();
    path.display().to_string()
}

fn test_edge_key() -> feeder_core::EdgeKey {
    feeder_core::EdgeKey::new("test", &hex::decode(TEST_EDGE_KEY).unwrap()).unwrap()
}

/// The next frame of `dev` as an edge holding the tests' edge key would put it on the
/// raw topic.
pub fn raw_record(dev: &mut SimDevice, now_ms: i64) -> Vec<u8> {
    let sf = dev.next_frame(now_ms).frame.encode_to_vec();
    test_edge_key()
        .raw_frame(sf.into(), now_ms, "edge-0")
        .encode_to_vec()
}

/// The next frame of `dev` as a producer that is not an edge would write it: a valid
/// device signature, no edge proof.
pub fn unproven_raw_record(dev: &mut SimDevice, now_ms: i64) -> Vec<u8> {
    RawFrame {
        signed_frame: dev.next_frame(now_ms).frame.encode_to_vec().into(),
        received_at_ms: now_ms,
        edge_id: "edge-0".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Produces `(device id, value)` records to `topic`, partitioned by device as the edge
/// does (one device stays in one partition).
pub async fn produce_keyed(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: i32,
    records: &[(String, Vec<u8>)],
) {
    let producer: FutureProducer = kafka
        .producer("lifecycle", 100_000, 30_000)
        .create()
        .unwrap();
    let mut acks = Vec::new();
    for (key, value) in records {
        let p = (fnv(key.as_bytes()) % partitions as u64) as i32;
        let rec = FutureRecord::to(topic).partition(p).key(key).payload(value);
        acks.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    for a in acks {
        a.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The whitespace-separated integers of `text`.
pub fn numbers(text: &str) -> Vec<usize> {
    text.split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

/// Polls `cond` every 100 ms until true; panics with `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < within, "timed out after {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
