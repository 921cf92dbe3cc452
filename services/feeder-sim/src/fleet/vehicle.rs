//! A vehicle's telematics unit: one frame per simulated minute, 60 fixes at 1 Hz (or,
//! reporting every fix, one frame per fix).
//!
//! The vehicle alternates driving (target speeds 8..30 m/s, acceleration at most 2 m/s²,
//! braking at most 3 m/s²), short stops with the ignition on, and rarer parking with
//! the ignition off. Heading changes at most 6°/s, so tracks are smooth; near the edge
//! of its region box the vehicle steers back towards the centre. The odometer adds the
//! distance actually moved, so it matches the haversine distance between fixes.

use feeder_proto::v1::Sample;
use rand::Rng;
use rand::rngs::SmallRng;

use super::geo::{bearing_deg, destination};

pub const SAMPLES_PER_FRAME: usize = 60;
pub const MAX_SPEED_M_S: f64 = 30.0;
const SAMPLE_MS: i64 = 1000;
const MAX_ACCEL: f64 = 2.0;
const MAX_BRAKE: f64 = 3.0;
const MAX_TURN_DEG_S: f64 = 6.0;
const BATTERY_RUNNING_MV: f64 = 14_100.0;
const BATTERY_RESTING_MV: f64 = 12_680.0;

/// A latitude/longitude box, degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionBox {
    pub lat_min: f64,
    pub lat_max: f64,
    pub lon_min: f64,
    pub lon_max: f64,
}

impl RegionBox {
    fn centre(&self) -> (f64, f64) {
        (
            (self.lat_min + self.lat_max) / 2.0,
            (self.lon_min + self.lon_max) / 2.0,
        )
    }

    /// Whether the point is inside the box shrunk by `margin` of its size on every side.
    fn contains_inner(&self, lat: f64, lon: f64, margin: f64) -> bool {
        let dlat = (self.lat_max - self.lat_min) * margin;
        let dlon = (self.lon_max - self.lon_min) * margin;
        (self.lat_min + dlat..=self.lat_max - dlat).contains(&lat)
            && (self.lon_min + dlon..=self.lon_max - dlon).contains(&lon)
    }
}

