//! Edge verification throughput on one core, beside ring's single Ed25519 verify for the
//! same frames in the same run (issue 13's target: the edge path at least 2x ring per
//! core). The edge path is decoding, admission, registry lookup and verification, with
//! Ed25519 signatures verified in batches (`feeder_core::ed25519`); `rule_single` is the
//! same rule one signature at a time (what `feeder verify` does). After the criterion
//! groups, a summary prints the frames/s of each and the ratio, best of 15 interleaved
//! passes.
//! Also the time to verify one large request, on one thread and the way the edge does it
//! (chunks on the blocking pool, one per core).
//!
//! `cargo bench -p feeder-benches --bench edge_verify`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use feeder_core::VerifyingKey;
use feeder_core::signing::signing_input;
use feeder_edge::EdgeConfig;
use feeder_edge::admission::{Admitted, admit};
use feeder_edge::verify::{verify_all, verify_off_runtime};
use feeder_proto::v1::SignedFrame;
use prost::Message;

/// A frame's key, signing input and signature, prepared outside the timed loop.
type Prepared = (VerifyingKey, Vec<u8>, bytes::Bytes);

fn prepare(fx: &feeder_benches::Fixture, frames: &[bytes::Bytes]) -> Vec<Prepared> {
    frames
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
        .collect()
}

/// ring alone: the baseline. HMAC keys go through ring as well (`verify_input`).
fn ring_single(prepared: &[Prepared]) {
    for (key, input, sig) in prepared {
        match key {
            VerifyingKey::Ed25519(pk) => {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk)
                    .verify(input, sig)
                    .expect("valid");
            }
            VerifyingKey::Hmac(_) | VerifyingKey::Ocmf(_) => {
                key.verify_input(input, sig).expect("valid")
            }
        }
    }
}

fn edge_path(fx: &feeder_benches::Fixture, frames: &[bytes::Bytes], cfg: &EdgeConfig) {
    let cands: Vec<_> = frames
        .iter()
        .filter_map(|raw| match admit(raw, &fx.registry, cfg) {
            Admitted::Candidate(c) => Some(*c),
            Admitted::Refused(..) => None,
        })
        .collect();
    let res = verify_all(&cands);
    assert!(res.len() == frames.len() && res.iter().all(Result::is_ok));
    black_box(res);
}

fn bench(c: &mut Criterion) {
    let fx = feeder_benches::fixture(50, 4);
    let cfg = EdgeConfig::default();
    for (name, frames) in [("ed25519", &fx.ed25519), ("hmac", &fx.hmac)] {
        let mut g = c.benchmark_group(format!("verify_{name}"));
        g.throughput(Throughput::Elements(frames.len() as u64));
        let prepared = prepare(&fx, frames);
        g.bench_function("ring_single", |b| b.iter(|| ring_single(&prepared)));
        g.bench_function("rule_single", |b| {
            b.iter(|| {
                for (key, input, sig) in &prepared {
                    black_box(key.verify_input(input, sig)).expect("valid");
                }
            })
        });
        // Feeder's edge path: decode, admission checks, registry lookup, verification.
        g.bench_function("edge_admit_and_verify", |b| {
            b.iter(|| edge_path(&fx, frames, &cfg))
        });
        g.finish();
    }
    one_large_request(c, &fx, &cfg);
    summary(&fx, &cfg);
}

/// Timed passes of each contender in the summary, interleaved: ring, rule, edge, ring,
/// ... so load from elsewhere on a shared machine falls on all three alike.
const PASSES: usize = 15;

/// Seconds of one pass of `f`.
fn time(f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// The figure, printed: Ed25519 frames/s on one core, edge path against ring,
/// best pass against best pass over [`PASSES`] interleaved passes (after one warm-up).
fn summary(fx: &feeder_benches::Fixture, cfg: &EdgeConfig) {
    let frames = &fx.ed25519;
    let prepared = prepare(fx, frames);
    let mut ring = || ring_single(&prepared);
    let mut rule = || {
        for (key, input, sig) in &prepared {
            black_box(key.verify_input(input, sig)).expect("valid");
        }
    };
    let mut edge = || edge_path(fx, frames, cfg);
    let mut contenders: [&mut dyn FnMut(); 3] = [&mut ring, &mut rule, &mut edge];
    let mut best = [f64::INFINITY; 3];
    for pass in 0..=PASSES {
        for (i, f) in contenders.iter_mut().enumerate() {
            let secs = time(&mut **f);
            if pass > 0 {
                best[i] = best[i].min(secs);
            }
        }
    }
    let [ring, rule, edge] = best.map(|secs| frames.len() as f64 / secs);
    println!(
        "\nEd25519, one core, {} frames, best of {PASSES} interleaved passes: ring single \
         {:.0} frames/s, Feeder rule single {:.0} ({:.2}x), edge path batched {:.0} ({:.2}x \
         ring)",
        frames.len(),
        ring,
        rule,
        rule / ring,
        edge,
        edge / ring
    );
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
