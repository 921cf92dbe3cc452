//! What VEE estimation costs the stream stage, on one core: `PartitionState::process`
//! with estimation on against off (`rules.estimate.enabled`), in readings per second, on
//! simulated meters that report every day, and on meters that each miss one day in
//! seven (every gap closed by the next day's frame: 96 estimates by register proration
//! per missed day, about 8 % of the intervals, far more than a real fleet's share).
//!
//! `cargo bench -p feeder-benches --bench stream_estimates`; before criterion's groups it
//! prints a summary, the best of 7 alternating runs of each configuration.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use feeder_benches::raw_records_where;
use feeder_core::DeviceKind;
use feeder_stream::checks::{Outcome, PartitionState};
use feeder_stream::rules::RulesConfig;

/// 100 meters x `days`, interleaved; meter `i` misses day `d` when `gaps` and
/// `(d + i) % 7 == 3` (from day 8 on). Returns the raw records and their readings.
fn meter_frames(days: usize, gaps: bool) -> (Vec<Vec<u8>>, u64) {
    raw_records_where(DeviceKind::Meter, 100, days, |d, i| {
        !(gaps && d >= 8 && (d + i) % 7 == 3)
    })
}

fn process(rules: &Arc<RulesConfig>, raw: &[Vec<u8>]) -> usize {
    let mut st = PartitionState::with_rules(4096, rules.clone(), Default::default());
    let mut estimates = 0;
    for (i, v) in raw.iter().enumerate() {
        if let Outcome::Checked(c) = st.process(i as i64, v) {
            estimates += c
                .estimates
                .iter()
                .map(|r| r.values_raw.len())
                .sum::<usize>();
        }
    }
    black_box(st.take_anomalies());
    estimates
}

/// Best of `rounds` alternating runs of each configuration (on a shared machine the
/// best run is the least disturbed one), in readings per second.
fn best_of(rounds: usize, raw: &[Vec<u8>], rows: u64, configs: &[&Arc<RulesConfig>]) -> Vec<f64> {
    let mut best = vec![f64::MAX; configs.len()];
    for _ in 0..rounds {
        for (k, rules) in configs.iter().enumerate() {
            let t = std::time::Instant::now();
            black_box(process(rules, raw));
            best[k] = best[k].min(t.elapsed().as_secs_f64());
        }
    }
    best.into_iter().map(|s| rows as f64 / s).collect()
}

fn bench(c: &mut Criterion) {
    let on = Arc::new(RulesConfig::default());
    let mut off = RulesConfig::default();
    off.estimate.enabled = false;
    let off = Arc::new(off);
    for (name, gaps) in [("every_day", false), ("one_day_in_seven_missed", true)] {
        let (raw, rows) = meter_frames(21, gaps);
        println!(
            "{name}: {} frames, {rows} readings, {} estimates with estimation on",
            raw.len(),
            process(&on, &raw)
        );
        let r = best_of(7, &raw, rows, &[&off, &on]);
        println!(
            "{name}: best of 7, estimation off {:.2} M readings/s, on {:.2} M readings/s ({:.2}x)",
            r[0] / 1e6,
            r[1] / 1e6,
            r[1] / r[0]
        );
        let mut g = c.benchmark_group(format!("stream_estimates_{name}"));
        g.throughput(Throughput::Elements(rows));
        g.sample_size(20);
        for (label, rules) in [("estimation_off", &off), ("estimation_on", &on)] {
            g.bench_function(label, |b| {
                b.iter_batched(|| (), |()| process(rules, &raw), BatchSize::LargeInput)
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
