//! The edge receiver: the only Feeder component that faces devices.
//!
//! For each frame of a `Push` or `PushStream` call it decides, cheapest check first:
//! syntax and size ([`admission`]), registry lookup and revocation, then the signature
//! ([`verify`], on the blocking pool so the async runtime keeps serving). Accepted frames
//! go to the raw topic, one Kafka record per frame, keyed by device id so a device's
//! frames stay ordered in one partition ([`produce`]).
//!
//! # The durability rule
//! Code 0 is sent for a frame only after the broker acknowledged its record with
//! `acks=all`. Every other outcome gets a non-zero code and nothing is promised. The edge
//! holds no state of its own: it can be killed at any time without losing acked data.
//!
//! # Backpressure and admission
//! Every bound answers a retryable code instead of buffering: a device over its rate
//! ([`ratelimit`], bounded memory) or frames beyond `max_frames_in_flight` get code 8, a
//! full producer queue gets 8, and a broker that cannot be reached gives code 14 after
//! `ack_timeout`. See docs/edge.md for the order of checks.
//!
//! # Operability
//! The registry is hot-reloaded ([`reload`]: file change or SIGHUP; a malformed file keeps
//! the last good one); gRPC health is NOT_SERVING until the registry is loaded and the
//! broker answers; shutdown gives open calls until `shutdown_deadline`, then flushes.

pub mod admission;
mod answers;
pub mod call;
pub mod config;
pub mod conn;
pub mod decode;
pub mod error;
pub mod grpc;
pub mod peer_budget;
pub mod produce;
pub mod ratelimit;
pub mod registry_topic;
pub mod reload;
pub mod server;
pub mod service;
pub mod shared_registry;
pub mod tls;
pub mod verify;

pub use config::{EdgeConfig, FailureBudget, TlsFiles};
pub use error::{Error, Result};
pub use server::{run, serve};
pub use shared_registry::SharedRegistry;
