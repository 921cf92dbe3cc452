//! What identifies a version of a file without reading it: modification time, size and
//! inode (a rename-into-place, as kubelet does for ConfigMap and Secret volumes, changes
//! the inode even within one mtime tick). What [`crate::file_watch`] polls for, behind the
//! edge's and the stream's registry hot reload.

use std::path::Path;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

impl FileStamp {
    /// The file's stamp now; `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let ino = 0;
        Some(Self {
            modified: m.modified().ok(),
            len: m.len(),
            ino,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_into_place_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let (path, next) = (dir.path().join("r"), dir.path().join("r.next"));
        std::fs::write(&path, "a").unwrap();
        let before = FileStamp::of(&path).unwrap();
        assert_eq!(FileStamp::of(&path), Some(before.clone()));
        std::fs::write(&next, "b").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_ne!(FileStamp::of(&path), Some(before));
        assert_eq!(FileStamp::of(&dir.path().join("missing")), None);
    }
}
