//! Edge settings. Defaults suit a small deployment; every limit is explicit, and
//! [`EdgeConfig::validate`] refuses combinations that could never admit a frame.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};

/// TLS for the device-facing port (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The edge's certificate chain.
    pub cert: PathBuf,
    /// The edge's private key.
    pub key: PathBuf,
    /// Require client certificates issued by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// With mutual TLS: a frame is taken only if the client certificate is valid for a DNS
    /// name equal to its device_id (subjectAltName); otherwise code 7. Off for
    /// concentrators that relay many meters' frames over one connection.
    pub require_device_identity: bool,
}

/// The budget of failed signature verifications per peer (`crate::peer_budget`): after
/// `per_connection` failures on one connection, or `per_address` from one address (an IPv6
/// address counts by its /64), within `window`, that peer's frames get code 8
/// (`peer_failed_verifications`) without being verified, for `cool_off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureBudget {
    pub per_connection: u32,
    pub per_address: u32,
    pub window: Duration,
    pub cool_off: Duration,
    /// Peers tracked at once (about 100 bytes each); when full, new peers share one
    /// overflow entry (its budget is `per_address`).
    pub capacity: usize,
}

impl Default for FailureBudget {
    fn default() -> Self {
        Self {
            per_connection: 32,
            per_address: 128,
            window: Duration::from_secs(60),
            cool_off: Duration::from_secs(300),
            capacity: 65_536,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Names this edge in every record it produces (provenance).
    pub edge_id: String,
    /// More frames than this in one request: the call fails with INVALID_ARGUMENT.
    pub max_frames_per_request: usize,
    /// A payload larger than this gets code 3.
    pub max_payload_bytes: usize,
    /// Cap on one encoded request (a `Push` or one message of a `PushStream`); the limit
    /// in force is the smaller of this and what `max_frames_per_request` frames of
    /// `max_payload_bytes` could need ([`Self::request_limit`]). Longer: INVALID_ARGUMENT,
    /// refused from the message header before it is buffered.
    pub max_request_bytes: usize,
    /// Open device connections at most; one more is closed at once.
    pub max_connections: usize,
    /// HTTP/2 streams (calls) open at once per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 request header list size, bytes.
    pub max_header_list_bytes: u32,
    /// HTTP/2 PING interval on idle connections, and how long to wait for the answer before
    /// the connection is closed (dead peers do not hold a connection slot).
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    /// A `PushStream` that sends no request for this long is ended (UNAVAILABLE).
    pub stream_idle_timeout: Duration,
    /// Failed verifications allowed per peer before its frames are refused unverified.
    pub failure_budget: FailureBudget,
    /// Serve plaintext on a non-loopback address (without it the edge refuses to start).
    pub insecure_plaintext: bool,
    /// Serve gRPC reflection on the device port (health is always served).
    pub reflection: bool,
    /// Bound on records waiting in the producer's local queue; beyond it frames get code 8.
    pub producer_queue_max: usize,
    /// How long a frame may wait for the broker's ack before it gets code 14.
    pub ack_timeout: Duration,
    /// Frames admitted but not yet answered (verifying or waiting for the broker), across
    /// all calls. A request whose frames do not fit gets code 8 for them.
    pub max_frames_in_flight: usize,
    /// Per-device sustained rate, frames per second; over it: code 8.
    pub device_rate_per_sec: f64,
    /// Per-device burst (token bucket capacity), frames.
    pub device_burst: u32,
    /// Bound on devices whose rate state is held at once (memory bound of the limiter:
    /// about 100 bytes each). Only devices that are not at a full bucket need state.
    pub rate_limiter_capacity: usize,
    /// Registry file to watch and reload (also on SIGHUP); `None`: no hot reload.
    pub registry_path: Option<PathBuf>,
    /// How often the registry file is checked for changes.
    pub registry_poll: Duration,
    /// After shutdown is requested, in-flight calls get this long to finish before
    /// their connections are dropped and the producer is flushed.
    pub shutdown_deadline: Duration,
    /// How often broker reachability (health) and the gauges are refreshed.
    pub health_interval: Duration,
    /// Serve TLS (and optionally mutual TLS) instead of plaintext.
    pub tls: Option<TlsFiles>,
    /// Signs every raw record with the edge key, so the stream can tell it from a
    /// record some other producer wrote ([`feeder_core::edge_proof`]).
    pub edge_proof: feeder_core::EdgeProof,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            edge_id: "edge-0".into(),
            max_frames_per_request: 1000,
            max_payload_bytes: 256 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            max_connections: 4096,
            max_concurrent_streams: 16,
            max_header_list_bytes: 16 * 1024,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(120),
            failure_budget: FailureBudget::default(),
            insecure_plaintext: false,
            reflection: false,
            producer_queue_max: 100_000,
            ack_timeout: Duration::from_secs(10),
            max_frames_in_flight: 50_000,
            device_rate_per_sec: 50.0,
            device_burst: 200,
            rate_limiter_capacity: 1_000_000,
            registry_path: None,
            registry_poll: Duration::from_secs(1),
            shutdown_deadline: Duration::from_secs(30),
            health_interval: Duration::from_secs(1),
            tls: None,
            edge_proof: feeder_core::EdgeProof::Off,
        }
    }
}

