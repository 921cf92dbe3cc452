//! A signed frame's payload as readings, samples and events, whatever format the device
//! signed in: a protobuf `Frame` (Feeder's own), or an OCMF string (`crate::ocmf`). The
//! stream stage and the writer decode payloads only through [`decode`], so a next native
//! format is one more arm here.

use feeder_proto::v1::Frame;
use prost::Message;

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    pub frame: Frame,
    /// Flags the format itself gives each reading (`reading_flags[i]` for
    /// `frame.readings[i]`; empty for Feeder's own frames).
    pub reading_flags: Vec<Vec<String>>,
    /// An OCMF string's pagination (`PG`): letter and number.
    pub ocmf_page: Option<(char, u64)>,
}

impl Decoded {
    /// Whether the frame counts in a replay window of its own: OCMF fiscal pages (`F`)
    /// count independently of transaction pages (`T`), both per device.
    pub fn separate_window(&self) -> bool {
        matches!(self.ocmf_page, Some(('F', _)))
    }
}

/// The key of the replay window (and device state) of a frame: the device id, or for an
/// OCMF fiscal page `<device_id>#F` (`#` is never part of a device id).
pub fn window_key(device_id: &str, separate: bool) -> std::borrow::Cow<'_, str> {
    if separate {
        format!("{device_id}#F").into()
    } else {
        device_id.into()
    }
}

/// Decodes `payload`; the error says why it is not a payload of any format.
pub fn decode(payload: &[u8]) -> Result<Decoded, String> {
    if crate::ocmf::is_ocmf(payload) {
        let c = crate::ocmf::convert(payload).map_err(|e| e.message)?;
        return Ok(Decoded {
            frame: c.frame,
            reading_flags: c.flags,
            ocmf_page: Some(c.page),
        });
    }
    Ok(Decoded {
        frame: Frame::decode(payload).map_err(|e| e.to_string())?,
        reading_flags: Vec::new(),
        ocmf_page: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats() {
        let f = Frame {
            sent_at_ms: 5,
            ..Default::default()
        };
        assert_eq!(decode(&f.encode_to_vec()).unwrap().frame, f);
        let o = r#"OCMF|{"PG":"T1","RD":[{"TM":"2026-11-25T10:00:00,000+0000 S","RV":1.5,"RI":"1-b:1.8.0","RU":"kWh"}]}|{"SD":"00"}"#;
        let d = decode(o.as_bytes()).unwrap();
        assert_eq!(d.frame.readings[0].value, 15);
        assert_eq!(d.frame.readings[0].scaler, 2);
        assert_eq!(d.reading_flags, vec![vec!["ocmf_time_S".to_string()]]);
        assert!(!d.separate_window());
        let f = decode(o.replace("\"T1\"", "\"F1\"").as_bytes()).unwrap();
        assert!(f.separate_window());
        assert_eq!(window_key("evse-1", f.separate_window()), "evse-1#F");
        assert_eq!(window_key("evse-1", false), "evse-1");
        assert!(decode(b"OCMF|{}|{}").is_err());
        assert!(decode(&[0xff]).is_err());
    }
}
