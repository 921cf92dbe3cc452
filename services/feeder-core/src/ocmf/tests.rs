//! The contract's two OCMF vectors (shared/protocol.md) and the parser's edge cases.

use super::*;

use super::vectors::{V1, V1_KEY, V2, V2_KEY};

fn key(hex: &str, serial: Option<&str>) -> OcmfKey {
    OcmfKey::from_spki_hex(hex, serial).expect("contract key")
}

#[test]
fn vector_1_accepted_with_exact_readings() {
    let k = key(V1_KEY, Some("MTR0001"));
    let c = check_shape(&k, 7, V1.as_bytes()).expect("shape");
    assert_eq!(c.page, ('T', 7));
    assert_eq!(c.serial.as_deref(), Some("MTR0001"));
    let r = &c.frame.readings;
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].value, r[0].scaler), (12_345_670, -1));
    assert_eq!((r[1].value, r[1].scaler), (12_410_020, -1));
    assert!(
        r.iter()
            .all(|r| r.obis == "1-b:1.8.0" && r.unit == Unit::Wh as i32)
    );
    assert_eq!(r[0].ts_ms, 1_795_600_800_000); // 2026-11-25T10:00:00Z
    assert_eq!(r[1].ts_ms - r[0].ts_ms, 45 * 60_000);
    assert_eq!(c.flags[0], ["ocmf_time_S", "ocmf_tx_B", "ocmf_st_G"]);
    assert_eq!(c.flags[1], ["ocmf_time_S", "ocmf_tx_E", "ocmf_st_G"]);
    assert_eq!(k.verify(V1.as_bytes()), Ok(()));
}

#[test]
fn vector_1_one_byte_tamper_refused() {
    let k = key(V1_KEY, Some("MTR0001"));
    let tampered = V1.replace("1234.5670", "1234.5671");
    assert!(check_shape(&k, 7, tampered.as_bytes()).is_ok());
    assert_eq!(k.verify(tampered.as_bytes()), Err(SigError::Mismatch));
}

#[test]
fn vector_2_keba_accepted_and_any_payload_byte_change_refused() {
    let k = key(V2_KEY, Some("17619300"));
    let c = check_shape(&k, 32, V2.as_bytes()).expect("shape");
    assert_eq!(c.page, ('T', 32));
    let r = &c.frame.readings;
    assert_eq!((r[0].value, r[0].scaler, r[1].value), (2596, -1, 2597));
    assert_eq!(c.flags[0][0], "ocmf_time_I");
    assert_eq!(c.flags[1][0], "ocmf_time_R");
    assert_eq!(k.verify(V2.as_bytes()), Ok(()));
    // every byte of the payload section, flipped in its low bit
    let bytes = V2.as_bytes();
    let (start, end) = (5, V2.rfind("|{\"SD\"").expect("sig"));
    for i in start..end {
        let mut t = bytes.to_vec();
        t[i] ^= 1;
        if t[i] == b'|' {
            continue; // a new section: refused by shape (3), not verified
        }
        assert!(k.verify(&t).is_err(), "byte {i} changed and still verified");
    }
}

