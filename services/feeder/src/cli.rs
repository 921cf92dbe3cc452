//! The command-line contract. Operators and test tools script against these flags; every
//! flag can also come from a `FEEDER_*` environment variable (shown in `--help`) and from
//! the config file (`--config`, see `config_file`): flag > environment > file > default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::arg_parsers::{parse_bytes_u32, parse_bytes_usize, parse_duration};
use crate::writer_storage::{Storage, StorageArgs};

#[derive(Debug, Parser)]
#[command(
    name = "feeder",
    version,
    about = "Signed telemetry from untrusted networks to Parquet the utility owns"
)]
pub struct Cli {
    /// Config file (TOML): `[log]`, `[metrics]`, `[kafka]` and one section per
    /// subcommand; flags and `FEEDER_*` variables override it (docs/configuration.md).
    #[arg(long, env = "FEEDER_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `feeder_edge=debug`.
    #[arg(
        long = "log",
        env = "FEEDER_LOG",
        default_value = "info",
        global = true
    )]
    pub filter: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "FEEDER_LOG_JSON", global = true)]
    pub log_json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive signed frames over gRPC and hand them durably to Kafka.
    Edge(EdgeArgs),
    /// Check frames (replays, duplicates, gaps) between the raw and checked topics.
    Stream(StreamArgs),
    /// Write checked data as Parquet datasets, exactly once.
    Writer(WriterArgs),
    /// Run the whole pipeline in one process against a simulated fleet.
    Demo(DemoArgs),
    /// Play a simulated fleet against an edge.
    Loadgen(LoadgenArgs),
    /// Device provisioning tools.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Re-verify stored frames against the registry and stored rows against the frames.
    Verify(VerifyArgs),
    /// Merge the small files of a closed date partition into large ones, atomically.
    Compact(CompactArgs),
    /// Config file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file (`--config` or `FEEDER_CONFIG`); with a subcommand and its
    /// flags after it (`feeder --config F config check edge --device-rate 5`), also print
    /// the settings that subcommand would run with (secrets redacted).
    Check {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Provision a simulated fleet: a registry (public half) and a key file (device half).
    Keygen(KeygenArgs),
    /// Create or rotate the edge key file that edges sign raw records with and the stream
    /// checks them against (docs/security.md). Written with mode 0600.
    EdgeKey(EdgeKeyArgs),
    /// Create a provisioning key that signs registry-topic records: the private key to
    /// `--out` (mode 0600); prints the public line for the receivers' `--provisioning-keys`.
    ProvisioningKey(ProvisioningKeyArgs),
    /// Publish a registry file to the registry topic: only the lines that differ from
    /// what the topic holds, signed with `--signing-key` when given.
    Publish(PublishArgs),
    /// Revoke a device (all its keys, or `--key`) in the registry topic.
    Revoke(RevokeArgs),
    /// What the registry topic holds for a device, its history included.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ProvisioningKeyArgs {
    /// The private key file to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Its name, carried in each signed record's `feeder-signer` header.
    #[arg(long, default_value = "provisioning-1")]
    pub key_id: String,
}

/// Where a stage reads the device registry: a file or the registry topic.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Device registry (JSON Lines), reloaded when it changes; one of it and
    /// `--registry-topic` is required (checked at start: the config file may supply
    /// either).
    #[arg(long, env = "FEEDER_REGISTRY", conflicts_with = "registry_topic")]
    pub registry: Option<PathBuf>,
    #[command(flatten)]
    pub topic: RegistryTopicSourceArgs,
}

/// The registry topic a stage follows, and the keys its records must be signed with.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryTopicSourceArgs {
    /// Read the registry from this compacted Kafka topic (device contract v1.1): the
    /// whole topic before starting, then every update as it comes.
    #[arg(long, env = "FEEDER_REGISTRY_TOPIC")]
    pub registry_topic: Option<String>,
    /// Provisioning public keys (JSON Lines of `key_id`, `public_key`: Ed25519, hex):
    /// with them, only registry-topic records signed by one of these keys are taken.
    #[arg(long, env = "FEEDER_PROVISIONING_KEYS", requires = "registry_topic")]
    pub provisioning_keys: Option<PathBuf>,
}

impl RegistryTopicSourceArgs {
    /// The topic and its provisioning keys, when a topic is set.
    pub fn source(&self) -> anyhow::Result<Option<feeder_kafka::registry_follow::TopicSource>> {
        use anyhow::Context as _;
        let Some(topic) = &self.registry_topic else {
            return Ok(None);
        };
        let keys = match &self.provisioning_keys {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading provisioning keys {}", path.display()))?;
                feeder_core::registry_topic::ProvisioningKeys::parse(
                    &path.display().to_string(),
                    &text,
                )?
            }
            None => {
                tracing::warn!(
                    topic,
                    "no provisioning keys: any record written to the registry topic is taken"
                );
                Default::default()
            }
        };
        Ok(Some(feeder_kafka::registry_follow::TopicSource {
            topic: topic.clone(),
            keys,
        }))
    }
}

impl RegistryArgs {
    /// The registry file, or the topic to follow (with its provisioning keys).
    pub fn source(&self) -> anyhow::Result<RegistrySource> {
        match (&self.registry, self.topic.source()?) {
            (Some(path), _) => Ok(RegistrySource::File(path.clone())),
            (None, Some(topic)) => Ok(RegistrySource::Topic(topic)),
            (None, None) => anyhow::bail!(
                "a registry (--registry FILE) or a registry topic (--registry-topic TOPIC) \
                 is required"
            ),
        }
    }
}

