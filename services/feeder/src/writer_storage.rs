//! Where the datasets are: `--storage local|s3` and its settings, defined once
//! ([`StorageArgs`]) for the writer that stores the datasets and for the tools that read
//! them (`feeder verify`, `feeder compact`), and checked at start so a bad combination
//! fails before the writer joins its group or a tool reads anything.
//!
//! This module knows nothing of the command line around it: `cli` flattens
//! [`StorageArgs`] into each subcommand that needs it (the dependency goes one way).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use feeder_kafka::{KafkaConfig, Topics};
use feeder_writer::WriterConfig;
use feeder_writer::iceberg::TableFormat;
use feeder_writer::storage::{LocalFs, S3Config, S3Storage};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    Local,
    S3,
}

/// The storage settings of the writer and of the dataset tools.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Root of the datasets (`<root>/<dataset>/date=YYYY-MM-DD/*.parquet`) with
    /// `--storage local`.
    #[arg(long, env = "FEEDER_DATA")]
    pub data: Option<PathBuf>,
    /// Where the datasets are: a local directory (`--data`) or an S3-compatible bucket
    /// (`--s3-*`; credentials from `FEEDER_S3_ACCESS_KEY_ID` / `FEEDER_S3_SECRET_ACCESS_KEY`
    /// or `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, never flags).
    #[arg(
        id = "storage",
        long = "storage",
        env = "FEEDER_STORAGE",
        value_enum,
        default_value = "local"
    )]
    pub kind: StorageKind,
    #[arg(long, env = "FEEDER_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// `http(s)://host:port` of an S3-compatible server; unset for AWS S3 itself.
    #[arg(long, env = "FEEDER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Key prefix of the data root inside the bucket (no leading or trailing `/`).
    #[arg(long, env = "FEEDER_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,
    #[arg(long, env = "FEEDER_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Allow a plain `http://` endpoint (a server inside the cluster or on localhost).
    #[arg(long, env = "FEEDER_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
}

/// The validated storage choice.
#[derive(Debug)]
pub enum Storage {
    Local,
    S3(S3Config),
}

impl StorageArgs {
    /// Checks the storage flags (credentials come from the environment).
    pub fn check(&self) -> anyhow::Result<Storage> {
        match self.kind {
            StorageKind::Local => {
                anyhow::ensure!(self.data.is_some(), "--storage local needs --data DIR");
                anyhow::ensure!(
                    self.s3_bucket.is_none() && self.s3_endpoint.is_none(),
                    "--s3-bucket / --s3-endpoint are set but --storage is local: add --storage s3"
                );
                Ok(Storage::Local)
            }
            StorageKind::S3 => {
                let bucket = self
                    .s3_bucket
                    .clone()
                    .context("--storage s3 needs --s3-bucket (or FEEDER_S3_BUCKET)")?;
                anyhow::ensure!(
                    self.data.is_none(),
                    "--data is set but --storage is s3: the datasets go to the bucket; drop --data"
                );
                if let Some(e) = &self.s3_endpoint {
                    anyhow::ensure!(
                        e.starts_with("https://")
                            || (e.starts_with("http://") && self.s3_allow_http),
                        "--s3-endpoint {e:?}: must be https://..., or http://... with --s3-allow-http"
                    );
                }
                let (access_key_id, secret_access_key) = S3Config::credentials_from_env();
                let cfg = S3Config {
                    endpoint: self.s3_endpoint.clone(),
                    bucket,
                    prefix: self.s3_prefix.clone(),
                    region: self.s3_region.clone(),
                    access_key_id,
                    secret_access_key,
                    allow_http: self.s3_allow_http,
                };
                cfg.validate()?;
                Ok(Storage::S3(cfg))
            }
        }
    }

    /// The datasets for a tool that reads them: checked, then opened (nothing is created
    /// on a local root). `rt` runs the bucket's requests.
    pub fn open(
        &self,
        rt: tokio::runtime::Handle,
    ) -> anyhow::Result<Arc<dyn feeder_writer::storage::Storage>> {
        Ok(match self.check()? {
            Storage::Local => Arc::new(LocalFs::existing(
                self.data
                    .clone()
                    .context("--storage local needs --data DIR")?,
            )),
            Storage::S3(cfg) => Arc::new(S3Storage::new(&cfg, rt)?),
        })
    }
}

/// Runs the writer on the chosen storage.
pub async fn run(
    kafka: &KafkaConfig,
    topics: &Topics,
    cfg: WriterConfig,
    storage: Storage,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match storage {
        Storage::Local => {
            feeder_writer::run(kafka, topics, cfg, Arc::default(), shutdown).await?;
        }
        Storage::S3(s3) => {
            let mut cfg = cfg;
            if let TableFormat::Iceberg(tables) = &mut cfg.tables {
                // the warehouse goes to the same bucket, through the same client settings
                tables.s3 = Some(Box::new(s3.clone()));
                tables.validate()?;
            }
            feeder_writer::ensure_input_topics(kafka, topics).await?;
            tracing::info!(bucket = %s3.bucket, prefix = %s3.prefix, "writing to S3");
            let store = Arc::new(S3Storage::new(&s3, tokio::runtime::Handle::current())?);
            feeder_writer::run_with_storage(kafka, topics, cfg, Arc::default(), store, shutdown)
                .await?;
        }
    }
    Ok(())
}
