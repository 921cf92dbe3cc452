//! One function per subcommand: load settings, start the stage, stop on SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use feeder_core::Registry;
use feeder_edge::{EdgeConfig, SharedRegistry};
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_sim::loadgen::{self, LoadgenConfig};
use feeder_stream::StreamConfig;
use feeder_writer::WriterConfig;

use crate::cli::{Cli, Command, DevicesCommand};
use crate::shutdown::on_signals;
use crate::telemetry::serve_metrics;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Edge(a) => {
            serve_metrics(a.metrics.metrics_listen)?;
            let registry = Registry::load(&a.registry).context("loading the device registry")?;
            tracing::info!(
                devices = registry.len(),
                keys = registry.key_count(),
                "registry loaded"
            );
            let cfg = EdgeConfig {
                edge_id: a.edge_id,
                max_frames_per_request: a.max_frames_per_request,
                max_payload_bytes: a.max_payload_bytes,
                max_frames_in_flight: a.max_frames_in_flight,
                producer_queue_max: a.producer_queue_max,
                ack_timeout: a.ack_timeout,
                device_rate_per_sec: a.device_rate,
                device_burst: a.device_burst,
                rate_limiter_capacity: a.rate_limiter_capacity,
                registry_path: Some(a.registry.clone()),
                registry_poll: a.registry_poll,
                shutdown_deadline: a.shutdown_deadline,
                tls: match (a.tls_cert, a.tls_key) {
                    (Some(cert), Some(key)) => Some(feeder_edge::TlsFiles {
                        cert,
                        key,
                        client_ca: a.tls_client_ca,
                        require_device_identity: a.require_device_identity,
                    }),
                    _ => None,
                },
                ..EdgeConfig::default()
            };
            cfg.validate().context("edge settings")?;
            feeder_edge::run(
                a.listen,
                &a.kafka.kafka(),
                &a.kafka.topics(),
                cfg,
                SharedRegistry::new(registry),
                on_signals(),
            )
            .await?;
        }
        Command::Stream(a) => {
            serve_metrics(a.metrics.metrics_listen)?;
            let registry = Registry::load(&a.registry).context("loading the device registry")?;
            tracing::info!(devices = registry.len(), "registry loaded");
            let cfg = StreamConfig {
                group_id: a.group,
                device_labels: feeder_stream::config::labels_from_registry(&registry),
                ..StreamConfig::default()
            };
            feeder_stream::run(
                &a.kafka.kafka(),
                &a.kafka.topics(),
                cfg,
                Arc::default(),
                on_signals(),
            )
            .await?;
        }
        Command::Writer(a) => {
            serve_metrics(a.metrics.metrics_listen)?;
            let cfg = WriterConfig {
                data_root: a.data,
                group_id: a.group,
                writer_id: a.writer_id,
                ..WriterConfig::default()
            };
            feeder_writer::run(
                &a.kafka.kafka(),
                &a.kafka.topics(),
                cfg,
                Arc::default(),
                on_signals(),
            )
            .await?;
        }
        Command::Demo(a) => crate::demo::run(a).await?,
        Command::Loadgen(a) => {
            let mut cfg = LoadgenConfig::new(a.target, a.secrets);
            cfg.seconds = a.seconds;
            cfg.concurrency = a.concurrency;
            cfg.frames_per_request = a.frames_per_request;
            cfg.rate = a.rate;
            let report = loadgen::run(cfg, on_signals()).await?;
            report.print();
        }
        Command::Verify(a) => {
            let registry = Registry::load(&a.registry).context("loading the device registry")?;
            let opts = feeder_writer::verify::VerifyOptions { date: a.date };
            let report = tokio::task::spawn_blocking(move || {
                feeder_writer::verify::verify(&a.data, &registry, &opts)
            })
            .await??;
            print!("{report}");
            if !report.is_ok() {
                anyhow::bail!("verify found {} mismatches", report.mismatch_count);
            }
        }
        Command::Compact(a) => {
            use feeder_writer::compact;
            let dataset = compact::dataset_by_name(&a.dataset)
                .with_context(|| format!("no dataset named {:?}", a.dataset))?;
            let kafka = a.kafka.kafka();
            let report = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let tps = compact::partitions_in(&a.data, dataset, a.date)?;
                let committed = compact::committed_offsets(
                    &kafka,
                    &a.group,
                    &tps,
                    std::time::Duration::from_secs(10),
                )
                .context("reading the writer group's committed offsets")?;
                let lookup = |t: &str, p: i32| committed.get(&(t.to_string(), p)).copied();
                let opts = compact::CompactOptions {
                    target_rows: a.target_rows,
                    ..compact::CompactOptions::default()
                };
                Ok(compact::compact(&a.data, dataset, a.date, &lookup, &opts)?)
            })
            .await??;
            print!("{report}");
        }
        Command::Devices {
            command: DevicesCommand::Keygen(a),
        } => {
            let s = keygen(&KeygenConfig {
                meters: a.meters,
                vehicles: a.vehicles,
                registry: a.registry,
                secrets: a.secrets,
                seed: a.seed,
                ..KeygenConfig::default()
            })?;
            println!(
                "provisioned {} meters and {} vehicles: registry {}, device keys {}",
                s.meters,
                s.vehicles,
                s.registry.display(),
                s.secrets.display()
            );
        }
    }
    Ok(())
}