/// A stage's registry source ([`RegistryArgs::source`]).
pub enum RegistrySource {
    File(PathBuf),
    Topic(feeder_kafka::registry_follow::TopicSource),
}

/// The registry topic a provisioning command works on.
#[derive(Debug, Args)]
pub struct RegistryTopicArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The registry topic (default `<topic prefix>.registry`).
    #[arg(long, env = "FEEDER_REGISTRY_TOPIC")]
    pub registry_topic: Option<String>,
}

impl RegistryTopicArgs {
    pub fn topic(&self) -> String {
        self.registry_topic
            .clone()
            .unwrap_or_else(|| self.kafka.topics().registry)
    }
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub target: RegistryTopicArgs,
    /// The registry file (JSON Lines); `-` reads standard input.
    #[arg(long)]
    pub registry: PathBuf,
    /// Provisioning key file (`feeder devices provisioning-key`) to sign with.
    #[arg(long, env = "FEEDER_PROVISIONING_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Also remove (tombstone) every key in force that the file does not name, so the
    /// topic holds exactly the file: the way back from a bad publish.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub target: RegistryTopicArgs,
    /// The device to revoke.
    pub device: String,
    /// Only this key of the device.
    #[arg(long)]
    pub key: Option<String>,
    /// Provisioning key file to sign with.
    #[arg(long, env = "FEEDER_PROVISIONING_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub target: RegistryTopicArgs,
    /// The device to show.
    pub device: String,
}

#[derive(Debug, Args)]
pub struct EdgeKeyArgs {
    /// The edge key file (JSON Lines).
    #[arg(long)]
    pub out: PathBuf,
    /// Id of the new key (default: `edge-` and the current Unix time in seconds).
    #[arg(long)]
    pub key_id: Option<String>,
    /// Put the new key first in an existing file and keep the old keys after it (the
    /// stream keeps accepting them until they are removed): a rotation.
    #[arg(long)]
    pub rotate: bool,
}

/// Edge keys of the edge and the stream stage: raw records carry proof that an edge
/// produced them ([`feeder_core::edge_proof`]).
#[derive(Debug, Clone, Args)]
pub struct EdgeProofArgs {
    /// Edge key file (`feeder devices edge-key`): the edge signs every raw record with
    /// its first key; the stream accepts records signed with any of its keys and
    /// quarantines the others as `not_from_edge`. Required unless
    /// `--insecure-no-edge-proof`.
    #[arg(long, env = "FEEDER_EDGE_KEYS")]
    pub edge_keys: Option<PathBuf>,
    /// Run without edge keys: the edge signs nothing and the stream trusts every record
    /// on the raw topic, whoever wrote it. For tests only.
    #[arg(
        long,
        env = "FEEDER_INSECURE_NO_EDGE_PROOF",
        conflicts_with = "edge_keys"
    )]
    pub insecure_no_edge_proof: bool,
}

impl EdgeProofArgs {
    /// The proof setting; an error when neither a key file nor the insecure switch is
    /// given, so a forgotten setting never silently trusts the raw topic.
    pub fn load(&self) -> anyhow::Result<feeder_core::EdgeProof> {
        use anyhow::Context;
        match (&self.edge_keys, self.insecure_no_edge_proof) {
            (Some(path), _) => {
                let keys = feeder_core::EdgeKeys::load(path).context("loading the edge keys")?;
                Ok(feeder_core::EdgeProof::keys(keys))
            }
            (None, true) => {
                tracing::warn!(
                    "running without edge keys: raw records are neither signed nor checked"
                );
                Ok(feeder_core::EdgeProof::Off)
            }
            (None, false) => anyhow::bail!(
                "no edge keys: give --edge-keys FILE (create one with `feeder devices \
                 edge-key --out FILE`), or --insecure-no-edge-proof for a test setup"
            ),
        }
    }
}

#[derive(Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "FEEDER_BROKERS")]
    pub brokers: String,
    /// Topic names are `<prefix>.raw`, `<prefix>.checked`, `<prefix>.quarantine`.
    #[arg(long, env = "FEEDER_TOPIC_PREFIX", default_value = "feeder")]
    pub topic_prefix: String,
    /// Partitions of each topic when Feeder creates it.
    #[arg(long, env = "FEEDER_PARTITIONS", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Replication factor of each topic when Feeder creates it.
    #[arg(long, env = "FEEDER_REPLICATION", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=16))]
    pub replication: i32,
    /// Extra librdkafka property `key=value` (TLS, SASL, tuning); repeatable.
    #[arg(long = "kafka-property", env = "FEEDER_KAFKA_PROPERTIES", value_delimiter = ';', value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// `[kafka.properties]` of the config file; `kafka_properties` win key by key.
    #[arg(skip)]
    pub file_properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaArgs")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field(
                "properties",
                &feeder_kafka::config::redacted(&self.properties()),
            )
            .finish()
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("kafka property {s:?} is not key=value"))?;
    if k.trim().is_empty() {
        return Err(format!("kafka property {s:?} has an empty key"));
    }
    Ok((k.trim().to_string(), v.to_string()))
}

impl KafkaArgs {
    /// The file's properties, then the command line's and environment's (later wins).
    pub fn properties(&self) -> Vec<(String, String)> {
        let mut merged: Vec<(String, String)> = Vec::new();
        for (k, v) in self.file_properties.iter().chain(&self.kafka_properties) {
            merged.retain(|(mk, _)| mk != k);
            merged.push((k.clone(), v.clone()));
        }
        merged
    }

    pub fn kafka(&self) -> feeder_kafka::KafkaConfig {
        feeder_kafka::KafkaConfig {
            brokers: self.brokers.clone(),
            properties: self.properties(),
        }
    }

