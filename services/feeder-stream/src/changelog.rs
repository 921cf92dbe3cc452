//! The state changelog: a compacted topic (`<prefix>.stream-state`) that holds the
//! latest state of every device of raw partition *p* in its partition *p*, so a new
//! owner restores a partition from it instead of replaying the whole checked log.
//!
//! # Why
//! Rebuilding state from the checked topic alone is bounded by that topic's retention: a
//! device silent for longer than the retention would come back with an empty replay
//! window, and a captured old frame of it would be accepted (and stored twice). The
//! changelog keeps one record per device for as long as the device exists, whatever
//! the data topics' retention, and makes a restart read one record per device plus
//! the few seconds of checked log written since the last snapshot.
//!
//! # Records
//! Every `snapshot_interval`, after a batch's outputs are acknowledged and before its
//! raw offsets are committed, the stage writes, per partition:
//! 1. one [`DeviceSnapshot`] per device whose state changed since the last snapshot
//!    (key = device id), carrying the checked-topic position its state includes;
//! 2. then one [`Checkpoint`] (key [`CHECKPOINT_KEY`], which no device id can be: `#`
//!    is outside the device-id alphabet) with the output positions every device record
//!    written before it is consistent with, and the partition-wide state.
//!
//! A crash between 1 and 2 leaves device records newer than the last checkpoint. They
//! are still the newest state of their devices (compaction may already have removed the
//! older one), so recovery keeps them and, while replaying the checked log from the
//! checkpoint, skips each such device's records below its own `checked_next`. Every
//! output of those records was acknowledged before the snapshot was written, so none is
//! missing.
//!
//! # Claims (the zombie fence)
//! A stage that takes partition *p* writes a [`ClaimRecord`] (key `#claim/<token>`, one
//! key per claim, so compaction keeps them all) after its claims in the output topics
//! (`crate::fence`). Every device and checkpoint record carries its writer's token in
//! the owner header. Reading the partition in log order, a record whose token is below
//! the largest claim before it was written by a replaced owner (a stalled stage that
//! resumed): it is not used, and if it is the latest record of its key (compaction may
//! have removed the valid one before it) the changelog is not usable and the partition
//! is rebuilt from the checked log. A record that lands before the next owner's claim
//! but names positions past that claim (the old owner's outputs that landed after it)
//! is refused the same way ([`Restored::validate`]).
//!
//! The state bytes are `postcard` (serde) encodings tagged with [`STATE_FORMAT`]. A
//! record of another format (an upgrade that changed the state layout) is not decoded:
//! recovery then falls back to replaying the whole checked partition, as before the
//! changelog existed.

use std::collections::{BTreeMap, HashMap, HashSet};

use feeder_kafka::fence::{FenceState, Mark, Verdict};

/// The checkpoint record's key; `#` cannot appear in a device id.
pub const CHECKPOINT_KEY: &str = "#checkpoint";

/// Prefix of a claim record's key (`#claim/<token>`).
pub const CLAIM_KEY_PREFIX: &str = "#claim/";

/// The changelog's records (`proto/feeder/pipeline/v1/stream_state.proto`).
pub use feeder_proto::pipeline::{Checkpoint, ClaimRecord, DeviceSnapshot};

/// A claim record's key: `#claim/<token>`.
pub fn claim_key(c: &ClaimRecord) -> String {
    format!("{CLAIM_KEY_PREFIX}{}", c.checked_at)
}

/// The largest token among `claims` whose claim in each topic lies before `start`.
pub fn tokens_before(
    claims: &BTreeMap<i64, ClaimRecord>,
    start: OutputPositions,
) -> OutputPositions {
    let before = |at: fn(&ClaimRecord) -> i64, from: i64| {
        claims
            .iter()
            .filter(|(_, c)| at(c) < from)
            .map(|(t, _)| *t)
            .max()
            .unwrap_or(0)
    };
    OutputPositions {
        checked: before(|c| c.checked_at, start.checked),
        quarantine: before(|c| c.quarantine_at, start.quarantine),
        anomalies: before(|c| c.anomalies_at, start.anomalies),
    }
}

/// Version of the serialized state layout; bump when `checks::Device` or the partition-wide
/// state changes shape.
pub const STATE_FORMAT: u32 = 1;

/// Next offsets of one partition of the output topics, as acknowledged by the broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputPositions {
    pub checked: i64,
    pub quarantine: i64,
    pub anomalies: i64,
}

impl OutputPositions {
    pub fn checkpoint(&self, partition_state: Vec<u8>, raw_next: i64) -> Checkpoint {
        Checkpoint {
            checked_next: self.checked,
            quarantine_next: self.quarantine,
            anomalies_next: self.anomalies,
            format: STATE_FORMAT,
            partition_state: partition_state.into(),
            raw_next,
        }
    }
}

