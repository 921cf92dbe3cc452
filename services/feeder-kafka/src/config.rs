//! Client settings: what every producer and consumer of Feeder shares.

use rdkafka::ClientConfig;

/// How to reach Kafka. `properties` are passed to librdkafka unchanged (for example
/// `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`, `ssl.ca.location=...`;
/// librdkafka is built with OpenSSL, so TLS and the PLAIN, SCRAM and OAUTHBEARER SASL
/// mechanisms work; GSSAPI/Kerberos is not built in). `Debug` shows only the values of
/// properties known to be harmless (`redact.rs`).
#[derive(Clone, Default)]
pub struct KafkaConfig {
    pub brokers: String,
    pub properties: Vec<(String, String)>,
}

pub use crate::redact::{is_shown_property, redacted};

/// Batch compression of a producer (librdkafka's `compression.type`), among the codecs
/// this build's librdkafka has (zstd is not built in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    Snappy,
    Gzip,
}

impl Compression {
    pub const ALL: [Compression; 4] = [Self::None, Self::Lz4, Self::Snappy, Self::Gzip];

    /// The `compression.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Lz4 => "lz4",
            Self::Snappy => "snappy",
            Self::Gzip => "gzip",
        }
    }
}

/// The compression of every Feeder producer, and so of every topic: lz4. Measured per
/// topic by `benches/kafka_compression.rs` (librdkafka to a mock cluster, same records):
/// raw and checked records (~2.6 KB: a frame of ~90 readings) shrink to 0.43 of their
/// size in full batches and 0.55 alone (a quiet partition's batch of one) for about
/// 1-2 us more producer CPU a record, and read back no dearer; snappy is within 5 % of
/// lz4 both ways, gzip shrinks to 0.28-0.41 at about ten times the CPU. The other
/// topics (quarantine, anomalies, changelog, tallies) are small beside these and take
/// the same. A `compression.type` in [`KafkaConfig::properties`] still wins
/// (docs/operations.md, "Compression").
pub const PRODUCER_COMPRESSION: Compression = Compression::Lz4;

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("properties", &redacted(&self.properties))
            .finish()
    }
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: Vec::new(),
        }
    }

    /// Base client config: bootstrap servers and the pass-through properties.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A durable producer: `acks=all`, idempotent (no duplicates or reordering from its own
    /// retries), bounded local queue so backpressure reaches the caller instead of memory.
    pub fn producer(
        &self,
        client_id: &str,
        queue_max_messages: usize,
        timeout_ms: u64,
    ) -> ClientConfig {
        let mut c = self.client();
        c.set("client.id", client_id)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5")
            .set("linger.ms", "5")
            .set("compression.type", PRODUCER_COMPRESSION.as_str())
            .set(
                "queue.buffering.max.messages",
                queue_max_messages.to_string(),
            )
            .set("queue.buffering.max.kbytes", "262144")
            .set("message.timeout.ms", timeout_ms.to_string());
        // pass-through properties win over our defaults
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A consumer that commits only when told to, starting at the earliest offset when the
    /// group has none (a new group must not skip data already acked to devices).
    pub fn consumer(&self, group_id: &str, client_id: &str) -> ClientConfig {
        let mut c = self.client();
        c.set("group.id", group_id)
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "range");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A consumer that joins `group_id` (subscribes): [`Self::consumer`] plus, when the
    /// stage has a stable name, `group.instance.id` (static membership, KIP-345, see
    /// [`crate::membership`]). Every consumer a stage subscribes with is made here, each
    /// group with its own id; the typed setting wins over a `group.instance.id` passed
    /// through `properties`.
    pub fn group_member(
        &self,
        group_id: &str,
        client_id: &str,
        instance_id: Option<&crate::InstanceId>,
    ) -> ClientConfig {
        let mut c = self.consumer(group_id, client_id);
        if let Some(id) = instance_id {
            c.set("group.instance.id", id.as_str());
        }
        c
    }

    /// A group-less consumer for reading partitions by explicit assignment (recovery scans).
    pub fn reader(&self, client_id: &str) -> ClientConfig {
        let mut c = self.client();
        c.set("group.id", format!("{client_id}-reader"))
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::BaseProducer;

    use super::*;

    fn with(props: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn tls_and_sasl_properties_reach_a_librdkafka_built_with_them() {
        // Without OpenSSL in the build, librdkafka refuses these at creation.
        let scram = with(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "feeder"),
            ("sasl.password", "hunter2"),
        ]);
        scram
            .producer("t", 10, 1000)
            .create::<BaseProducer>()
            .expect("SASL_SSL with SCRAM is supported");
        // A CA file that does not exist is reported by librdkafka: proof the TLS
        // settings are applied, not dropped.
        let tls = with(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "/nonexistent/feeder-ca.pem"),
        ]);
        let err = tls
            .client()
            .create::<BaseProducer>()
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("ssl.ca.location") || err.contains("feeder-ca.pem"),
            "{err}"
        );
        let unknown = with(&[("no.such.property", "1")]);
        let err = unknown
            .client()
            .create::<BaseProducer>()
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("no.such.property"), "{err}");
    }

    #[test]
    fn producers_compress_with_the_one_setting_unless_told_otherwise() {
        let p = with(&[]).producer("t", 10, 1000);
        assert_eq!(
            p.get("compression.type"),
            Some(PRODUCER_COMPRESSION.as_str())
        );
        let p = with(&[("compression.type", "none")]).producer("t", 10, 1000);
        assert_eq!(p.get("compression.type"), Some("none"));
        // every codec the enum names is one this build's librdkafka accepts
        for c in Compression::ALL {
            with(&[("compression.type", c.as_str())])
                .producer("t", 10, 1000)
                .create::<BaseProducer>()
                .unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
    }

    #[test]
    fn group_members_carry_their_instance_id_and_probes_none() {
        let c = with(&[("group.instance.id", "from-properties")]);
        let id: crate::InstanceId = "feeder-writer-1".parse().unwrap();
        let member = c.group_member("g", "w", Some(&id));
        assert_eq!(member.get("group.instance.id"), Some("feeder-writer-1"));
        assert_eq!(member.get("group.id"), Some("g"));
        let plain = with(&[]);
        assert_eq!(
            plain.group_member("g", "w", None).get("group.instance.id"),
            None
        );
        assert_eq!(plain.consumer("g", "w").get("group.instance.id"), None);
        assert_eq!(plain.reader("r").get("group.instance.id"), None);
        // librdkafka takes the property
        member
            .create::<rdkafka::consumer::BaseConsumer>()
            .expect("group.instance.id is a known property");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = with(&[
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "swordfish"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
            ("sasl.username", "feeder"),
        ]);
        let shown = format!("{c:?}");
        for secret in ["hunter2", "swordfish", "BEGIN PRIVATE"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("feeder") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
