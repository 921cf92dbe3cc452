//! The device key file: the private half of the registry, held by devices, simulators and
//! test tools (never by the edge). JSON Lines, one key a line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::device_id::validate_device_id;
use crate::error::{Error, Result};
use crate::registry::{DeviceKind, check_hmac_secret_len, decode_key_hex, validate_key_id};
use crate::signing::{Alg, ED25519_KEY_LEN, SigningKey};

/// One line of the key file. `Debug` never prints the seed or the secret.
#[derive(Clone, Deserialize, Serialize)]
pub struct DeviceKeyLine {
    pub device_id: String,
    pub key_id: String,
    pub alg: Alg,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// OCMF keys: the P-256 private key as a PKCS#8 document, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs8: Option<String>,
    /// OCMF keys: the serial the meter writes into its payloads (`MS` and `GS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub kind: DeviceKind,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for DeviceKeyLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("DeviceKeyLine")
            .field("device_id", &self.device_id)
            .field("key_id", &self.key_id)
            .field("alg", &self.alg)
            .field("seed", &hidden(&self.seed))
            .field("secret", &hidden(&self.secret))
            .field("pkcs8", &hidden(&self.pkcs8))
            .field("serial", &self.serial)
            .field("kind", &self.kind)
            .field("labels", &self.labels)
            .finish()
    }
}

/// A device's signing key as loaded from the key file.
#[derive(Debug)]
pub struct DeviceKey {
    pub device_id: String,
    pub key_id: String,
    pub kind: DeviceKind,
    pub labels: BTreeMap<String, String>,
    pub key: SigningKey,
}

/// Loads a key file; every malformed line is reported with its number.
pub fn load_key_file(path: &std::path::Path) -> Result<Vec<DeviceKey>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        file: path.display().to_string(),
        source,
    })?;
    parse_key_file(&path.display().to_string(), &text)
}

pub fn parse_key_file(file: &str, text: &str) -> Result<Vec<DeviceKey>> {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(k) => keys.push(k),
            Err(reason) => errors.push((i + 1, reason)),
        }
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(Error::Invalid {
            file: file.to_string(),
            lines: errors,
        })
    }
}

fn parse_line(line: &str) -> std::result::Result<DeviceKey, String> {
    let l: DeviceKeyLine =
        serde_json::from_str(line).map_err(|e| crate::line_error::json_line_error(&e))?;
    validate_device_id(&l.device_id).map_err(|e| e.to_string())?;
    validate_key_id(&l.key_id)?;
    let key = match l.alg {
        Alg::Ed25519 => {
            let seed =
                decode_key_hex("seed", l.seed.as_deref().ok_or("ed25519 key without seed")?)?;
            if seed.len() != ED25519_KEY_LEN {
                return Err(format!("seed must be {ED25519_KEY_LEN} bytes"));
            }
            SigningKey::ed25519_from_seed(&seed).ok_or("invalid ed25519 seed")?
        }
        Alg::HmacSha256 => {
            let secret = decode_key_hex(
                "secret",
                l.secret
                    .as_deref()
                    .ok_or("hmac-sha256 key without secret")?,
            )?;
            check_hmac_secret_len(secret.len())?;
            SigningKey::hmac(&secret)
        }
        Alg::Ocmf => {
            let pkcs8 =
                decode_key_hex("pkcs8", l.pkcs8.as_deref().ok_or("ocmf key without pkcs8")?)?;
            let signer = crate::ocmf::OcmfSigner::from_pkcs8(&pkcs8)?;
            let serial = l.serial.as_deref().ok_or("ocmf key without serial")?;
            SigningKey::Ocmf(Box::new(signer), serial.into())
        }
    };
    Ok(DeviceKey {
        device_id: l.device_id,
        key_id: l.key_id,
        kind: l.kind,
        labels: l.labels,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_lines() {
        let good = r#"{"device_id":"mtr-000001","key_id":"k1","alg":"ed25519","seed":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","kind":"meter","labels":{"region":"north"}}"#;
        let keys = parse_key_file("k", good).unwrap();
        assert_eq!(
            hex::encode(keys[0].key.ed25519_public().unwrap()),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        let bad = good.replace("\"seed\"", "\"sead\"");
        let err = parse_key_file("k", &format!("{good}\n{bad}")).unwrap_err();
        assert!(
            err.to_string()
                .contains("k: line 2: ed25519 key without seed"),
            "{err}"
        );
    }
}
