//! Where `feeder writer` stores the datasets: the settings of `--storage local|s3`,
//! checked at start so a bad combination fails before the writer joins its group.

use std::sync::Arc;

use anyhow::Context;
use feeder_kafka::{KafkaConfig, Topics};
use feeder_writer::WriterConfig;
use feeder_writer::storage::{S3Config, S3Storage};
use tokio_util::sync::CancellationToken;

use crate::cli::WriterArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    Local,
    S3,
}

/// The validated storage choice.
#[derive(Debug)]
pub enum Storage {
    Local,
    S3(S3Config),
}

/// Checks the storage flags of `a` (credentials come from the environment).
pub fn storage(a: &WriterArgs) -> anyhow::Result<Storage> {
    match a.storage {
        StorageKind::Local => {
            anyhow::ensure!(a.data.is_some(), "--storage local needs --data DIR");
            anyhow::ensure!(
                a.s3_bucket.is_none() && a.s3_endpoint.is_none(),
                "--s3-bucket / --s3-endpoint are set but --storage is local: add --storage s3"
            );
            Ok(Storage::Local)
        }
        StorageKind::S3 => {
            anyhow::ensure!(
                a.tables.table_format == crate::cli::TableFormatArg::Parquet,
                "--table-format iceberg writes its warehouse on local disk only (--storage local): \
                 this build has no S3 FileIO for Iceberg (docs/datasets.md, \"Iceberg tables\")"
            );
            let bucket = a
                .s3_bucket
                .clone()
                .context("--storage s3 needs --s3-bucket (or FEEDER_S3_BUCKET)")?;
            anyhow::ensure!(
                a.data.is_none(),
                "--data is set but --storage is s3: the datasets go to the bucket; drop --data"
            );
            if let Some(e) = &a.s3_endpoint {
                anyhow::ensure!(
                    e.starts_with("https://") || (e.starts_with("http://") && a.s3_allow_http),
                    "--s3-endpoint {e:?}: must be https://..., or http://... with --s3-allow-http"
                );
            }
            let (access_key_id, secret_access_key) = S3Config::credentials_from_env();
            let cfg = S3Config {
                endpoint: a.s3_endpoint.clone(),
                bucket,
                prefix: a.s3_prefix.clone(),
                region: a.s3_region.clone(),
                access_key_id,
                secret_access_key,
                allow_http: a.s3_allow_http,
            };
            cfg.validate()?;
            Ok(Storage::S3(cfg))
        }
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
            feeder_writer::ensure_input_topics(kafka, topics).await?;
            tracing::info!(bucket = %s3.bucket, prefix = %s3.prefix, "writing to S3");
            let store = Arc::new(S3Storage::new(&s3, tokio::runtime::Handle::current())?);
            feeder_writer::run_with_storage(kafka, topics, cfg, Arc::default(), store, shutdown)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> WriterArgs {
        let mut argv = vec!["feeder", "writer", "--brokers", "127.0.0.1:9"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Writer(a) => a,
            _ => unreachable!(),
        }
    }

    /// `--table-format` and the catalog flags become the writer's one `TableFormat`.
    #[test]
    fn table_format_flags_parse() {
        use feeder_writer::iceberg::{IcebergSettings, TableFormat};
        assert_eq!(args(&[]).tables.table_format(), TableFormat::Parquet);
        let ice = args(&[
            "--table-format",
            "iceberg",
            "--iceberg-catalog",
            "postgres://feeder@db/lake",
        ]);
        assert_eq!(
            ice.tables.table_format(),
            TableFormat::Iceberg(IcebergSettings {
                catalog_uri: Some("postgres://feeder@db/lake".into()),
                ..IcebergSettings::default()
            })
        );
    }

    #[test]
    fn storage_flags_parse_and_bad_combinations_are_refused() {
        let s3 = args(&[
            "--storage",
            "s3",
            "--s3-bucket",
            "meters",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--s3-allow-http",
            "--s3-prefix",
            "utility/feeder",
            "--flush-max-age",
            "2s",
        ]);
        assert_eq!(s3.flush_max_age, std::time::Duration::from_secs(2));
        let Storage::S3(cfg) = storage(&s3).unwrap() else {
            panic!("s3 expected")
        };
        assert_eq!(
            (
                cfg.bucket.as_str(),
                cfg.prefix.as_str(),
                cfg.region.as_str()
            ),
            ("meters", "utility/feeder", "us-east-1")
        );
        assert!(matches!(
            storage(&args(&["--data", "/tmp/x"])).unwrap(),
            Storage::Local
        ));
        let refused = [
            (vec![], "--storage local needs --data"),
            (vec!["--storage", "s3"], "needs --s3-bucket"),
            (
                vec!["--storage", "s3", "--s3-bucket", "b", "--data", "/d"],
                "drop --data",
            ),
            (
                vec![
                    "--storage",
                    "s3",
                    "--s3-bucket",
                    "b",
                    "--s3-endpoint",
                    "http://h:1",
                ],
                "--s3-allow-http",
            ),
            (
                vec!["--storage", "s3", "--s3-bucket", "b", "--s3-prefix", "/x"],
                "prefix",
            ),
            (vec!["--data", "/d", "--s3-bucket", "b"], "add --storage s3"),
            (
                vec![
                    "--storage",
                    "s3",
                    "--s3-bucket",
                    "b",
                    "--table-format",
                    "iceberg",
                ],
                "local disk only",
            ),
        ];
        for (flags, want) in refused {
            let err = storage(&args(&flags)).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{flags:?}: {msg}");
        }
        assert!(
            Cli::try_parse_from(["feeder", "writer", "--brokers", "b", "--storage", "gcs"])
                .is_err()
        );
    }
}
