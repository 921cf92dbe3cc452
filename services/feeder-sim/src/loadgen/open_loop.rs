//! Open-loop runs: a target arrival rate on a fixed timeline ([`super::Schedule`]), fleet
//! scenarios, and a result a person can read (`result.json`, `result.svg`).
//!
//! - `steady`: `rate` frames/s for `seconds`.
//! - `boundary-burst`: every device of the fleet reports once within `window` after each
//!   `period` boundary (the 15-minute read-out, compressed), `rate` frames/s in between.
//! - `telematics`: the fleet's vehicles only, each sending one frame a second that
//!   carries that second's fix (1 Hz units reporting live); offered = vehicles frames/s.
//! - `ramp`: steps of `step_seconds` at `rate`, `rate + step`, ... Each step is its own
//!   timeline and is drained before the next starts, so a step's figures are its own.
//!   The ramp stops at the first step where the edge pushes back (code 8 on more than
//!   `max_refused_fraction` of answers), p99 passes `max_p99`, more than
//!   `max_late_fraction` of the step's requests could not start, or after `max_steps`.
//!
//! The latency is the device's ack latency: from a request's intended send time to the
//! answer of its first attempt. Retries follow the device contract (codes 8 and 14 back
//! off and resend) and hold their in-flight slot, as in closed loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use feeder_proto::v1::ingest_client::IngestClient;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::batch::{BatchOutcome, RetryPolicy, send_batch};
use super::report::{Latencies, LatencySummary, LoadgenProgress};
use super::schedule::{Next, Schedule, Segment, Slot, latency_from_intended};
use super::{connect, load_fleet, now_ms};
use crate::error::{Error, Result};
use crate::fleet::{Fleet, SimFrame};

/// The edge's "slow down" code.
const RESOURCE_EXHAUSTED: i32 = 8;
/// Width of a time-series point.
const WINDOW: Duration = Duration::from_secs(1);

/// Which offered load to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Steady,
    BoundaryBurst,
    Telematics,
    Ramp,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::BoundaryBurst => "boundary-burst",
            Self::Telematics => "telematics",
            Self::Ramp => "ramp",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "steady" => Ok(Self::Steady),
            "boundary-burst" => Ok(Self::BoundaryBurst),
            "telematics" => Ok(Self::Telematics),
            "ramp" => Ok(Self::Ramp),
            other => Err(format!(
                "unknown scenario {other:?} (steady, boundary-burst, telematics, ramp)"
            )),
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a ramp climbs and when it stops.
#[derive(Debug, Clone)]
pub struct RampShape {
    /// Frames/s added per step.
    pub step: f64,
    pub step_seconds: f64,
    pub max_steps: usize,
    /// Stop after the first step whose p99 ack latency passes this.
    pub max_p99: Duration,
    /// Stop after the first step where more than this share of answers is code 8.
    pub max_refused_fraction: f64,
    /// Stop after the first step where more than this share of requests was late.
    pub max_late_fraction: f64,
}

impl Default for RampShape {
    /// Steps of 2 s up to 20, stopping at p99 > 250 ms, 1 % code 8 or 10 % late.
    fn default() -> Self {
        Self {
            step: 0.0,
            step_seconds: 2.0,
            max_steps: 20,
            max_p99: Duration::from_millis(250),
            max_refused_fraction: 0.01,
            max_late_fraction: 0.1,
        }
    }
}

/// An open-loop run.
#[derive(Debug)]
pub struct OpenLoopConfig {
    pub target: String,
    pub secrets: PathBuf,
    pub scenario: Scenario,
    /// Frames/s: steady's rate, the ramp's first step (and its step when `ramp.step` is
    /// 0), the background between bursts.
    pub rate: f64,
    /// Length of a steady or burst run; a ramp's is its steps.
    pub seconds: f64,
    /// Calls in flight at most; a due request beyond it is late.
    pub max_in_flight: usize,
    pub frames_per_request: usize,
    /// Boundary burst: the compressed 15 minutes, and the window every device reports in.
    pub burst_period: Duration,
    pub burst_window: Duration,
    pub ramp: RampShape,
    pub progress: Option<watch::Sender<LoadgenProgress>>,
}