    pub fn topics(&self) -> feeder_kafka::Topics {
        feeder_kafka::Topics::with_prefix(&self.topic_prefix, self.partitions, self.replication)
    }
}

/// Static consumer-group membership of the stream and the writer (KIP-345,
/// [`feeder_kafka::membership`]), defined once for both.
#[derive(Debug, Clone, Args)]
pub struct InstanceArgs {
    /// This process's stable name in the consumer groups it joins (Kafka
    /// `group.instance.id`; the stream's cohort aggregator joins as `<id>-cohorts`). A
    /// restart with the same id within the session timeout (10 s) gets its partitions
    /// back at once, without a rebalance. Unique per live process (Kubernetes: the
    /// StatefulSet pod name); unset: dynamic membership.
    #[arg(long, env = "FEEDER_INSTANCE_ID")]
    pub instance_id: Option<feeder_kafka::InstanceId>,
}

/// The group watch of the stream and the writer ([`crate::group_watch`]).
#[derive(Debug, Clone, Args)]
pub struct GroupWatchArgs {
    /// How often the stage reads its consumer groups' committed offsets and log ends,
    /// for the per-partition lag and commit-age metrics (orphaned partitions).
    #[arg(long, env = "FEEDER_GROUP_WATCH_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub group_watch_interval: std::time::Duration,
}

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on this address (`/metrics`).
    #[arg(long, env = "FEEDER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// The edge's built-in limits: the flags' defaults are these, defined once.
static EDGE: std::sync::LazyLock<feeder_edge::EdgeConfig> =
    std::sync::LazyLock::new(feeder_edge::EdgeConfig::default);

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// gRPC listen address.
    #[arg(long, env = "FEEDER_LISTEN", default_value = "0.0.0.0:7443")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub source: RegistryArgs,
    /// Names this edge in the provenance log.
    #[arg(long, env = "FEEDER_EDGE_ID", default_value = "edge-0")]
    pub edge_id: String,
    #[arg(long, env = "FEEDER_MAX_FRAMES_PER_REQUEST", default_value_t = 1000)]
    pub max_frames_per_request: usize,
    #[arg(long, env = "FEEDER_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024, value_parser = parse_bytes_usize)]
    pub max_payload_bytes: usize,
    /// Frames admitted and not yet answered, across all calls; beyond it: code 8.
    #[arg(long, env = "FEEDER_MAX_FRAMES_IN_FLIGHT", default_value_t = 50_000)]
    pub max_frames_in_flight: usize,
    /// Records the producer may queue locally; when full: code 8.
    #[arg(long, env = "FEEDER_PRODUCER_QUEUE_MAX", default_value_t = 100_000)]
    pub producer_queue_max: usize,
    /// How long a frame waits for the broker's ack before code 14 (e.g. `10s`, `500ms`).
    #[arg(long, env = "FEEDER_ACK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ack_timeout: std::time::Duration,
    /// Per-device sustained rate in frames per second; over it: code 8.
    #[arg(long, env = "FEEDER_DEVICE_RATE", default_value_t = 50.0)]
    pub device_rate: f64,
    /// Per-device burst in frames.
    #[arg(long, env = "FEEDER_DEVICE_BURST", default_value_t = 200)]
    pub device_burst: u32,
    /// Devices whose rate state is held at once (about 100 bytes each).
    #[arg(
        long,
        env = "FEEDER_RATE_LIMITER_CAPACITY",
        default_value_t = 1_000_000
    )]
    pub rate_limiter_capacity: usize,
    /// How often the registry file is checked for changes (it also reloads on SIGHUP).
    #[arg(long, env = "FEEDER_REGISTRY_POLL", default_value = "1s", value_parser = parse_duration)]
    pub registry_poll: std::time::Duration,
    /// After SIGTERM, how long in-flight calls may take before they are dropped.
    #[arg(long, env = "FEEDER_SHUTDOWN_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_deadline: std::time::Duration,
    /// Serve TLS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, env = "FEEDER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, env = "FEEDER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates from this CA (mutual TLS).
    #[arg(long, env = "FEEDER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// With mutual TLS: refuse (code 7) frames whose device_id the client certificate's
    /// subjectAltName does not name.
    #[arg(
        long,
        env = "FEEDER_REQUIRE_DEVICE_IDENTITY",
        requires = "tls_client_ca"
    )]
    pub require_device_identity: bool,
    /// Serve plaintext on a non-loopback `--listen` address; without TLS or this flag the
    /// edge refuses to start there.
    #[arg(long, env = "FEEDER_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// Serve gRPC reflection on the device port (health is always served).
    #[arg(long, env = "FEEDER_REFLECTION")]
    pub reflection: bool,
    /// Cap on one encoded request, bytes (the limit is also at most what
    /// max-frames-per-request frames of max-payload-bytes need); longer: INVALID_ARGUMENT.
    #[arg(long, env = "FEEDER_MAX_REQUEST_BYTES", default_value_t = EDGE.max_request_bytes, value_parser = parse_bytes_usize)]
    pub max_request_bytes: usize,
    /// Open device connections at most; one more is closed at once.
    #[arg(long, env = "FEEDER_MAX_CONNECTIONS", default_value_t = EDGE.max_connections)]
    pub max_connections: usize,
    /// HTTP/2 streams (calls) open at once per connection.
    #[arg(long, env = "FEEDER_MAX_CONCURRENT_STREAMS", default_value_t = EDGE.max_concurrent_streams)]
    pub max_concurrent_streams: u32,
    /// HTTP/2 request header list size, bytes.
    #[arg(long, env = "FEEDER_MAX_HEADER_LIST_BYTES", default_value_t = EDGE.max_header_list_bytes, value_parser = parse_bytes_u32)]
    pub max_header_list_bytes: u32,
    /// HTTP/2 PING interval on idle connections.
    #[arg(long, env = "FEEDER_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub http2_keepalive_interval: std::time::Duration,
    /// How long an HTTP/2 PING may go unanswered before the connection is closed.
    #[arg(long, env = "FEEDER_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: std::time::Duration,
    /// A PushStream that sends no request for this long is ended (UNAVAILABLE).
    #[arg(long, env = "FEEDER_STREAM_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub stream_idle_timeout: std::time::Duration,
    /// Failed signature verifications allowed per connection within the window; past it
    /// the peer's frames get code 8 without verification for the cool-off.
    #[arg(long, env = "FEEDER_VERIFY_FAILURES_PER_CONNECTION", default_value_t = EDGE.failure_budget.per_connection)]
    pub verify_failures_per_connection: u32,
    /// Failed verifications allowed per client address (IPv6: per /64) within the window.
    #[arg(long, env = "FEEDER_VERIFY_FAILURES_PER_ADDRESS", default_value_t = EDGE.failure_budget.per_address)]
    pub verify_failures_per_address: u32,
    /// The window failed verifications are counted in.
    #[arg(long, env = "FEEDER_VERIFY_FAILURE_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub verify_failure_window: std::time::Duration,
    /// How long a peer over its budget is refused without verification.
    #[arg(long, env = "FEEDER_VERIFY_FAILURE_COOL_OFF", default_value = "300s", value_parser = parse_duration)]
    pub verify_failure_cool_off: std::time::Duration,
    /// Peers whose failed verifications are tracked at once (about 100 bytes each).
    #[arg(long, env = "FEEDER_PEER_TABLE_CAPACITY", default_value_t = EDGE.failure_budget.capacity)]
    pub peer_table_capacity: usize,
    #[command(flatten)]
    pub edge_proof: EdgeProofArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// The writer's built-in limits: the flags' defaults are these, defined once.
