//! How the writer commits its files: Hive-partitioned Parquet directories (the default)
//! or Iceberg tables in a catalog, and that catalog's settings.

use std::path::Path;

use super::s3_warehouse::S3Warehouse;
use crate::storage::S3Config;
use crate::{Error, Result};

/// What a flush's files become.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TableFormat {
    /// `<root>/<dataset>/date=YYYY-MM-DD/*.parquet`, offsets in the file names.
    #[default]
    Parquet,
    /// One Iceberg table per dataset, offsets in the snapshot summaries.
    Iceberg(IcebergSettings),
}

/// Where the Iceberg tables live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcebergSettings {
    /// `sqlite://PATH` or `postgres://...` (the SQL catalog) or `http(s)://...` (a REST
    /// catalog: Polaris, Nessie, Lakekeeper, Glue REST). `None`: a SQLite file
    /// `<root>/iceberg/catalog.db`, nothing to run.
    pub catalog_uri: Option<String>,
    /// The catalog's name (pyiceberg's `SqlCatalog(name, ...)`: rows of other names in
    /// the same database are other catalogs).
    pub catalog_name: String,
    /// The namespace of the tables.
    pub namespace: String,
    /// Where new tables put their files. `None`: `<root>/iceberg/warehouse`, or with
    /// `s3`, `s3://<bucket>/<prefix>/iceberg/warehouse`.
    pub warehouse: Option<String>,
    /// The writer's S3 storage (`--storage s3`): the warehouse is in its bucket, written
    /// through its client ([`super::s3_warehouse`]). `None`: local disk.
    pub s3: Option<Box<S3Config>>,
}

impl Default for IcebergSettings {
    fn default() -> Self {
        Self {
            catalog_uri: None,
            catalog_name: "feeder".into(),
            namespace: "feeder".into(),
            warehouse: None,
            s3: None,
        }
    }
}

/// The catalog protocol a URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogKind {
    /// The SQL catalog with `?` parameters (SQLite).
    Sqlite,
    /// The SQL catalog with `$n` parameters (Postgres).
    Postgres,
    /// The Iceberg REST catalog protocol.
    Rest,
}

impl CatalogKind {
    pub fn of(uri: &str) -> Result<Self> {
        let scheme = uri.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "http" | "https" => Ok(Self::Rest),
            _ => Err(Error::Config(format!(
                "iceberg catalog uri {uri:?}: expected sqlite://, postgres:// or http(s):// (REST)"
            ))),
        }
    }
}

impl IcebergSettings {
    /// The default SQLite catalog file under `root`.
    pub fn default_catalog_file(root: &Path) -> std::path::PathBuf {
        root.join("iceberg").join("catalog.db")
    }

    /// True when `root` holds the default catalog: a root written in Iceberg mode, which
    /// the Hive-layout tools (`verify`, `compact`) must not take for an empty one.
    pub fn is_iceberg_root(root: &Path) -> bool {
        Self::default_catalog_file(root).exists()
    }

    /// The catalog URI, the default one resolved against `root` (created if missing).
    pub fn catalog_uri(&self, root: &Path) -> String {
        match &self.catalog_uri {
            Some(uri) => uri.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                Self::default_catalog_file(root).display()
            ),
        }
    }

    /// The warehouse location, the default one resolved against `root`.
    pub fn warehouse(&self, root: &Path) -> String {
        match (&self.warehouse, &self.s3) {
            (Some(w), _) => w.clone(),
            (None, Some(s3)) => S3Warehouse::default_location(s3),
            (None, None) => root.join("iceberg").join("warehouse").display().to_string(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(uri) = &self.catalog_uri {
            CatalogKind::of(uri)?;
            if uri.starts_with("https:") {
                // iceberg's reqwest is built without a TLS backend (cold build time)
                return Err(Error::Config(format!(
                    "iceberg catalog {uri:?}: this build speaks plain http:// to REST \
                     catalogs only (no TLS backend); use a TLS-terminating proxy on \
                     localhost (docs/datasets.md, \"Iceberg tables\")"
                )));
            }
        }
        match (&self.s3, &self.warehouse) {
            (Some(_), _) if self.catalog_uri.is_none() => {
                return Err(Error::Config(
                    "iceberg on S3 storage needs a catalog (--iceberg-catalog sqlite:///PATH on \
                     a volume, or postgres://...): the default catalog is a file under --data, \
                     and --storage s3 has no --data"
                        .into(),
                ));
            }
            (Some(s3), Some(w)) if !w.starts_with(&format!("s3://{}/", s3.bucket)) => {
                return Err(Error::Config(format!(
                    "iceberg warehouse {w:?}: with --storage s3 it must be in the bucket \
                     (s3://{}/...)",
                    s3.bucket
                )));
            }
            (None, Some(w)) if w.contains("://") && !w.starts_with("file://") => {
                return Err(Error::Config(format!(
                    "iceberg warehouse {w:?}: an object-store warehouse needs --storage s3 \
                     (its bucket and credentials); this writer's storage is local disk"
                )));
            }
            _ => {}
        }
        if self.namespace.is_empty() || self.namespace.contains('.') {
            return Err(Error::Config(format!(
                "iceberg namespace {:?}: one non-empty level without dots",
                self.namespace
            )));
        }
        if self.catalog_name.trim().is_empty() {
            return Err(Error::Config(
                "iceberg catalog name must not be empty".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_their_catalog_or_are_refused() {
        let cases = [
            ("sqlite:///var/feeder/catalog.db", Some(CatalogKind::Sqlite)),
            ("postgres://feeder@db/iceberg", Some(CatalogKind::Postgres)),
            ("postgresql://db/iceberg", Some(CatalogKind::Postgres)),
            (
                "https://polaris.example/api/catalog",
                Some(CatalogKind::Rest),
            ),
            ("http://127.0.0.1:8181", Some(CatalogKind::Rest)),
            ("mysql://db/iceberg", None),
            ("/var/feeder/catalog.db", None),
            ("", None),
        ];
        for (uri, want) in cases {
            assert_eq!(CatalogKind::of(uri).ok(), want, "{uri}");
        }
    }

    #[test]
    fn defaults_live_under_the_data_root() {
        let s = IcebergSettings::default();
        s.validate().unwrap();
        let root = Path::new("/data");
        assert_eq!(
            s.catalog_uri(root),
            "sqlite:///data/iceberg/catalog.db?mode=rwc"
        );
        assert_eq!(s.warehouse(root), "/data/iceberg/warehouse");
        let https = IcebergSettings {
            catalog_uri: Some("https://polaris.example/api/catalog".into()),
            ..IcebergSettings::default()
        };
        assert!(
            https
                .validate()
                .unwrap_err()
                .to_string()
                .contains("plain http")
        );
        for ns in ["", "a.b"] {
            let bad = IcebergSettings {
                namespace: ns.into(),
                ..IcebergSettings::default()
            };
            assert!(
                bad.validate()
                    .unwrap_err()
                    .to_string()
                    .contains("namespace")
            );
        }
    }
}
