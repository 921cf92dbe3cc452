use std::ffi::OsString;
use std::io::Write;

use super::*;

const GOOD: &str = r#"
[log]
filter = "debug"
json = true

[metrics]
listen = "127.0.0.1:9100"

[kafka]
brokers = "kafka-0:9093,kafka-1:9093"
partitions = 12
replication = 3

[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.password" = "from-the-file"

[edge]
listen = "0.0.0.0:7443"
registry = "/etc/feeder/registry/registry.jsonl"
device_rate = 2.5
device_burst = 20
ack_timeout = "5s"

[stream]
registry = "/etc/feeder/registry/registry.jsonl"
group = "stream-from-file"

[stream.rules.meter]
voltage_band_pct = 7.5

[writer]
data = "/var/lib/feeder/data"
"#;

struct TempConfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write(text: &str) -> TempConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feeder.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    TempConfig { _dir: dir, path }
}

fn parse(file: &TempConfig, rest: &[&str]) -> Result<Cli, ParseFailure> {
    let mut args: Vec<OsString> = vec!["feeder".into(), "--config".into()];
    args.push(file.path.clone().into_os_string());
    args.extend(rest.iter().map(OsString::from));
    parse_from(args)
}

fn invalid_line(text: &str) -> (usize, String) {
    match ConfigFile::parse(Path::new("feeder.toml"), text) {
        Err(ConfigError::Invalid { line, message, .. }) => (line, message),
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn the_file_sets_every_stage_and_flags_override_it() {
    let f = write(GOOD);
    let cli = parse(&f, &["edge"]).unwrap();
    assert_eq!(cli.log.filter, "debug");
    assert!(cli.log.log_json);
    let Command::Edge(e) = cli.command else {
        panic!()
    };
    // Required flags come from the file.
    assert_eq!(e.kafka.brokers, "kafka-0:9093,kafka-1:9093");
    assert_eq!(
        e.source.registry,
        Some(PathBuf::from("/etc/feeder/registry/registry.jsonl"))
    );
    assert_eq!((e.device_rate, e.device_burst), (2.5, 20));
    assert_eq!(e.ack_timeout, std::time::Duration::from_secs(5));
    assert_eq!(e.kafka.partitions, 12);
    assert_eq!(
        e.metrics.metrics_listen,
        Some("127.0.0.1:9100".parse().unwrap())
    );
    // Untouched settings keep their built-in defaults.
    assert_eq!(e.max_frames_per_request, 1000);

    let cli = parse(&f, &["edge", "--device-rate", "9", "--partitions", "3"]).unwrap();
    let Command::Edge(e) = cli.command else {
        panic!()
    };
    assert_eq!((e.device_rate, e.kafka.partitions), (9.0, 3));

    let cli = parse(&f, &["stream"]).unwrap();
    let Command::Stream(s) = cli.command else {
        panic!()
    };
    assert_eq!(s.group, "stream-from-file");
    let rules = s.rules.expect("rules from the file");
    assert_eq!(rules.meter.voltage_band_pct, 7.5);
    // Fields the file does not name keep their defaults.
    assert_eq!(
        rules.meter.history_days,
        feeder_stream::rules::RulesConfig::default()
            .meter
            .history_days
    );
}

#[test]
fn kafka_properties_merge_with_the_command_line_winning_per_key() {
    let f = write(GOOD);
    let cli = parse(
        &f,
        &[
            "writer",
            "--kafka-property",
            "sasl.password=from-the-secret",
            "--kafka-property",
            "client.rack=zone-a",
        ],
    )
    .unwrap();
    let Command::Writer(w) = cli.command else {
        panic!()
    };
    let props = w.kafka.kafka().properties;
    let get = |k: &str| {
        props
            .iter()
            .filter(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("sasl.password"), vec!["from-the-secret"]);
    assert_eq!(get("security.protocol"), vec!["SASL_SSL"]);
    assert_eq!(get("client.rack"), vec!["zone-a"]);
    let shown = format!("{:?}", w.kafka);
    assert!(!shown.contains("from-the-secret"), "{shown}");
    assert!(
        shown.contains("<redacted>") && shown.contains("SASL_SSL"),
        "{shown}"
    );
}

#[test]
fn without_a_file_required_flags_stay_required() {
    let err = parse_from(vec!["feeder".into(), "edge".into()]).unwrap_err();
    let ParseFailure::Clap(e) = err else { panic!() };
    assert!(e.to_string().contains("--brokers"), "{e}");
}

#[test]
fn every_mistake_names_its_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "[edge]\nlisten = \"0.0.0.0:1\"\n\n[egde]\nx = 1\n",
            4,
            "unknown section [egde]",
        ),
        (
            "[edge]\ndevice_rate = 1.0\ndevce_burst = 3\n",
            3,
            "unknown key `devce_burst`",
        ),
        ("[edge]\ndevice_rate = \"fast\"\n", 2, "edge.device_rate"),
        (
            "[kafka]\nbrokers = \"b\"\n\npartitions = 0\n",
            4,
            "kafka.partitions",
        ),
        ("[edge]\nack_timeout = \"soon\"\n", 2, "not a duration"),
        ("[edge]\nlisten = \"nowhere\"\n", 2, "edge.listen"),
        ("[metrics]\nlisten = [1, 2]\n", 2, "metrics.listen"),
        ("log = \"debug\"\n", 1, "must be a [section]"),
        (
            "[kafka.properties]\n\"a\" = [1, 2]\n",
            1,
            "kafka.properties",
        ),
        ("[stream]\nbrokers_x = 1\n", 2, "unknown key"),
        (
            "[stream.rules.meter]\nvoltage_band_pct = 150.0\n",
            1,
            "voltage_band_pct",
        ),
        (
            "[stream]\ngroup = \"g\"\n\n[stream.rules]\ndisabled = [\"spkie\"]\n",
            4,
            "unknown rule `spkie`",
        ),
        (
            "[stream]\ngroup = \"g\"\n\n[stream.rules.estimate]\nprofile_days = 0\n",
            4,
            "estimate.profile_days",
        ),
        (
            "[stream.rules]\ndisabled = [\"profile\", \"linear\", \"register_prorate\"]\n",
            1,
            "unknown rule `register_prorate`",
        ),
        ("[devices]\nmeters = 1\n", 1, "unknown section"),
    ];
    for (text, line, needle) in cases {
        let (got_line, message) = invalid_line(text);
        assert_eq!(got_line, *line, "{text:?}: {message}");
        assert!(message.contains(needle), "{text:?}: {message}");
    }
}