/// What a read of one changelog partition found (the latest record per key).
#[derive(Debug, Default)]
pub struct Restored {
    pub checkpoint: Option<Checkpoint>,
    pub devices: HashMap<String, DeviceSnapshot>,
    /// Records that did not decode or carry another [`STATE_FORMAT`].
    pub unusable: u64,
    /// Claims by token ([`ClaimRecord`]).
    pub claims: BTreeMap<i64, ClaimRecord>,
    /// The owner token of the checkpoint and of each device record kept (absent: written
    /// before the fence existed).
    pub checkpoint_owner: Option<i64>,
    pub owners: HashMap<String, i64>,
    /// Keys whose latest record was written by a replaced owner.
    pub superseded: HashSet<String>,
    fence: FenceState,
}

impl Restored {
    /// Feeds one changelog record without fence headers (written before the fence).
    pub fn record(&mut self, key: &[u8], value: &[u8]) {
        self.record_marked(key, value, Mark::Unowned);
    }

    /// Feeds one changelog record, in log order, with its fence mark; later records
    /// replace earlier ones, unless written by a replaced owner.
    pub fn record_marked(&mut self, key: &[u8], value: &[u8], mark: Mark) {
        use prost::Message as _;
        let Ok(key) = std::str::from_utf8(key) else {
            self.unusable += 1;
            return;
        };
        match self.fence.judge(mark) {
            Verdict::Claim => {
                match ClaimRecord::decode(value) {
                    Ok(c)
                        if key.strip_prefix(CLAIM_KEY_PREFIX)
                            == Some(&c.checked_at.to_string()) =>
                    {
                        self.claims.insert(c.checked_at, c);
                    }
                    _ => self.unusable += 1,
                }
                return;
            }
            Verdict::Superseded => {
                self.superseded.insert(key.to_string());
                return;
            }
            Verdict::Keep => {}
        }
        self.superseded.remove(key);
        let owner = match mark {
            Mark::Owner(t) => Some(t),
            _ => None,
        };
        if key == CHECKPOINT_KEY {
            self.checkpoint_owner = owner;
            match Checkpoint::decode(value) {
                Ok(c) if c.format == STATE_FORMAT => self.checkpoint = Some(c),
                _ => {
                    self.unusable += 1;
                    self.checkpoint = None;
                }
            }
            return;
        }
        match owner {
            Some(t) => self.owners.insert(key.to_string(), t),
            None => self.owners.remove(key),
        };
        match DeviceSnapshot::decode(value) {
            Ok(d) if d.format == STATE_FORMAT => {
                self.devices.insert(key.to_string(), d);
            }
            _ => {
                self.unusable += 1;
                self.devices.remove(key);
            }
        }
    }

    /// Whether the partition can be restored from this changelog: a checkpoint exists
    /// and every record decoded (otherwise the full replay is the safe path).
    pub fn usable(&self) -> bool {
        self.checkpoint.is_some() && self.unusable == 0
    }

    /// The first claim after owner `token`'s (the owner that replaced it), if any.
    fn successor(&self, token: i64) -> Option<&ClaimRecord> {
        self.claims.range(token + 1..).next().map(|(_, c)| c)
    }

    /// Checks what decoded against the output logs as they are (`ends`: their next
    /// offsets): every position a checkpoint or device record names must lie within its
    /// log. A record that decodes is still input (another cluster's changelog, topics
    /// deleted and made again, a forged record); restoring from a position past a log's
    /// end would skip frames written there later. Invalid means: rebuild from the checked
    /// log.
    pub fn validate(&self, ends: OutputPositions) -> Result<(), Invalid> {
        if let Some(key) = self.superseded.iter().next() {
            return Err(Invalid::Superseded {
                key: key.chars().take(64).collect(),
            });
        }
        // written before the next owner's claim landed, but naming outputs past it: the
        // old owner's outputs that the next one (and every reader) ignores
        if let (Some(cp), Some(owner)) = (&self.checkpoint, self.checkpoint_owner)
            && let Some(next) = self.successor(owner)
            && (cp.checked_next > next.checked_at
                || cp.quarantine_next > next.quarantine_at
                || cp.anomalies_next > next.anomalies_at)
        {
            return Err(Invalid::Superseded {
                key: CHECKPOINT_KEY.into(),
            });
        }
        if let Some((id, _)) = self.devices.iter().find(|(id, d)| {
            self.owners
                .get(*id)
                .and_then(|t| self.successor(*t))
                .is_some_and(|next| d.checked_next > next.checked_at)
        }) {
            return Err(Invalid::Superseded {
                key: id.chars().take(64).collect(),
            });
        }
        let within = |at: i64, end: i64| (0..=end).contains(&at);
        if let Some(cp) = &self.checkpoint
            && (!within(cp.checked_next, ends.checked)
                || !within(cp.quarantine_next, ends.quarantine)
                || !within(cp.anomalies_next, ends.anomalies)
                || cp.raw_next < 0)
        {
            return Err(Invalid::CheckpointPastEnd {
                checkpoint: OutputPositions {
                    checked: cp.checked_next,
                    quarantine: cp.quarantine_next,
                    anomalies: cp.anomalies_next,
                },
                ends,
            });
        }
        if let Some((id, d)) = self
            .devices
            .iter()
            .find(|(_, d)| !within(d.checked_next, ends.checked))
        {
            return Err(Invalid::DevicePastEnd {
                // a device id is at most a short ASCII word; a forged key may be anything
                device: id.chars().take(64).collect(),
                checked_next: d.checked_next,
                end: ends.checked,
            });
        }
        Ok(())
    }

