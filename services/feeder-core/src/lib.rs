//! Feeder's domain core: what a device is, how its frames are signed and verified, and
//! the registry that says which keys a utility provisioned.
//!
//! This crate does no network or Kafka I/O, so every rule here is unit-tested in
//! isolation and shared unchanged by the edge, the stream stage, the writer's `verify`
//! and the simulators.
//!
//! # Invariants
//! - The signature algorithm of a key comes from the registry, never from a frame.
//! - Key material never appears in `Debug` output or error messages.

pub mod codes;
pub mod device_id;
pub mod ed25519;
pub mod edge_proof;
pub mod error;
pub mod file_stamp;
pub mod file_watch;
pub mod geo;
pub mod keyfile;
pub mod line_error;
pub mod ocmf;
pub mod payload;
pub mod registry;
pub mod registry_topic;
pub mod signing;
pub mod units;

pub use codes::AckCode;
pub use device_id::{DeviceIdError, validate_device_id};
pub use edge_proof::{EdgeKey, EdgeKeys, EdgeProof, ProofRefusal, RawFields};
pub use error::{Error, Result};
pub use file_stamp::FileStamp;
pub use registry::{DeviceKind, KeyStatus, Registry, RegistryEntry};
pub use signing::{Alg, SigningKey, VerifyingKey, signing_input};
