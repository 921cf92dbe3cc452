//! A residential meter: one frame per simulated UTC day.
//!
//! Each day yields 96 fifteen-minute interval readings (`1-0:1.29.0`, energy imported
//! over the interval, Wh), then the cumulative import register (`1-0:1.8.0`, Wh) at the
//! end of the day, which equals the previous register plus the day's intervals, then
//! the L1 voltage (`1-0:32.7.0`, in 0.1 V) within 3 % of 230 V.
//!
//! The load shape is a night base load plus morning, midday and evening activity, scaled
//! per household and per day, with ±15 % noise per interval: plausible, never zero, and
//! free of the spikes and reversals the data checks look for.

use feeder_proto::v1::{Reading, Unit};
use rand::Rng;
use rand::rngs::SmallRng;

pub const INTERVAL_OBIS: &str = "1-0:1.29.0";
pub const REGISTER_OBIS: &str = "1-0:1.8.0";
pub const VOLTAGE_OBIS: &str = "1-0:32.7.0";
pub const INTERVALS_PER_DAY: usize = 96;
const INTERVAL_S: u32 = 900;
const INTERVAL_MS: i64 = INTERVAL_S as i64 * 1000;
const DAY_MS: i64 = 86_400_000;
/// Nominal voltage in the voltage reading's unit (scaler -1: 0.1 V).
const NOMINAL_DV: f64 = 2300.0;

#[derive(Debug, Clone)]
pub(crate) struct MeterModel {
    /// UTC midnight starting the next day to simulate.
    day_start_ms: i64,
    register_wh: i64,
    base_w: f64,
    scale: f64,
    /// This meter's offset from nominal voltage (a fraction).
    voltage_bias: f64,
}

impl MeterModel {
    pub(crate) fn new(rng: &mut SmallRng, start_ms: i64) -> Self {
        Self {
            day_start_ms: start_ms.div_euclid(DAY_MS) * DAY_MS,
            register_wh: rng.random_range(2_000_000..40_000_000),
            base_w: rng.random_range(90.0..220.0),
            scale: rng.random_range(0.6..1.4),
            voltage_bias: rng.random_range(-0.01..0.01),
        }
    }

    /// The readings of the next day; advances the day and the register.
    pub(crate) fn next_day(&mut self, rng: &mut SmallRng) -> Vec<Reading> {
        let day = self.day_start_ms;
        let day_factor = rng.random_range(0.85..1.15);
        let mut readings = Vec::with_capacity(INTERVALS_PER_DAY + 2);
        let mut sum_wh = 0;
        for slot in 0..INTERVALS_PER_DAY {
            let hour = (slot as f64 + 0.5) / 4.0;
            let watts =
                (self.base_w + self.scale * day_factor * activity_w(hour)) * noise(rng, 0.15);
            let wh = (watts * f64::from(INTERVAL_S) / 3600.0).round().max(1.0) as i64;
            sum_wh += wh;
            readings.push(Reading::new(
                day + (slot as i64 + 1) * INTERVAL_MS,
                INTERVAL_S,
                INTERVAL_OBIS,
                wh,
                0,
                Unit::Wh,
            ));
        }
        self.register_wh += sum_wh;
        let end = day + DAY_MS;
        readings.push(Reading::new(
            end,
            0,
            REGISTER_OBIS,
            self.register_wh,
            0,
            Unit::Wh,
        ));
        let volts = NOMINAL_DV * (1.0 + self.voltage_bias) * noise(rng, 0.015);
        let volts = volts.round().clamp(NOMINAL_DV * 0.975, NOMINAL_DV * 1.025) as i64;
        readings.push(Reading::new(end, 0, VOLTAGE_OBIS, volts, -1, Unit::V));
        self.day_start_ms = end;
        readings
    }
}

/// Household activity above base load, in W, at a UTC hour of day.
fn activity_w(hour: f64) -> f64 {
    bump(hour, 7.5, 1.0, 600.0) + bump(hour, 13.0, 2.5, 200.0) + bump(hour, 19.5, 1.5, 1000.0)
}

fn bump(x: f64, centre: f64, width: f64, height: f64) -> f64 {
    let z = (x - centre) / width;
    height * (-0.5 * z * z).exp()
}

/// A factor in `[1 - amp, 1 + amp]`, triangular around 1.
fn noise(rng: &mut SmallRng, amp: f64) -> f64 {
    1.0 + amp * (rng.random::<f64>() + rng.random::<f64>() - 1.0)
}
