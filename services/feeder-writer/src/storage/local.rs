//! The local-filesystem backend: write a temporary file in the target directory, fsync
//! it, rename it over the final name, fsync the directory. Rename within one directory
//! is atomic on POSIX filesystems, and the two fsyncs make both the bytes and the new
//! directory entry survive power loss. New directories are fsynced into their parents.
//! Files are created 0640 and directories 0750, whatever the umask (`mode.rs`).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Listed, Storage, Tail, mode};
use crate::schema::Dataset;
use crate::{Error, Result, naming};

#[derive(Debug, Clone)]
pub struct LocalFs {
    root: PathBuf,
}

impl LocalFs {
    /// Uses (and creates, if missing) `root` as the data root.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        mode::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        Ok(Self { root })
    }

    /// Reads `root` as it is, creating nothing (tools that only read, like `verify`).
    pub fn existing(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates `dir` (under the root) if missing, making each new entry durable.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let created = mode::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        for d in created {
            if let Some(parent) = d.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = mode::create_file(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl Storage for LocalFs {
    fn put(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.root.join(dir);
        self.ensure_dir(&dir)?;
        let tmp = dir.join(naming::temp_name(name, rand::random()));
        let target = dir.join(name);
        let written = write_synced(&tmp, bytes)
            .map_err(|e| Error::io(&tmp, e))
            .and_then(|()| {
                crate::crashpoint::reached(crate::crashpoint::Point::AfterTempWrite);
                fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))
            });
        if let Err(e) = written {
            // best effort: recovery removes it anyway if this fails too
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&dir)
    }

    fn list(&self, dataset: Dataset) -> Result<Vec<Listed>> {
        let base = self.root.join(dataset.name());
        let dates = match fs::read_dir(&base) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&base, e)),
        };
        let mut out = Vec::new();
        for entry in dates {
            let entry = entry.map_err(|e| Error::io(&base, e))?;
            let date = entry.file_name().to_string_lossy().into_owned();
            if !date.starts_with("date=") || !entry.path().is_dir() {
                continue;
            }
            let dir_path = entry.path();
            for file in fs::read_dir(&dir_path).map_err(|e| Error::io(&dir_path, e))? {
                let file = file.map_err(|e| Error::io(&dir_path, e))?;
                out.push(Listed {
                    dir: format!("{}/{date}", dataset.name()),
                    name: file.file_name().to_string_lossy().into_owned(),
                });
            }
        }
        Ok(out)
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.root.join(dir);
        let entries = match fs::read_dir(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&path, e))?;
            if entry.path().is_file() {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }

    fn delete(&self, dir: &str, name: &str) -> Result<()> {
        let path = self.root.join(dir).join(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.root.join(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn get(&self, dir: &str, name: &str) -> Result<Bytes> {
        let path = self.root.join(dir).join(name);
        fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| Error::io(&path, e))
    }

    fn get_tail(&self, dir: &str, name: &str, max: u64) -> Result<Tail> {
        let path = self.root.join(dir).join(name);
        let read = || -> std::io::Result<Tail> {
            let mut f = File::open(&path)?;
            let len = f.metadata()?.len();
            let start = len.saturating_sub(max);
            f.seek(SeekFrom::Start(start))?;
            let mut bytes = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
            f.take(len - start).read_to_end(&mut bytes)?;
            Ok(Tail {
                len,
                bytes: bytes.into(),
            })
        };
        read().map_err(|e| Error::io(&path, e))
    }

    fn locate(&self, dir: &str, name: &str) -> PathBuf {
        self.root.join(dir).join(name)
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}
