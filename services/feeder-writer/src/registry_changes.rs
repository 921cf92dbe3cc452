//! The registry audit: which records of the registry topic are accepted changes, and what
//! each changed from, for the `registry_changes` dataset (contract 1.1), so a utility can
//! answer "who enrolled this meter, and when".
//!
//! # Why the writer judges on arrival
//! A row needs the line in force before the record (`previous_status`), and whether the
//! record changed anything at all: state that a range of records alone does not hold.
//! Registry records keep their key's partition (record key `<device_id>/<key_id>`), so each
//! partition's state is its own. When the writer first sees a registry partition at offset
//! `C` (after an assignment, a restart, or a rewind) it rebuilds that partition's state
//! from the topic's beginning up to `C` ([`prime`]), then judges every record in offset
//! order and buffers the judgement ([`JudgedChange`]) in place of the record's value. A
//! replayed range is judged from the same state, so it rewrites the same rows; the
//! writer's ranges, recovery and commits then give the dataset the same exactly-once
//! guarantee as every other.
//!
//! # What counts as a change
//! A record accepted by the provisioning keys (the receivers' rules,
//! [`feeder_core::registry_topic`]) whose line differs from the line in force, or a
//! tombstone that removes a line in force. A republished identical line, a tombstone of
//! nothing, and refused records hold no row; refused ones are counted
//! (`feeder_writer_registry_records_refused_total{reason}`) as receivers count them.
//!
//! # Compaction
//! A change compacted away before any writer read it (a later record of the same key
//! replaced it) is never seen: set the topic's `min.compaction.lag.ms` above the writer's
//! longest outage (deploy/ sets 7 days).

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use feeder_core::registry_topic::{
    Change, ProvisioningKeys, Refused, SIGNATURE_HEADER, SIGNER_HEADER, parse_record,
};
use feeder_kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub use crate::convert::registry_changes::JudgedChange;
use crate::{Error, Result};

/// The registry topic the writer audits, and the keys its records must be signed with
/// (empty: records need not be signed, and `signer` stays null): the receivers' setting.
pub use feeder_kafka::registry_follow::TopicSource as RegistryAudit;

/// A registry record as consumed: what judging needs, copied out of the consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryRecord {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub signer: Option<Vec<u8>>,
    pub signature: Option<Vec<u8>>,
    pub timestamp_ms: Option<i64>,
}

impl RegistryRecord {
    pub fn of(m: &BorrowedMessage<'_>) -> Self {
        let header = |name: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(<[u8]>::to_vec)
        };
        Self {
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().map(<[u8]>::to_vec),
            signer: header(SIGNER_HEADER),
            signature: header(SIGNATURE_HEADER),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }
}

/// What one record is to the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    Change(JudgedChange),
    /// Accepted, but the line in force stays as it was.
    Unchanged,
    Refused(Refused),
}

/// What the audit keeps of a line in force.
#[derive(Debug, Clone)]
struct Held {
    /// Of the line's bytes, to tell a republished identical line from a change.
    digest: u64,
    status: &'static str,
    alg: &'static str,
    labels: String,
}

/// The lines in force of one registry partition.
#[derive(Debug, Default)]
pub struct PartitionAudit {
    held: HashMap<String, Held>,
}

fn digest(line: &str) -> u64 {
    // the same process computes and compares: a fixed-key hasher is enough
    let mut h = DefaultHasher::new();
    line.hash(&mut h);
    h.finish()
}

impl PartitionAudit {
    /// Judges the next record of the partition (in offset order) and takes it in.
    pub fn judge(&mut self, keys: &ProvisioningKeys, rec: &RegistryRecord) -> Judgement {
        let checked = keys
            .check(
                &rec.key,
                rec.value.as_deref(),
                rec.signer.as_deref(),
                rec.signature.as_deref(),
            )
            .and_then(|()| parse_record(&rec.key, rec.value.as_deref()));
        let change = match checked {
            Ok(c) => c,
            Err(why) => return Judgement::Refused(why),
        };
        let signer = (!keys.is_empty())
            .then(|| {
                rec.signer
                    .as_deref()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
            })
            .flatten();
        let changed_at_ms = rec.timestamp_ms.unwrap_or(0);
        let (device_id, key_id) = split_key(change.key());
        match change {
            Change::Removed { key } => match self.held.remove(&key) {
                None => Judgement::Unchanged,
                Some(before) => Judgement::Change(JudgedChange {
                    changed_at_ms,
                    device_id,
                    key_id,
                    alg: before.alg.to_string(),
                    status: "removed".to_string(),
                    previous_status: Some(before.status.to_string()),
                    labels: before.labels,
                    signer,
                }),
            },
            Change::Line {
                key, line, parsed, ..
            } => {
                let now = Held {
                    digest: digest(&line),
                    status: parsed.status.as_str(),
                    alg: parsed.alg.name(),
                    labels: serde_json::to_string(&parsed.labels)
                        .unwrap_or_else(|_| "{}".to_string()),
                };
                let before = self.held.insert(key, now.clone());
                if before.as_ref().is_some_and(|b| b.digest == now.digest) {
                    return Judgement::Unchanged;
                }
                Judgement::Change(JudgedChange {
                    changed_at_ms,
                    device_id,
                    key_id,
                    alg: now.alg.to_string(),
                    status: now.status.to_string(),
                    previous_status: before.map(|b| b.status.to_string()),
                    labels: now.labels,
                    signer,
                })
            }
        }
    }

