//! Noticing, before a commit, that this owner may have been replaced.
//!
//! # Why
//! The zombie fence (`feeder_kafka::fence`) makes every reader drop the outputs an owner
//! writes after a newer owner's claim. That protects the datasets from a zombie's late
//! outputs, but not the raw offsets: a replaced owner that does not know it was
//! replaced goes on deciding, its outputs are dropped by every reader, and it commits
//! the raw offsets they covered. Whoever recovers the partition next resumes after that
//! commit, and those frames are lost. Kafka itself refuses a commit from a member of an
//! older generation, but not every broker does: tansu 0.6 lets a member replaced under
//! static membership (a paused stage that comes back with the same
//! `group.instance.id`) commit as if nothing happened, and the stage it replaced claims
//! the partition back without being told. The zombie-fence test lost 7 of 24 frames
//! that way under load.
//!
//! # How
//! Only the owner of raw partition *p* writes to partitions *p* of the checked,
//! quarantine and anomalies topics (fleet findings share anomalies partition
//! [`FLEET_PARTITION`](crate::outputs::FLEET_PARTITION) and it is not followed). Between
//! the owner's claim and its outputs, nobody else's record has a place, so its outputs
//! land back to back, starting where its recovery found each log's end. A record of
//! anyone else among them (a newer owner's claim, a zombie's late output) shows as an
//! offset this owner did not fill. The stage then commits nothing for *p*, drops *p*'s
//! state, seeks back to its last commit and claims *p* again on the next record:
//! recovery keeps what the fence keeps and decides the rest again. A false alarm (a
//! zombie's late record, not a claim) costs one recovery, never a frame.
//!
//! Why that is enough: everything before this owner's positions is accounted for (its
//! claim, what recovery read, its own earlier outputs), so a newer claim that precedes
//! one of its outputs in a followed log takes an offset between the position and that
//! output, and the batch that wrote the output finds it before committing. A batch with
//! no output after a newer claim is kept whole by every reader, and its commit is safe.
//! The one case not covered: an anomaly in anomalies partition `FLEET_PARTITION` that
//! lands after a newer claim while the batch's other outputs precede it. The newer owner
//! produces that anomaly again (its frame is at or after the offset it resumed from),
//! unless it also stops before its first commit.
//!
//! The positions start where recovery found each log's end, so a record landing between
//! the recovery and the owner's first output also counts as someone else's: one more
//! recovery, nothing lost.

use crate::outputs::Output;

/// Where this owner's outputs of one output log landed during one batch, in any order.
#[derive(Debug, Default)]
pub(crate) struct Landings {
    checked: Vec<i64>,
    quarantine: Vec<i64>,
    anomalies: Vec<i64>,
}

/// An offset of an output log that this owner expected to fill and did not: another
/// writer's record is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interleaved {
    pub(crate) output: Output,
    /// The first offset not filled by this owner.
    pub(crate) at: i64,
}

impl Landings {
    /// Notes that an output landed at `offset` (outputs other than the three partition
    /// logs are not followed).
    pub(crate) fn note(&mut self, output: Output, offset: i64) {
        match output {
            Output::Checked => self.checked.push(offset),
            Output::Quarantine => self.quarantine.push(offset),
            Output::Anomalies => self.anomalies.push(offset),
            Output::Tally | Output::State | Output::Finding | Output::Progress => {}
        }
    }

    /// Checks the batch's landings against the logs' next offsets `next` (checked,
    /// quarantine, anomalies), advances them past this batch, and forgets the batch.
    /// `follow_anomalies` is false for the partition fleet findings share.
    pub(crate) fn settle(
        &mut self,
        next: [&mut i64; 3],
        follow_anomalies: bool,
    ) -> Option<Interleaved> {
        let [checked, quarantine, anomalies] = next;
        let mut found = None;
        for (output, offsets, next, follow) in [
            (Output::Checked, &mut self.checked, checked, true),
            (Output::Quarantine, &mut self.quarantine, quarantine, true),
            (
                Output::Anomalies,
                &mut self.anomalies,
                anomalies,
                follow_anomalies,
            ),
        ] {
            match back_to_back(*next, offsets) {
                Ok(end) => *next = end,
                Err(at) => {
                    *next = (*next).max(offsets.last().map_or(at, |o| o + 1));
                    if follow {
                        found = found.or(Some(Interleaved { output, at }));
                    }
                }
            }
            offsets.clear();
        }
        found
    }
}

/// Whether `offsets` (sorted here) fill `[next, next + len)` exactly: the next offset
/// after them, or the first offset of that range another writer holds. Free of I/O.
fn back_to_back(next: i64, offsets: &mut [i64]) -> Result<i64, i64> {
    offsets.sort_unstable();
    let mut expected = next;
    for &o in offsets.iter() {
        if o != expected {
            return Err(expected);
        }
        expected += 1;
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_back_to_back_in_any_order_are_ours() {
        assert_eq!(back_to_back(10, &mut []), Ok(10));
        assert_eq!(back_to_back(10, &mut [10, 11, 12]), Ok(13));
        // a record the guard sent again lands after the batch's later records
        assert_eq!(back_to_back(10, &mut [11, 12, 10]), Ok(13));
    }

    #[test]
    fn a_record_of_someone_else_among_ours_is_found() {
        // a claim at 10, before our first output
        assert_eq!(back_to_back(10, &mut [11, 12]), Err(10));
        // between two of ours
        assert_eq!(back_to_back(10, &mut [10, 12]), Err(11));
        // a duplicate offset cannot be ours twice
        assert_eq!(back_to_back(10, &mut [10, 10]), Err(11));
    }

    #[test]
    fn settle_reports_the_first_log_interleaved_and_moves_every_log_on() {
        let mut l = Landings::default();
        let (mut c, mut q, mut a) = (5, 7, 9);
        l.note(Output::Checked, 5);
        l.note(Output::Quarantine, 8); // 7 is someone else's
        l.note(Output::Anomalies, 9);
        l.note(Output::Tally, 100); // not a partition log
        let found = l.settle([&mut c, &mut q, &mut a], true);
        assert_eq!(
            found,
            Some(Interleaved {
                output: Output::Quarantine,
                at: 7
            })
        );
        assert_eq!((c, q, a), (6, 9, 10));
        // the batch is forgotten: the next one starts from the new positions
        l.note(Output::Checked, 6);
        assert_eq!(l.settle([&mut c, &mut q, &mut a], true), None);
        assert_eq!(c, 7);
    }

    #[test]
    fn anomalies_of_the_fleet_partition_are_not_followed() {
        let mut l = Landings::default();
        let (mut c, mut q, mut a) = (0, 0, 3);
        // a fleet finding took offset 3
        l.note(Output::Anomalies, 4);
        assert_eq!(l.settle([&mut c, &mut q, &mut a], false), None);
        assert_eq!(a, 5);
        l.note(Output::Anomalies, 6);
        assert!(l.settle([&mut c, &mut q, &mut a], true).is_some());
    }
}
