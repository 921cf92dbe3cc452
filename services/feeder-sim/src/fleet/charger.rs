//! An EV charger with an OCMF meter (device contract v1.1): one frame per charging
//! session, signed by the meter itself in OCMF.
//!
//! A session starts a few hours after the previous one ended (sessions move forward a
//! few hours each, so a fleet played for a minute stays within days of its start), lasts
//! 20 to 180 minutes at 3.7 to 22 kW, and is reported as a begin (`TX` `B`) and an end
//! (`E`) reading of the energy register (`1-b:1.8.0`, kWh with four decimals), with
//! intermediate (`C`) readings every 15 minutes in one session of three. The register
//! never decreases; `PG` is `T<seq>`, counting up with the frames.

use feeder_core::ocmf::{OcmfSigner, SimReading, sim_payload};
use rand::Rng;
use rand::rngs::SmallRng;

const MINUTE_MS: i64 = 60_000;

#[derive(Debug, Clone)]
pub(crate) struct ChargerModel {
    /// When the next session may start.
    next_start_ms: i64,
    /// The energy register, in Wh × 10^-1.
    register_dwh: i64,
}

impl ChargerModel {
    pub(crate) fn new(rng: &mut SmallRng, start_ms: i64) -> Self {
        Self {
            next_start_ms: start_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
            register_dwh: rng.random_range(0..50_000_000),
        }
    }

    /// The next session's readings; advances the register and the clock.
    pub(crate) fn next_session(&mut self, rng: &mut SmallRng) -> Vec<SimReading> {
        let start = self.next_start_ms;
        let minutes: i64 = rng.random_range(20..=180);
        let power_w: i64 = *[3_700, 7_400, 11_000, 22_000]
            .get(rng.random_range(0..4))
            .unwrap_or(&11_000);
        let intermediate = rng.random_range(0..3) == 0;
        let mut out = vec![SimReading {
            ts_ms: start,
            tx: 'B',
            register_dwh: self.register_dwh,
        }];
        let mut at = 15;
        while intermediate && at < minutes {
            out.push(SimReading {
                ts_ms: start + at * MINUTE_MS,
                tx: 'C',
                register_dwh: self.register_dwh + power_w * at * 10 / 60,
            });
            at += 15;
        }
        self.register_dwh += power_w * minutes * 10 / 60;
        out.push(SimReading {
            ts_ms: start + minutes * MINUTE_MS,
            tx: 'E',
            register_dwh: self.register_dwh,
        });
        self.next_start_ms = start + (minutes + rng.random_range(60..=360)) * MINUTE_MS;
        out
    }
}

/// The OCMF string of session `page` (the frame's seq), signed by `signer`.
pub(crate) fn ocmf_frame(
    signer: &OcmfSigner,
    serial: &str,
    page: u64,
    readings: &[SimReading],
) -> Vec<u8> {
    // P-256 signing with ring fails only when the system RNG does; an unsigned string
    // then goes out and is refused (16), which is what a broken meter would cause
    signer
        .sign(&sim_payload(serial, page, readings))
        .unwrap_or_default()
        .into_bytes()
}
