//! Golden bytes of every record format the stream stage writes to a topic it reads back
//! (issue 16 item 3): the state changelog (the prost envelopes `ClaimRecord`,
//! `DeviceSnapshot`, `Checkpoint`, and the postcard device and partition state inside,
//! versioned by `STATE_FORMAT`) and the cohort tallies (`CohortTally`, and the JSON
//! written before it, still read). The cohort progress record's golden bytes are a unit
//! test beside it (`fleet/progress.rs`).
//!
//! Why: these records outlive the process that wrote them (a compacted changelog keeps a
//! silent device's state for months), so a change of layout must come with a version
//! bump and a reader for what is already in the wild. A test here failing means the
//! bytes changed: bump the format's version (and keep reading the old one), then
//! update the golden.

mod support;

use std::collections::BTreeMap;

use feeder_stream::StreamConfig;
use feeder_stream::changelog::{Checkpoint, ClaimRecord, DeviceSnapshot, STATE_FORMAT};
use feeder_stream::checks::PartitionState;
use feeder_stream::rules::cohort::Counts;
use feeder_stream::rules::cohort_fleet::WindowTally;
use prost::Message as _;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn changelog_envelopes_keep_their_bytes() {
    let claim = ClaimRecord {
        checked_at: 41,
        quarantine_at: 7,
        anomalies_at: 300,
    };
    assert_eq!(hex(&claim.encode_to_vec()), "0829100718ac02");
    let device = DeviceSnapshot {
        checked_next: 1_000,
        format: STATE_FORMAT,
        state: vec![1, 2, 3].into(),
    };
    assert_eq!(hex(&device.encode_to_vec()), "08e80710011a03010203");
    let cp = Checkpoint {
        checked_next: 1_000,
        quarantine_next: 20,
        anomalies_next: 3,
        format: STATE_FORMAT,
        partition_state: vec![9].into(),
        raw_next: 77,
    };
    assert_eq!(hex(&cp.encode_to_vec()), "08e8071014180320012a0109304d");
}

#[test]
fn the_device_and_partition_state_keep_their_layout_at_this_state_format() {
    assert_eq!(
        STATE_FORMAT, 1,
        "a new STATE_FORMAT: update the golden bytes below to its layout"
    );
    let mut st = PartitionState::from_config(&StreamConfig::default());
    const AT: i64 = 1_764_028_800_000;
    for seq in [1, 2, 5] {
        st.process(
            seq as i64,
            &support::raw_frame("mtr-1", seq, AT + seq as i64, "v1"),
        );
    }
    let dirty = st.take_dirty().expect("serializable state");
    assert_eq!(dirty.len(), 1);
    assert_eq!(dirty[0].0, "mtr-1");
    assert_eq!(
        hex(&dirty[0].1),
        DEVICE_STATE_V1,
        "device state layout changed"
    );
    assert_eq!(
        hex(&st.partition_bytes().expect("serializable")),
        PARTITION_STATE_V1,
        "partition state layout changed"
    );
}

const DEVICE_STATE_V1: &str =
    "0502030400000000b0e83bffffffffffffffffff01a8a2c2abfbe0c2e708ffffffffffffffffff01";
const PARTITION_STATE_V1: &str = "b0e83b";

fn tally() -> WindowTally {
    WindowTally {
        window: 490_008,
        partition: 3,
        fleet_usual: 800,
        fleet_reported: 600,
        cohorts: BTreeMap::from([
            (
                "module=bricky".to_string(),
                Counts {
                    usual: 200,
                    reported: 0,
                    fw_changed: 1,
                },
            ),
            (
                "module=bg95".to_string(),
                Counts {
                    usual: 300,
                    reported: 299,
                    fw_changed: 0,
                },
            ),
        ]),
    }
}

#[test]
fn a_cohort_tally_keeps_its_bytes() {
    let t = tally();
    assert_eq!(hex(&t.encode()), TALLY_PROTO);
    assert_eq!(WindowTally::decode(&t.encode()), Some(t));
}

const TALLY_PROTO: &str = "0898f41d100318a00620d8042a150a0b6d6f64756c653d62673935120608ac0210ab022a160a0d6d6f64756c653d627269636b79120508c8011801";

/// The JSON the partitions wrote before `CohortTally` (pinned while it was the current
/// format) still reads: tallies in flight during an upgrade are counted.
#[test]
fn a_json_tally_still_reads() {
    let mut t = tally();
    t.cohorts.remove("module=bg95");
    assert_eq!(WindowTally::decode(TALLY_JSON.as_bytes()), Some(t));
    assert_eq!(WindowTally::decode(b""), None);
    assert_eq!(WindowTally::decode(b"{not json"), None);
}

const TALLY_JSON: &str = r#"{"window":490008,"partition":3,"fleet_usual":800,"fleet_reported":600,"cohorts":{"module=bricky":{"usual":200,"reported":0,"fw_changed":1}}}"#;