#[test]
fn signature_encodings() {
    use base64::Engine as _;
    let k = key(V2_KEY, None);
    let (payload, sig) = V2.split_at(V2.rfind('|').expect("bar") + 1);
    let der = signature_der(sig.as_bytes()).expect("der");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let lower = sig.to_ascii_lowercase().replace("\"sd\"", "\"SD\"");
    let cases: Vec<(String, Result<(), SigError>)> = vec![
        (lower, Ok(())),
        (format!(r#"{{"SE":"base64","SD":"{b64}"}}"#), Ok(())),
        (
            format!(
                r#"{{"SA":"ECDSA-secp256r1-SHA256","SE":"hex","SM":"application/x-der","SD":"{}"}}"#,
                hex::encode(&der)
            ),
            Ok(()),
        ),
        (
            format!(
                r#"{{"SA":"ECDSA-secp384r1-SHA256","SD":"{}"}}"#,
                hex::encode(&der)
            ),
            Err(SigError::Unsupported),
        ),
        (
            format!(r#"{{"SE":"base32","SD":"{}"}}"#, hex::encode(&der)),
            Err(SigError::Unsupported),
        ),
        (
            format!(
                r#"{{"SM":"application/x-raw","SD":"{}"}}"#,
                hex::encode(&der)
            ),
            Err(SigError::Unsupported),
        ),
        (r#"{"SD":"zz"}"#.into(), Err(SigError::Encoding)),
        (
            r#"{"SA":"ECDSA-secp256r1-SHA256"}"#.into(),
            Err(SigError::Encoding),
        ),
        (
            r#"{"SD":"3006020101020101"}"#.into(),
            Err(SigError::Mismatch),
        ),
    ];
    for (sig, want) in cases {
        let s = format!("{payload}{sig}");
        assert_eq!(k.verify(s.as_bytes()), want, "{sig}");
    }
}

#[test]
fn shape_refusals_before_the_signature() {
    let k = key(V1_KEY, Some("MTR0001"));
    let v = V1;
    let cases: Vec<(String, u64, &str)> = vec![
        (v.into(), 8, "ocmf_seq_mismatch"),
        (v.replace("\"T7\"", "\"F7\""), 7, ""),
        (v.replace("\"T7\"", "\"X7\""), 7, "ocmf_pagination"),
        (v.replace("\"T7\"", "\"T07\""), 7, "ocmf_pagination"),
        (v.replace("\"T7\"", "\"T\""), 7, "ocmf_pagination"),
        (
            v.replace("\"MS\":\"MTR0001\"", "\"MS\":\"MTR0002\""),
            7,
            "ocmf_serial_mismatch",
        ),
        // no MS: the gateway serial is compared, and it is not the registered one
        (
            v.replace("\"MS\":\"MTR0001\",", ""),
            7,
            "ocmf_serial_mismatch",
        ),
        (v.replacen('|', "", 1), 7, "ocmf_shape"),
        (format!("{v}|{{}}"), 7, "ocmf_shape"),
        (v.replacen("OCMF|", "OCMX|", 1), 7, "ocmf_shape"),
        (v.replace("{\"FV\"", "[\"FV\""), 7, "ocmf_payload"),
        (v.replace(",\"PG\":\"T7\"", ""), 7, "ocmf_payload"),
        (v.replace("1234.5670", "\"12x\""), 7, "ocmf_reading"),
        (
            v.replace("1234.5670", "99999999999999999999.5"),
            7,
            "ocmf_reading",
        ),
        (v.replacen("\"kWh\"", "\"parsecs\"", 1), 7, "ocmf_reading"),
        (v.replacen("+0000 S", "+0000 Q", 1), 7, "ocmf_reading"),
        (
            v.replacen("2026-11-25T10", "2026-02-30T10", 1),
            7,
            "ocmf_reading",
        ),
        (
            v.replacen("\"TX\":\"B\"", "\"TX\":\"Begin\"", 1),
            7,
            "ocmf_reading",
        ),
    ];
    for (s, seq, want) in cases {
        match check_shape(&k, seq, s.as_bytes()) {
            Ok(_) => assert_eq!(want, "", "{s}"),
            Err(e) => assert_eq!(e.reason, want, "{s}: {}", e.message),
        }
    }
    // without a registered serial, any serial is accepted
    let open = key(V1_KEY, None);
    let other = v.replace("\"MS\":\"MTR0001\"", "\"MS\":\"MTR0002\"");
    assert!(check_shape(&open, 7, other.as_bytes()).is_ok());
}

#[test]
fn decimals_are_exact() {
    let cases = [
        ("1234.5670", Ok((12_345_670, -4))),
        ("0.2596", Ok((2596, -4))),
        ("-1.5", Ok((-15, -1))),
        ("42", Ok((42, 0))),
        ("\"7.25\"", Ok((725, -2))),
        ("1.5e3", Ok((15, 2))),
        ("1E-2", Ok((1, -2))),
        (".5", Err(())),
        ("1.", Ok((1, 0))),
        ("1.2.3", Err(())),
        ("", Err(())),
        ("9223372036854775808", Err(())),
        ("true", Err(())),
    ];
    for (text, want) in cases {
        assert_eq!(parse_decimal(text).map_err(|_| ()), want, "{text}");
    }
}

#[test]
fn times_round_trip() {
    for ts in [
        0,
        1_795_600_800_000,
        1_565_690_595_000,
        951_782_400_123,
        -86_400_000,
    ] {
        let tm = format_time(ts, 'S');
        assert_eq!(parse_time(&tm), Ok((ts, 'S')), "{tm}");
    }
    assert_eq!(
        parse_time("2019-08-13T12:03:15,000+0200 I"),
        Ok((1_565_690_595_000, 'I'))
    );
}

#[test]
fn keys_and_signer() {
    assert!(OcmfKey::from_spki_hex(&V1_KEY.to_lowercase(), None).is_ok());
    assert!(OcmfKey::from_spki_hex(&V1_KEY[..V1_KEY.len() - 2], None).is_err());
    assert!(OcmfKey::from_spki_hex("zz", None).is_err());
    assert!(OcmfKey::from_spki_hex(V1_KEY, Some("")).is_err());
    let (signer, pkcs8) = OcmfSigner::generate().expect("key");
    let again = OcmfSigner::from_pkcs8(&pkcs8).expect("pkcs8");
    assert_eq!(signer.spki_der(), again.spki_der());
    let k = OcmfKey::from_spki_der(&signer.spki_der(), Some("SIM0001")).expect("spki");
    assert_eq!(k.spki_der(), signer.spki_der());
    let rd = [
        SimReading {
            ts_ms: 1_795_600_800_000,
            tx: 'B',
            register_dwh: 12_345_670,
        },
        SimReading {
            ts_ms: 1_795_603_500_000,
            tx: 'E',
            register_dwh: 12_410_020,
        },
    ];
    let s = signer.sign(&sim_payload("SIM0001", 3, &rd)).expect("sign");
    let c = check_shape(&k, 3, s.as_bytes()).expect("shape");
    assert_eq!(c.frame.readings[0].value, 12_345_670);
    assert_eq!(c.frame.readings[1].ts_ms, 1_795_603_500_000);
    assert_eq!(k.verify(s.as_bytes()), Ok(()));
    assert!(!format!("{signer:?}{k:?}").contains("515C"));
}