static WRITER: std::sync::LazyLock<feeder_writer::WriterConfig> =
    std::sync::LazyLock::new(feeder_writer::WriterConfig::default);

/// The stream stage's built-in limits: the flags' defaults are these, defined once.
static STREAM: std::sync::LazyLock<feeder_stream::StreamConfig> =
    std::sync::LazyLock::new(feeder_stream::StreamConfig::default);
/// The date horizons' defaults as flag text, from the same definition.
static TS_HORIZON_PAST: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| duration_text(STREAM.frame_limits.ts_horizon_past_ms));
static TS_HORIZON_FUTURE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| duration_text(STREAM.frame_limits.ts_horizon_future_ms));

/// Milliseconds as `parse_duration` text, in whole days when they are.
fn duration_text(ms: i64) -> String {
    const DAY: i64 = 86_400_000;
    if ms > 0 && ms % DAY == 0 {
        format!("{}d", ms / DAY)
    } else {
        format!("{ms}ms")
    }
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The registry gives the checks device kinds and labels.
    #[command(flatten)]
    pub source: RegistryArgs,
    /// How often the registry file is checked for changes (new labels apply from the
    /// next batch).
    #[arg(long, env = "FEEDER_REGISTRY_POLL", default_value = "5s", value_parser = parse_duration)]
    pub registry_poll: std::time::Duration,
    #[arg(long, env = "FEEDER_STREAM_GROUP", default_value = "feeder-stream")]
    pub group: String,
    #[command(flatten)]
    pub instance: InstanceArgs,
    #[command(flatten)]
    pub group_watch: GroupWatchArgs,
    /// How often changed device state goes to the state changelog: a restart replays
    /// about this much of the checked log on top of the last snapshot.
    #[arg(long, env = "FEEDER_STATE_SNAPSHOT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub state_snapshot_interval: std::time::Duration,
    /// The fleet cohort aggregator judges a window some raw partition has not closed
    /// (no traffic there) this long after the window's first tally.
    #[arg(long, env = "FEEDER_COHORT_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub cohort_grace: std::time::Duration,
    /// A partition that has read everything closes cohort windows by the wall clock (so
    /// a silent partition, or a whole fleet gone silent, still has its windows judged),
    /// this long after each window's end: covers the edge's stamping-to-append delay and
    /// clock skew.
    #[arg(long, env = "FEEDER_COHORT_LATENESS", default_value = "2m", value_parser = parse_duration)]
    pub cohort_lateness: std::time::Duration,
    /// `[stream.rules]` of the config file (rule thresholds, `docs/checks.md`).
    #[arg(skip)]
    pub rules: Option<feeder_stream::rules::RulesConfig>,
    /// An output record (checked, anomaly, quarantine) larger than this, bytes, becomes
    /// an `output_too_large` quarantine entry; the producer's message.max.bytes. Keep it
    /// at or under the topics' max.message.bytes.
    #[arg(long, env = "FEEDER_MAX_OUTPUT_RECORD_BYTES", default_value_t = STREAM.max_output_record_bytes, value_parser = parse_bytes_usize)]
    pub max_output_record_bytes: usize,
    /// Rows (readings + samples + events) one frame may carry; more: `too_many_rows`.
    #[arg(long, env = "FEEDER_MAX_ROWS_PER_FRAME", default_value_t = STREAM.frame_limits.max_rows)]
    pub max_rows_per_frame: u32,
    /// Row flags kept per frame; past it the frame is flagged `flags_truncated`.
    #[arg(long, env = "FEEDER_MAX_ROW_FLAGS_PER_FRAME", default_value_t = STREAM.frame_limits.max_row_flags)]
    pub max_row_flags_per_frame: u32,
    /// Anomalies recorded per frame, plus one `anomalies_truncated` past it.
    #[arg(long, env = "FEEDER_MAX_ANOMALIES_PER_FRAME", default_value_t = STREAM.frame_limits.max_anomalies)]
    pub max_anomalies_per_frame: u32,
    /// Largest step of a device's seq past its highest accepted one; more: `seq_jump`.
    #[arg(long, env = "FEEDER_MAX_SEQ_AHEAD", default_value_t = STREAM.frame_limits.max_seq_ahead)]
    pub max_seq_ahead: u64,
    /// A frame with a row dated more than this before its receive time is quarantined
    /// `ts_out_of_horizon` (one frame cannot fan out over years of date partitions).
    #[arg(long, env = "FEEDER_TS_HORIZON_PAST", default_value = TS_HORIZON_PAST.as_str(), value_parser = parse_duration)]
    pub ts_horizon_past: std::time::Duration,
    /// Likewise for a row dated more than this after its receive time.
    #[arg(long, env = "FEEDER_TS_HORIZON_FUTURE", default_value = TS_HORIZON_FUTURE.as_str(), value_parser = parse_duration)]
    pub ts_horizon_future: std::time::Duration,
    #[command(flatten)]
    pub edge_proof: EdgeProofArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct WriterArgs {
    /// Where the datasets go.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Flush a topic-partition's buffer at this many records...
    #[arg(long, env = "FEEDER_FLUSH_MAX_FRAMES", default_value_t = 20_000)]
    pub flush_max_frames: usize,
    /// ...or this many buffered payload bytes...
    #[arg(long, env = "FEEDER_FLUSH_MAX_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = parse_bytes_usize)]
    pub flush_max_bytes: usize,
    /// ...or when its oldest record is this old (data visible at least this often).
    #[arg(long, env = "FEEDER_FLUSH_MAX_AGE", default_value = "5s", value_parser = parse_duration)]
    pub flush_max_age: std::time::Duration,
    /// Cap on payload bytes buffered over all assigned partitions: above it the largest
    /// buffers are flushed early (never a replay of an uncommitted range).
    #[arg(long, env = "FEEDER_MAX_BUFFERED_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = parse_bytes_usize)]
    pub max_buffered_bytes: usize,
    /// Distinct `date=` partitions one flush may write into (one file per dataset and
    /// date each); a record that would pass it flushes the buffer first.
    #[arg(long, env = "FEEDER_MAX_DATES_PER_FLUSH", default_value_t = WRITER.max_dates_per_flush)]
    pub max_dates_per_flush: usize,
    #[arg(long, env = "FEEDER_WRITER_GROUP", default_value = "feeder-writer")]
    pub group: String,
    #[command(flatten)]
    pub instance: InstanceArgs,
    #[command(flatten)]
    pub group_watch: GroupWatchArgs,
    #[arg(long, env = "FEEDER_WRITER_ID", default_value = "writer-0")]
    pub writer_id: String,
    /// Key file (TOML) naming master keys and the datasets to encrypt with them
    /// (docs/datasets.md, "Encrypted datasets"); without it every dataset is plaintext.
    #[arg(long, env = "FEEDER_ENCRYPTION_KEYS")]
    pub encryption_keys: Option<PathBuf>,
    #[command(flatten)]
    pub tables: TableArgs,
    /// The registry topic to audit: every accepted change becomes a `registry_changes`
    /// row (docs/datasets.md); none: no such dataset.
    #[command(flatten)]
    pub registry: RegistryTopicSourceArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

impl WriterArgs {
    /// The storage settings, checked together with the table format (Iceberg tables on
    /// S3 need a catalog that is not a file under `--data`).
    pub fn checked_storage(&self) -> anyhow::Result<Storage> {
        let storage = self.storage.check()?;
        if let (Storage::S3(s3), feeder_writer::iceberg::TableFormat::Iceberg(mut tables)) =
            (&storage, self.tables.table_format())
        {
            tables.s3 = Some(Box::new(s3.clone()));
            tables.validate()?;
        }
        Ok(storage)
    }
}

/// The Iceberg settings' defaults, defined once (`feeder_writer::iceberg`).
static ICEBERG: std::sync::LazyLock<feeder_writer::iceberg::IcebergSettings> =
    std::sync::LazyLock::new(feeder_writer::iceberg::IcebergSettings::default);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormatArg {
    /// `<data>/<dataset>/date=YYYY-MM-DD/*.parquet` (Hive partitioning).
    Parquet,
    /// Iceberg tables (format v2) in a catalog (docs/datasets.md, "Iceberg tables").
    Iceberg,
}

/// What the writer's files become, and the Iceberg catalog.
#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    #[arg(
        long,
        env = "FEEDER_TABLE_FORMAT",
        value_enum,
        default_value = "parquet"
    )]
    pub table_format: TableFormatArg,
    /// `sqlite:///path/catalog.db`, `postgres://...` (SQL catalog) or `http://...` (REST
    /// catalog). Default: `sqlite://<data>/iceberg/catalog.db`.
    #[arg(long, env = "FEEDER_ICEBERG_CATALOG")]
    pub iceberg_catalog: Option<String>,
    /// The catalog's name (pyiceberg's `SqlCatalog(name, ...)`).
    #[arg(long, env = "FEEDER_ICEBERG_CATALOG_NAME", default_value = ICEBERG.catalog_name.as_str())]
    pub iceberg_catalog_name: String,
    #[arg(long, env = "FEEDER_ICEBERG_NAMESPACE", default_value = ICEBERG.namespace.as_str())]
    pub iceberg_namespace: String,
    /// Where new tables' files go. Default: `<data>/iceberg/warehouse`, or with
    /// `--storage s3` `s3://<bucket>/<prefix>/iceberg/warehouse` (written through the
    /// writer's S3 client and credentials).
    #[arg(long, env = "FEEDER_ICEBERG_WAREHOUSE")]
    pub iceberg_warehouse: Option<String>,
}

