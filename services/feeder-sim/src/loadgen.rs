//! The load generator: plays a provisioned fleet against an edge over gRPC, the way a
//! head-end or concentrator would, and reports throughput, latency and every frame's fate.
//!
//! - Frames are generated round-robin over the fleet (each device's in seq order) and
//!   packed `frames_per_request` to a `Push`, so one call carries many devices.
//! - At most `concurrency` calls are in flight, retries and their backoff included; there
//!   is no queue between generation and sending, so memory is bounded.
//! - Shutdown (time up, `max_frames` reached, or the token cancelled) stops generation,
//!   then waits for in-flight calls and their retries. Every frame sent ends acked,
//!   refused with a final code, or abandoned after its attempts: none is left unknown.
//!
//! Simulated time starts one year before the run (UTC midnight), so meters backfill one
//! day per frame and stay in the past for the first 365 frames of each meter.

mod acked_log;
mod batch;
mod open_loop;
mod report;
mod schedule;
mod svg;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use feeder_core::keyfile::load_key_file;
use feeder_proto::v1::ingest_client::IngestClient;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub use acked_log::AckedLog;
pub use batch::RetryPolicy;
pub use open_loop::{
    LatencyMs, OpenLoopConfig, OpenLoopReport, Point, RampShape, Scenario, run_open_loop,
    run_open_loop_with_policy,
};
pub use report::{AckedFrame, LatencySummary, LoadgenProgress, LoadgenReport, print_progress};
pub use schedule::{Next, Schedule, Segment, Slot};

use crate::error::{Error, Result};
use crate::fleet::{Fleet, SimFrame};
use batch::{BatchOutcome, send_batch};
use report::Latencies;

const DAY_MS: i64 = 86_400_000;
/// How far back simulated time starts.
const BACKFILL_DAYS: i64 = 365;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-call deadline, so a stalled receiver costs an attempt instead of hanging the run.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A load generator run.
#[derive(Debug)]
pub struct LoadgenConfig {
    /// Edge address, e.g. `http://127.0.0.1:50051`.
    pub target: String,
    /// Device key file (see `keygen`).
    pub secrets: PathBuf,
    /// Run time; `f64::INFINITY` runs until `max_frames` or cancellation.
    pub seconds: f64,
    /// Calls in flight at most.
    pub concurrency: usize,
    pub frames_per_request: usize,
    /// Stop generating after this many frames (each then ends acked, refused or abandoned).
    pub max_frames: Option<u64>,
    /// Cap on frames generated per second.
    pub rate: Option<f64>,
    /// Keep an [`AckedFrame`] per acked frame in the report.
    pub record_acked: bool,
    /// Append every acked frame to this CSV file instead ([`AckedLog`]).
    pub acked_log: Option<PathBuf>,
    /// Live progress, updated as calls complete.
    pub progress: Option<watch::Sender<LoadgenProgress>>,
    /// Backpressure from the caller: while it holds `true`, no new call starts (calls in
    /// flight finish). The demo holds while the stream stage lags too far behind for the
    /// embedded broker, which evicts unconsumed data past a few MiB per partition.
    pub hold: Option<watch::Receiver<bool>>,
}

impl LoadgenConfig {
    /// Defaults: 10 s, 32 calls in flight, 16 frames per call, no caps.
    pub fn new(target: impl Into<String>, secrets: impl Into<PathBuf>) -> Self {
        Self {
            target: target.into(),
            secrets: secrets.into(),
            seconds: 10.0,
            concurrency: 32,
            frames_per_request: 16,
            max_frames: None,
            rate: None,
            record_acked: false,
            acked_log: None,
            progress: None,
            hold: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(format!("loadgen: {m}")));
        if self.seconds.is_nan() || self.seconds <= 0.0 {
            return bad("seconds must be > 0");
        }
        if self.concurrency == 0 {
            return bad("concurrency must be >= 1");
        }
        if self.frames_per_request == 0 {
            return bad("frames_per_request must be >= 1");
        }
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return bad("rate must be > 0");
        }
        Ok(())
    }
}

/// Runs with the default [`RetryPolicy`].
pub async fn run(cfg: LoadgenConfig, shutdown: CancellationToken) -> Result<LoadgenReport> {
    run_with_policy(cfg, RetryPolicy::default(), shutdown).await
}

