//! The S3-compatible backend (AWS S3, MinIO, Ceph RGW, moto, ...), through `object_store`.
//!
//! Why it keeps the [`Storage`] contract: an S3 `PUT` of a whole object is atomic (the
//! object appears complete under its key or not at all, and replaces an older one) and
//! durable when it is acknowledged, so no temporary name is needed and none is ever left
//! behind; listing is strongly consistent on S3 and on the compatible stores we test, so
//! recovery sees every file a flush acknowledged.
//!
//! The writer calls storage from blocking threads; each call runs its request on the
//! given tokio runtime and waits for it. Credentials are never logged (`Debug` redacts
//! them).

use std::fmt;
use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::runtime::Handle;

use super::{Listed, Storage, Tail};
use crate::schema::Dataset;
use crate::{Error, Result};

/// Where and how to reach the bucket. `from_env` reads `FEEDER_S3_*` variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-compatible server; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Key prefix of the data root inside the bucket (no leading or trailing `/`).
    pub prefix: String,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (local test servers).
    pub allow_http: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<set>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Config {
    /// `FEEDER_S3_BUCKET` (required), `FEEDER_S3_ENDPOINT`, `FEEDER_S3_PREFIX`,
    /// `FEEDER_S3_REGION` (default `us-east-1`), `FEEDER_S3_ALLOW_HTTP` (`true`/`1`), and
    /// credentials from `FEEDER_S3_ACCESS_KEY_ID` / `FEEDER_S3_SECRET_ACCESS_KEY`, else
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub fn from_env() -> Result<Self> {
        let var = env_var;
        let (access_key_id, secret_access_key) = Self::credentials_from_env();
        let cfg = Self {
            endpoint: var("FEEDER_S3_ENDPOINT"),
            bucket: var("FEEDER_S3_BUCKET")
                .ok_or_else(|| Error::Config("FEEDER_S3_BUCKET is not set".into()))?,
            prefix: var("FEEDER_S3_PREFIX").unwrap_or_default(),
            region: var("FEEDER_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            access_key_id,
            secret_access_key,
            allow_http: var("FEEDER_S3_ALLOW_HTTP").is_some_and(|v| v == "true" || v == "1"),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// (access key id, secret access key): `FEEDER_S3_ACCESS_KEY_ID` /
    /// `FEEDER_S3_SECRET_ACCESS_KEY`, else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    /// Credentials only ever come from the environment, never from flags or files.
    pub fn credentials_from_env() -> (Option<String>, Option<String>) {
        (
            env_var("FEEDER_S3_ACCESS_KEY_ID").or_else(|| env_var("AWS_ACCESS_KEY_ID")),
            env_var("FEEDER_S3_SECRET_ACCESS_KEY").or_else(|| env_var("AWS_SECRET_ACCESS_KEY")),
        )
    }

    /// The bucket's client (the Parquet storage's and the Iceberg warehouse's); connects
    /// lazily, on the first request.
    pub fn object_store(&self) -> Result<AmazonS3> {
        self.validate()?;
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_allow_http(self.allow_http);
        if let Some(endpoint) = &self.endpoint {
            // path-style requests: what local and most self-hosted servers expect
            b = b
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        Ok(b.build()?)
    }

    pub fn validate(&self) -> Result<()> {
        if self.bucket.is_empty() {
            return Err(Error::Config("s3 bucket must not be empty".into()));
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(Error::Config(
                "s3 prefix must not start or end with '/'".into(),
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(Error::Config(
                "s3 access key id and secret access key go together".into(),
            ));
        }
        Ok(())
    }
}

/// A set, non-empty environment variable.
fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// A data root in an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Storage {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    rt: Handle,
}

impl S3Storage {
    /// Connects lazily (the first request opens connections); `rt` runs the requests.
    pub fn new(cfg: &S3Config, rt: Handle) -> Result<Self> {
        Ok(Self {
            store: Arc::new(cfg.object_store()?),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            rt,
        })
    }

    fn key(&self, rel: &str) -> Result<ObjectPath> {
        let full = if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|e| Error::Storage(format!("object key {full}: {e}")))
    }

    /// The part of `path` after the root prefix.
    fn relative<'p>(&self, path: &'p str) -> &'p str {
        if self.prefix.is_empty() {
            path
        } else {
            path.strip_prefix(self.prefix.as_str())
                .and_then(|p| p.strip_prefix('/'))
                .unwrap_or(path)
        }
    }
}

impl Storage for S3Storage {
    fn put(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let key = self.key(&format!("{dir}/{name}"))?;
        let payload = PutPayload::from(bytes.to_vec());
        let store = Arc::clone(&self.store);
        self.rt
            .block_on(async move { store.put(&key, payload).await })?;
        Ok(())
    }

    fn list(&self, dataset: Dataset) -> Result<Vec<Listed>> {
        let base = self.key(dataset.name())?;
        let store = Arc::clone(&self.store);
        let listed = self.rt.block_on(async move {
            let mut out = Vec::new();
            let dates = store.list_with_delimiter(Some(&base)).await?;
            for date_dir in dates.common_prefixes {
                if !date_dir.filename().is_some_and(|d| d.starts_with("date=")) {
                    continue;
                }
                let files = store.list_with_delimiter(Some(&date_dir)).await?;
                out.extend(files.objects.into_iter().map(|o| o.location));
            }
            Ok::<_, object_store::Error>(out)
        })?;
        Ok(listed
            .into_iter()
            .filter_map(|loc| {
                let rel = self.relative(loc.as_ref());
                let (dir, name) = rel.rsplit_once('/')?;
                Some(Listed {
                    dir: dir.to_string(),
                    name: name.to_string(),
                })
            })
            .collect())
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let base = self.key(dir)?;
        let store = Arc::clone(&self.store);
        let listed = self.rt.block_on(async move {
            Ok::<_, object_store::Error>(store.list_with_delimiter(Some(&base)).await?.objects)
        })?;
        Ok(listed
            .into_iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect())
    }

    fn delete(&self, dir: &str, name: &str) -> Result<()> {
        let key = self.key(&format!("{dir}/{name}"))?;
        let store = Arc::clone(&self.store);
        match self.rt.block_on(async move { store.delete(&key).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn delete_many(&self, dir: &str, names: &[&str]) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let keys = names
            .iter()
            .map(|name| self.key(&format!("{dir}/{name}")))
            .collect::<Result<Vec<_>>>()?;
        let store = Arc::clone(&self.store);
        self.rt.block_on(async move {
            // object_store batches these into DeleteObjects requests of up to 1,000 keys
            let locations = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
            store
                .delete_stream(locations)
                .try_for_each(|_| async { Ok(()) })
                .await
                .or_else(|e| match e {
                    object_store::Error::NotFound { .. } => Ok(()),
                    e => Err(e),
                })
        })?;
        Ok(())
    }

    fn get(&self, dir: &str, name: &str) -> Result<bytes::Bytes> {
        let key = self.key(&format!("{dir}/{name}"))?;
        let store = Arc::clone(&self.store);
        Ok(self
            .rt
            .block_on(async move { store.get(&key).await?.bytes().await })?)
    }

    fn get_tail(&self, dir: &str, name: &str, max: u64) -> Result<Tail> {
        let key = self.key(&format!("{dir}/{name}"))?;
        let store = Arc::clone(&self.store);
        // one request: a suffix range answers with the bytes and the object's size
        let (len, bytes) = self.rt.block_on(async move {
            let got = store
                .get_opts(
                    &key,
                    GetOptions {
                        range: Some(GetRange::Suffix(max)),
                        ..GetOptions::default()
                    },
                )
                .await?;
            let len = got.meta.size;
            Ok::<_, object_store::Error>((len, got.bytes().await?))
        })?;
        Ok(Tail { len, bytes })
    }

    fn locate(&self, dir: &str, name: &str) -> std::path::PathBuf {
        let key = self
            .key(&format!("{dir}/{name}"))
            .map_or_else(|_| format!("{dir}/{name}"), |k| k.to_string());
        format!("s3://{}/{key}", self.bucket).into()
    }
}
