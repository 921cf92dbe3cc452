//! The device contract's signing input and the two signature algorithms.
//!
//! ```text
//! "FEEDER-FRAME-V1" 0x00
//! u16be(len(device_id)) device_id
//! u16be(len(key_id))    key_id
//! u64be(seq)
//! u32be(len(payload))   payload
//! ```
//!
//! Ed25519 signs that input (RFC 8032); HMAC keys send HMAC-SHA256(secret, input). Which
//! one applies is the registry's choice for `(device_id, key_id)`: a frame cannot pick a
//! weaker algorithm.
//!
//! Ed25519 signatures are accepted under Feeder's rule (`crate::ed25519`: strict
//! encodings, cofactored equation), the same for one frame ([`VerifyingKey::verify`], what
//! `feeder verify` uses) and for many ([`verify_many`], batched, what the edge uses).

use ring::hmac;
use ring::signature::{Ed25519KeyPair, KeyPair};

const DOMAIN: &[u8] = b"FEEDER-FRAME-V1\0";
pub const ED25519_SIG_LEN: usize = 64;
pub const HMAC_SIG_LEN: usize = 32;
pub const ED25519_KEY_LEN: usize = 32;
pub const HMAC_MIN_SECRET: usize = 16;
pub const HMAC_MAX_SECRET: usize = 64;

/// Signature algorithm, as named in registry and key files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Alg {
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// A meter that signs in OCMF: the signature is inside the payload (`crate::ocmf`).
    #[serde(rename = "ocmf")]
    Ocmf,
}

impl Alg {
    /// The registry's name of the algorithm (its `alg` field).
    pub fn name(self) -> &'static str {
        match self {
            Alg::Ed25519 => "ed25519",
            Alg::HmacSha256 => "hmac-sha256",
            Alg::Ocmf => "ocmf",
        }
    }

    pub fn signature_len(self) -> usize {
        match self {
            Alg::Ed25519 => ED25519_SIG_LEN,
            Alg::HmacSha256 => HMAC_SIG_LEN,
            // the frame's signature field is empty: the OCMF string carries its own
            Alg::Ocmf => 0,
        }
    }
}

/// Length of the signing input for these fields, without building it.
pub fn signing_input_len(device_id: &str, key_id: &str, payload_len: usize) -> usize {
    DOMAIN.len() + 2 + device_id.len() + 2 + key_id.len() + 8 + 4 + payload_len
}

/// Appends the signing input to `out` (reusable buffer on hot paths).
///
/// Lengths beyond the u16/u32 fields cannot occur for valid frames (device and key ids are
/// at most 64 bytes; payloads are capped far below 4 GiB); they are truncated here and the
/// resulting input can never match a real signature.
pub fn write_signing_input(
    out: &mut Vec<u8>,
    device_id: &str,
    key_id: &str,
    seq: u64,
    payload: &[u8],
) {
    out.reserve(signing_input_len(device_id, key_id, payload.len()));
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&(device_id.len() as u16).to_be_bytes());
    out.extend_from_slice(device_id.as_bytes());
    out.extend_from_slice(&(key_id.len() as u16).to_be_bytes());
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

pub fn signing_input(device_id: &str, key_id: &str, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_signing_input(&mut v, device_id, key_id, seq, payload);
    v
}

/// A registered public key or shared secret. `Debug` never prints key material.
#[derive(Clone)]
pub enum VerifyingKey {
    Ed25519([u8; ED25519_KEY_LEN]),
    Hmac(hmac::Key),
    /// A P-256 meter key (and serial) for OCMF strings.
    Ocmf(Box<crate::ocmf::OcmfKey>),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyingKey::Ed25519(_) => "VerifyingKey::Ed25519(..)",
            VerifyingKey::Hmac(_) => "VerifyingKey::Hmac(..)",
            VerifyingKey::Ocmf(_) => "VerifyingKey::Ocmf(..)",
        })
    }
}

/// Why a signature did not verify. Both map to code 16; the split is for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature has the wrong length for the registered algorithm")]
    WrongLength,
    #[error("signature does not verify")]
    Mismatch,
    /// A native format's signature names an algorithm or encoding not accepted, or does
    /// not decode.
    #[error("signature encoding not accepted")]
    Encoding,
}

