//! Fleet provisioning: generates device keys and writes the matching pair of files of the
//! device contract, the registry (public half, for Feeder) and the device key file
//! (private half, for simulators and test tools).
//!
//! Meters sign with Ed25519; OCMF meters (EV chargers, `ocmf`, ids `evse-…`) sign
//! their own OCMF strings with P-256 keys, always from the operating system's RNG (ring
//! generates no P-256 key from a seed), with serial `SIM` + the device number; vehicles alternate Ed25519 and HMAC-SHA256 (32-byte
//! secrets), so both algorithms are exercised by every fleet with two or more vehicles.
//! With a seed, the same configuration writes byte-identical files (for tests and
//! reproducible demos); without one, keys come from the operating system's RNG.
//!
//! Both files are written to temporary names in their target directories, synced, and
//! renamed into place, so a reader never sees a half-written registry.
//!
//! Both hold secrets (the key file private keys, the registry the HMAC secrets), so both
//! are created with mode 0600 by the `open` call itself: a chmod afterwards would leave a
//! window in which the file is readable under the umask, and a leftover temporary file
//! of that name would keep its old mode, so it is removed and the file created anew.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use feeder_core::keyfile::DeviceKeyLine;
use feeder_core::registry::RegistryLine;
use feeder_core::{Alg, DeviceKind, KeyStatus, SigningKey, validate_device_id};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::labels::labels_for;

/// The key id every provisioned device starts with.
pub const FIRST_KEY_ID: &str = "k1";
const HMAC_SECRET_LEN: usize = 32;

/// What to provision and where to write it.
#[derive(Debug, Clone)]
pub struct KeygenConfig {
    pub meters: usize,
    pub vehicles: usize,
    /// OCMF meters (EV chargers signing in OCMF, contract v1.1).
    pub ocmf: usize,
    /// Registry file (JSON Lines) to write.
    pub registry: PathBuf,
    /// Device key file (JSON Lines, private keys) to write.
    pub secrets: PathBuf,
    /// Deterministic keys when `Some`.
    pub seed: Option<u64>,
    pub id_prefix_meter: String,
    pub id_prefix_vehicle: String,
    pub id_prefix_ocmf: String,
}

impl Default for KeygenConfig {
    fn default() -> Self {
        Self {
            meters: 100,
            vehicles: 20,
            registry: PathBuf::from("registry.jsonl"),
            secrets: PathBuf::from("device-keys.jsonl"),
            seed: None,
            id_prefix_meter: "mtr-".into(),
            id_prefix_vehicle: "veh-".into(),
            ocmf: 0,
            id_prefix_ocmf: "evse-".into(),
        }
    }
}

/// What [`keygen`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenSummary {
    pub meters: usize,
    pub vehicles: usize,
    pub ed25519_keys: usize,
    pub hmac_keys: usize,
    /// OCMF meters' P-256 keys.
    pub ocmf_keys: usize,
    pub registry: PathBuf,
    pub secrets: PathBuf,
}

/// One provisioned key: the registry line and the key file line of the same device.
struct Provisioned {
    registry: RegistryLine,
    secret: DeviceKeyLine,
}

