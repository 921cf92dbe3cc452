//! Registry hot reload: the edge picks up a changed registry file (polled) or reloads on
//! SIGHUP, with no restart and no dropped call.
//!
//! Following the file is [`feeder_core::file_watch`]'s job (shared with the stream
//! stage): a new version of the file (modification time, size or inode) is parsed on the
//! blocking pool, a version is read once. This module decides what an outcome does here:
//! a new registry is swapped in atomically through [`SharedRegistry::replace`] (calls in
//! progress finish against the snapshot they took); a malformed file is logged with every
//! bad line number, counted (`feeder_edge_registry_reload_failures_total`), and the last
//! good registry stays in force.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use feeder_core::file_watch::{LoadError, WatchedFile, load_off_runtime, watch_file};
use feeder_core::{FileStamp, Registry};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::shared_registry::SharedRegistry;

/// Outcome of one reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    Swapped,
    KeptLastGood,
}

/// Loads `path` and swaps it in, or logs why not and keeps the registry in force.
pub async fn reload_once(path: &Path, registry: &SharedRegistry) -> Reloaded {
    apply(path, load_off_runtime(path, Registry::load).await, registry)
}

/// Swaps a newly read registry in, or logs and counts why there is none.
fn apply(
    path: &Path,
    loaded: Result<Registry, LoadError<feeder_core::Error>>,
    registry: &SharedRegistry,
) -> Reloaded {
    match loaded {
        Ok(reg) => {
            tracing::info!(
                devices = reg.len(),
                keys = reg.key_count(),
                file = %path.display(),
                "registry reloaded"
            );
            metrics::counter!("feeder_edge_registry_reloads_total").increment(1);
            registry.replace(reg);
            return Reloaded::Swapped;
        }
        Err(LoadError::Missing) => {
            tracing::warn!(file = %path.display(), "registry file missing; keeping the registry in force");
            return Reloaded::KeptLastGood;
        }
        // The error lists every bad line as `<file>: line N: reason`; it never holds
        // key material (the registry's own messages name fields, not values).
        Err(LoadError::Invalid(e)) => {
            tracing::error!(error = %e, "registry reload refused; the last good registry stays in force");
        }
        Err(LoadError::Task(e)) => {
            tracing::error!(error = %e, "registry reload task failed");
        }
    }
    metrics::counter!("feeder_edge_registry_reload_failures_total").increment(1);
    Reloaded::KeptLastGood
}

/// Watches `path` until `shutdown`: reloads when the file changes or `trigger` fires.
pub async fn watch(
    path: PathBuf,
    registry: SharedRegistry,
    poll: Duration,
    trigger: Arc<Notify>,
    shutdown: CancellationToken,
) {
    // the version the registry in force was read from, when known: a change made since
    // (while the edge was starting) is picked up on the first tick
    let file = WatchedFile {
        loaded_from: registry.loaded_from().or_else(|| FileStamp::of(&path)),
        path: path.clone(),
        poll,
    };
    watch_file(file, Registry::load, Some(trigger), shutdown, |loaded| {
        apply(&path, loaded, &registry);
        ControlFlow::Continue(())
    })
    .await;
}

/// Turns SIGHUP into `trigger` notifications until `shutdown` (Unix only). The handler is
/// installed before this returns, so a SIGHUP sent afterwards never hits the default
/// action (which would terminate the process).
pub fn spawn_sighup(trigger: Arc<Notify>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; registry reloads on file change only");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    got = hup.recv() => {
                        if got.is_none() { return; }
                        tracing::info!("SIGHUP: reloading the registry");
                        trigger.notify_one();
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (trigger, shutdown);
}
