//! One function per subcommand: load settings, start the stage, stop on SIGTERM.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use anyhow::Context;
use feeder_core::Registry;
use feeder_edge::{EdgeConfig, SharedRegistry};
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_sim::loadgen::{self, LoadgenConfig};
use feeder_stream::StreamConfig;
use feeder_writer::WriterConfig;

use crate::cli::{Cli, Command, ConfigCommand, DevicesCommand, RegistrySource};
use crate::cli::{KafkaArgs, MetricsArgs};
use crate::http::Readiness;
use crate::shutdown::on_signals;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Edge(a) => {
            let shutdown = on_signals();
            let ready = operations(&a.metrics, &a.kafka, &shutdown).await?;
            let registry = match a.source.source().context("edge settings")? {
                RegistrySource::File(path) => {
                    SharedRegistry::load(&path).context("loading the device registry")?
                }
                RegistrySource::Topic(src) => {
                    let registry = SharedRegistry::default();
                    let topic = src.topic.clone();
                    feeder_edge::registry_topic::load(
                        &a.kafka.kafka(),
                        src,
                        registry.clone(),
                        shutdown.clone(),
                    )
                    .await
                    .with_context(|| format!("reading the registry topic {topic}"))?;
                    registry
                }
            };
            tracing::info!(devices = registry.devices(), "registry loaded");
            let edge_proof = a.edge_proof.load()?;
            let cfg = EdgeConfig {
                edge_proof,
                edge_id: a.edge_id,
                max_frames_per_request: a.max_frames_per_request,
                max_payload_bytes: a.max_payload_bytes,
                max_frames_in_flight: a.max_frames_in_flight,
                producer_queue_max: a.producer_queue_max,
                ack_timeout: a.ack_timeout,
                device_rate_per_sec: a.device_rate,
                device_burst: a.device_burst,
                rate_limiter_capacity: a.rate_limiter_capacity,
                registry_path: a.source.registry.clone(),
                registry_poll: a.registry_poll,
                shutdown_deadline: a.shutdown_deadline,
                insecure_plaintext: a.insecure_plaintext,
                reflection: a.reflection,
                max_request_bytes: a.max_request_bytes,
                max_connections: a.max_connections,
                max_concurrent_streams: a.max_concurrent_streams,
                max_header_list_bytes: a.max_header_list_bytes,
                http2_keepalive_interval: a.http2_keepalive_interval,
                http2_keepalive_timeout: a.http2_keepalive_timeout,
                stream_idle_timeout: a.stream_idle_timeout,
                failure_budget: feeder_edge::FailureBudget {
                    per_connection: a.verify_failures_per_connection,
                    per_address: a.verify_failures_per_address,
                    window: a.verify_failure_window,
                    cool_off: a.verify_failure_cool_off,
                    capacity: a.peer_table_capacity,
                },
                tls: match (a.tls_cert, a.tls_key) {
                    (Some(cert), Some(key)) => Some(feeder_edge::TlsFiles {
                        cert,
                        key,
                        client_ca: a.tls_client_ca,
                        require_device_identity: a.require_device_identity,
                    }),
                    (None, None) if a.tls_client_ca.is_none() && !a.require_device_identity => None,
                    _ => anyhow::bail!(
                        "edge settings: TLS needs both tls_cert and tls_key \
                         (and tls_client_ca / require_device_identity need them)"
                    ),
                },
                ..EdgeConfig::default()
            };
            cfg.validate().context("edge settings")?;
            cfg.check_listen(a.listen).context("edge settings")?;
            ready.mark_started();
            feeder_edge::run(
                a.listen,
                &a.kafka.kafka(),
                &a.kafka.topics(),
                cfg,
                registry,
                shutdown,
            )
            .await?;
        }
        Command::Stream(a) => {
            let shutdown = on_signals();
            let ready = operations(&a.metrics, &a.kafka, &shutdown).await?;
            // a file: loaded now and watched; a topic: read whole by the stage before its
            // first batch, then followed
            let (registry, source, registry_topic) =
                match a.source.source().context("stream settings")? {
                    RegistrySource::File(path) => {
                        let loaded_from = feeder_core::FileStamp::of(&path);
                        let registry =
                            Registry::load(&path).context("loading the device registry")?;
                        tracing::info!(devices = registry.len(), "registry loaded");
                        let source = feeder_stream::labels_reload::RegistrySource {
                            path,
                            poll: a.registry_poll,
                            loaded_from,
                        };
                        (Some(registry), Some(source), None)
                    }
                    RegistrySource::Topic(src) => (None, None, Some(src)),
                };
            let edge_proof = a.edge_proof.load()?;
            let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let cfg = StreamConfig {
                edge_proof,
                max_output_record_bytes: a.max_output_record_bytes,
                frame_limits: feeder_stream::limits::FrameLimits {
                    max_rows: a.max_rows_per_frame,
                    max_row_flags: a.max_row_flags_per_frame,
                    max_anomalies: a.max_anomalies_per_frame,
                    max_seq_ahead: a.max_seq_ahead,
                    ts_horizon_past_ms: ms(a.ts_horizon_past),
                    ts_horizon_future_ms: ms(a.ts_horizon_future),
                },
                registry: source,
                registry_topic,
                group_id: a.group,
                instance_id: a.instance.instance_id,
                device_labels: registry
                    .as_ref()
                    .map(feeder_stream::config::labels_from_registry)
                    .unwrap_or_default(),
                rules: a.rules.unwrap_or_default(),
                snapshot_interval: a.state_snapshot_interval,
                cohort_grace: a.cohort_grace,
                cohort_lateness: a.cohort_lateness,
                ..StreamConfig::default()
            };
            cfg.validate()
                .map_err(anyhow::Error::msg)
                .context("stream settings")?;
            ready.mark_started();
            let cohorts = !cfg.rules.cohort.groupings.is_empty();
            crate::group_watch::spawn(
                crate::group_watch::Stage::Stream { cohorts },
                &a.kafka.kafka(),
                &a.kafka.topics(),
                &cfg.group_id,
                a.group_watch.group_watch_interval,
                &shutdown,
            );
            feeder_stream::run(
                &a.kafka.kafka(),
                &a.kafka.topics(),
                cfg,
                Arc::default(),
                shutdown,
            )
            .await?;
        }
        Command::Writer(a) => {
            let shutdown = on_signals();
            let storage = a.checked_storage().context("writer settings")?;
            let cfg = WriterConfig {
                data_root: a.storage.data.clone().unwrap_or_default(),
                group_id: a.group,
                instance_id: a.instance.instance_id,
                writer_id: a.writer_id,
                flush_max_frames: a.flush_max_frames,
                flush_max_bytes: a.flush_max_bytes,
                flush_max_age: a.flush_max_age,
                max_buffered_bytes: a.max_buffered_bytes,
                max_dates_per_flush: a.max_dates_per_flush,
                encryption: encryption_keys(a.encryption_keys.as_deref())?,
                tables: a.tables.table_format(),
                registry_audit: a.registry.source().context("writer settings")?,
            };
            cfg.validate().context("writer settings")?;
            let ready = operations(&a.metrics, &a.kafka, &shutdown).await?;
            ready.mark_started();
            crate::group_watch::spawn(
                crate::group_watch::Stage::Writer,
                &a.kafka.kafka(),
                &a.kafka.topics(),
                &cfg.group_id,
                a.group_watch.group_watch_interval,
                &shutdown,
            );
            crate::writer_storage::run(&a.kafka.kafka(), &a.kafka.topics(), cfg, storage, shutdown)
                .await?;
        }
        Command::Demo(a) => crate::demo::run(a).await?,
        Command::Loadgen(a) => {
            anyhow::ensure!(
                a.scenario != Some(loadgen::Scenario::Telematics) || a.rate.is_none(),
                "--rate does not apply to telematics: every vehicle sends once a second"
            );
            anyhow::ensure!(
                a.scenario.is_some() || a.out.is_none(),
                "--out needs --scenario (open loop)"
            );
            anyhow::ensure!(
                a.scenario.is_none() || a.acked_log.is_none(),
                "--acked-log is for the closed loop (no --scenario)"
            );
            let (tx, rx) = tokio::sync::watch::channel(loadgen::LoadgenProgress::default());
            let stop = CancellationToken::new();
            let progress = tokio::spawn(loadgen::print_progress(rx, stop.clone()));
            if let Some(scenario) = a.scenario {
                let mut cfg = loadgen::OpenLoopConfig::new(a.target, a.secrets);
                cfg.scenario = scenario;
                // between bursts the fleet is quiet unless --rate says otherwise
                let quiet = scenario == loadgen::Scenario::BoundaryBurst;
                cfg.rate = a.rate.unwrap_or(if quiet { 0.0 } else { cfg.rate });
                cfg.seconds = a.seconds;
                cfg.max_in_flight = a.concurrency;
                cfg.frames_per_request = a.frames_per_request;
                cfg.burst_period = a.burst_period;
                cfg.burst_window = a.burst_window;
                cfg.ramp.step = a.ramp_step.unwrap_or(0.0);
                cfg.ramp.step_seconds = a.step_seconds;
                cfg.ramp.max_steps = a.max_steps;
                cfg.ramp.max_p99 = a.max_p99;
                cfg.progress = Some(tx);
                let report = loadgen::run_open_loop(cfg, on_signals()).await;
                stop.cancel();
                let _ = progress.await;
                let report = report?;
                println!("{}", report.summary());
                if let Some(dir) = a.out {
                    report.write(&dir)?;
                    println!("wrote {0}/result.json and {0}/result.svg", dir.display());
                }
            } else {
                let mut cfg = LoadgenConfig::new(a.target, a.secrets);
                cfg.seconds = a.seconds;
                cfg.concurrency = a.concurrency;
                cfg.frames_per_request = a.frames_per_request;
                cfg.rate = a.rate;
                cfg.acked_log = a.acked_log;
                cfg.progress = Some(tx);
                let report = loadgen::run(cfg, on_signals()).await;
                stop.cancel();
                let _ = progress.await;
                report?.print();
            }
        }
        Command::Verify(a) => {
            let store = dataset_store(&a.storage, "verify")?;
            let registry = Registry::load(&a.registry).context("loading the device registry")?;
            let opts = feeder_writer::verify::VerifyOptions {
                date: a.date,
                encryption: encryption_keys(a.encryption_keys.as_deref())?,
            };
            let in_bucket = store.local_root().is_none();
            let report = tokio::task::spawn_blocking(move || {
                feeder_writer::verify::verify_in(&*store, &registry, &opts)
            })
            .await??;
            print!("{report}");
            // A wrong prefix, or a bucket of Iceberg tables (no catalog file to recognise
            // it by, as on a local root), must not pass as verified.
            anyhow::ensure!(
                !in_bucket || report.files_read > 0,
                "no dataset files under the bucket's prefix (--s3-bucket, --s3-prefix): \
                 nothing verified. Iceberg tables are read with pyiceberg or your engine"
            );
            if !report.is_ok() {
                anyhow::bail!("verify found {} mismatches", report.mismatch_count);
            }
        }
        Command::Compact(a) => {
            let store = dataset_store(&a.storage, "compact")?;
            use feeder_writer::compact;
            let datasets = compact::datasets_by_name(&a.dataset)
                .with_context(|| format!("no dataset named {:?}", a.dataset))?;
            let dates = a.dates(today_utc()?)?;
            let kafka = a.kafka.kafka();
            let encryption = encryption_keys(a.encryption_keys.as_deref())?;
            let opts = compact::CompactOptions {
                target_rows: a.target_rows,
                encryption,
                ..compact::CompactOptions::default()
            };
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let mut tps = Vec::new();
                for &dataset in &datasets {
                    for &date in &dates {
                        tps.extend(compact::partitions_in_store(&*store, dataset, date)?);
                    }
                }
                tps.sort();
                tps.dedup();
                let committed = compact::committed_offsets(
                    &kafka,
                    &a.group,
                    &tps,
                    std::time::Duration::from_secs(10),
                )
                .context("reading the writer group's committed offsets")?;
                let lookup = |t: &str, p: i32| committed.get(&(t.to_string(), p)).copied();
                for &date in &dates {
                    for &dataset in &datasets {
                        let report = compact::compact_in(&*store, dataset, date, &lookup, &opts)
                            .with_context(|| format!("compacting {} {date}", dataset.name()))?;
                        print!("{} {date}: {report}", dataset.name());
                    }
                }
                Ok(())
            })
            .await??;
        }
        Command::Config {
            command: ConfigCommand::Check { command },
        } => {
            let Some(path) = cli.config else {
                anyhow::bail!("no config file: pass --config FILE or set FEEDER_CONFIG");
            };
            // The file was loaded and validated before this command was parsed.
            println!("{}: ok", path.display());
            if !command.is_empty() {
                let mut args = vec!["feeder".into(), "--config".into(), path.into_os_string()];
                args.extend(command);
                match crate::config_file::parse_from(args) {
                    Ok(resolved) => println!("{:#?}", resolved.command),
                    Err(e) => e.exit(),
                }
            }
        }
        Command::Devices {
            command: DevicesCommand::ProvisioningKey(a),
        } => {
            let public = crate::registry_publish::provisioning_key(&a.out, &a.key_id)?;
            eprintln!(
                "provisioning key {} written to {} (mode 0600); its public line, for --provisioning-keys:",
                a.key_id,
                a.out.display()
            );
            println!("{public}");
        }
        Command::Devices {
            command: DevicesCommand::Publish(a),
        } => {
            let text = if a.registry.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&a.registry)
                    .with_context(|| format!("reading {}", a.registry.display()))?
            };
            publish_registry(&a.target, &text, a.signing_key.as_deref(), a.prune).await?;
        }
        Command::Devices {
            command: DevicesCommand::Revoke(a),
        } => {
            let signer = a
                .signing_key
                .as_deref()
                .map(crate::registry_publish::Signer::load)
                .transpose()?;
            let topic = a.target.topic();
            let n = crate::registry_publish::revoke(
                &a.target.kafka.kafka(),
                &topic,
                &a.device,
                a.key.as_deref(),
                signer.as_ref(),
            )
            .await?;
            println!("{topic}: {n} key(s) of {} revoked", a.device);
        }
        Command::Devices {
            command: DevicesCommand::Show(a),
        } => {
            let topic = a.target.topic();
            print!(
                "{}",
                crate::registry_publish::show(&a.target.kafka.kafka(), &topic, &a.device)?
            );
        }
        Command::Devices {
            command: DevicesCommand::EdgeKey(a),
        } => {
            let id = crate::edge_key::create(&a.out, a.key_id, a.rotate)?;
            println!(
                "edge key {id} written to {} (mode 0600){}",
                a.out.display(),
                if a.rotate {
                    "; older keys kept after it"
                } else {
                    ""
                }
            );
        }
        Command::Devices {
            command: DevicesCommand::Keygen(a),
        } => {
            let target = a.publish_target()?;
            let s = keygen(&KeygenConfig {
                meters: a.meters,
                vehicles: a.vehicles,
                ocmf: a.ocmf,
                registry: a.registry,
                secrets: a.secrets,
                seed: a.seed,
                ..KeygenConfig::default()
            })?;
            println!(
                "provisioned {} meters, {} vehicles and {} OCMF meters: registry {}, device keys {}",
                s.meters,
                s.vehicles,
                s.ocmf_keys,
                s.registry.display(),
                s.secrets.display()
            );
            if let Some(p) = target {
                let text = std::fs::read_to_string(&s.registry)
                    .with_context(|| format!("reading {}", s.registry.display()))?;
                publish_registry(&p.target, &text, p.signing_key.as_deref(), false).await?;
            }
        }
    }
    Ok(())
}

