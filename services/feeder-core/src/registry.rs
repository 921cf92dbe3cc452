//! The device registry: which keys the utility provisioned for which devices.
//!
//! File form (JSON Lines, one key a line; see shared/protocol.md):
//! `{"device_id":..,"key_id":..,"alg":"ed25519"|"hmac-sha256","public_key"|"secret":<hex>,
//!   "kind":"meter"|"vehicle","status":"active"|"revoked","labels":{..}}`
//!
//! Loading collects **every** malformed line with its 1-based number; a registry with any
//! bad line is refused as a whole, so the caller keeps the last good one in force.
//!
//! Revocation: a line with `"status":"revoked"` revokes that key (frames signed with it
//! get code 16). A device all of whose keys are revoked is a revoked device (code 7).

pub mod shards;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::device_id::validate_device_id;
use crate::error::{Error, Result};
use crate::signing::{Alg, ED25519_KEY_LEN, HMAC_MAX_SECRET, HMAC_MIN_SECRET, VerifyingKey};

pub const MAX_KEY_ID_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Meter,
    Vehicle,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Meter => "meter",
            DeviceKind::Vehicle => "vehicle",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
}

impl KeyStatus {
    /// The registry's name of the status (its `status` field).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
        }
    }
}

/// One line of the registry file. `Debug` never prints the secret.
#[derive(Clone, Deserialize, serde::Serialize)]
pub struct RegistryLine {
    pub device_id: String,
    pub key_id: String,
    pub alg: Alg,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// OCMF keys only: the meter (`MS`, else gateway `GS`) serial payloads must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub kind: DeviceKind,
    pub status: KeyStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for RegistryLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLine")
            .field("device_id", &self.device_id)
            .field("key_id", &self.key_id)
            .field("alg", &self.alg)
            .field("public_key", &self.public_key)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("serial", &self.serial)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("labels", &self.labels)
            .finish()
    }
}

/// A registered key of a device.
#[derive(Debug, Clone)]
pub struct RegistryKey {
    pub key_id: Box<str>,
    pub key: VerifyingKey,
    pub status: KeyStatus,
}

/// A device and its keys.
#[derive(Debug, Clone)]
pub struct RegistryEntry {
    pub kind: DeviceKind,
    /// Labels, shared between devices with identical label sets to keep big registries small.
    pub labels: Arc<BTreeMap<String, String>>,
    pub keys: Vec<RegistryKey>,
}

impl RegistryEntry {
    pub fn key(&self, key_id: &str) -> Option<&RegistryKey> {
        self.keys.iter().find(|k| &*k.key_id == key_id)
    }

    /// A device is revoked when none of its keys is active.
    pub fn is_revoked(&self) -> bool {
        self.keys.iter().all(|k| k.status == KeyStatus::Revoked)
    }
}

/// A loaded registry. Lookups are O(1) by device id; a copy is cheap and shares the
/// devices until one side changes them ([`shards`]).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    devices: shards::Shards<RegistryEntry>,
    keys: usize,
}

impl Registry {
    pub fn device(&self, device_id: &str) -> Option<&RegistryEntry> {
        self.devices.get(device_id)
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn key_count(&self) -> usize {
        self.keys
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &RegistryEntry)> {
        self.devices.iter()
    }

    /// Puts `entry` in force for `device_id` (`None` removes the device). Copies only
    /// the shard of the device if a copy of this registry shares it.
    pub fn set_device(&mut self, device_id: &str, entry: Option<RegistryEntry>) {
        let old = match entry {
            Some(e) => {
                self.keys += e.keys.len();
                self.devices.insert(device_id.into(), e)
            }
            None => self.devices.remove(device_id),
        };
        self.keys -= old.map_or(0, |e| e.keys.len());
    }

    /// Shards this registry shares with its copies (see [`shards`]).
    pub fn shared_shards(&self) -> usize {
        self.devices.shared_shards()
    }

    /// Loads a registry file; `Error::Invalid` lists every malformed line. Reads line by
    /// line, so a 10-million-device file (GBs) never sits in memory beside the registry.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        use std::io::BufRead;
        let io_err = |source| Error::Io {
            file: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut loader = Loader::default();
        for line in reader.lines() {
            loader.line(&line.map_err(io_err)?);
        }
        loader.finish(&path.display().to_string())
    }

    /// Parses registry text; `file` names it in error messages.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let mut loader = Loader::default();
        for line in text.lines() {
            loader.line(line);
        }
        loader.finish(file)
    }

