//! Serving: binds the gRPC server, owns the registry snapshot, the producer and the
//! admission state, reports health, and shuts down in order: stop accepting, give
//! in-flight calls until the deadline, flush the producer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use feeder_kafka::{KafkaConfig, Topics, ensure_topics};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::conn::capped_incoming;
use crate::grpc::{INGEST_SERVICE_NAME, IngestRouter};
use crate::peer_budget::PeerBudget;
use crate::produce::RawProducer;
use crate::ratelimit::RateLimiter;
use crate::service::IngestService;
use crate::shared_registry::SharedRegistry;
use crate::{EdgeConfig, Error, Result};

/// Binds `addr` and serves until `shutdown` is cancelled.
pub async fn run(
    addr: SocketAddr,
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: EdgeConfig,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) -> Result<()> {
    cfg.check_listen(addr)?;
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
    cfg.validate()?;
    cfg.check_listen(listener.local_addr()?)?;
    ensure_topics(kafka, &[&topics.raw], topics.partitions, topics.replication).await?;
    let producer = Arc::new(RawProducer::new(kafka, &topics.raw, &cfg)?);
    let in_flight = Arc::new(Semaphore::new(cfg.max_frames_in_flight));
    let limiter = Arc::new(RateLimiter::new(
        cfg.device_rate_per_sec,
        cfg.device_burst,
        cfg.rate_limiter_capacity,
    ));
    let cfg = Arc::new(cfg);
    let svc = IngestService {
        registry: registry.clone(),
        producer: producer.clone(),
        cfg: cfg.clone(),
        in_flight: in_flight.clone(),
        limiter: limiter.clone(),
        budget: Arc::new(PeerBudget::new(cfg.failure_budget)),
        settled: Arc::default(),
    };
    let ingest = IngestRouter::new(svc, cfg.frame_limits(), cfg.request_limit());
    // Reflection describes the API to anyone who asks: off the device port unless enabled.
    let reflection = if cfg.reflection {
        Some(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(feeder_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .map_err(|e| Error::Internal(e.to_string()))?,
        )
    } else {
        None
    };
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_service_status(INGEST_SERVICE_NAME, ServingStatus::NotServing)
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;

    // Background tasks stop with `tasks`, after the server has.
    let tasks = CancellationToken::new();
    if let Some(path) = cfg.registry_path.clone() {
        let trigger = Arc::new(Notify::new());
        crate::reload::spawn_sighup(trigger.clone(), tasks.clone());
        tokio::spawn(crate::reload::watch(
            path,
            registry.clone(),
            cfg.registry_poll,
            trigger,
            tasks.clone(),
        ));
    }
    tokio::spawn(report_health(
        health,
        producer.clone(),
        registry.clone(),
        in_flight.clone(),
        limiter,
        cfg.clone(),
        tasks.clone(),
    ));

    let local = listener.local_addr()?;
    tracing::info!(addr = %local, topic = %topics.raw, "edge serving");
    let incoming = capped_incoming(listener, Arc::new(Semaphore::new(cfg.max_connections)));
    // HTTP/2 limits: streams and headers per connection, and PINGs so a dead peer does
    // not keep its connection slot.
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .http2_max_header_list_size(cfg.max_header_list_bytes)
        .http2_keepalive_interval(Some(cfg.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.http2_keepalive_timeout));
    if let Some(files) = &cfg.tls {
        builder = builder.tls_config(crate::tls::server_tls(files)?)?;
        tracing::info!(
            mutual = files.client_ca.is_some(),
            device_identity = files.require_device_identity,
            "edge serving TLS"
        );
    }
    let server = builder
        .add_service(ingest)
        .add_service(health_svc)
        .add_optional_service(reflection)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    tokio::pin!(server);
    // Graceful: once shutdown is requested the server stops accepting and waits for open
    // calls; long-lived streams get until the deadline, then their connections are dropped
    // (their unanswered frames were never acked, so devices resend them).
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(cfg.shutdown_deadline).await;
    };
    let served = tokio::select! {
        r = &mut server => Some(r),
        _ = deadline => None,
    };
    tasks.cancel();
    match served {
        Some(r) => r?,
        None => tracing::warn!(
            deadline = ?cfg.shutdown_deadline,
            "shutdown deadline passed; dropping the remaining calls"
        ),
    }
    // In-flight calls have finished; make sure nothing acked is left unflushed.
    let p = producer.clone();
    let flush_for = cfg.ack_timeout.min(Duration::from_secs(10));
    let _ = tokio::task::spawn_blocking(move || p.flush(flush_for)).await;
    tracing::info!("edge stopped");
    Ok(())
}

/// Refreshes health (broker reachable and registry loaded) and the gauges until `stop`.
async fn report_health(
    health: tonic_health::server::HealthReporter,
    producer: Arc<RawProducer>,
    registry: SharedRegistry,
    in_flight: Arc<Semaphore>,
    limiter: Arc<RateLimiter>,
    cfg: Arc<EdgeConfig>,
    stop: CancellationToken,
) {
    let mut last: Option<ServingStatus> = None;
    loop {
        let started = Instant::now();
        let p = producer.clone();
        let probe_timeout = cfg.health_interval.max(Duration::from_secs(1));
        let reachable = tokio::task::spawn_blocking(move || p.broker_reachable(probe_timeout))
            .await
            .unwrap_or(false);
        let status = if reachable && registry.is_loaded() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            tracing::info!(
                broker_reachable = reachable,
                registry_loaded = registry.is_loaded(),
                serving = status == ServingStatus::Serving,
                "edge health"
            );
            health.set_service_status(INGEST_SERVICE_NAME, status).await;
            health.set_service_status("", status).await;
            last = Some(status);
        }
        metrics::gauge!("feeder_edge_broker_reachable").set(if reachable { 1.0 } else { 0.0 });
        metrics::gauge!("feeder_edge_producer_queue_messages").set(f64::from(producer.in_flight()));
        metrics::gauge!("feeder_edge_frames_in_flight")
            .set((cfg.max_frames_in_flight - in_flight.available_permits()) as f64);
        metrics::gauge!("feeder_edge_rate_limiter_devices").set(limiter.tracked() as f64);
        let wait = cfg.health_interval.saturating_sub(started.elapsed());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The address a listener is bound to, for tests.
pub fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    Ok(listener.local_addr()?)
}