impl OpenLoopConfig {
    /// Steady, 10 s at 1000 frames/s, 64 calls in flight, 16 frames per call, bursts of
    /// 3 s every 10 s.
    pub fn new(target: impl Into<String>, secrets: impl Into<PathBuf>) -> Self {
        Self {
            target: target.into(),
            secrets: secrets.into(),
            scenario: Scenario::Steady,
            rate: 1000.0,
            seconds: 10.0,
            max_in_flight: 64,
            frames_per_request: 16,
            burst_period: Duration::from_secs(10),
            burst_window: Duration::from_secs(3),
            ramp: RampShape::default(),
            progress: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(format!("loadgen: {m}")));
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return bad("rate must be >= 0");
        }
        let own_rate = matches!(
            self.scenario,
            Scenario::BoundaryBurst | Scenario::Telematics
        );
        if !own_rate && self.rate == 0.0 {
            return bad("rate must be > 0 for steady and ramp");
        }
        if self.scenario != Scenario::Ramp && !positive(self.seconds) {
            return bad("seconds must be > 0 and finite in open loop");
        }
        if self.max_in_flight == 0 || self.frames_per_request == 0 {
            return bad("concurrency and frames_per_request must be >= 1");
        }
        if self.scenario == Scenario::BoundaryBurst
            && (self.burst_window.is_zero() || self.burst_window > self.burst_period)
        {
            return bad("burst window must be > 0 and <= the burst period");
        }
        let r = &self.ramp;
        if self.scenario == Scenario::Ramp
            && (!positive(r.step_seconds)
                || r.max_steps == 0
                || !(r.step.is_finite() && r.step >= 0.0))
        {
            return bad("ramp needs step >= 0, step seconds > 0 and at least one step");
        }
        Ok(())
    }

    /// The timeline of a steady, burst or telematics run for a fleet of `devices` (for
    /// telematics, its vehicles).
    pub fn segments(&self, devices: usize) -> Vec<Segment> {
        let total = Duration::from_secs_f64(self.seconds);
        match self.scenario {
            Scenario::Telematics => vec![Segment {
                len: total,
                frames_per_sec: devices as f64,
            }],
            Scenario::Steady | Scenario::Ramp => vec![Segment {
                len: total,
                frames_per_sec: self.rate,
            }],
            Scenario::BoundaryBurst => {
                let burst = devices as f64 / self.burst_window.as_secs_f64();
                let mut out = Vec::new();
                let mut at = Duration::ZERO;
                while at < total {
                    let window = self.burst_window.min(total - at);
                    out.push(Segment {
                        len: window,
                        frames_per_sec: burst,
                    });
                    let rest = (self.burst_period - self.burst_window).min(total - at - window);
                    if !rest.is_zero() {
                        out.push(Segment {
                            len: rest,
                            frames_per_sec: self.rate,
                        });
                    }
                    at += window + rest;
                }
                out
            }
        }
    }

    fn ramp_rate(&self, step: usize) -> f64 {
        let inc = if self.ramp.step > 0.0 {
            self.ramp.step
        } else {
            self.rate
        };
        self.rate + inc * step as f64
    }
}

/// Ack latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl From<LatencySummary> for LatencyMs {
    fn from(l: LatencySummary) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(l.p50),
            p90: ms(l.p90),
            p99: ms(l.p99),
            p999: ms(l.p999),
            max: ms(l.max),
        }
    }
}

/// One ramp step or one second of a timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Point {
    /// Start, seconds from the start of the run (intended time).
    pub at_s: f64,
    pub seconds: f64,
    pub offered_frames_per_sec: f64,
    pub achieved_frames_per_sec: f64,
    pub achieved_readings_per_sec: f64,
    /// Requests scheduled, started, and dropped because the in-flight bound was reached.
    pub requests_scheduled: u64,
    pub requests_sent: u64,
    pub requests_late: u64,
    pub frames_sent: u64,
    pub frames_acked: u64,
    pub readings_acked: u64,
    pub ack_latency_ms: LatencyMs,
    /// Every code answered (each attempt), e.g. `{"0": 990, "8": 12}`.
    pub codes: BTreeMap<i32, u64>,
}

