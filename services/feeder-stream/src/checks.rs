//! The per-record decision, free of I/O: decode, then classify against the device's
//! replay window. Everything refused keeps the device's bytes and a snake_case reason.

use std::collections::HashMap;

use feeder_proto::pipeline::{CheckedFrame, QuarantinedFrame, RawFrame};
use feeder_proto::v1::{Frame, SignedFrame};
use prost::Message;

use crate::window::{SeqWindow, Verdict};

/// What one raw record becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Checked(CheckedFrame),
    Quarantined(QuarantinedFrame),
}

impl Outcome {
    pub fn device_id(&self) -> &str {
        match self {
            Outcome::Checked(c) => &c.device_id,
            Outcome::Quarantined(q) => &q.device_id,
        }
    }
}

/// Replay windows of the devices of one partition.
#[derive(Debug, Default)]
pub struct PartitionState {
    devices: HashMap<String, SeqWindow>,
    window: u64,
}

impl PartitionState {
    pub fn new(window: u64) -> Self {
        Self {
            devices: HashMap::new(),
            window,
        }
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Replays an accepted frame from the checked log (recovery).
    pub fn apply_accepted(&mut self, device_id: &str, seq: u64) {
        let window = self.window;
        self.window_mut(device_id).accept(seq, window);
    }

    fn window_mut(&mut self, device_id: &str) -> &mut SeqWindow {
        if !self.devices.contains_key(device_id) {
            self.devices
                .insert(device_id.to_string(), SeqWindow::default());
        }
        // invariant: inserted just above when missing
        self.devices
            .get_mut(device_id)
            .expect("window inserted above")
    }

    /// Decides what the raw record at `offset` becomes, and updates the window.
    pub fn process(&mut self, offset: i64, value: &[u8]) -> Outcome {
        let quarantine = |received_at_ms,
                          edge_id: String,
                          device_id: String,
                          seq,
                          reason: &str,
                          detail: String,
                          raw: bytes::Bytes| {
            Outcome::Quarantined(QuarantinedFrame {
                received_at_ms,
                device_id,
                seq,
                reason: reason.to_string(),
                detail,
                raw,
                source_offset: offset,
                edge_id,
            })
        };
        let raw = match RawFrame::decode(value) {
            Ok(r) => r,
            Err(e) => {
                return quarantine(
                    0,
                    String::new(),
                    String::new(),
                    0,
                    "undecodable_record",
                    e.to_string(),
                    bytes::Bytes::copy_from_slice(value),
                );
            }
        };
        let sf = match SignedFrame::decode(raw.signed_frame.clone()) {
            Ok(f) => f,
            Err(e) => {
                return quarantine(
                    raw.received_at_ms,
                    raw.edge_id,
                    String::new(),
                    0,
                    "malformed_frame",
                    e.to_string(),
                    raw.signed_frame,
                );
            }
        };
        if let Err(e) = Frame::decode(sf.payload.clone()) {
            return quarantine(
                raw.received_at_ms,
                raw.edge_id,
                sf.device_id,
                sf.seq,
                "malformed_payload",
                e.to_string(),
                raw.signed_frame,
            );
        }
        let window = self.window;
        let w = self.window_mut(&sf.device_id);
        match w.classify(sf.seq, window) {
            Verdict::Duplicate => quarantine(
                raw.received_at_ms,
                raw.edge_id,
                sf.device_id,
                sf.seq,
                "duplicate",
                "seq already accepted".into(),
                raw.signed_frame,
            ),
            Verdict::TooOld => {
                let detail = format!(
                    "seq older than the replay window ({window}) behind {}",
                    w.highest()
                );
                quarantine(
                    raw.received_at_ms,
                    raw.edge_id,
                    sf.device_id,
                    sf.seq,
                    "too_old",
                    detail,
                    raw.signed_frame,
                )
            }
            Verdict::New { gap_before } => {
                w.accept(sf.seq, window);
                let mut frame_flags = Vec::new();
                if gap_before {
                    frame_flags.push("gap_before".to_string());
                }
                Outcome::Checked(CheckedFrame {
                    device_id: sf.device_id,
                    seq: sf.seq,
                    key_id: sf.key_id,
                    payload: sf.payload,
                    signature: sf.signature,
                    received_at_ms: raw.received_at_ms,
                    edge_id: raw.edge_id,
                    frame_flags,
                    reading_flags: Vec::new(),
                    sample_flags: Vec::new(),
                    source_offset: offset,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(device: &str, seq: u64, payload: Vec<u8>) -> Vec<u8> {
        let sf = SignedFrame {
            device_id: device.into(),
            seq,
            key_id: "k1".into(),
            payload: payload.into(),
            signature: vec![1; 64].into(),
        };
        RawFrame {
            signed_frame: sf.encode_to_vec().into(),
            received_at_ms: 1000,
            edge_id: "e".into(),
        }
        .encode_to_vec()
    }

    fn frame() -> Vec<u8> {
        Frame {
            sent_at_ms: 1,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn reason(o: &Outcome) -> &str {
        match o {
            Outcome::Checked(_) => "checked",
            Outcome::Quarantined(q) => &q.reason,
        }
    }

    #[test]
    fn table_of_outcomes() {
        let mut st = PartitionState::new(4);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (raw("d1", 1, frame()), "checked"),
            (raw("d1", 1, frame()), "duplicate"),
            (raw("d1", 3, frame()), "checked"), // gap_before
            (raw("d1", 2, frame()), "checked"), // late, inside the window
            (raw("d1", 10, frame()), "checked"),
            (raw("d1", 5, frame()), "too_old"),
            (raw("d2", 1, vec![0xff, 0xff]), "malformed_payload"),
            (
                RawFrame {
                    signed_frame: vec![0xff].into(),
                    received_at_ms: 1,
                    edge_id: "e".into(),
                }
                .encode_to_vec(),
                "malformed_frame",
            ),
            (vec![0xff, 0x01], "undecodable_record"),
        ];
        for (i, (value, want)) in cases.iter().enumerate() {
            let out = st.process(i as i64, value);
            assert_eq!(reason(&out), *want, "case {i}");
            match &out {
                Outcome::Quarantined(q) => {
                    assert_eq!(q.source_offset, i as i64);
                    assert!(!q.raw.is_empty());
                }
                Outcome::Checked(c) => {
                    assert_eq!(c.source_offset, i as i64);
                    assert_eq!(
                        c.frame_flags.contains(&"gap_before".to_string()),
                        i == 2 || i == 4,
                        "case {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn quarantine_keeps_the_exact_signed_bytes() {
        let mut st = PartitionState::new(4096);
        let v = raw("d", 1, frame());
        st.process(0, &v);
        let Outcome::Quarantined(q) = st.process(1, &v) else {
            panic!()
        };
        let r = RawFrame::decode(v.as_slice()).unwrap();
        assert_eq!(q.raw, r.signed_frame);
    }

    #[test]
    fn rebuilt_state_refuses_replays() {
        let mut st = PartitionState::new(4096);
        st.apply_accepted("d", 1);
        st.apply_accepted("d", 2);
        assert_eq!(reason(&st.process(5, &raw("d", 2, frame()))), "duplicate");
        assert_eq!(reason(&st.process(6, &raw("d", 3, frame()))), "checked");
    }
}
