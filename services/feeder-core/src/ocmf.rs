//! OCMF (Open Charge Metering Format, S.A.F.E. e.V.): meters that sign their readings
//! themselves, in their own format (device contract v1.1, "Meters that sign in their own
//! format: OCMF").
//!
//! A frame of such a meter carries the OCMF string exactly as the meter produced it,
//! `OCMF|<payload JSON>|<signature JSON>`, as its payload, with an empty signature. The
//! string is checked in two steps, cheap before expensive, like every other frame:
//!
//! 1. [`check_shape`] (no cryptography): three `|`-separated sections, the payload JSON
//!    parses, every reading converts exactly ([`readings`]), the pagination `PG` number
//!    is the frame's seq, the serial (`MS`, else `GS`) is the registered one. Refusal:
//!    code 3.
//! 2. [`OcmfKey::verify`]: ECDSA P-256 / SHA-256 over exactly the bytes between the first
//!    and the second `|` (never re-serialised JSON), with the signature JSON's `SA`, `SE`
//!    and `SM`. Refusal: code 16.
//!
//! Readings become [`feeder_proto::v1::Reading`]s, so the stream's rules and the writer's
//! rows treat them like any other meter's: `RV` is converted as an exact decimal (no
//! floating point: `1234.5670` kWh is 12345670 × 10^-1 Wh), the time status, transaction
//! and status letters are kept as row flags ([`Converted::flags`]).
//!
//! A next native format (DLMS/COSEM general signing, SML) is one more module like this one
//! and one more [`crate::VerifyingKey`] variant: the edge, `feeder verify`, the stream and
//! the writer reach formats only through `VerifyingKey::check_shape`, `VerifyingKey::verify`
//! and [`crate::payload::decode`].

use std::borrow::Cow;

use feeder_proto::v1::{Frame, Reading, Unit};
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The first bytes of every OCMF string. A protobuf `Frame` never starts with `O` (field
/// 9, wire type 7 does not exist), so payloads are told apart without ambiguity.
pub const PREFIX: &[u8] = b"OCMF|";
/// The DER SubjectPublicKeyInfo prefix of an uncompressed P-256 public key.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// An uncompressed P-256 point: 0x04 ‖ x ‖ y.
pub const POINT_LEN: usize = 65;
/// The one signature algorithm the contract accepts.
pub const SA_P256: &str = "ECDSA-secp256r1-SHA256";
/// Longest serial accepted in a registry line.
pub const MAX_SERIAL_LEN: usize = 64;
/// Most readings converted from one string (far more than any charging session).
pub const MAX_READINGS: usize = 1024;

/// Whether `payload` is an OCMF string (by its prefix).
pub fn is_ocmf(payload: &[u8]) -> bool {
    payload.starts_with(PREFIX)
}

/// A registered OCMF meter key: its P-256 public point and the serial its payloads must
/// carry, if the registry names one.
#[derive(Clone, PartialEq, Eq)]
pub struct OcmfKey {
    point: [u8; POINT_LEN],
    serial: Option<Box<str>>,
}

impl std::fmt::Debug for OcmfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcmfKey")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl OcmfKey {
    /// From a DER SubjectPublicKeyInfo of a P-256 key (uncompressed point).
    pub fn from_spki_der(der: &[u8], serial: Option<&str>) -> Result<Self, String> {
        let point = der
            .strip_prefix(&SPKI_P256_PREFIX[..])
            .filter(|p| p.len() == POINT_LEN && p[0] == 0x04)
            .ok_or("public_key must be the DER SubjectPublicKeyInfo of an uncompressed P-256 key (91 bytes, 3059301306072a8648ce3d0201...)")?;
        if let Some(s) = serial
            && (s.is_empty() || s.len() > MAX_SERIAL_LEN)
        {
            return Err(format!("serial must be 1..{MAX_SERIAL_LEN} bytes"));
        }
        Ok(Self {
            point: point.try_into().map_err(|_| "point length")?,
            serial: serial.map(Into::into),
        })
    }

    /// From the registry's hex (upper or lower case).
    pub fn from_spki_hex(hex_der: &str, serial: Option<&str>) -> Result<Self, String> {
        let der = hex::decode(hex_der).map_err(|_| "public_key is not valid hex".to_string())?;
        Self::from_spki_der(&der, serial)
    }

    /// The DER SubjectPublicKeyInfo of this key.
    pub fn spki_der(&self) -> Vec<u8> {
        [&SPKI_P256_PREFIX[..], &self.point[..]].concat()
    }

    pub fn serial(&self) -> Option<&str> {
        self.serial.as_deref()
    }

    /// Verifies the signature of an OCMF string (whose shape [`check_shape`] accepted).
    pub fn verify(&self, ocmf: &[u8]) -> Result<(), SigError> {
        let (payload, sig_json) = split(ocmf).map_err(|_| SigError::Encoding)?;
        let der = signature_der(sig_json)?;
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(payload, &der)
            .map_err(|_| SigError::Mismatch)
    }
}

