//! Cheap before expensive, for attackers too: forged frames for a real device, from one
//! peer, against the real edge. Verifications are counted by the edge's own metric
//! (`feeder_edge_verifications_total{result}`), so the test measures what was spent.

mod common;

use feeder_edge::{EdgeConfig, FailureBudget};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_proto::v1::{PushRequest, SignedFrame};
use feeder_sim::attacks;

use common::*;

const FORGED: usize = 10_000;

fn refused(reason: &str) -> f64 {
    counter("feeder_edge_frames_refused_total", &[("reason", reason)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_forgeries_from_one_peer_cost_at_most_its_budget_of_verifications() {
    metrics();
    let work = tempfile::tempdir().unwrap();
    let (registry, mut keys) = provision(work.path(), 3, 0);
    let topics = Topics::with_prefix("edge-peer-budget", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let budget = FailureBudget {
        per_connection: 32,
        per_address: 128,
        ..FailureBudget::default()
    };
    let cfg = EdgeConfig {
        failure_budget: budget,
        device_rate_per_sec: 1_000_000.0,
        device_burst: 1_000_000,
        ..EdgeConfig::default()
    };
    let edge = Edge::start(&kafka, &topics, cfg, &registry).await;
    let mut victim = device(&mut keys, "mtr-000001");
    let forged: Vec<SignedFrame> = (0..FORGED as u64)
        .map(|i| attacks::forged(&victim, 1 + i, START_MS))
        .collect();

    // one connection: 10 requests of 1000 forged frames
    let ch = edge.channel().await;
    let mut codes = std::collections::HashMap::<i32, usize>::new();
    for chunk in forged.chunks(1000) {
        let resp = IngestClient::new(ch.clone())
            .push(PushRequest {
                frames: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        for a in resp.acks {
            *codes.entry(a.code).or_default() += 1;
        }
    }
    let failed = counter("feeder_edge_verifications_total", &[("result", "failed")]);
    println!("{FORGED} forged frames on one connection: {failed} verifications, acks {codes:?}");
    assert_eq!(failed, f64::from(budget.per_connection));
    assert_eq!(codes.get(&16), Some(&(budget.per_connection as usize)));
    assert_eq!(
        codes.get(&8),
        Some(&(FORGED - budget.per_connection as usize))
    );
    assert_eq!(
        refused("peer_failed_verifications"),
        (FORGED - budget.per_connection as usize) as f64
    );

    // new connections from the same address, concurrently: the address budget holds
    let calls: Vec<_> = forged
        .chunks(500)
        .map(|chunk| {
            let frames = chunk.to_vec();
            let addr = edge.addr;
            tokio::spawn(async move {
                let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                IngestClient::new(ch)
                    .push(PushRequest { frames })
                    .await
                    .unwrap()
                    .into_inner()
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    let failed = counter("feeder_edge_verifications_total", &[("result", "failed")]);
    println!(
        "then {FORGED} more over 20 concurrent connections from the same address: \
         {failed} verifications in all"
    );
    assert!(failed <= f64::from(budget.per_address), "{failed}");

    // the peer is cooling off: even a valid frame from it is refused, unverified (8)
    let ok_before = counter("feeder_edge_verifications_total", &[("result", "ok")]);
    let resp = IngestClient::new(edge.channel().await)
        .push(PushRequest {
            frames: vec![victim.next_frame(START_MS).frame],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.acks[0].code, 8, "{:?}", resp.acks);
    assert!(resp.acks[0].message.contains("failed verification"));
    assert_eq!(
        counter("feeder_edge_verifications_total", &[("result", "ok")]),
        ok_before
    );
    edge.stop().await;
}