/// Publishes a registry file's text to the registry topic (created compacted when
/// missing): only the lines that differ from what it holds, signed with `signing_key`.
async fn publish_registry(
    target: &crate::cli::RegistryTopicArgs,
    text: &str,
    signing_key: Option<&std::path::Path>,
    prune: bool,
) -> anyhow::Result<()> {
    let signer = signing_key
        .map(crate::registry_publish::Signer::load)
        .transpose()?;
    let (topic, kafka) = (target.topic(), target.kafka.kafka());
    feeder_kafka::ensure_compacted_topics(
        &kafka,
        &[&topic],
        target.kafka.partitions,
        target.kafka.replication,
    )
    .await?;
    let p = crate::registry_publish::publish(&kafka, &topic, text, signer.as_ref(), prune).await?;
    println!(
        "{topic}: {} line(s) published, {} unchanged{}",
        p.lines,
        p.unchanged,
        if prune {
            format!(", {} removed", p.removed)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The datasets `verify` or `compact` work on, through the writer's storage settings.
/// They read the Hive layout; on a root of Iceberg tables they would find nothing and
/// report success, so they stop and say what to use.
fn dataset_store(
    storage: &crate::writer_storage::StorageArgs,
    tool: &str,
) -> anyhow::Result<std::sync::Arc<dyn feeder_writer::storage::Storage>> {
    let store = storage.open(tokio::runtime::Handle::current())?;
    if let Some(root) = store.local_root() {
        anyhow::ensure!(
            !feeder_writer::iceberg::IcebergSettings::is_iceberg_root(root),
            "{} holds Iceberg tables (written with --table-format iceberg): `feeder {tool}` reads \
             the Hive layout only. Read the tables with pyiceberg or your engine, and compact \
             with its rewrite_data_files (docs/datasets.md, \"Iceberg tables\")",
            root.display()
        );
    }
    Ok(store)
}

/// Today's date in UTC, from the wall clock.
fn today_utc() -> anyhow::Result<feeder_writer::NaiveDate> {
    // 1970-01-01 is day 719,163 of the common era
    const UNIX_EPOCH_DAY: i64 = 719_163;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    i32::try_from(UNIX_EPOCH_DAY + i64::try_from(secs / 86_400)?)
        .ok()
        .and_then(feeder_writer::NaiveDate::from_num_days_from_ce_opt)
        .context("today's date is out of range")
}

/// Loads `--encryption-keys` (none: every dataset plaintext). A bad file stops the command
/// at start with the line or key at fault; key bytes are never logged.
fn encryption_keys(path: Option<&std::path::Path>) -> anyhow::Result<feeder_writer::Encryption> {
    let Some(path) = path else {
        return Ok(feeder_writer::Encryption::none());
    };
    let encryption = feeder_writer::Encryption::load(path)?;
    let summary = encryption.summary();
    if summary.is_empty() {
        tracing::warn!(path = %path.display(), "the encryption key file lists no dataset: all plaintext");
    }
    for (dataset, keys) in summary {
        tracing::info!(dataset, keys = %keys, "dataset encrypted at rest");
    }
    Ok(encryption)
}

/// Serves `/metrics`, `/livez`, `/readyz` (when `--metrics-listen` is set) and returns the
/// readiness the stage marks as it starts; readiness drops as soon as shutdown begins.
/// The endpoint itself keeps answering until the process exits, so a draining pod stays
/// live.
async fn operations(
    metrics: &MetricsArgs,
    kafka: &KafkaArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<Readiness> {
    let ready = Readiness::default();
    let served = crate::http::serve(
        metrics.metrics_listen,
        ready.clone(),
        CancellationToken::new(),
    )
    .await
    .context("serving the operations endpoint")?;
    if served.is_some() {
        ready.watch_broker(&kafka.kafka(), shutdown.clone());
    }
    let (r, s) = (ready.clone(), shutdown.clone());
    tokio::spawn(async move {
        s.cancelled().await;
        r.mark_stopping();
    });
    Ok(ready)
}