impl VerifyingKey {
    pub fn ed25519(public_key: [u8; ED25519_KEY_LEN]) -> Self {
        VerifyingKey::Ed25519(public_key)
    }

    pub fn hmac(secret: &[u8]) -> Self {
        VerifyingKey::Hmac(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    pub fn alg(&self) -> Alg {
        match self {
            VerifyingKey::Ed25519(_) => Alg::Ed25519,
            VerifyingKey::Hmac(_) => Alg::HmacSha256,
            VerifyingKey::Ocmf(_) => Alg::Ocmf,
        }
    }

    /// The checks of a native format's payload that come before its signature (shape,
    /// seq and serial bindings: code 3). Nothing to check for Feeder's own frames.
    pub fn check_shape(&self, seq: u64, payload: &[u8]) -> Result<(), crate::ocmf::ShapeError> {
        match self {
            VerifyingKey::Ocmf(k) => crate::ocmf::check_shape(k, seq, payload).map(|_| ()),
            VerifyingKey::Ed25519(_) | VerifyingKey::Hmac(_) => Ok(()),
        }
    }

    /// Verifies `signature` over an already built signing input. For a native format
    /// (OCMF) the input is the payload itself and `sig` is empty: the payload carries
    /// its signature.
    pub fn verify_input(&self, input: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        if sig.len() != self.alg().signature_len() {
            return Err(VerifyError::WrongLength);
        }
        match self {
            VerifyingKey::Ed25519(pk) => crate::ed25519::verify(pk, input, sig)
                .then_some(())
                .ok_or(VerifyError::Mismatch),
            // constant-time comparison inside ring
            VerifyingKey::Hmac(key) => {
                hmac::verify(key, input, sig).map_err(|_| VerifyError::Mismatch)
            }
            VerifyingKey::Ocmf(key) => key.verify(input).map_err(|e| match e {
                crate::ocmf::SigError::Mismatch => VerifyError::Mismatch,
                crate::ocmf::SigError::Unsupported | crate::ocmf::SigError::Encoding => {
                    VerifyError::Encoding
                }
            }),
        }
    }

    /// Builds the signing input in `scratch` and verifies.
    pub fn verify(
        &self,
        scratch: &mut Vec<u8>,
        device_id: &str,
        key_id: &str,
        seq: u64,
        payload: &[u8],
        sig: &[u8],
    ) -> Result<(), VerifyError> {
        if let VerifyingKey::Ocmf(_) = self {
            // the meter signed the payload, not Feeder's signing input
            return self.verify_input(payload, sig);
        }
        scratch.clear();
        write_signing_input(scratch, device_id, key_id, seq, payload);
        self.verify_input(scratch, sig)
    }
}

/// The fields of a frame a signature covers, and the signature.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub device_id: &'a str,
    pub key_id: &'a str,
    pub seq: u64,
    pub payload: &'a [u8],
    pub signature: &'a [u8],
}

/// Verifies many frames, each under its key; `out[i]` answers `items[i]` exactly as
/// [`VerifyingKey::verify`] would. Ed25519 signatures are verified in batches
/// (`crate::ed25519::verify_prepared`), HMAC tags one by one.
pub fn verify_many(items: &[(&VerifyingKey, Signed<'_>)]) -> Vec<Result<(), VerifyError>> {
    let mut out: Vec<Result<(), VerifyError>> = Vec::with_capacity(items.len());
    let mut scratch = Vec::with_capacity(1024);
    // Ed25519 signatures that passed the encoding rules, with their place in `out`
    let mut prepared: Vec<Option<crate::ed25519::Prepared>> = Vec::new();
    let mut prepared_at: Vec<usize> = Vec::new();
    for (key, f) in items {
        if f.signature.len() != key.alg().signature_len() {
            out.push(Err(VerifyError::WrongLength));
            continue;
        }
        if let VerifyingKey::Ocmf(_) = key {
            out.push(key.verify_input(f.payload, f.signature));
            continue;
        }
        scratch.clear();
        write_signing_input(&mut scratch, f.device_id, f.key_id, f.seq, f.payload);
        match key {
            VerifyingKey::Ed25519(pk) => {
                prepared_at.push(out.len());
                prepared.push(crate::ed25519::Prepared::new(pk, &scratch, f.signature));
                // answered below, once the batch is verified
                out.push(Err(VerifyError::Mismatch));
            }
            VerifyingKey::Hmac(_) => out.push(key.verify_input(&scratch, f.signature)),
            // answered above, without the signing input
            VerifyingKey::Ocmf(_) => {}
        }
    }
    for (ok, i) in crate::ed25519::verify_prepared(prepared)
        .into_iter()
        .zip(prepared_at)
    {
        out[i] = ok.then_some(()).ok_or(VerifyError::Mismatch);
    }
    out
}

/// The device half of a key, for simulators and test tools.
pub enum SigningKey {
    Ed25519(Box<Ed25519KeyPair>),
    Hmac(hmac::Key),
    /// An OCMF meter: signs its payload JSON itself (`crate::ocmf::OcmfSigner`), with the
    /// serial it writes into every payload.
    Ocmf(Box<crate::ocmf::OcmfSigner>, Box<str>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Ed25519(_) => "SigningKey::Ed25519(..)",
            SigningKey::Hmac(_) => "SigningKey::Hmac(..)",
            SigningKey::Ocmf(..) => "SigningKey::Ocmf(..)",
        })
    }
}

impl SigningKey {
    /// From a 32-byte Ed25519 private seed.
    pub fn ed25519_from_seed(seed: &[u8]) -> Option<Self> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .ok()
            .map(|kp| SigningKey::Ed25519(Box::new(kp)))
    }

