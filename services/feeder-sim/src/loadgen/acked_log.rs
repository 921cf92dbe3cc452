//! `loadgen --acked-log FILE`: what the devices were told was stored, one CSV line per
//! acked frame (`device_id,seq,readings,samples,events`), written as calls complete.
//!
//! Why a file: an acked frame is the pipeline's promise ("the broker has it, it will be
//! stored once"), and a test that kills and pauses stages under load must hold the
//! datasets against exactly those promises with a reader that is not Feeder's code
//! (the chaos test loads this file into DuckDB). Lines are appended per finished call
//! instead of kept in the report, so a long run's memory stays flat. Device ids are
//! the registry's (`[A-Za-z0-9._:-]`), so no field needs quoting.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::report::AckedFrame;
use crate::error::{Error, Result};

/// The CSV header, the column names the checker reads.
pub const HEADER: &str = "device_id,seq,readings,samples,events";

/// An open acked log.
#[derive(Debug)]
pub struct AckedLog {
    path: PathBuf,
    out: BufWriter<File>,
    frames: u64,
}

impl AckedLog {
    /// Creates (truncates) `path` and writes the header.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| io(path, e))?;
        let mut log = Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            frames: 0,
        };
        writeln!(log.out, "{HEADER}").map_err(|e| io(path, e))?;
        Ok(log)
    }

    /// Appends one line per frame.
    pub fn append(&mut self, frames: &[AckedFrame]) -> Result<()> {
        for f in frames {
            writeln!(
                self.out,
                "{},{},{},{},{}",
                f.device_id, f.seq, f.readings, f.samples, f.events
            )
            .map_err(|e| io(&self.path, e))?;
        }
        self.frames += frames.len() as u64;
        Ok(())
    }

    /// Flushes and syncs the file; returns how many frames it lists.
    pub fn finish(mut self) -> Result<u64> {
        self.out.flush().map_err(|e| io(&self.path, e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| io(&self.path, e))?;
        Ok(self.frames)
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_acked_frame_after_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acked.csv");
        let mut log = AckedLog::create(&path).unwrap();
        let frame = |seq| AckedFrame {
            device_id: "mtr-1".into(),
            seq,
            readings: 4,
            samples: 0,
            events: 1,
        };
        log.append(&[frame(1), frame(2)]).unwrap();
        log.append(&[]).unwrap();
        assert_eq!(log.finish().unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{HEADER}\nmtr-1,1,4,0,1\nmtr-1,2,4,0,1\n"));
    }

    #[test]
    fn an_unwritable_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = AckedLog::create(&dir.path().join("no/such/dir/acked.csv")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