impl TableArgs {
    pub fn table_format(&self) -> feeder_writer::iceberg::TableFormat {
        use feeder_writer::iceberg::{IcebergSettings, TableFormat};
        match self.table_format {
            TableFormatArg::Parquet => TableFormat::Parquet,
            TableFormatArg::Iceberg => TableFormat::Iceberg(IcebergSettings {
                catalog_uri: self.iceberg_catalog.clone(),
                catalog_name: self.iceberg_catalog_name.clone(),
                namespace: self.iceberg_namespace.clone(),
                warehouse: self.iceberg_warehouse.clone(),
                // the writer's S3 storage, when it has one (`writer_storage::run`)
                s3: None,
            }),
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the fleet's keys and the datasets go.
    #[arg(long, env = "FEEDER_DATA", default_value = "feeder-data")]
    pub data: PathBuf,
    /// Use this Kafka cluster instead of the embedded (non-durable) evaluation broker.
    #[arg(long, env = "FEEDER_BROKERS")]
    pub brokers: Option<String>,
    #[arg(long, default_value_t = 400)]
    pub meters: usize,
    #[arg(long, default_value_t = 40)]
    pub vehicles: usize,
    /// EV chargers whose meters sign in OCMF (contract v1.1).
    #[arg(long, default_value_t = 20)]
    pub ocmf: usize,
    /// How long the simulated fleet sends.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Store the datasets as Iceberg tables (SQLite catalog under --data) and print a
    /// pyiceberg snippet to read them.
    #[arg(long)]
    pub iceberg: bool,
}

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Edge URL, e.g. http://127.0.0.1:7443
    #[arg(long, env = "FEEDER_TARGET")]
    pub target: String,
    /// Device key file (JSON Lines, from `devices keygen`).
    #[arg(long, env = "FEEDER_SECRETS")]
    pub secrets: PathBuf,
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 16)]
    pub frames_per_request: usize,
    /// Frames per second. Closed loop (no --scenario): a cap, the next call waits for a
    /// free slot. Open loop (--scenario): the target arrival rate (ramp: the first step;
    /// boundary-burst: the rate between bursts, 0 by default; otherwise 1000 by default).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: steady | boundary-burst | telematics (every vehicle of the key file
    /// sends its fix once a second; no --rate) | ramp. Requests follow a fixed timeline,
    /// latency counts from each intended send time, and a request due while
    /// --concurrency calls are out is counted late (dropped), never sent later.
    #[arg(long)]
    pub scenario: Option<feeder_sim::loadgen::Scenario>,
    /// Boundary burst: the compressed 15-minute period...
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub burst_period: std::time::Duration,
    /// ...and the window after each boundary in which every device reports once.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub burst_window: std::time::Duration,
    /// Ramp: frames/s added per step (default: --rate).
    #[arg(long)]
    pub ramp_step: Option<f64>,
    #[arg(long, default_value_t = 2.0)]
    pub step_seconds: f64,
    #[arg(long, default_value_t = 20)]
    pub max_steps: usize,
    /// Ramp: stop after the first step whose p99 ack latency passes this.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub max_p99: std::time::Duration,
    /// Open loop: write result.json and result.svg here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Closed loop: append every acked frame to this CSV file
    /// (`device_id,seq,readings,samples,events`), for checking the stored datasets.
    #[arg(long)]
    pub acked_log: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    #[arg(long)]
    pub meters: usize,
    #[arg(long)]
    pub vehicles: usize,
    /// EV chargers whose meters sign in OCMF (P-256 keys, ids `evse-…`, serial `SIM…`).
    #[arg(long, default_value_t = 0)]
    pub ocmf: usize,
    #[arg(long)]
    pub registry: PathBuf,
    #[arg(long)]
    pub secrets: PathBuf,
    /// Deterministic keys (for reproducible tests); random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also publish the new registry to the registry topic, as `devices publish` does:
    /// its settings follow `--`, e.g. `--publish -- --brokers HOST:9092 --signing-key K`.
    #[arg(long)]
    pub publish: bool,
    /// `devices publish`'s settings but `--registry` (after `--`).
    #[arg(last = true, requires = "publish")]
    pub publish_args: Vec<String>,
}

