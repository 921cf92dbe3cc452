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
//!
//! # Layout
//! The pure core (no I/O; time is the frames' own or a parameter):
//! - where a frame is checked: [`admit`] (edge proof, shape, bounds: [`limits`]),
//!   [`checks`] ([`PartitionState`](checks::PartitionState): replay windows by [`window`]
//!   and [`replays`], then the data [`rules`]);
//! - what is kept of it: [`changelog`] (device state and checkpoint records),
//!   [`recovery`] (state rebuilt from the changelog and the stage's own output).
//!
//! The I/O layer, on the writer's pattern:
//! - `run`: the partition loop (events, batches) and the fleet task beside it;
//! - `partition`: the raw partitions held, each decided there, recovered on first sight
//!   (claimed first: [`fence`]), snapshotted to the changelog;
//! - [`outputs`]: where outputs are produced, acknowledged (the size [`outputs::guard`])
//!   and the raw offsets committed;
//! - [`idle_clock`]: cohort windows closed by the wall clock ([`clock`], injected);
//! - [`fleet`]: where fleet windows are judged (its own consumer group and progress);
//! - `observe`: every metric, emitted once per batch from the counts [`StreamStats`]
//!   is fed from ([`stats`]);
//! - settings: [`config`], [`labels`], [`labels_reload`]; consumer-group events:
//!   [`rebalance`]; undecodable records of the stage's own topics: [`skipped`].

pub mod admit;
pub mod changelog;
pub mod checks;
pub mod clock;
pub mod config;
pub mod error;
pub mod fence;
pub mod fleet;
pub mod idle_clock;
pub mod labels;
pub mod labels_reload;
pub mod limits;
mod observe;
pub mod outputs;
mod partition;
pub mod rebalance;
pub mod recovery;
pub mod replays;
pub mod rules;
pub mod run;
pub mod skipped;
pub mod stats;
pub mod window;
pub mod wire;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::StreamConfig;
pub use error::{Error, Result};
pub use run::{run, run_with_clock};
pub use stats::{FleetStats, StreamStats};
