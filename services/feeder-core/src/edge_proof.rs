//! Proof that a raw record was produced by an edge: HMAC-SHA256 with an edge key over the
//! record's fields, checked by the stream stage before it trusts the record.
//!
//! Why: the raw topic is the boundary between verified and unverified data, but Kafka
//! authorises by client, not by record. A misconfigured producer, or any client holding
//! the raw topic's write credentials, could otherwise append a forged `RawFrame` that the
//! stream would check and store as if an edge had verified its signature. The edges and
//! the stream share edge keys (a Secret separate from the device registry); an edge signs
//! every record it produces with its active key, and the stream accepts a record only when
//! its MAC verifies under one of the keys it holds (several during a rotation).
//!
//! Why a MAC rather than re-verifying the device signature in the stream: a MAC costs one
//! SHA-256 pass over the record (microseconds for a meter's day of readings), a device
//! signature check an Ed25519 verification (about 50 µs, the edge's largest cost), and
//! the stream would need every device key too. `benches/edge_proof.rs` measures both;
//! `docs/security.md` gives the figures.
//!
//! The MAC input is domain-separated and length-prefixed, so no two different records
//! share an input:
//! `"feeder.raw.v1" 0x00 || u32be(len key_id) key_id || u32be(len edge_id) edge_id ||
//!  i64be(received_at_ms) || u32be(len signed_frame) signed_frame`.
//!
//! Key file (JSON Lines, one key a line; the first line is the key an edge signs with,
//! every line is accepted by the stream):
//! `{"key_id":"edge-2026-12","secret":"<64..128 lower-case hex digits>"}`.

use feeder_proto::pipeline::RawFrame;
use ring::hmac;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::line_error::json_line_error;
use crate::registry::{decode_key_hex, validate_key_id};

/// Domain separation tag of the MAC input (version 1).
const DOMAIN: &[u8] = b"feeder.raw.v1\0";
/// Edge keys are 32 to 64 bytes of secret.
pub const EDGE_KEY_MIN_BYTES: usize = 32;
pub const EDGE_KEY_MAX_BYTES: usize = 64;
/// Length of a MAC (HMAC-SHA256).
pub const EDGE_MAC_LEN: usize = 32;

/// The fields of a raw record that the proof covers.
#[derive(Debug, Clone, Copy)]
pub struct RawFields<'a> {
    pub signed_frame: &'a [u8],
    pub received_at_ms: i64,
    pub edge_id: &'a str,
}

/// One edge key. `Debug` never prints the secret.
#[derive(Clone)]
pub struct EdgeKey {
    key_id: String,
    key: hmac::Key,
}

