//! Stream-stage settings.

use std::time::Duration;

pub use crate::labels::{DeviceLabels, labels_from_registry};
use crate::rules::RulesConfig;

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub group_id: String,
    pub client_id: String,
    /// Static group membership ([`feeder_kafka::membership`]): this process's stable
    /// name in `group_id` (and, as `<id>-cohorts`, in the cohort aggregator's group).
    /// `None`: dynamic membership.
    pub instance_id: Option<feeder_kafka::InstanceId>,
    /// Replay window per device (the contract's default is 4096 seqs).
    pub replay_window: u64,
    /// A batch closes at this many records...
    pub batch_max_records: usize,
    /// ...or this long after its first record.
    pub batch_linger: Duration,
    /// Data-rule thresholds (`docs/checks.md`).
    pub rules: RulesConfig,
    /// Registry labels for per-label rule overrides; empty = default rules everywhere.
    pub device_labels: DeviceLabels,
    /// How often changed device state is written to the state changelog: a restart
    /// replays at most about this much of the checked log on top of the snapshot.
    pub snapshot_interval: Duration,
    /// The fleet cohort aggregator judges a window some raw partition has not closed this
    /// long after the window's first tally ([`crate::fleet`]).
    pub cohort_grace: Duration,
    /// The idle cohort clock closes a window this long after its end by the wall clock
    /// (on a partition that has read everything): covers the edge's stamping-to-append
    /// delay and clock skew between edges and this stage ([`crate::idle_clock`]).
    pub cohort_lateness: Duration,
    /// The idle cohort clock runs every min(this, window / 4); `None` turns it off, so
    /// only frames move the cohort windows (tests that replay old timestamps).
    pub cohort_tick: Option<Duration>,
    /// The registry file the labels came from, watched for changes by
    /// [`crate::labels_reload`] (`None`: the labels are fixed).
    pub registry: Option<feeder_core::file_watch::WatchedFile>,
    /// The registry topic to read the labels from instead of a file: read whole before
    /// the first batch, then followed ([`feeder_kafka::registry_follow`]).
    pub registry_topic: Option<feeder_kafka::registry_follow::TopicSource>,
    /// Raw records must carry a valid edge proof, or they are quarantined as
    /// `not_from_edge` ([`feeder_core::edge_proof`]).
    pub edge_proof: feeder_core::EdgeProof,
    /// An output record (checked, quarantine, anomaly) larger than this many bytes, key
    /// and framing included, becomes an `output_too_large` quarantine entry; the
    /// producer's `message.max.bytes` is set to it ([`crate::outputs`]). Just under
    /// Kafka's default 1 MiB message size; at least
    /// [`crate::limits::MIN_MAX_OUTPUT_RECORD_BYTES`].
    pub max_output_record_bytes: usize,
    /// Per-frame bounds: rows, row flags, anomalies, seq jump, date horizon
    /// ([`crate::limits`]).
    pub frame_limits: crate::limits::FrameLimits,
    /// The zombie fence: claim each partition and mark every output with the claim's
    /// token ([`crate::fence`]). On by default; `FEEDER_ZOMBIE_FENCE=off` turns the
    /// default off, to measure its cost (never in production).
    pub zombie_fence: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            group_id: "feeder-stream".into(),
            client_id: "stream-0".into(),
            instance_id: None,
            replay_window: 4096,
            batch_max_records: 5000,
            batch_linger: Duration::from_millis(50),
            rules: RulesConfig::default(),
            device_labels: DeviceLabels::default(),
            snapshot_interval: Duration::from_secs(10),
            cohort_grace: Duration::from_secs(600),
            cohort_lateness: Duration::from_secs(120),
            cohort_tick: Some(Duration::from_secs(30)),
            registry: None,
            edge_proof: feeder_core::EdgeProof::Off,
            max_output_record_bytes: 1_000_000,
            frame_limits: crate::limits::FrameLimits::default(),
            zombie_fence: zombie_fence_default(),
            registry_topic: None,
        }
    }
}

impl StreamConfig {
    /// Refuses settings the stage cannot work with (checked by `crate::run` at start).
    pub fn validate(&self) -> Result<(), String> {
        let min = crate::limits::MIN_MAX_OUTPUT_RECORD_BYTES;
        // librdkafka's own ceiling for message.max.bytes
        let max = 1_000_000_000;
        if !(min..=max).contains(&self.max_output_record_bytes) {
            return Err(format!(
                "max_output_record_bytes must be within {min}..={max}, not {}",
                self.max_output_record_bytes
            ));
        }
        self.frame_limits.validate()?;
        Ok(())
    }
}

/// The default of [`StreamConfig::zombie_fence`]: on unless `FEEDER_ZOMBIE_FENCE=off`
/// ([`crate::fence`]).
pub fn zombie_fence_default() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| match std::env::var("FEEDER_ZOMBIE_FENCE").as_deref() {
        Ok("off") => {
            eprintln!("FEEDER_ZOMBIE_FENCE=off: the zombie fence is disabled (measurement only)");
            false
        }
        _ => true,
    })
}
