//! Telematics plausibility: each fix against the previous one (carried across frames in
//! [`VehicleState`], 40 bytes per vehicle).
//!
//! - `null_island`: a (0, 0) position, a GNSS fix that failed; it is skipped by the
//!   distance rules.
//! - `impossible_speed`: distance / time between consecutive fixes (after allowing
//!   `gps_tolerance_m` of noise) above `max_speed_m_s`; when the jump is also longer than
//!   `teleport_m` it is a `teleport` instead (flag and anomaly).
//! - `odometer_rollback`: the odometer went down (flag and anomaly).
//! - `odometer_mismatch`: over a frame, odometer delta vs the summed GPS distance.
//! - `moving_ignition_off`: speed reported, or the position moved, with the ignition off
//!   on both fixes (the fix where the engine is switched off may still move).

use feeder_core::geo::haversine_m;
use feeder_proto::v1::{Frame, Sample};

use super::{Effective, Findings, Severity};

pub const NULL_ISLAND: &str = crate::rules::names::DeviceRule::NullIsland.as_str();
pub const IMPOSSIBLE_SPEED: &str = crate::rules::names::DeviceRule::ImpossibleSpeed.as_str();
pub const TELEPORT: &str = crate::rules::names::DeviceRule::Teleport.as_str();
pub const ODOMETER_ROLLBACK: &str = crate::rules::names::DeviceRule::OdometerRollback.as_str();
pub const ODOMETER_MISMATCH: &str = crate::rules::names::DeviceRule::OdometerMismatch.as_str();
pub const MOVING_IGNITION_OFF: &str = crate::rules::names::DeviceRule::MovingIgnitionOff.as_str();

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Fix {
    ts_ms: i64,
    lat: f64,
    lon: f64,
    odometer_m: u64,
    ignition: bool,
}

