//! How durations and byte sizes are written in every flag, `FEEDER_*` variable and config
//! file key (the file feeds the same parsers: `config_file`).
//!
//! Why typed: a size written as a raw integer (`268435456`) is easy to get wrong by a
//! factor of 1024 and hard to review; `256MiB` is not. Durations use `humantime`'s forms
//! (`250ms`, `10s`, `2m`, `12h`, `400d`, `1h 30m`); a bare number is seconds and a bare
//! size is bytes, so configurations written before keep their meaning.

use std::time::Duration;

/// `250ms`, `10s`, `2m`, `12h`, `400d`, `1h 30m`, or a bare number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a valid number of seconds"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 500ms, 10s or 2m ({e})"))
}

/// A size in bytes: `65536`, `64KiB`, `256MiB`, `1GiB` (powers of 1024), `64KB`, `1MB`,
/// `1GB` (powers of 1000), `512B`; a space before the unit is allowed.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 65536, 64KiB or 256MiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// [`parse_bytes`] for a `usize` setting.
pub fn parse_bytes_usize(s: &str) -> Result<usize, String> {
    usize::try_from(parse_bytes(s)?).map_err(|_| format!("{s:?} is too large"))
}

/// [`parse_bytes`] for a `u32` setting.
pub fn parse_bytes_u32(s: &str) -> Result<u32, String> {
    u32::try_from(parse_bytes(s)?).map_err(|_| format!("{s:?} is over 4GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_form() {
        for (text, bytes) in [
            ("65536", 65_536),
            ("64KiB", 65_536),
            ("64 KiB", 65_536),
            ("256MiB", 268_435_456),
            ("1GiB", 1 << 30),
            ("64KB", 64_000),
            ("1MB", 1_000_000),
            ("2GB", 2_000_000_000),
            ("512B", 512),
            ("1_048_576", 1 << 20),
            (" 4MiB ", 4 << 20),
        ] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "MiB",
            "64 mib",
            "64Mb",
            "-1",
            "1.5MiB",
            "64 KiB extra",
            "99999999999GiB",
        ] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.contains(&format!("{:?}", bad.trim())), "{bad}: {e}");
        }
        assert_eq!(
            parse_bytes_u32("4GiB").unwrap_err(),
            "\"4GiB\" is over 4GiB"
        );
        assert_eq!(parse_bytes_u32("16KiB"), Ok(16_384));
    }

    #[test]
    fn durations_in_every_form() {
        for (text, d) in [
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("12h", Duration::from_secs(43_200)),
            ("400d", Duration::from_secs(400 * 86_400)),
            ("1h 30m", Duration::from_secs(5_400)),
            ("30", Duration::from_secs(30)),
            ("1.5", Duration::from_millis(1_500)),
        ] {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
        for bad in ["", "ten seconds", "10x", "-1", "5 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
