//! Where files go, behind one small trait so the flush and recovery logic do not care
//! whether the root is a local directory ([`LocalFs`]) or an S3-compatible bucket
//! ([`S3Storage`]).
//!
//! The contract each backend keeps:
//! - [`Storage::put`] makes a file visible under its final name atomically (readers never
//!   see a partial file) and durably (when it returns, the file survives a crash), and
//!   replaces an existing file of that name;
//! - [`Storage::list`] returns every entry under a dataset's `date=` directories,
//!   including temporary files a crashed `put` left behind, so recovery can remove them.

mod local;
pub mod mode;
mod s3;

pub use self::local::LocalFs;
pub use self::s3::{S3Config, S3Storage};
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
    /// Names of the files directly in `<dir>` (not in its subdirectories); empty if it
    /// does not exist.
    fn list_dir(&self, dir: &str) -> Result<Vec<String>>;
}