/// What an open-loop run did; written as `result.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenLoopReport {
    pub scenario: String,
    pub target: String,
    pub devices: usize,
    pub frames_per_request: usize,
    pub max_in_flight: usize,
    pub elapsed_s: f64,
    /// The whole run, as one point.
    pub total: Point,
    /// Final refusals (never 0, 8 or 14) and frames still retryable after their
    /// attempts: every frame sent ends acked, refused or abandoned.
    pub refused_by_code: BTreeMap<i32, u64>,
    pub abandoned: u64,
    pub retries: u64,
    pub failed_calls: u64,
    /// Ramp: one point per step, offered load increasing.
    pub steps: Vec<Point>,
    /// Why a ramp stopped.
    pub stop_reason: Option<String>,
    /// One point per second of intended time (each ramp step restarts at its own 0).
    pub series: Vec<Point>,
}

impl OpenLoopReport {
    /// A human summary.
    pub fn summary(&self) -> String {
        let t = &self.total;
        let l = &t.ack_latency_ms;
        let mut s = format!(
            "loadgen {} (open loop): offered {:.0} frames/s, achieved {:.0} frames/s, \
             {:.0} readings/s over {:.1} s\n\
             requests: {} scheduled, {} sent, {} late (dropped); frames: {} sent, {} acked, \
             {} refused, {} abandoned, {} retries\n\
             ack latency from intended send: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, \
             p99.9 {:.2} ms, max {:.2} ms\ncodes answered: {:?}",
            self.scenario,
            t.offered_frames_per_sec,
            t.achieved_frames_per_sec,
            t.achieved_readings_per_sec,
            self.elapsed_s,
            t.requests_scheduled,
            t.requests_sent,
            t.requests_late,
            t.frames_sent,
            t.frames_acked,
            self.refused_by_code.values().sum::<u64>(),
            self.abandoned,
            self.retries,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            t.codes,
        );
        for p in &self.steps {
            s.push_str(&format!(
                "\n  step: offered {:>9.0}/s achieved {:>9.0}/s  p50 {:>7.2} p99 {:>7.2} \
                 p99.9 {:>7.2} ms  late {:>5}  code 8: {}",
                p.offered_frames_per_sec,
                p.achieved_frames_per_sec,
                p.ack_latency_ms.p50,
                p.ack_latency_ms.p99,
                p.ack_latency_ms.p999,
                p.requests_late,
                p.codes.get(&RESOURCE_EXHAUSTED).copied().unwrap_or(0),
            ));
        }
        if let Some(r) = &self.stop_reason {
            s.push_str(&format!("\nramp stopped: {r}"));
        }
        s
    }

    /// Writes `result.json` and `result.svg` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let json = dir.join("result.json");
        std::fs::write(&json, serde_json::to_vec_pretty(self)?).map_err(io(&json))?;
        let svg = dir.join("result.svg");
        std::fs::write(&svg, super::svg::render(self)).map_err(io(&svg))?;
        Ok(())
    }
}

/// Counts for one point under construction.
#[derive(Debug)]
struct Bucket {
    point: Point,
    latencies: Latencies,
}

impl Bucket {
    fn new(at: Duration, len: Duration, offered: f64) -> Self {
        Self {
            point: Point {
                at_s: at.as_secs_f64(),
                seconds: len.as_secs_f64(),
                offered_frames_per_sec: offered,
                ..Point::default()
            },
            latencies: Latencies::new(),
        }
    }