/// Why an OCMF string's signature was not accepted (code 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// `SA`, `SE` or `SM` names something other than the contract's values.
    #[error("OCMF signature algorithm or encoding not accepted")]
    Unsupported,
    /// The signature JSON or its `SD` does not decode.
    #[error("OCMF signature does not decode")]
    Encoding,
    #[error("signature does not verify")]
    Mismatch,
}

/// Why an OCMF string was refused before its signature (code 3). `reason` is a bounded
/// metric label; the message never echoes the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    pub reason: &'static str,
    pub message: String,
}

impl ShapeError {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The payload and signature sections of `OCMF|<payload>|<signature>`.
pub fn split(ocmf: &[u8]) -> Result<(&[u8], &[u8]), ShapeError> {
    let not_three = || {
        ShapeError::new(
            "ocmf_shape",
            "not an OCMF string of three |-separated sections",
        )
    };
    let rest = ocmf.strip_prefix(PREFIX).ok_or_else(not_three)?;
    let bar = rest.iter().position(|&b| b == b'|').ok_or_else(not_three)?;
    let (payload, sig) = (&rest[..bar], &rest[bar + 1..]);
    if sig.contains(&b'|') || payload.is_empty() || sig.is_empty() {
        return Err(not_three());
    }
    Ok((payload, sig))
}

#[derive(Deserialize)]
struct SignatureJson<'a> {
    #[serde(rename = "SA", borrow, default)]
    sa: Option<Cow<'a, str>>,
    #[serde(rename = "SE", borrow, default)]
    se: Option<Cow<'a, str>>,
    #[serde(rename = "SM", borrow, default)]
    sm: Option<Cow<'a, str>>,
    #[serde(rename = "SD", borrow)]
    sd: Cow<'a, str>,
}

/// The DER signature the signature JSON carries, under the contract's `SA`/`SE`/`SM`.
fn signature_der(sig_json: &[u8]) -> Result<Vec<u8>, SigError> {
    use base64::Engine as _;
    let s: SignatureJson<'_> = serde_json::from_slice(sig_json).map_err(|_| SigError::Encoding)?;
    if s.sa.as_deref().unwrap_or(SA_P256) != SA_P256
        || s.sm.as_deref().unwrap_or("application/x-der") != "application/x-der"
    {
        return Err(SigError::Unsupported);
    }
    match s.se.as_deref().unwrap_or("hex") {
        "hex" => hex::decode(&*s.sd).map_err(|_| SigError::Encoding),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(&*s.sd)
            .map_err(|_| SigError::Encoding),
        _ => Err(SigError::Unsupported),
    }
}

#[derive(Deserialize)]
struct PayloadJson<'a> {
    #[serde(rename = "PG", borrow)]
    pg: Cow<'a, str>,
    #[serde(rename = "MS", borrow, default)]
    ms: Option<Cow<'a, str>>,
    #[serde(rename = "GS", borrow, default)]
    gs: Option<Cow<'a, str>>,
    #[serde(rename = "MF", borrow, default)]
    mf: Option<Cow<'a, str>>,
    #[serde(rename = "GV", borrow, default)]
    gv: Option<Cow<'a, str>>,
    #[serde(rename = "RD", borrow, default)]
    rd: Vec<ReadingJson<'a>>,
}

