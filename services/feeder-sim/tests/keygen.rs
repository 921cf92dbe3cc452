//! Keygen writes a registry and key file that feeder-core loads, that match each other,
//! and that are reproducible with a seed.

use std::collections::BTreeSet;

use feeder_core::keyfile::load_key_file;
use feeder_core::{Alg, DeviceKind, KeyStatus, Registry};
use feeder_sim::fleet::SimDevice;
use feeder_sim::{KeygenConfig, keygen};

fn config(
    dir: &std::path::Path,
    meters: usize,
    vehicles: usize,
    seed: Option<u64>,
) -> KeygenConfig {
    KeygenConfig {
        meters,
        vehicles,
        registry: dir.join("registry.jsonl"),
        secrets: dir.join("keys.jsonl"),
        seed,
        ..KeygenConfig::default()
    }
}

#[test]
fn round_trip_registry_and_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 13, 6, Some(1));
    let summary = keygen(&cfg).unwrap();
    assert_eq!((summary.meters, summary.vehicles), (13, 6));
    assert_eq!((summary.ed25519_keys, summary.hmac_keys), (16, 3));

    let reg = Registry::load(&cfg.registry).unwrap();
    assert_eq!(reg.len(), 19);
    let keys = load_key_file(&cfg.secrets).unwrap();
    assert_eq!(keys.len(), 19);
    // no temporary files left behind
    let names: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["keys.jsonl".into(), "registry.jsonl".into()])
    );

    let m1 = reg.device("mtr-000001").unwrap();
    assert_eq!(m1.kind, DeviceKind::Meter);
    assert_eq!(m1.keys[0].status, KeyStatus::Active);
    assert_eq!(&*m1.keys[0].key_id, "k1");
    assert_eq!(m1.keys[0].key.alg(), Alg::Ed25519);
    assert!(reg.device("mtr-000013").is_some());
    assert!(reg.device("mtr-000014").is_none());
    let algs: Vec<Alg> = (1..=6)
        .map(|i| {
            reg.device(&format!("veh-{i:06}")).unwrap().keys[0]
                .key
                .alg()
        })
        .collect();
    assert_eq!(
        algs,
        [
            Alg::Ed25519,
            Alg::HmacSha256,
            Alg::Ed25519,
            Alg::HmacSha256,
            Alg::Ed25519,
            Alg::HmacSha256
        ]
    );

    let mut regions = BTreeSet::new();
    let mut modules = BTreeSet::new();
    for (id, entry) in reg.iter() {
        for label in ["region", "module", "firmware"] {
            assert!(entry.labels.contains_key(label), "{id} lacks {label}");
        }
        regions.insert(entry.labels["region"].clone());
        modules.insert(entry.labels["module"].clone());
    }
    assert_eq!(regions.len(), 4);
    assert_eq!(modules.len(), 3);

    // every device signs with the key file and verifies with the registry
    let mut scratch = Vec::new();
    for k in keys {
        let entry = reg.device(&k.device_id).unwrap();
        assert_eq!(entry.kind, k.kind);
        assert_eq!(*entry.labels, k.labels);
        let mut dev = SimDevice::from_key(k, 1_700_000_000_000);
        let f = dev.next_frame(1_700_000_000_000).frame;
        let key = &entry.key(&f.key_id).unwrap().key;
        key.verify(
            &mut scratch,
            &f.device_id,
            &f.key_id,
            f.seq,
            &f.payload,
            &f.signature,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", f.device_id));
    }
}

/// Both files hold secrets (private keys; the registry's HMAC secrets): 0600, also when
/// a world-readable temporary file of a killed run is in the way.
#[cfg(unix)]
#[test]
fn registry_and_key_file_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, 2, None);
    for path in [&cfg.registry, &cfg.secrets] {
        // the temporary name keygen uses: `.<name>.tmp-<pid>`
        let name = path.file_name().unwrap().to_str().unwrap();
        let stale = dir
            .path()
            .join(format!(".{name}.tmp-{}", std::process::id()));
        std::fs::write(&stale, b"old").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    keygen(&cfg).unwrap();
    for path in [&cfg.registry, &cfg.secrets] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", path.display());
    }
    let left = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(left, 2, "temporary files left behind");
}

#[test]
fn seed_makes_files_reproducible() {
    let read = |cfg: &KeygenConfig| {
        keygen(cfg).unwrap();
        (
            std::fs::read_to_string(&cfg.registry).unwrap(),
            std::fs::read_to_string(&cfg.secrets).unwrap(),
        )
    };
    let (a, b, c, d) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let seeded_a = read(&config(a.path(), 3, 2, Some(42)));
    let seeded_b = read(&config(b.path(), 3, 2, Some(42)));
    let other_seed = read(&config(c.path(), 3, 2, Some(43)));
    let unseeded = read(&config(d.path(), 3, 2, None));
    assert_eq!(seeded_a, seeded_b);
    assert_ne!(seeded_a.1, other_seed.1);
    assert_ne!(seeded_a.1, unseeded.1);
    // labels do not depend on the seed
    let labels = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split("\"labels\"").nth(1).unwrap().to_string())
            .collect()
    };
    assert_eq!(labels(&seeded_a.0), labels(&other_seed.0));
}

#[test]
fn rejects_bad_configs_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        config(dir.path(), 0, 0, None),
        KeygenConfig {
            id_prefix_meter: "bad prefix ".into(),
            ..config(dir.path(), 1, 0, None)
        },
        KeygenConfig {
            id_prefix_vehicle: "x".repeat(64),
            ..config(dir.path(), 0, 1, None)
        },
    ];
    for cfg in &cases {
        let err = keygen(cfg).unwrap_err();
        assert!(matches!(err, feeder_sim::Error::Config(_)), "{err}");
        assert!(!cfg.registry.exists() && !cfg.secrets.exists());
    }
    let err = keygen(&KeygenConfig {
        registry: dir.path().join("missing-dir/registry.jsonl"),
        ..config(dir.path(), 1, 0, None)
    })
    .unwrap_err();
    assert!(matches!(err, feeder_sim::Error::Io { .. }), "{err}");
}

/// `--ocmf N`: P-256 keys in the registry (DER, with the serial) and the key file
/// (PKCS#8), matching each other: the simulated charger's strings verify under the
/// registry's key.
#[test]
fn ocmf_meters_are_provisioned() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = KeygenConfig {
        ocmf: 3,
        ..config(dir.path(), 1, 0, Some(1))
    };
    let summary = keygen(&cfg).unwrap();
    assert_eq!((summary.ed25519_keys, summary.ocmf_keys), (1, 3));
    let reg = Registry::load(&cfg.registry).unwrap();
    let keys = load_key_file(&cfg.secrets).unwrap();
    assert_eq!(keys.len(), 4);
    for k in keys
        .into_iter()
        .filter(|k| k.device_id.starts_with("evse-"))
    {
        let d = reg.device(&k.device_id).unwrap();
        assert_eq!(d.kind, DeviceKind::Meter);
        let vk = d.keys[0].key.clone();
        assert_eq!(vk.alg(), Alg::Ocmf);
        let mut dev = SimDevice::from_key(k, 1_750_000_000_000);
        let f = dev.next_frame(1_750_000_000_000).frame;
        vk.check_shape(f.seq, &f.payload).unwrap();
        let mut s = Vec::new();
        vk.verify(
            &mut s,
            &f.device_id,
            &f.key_id,
            f.seq,
            &f.payload,
            &f.signature,
        )
        .unwrap();
    }
    assert!(reg.device("evse-000003").is_some());
}
