//! The operations endpoint every long-running stage serves on `--metrics-listen`:
//! `/metrics` (Prometheus text), `/livez` and `/readyz` for Kubernetes probes.
//!
//! Why readiness is judged here and not inside each stage: what a pod needs before it
//! takes traffic is the same for every stage (its settings loaded, its registry loaded,
//! the brokers answering), and judging it from outside the stage keeps the stages' run
//! loops free of probe plumbing. The broker check is a metadata request on its own
//! client every few seconds, so it measures this pod's path to Kafka, not a cached
//! connection state. Liveness answers from the same runtime as the stage: if the runtime
//! is wedged, `/livez` stops answering and the kubelet restarts the pod.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

/// How often the broker is asked for metadata, and how stale an answer may be.
const BROKER_PROBE_EVERY: Duration = Duration::from_secs(5);
const BROKER_STALE_AFTER: Duration = Duration::from_secs(20);

/// Whether this process should take traffic.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    started: AtomicBool,
    stopping: AtomicBool,
    /// Unix ms of the last successful broker metadata answer; 0 = never.
    broker_ok_ms: AtomicU64,
    watches_broker: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Readiness {
    /// The stage's prerequisites (settings, registry) are loaded and it is starting.
    pub fn mark_started(&self) {
        self.inner.started.store(true, Ordering::Release);
    }

    /// Shutdown began: stop taking traffic.
    pub fn mark_stopping(&self) {
        self.inner.stopping.store(true, Ordering::Release);
    }

    pub fn broker_answered(&self) {
        self.inner.broker_ok_ms.store(now_ms(), Ordering::Release);
    }

    /// `Ok` when ready, else the reason.
    pub fn check(&self) -> Result<(), String> {
        let i = &self.inner;
        if i.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        if !i.started.load(Ordering::Acquire) {
            return Err("starting".into());
        }
        if i.watches_broker.load(Ordering::Acquire) {
            let ok = i.broker_ok_ms.load(Ordering::Acquire);
            if ok == 0 {
                return Err("brokers have not answered yet".into());
            }
            let age = now_ms().saturating_sub(ok);
            if age > BROKER_STALE_AFTER.as_millis() as u64 {
                return Err(format!("brokers unanswered for {} s", age / 1000));
            }
        }
        Ok(())
    }

    /// Asks the brokers for metadata every few seconds until `stop`.
    pub fn watch_broker(&self, kafka: &feeder_kafka::KafkaConfig, stop: CancellationToken) {
        self.inner.watches_broker.store(true, Ordering::Release);
        let consumer: BaseConsumer = match kafka.reader("feeder-readiness").create() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "readiness: cannot create a broker client");
                return;
            }
        };
        let consumer = Arc::new(consumer);
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let started = Instant::now();
                let c = consumer.clone();
                let answered = tokio::task::spawn_blocking(move || {
                    c.fetch_metadata(None, BROKER_PROBE_EVERY).is_ok()
                })
                .await
                .unwrap_or(false);
                if answered {
                    me.broker_answered();
                }
                let wait = BROKER_PROBE_EVERY.saturating_sub(started.elapsed());
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }
}

/// Installs the Prometheus recorder and serves `/metrics`, `/livez`, `/readyz` on `addr`
/// until `stop`. Without an address nothing is served (metrics are still recorded by
/// no one: the macros are no-ops without a recorder).
pub async fn serve(
    addr: Option<SocketAddr>,
    readiness: Readiness,
    stop: CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let handle = PrometheusBuilder::new().install_recorder()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let upkeep = handle.clone();
    let upkeep_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = upkeep_stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => upkeep.run_upkeep(),
            }
        }
    });
    let app = router(handle, readiness);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "operations endpoint failed");
        }
    });
    tracing::info!(addr = %local, "serving /metrics, /livez, /readyz");
    Ok(Some(local))
}

fn router(handle: PrometheusHandle, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(move || async move { handle.render() }))
        .route("/livez", get(|| async { "alive\n" }))
        .route(
            "/readyz",
            get(move || async move {
                match readiness.check() {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_start_and_a_recent_broker_answer() {
        let r = Readiness::default();
        assert_eq!(r.check(), Err("starting".into()));
        r.mark_started();
        assert_eq!(r.check(), Ok(()));
        r.inner.watches_broker.store(true, Ordering::Release);
        assert_eq!(r.check(), Err("brokers have not answered yet".into()));
        r.broker_answered();
        assert_eq!(r.check(), Ok(()));
        r.inner
            .broker_ok_ms
            .store(now_ms() - 60_000, Ordering::Release);
        assert!(r.check().unwrap_err().contains("unanswered for 60 s"));
        r.broker_answered();
        r.mark_stopping();
        assert_eq!(r.check(), Err("shutting down".into()));
    }
}
