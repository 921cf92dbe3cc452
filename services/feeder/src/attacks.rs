//! The hostile traffic the demo and the end-to-end tests send next to the fleet: forged,
//! tampered, replayed and stale frames, an unknown device, a revoked key and a revoked
//! device. Each case records the code the edge must answer and what must (not) be stored.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use feeder_core::keyfile::{DeviceKey, load_key_file};
use feeder_core::{DeviceKind, SigningKey};
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_proto::v1::{PushRequest, SignedFrame};
use feeder_sim::attacks;
use feeder_sim::fleet::SimDevice;
use ring::rand::{SecureRandom, SystemRandom};

/// A device id the registry never holds.
pub const UNKNOWN_DEVICE: &str = "mtr-unknown-1";
/// A device whose only key is revoked.
pub const REVOKED_DEVICE: &str = "mtr-revoked-1";
/// Seq used for the attacker's fresh frames, far beyond what a short run reaches.
const FRESH_SEQ: u64 = 1_000_000;
/// The attack devices' simulated days start this far back, so that each frame's
/// readings (a meter's whole day) end before the receive time, like a real meter's, and
/// stay inside the stream's date horizon.
const ATTACK_DAYS_BACK_MS: i64 = 3 * 86_400_000;

/// Keys the attacks sign with that the registry marks revoked.
pub struct RevokedKeys {
    /// A retired key of a real device (`key_id` "k0").
    pub old_key: DeviceKey,
    /// The only key of [`REVOKED_DEVICE`].
    pub device_key: DeviceKey,
}

fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(seed)
}

/// Appends a revoked key for `victim` and a revoked device to the registry file.
pub fn provision_revocations(registry: &Path, victim: &str) -> anyhow::Result<RevokedKeys> {
    let mut lines = String::new();
    let mut make = |device_id: &str, key_id: &str| -> anyhow::Result<DeviceKey> {
        let seed = random_seed()?;
        let key = SigningKey::ed25519_from_seed(&seed).context("ed25519 seed")?;
        let public = key.ed25519_public().context("ed25519 public key")?;
        lines.push_str(&serde_json::to_string(&serde_json::json!({
            "device_id": device_id, "key_id": key_id, "alg": "ed25519",
            "public_key": hex::encode(public), "kind": "meter", "status": "revoked",
            "labels": {},
        }))?);
        lines.push('\n');
        Ok(DeviceKey {
            device_id: device_id.into(),
            key_id: key_id.into(),
            kind: DeviceKind::Meter,
            labels: Default::default(),
            key,
        })
    };
    let old_key = make(victim, "k0")?;
    let device_key = make(REVOKED_DEVICE, "k1")?;
    // The victim's labels must match its other lines: copy them.
    let text = std::fs::read_to_string(registry)?;
    let victim_labels = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["device_id"] == victim)
        .map(|v| v["labels"].clone())
        .context("victim device not in registry")?;
    let lines = lines.replacen("\"labels\":{}", &format!("\"labels\":{victim_labels}"), 1);
    let mut f = std::fs::OpenOptions::new().append(true).open(registry)?;
    f.write_all(lines.as_bytes())?;
    f.sync_all()?;
    Ok(RevokedKeys {
        old_key,
        device_key,
    })
}

/// One hostile frame and what must come of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttackCase {
    pub case: &'static str,
    pub device_id: String,
    pub seq: u64,
    pub expected_code: i32,
    pub code: i32,
    pub message: String,
    /// Readings the frame carries when it must be stored once.
    pub stored_readings: Option<usize>,
    /// When the frame reaches the stream stage and must be quarantined.
    pub quarantine_reason: Option<&'static str>,
}