/// Runs with an explicit retry policy (tests use short backoffs).
pub async fn run_with_policy(
    cfg: LoadgenConfig,
    policy: RetryPolicy,
    shutdown: CancellationToken,
) -> Result<LoadgenReport> {
    cfg.validate()?;
    let mut fleet = load_fleet(&cfg.secrets)?;
    let client = IngestClient::new(connect(&cfg.target).await?);
    tracing::info!(target = %cfg.target, devices = fleet.len(), concurrency = cfg.concurrency,
        frames_per_request = cfg.frames_per_request, "loadgen starting");

    let started = Instant::now();
    let deadline = Duration::try_from_secs_f64(cfg.seconds)
        .ok()
        .and_then(|d| started.checked_add(d));
    let max_frames = cfg.max_frames.unwrap_or(u64::MAX);
    let mut tally = Tally::new(started);
    if let Some(path) = &cfg.acked_log {
        tally.log = Some(AckedLog::create(path)?);
    }
    let record_acked = cfg.record_acked || tally.log.is_some();
    let mut tasks: JoinSet<BatchOutcome> = JoinSet::new();
    let mut hold = cfg.hold.clone();

    loop {
        while let Some(done) = tasks.try_join_next() {
            tally.add(done?)?;
        }
        tally.publish(&cfg.progress, tasks.len());
        if shutdown.is_cancelled() || tally.report.frames_sent >= max_frames {
            break;
        }
        if tasks.len() >= cfg.concurrency {
            tokio::select! {
                done = tasks.join_next() => {
                    if let Some(done) = done {
                        tally.add(done?)?;
                    }
                    continue;
                }
                _ = shutdown.cancelled() => break,
                _ = sleep_until(deadline) => break,
            }
        }
        if let Some(rate) = cfg.rate {
            let due = started + Duration::from_secs_f64(tally.report.frames_sent as f64 / rate);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = shutdown.cancelled() => break,
                _ = sleep_until(deadline) => break,
            }
        }
        if let Some(hold) = hold.as_mut().filter(|h| *h.borrow()) {
            tokio::select! {
                // an error means the sender is gone: nobody holds any more
                _ = hold.wait_for(|held| !*held) => {}
                _ = shutdown.cancelled() => break,
                _ = sleep_until(deadline) => break,
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = (cfg.frames_per_request as u64).min(max_frames - tally.report.frames_sent);
        let now = now_ms();
        let frames: Vec<SimFrame> = (0..n).filter_map(|_| fleet.next_frame(now)).collect();
        tally.report.frames_sent += frames.len() as u64;
        tasks.spawn(send_batch(
            client.clone(),
            frames,
            policy.clone(),
            record_acked,
        ));
    }

    tracing::info!(
        in_flight = tasks.len(),
        "loadgen stopping, draining in-flight calls"
    );
    while let Some(done) = tasks.join_next().await {
        tally.add(done?)?;
        tally.publish(&cfg.progress, tasks.len());
    }
    let report = tally.finish()?;
    tally_publish_final(&cfg.progress, &report);
    Ok(report)
}

/// The fleet of the key file at `secrets`, its simulated time starting
/// [`BACKFILL_DAYS`] ago; an empty file is a configuration error.
fn load_fleet(secrets: &std::path::Path) -> Result<Fleet> {
    let keys = load_key_file(secrets)?;
    if keys.is_empty() {
        return Err(Error::Config(format!(
            "loadgen: {} holds no device keys",
            secrets.display()
        )));
    }
    let start_ms = (now_ms().div_euclid(DAY_MS) - BACKFILL_DAYS) * DAY_MS;
    Ok(Fleet::from_keys(keys, start_ms))
}

async fn connect(target: &str) -> Result<Channel> {
    let connect_err = |source| Error::Connect {
        target: target.to_string(),
        source,
    };
    Endpoint::from_shared(target.to_string())
        .map_err(connect_err)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(connect_err)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The report under construction.
struct Tally {
    started: Instant,
    report: LoadgenReport,
    latencies: Latencies,
    log: Option<AckedLog>,
}

impl Tally {
    fn new(started: Instant) -> Self {
        Self {
            started,
            report: LoadgenReport::default(),
            latencies: Latencies::new(),
            log: None,
        }
    }

    fn add(&mut self, b: BatchOutcome) -> Result<()> {
        let r = &mut self.report;
        r.frames_acked += b.acked;
        r.readings_acked += b.readings;
        r.samples_acked += b.samples;
        r.events_acked += b.events;
        for (code, n) in b.refused {
            *r.refused_by_code.entry(code).or_default() += n;
        }
        r.abandoned += b.abandoned;
        r.retries += b.retries;
        r.failed_calls += b.failed_calls;
        match &mut self.log {
            Some(log) => log.append(&b.acked_frames)?,
            None => r.acked.extend(b.acked_frames),
        }
        for us in b.latencies_us {
            self.latencies.record(us);
        }
        Ok(())
    }

    fn publish(&self, progress: &Option<watch::Sender<LoadgenProgress>>, in_flight: usize) {
        if let Some(tx) = progress {
            tx.send_replace(progress_of(&self.report, in_flight, self.started.elapsed()));
        }
    }

    fn finish(&mut self) -> Result<LoadgenReport> {
        if let Some(log) = self.log.take() {
            log.finish()?;
        }
        let mut report = std::mem::take(&mut self.report);
        report.elapsed = self.started.elapsed();
        report.latency_us = self.latencies.summary();
        Ok(report)
    }
}

fn tally_publish_final(progress: &Option<watch::Sender<LoadgenProgress>>, report: &LoadgenReport) {
    if let Some(tx) = progress {
        tx.send_replace(progress_of(report, 0, report.elapsed));
    }
}

fn progress_of(r: &LoadgenReport, in_flight: usize, elapsed: Duration) -> LoadgenProgress {
    LoadgenProgress {
        frames_sent: r.frames_sent,
        frames_acked: r.frames_acked,
        frames_refused: r.frames_refused(),
        abandoned: r.abandoned,
        retries: r.retries,
        readings_acked: r.readings_acked + r.samples_acked,
        requests_in_flight: in_flight,
        late: 0,
        elapsed,
    }
}
