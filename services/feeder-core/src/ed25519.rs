//! Feeder's Ed25519 acceptance rule, one implementation for single and batched
//! verification, so the edge (which verifies in batches) and `feeder verify` (which
//! re-verifies stored frames one at a time) accept exactly the same signatures.
//!
//! # The rule
//!
//! A signature `(R, S)` by public key `A` over message `M` is accepted when all hold:
//!
//! 1. `S` is canonical: `S < L` (the group order). `S + L` is a second encoding of the
//!    same signature (malleability); ring refuses it too.
//! 2. `A` and `R` are canonical point encodings (`y < p`, and no sign bit on `x = 0`) that
//!    decompress to curve points.
//! 3. Neither `A` nor `R` has small order (one of the 8 torsion points). A small-order `A`
//!    is a key under which `R = [S]B` "signs" every message; the registry refuses such a
//!    key at load ([`check_public_key`]) and verification refuses it again, for keys made
//!    any other way. A small-order `R` never comes from an honest signer.
//! 4. The **cofactored** equation `[8]([S]B - [k]A - R) = 0`, `k = SHA-512(R || A || M)
//!    mod L` over the bytes as sent (RFC 8032 section 5.1.7 names this check).
//!
//! # Why cofactored, and why not ring or `ed25519-dalek`'s `verify_batch`
//!
//! Write `D = [S]B - [k]A - R`. The cofactorless check (ring, OpenSSL) accepts iff
//! `D = 0`; the cofactored one iff `D` is one of the 8 torsion points. They differ only
//! when `D` is a nonzero torsion point, i.e. when `R` or `A` has a small-order component
//! (a *mixed-order* point). Rules 2-3 do not remove those: a mixed-order point has
//! large order and a canonical encoding. Only the key holder can make them (it needs
//! `S = r + k·a` for its own `a`), but it can, so the edge and `feeder verify` must not
//! disagree on them.
//!
//! A batch check sums the residuals with random weights `z_i`: `Σ z_i·D_i = 0`. Without
//! the cofactor, a residual that is a torsion point `T` vanishes iff `z_i·T = 0`, which
//! happens for 1 in 2 to 8 choices of `z_i`: a cofactorless batch accepts such a frame
//! by chance, and a batch holding it may accept while the frame alone is refused. That
//! is what `ed25519-dalek` 2.2's `verify_batch` does: its final test is
//! `is_identity()` on the weighted sum, without multiplying by the cofactor (read in its
//! source, `src/batch.rs`), and it does not refuse small-order keys. So the batch here is
//! written on `curve25519-dalek` and multiplies by 8: torsion vanishes for every `z_i`,
//! and what remains are prime-order residuals, which cancel with probability about
//! `2^-127` per batch. The cofactored batch therefore accepts exactly when every
//! signature passes the cofactored single check (up to that probability), and single
//! verification uses the same equation. Making ring's cofactorless rule agree instead
//! would need `R` proven torsion-free per signature (a scalar multiplication by `L`,
//! about half a verification), which would undo the batch's gain.
//!
//! The price: a signature whose `R` has a torsion component, made on purpose by the key
//! holder, is accepted here and refused by a cofactorless verifier (ring, PyCA). It
//! proves possession of the key all the same; no honest signer produces one (honest
//! `R = [r]B` is torsion-free). Honest signatures and the contract's test vector are
//! accepted by both.
//!
//! The batch weights are derived from every input (a Fiat-Shamir hash of each `k`, `S`,
//! `R` and `A` of the batch), so verification is a pure function of its input and a
//! forger cannot choose inputs after seeing the weights.
//!
//! A failed batch is re-verified one signature at a time, so every signature gets its
//! own answer (the edge answers each frame 0 or 16).

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

/// Signatures verified together at most. Batches of ~64 verify in about half the time
/// per signature of single verification; larger ones gain little more and make a failed
/// batch (one bad frame) re-verify more good ones singly.
pub const BATCH: usize = 64;

/// Why a registered public key is refused (registry load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejected {
    #[error("public_key is not a canonical point encoding")]
    NonCanonical,
    #[error("public_key is not a point on the curve")]
    NotAPoint,
    #[error("public_key has small order (a weak key: it would accept forged signatures)")]
    SmallOrder,
}