    /// Lines in force.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// `<device_id>/<key_id>` (checked by [`parse_record`] for lines; a tombstone's key is
/// taken as it is, cut at its last `/`).
fn split_key(key: &str) -> (String, String) {
    match key.rsplit_once('/') {
        Some((d, k)) => (d.to_string(), k.to_string()),
        None => (key.to_string(), String::new()),
    }
}

/// The audit of every registry partition this writer holds, driven by the consumer loop.
pub struct Auditor {
    audit: RegistryAudit,
    kafka: KafkaConfig,
    partitions: HashMap<i32, PartitionAudit>,
}

impl Auditor {
    pub fn new(audit: RegistryAudit, kafka: KafkaConfig) -> Self {
        Self {
            audit,
            kafka,
            partitions: HashMap::new(),
        }
    }

    pub fn topic(&self) -> &str {
        &self.audit.topic
    }

    /// (Re)starts `partition` at `offset`, the first offset the consumer gave after an
    /// assignment or a rewind: its state is rebuilt from the topic up to there.
    pub async fn restart(&mut self, partition: i32, offset: i64) -> Result<()> {
        let (kafka, audit) = (self.kafka.clone(), self.audit.clone());
        let started = Instant::now();
        let state =
            tokio::task::spawn_blocking(move || prime(&kafka, &audit, partition, offset)).await??;
        tracing::info!(
            topic = %self.audit.topic,
            partition,
            resume_from = offset,
            lines_in_force = state.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "registry audit state rebuilt"
        );
        self.partitions.insert(partition, state);
        Ok(())
    }

