//! Simulated devices: each [`SimDevice`] holds a provisioned key and a small seeded model
//! (a meter's household or a vehicle's trip) and produces signed frames in seq order.
//!
//! Invariants, so that clean simulated data passes every data check:
//! - seqs start at 1 and increase by one per frame; a frame is signed exactly as sent;
//! - a meter's register never decreases and equals the previous register plus the day's
//!   intervals; successive frames cover successive UTC days;
//! - a vehicle moves at most 30 m/s, turns smoothly, and its odometer follows the
//!   distance between its fixes.
//!
//! The model's RNG is seeded from the device id, so a device's frames depend only on its
//! key, the start time and the `now_ms` it is asked for.

pub use feeder_core::geo;
mod charger;
mod meter;
mod vehicle;

use std::collections::BTreeMap;

use bytes::Bytes;
use feeder_core::keyfile::DeviceKey;
use feeder_core::{Alg, DeviceKind, SigningKey};
use feeder_proto::v1::{Frame, SignedFrame};
use prost::Message;
use rand::SeedableRng;
use rand::rngs::SmallRng;

pub use meter::{INTERVAL_OBIS, INTERVALS_PER_DAY, REGISTER_OBIS, VOLTAGE_OBIS};
pub use vehicle::{MAX_SPEED_M_S, RegionBox, SAMPLES_PER_FRAME, region_box};

/// Firmware reported when the key file gives the device no `firmware` label.
const DEFAULT_FIRMWARE: &str = "1.0.0";

/// A signed frame and what it carries (the load generator counts rows with these).
#[derive(Debug, Clone, PartialEq)]
pub struct SimFrame {
    pub frame: SignedFrame,
    pub readings: usize,
    pub samples: usize,
    pub events: usize,
}

/// The device's data model.
#[derive(Debug, Clone)]
enum Model {
    Meter(meter::MeterModel),
    Vehicle(vehicle::VehicleModel),
    /// A meter with an OCMF key: an EV charger reporting charging sessions.
    Charger(charger::ChargerModel),
}

/// One simulated device.
#[derive(Debug)]
pub struct SimDevice {
    pub device_id: String,
    pub key_id: String,
    pub kind: DeviceKind,
    pub labels: BTreeMap<String, String>,
    key: SigningKey,
    next_seq: u64,
    firmware: String,
    model: Model,
    rng: SmallRng,
}

impl SimDevice {
    /// A device whose simulated time starts at `start_ms`: a meter's first frame covers
    /// the UTC day containing `start_ms`, a vehicle's first sample is at `start_ms`.
    pub fn from_key(k: DeviceKey, start_ms: i64) -> Self {
        let mut rng = SmallRng::seed_from_u64(fnv1a64(k.device_id.as_bytes()));
        let model = match k.kind {
            DeviceKind::Meter if matches!(k.key, SigningKey::Ocmf(..)) => {
                Model::Charger(charger::ChargerModel::new(&mut rng, start_ms))
            }
            DeviceKind::Meter => Model::Meter(meter::MeterModel::new(&mut rng, start_ms)),
            DeviceKind::Vehicle => {
                let region = k.labels.get("region").map(String::as_str).unwrap_or("");
                Model::Vehicle(vehicle::VehicleModel::new(
                    &mut rng,
                    region_box(region),
                    start_ms,
                ))
            }
        };
        let firmware = k
            .labels
            .get("firmware")
            .cloned()
            .unwrap_or_else(|| DEFAULT_FIRMWARE.to_string());
        Self {
            device_id: k.device_id,
            key_id: k.key_id,
            kind: k.kind,
            labels: k.labels,
            key: k.key,
            next_seq: 1,
            firmware,
            model,
            rng,
        }
    }

    /// Allocates the next seq, builds the next payload and signs it.
    pub fn next_frame(&mut self, now_ms: i64) -> SimFrame {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (payload, counts) = next_payload(
            &mut self.model,
            &mut self.rng,
            &self.key,
            &self.firmware,
            seq,
            now_ms,
        );
        let signature = self.sign(seq, &payload);
        SimFrame {
            frame: SignedFrame {
                device_id: self.device_id.clone(),
                seq,
                key_id: self.key_id.clone(),
                payload,
                signature: signature.into(),
            },
            readings: counts.0,
            samples: counts.1,
            events: counts.2,
        }
    }

