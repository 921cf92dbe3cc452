//! What it costs the stream stage to know a raw record came from an edge, the two ways
//! issue 12 weighed: checking the edge's HMAC proof on the record (what Feeder does,
//! `feeder_core::edge_proof`), or re-verifying the device's own signature against the
//! registry (what the edge already did). Both over the same Ed25519 meter frames, in the
//! same run, beside decoding the record alone (the floor either way).
//!
//! `cargo bench -p feeder-benches --bench edge_proof`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use feeder_core::signing::signing_input;
use feeder_core::{EdgeKey, EdgeKeys};
use feeder_proto::pipeline::RawFrame;
use feeder_proto::v1::SignedFrame;
use prost::Message;

fn bench(c: &mut Criterion) {
    let fx = feeder_benches::fixture(100, 4);
    let key = EdgeKey::new("bench", &[7u8; 32]).expect("key");
    let keys = EdgeKeys::new(vec![key.clone()]).expect("keys");
    let records: Vec<Vec<u8>> = fx
        .ed25519
        .iter()
        .map(|sf| {
            key.raw_frame(sf.clone(), 1_700_000_000_000, "edge-0")
                .encode_to_vec()
        })
        .collect();
    let mut g = c.benchmark_group("raw_record_provenance");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            for r in &records {
                let raw = RawFrame::decode(r.as_slice()).expect("record");
                black_box(SignedFrame::decode(raw.signed_frame).expect("frame"));
            }
        })
    });
    g.bench_function("edge_hmac_proof", |b| {
        b.iter(|| {
            for r in &records {
                let raw = RawFrame::decode(r.as_slice()).expect("record");
                keys.check_raw(&raw).expect("proof");
                black_box(SignedFrame::decode(raw.signed_frame).expect("frame"));
            }
        })
    });
    g.bench_function("device_signature_reverify", |b| {
        b.iter(|| {
            for r in &records {
                let raw = RawFrame::decode(r.as_slice()).expect("record");
                let f = SignedFrame::decode(raw.signed_frame).expect("frame");
                let key = fx
                    .registry
                    .device(&f.device_id)
                    .and_then(|d| d.key(&f.key_id))
                    .expect("key");
                let input = signing_input(&f.device_id, &f.key_id, f.seq, &f.payload);
                black_box(key.key.verify_input(&input, &f.signature)).expect("valid");
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