    fn add(&mut self, frames: u64, latency: Duration, b: &BatchOutcome) {
        let p = &mut self.point;
        p.requests_sent += 1;
        p.frames_sent += frames;
        p.frames_acked += b.acked;
        p.readings_acked += b.readings + b.samples;
        for (code, n) in &b.codes {
            *p.codes.entry(*code).or_default() += n;
        }
        self.latencies
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    fn finish(mut self) -> Point {
        let p = &mut self.point;
        if p.seconds > 0.0 {
            p.achieved_frames_per_sec = p.frames_acked as f64 / p.seconds;
            p.achieved_readings_per_sec = p.readings_acked as f64 / p.seconds;
        }
        p.requests_scheduled = p.requests_sent + p.requests_late;
        p.ack_latency_ms = self.latencies.summary().into();
        self.point
    }
}

/// The run under way: the fleet, the client and the report so far.
struct Runner {
    cfg: OpenLoopConfig,
    policy: RetryPolicy,
    fleet: Fleet,
    client: IngestClient<Channel>,
    report: OpenLoopReport,
    total: Bucket,
    started: Instant,
    progress: LoadgenProgress,
}

/// Plays `cfg` open loop with the default retry policy.
pub async fn run_open_loop(
    cfg: OpenLoopConfig,
    shutdown: CancellationToken,
) -> Result<OpenLoopReport> {
    run_open_loop_with_policy(cfg, RetryPolicy::default(), shutdown).await
}

/// Plays `cfg` open loop; tests pass short backoffs.
pub async fn run_open_loop_with_policy(
    cfg: OpenLoopConfig,
    policy: RetryPolicy,
    shutdown: CancellationToken,
) -> Result<OpenLoopReport> {
    cfg.validate()?;
    let mut fleet = load_fleet(&cfg.secrets)?;
    if cfg.scenario == Scenario::Telematics {
        fleet = fleet.telematics_1hz();
        if fleet.is_empty() {
            return Err(Error::Config(format!(
                "loadgen: telematics plays vehicles and {} holds none",
                cfg.secrets.display()
            )));
        }
    }
    let client = IngestClient::new(connect(&cfg.target).await?);
    let report = OpenLoopReport {
        scenario: cfg.scenario.name().to_string(),
        target: cfg.target.clone(),
        devices: fleet.len(),
        frames_per_request: cfg.frames_per_request,
        max_in_flight: cfg.max_in_flight,
        ..OpenLoopReport::default()
    };
    tracing::info!(target = %cfg.target, scenario = %cfg.scenario, rate = cfg.rate,
        devices = fleet.len(), "open-loop loadgen starting");
    let mut r = Runner {
        policy,
        fleet,
        client,
        report,
        total: Bucket::new(Duration::ZERO, Duration::ZERO, 0.0),
        started: Instant::now(),
        progress: LoadgenProgress::default(),
        cfg,
    };
    let mut offered_frames = 0.0;
    if r.cfg.scenario == Scenario::Ramp {
        for step in 0..r.cfg.ramp.max_steps {
            if shutdown.is_cancelled() {
                break;
            }
            let rate = r.cfg.ramp_rate(step);
            let len = Duration::from_secs_f64(r.cfg.ramp.step_seconds);
            let seg = Segment {
                len,
                frames_per_sec: rate,
            };
            let mut points = r.play(vec![seg], &shutdown).await?;
            offered_frames += rate * len.as_secs_f64();
            let p = points.swap_remove(0);
            let reason = r.stop_reason(&p);
            r.report.steps.push(p);
            if reason.is_some() {
                r.report.stop_reason = reason;
                break;
            }
        }
        if r.report.stop_reason.is_none() {
            r.report.stop_reason = Some(if shutdown.is_cancelled() {
                "cancelled".to_string()
            } else {
                format!("{} steps without reaching a limit", r.report.steps.len())
            });
        }
    } else {
        let segments = r.cfg.segments(r.fleet.len());
        offered_frames = segments
            .iter()
            .map(|s| s.frames_per_sec * s.len.as_secs_f64())
            .sum();
        r.play(segments, &shutdown).await?;
    }
    let elapsed = r.started.elapsed();
    let mut total = std::mem::replace(&mut r.total, Bucket::new(Duration::ZERO, elapsed, 0.0));
    total.point.seconds = elapsed.as_secs_f64();
    total.point.offered_frames_per_sec = offered_frames / elapsed.as_secs_f64().max(1e-9);
    r.report.total = total.finish();
    r.report.elapsed_s = elapsed.as_secs_f64();
    r.publish(0);
    Ok(r.report)
}

impl Runner {
    /// Plays one timeline to its end (or cancellation) and drains it. Returns one point
    /// per segment and appends one per second to the report's series.
    async fn play(
        &mut self,
        segments: Vec<Segment>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Point>> {
        let mut schedule = Schedule::new(segments, self.cfg.frames_per_request);
        let mut per_segment: Vec<Bucket> = schedule
            .segments()
            .iter()
            .enumerate()
            .map(|(i, s)| Bucket::new(schedule.segment_start(i), s.len, s.frames_per_sec))
            .collect();
        let total = schedule.len();
        let windows = window_of(total.saturating_sub(Duration::from_nanos(1))) + 1;
        let mut series: Vec<Bucket> = (0..windows)
            .map(|i| {
                let at = WINDOW * i as u32;
                Bucket::new(at, WINDOW.min(total.saturating_sub(at)), 0.0)
            })
            .collect();
        for (i, s) in schedule.segments().iter().enumerate() {
            spread_offered(&mut series, schedule.segment_start(i), s);
        }
        let origin = Instant::now();
        let mut tasks: JoinSet<(Slot, u64, BatchOutcome)> = JoinSet::new();
        let mut last_late = 0u64;
        loop {
            while let Some(done) = tasks.try_join_next() {
                self.settle(done?, origin, &mut per_segment, &mut series);
            }
            let late: u64 = schedule.late().iter().sum();
            if late > last_late {
                let f = schedule.frames_per_request();
                self.progress.late += (late - last_late) * f;
                last_late = late;
            }
            self.publish(tasks.len());
            if shutdown.is_cancelled() {
                break;
            }
            match schedule.poll(origin.elapsed(), tasks.len(), self.cfg.max_in_flight) {
                Next::Done => break,
                Next::Wait(at) => {
                    tokio::select! {
                        done = tasks.join_next(), if !tasks.is_empty() => {
                            if let Some(done) = done {
                                self.settle(done?, origin, &mut per_segment, &mut series);
                            }
                        }
                        _ = tokio::time::sleep_until((origin + at).into()) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Next::Send(slot) => {
                    let now = now_ms();
                    let frames: Vec<SimFrame> = (0..self.cfg.frames_per_request)
                        .filter_map(|_| self.fleet.next_frame(now))
                        .collect();
                    let n = frames.len() as u64;
                    self.progress.frames_sent += n;
                    let call = send_batch(self.client.clone(), frames, self.policy.clone(), false);
                    tasks.spawn(async move { (slot, n, call.await) });
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            self.settle(done?, origin, &mut per_segment, &mut series);
            self.publish(tasks.len());
        }
        // a timeline ending in a pause lasts its whole length: rates are per run time
        tokio::select! {
            _ = tokio::time::sleep_until((origin + total).into()) => {}
            _ = shutdown.cancelled() => {}
        }
        for (i, b) in per_segment.iter_mut().enumerate() {
            b.point.requests_late = schedule.late()[i];
            self.total.point.requests_late += schedule.late()[i];
        }
        // lateness per second: spread each segment's late requests evenly over its windows
        for (i, s) in schedule.segments().iter().enumerate() {
            let start = schedule.segment_start(i);
            let first = window_of(start);
            let last = window_of((start + s.len).saturating_sub(Duration::from_nanos(1)));
            let late = schedule.late()[i];
            let n = (last + 1 - first) as u64;
            for (j, w) in series.iter_mut().enumerate().take(last + 1).skip(first) {
                w.point.requests_late += late / n + u64::from(((j - first) as u64) < late % n);
            }
        }
        let offset = self
            .report
            .series
            .last()
            .map_or(0.0, |p| p.at_s + p.seconds);
        self.report.series.extend(series.into_iter().map(|b| {
            let mut p = b.finish();
            p.at_s += offset;
            p
        }));
        Ok(per_segment.into_iter().map(Bucket::finish).collect())
    }

    fn settle(
        &mut self,
        (slot, frames, b): (Slot, u64, BatchOutcome),
        origin: Instant,
        per_segment: &mut [Bucket],
        series: &mut [Bucket],
    ) {
        let answered = b.first_answer.unwrap_or_else(Instant::now) - origin;
        let latency = latency_from_intended(slot.intended, answered);
        if let Some(seg) = per_segment.get_mut(slot.segment) {
            seg.add(frames, latency, &b);
        }
        if let Some(w) = series.get_mut(window_of(slot.intended)) {
            w.add(frames, latency, &b);
        }
        self.total.add(frames, latency, &b);
        for (code, n) in &b.refused {
            *self.report.refused_by_code.entry(*code).or_default() += n;
        }
        self.report.abandoned += b.abandoned;
        self.report.retries += b.retries;
        self.report.failed_calls += b.failed_calls;
        let p = &mut self.progress;
        p.frames_acked += b.acked;
        p.frames_refused += b.refused.values().sum::<u64>();
        p.abandoned += b.abandoned;
        p.retries += b.retries;
        p.readings_acked += b.readings + b.samples;
    }

    fn publish(&mut self, in_flight: usize) {
        if let Some(tx) = &self.cfg.progress {
            self.progress.requests_in_flight = in_flight;
            self.progress.elapsed = self.started.elapsed();
            tx.send_replace(self.progress.clone());
        }
    }

    fn stop_reason(&self, p: &Point) -> Option<String> {
        let ramp = &self.cfg.ramp;
        let answers: u64 = p.codes.values().sum();
        let refused = p.codes.get(&RESOURCE_EXHAUSTED).copied().unwrap_or(0);
        let offered = p.offered_frames_per_sec;
        if answers > 0 && refused as f64 > ramp.max_refused_fraction * answers as f64 {
            return Some(format!(
                "the edge refused {refused} of {answers} answers with code 8 at {offered:.0} frames/s"
            ));
        }
        let max_p99 = ramp.max_p99.as_secs_f64() * 1000.0;
        if p.ack_latency_ms.p99 > max_p99 {
            return Some(format!(
                "p99 {:.1} ms passed {max_p99:.1} ms at {offered:.0} frames/s",
                p.ack_latency_ms.p99
            ));
        }
        if p.requests_late as f64 > ramp.max_late_fraction * p.requests_scheduled.max(1) as f64 {
            return Some(format!(
                "{} of {} requests could not start (in-flight bound {}) at {offered:.0} frames/s",
                p.requests_late, p.requests_scheduled, self.cfg.max_in_flight
            ));
        }
        None
    }
}

fn window_of(t: Duration) -> usize {
    (t.as_nanos() / WINDOW.as_nanos()) as usize
}

/// Adds segment `s` (starting at `start`) to the offered rate of the windows it covers,
/// weighted by overlap.
fn spread_offered(series: &mut [Bucket], start: Duration, s: &Segment) {
    let end = start + s.len;
    for (i, w) in series.iter_mut().enumerate() {
        let (ws, we) = (WINDOW * i as u32, WINDOW * (i as u32 + 1));
        let overlap = end.min(we).saturating_sub(start.max(ws));
        w.point.offered_frames_per_sec +=
            s.frames_per_sec * overlap.as_secs_f64() / WINDOW.as_secs_f64();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_segments_cover_the_run_with_every_device_once_per_window() {
        let cfg = OpenLoopConfig {
            scenario: Scenario::BoundaryBurst,
            rate: 10.0,
            seconds: 25.0,
            burst_period: Duration::from_secs(10),
            burst_window: Duration::from_secs(2),
            ..OpenLoopConfig::new("http://x", "k")
        };
        cfg.validate().unwrap();
        let segs = cfg.segments(400);
        let lens: Vec<u64> = segs.iter().map(|s| s.len.as_secs()).collect();
        assert_eq!(lens, [2, 8, 2, 8, 2, 3]);
        assert_eq!(segs[0].frames_per_sec, 200.0);
        assert_eq!(segs[1].frames_per_sec, 10.0);
    }

    #[test]
    fn telematics_offers_one_frame_a_second_per_vehicle_without_a_rate() {
        let cfg = OpenLoopConfig {
            scenario: Scenario::Telematics,
            rate: 0.0,
            seconds: 3.0,
            ..OpenLoopConfig::new("http://x", "k")
        };
        cfg.validate().unwrap();
        assert_eq!(
            cfg.segments(7),
            [Segment {
                len: Duration::from_secs(3),
                frames_per_sec: 7.0
            }]
        );
        assert_eq!("telematics".parse::<Scenario>(), Ok(Scenario::Telematics));
    }

    #[test]
    fn ramp_rates_and_bad_configs() {
        let mut cfg = OpenLoopConfig {
            scenario: Scenario::Ramp,
            rate: 100.0,
            ..OpenLoopConfig::new("http://x", "k")
        };
        assert_eq!(cfg.ramp_rate(2), 300.0);
        cfg.ramp.step = 50.0;
        assert_eq!(cfg.ramp_rate(2), 200.0);
        cfg.validate().unwrap();
        for bad in [
            OpenLoopConfig {
                rate: 0.0,
                ..OpenLoopConfig::new("http://x", "k")
            },
            OpenLoopConfig {
                seconds: f64::INFINITY,
                ..OpenLoopConfig::new("http://x", "k")
            },
            OpenLoopConfig {
                scenario: Scenario::BoundaryBurst,
                burst_window: Duration::from_secs(20),
                ..OpenLoopConfig::new("http://x", "k")
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(
            "boundary-burst".parse::<Scenario>(),
            Ok(Scenario::BoundaryBurst)
        );
        assert!("nope".parse::<Scenario>().is_err());
    }
}
