//! The edge as a real process under the oversized-request attack of issue 12: six
//! concurrent `Push` calls of ~40 MiB packed with empty `SignedFrame`s (2 bytes each on the
//! wire, a 32-byte `Bytes` each once decoded), then six of ~3.9 MiB (just under the decode
//! limit, so they are decoded, and stopped at frame 1001). Every call must be refused
//! with INVALID_ARGUMENT and counted, and the process's peak resident memory (VmHWM from
//! /proc) must grow by less than [`BOUND_MIB`]. Before the limits applied while decoding,
//! the same attack grew it by 1,482 MiB; with `--max-request-bytes 67108864` (the old
//! 64 MiB decode limit) the 40 MiB requests are buffered whole and the test fails.

mod support;

use std::time::Duration;

use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::v1::PushResponse;
use prost::Message as _;
use prost::bytes::{BufMut, Bytes};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use support::*;

/// The stated bound (docs/edge.md): peak RSS growth under the attack, MiB.
const BOUND_MIB: u64 = 64;

/// Sends a request's bytes as they are (what a hostile client sends).
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = PushResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawCodec {
    type Item = PushResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PushResponse>, tonic::Status> {
        PushResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

async fn push_raw(url: String, body: Bytes) -> Result<PushResponse, tonic::Status> {
    let ch = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/feeder.v1.Ingest/Push");
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A labelled counter on the stage's `/metrics` (0 when absent).
fn refused(stage: &Stage, reason: &str) -> f64 {
    let Some((200, body)) = http_get(stage.metrics, "/metrics") else {
        return 0.0;
    };
    let prefix = format!("feeder_edge_requests_refused_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Six concurrent calls of `body`; every one must be refused with INVALID_ARGUMENT.
async fn six_at_once(url: &str, body: Bytes, want_message: &str) {
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(push_raw(url.to_string(), body.clone())))
        .collect();
    for c in calls {
        let status = c
            .await
            .unwrap()
            .expect_err("an oversized request was taken");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(want_message), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_oversized_requests_stay_within_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.jsonl");
    feeder_sim::keygen::keygen(&feeder_sim::keygen::KeygenConfig {
        meters: 4,
        vehicles: 0,
        registry: registry.clone(),
        secrets: dir.path().join("keys.jsonl"),
        seed: Some(1),
        ..Default::default()
    })
    .unwrap();
    let topics = Topics::with_prefix("mem-edge", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.all_topics(), 1).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut edge = spawn_edge(dir.path(), &listen, &registry, &kafka, "mem-edge", 1, &[]);
    let pid = edge.child.id();
    let url = format!("http://{listen}");
    let before = vm_hwm_kib(pid);

    // ~40 MiB of empty frames: refused from the message header, never buffered
    let huge = Bytes::from([0x0a, 0x00].repeat(20 * 1024 * 1024));
    // ~3.9 MiB of empty frames, under the 4 MiB limit: decoded, stopped at frame 1001
    let under = Bytes::from([0x0a, 0x00].repeat(2_000_000));
    for _ in 0..2 {
        six_at_once(&url, huge.clone(), "bytes").await;
        six_at_once(&url, under.clone(), "1000 frames").await;
    }
    let grown_mib = vm_hwm_kib(pid).saturating_sub(before) / 1024;
    println!(
        "edge VmHWM {} MiB before, grew {grown_mib} MiB under 2 x (6 x 40 MiB + 6 x 3.9 MiB) \
         of empty frames (bound {BOUND_MIB} MiB; 1,482 MiB before the limits)",
        before / 1024
    );
    assert!(
        grown_mib < BOUND_MIB,
        "peak memory grew {grown_mib} MiB:\n{}",
        edge.log()
    );
    // each refusal is counted with its reason
    assert_eq!(refused(&edge, "request_too_large"), 12.0);
    assert_eq!(refused(&edge, "too_many_frames"), 12.0);
    edge.sigterm();
    let (status, _) = edge.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "{}", edge.log());
}
