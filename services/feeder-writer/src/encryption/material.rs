//! Envelope encryption in the format of the Parquet key-management tools (parquet-mr's
//! `KeyMaterial`, Arrow C++'s `parquet::encryption::KeyMaterial`), so that any reader
//! with a KMS client for the utility's master keys (pyarrow's `CryptoFactory`, Spark)
//! can open the files the standard way:
//!
//! - every file gets fresh random 128-bit data keys (DEKs) for its footer and for each
//!   column key (parquet's AES-GCM module cipher is 128-bit);
//! - each DEK is wrapped by its master key "locally" exactly as parquet-mr's `InMemoryKMS`
//!   and Arrow's `EncryptKeyLocally` do: AES-GCM with the master key, AAD = the master
//!   key's id, output `nonce(12) || ciphertext || tag(16)` (no length prefix), base64;
//! - the footer / column key metadata is the "key material" JSON with internal storage
//!   and single wrapping; only the footer's names the KMS instance (`DEFAULT`).

use base64::Engine;
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::keyfile::MasterKey;

/// `keyMaterialType` of version 1 of the key-management tools.
const KEY_MATERIAL_TYPE: &str = "PKMT1";
/// KMS instance id and URL written when none is configured (as parquet-mr and Arrow do).
const KMS_DEFAULT: &str = "DEFAULT";
/// Data keys are 128-bit: the only AES-GCM key size of the parquet crate's module cipher.
pub(crate) const DEK_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// The key material JSON, field names as the spec writes them.
#[derive(Debug, Serialize, Deserialize)]
struct KeyMaterial {
    #[serde(rename = "keyMaterialType")]
    key_material_type: String,
    #[serde(rename = "internalStorage")]
    internal_storage: bool,
    #[serde(rename = "isFooterKey")]
    is_footer_key: bool,
    #[serde(
        rename = "kmsInstanceID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    kms_instance_id: Option<String>,
    #[serde(
        rename = "kmsInstanceURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    kms_instance_url: Option<String>,
    #[serde(rename = "masterKeyID")]
    master_key_id: String,
    #[serde(rename = "wrappedDEK")]
    wrapped_dek: String,
    #[serde(rename = "doubleWrapping")]
    double_wrapping: bool,
}

fn cipher(master: &MasterKey) -> Result<LessSafeKey, String> {
    let alg = match master.bytes.len() {
        16 => &AES_128_GCM,
        32 => &AES_256_GCM,
        n => return Err(format!("master key {:?} has {} bits", master.name, n * 8)),
    };
    let key = UnboundKey::new(alg, &master.bytes)
        .map_err(|_| format!("master key {:?} is not a valid AES key", master.name))?;
    Ok(LessSafeKey::new(key))
}

/// A fresh random data key.
pub(crate) fn new_dek(rng: &SystemRandom) -> Result<Vec<u8>, String> {
    let mut dek = vec![0u8; DEK_LEN];
    rng.fill(&mut dek)
        .map_err(|_| "system random source failed".to_string())?;
    Ok(dek)
}

/// Wraps `dek` with `master` (AAD = the master key id), base64.
pub(crate) fn wrap(dek: &[u8], master: &MasterKey, rng: &SystemRandom) -> Result<String, String> {
    let key = cipher(master)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .map_err(|_| "system random source failed".to_string())?;
    let mut sealed = dek.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(master.name.as_bytes()),
        &mut sealed,
    )
    .map_err(|_| format!("wrapping a data key with {:?} failed", master.name))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// Unwraps a base64 `wrapped` key with `master`; fails on a wrong key or altered bytes.
pub(crate) fn unwrap(wrapped: &str, master: &MasterKey) -> Result<Vec<u8>, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(wrapped)
        .map_err(|e| format!("wrapped key is not base64: {e}"))?;
    if raw.len() < NONCE_LEN + TAG_LEN {
        return Err(format!("wrapped key is {} bytes, too short", raw.len()));
    }
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| "wrapped key has no valid nonce".to_string())?;
    let key = cipher(master)?;
    let mut buf = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(master.name.as_bytes()), &mut buf)
        .map_err(|_| {
            format!(
                "master key {:?} does not unwrap this file's data key (wrong key?)",
                master.name
            )
        })?;
    Ok(plain.to_vec())
}

