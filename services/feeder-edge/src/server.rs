//! Serving: binds the gRPC server, owns the registry snapshot and the producer, and
//! shuts down in order (stop accepting, finish in-flight calls, flush the producer).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use feeder_core::Registry;
use feeder_kafka::{KafkaConfig, Topics, ensure_topics};
use feeder_proto::raw::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::produce::RawProducer;
use crate::service::IngestService;
use crate::{EdgeConfig, Error, Result};

/// The registry in force. Readers take a cheap `Arc` snapshot per request; a reload swaps
/// the whole registry at once, so a request never sees half of two registries.
#[derive(Clone, Default)]
pub struct SharedRegistry(Arc<RwLock<Arc<Registry>>>);

impl SharedRegistry {
    pub fn new(reg: Registry) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(reg))))
    }

    pub fn snapshot(&self) -> Arc<Registry> {
        // A poisoned lock still holds a complete registry (swaps are a single assignment).
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn replace(&self, reg: Registry) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Arc::new(reg);
    }
}

/// Binds `addr` and serves until `shutdown` is cancelled.
pub async fn run(
    addr: SocketAddr,
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: EdgeConfig,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve(listener, kafka, topics, cfg, registry, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0 and read the address).
pub async fn serve(
    listener: TcpListener,
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: EdgeConfig,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) -> Result<()> {
    ensure_topics(kafka, &[&topics.raw], topics.partitions, topics.replication).await?;
    let producer = Arc::new(RawProducer::new(kafka, &topics.raw, &cfg)?);
    let max_request = cfg.max_request_bytes();
    let svc = IngestService {
        registry,
        producer: producer.clone(),
        cfg: Arc::new(cfg),
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(feeder_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, topic = %topics.raw, "edge serving");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(IngestServer::new(svc).max_decoding_message_size(max_request))
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await?;
    // In-flight calls have finished; make sure nothing acked is left unflushed.
    producer.flush(Duration::from_secs(10));
    tracing::info!("edge stopped");
    Ok(())
}

/// The address a listener is bound to, for tests.
pub fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    Ok(listener.local_addr()?)
}
