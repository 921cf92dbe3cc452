//! The stream stage: a Kafka consumer group on the raw topic that decides, per device,
//! whether each frame is new, and forwards it to the checked topic (with flags) or to the
//! quarantine topic (with a reason). Accepted frames go through the data rules
//! ([`rules`], listed in `docs/checks.md`): their findings are flags on the checked
//! frame's rows and `Anomaly` records on the anomalies topic.
//!
//! # Exactly once without broker transactions
//! A raw record from partition *p* produces its output in partition *p* of the checked or
//! quarantine topic (and its anomalies in partition *p* of the anomalies topic), tagged
//! with its source offset. The per-device replay windows and rule state are a pure
//! function of what the checked topic holds, so on (re)assignment the stage rebuilds
//! them from its last snapshot and its own output ([`recovery`]), and skips raw offsets whose output is
//! already in the log. A crash between producing and committing therefore neither loses
//! nor duplicates a frame, and a replay is still refused after a restart.
//!
//! The state is also snapshotted to a compacted changelog topic ([`changelog`]), so a
//! restart reads one record per device plus the checked log since the last checkpoint,
//! and a device silent for longer than the data topics' retention keeps its replay
//! window.

pub mod admit;
pub mod changelog;
pub mod checks;
pub mod config;
pub mod error;
pub mod fence;
pub mod fleet;
pub mod idle_clock;
pub mod labels_reload;
pub mod limits;
pub mod outputs;
pub mod rebalance;
pub mod recovery;
pub mod replays;
pub mod rules;
pub mod run;
pub mod skipped;
pub mod window;

pub use config::StreamConfig;
pub use error::{Error, Result};
pub use run::{StreamStats, run};