impl std::fmt::Debug for EdgeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeKey")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl EdgeKey {
    /// A key from its id and secret bytes (32 to 64).
    pub fn new(key_id: &str, secret: &[u8]) -> std::result::Result<Self, String> {
        validate_key_id(key_id)?;
        if !(EDGE_KEY_MIN_BYTES..=EDGE_KEY_MAX_BYTES).contains(&secret.len()) {
            return Err(format!(
                "secret must be {EDGE_KEY_MIN_BYTES} to {EDGE_KEY_MAX_BYTES} bytes, got {}",
                secret.len()
            ));
        }
        Ok(Self {
            key_id: key_id.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// A fresh random key (the demo and `feeder devices edge-key`).
    pub fn generate(key_id: &str) -> std::result::Result<(Self, String), String> {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| "no system randomness".to_string())?;
        let hex = hex::encode(secret);
        Ok((Self::new(key_id, &secret)?, hex))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The MAC of `fields` under this key.
    pub fn sign(&self, fields: RawFields<'_>) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.key);
        feed(&mut ctx, &self.key_id, fields);
        ctx.sign().as_ref().to_vec()
    }

    /// A raw record for `signed_frame`, carrying this key's proof: the one way an edge
    /// (and a test standing in for one) makes a `RawFrame`.
    pub fn raw_frame(
        &self,
        signed_frame: bytes::Bytes,
        received_at_ms: i64,
        edge_id: &str,
    ) -> RawFrame {
        let edge_mac = self.sign(RawFields {
            signed_frame: &signed_frame,
            received_at_ms,
            edge_id,
        });
        RawFrame {
            signed_frame,
            received_at_ms,
            edge_id: edge_id.to_string(),
            edge_key_id: self.key_id.clone(),
            edge_mac: edge_mac.into(),
        }
    }

    fn verify(&self, fields: RawFields<'_>, mac: &[u8]) -> bool {
        let mut ctx = hmac::Context::with_key(&self.key);
        feed(&mut ctx, &self.key_id, fields);
        let tag = ctx.sign();
        // compared in constant time (the length is not secret)
        let tag = tag.as_ref();
        tag.len() == mac.len() && tag.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

fn feed(ctx: &mut hmac::Context, key_id: &str, f: RawFields<'_>) {
    // Lengths fit u32: key ids are short, edge ids and frames are bounded far below 4 GiB
    // by the edge; a longer one still feeds its true length's low bits plus all bytes,
    // and no record that large can be produced to Kafka.
    let len = |n: usize| (n as u32).to_be_bytes();
    ctx.update(DOMAIN);
    ctx.update(&len(key_id.len()));
    ctx.update(key_id.as_bytes());
    ctx.update(&len(f.edge_id.len()));
    ctx.update(f.edge_id.as_bytes());
    ctx.update(&f.received_at_ms.to_be_bytes());
    ctx.update(&len(f.signed_frame.len()));
    ctx.update(f.signed_frame);
}

/// Why a record's proof was refused (the stream's `not_from_edge` detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofRefusal {
    /// The record carries no key id or no MAC.
    Missing,
    /// The key id is not one of the keys held.
    UnknownKey,
    /// The MAC does not verify under the named key.
    BadMac,
}

impl ProofRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            ProofRefusal::Missing => "no edge proof",
            ProofRefusal::UnknownKey => "edge key id not known",
            ProofRefusal::BadMac => "edge proof does not verify",
        }
    }
}

impl std::fmt::Display for ProofRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a stage signs (edge) or demands (stream) the proof on raw records.
///
/// `Off` exists for tests and for an explicit `--insecure-no-edge-proof`: the stages'
/// command line refuses to start without edge keys otherwise.
#[derive(Debug, Clone, Default)]
pub enum EdgeProof {
    /// Records are produced without a proof, and accepted without one.
    #[default]
    Off,
    /// The edge signs with the first key; the stream accepts any of them.
    Keys(std::sync::Arc<EdgeKeys>),
}

impl EdgeProof {
    pub fn keys(keys: EdgeKeys) -> Self {
        EdgeProof::Keys(std::sync::Arc::new(keys))
    }

    /// A raw record for `signed_frame`, with a proof when keys are held.
    pub fn raw_frame(
        &self,
        signed_frame: bytes::Bytes,
        received_at_ms: i64,
        edge_id: &str,
    ) -> RawFrame {
        match self {
            EdgeProof::Keys(k) => k.signing().raw_frame(signed_frame, received_at_ms, edge_id),
            EdgeProof::Off => RawFrame {
                signed_frame,
                received_at_ms,
                edge_id: edge_id.to_string(),
                ..RawFrame::default()
            },
        }
    }

    /// Checks a raw record's proof (`Off`: every record passes).
    pub fn check(&self, raw: &RawFrame) -> std::result::Result<(), ProofRefusal> {
        match self {
            EdgeProof::Keys(k) => k.check_raw(raw),
            EdgeProof::Off => Ok(()),
        }
    }
}

/// The edge keys held: the first signs, all verify.
#[derive(Debug, Clone)]
pub struct EdgeKeys {
    keys: Vec<EdgeKey>,
}

