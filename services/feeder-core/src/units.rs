//! DLMS/COSEM unit codes (as in `feeder.v1.Unit`) and the unit strings of the datasets.

use feeder_proto::v1::Unit;

/// The analysts' unit string for a unit code; `None` for unspecified or unknown codes.
pub fn unit_name(code: i32) -> Option<&'static str> {
    Some(match Unit::try_from(code).ok()? {
        Unit::Unspecified => return None,
        Unit::M3 => "m3",
        Unit::Celsius => "degC",
        Unit::W => "W",
        Unit::Va => "VA",
        Unit::Var => "var",
        Unit::Wh => "Wh",
        Unit::Vah => "VAh",
        Unit::Varh => "varh",
        Unit::A => "A",
        Unit::V => "V",
        Unit::Hz => "Hz",
    })
}

/// `value_raw × 10^scaler`.
pub fn scaled_value(raw: i64, scaler: i32) -> f64 {
    raw as f64 * 10f64.powi(scaler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(unit_name(Unit::Wh as i32), Some("Wh"));
        assert_eq!(unit_name(Unit::Varh as i32), Some("varh"));
        assert_eq!(unit_name(Unit::Celsius as i32), Some("degC"));
        assert_eq!(unit_name(0), None);
        assert_eq!(unit_name(999), None);
    }

    #[test]
    fn scaling() {
        assert_eq!(scaled_value(2305, -1), 230.5);
        assert_eq!(scaled_value(12, 3), 12000.0);
        assert_eq!(scaled_value(-7, 0), -7.0);
    }
}
