//! The key file: the utility's named master keys and, per dataset, which master key
//! protects the footer and which protects which columns. TOML, so operators can comment
//! it; every error names the line (or the key) that is wrong, never a key's bytes.
//!
//! ```toml
//! [master_keys]                 # 128 or 256 bits: 32/64 hex digits, or standard base64
//! k_footer = "00112233445566778899aabbccddeeff"
//! k_cols = "base64:AAECAwQFBgcICQoLDA0ODwABAgMEBQYHCAkKCwwNDg8="
//!
//! [datasets.readings]           # footer and statistics under k_footer,
//! footer_key = "k_footer"       # these columns under k_cols, the rest plaintext
//! columns = { k_cols = ["value", "device_id"] }
//!
//! [datasets.frames]             # no `columns`: every column under the footer key
//! footer_key = "k_footer"
//! ```
//!
//! A key value `"env:NAME"` is read from environment variable `NAME` instead (e.g. a
//! Kubernetes secret), so the file itself can hold no key bytes at all. Datasets not
//! listed are written in plaintext. A column name is a top-level field of
//! the dataset (all its leaves) or a leaf path such as `flags.list.element`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use base64::Engine;
use serde::Deserialize;
use toml::Spanned;

use crate::schema::Dataset;

/// A named master key. `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("name", &self.name)
            .field("bits", &(self.bytes.len() * 8))
            .field("bytes", &"<redacted>")
            .finish()
    }
}

/// How one dataset is encrypted: master key names and the leaf column paths they protect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetKeys {
    pub footer_key: String,
    /// (master key name, leaf column paths); empty: every column under the footer key.
    pub columns: Vec<(String, Vec<String>)>,
}

impl DatasetKeys {
    /// True when leaf column `path` is encrypted in this dataset's files.
    pub fn encrypts_column(&self, path: &str) -> bool {
        self.columns.is_empty()
            || self
                .columns
                .iter()
                .any(|(_, c)| c.iter().any(|p| p == path))
    }
}

/// The parsed, validated key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    pub(crate) master_keys: BTreeMap<String, MasterKey>,
    pub(crate) datasets: BTreeMap<Dataset, DatasetKeys>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    master_keys: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    datasets: BTreeMap<Spanned<String>, RawDataset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    footer_key: Spanned<String>,
    #[serde(default)]
    columns: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
}

/// 1-based line of byte offset `span.start` in `text`.
fn line(text: &str, span: Range<usize>) -> usize {
    text.get(..span.start)
        .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count())
        + 1
}

/// Decodes a master key: hex digits, else standard base64 (optionally prefixed
/// `base64:`); 16 or 32 bytes.
fn decode_key(value: &str) -> Result<Vec<u8>, String> {
    let v = value.trim();
    // Standard base64 of a 16- or 32-byte key ends in `=`, so it is never all hex digits.
    let hexlike = v.len().is_multiple_of(2) && v.bytes().all(|b| b.is_ascii_hexdigit());
    let bytes = if let Some(hex) = v.strip_prefix("hex:") {
        hex::decode(hex).map_err(|e| format!("not hex: {e}"))?
    } else if hexlike {
        hex::decode(v).map_err(|e| format!("not hex: {e}"))?
    } else {
        let b64 = v.strip_prefix("base64:").unwrap_or(v);
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("neither 32/64 hex digits nor base64: {e}"))?
    };
    match bytes.len() {
        16 | 32 => Ok(bytes),
        24 => Err("192-bit master keys are not supported; use 128 or 256 bits".into()),
        n => Err(format!(
            "{} bits; a master key has 128 or 256 bits (32/64 hex digits or base64)",
            n * 8
        )),
    }
}

/// Leaf column paths of `dataset`'s Parquet schema, in schema order.
pub(crate) fn leaf_columns(dataset: Dataset) -> Vec<String> {
    match parquet::arrow::ArrowSchemaConverter::new().convert(&dataset.schema()) {
        Ok(descr) => descr.columns().iter().map(|c| c.path().string()).collect(),
        // The schemas are static and convertible (every file write converts them).
        Err(_) => Vec::new(),
    }
}

