//! Registry hot reload for the stream stage: the rules read device labels (per-label
//! overrides such as `net_metered=true`, cohort membership), so a changed registry file
//! must reach the running stage without a restart, as it reaches the edge.
//!
//! Following the file is [`feeder_core::file_watch`]'s job (shared with the edge): a new
//! version is parsed on the blocking pool, once. Here the new labels are published on a
//! `watch` channel, which the partition loop reads between batches (a batch is decided
//! with one set of labels). A malformed file is logged with its bad lines, counted, and
//! the labels in force stay. Frames replayed on recovery are judged with the labels in
//! force then.

use std::ops::ControlFlow;

use feeder_core::Registry;
use feeder_core::file_watch::{LoadError, WatchedFile, watch_file};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::labels::{DeviceLabels, labels_from_registry};

/// Where the labels come from, for hot reload: the registry file, how often it is
/// checked, and the version the labels in force were read from (taken before reading),
/// so a change made while the stage starts is not missed.
pub type RegistrySource = WatchedFile;

/// Watches the registry until `shutdown`; publishes new labels on `tx`.
pub async fn watch_labels(
    source: RegistrySource,
    tx: watch::Sender<DeviceLabels>,
    shutdown: CancellationToken,
) {
    let path = source.path.clone();
    watch_file(source, Registry::load, None, shutdown, |loaded| {
        match loaded {
            Ok(reg) => {
                tracing::info!(devices = reg.len(), file = %path.display(), "registry reloaded: device labels updated");
                crate::observe::registry_reload(true);
                if tx.send(labels_from_registry(&reg)).is_err() {
                    return ControlFlow::Break(()); // the stage has stopped
                }
            }
            Err(LoadError::Missing) => {
                tracing::warn!(file = %path.display(), "registry file missing; the labels in force stay");
            }
            Err(LoadError::Invalid(e)) => {
                tracing::error!(error = %e, "registry reload refused; the labels in force stay");
                crate::observe::registry_reload(false);
            }
            Err(LoadError::Task(e)) => {
                tracing::error!(error = %e, "registry reload task failed");
                crate::observe::registry_reload(false);
            }
        }
        ControlFlow::Continue(())
    })
    .await;
}
