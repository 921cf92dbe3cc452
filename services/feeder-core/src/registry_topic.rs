//! The registry as a compacted Kafka topic (device contract v1.1, "The registry as a
//! Kafka topic"): record keys, signed updates, and the registry a receiver holds after
//! reading the topic. Pure: the Kafka side lives with the receivers.
//!
//! # Why signed updates
//! The registry is the root of trust: whoever can add a line can add a device. A topic
//! is written by whoever holds write access to it (ACLs, or a leaked producer
//! credential); with provisioning public keys configured, a receiver takes only lines
//! signed by the utility's provisioning key, so a topic write alone cannot enrol a rogue
//! device or lift a revocation. Several provisioning keys can be accepted at once, so
//! the provisioning key itself can be rotated.
//!
//! # What a receiver holds
//! [`TopicRegistry`] changes the registry in force record by record (a line is checked
//! as the file loader checks it, so it means the same in a file and in the topic) and
//! hands over copies that share what did not change ([`in_force`]). A refused record
//! leaves the entry in force as it was.

mod in_force;

pub use in_force::{Applied, TopicRegistry};

use std::collections::HashMap;

use crate::registry::RegistryLine;
use crate::{Error, Result};

/// Domain separation of the signing input.
const DOMAIN: &[u8] = b"FEEDER-REGISTRY-V1\0";

/// Header naming the provisioning key that signed a record.
pub const SIGNER_HEADER: &str = "feeder-signer";
/// Header holding the Ed25519 signature (64 bytes).
pub const SIGNATURE_HEADER: &str = "feeder-signature";

/// The record key of a registry line: `<device_id>/<key_id>`.
pub fn record_key(device_id: &str, key_id: &str) -> String {
    format!("{device_id}/{key_id}")
}

/// What a provisioning key signs: `"FEEDER-REGISTRY-V1" 0x00 ‖ u16be len + record key ‖
/// u32be len + value` (a tombstone signs an empty value). `None` if the key or value is
/// too long to encode.
pub fn signing_input(key: &[u8], value: Option<&[u8]>) -> Option<Vec<u8>> {
    let value = value.unwrap_or_default();
    let klen = u16::try_from(key.len()).ok()?;
    let vlen = u32::try_from(value.len()).ok()?;
    let mut out = Vec::with_capacity(DOMAIN.len() + 6 + key.len() + value.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&klen.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&vlen.to_be_bytes());
    out.extend_from_slice(value);
    Some(out)
}

/// The provisioning public keys a receiver accepts, by name. Empty: updates are not
/// required to be signed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisioningKeys {
    keys: HashMap<String, [u8; crate::ed25519::PUBLIC_KEY_LEN]>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisioningLine {
    key_id: String,
    public_key: String,
}

impl ProvisioningKeys {
    /// Parses a JSON Lines file of `{"key_id": ..., "public_key": "<64 hex>"}` (Ed25519
    /// public keys); `file` names it in errors, which list every bad line.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let mut keys = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<ProvisioningLine>(line)
                .map_err(|e| crate::line_error::json_line_error(&e))
                .and_then(|l| {
                    let pk = hex::decode(&l.public_key)
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or("public_key must be 64 hex digits (an Ed25519 key)")?;
                    crate::ed25519::check_public_key(&pk).map_err(|e| e.to_string())?;
                    if keys.insert(l.key_id.clone(), pk).is_some() {
                        return Err(format!("duplicate key_id {:?}", l.key_id));
                    }
                    Ok(())
                });
            if let Err(reason) = parsed {
                errors.push((i + 1, reason));
            }
        }
        if errors.is_empty() {
            Ok(Self { keys })
        } else {
            Err(Error::Invalid {
                file: file.to_string(),
                lines: errors,
            })
        }
    }

    pub fn from_keys(keys: impl IntoIterator<Item = (String, [u8; 32])>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a record's signature headers; `Ok` when no keys are configured.
    pub fn check(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        signer: Option<&[u8]>,
        signature: Option<&[u8]>,
    ) -> std::result::Result<(), Refused> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let (Some(signer), Some(signature)) = (signer, signature) else {
            return Err(Refused::Unsigned);
        };
        let public = std::str::from_utf8(signer)
            .ok()
            .and_then(|s| self.keys.get(s))
            .ok_or(Refused::UnknownSigner)?;
        let input = signing_input(key, value).ok_or(Refused::Malformed)?;
        if crate::ed25519::verify(public, &input, signature) {
            Ok(())
        } else {
            Err(Refused::BadSignature)
        }
    }
}