#[derive(Deserialize)]
struct ReadingJson<'a> {
    #[serde(rename = "TM", borrow)]
    tm: Cow<'a, str>,
    #[serde(rename = "TX", borrow, default)]
    tx: Option<Cow<'a, str>>,
    #[serde(rename = "RV", borrow)]
    rv: &'a RawValue,
    #[serde(rename = "RI", borrow, default)]
    ri: Option<Cow<'a, str>>,
    #[serde(rename = "RU", borrow)]
    ru: Cow<'a, str>,
    #[serde(rename = "ST", borrow, default)]
    st: Option<Cow<'a, str>>,
}

/// An OCMF string's content as Feeder's own types.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// `PG`'s letter (`T` transaction, `F` fiscal) and number.
    pub page: (char, u64),
    /// `MS`, else `GS`.
    pub serial: Option<String>,
    /// The readings; `firmware` is `MF` else `GV`, `sent_at_ms` 0: an OCMF string has no
    /// send time (a charger uploads a session when it can), so no clock-skew check.
    pub frame: Frame,
    /// Per reading: `ocmf_time_<TM status>`, `ocmf_tx_<TX>`, `ocmf_st_<ST>` and, for a unit
    /// outside the datasets' list, `ocmf_unit_<unit in lower case>`.
    pub flags: Vec<Vec<String>>,
}

/// Parses and converts the payload section of an OCMF string (no signature check).
pub fn convert(ocmf: &[u8]) -> Result<Converted, ShapeError> {
    let (payload, _) = split(ocmf)?;
    let p: PayloadJson<'_> = serde_json::from_slice(payload)
        // the error says where and what was expected, never the value found: bounded, and
        // a device's string is not echoed into acks and logs
        .map_err(|e| {
            let why = crate::line_error::json_line_error(&e);
            ShapeError::new("ocmf_payload", format!("OCMF payload JSON: {why}"))
        })?;
    let page = parse_page(&p.pg)?;
    if p.rd.len() > MAX_READINGS {
        return Err(ShapeError::new(
            "ocmf_payload",
            format!("more than {MAX_READINGS} readings"),
        ));
    }
    let mut frame = Frame {
        firmware: p.mf.or(p.gv).map(Cow::into_owned).unwrap_or_default(),
        ..Default::default()
    };
    let mut flags = Vec::with_capacity(p.rd.len());
    for (i, r) in p.rd.iter().enumerate() {
        let bad = |what: String| ShapeError::new("ocmf_reading", format!("RD[{i}]: {what}"));
        let (ts_ms, time_status) = parse_time(&r.tm).map_err(bad)?;
        let (value, scaler) = parse_decimal(r.rv.get()).map_err(bad)?;
        let (unit, unit_exp, unit_flag) = parse_unit(&r.ru).map_err(bad)?;
        let scaler = scaler
            .checked_add(unit_exp)
            .ok_or_else(|| bad("RV exponent out of range".into()))?;
        let mut f = vec![format!("ocmf_time_{time_status}")];
        for (name, letter) in [("tx", &r.tx), ("st", &r.st)] {
            if let Some(l) = letter {
                f.push(format!("ocmf_{name}_{}", letter_of(l).map_err(bad)?));
            }
        }
        f.extend(unit_flag);
        frame.readings.push(Reading {
            ts_ms,
            interval_s: 0,
            obis: r.ri.as_deref().unwrap_or_default().to_string(),
            value,
            scaler,
            unit: unit as i32,
            status: 0,
        });
        flags.push(f);
    }
    Ok(Converted {
        page,
        serial: p.ms.or(p.gs).map(Cow::into_owned),
        frame,
        flags,
    })
}

/// The checks before the signature: [`convert`], `PG` = `seq`, the registered serial.
pub fn check_shape(key: &OcmfKey, seq: u64, ocmf: &[u8]) -> Result<Converted, ShapeError> {
    let c = convert(ocmf)?;
    if c.page.1 != seq {
        return Err(ShapeError::new(
            "ocmf_seq_mismatch",
            format!("seq {seq} is not the OCMF pagination number {}", c.page.1),
        ));
    }
    if let Some(want) = key.serial()
        && c.serial.as_deref() != Some(want)
    {
        return Err(ShapeError::new(
            "ocmf_serial_mismatch",
            "the OCMF serial is not the registered one",
        ));
    }
    Ok(c)
}