/// `true` if `b` is the canonical encoding of its `y` and sign: `y < p = 2^255 - 19`,
/// and the sign bit is clear when `x = 0` (`y = 1` or `y = p - 1`).
pub fn is_canonical_encoding(b: &[u8; 32]) -> bool {
    let sign = b[31] & 0x80 != 0;
    let mut y = *b;
    y[31] &= 0x7f;
    // y >= p  <=>  y in [2^255 - 19, 2^255 - 1]: top byte 0x7f, bytes 1..31 0xff, low >= 0xed
    let y_ge_p = y[31] == 0x7f && y[1..31].iter().all(|&x| x == 0xff) && y[0] >= 0xed;
    if y_ge_p {
        return false;
    }
    let y_is_one = y[0] == 1 && y[1..].iter().all(|&x| x == 0);
    let y_is_minus_one = y[0] == 0xec && y[1..31].iter().all(|&x| x == 0xff) && y[31] == 0x7f;
    !(sign && (y_is_one || y_is_minus_one))
}

/// A point of `bytes` under rules 2 and 3: canonical, on the curve, not of small order.
fn strict_point(bytes: &[u8; 32]) -> Result<EdwardsPoint, KeyRejected> {
    if !is_canonical_encoding(bytes) {
        return Err(KeyRejected::NonCanonical);
    }
    let p = CompressedEdwardsY(*bytes)
        .decompress()
        .ok_or(KeyRejected::NotAPoint)?;
    if p.is_small_order() {
        return Err(KeyRejected::SmallOrder);
    }
    Ok(p)
}

/// Registry load: refuses a public key no signature should be accepted under.
pub fn check_public_key(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<(), KeyRejected> {
    strict_point(bytes).map(|_| ())
}

/// One signature, decoded and checked against rules 1-3, with its `k`; the equation
/// (rule 4) is still to be checked, alone ([`Prepared::holds`]) or in a batch.
#[derive(Clone)]
pub struct Prepared {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
    /// `S || R || A` as sent, for the batch weights.
    transcript: [u8; 96],
}

impl Prepared {
    /// `None` when a rule other than the equation already refuses the signature.
    pub fn new(public: &[u8; PUBLIC_KEY_LEN], msg: &[u8], sig: &[u8]) -> Option<Self> {
        let sig: &[u8; SIGNATURE_LEN] = sig.try_into().ok()?;
        let (r_bytes, s_bytes) = sig.split_at(32);
        let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes.try_into().ok()?))?;
        let a = strict_point(public).ok()?;
        let r = strict_point(&r_bytes).ok()?;
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(public);
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let mut transcript = [0u8; 96];
        transcript[..32].copy_from_slice(s_bytes);
        transcript[32..64].copy_from_slice(&r_bytes);
        transcript[64..].copy_from_slice(public);
        Some(Self {
            a,
            r,
            s,
            k,
            transcript,
        })
    }

    /// The cofactored equation for this signature alone.
    pub fn holds(&self) -> bool {
        let sb_minus_ka =
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &-self.a, &self.s);
        (sb_minus_ka - self.r).mul_by_cofactor().is_identity()
    }
}

/// Weights `z_i` for a batch: 128-bit, odd (never zero), from a hash of every input.
fn weights(batch: &[Prepared]) -> Vec<Scalar> {
    let mut seed = Sha512::new();
    seed.update(b"FEEDER-ED25519-BATCH-V1\0");
    for p in batch {
        seed.update(p.transcript);
        seed.update(p.k.as_bytes());
    }
    let seed = seed.finalize();
    let mut out = Vec::with_capacity(batch.len());
    for block in 0u32.. {
        if out.len() == batch.len() {
            break;
        }
        let bytes = Sha512::new()
            .chain_update(seed)
            .chain_update(block.to_be_bytes())
            .finalize();
        for z in bytes.chunks_exact(16).take(batch.len() - out.len()) {
            let mut w = [0u8; 16];
            w.copy_from_slice(z);
            out.push(Scalar::from(u128::from_le_bytes(w) | 1));
        }
    }
    out
}