impl Fix {
    fn of(s: &Sample) -> Self {
        Self {
            ts_ms: s.ts_ms,
            lat: f64::from(s.lat_e7) / 1e7,
            lon: f64::from(s.lon_e7) / 1e7,
            odometer_m: s.odometer_m,
            ignition: s.ignition,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VehicleState {
    last: Option<Fix>,
}

impl VehicleState {
    pub fn check(&mut self, eff: &Effective<'_>, frame: &Frame, out: &mut Findings) {
        let t = eff.telematics;
        let mut gps_m = 0.0;
        let mut odo_m = 0.0;
        let mut rolled_back = false;
        for (i, s) in frame.samples.iter().enumerate() {
            if s.lat_e7 == 0 && s.lon_e7 == 0 {
                if eff.enabled(NULL_ISLAND) {
                    out.sample(i, NULL_ISLAND);
                }
                continue;
            }
            let fix = Fix::of(s);
            let speed_m_s = f64::from(s.speed_cm_s) / 100.0;
            let Some(prev) = self.last.filter(|p| p.ts_ms < fix.ts_ms) else {
                if self.last.is_none() {
                    self.last = Some(fix);
                }
                continue; // first fix, or older than the last one: nothing to compare
            };
            let d = haversine_m(prev.lat, prev.lon, fix.lat, fix.lon);
            let dt_s = fix.ts_ms.abs_diff(prev.ts_ms) as f64 / 1000.0;
            let implied = (d - t.gps_tolerance_m).max(0.0) / dt_s;
            if implied > t.max_speed_m_s {
                if d > t.teleport_m {
                    if eff.enabled(TELEPORT) {
                        out.sample(i, TELEPORT);
                        out.anomaly(
                            TELEPORT,
                            Severity::Warning,
                            prev.ts_ms,
                            fix.ts_ms,
                            format!("moved {:.0} m in {dt_s:.0} s", d),
                        );
                    }
                } else if eff.enabled(IMPOSSIBLE_SPEED) {
                    out.sample(i, IMPOSSIBLE_SPEED);
                }
            }
            if fix.odometer_m < prev.odometer_m {
                rolled_back = true;
                if eff.enabled(ODOMETER_ROLLBACK) {
                    out.sample(i, ODOMETER_ROLLBACK);
                    out.anomaly(
                        ODOMETER_ROLLBACK,
                        Severity::Warning,
                        prev.ts_ms,
                        fix.ts_ms,
                        format!("odometer {} -> {} m", prev.odometer_m, fix.odometer_m),
                    );
                }
            } else {
                odo_m += (fix.odometer_m - prev.odometer_m) as f64;
            }
            gps_m += d;
            if !s.ignition
                && (speed_m_s > t.ignition_off_speed_m_s
                    || (!prev.ignition && d > t.gps_tolerance_m))
                && eff.enabled(MOVING_IGNITION_OFF)
            {
                out.sample(i, MOVING_IGNITION_OFF);
            }
            self.last = Some(fix);
        }
        if !rolled_back
            && (odo_m - gps_m).abs() > t.odometer_tolerance_m.max(t.odometer_tolerance_rel * gps_m)
            && eff.enabled(ODOMETER_MISMATCH)
        {
            out.frame(ODOMETER_MISMATCH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RulesConfig;

    const T0: i64 = 1_700_000_000_000;

    /// A vehicle driving north at `speed` m/s, one fix a second, odometer in step.
    struct Track {
        lat: f64,
        lon: f64,
        ts: i64,
        odo: f64,
        state: VehicleState,
    }

    impl Track {
        fn new() -> Self {
            Self {
                lat: 52.5,
                lon: 13.4,
                ts: T0,
                odo: 1_000_000.0,
                state: VehicleState::default(),
            }
        }

        fn step(&mut self, speed: f64, ignition: bool) -> Sample {
            self.ts += 1000;
            self.lat += speed / 111_195.0;
            self.odo += speed;
            self.sample(speed, ignition)
        }

        fn sample(&self, speed: f64, ignition: bool) -> Sample {
            Sample {
                ts_ms: self.ts,
                lat_e7: (self.lat * 1e7).round() as i32,
                lon_e7: (self.lon * 1e7).round() as i32,
                speed_cm_s: (speed * 100.0) as u32,
                heading_cdeg: 0,
                odometer_m: self.odo as u64,
                ignition,
                battery_mv: 14_000,
            }
        }

        fn run(&mut self, samples: Vec<Sample>) -> Findings {
            let frame = Frame {
                samples,
                ..Default::default()
            };
            let mut out = Findings::default();
            self.state
                .check(&RulesConfig::default().effective(None), &frame, &mut out);
            out
        }

        fn drive(&mut self, n: usize) -> Vec<Sample> {
            (0..n).map(|_| self.step(20.0, true)).collect()
        }
    }

    fn flags(out: &Findings) -> Vec<(u32, Vec<&'static str>)> {
        out.sample_flags
            .iter()
            .map(|(i, f)| (*i, f.clone()))
            .collect()
    }

    #[test]
    fn clean_track_has_no_findings_across_frames() {
        let mut t = Track::new();
        for _ in 0..5 {
            let s = t.drive(60);
            assert!(t.run(s).is_empty());
        }
        let parked: Vec<_> = (0..60).map(|_| t.step(0.0, false)).collect();
        assert!(t.run(parked).is_empty());
    }

    #[test]
    fn teleport_and_impossible_speed() {
        let mut t = Track::new();
        let mut s = t.drive(10);
        t.lat += 0.5; // ~55 km in a second, odometer unchanged
        s.push(t.step(20.0, true));
        s.extend(t.drive(5));
        let out = t.run(s);
        assert_eq!(flags(&out), [(10, vec![TELEPORT])]);
        assert_eq!(out.anomalies.len(), 1);
        assert_eq!(out.anomalies[0].rule, TELEPORT);
        // and the odometer disagrees with the GPS distance over the frame
        assert_eq!(out.frame_flags, [ODOMETER_MISMATCH]);

        let mut t = Track::new();
        let mut s = t.drive(10);
        s.push(t.step(120.0, true)); // 120 m/s, odometer following
        s.extend(t.drive(5));
        let out = t.run(s);
        assert_eq!(flags(&out), [(10, vec![IMPOSSIBLE_SPEED])]);
        assert!(out.anomalies.is_empty() && out.frame_flags.is_empty());
    }

    #[test]
    fn odometer_rollback_and_mismatch() {
        let mut t = Track::new();
        let mut s = t.drive(10);
        t.odo -= 5_000.0;
        s.extend(t.drive(3));
        let out = t.run(s);
        assert_eq!(flags(&out), [(10, vec![ODOMETER_ROLLBACK])]);
        assert_eq!(out.anomalies[0].rule, ODOMETER_ROLLBACK);
        assert!(out.frame_flags.is_empty());

        // an odometer counting double
        let mut t = Track::new();
        let mut s = Vec::new();
        for _ in 0..60 {
            t.odo += 20.0;
            s.push(t.step(20.0, true));
        }
        let out = t.run(s);
        assert_eq!(out.frame_flags, [ODOMETER_MISMATCH]);
        assert!(out.sample_flags.is_empty());
    }

    #[test]
    fn null_island_and_moving_with_ignition_off() {
        let mut t = Track::new();
        let mut s = t.drive(3);
        let mut zero = t.sample(20.0, true);
        zero.lat_e7 = 0;
        zero.lon_e7 = 0;
        s.push(zero);
        s.extend(t.drive(2));
        let out = t.run(s);
        assert_eq!(flags(&out), [(3, vec![NULL_ISLAND])]);

        // the fix where the engine is switched off may still roll; after that, no move
        let mut t = Track::new();
        let mut s = t.drive(3);
        let mut stopping = t.step(5.0, false); // rolled 5 m, reports standstill
        stopping.speed_cm_s = 0;
        s.push(stopping);
        s.push(t.step(0.0, false));
        s.push(t.step(8.0, false)); // moving 8 m/s with the ignition off
        let mut towed = t.step(0.0, false);
        t.lat += 0.0005; // ~56 m with the ignition off and no speed reported
        towed.lat_e7 = (t.lat * 1e7).round() as i32;
        s.push(towed);
        let out = t.run(s);
        assert_eq!(
            flags(&out),
            [
                (5, vec![MOVING_IGNITION_OFF]),
                (6, vec![MOVING_IGNITION_OFF])
            ]
        );
    }
}
