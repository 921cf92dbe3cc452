//! The `feeder.v1.Ingest` service: one request at a time becomes one batch through
//! admission, verification and the producer; acks come back in request order.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use feeder_core::AckCode;
use feeder_proto::pipeline::RawFrame;
use feeder_proto::raw::RawPushRequest;
use feeder_proto::raw::ingest_server::Ingest;
use feeder_proto::v1::{FrameAck, PushResponse};
use futures::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::{Admitted, Refusal, ack, admit};
use crate::produce::RawProducer;
use crate::server::SharedRegistry;
use crate::verify::verify_off_runtime;
use crate::{EdgeConfig, Error};

pub struct IngestService {
    pub(crate) registry: SharedRegistry,
    pub(crate) producer: Arc<RawProducer>,
    pub(crate) cfg: Arc<EdgeConfig>,
}

impl Clone for IngestService {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            producer: self.producer.clone(),
            cfg: self.cfg.clone(),
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
    pub async fn handle(&self, frames: Vec<Bytes>) -> Result<PushResponse, Error> {
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
        let mut refusals: Vec<&'static str> = Vec::new();
        let mut cands = Vec::new();
        let mut cand_index = Vec::new();
        for (i, raw) in frames.iter().enumerate() {
            match admit(raw, &registry, &self.cfg) {
                Admitted::Candidate(c) => {
                    cands.push(*c);
                    cand_index.push(i);
                }
                Admitted::Refused(a, r) => {
                    refusals.push(r.reason);
                    acks[i] = Some(a);
                }
            }
        }
        drop(registry);

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
                Ok(()) => {
                    let rec = RawFrame {
                        signed_frame: c.raw.clone(),
                        received_at_ms,
                        edge_id: self.cfg.edge_id.clone(),
                    };
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
            refusals.push(refusal.reason);
            acks[i] = Some(ack(&c.frame.device_id, c.frame.seq, Some(&refusal)));
        }
        let mut accepted = 0u64;
        for (i, ci, fut) in pending {
            let c = &cands[ci];
            let outcome = self.producer.wait(fut).await;
            if let Err(r) = &outcome {
                refusals.push(r.reason);
            } else {
                accepted += 1;
            }
            acks[i] = Some(ack(&c.frame.device_id, c.frame.seq, outcome.as_ref().err()));
        }

        // metrics, per request
        metrics::counter!("feeder_edge_frames_accepted_total").increment(accepted);
        for reason in refusals {
            metrics::counter!("feeder_edge_frames_refused_total", "reason" => reason).increment(1);
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
        Ok(PushResponse { acks })
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<PushResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn push(
        &self,
        request: Request<RawPushRequest>,
    ) -> Result<Response<PushResponse>, Status> {
        let resp = self.handle(request.into_inner().frames).await?;
        Ok(Response::new(resp))
    }

    type PushStreamStream = ResponseStream;

    async fn push_stream(
        &self,
        request: Request<Streaming<RawPushRequest>>,
    ) -> Result<Response<Self::PushStreamStream>, Status> {
        let mut inbound = request.into_inner();
        // One response per request, in order; the bounded channel paces a fast client.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let svc = self.clone();
        tokio::spawn(async move {
            while let Some(req) = inbound.next().await {
                let out = match req {
                    Ok(req) => svc.handle(req.frames).await.map_err(Status::from),
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
