//! The output size guard: no output of the stage can be refused for its size and stop
//! the stage.
//!
//! # Why
//! A checked record is the device's frame plus its flags, so one validly signed frame
//! (100,000 empty readings, each flagged `duplicate_reading`) can make a record larger
//! than the broker takes. A refused output that failed the stage would meet the same raw
//! offset after a restart: a crash loop that stops every device of the partition.
//!
//! # Two lines of defence
//! 1. **Before producing** ([`encode`]): the outputs of one raw record (its checked or
//!    quarantine record and its anomalies) are encoded and measured. If any is over
//!    `max_output_record_bytes` (the producer's `message.max.bytes` is set to the same
//!    number, so the client never refuses what passes), the record's only output is one
//!    quarantine entry `output_too_large`: the raw bytes cut to [`RAW_CAP`] and a detail
//!    naming the output, its size and the limit. Its anomalies are not raised: a
//!    quarantined record has none, which keeps recovery's bookkeeping exact (a quarantine
//!    record for a source offset means that offset is done).
//! 2. **At the ack** ([`settle`]): a broker with a smaller limit (a topic's
//!    `max.message.bytes`) refuses a whole produce batch, innocent records included. So
//!    a refused record is first sent again alone; refused again, it is replaced: a
//!    checked or quarantine record by a quarantine entry `output_too_large` with at most
//!    [`REFUSED_RAW_CAP`] raw bytes (none if that is refused too), an anomaly by the same
//!    anomaly with its detail cut. Only when the smallest replacement is refused does the
//!    stage stop: a broker that takes no record of a few hundred bytes is misconfigured.
//!
//! Either way the frame ends up checked or quarantined, never lost silently.
//!
//! A frame quarantined this way had passed the replay check, so its seq is in the
//! in-memory window (and the next changelog snapshot) but not in the checked log: a copy
//! of it sent again is quarantined as `duplicate` (or, after a rebuild from the checked
//! log alone, as `output_too_large` again). Either way it is never stored as readings.

use feeder_kafka::fence::Mark;
use feeder_proto::pipeline::{Anomaly, CheckedFrame, QuarantinedFrame, RawFrame};
use prost::Message as _;
use rdkafka::Message as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer};

use super::produce::{Output, Record, delivered, enqueue};
use crate::admit::Reason;
use crate::checks::Outcome;
pub use crate::limits::{
    MIN_MAX_OUTPUT_RECORD_BYTES, RAW_CAP, RECORD_OVERHEAD, REFUSED_RAW_CAP, TooLarge,
};

/// The quarantine reason of a record whose output would be too large.
pub const OUTPUT_TOO_LARGE: &str = Reason::OutputTooLarge.as_str();
use crate::{Error, Result};

/// Longest device id, edge id or anomaly detail a replacement keeps.
const FIELD_CAP: usize = 256;

/// Which guarded output `output` is (tallies, state and fleet records are not guarded).
fn too_large_of(output: Output) -> Option<TooLarge> {
    match output {
        Output::Checked => Some(TooLarge::Checked),
        Output::Quarantine => Some(TooLarge::Quarantine),
        Output::Anomalies => Some(TooLarge::Anomaly),
        Output::Tally | Output::State | Output::Finding | Output::Progress => None,
    }
}

/// The encoded outputs of one raw record.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Its checked or quarantine record; none for a replay only counted
    /// ([`Outcome::Absorbed`]).
    pub primary: Option<Record>,
    pub anomalies: Vec<Record>,
    /// Set when the guard replaced the outputs by an `output_too_large` entry: which
    /// output was over the limit.
    pub too_large: Option<TooLarge>,
}

/// Whether a record fits under `max` (the producer's `message.max.bytes`).
fn fits(key: &str, bytes: &[u8], max: usize) -> bool {
    key.len()
        .saturating_add(bytes.len())
        .saturating_add(RECORD_OVERHEAD)
        <= max
}