/// Why a registry record was not taken (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not signed, and provisioning keys are configured")]
    Unsigned,
    #[error("signed by a provisioning key that is not configured")]
    UnknownSigner,
    #[error("signature does not verify")]
    BadSignature,
    #[error("record key is not <device_id>/<key_id> of its line, or the line is invalid")]
    Malformed,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Unsigned => "unsigned",
            Refused::UnknownSigner => "unknown_signer",
            Refused::BadSignature => "bad_signature",
            Refused::Malformed => "malformed",
        }
    }
}

/// One registry record, parsed: what a receiver (or the registry audit) takes from it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A tombstone: the key's line is removed.
    Removed { key: String },
    /// A line for the key, valid on its own and naming the record key's device and key.
    Line {
        key: String,
        line: String,
        parsed: Box<RegistryLine>,
        /// The key the line names, decoded and checked.
        verifying_key: Box<crate::signing::VerifyingKey>,
    },
}

impl Change {
    /// The record key, `<device_id>/<key_id>`.
    pub fn key(&self) -> &str {
        match self {
            Change::Removed { key } | Change::Line { key, .. } => key,
        }
    }
}

/// Parses one record (after [`ProvisioningKeys::check`]) with the file loader's rules for
/// its line; a line that does not parse, or whose device and key differ from its record
/// key, is [`Refused::Malformed`].
pub fn parse_record(key: &[u8], value: Option<&[u8]>) -> std::result::Result<Change, Refused> {
    let key = std::str::from_utf8(key).map_err(|_| Refused::Malformed)?;
    let Some(value) = value else {
        return Ok(Change::Removed {
            key: key.to_string(),
        });
    };
    let line = std::str::from_utf8(value).map_err(|_| Refused::Malformed)?;
    // the line must be valid on its own, and name the record key's device and key
    let (parsed, verifying_key) =
        crate::registry::checked_line(line).map_err(|_| Refused::Malformed)?;
    if record_key(&parsed.device_id, &parsed.key_id) != key {
        return Err(Refused::Malformed);
    }
    Ok(Change::Line {
        key: key.to_string(),
        line: line.trim().to_string(),
        parsed: Box::new(parsed),
        verifying_key: Box::new(verifying_key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    const LINE: &str = r#"{"device_id":"mtr-000001","key_id":"k1","alg":"ed25519","public_key":"03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8","kind":"meter","status":"revoked","labels":{}}"#;
    const SIG: &str = "f61dd8c1ffccbc161ad65c6a02936f04cb6d07c8f864bc020cb8ec3a780e562392e13b33e13b5d96b00044aaba0a15e8878038eefdc19af1a985598ca438860c";
    const TOMBSTONE_SIG: &str = "475f62d150e71d02c228d1e8c00865a21756bfee057effaef47304fbf8a0a101611ff0140f155489d31dd31c026f5b03360029949821161af4fc7d60b8dc8002";

    fn provisioning() -> (SigningKey, ProvisioningKeys) {
        let seed: Vec<u8> = (0u8..32).collect();
        let sk = SigningKey::ed25519_from_seed(&seed).unwrap();
        let pk = sk.ed25519_public().unwrap();
        (
            sk,
            ProvisioningKeys::from_keys([("prov-1".to_string(), pk)]),
        )
    }

    /// The contract's vector: signing input, signature of the line and of the tombstone.
    #[test]
    fn the_contracts_vector() {
        assert_eq!(LINE.len(), 182);
        let key = b"mtr-000001/k1";
        let input = signing_input(key, Some(LINE.as_bytes())).unwrap();
        assert_eq!(input.len(), 220);
        assert!(hex::encode(&input).starts_with(
            "4645454445522d52454749535452592d563100000d6d74722d3030303030312f6b31000000b6"
        ));
        let (sk, keys) = provisioning();
        assert_eq!(
            hex::encode(sk.ed25519_public().unwrap()),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        assert_eq!(hex::encode(sk.sign_input(&input)), SIG);
        let sig = hex::decode(SIG).unwrap();
        let signer = Some(&b"prov-1"[..]);
        assert_eq!(
            keys.check(key, Some(LINE.as_bytes()), signer, Some(&sig)),
            Ok(())
        );
        let tomb = hex::decode(TOMBSTONE_SIG).unwrap();
        assert_eq!(keys.check(key, None, signer, Some(&tomb)), Ok(()));
        assert_eq!(
            hex::encode(sk.sign_input(&signing_input(key, None).unwrap())),
            TOMBSTONE_SIG
        );
    }

    #[test]
    fn unsigned_unknown_and_bad_signatures_are_refused_when_keys_are_configured() {
        let (_, keys) = provisioning();
        let key = b"mtr-000001/k1";
        let v = Some(LINE.as_bytes());
        let sig = hex::decode(SIG).unwrap();
        assert_eq!(keys.check(key, v, None, None), Err(Refused::Unsigned));
        assert_eq!(
            keys.check(key, v, Some(b"prov-1"), None),
            Err(Refused::Unsigned)
        );
        assert_eq!(
            keys.check(key, v, Some(b"prov-9"), Some(&sig)),
            Err(Refused::UnknownSigner)
        );
        // the signature of the tombstone does not sign the line, nor another key's record
        let tomb = hex::decode(TOMBSTONE_SIG).unwrap();
        assert_eq!(
            keys.check(key, v, Some(b"prov-1"), Some(&tomb)),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            keys.check(b"mtr-000001/k2", v, Some(b"prov-1"), Some(&sig)),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            keys.check(key, v, Some(b"prov-1"), Some(&sig[..63])),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            ProvisioningKeys::default().check(key, v, None, None),
            Ok(())
        );
    }

    #[test]
    fn provisioning_key_files_are_checked_line_by_line() {
        let text = format!(
            "{{\"key_id\":\"prov-1\",\"public_key\":\"{}\"}}\n\
             {{\"key_id\":\"prov-2\",\"public_key\":\"00\"}}\n\
             {{\"key_id\":\"prov-1\",\"public_key\":\"{}\"}}\n",
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
        );
        let Err(Error::Invalid { lines, .. }) = ProvisioningKeys::parse("prov.jsonl", &text) else {
            panic!("bad lines accepted");
        };
        assert_eq!(lines.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [2, 3]);
        let ok = ProvisioningKeys::parse("prov.jsonl", text.lines().next().unwrap()).unwrap();
        assert!(!ok.is_empty());
    }

    #[test]
    fn lines_replace_tombstones_remove_and_mismatches_leave_the_entry_in_force() {
        let mut t = TopicRegistry::default();
        let active = LINE.replace("revoked", "active");
        t.apply(b"mtr-000001/k1", Some(active.as_bytes())).unwrap();
        let status = |t: &TopicRegistry| {
            let r = t.registry();
            r.device("mtr-000001").unwrap().key("k1").unwrap().status
        };
        assert_eq!(t.registry().len(), 1);
        // a line filed under another record key is refused: the entry stays active
        assert_eq!(
            t.apply(b"mtr-000002/k1", Some(LINE.as_bytes())),
            Err(Refused::Malformed)
        );
        assert_eq!(
            t.apply(b"mtr-000001/k1", Some(b"{not json")),
            Err(Refused::Malformed)
        );
        assert_eq!(status(&t), crate::registry::KeyStatus::Active);
        t.apply(b"mtr-000001/k1", Some(LINE.as_bytes())).unwrap();
        assert_eq!(status(&t), crate::registry::KeyStatus::Revoked);
        t.apply(b"mtr-000001/k1", None).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.registry().len(), 0);
    }
}
