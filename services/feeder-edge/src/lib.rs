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
//! # Backpressure
//! The producer queue is bounded: when it is full the frame gets code 8 (retryable), and a
//! broker that cannot be reached gives code 14 after `ack_timeout`. Nothing is buffered
//! beyond those bounds.

pub mod admission;
pub mod config;
pub mod error;
pub mod produce;
pub mod server;
pub mod service;
pub mod verify;

pub use config::EdgeConfig;
pub use error::{Error, Result};
pub use server::{SharedRegistry, run, serve};