    /// Judges the next record of `partition`: the value to buffer (a [`JudgedChange`]),
    /// or `None` when it holds no row.
    pub fn take(&mut self, partition: i32, rec: &RegistryRecord) -> Option<Vec<u8>> {
        let state = self.partitions.entry(partition).or_default();
        match state.judge(&self.audit.keys, rec) {
            Judgement::Change(c) => Some(c.encode()),
            Judgement::Unchanged => None,
            Judgement::Refused(why) => {
                crate::observe::registry_refused(why);
                // the record key only, cut: never the line
                let key: String = String::from_utf8_lossy(&rec.key).chars().take(64).collect();
                tracing::warn!(key, reason = %why, "registry record refused: no registry_changes row");
                None
            }
        }
    }
}

/// How long rebuilding a partition's state may go without a record before it fails.
const PRIME_STALL: Duration = Duration::from_secs(60);

/// Rebuilds the state of `partition` from the topic's beginning up to (not including)
/// offset `until`, judging every record as the writer did when it first read it.
/// Blocking: run it off the async runtime.
pub fn prime(
    kafka: &KafkaConfig,
    audit: &RegistryAudit,
    partition: i32,
    until: i64,
) -> Result<PartitionAudit> {
    let mut state = PartitionAudit::default();
    let consumer: BaseConsumer = kafka.reader("writer-registry-audit").create()?;
    let timeout = Duration::from_secs(30);
    let (low, high) = consumer.fetch_watermarks(&audit.topic, partition, timeout)?;
    let end = until.min(high);
    if end <= low {
        return Ok(state);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&audit.topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if m.offset() >= end {
                    break;
                }
                // refusals were counted when the records were first read
                let _ = state.judge(&audit.keys, &RegistryRecord::of(&m));
                last_progress = Instant::now();
                if m.offset() + 1 >= end {
                    break;
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None if last_progress.elapsed() > PRIME_STALL => {
                return Err(Error::Registry(format!(
                    "{} partition {partition}: no progress reading it up to offset {end}",
                    audit.topic
                )));
            }
            None => {}
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use feeder_core::SigningKey;
    use feeder_core::registry_topic::signing_input;

    use super::*;

    fn line(device: &str, status: &str, region: &str) -> String {
        format!(
            r#"{{"device_id":"{device}","key_id":"k1","alg":"ed25519","public_key":"03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8","kind":"meter","status":"{status}","labels":{{"region":"{region}"}}}}"#
        )
    }

    fn rec(device: &str, value: Option<String>, at: i64) -> RegistryRecord {
        RegistryRecord {
            key: format!("{device}/k1").into_bytes(),
            value: value.map(String::into_bytes),
            timestamp_ms: Some(at),
            ..RegistryRecord::default()
        }
    }

    fn changed(j: Judgement) -> JudgedChange {
        match j {
            Judgement::Change(c) => c,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn enrolment_revocation_republish_and_removal() {
        let keys = ProvisioningKeys::default();
        let mut a = PartitionAudit::default();
        let c = changed(a.judge(&keys, &rec("mtr-1", Some(line("mtr-1", "active", "n")), 10)));
        assert_eq!(
            (c.status.as_str(), c.previous_status, c.changed_at_ms),
            ("active", None, 10)
        );
        assert_eq!(c.labels, r#"{"region":"n"}"#);
        assert_eq!(c.signer, None);
        // the same line again is not a change
        assert_eq!(
            a.judge(&keys, &rec("mtr-1", Some(line("mtr-1", "active", "n")), 11)),
            Judgement::Unchanged
        );
        // a label change is, with the status unchanged
        let c = changed(a.judge(&keys, &rec("mtr-1", Some(line("mtr-1", "active", "s")), 12)));
        assert_eq!(c.previous_status.as_deref(), Some("active"));
        let c = changed(a.judge(
            &keys,
            &rec("mtr-1", Some(line("mtr-1", "revoked", "s")), 13),
        ));
        assert_eq!(
            (c.status.as_str(), c.previous_status.as_deref()),
            ("revoked", Some("active"))
        );
        let c = changed(a.judge(&keys, &rec("mtr-1", None, 14)));
        assert_eq!(
            (
                c.status.as_str(),
                c.previous_status.as_deref(),
                c.alg.as_str()
            ),
            ("removed", Some("revoked"), "ed25519")
        );
        assert!(a.is_empty());
        // removing nothing is not a change
        assert_eq!(
            a.judge(&keys, &rec("mtr-1", None, 15)),
            Judgement::Unchanged
        );
    }

    /// Whatever a writer of the topic puts there: no row, no state, and the line in force
    /// stays; nothing is kept of a refused record, so memory does not grow with them.
    #[test]
    fn garbage_records_are_refused_and_keep_no_state() {
        let keys = ProvisioningKeys::default();
        let mut a = PartitionAudit::default();
        let _ = a.judge(&keys, &rec("mtr-1", Some(line("mtr-1", "active", "n")), 1));
        let huge = "x".repeat(4 << 20);
        let hostile = [
            (b"\xff\xfe/k1".to_vec(), Some(b"{}".to_vec())),
            (b"mtr-1/k1".to_vec(), Some(vec![0xff; 64])),
            (b"mtr-1/k1".to_vec(), Some(b"{\"device_id\":".to_vec())),
            (b"mtr-1/k1".to_vec(), Some(huge.clone().into_bytes())),
            (
                huge.clone().into_bytes(),
                Some(line("mtr-1", "revoked", "n").into_bytes()),
            ),
            (
                b"mtr-1/k1".to_vec(),
                Some(line("mtr-1", "disabled", "n").into_bytes()),
            ),
        ];
        for (key, value) in hostile {
            let r = RegistryRecord {
                key,
                value,
                timestamp_ms: Some(2),
                ..RegistryRecord::default()
            };
            assert_eq!(a.judge(&keys, &r), Judgement::Refused(Refused::Malformed));
        }
        // a tombstone of a key never held (however long) is not a change and keeps nothing
        let r = RegistryRecord {
            key: huge.into_bytes(),
            ..RegistryRecord::default()
        };
        assert_eq!(a.judge(&keys, &r), Judgement::Unchanged);
        assert_eq!(a.len(), 1, "only the one valid line is held");
        // and the line in force is still the one the next change starts from
        let c = changed(a.judge(&keys, &rec("mtr-1", Some(line("mtr-1", "revoked", "n")), 3)));
        assert_eq!(c.previous_status.as_deref(), Some("active"));
    }

    #[test]
    fn with_provisioning_keys_only_signed_records_are_changes_and_name_their_signer() {
        let seed: Vec<u8> = (0u8..32).collect();
        let sk = SigningKey::ed25519_from_seed(&seed).unwrap();
        let keys =
            ProvisioningKeys::from_keys([("prov-1".to_string(), sk.ed25519_public().unwrap())]);
        let mut a = PartitionAudit::default();
        let mut r = rec("mtr-1", Some(line("mtr-1", "active", "n")), 1);
        assert_eq!(a.judge(&keys, &r), Judgement::Refused(Refused::Unsigned));
        r.signer = Some(b"prov-1".to_vec());
        r.signature = Some(vec![0; 64]);
        assert_eq!(
            a.judge(&keys, &r),
            Judgement::Refused(Refused::BadSignature)
        );
        let input = signing_input(&r.key, r.value.as_deref()).unwrap();
        r.signature = Some(sk.sign_input(&input));
        let c = changed(a.judge(&keys, &r));
        assert_eq!(c.signer.as_deref(), Some("prov-1"));
        // a record naming another device than its key is malformed
        let forged = rec("mtr-2", Some(line("mtr-1", "active", "n")), 2);
        assert_eq!(
            a.judge(&ProvisioningKeys::default(), &forged),
            Judgement::Refused(Refused::Malformed)
        );
    }
}
