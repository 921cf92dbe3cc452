//! Registry load time and memory for 10^6 and 10^7 devices (issue #3), from the file and
//! as a receiver of the registry topic builds it (issue #19), in the same run.
//!
//! Not a criterion bench: one load of a 10^7-device file takes tens of seconds and
//! gigabytes, so each size is loaded once and measured exactly instead of sampled. The
//! heap figures come from a counting global allocator (bytes the loaded `Registry` keeps,
//! and the peak while loading). Lookups are timed at each size beside a baseline from
//! the same run: random 8-byte reads from an array as large as the registry's heap. A
//! hash lookup is a constant number of such random memory accesses, so lookup ns divided
//! by the baseline staying flat from 10^6 to 10^7 shows lookups are O(1); the absolute
//! lookup time grows only as far as the memory hierarchy does (cache and TLB misses).
//!
//! Run: `cargo bench -p feeder-benches --bench registry_memory`
//! (`FEEDER_BENCH_REGISTRY_SIZES=1000000,10000000` by default; the files are generated in
//! a temp dir: 90 % Ed25519 meters with three labels, 10 % HMAC-SHA256 vehicles).

use std::alloc::System;
use std::io::Write;
use std::time::Instant;

use feeder_core::Registry;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    let sizes: Vec<usize> = std::env::var("FEEDER_BENCH_REGISTRY_SIZES")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are integers"))
        .collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a smoke test.
    let smoke = std::env::args().all(|a| a != "--bench");
    let sizes = if smoke { vec![10_000] } else { sizes };
    let dir = tempfile_dir();
    println!(
        "{:>10} {:>9} {:>10} {:>12} {:>12} {:>10} {:>12} {:>12} {:>8}",
        "devices",
        "file MB",
        "load s",
        "devices/s",
        "heap B/dev",
        "peak MB",
        "lookup ns",
        "random rd ns",
        "ratio"
    );
    let mut lookups = Vec::new();
    for n in sizes {
        let path = dir.join(format!("registry-{n}.jsonl"));
        let file_bytes = generate(&path, n);
        let region = Region::new(GLOBAL);
        let t = Instant::now();
        let registry = Registry::load(&path).expect("registry loads");
        let load = t.elapsed();
        let stats = region.change();
        let retained = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
            + stats.bytes_reallocated as i64;
        assert_eq!(registry.len(), n);
        let ns = lookup_ns(&registry, n);
        let peak = peak_mb();
        let baseline = random_read_ns(retained.max(8) as usize);
        lookups.push((n, ns, baseline));
        println!(
            "{:>10} {:>9.0} {:>10.2} {:>12.0} {:>12.1} {:>10.0} {:>12.1} {:>12.1} {:>8.2}",
            n,
            file_bytes as f64 / 1e6,
            load.as_secs_f64(),
            n as f64 / load.as_secs_f64(),
            retained as f64 / n as f64,
            peak,
            ns,
            baseline,
            ns / baseline
        );
        drop(registry);
        topic_receiver(&path, n, load.as_secs_f64());
        std::fs::remove_file(&path).ok();
    }
    if let (Some(first), Some(last)) = (lookups.first(), lookups.last())
        && first.0 != last.0
    {
        println!(
            "lookup time at {} devices / at {} devices: {:.2} (random-read baseline: {:.2}; \
             lookup/baseline ratio: {:.2} -> {:.2})",
            last.0,
            first.0,
            last.1 / first.1,
            last.2 / first.2,
            first.1 / first.2,
            last.1 / last.2
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The same registry as a receiver of the registry topic builds it (device contract
/// v1.1): one record per line applied to a `TopicRegistry`, then the registry handed over,
/// as `feeder_kafka::registry_follow` does at start; then one revocation applied and
/// handed over while the previous registry is still held (what a reader sees), timed:
/// the time for a change to be in force at this size. The broker's
/// delivery is not in it (that depends on the broker); the provisioning signature check
/// is timed on a sample of records and multiplied out, printed apart from the load.
fn topic_receiver(path: &std::path::Path, n: usize, file_load_s: f64) {
    use feeder_core::registry_topic::{ProvisioningKeys, TopicRegistry, record_key, signing_input};
    let text = std::fs::read_to_string(path).expect("registry file");
    let key_of = |i: usize| {
        let prefix = if i % 10 == 9 { "veh" } else { "mtr" };
        record_key(&format!("{prefix}-{i:08}"), "k1")
    };
    let region = Region::new(GLOBAL);
    let t = Instant::now();
    let mut topic = TopicRegistry::default();
    for (i, line) in text.lines().enumerate() {
        topic
            .apply(key_of(i).as_bytes(), Some(line.as_bytes()))
            .expect("a valid record");
    }
    let registry = topic.registry();
    let load = t.elapsed().as_secs_f64();
    let stats = region.change();
    let retained = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
        + stats.bytes_reallocated as i64;
    assert_eq!(registry.len(), n);

    // one revocation while readers hold `registry`: applied, then handed over
    let revoked = text
        .lines()
        .next()
        .expect("a line")
        .replace("\"active\"", "\"revoked\"");
    let t = Instant::now();
    topic
        .apply(key_of(0).as_bytes(), Some(revoked.as_bytes()))
        .expect("a valid record");
    let after = topic.registry();
    let change_ms = t.elapsed().as_secs_f64() * 1e3;
    let dev = key_of(0).trim_end_matches("/k1").to_string();
    assert!(after.device(&dev).expect("device").is_revoked());
    assert!(!registry.device(&dev).expect("device").is_revoked());
    assert_eq!(
        registry.shared_shards(),
        255,
        "the registry held before shares all but the shard the change copied"
    );
    drop(after);

    // the signature check per record, on a sample signed here
    let seed: Vec<u8> = (0u8..32).collect();
    let sk = feeder_core::SigningKey::ed25519_from_seed(&seed).expect("a seed");
    let keys =
        ProvisioningKeys::from_keys([("p".to_string(), sk.ed25519_public().expect("ed25519"))]);
    let sample: Vec<(String, &str, Vec<u8>)> = text
        .lines()
        .take(20_000)
        .enumerate()
        .map(|(i, l)| {
            let k = key_of(i);
            let sig =
                sk.sign_input(&signing_input(k.as_bytes(), Some(l.as_bytes())).expect("input"));
            (k, l, sig)
        })
        .collect();
    let t = Instant::now();
    for (k, l, sig) in &sample {
        keys.check(k.as_bytes(), Some(l.as_bytes()), Some(b"p"), Some(sig))
            .expect("verifies");
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / sample.len() as f64;
    println!(
        "{:>10} topic receiver: load {:.2} s ({:.2}x the file loader), heap {:.1} B/dev, \
         peak {:.0} MB; a revocation in force (applied and handed over) in {:.2} ms; \
         signature check {:.1} us/record, {:.1} s for all {} records on one core",
        n,
        load,
        load / file_load_s,
        retained as f64 / n as f64,
        peak_mb(),
        change_ms,
        verify_us,
        verify_us * n as f64 / 1e6,
        n
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("feeder-registry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `n` devices; returns the file size. Key bytes are pseudo-random (the loader
/// checks length and hex, not curve membership).
/// Distinct Ed25519 public keys the generated registries cycle through.
const ED25519_POOL: usize = 4096;

fn generate(path: &std::path::Path, n: usize) -> u64 {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let modules = ["bg95", "ec25", "sara-r5", "me910"];
    let regions = ["north", "south", "east", "west", "central"];
    // Ed25519 public keys must be real curve points of large order (the registry checks
    // them at load), so meters take theirs from a pool of real keys; each line still
    // holds its own copy, as a real registry would.
    let pool: Vec<String> = (0..ED25519_POOL)
        .map(|_| {
            let mut seed = [0u8; 32];
            for c in seed.chunks_mut(8) {
                c.copy_from_slice(&next().to_le_bytes());
            }
            let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
            hex::encode(ring::signature::KeyPair::public_key(&pair).as_ref())
        })
        .collect();
    for i in 0..n {
        let mut secret = [0u8; 32];
        for c in secret.chunks_mut(8) {
            c.copy_from_slice(&next().to_le_bytes());
        }
        let key = if i % 10 == 9 {
            hex::encode(secret)
        } else {
            pool[i % ED25519_POOL].clone()
        };
        if i % 10 == 9 {
            writeln!(
                w,
                r#"{{"device_id":"veh-{i:08}","key_id":"k1","alg":"hmac-sha256","secret":"{key}","kind":"vehicle","status":"active","labels":{{"module":"{}"}}}}"#,
                modules[i % 4]
            )
        } else {
            writeln!(
                w,
                r#"{{"device_id":"mtr-{i:08}","key_id":"k1","alg":"ed25519","public_key":"{key}","kind":"meter","status":"active","labels":{{"module":"{}","region":"{}","firmware":"4.2.{}"}}}}"#,
                modules[i % 4],
                regions[i % 5],
                i % 3
            )
        }
        .unwrap();
    }
    w.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// Mean time of a lookup of a random existing device, over 10^6 lookups.
fn lookup_ns(registry: &Registry, n: usize) -> f64 {
    let ids: Vec<String> = (0..1_000_000u64)
        .map(|k| {
            let i = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n as u64) as usize;
            if i % 10 == 9 {
                format!("veh-{i:08}")
            } else {
                format!("mtr-{i:08}")
            }
        })
        .collect();
    let t = Instant::now();
    let mut found = 0usize;
    for id in &ids {
        found += usize::from(std::hint::black_box(registry.device(id)).is_some());
    }
    let ns = t.elapsed().as_nanos() as f64 / ids.len() as f64;
    assert_eq!(found, ids.len());
    ns
}

/// Mean time of one random 8-byte read from an array of `bytes` bytes (10^6 reads at
/// pseudo-random indexes, the same access pattern as [`lookup_ns`]).
fn random_read_ns(bytes: usize) -> f64 {
    let words = (bytes / 8).max(1);
    let array: Vec<u64> = (0..words as u64).collect();
    let idx: Vec<usize> = (0..1_000_000u64)
        .map(|k| (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % words as u64) as usize)
        .collect();
    let t = Instant::now();
    let mut sum = 0u64;
    for &i in &idx {
        sum = sum.wrapping_add(std::hint::black_box(array[i]));
    }
    let ns = t.elapsed().as_nanos() as f64 / idx.len() as f64;
    std::hint::black_box(sum);
    ns
}

/// Peak resident set of this process so far (VmHWM), MB.
fn peak_mb() -> f64 {
    feeder_benches::peak_rss::peak_mib()
}
