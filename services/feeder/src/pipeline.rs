//! All three stages in one process, joined only through Kafka exactly as in production.
//! Used by `feeder demo` and the end-to-end tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use feeder_core::Registry;
use feeder_edge::{EdgeConfig, SharedRegistry};
use feeder_kafka::lag::group_lag;
use feeder_kafka::{KafkaConfig, Topics};
use feeder_stream::{StreamConfig, StreamStats};
use feeder_writer::{WriterConfig, WriterStats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stage_runtime::StageRuntime;

pub struct PipelineConfig {
    pub kafka: KafkaConfig,
    pub topics: Topics,
    pub registry: PathBuf,
    /// Read the registry from this topic instead of `registry` (edge, stream), and audit
    /// it into `registry_changes` (writer).
    pub registry_topic: Option<feeder_kafka::registry_follow::TopicSource>,
    pub data_root: PathBuf,
    pub edge: EdgeConfig,
    pub stream: StreamConfig,
    pub writer: WriterConfig,
    /// `Some(n)`: each stage on a runtime of its own, `n` worker threads named after the
    /// stage (`edge`, `stream`, `writer`), for per-stage CPU accounting
    /// ([`crate::stage_runtime`]); `None`: all on the caller's runtime.
    pub stage_workers: Option<usize>,
}

impl PipelineConfig {
    /// Defaults for one process against `kafka`, writing under `data_root`. Edge and
    /// stream share a fresh edge key, so the stream refuses raw records no edge made.
    pub fn new(kafka: KafkaConfig, topics: Topics, registry: PathBuf, data_root: PathBuf) -> Self {
        let edge_proof = ephemeral_edge_proof();
        let writer = WriterConfig {
            data_root: data_root.clone(),
            flush_max_age: Duration::from_secs(2),
            ..WriterConfig::default()
        };
        Self {
            kafka,
            topics,
            registry,
            registry_topic: None,
            data_root,
            edge: EdgeConfig {
                edge_proof: edge_proof.clone(),
                ..EdgeConfig::default()
            },
            stream: StreamConfig {
                edge_proof,
                ..StreamConfig::default()
            },
            writer,
            stage_workers: None,
        }
    }
}

/// A random edge key held only by this process.
fn ephemeral_edge_proof() -> feeder_core::EdgeProof {
    // invariant: a fixed valid key id and the system's randomness (ring panics-free API;
    // only a machine without a random source fails here, and then nothing is secure)
    let (key, _) = feeder_core::EdgeKey::generate("in-process")
        .expect("the system random source is available");
    let keys = feeder_core::EdgeKeys::new(vec![key]).expect("one key");
    feeder_core::EdgeProof::keys(keys)
}

/// A running in-process pipeline.
pub struct Pipeline {
    pub edge_addr: SocketAddr,
    pub stream_stats: Arc<StreamStats>,
    pub writer_stats: Arc<WriterStats>,
    pub registry: SharedRegistry,
    kafka: KafkaConfig,
    topics: Topics,
    stream_group: String,
    writer_group: String,
    edge_stop: CancellationToken,
    stages_stop: CancellationToken,
    edge: JoinHandle<feeder_edge::Result<()>>,
    stream: JoinHandle<feeder_stream::Result<()>>,
    writer: JoinHandle<feeder_writer::Result<()>>,
    /// Dropped last: the stages' own runtimes, if any.
    _runtimes: [StageRuntime; 3],
}

impl Pipeline {
    pub async fn start(cfg: PipelineConfig) -> anyhow::Result<Self> {
        let mut cfg = cfg;
        let edge_stop = CancellationToken::new();
        let stages_stop = CancellationToken::new();
        let registry = match cfg.registry_topic.clone() {
            None => SharedRegistry::new(
                Registry::load(&cfg.registry).context("loading the device registry")?,
            ),
            Some(src) => {
                // read whole before the edge serves, then followed until the edge stops
                let shared = SharedRegistry::default();
                let topic = src.topic.clone();
                feeder_edge::registry_topic::load(
                    &cfg.kafka,
                    src.clone(),
                    shared.clone(),
                    edge_stop.clone(),
                )
                .await
                .with_context(|| format!("reading the registry topic {topic}"))?;
                cfg.stream.registry_topic = Some(src.clone());
                cfg.writer.registry_audit = Some(src);
                shared
            }
        };
        if cfg.stream.device_labels.is_empty() {
            cfg.stream.device_labels =
                feeder_stream::config::labels_from_registry(&registry.snapshot());
        }
        let runtimes = [
            StageRuntime::new("edge", cfg.stage_workers)?,
            StageRuntime::new("stream", cfg.stage_workers)?,
            StageRuntime::new("writer", cfg.stage_workers)?,
        ];
        // bound here, registered with the edge's runtime inside its task
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let edge_addr = listener.local_addr()?;
        let stream_stats = Arc::new(StreamStats::default());
        let writer_stats = Arc::new(WriterStats::default());

        let edge = {
            let (k, t, c, r, s) = (
                cfg.kafka.clone(),
                cfg.topics.clone(),
                cfg.edge.clone(),
                registry.clone(),
                edge_stop.clone(),
            );
            runtimes[0].spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                feeder_edge::serve(listener, &k, &t, c, r, s).await
            })
        };
        let stream_group = cfg.stream.group_id.clone();
        let stream = {
            let (k, t, c, st, s) = (
                cfg.kafka.clone(),
                cfg.topics.clone(),
                cfg.stream.clone(),
                stream_stats.clone(),
                stages_stop.clone(),
            );
            runtimes[1].spawn(async move { feeder_stream::run(&k, &t, c, st, s).await })
        };
        let writer_group = cfg.writer.group_id.clone();
        let writer = {
            let (k, t, c, st, s) = (
                cfg.kafka.clone(),
                cfg.topics.clone(),
                cfg.writer,
                writer_stats.clone(),
                stages_stop.clone(),
            );
            runtimes[2].spawn(async move { feeder_writer::run(&k, &t, c, st, s).await })
        };
        let p = Self {
            edge_addr,
            stream_stats,
            writer_stats,
            registry,
            kafka: cfg.kafka,
            topics: cfg.topics,
            stream_group,
            writer_group,
            edge_stop,
            stages_stop,
            edge,
            stream,
            writer,
            _runtimes: runtimes,
        };
        p.wait_edge_ready(Duration::from_secs(60)).await?;
        Ok(p)
    }

    pub fn edge_url(&self) -> String {
        format!("http://{}", self.edge_addr)
    }

    async fn wait_edge_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.edge.is_finished() {
                anyhow::bail!("edge stopped during start-up");
            }
            if tokio::net::TcpStream::connect(self.edge_addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("edge not listening after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Records not yet committed by the stream and writer groups.
    pub async fn lag(&self) -> anyhow::Result<(i64, i64)> {
        let p = self.topics.partitions;
        let s = group_lag(&self.kafka, &self.stream_group, &[&self.topics.raw], p).await?;
        let w = group_lag(
            &self.kafka,
            &self.writer_group,
            &[&self.topics.checked, &self.topics.quarantine],
            p,
        )
        .await?;
        Ok((s, w))
    }

    /// Waits until every record the edge produced is checked and written (lag 0 twice in
    /// a row, since the writer's inputs appear only after the stream commits).
    pub async fn wait_drained(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut zero_in_a_row = 0;
        loop {
            self.check_stages_alive()?;
            let (s, w) = self.lag().await?;
            if s == 0 && w == 0 {
                zero_in_a_row += 1;
                if zero_in_a_row >= 2 {
                    return Ok(());
                }
            } else {
                zero_in_a_row = 0;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "pipeline not drained after {timeout:?}: stream lag {s}, writer lag {w}"
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn check_stages_alive(&self) -> anyhow::Result<()> {
        for (name, done) in [
            ("edge", self.edge.is_finished()),
            ("stream", self.stream.is_finished()),
            ("writer", self.writer.is_finished()),
        ] {
            if done {
                anyhow::bail!("{name} stage stopped unexpectedly");
            }
        }
        Ok(())
    }

    /// Stops in order: the edge first (no new data), then the stream and the writer,
    /// which flush and commit what they hold.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.edge_stop.cancel();
        self.edge.await?.context("edge")?;
        self.stages_stop.cancel();
        self.stream.await?.context("stream")?;
        self.writer.await?.context("writer")?;
        Ok(())
    }
}
