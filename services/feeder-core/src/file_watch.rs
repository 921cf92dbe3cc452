//! Following a file that operators rewrite while a process runs (the device registry):
//! the one watcher behind the edge's and the stream stage's registry hot reload.
//!
//! The file is polled for a new version ([`FileStamp`]: modification time, size, inode)
//! rather than watched with inotify, because the registry usually lives on a Kubernetes
//! ConfigMap or Secret volume, which kubelet updates by swapping a symlink, an event
//! inotify on the file does not see. What the watcher promises:
//! - **re-read on change**: a new version is read (on the blocking pool, so a large
//!   file never stalls the runtime) at the next poll, or at once when `trigger` fires;
//! - **once per version**: a version is read once; a malformed file is reported once and
//!   not re-parsed every poll until it changes again (this is the debounce: a burst of
//!   edits costs one read per poll at most);
//! - **the old value stays**: a malformed, missing or unreadable file is reported to the
//!   caller, who keeps the value in force; nothing is swapped out unless a whole new value
//!   was read.
//!
//! What a reload *does* (swap a registry, publish labels) and which metrics it counts
//! stay with each stage: they get every outcome through one callback.

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::FileStamp;

/// The file to follow.
#[derive(Debug, Clone)]
pub struct WatchedFile {
    pub path: PathBuf,
    /// How often the file is checked for a new version.
    pub poll: Duration,
    /// The version the value in force was read from (taken before reading), so a change
    /// made between that read and the start of the watcher is not missed. `None`: the
    /// version on disk when the watcher starts.
    pub loaded_from: Option<FileStamp>,
}

/// Why a reload did not give a new value; the value in force stays.
#[derive(Debug)]
pub enum LoadError<E> {
    /// The file is gone or its metadata cannot be read.
    Missing,
    /// The file was read and refused by the loader.
    Invalid(E),
    /// The blocking read did not finish (it panicked, or the runtime is shutting down).
    Task(tokio::task::JoinError),
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Missing => f.write_str("file missing"),
            LoadError::Invalid(e) => write!(f, "{e}"),
            LoadError::Task(e) => write!(f, "reload task failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Missing => None,
            LoadError::Invalid(e) => Some(e),
            LoadError::Task(e) => Some(e),
        }
    }
}

/// Reads `path` with `load` on the blocking pool.
pub async fn load_off_runtime<T, E, F>(path: &Path, load: F) -> Result<T, LoadError<E>>
where
    F: FnOnce(&Path) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let p = path.to_path_buf();
    match tokio::task::spawn_blocking(move || load(&p)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(LoadError::Invalid(e)),
        Err(e) => Err(LoadError::Task(e)),
    }
}

/// Follows `file` until `shutdown` (or until `on_load` breaks): every new version is read
/// with `load` and its outcome handed to `on_load`; `trigger` (SIGHUP at the edge) forces
/// a read even when the version looks unchanged. A missing file is reported once, when it
/// goes missing.
pub async fn watch_file<T, E, F>(
    file: WatchedFile,
    load: F,
    trigger: Option<Arc<Notify>>,
    shutdown: CancellationToken,
    mut on_load: impl FnMut(Result<T, LoadError<E>>) -> ControlFlow<()>,
) where
    F: Fn(&Path) -> Result<T, E> + Clone + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let mut last = file
        .loaded_from
        .clone()
        .or_else(|| FileStamp::of(&file.path));
    let mut tick = tokio::time::interval(file.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            _ = notified(trigger.as_deref()) => true,
        };
        let now = FileStamp::of(&file.path);
        if !forced && now == last {
            continue;
        }
        let outcome = if now.is_none() {
            Err(LoadError::Missing)
        } else {
            load_off_runtime(&file.path, load.clone()).await
        };
        last = now;
        if on_load(outcome).is_break() {
            return;
        }
    }
}

/// Waits for `trigger`; forever without one.
async fn notified(trigger: Option<&Notify>) {
    match trigger {
        Some(t) => t.notified().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    type Seen = Result<u32, LoadError<std::num::ParseIntError>>;

    fn parse(path: &Path) -> Result<u32, std::num::ParseIntError> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .parse()
    }

    /// Writes by rename into place, so every write is a new version (a new inode) even
    /// within one mtime tick.
    fn put(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the watcher reported nothing")
            .expect("the watcher stopped")
    }

    #[tokio::test]
    async fn new_versions_are_read_once_failures_reported_and_a_trigger_forces_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        put(&path, "1");
        let file = WatchedFile {
            path: path.clone(),
            poll: Duration::from_millis(10),
            loaded_from: FileStamp::of(&path),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let trigger = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(watch_file(
            file,
            parse,
            Some(trigger.clone()),
            stop.clone(),
            move |seen| {
                let _ = tx.send(seen);
                ControlFlow::Continue(())
            },
        ));

        put(&path, "2");
        assert_eq!(next(&mut rx).await.unwrap(), 2);
        put(&path, "not a number");
        assert!(matches!(next(&mut rx).await, Err(LoadError::Invalid(_))));
        // the bad version is not re-read every poll: the next report is the next version
        put(&path, "3");
        assert_eq!(next(&mut rx).await.unwrap(), 3);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(next(&mut rx).await, Err(LoadError::Missing)));
        put(&path, "4");
        assert_eq!(next(&mut rx).await.unwrap(), 4);
        // an unchanged version is read again only when asked
        trigger.notify_one();
        assert_eq!(next(&mut rx).await.unwrap(), 4);

        stop.cancel();
        watcher.await.unwrap();
        assert!(rx.try_recv().is_err(), "nothing but the changes was read");
    }

    #[tokio::test]
    async fn a_change_before_the_watcher_starts_is_read_and_a_break_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        put(&path, "1");
        let loaded_from = FileStamp::of(&path);
        put(&path, "2");
        let file = WatchedFile {
            path,
            poll: Duration::from_millis(10),
            loaded_from,
        };
        let mut seen = Vec::new();
        watch_file(file, parse, None, CancellationToken::new(), |v| {
            seen.push(v.unwrap());
            ControlFlow::Break(())
        })
        .await;
        assert_eq!(seen, [2]);
    }
}