impl AttackCase {
    pub fn ok(&self) -> bool {
        self.code == self.expected_code
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// (case, frame, expected code, readings stored once, quarantine reason)
type Planned = (
    &'static str,
    SignedFrame,
    i32,
    Option<usize>,
    Option<&'static str>,
);

/// Sends every attack to the edge at `url`, one call each, in an order that makes the
/// outcomes deterministic. `secrets` is the fleet's key file; its first meter is the victim.
pub async fn run(
    url: &str,
    secrets: &Path,
    revoked: RevokedKeys,
) -> anyhow::Result<Vec<AttackCase>> {
    let keys = load_key_file(secrets)?;
    let victim_key = keys
        .into_iter()
        .find(|k| k.kind == DeviceKind::Meter)
        .context("no meter in the key file")?;
    let now = now_ms();
    let start = now - ATTACK_DAYS_BACK_MS;
    let mut dev = SimDevice::from_key(victim_key, start);
    let stale = dev.next_frame(now); // seq 1 again: far behind the fresh frames below
    dev.skip_to_seq(FRESH_SEQ);
    let fresh = dev.next_frame(now);
    let to_tamper = dev.next_frame(now);
    let forged = attacks::forged(&dev, dev.next_seq(), now);
    let unknown = attacks::unknown_device(UNKNOWN_DEVICE, now);
    let mut old_key_dev = SimDevice::from_key(revoked.old_key, start);
    old_key_dev.skip_to_seq(2 * FRESH_SEQ);
    let with_revoked_key = old_key_dev.next_frame(now).frame;
    let revoked_device = SimDevice::from_key(revoked.device_key, start)
        .next_frame(now)
        .frame;

    // a charger signing in OCMF, when the fleet has one: its string with a reading changed
    let ocmf_key = load_key_file(secrets)?
        .into_iter()
        .find(|k| k.key.alg() == feeder_core::Alg::Ocmf);
    let tampered_ocmf = ocmf_key.map(|k| {
        let mut charger = SimDevice::from_key(k, start);
        charger.skip_to_seq(FRESH_SEQ);
        attacks::tampered_ocmf(&charger.next_frame(now).frame)
    });

    let mut plan: Vec<Planned> = vec![
        ("fresh", fresh.frame.clone(), 0, Some(fresh.readings), None),
        (
            "replay",
            attacks::replay(&fresh.frame),
            0,
            None,
            Some("duplicate"),
        ),
        (
            "stale_replay",
            stale.frame.clone(),
            0,
            None,
            Some("too_old"),
        ),
        ("forged", forged, 16, None, None),
        (
            "tampered",
            attacks::tampered(&to_tamper.frame),
            16,
            None,
            None,
        ),
        ("unknown_device", unknown, 16, None, None),
        ("revoked_key", with_revoked_key, 16, None, None),
        ("revoked_device", revoked_device, 7, None, None),
    ];
    if let Some(frame) = tampered_ocmf {
        plan.push(("tampered_ocmf", frame, 16, None, None));
    }
    let mut client = IngestClient::connect(url.to_string()).await?;
    let mut out = Vec::new();
    for (case, frame, expected_code, stored_readings, quarantine_reason) in plan {
        let (device_id, seq) = (frame.device_id.clone(), frame.seq);
        let resp = client
            .push(PushRequest {
                frames: vec![frame],
            })
            .await
            .with_context(|| format!("attack {case}"))?
            .into_inner();
        let ack = resp.acks.into_iter().next().context("no ack")?;
        out.push(AttackCase {
            case,
            device_id,
            seq,
            expected_code,
            code: ack.code,
            message: ack.message,
            stored_readings,
            quarantine_reason,
        });
    }
    Ok(out)
}

/// A record written straight to the raw topic by a producer that is not an edge, and the
/// quarantine reason the stream must give it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RawForgery {
    pub case: &'static str,
    /// Empty for bytes that are no record at all.
    pub device_id: String,
    pub seq: u64,
    pub quarantine_reason: &'static str,
}

/// Writes to `raw_topic` what a misconfigured or compromised producer with the raw
/// topic's credentials could: a frame with a valid device signature (the second meter of
/// `secrets`, at a fresh seq) but no edge proof, and bytes that decode as no record.
/// Neither may be stored as readings.
pub async fn run_raw_topic(
    kafka: &feeder_kafka::KafkaConfig,
    raw_topic: &str,
    secrets: &Path,
) -> anyhow::Result<Vec<RawForgery>> {
    use feeder_proto::pipeline::RawFrame;
    use prost::Message as _;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let meter = load_key_file(secrets)?
        .into_iter()
        .filter(|k| k.kind == DeviceKind::Meter)
        .nth(1)
        .context("the key file has fewer than two meters")?;
    let now = now_ms();
    let mut dev = SimDevice::from_key(meter, now - ATTACK_DAYS_BACK_MS);
    dev.skip_to_seq(3 * FRESH_SEQ);
    let signed = dev.next_frame(now).frame;
    let (device_id, seq) = (signed.device_id.clone(), signed.seq);
    let unproven = RawFrame {
        signed_frame: signed.encode_to_vec().into(),
        received_at_ms: now,
        edge_id: "edge-0".into(),
        ..RawFrame::default()
    }
    .encode_to_vec();
    let garbage = vec![0xff, 0xff, 0x07, 0x01];
    let producer: FutureProducer = kafka
        .producer("raw-forger", 1_000, 10_000)
        .create()
        .context("a producer for the raw topic")?;
    for (key, value) in [(device_id.as_str(), &unproven), ("junk", &garbage)] {
        producer
            .send(
                FutureRecord::to(raw_topic).key(key).payload(value),
                std::time::Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .context("writing to the raw topic")?;
    }
    Ok(vec![
        RawForgery {
            case: "raw_without_edge_proof",
            device_id,
            seq,
            quarantine_reason: "not_from_edge",
        },
        RawForgery {
            case: "raw_garbage",
            device_id: String::new(),
            seq: 0,
            quarantine_reason: "malformed_record",
        },
    ])
}
