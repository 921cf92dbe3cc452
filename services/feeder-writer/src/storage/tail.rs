//! The end of a stored file, readable as a Parquet file whose data pages are absent.
//!
//! A Parquet footer (schema, row counts, key-value metadata) sits at the end of the file.
//! Planning a compaction needs only footers, so reading each input whole would double
//! what compaction downloads from a bucket. [`Tail`] holds the last bytes of a file and
//! answers the Parquet reader's requests for them; a request for earlier bytes (a data
//! page, or a footer longer than the tail) is an error, so a caller that got
//! [`Tail::is_whole`] `false` and hit it can fetch the whole file instead.

use bytes::Bytes;
use parquet::errors::{ParquetError, Result as ParquetResult};
use parquet::file::reader::{ChunkReader, Length};

/// The last `bytes.len()` bytes of a file of `len` bytes.
#[derive(Debug, Clone)]
pub struct Tail {
    /// Length of the whole file.
    pub len: u64,
    /// Its last bytes.
    pub bytes: Bytes,
}

impl Tail {
    /// True when the tail is the whole file.
    pub fn is_whole(&self) -> bool {
        self.bytes.len() as u64 == self.len
    }

    /// Offset in the file of the first byte held.
    fn start(&self) -> u64 {
        self.len - self.bytes.len() as u64
    }

    fn slice(&self, start: u64, length: usize) -> ParquetResult<Bytes> {
        let from = start
            .checked_sub(self.start())
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| {
                o.checked_add(length)
                    .is_some_and(|end| end <= self.bytes.len())
            })
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "bytes {start}..+{length} are outside the {} bytes read of a {}-byte file",
                    self.bytes.len(),
                    self.len
                ))
            })?;
        Ok(self.bytes.slice(from..from + length))
    }
}

impl Length for Tail {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Tail {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> ParquetResult<Self::T> {
        let rest = usize::try_from(self.len.saturating_sub(start)).unwrap_or(usize::MAX);
        Ok(bytes::Buf::reader(self.slice(start, rest)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> ParquetResult<Bytes> {
        self.slice(start, length)
    }
}