    pub fn hmac(secret: &[u8]) -> Self {
        SigningKey::Hmac(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The Ed25519 public key (None for HMAC keys, whose secret is shared).
    pub fn ed25519_public(&self) -> Option<[u8; ED25519_KEY_LEN]> {
        match self {
            SigningKey::Ed25519(kp) => kp.public_key().as_ref().try_into().ok(),
            SigningKey::Hmac(_) | SigningKey::Ocmf(..) => None,
        }
    }

    pub fn alg(&self) -> Alg {
        match self {
            SigningKey::Ed25519(_) => Alg::Ed25519,
            SigningKey::Hmac(_) => Alg::HmacSha256,
            SigningKey::Ocmf(..) => Alg::Ocmf,
        }
    }

    /// The frame's `signature` field. Empty for OCMF, whose payload is already signed
    /// (build it with `crate::ocmf::OcmfSigner::sign`).
    pub fn sign_input(&self, input: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::Ed25519(kp) => kp.sign(input).as_ref().to_vec(),
            SigningKey::Hmac(k) => hmac::sign(k, input).as_ref().to_vec(),
            SigningKey::Ocmf(..) => Vec::new(),
        }
    }

    pub fn sign(&self, device_id: &str, key_id: &str, seq: u64, payload: &[u8]) -> Vec<u8> {
        self.sign_input(&signing_input(device_id, key_id, seq, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The device contract's test vector (shared/protocol.md, "Test vector").
    const INPUT: &str = "4645454445522d4652414d452d563100000a6d74722d30303030303100026b310000000000000007000000020801";
    const ED_PUB: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    const ED_SIG: &str = "08ca64975c3947c61615bbe51ae965fa8253219e5d2bf4f9111e96a4cfae809fac4c002b047810a7e38a7d9aaa3e091ae980bbc3ef62e1cd152a0979022f2200";
    const HMAC_SIG: &str = "fbecafb0a1adc2052b3c978a71527ab686b397a23f492f2c0671c0ccf44d0d99";

    fn key_0_to_31() -> Vec<u8> {
        (0u8..32).collect()
    }

    #[test]
    fn signing_input_matches_vector() {
        let input = signing_input("mtr-000001", "k1", 7, &[0x08, 0x01]);
        assert_eq!(hex::encode(&input), INPUT);
        assert_eq!(signing_input_len("mtr-000001", "k1", 2), input.len());
    }

    #[test]
    fn ed25519_matches_vector() {
        let sk = SigningKey::ed25519_from_seed(&key_0_to_31()).unwrap();
        assert_eq!(hex::encode(sk.ed25519_public().unwrap()), ED_PUB);
        let sig = sk.sign("mtr-000001", "k1", 7, &[0x08, 0x01]);
        assert_eq!(hex::encode(&sig), ED_SIG);

        let vk = VerifyingKey::ed25519(hex::decode(ED_PUB).unwrap().try_into().unwrap());
        let mut scratch = Vec::new();
        assert_eq!(
            vk.verify(&mut scratch, "mtr-000001", "k1", 7, &[8, 1], &sig),
            Ok(())
        );
    }

    #[test]
    fn hmac_matches_vector() {
        let sk = SigningKey::hmac(&key_0_to_31());
        let sig = sk.sign("mtr-000001", "k1", 7, &[0x08, 0x01]);
        assert_eq!(hex::encode(&sig), HMAC_SIG);
        let vk = VerifyingKey::hmac(&key_0_to_31());
        let mut scratch = Vec::new();
        assert_eq!(
            vk.verify(&mut scratch, "mtr-000001", "k1", 7, &[8, 1], &sig),
            Ok(())
        );
    }

    #[test]
    fn verify_rejects_tampering_and_wrong_lengths() {
        let seed = key_0_to_31();
        let ed = SigningKey::ed25519_from_seed(&seed).unwrap();
        let ed_vk = VerifyingKey::ed25519(ed.ed25519_public().unwrap());
        let hm_vk = VerifyingKey::hmac(&seed);
        let good_ed = ed.sign("d", "k", 1, b"p");
        let good_hm = SigningKey::hmac(&seed).sign("d", "k", 1, b"p");
        let mut s = Vec::new();
        type Case<'a> = (
            &'a VerifyingKey,
            &'a str,
            &'a str,
            u64,
            &'a [u8],
            Vec<u8>,
            VerifyError,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                &ed_vk,
                "d",
                "k",
                2,
                b"p",
                good_ed.clone(),
                VerifyError::Mismatch,
            ),
            (
                &ed_vk,
                "e",
                "k",
                1,
                b"p",
                good_ed.clone(),
                VerifyError::Mismatch,
            ),
            (
                &ed_vk,
                "d",
                "j",
                1,
                b"p",
                good_ed.clone(),
                VerifyError::Mismatch,
            ),
            (
                &ed_vk,
                "d",
                "k",
                1,
                b"q",
                good_ed.clone(),
                VerifyError::Mismatch,
            ),
            (
                &ed_vk,
                "d",
                "k",
                1,
                b"p",
                good_ed[..63].to_vec(),
                VerifyError::WrongLength,
            ),
            // an HMAC tag offered to an Ed25519 key: the registry's algorithm wins
            (
                &ed_vk,
                "d",
                "k",
                1,
                b"p",
                good_hm.clone(),
                VerifyError::WrongLength,
            ),
            (
                &hm_vk,
                "d",
                "k",
                1,
                b"p",
                good_ed.clone(),
                VerifyError::WrongLength,
            ),
            (
                &hm_vk,
                "d",
                "k",
                9,
                b"p",
                good_hm.clone(),
                VerifyError::Mismatch,
            ),
            (
                &hm_vk,
                "d",
                "k",
                1,
                b"p",
                vec![0u8; 32],
                VerifyError::Mismatch,
            ),
        ];
        for (i, (vk, d, k, seq, p, sig, want)) in cases.into_iter().enumerate() {
            assert_eq!(vk.verify(&mut s, d, k, seq, p, &sig), Err(want), "case {i}");
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // "ab"+"c" and "a"+"bc" must not produce the same input.
        assert_ne!(
            signing_input("ab", "c", 1, b""),
            signing_input("a", "bc", 1, b"")
        );
    }

    #[test]
    fn debug_never_prints_key_material() {
        let vk = VerifyingKey::hmac(b"super-secret-0123456789");
        assert!(!format!("{vk:?}").contains("super"));
        let sk = SigningKey::ed25519_from_seed(&key_0_to_31()).unwrap();
        assert!(!format!("{sk:?}").contains("03a1"));
    }
}
