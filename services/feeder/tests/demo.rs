//! The main job, `feeder demo`, as a user runs it (a real process, the embedded broker),
//! on a small fleet: it must exit 0, refuse every hostile frame as expected, and store
//! every acked frame exactly once (the demo checks that itself and fails otherwise).

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn demo_stores_every_acked_frame_once_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("feeder-data");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_feeder"))
        .args([
            "demo",
            "--meters",
            "30",
            "--vehicles",
            "6",
            "--seconds",
            "3",
        ])
        .arg("--data")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(started.elapsed() < Duration::from_secs(120));
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
            .to_string()
    };
    let acked: u64 = line("frames acked")
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(acked > 0);
    assert!(line("exactly once:").ends_with("(ok)"), "{stdout}");
    assert!(!stdout.contains("UNEXPECTED"), "{stdout}");
    for case in [
        "forged",
        "tampered",
        "unknown_device",
        "revoked_key",
        "tampered_ocmf",
    ] {
        assert!(line(&format!("  {case}")).contains("code 16"), "{case}");
    }
    assert!(line("  revoked_device").contains("code  7"));
    assert!(line("  replay ").contains("quarantined as duplicate"));
    // a meter skipped a day: 96 intervals estimated, then superseded when it arrived
    // late (plus those of frames the load generator's concurrency reordered)
    let words: Vec<String> = line("estimated:")
        .split_whitespace()
        .map(String::from)
        .collect();
    let (estimated, superseded): (u64, u64) = (words[1].parse().unwrap(), {
        let at = words.iter().position(|w| w == "superseded").unwrap();
        words[at - 1].parse().unwrap()
    });
    assert!(superseded >= 96 && estimated >= superseded, "{stdout}");
    // the fleet was provisioned through the registry topic, every line signed, and the
    // writer audited each of them into `registry_changes`
    let nth =
        |l: String, n: usize| -> u64 { l.split_whitespace().nth(n).unwrap().parse().unwrap() };
    let published = nth(line("registry: "), 1);
    let audited = nth(line("registry audit:"), 2);
    assert!(published > 36, "{stdout}");
    assert_eq!(audited, published, "{stdout}");
    // the datasets it points the user at are there
    for dataset in [
        "readings",
        "telematics",
        "frames",
        "quarantine",
        "registry_changes",
    ] {
        assert!(data.join(dataset).is_dir(), "{dataset} missing");
    }
}
