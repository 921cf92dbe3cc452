//! Client settings: what every producer and consumer of Feeder shares.

use rdkafka::ClientConfig;

/// How to reach Kafka. `properties` are passed to librdkafka unchanged (for example
/// `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`, `ssl.ca.location=...`).
#[derive(Debug, Clone, Default)]
pub struct KafkaConfig {
    pub brokers: String,
    pub properties: Vec<(String, String)>,
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
            .set("compression.type", "lz4")
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