/// The cofactored batch equation `[8]([-Σ z_i·S_i]B + Σ z_i·R_i + Σ (z_i·k_i)A_i) = 0`:
/// `true` iff (up to ~2^-127) every signature passes [`Prepared::holds`].
pub fn batch_holds(batch: &[Prepared]) -> bool {
    if batch.is_empty() {
        return true;
    }
    let z = weights(batch);
    let b_coeff: Scalar = batch.iter().zip(&z).map(|(p, z)| z * p.s).sum();
    let scalars = std::iter::once(-b_coeff)
        .chain(z.iter().copied())
        .chain(batch.iter().zip(&z).map(|(p, z)| z * p.k));
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(batch.iter().map(|p| p.r))
        .chain(batch.iter().map(|p| p.a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// Each signature's own answer: batches of up to [`BATCH`], and a failed batch one by
/// one. `None` entries (refused by rules 1-3) are `false`.
pub fn verify_prepared(items: Vec<Option<Prepared>>) -> Vec<bool> {
    let mut out = vec![false; items.len()];
    let mut batch: Vec<Prepared> = Vec::with_capacity(BATCH.min(items.len()));
    let mut index: Vec<usize> = Vec::with_capacity(BATCH.min(items.len()));
    let mut flush = |batch: &mut Vec<Prepared>, index: &mut Vec<usize>| {
        if batch_holds(batch) {
            index.iter().for_each(|&i| out[i] = true);
        } else {
            for (p, &i) in batch.iter().zip(index.iter()) {
                out[i] = p.holds();
            }
        }
        batch.clear();
        index.clear();
    };
    for (i, item) in items.into_iter().enumerate() {
        if let Some(p) = item {
            batch.push(p);
            index.push(i);
            if batch.len() == BATCH {
                flush(&mut batch, &mut index);
            }
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut index);
    }
    out
}

/// Single verification under the rule.
pub fn verify(public: &[u8; PUBLIC_KEY_LEN], msg: &[u8], sig: &[u8]) -> bool {
    Prepared::new(public, msg, sig).is_some_and(|p| p.holds())
}

/// The canonical encodings of the 8 small-order points (for tests and tools).
pub fn small_order_encodings() -> [[u8; 32]; 8] {
    EIGHT_TORSION.map(|p| p.compress().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_by_roundtrip(b: &[u8; 32]) -> Option<bool> {
        CompressedEdwardsY(*b)
            .decompress()
            .map(|p| p.compress().to_bytes() == *b)
    }

    #[test]
    fn canonical_encoding_check_matches_decompress_compress() {
        let mut cases: Vec<[u8; 32]> = Vec::new();
        // y near p and near 0/1, with and without the sign bit
        for low in 0u8..=0xff {
            let mut hi = [0xffu8; 32];
            hi[0] = low;
            hi[31] = 0x7f;
            let mut lo = [0u8; 32];
            lo[0] = low;
            for sign in [0u8, 0x80] {
                let (mut a, mut b) = (hi, lo);
                a[31] |= sign;
                b[31] |= sign;
                cases.push(a);
                cases.push(b);
            }
        }
        cases.extend(small_order_encodings());
        let mut decoded = 0;
        for b in &cases {
            if let Some(canonical) = canonical_by_roundtrip(b) {
                decoded += 1;
                assert_eq!(is_canonical_encoding(b), canonical, "{}", hex_of(b));
            }
        }
        assert!(decoded > 100, "only {decoded} cases were points");
        // the non-canonical forms that do decode exist in the table
        assert!(
            cases
                .iter()
                .any(|b| canonical_by_roundtrip(b) == Some(false))
        );
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn weak_and_malformed_keys_are_refused() {
        for enc in small_order_encodings() {
            assert_eq!(check_public_key(&enc), Err(KeyRejected::SmallOrder));
        }
        let mut y_is_p = [0xffu8; 32];
        y_is_p[0] = 0xed;
        y_is_p[31] = 0x7f;
        assert_eq!(check_public_key(&y_is_p), Err(KeyRejected::NonCanonical));
        // y = 2 is not the y of a curve point
        let mut two = [0u8; 32];
        two[0] = 2;
        assert_eq!(check_public_key(&two), Err(KeyRejected::NotAPoint));
        let b = ED25519_BASEPOINT_POINT.compress().to_bytes();
        assert_eq!(check_public_key(&b), Ok(()));
    }

    #[test]
    fn weights_are_odd_distinct_and_deterministic() {
        let a = ED25519_BASEPOINT_POINT;
        let p = |i: u8| Prepared {
            a,
            r: a,
            s: Scalar::from(i),
            k: Scalar::ONE,
            transcript: [i; 96],
        };
        let batch: Vec<_> = (0..9).map(p).collect();
        let z = weights(&batch);
        assert_eq!(z.len(), 9);
        assert_eq!(z, weights(&batch));
        for (i, w) in z.iter().enumerate() {
            assert_eq!(w.as_bytes()[0] & 1, 1);
            assert_eq!(w.as_bytes()[16..], [0u8; 16]);
            assert!(z[..i].iter().all(|o| o != w));
        }
        let mut other = batch.clone();
        other[8].transcript[0] ^= 1;
        assert_ne!(weights(&other), z);
    }
}