impl EdgeKeys {
    /// Keys in order; the first is the signing key. At least one, ids distinct.
    pub fn new(keys: Vec<EdgeKey>) -> std::result::Result<Self, String> {
        if keys.is_empty() {
            return Err("no edge key".into());
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.key_id == k.key_id) {
                return Err(format!("key_id {} appears twice", k.key_id));
            }
        }
        Ok(Self { keys })
    }

    /// Loads a key file; every malformed line is reported with its number, never with a
    /// value from it.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            file: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Line {
            key_id: String,
            secret: String,
        }
        let mut keys = Vec::new();
        let mut errors = Vec::new();
        let mut last_line = 0;
        for (i, line) in text.lines().enumerate() {
            last_line = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Line>(line)
                .map_err(|e| json_line_error(&e))
                .and_then(|l| {
                    let secret = decode_key_hex("secret", &l.secret)?;
                    EdgeKey::new(&l.key_id, &secret)
                });
            match parsed {
                Ok(k) => keys.push((i + 1, k)),
                Err(reason) => errors.push((i + 1, reason)),
            }
        }
        if errors.is_empty() {
            let lines: Vec<usize> = keys.iter().map(|(n, _)| *n).collect();
            let keys = keys.into_iter().map(|(_, k)| k).collect();
            return Self::new(keys).map_err(|reason| Error::Invalid {
                file: file.to_string(),
                lines: vec![(lines.last().copied().unwrap_or(last_line.max(1)), reason)],
            });
        }
        Err(Error::Invalid {
            file: file.to_string(),
            lines: errors,
        })
    }

    /// The key an edge signs with.
    pub fn signing(&self) -> &EdgeKey {
        // invariant: `new` refuses an empty list
        &self.keys[0]
    }

    /// The key ids held, signing key first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.key_id.as_str())
    }

    /// Checks a record's proof.
    pub fn verify(
        &self,
        key_id: &str,
        mac: &[u8],
        fields: RawFields<'_>,
    ) -> std::result::Result<(), ProofRefusal> {
        if key_id.is_empty() || mac.is_empty() {
            return Err(ProofRefusal::Missing);
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.key_id == key_id)
            .ok_or(ProofRefusal::UnknownKey)?;
        if key.verify(fields, mac) {
            Ok(())
        } else {
            Err(ProofRefusal::BadMac)
        }
    }

    /// Checks the proof a raw record carries.
    pub fn check_raw(&self, raw: &RawFrame) -> std::result::Result<(), ProofRefusal> {
        self.verify(
            &raw.edge_key_id,
            &raw.edge_mac,
            RawFields {
                signed_frame: &raw.signed_frame,
                received_at_ms: raw.received_at_ms,
                edge_id: &raw.edge_id,
            },
        )
    }

    /// One key-file line for a key id and hex secret (what `EdgeKey::generate` returns).
    pub fn file_line(key_id: &str, secret_hex: &str) -> String {
        serde_json::json!({ "key_id": key_id, "secret": secret_hex }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const S2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn fields(frame: &[u8]) -> RawFields<'_> {
        RawFields {
            signed_frame: frame,
            received_at_ms: 1_700_000_000_000,
            edge_id: "edge-0",
        }
    }

    fn keys(text: &str) -> EdgeKeys {
        EdgeKeys::parse("edge-keys.jsonl", text).unwrap()
    }

    #[test]
    fn signed_records_verify_and_any_change_is_refused() {
        let ks = keys(&format!(
            "{}\n{}\n",
            EdgeKeys::file_line("new", S1),
            EdgeKeys::file_line("old", S2)
        ));
        let k = ks.signing();
        assert_eq!(k.key_id(), "new");
        let mac = k.sign(fields(b"frame"));
        assert_eq!(mac.len(), EDGE_MAC_LEN);
        assert_eq!(ks.verify("new", &mac, fields(b"frame")), Ok(()));
        assert_eq!(
            ks.verify("new", &mac, fields(b"frame!")),
            Err(ProofRefusal::BadMac)
        );
        let mut moved = fields(b"frame");
        moved.received_at_ms += 1;
        assert_eq!(ks.verify("new", &mac, moved), Err(ProofRefusal::BadMac));
        let mut other_edge = fields(b"frame");
        other_edge.edge_id = "edge-1";
        assert_eq!(
            ks.verify("new", &mac, other_edge),
            Err(ProofRefusal::BadMac)
        );
        // the key id is bound too: the same MAC claimed under the other key fails
        assert_eq!(
            ks.verify("old", &mac, fields(b"frame")),
            Err(ProofRefusal::BadMac)
        );
        assert_eq!(
            ks.verify("gone", &mac, fields(b"frame")),
            Err(ProofRefusal::UnknownKey)
        );
        assert_eq!(
            ks.verify("", &mac, fields(b"frame")),
            Err(ProofRefusal::Missing)
        );
        assert_eq!(
            ks.verify("new", &[], fields(b"frame")),
            Err(ProofRefusal::Missing)
        );
        assert_eq!(
            ks.verify("new", &mac[..31], fields(b"frame")),
            Err(ProofRefusal::BadMac)
        );
    }

    #[test]
    fn rotation_accepts_records_of_the_previous_key() {
        let old_only = keys(&EdgeKeys::file_line("old", S2));
        let mac = old_only.signing().sign(fields(b"f"));
        let rotated = keys(&format!(
            "{}\n{}",
            EdgeKeys::file_line("new", S1),
            EdgeKeys::file_line("old", S2)
        ));
        assert_eq!(rotated.verify("old", &mac, fields(b"f")), Ok(()));
        assert_eq!(
            rotated.key_ids().collect::<Vec<_>>(),
            ["new", "old"],
            "the first line signs"
        );
    }

    #[test]
    fn the_input_is_unambiguous() {
        // moving bytes between edge_id and key_id or the frame changes the MAC
        let a = EdgeKey::new("k", &[7; 32]).unwrap();
        let f1 = RawFields {
            signed_frame: b"bc",
            received_at_ms: 0,
            edge_id: "a",
        };
        let f2 = RawFields {
            signed_frame: b"c",
            received_at_ms: 0,
            edge_id: "ab",
        };
        assert_ne!(a.sign(f1), a.sign(f2));
    }

    #[test]
    fn malformed_files_name_the_line_and_never_the_secret() {
        let cases = [
            (format!("{{\"key_id\":\"k\",\"secret\":{S1}}}"), "line 1"),
            (
                "{\"key_id\":\"k\",\"secret\":\"abcd\"}".to_string(),
                "32 to 64",
            ),
            (
                format!("{}\n{{\"key_id\":\"k\"}}", EdgeKeys::file_line("a", S1)),
                "line 2",
            ),
            (
                format!(
                    "{}\n{}",
                    EdgeKeys::file_line("a", S1),
                    EdgeKeys::file_line("a", S2)
                ),
                "appears twice",
            ),
            (String::new(), "no edge key"),
            (
                format!("{{\"key_id\":\"k\",\"secret\":\"{}\"}}", "AB".repeat(32)),
                "lower-case",
            ),
        ];
        for (text, want) in cases {
            let err = EdgeKeys::parse("f", &text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(!err.contains(S1) && !err.contains(S2), "{err}");
            assert!(!err.contains(&S1[..16]), "{err}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let ks = keys(&EdgeKeys::file_line("k", S1));
        let shown = format!("{ks:?}");
        assert!(
            shown.contains("redacted") && !shown.contains("1111"),
            "{shown}"
        );
    }

    #[test]
    fn raw_frames_carry_a_proof_that_checks() {
        let ks = keys(&EdgeKeys::file_line("k", S1));
        let mut raw = ks.signing().raw_frame(b"sf".to_vec().into(), 5, "edge-3");
        assert_eq!(ks.check_raw(&raw), Ok(()));
        raw.signed_frame = b"sg".to_vec().into();
        assert_eq!(ks.check_raw(&raw), Err(ProofRefusal::BadMac));
    }

    #[test]
    fn proof_off_signs_nothing_and_checks_nothing() {
        let off = EdgeProof::Off;
        let raw = off.raw_frame(b"sf".to_vec().into(), 5, "e");
        assert!(raw.edge_mac.is_empty() && raw.edge_key_id.is_empty());
        assert_eq!(off.check(&raw), Ok(()));
        let on = EdgeProof::keys(keys(&EdgeKeys::file_line("k", S1)));
        assert_eq!(on.check(&raw), Err(ProofRefusal::Missing));
        assert_eq!(
            on.check(&on.raw_frame(b"sf".to_vec().into(), 5, "e")),
            Ok(())
        );
    }

    #[test]
    fn generated_keys_round_trip_through_the_file() {
        let (k, hex) = EdgeKey::generate("g").unwrap();
        let ks = keys(&EdgeKeys::file_line("g", &hex));
        let mac = k.sign(fields(b"x"));
        assert_eq!(ks.verify("g", &mac, fields(b"x")), Ok(()));
    }
}
