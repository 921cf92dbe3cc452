//! Shared harness for the edge's in-process tests: a provisioned fleet, the real edge on a
//! port-0 listener against the embedded broker, clients (typed and raw bytes), and a
//! reader of the raw topic to prove what did or did not reach Kafka.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use feeder_core::Registry;
use feeder_core::keyfile::{DeviceKey, load_key_file};
use feeder_core::registry::RegistryLine;
use feeder_edge::{EdgeConfig, SharedRegistry};
use feeder_kafka::{KafkaConfig, Topics};
use feeder_proto::pipeline::RawFrame;
use feeder_proto::raw::RawPushRequest;
use feeder_proto::v1::PushResponse;
use feeder_sim::SimDevice;
use feeder_sim::keygen::{KeygenConfig, keygen};
use prost::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const START_MS: i64 = 1_760_000_000_000;

/// Plays `cfg` open loop with short backoffs (`max_attempts` per frame) and prints the
/// summary.
pub async fn play_open_loop(
    cfg: feeder_sim::loadgen::OpenLoopConfig,
    max_attempts: u32,
) -> feeder_sim::loadgen::OpenLoopReport {
    let policy = feeder_sim::loadgen::RetryPolicy {
        max_attempts,
        base: Duration::from_millis(5),
        max: Duration::from_millis(20),
    };
    let report =
        feeder_sim::loadgen::run_open_loop_with_policy(cfg, policy, CancellationToken::new())
            .await
            .unwrap();
    println!("{}", report.summary());
    report
}

/// Provisions `meters` + `vehicles` devices (seeded) in `dir`; returns the registry path
/// and the device keys.
pub fn provision(dir: &Path, meters: usize, vehicles: usize) -> (PathBuf, Vec<DeviceKey>) {
    let registry = dir.join("registry.jsonl");
    let secrets = dir.join("device-keys.jsonl");
    keygen(&KeygenConfig {
        meters,
        vehicles,
        registry: registry.clone(),
        secrets: secrets.clone(),
        seed: Some(42),
        ..KeygenConfig::default()
    })
    .unwrap();
    (registry, load_key_file(&secrets).unwrap())
}

pub fn read_lines(path: &Path) -> Vec<RegistryLine> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes registry lines to a temp file and renames it into place (as operators should).
pub fn write_lines(path: &Path, lines: &[RegistryLine]) {
    let text: String = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap() + "\n")
        .collect();
    write_atomically(path, &text);
}

pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Takes device `id`'s key out of `keys` (signing keys are not `Clone`).
pub fn device(keys: &mut Vec<DeviceKey>, id: &str) -> SimDevice {
    let i = keys.iter().position(|k| k.device_id == id).unwrap();
    SimDevice::from_key(keys.swap_remove(i), START_MS)
}

/// A running edge.
pub struct Edge {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<feeder_edge::Result<()>>,
    pub registry: SharedRegistry,
}

impl Edge {
    pub async fn start(
        kafka: &KafkaConfig,
        topics: &Topics,
        cfg: EdgeConfig,
        registry: &Path,
    ) -> Self {
        let reg = SharedRegistry::new(Registry::load(registry).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = {
            let (k, t, r, s) = (kafka.clone(), topics.clone(), reg.clone(), stop.clone());
            tokio::spawn(async move { feeder_edge::serve(listener, &k, &t, cfg, r, s).await })
        };
        let edge = Self {
            addr,
            stop,
            task,
            registry: reg,
        };
        edge.wait_health(ServingStatus::Serving, Duration::from_secs(30))
            .await;
        edge
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn health(&self) -> Option<ServingStatus> {
        let mut c = HealthClient::new(self.channel().await);
        let r = c
            .check(HealthCheckRequest {
                service: feeder_edge::grpc::INGEST_SERVICE_NAME.into(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(r.into_inner().status).ok()
    }

    /// Waits until health reports `want`; returns how long it took.
    pub async fn wait_health(&self, want: ServingStatus, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            assert!(!self.task.is_finished(), "edge stopped");
            if self.health().await == Some(want) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "edge health not {want:?} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A `Push` call carrying frames as arbitrary bytes (what a broken or hostile client sends).
pub async fn raw_push(ch: Channel, frames: Vec<Bytes>) -> Result<PushResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let codec: tonic_prost::ProstCodec<RawPushRequest, PushResponse> =
        tonic_prost::ProstCodec::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/feeder.v1.Ingest/Push");
    grpc.unary(tonic::Request::new(RawPushRequest { frames }), path, codec)
        .await
        .map(|r| r.into_inner())
}

fn reader(kafka: &KafkaConfig) -> BaseConsumer {
    kafka
        .reader(&format!("edge-test-{}", std::process::id()))
        .create()
        .unwrap()
}

/// Sum of the raw topic's high watermarks: how many records it holds.
pub async fn raw_count(kafka: &KafkaConfig, topics: &Topics) -> i64 {
    let (kafka, topic, parts) = (kafka.clone(), topics.raw.clone(), topics.partitions);
    tokio::task::spawn_blocking(move || {
        let c = reader(&kafka);
        (0..parts)
            .map(|p| {
                c.fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1
            })
            .sum()
    })
    .await
    .unwrap()
}

/// Every record of the raw topic.
pub async fn raw_records(kafka: &KafkaConfig, topics: &Topics) -> Vec<RawFrame> {
    let (kafka, topic, parts) = (kafka.clone(), topics.raw.clone(), topics.partitions);
    tokio::task::spawn_blocking(move || {
        let c = reader(&kafka);
        let mut want = 0;
        let mut tpl = TopicPartitionList::new();
        for p in 0..parts {
            let (_, high) = c
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap();
            want += high;
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (out.len() as i64) < want {
            assert!(Instant::now() < deadline, "read {} of {want}", out.len());
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                out.push(RawFrame::decode(m.payload().unwrap_or_default()).unwrap());
            }
        }
        out
    })
    .await
    .unwrap()
}

/// The process-wide metrics recorder of this test binary (installed on first use).
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap()
    })
}

/// The sum of counter `name`'s samples whose labels include every `label="value"` given.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends `body` as a whole encoded request, whatever it holds.
#[derive(Clone, Copy, Default)]
pub struct RawRequestCodec;

impl tonic::codec::Codec for RawRequestCodec {
    type Encode = Bytes;
    type Decode = PushResponse;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        Self
    }
    fn decoder(&mut self) -> Self {
        Self
    }
}

impl tonic::codec::Encoder for RawRequestCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawRequestCodec {
    type Item = PushResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<PushResponse>, tonic::Status> {
        PushResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// A `Push` call whose request is `body` as is (a malformed or oversized request).
pub async fn raw_request(ch: Channel, body: Bytes) -> Result<PushResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/feeder.v1.Ingest/Push");
    grpc.unary(tonic::Request::new(body), path, RawRequestCodec)
        .await
        .map(|r| r.into_inner())
}
