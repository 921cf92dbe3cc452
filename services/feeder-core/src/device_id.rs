//! Device id syntax: 1..64 bytes of `[A-Za-z0-9._:-]`.
//!
//! Checked before any registry lookup or signature work, so junk costs almost nothing.

pub const MAX_DEVICE_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("device_id is empty")]
    Empty,
    #[error("device_id is longer than {MAX_DEVICE_ID_LEN} bytes")]
    TooLong,
    #[error("device_id has a character outside [A-Za-z0-9._:-]")]
    BadChar,
}

pub fn validate_device_id(id: &str) -> Result<(), DeviceIdError> {
    if id.is_empty() {
        return Err(DeviceIdError::Empty);
    }
    if id.len() > MAX_DEVICE_ID_LEN {
        return Err(DeviceIdError::TooLong);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(DeviceIdError::BadChar);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        let cases: &[(&str, Result<(), DeviceIdError>)] = &[
            ("mtr-000001", Ok(())),
            ("a.b_c:d-E9", Ok(())),
            (&"x".repeat(64), Ok(())),
            ("", Err(DeviceIdError::Empty)),
            (&"x".repeat(65), Err(DeviceIdError::TooLong)),
            ("mtr 1", Err(DeviceIdError::BadChar)),
            ("mtr/1", Err(DeviceIdError::BadChar)),
            ("mtré", Err(DeviceIdError::BadChar)),
        ];
        for (id, want) in cases {
            assert_eq!(&validate_device_id(id), want, "{id:?}");
        }
    }
}
