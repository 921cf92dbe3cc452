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
