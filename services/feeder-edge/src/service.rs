//! The `feeder.v1.Ingest` service: one request at a time becomes one batch through
//! admission, verification and the producer; acks come back in request order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use feeder_core::AckCode;
use feeder_proto::v1::PushResponse;
use futures::Stream;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::EdgeConfig;
use crate::admission::{Admitted, Candidate, Refusal, admit, frame_too_large};
use crate::answers::{Answers, Pending};
use crate::call::CallRefusal;
use crate::decode::{PushFrames, WireFrame};
use crate::peer_budget::{Grant, PeerBudget};
use crate::produce::RawProducer;
use crate::ratelimit::{Limited, RateLimiter};
use crate::shared_registry::SharedRegistry;
use crate::tls::{DeviceIdentity, PeerCerts};
use crate::verify::verify_off_runtime;

pub struct IngestService {
    pub(crate) registry: SharedRegistry,
    pub(crate) producer: Arc<RawProducer>,
    pub(crate) cfg: Arc<EdgeConfig>,
    /// One permit per frame between admission and its ack (`max_frames_in_flight`).
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) budget: Arc<PeerBudget>,
    /// Woken whenever a call settles its budget reservation, so a call of the same peer
    /// that found the budget held waits for that instead of polling.
    pub(crate) settled: Arc<tokio::sync::Notify>,
}

/// Who sent a call: its client certificate chain under mutual TLS (for the identity
/// rule) and its address (for the failure budget).
#[derive(Clone, Default)]
pub struct Caller {
    pub certs: PeerCerts,
    pub remote: Option<SocketAddr>,
}

impl Caller {
    fn of<T>(request: &Request<T>) -> Self {
        Self {
            certs: request.peer_certs(),
            remote: request.remote_addr(),
        }
    }
}

// The refusals of the call-level checks: code, metric reason, message.

fn identity_mismatch() -> Refusal {
    Refusal::new(
        AckCode::PermissionDenied,
        "identity_mismatch",
        "client certificate does not name this device",
    )
}

fn peer_over_budget() -> Refusal {
    Refusal::new(
        AckCode::ResourceExhausted,
        "peer_failed_verifications",
        "too many frames from this peer failed verification; retry later",
    )
}

fn over_rate(limited: Limited) -> Refusal {
    match limited {
        Limited::OverRate => Refusal::new(
            AckCode::ResourceExhausted,
            "rate_limited",
            "device over its rate limit, retry later",
        ),
        Limited::TableFull => Refusal::new(
            AckCode::ResourceExhausted,
            "rate_table_full",
            "edge is busy, retry later",
        ),
    }
}

fn edge_busy() -> Refusal {
    Refusal::new(
        AckCode::ResourceExhausted,
        "edge_busy",
        "edge is busy, retry later",
    )
}

