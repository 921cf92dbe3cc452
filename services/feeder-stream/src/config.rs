//! Stream-stage settings.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub group_id: String,
    pub client_id: String,
    /// Replay window per device (the contract's default is 4096 seqs).
    pub replay_window: u64,
    /// A batch closes at this many records...
    pub batch_max_records: usize,
    /// ...or this long after its first record.
    pub batch_linger: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            group_id: "feeder-stream".into(),
            client_id: "stream-0".into(),
            replay_window: 4096,
            batch_max_records: 5000,
            batch_linger: Duration::from_millis(50),
        }
    }
}
