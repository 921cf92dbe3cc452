//! Registry hot reload for the stream stage: the rules read device labels (per-label
//! overrides such as `net_metered=true`, cohort membership), so a changed registry file
//! must reach the running stage without a restart, as it reaches the edge.
//!
//! The file is polled for a new version ([`FileStamp`]); a changed file is parsed on the
//! blocking pool and the new labels are published on a `watch` channel, which the
//! partition loop reads between batches (a batch is decided with one set of labels). A
//! malformed file is logged with its bad lines, counted, and the labels in force stay.
//! Frames replayed on recovery are judged with the labels in force then.

use std::path::PathBuf;
use std::time::Duration;

use feeder_core::{FileStamp, Registry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::labels::{DeviceLabels, labels_from_registry};

/// Where the labels come from, for hot reload.
#[derive(Debug, Clone)]
pub struct RegistrySource {
    pub path: PathBuf,
    /// How often the file is checked for a new version.
    pub poll: Duration,
    /// The version the labels in force were read from (taken before reading), so a
    /// change made while the stage starts is not missed.
    pub loaded_from: Option<FileStamp>,
}

/// Watches the registry until `shutdown`; publishes new labels on `tx`.
pub async fn watch_labels(
    source: RegistrySource,
    tx: watch::Sender<DeviceLabels>,
    shutdown: CancellationToken,
) {
    let mut last = source
        .loaded_from
        .clone()
        .or_else(|| FileStamp::of(&source.path));
    let mut tick = tokio::time::interval(source.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = FileStamp::of(&source.path);
        if now == last || now.is_none() {
            continue;
        }
        last = now;
        let path = source.path.clone();
        match tokio::task::spawn_blocking(move || Registry::load(&path)).await {
            Ok(Ok(reg)) => {
                tracing::info!(devices = reg.len(), file = %source.path.display(), "registry reloaded: device labels updated");
                crate::observe::registry_reload(true);
                if tx.send(labels_from_registry(&reg)).is_err() {
                    return; // the stage has stopped
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "registry reload refused; the labels in force stay");
                crate::observe::registry_reload(false);
            }
            Err(e) => {
                tracing::error!(error = %e, "registry reload task failed");
                crate::observe::registry_reload(false);
            }
        }
    }
}
