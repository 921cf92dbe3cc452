//! Edge verification throughput on one core, beside ring's raw verify rate for the same
//! frames: the ratio shows what decoding, admission and lookup cost on top of the crypto.
//! Also the time to verify one large request, on one thread and the way the edge does it
//! (chunks on the blocking pool, one per core): the ratio is the latency a gateway's
//! batch saves.
//!
//! `cargo bench -p feeder-benches --bench edge_verify`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use feeder_core::signing::signing_input;
use feeder_edge::EdgeConfig;
use feeder_edge::admission::{Admitted, admit};
use feeder_edge::verify::{verify_all, verify_off_runtime};
use feeder_proto::v1::SignedFrame;
use prost::Message;

fn bench(c: &mut Criterion) {
    let fx = feeder_benches::fixture(50, 4);
    let cfg = EdgeConfig::default();
    for (name, frames) in [("ed25519", &fx.ed25519), ("hmac", &fx.hmac)] {
        let mut g = c.benchmark_group(format!("verify_{name}"));
        g.throughput(Throughput::Elements(frames.len() as u64));
        // Baseline: ring alone, signing inputs prebuilt, keys pre-looked-up.
        let prepared: Vec<_> = frames
            .iter()
            .map(|b| {
                let f = SignedFrame::decode(b.clone()).expect("frame");
                let key = fx
                    .registry
                    .device(&f.device_id)
                    .and_then(|d| d.key(&f.key_id))
                    .expect("key")
                    .key
                    .clone();
                (
                    key,
                    signing_input(&f.device_id, &f.key_id, f.seq, &f.payload),
                    f.signature,
                )
            })
            .collect();
        g.bench_function("raw_ring", |b| {
            b.iter(|| {
                for (key, input, sig) in &prepared {
                    black_box(key.verify_input(input, sig)).expect("valid");
                }
            })
        });
        // Feeder's edge path: decode, admission checks, registry lookup, verification.
        g.bench_function("edge_admit_and_verify", |b| {
            b.iter(|| {
                let cands: Vec<_> = frames
                    .iter()
                    .filter_map(|raw| match admit(raw, &fx.registry, &cfg) {
                        Admitted::Candidate(c) => Some(*c),
                        Admitted::Refused(..) => None,
                    })
                    .collect();
                let res = verify_all(&cands);
                assert!(res.iter().all(Result::is_ok));
                black_box(res);
            })
        });
        g.finish();
    }
    one_large_request(c, &fx, &cfg);
}

/// One request of every Ed25519 frame of the fixture (400, under the default maximum of
/// 1000 a request), admitted beforehand: verification alone, one thread against chunked.
fn one_large_request(c: &mut Criterion, fx: &feeder_benches::Fixture, cfg: &EdgeConfig) {
    let cands: Vec<_> = fx
        .ed25519
        .iter()
        .filter_map(|raw| match admit(raw, &fx.registry, cfg) {
            Admitted::Candidate(c) => Some(*c),
            Admitted::Refused(..) => None,
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("one_request_ed25519");
    g.throughput(Throughput::Elements(cands.len() as u64));
    g.bench_function("one_thread", |b| b.iter(|| black_box(verify_all(&cands))));
    g.bench_function("chunked_per_core", |b| {
        b.iter_batched(
            || cands.clone(),
            |cs| {
                let (_, res) = rt.block_on(verify_off_runtime(cs));
                assert_eq!(res.len(), cands.len());
                black_box(res)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
