//! OCMF verification on one core (issue 14): the edge's whole per-frame decision for a
//! frame of a meter that signs in OCMF (decoding, admission, registry lookup, the
//! string's shape, PG and serial checks with its JSON parsed, then ECDSA P-256 over the
//! payload section) beside ring's raw P-256 verify of the same signatures over the same
//! bytes, with everything ring needs prepared outside the timed loop. After the
//! criterion group, a summary prints the frames/s of each and their ratio, best of 7
//! passes, and the time of one 400-frame request verified the way the edge does it
//! (chunks on the blocking pool, one per core).
//!
//! `cargo bench -p feeder-benches --bench ocmf_verify`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use feeder_core::keyfile::load_key_file;
use feeder_core::{Registry, VerifyingKey};
use feeder_edge::EdgeConfig;
use feeder_edge::admission::{Admitted, admit};
use feeder_edge::verify::{verify_all, verify_off_runtime};
use feeder_sim::fleet::Fleet;
use feeder_sim::keygen::{KeygenConfig, keygen};
use prost::Message;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

const CHARGERS: usize = 20;
const SESSIONS: usize = 20;

struct Fixture {
    registry: Registry,
    frames: Vec<bytes::Bytes>,
    /// (public point, payload section, DER signature) of each frame, for ring alone.
    raw: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("feeder-bench-ocmf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = KeygenConfig {
        meters: 0,
        vehicles: 0,
        ocmf: CHARGERS,
        registry: dir.join("registry.jsonl"),
        secrets: dir.join("keys.jsonl"),
        ..KeygenConfig::default()
    };
    keygen(&cfg).expect("keygen");
    let registry = Registry::load(&cfg.registry).expect("registry");
    let mut fleet = Fleet::from_keys(load_key_file(&cfg.secrets).expect("keys"), 0);
    let signed: Vec<_> = (0..CHARGERS * SESSIONS)
        .map(|_| fleet.next_frame(0).expect("frame").frame)
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let raw = signed
        .iter()
        .map(|f| {
            let key = &registry
                .device(&f.device_id)
                .and_then(|d| d.key(&f.key_id))
                .expect("key")
                .key;
            let VerifyingKey::Ocmf(k) = key else {
                panic!("not an OCMF key")
            };
            let point = k.spki_der()[26..].to_vec();
            let (payload, sig) = feeder_core::ocmf::split(&f.payload).expect("shape");
            let sig = std::str::from_utf8(sig).expect("utf-8");
            let sd = sig.split("\"SD\":\"").nth(1).expect("SD");
            let der = hex::decode(&sd[..sd.find('"').expect("end")]).expect("hex");
            (point, payload.to_vec(), der)
        })
        .collect();
    Fixture {
        registry,
        frames: signed
            .iter()
            .map(|f| bytes::Bytes::from(f.encode_to_vec()))
            .collect(),
        raw,
    }
}

fn ring_raw(fx: &Fixture) {
    for (point, payload, der) in &fx.raw {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
            .verify(payload, der)
            .expect("valid");
    }
}

fn edge_path(fx: &Fixture, cfg: &EdgeConfig) {
    let cands: Vec<_> = fx
        .frames
        .iter()
        .filter_map(|raw| match admit(raw, &fx.registry, cfg) {
            Admitted::Candidate(c) => Some(*c),
            Admitted::Refused(..) => None,
        })
        .collect();
    let res = verify_all(&cands);
    assert!(res.len() == fx.frames.len() && res.iter().all(Result::is_ok));
    black_box(res);
}

/// Frames per second of `f` over `n` frames, best of 7 passes (after one warm-up).
fn rate(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            n as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn bench(c: &mut Criterion) {
    let fx = fixture();
    let cfg = EdgeConfig::default();
    let mut g = c.benchmark_group("verify_ocmf");
    g.throughput(Throughput::Elements(fx.frames.len() as u64));
    g.sample_size(20);
    g.bench_function("ring_p256_raw", |b| b.iter(|| ring_raw(&fx)));
    g.bench_function("edge_admit_and_verify", |b| b.iter(|| edge_path(&fx, &cfg)));
    g.finish();

    let n = fx.frames.len();
    let ring = rate(n, || ring_raw(&fx));
    let edge = rate(n, || edge_path(&fx, &cfg));
    let cands: Vec<_> = fx
        .frames
        .iter()
        .filter_map(|raw| match admit(raw, &fx.registry, &cfg) {
            Admitted::Candidate(c) => Some(*c),
            Admitted::Refused(..) => None,
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let chunked = rate(n, || {
        let (_, res) = rt.block_on(verify_off_runtime(cands.clone()));
        assert!(res.iter().all(Result::is_ok));
    });
    println!(
        "\nOCMF, one core, {n} frames: ring P-256 raw verify {ring:.0} frames/s, edge path \
         (admission + shape/PG/serial + verify) {edge:.0} frames/s ({:.2}x ring); one request of \
         {n} on the blocking pool, all cores: {chunked:.0} frames/s",
        edge / ring
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