/// `"T7"` → `('T', 7)`: a letter `T` or `F` and a number ≥ 1 without sign or leading zero.
fn parse_page(pg: &str) -> Result<(char, u64), ShapeError> {
    let bad = || ShapeError::new("ocmf_pagination", "PG must be T or F and a number ≥ 1");
    let mut chars = pg.chars();
    let letter = chars
        .next()
        .filter(|c| matches!(c, 'T' | 'F'))
        .ok_or_else(bad)?;
    let digits = chars.as_str();
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((letter, digits.parse().map_err(|_| bad())?))
}

/// One ASCII upper-case letter (a TX or ST value).
fn letter_of(s: &str) -> Result<char, String> {
    match s.as_bytes() {
        [b] if b.is_ascii_uppercase() => Ok(char::from(*b)),
        _ => Err("TX and ST must be one upper-case letter".into()),
    }
}

/// An exact decimal (`RV` as the meter wrote it: a JSON number, or a string holding one)
/// as `value × 10^scaler`. No floating point anywhere.
pub fn parse_decimal(text: &str) -> Result<(i64, i32), String> {
    let text = text.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    // never the value: a refusal is bounded whatever the device sent
    let bad = || "RV is not a decimal number".to_string();
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(at) => (
            &body[..at],
            body[at + 1..].parse::<i32>().map_err(|_| bad())?,
        ),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut value: i64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(|| "RV has too many digits for a 64-bit value".to_string())?;
    }
    let frac_len = i32::try_from(frac.len()).map_err(|_| bad())?;
    let scaler = exp.checked_sub(frac_len).ok_or_else(bad)?;
    Ok((if neg { -value } else { value }, scaler))
}

/// `RU` → the dataset unit, the power of ten to add to the scaler, and a flag for units the
/// datasets do not name.
fn parse_unit(ru: &str) -> Result<(Unit, i32, Option<String>), String> {
    Ok(match ru {
        "kWh" => (Unit::Wh, 3, None),
        "Wh" => (Unit::Wh, 0, None),
        "kW" => (Unit::W, 3, None),
        "W" => (Unit::W, 0, None),
        "kvarh" => (Unit::Varh, 3, None),
        "varh" => (Unit::Varh, 0, None),
        "kvar" => (Unit::Var, 3, None),
        "var" => (Unit::Var, 0, None),
        "kVAh" => (Unit::Vah, 3, None),
        "VAh" => (Unit::Vah, 0, None),
        "kVA" => (Unit::Va, 3, None),
        "VA" => (Unit::Va, 0, None),
        "A" => (Unit::A, 0, None),
        "mA" => (Unit::A, -3, None),
        "V" => (Unit::V, 0, None),
        "Hz" => (Unit::Hz, 0, None),
        "mOhm" | "uOhm" | "Ohm" | "s" | "min" | "h" => (
            Unit::Unspecified,
            0,
            Some(format!("ocmf_unit_{}", ru.to_ascii_lowercase())),
        ),
        _ => return Err("RU is not a unit Feeder knows".into()),
    })
}

