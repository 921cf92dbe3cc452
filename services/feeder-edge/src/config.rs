//! Edge settings. Defaults suit a small deployment; every limit is explicit.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Names this edge in every record it produces (provenance).
    pub edge_id: String,
    /// More frames than this in one request: the call fails with INVALID_ARGUMENT.
    pub max_frames_per_request: usize,
    /// A payload larger than this gets code 3.
    pub max_payload_bytes: usize,
    /// Bound on records waiting in the producer's local queue; beyond it frames get code 8.
    pub producer_queue_max: usize,
    /// How long a frame may wait for the broker's ack before it gets code 14.
    pub ack_timeout: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            edge_id: "edge-0".into(),
            max_frames_per_request: 1000,
            max_payload_bytes: 256 * 1024,
            producer_queue_max: 100_000,
            ack_timeout: Duration::from_secs(10),
        }
    }
}

impl EdgeConfig {
    /// The largest request the gRPC layer accepts: frames × (payload + envelope).
    pub fn max_request_bytes(&self) -> usize {
        self.max_frames_per_request
            .saturating_mul(self.max_payload_bytes + 512)
            .min(64 * 1024 * 1024)
    }
}