impl Clone for IngestService {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            producer: self.producer.clone(),
            cfg: self.cfg.clone(),
            in_flight: self.in_flight.clone(),
            limiter: self.limiter.clone(),
            budget: self.budget.clone(),
            settled: self.settled.clone(),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl IngestService {
    /// Processes one request: every frame gets exactly one ack, in order. Each check
    /// below refuses frames through [`Answers`] (ack, code and reason in one place) and
    /// passes the rest on.
    pub async fn handle(
        &self,
        frames: Vec<WireFrame>,
        caller: &Caller,
    ) -> Result<PushResponse, CallRefusal> {
        let started = Instant::now();
        if frames.is_empty() {
            return Err(CallRefusal::Empty);
        }
        // The decoder stopped at the limit already; this holds for any other caller.
        if frames.len() > self.cfg.max_frames_per_request {
            return Err(CallRefusal::TooManyFrames {
                limit: self.cfg.max_frames_per_request,
            });
        }
        let received_at_ms = now_ms();
        let mut answers = Answers::new(frames.len());

        // 1. cheap checks
        let mut pending = self.admit(&frames, &mut answers);

        // 1a. device identity (mutual TLS): the client certificate must name the device
        if self
            .cfg
            .tls
            .as_ref()
            .is_some_and(|t| t.require_device_identity)
        {
            let identity = DeviceIdentity::new(&caller.certs);
            pending = pending.sift(&mut answers, |c| {
                (!identity.permits(&c.frame.device_id)).then(identity_mismatch)
            });
        }

        // 1b. a peer cooling off after too many failed verifications: refused before it
        // can spend any device's tokens
        let now = Instant::now();
        if self.budget.is_blocked(caller.remote, now) {
            pending = pending.sift(&mut answers, |_| Some(peer_over_budget()));
        }

        // 1c. rate limit: a token is taken before verification, so verifications per
        // device id are bounded by its rate, forged frames included (docs/edge.md)
        pending = pending.sift(&mut answers, |c| {
            self.limiter
                .take(&c.frame.device_id, now)
                .err()
                .map(over_rate)
        });

        // 1d. the bound on frames in flight: all of this request's frames or none
        let permits = if pending.is_empty() {
            None
        } else {
            match self
                .in_flight
                .clone()
                .try_acquire_many_owned(pending.cands.len() as u32)
            {
                Ok(p) => Some(p),
                Err(_) => {
                    pending.sift(&mut answers, |_| Some(edge_busy()));
                    return Ok(self.finish(answers, started));
                }
            }
        };
        let Pending {
            cands,
            index: cand_index,
        } = pending;

        // 2. signatures, off the runtime
        let verify_started = Instant::now();
        let n_cands = cands.len();
        let (cands, results) = self.verify_within_budget(cands, caller.remote).await;
        if n_cands > 0 {
            metrics::histogram!("feeder_edge_verify_seconds")
                .record(verify_started.elapsed().as_secs_f64());
        }

        // 3. produce the verified, then wait for the broker
        self.produce(&cands, &results, &cand_index, received_at_ms, &mut answers)
            .await;
        drop(permits);
        Ok(self.finish(answers, started))
    }

    /// Produces the verified candidates (one raw record each, with the edge's proof) and
    /// answers each when the broker acked it or refused; the refused by verification are
    /// answered with their refusal.
    async fn produce(
        &self,
        cands: &[Candidate],
        results: &[Result<(), Refusal>],
        index: &[usize],
        received_at_ms: i64,
        answers: &mut Answers,
    ) {
        let mut produced = Vec::with_capacity(cands.len());
        for (ci, ((c, res), &i)) in cands.iter().zip(results).zip(index).enumerate() {
            let enqueued = res.clone().and_then(|()| {
                let rec =
                    self.cfg
                        .edge_proof
                        .raw_frame(c.raw.clone(), received_at_ms, &self.cfg.edge_id);
                self.producer.enqueue(&c.frame.device_id, &rec)
            });
            match enqueued {
                Ok(fut) => produced.push((i, ci, fut)),
                Err(r) => answers.refuse(i, &c.frame, &r),
            }
        }
        if produced.is_empty() {
            return;
        }
        let ack_started = Instant::now();
        for (i, ci, fut) in produced {
            let outcome = self.producer.wait(fut).await;
            answers.settle(i, &cands[ci].frame, outcome.as_ref().err());
        }
        // per request: from the first enqueue to the last broker ack
        metrics::histogram!("feeder_edge_ack_latency_seconds")
            .record(ack_started.elapsed().as_secs_f64());
    }

    /// Admission of every frame ([`crate::admission`]): the refused are answered, the
    /// others are the candidates for the checks that follow.
    fn admit(&self, frames: &[WireFrame], answers: &mut Answers) -> Pending {
        let registry = self.registry.snapshot();
        let mut pending = Pending::default();
        for (i, wire) in frames.iter().enumerate() {
            let admitted = match wire {
                WireFrame::Bytes(raw) => admit(raw, &registry, &self.cfg),
                WireFrame::Oversized => frame_too_large(&self.cfg),
            };
            match admitted {
                Admitted::Candidate(c) => pending.push(*c, i),
                Admitted::Refused(a, r) => answers.answer(i, a, Some(&r)),
            }
        }
        pending
    }

    /// Verifies the candidates, never more at a time than the caller may still fail
    /// ([`PeerBudget`]); once its budget is spent, the rest are refused unverified (8).
    /// Results are in the candidates' order. Counts `feeder_edge_verifications_total`.
    async fn verify_within_budget(
        &self,
        cands: Vec<Candidate>,
        remote: Option<SocketAddr>,
    ) -> (Vec<Candidate>, Vec<Result<(), Refusal>>) {
        let n = cands.len();
        let (mut done, mut results) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut rest = cands;
        // Another call of the same peer holds the remaining budget only while it
        // verifies (milliseconds); waiting longer than the ack timeout means refusing.
        let give_up = Instant::now() + self.cfg.ack_timeout;
        while !rest.is_empty() {
            let want = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            // registered before asking, so a settle between the answer and the wait
            // still wakes this call
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let granted = match self.budget.reserve(remote, want, Instant::now()) {
                Grant::Verify(g) => g,
                Grant::Busy if Instant::now() < give_up => {
                    let _ = tokio::time::timeout_at(give_up.into(), settled).await;
                    continue;
                }
                Grant::Blocked | Grant::Busy => break,
            };
            let tail = rest.split_off((granted as usize).min(rest.len()));
            let round = std::mem::replace(&mut rest, tail);
            let (round, res) = verify_off_runtime(round).await;
            let failed = res.iter().filter(|r| r.is_err()).count() as u64;
            let ok = res.len() as u64 - failed;
            self.budget.settle(
                remote,
                granted,
                u32::try_from(failed).unwrap_or(u32::MAX),
                Instant::now(),
            );
            self.settled.notify_waiters();
            metrics::counter!("feeder_edge_verifications_total", "result" => "ok").increment(ok);
            metrics::counter!("feeder_edge_verifications_total", "result" => "failed")
                .increment(failed);
            if round.is_empty() {
                // the blocking pool is shutting down: the frames left unanswered get 14
                return (done, results);
            }
            done.extend(round);
            results.extend(res);
        }
        let refused = rest.len();
        done.extend(rest);
        results.extend(std::iter::repeat_n(Err(peer_over_budget()), refused));
        (done, results)
    }

    /// Emits the request's metrics and answers it.
    fn finish(&self, answers: Answers, started: Instant) -> PushResponse {
        // metrics, per request; both labels are bounded sets
        let (accepted, refusals) = answers.counts();
        metrics::counter!("feeder_edge_frames_accepted_total").increment(accepted);
        let mut counts: HashMap<(AckCode, &'static str), u64> = HashMap::new();
        for &r in refusals {
            *counts.entry(r).or_default() += 1;
        }
        for ((code, reason), n) in counts {
            metrics::counter!(
                "feeder_edge_frames_refused_total",
                "code" => code.name(),
                "reason" => reason
            )
            .increment(n);
        }
        metrics::histogram!("feeder_edge_request_seconds").record(started.elapsed().as_secs_f64());
        answers.into_response()
    }
}

pub type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<PushResponse, Status>> + Send + 'static>>;

impl IngestService {
    pub async fn push(
        &self,
        request: Request<PushFrames>,
    ) -> Result<Response<PushResponse>, Status> {
        let caller = Caller::of(&request);
        let resp = self
            .handle(request.into_inner().frames, &caller)
            .await
            .map_err(CallRefusal::into_status)?;
        Ok(Response::new(resp))
    }

    /// One response per request, in order. A stream that sends no request for
    /// `stream_idle_timeout` is ended (UNAVAILABLE), so an idle client holds no stream.
    pub async fn push_stream(
        &self,
        request: Request<Streaming<PushFrames>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let caller = Caller::of(&request);
        let mut inbound = request.into_inner();
        // The bounded channel paces a fast client.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let svc = self.clone();
        let idle = self.cfg.stream_idle_timeout;
        let limit = self.cfg.request_limit();
        tokio::spawn(async move {
            loop {
                let out = match tokio::time::timeout(idle, inbound.next()).await {
                    Err(_) => Err(CallRefusal::StreamIdle(idle).into_status()),
                    Ok(None) => break,
                    Ok(Some(Ok(req))) => svc
                        .handle(req.frames, &caller)
                        .await
                        .map_err(CallRefusal::into_status),
                    // tonic's own refusal of a message over the decode limit
                    Ok(Some(Err(s))) if s.code() == tonic::Code::OutOfRange => {
                        Err(CallRefusal::TooLarge { limit }.into_status())
                    }
                    Ok(Some(Err(status))) => Err(status),
                };
                let stop = out.is_err();
                if tx.send(out).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