#[test]
fn syntax_and_typed_rule_errors_carry_line_and_column() {
    match ConfigFile::parse(Path::new("f.toml"), "[edge]\nlisten = \n") {
        Err(ConfigError::Syntax { message, .. }) => {
            assert!(message.contains("line 2"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match ConfigFile::parse(
        Path::new("f.toml"),
        "[stream]\ngroup = \"g\"\n\n[stream.rules.meter]\nspike_madd = 3\n",
    ) {
        Err(ConfigError::Syntax { message, .. }) => {
            assert!(
                message.contains("line 5") && message.contains("spike_madd"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    match ConfigFile::parse(
        Path::new("f.toml"),
        "[stream.rules.estimate]\nlinear_max_gap_ms = 600000\nmax_gap_days = 3\n",
    ) {
        Err(ConfigError::Syntax { message, .. }) => {
            assert!(
                message.contains("line 3") && message.contains("max_gap_days"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let err = parse_from(vec![
        "feeder".into(),
        "--config".into(),
        "/nonexistent/feeder.toml".into(),
        "edge".into(),
    ])
    .unwrap_err();
    let ParseFailure::Config(e) = err else {
        panic!()
    };
    assert!(e.to_string().contains("/nonexistent/feeder.toml"), "{e}");
}

#[test]
fn the_config_flag_is_found_in_either_form() {
    let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    assert_eq!(
        config_path(&args(&["feeder", "edge", "--config=/a.toml"])),
        Some(PathBuf::from("/a.toml"))
    );
    assert_eq!(
        config_path(&args(&["feeder", "--config", "/b.toml", "edge"])),
        Some(PathBuf::from("/b.toml"))
    );
}

#[test]
fn the_documented_example_is_valid() {
    let doc = include_str!("../../../../docs/configuration.md");
    let start = doc.find("```toml\n").expect("an example") + "```toml\n".len();
    let len = doc[start..].find("```").expect("closed");
    let f = write(&doc[start..start + len]);
    for stage in ["edge", "stream", "writer"] {
        let cli = parse(&f, &[stage]).unwrap_or_else(|e| panic!("{stage}: {e:?}"));
        assert_eq!(cli.log.filter, "info");
    }
}

/// A config error never repeats a value from the file (it may be a key pasted in the
/// wrong place): syntax errors, typed rule errors and flag values alike give the line,
/// the column or key, and what is wrong, never the content.
#[test]
fn errors_never_echo_a_value() {
    const SECRET: &str = "c2VjcmV0LWtleS1tYXRlcmlhbA";
    let cases = [
        // unterminated string, bad escape, junk after a value, bare word: syntax errors
        format!("[kafka.properties]\n\"sasl.password\" = \"{SECRET}\n"),
        format!("[kafka.properties]\n\"sasl.password\" = \"a\\q{SECRET}\"\n"),
        format!("[kafka]\nbrokers = \"b:9092\" {SECRET}\n"),
        format!("[kafka]\nbrokers = {SECRET}\n"),
        format!("{SECRET}\n"),
        // a value of the wrong type for a typed rule
        format!("[stream.rules.meter]\nspike_mad_factor = \"{SECRET}\"\n"),
        // values a flag's parser refuses
        format!("[edge]\nack_timeout = \"{SECRET}\"\n"),
        format!("[edge]\nlisten = \"{SECRET}\"\n"),
        format!("[writer]\nflush_max_frames = \"{SECRET}\"\n"),
    ];
    for text in &cases {
        let message = match ConfigFile::parse(Path::new("f.toml"), text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{text:?} was accepted"),
        };
        assert!(!message.contains(SECRET), "{text:?}: {message}");
        assert!(!message.contains("c2VjcmV0"), "{text:?}: {message}");
        assert!(message.contains("line "), "{text:?}: {message}");
    }
}

/// Fuzzing in the test suite (stable Rust, no extra dependency): 20,000 mutations of the
/// documented example and of the error cases above (bytes inserted, deleted, replaced by
/// TOML's own punctuation, lines swapped), seeded so a failure reproduces. The parser
/// must never panic, and an error is bounded by the input. Long runs: the cargo-fuzz
/// target `fuzz/fuzz_targets/config_toml.rs`.
#[test]
fn mutated_files_never_panic_and_errors_stay_bounded() {
    const ALPHABET: &[u8] = b"[]{}=\"'.,#\n \t\\0123456789abcxyz_-:+eEtrufals";
    let doc = include_str!("../../../../docs/configuration.md");
    let start = doc.find("```toml\n").expect("an example") + "```toml\n".len();
    let len = doc[start..].find("```").expect("closed");
    let corpus = [
        doc[start..start + len].to_string(),
        "[stream.rules.meter]\nspike_mad_factor = 3.5\n[stream.rules]\ndisabled = [\"spike\"]\n"
            .to_string(),
        "[kafka.properties]\n\"sasl.password\" = \"x\"\n[edge]\nack_timeout = \"2s\"\n".to_string(),
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    let (mut errors, mut accepted) = (0, 0);
    for i in 0..20_000 {
        let mut bytes = corpus[i % corpus.len()].clone().into_bytes();
        for _ in 0..1 + next(8) {
            let at = next(bytes.len() + 1);
            match next(4) {
                0 => bytes.insert(at, ALPHABET[next(ALPHABET.len())]),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                2 if at < bytes.len() => bytes[at] = ALPHABET[next(ALPHABET.len())],
                _ => {
                    let other = next(bytes.len() + 1);
                    let (a, b) = (at.min(other), at.max(other));
                    bytes[a..b].reverse();
                }
            }
        }
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        match ConfigFile::parse(Path::new("f.toml"), &text) {
            Ok(_) => accepted += 1,
            Err(e) => {
                errors += 1;
                let n = e.to_string().len();
                assert!(
                    n <= 4096 + 2 * text.len(),
                    "{n} bytes of error for {text:?}"
                );
            }
        }
    }
    assert!(
        errors > 1000 && accepted > 100,
        "{errors} errors, {accepted} accepted"
    );
}