impl KeyRing {
    /// Parses and validates key-file `text`; the error is one line naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_with_env(text, &|var| std::env::var(var).ok())
    }

    /// [`KeyRing::parse`], reading `env:NAME` key values through `env`.
    pub fn parse_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        let mut master_keys = BTreeMap::new();
        for (name, value) in raw.master_keys {
            let from_env = match value.get_ref().strip_prefix("env:") {
                Some(var) => Some(env(var).ok_or_else(|| {
                    format!(
                        "line {}: master key {:?}: environment variable {var} is not set",
                        line(text, value.span()),
                        name.get_ref()
                    )
                })?),
                None => None,
            };
            let bytes =
                decode_key(from_env.as_deref().unwrap_or(value.get_ref())).map_err(|e| {
                    format!(
                        "line {}: master key {:?}: {e}",
                        line(text, value.span()),
                        name.get_ref()
                    )
                })?;
            let name = name.into_inner();
            master_keys.insert(name.clone(), MasterKey { name, bytes });
        }
        let known = |key: &Spanned<String>, what: &str| -> Result<String, String> {
            if master_keys.contains_key(key.get_ref()) {
                Ok(key.get_ref().clone())
            } else {
                Err(format!(
                    "line {}: {what} {:?} is not in [master_keys]",
                    line(text, key.span()),
                    key.get_ref()
                ))
            }
        };
        let mut datasets = BTreeMap::new();
        for (name, spec) in raw.datasets {
            let at = line(text, name.span());
            let dataset = Dataset::ALL
                .into_iter()
                .find(|d| d.name() == name.get_ref())
                .ok_or_else(|| {
                    let names: Vec<&str> = Dataset::ALL.iter().map(|d| d.name()).collect();
                    format!(
                        "line {at}: unknown dataset {:?} (datasets: {})",
                        name.get_ref(),
                        names.join(", ")
                    )
                })?;
            let footer_key = known(&spec.footer_key, "footer_key")?;
            let leaves = leaf_columns(dataset);
            let mut seen = BTreeSet::new();
            let mut columns = Vec::new();
            for (key, cols) in spec.columns {
                let key_name = known(&key, "column key")?;
                let mut paths = Vec::new();
                for col in cols {
                    let c = col.get_ref();
                    let matched: Vec<&String> = leaves
                        .iter()
                        .filter(|l| *l == c || l.starts_with(&format!("{c}.")))
                        .collect();
                    let at = line(text, col.span());
                    if matched.is_empty() {
                        return Err(format!(
                            "line {at}: dataset {} has no column {c:?} (columns: {})",
                            dataset.name(),
                            leaves.join(", ")
                        ));
                    }
                    for leaf in matched {
                        if !seen.insert(leaf.clone()) {
                            return Err(format!(
                                "line {at}: column {leaf:?} of dataset {} is listed twice",
                                dataset.name()
                            ));
                        }
                        paths.push(leaf.clone());
                    }
                }
                if !paths.is_empty() {
                    columns.push((key_name, paths));
                }
            }
            datasets.insert(
                dataset,
                DatasetKeys {
                    footer_key,
                    columns,
                },
            );
        }
        Ok(Self {
            master_keys,
            datasets,
        })
    }

    pub(crate) fn master(&self, name: &str) -> Option<&MasterKey> {
        self.master_keys.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX16: &str = "00112233445566778899aabbccddeeff";

    fn file(extra: &str) -> String {
        format!(
            "[master_keys]\nk_footer = \"{HEX16}\"\nk_cols = \"base64:AAECAwQFBgcICQoLDA0ODwABAgMEBQYHCAkKCwwNDg8=\"\n{extra}"
        )
    }

    #[test]
    fn parses_keys_and_expands_columns() {
        let text = file(
            "[datasets.readings]\nfooter_key = \"k_footer\"\ncolumns = { k_cols = [\"value\", \"device_id\", \"flags\"] }\n\
             [datasets.frames]\nfooter_key = \"k_cols\"\n",
        );
        let ring = KeyRing::parse(&text).unwrap();
        assert_eq!(
            ring.master("k_footer").unwrap().bytes,
            hex::decode(HEX16).unwrap()
        );
        assert_eq!(ring.master("k_cols").unwrap().bytes.len(), 32);
        let r = &ring.datasets[&Dataset::Readings];
        assert_eq!(r.footer_key, "k_footer");
        let (key, cols) = &r.columns[0];
        assert_eq!(key, "k_cols");
        assert_eq!(&cols[..2], ["value", "device_id"]);
        assert!(cols[2].starts_with("flags."), "{cols:?}");
        assert!(r.encrypts_column("value") && !r.encrypts_column("seq"));
        let f = &ring.datasets[&Dataset::Frames];
        assert!(f.columns.is_empty() && f.encrypts_column("payload"));
        assert!(!ring.datasets.contains_key(&Dataset::Telematics));
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let cases: [(String, &str); 9] = [
            (
                file("[datasets.readings]\nfooter_key = \"k_nope\"\n"),
                "line 5: footer_key \"k_nope\" is not in [master_keys]",
            ),
            (
                file(
                    "[datasets.readings]\nfooter_key = \"k_footer\"\ncolumns = { k_x = [\"value\"] }\n",
                ),
                "line 6: column key \"k_x\"",
            ),
            (
                file(
                    "[datasets.readings]\nfooter_key = \"k_footer\"\ncolumns = { k_cols = [\"valu\"] }\n",
                ),
                "line 6: dataset readings has no column \"valu\"",
            ),
            (
                file(
                    "[datasets.readings]\nfooter_key = \"k_footer\"\ncolumns = { k_cols = [\"value\", \"value\"] }\n",
                ),
                "listed twice",
            ),
            (
                file("[datasets.reading]\nfooter_key = \"k_footer\"\n"),
                "line 4: unknown dataset \"reading\"",
            ),
            (
                "[master_keys]\nk = \"00112233\"\n".into(),
                "line 2: master key \"k\": 32 bits",
            ),
            (
                "[master_keys]\nk = \"not base64!\"\n".into(),
                "line 2: master key \"k\": neither",
            ),
            (
                format!("[master_keys]\nk = \"{}\"\n", "ab".repeat(24)),
                "192-bit master keys are not supported",
            ),
            ("[master_key]\n".into(), "unknown field `master_key`"),
        ];
        for (text, want) in cases {
            let err = KeyRing::parse(&text).unwrap_err();
            assert!(err.contains(want), "want {want:?} in {err:?}");
            assert!(!err.contains(HEX16), "key bytes leaked: {err}");
        }
        let err = KeyRing::parse("[master_keys]\nk = 1\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn key_values_can_come_from_the_environment() {
        let env = |var: &str| (var == "FEEDER_TEST_KEY").then(|| HEX16.to_string());
        let text = "[master_keys]\nk = \"env:FEEDER_TEST_KEY\"\n";
        let ring = KeyRing::parse_with_env(text, &env).unwrap();
        assert_eq!(ring.master("k").unwrap().bytes, hex::decode(HEX16).unwrap());
        let err = KeyRing::parse_with_env("\n[master_keys]\nk = \"env:NOPE\"\n", &env).unwrap_err();
        assert!(
            err.contains("line 3: master key \"k\": environment variable NOPE is not set"),
            "{err}"
        );
    }

    #[test]
    fn debug_redacts_key_bytes() {
        let ring = KeyRing::parse(&file("")).unwrap();
        let shown = format!("{ring:?}");
        assert!(
            shown.contains("k_footer") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(
            !shown.contains("0x11") && !shown.contains("17, 34"),
            "{shown}"
        );
        assert!(!shown.contains(HEX16));
    }
}