/// Encodes what raw record `raw_value` (at raw offset `offset`) became, and the
/// anomalies it raised; when any of them is over `max` bytes, one `output_too_large`
/// quarantine entry instead (see the module docs). Pure.
pub fn encode(
    outcome: &Outcome,
    anomalies: &[Anomaly],
    raw_value: &[u8],
    offset: i64,
    max: usize,
) -> Encoded {
    let primary = match outcome {
        Outcome::Checked(c) => Some(Record {
            output: Output::Checked,
            key: c.device_id.clone(),
            bytes: c.encode_to_vec(),
        }),
        Outcome::Quarantined(q) => Some(Record {
            output: Output::Quarantine,
            key: q.device_id.clone(),
            bytes: q.encode_to_vec(),
        }),
        Outcome::Absorbed { .. } => None,
    };
    let anomalies: Vec<Record> = anomalies
        .iter()
        .map(|a| Record {
            output: Output::Anomalies,
            key: anomaly_key(a).to_string(),
            bytes: a.encode_to_vec(),
        })
        .collect();
    let over = primary
        .iter()
        .chain(&anomalies)
        .find(|r| !fits(&r.key, &r.bytes, max));
    let Some(over) = over else {
        return Encoded {
            primary,
            anomalies,
            too_large: None,
        };
    };
    // invariant: `over` is the primary or an anomaly, never a tally
    let what = too_large_of(over.output).unwrap_or(TooLarge::Checked);
    let detail = format!(
        "{} record of {} bytes over the {max}-byte output limit{}",
        what.label(),
        over.bytes.len(),
        match anomalies.len() {
            0 => String::new(),
            n => format!("; {n} anomalies not raised"),
        }
    );
    let q = replacement(Base::of(outcome, raw_value), RAW_CAP, detail, offset);
    Encoded {
        primary: Some(Record {
            output: Output::Quarantine,
            key: q.device_id.clone(),
            bytes: q.encode_to_vec(),
        }),
        anomalies: Vec::new(),
        too_large: Some(what),
    }
}

/// The anomalies topic's key: the device, or the cohort of a fleet finding.
pub fn anomaly_key(a: &Anomaly) -> &str {
    if a.device_id.is_empty() {
        &a.cohort
    } else {
        &a.device_id
    }
}

/// What a replacement quarantine entry keeps of the record it replaces.
#[derive(Clone)]
struct Base {
    received_at_ms: i64,
    device_id: String,
    seq: u64,
    edge_id: String,
    /// The SignedFrame bytes as received (or the raw record's, when it did not decode).
    raw: bytes::Bytes,
}

impl Base {
    fn of(outcome: &Outcome, raw_value: &[u8]) -> Self {
        match outcome {
            Outcome::Checked(c) => Self::of_checked(c, raw_value),
            Outcome::Quarantined(q) => Self::of_quarantined(q),
            // no output of its own to be over the limit
            Outcome::Absorbed { device_id, .. } => Self {
                received_at_ms: 0,
                device_id: device_id.clone(),
                seq: 0,
                edge_id: String::new(),
                raw: bytes::Bytes::new(),
            },
        }
    }

    fn of_checked(c: &CheckedFrame, raw_value: &[u8]) -> Self {
        let raw = RawFrame::decode(raw_value)
            .map(|r| r.signed_frame)
            .unwrap_or_else(|_| bytes::Bytes::copy_from_slice(raw_value));
        Self {
            received_at_ms: c.received_at_ms,
            device_id: c.device_id.clone(),
            seq: c.seq,
            edge_id: c.edge_id.clone(),
            raw,
        }
    }

    fn of_quarantined(q: &QuarantinedFrame) -> Self {
        Self {
            received_at_ms: q.received_at_ms,
            device_id: q.device_id.clone(),
            seq: q.seq,
            edge_id: q.edge_id.clone(),
            raw: q.raw.clone(),
        }
    }
}