impl KeygenArgs {
    /// The registry topic and signing key of `--publish` (`None` without it).
    pub fn publish_target(&self) -> Result<Option<PublishTarget>, clap::Error> {
        if !self.publish {
            return Ok(None);
        }
        let args = ["feeder devices keygen --publish --"]
            .into_iter()
            .chain(self.publish_args.iter().map(String::as_str));
        PublishTarget::try_parse_from(args).map(Some)
    }
}

/// Where `devices keygen --publish` publishes: `devices publish`'s settings, defined there.
#[derive(Debug, Parser)]
pub struct PublishTarget {
    #[command(flatten)]
    pub target: RegistryTopicArgs,
    /// Provisioning key file (`feeder devices provisioning-key`) to sign with.
    #[arg(long, env = "FEEDER_PROVISIONING_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Where the datasets are: the writer's storage settings.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Device registry (JSON Lines).
    #[arg(long, env = "FEEDER_REGISTRY")]
    pub registry: PathBuf,
    /// Only rows under `date=D` (YYYY-MM-DD) and the frames behind them.
    #[arg(long)]
    pub date: Option<feeder_writer::NaiveDate>,
    /// Key file of the encrypted datasets (the writer's `--encryption-keys`).
    #[arg(long, env = "FEEDER_ENCRYPTION_KEYS")]
    pub encryption_keys: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Where the datasets are: the writer's storage settings.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Dataset to compact (`readings`, `telematics`, `events`, `frames`, `quarantine`,
    /// `anomalies`, `estimates`, `registry_changes`), or `all`.
    #[arg(long)]
    pub dataset: String,
    /// The `date=` partition (YYYY-MM-DD); or `--closed-days`. Given on the command
    /// line, it wins over a config file's `closed_days`.
    #[arg(long)]
    pub date: Option<feeder_writer::NaiveDate>,
    /// Instead of `--date`: every closed date (before today, UTC) of the last N days,
    /// newest first. What the scheduled compaction runs, so a failed run is caught up by
    /// the next; a date already compacted costs a listing and a few footer reads.
    #[arg(long, conflicts_with = "date", value_parser = clap::value_parser!(u32).range(1..=366))]
    pub closed_days: Option<u32>,
    /// The writer's consumer group: only ranges it committed are merged.
    #[arg(long, env = "FEEDER_WRITER_GROUP", default_value = "feeder-writer")]
    pub group: String,
    /// Rows per merged file.
    #[arg(long, default_value_t = 2_000_000)]
    pub target_rows: u64,
    /// Key file of the encrypted datasets (the writer's `--encryption-keys`); merged
    /// files of an encrypted dataset are encrypted again.
    #[arg(long, env = "FEEDER_ENCRYPTION_KEYS")]
    pub encryption_keys: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

impl CompactArgs {
    /// The dates to compact: `--date`, else the closed dates of `--closed-days`.
    pub fn dates(
        &self,
        today: feeder_writer::NaiveDate,
    ) -> anyhow::Result<Vec<feeder_writer::NaiveDate>> {
        match (self.date, self.closed_days) {
            (Some(date), _) => Ok(vec![date]),
            (None, Some(days)) => Ok(feeder_writer::compact::closed_dates(today, days)),
            (None, None) => anyhow::bail!("give --date YYYY-MM-DD or --closed-days N"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_contract_commands() {
        let c = Cli::try_parse_from([
            "feeder",
            "edge",
            "--listen",
            "127.0.0.1:1",
            "--brokers",
            "b:9092",
            "--registry",
            "r.jsonl",
            "--kafka-property",
            "security.protocol=SASL_SSL",
        ])
        .unwrap();
        let Command::Edge(e) = c.command else {
            panic!()
        };
        assert_eq!(
            e.kafka.kafka_properties,
            vec![("security.protocol".into(), "SASL_SSL".into())]
        );
        assert!(
            Cli::try_parse_from(["feeder", "writer", "--brokers", "b", "--data", "/d"]).is_ok()
        );
        assert!(
            Cli::try_parse_from(["feeder", "stream", "--brokers", "b", "--registry", "r"]).is_ok()
        );
        assert!(Cli::try_parse_from(["feeder", "demo"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "feeder",
                "devices",
                "keygen",
                "--meters",
                "2",
                "--vehicles",
                "1",
                "--registry",
                "r",
                "--secrets",
                "s"
            ])
            .is_ok()
        );
        assert!(
            Cli::try_parse_from([
                "feeder",
                "loadgen",
                "--target",
                "http://x",
                "--secrets",
                "s",
                "--seconds",
                "1"
            ])
            .is_ok()
        );
        let open_loop = Cli::try_parse_from([
            "feeder",
            "loadgen",
            "--target",
            "http://x",
            "--secrets",
            "s",
            "--scenario",
            "ramp",
            "--max-p99",
            "100ms",
            "--out",
            "lt",
        ])
        .unwrap();
        let Command::Loadgen(a) = open_loop.command else {
            panic!("not loadgen")
        };
        assert_eq!(a.scenario, Some(feeder_sim::loadgen::Scenario::Ramp));
        assert_eq!(a.max_p99, std::time::Duration::from_millis(100));
        assert!(
            Cli::try_parse_from([
                "feeder",
                "loadgen",
                "--target",
                "http://x",
                "--secrets",
                "s",
                "--scenario",
                "closed"
            ])
            .is_err()
        );
        let err = Cli::try_parse_from([
            "feeder",
            "edge",
            "--brokers",
            "b",
            "--registry",
            "r",
            "--kafka-property",
            "novalue",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("not key=value"), "{err}");
    }

    #[test]
    fn keygen_publishes_only_when_asked_and_given_a_broker() {
        let base = [
            "feeder",
            "devices",
            "keygen",
            "--meters",
            "1",
            "--vehicles",
            "0",
            "--registry",
            "r",
            "--secrets",
            "s",
        ];
        let keygen = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend(extra);
            let c = Cli::try_parse_from(args)?;
            match c.command {
                Command::Devices {
                    command: DevicesCommand::Keygen(a),
                } => a
                    .publish_target()
                    .map(|t| t.map(|t| (t.target.topic(), t.signing_key))),
                _ => unreachable!(),
            }
        };
        assert_eq!(keygen(&[]).unwrap(), None);
        assert_eq!(
            keygen(&["--publish", "--", "--brokers", "b", "--topic-prefix", "u"]).unwrap(),
            Some(("u.registry".to_string(), None))
        );
        assert_eq!(
            keygen(&["--publish", "--", "--brokers", "b", "--signing-key", "k"]).unwrap(),
            Some(("feeder.registry".to_string(), Some(PathBuf::from("k"))))
        );
        assert!(keygen(&["--publish"]).is_err(), "a topic needs a broker");
        assert!(
            keygen(&["--", "--brokers", "b"]).is_err(),
            "only with --publish"
        );
    }

    #[test]
    fn stream_and_writer_take_an_instance_id() {
        for stage in [
            &["stream", "--registry", "r"][..],
            &["writer", "--data", "/d"][..],
        ] {
            let parse = |id: &str| {
                let mut args = vec!["feeder", "--brokers", "b", "--instance-id", id];
                args.splice(1..1, stage.iter().copied());
                Cli::try_parse_from(args).map(|c| match c.command {
                    Command::Stream(a) => a.instance.instance_id,
                    Command::Writer(a) => a.instance.instance_id,
                    _ => unreachable!(),
                })
            };
            assert_eq!(
                parse("feeder-writer-2").unwrap().unwrap().as_str(),
                "feeder-writer-2"
            );
            let err = parse("not ok/").unwrap_err().to_string();
            assert!(err.contains("letters, digits"), "{err}");
        }
    }

    /// Sizes and durations take units in every flag that holds one (`arg_parsers`).
    #[test]
    fn sizes_and_durations_take_units() {
        let c = Cli::try_parse_from([
            "feeder",
            "writer",
            "--brokers",
            "b:9092",
            "--data",
            "/d",
            "--flush-max-bytes",
            "64MiB",
            "--max-buffered-bytes",
            "1GiB",
            "--flush-max-age",
            "1m 30s",
        ])
        .unwrap();
        let Command::Writer(w) = c.command else {
            panic!("writer")
        };
        assert_eq!(w.flush_max_bytes, 64 << 20);
        assert_eq!(w.max_buffered_bytes, 1 << 30);
        assert_eq!(w.flush_max_age, std::time::Duration::from_secs(90));
        let c = Cli::try_parse_from([
            "feeder",
            "edge",
            "--brokers",
            "b:9092",
            "--registry",
            "r",
            "--max-payload-bytes",
            "128KiB",
            "--max-header-list-bytes",
            "32KiB",
        ])
        .unwrap();
        let Command::Edge(e) = c.command else {
            panic!("edge")
        };
        assert_eq!(
            (e.max_payload_bytes, e.max_header_list_bytes),
            (128 << 10, 32 << 10)
        );
        let bad = Cli::try_parse_from([
            "feeder",
            "writer",
            "--brokers",
            "b:9092",
            "--data",
            "/d",
            "--flush-max-bytes",
            "64mb",
        ]);
        assert!(bad.unwrap_err().to_string().contains("unknown unit"));
    }

    #[test]
    fn parses_verify_and_compact() {
        let c = Cli::try_parse_from([
            "feeder",
            "verify",
            "--data",
            "/d",
            "--registry",
            "r.jsonl",
            "--date",
            "2024-03-11",
        ])
        .unwrap();
        let Command::Verify(v) = c.command else {
            panic!()
        };
        assert_eq!(v.date.map(|d| d.to_string()).as_deref(), Some("2024-03-11"));
        assert!(
            Cli::try_parse_from(["feeder", "verify", "--data", "/d", "--registry", "r"]).is_ok()
        );
        assert!(
            Cli::try_parse_from([
                "feeder",
                "verify",
                "--data",
                "/d",
                "--registry",
                "r",
                "--date",
                "11/03/2024"
            ])
            .is_err()
        );
        let c = Cli::try_parse_from([
            "feeder",
            "compact",
            "--data",
            "/d",
            "--dataset",
            "readings",
            "--date",
            "2024-03-10",
            "--brokers",
            "b:9092",
        ])
        .unwrap();
        let Command::Compact(a) = c.command else {
            panic!()
        };
        assert_eq!(
            (a.dataset.as_str(), a.group.as_str()),
            ("readings", "feeder-writer")
        );
    }

    #[test]
    fn compact_takes_a_date_or_closed_days_and_the_writers_storage_flags() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["feeder", "compact", "--dataset", "all", "--brokers", "b"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|c| match c.command {
                Command::Compact(a) => a,
                _ => unreachable!(),
            })
        };
        let a = parse(&[
            "--closed-days",
            "7",
            "--storage",
            "s3",
            "--s3-bucket",
            "meters",
        ])
        .unwrap();
        assert_eq!((a.date, a.closed_days), (None, Some(7)));
        let day = |d| feeder_writer::NaiveDate::from_ymd_opt(2024, 3, d).unwrap();
        assert_eq!(a.dates(day(10)).unwrap().len(), 7);
        assert_eq!(a.dates(day(10)).unwrap()[0], day(9));
        assert!(matches!(a.storage.check().unwrap(), Storage::S3(c) if c.bucket == "meters"));
        let none = parse(&["--data", "/d"]).unwrap();
        let err = none.dates(day(10)).unwrap_err().to_string();
        assert!(err.contains("--closed-days"), "{err}");
        assert!(parse(&["--date", "2024-03-10", "--closed-days", "2"]).is_err());
        assert!(parse(&["--closed-days", "0"]).is_err());
        let v = Cli::try_parse_from([
            "feeder",
            "verify",
            "--registry",
            "r",
            "--storage",
            "s3",
            "--s3-bucket",
            "b",
        ])
        .unwrap();
        let Command::Verify(v) = v.command else {
            panic!()
        };
        assert!(matches!(v.storage.check().unwrap(), Storage::S3(_)));
    }

    // The writer's storage settings (moved from `writer_storage`, which no longer knows
    // the command line).
    mod writer_storage {
        use clap::Parser;

        use super::super::*;

        fn storage(a: &WriterArgs) -> anyhow::Result<Storage> {
            a.checked_storage()
        }

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
                    "needs a catalog",
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
}
