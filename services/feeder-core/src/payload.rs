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
}

/// Decodes `payload`; the error says why it is not a payload of any format.
pub fn decode(payload: &[u8]) -> Result<Decoded, String> {
    if crate::ocmf::is_ocmf(payload) {
        let c = crate::ocmf::convert(payload).map_err(|e| e.message)?;
        return Ok(Decoded {
            frame: c.frame,
            reading_flags: c.flags,
        });
    }
    Ok(Decoded {
        frame: Frame::decode(payload).map_err(|e| e.to_string())?,
        reading_flags: Vec::new(),
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
        let o = br#"OCMF|{"PG":"T1","RD":[{"TM":"2026-11-25T10:00:00,000+0000 S","RV":1.5,"RI":"1-b:1.8.0","RU":"kWh"}]}|{"SD":"00"}"#;
        let d = decode(o).unwrap();
        assert_eq!(d.frame.readings[0].value, 15);
        assert_eq!(d.frame.readings[0].scaler, 2);
        assert_eq!(d.reading_flags, vec![vec!["ocmf_time_S".to_string()]]);
        assert!(decode(b"OCMF|{}|{}").is_err());
        assert!(decode(&[0xff]).is_err());
    }
}
