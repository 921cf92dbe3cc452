//! Permissions of what the writer and `feeder compact` create on local disk: files 0640,
//! directories 0750, set explicitly so the process umask neither widens them (a umask of
//! 0 would make datasets world-readable) nor narrows them (readers in the data group
//! must still open them).
//!
//! Datasets hold every meter's readings and positions, and the frames' signed payloads:
//! readable by the owner and the analysts' group, by no one else. A file is created
//! with the mode (so it is never wider than 0640, not even for a moment) and then set to
//! exactly 0640 on the open descriptor; a directory is created, then set to 0750 before
//! anything is written into it.

use std::fs::{self, File, Permissions};
use std::io;
use std::path::Path;

/// Mode of every dataset file (and compaction's marker files).
pub const FILE_MODE: u32 = 0o640;
/// Mode of every directory the writer or compaction creates.
pub const DIR_MODE: u32 = 0o750;

/// Creates `path` (which must not exist) for writing, with mode [`FILE_MODE`].
pub fn create_file(path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)?;
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
        Ok(f)
    }
    #[cfg(not(unix))]
    File::create_new(path)
}

/// Creates `dir` and any missing parents, each with mode [`DIR_MODE`]. Returns the
/// directories created, outermost first (to be made durable by the caller).
pub fn create_dir_all(dir: &Path) -> io::Result<Vec<&Path>> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        missing.push(d);
        at = d.parent();
    }
    missing.reverse();
    for d in &missing {
        match fs::create_dir(d) {
            // another writer's flush may create the same date directory meanwhile
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            other => other?,
        }
        set_dir_mode(d)?;
    }
    Ok(missing)
}

#[cfg(unix)]
fn set_dir_mode(d: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(d, Permissions::from_mode(DIR_MODE))
}

#[cfg(not(unix))]
fn set_dir_mode(_: &Path) -> io::Result<()> {
    Ok(())
}
