//! Which librdkafka property values may be shown (`config check`, `Debug`, logs).
//!
//! An allow-list, not a deny-list: a deny-list has to guess every name a secret can hide
//! under (`sasl.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`,
//! `ssl.keystore.password`, `sasl.jaas.config`, a property a future librdkafka adds, a
//! misspelt key that still holds a password), and one miss prints a credential. Here
//! only properties known to hold no secret (addresses, identities, mechanisms, file
//! *paths*, timeouts and sizes) are shown; every other value is `<redacted>`. Adding a
//! harmless property to the list is a small, reviewable change; forgetting to is safe.

/// What is shown in place of a value that is not known to be harmless.
pub const REDACTED: &str = "<redacted>";

/// librdkafka properties whose values hold no secret, sorted (binary-searched).
const HARMLESS: &[&str] = &[
    "acks",
    "allow.auto.create.topics",
    "api.version.request",
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "batch.num.messages",
    "batch.size",
    "bootstrap.servers",
    "broker.address.family",
    "broker.version.fallback",
    "check.crcs",
    "client.id",
    "client.rack",
    "compression.codec",
    "compression.level",
    "compression.type",
    "connections.max.idle.ms",
    "debug",
    "delivery.timeout.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "enable.partition.eof",
    "enable.ssl.certificate.verification",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "heartbeat.interval.ms",
    "isolation.level",
    "linger.ms",
    "log.connection.close",
    "log_level",
    "max.in.flight",
    "max.in.flight.requests.per.connection",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "message.max.bytes",
    "message.timeout.ms",
    "metadata.broker.list",
    "metadata.max.age.ms",
    "partition.assignment.strategy",
    "partitioner",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "receive.message.max.bytes",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "request.required.acks",
    "request.timeout.ms",
    "retries",
    "retry.backoff.max.ms",
    "retry.backoff.ms",
    "sasl.kerberos.service.name",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.scope",
    "sasl.username",
    "security.protocol",
    "session.timeout.ms",
    "socket.connection.setup.timeout.ms",
    "socket.keepalive.enable",
    "socket.nagle.disable",
    "socket.receive.buffer.bytes",
    "socket.send.buffer.bytes",
    "socket.timeout.ms",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.cipher.suites",
    "ssl.curves.list",
    "ssl.endpoint.identification.algorithm",
    "ssl.key.location",
    "ssl.sigalgs.list",
    "statistics.interval.ms",
    "sticky.partitioning.linger.ms",
    "topic.metadata.propagation.max.ms",
    "topic.metadata.refresh.interval.ms",
    "transaction.timeout.ms",
    "transactional.id",
];

/// Whether `key`'s value may be shown: it is on the allow-list (exact name).
pub fn is_shown_property(key: &str) -> bool {
    HARMLESS.binary_search(&key).is_ok()
}

/// `properties` with every value not on the allow-list replaced by `<redacted>`.
pub fn redacted(properties: &[(String, String)]) -> Vec<(String, String)> {
    properties
        .iter()
        .map(|(k, v)| {
            let v = if is_shown_property(k) {
                v.clone()
            } else {
                REDACTED.to_string()
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_unique() {
        assert!(HARMLESS.windows(2).all(|w| w[0] < w[1]));
    }

    /// Secret-bearing names, and names the old deny-list (`password`, `secret`, `.pem`,
    /// `jaas`) showed: a misspelt or upper-case key holding a password, a URL with
    /// credentials, an unknown property. All redacted; the harmless ones shown.
    #[test]
    fn only_allowed_properties_are_shown() {
        let props: Vec<(String, String)> = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "feeder"),
            ("ssl.ca.location", "/etc/ca.pem"),
            ("sasl.password", "S1"),
            ("ssl.key.password", "S2"),
            ("ssl.key.pem", "S3"),
            ("ssl_key", "S4"),
            ("ssl.keystore.password", "S5"),
            ("sasl.oauthbearer.client.secret", "S6"),
            ("sasl.oauthbearer.config", "S7"),
            ("sasl.passwrod", "S8"),
            ("SASL.USERNAME", "S9"),
            ("ssl.certificate.pem", "S10"),
            ("sasl.oauthbearer.token.endpoint.url", "https://u:S11@idp"),
            ("no.such.property", "S12"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let shown = redacted(&props);
        assert_eq!(shown.len(), props.len());
        assert_eq!(shown[0].1, "SASL_SSL");
        assert_eq!(shown[1].1, "feeder");
        assert_eq!(shown[2].1, "/etc/ca.pem");
        for (k, v) in &shown[3..] {
            assert_eq!(v, REDACTED, "{k} shown");
        }
        let text = format!("{shown:?}");
        assert!(!text.contains("S1") && !text.contains("S4"), "{text}");
    }
}
