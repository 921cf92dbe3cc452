//! Stream-stage throughput on one core: `PartitionState::process` (decode, replay window,
//! every data rule, flag and anomaly records) on simulated frames, beside decoding alone,
//! so the ratio shows what the checks cost on top of protobuf.
//!
//! `cargo bench -p feeder-benches --bench stream_checks`; throughput is in rows
//! (meter readings or vehicle samples) per second. The `stream_snapshot` group measures
//! the state changelog's cost: serializing every changed device (`take_dirty`) and
//! restoring them, in devices per second, for meters with two weeks of rule history.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use feeder_benches::raw_records;
use feeder_core::DeviceKind;
use feeder_proto::pipeline::RawFrame;
use feeder_proto::v1::{Frame, SignedFrame};
use feeder_stream::checks::PartitionState;
use feeder_stream::rules::RulesConfig;
use prost::Message;

fn bench(c: &mut Criterion) {
    let rules = Arc::new(RulesConfig::default());
    // meters: 100 devices x 14 days (the spike rule judges from day 5);
    // vehicles: 100 devices x 10 one-minute frames
    for (name, (raw, rows)) in [
        ("meters", raw_records(DeviceKind::Meter, 100, 14)),
        ("vehicles", raw_records(DeviceKind::Vehicle, 100, 10)),
    ] {
        println!("{name}: {} raw records, {rows} rows", raw.len());
        let mut g = c.benchmark_group(format!("stream_{name}"));
        g.throughput(Throughput::Elements(rows));
        g.sample_size(20);
        g.bench_function("decode_only", |b| {
            b.iter(|| {
                for v in &raw {
                    let r = RawFrame::decode(v.as_slice()).expect("raw");
                    let sf = SignedFrame::decode(r.signed_frame).expect("signed");
                    black_box(Frame::decode(sf.payload).expect("frame"));
                }
            })
        });
        g.bench_function("process_with_rules", |b| {
            b.iter_batched(
                || PartitionState::with_rules(4096, rules.clone(), Default::default()),
                |mut st| {
                    for (i, v) in raw.iter().enumerate() {
                        black_box(st.process(i as i64, v));
                    }
                    black_box(st.take_anomalies());
                },
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }

    let (raw, _) = raw_records(DeviceKind::Meter, 100, 14);
    let processed = || {
        let mut st = PartitionState::with_rules(4096, rules.clone(), Default::default());
        for (i, v) in raw.iter().enumerate() {
            st.process(i as i64, v);
        }
        st
    };
    let snapshot = processed().take_dirty().expect("snapshot");
    let bytes: usize = snapshot.iter().map(|(_, b)| b.len()).sum();
    println!(
        "snapshot of {} meters: {} bytes ({} per meter)",
        snapshot.len(),
        bytes,
        bytes / snapshot.len()
    );
    let mut g = c.benchmark_group("stream_snapshot");
    g.throughput(Throughput::Elements(snapshot.len() as u64));
    g.sample_size(20);
    g.bench_function("take_dirty", |b| {
        b.iter_batched(
            processed,
            |mut st| black_box(st.take_dirty().expect("snapshot")),
            BatchSize::LargeInput,
        )
    });
    let empty = PartitionState::with_rules(4096, rules.clone(), Default::default());
    g.bench_function("restore", |b| {
        b.iter_batched(
            || empty.emptied(),
            |mut st| {
                for (id, state) in &snapshot {
                    st.restore_device(id, state).expect("restore");
                }
                black_box(st)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
