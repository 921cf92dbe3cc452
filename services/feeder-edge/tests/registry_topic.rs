//! The edge's registry from its Kafka topic (device contract v1.1), on the embedded
//! broker: read from the beginning before anything is served, then followed; signed
//! updates in force within seconds (a revocation, a removal); unsigned, badly signed
//! and mis-keyed records refused and counted, the entry in force kept.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use feeder_core::registry_topic::{
    ProvisioningKeys, SIGNATURE_HEADER, SIGNER_HEADER, record_key, signing_input,
};
use feeder_core::{KeyStatus, SigningKey};
use feeder_edge::SharedRegistry;
use feeder_edge::registry_topic::{TopicSource, load};
use feeder_kafka::{EmbeddedBroker, KafkaConfig};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "it.registry";

fn line(i: u8, status: &str) -> String {
    let pk = SigningKey::ed25519_from_seed(&[i; 32])
        .unwrap()
        .ed25519_public()
        .unwrap();
    format!(
        r#"{{"device_id":"mtr-{i:06}","key_id":"k1","alg":"ed25519","public_key":"{}","kind":"meter","status":"{status}","labels":{{}}}}"#,
        hex::encode(pk)
    )
}

/// How a record is signed.
#[derive(Clone, Copy)]
enum Sig<'a> {
    By(&'a SigningKey),
    Unsigned,
    /// Signed by the key, over another record key.
    Misplaced(&'a SigningKey),
}

async fn publish(producer: &FutureProducer, i: u8, value: Option<&str>, sig: Sig<'_>) {
    let key = record_key(&format!("mtr-{i:06}"), "k1");
    let mut rec = FutureRecord::<str, [u8]>::to(TOPIC).key(&key);
    if let Some(v) = value {
        rec = rec.payload(v.as_bytes());
    }
    let signature = match sig {
        Sig::By(sk) => {
            Some(sk.sign_input(&signing_input(key.as_bytes(), value.map(str::as_bytes)).unwrap()))
        }
        Sig::Misplaced(sk) => {
            Some(sk.sign_input(&signing_input(b"mtr-999999/k1", value.map(str::as_bytes)).unwrap()))
        }
        Sig::Unsigned => None,
    };
    if let Some(s) = &signature {
        rec = rec.headers(
            OwnedHeaders::new()
                .insert(Header {
                    key: SIGNER_HEADER,
                    value: Some("prov-1"),
                })
                .insert(Header {
                    key: SIGNATURE_HEADER,
                    value: Some(s.as_slice()),
                }),
        );
    }
    producer
        .send(rec, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

fn status(reg: &SharedRegistry, i: u8) -> Option<KeyStatus> {
    reg.snapshot()
        .device(&format!("mtr-{i:06}"))
        .map(|d| d.keys[0].status)
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_updates_are_in_force_within_seconds_and_the_rest_is_refused() {
    let broker = EmbeddedBroker::start(1, &[TOPIC], 3).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka
        .producer("provisioning", 1000, 10_000)
        .create()
        .unwrap();
    let prov = SigningKey::ed25519_from_seed(&[42; 32]).unwrap();
    let rogue = SigningKey::ed25519_from_seed(&[66; 32]).unwrap();
    let keys = ProvisioningKeys::from_keys([("prov-1".into(), prov.ed25519_public().unwrap())]);

    for i in 1..=3 {
        publish(&producer, i, Some(&line(i, "active")), Sig::By(&prov)).await;
    }
    // refused at load: unsigned, signed by a key not configured, signed for another key
    publish(&producer, 4, Some(&line(4, "active")), Sig::Unsigned).await;
    publish(&producer, 5, Some(&line(5, "active")), Sig::By(&rogue)).await;
    publish(
        &producer,
        6,
        Some(&line(6, "active")),
        Sig::Misplaced(&prov),
    )
    .await;

    let registry = SharedRegistry::default();
    assert!(!registry.is_loaded());
    let stop = CancellationToken::new();
    let src = TopicSource {
        topic: TOPIC.into(),
        keys,
    };
    let stats = load(&kafka, src, registry.clone(), stop.clone())
        .await
        .unwrap();
    assert!(registry.is_loaded(), "in force before load returns");
    assert_eq!(registry.devices(), 3);
    assert_eq!(stats.refused.load(Ordering::Relaxed), 3);
    assert_eq!(status(&registry, 4), None);

    // a signed revocation is in force within seconds; an unsigned reactivation is not
    publish(&producer, 1, Some(&line(1, "revoked")), Sig::By(&prov)).await;
    let took = wait_for("the revocation", || {
        status(&registry, 1) == Some(KeyStatus::Revoked)
    })
    .await;
    println!("revocation in force after {took:?}");
    publish(&producer, 1, Some(&line(1, "active")), Sig::Unsigned).await;
    publish(&producer, 2, None, Sig::By(&prov)).await;
    wait_for("the removal", || status(&registry, 2).is_none()).await;
    assert_eq!(
        status(&registry, 1),
        Some(KeyStatus::Revoked),
        "unsigned reactivation refused"
    );
    assert_eq!(stats.refused.load(Ordering::Relaxed), 4);
    // an unsigned tombstone removes nothing
    publish(&producer, 3, None, Sig::Unsigned).await;
    publish(&producer, 7, Some(&line(7, "active")), Sig::By(&prov)).await;
    wait_for("device 7", || status(&registry, 7).is_some()).await;
    assert_eq!(status(&registry, 3), Some(KeyStatus::Active));
    assert_eq!(stats.refused.load(Ordering::Relaxed), 5);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_provisioning_keys_every_well_formed_record_is_taken() {
    let broker = EmbeddedBroker::start(1, &[TOPIC], 1).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let producer: FutureProducer = kafka
        .producer("provisioning", 1000, 10_000)
        .create()
        .unwrap();
    publish(&producer, 1, Some(&line(1, "active")), Sig::Unsigned).await;
    publish(&producer, 2, Some("{not a line"), Sig::Unsigned).await;
    let registry = SharedRegistry::default();
    let stop = CancellationToken::new();
    let src = TopicSource {
        topic: TOPIC.into(),
        keys: ProvisioningKeys::default(),
    };
    let stats = load(&kafka, src, registry.clone(), stop.clone())
        .await
        .unwrap();
    assert_eq!(registry.devices(), 1);
    assert_eq!(
        stats.refused.load(Ordering::Relaxed),
        1,
        "the malformed line"
    );
    stop.cancel();
}
