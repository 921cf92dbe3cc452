//! The load generator against a tiny in-process edge on port 0 that verifies signatures
//! against the registry and answers with scripted codes: retries resend the same frame,
//! refusals are final, and every frame is accounted for exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use feeder_core::Registry;
use feeder_proto::raw::RawPushRequest;
use feeder_proto::raw::ingest_server::{Ingest, IngestServer};
use feeder_proto::v1::{FrameAck, PushResponse, SignedFrame};
use feeder_sim::loadgen::{self, LoadgenConfig, LoadgenProgress, LoadgenReport, RetryPolicy};
use feeder_sim::{KeygenConfig, keygen};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

type Script = Box<dyn Fn(&SignedFrame, usize) -> i32 + Send + Sync>;

/// The fake edge: `script(frame, attempt)` (attempt 0-based) decides each frame's code
/// after the signature checks out; the first `fail_calls` calls fail as a whole.
struct Edge {
    registry: Registry,
    script: Script,
    fail_calls: AtomicU32,
    /// Every attempt per (device, seq): the exact frame bytes received.
    attempts: Mutex<HashMap<(String, u64), Vec<Bytes>>>,
    /// (device, seq) answered 0, in answer order (an acked frame resent would repeat).
    acked: Mutex<Vec<(String, u64)>>,
}

#[tonic::async_trait]
impl Ingest for Edge {
    async fn push(&self, req: Request<RawPushRequest>) -> Result<Response<PushResponse>, Status> {
        if self
            .fail_calls
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Status::unavailable("scripted call failure"));
        }
        let mut acks = Vec::new();
        for raw in req.into_inner().frames {
            let f = SignedFrame::decode(raw.clone())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let attempt = {
                let mut attempts = self.attempts.lock().unwrap();
                let v = attempts.entry((f.device_id.clone(), f.seq)).or_default();
                v.push(raw);
                v.len() - 1
            };
            let key = &self
                .registry
                .device(&f.device_id)
                .unwrap()
                .key(&f.key_id)
                .unwrap()
                .key;
            let code = if key
                .verify(
                    &mut Vec::new(),
                    &f.device_id,
                    &f.key_id,
                    f.seq,
                    &f.payload,
                    &f.signature,
                )
                .is_err()
            {
                16
            } else {
                (self.script)(&f, attempt)
            };
            if code == 0 {
                self.acked
                    .lock()
                    .unwrap()
                    .push((f.device_id.clone(), f.seq));
            }
            acks.push(FrameAck {
                device_id: f.device_id,
                seq: f.seq,
                code,
                message: String::new(),
            });
        }
        Ok(Response::new(PushResponse { acks }))
    }

    type PushStreamStream = tonic::codegen::BoxStream<PushResponse>;

    async fn push_stream(
        &self,
        _req: Request<tonic::Streaming<RawPushRequest>>,
    ) -> Result<Response<Self::PushStreamStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    secrets: PathBuf,
    edge: Arc<Edge>,
    addr: SocketAddr,
}

