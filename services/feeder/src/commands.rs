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
                ..EdgeConfig::default()
            };
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
