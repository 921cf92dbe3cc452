//! Spherical geometry shared by the vehicle simulator and the stream stage's telematics
//! rules.
//!
//! Simulated positions move with the great-circle destination formula, and distances use
//! the haversine formula on the same sphere, so a vehicle's odometer and the distance
//! between its fixes agree up to rounding. The plausibility rules measure with this same
//! function: one formula in one place, so a simulated clean track can never be flagged
//! because the two sides disagree about the Earth.

/// Mean Earth radius, metres.
pub const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// Great-circle distance in metres between two points in degrees.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

/// The point `dist_m` metres from `(lat, lon)` along initial bearing `heading_deg`
/// (0 = north, clockwise).
pub fn destination(lat: f64, lon: f64, heading_deg: f64, dist_m: f64) -> (f64, f64) {
    let d = dist_m / EARTH_RADIUS_M;
    let th = heading_deg.to_radians();
    let p1 = lat.to_radians();
    let l1 = lon.to_radians();
    let p2 = (p1.sin() * d.cos() + p1.cos() * d.sin() * th.cos()).asin();
    let l2 = l1 + (th.sin() * d.sin() * p1.cos()).atan2(d.cos() - p1.sin() * p2.sin());
    (p2.to_degrees(), l2.to_degrees())
}

/// Initial bearing in degrees `[0, 360)` from the first point to the second.
pub fn bearing_deg(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dl = (lon2 - lon1).to_radians();
    let y = dl.sin() * p2.cos();
    let x = p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_and_haversine_agree() {
        for heading in [0.0, 45.0, 90.0, 181.0, 300.0] {
            let (lat, lon) = destination(52.5, 13.4, heading, 1000.0);
            let d = haversine_m(52.5, 13.4, lat, lon);
            assert!((d - 1000.0).abs() < 1e-6, "{heading}: {d}");
            let b = bearing_deg(52.5, 13.4, lat, lon);
            let diff = (b - heading + 540.0).rem_euclid(360.0) - 180.0;
            assert!(diff.abs() < 1e-6, "{heading}: {b}");
        }
        // one degree of latitude is about 111.2 km
        assert!((haversine_m(50.0, 7.0, 51.0, 7.0) - 111_195.0).abs() < 1.0);
    }
}
