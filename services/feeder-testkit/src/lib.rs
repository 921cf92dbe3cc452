//! Test-only helpers that tests in more than one crate need (a dev-dependency only; no
//! production code depends on it): the test virtualenv's Python, and a real
//! S3-protocol server (moto) on 127.0.0.1 for the writer's S3 storage.
//!
//! Why a crate: `feeder-writer`'s S3 test and `feeder`'s writer-process test both start
//! moto, and the writer's, `feeder`'s and the end-to-end tests all run the test Python;
//! a crate's `tests/` cannot share code with another crate's, and putting a test server
//! into a production crate would ship it.

mod moto;
mod python;

pub use moto::{ACCESS_KEY, MotoS3, SECRET_KEY};
pub use python::{python, python_path};