/// The key metadata JSON of a footer key (`footer`) or a column key wrapped by `master`.
pub(crate) fn key_metadata(
    footer: bool,
    master: &MasterKey,
    wrapped_dek: String,
) -> Result<Vec<u8>, String> {
    let kms = footer.then(|| KMS_DEFAULT.to_string());
    let material = KeyMaterial {
        key_material_type: KEY_MATERIAL_TYPE.into(),
        internal_storage: true,
        is_footer_key: footer,
        kms_instance_id: kms.clone(),
        kms_instance_url: kms,
        master_key_id: master.name.clone(),
        wrapped_dek,
        double_wrapping: false,
    };
    serde_json::to_vec(&material).map_err(|e| format!("key material: {e}"))
}

/// (master key id, wrapped DEK) of key metadata written by [`key_metadata`] (or by
/// parquet-mr / Arrow with internal storage and single wrapping).
pub(crate) fn parse_key_metadata(bytes: &[u8]) -> Result<(String, String), String> {
    let m: KeyMaterial = serde_json::from_slice(bytes)
        .map_err(|e| format!("key metadata is not Parquet key material JSON: {e}"))?;
    if m.key_material_type != KEY_MATERIAL_TYPE {
        return Err(format!(
            "key material type {:?}, expected {KEY_MATERIAL_TYPE}",
            m.key_material_type
        ));
    }
    if !m.internal_storage {
        return Err("key material is stored outside the file (unsupported)".into());
    }
    if m.double_wrapping {
        return Err("double-wrapped key material is not supported".into());
    }
    Ok((m.master_key_id, m.wrapped_dek))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(name: &str, len: usize, fill: u8) -> MasterKey {
        MasterKey {
            name: name.into(),
            bytes: vec![fill; len],
        }
    }

    #[test]
    fn wrap_unwrap_round_trip_and_rejections() {
        let rng = SystemRandom::new();
        for len in [16, 32] {
            let k = master("k1", len, 7);
            let dek = new_dek(&rng).unwrap();
            let w = wrap(&dek, &k, &rng).unwrap();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&w)
                .unwrap();
            assert_eq!(
                raw.len(),
                NONCE_LEN + DEK_LEN + TAG_LEN,
                "nonce || ct || tag"
            );
            assert_eq!(unwrap(&w, &k).unwrap(), dek);
            // another key, or the same bytes under another id (the AAD), fail
            assert!(unwrap(&w, &master("k1", len, 8)).is_err());
            assert!(unwrap(&w, &master("k2", len, 7)).is_err());
            assert_ne!(wrap(&dek, &k, &rng).unwrap(), w, "fresh nonce per wrap");
        }
    }

    #[test]
    fn key_metadata_has_the_spec_fields() {
        let rng = SystemRandom::new();
        let k = master("k_footer", 16, 1);
        let footer = key_metadata(true, &k, wrap(&[0; 16], &k, &rng).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&footer).unwrap();
        assert_eq!(v["keyMaterialType"], "PKMT1");
        assert_eq!(v["internalStorage"], true);
        assert_eq!(v["isFooterKey"], true);
        assert_eq!(v["kmsInstanceID"], "DEFAULT");
        assert_eq!(v["kmsInstanceURL"], "DEFAULT");
        assert_eq!(v["masterKeyID"], "k_footer");
        assert_eq!(v["doubleWrapping"], false);
        let column = key_metadata(false, &k, "x".into()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&column).unwrap();
        assert_eq!(v["isFooterKey"], false);
        assert!(v.get("kmsInstanceID").is_none());
        assert_eq!(
            parse_key_metadata(&column).unwrap(),
            ("k_footer".to_string(), "x".to_string())
        );
        assert!(parse_key_metadata(b"k_footer").is_err());
    }
}
