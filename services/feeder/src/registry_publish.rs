//! `feeder devices provisioning-key | publish | revoke | show`: the provisioning side of
//! the registry topic (device contract v1.1; `feeder_core::registry_topic`).
//!
//! `publish` writes only the lines that differ from what the topic holds (a registry of
//! millions of lines re-published after one change writes one record), each signed with
//! the provisioning key when one is given; `revoke` rewrites a device's lines with status
//! `revoked`; `show` prints what the topic holds for a device, its history included
//! while compaction has not removed it. Every command reads the whole topic first, as a
//! receiver does.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use feeder_core::SigningKey;
use feeder_core::registry::RegistryLine;
use feeder_core::registry_topic::{
    ProvisioningKeys, SIGNATURE_HEADER, SIGNER_HEADER, record_key, signing_input,
};
use feeder_kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// A provisioning key that signs registry records.
pub struct Signer {
    pub key_id: String,
    key: SigningKey,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct SignerLine {
    key_id: String,
    seed: String,
}

impl Signer {
    /// Loads a provisioning key file (`feeder devices provisioning-key`).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading provisioning key {}", path.display()))?;
        let l: SignerLine = serde_json::from_str(text.trim()).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                feeder_core::line_error::json_line_error(&e)
            )
        })?;
        let seed = hex::decode(&l.seed)
            .ok()
            .and_then(|s| SigningKey::ed25519_from_seed(&s))
            .ok_or_else(|| anyhow::anyhow!("{}: seed must be 64 hex digits", path.display()))?;
        Ok(Self {
            key_id: l.key_id,
            key: seed,
        })
    }

    fn headers(&self, key: &str, value: Option<&str>) -> anyhow::Result<OwnedHeaders> {
        let input = signing_input(key.as_bytes(), value.map(str::as_bytes))
            .ok_or_else(|| anyhow::anyhow!("record {key} too long to sign"))?;
        let sig = self.key.sign_input(&input);
        Ok(OwnedHeaders::new()
            .insert(Header {
                key: SIGNER_HEADER,
                value: Some(self.key_id.as_str()),
            })
            .insert(Header {
                key: SIGNATURE_HEADER,
                value: Some(sig.as_slice()),
            }))
    }
}

/// Creates a provisioning key: the private seed to `out` (mode 0600; refuses to
/// overwrite), and returns the public line the receivers' `--provisioning-keys` take.
pub fn provisioning_key(out: &Path, key_id: &str) -> anyhow::Result<String> {
    anyhow::ensure!(!out.exists(), "{} exists: remove it first", out.display());
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let key = SigningKey::ed25519_from_seed(&seed).context("ed25519 key")?;
    let line = serde_json::to_string(&SignerLine {
        key_id: key_id.to_string(),
        seed: hex::encode(seed),
    })?;
    crate::edge_key::write_secret(out, format!("{line}\n").as_bytes())?;
    let public = hex::encode(key.ed25519_public().context("ed25519 public key")?);
    let public_line = format!(r#"{{"key_id":"{key_id}","public_key":"{public}"}}"#);
    // what receivers will load must load
    ProvisioningKeys::parse("public line", &public_line)?;
    Ok(public_line)
}

/// One record of the registry topic.
#[derive(Debug)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: Option<String>,
    pub signer: Option<String>,
}

/// Every record of `topic`, partition by partition in offset order.
pub fn read_topic(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Vec<TopicRecord>> {
    let consumer: BaseConsumer = kafka.reader("registry-publish").create()?;
    let timeout = Duration::from_secs(30);
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut out = Vec::new();
    for p in md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
    {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        consumer.assign(&tpl)?;
        let t0 = Instant::now();
        let mut last = low - 1;
        while last < high - 1 {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "{topic}: read stalled"
            );
            let m = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                // a broker that is slow or restarting: retried until the stall bound
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "{topic}: read error, retrying");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                Some(Ok(m)) => m,
            };
            last = m.offset();
            let signer = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == SIGNER_HEADER))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            out.push(TopicRecord {
                partition: p,
                offset: m.offset(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                value: m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
                signer,
            });
        }
    }
    Ok(out)
}

/// The latest value per record key (tombstones remove).
fn in_force(records: &[TopicRecord]) -> BTreeMap<&str, &str> {
    let mut m = BTreeMap::new();
    for r in records {
        match &r.value {
            Some(v) => m.insert(r.key.as_str(), v.as_str()),
            None => m.remove(r.key.as_str()),
        };
    }
    m
}