async fn setup(script: Script, fail_calls: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cfg = KeygenConfig {
        meters: 5,
        vehicles: 4,
        registry: dir.path().join("registry.jsonl"),
        secrets: dir.path().join("keys.jsonl"),
        seed: Some(5),
        ..KeygenConfig::default()
    };
    keygen(&cfg).unwrap();
    let edge = Arc::new(Edge {
        registry: Registry::load(&cfg.registry).unwrap(),
        script,
        fail_calls: AtomicU32::new(fail_calls),
        attempts: Mutex::default(),
        acked: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(IngestServer::from_arc(edge.clone()))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    Setup {
        _dir: dir,
        secrets: cfg.secrets,
        edge,
        addr,
    }
}

fn config(s: &Setup) -> LoadgenConfig {
    LoadgenConfig {
        seconds: 30.0,
        concurrency: 4,
        frames_per_request: 8,
        max_frames: Some(200),
        record_acked: true,
        ..LoadgenConfig::new(format!("http://{}", s.addr), &s.secrets)
    }
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
    }
}

/// Every frame sent has exactly one fate.
fn assert_accounted(r: &LoadgenReport) {
    assert_eq!(
        r.frames_sent,
        r.frames_acked + r.frames_refused() + r.abandoned,
        "{r:?}"
    );
}

/// Each (device, seq) the edge saw was always the same bytes: same seq, same signature.
fn assert_resends_identical(edge: &Edge) {
    for ((d, s), tries) in edge.attempts.lock().unwrap().iter() {
        assert!(
            tries.iter().all(|b| b == &tries[0]),
            "{d}/{s} changed between attempts"
        );
    }
}

#[tokio::test]
async fn retryable_codes_are_retried_until_every_frame_is_acked_once() {
    // the first attempt of every third seq gets 8, seq 2 of each device gets 14 twice
    let s = setup(
        Box::new(|f, attempt| match (f.seq, attempt) {
            (2, 0 | 1) => 14,
            (seq, 0) if seq % 3 == 0 => 8,
            _ => 0,
        }),
        0,
    )
    .await;
    let r = loadgen::run_with_policy(config(&s), fast_retries(10), CancellationToken::new())
        .await
        .unwrap();
    r.print();
    assert_accounted(&r);
    assert_eq!(r.frames_sent, 200);
    assert_eq!(r.frames_acked, 200);
    assert!(r.refused_by_code.is_empty() && r.abandoned == 0, "{r:?}");

    let attempts = s.edge.attempts.lock().unwrap().clone();
    let resent: u64 = attempts.values().map(|v| v.len() as u64 - 1).sum();
    assert_eq!(r.retries, resent);
    let expected_resends: u64 = attempts
        .keys()
        .map(|(_, seq)| match seq {
            2 => 2,
            seq if seq % 3 == 0 => 1,
            _ => 0,
        })
        .sum();
    assert_eq!(resent, expected_resends);
    assert!(resent > 50, "{resent}");
    assert_resends_identical(&s.edge);

    // acked exactly once each, and the report's list is the edge's list
    let edge_acked = s.edge.acked.lock().unwrap().clone();
    let unique: BTreeSet<(String, u64)> = edge_acked.iter().cloned().collect();
    assert_eq!(unique.len(), edge_acked.len(), "a frame was acked twice");
    let reported: BTreeSet<(String, u64)> = r
        .acked
        .iter()
        .map(|a| (a.device_id.clone(), a.seq))
        .collect();
    assert_eq!(r.acked.len(), 200);
    assert_eq!(reported, unique);

    // round-robin: each of the 9 devices sent seqs 1..=n without holes
    let mut per_device: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (d, seq) in unique {
        per_device.entry(d).or_default().push(seq);
    }
    assert_eq!(per_device.len(), 9);
    for (d, seqs) in &per_device {
        assert_eq!(*seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{d}");
        assert!(seqs.len() == 22 || seqs.len() == 23, "{d}: {}", seqs.len());
    }

    // row counts follow the frame kinds
    let rows: usize = r.acked.iter().map(|a| a.readings + a.samples).sum();
    assert_eq!(rows as u64, r.readings_acked + r.samples_acked);
    assert!(
        r.acked
            .iter()
            .filter(|a| a.device_id.starts_with("mtr-"))
            .all(|a| a.readings == 98)
    );
    assert!(
        r.acked
            .iter()
            .filter(|a| a.device_id.starts_with("veh-"))
            .all(|a| a.samples == 60)
    );
    assert!(
        r.latency_us.p50 > 0
            && r.latency_us.p50 <= r.latency_us.p99
            && r.latency_us.p99 <= r.latency_us.max
    );
    assert!(r.frames_per_sec() > 0.0 && r.readings_per_sec() > r.frames_per_sec());
}

#[tokio::test]
async fn final_codes_and_failed_calls() {
    // mtr-000002 is refused (7), veh-000003 seq 4 is malformed (3); the first two calls fail
    let s = setup(
        Box::new(|f, _| match (f.device_id.as_str(), f.seq) {
            ("mtr-000002", _) => 7,
            ("veh-000003", 4) => 3,
            _ => 0,
        }),
        2,
    )
    .await;
    let r = loadgen::run_with_policy(config(&s), fast_retries(10), CancellationToken::new())
        .await
        .unwrap();
    assert_accounted(&r);
    let attempts = s.edge.attempts.lock().unwrap().clone();
    let mtr2 = attempts.keys().filter(|(d, _)| d == "mtr-000002").count() as u64;
    assert_eq!(r.refused_by_code, BTreeMap::from([(3, 1), (7, mtr2)]));
    assert_eq!(r.frames_acked, 200 - mtr2 - 1);
    assert_eq!(r.abandoned, 0);
    assert_eq!(r.failed_calls, 2);
    // the two failed calls' frames were resent once each, refusals never
    assert_eq!(r.retries, 16);
    assert!(
        attempts
            .iter()
            .all(|((d, _), v)| d != "mtr-000002" || v.len() == 1)
    );
    assert_resends_identical(&s.edge);
    assert!(!r.acked.iter().any(|a| a.device_id == "mtr-000002"));
    assert!(
        r.summary().contains("permission_denied (7)"),
        "{}",
        r.summary()
    );
}

#[tokio::test]
async fn frames_still_retryable_after_the_last_attempt_are_abandoned() {
    let s = setup(
        Box::new(|f, _| if f.device_id == "mtr-000001" { 8 } else { 0 }),
        0,
    )
    .await;
    let r = loadgen::run_with_policy(config(&s), fast_retries(3), CancellationToken::new())
        .await
        .unwrap();
    assert_accounted(&r);
    let attempts = s.edge.attempts.lock().unwrap().clone();
    let mtr1: Vec<&Vec<Bytes>> = attempts
        .iter()
        .filter(|((d, _), _)| d == "mtr-000001")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(r.abandoned, mtr1.len() as u64);
    assert!(mtr1.iter().all(|v| v.len() == 3), "3 attempts each");
    assert_eq!(r.retries, 2 * mtr1.len() as u64);
    assert_eq!(r.frames_acked, 200 - mtr1.len() as u64);
}

#[tokio::test]
async fn cancellation_drains_in_flight_calls_and_progress_follows() {
    let s = setup(
        Box::new(|f, attempt| {
            if attempt == 0 && f.seq % 2 == 0 {
                14
            } else {
                0
            }
        }),
        0,
    )
    .await;
    let (tx, rx) = tokio::sync::watch::channel(LoadgenProgress::default());
    let cfg = LoadgenConfig {
        seconds: f64::INFINITY,
        max_frames: None,
        progress: Some(tx),
        ..config(&s)
    };
    let token = CancellationToken::new();
    let run = tokio::spawn(loadgen::run_with_policy(
        cfg,
        fast_retries(10),
        token.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("run stops after cancel")
        .unwrap()
        .unwrap();
    assert_accounted(&r);
    assert!(r.frames_sent > 0);
    assert_eq!(r.frames_acked, r.frames_sent, "drained, retries included");
    assert_eq!(s.edge.acked.lock().unwrap().len() as u64, r.frames_acked);
    let p = rx.borrow().clone();
    assert_eq!(
        (
            p.frames_sent,
            p.frames_acked,
            p.retries,
            p.requests_in_flight
        ),
        (r.frames_sent, r.frames_acked, r.retries, 0)
    );
}

#[tokio::test]
async fn rate_and_time_limits() {
    let s = setup(Box::new(|_, _| 0), 0).await;
    let cfg = LoadgenConfig {
        seconds: 0.5,
        max_frames: None,
        rate: Some(100.0),
        ..config(&s)
    };
    let started = std::time::Instant::now();
    let r = loadgen::run(cfg, CancellationToken::new()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_accounted(&r);
    // 100 frames/s for 0.5 s, generated in batches of 8
    assert!((40..=64).contains(&r.frames_sent), "{}", r.frames_sent);
}

#[tokio::test]
async fn a_hold_stops_new_calls_until_released() {
    let s = setup(Box::new(|_, _| 0), 0).await;
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(true);
    let (tx, mut rx) = tokio::sync::watch::channel(LoadgenProgress::default());
    let cfg = LoadgenConfig {
        hold: Some(hold_rx),
        progress: Some(tx),
        ..config(&s)
    };
    let run = tokio::spawn(loadgen::run(cfg, CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.borrow_and_update().frames_sent, 0, "held from the start");
    hold_tx.send(false).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("runs once released")
        .unwrap()
        .unwrap();
    assert_accounted(&r);
    assert_eq!(r.frames_acked, 200);
}

#[tokio::test]
async fn bad_configs_and_unreachable_targets_are_errors() {
    let s = setup(Box::new(|_, _| 0), 0).await;
    let bad = [
        LoadgenConfig {
            seconds: 0.0,
            ..config(&s)
        },
        LoadgenConfig {
            seconds: f64::NAN,
            ..config(&s)
        },
        LoadgenConfig {
            concurrency: 0,
            ..config(&s)
        },
        LoadgenConfig {
            frames_per_request: 0,
            ..config(&s)
        },
        LoadgenConfig {
            rate: Some(0.0),
            ..config(&s)
        },
    ];
    for cfg in bad {
        let err = loadgen::run(cfg, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, feeder_sim::Error::Config(_)), "{err}");
    }
    let missing = LoadgenConfig {
        secrets: s.secrets.with_file_name("nope.jsonl"),
        ..config(&s)
    };
    let err = loadgen::run(missing, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, feeder_sim::Error::Core(_)), "{err}");

    // a port nobody listens on
    let port = feeder_testkit::free_port();
    let unreachable = LoadgenConfig {
        target: format!("http://127.0.0.1:{port}"),
        ..config(&s)
    };
    let err = loadgen::run(unreachable, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, feeder_sim::Error::Connect { .. }), "{err}");
}

fn open_loop(s: &Setup, scenario: loadgen::Scenario) -> loadgen::OpenLoopConfig {
    loadgen::OpenLoopConfig {
        scenario,
        rate: 400.0,
        seconds: 1.0,
        max_in_flight: 4,
        frames_per_request: 8,
        ..loadgen::OpenLoopConfig::new(format!("http://{}", s.addr), &s.secrets)
    }
}

/// Open loop: every scheduled request was sent or counted late, every frame sent has one
/// fate, and the points add up to the total.
fn assert_open_loop_accounted(r: &loadgen::OpenLoopReport) {
    let t = &r.total;
    assert_eq!(t.requests_scheduled, t.requests_sent + t.requests_late);
    let refused: u64 = r.refused_by_code.values().sum();
    assert_eq!(
        t.frames_sent,
        t.frames_acked + refused + r.abandoned,
        "{r:?}"
    );
    let series_sent: u64 = r.series.iter().map(|p| p.requests_sent).sum();
    assert_eq!(series_sent, t.requests_sent);
    let series_late: u64 = r.series.iter().map(|p| p.requests_late).sum();
    assert_eq!(series_late, t.requests_late);
}

#[tokio::test]
async fn open_loop_steady_sends_on_its_timeline_and_accounts_for_every_request() {
    let s = setup(Box::new(|_, _| 0), 0).await;
    let (tx, rx) = tokio::sync::watch::channel(LoadgenProgress::default());
    let cfg = loadgen::OpenLoopConfig {
        progress: Some(tx),
        ..open_loop(&s, loadgen::Scenario::Steady)
    };
    let r = loadgen::run_open_loop(cfg, CancellationToken::new())
        .await
        .unwrap();
    println!("{}", r.summary());
    assert_open_loop_accounted(&r);
    // 400 frames/s for 1 s in requests of 8: 50 slots, never more
    assert_eq!(r.total.requests_scheduled, 50);
    assert!(r.total.requests_sent > 0);
    assert_eq!(r.total.frames_sent, 8 * r.total.requests_sent);
    assert_eq!(r.total.frames_acked, r.total.frames_sent);
    assert_eq!(r.total.codes, BTreeMap::from([(0, r.total.frames_acked)]));
    let l = r.total.ack_latency_ms;
    assert!(l.p50 > 0.0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    assert!(r.steps.is_empty() && r.stop_reason.is_none());
    assert_eq!(rx.borrow().frames_acked, r.total.frames_acked);
}

#[tokio::test]
async fn a_ramp_stops_at_the_first_step_the_edge_refuses_with_code_8() {
    // accepts the first 64 frames, then answers 8 to every attempt
    let seen = Arc::new(AtomicU32::new(0));
    let counter = seen.clone();
    let s = setup(
        Box::new(move |_, _| {
            if counter.fetch_add(1, Ordering::SeqCst) < 64 {
                0
            } else {
                8
            }
        }),
        0,
    )
    .await;
    let cfg = loadgen::OpenLoopConfig {
        rate: 100.0,
        ramp: loadgen::RampShape {
            step_seconds: 0.4,
            max_steps: 10,
            max_p99: Duration::from_secs(60),
            max_late_fraction: 1.0,
            ..loadgen::RampShape::default()
        },
        ..open_loop(&s, loadgen::Scenario::Ramp)
    };
    let r = loadgen::run_open_loop_with_policy(cfg, fast_retries(2), CancellationToken::new())
        .await
        .unwrap();
    println!("{}", r.summary());
    assert_open_loop_accounted(&r);
    // 100 frames/s x 0.4 s = 40 frames, then 80: the refusals begin in step 2 (later
    // only if a loaded machine made requests late)
    assert!(r.steps.len() >= 2, "{:?}", r.stop_reason);
    let offered: Vec<f64> = r.steps.iter().map(|p| p.offered_frames_per_sec).collect();
    let want: Vec<f64> = (1..=offered.len()).map(|i| 100.0 * i as f64).collect();
    assert_eq!(offered, want);
    assert!(r.stop_reason.as_deref().unwrap().contains("code 8"));
    assert!(r.steps.last().unwrap().codes[&8] > 0);
    assert!(!r.steps[0].codes.contains_key(&8));
    assert!(r.abandoned > 0 && r.retries > 0);
}

#[tokio::test]
async fn open_loop_writes_a_result_a_person_can_open() {
    let s = setup(Box::new(|_, _| 0), 0).await;
    let cfg = loadgen::OpenLoopConfig {
        burst_period: Duration::from_millis(500),
        burst_window: Duration::from_millis(200),
        ..open_loop(&s, loadgen::Scenario::BoundaryBurst)
    };
    let r = loadgen::run_open_loop(cfg, CancellationToken::new())
        .await
        .unwrap();
    assert_open_loop_accounted(&r);
    // 9 devices per 200 ms burst, twice, plus 400/s for 2 x 300 ms
    let offered_frames = 2.0 * 9.0 + 400.0 * 0.6;
    let offered: f64 = r
        .series
        .iter()
        .map(|p| p.offered_frames_per_sec * p.seconds)
        .sum();
    assert!((offered - offered_frames).abs() < 1e-6, "{offered}");
    let dir = tempfile::tempdir().unwrap();
    r.write(dir.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("result.json")).unwrap()).unwrap();
    assert_eq!(json["scenario"], "boundary-burst");
    assert!(json["total"]["ack_latency_ms"]["p999"].is_number());
    let svg = std::fs::read_to_string(dir.path().join("result.svg")).unwrap();
    assert!(svg.contains("<polyline") && svg.trim_end().ends_with("</svg>"));
}
