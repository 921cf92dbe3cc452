//! TLS and mutual TLS on the device port (certificates made by the `openssl` CLI): a
//! client without a certificate, or with one from another CA, is refused; a device
//! certificate is accepted for its own device_id and gets code 7 for another device's.

mod common;

use std::path::Path;
use std::process::Command;

use feeder_edge::{EdgeConfig, TlsFiles};
use feeder_kafka::{EmbeddedBroker, KafkaConfig, Topics};
use feeder_proto::v1::PushRequest;
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_sim::SimDevice;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf certificate `name` signed by CA `ca` with the given SAN and extended key usage.
fn leaf(dir: &Path, ca: &str, name: &str, san: &str, eku: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn read(dir: &Path, f: &str) -> Vec<u8> {
    std::fs::read(dir.join(f)).unwrap()
}

/// Connects and pushes one frame; `Err` if the handshake or the call fails.
async fn push(
    addr: std::net::SocketAddr,
    tls: Option<ClientTlsConfig>,
    d: &mut SimDevice,
) -> Result<i32, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Channel::from_shared(format!("{scheme}://localhost:{}", addr.port())).unwrap();
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let ch = ep.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    let r = IngestClient::new(ch)
        .push(PushRequest {
            frames: vec![d.next_frame(START_MS).frame],
        })
        .await
        .map_err(|s| format!("call: {s:?}"))?;
    Ok(r.into_inner().acks[0].code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_strangers_and_checks_device_identity() {
    let work = tempfile::tempdir().unwrap();
    let (registry, mut keys) = provision(work.path(), 2, 0);
    let pki = work.path();
    ca(pki, "ca");
    ca(pki, "other-ca");
    leaf(
        pki,
        "ca",
        "edge",
        "DNS:localhost,IP:127.0.0.1",
        "serverAuth",
    );
    leaf(pki, "ca", "mtr-000001", "DNS:mtr-000001", "clientAuth");
    leaf(pki, "other-ca", "stranger", "DNS:mtr-000001", "clientAuth");
    // names that DNS matching would accept but the exact rule does not
    leaf(pki, "ca", "upper", "DNS:MTR-000002", "clientAuth");

    let topics = Topics::with_prefix("edge-tls", 1, 1);
    let broker = EmbeddedBroker::start(1, &topics.data_topics(), topics.partitions).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let cfg = EdgeConfig {
        tls: Some(TlsFiles {
            cert: pki.join("edge.pem"),
            key: pki.join("edge.key"),
            client_ca: Some(pki.join("ca.pem")),
            require_device_identity: true,
        }),
        ..EdgeConfig::default()
    };
    // the harness's health probe is plaintext, so start without waiting for it
    let reg = feeder_edge::SharedRegistry::new(feeder_core::Registry::load(&registry).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = {
        let (k, t, r, s) = (kafka.clone(), topics.clone(), reg.clone(), stop.clone());
        tokio::spawn(async move { feeder_edge::serve(listener, &k, &t, cfg, r, s).await })
    };

    let server_ca = Certificate::from_pem(read(pki, "ca.pem"));
    let base = ClientTlsConfig::new()
        .ca_certificate(server_ca)
        .domain_name("localhost");
    let device_tls = base.clone().identity(Identity::from_pem(
        read(pki, "mtr-000001.pem"),
        read(pki, "mtr-000001.key"),
    ));
    let stranger_tls = base.clone().identity(Identity::from_pem(
        read(pki, "stranger.pem"),
        read(pki, "stranger.key"),
    ));

    let mut m1 = device(&mut keys, "mtr-000001");
    let mut m2 = device(&mut keys, "mtr-000002");

    // the device's own certificate: accepted (retry while the edge starts)
    let started = std::time::Instant::now();
    let code = loop {
        match push(addr, Some(device_tls.clone()), &mut m1).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(started.elapsed().as_secs() < 30, "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(code, 0);
    // the same certificate may not send another device's (validly signed) frames
    assert_eq!(push(addr, Some(device_tls.clone()), &mut m2).await, Ok(7));

    // a certificate naming the device in another case is not the device's (exact match)
    let upper_tls = base.clone().identity(Identity::from_pem(
        read(pki, "upper.pem"),
        read(pki, "upper.key"),
    ));
    assert_eq!(push(addr, Some(upper_tls), &mut m2).await, Ok(7));

    // no client certificate, a certificate from another CA, or plaintext: refused
    let no_cert = push(addr, Some(base.clone()), &mut m1).await;
    assert!(no_cert.is_err(), "{no_cert:?}");
    let stranger = push(addr, Some(stranger_tls), &mut m1).await;
    assert!(stranger.is_err(), "{stranger:?}");
    let plain = push(addr, None, &mut m1).await;
    assert!(plain.is_err(), "{plain:?}");

    assert_eq!(
        raw_count(&kafka, &topics).await,
        1,
        "only the one accepted frame"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// The identity rule is an exact, case-sensitive match against the SAN DNS names and URIs:
/// a wildcard names no device and case is not folded (webpki's DNS matching, used before,
/// accepted both).
#[test]
fn device_identity_is_an_exact_match_of_dns_names_and_uris() {
    use feeder_edge::tls::DeviceIdentity;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let work = tempfile::tempdir().unwrap();
    let pki = work.path();
    ca(pki, "ca");
    leaf(pki, "ca", "wild", "DNS:*.meters.example", "clientAuth");
    leaf(pki, "ca", "upper", "DNS:MTR-000002", "clientAuth");
    leaf(
        pki,
        "ca",
        "both",
        "DNS:mtr-000003,URI:urn:feeder:mtr-000004",
        "clientAuth",
    );
    let identity_of = |name: &str| {
        let der = CertificateDer::from_pem_slice(&read(pki, &format!("{name}.pem"))).unwrap();
        Some(std::sync::Arc::new(vec![der]))
    };
    let cases: [(&str, &str, bool); 9] = [
        ("wild", "a.meters.example", false),
        ("wild", "*.meters.example", false),
        ("upper", "mtr-000002", false),
        ("upper", "Mtr-000002", false),
        ("upper", "MTR-000002", true),
        ("both", "mtr-000003", true),
        ("both", "MTR-000003", false),
        ("both", "urn:feeder:mtr-000004", true),
        ("both", "mtr-000004", false),
    ];
    for (cert, device_id, want) in cases {
        let certs = identity_of(cert);
        assert_eq!(
            DeviceIdentity::new(&certs).permits(device_id),
            want,
            "{cert} for {device_id}"
        );
    }
    assert!(!DeviceIdentity::new(&None).permits("mtr-000003"));
}
