//! The `feeder.v1.Ingest` service: one request at a time becomes one batch through
//! admission, verification and the producer; acks come back in request order.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use feeder_core::AckCode;
use feeder_proto::raw::RawPushRequest;
use feeder_proto::raw::ingest_server::Ingest;
use feeder_proto::v1::{FrameAck, PushResponse};
use futures::Stream;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::{Admitted, Refusal, ack, admit};
use crate::produce::RawProducer;
use crate::ratelimit::{Limited, RateLimiter};
use crate::server::SharedRegistry;
use crate::tls::{DeviceIdentity, PeerCerts};
use crate::verify::verify_off_runtime;
use crate::{EdgeConfig, Error};

pub struct IngestService {
    pub(crate) registry: SharedRegistry,
    pub(crate) producer: Arc<RawProducer>,
    pub(crate) cfg: Arc<EdgeConfig>,
    /// One permit per frame between admission and its ack (`max_frames_in_flight`).
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) limiter: Arc<RateLimiter>,
}

fn rate_limited() -> Refusal {
    Refusal::new(
        AckCode::ResourceExhausted,
        "rate_limited",
        "device over its rate limit, retry later",
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
    /// Processes one request: every frame gets exactly one ack, in order.
    /// `peer` is the client's certificate chain under mutual TLS (for the identity rule).
    pub async fn handle(
        &self,
        frames: Vec<Bytes>,
        peer: &PeerCerts,
    ) -> Result<PushResponse, Error> {
        let started = Instant::now();
        if frames.is_empty() {
            return Err(Error::EmptyRequest);
        }
        if frames.len() > self.cfg.max_frames_per_request {
            metrics::counter!("feeder_edge_requests_refused_total", "reason" => "too_many_frames")
                .increment(1);
            return Err(Error::TooManyFrames {
                got: frames.len(),
                limit: self.cfg.max_frames_per_request,
            });
        }
        let received_at_ms = now_ms();
        let registry = self.registry.snapshot();

        // 1. cheap checks
        let mut acks: Vec<Option<FrameAck>> = vec![None; frames.len()];
        let mut refusals: Vec<(AckCode, &'static str)> = Vec::new();
        let mut cands = Vec::new();
        let mut cand_index = Vec::new();
        for (i, raw) in frames.iter().enumerate() {
            match admit(raw, &registry, &self.cfg) {
                Admitted::Candidate(c) => {
                    cands.push(*c);
                    cand_index.push(i);
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
            let identity = DeviceIdentity::new(peer);
            let (mut kept, mut kept_index) = (Vec::new(), Vec::new());
            for (c, i) in cands.into_iter().zip(cand_index) {
                if identity.permits(&c.frame.device_id) {
                    kept.push(c);
                    kept_index.push(i);
                } else {
                    let r = Refusal::new(
                        AckCode::PermissionDenied,
                        "identity_mismatch",
                        "client certificate does not name this device",
                    );
                    refusals.push((r.code, r.reason));
                    acks[i] = Some(ack(&c.frame.device_id, c.frame.seq, Some(&r)));
                }
            }
            (cands, cand_index) = (kept, kept_index);
        }

        // 1b. rate limit (takes nothing yet: forgeries must not spend a device's budget)
        let now = Instant::now();
        let allowed: Vec<bool> = {
            let mut per_device: HashMap<&str, u32> = HashMap::new();
            cands
                .iter()
                .map(|c| {
                    let used = per_device.entry(c.frame.device_id.as_str()).or_default();
                    let ok = self.limiter.check(&c.frame.device_id, *used + 1, now) > *used;
                    *used += u32::from(ok);
                    ok
                })
                .collect()
        };
        let mut kept = Vec::with_capacity(cands.len());
        let mut kept_index = Vec::with_capacity(cands.len());
        for ((c, i), ok) in cands.into_iter().zip(cand_index).zip(allowed) {
            if ok {
                kept.push(c);
                kept_index.push(i);
            } else {
                let r = rate_limited();
                refusals.push((r.code, r.reason));
                acks[i] = Some(ack(&c.frame.device_id, c.frame.seq, Some(&r)));
            }
        }
        let (cands, cand_index) = (kept, kept_index);

        // 1c. the bound on frames in flight: all of this request's frames or none
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
        let (cands, results) = verify_off_runtime(cands).await;
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
                Ok(()) => match self.limiter.take(&c.frame.device_id, Instant::now()) {
                    Err(Limited::OverRate) => rate_limited(),
                    Err(Limited::TableFull) => Refusal::new(
                        AckCode::ResourceExhausted,
                        "rate_table_full",
                        "edge is busy, retry later",
                    ),
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
                },
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

type ResponseStream = Pin<Box<dyn Stream<Item = Result<PushResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn push(
        &self,
        request: Request<RawPushRequest>,
    ) -> Result<Response<PushResponse>, Status> {
        let peer = request.peer_certs();
        let resp = self.handle(request.into_inner().frames, &peer).await?;
        Ok(Response::new(resp))
    }

    type PushStreamStream = ResponseStream;

    async fn push_stream(
        &self,
        request: Request<Streaming<RawPushRequest>>,
    ) -> Result<Response<Self::PushStreamStream>, Status> {
        let peer = request.peer_certs();
        let mut inbound = request.into_inner();
        // One response per request, in order; the bounded channel paces a fast client.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let svc = self.clone();
        tokio::spawn(async move {
            while let Some(req) = inbound.next().await {
                let out = match req {
                    Ok(req) => svc.handle(req.frames, &peer).await.map_err(Status::from),
                    Err(status) => Err(status),
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
