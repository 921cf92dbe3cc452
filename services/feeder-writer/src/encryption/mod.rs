//! Encryption at rest: Parquet modular encryption of the datasets the key file names,
//! with keys only the utility holds.
//!
//! # Why envelope encryption with standard key material
//!
//! Files are read by analysts' tools (pyarrow, Spark, DuckDB), not only by Feeder. The
//! Parquet key-management tools define how a file says which master key protects it:
//! the footer and column key metadata hold "key material" JSON with the master key's id
//! and the file's own data key wrapped by it (`material.rs`). A reader that can unwrap
//! with the master keys (pyarrow's `CryptoFactory` plus a short `KmsClient`, see
//! `docs/datasets.md`) opens the files; without them the footer, schema statistics and
//! the protected columns are ciphertext. Fresh data keys per file also mean a master key
//! never encrypts bulk data directly.
//!
//! # What is protected
//!
//! The footer (schema, row counts, statistics, key-value metadata) is always encrypted
//! for a listed dataset, so a reader without keys learns nothing but the file size. The
//! listed columns (or all, when none are listed) are encrypted with column keys; the
//! page index of an encrypted column is encrypted too. The parquet crate writes bloom
//! filters in plaintext, so an encrypted `device_id` gets no bloom filter (it would let
//! anyone test which meters a file holds).
//!
//! Readers in this crate ([`crate::verify`], [`crate::compact`]) take an [`Encryption`]
//! and decrypt through a [`KeyRetriever`] over the same master keys; plaintext files
//! read the same with or without it. Compaction re-encrypts with fresh data keys.

pub mod keyfile;
mod material;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::errors::ParquetError;
use ring::rand::SystemRandom;

pub use keyfile::{DatasetKeys, KeyRing, MasterKey};

use crate::schema::Dataset;
use crate::{Error, Result};

/// The writer's encryption settings: none (every dataset plaintext) or a loaded key file.
/// Cheap to clone; `Debug` shows key names and sizes, never key bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Encryption {
    keys: Option<Arc<KeyRing>>,
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.keys {
            None => f.write_str("Encryption(none)"),
            Some(k) => f.debug_tuple("Encryption").field(k).finish(),
        }
    }
}

impl Encryption {
    /// Every dataset in plaintext.
    pub fn none() -> Self {
        Self::default()
    }

    /// Loads and validates the key file at `path`. Warns when the file is readable by
    /// group or others (it holds master keys, unless they all come from `env:`).
    pub fn load(path: &Path) -> Result<Self> {
        let fail = |message: String| Error::KeyFile {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "encryption key file is readable by group or others; chmod 600 it"
                );
            }
        }
        Self::from_toml(&text).map_err(fail)
    }

    /// Parses key-file text (see [`keyfile`]).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        Ok(Self {
            keys: Some(Arc::new(KeyRing::parse(text)?)),
        })
    }

    /// True when a key file is loaded.
    pub fn is_enabled(&self) -> bool {
        self.keys.is_some()
    }

    /// How `dataset` is encrypted, or `None` when its files are plaintext.
    pub fn dataset(&self, dataset: Dataset) -> Option<&DatasetKeys> {
        self.keys.as_ref()?.datasets.get(&dataset)
    }

    /// Names of the encrypted datasets and their master keys, for the start-up log.
    pub fn summary(&self) -> BTreeMap<&'static str, String> {
        let Some(keys) = &self.keys else {
            return BTreeMap::new();
        };
        keys.datasets
            .iter()
            .map(|(d, k)| {
                let cols: Vec<String> = k
                    .columns
                    .iter()
                    .map(|(m, c)| format!("{m}:{}", c.join(",")))
                    .collect();
                let cols = if cols.is_empty() {
                    "all columns".to_string()
                } else {
                    cols.join(";")
                };
                (d.name(), format!("footer {}; {cols}", k.footer_key))
            })
            .collect()
    }

    /// Encryption properties for one new file of `dataset` (fresh data keys), or `None`
    /// when the dataset is plaintext.
    pub fn file_properties(
        &self,
        dataset: Dataset,
    ) -> Result<Option<Arc<FileEncryptionProperties>>> {
        let (Some(ring), Some(spec)) = (&self.keys, self.dataset(dataset)) else {
            return Ok(None);
        };
        let fail = |m: String| Error::Encryption(format!("{}: {m}", dataset.name()));
        let master = |name: &str| {
            ring.master(name)
                .ok_or_else(|| fail(format!("master key {name:?} missing")))
        };
        let rng = SystemRandom::new();
        let footer_master = master(&spec.footer_key)?;
        let footer_dek = material::new_dek(&rng).map_err(fail)?;
        let footer_meta = material::key_metadata(
            true,
            footer_master,
            material::wrap(&footer_dek, footer_master, &rng).map_err(fail)?,
        )
        .map_err(fail)?;
        let mut builder =
            FileEncryptionProperties::builder(footer_dek).with_footer_key_metadata(footer_meta);
        for (name, columns) in &spec.columns {
            let m = master(name)?;
            // One data key per master key and file, shared by the columns it protects
            // (as Arrow's CryptoFactory does for columns listed under one master key).
            let dek = material::new_dek(&rng).map_err(fail)?;
            let meta =
                material::key_metadata(false, m, material::wrap(&dek, m, &rng).map_err(fail)?)
                    .map_err(fail)?;
            for column in columns {
                builder = builder.with_column_key_and_metadata(column, dek.clone(), meta.clone());
            }
        }
        Ok(Some(builder.build()?))
    }

    /// Decryption properties that unwrap every file's data keys with the master keys, or
    /// `None` without a key file.
    pub fn decryption_properties(&self) -> Result<Option<Arc<FileDecryptionProperties>>> {
        let Some(ring) = &self.keys else {
            return Ok(None);
        };
        let retriever = Arc::new(MasterKeyRetriever { ring: ring.clone() });
        Ok(Some(
            FileDecryptionProperties::with_key_retriever(retriever).build()?,
        ))
    }

    /// Arrow reader options that decrypt with these keys (plain options without a key
    /// file; plaintext files read either way).
    pub fn reader_options(&self) -> Result<ArrowReaderOptions> {
        let options = ArrowReaderOptions::new();
        Ok(match self.decryption_properties()? {
            Some(p) => options.with_file_decryption_properties(p),
            None => options,
        })
    }
}

/// Recovers a file's data keys from its key material with the key file's master keys.
struct MasterKeyRetriever {
    ring: Arc<KeyRing>,
}

impl KeyRetriever for MasterKeyRetriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let (master_id, wrapped) =
            material::parse_key_metadata(key_metadata).map_err(ParquetError::General)?;
        let master = self.ring.master(&master_id).ok_or_else(|| {
            ParquetError::General(format!(
                "the file needs master key {master_id:?}, which is not in the key file"
            ))
        })?;
        material::unwrap(&wrapped, master).map_err(ParquetError::General)
    }
}

#[cfg(test)]
mod tests;