/// An `output_too_large` entry for raw offset `offset`: raw bytes cut to `raw_cap`,
/// identifiers cut to [`FIELD_CAP`], so its size is bounded whatever the input.
fn replacement(base: Base, raw_cap: usize, detail: String, offset: i64) -> QuarantinedFrame {
    let kept = base.raw.len().min(raw_cap);
    let detail = format!(
        "{}; raw bytes cut to {kept} of {}",
        cut(&detail, FIELD_CAP),
        base.raw.len()
    );
    QuarantinedFrame {
        received_at_ms: base.received_at_ms,
        device_id: cut(&base.device_id, FIELD_CAP),
        seq: base.seq,
        reason: OUTPUT_TOO_LARGE.into(),
        detail,
        raw: base.raw.slice(..kept),
        source_offset: offset,
        edge_id: cut(&base.edge_id, FIELD_CAP),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Whether a delivery error is the broker (or client) refusing a record for its size.
pub fn is_too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
        )
    )
}

/// Where an output finally landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub output: Output,
    /// Its offset in that output's partition.
    pub offset: i64,
    /// Set when the broker refused the record and it was replaced.
    pub replaced: Option<TooLarge>,
}

/// Waits for the ack of the output produced for raw offset `offset`; a record the
/// broker refused for its size is sent again alone, then replaced (module docs).
/// `raw_value` is the raw record, for the replacement's raw bytes.
pub async fn settle(
    producer: &FutureProducer,
    quarantine_topic: &str,
    offset: i64,
    output: Output,
    fut: DeliveryFuture,
    raw_value: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<Landed> {
    let refused = match fut.await {
        Ok(Ok(d)) => {
            return Ok(Landed {
                output,
                offset: d.offset,
                replaced: None,
            });
        }
        Ok(Err((e, msg))) if is_too_large(&e) && too_large_of(output).is_some() => msg,
        Ok(Err((e, _))) => {
            return Err(Error::Delivery {
                offset,
                source: e.into(),
            });
        }
        Err(_) => {
            return Err(Error::Delivery {
                offset,
                source: "producer dropped".into(),
            });
        }
    };
    // a whole batch is refused for one record: alone, an innocent record goes through
    let topic = refused.topic().to_string();
    let partition = refused.partition();
    let key = String::from_utf8_lossy(refused.key().unwrap_or_default()).into_owned();
    let payload = refused.payload().unwrap_or_default();
    // its replacements are the same owner's outputs
    let owner = Mark::of(refused.headers(), -1);
    match try_send(producer, &topic, partition, &key, payload, offset, owner).await? {
        Some(at) => {
            return Ok(Landed {
                output,
                offset: at,
                replaced: None,
            });
        }
        None => {
            tracing::warn!(
                topic,
                partition,
                offset,
                bytes = payload.len(),
                "output refused by the broker as too large: replaced"
            );
        }
    }
    let what = too_large_of(output).unwrap_or(TooLarge::Checked);
    let (landed_in, candidates) =
        replacements(&refused, output, quarantine_topic, offset, raw_value)?;
    for (topic, key, bytes) in candidates {
        if let Some(at) = try_send(producer, &topic, partition, &key, &bytes, offset, owner).await?
        {
            return Ok(Landed {
                output: landed_in,
                offset: at,
                replaced: Some(what),
            });
        }
    }
    Err(Error::Delivery {
        offset,
        source: format!(
            "{}: even its smallest replacement was refused as too large",
            what.label()
        )
        .into(),
    })
}

/// Smaller stand-ins for a refused record, largest first: the output they go to, and
/// (topic, key, bytes) each.
type Candidates = (Output, Vec<(String, String, Vec<u8>)>);

fn replacements(
    refused: &OwnedMessage,
    output: Output,
    quarantine_topic: &str,
    offset: i64,
    raw_value: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<Candidates> {
    let undecodable = |e: prost::DecodeError| Error::Delivery {
        offset,
        source: format!("refused output does not decode: {e}").into(),
    };
    let payload = refused.payload().unwrap_or_default();
    if let Output::Anomalies = output {
        let mut a = Anomaly::decode(payload).map_err(undecodable)?;
        a.detail = format!("{} [cut: {OUTPUT_TOO_LARGE}]", cut(&a.detail, FIELD_CAP));
        a.device_id = cut(&a.device_id, FIELD_CAP);
        a.cohort = cut(&a.cohort, FIELD_CAP);
        let key = anomaly_key(&a).to_string();
        return Ok((
            Output::Anomalies,
            vec![(refused.topic().to_string(), key, a.encode_to_vec())],
        ));
    }
    let (base, what) = match output {
        Output::Checked => {
            let c = CheckedFrame::decode(payload).map_err(undecodable)?;
            let raw = raw_value().unwrap_or_default();
            (Base::of_checked(&c, &raw), TooLarge::Checked)
        }
        _ => {
            let q = QuarantinedFrame::decode(payload).map_err(undecodable)?;
            (Base::of_quarantined(&q), TooLarge::Quarantine)
        }
    };
    let detail = format!(
        "{} record of {} bytes refused by the broker as too large",
        what.label(),
        payload.len()
    );
    let mut out = Vec::new();
    for cap in [REFUSED_RAW_CAP, 0] {
        let q = replacement(base.clone(), cap, detail.clone(), offset);
        out.push((
            quarantine_topic.to_string(),
            q.device_id.clone(),
            q.encode_to_vec(),
        ));
    }
    Ok((Output::Quarantine, out))
}

/// Sends one record and waits for its ack: `Some(offset)`, or `None` when the client or
/// the broker refused it for its size.
async fn try_send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    bytes: &[u8],
    offset: i64,
    owner: Mark,
) -> Result<Option<i64>> {
    let fut = match enqueue(producer, topic, partition, key, bytes, owner.headers()).await {
        Ok(f) => f,
        Err(e) if is_too_large(&e) => return Ok(None),
        Err(e) => {
            return Err(Error::Delivery {
                offset,
                source: e.into(),
            });
        }
    };
    match fut.await {
        Ok(Err((e, _))) if is_too_large(&e) => Ok(None),
        other => delivered(offset, other).map(|d| Some(d.offset)),
    }
}

#[cfg(test)]
mod tests {
    use feeder_proto::pipeline::RowFlags;

    use super::*;

    const MAX: usize = MIN_MAX_OUTPUT_RECORD_BYTES;

    fn raw_value(signed_frame: &[u8]) -> Vec<u8> {
        RawFrame {
            signed_frame: signed_frame.to_vec().into(),
            received_at_ms: 7,
            edge_id: "e".into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// A checked frame with `rows` flagged readings (about 30 bytes of flags each).
    fn checked(device_id: &str, rows: u32) -> Outcome {
        Outcome::Checked(CheckedFrame {
            device_id: device_id.into(),
            seq: 3,
            received_at_ms: 7,
            edge_id: "e".into(),
            reading_flags: (0..rows)
                .map(|index| RowFlags {
                    index,
                    flags: vec!["duplicate_reading".into()],
                })
                .collect(),
            source_offset: 41,
            ..Default::default()
        })
    }

    fn anomaly(detail_bytes: usize) -> Anomaly {
        Anomaly {
            device_id: "m".into(),
            rule: "cover_opened".into(),
            detail: "x".repeat(detail_bytes),
            source_offset: 41,
            ..Default::default()
        }
    }

    fn quarantined(out: &Encoded) -> QuarantinedFrame {
        assert_eq!(out.primary.as_ref().unwrap().output, Output::Quarantine);
        QuarantinedFrame::decode(out.primary.as_ref().unwrap().bytes.as_slice()).unwrap()
    }

    #[test]
    fn outputs_under_the_limit_are_produced_as_decided() {
        let out = encode(
            &checked("m", 10),
            &[anomaly(10)],
            &raw_value(b"sf"),
            41,
            MAX,
        );
        assert_eq!(out.too_large, None);
        assert_eq!(out.primary.as_ref().unwrap().output, Output::Checked);
        assert_eq!(out.primary.as_ref().unwrap().key, "m");
        assert_eq!(out.anomalies.len(), 1);
        assert_eq!(out.anomalies[0].output, Output::Anomalies);
    }

    #[test]
    fn a_checked_record_over_the_limit_becomes_one_bounded_quarantine_entry() {
        let signed = vec![5u8; 3 * RAW_CAP];
        let out = encode(
            &checked("m", 10_000),
            &[anomaly(10)],
            &raw_value(&signed),
            41,
            MAX,
        );
        assert_eq!(out.too_large, Some(TooLarge::Checked));
        assert!(
            out.anomalies.is_empty(),
            "a quarantined frame raises nothing"
        );
        let q = quarantined(&out);
        assert_eq!(q.reason, OUTPUT_TOO_LARGE);
        assert_eq!((q.device_id.as_str(), q.seq, q.source_offset), ("m", 3, 41));
        assert_eq!((q.received_at_ms, q.edge_id.as_str()), (7, "e"));
        assert_eq!(
            &q.raw[..],
            &signed[..RAW_CAP],
            "the signed frame's first bytes"
        );
        assert!(q.detail.starts_with("checked record of "), "{}", q.detail);
        assert!(
            q.detail
                .contains(&format!("over the {MAX}-byte output limit"))
        );
        assert!(q.detail.contains("1 anomalies not raised"), "{}", q.detail);
        assert!(
            q.detail
                .contains(&format!("cut to {RAW_CAP} of {}", signed.len()))
        );
        assert!(fits(
            &out.primary.as_ref().unwrap().key,
            &out.primary.as_ref().unwrap().bytes,
            MAX
        ));
    }

    #[test]
    fn an_anomaly_or_a_quarantine_record_over_the_limit_is_replaced_too() {
        let out = encode(
            &checked("m", 1),
            &[anomaly(MAX)],
            &raw_value(b"sf"),
            41,
            MAX,
        );
        assert_eq!(out.too_large, Some(TooLarge::Anomaly));
        assert!(quarantined(&out).detail.starts_with("anomaly record of "));
        let dup = Outcome::Quarantined(QuarantinedFrame {
            device_id: "m".into(),
            reason: "duplicate".into(),
            raw: vec![1; MAX].into(),
            ..Default::default()
        });
        let out = encode(&dup, &[], &[], 41, MAX);
        assert_eq!(out.too_large, Some(TooLarge::Quarantine));
        assert_eq!(quarantined(&out).raw.len(), RAW_CAP);
    }

    #[test]
    fn the_replacement_is_bounded_whatever_the_identifiers() {
        // a forged raw record: a megabyte-long device id in a too-large frame
        let id = "é".repeat(500_000);
        let out = encode(&checked(&id, 0), &[], &raw_value(b"sf"), 41, MAX);
        assert_eq!(out.too_large, Some(TooLarge::Checked));
        let q = quarantined(&out);
        assert!(q.device_id.len() <= FIELD_CAP && q.device_id.starts_with('é'));
        assert!(
            out.primary.as_ref().unwrap().bytes.len() < 2 * 1024,
            "{}",
            out.primary.as_ref().unwrap().bytes.len()
        );
    }

    #[test]
    fn size_refusals_are_told_from_other_delivery_errors() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::MessageBatchTooLarge,
        ] {
            assert!(is_too_large(&KafkaError::MessageProduction(code)));
        }
        assert!(!is_too_large(&KafkaError::MessageProduction(
            RDKafkaErrorCode::QueueFull
        )));
        assert!(!is_too_large(&KafkaError::MessageProduction(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
    }
}