/// Generates the fleet and writes both files atomically.
pub fn keygen(cfg: &KeygenConfig) -> Result<KeygenSummary> {
    if cfg.meters + cfg.vehicles + cfg.ocmf == 0 {
        return Err(Error::Config("keygen: no devices requested".into()));
    }
    let mut rng = match cfg.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    };
    let mut summary = KeygenSummary {
        meters: cfg.meters,
        vehicles: cfg.vehicles,
        ed25519_keys: 0,
        hmac_keys: 0,
        ocmf_keys: 0,
        registry: cfg.registry.clone(),
        secrets: cfg.secrets.clone(),
    };
    let devices = (0..cfg.meters)
        .map(|i| (DeviceKind::Meter, &cfg.id_prefix_meter, i))
        .chain((0..cfg.vehicles).map(|i| (DeviceKind::Vehicle, &cfg.id_prefix_vehicle, i)))
        .chain((0..cfg.ocmf).map(|i| (DeviceKind::Meter, &cfg.id_prefix_ocmf, i)));

    let mut registry_text = String::new();
    let mut secrets_text = String::new();
    for (kind, prefix, index) in devices {
        let device_id = format!("{prefix}{:06}", index + 1);
        validate_device_id(&device_id)
            .map_err(|e| Error::Config(format!("keygen: device id {device_id:?}: {e}")))?;
        // vehicles 1, 3, 5... use Ed25519 and 2, 4, 6... HMAC
        let alg = match kind {
            _ if *prefix == cfg.id_prefix_ocmf && kind == DeviceKind::Meter => Alg::Ocmf,
            DeviceKind::Vehicle if index % 2 == 1 => Alg::HmacSha256,
            _ => Alg::Ed25519,
        };
        let p = provision(&mut rng, device_id, kind, alg, labels_for(kind, index))?;
        match alg {
            Alg::Ed25519 => summary.ed25519_keys += 1,
            Alg::HmacSha256 => summary.hmac_keys += 1,
            Alg::Ocmf => summary.ocmf_keys += 1,
        }
        push_json_line(&mut registry_text, &p.registry)?;
        push_json_line(&mut secrets_text, &p.secret)?;
    }

    let secrets_tmp = write_temp(&cfg.secrets, secrets_text.as_bytes())?;
    let registry_tmp = write_temp(&cfg.registry, registry_text.as_bytes()).inspect_err(|_| {
        let _ = std::fs::remove_file(&secrets_tmp);
    })?;
    rename(&secrets_tmp, &cfg.secrets)?;
    rename(&registry_tmp, &cfg.registry)?;
    Ok(summary)
}

fn provision(
    rng: &mut StdRng,
    device_id: String,
    kind: DeviceKind,
    alg: Alg,
    labels: BTreeMap<String, String>,
) -> Result<Provisioned> {
    let mut serial = None;
    let mut pkcs8 = None;
    let (public_key, secret, seed) = match alg {
        Alg::Ed25519 => {
            let seed: [u8; 32] = rng.random();
            let public = SigningKey::ed25519_from_seed(&seed)
                .and_then(|k| k.ed25519_public())
                .ok_or_else(|| Error::Config("keygen: ring rejected an Ed25519 seed".into()))?;
            (Some(hex::encode(public)), None, Some(hex::encode(seed)))
        }
        Alg::HmacSha256 => {
            let secret: [u8; HMAC_SECRET_LEN] = rng.random();
            (None, Some(hex::encode(secret)), None)
        }
        Alg::Ocmf => {
            let (signer, doc) = feeder_core::ocmf::OcmfSigner::generate().map_err(Error::Config)?;
            serial = Some(format!(
                "SIM{}",
                device_id.trim_start_matches(|c: char| !c.is_ascii_digit())
            ));
            pkcs8 = Some(hex::encode(doc));
            (Some(hex::encode(signer.spki_der())), None, None)
        }
    };
    Ok(Provisioned {
        registry: RegistryLine {
            device_id: device_id.clone(),
            key_id: FIRST_KEY_ID.into(),
            alg,
            public_key,
            secret: secret.clone(),
            serial: serial.clone(),
            kind,
            status: KeyStatus::Active,
            labels: labels.clone(),
        },
        secret: DeviceKeyLine {
            device_id,
            key_id: FIRST_KEY_ID.into(),
            alg,
            seed,
            secret,
            pkcs8,
            serial,
            kind,
            labels,
        },
    })
}

fn push_json_line<T: serde::Serialize>(out: &mut String, line: &T) -> Result<()> {
    out.push_str(&serde_json::to_string(line)?);
    out.push('\n');
    Ok(())
}

/// Mode of every file keygen writes: both hold secrets.
#[cfg(unix)]
const SECRET_FILE_MODE: u32 = 0o600;

/// Writes `bytes` to a new temporary file next to `path`, created readable by the owner
/// only (on Unix), and syncs it; returns its path.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("keygen: {} is not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    // A leftover of a killed run keeps its mode when opened, so it goes first, and
    // `create_new` refuses anything that appears meanwhile.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
        _ => {}
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(SECRET_FILE_MODE);
    }
    let mut f = opts.open(&tmp).map_err(io_err)?;
    f.write_all(bytes).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    Ok(tmp)
}

fn rename(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}
