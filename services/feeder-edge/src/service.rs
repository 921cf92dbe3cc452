//! The `feeder.v1.Ingest` service: one request at a time becomes one batch through
//! admission, verification and the producer; acks come back in request order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use feeder_core::AckCode;
use feeder_proto::v1::{FrameAck, PushResponse};
use futures::Stream;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::EdgeConfig;
use crate::admission::{Admitted, Candidate, Refusal, ack, admit, frame_too_large};
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

fn rate_limited() -> Refusal {
    Refusal::new(
        AckCode::ResourceExhausted,
        "rate_limited",
        "device over its rate limit, retry later",
    )
}

fn peer_over_budget() -> Refusal {
    Refusal::new(
        AckCode::ResourceExhausted,
        "peer_failed_verifications",
        "too many frames from this peer failed verification; retry later",
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

/// Candidates still in the running, with their index in the request.
struct Pending {
    cands: Vec<Candidate>,
    index: Vec<usize>,
}

impl Pending {
    /// Keeps the candidates `refuse` has no refusal for; answers the others.
    fn sift(
        self,
        acks: &mut [Option<FrameAck>],
        refusals: &mut Vec<(AckCode, &'static str)>,
        mut refuse: impl FnMut(&Candidate) -> Option<Refusal>,
    ) -> Self {
        let mut kept = Self {
            cands: Vec::with_capacity(self.cands.len()),
            index: Vec::with_capacity(self.cands.len()),
        };
        for (c, i) in self.cands.into_iter().zip(self.index) {
            match refuse(&c) {
                None => {
                    kept.cands.push(c);
                    kept.index.push(i);
                }
                Some(r) => {
                    refusals.push((r.code, r.reason));
                    acks[i] = Some(ack(&c.frame.device_id, c.frame.seq, Some(&r)));
                }
            }
        }
        kept
    }
}

impl IngestService {
    /// Processes one request: every frame gets exactly one ack, in order.
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
        let registry = self.registry.snapshot();

        // 1. cheap checks
        let mut acks: Vec<Option<FrameAck>> = vec![None; frames.len()];
        let mut refusals: Vec<(AckCode, &'static str)> = Vec::new();
        let mut pending = Pending {
            cands: Vec::new(),
            index: Vec::new(),
        };
        for (i, wire) in frames.iter().enumerate() {
            let admitted = match wire {
                WireFrame::Bytes(raw) => admit(raw, &registry, &self.cfg),
                WireFrame::Oversized => frame_too_large(&self.cfg),
            };
            match admitted {
                Admitted::Candidate(c) => {
                    pending.cands.push(*c);
                    pending.index.push(i);
                }
                Admitted::Refused(a, r) => {
                    refusals.push((r.code, r.reason));
                    acks[i] = Some(a);
                }
            }
        }
        drop(registry);

        // 1a. device identity (mutual TLS): the client certificate must name the device
        if self
            .cfg
            .tls
            .as_ref()
            .is_some_and(|t| t.require_device_identity)
        {
            let identity = DeviceIdentity::new(&caller.certs);
            pending = pending.sift(&mut acks, &mut refusals, |c| {
                (!identity.permits(&c.frame.device_id)).then(|| {
                    Refusal::new(
                        AckCode::PermissionDenied,
                        "identity_mismatch",
                        "client certificate does not name this device",
                    )
                })
            });
        }

        // 1b. a peer cooling off after too many failed verifications: refused before it
        // can spend any device's tokens
        let now = Instant::now();
        if self.budget.is_blocked(caller.remote, now) {
            pending = pending.sift(&mut acks, &mut refusals, |_| Some(peer_over_budget()));
        }

        // 1c. rate limit: a token is taken before verification, so verifications per
        // device id are bounded by its rate, forged frames included (docs/edge.md)
        pending = pending.sift(&mut acks, &mut refusals, |c| {
            match self.limiter.take(&c.frame.device_id, now) {
                Ok(()) => None,
                Err(Limited::OverRate) => Some(rate_limited()),
                Err(Limited::TableFull) => Some(Refusal::new(
                    AckCode::ResourceExhausted,
                    "rate_table_full",
                    "edge is busy, retry later",
                )),
            }
        });
        let Pending {
            cands,
            index: cand_index,
        } = pending;

        // 1d. the bound on frames in flight: all of this request's frames or none
        let permits = if cands.is_empty() {
            None
        } else {
            match self
                .in_flight
                .clone()
                .try_acquire_many_owned(cands.len() as u32)
            {
                Ok(p) => Some(p),
                Err(_) => {
                    let r = Refusal::new(
                        AckCode::ResourceExhausted,
                        "edge_busy",
                        "edge is busy, retry later",
                    );
                    for (c, &i) in cands.iter().zip(cand_index.iter()) {
                        refusals.push((r.code, r.reason));
                        acks[i] = Some(ack(&c.frame.device_id, c.frame.seq, Some(&r)));
                    }
                    return Ok(self.finish(acks, refusals, 0, started));
                }
            }
        };

        // 2. signatures, off the runtime
        let verify_started = Instant::now();
        let n_cands = cands.len();
        let (cands, results) = self.verify_within_budget(cands, caller.remote).await;
        if n_cands > 0 {
            metrics::histogram!("feeder_edge_verify_seconds")
                .record(verify_started.elapsed().as_secs_f64());
        }

        // 3. produce the verified, then wait for the broker
        let mut pending = Vec::with_capacity(cands.len());
        for (ci, ((c, res), &i)) in cands
            .iter()
            .zip(results.iter())
            .zip(cand_index.iter())
            .enumerate()
        {
            let refusal = match res {
                Ok(()) => {
                    let rec = self.cfg.edge_proof.raw_frame(
                        c.raw.clone(),
                        received_at_ms,
                        &self.cfg.edge_id,
                    );
                    match self.producer.enqueue(&c.frame.device_id, &rec) {
                        Ok(fut) => {
                            pending.push((i, ci, fut));
                            continue;
                        }
                        Err(r) => r,
                    }
                }
                Err(r) => r.clone(),
            };
            refusals.push((refusal.code, refusal.reason));
            acks[i] = Some(ack(&c.frame.device_id, c.frame.seq, Some(&refusal)));
        }
        let mut accepted = 0u64;
        let ack_started = Instant::now();
        let waited = !pending.is_empty();
        for (i, ci, fut) in pending {
            let c = &cands[ci];
            let outcome = self.producer.wait(fut).await;
            if let Err(r) = &outcome {
                refusals.push((r.code, r.reason));
            } else {
                accepted += 1;
            }
            acks[i] = Some(ack(&c.frame.device_id, c.frame.seq, outcome.as_ref().err()));
        }
        if waited {
            // per request: from the first enqueue to the last broker ack
            metrics::histogram!("feeder_edge_ack_latency_seconds")
                .record(ack_started.elapsed().as_secs_f64());
        }
        drop(permits);
        Ok(self.finish(acks, refusals, accepted, started))
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

    /// Emits the request's metrics and fills any unanswered slot (a bug) retryably.
    fn finish(
        &self,
        acks: Vec<Option<FrameAck>>,
        refusals: Vec<(AckCode, &'static str)>,
        accepted: u64,
        started: Instant,
    ) -> PushResponse {
        // metrics, per request; both labels are bounded sets
        metrics::counter!("feeder_edge_frames_accepted_total").increment(accepted);
        let mut counts: HashMap<(AckCode, &'static str), u64> = HashMap::new();
        for r in refusals {
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

        // Every slot is filled above; a missing one would be a bug, answered retryably.
        let acks = acks
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    let r = Refusal::new(AckCode::Unavailable, "internal", "retry");
                    ack("", 0, Some(&r))
                })
            })
            .collect();
        PushResponse { acks }
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
