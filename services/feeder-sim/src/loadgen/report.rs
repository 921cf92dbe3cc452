//! What a load generator run did: every frame it sent ends in exactly one of acked,
//! refused (with its final code) or abandoned (retries exhausted), and the report adds up.

use std::collections::BTreeMap;
use std::time::Duration;

use feeder_core::AckCode;
use hdrhistogram::Histogram;

/// A frame the receiver acknowledged (code 0), recorded when `record_acked` is set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AckedFrame {
    pub device_id: String,
    pub seq: u64,
    pub readings: usize,
    pub samples: usize,
    pub events: usize,
}

/// Request latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Live counters for a progress display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadgenProgress {
    pub frames_sent: u64,
    pub frames_acked: u64,
    pub frames_refused: u64,
    pub abandoned: u64,
    pub retries: u64,
    pub readings_acked: u64,
    pub requests_in_flight: usize,
    /// Open loop only: scheduled frames that could not start (in-flight bound reached).
    pub late: u64,
    pub elapsed: Duration,
}

/// The outcome of a run.
///
/// `frames_sent == frames_acked + sum(refused_by_code) + abandoned` once `run` returns.
#[derive(Debug, Clone, Default)]
pub struct LoadgenReport {
    /// Distinct frames generated and sent (a retried frame counts once).
    pub frames_sent: u64,
    pub frames_acked: u64,
    /// Final refusals by ack code (never 0, 8 or 14).
    pub refused_by_code: BTreeMap<i32, u64>,
    /// Frames still retryable when their attempts ran out.
    pub abandoned: u64,
    /// Frame resends (a frame resent three times counts three).
    pub retries: u64,
    /// `Push` calls that failed as a whole (transport error or gRPC status).
    pub failed_calls: u64,
    pub readings_acked: u64,
    pub samples_acked: u64,
    pub events_acked: u64,
    pub elapsed: Duration,
    /// Latency of each `Push` call, retries included.
    pub latency_us: LatencySummary,
    /// Filled only when `record_acked` is set.
    pub acked: Vec<AckedFrame>,
}

impl LoadgenReport {
    pub fn frames_refused(&self) -> u64 {
        self.refused_by_code.values().sum()
    }

    pub fn frames_per_sec(&self) -> f64 {
        per_sec(self.frames_acked, self.elapsed)
    }

    pub fn readings_per_sec(&self) -> f64 {
        per_sec(self.readings_acked + self.samples_acked, self.elapsed)
    }

    /// A human summary on stdout.
    pub fn print(&self) {
        println!("{}", self.summary());
    }

    /// The text [`print`](Self::print) writes.
    pub fn summary(&self) -> String {
        let refused = if self.refused_by_code.is_empty() {
            "0".to_string()
        } else {
            let by_code: Vec<String> = self
                .refused_by_code
                .iter()
                .map(|(code, n)| {
                    let name = AckCode::from_i32(*code).map_or("other", AckCode::name);
                    format!("{n} {name} ({code})")
                })
                .collect();
            format!("{} [{}]", self.frames_refused(), by_code.join(", "))
        };
        let l = &self.latency_us;
        format!(
            "loadgen: {} frames sent in {:.1} s: {} acked ({:.0} frames/s, {:.0} rows/s), \
             refused {}, abandoned {}\n\
             rows acked: {} readings, {} samples, {} events\n\
             retries: {} frame resends, {} failed calls\n\
             latency per call: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.frames_sent,
            self.elapsed.as_secs_f64(),
            self.frames_acked,
            self.frames_per_sec(),
            self.readings_per_sec(),
            refused,
            self.abandoned,
            self.readings_acked,
            self.samples_acked,
            self.events_acked,
            self.retries,
            self.failed_calls,
            l.p50 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.max as f64 / 1000.0,
        )
    }
}

fn per_sec(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

/// Call latencies, microseconds, 1 µs to 10 min at 3 significant digits.
/// Prints `progress` to stderr once a second until `stop`: one line per tick, so it
/// reads the same in a terminal and in a log.
pub async fn print_progress(
    mut rx: tokio::sync::watch::Receiver<LoadgenProgress>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (0u64, Duration::ZERO);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let p = rx.borrow_and_update().clone();
        let dt = p.elapsed.saturating_sub(last.1).as_secs_f64();
        let rate = if dt > 0.0 {
            p.frames_acked.saturating_sub(last.0) as f64 / dt
        } else {
            0.0
        };
        last = (p.frames_acked, p.elapsed);
        eprintln!(
            "  {:>6.1} s  sent {:>9}  acked {:>9} ({:>7.0}/s)  refused {:>5}  late {:>6}  retries {:>6}  in flight {:>4}",
            p.elapsed.as_secs_f64(),
            p.frames_sent,
            p.frames_acked,
            rate,
            p.frames_refused,
            p.late,
            p.retries,
            p.requests_in_flight,
        );
    }
}

#[derive(Debug)]
pub(crate) struct Latencies(Option<Histogram<u64>>);

impl Latencies {
    pub(crate) fn new() -> Self {
        // the bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
        // sigfig <= 5); `None` would only drop latency figures, never fail a run
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).ok())
    }

    pub(crate) fn record(&mut self, us: u64) {
        if let Some(h) = &mut self.0 {
            h.saturating_record(us.max(1));
        }
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        match &self.0 {
            Some(h) if !h.is_empty() => LatencySummary {
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
            },
            _ => LatencySummary::default(),
        }
    }
}