/// The box a vehicle of a `region` label drives in (unknown regions get a central box).
pub fn region_box(region: &str) -> RegionBox {
    let (lat_min, lat_max, lon_min, lon_max) = match region {
        "north" => (53.3, 54.2, 8.8, 11.0),
        "south" => (47.8, 48.6, 10.8, 12.4),
        "east" => (52.0, 52.8, 12.8, 14.0),
        "west" => (50.6, 51.6, 6.5, 7.8),
        _ => (50.0, 51.0, 8.5, 10.0),
    };
    RegionBox {
        lat_min,
        lat_max,
        lon_min,
        lon_max,
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Drive {
        target: f64,
        remaining_s: u32,
    },
    /// Traffic light or junction: ignition stays on.
    Stop {
        remaining_s: u32,
    },
    /// Parked: ignition off once stopped.
    Park {
        remaining_s: u32,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct VehicleModel {
    region: RegionBox,
    lat: f64,
    lon: f64,
    heading_deg: f64,
    turn_rate: f64,
    speed: f64,
    odometer_m: f64,
    battery_mv: f64,
    mode: Mode,
    next_ts_ms: i64,
    /// Fixes per frame: a minute's ([`SAMPLES_PER_FRAME`]), or 1 for a unit reporting
    /// every fix as it is taken.
    fixes_per_frame: usize,
}

impl VehicleModel {
    pub(crate) fn new(rng: &mut SmallRng, region: RegionBox, start_ms: i64) -> Self {
        // start in the inner 60 % of the box, away from where it steers back
        let (dlat, dlon) = (
            (region.lat_max - region.lat_min) * 0.2,
            (region.lon_max - region.lon_min) * 0.2,
        );
        Self {
            region,
            lat: rng.random_range(region.lat_min + dlat..region.lat_max - dlat),
            lon: rng.random_range(region.lon_min + dlon..region.lon_max - dlon),
            heading_deg: rng.random_range(0.0..360.0),
            turn_rate: 0.0,
            speed: 0.0,
            odometer_m: rng.random_range(5_000_000.0..200_000_000.0),
            battery_mv: BATTERY_RUNNING_MV,
            mode: Mode::Stop {
                remaining_s: rng.random_range(1..20),
            },
            next_ts_ms: start_ms,
            fixes_per_frame: SAMPLES_PER_FRAME,
        }
    }

    /// Frames carry one fix each from now on (a 1 Hz unit reporting every second).
    pub(crate) fn report_every_fix(&mut self) {
        self.fixes_per_frame = 1;
    }

    /// The next frame's fixes, one second apart.
    pub(crate) fn next_samples(&mut self, rng: &mut SmallRng) -> Vec<Sample> {
        (0..self.fixes_per_frame)
            .map(|_| {
                self.step(rng);
                let s = self.sample();
                self.next_ts_ms += SAMPLE_MS;
                s
            })
            .collect()
    }

    fn ignition(&self) -> bool {
        !matches!(self.mode, Mode::Park { .. } if self.speed == 0.0)
    }

    /// Advances one second.
    fn step(&mut self, rng: &mut SmallRng) {
        self.mode = match self.mode {
            Mode::Drive { remaining_s: 0, .. } => {
                if rng.random_bool(0.8) {
                    Mode::Stop {
                        remaining_s: rng.random_range(5..=60),
                    }
                } else {
                    Mode::Park {
                        remaining_s: rng.random_range(120..=900),
                    }
                }
            }
            Mode::Drive {
                target,
                remaining_s,
            } => Mode::Drive {
                target: if rng.random_bool(1.0 / 30.0) {
                    pick_target(rng)
                } else {
                    target
                },
                remaining_s: remaining_s - 1,
            },
            // waiting starts once the vehicle has come to a halt
            Mode::Stop { remaining_s } | Mode::Park { remaining_s } if self.speed > 0.0 => {
                self.mode_with_remaining(remaining_s)
            }
            Mode::Stop { remaining_s: 0 } | Mode::Park { remaining_s: 0 } => Mode::Drive {
                target: pick_target(rng),
                remaining_s: rng.random_range(60..=600),
            },
            Mode::Stop { remaining_s } | Mode::Park { remaining_s } => {
                self.mode_with_remaining(remaining_s - 1)
            }
        };

        let target = match self.mode {
            Mode::Drive { target, .. } => target,
            Mode::Stop { .. } | Mode::Park { .. } => 0.0,
        };
        let mut dv = (target - self.speed).clamp(-MAX_BRAKE, MAX_ACCEL);
        if target > 0.0 {
            dv += rng.random_range(-0.3..0.3);
        }
        let mut new_speed = (self.speed + dv).clamp(0.0, MAX_SPEED_M_S);
        if target == 0.0 && new_speed < 0.1 {
            new_speed = 0.0;
        }

        if new_speed > 0.5 {
            if self.region.contains_inner(self.lat, self.lon, 0.1) {
                self.turn_rate = self.turn_rate * 0.9 + rng.random_range(-1.0..1.0);
            } else {
                let (clat, clon) = self.region.centre();
                let to_centre = bearing_deg(self.lat, self.lon, clat, clon);
                self.turn_rate = (to_centre - self.heading_deg + 540.0).rem_euclid(360.0) - 180.0;
            }
            // slower turns at speed, as on real roads
            let max_turn = MAX_TURN_DEG_S * (1.0 - 0.5 * new_speed / MAX_SPEED_M_S);
            self.turn_rate = self.turn_rate.clamp(-max_turn, max_turn);
            self.heading_deg = (self.heading_deg + self.turn_rate).rem_euclid(360.0);
        }

        let dist = (self.speed + new_speed) / 2.0;
        if dist > 0.0 {
            (self.lat, self.lon) = destination(self.lat, self.lon, self.heading_deg, dist);
            self.odometer_m += dist;
        }
        self.speed = new_speed;

        let battery_target = if self.ignition() {
            BATTERY_RUNNING_MV
        } else {
            BATTERY_RESTING_MV
        };
        self.battery_mv += (battery_target - self.battery_mv) * 0.2 + rng.random_range(-15.0..15.0);
        self.battery_mv = self.battery_mv.clamp(12_600.0, 14_400.0);
    }

    fn mode_with_remaining(&self, remaining_s: u32) -> Mode {
        match self.mode {
            Mode::Park { .. } => Mode::Park { remaining_s },
            _ => Mode::Stop { remaining_s },
        }
    }

    fn sample(&self) -> Sample {
        Sample {
            ts_ms: self.next_ts_ms,
            lat_e7: (self.lat * 1e7).round() as i32,
            lon_e7: (self.lon * 1e7).round() as i32,
            speed_cm_s: (self.speed * 100.0).round() as u32,
            heading_cdeg: ((self.heading_deg * 100.0).round() as u32) % 36_000,
            odometer_m: self.odometer_m.floor() as u64,
            ignition: self.ignition(),
            battery_mv: self.battery_mv.round() as u32,
        }
    }
}

/// A cruising speed: mostly town (8..16 m/s), sometimes open road (up to 30 m/s).
fn pick_target(rng: &mut SmallRng) -> f64 {
    if rng.random_bool(0.7) {
        rng.random_range(8.0..16.0)
    } else {
        rng.random_range(16.0..MAX_SPEED_M_S)
    }
}