impl EdgeConfig {
    /// The largest frame kept while decoding: the payload plus its envelope (device id,
    /// key id, seq, signature and their tags); a longer one is skipped and answered 3.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_payload_bytes.saturating_add(256)
    }

    /// The largest request decoded: `max_frames_per_request` frames of
    /// [`Self::max_frame_bytes`] (each with its tag and length, 11 bytes at most), capped
    /// by `max_request_bytes`.
    pub fn request_limit(&self) -> usize {
        self.max_frames_per_request
            .saturating_mul(self.max_frame_bytes().saturating_add(11))
            .min(self.max_request_bytes)
    }

    /// The limits applied while decoding a request.
    pub fn frame_limits(&self) -> crate::decode::FrameLimits {
        crate::decode::FrameLimits {
            max_frames: self.max_frames_per_request,
            max_frame_bytes: self.max_frame_bytes(),
        }
    }

    /// Refuses plaintext on an address other hosts can reach, unless
    /// `insecure_plaintext` says so.
    pub fn check_listen(&self, addr: std::net::SocketAddr) -> Result<()> {
        if self.tls.is_none() && !addr.ip().is_loopback() && !self.insecure_plaintext {
            return Err(Error::Config(format!(
                "refusing to serve plaintext on {addr}: devices' frames and their metadata \
                 would cross the network unencrypted; give --tls-cert and --tls-key, listen \
                 on a loopback address (behind a TLS-terminating proxy), or pass \
                 --insecure-plaintext"
            )));
        }
        Ok(())
    }

    /// Checks the limits are usable; the message names the offending setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.edge_id.is_empty() {
            return bad("edge_id must not be empty".into());
        }
        if self.max_frames_per_request == 0 {
            return bad("max_frames_per_request must be at least 1".into());
        }
        if self.max_payload_bytes == 0 {
            return bad("max_payload_bytes must be at least 1".into());
        }
        if self.producer_queue_max == 0 {
            return bad("producer_queue_max must be at least 1".into());
        }
        if self.ack_timeout.is_zero() {
            return bad("ack_timeout must be positive".into());
        }
        if self.max_frames_in_flight < self.max_frames_per_request {
            return bad(format!(
                "max_frames_in_flight ({}) must be at least max_frames_per_request ({})",
                self.max_frames_in_flight, self.max_frames_per_request
            ));
        }
        if self.max_frames_in_flight > u32::MAX as usize {
            return bad("max_frames_in_flight must be at most 4294967295".into());
        }
        if !(self.device_rate_per_sec.is_finite() && self.device_rate_per_sec > 0.0) {
            return bad("device_rate_per_sec must be a positive number".into());
        }
        if self.device_burst == 0 {
            return bad("device_burst must be at least 1".into());
        }
        if self.rate_limiter_capacity == 0 {
            return bad("rate_limiter_capacity must be at least 1".into());
        }
        if self.max_request_bytes < 1024 {
            return bad("max_request_bytes must be at least 1024".into());
        }
        if self.max_connections == 0 || self.max_concurrent_streams == 0 {
            return bad("max_connections and max_concurrent_streams must be at least 1".into());
        }
        if self.max_header_list_bytes < 1024 {
            return bad("max_header_list_bytes must be at least 1024".into());
        }
        if self.http2_keepalive_interval.is_zero()
            || self.http2_keepalive_timeout.is_zero()
            || self.stream_idle_timeout.is_zero()
        {
            return bad(
                "http2_keepalive_interval, http2_keepalive_timeout and stream_idle_timeout \
                 must be positive"
                    .into(),
            );
        }
        let b = &self.failure_budget;
        if b.per_connection == 0 || b.per_address == 0 || b.capacity == 0 {
            return bad(
                "failure budget: per_connection, per_address and capacity must be at least 1"
                    .into(),
            );
        }
        if b.window.is_zero() || b.cool_off.is_zero() {
            return bad("failure budget: window and cool_off must be positive".into());
        }
        if self.registry_poll.is_zero() || self.health_interval.is_zero() {
            return bad("registry_poll and health_interval must be positive".into());
        }
        if let Some(t) = &self.tls
            && t.require_device_identity
            && t.client_ca.is_none()
        {
            return bad("require_device_identity needs a client CA (mutual TLS)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_limits_are_named() {
        EdgeConfig::default().validate().unwrap();
        let cases: Vec<(EdgeConfig, &str)> = vec![
            (
                EdgeConfig {
                    max_frames_in_flight: 10,
                    ..EdgeConfig::default()
                },
                "max_frames_in_flight",
            ),
            (
                EdgeConfig {
                    device_rate_per_sec: 0.0,
                    ..EdgeConfig::default()
                },
                "device_rate_per_sec",
            ),
            (
                EdgeConfig {
                    device_rate_per_sec: f64::NAN,
                    ..EdgeConfig::default()
                },
                "device_rate_per_sec",
            ),
            (
                EdgeConfig {
                    device_burst: 0,
                    ..EdgeConfig::default()
                },
                "device_burst",
            ),
            (
                EdgeConfig {
                    max_frames_per_request: 0,
                    ..EdgeConfig::default()
                },
                "max_frames_per_request",
            ),
            (
                EdgeConfig {
                    ack_timeout: Duration::ZERO,
                    ..EdgeConfig::default()
                },
                "ack_timeout",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