    /// Devices whose record is newer than the checkpoint (a snapshot cut short by a
    /// crash): their checked records below `checked_next` are already in their state.
    pub fn ahead_of_checkpoint(&self) -> HashMap<String, i64> {
        let at = self
            .checkpoint
            .as_ref()
            .map_or(i64::MAX, |c| c.checked_next);
        self.devices
            .iter()
            .filter(|(_, d)| d.checked_next > at)
            .map(|(id, d)| (id.clone(), d.checked_next))
            .collect()
    }
}

/// Why a changelog that decodes is not used ([`Restored::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("checkpoint positions {checkpoint:?} past the logs' ends {ends:?} (or negative)")]
    CheckpointPastEnd {
        checkpoint: OutputPositions,
        ends: OutputPositions,
    },
    #[error("device {device:?} snapshot at checked offset {checked_next}, past its end {end}")]
    DevicePastEnd {
        device: String,
        checked_next: i64,
        end: i64,
    },
    #[error("record {key:?} written by a stream owner replaced before it landed")]
    Superseded { key: String },
}

impl Invalid {
    /// The metric's `cause` label.
    pub fn label(&self) -> &'static str {
        match self {
            Invalid::CheckpointPastEnd { .. } => "checkpoint_past_end",
            Invalid::DevicePastEnd { .. } => "device_past_end",
            Invalid::Superseded { .. } => "superseded_owner",
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn device(checked_next: i64, format: u32) -> Vec<u8> {
        DeviceSnapshot {
            checked_next,
            format,
            state: vec![1, 2, 3].into(),
        }
        .encode_to_vec()
    }

    fn checkpoint(checked_next: i64) -> Vec<u8> {
        OutputPositions {
            checked: checked_next,
            quarantine: 0,
            anomalies: 0,
        }
        .checkpoint(vec![], 0)
        .encode_to_vec()
    }

    #[test]
    fn latest_record_per_key_wins_and_devices_past_the_checkpoint_are_found() {
        let mut r = Restored::default();
        r.record(b"m1", &device(10, STATE_FORMAT));
        r.record(b"m2", &device(10, STATE_FORMAT));
        r.record(CHECKPOINT_KEY.as_bytes(), &checkpoint(10));
        r.record(b"m1", &device(20, STATE_FORMAT));
        r.record(b"m3", &device(20, STATE_FORMAT));
        // a crash here: no checkpoint at 20
        assert!(r.usable());
        assert_eq!(r.checkpoint.as_ref().unwrap().checked_next, 10);
        assert_eq!(r.devices.len(), 3);
        assert_eq!(r.devices["m1"].checked_next, 20);
        let ahead = r.ahead_of_checkpoint();
        assert_eq!(ahead, HashMap::from([("m1".into(), 20), ("m3".into(), 20)]));
    }

    #[test]
    fn positions_past_the_logs_ends_are_invalid() {
        let ends = OutputPositions {
            checked: 10,
            quarantine: 5,
            anomalies: 5,
        };
        let mut r = Restored::default();
        r.record(b"m1", &device(10, STATE_FORMAT));
        r.record(CHECKPOINT_KEY.as_bytes(), &checkpoint(10));
        assert_eq!(r.validate(ends), Ok(()));
        let shorter = OutputPositions { checked: 9, ..ends };
        assert_eq!(
            r.validate(shorter).unwrap_err().label(),
            "checkpoint_past_end"
        );
        r.record(CHECKPOINT_KEY.as_bytes(), &checkpoint(-1));
        assert_eq!(r.validate(ends).unwrap_err().label(), "checkpoint_past_end");
        r.record(CHECKPOINT_KEY.as_bytes(), &checkpoint(3));
        r.record(b"m2", &device(i64::MAX, STATE_FORMAT));
        let e = r.validate(ends).unwrap_err();
        assert_eq!(e.label(), "device_past_end");
        assert!(e.to_string().contains("\"m2\""), "{e}");
    }

    #[test]
    fn no_checkpoint_or_another_format_is_not_usable() {
        let mut r = Restored::default();
        r.record(b"m1", &device(10, STATE_FORMAT));
        assert!(!r.usable(), "device records without a checkpoint");
        r.record(CHECKPOINT_KEY.as_bytes(), &checkpoint(10));
        assert!(r.usable());
        r.record(b"m2", &device(10, STATE_FORMAT + 1));
        assert!(!r.usable(), "a record of an unknown state format");
        let mut r = Restored::default();
        r.record(CHECKPOINT_KEY.as_bytes(), b"\xff\xff not protobuf");
        assert!(!r.usable());
    }

    fn claim(r: &mut Restored, checked_at: i64, quarantine_at: i64) {
        let c = ClaimRecord {
            checked_at,
            quarantine_at,
            anomalies_at: 0,
        };
        r.record_marked(
            claim_key(&c).as_bytes(),
            &c.encode_to_vec(),
            Mark::Claim(checked_at),
        );
    }

    fn positions(checked: i64, quarantine: i64) -> OutputPositions {
        OutputPositions {
            checked,
            quarantine,
            anomalies: 0,
        }
    }

    /// A's snapshot lands after B's claim: ignored, and as it is the latest record of its
    /// key, the changelog is refused until B writes that device again.
    #[test]
    fn a_replaced_owners_late_snapshot_is_never_restored() {
        let ends = positions(100, 100);
        let mut r = Restored::default();
        claim(&mut r, 0, 0);
        r.record_marked(b"m1", &device(5, STATE_FORMAT), Mark::Owner(0));
        claim(&mut r, 10, 3);
        r.record_marked(b"m1", &device(12, STATE_FORMAT), Mark::Owner(10));
        r.record_marked(CHECKPOINT_KEY.as_bytes(), &checkpoint(12), Mark::Owner(10));
        assert_eq!(r.validate(ends), Ok(()));
        // A, resumed, writes m1 as it had it: after B's claim
        r.record_marked(b"m1", &device(9, STATE_FORMAT), Mark::Owner(0));
        assert_eq!(r.devices["m1"].checked_next, 12, "not used");
        assert_eq!(r.validate(ends).unwrap_err().label(), "superseded_owner");
        // B snapshots m1 again: usable again
        r.record_marked(b"m1", &device(20, STATE_FORMAT), Mark::Owner(10));
        assert_eq!(r.validate(ends), Ok(()));
    }

    /// A's checkpoint lands before B's claim in the changelog but names outputs that A
    /// wrote after B's claim in the output logs: refused, like a device record that does.
    #[test]
    fn a_record_naming_outputs_past_the_next_claim_is_refused() {
        let ends = positions(100, 100);
        let mut r = Restored::default();
        claim(&mut r, 0, 0);
        r.record_marked(b"m1", &device(8, STATE_FORMAT), Mark::Owner(0));
        r.record_marked(CHECKPOINT_KEY.as_bytes(), &checkpoint(8), Mark::Owner(0));
        claim(&mut r, 10, 3);
        assert_eq!(
            r.validate(ends),
            Ok(()),
            "A's records before B's claim are A's"
        );
        // A's checkpoint naming checked offset 11, past B's claim at 10, landing before
        // B's claim in the changelog (B's changelog claim comes last of its four)
        let mut late = Restored::default();
        claim(&mut late, 0, 0);
        late.record_marked(CHECKPOINT_KEY.as_bytes(), &checkpoint(11), Mark::Owner(0));
        claim(&mut late, 10, 3);
        assert_eq!(late.validate(ends).unwrap_err().label(), "superseded_owner");
        let mut dev = Restored::default();
        claim(&mut dev, 0, 0);
        dev.record_marked(CHECKPOINT_KEY.as_bytes(), &checkpoint(8), Mark::Owner(0));
        dev.record_marked(b"m2", &device(11, STATE_FORMAT), Mark::Owner(0));
        claim(&mut dev, 10, 3);
        assert_eq!(dev.validate(ends).unwrap_err().label(), "superseded_owner");
    }

    #[test]
    fn the_token_in_force_where_each_log_is_read_from() {
        let mut r = Restored::default();
        claim(&mut r, 0, 0);
        claim(&mut r, 10, 3);
        claim(&mut r, 40, 7);
        let t = tokens_before(&r.claims, positions(11, 3));
        assert_eq!((t.checked, t.quarantine), (10, 0));
        let t = tokens_before(&r.claims, positions(41, 8));
        assert_eq!((t.checked, t.quarantine), (40, 40));
        let t = tokens_before(&r.claims, positions(0, 0));
        assert_eq!((t.checked, t.quarantine), (0, 0));
    }
}
