//! Test-only helpers that tests in more than one crate need (a dev-dependency only; no
//! production code depends on it): the test virtualenv's Python, a real S3-protocol
//! server (moto) on 127.0.0.1 for the writer's S3 storage, a real Kafka-protocol broker
//! (tansu) in its own process, and free loopback ports for them.
//!
//! Why a crate: `feeder-writer`'s S3 test and `feeder`'s writer-process test both start
//! moto; the Kafka, stream, `feeder` and end-to-end tests start tansu; the writer's,
//! `feeder`'s and the end-to-end tests all run the test Python. A crate's `tests/` cannot
//! share code with another crate's, and putting a test server into a production crate
//! would ship it.

mod moto;
mod ports;
mod python;
pub mod tansu;

pub use moto::{ACCESS_KEY, MotoS3, SECRET_KEY};
pub use ports::free_port;
pub use python::{python, python_path};
pub use tansu::Tansu;
