//! A constructor for [`v1::Reading`], the one every producer of readings (the simulator,
//! rule fixtures, benches) would otherwise write again: prost generates only the struct.

use crate::v1::{self, Unit};

impl v1::Reading {
    /// A reading with status 0 (no device-side quality flags).
    pub fn new(
        ts_ms: i64,
        interval_s: u32,
        obis: &str,
        value: i64,
        scaler: i32,
        unit: Unit,
    ) -> Self {
        Self {
            ts_ms,
            interval_s,
            obis: obis.to_string(),
            value,
            scaler,
            unit: unit as i32,
            status: 0,
        }
    }
}
