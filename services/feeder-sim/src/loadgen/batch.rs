//! One `Push` of up to `frames_per_request` frames, with the device contract's retry
//! rule: codes 8 and 14 (and whole-call failures) mean "resend the same frame, same seq,
//! same signature, after backing off"; every other code is final for that frame.
//!
//! Retries stay inside the request's task, which holds one of the bounded in-flight
//! slots while it backs off: a receiver pushing back slows the generator down instead of
//! piling up work.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use feeder_core::AckCode;
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_proto::v1::{FrameAck, PushRequest};
use rand::Rng;
use tonic::transport::Channel;

use super::report::AckedFrame;
use crate::fleet::SimFrame;

/// Bounded exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per frame, the first send included; a frame still retryable after the
    /// last one is abandoned.
    pub max_attempts: u32,
    /// Backoff before the first resend; doubles per attempt.
    pub base: Duration,
    /// Cap of a single backoff.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, 20 ms doubling to 1 s: at most about 4.5 s of backoff per frame.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base: Duration::from_millis(20),
            max: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): "equal jitter", half
    /// fixed and half random, so retries of many requests spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        exp / 2 + exp.mul_f64(rand::rng().random::<f64>() / 2.0)
    }
}

/// What happened to one batch's frames.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    pub acked: u64,
    pub readings: u64,
    pub samples: u64,
    pub events: u64,
    pub refused: BTreeMap<i32, u64>,
    pub abandoned: u64,
    pub retries: u64,
    pub failed_calls: u64,
    pub latencies_us: Vec<u64>,
    pub acked_frames: Vec<AckedFrame>,
    /// Every code answered, per frame and attempt (0, 8 and 14 included): how often the
    /// edge pushed back, which final refusals alone do not show.
    pub codes: BTreeMap<i32, u64>,
    /// When the first attempt was answered (or failed): the device's ack time.
    pub first_answer: Option<Instant>,
}

/// Sends `frames` until each is acked, refused or out of attempts.
pub(crate) async fn send_batch(
    mut client: IngestClient<Channel>,
    frames: Vec<SimFrame>,
    policy: RetryPolicy,
    record_acked: bool,
) -> BatchOutcome {
    let mut out = BatchOutcome::default();
    let mut pending = frames;
    let mut attempt = 0u32;
    while !pending.is_empty() {
        attempt += 1;
        let request = PushRequest {
            frames: pending.iter().map(|f| f.frame.clone()).collect(),
        };
        let started = Instant::now();
        let result = client.push(request).await;
        out.first_answer.get_or_insert_with(Instant::now);
        out.latencies_us
            .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        let retry = match result {
            Ok(response) => settle(pending, response.into_inner().acks, &mut out, record_acked),
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "push failed, retrying the whole call");
                out.failed_calls += 1;
                pending
            }
        };
        if retry.is_empty() {
            break;
        }
        if attempt >= policy.max_attempts {
            tracing::warn!(
                frames = retry.len(),
                attempts = attempt,
                "giving up on frames"
            );
            out.abandoned += retry.len() as u64;
            break;
        }
        out.retries += retry.len() as u64;
        tokio::time::sleep(policy.backoff(attempt)).await;
        pending = retry;
    }
    out
}

/// Applies acks to the frames they answer; returns the frames to resend.
fn settle(
    pending: Vec<SimFrame>,
    acks: Vec<FrameAck>,
    out: &mut BatchOutcome,
    record_acked: bool,
) -> Vec<SimFrame> {
    if acks.len() != pending.len() {
        // the receiver broke acks[i] <-> frames[i]; resending is safe (an acked frame is
        // acked again and stored once), guessing is not
        tracing::warn!(
            frames = pending.len(),
            acks = acks.len(),
            "ack count mismatch, resending the call"
        );
        out.failed_calls += 1;
        return pending;
    }
    let mut retry = Vec::new();
    for (f, ack) in pending.into_iter().zip(acks) {
        if ack.device_id != f.frame.device_id || ack.seq != f.frame.seq {
            tracing::warn!(device_id = %f.frame.device_id, seq = f.frame.seq, "ack answers another frame, resending");
            retry.push(f);
            continue;
        }
        *out.codes.entry(ack.code).or_default() += 1;
        match ack.code {
            0 => {
                out.acked += 1;
                out.readings += f.readings as u64;
                out.samples += f.samples as u64;
                out.events += f.events as u64;
                if record_acked {
                    out.acked_frames.push(AckedFrame {
                        device_id: f.frame.device_id,
                        seq: f.frame.seq,
                        readings: f.readings,
                        samples: f.samples,
                        events: f.events,
                    });
                }
            }
            code if AckCode::from_i32(code).is_some_and(AckCode::is_retryable) => retry.push(f),
            code => *out.refused.entry(code).or_default() += 1,
        }
    }
    retry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let p = RetryPolicy::default();
        for attempt in 1..=40 {
            let exp = p.base.saturating_mul(1 << (attempt - 1).min(20)).min(p.max);
            let b = p.backoff(attempt);
            assert!(b >= exp / 2 && b <= exp, "attempt {attempt}: {b:?}");
        }
        assert!(p.backoff(40) <= p.max);
    }
}
