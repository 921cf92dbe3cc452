//! Registry hot reload against the real edge: a device revoked while frames flow is
//! refused within 5 s while the others keep flowing; a malformed rewrite keeps the last
//! good registry; SIGHUP reloads even when polling would not notice.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use feeder_core::KeyStatus;
use feeder_edge::EdgeConfig;
use feeder_edge::reload::{Reloaded, reload_once};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::v1::PushRequest;
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_sim::SimDevice;
use tokio::sync::Mutex;

use common::*;

/// (elapsed since start, device index, code) of every ack.
type Log = Arc<Mutex<Vec<(Duration, usize, i32)>>>;

/// Sends one frame per device, round robin, every 10 ms until `stop`.
fn spawn_flow(
    ch: tonic::transport::Channel,
    mut devices: Vec<SimDevice>,
    log: Log,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = IngestClient::new(ch);
        while !stop.load(Ordering::Relaxed) {
            for (i, d) in devices.iter_mut().enumerate() {
                let f = d.next_frame(START_MS).frame;
                let r = client
                    .push(PushRequest { frames: vec![f] })
                    .await
                    .unwrap()
                    .into_inner();
                log.lock().await.push((t0.elapsed(), i, r.acks[0].code));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_while_frames_flow_and_malformed_rewrite_keeps_last_good() {
    let work = tempfile::tempdir().unwrap();
    let (registry, mut keys) = provision(work.path(), 3, 0);
    let good_lines = read_lines(&registry);
    let topics = Topics::with_prefix("edge-reload", 2, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let cfg = EdgeConfig {
        registry_path: Some(registry.clone()),
        registry_poll: Duration::from_secs(1),
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&kafka, &topics, cfg, &registry).await;
    let devices = vec![
        device(&mut keys, "mtr-000001"),
        device(&mut keys, "mtr-000002"),
        device(&mut keys, "mtr-000003"),
    ];
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let flow = spawn_flow(edge.channel().await, devices, log.clone(), t0, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // revoke mtr-000001 (its only key: a revoked device)
    let mut revoked = good_lines.clone();
    revoked[0].status = KeyStatus::Revoked;
    assert_eq!(revoked[0].device_id, "mtr-000001");
    let revoked_at = t0.elapsed();
    write_lines(&registry, &revoked);
    tokio::time::sleep(Duration::from_secs(5)).await;

    // a malformed rewrite (line 2 is not JSON): the registry with the revocation stays
    let mut text: String = revoked
        .iter()
        .map(|l| serde_json::to_string(l).unwrap() + "\n")
        .collect();
    text = text.replacen("{\"device_id\":\"mtr-000002\"", "{not json", 1);
    // re-activating mtr-000001 in the same broken file must not take effect either
    text = text.replacen("\"revoked\"", "\"active\"", 1);
    let malformed_at = t0.elapsed();
    write_atomically(&registry, &text);
    assert_eq!(
        reload_once(&registry, &edge.registry).await,
        Reloaded::KeptLastGood
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    flow.await.unwrap();

    let log = log.lock().await.clone();
    let first_refusal = log
        .iter()
        .find(|(t, i, c)| *t > revoked_at && *i == 0 && *c != 0)
        .map(|(t, _, c)| (*t, *c))
        .expect("the revoked device was never refused");
    let latency = first_refusal.0 - revoked_at;
    println!("revocation took effect after {latency:?} (poll 1 s)");
    assert_eq!(first_refusal.1, 7, "revoked device: code 7");
    assert!(latency < Duration::from_secs(5), "{latency:?}");
    // once refused, always refused (also across the malformed rewrite)
    assert!(
        log.iter()
            .filter(|(t, i, _)| *t >= first_refusal.0 && *i == 0)
            .all(|(_, _, c)| *c == 7)
    );
    // before the revocation it was accepted
    assert!(
        log.iter()
            .filter(|(t, i, _)| *t < revoked_at && *i == 0)
            .all(|(_, _, c)| *c == 0)
    );
    // the others kept flowing the whole time, including after the malformed rewrite
    for dev in [1, 2] {
        let acks: Vec<i32> = log
            .iter()
            .filter(|(_, i, _)| *i == dev)
            .map(|e| e.2)
            .collect();
        assert!(acks.len() > 50, "device {dev}: {} acks", acks.len());
        assert!(acks.iter().all(|c| *c == 0), "device {dev}: {acks:?}");
        assert!(
            log.iter().any(|(t, i, c)| *i == dev
                && *t > malformed_at + Duration::from_secs(2)
                && *c == 0)
        );
    }
    edge.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_registry() {
    let work = tempfile::tempdir().unwrap();
    let (registry, mut keys) = provision(work.path(), 1, 0);
    let lines = read_lines(&registry);
    let topics = Topics::with_prefix("edge-sighup", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    // polling so slow that only SIGHUP can explain a reload within the test
    let cfg = EdgeConfig {
        registry_path: Some(registry.clone()),
        registry_poll: Duration::from_secs(3600),
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&kafka, &topics, cfg, &registry).await;
    let mut d = device(&mut keys, "mtr-000001");
    let mut client = IngestClient::new(edge.channel().await);
    let mut push = async |d: &mut SimDevice| {
        client
            .push(PushRequest {
                frames: vec![d.next_frame(START_MS).frame],
            })
            .await
            .unwrap()
            .into_inner()
            .acks[0]
            .code
    };
    assert_eq!(push(&mut d).await, 0);
    let mut revoked = lines.clone();
    revoked[0].status = KeyStatus::Revoked;
    write_lines(&registry, &revoked);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(push(&mut d).await, 0, "no reload without the signal");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if push(&mut d).await == 7 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    edge.stop().await;
}

/// A registry change made after the edge read the file but before its watcher started
/// (slow brokers at start) is still picked up: the watcher starts from the version the
/// registry in force was read from, not from the file as it is when the watcher starts.
#[tokio::test]
async fn a_change_made_while_the_edge_starts_is_not_missed() {
    let work = tempfile::tempdir().unwrap();
    let (registry, _) = provision(work.path(), 3, 0);
    let shared = feeder_edge::SharedRegistry::load(&registry).unwrap();
    assert_eq!(shared.devices(), 3);
    let lines = read_lines(&registry);
    write_lines(&registry, &lines[..2]);
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(feeder_edge::reload::watch(
        registry.clone(),
        shared.clone(),
        Duration::from_millis(50),
        Arc::new(tokio::sync::Notify::new()),
        stop.clone(),
    ));
    let t0 = Instant::now();
    while shared.devices() != 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the change was missed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    watcher.await.unwrap();
}