    fn insert(
        &mut self,
        line: RegistryLine,
        label_sets: &mut HashMap<BTreeMap<String, String>, Arc<BTreeMap<String, String>>>,
    ) -> std::result::Result<(), String> {
        let key = verifying_key(&line)?;
        let labels = label_sets
            .entry(line.labels.clone())
            .or_insert_with(|| Arc::new(line.labels))
            .clone();
        let entry = self
            .devices
            .shard_mut(&line.device_id)
            .entry(line.device_id.clone().into_boxed_str())
            .or_insert_with(|| RegistryEntry {
                kind: line.kind,
                labels: labels.clone(),
                keys: Vec::with_capacity(1),
            });
        if entry.kind != line.kind {
            return Err(format!(
                "device {} is a {} on an earlier line",
                line.device_id,
                entry.kind.as_str()
            ));
        }
        if entry.labels != labels {
            return Err(format!(
                "device {} has different labels on an earlier line",
                line.device_id
            ));
        }
        if entry.key(&line.key_id).is_some() {
            return Err(format!(
                "duplicate key_id {:?} for device {}",
                line.key_id, line.device_id
            ));
        }
        entry.keys.push(RegistryKey {
            key_id: line.key_id.into_boxed_str(),
            key,
            status: line.status,
        });
        self.keys += 1;
        Ok(())
    }
}

/// Builds a registry one line at a time, collecting every malformed line.
#[derive(Default)]
struct Loader {
    reg: Registry,
    errors: Vec<(usize, String)>,
    label_sets: HashMap<BTreeMap<String, String>, Arc<BTreeMap<String, String>>>,
    n: usize,
}

impl Loader {
    fn line(&mut self, line: &str) {
        self.n += 1;
        if line.trim().is_empty() {
            return;
        }
        if let Err(reason) = parse_line(line).and_then(|l| self.reg.insert(l, &mut self.label_sets))
        {
            self.errors.push((self.n, reason));
        }
    }

    fn finish(self, file: &str) -> Result<Registry> {
        if self.errors.is_empty() {
            let mut reg = self.reg;
            reg.devices.shrink_to_fit();
            Ok(reg)
        } else {
            Err(Error::Invalid {
                file: file.to_string(),
                lines: self.errors,
            })
        }
    }
}

/// One registry line on its own, checked as the loader checks it (fields, ids, and the
/// key material for its algorithm); the rules across lines (a device's keys agree on
/// kind and labels, no duplicate key) apply when a registry is built.
pub fn check_line(line: &str) -> std::result::Result<RegistryLine, String> {
    checked_line(line).map(|(l, _)| l)
}

/// [`check_line`], with the key it names (decoded and checked once).
pub fn checked_line(line: &str) -> std::result::Result<(RegistryLine, VerifyingKey), String> {
    let l = parse_line(line)?;
    let key = verifying_key(&l)?;
    Ok((l, key))
}

fn parse_line(line: &str) -> std::result::Result<RegistryLine, String> {
    let l: RegistryLine =
        serde_json::from_str(line).map_err(|e| crate::line_error::json_line_error(&e))?;
    validate_device_id(&l.device_id).map_err(|e| e.to_string())?;
    validate_key_id(&l.key_id)?;
    Ok(l)
}

pub(crate) fn validate_key_id(key_id: &str) -> std::result::Result<(), String> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
        return Err(format!("key_id must be 1..{MAX_KEY_ID_LEN} bytes"));
    }
    Ok(())
}

/// Decodes lower-case hex key material.
pub(crate) fn decode_key_hex(field: &str, s: &str) -> std::result::Result<Vec<u8>, String> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("{field} must be lower-case hex"));
    }
    hex::decode(s).map_err(|_| format!("{field} is not valid hex"))
}

pub(crate) fn check_hmac_secret_len(len: usize) -> std::result::Result<(), String> {
    if !(HMAC_MIN_SECRET..=HMAC_MAX_SECRET).contains(&len) {
        return Err(format!(
            "secret must be {HMAC_MIN_SECRET} to {HMAC_MAX_SECRET} bytes, got {len}"
        ));
    }
    Ok(())
}

