//! The Iceberg warehouse on S3: iceberg-rust's `Storage` over the writer's own S3 client.
//!
//! # Why
//! iceberg-rust 0.9 ships a local-disk `FileIO` only (its S3 one moved to a separate
//! OpenDAL crate, a second S3 client and signer to build). The writer already speaks S3
//! through `object_store` with the settings operators give it (`--storage s3`,
//! `FEEDER_S3_*`), so the warehouse uses that client: one set of settings and
//! credentials, one S3 stack in the build, for Parquet and Iceberg alike.
//!
//! # What it guarantees
//! Iceberg needs whole-object writes and reads of byte ranges; S3 gives both, and an
//! object appears complete or not at all. Data files are streamed with multipart uploads
//! above 10 MiB (`object_store`'s `BufWriter`), so a flush never holds a second copy of
//! a large file in memory. Paths outside the bucket are refused with an error naming
//! them, never read or written elsewhere.
//!
//! iceberg-rust may serialize a `FileIO` (its traits are `typetag`): only the bucket is
//! serialized, never the credentials, and a deserialized copy refuses every call.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::storage::S3Config;

/// The warehouse's bucket and its client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3Warehouse {
    bucket: String,
    #[serde(skip)]
    store: Option<Arc<dyn ObjectStore>>,
}

impl S3Warehouse {
    /// A client for `cfg`'s bucket (connections open on the first request).
    pub fn new(cfg: &S3Config) -> crate::Result<Self> {
        Ok(Self {
            bucket: cfg.bucket.clone(),
            store: Some(Arc::new(cfg.object_store()?)),
        })
    }

    /// The warehouse location under `cfg`'s prefix: `s3://bucket/prefix/iceberg/warehouse`.
    pub fn default_location(cfg: &S3Config) -> String {
        let prefix = cfg.prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}/iceberg/warehouse", cfg.bucket)
        } else {
            format!("s3://{}/{prefix}/iceberg/warehouse", cfg.bucket)
        }
    }

    fn store(&self) -> Result<&Arc<dyn ObjectStore>> {
        self.store.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unexpected,
                "s3 warehouse deserialized without its client (credentials are never serialized)",
            )
        })
    }

    /// The object key of `path` (`s3://bucket/key` or `s3a://bucket/key`).
    fn key(&self, path: &str) -> Result<ObjectPath> {
        let rest = path
            .strip_prefix("s3://")
            .or_else(|| path.strip_prefix("s3a://"))
            .ok_or_else(|| outside(path, "not an s3:// path"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket != self.bucket {
            return Err(outside(path, "another bucket"));
        }
        ObjectPath::parse(key).map_err(|e| outside(path, &e.to_string()))
    }
}

fn outside(path: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::DataInvalid,
        format!("{path}: outside the warehouse bucket ({why})"),
    )
}

fn s3_error(what: &str, path: &str, e: object_store::Error) -> Error {
    Error::new(ErrorKind::Unexpected, format!("s3 {what} {path}: {e}"))
}

#[async_trait]
#[typetag::serde]
impl Storage for S3Warehouse {
    async fn exists(&self, path: &str) -> Result<bool> {
        match self.store()?.head(&self.key(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(s3_error("head", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let meta = self
            .store()?
            .head(&self.key(path)?)
            .await
            .map_err(|e| s3_error("head", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let got = self.store()?.get(&self.key(path)?).await;
        let got = got.map_err(|e| s3_error("get", path, e))?;
        got.bytes().await.map_err(|e| s3_error("get", path, e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        Ok(Box::new(RangeReader {
            store: Arc::clone(self.store()?),
            key: self.key(path)?,
            path: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let key = self.key(path)?;
        self.store()?
            .put(&key, PutPayload::from(bs))
            .await
            .map(|_| ())
            .map_err(|e| s3_error("put", path, e))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        Ok(Box::new(Upload {
            writer: Some(BufWriter::new(Arc::clone(self.store()?), self.key(path)?)),
            path: path.to_string(),
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.store()?.delete(&self.key(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error("delete", path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let store = self.store()?;
        let prefix = self.key(path)?;
        let keys: Vec<ObjectPath> = store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| s3_error("list", path, e))?;
        for key in keys {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_error("delete", key.as_ref(), e)),
            }
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        self.key(path)?;
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        self.key(path)?;
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Reads byte ranges of one object.
struct RangeReader {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    path: String,
}

#[async_trait]
impl FileRead for RangeReader {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(&self.key, range)
            .await
            .map_err(|e| s3_error("get range", &self.path, e))
    }
}

/// One object being written: buffered, then uploaded whole or in parts on close.
struct Upload {
    writer: Option<BufWriter>,
    path: String,
}

#[async_trait]
impl FileWrite for Upload {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::DataInvalid, "write after close"))?;
        w.put(bs)
            .await
            .map_err(|e| s3_error("upload", &self.path, e))
    }

    async fn close(&mut self) -> Result<()> {
        let mut w = self
            .writer
            .take()
            .ok_or_else(|| Error::new(ErrorKind::DataInvalid, "closed twice"))?;
        w.shutdown().await.map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("s3 upload {}: {e}", self.path),
            )
        })
    }
}

/// Hands the catalogs the warehouse's storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3WarehouseFactory(pub S3Warehouse);

#[typetag::serde]
impl StorageFactory for S3WarehouseFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warehouse() -> S3Warehouse {
        S3Warehouse {
            bucket: "utility".into(),
            store: None,
        }
    }

    #[test]
    fn paths_outside_the_bucket_are_refused() {
        let w = warehouse();
        assert_eq!(
            w.key("s3://utility/feeder/iceberg/warehouse/x.parquet")
                .unwrap()
                .as_ref(),
            "feeder/iceberg/warehouse/x.parquet"
        );
        assert_eq!(w.key("s3a://utility/a/b").unwrap().as_ref(), "a/b");
        for bad in [
            "s3://other/feeder/x.parquet",
            "/var/lib/feeder/x.parquet",
            "file:///etc/passwd",
            "gs://utility/x",
        ] {
            let e = w.key(bad).unwrap_err();
            assert!(
                e.to_string().contains("outside the warehouse bucket"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_deserialized_warehouse_has_no_credentials_and_refuses_calls() {
        let json = serde_json::to_string(&warehouse()).unwrap();
        assert_eq!(json, r#"{"bucket":"utility"}"#);
        let back: S3Warehouse = serde_json::from_str(&json).unwrap();
        assert!(back.store().is_err());
    }

    #[test]
    fn the_default_location_is_under_the_prefix() {
        let mut cfg = S3Config {
            bucket: "utility".into(),
            prefix: "feeder".into(),
            ..S3Config::default()
        };
        assert_eq!(
            S3Warehouse::default_location(&cfg),
            "s3://utility/feeder/iceberg/warehouse"
        );
        cfg.prefix.clear();
        assert_eq!(
            S3Warehouse::default_location(&cfg),
            "s3://utility/iceberg/warehouse"
        );
    }
}