    /// Signs `payload` as this device's frame `seq` (the contract's signing input).
    pub fn sign(&self, seq: u64, payload: &[u8]) -> Vec<u8> {
        self.key.sign(&self.device_id, &self.key_id, seq, payload)
    }

    /// A vehicle reports every 1 Hz fix in a frame of its own from now on (the load
    /// generator's `telematics` scenario); a meter is unchanged.
    pub fn report_every_fix(&mut self) {
        if let Model::Vehicle(v) = &mut self.model {
            v.report_every_fix();
        }
    }

    /// The seq the next frame will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Moves the seq counter forward, e.g. to resume a fleet whose earlier seqs a
    /// receiver has already accepted. Seqs never go backwards: a lower value is ignored.
    pub fn skip_to_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    pub fn alg(&self) -> Alg {
        self.key.alg()
    }

    pub fn firmware(&self) -> &str {
        &self.firmware
    }

    /// The payload the next frame would carry, without advancing the device (for
    /// [`crate::attacks`]).
    pub fn peek_payload(&self, now_ms: i64) -> Bytes {
        let mut model = self.model.clone();
        let mut rng = self.rng.clone();
        let (key, seq) = (&self.key, self.next_seq);
        next_payload(&mut model, &mut rng, key, &self.firmware, seq, now_ms).0
    }
}

/// The model's next payload for frame `seq`, in the device's format.
fn next_payload(
    model: &mut Model,
    rng: &mut SmallRng,
    key: &SigningKey,
    firmware: &str,
    seq: u64,
    now_ms: i64,
) -> (Bytes, (usize, usize, usize)) {
    match (model, key) {
        // the meter signs its OCMF string itself; PG counts with the seq
        (Model::Charger(c), SigningKey::Ocmf(signer, serial)) => {
            let session = c.next_session(rng);
            let ocmf = charger::ocmf_frame(signer, serial, seq, &session);
            (ocmf.into(), (session.len(), 0, 0))
        }
        (model, _) => build_payload(model, rng, firmware, now_ms),
    }
}

/// Encodes the model's next frame; returns it with its (readings, samples, events) counts.
fn build_payload(
    model: &mut Model,
    rng: &mut SmallRng,
    firmware: &str,
    now_ms: i64,
) -> (Bytes, (usize, usize, usize)) {
    let mut frame = Frame {
        sent_at_ms: now_ms,
        firmware: firmware.to_string(),
        ..Frame::default()
    };
    match model {
        Model::Meter(m) => frame.readings = m.next_day(rng),
        Model::Vehicle(v) => frame.samples = v.next_samples(rng),
        // a charger without its OCMF key (not built by `SimDevice::from_key`): no rows
        Model::Charger(_) => {}
    }
    let counts = (
        frame.readings.len(),
        frame.samples.len(),
        frame.events.len(),
    );
    (frame.encode_to_vec().into(), counts)
}

/// A whole fleet played round-robin: each call returns the next device's next frame, so
/// consecutive frames come from different devices and every device's seqs stay in order.
#[derive(Debug)]
pub struct Fleet {
    devices: Vec<SimDevice>,
    next: usize,
}

impl Fleet {
    pub fn from_keys(keys: Vec<DeviceKey>, start_ms: i64) -> Self {
        Self {
            devices: keys
                .into_iter()
                .map(|k| SimDevice::from_key(k, start_ms))
                .collect(),
            next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Only the vehicles, each reporting every fix in its own frame: played round-robin
    /// at `len()` frames/s, every vehicle sends once a second, as 1 Hz units do.
    pub fn telematics_1hz(mut self) -> Self {
        self.devices.retain(|d| d.kind == DeviceKind::Vehicle);
        for d in &mut self.devices {
            d.report_every_fix();
        }
        self.next = 0;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    pub fn devices_mut(&mut self) -> &mut [SimDevice] {
        &mut self.devices
    }

    /// The next frame in round-robin order; `None` for an empty fleet.
    pub fn next_frame(&mut self, now_ms: i64) -> Option<SimFrame> {
        let n = self.devices.len();
        let dev = self.devices.get_mut(self.next)?;
        self.next = (self.next + 1) % n;
        Some(dev.next_frame(now_ms))
    }
}

/// FNV-1a: a stable (across builds and platforms) seed from a device id.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
