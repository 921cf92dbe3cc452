//! Signature verification for a request's candidates, off the async runtime.
//!
//! Ed25519 verification costs tens of microseconds; a request of hundreds of frames would
//! stall a runtime worker, so the whole batch runs on tokio's blocking pool, and
//! concurrent requests verify on all cores.

use feeder_core::AckCode;
use feeder_core::signing::VerifyError;

use crate::admission::{Candidate, Refusal};

/// Verifies every candidate; the result for `cands[i]` is `out[i]`.
pub fn verify_all(cands: &[Candidate]) -> Vec<Result<(), Refusal>> {
    let mut scratch = Vec::with_capacity(1024);
    cands
        .iter()
        .map(|c| {
            c.key
                .verify(
                    &mut scratch,
                    &c.frame.device_id,
                    &c.frame.key_id,
                    c.frame.seq,
                    &c.frame.payload,
                    &c.frame.signature,
                )
                .map_err(|e| match e {
                    VerifyError::WrongLength => Refusal::new(
                        AckCode::Unauthenticated,
                        "bad_signature_length",
                        "signature has the wrong length",
                    ),
                    VerifyError::Mismatch => {
                        Refusal::new(AckCode::Unauthenticated, "bad_signature", "bad signature")
                    }
                })
        })
        .collect()
}

/// [`verify_all`] on the blocking pool (inline for a single small batch is not worth a hop,
/// but keeping one path keeps the runtime's latency predictable).
pub async fn verify_off_runtime(
    cands: Vec<Candidate>,
) -> (Vec<Candidate>, Vec<Result<(), Refusal>>) {
    // The closure does not panic on any input. If the pool is shutting down the join
    // fails, and returning no results makes every frame of the request retryable (14).
    tokio::task::spawn_blocking(move || {
        let res = verify_all(&cands);
        (cands, res)
    })
    .await
    .unwrap_or_default()
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
