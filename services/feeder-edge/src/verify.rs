//! Signature verification for a request's candidates, off the async runtime.
//!
//! Ed25519 signatures are verified in batches (about half the work per signature of one
//! at a time; `feeder_core::ed25519` gives the rule and why it matches `feeder verify`).
//!
//! Ed25519 verification costs tens of microseconds; a request of hundreds of frames would
//! stall a runtime worker, so verification runs on tokio's blocking pool. Concurrent
//! requests verify on all cores, and so does one large request: it is split into chunks
//! (at least [`MIN_CHUNK`] frames each, at most one per core), so a gateway that batches
//! a thousand meters' frames waits for a fraction of a second, not for one core.

use feeder_core::AckCode;
use feeder_core::signing::{Signed, VerifyError, verify_many};

use crate::admission::{Candidate, Refusal};

/// Verifies every candidate; the result for `cands[i]` is `out[i]`. Ed25519 signatures
/// are verified in batches under the rule `feeder verify` applies to stored frames
/// (`feeder_core::ed25519`); a failed batch is re-verified frame by frame, so each frame
/// gets its own answer.
pub fn verify_all(cands: &[Candidate]) -> Vec<Result<(), Refusal>> {
    let items: Vec<_> = cands
        .iter()
        .map(|c| {
            let f = &c.frame;
            let signed = Signed {
                device_id: &f.device_id,
                key_id: &f.key_id,
                seq: f.seq,
                payload: &f.payload,
                signature: &f.signature,
            };
            (&c.key, signed)
        })
        .collect();
    verify_many(&items)
        .into_iter()
        .map(|r| {
            r.map_err(|e| match e {
                VerifyError::WrongLength => Refusal::new(
                    AckCode::Unauthenticated,
                    "bad_signature_length",
                    "signature has the wrong length",
                ),
                VerifyError::Mismatch => {
                    Refusal::new(AckCode::Unauthenticated, "bad_signature", "bad signature")
                }
                VerifyError::Encoding => Refusal::new(
                    AckCode::Unauthenticated,
                    "bad_signature_encoding",
                    "signature algorithm or encoding not accepted",
                ),
            })
        })
        .collect()
}

/// Requests smaller than twice this verify in one piece: a chunk's hop to another thread
/// costs a few microseconds, about one HMAC verification, against ~30 for Ed25519; and a
/// chunk holds at least one whole Ed25519 batch, where batching pays.
pub const MIN_CHUNK: usize = feeder_core::ed25519::BATCH;

/// How many chunks a request of `n` candidates is verified in, on `cores` cores.
pub fn chunks_for(n: usize, cores: usize) -> usize {
    (n / MIN_CHUNK).clamp(1, cores.max(1))
}

fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// [`verify_all`] on the blocking pool, split over up to one chunk per core; the results
/// come back in the candidates' order.
pub async fn verify_off_runtime(
    cands: Vec<Candidate>,
) -> (Vec<Candidate>, Vec<Result<(), Refusal>>) {
    let n = cands.len();
    let size = n.div_ceil(chunks_for(n, cores())).max(1);
    let mut rest = cands;
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let tail = rest.split_off(size.min(rest.len()));
        let chunk = std::mem::replace(&mut rest, tail);
        chunks.push(tokio::task::spawn_blocking(move || {
            let res = verify_all(&chunk);
            (chunk, res)
        }));
    }
    let (mut all_cands, mut all_res) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for chunk in chunks {
        // The closure does not panic on any input. If the pool is shutting down the join
        // fails, and returning no results makes every frame of the request retryable (14).
        let Ok((c, r)) = chunk.await else {
            return Default::default();
        };
        all_cands.extend(c);
        all_res.extend(r);
    }
    (all_cands, all_res)
}

/// The edge's whole per-frame decision for `raw`, short of producing it: admission, then
/// the signature, synchronously. The service runs the same two steps (verification on
/// the blocking pool); the fuzz target and the no-panic property test call this.
pub fn admit_and_verify(
    raw: &bytes::Bytes,
    registry: &feeder_core::Registry,
    cfg: &crate::EdgeConfig,
) -> Result<feeder_proto::v1::SignedFrame, Refusal> {
    match crate::admission::admit(raw, registry, cfg) {
        crate::admission::Admitted::Refused(_, r) => Err(r),
        crate::admission::Admitted::Candidate(c) => {
            let c = *c;
            let res = verify_all(std::slice::from_ref(&c));
            match res.into_iter().next() {
                Some(Ok(())) => Ok(c.frame),
                Some(Err(r)) => Err(r),
                // verify_all answers every candidate; unreachable, but refuse rather than panic
                None => Err(Refusal::new(AckCode::Unavailable, "internal", "retry")),
            }
        }
    }
}
