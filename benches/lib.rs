//! Fixtures shared by the benchmarks: a provisioned fleet in memory and its signed frames.

pub mod peak_rss;
pub mod thread_cpu;

use bytes::Bytes;
use feeder_core::Registry;
use feeder_core::keyfile::parse_key_file;
use feeder_proto::v1::SignedFrame;
use feeder_sim::fleet::SimDevice;
use feeder_sim::keygen::{KeygenConfig, keygen};
use prost::Message;

/// A registry and `n` encoded frames per algorithm (`ed25519` meters, `hmac` vehicles).
pub struct Fixture {
    pub registry: Registry,
    pub ed25519: Vec<Bytes>,
    pub hmac: Vec<Bytes>,
}

pub fn fixture(devices: usize, frames_per_device: usize) -> Fixture {
    let dir = std::env::temp_dir().join(format!("feeder-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = KeygenConfig {
        meters: devices,
        vehicles: devices * 2, // every other vehicle has an HMAC key
        registry: dir.join("registry.jsonl"),
        secrets: dir.join("keys.jsonl"),
        seed: Some(1),
        ..KeygenConfig::default()
    };
    keygen(&cfg).expect("keygen");
    let registry = Registry::load(&cfg.registry).expect("registry");
    let keys = parse_key_file(
        "keys",
        &std::fs::read_to_string(&cfg.secrets).expect("keys"),
    )
    .expect("keys");
    let (mut ed25519, mut hmac) = (Vec::new(), Vec::new());
    for k in keys {
        let alg = k.key.ed25519_public().is_some();
        let mut dev = SimDevice::from_key(k, 1_700_000_000_000);
        for _ in 0..frames_per_device {
            let f: SignedFrame = dev.next_frame(1_700_000_000_000).frame;
            let bytes = Bytes::from(f.encode_to_vec());
            if alg {
                ed25519.push(bytes)
            } else {
                hmac.push(bytes)
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Fixture {
        registry,
        ed25519,
        hmac,
    }
}

/// Raw-topic records (`RawFrame`, as the edge writes them) of `devices` simulated devices
/// of `kind` with HMAC keys, `frames` each, interleaved device by device, starting a year
/// before 2025-11-25 (meters backfill); returns them and their rows (readings + samples).
pub fn raw_records(
    kind: feeder_core::DeviceKind,
    devices: usize,
    frames: usize,
) -> (Vec<Vec<u8>>, u64) {
    raw_records_where(kind, devices, frames, |_, _| true)
}

/// [`raw_records`] without the frames `keep(frame, device)` refuses (a device that missed
/// a report: it is made, so the device's clock and seq move on, and left out).
pub fn raw_records_where(
    kind: feeder_core::DeviceKind,
    devices: usize,
    frames: usize,
    keep: impl Fn(usize, usize) -> bool,
) -> (Vec<Vec<u8>>, u64) {
    const NOW_MS: i64 = 1_764_028_800_000;
    const DAY_MS: i64 = 86_400_000;
    let start = (NOW_MS / DAY_MS - 365) * DAY_MS;
    let mut devs: Vec<SimDevice> = (0..devices)
        .map(|i| {
            SimDevice::from_key(
                feeder_core::keyfile::DeviceKey {
                    device_id: format!("{kind:?}-{i:06}"),
                    key_id: "k1".into(),
                    kind,
                    labels: feeder_sim::labels::labels_for(kind, i),
                    key: feeder_core::SigningKey::hmac(&[7; 32]),
                },
                start,
            )
        })
        .collect();
    let (mut out, mut rows) = (Vec::new(), 0u64);
    let mut clock = NOW_MS;
    for n in 0..frames {
        for (i, d) in devs.iter_mut().enumerate() {
            clock += 5;
            let f = d.next_frame(clock);
            if !keep(n, i) {
                continue;
            }
            rows += (f.readings + f.samples) as u64;
            out.push(
                feeder_proto::pipeline::RawFrame {
                    signed_frame: f.frame.encode_to_vec().into(),
                    received_at_ms: clock + 30,
                    edge_id: "e".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            );
        }
    }
    (out, rows)
}
