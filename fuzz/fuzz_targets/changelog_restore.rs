//! Fuzz target: arbitrary bytes as the records of one state changelog partition, through
//! the stream's restore (`Restored::record`, `Restored::validate`, `recovery::restore`),
//! then frames processed on the restored state. It must never panic, and the state held
//! is bounded by the bytes read. The normal suite runs the same path as a property test
//! (`services/feeder-stream/tests/changelog_props.rs`).
//!
//! Input: one byte, the checked log's end; then records `[key len: u8][key][value len:
//! u16 le][kind: u8][value]`, where kind 0 is the value as is, 1 a device snapshot
//! envelope (current format) around it, 2 a checkpoint (current format) whose positions
//! are its first bytes and whose partition state is the rest: so the fuzzer reaches the
//! state decoding without having to find protobuf framing first.

#![no_main]

use feeder_proto::pipeline::RawFrame;
use feeder_proto::v1::{Frame, SignedFrame};
use feeder_stream::changelog::{
    CHECKPOINT_KEY, Checkpoint, DeviceSnapshot, OutputPositions, Restored, STATE_FORMAT,
};
use feeder_stream::checks::PartitionState;
use feeder_stream::recovery::restore;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

/// One record's (key, value) from the input, or `None` when the input is used up.
fn record(rest: &mut &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let klen = take(rest, 1)?[0] as usize;
    let key = take(rest, klen)?.to_vec();
    let len = take(rest, 2)?;
    let vlen = u16::from_le_bytes([len[0], len[1]]) as usize;
    let kind = take(rest, 1)?[0];
    let value = take(rest, vlen.min(rest.len()))?;
    let small = |i: usize| i64::from(*value.get(i).unwrap_or(&0)) - 2;
    Some(match kind % 3 {
        0 => (key, value.to_vec()),
        1 => {
            let d = DeviceSnapshot {
                checked_next: small(0),
                format: STATE_FORMAT,
                state: value.get(1..).unwrap_or_default().to_vec().into(),
            };
            (key, d.encode_to_vec())
        }
        _ => {
            let cp = Checkpoint {
                checked_next: small(0),
                quarantine_next: small(1),
                anomalies_next: small(2),
                format: STATE_FORMAT,
                partition_state: value.get(3..).unwrap_or_default().to_vec().into(),
                raw_next: 0,
            };
            (CHECKPOINT_KEY.as_bytes().to_vec(), cp.encode_to_vec())
        }
    })
}

fn raw(device: &str, seq: u64) -> Vec<u8> {
    let frame = Frame {
        sent_at_ms: 1_700_000_000_000,
        ..Default::default()
    };
    RawFrame {
        signed_frame: SignedFrame {
            device_id: device.into(),
            seq,
            key_id: "k1".into(),
            payload: frame.encode_to_vec().into(),
            signature: vec![0; 64].into(),
        }
        .encode_to_vec()
        .into(),
        received_at_ms: 1_700_000_000_000,
        edge_id: "e".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let Some(end) = take(&mut rest, 1) else {
        return;
    };
    let mut changelog = Restored::default();
    while let Some((key, value)) = record(&mut rest) {
        changelog.record(&key, &value);
    }
    let ends = OutputPositions {
        checked: i64::from(end[0]),
        quarantine: 8,
        anomalies: 8,
    };
    let mut state = PartitionState::new(4096);
    restore(&mut state, &changelog, 0, ends);
    let ids: Vec<String> = changelog.devices.keys().cloned().collect();
    let held: usize = ids.iter().filter_map(|id| state.device_bytes(id)).sum();
    assert!(held <= data.len() * 32 + ids.len() * 4096, "{held} from {}", data.len());
    for (i, id) in ids.iter().enumerate() {
        for seq in [1, 9, 1 << 40] {
            state.process(i as i64, &raw(id, seq));
        }
    }
    // invariant: plain data always serializes
    state.take_dirty().expect("restored state serializes again");
});
