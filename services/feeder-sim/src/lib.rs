//! Feeder's device side, for demos, tests and load benchmarks:
//!
//! - [`keygen`]: provisions a fleet, writing the registry (for Feeder) and the matching
//!   device key file (for simulators) in the device contract's formats;
//! - [`fleet`]: simulated meters and vehicles producing realistic, correctly signed
//!   frames, deterministic given their keys;
//! - [`loadgen`]: a gRPC client that plays a fleet against an edge with bounded
//!   concurrency and the contract's retry rules, and accounts for every frame;
//! - [`attacks`]: forged, replayed, tampered and unknown-device frames for the
//!   rejection paths.
//!
//! Signing and the file formats come from `feeder-core`, so the simulator cannot drift
//! from what the edge verifies.

pub mod attacks;
pub mod error;
pub mod fleet;
pub mod keygen;
pub mod labels;
pub mod loadgen;

pub use error::{Error, Result};
pub use fleet::{Fleet, SimDevice, SimFrame};
pub use keygen::{KeygenConfig, KeygenSummary, keygen};
pub use loadgen::{AckedFrame, LatencySummary, LoadgenConfig, LoadgenProgress, LoadgenReport};