fn verifying_key(l: &RegistryLine) -> std::result::Result<VerifyingKey, String> {
    if l.serial.is_some() && l.alg != Alg::Ocmf {
        return Err("serial is for ocmf keys only".into());
    }
    match l.alg {
        Alg::Ed25519 => {
            if l.secret.is_some() {
                return Err("an ed25519 key takes public_key, not secret".into());
            }
            let hex = l
                .public_key
                .as_deref()
                .ok_or("ed25519 key without public_key")?;
            let bytes = decode_key_hex("public_key", hex)?;
            let pk: [u8; ED25519_KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
                format!(
                    "public_key must be {ED25519_KEY_LEN} bytes, got {}",
                    b.len()
                )
            })?;
            crate::ed25519::check_public_key(&pk).map_err(|e| e.to_string())?;
            Ok(VerifyingKey::ed25519(pk))
        }
        Alg::HmacSha256 => {
            if l.public_key.is_some() {
                return Err("an hmac-sha256 key takes secret, not public_key".into());
            }
            let hex = l
                .secret
                .as_deref()
                .ok_or("hmac-sha256 key without secret")?;
            let bytes = decode_key_hex("secret", hex)?;
            check_hmac_secret_len(bytes.len())?;
            Ok(VerifyingKey::hmac(&bytes))
        }
        Alg::Ocmf => {
            if l.secret.is_some() {
                return Err("an ocmf key takes public_key, not secret".into());
            }
            if l.kind != DeviceKind::Meter {
                return Err("an ocmf key is a meter's".into());
            }
            // the contract accepts upper- or lower-case hex here (DER keys are often
            // copied from OCMF tools in upper case)
            let hex = l
                .public_key
                .as_deref()
                .ok_or("ocmf key without public_key")?;
            let key = crate::ocmf::OcmfKey::from_spki_hex(hex, l.serial.as_deref())?;
            Ok(VerifyingKey::Ocmf(Box::new(key)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = r#"{"device_id":"mtr-000001","key_id":"k1","alg":"ed25519","public_key":"03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8","kind":"meter","status":"active","labels":{"region":"north","module":"bg95","firmware":"4.2.1"}}"#;
    const HM: &str = r#"{"device_id":"veh-000042","key_id":"k1","alg":"hmac-sha256","secret":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","kind":"vehicle","status":"active","labels":{}}"#;

    #[test]
    fn loads_contract_examples() {
        let reg = Registry::parse("r", &format!("{ED}\n\n{HM}\n")).unwrap();
        assert_eq!(reg.len(), 2);
        let m = reg.device("mtr-000001").unwrap();
        assert_eq!(m.kind, DeviceKind::Meter);
        assert_eq!(m.labels.get("module").map(String::as_str), Some("bg95"));
        assert_eq!(m.key("k1").unwrap().key.alg(), Alg::Ed25519);
        assert!(m.key("k2").is_none());
        assert_eq!(
            reg.device("veh-000042").unwrap().keys[0].key.alg(),
            Alg::HmacSha256
        );
        assert!(reg.device("nope").is_none());
    }

    #[test]
    fn rotation_and_revocation() {
        let k2 = ED.replace("\"k1\"", "\"k2\"");
        let k1_revoked = ED.replace("\"active\"", "\"revoked\"");
        let reg = Registry::parse("r", &format!("{k1_revoked}\n{k2}")).unwrap();
        let d = reg.device("mtr-000001").unwrap();
        assert_eq!(d.key("k1").unwrap().status, KeyStatus::Revoked);
        assert_eq!(d.key("k2").unwrap().status, KeyStatus::Active);
        assert!(!d.is_revoked());
        let reg = Registry::parse("r", &k1_revoked).unwrap();
        assert!(reg.device("mtr-000001").unwrap().is_revoked());
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "invalid JSON"),
            (ED.replace("mtr-000001", "mtr 1"), "character outside"),
            (ED.replace("\"k1\"", "\"\""), "key_id must be"),
            (ED.replace("ed25519\"", "rsa\""), "invalid JSON"),
            (ED.replace("03a107", "03A107"), "lower-case hex"),
            (ED.replace("03a107", "zz"), "not valid hex"),
            (ED.replace("03a107", ""), "must be 32 bytes"),
            // a small-order (weak) key, the identity point: crate::ed25519's rule 3
            (
                ED.replace(
                    "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
                    "0100000000000000000000000000000000000000000000000000000000000000",
                ),
                "small order",
            ),
            (
                ED.replace(
                    "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
                    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
                ),
                "not a canonical point encoding",
            ),
            (
                ED.replace("\"public_key\"", "\"secret\""),
                "takes public_key, not secret",
            ),
            (
                ED.replace(",\"public_key\"", ",\"pk\""),
                "without public_key",
            ),
            (
                HM.replace("000102030405060708090a0b0c0d0e0f1011121314151617", ""),
                "16 to 64 bytes",
            ),
            (
                HM.replace("\"secret\"", "\"public_key\""),
                "takes secret, not public_key",
            ),
            (ED.replace("\"meter\"", "\"toaster\""), "invalid JSON"),
            (ED.replace("\"active\"", "\"paused\""), "invalid JSON"),
            (
                ED.replace(",\"kind\":\"meter\"", ""),
                "missing field `kind`",
            ),
        ];
        for (bad, want) in &cases {
            let other = HM.replace("veh-000042", "veh-000043");
            let text = format!("{ED}\n{bad}\n{other}");
            let err = Registry::parse("reg.jsonl", &text).unwrap_err();
            match &err {
                Error::Invalid { lines, .. } => {
                    assert_eq!(lines.len(), 1, "{bad}");
                    assert_eq!(lines[0].0, 2, "{bad}");
                    assert!(lines[0].1.contains(want), "{bad}: {}", lines[0].1);
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(err.to_string().contains("reg.jsonl: line 2:"), "{err}");
        }
        // several bad lines are all reported
        let err = Registry::parse("r", &format!("x\n{ED}\n{ED}\ny")).unwrap_err();
        let Error::Invalid { lines, .. } = err else {
            panic!()
        };
        let numbers: Vec<usize> = lines.iter().map(|l| l.0).collect();
        assert_eq!(numbers, vec![1, 3, 4]);
        assert!(lines[1].1.contains("duplicate key_id"));
    }

    const OC: &str = r#"{"device_id":"evse-000001","key_id":"k1","alg":"ocmf","public_key":"3059301306072A8648CE3D020106082A8648CE3D03010703420004515C3D6EB9E396B904D3FECA7F54FDCD0CC1E997BF375DCA515AD0A6C3B4035F4536BE3A50F318FBF9A5475902A221502BEF0D57E08C53B2CC0A56F17D9F9354","serial":"MTR0001","kind":"meter","status":"active","labels":{}}"#;

    #[test]
    fn ocmf_lines_load_rotate_revoke_and_refuse() {
        let reg = Registry::parse("r", OC).unwrap();
        let k = &reg.device("evse-000001").unwrap().keys[0];
        assert_eq!(k.key.alg(), Alg::Ocmf);
        let VerifyingKey::Ocmf(ok) = &k.key else {
            panic!("not ocmf")
        };
        assert_eq!(ok.serial(), Some("MTR0001"));
        // lower case, no serial, rotation to k2 with k1 revoked
        let k2 = OC
            .replace("\"k1\"", "\"k2\"")
            .replace(",\"serial\":\"MTR0001\"", "")
            .to_lowercase();
        let k1_revoked = OC.replace("\"active\"", "\"revoked\"");
        let reg = Registry::parse("r", &format!("{k1_revoked}\n{k2}")).unwrap();
        let d = reg.device("evse-000001").unwrap();
        assert_eq!(d.key("k1").unwrap().status, KeyStatus::Revoked);
        assert!(!d.is_revoked());
        let cases = [
            (
                OC.replace("3059301306", "3059301307"),
                "SubjectPublicKeyInfo",
            ),
            (OC.replace("3059301306", "zz"), "not valid hex"),
            (
                OC.replace("\"public_key\"", "\"secret\""),
                "takes public_key",
            ),
            (OC.replace("\"meter\"", "\"vehicle\""), "a meter's"),
            (OC.replace("\"MTR0001\"", "\"\""), "serial must be"),
            (
                ED.replace("\"kind\"", "\"serial\":\"x\",\"kind\""),
                "ocmf keys only",
            ),
        ];
        for (bad, want) in cases {
            let err = Registry::parse("r", &bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn inconsistent_device_lines_are_errors() {
        let k2_vehicle = ED
            .replace("\"k1\"", "\"k2\"")
            .replace("\"meter\"", "\"vehicle\"");
        let err = Registry::parse("r", &format!("{ED}\n{k2_vehicle}")).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 2: device mtr-000001 is a meter")
        );
    }
}
