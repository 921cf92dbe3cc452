//! `feeder loadgen --scenario ramp --out DIR` against the real edge on the embedded
//! broker: the edge's per-device rate limit is the capacity the ramp must find (it
//! answers code 8 above it), and the result is a JSON file with one step per offered
//! load and an SVG a browser opens. Structure and bounds only, never timings: a loaded
//! machine may stop the ramp earlier (latency, late requests), never make it wrong.

mod common;

use std::path::Path;
use std::time::Duration;

use feeder_edge::EdgeConfig;
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_sim::loadgen::{OpenLoopConfig, RampShape, Scenario};
use serde_json::Value;

use common::*;

const MAX_STEPS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ramp_against_the_real_edge_writes_result_json_and_svg() {
    let work = tempfile::tempdir().unwrap();
    let (registry, _) = provision(work.path(), 6, 2);
    let secrets = work.path().join("device-keys.jsonl");
    let topics = Topics::with_prefix("edge-loadgen-ramp", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    // 8 devices at 20 frames/s each: about 160 frames/s, above which the edge answers 8
    let cfg = EdgeConfig {
        device_rate_per_sec: 20.0,
        device_burst: 10,
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&kafka, &topics, cfg, &registry).await;

    let cfg = OpenLoopConfig {
        scenario: Scenario::Ramp,
        rate: 60.0,
        max_in_flight: 16,
        frames_per_request: 4,
        ramp: RampShape {
            step: 60.0,
            step_seconds: 0.5,
            max_steps: MAX_STEPS,
            max_p99: Duration::from_secs(2),
            ..RampShape::default()
        },
        ..OpenLoopConfig::new(format!("http://{}", edge.addr), &secrets)
    };
    let report = play_open_loop(cfg, 2).await;
    let out = work.path().join("result");
    report.write(&out).unwrap();
    edge.stop().await;

    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(json["scenario"], "ramp");
    assert_eq!(json["devices"], 8);
    let total = &json["total"];
    for field in [
        "offered_frames_per_sec",
        "achieved_frames_per_sec",
        "achieved_readings_per_sec",
    ] {
        assert!(total[field].as_f64().unwrap() >= 0.0, "{field}");
    }
    for q in ["p50", "p90", "p99", "p999", "max"] {
        assert!(total["ack_latency_ms"][q].as_f64().unwrap() >= 0.0, "{q}");
    }
    assert!(total["codes"].is_object());
    let stop = json["stop_reason"].as_str().unwrap();

    let steps = json["steps"].as_array().unwrap();
    assert!((1..=MAX_STEPS).contains(&steps.len()), "{}", steps.len());
    let offered: Vec<f64> = steps
        .iter()
        .map(|s| s["offered_frames_per_sec"].as_f64().unwrap())
        .collect();
    assert!(
        offered.windows(2).all(|w| w[0] < w[1]),
        "offered load increases: {offered:?}"
    );
    assert_eq!(offered[0], 60.0);
    for s in steps {
        let n = |f: &str| s[f].as_u64().unwrap();
        assert_eq!(
            n("requests_scheduled"),
            n("requests_sent") + n("requests_late")
        );
        assert!(n("frames_acked") <= n("frames_sent"));
        assert!(s["ack_latency_ms"]["p99"].as_f64().unwrap() >= 0.0);
        assert!(s["achieved_frames_per_sec"].as_f64().is_some());
    }
    // the ramp ends at a limit or at its last step; 6 steps reach 360 frames/s, past
    // the edge's 160, so a step that saw no code 8 can only end on latency or lateness
    assert!(
        stop.contains("code 8")
            || stop.contains("p99")
            || stop.contains("could not start")
            || steps.len() == MAX_STEPS,
        "{stop}"
    );
    let codes = &total["codes"];
    if stop.contains("code 8") {
        assert!(codes["8"].as_u64().unwrap() > 0);
    }
    assert!(
        codes["0"].as_u64().unwrap() > 0,
        "the first steps were acked"
    );

    let svg = std::fs::read_to_string(out.join("result.svg")).unwrap();
    assert_well_formed(&svg);
    assert!(svg.contains("<polyline") && svg.contains("offered load"));
    python_parses(&out.join("result.svg"));
}

/// Balanced tags: every `<name ...>` is closed by `</name>` or is `<.../>`.
fn assert_well_formed(xml: &str) {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        let tail = &rest[i + 1..];
        let end = tail.find('>').expect("unterminated tag");
        let tag = &tail[..end];
        rest = &tail[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name.trim()), "mismatched </{name}>");
        } else {
            open.push(tag.split_whitespace().next().unwrap());
        }
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
}

/// The test venv's Python parses the file as XML when it is there (it is in CI).
fn python_parses(path: &Path) {
    let python = Path::new("/root/.cache/feeder/venv/bin/python");
    if !python.exists() {
        return;
    }
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); \
             assert r.tag.endswith('svg'), r.tag",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