/// What a publish wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Lines written (new or changed).
    pub lines: usize,
    /// Lines the topic already held as they are.
    pub unchanged: usize,
    /// Keys in force that the text does not name, removed (tombstones; `prune` only).
    pub removed: usize,
}

/// Publishes the lines of `text` (a registry file's content) that differ from what
/// `topic` holds and, with `prune`, removes the keys the text does not name (the topic
/// then holds exactly the file: the way back from a bad publish). Every line is checked
/// first: nothing is written if one does not parse.
pub async fn publish(
    kafka: &KafkaConfig,
    topic: &str,
    text: &str,
    signer: Option<&Signer>,
    prune: bool,
) -> anyhow::Result<Published> {
    // the whole text must be a valid registry, with the file's line numbers in errors
    feeder_core::Registry::parse("registry", text)?;
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let l: RegistryLine = serde_json::from_str(line)?;
        lines.push((record_key(&l.device_id, &l.key_id), line.trim().to_string()));
    }
    let held = read_topic(kafka, topic)?;
    let held = in_force(&held);
    let mut changed: Vec<(String, Option<String>)> = lines
        .iter()
        .filter(|(k, v)| held.get(k.as_str()) != Some(&v.as_str()))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let n = changed.len();
    let mut removed = 0;
    if prune {
        let named: std::collections::HashSet<&str> =
            lines.iter().map(|(k, _)| k.as_str()).collect();
        for k in held.keys().filter(|k| !named.contains(*k)) {
            changed.push((k.to_string(), None));
            removed += 1;
        }
    }
    produce(kafka, topic, &changed, signer).await?;
    Ok(Published {
        lines: n,
        unchanged: lines.len() - n,
        removed,
    })
}

/// Rewrites the lines of `device` (only key `key`, when given) with status `revoked`;
/// returns how many.
pub async fn revoke(
    kafka: &KafkaConfig,
    topic: &str,
    device: &str,
    key: Option<&str>,
    signer: Option<&Signer>,
) -> anyhow::Result<usize> {
    let held = read_topic(kafka, topic)?;
    let mut out = Vec::new();
    for (k, v) in in_force(&held) {
        let mut l: serde_json::Value = serde_json::from_str(v)?;
        if l["device_id"] != device || key.is_some_and(|key| l["key_id"] != key) {
            continue;
        }
        l["status"] = "revoked".into();
        out.push((k.to_string(), Some(serde_json::to_string(&l)?)));
    }
    anyhow::ensure!(!out.is_empty(), "{topic} holds no line of device {device}");
    produce(kafka, topic, &out, signer).await?;
    Ok(out.len())
}

/// What `topic` holds for `device`: every record of its keys still in the log, oldest
/// first, then the lines in force.
pub fn show(kafka: &KafkaConfig, topic: &str, device: &str) -> anyhow::Result<String> {
    let held = read_topic(kafka, topic)?;
    let prefix = format!("{device}/");
    let mut out = String::new();
    for r in held.iter().filter(|r| r.key.starts_with(&prefix)) {
        out.push_str(&format!(
            "partition {} offset {} key {} signer {}: {}\n",
            r.partition,
            r.offset,
            r.key,
            r.signer.as_deref().unwrap_or("(unsigned)"),
            r.value.as_deref().unwrap_or("(removed)")
        ));
    }
    let lines: Vec<_> = in_force(&held)
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    out.push_str(&format!("in force: {} line(s)\n", lines.len()));
    for (_, v) in lines {
        out.push_str(v);
        out.push('\n');
    }
    Ok(out)
}

async fn produce(
    kafka: &KafkaConfig,
    topic: &str,
    records: &[(String, Option<String>)],
    signer: Option<&Signer>,
) -> anyhow::Result<()> {
    let producer: FutureProducer = kafka
        // a long delivery timeout: a record that outlives it makes librdkafka bump its
        // idempotent epoch locally, which some brokers (tansu 0.6) cannot follow; a slow
        // broker is waited out, never raced
        .producer("registry-publish", 100_000, 300_000)
        .create()?;
    // acks awaited oldest first; a full local queue waits for the oldest (bounded memory)
    let mut acks = std::collections::VecDeque::new();
    for (key, value) in records {
        let mut rec = FutureRecord::<str, str>::to(topic).key(key);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        if let Some(s) = signer {
            rec = rec.headers(s.headers(key, value.as_deref())?);
        }
        loop {
            match producer.send_result(rec) {
                Ok(ack) => {
                    acks.push_back(ack);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    match acks.pop_front() {
                        Some(oldest) => {
                            oldest.await?.map_err(|(e, _)| e)?;
                        }
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for a in acks {
        a.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}
