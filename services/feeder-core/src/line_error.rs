//! Messages for a malformed line of a key-bearing file (the registry, the device key file)
//! that never repeat a value from the line.
//!
//! Why: serde_json quotes the offending value in some messages (`invalid type: integer
//! `1234…``, `unknown variant `…``), and in a registry or key file that value may be key
//! material: a secret typed without quotes, or pasted into the wrong field. These messages
//! reach logs and operators' terminals, so the value is dropped and only where it is and
//! what was expected remain.

/// Describes a JSON error of one line: column, the kind of error and what was expected,
/// never the value found.
pub fn json_line_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    // serde_json appends " at line L column C"; the column is given separately
    let msg = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m);
    const QUOTES_VALUE: [&str; 4] = [
        "invalid type",
        "invalid value",
        "unknown variant",
        "invalid length",
    ];
    let shown = match QUOTES_VALUE.iter().find(|p| msg.starts_with(**p)) {
        Some(kind) if e.is_data() => match msg.rfind(", expected") {
            Some(i) => format!("{kind} (value not shown){}", &msg[i..]),
            None => format!("{kind} (value not shown)"),
        },
        _ => msg.to_string(),
    };
    format!("invalid JSON at column {}: {shown}", e.column())
}

#[cfg(test)]
mod tests {
    use crate::keyfile::parse_key_file;
    use crate::registry::Registry;

    /// A value that must never be echoed: looks like an HMAC secret.
    const SECRET: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
    const DIGITS: &str = "1234567890123456789012345678901234567890123456789012345678901234";

    fn registry_line(alg: &str, secret: &str, kind: &str, status: &str, labels: &str) -> String {
        format!(
            r#"{{"device_id":"mtr-1","key_id":"k1","alg":{alg},"secret":{secret},"kind":{kind},"status":{status},"labels":{labels}}}"#
        )
    }

    #[test]
    fn registry_errors_never_repeat_key_material() {
        let s = format!("\"{SECRET}\"");
        let ok = (
            "\"hmac-sha256\"",
            s.as_str(),
            "\"meter\"",
            "\"active\"",
            "{}",
        );
        let cases: Vec<(String, &str)> = vec![
            // a secret typed without quotes (all digits, so it parses as a number)
            (
                registry_line(ok.0, DIGITS, ok.2, ok.3, ok.4),
                "invalid type",
            ),
            (
                registry_line(ok.0, &DIGITS[..18], ok.2, ok.3, ok.4),
                "invalid type",
            ),
            // the secret pasted into another field
            (registry_line(&s, &s, ok.2, ok.3, ok.4), "unknown variant"),
            (registry_line(ok.0, &s, &s, ok.3, ok.4), "unknown variant"),
            (registry_line(ok.0, &s, ok.2, &s, ok.4), "unknown variant"),
            (registry_line(ok.0, &s, ok.2, ok.3, &s), "invalid type"),
            (
                registry_line(ok.0, &format!("[{s}]"), ok.2, ok.3, ok.4),
                "invalid type",
            ),
            // a line cut short inside the secret
            (
                registry_line(ok.0, &s, ok.2, ok.3, ok.4)[..110].to_string(),
                "EOF",
            ),
        ];
        for (line, want) in &cases {
            let err = Registry::parse("reg.jsonl", line).unwrap_err().to_string();
            assert!(
                err.contains("reg.jsonl: line 1: invalid JSON at column"),
                "{err}"
            );
            assert!(err.contains(want), "{line}: wanted {want:?} in {err}");
            assert!(!err.contains(SECRET), "key material in: {err}");
            assert!(!err.contains(&DIGITS[..18]), "key material in: {err}");
        }
        // what was expected is still said
        let err = Registry::parse("r", &cases[2].0).unwrap_err().to_string();
        assert!(
            err.contains("expected one of `ed25519`, `hmac-sha256`, `ocmf`"),
            "{err}"
        );
    }

    #[test]
    fn key_file_errors_never_repeat_key_material() {
        let line = format!(
            r#"{{"device_id":"mtr-1","key_id":"k1","alg":"ed25519","seed":{DIGITS},"kind":"meter"}}"#
        );
        let err = parse_key_file("keys.jsonl", &line).unwrap_err().to_string();
        assert!(
            err.contains("keys.jsonl: line 1: invalid JSON at column"),
            "{err}"
        );
        assert!(!err.contains(&DIGITS[..18]), "key material in: {err}");
        let line = format!(
            r#"{{"device_id":"mtr-1","key_id":"k1","alg":"{SECRET}","seed":"{SECRET}","kind":"meter"}}"#
        );
        let err = parse_key_file("keys.jsonl", &line).unwrap_err().to_string();
        assert!(err.contains("unknown variant (value not shown)"), "{err}");
        assert!(!err.contains(SECRET), "key material in: {err}");
    }

    #[test]
    fn parsed_lines_never_debug_print_key_material() {
        let reg: crate::registry::RegistryLine = serde_json::from_str(&registry_line(
            "\"hmac-sha256\"",
            &format!("\"{SECRET}\""),
            "\"meter\"",
            "\"active\"",
            "{}",
        ))
        .unwrap();
        let keys: crate::keyfile::DeviceKeyLine = serde_json::from_str(&format!(
            r#"{{"device_id":"mtr-1","key_id":"k1","alg":"ed25519","seed":"{SECRET}","kind":"meter"}}"#
        ))
        .unwrap();
        for dbg in [format!("{reg:?}"), format!("{keys:?}")] {
            assert!(dbg.contains("<redacted>") && dbg.contains("mtr-1"), "{dbg}");
            assert!(!dbg.contains(SECRET), "key material in: {dbg}");
        }
    }
}
