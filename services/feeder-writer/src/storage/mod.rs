//! Where files go, behind one small trait so the flush and recovery logic do not care
//! whether the root is a local directory ([`LocalFs`]) or an S3-compatible bucket
//! ([`S3Storage`]).
//!
//! The contract each backend keeps:
//! - [`Storage::put`] makes a file visible under its final name atomically (readers never
//!   see a partial file) and durably (when it returns, the file survives a crash), and
//!   replaces an existing file of that name;
//! - [`Storage::list`] returns every entry under a dataset's `date=` directories,
//!   including temporary files a crashed `put` left behind, so recovery can remove them;
//! - [`Storage::get`] and [`Storage::get_tail`] read back what `put` stored (the dataset
//!   tools, `feeder verify` and `feeder compact`, read through them, so they work on every
//!   backend the writer writes to). The tail read exists so that a Parquet footer (row
//!   counts, key-value metadata) costs one small ranged request, not the whole object.
//!
//! One test suite (`tests/storage_suite.rs`) runs every backend through this contract.

mod local;
pub mod mode;
mod s3;
mod tail;

use std::path::{Path, PathBuf};

use bytes::Bytes;

pub use self::local::LocalFs;
pub use self::s3::{S3Config, S3Storage};
pub use self::tail::Tail;
use crate::Result;
use crate::schema::Dataset;

/// A file found under a dataset: `<dir>/<name>` relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// `<dataset>/date=YYYY-MM-DD`.
    pub dir: String,
    pub name: String,
}

pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Atomically and durably stores `bytes` as `<dir>/<name>` (`dir` relative to the root).
    fn put(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<()>;
    /// Every file in `<dataset>/date=*/`, temporary ones included; empty if none.
    fn list(&self, dataset: Dataset) -> Result<Vec<Listed>>;
    /// Removes `<dir>/<name>`; a missing file is not an error.
    fn delete(&self, dir: &str, name: &str) -> Result<()>;
    /// Removes every `<dir>/<name>` of `names`, as few requests as the backend allows (one
    /// per 1,000 objects on S3): compaction deletes its inputs so, to keep short the
    /// moment a reader sees them beside the merged object. Missing files are not errors.
    fn delete_many(&self, dir: &str, names: &[&str]) -> Result<()> {
        names.iter().try_for_each(|name| self.delete(dir, name))
    }
    /// Names of the files directly in `<dir>` (not in its subdirectories); empty if it
    /// does not exist.
    fn list_dir(&self, dir: &str) -> Result<Vec<String>>;
    /// The whole content of `<dir>/<name>`; a missing file is an error.
    fn get(&self, dir: &str, name: &str) -> Result<Bytes>;
    /// The last `max` bytes of `<dir>/<name>` (all of it when shorter) and its length.
    fn get_tail(&self, dir: &str, name: &str, max: u64) -> Result<Tail>;
    /// Where a person finds `<dir>/<name>`: a local path, or `s3://bucket/key` (reports).
    fn locate(&self, dir: &str, name: &str) -> PathBuf;
    /// The root directory, when the backend is a local filesystem (where tools can do
    /// what only a filesystem can, like compaction's directory swap).
    fn local_root(&self) -> Option<&Path> {
        None
    }
}
