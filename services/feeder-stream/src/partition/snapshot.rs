//! Snapshots of the held partitions' state to the compacted state changelog
//! ([`crate::changelog`]): every changed device's state, then the partition's checkpoint
//! (the output positions the states are consistent with).
//!
//! Called only after the raw offsets the state covers are committed, so a checkpoint
//! never covers raw records whose offsets are not committed; the loop waits for the
//! acks before going on.

use std::time::Instant;

use prost::Message as _;

use super::Partitions;
use crate::changelog::{CHECKPOINT_KEY, DeviceSnapshot, STATE_FORMAT};
use crate::outputs::{Output, Outputs, Record};
use crate::{Error, Result, observe};

/// Writes every held partition's changed device state, then its checkpoint, and waits
/// for the acks.
pub(crate) async fn snapshot(parts: &mut Partitions, outputs: &mut Outputs) -> Result<()> {
    let started = Instant::now();
    let mut written = 0u64;
    for (p, part) in parts.iter_mut() {
        if part.state.dirty_devices() == 0 {
            continue;
        }
        let encode = |e: postcard::Error| Error::Snapshot {
            partition: p,
            source: e,
        };
        let devices = part.state.take_dirty().map_err(encode)?;
        let checked_next = part.positions.checked;
        let mut records: Vec<Record> = devices
            .into_iter()
            .map(|(id, state)| Record {
                output: Output::State,
                key: id,
                bytes: DeviceSnapshot {
                    checked_next,
                    format: STATE_FORMAT,
                    state: state.into(),
                }
                .encode_to_vec(),
            })
            .collect();
        written += records.len() as u64;
        let cp = part
            .positions
            .checkpoint(part.state.partition_bytes().map_err(encode)?, part.raw_next);
        records.push(Record {
            output: Output::State,
            key: CHECKPOINT_KEY.to_string(),
            bytes: cp.encode_to_vec(),
        });
        outputs.send(p, part.raw_next, part.owner, &records).await?;
    }
    // state records are not guarded: a refusal fails the snapshot
    outputs.acks(|_, _| None).await?;
    observe::snapshot(written, started.elapsed());
    Ok(())
}