/// `TM` = `YYYY-MM-DDThh:mm:ss,fff±hhmm S` → (Unix ms UTC, time status letter U/I/S/R).
pub fn parse_time(tm: &str) -> Result<(i64, char), String> {
    let bad = || "TM is not YYYY-MM-DDThh:mm:ss,fff+hhmm and a status U, I, S or R".to_string();
    let (stamp, status) = tm.rsplit_once(' ').ok_or_else(bad)?;
    let status = match status {
        "U" | "I" | "S" | "R" => status.chars().next().ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let b = stamp.as_bytes();
    if b.len() != 28 {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> Result<i64, String> {
        let s = &b[from..to];
        if !s.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(s.iter().fold(0i64, |v, d| v * 10 + i64::from(d - b'0')))
    };
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) || !matches!(b[19], b',' | b'.') {
        return Err(bad());
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    let sign = match b[23] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(bad()),
    };
    let offset_min = sign * (num(24, 26)? * 60 + num(26, 28)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
        || offset_min.abs() > 18 * 60
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let local_ms = ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + ms;
    Ok((local_ms - offset_min * 60_000, status))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `TM` text of a Unix ms time (UTC offset `+0000`) and a status letter.
pub fn format_time(ts_ms: i64, status: char) -> String {
    let days = ts_ms.div_euclid(86_400_000);
    let ms_of_day = ts_ms.rem_euclid(86_400_000);
    // the date whose day number is `days`: the year from the mean Gregorian year, then
    // corrected, then the month, each by days_from_civil itself
    let mut y = 1970 + (days * 400).div_euclid(146_097);
    while days_from_civil(y + 1, 1, 1) <= days {
        y += 1;
    }
    while days_from_civil(y, 1, 1) > days {
        y -= 1;
    }
    let mut m = 1;
    while m < 12 && days_from_civil(y, m + 1, 1) <= days {
        m += 1;
    }
    let d = days - days_from_civil(y, m, 1) + 1;
    let (h, mi, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02},{ms:03}+0000 {status}")
}

/// The device half of an OCMF meter key, for simulators and test tools: signs payload
/// JSON into an OCMF string.
pub struct OcmfSigner {
    pair: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for OcmfSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OcmfSigner(..)")
    }
}

impl OcmfSigner {
    /// A fresh random key; returns it with its PKCS#8 document (the key file's `pkcs8`).
    pub fn generate() -> Result<(Self, Vec<u8>), String> {
        let rng = ring::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| "P-256 key generation failed")?;
        let pkcs8 = doc.as_ref().to_vec();
        Ok((Self::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// From a PKCS#8 v1 document (what [`Self::generate`] returns).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
                .map_err(|_| "not a P-256 PKCS#8 private key".to_string())?;
        Ok(Self { pair, rng })
    }

    /// The DER SubjectPublicKeyInfo of the public half (the registry's `public_key`).
    pub fn spki_der(&self) -> Vec<u8> {
        [&SPKI_P256_PREFIX[..], self.pair.public_key().as_ref()].concat()
    }

    /// `OCMF|<payload_json>|{"SA":"ECDSA-secp256r1-SHA256","SD":"<hex DER>"}`.
    pub fn sign(&self, payload_json: &str) -> Result<String, String> {
        let sig = self
            .pair
            .sign(&self.rng, payload_json.as_bytes())
            .map_err(|_| "P-256 signing failed")?;
        Ok(format!(
            "OCMF|{payload_json}|{{\"SA\":\"{SA_P256}\",\"SD\":\"{}\"}}",
            hex::encode_upper(sig.as_ref())
        ))
    }
}

/// One reading of a simulated charging session.
#[derive(Debug, Clone, Copy)]
pub struct SimReading {
    pub ts_ms: i64,
    /// `TX`: `B` begin, `C` charging (intermediate), `E` end.
    pub tx: char,
    /// The register in Wh × 10^-1 (written as kWh with four decimals).
    pub register_dwh: i64,
}

/// The payload JSON of a simulated OCMF charger (field order as KEBA and the contract's
/// vector write it).
pub fn sim_payload(serial: &str, page: u64, readings: &[SimReading]) -> String {
    let rd: Vec<String> = readings
        .iter()
        .map(|r| {
            let kwh = format!(
                "{}{}.{:04}",
                if r.register_dwh < 0 { "-" } else { "" },
                r.register_dwh.unsigned_abs() / 10_000,
                r.register_dwh.unsigned_abs() % 10_000
            );
            format!(
                "{{\"TM\":\"{}\",\"TX\":\"{}\",\"RV\":{kwh},\"RI\":\"1-b:1.8.0\",\"RU\":\"kWh\",\"RT\":\"AC\",\"EF\":\"\",\"ST\":\"G\"}}",
                format_time(r.ts_ms, 'S'),
                r.tx
            )
        })
        .collect();
    format!(
        "{{\"FV\":\"1.0\",\"GI\":\"FEEDER-SIM\",\"GS\":\"{serial}\",\"GV\":\"1.0\",\"PG\":\"T{page}\",\"MV\":\"FEEDER\",\"MM\":\"SIM1\",\"MS\":\"{serial}\",\"MF\":\"1.0\",\"IS\":false,\"IL\":\"NONE\",\"IT\":\"NONE\",\"ID\":\"\",\"RD\":[{}]}}",
        rd.join(",")
    )
}

pub mod vectors;

#[cfg(test)]
mod tests;
