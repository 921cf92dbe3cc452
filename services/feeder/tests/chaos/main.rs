//! Chaos under load on a real broker process (issue 18): tansu, and `feeder edge`,
//! `stream` and `writer` as separate processes, fed by `feeder loadgen` while a seeded
//! schedule kills (-9) and restarts, and pauses (SIGSTOP/SIGCONT), each stage, and at
//! the end restarts the broker on the same storage and port. Then every acked reading
//! must be stored exactly once, as DuckDB counts it (`tests/python/check_chaos.py`, not
//! Feeder's code), no frame the edge refused may be stored, and every process must be
//! serving.
//!
//! - The seed is printed; `FEEDER_CHAOS_SEED=<seed>` replays a schedule.
//! - In the suite it runs one round (every stage fault once, then the broker restart;
//!   about 2 minutes with start-up and checks); `FEEDER_CHAOS_MINUTES=30` (or
//!   `tests/chaos.sh --minutes 30`) keeps faulting for that long. `FEEDER_CHAOS_RATE`
//!   sets the load (frames/s), `FEEDER_CHAOS_MIN_PAUSE` and `FEEDER_CHAOS_MAX_PAUSE` the
//!   pauses' range in seconds.
//! - Stream and writer run with `--instance-id`: tansu 0.6 does not evict a dead group
//!   member (reliably), so only a restart under the same id surely gets the partitions
//!   back (docs/operations.md, "Static membership"). One stream instance: a pause past
//!   the session timeout with a second instance taking over is the zombie case, fenced
//!   separately (issue 18 item 2, `zombie_fence.rs`).
//! - A stage that exits by itself is started again, as Kubernetes would, and the exit
//!   is reported; `FEEDER_CHAOS_STRICT=true` fails the run on it.
//! - After each fault the test waits until the hit stage processes again (every input
//!   partition committed past its position at the fault; the edge acking frames) and
//!   prints how long that took: the recovery times of docs/operations.md.
//!
//! `recovery_with_and_without_static_membership` (ignored in the suite: it waits out
//! the dynamic case on purpose) measures kill -9 to processing again per stage, with and
//! without instance ids, in one run.

#[path = "../support/mod.rs"]
mod support;

mod forger;
mod load;
mod pipeline;
mod schedule;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use feeder_testkit::python_path;
use pipeline::{Pipeline, Recovery, Setup};
use schedule::{Bounds, Fault, Schedule, Target};

/// A hit stage must process again within this, or the run fails.
const RECOVERY_BOUND: Duration = Duration::from_secs(90);
/// How long the dynamic case of the recovery measurement is waited for.
const DYNAMIC_WAIT: Duration = Duration::from_secs(30);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The run's directory: `FEEDER_CHAOS_DIR` (kept, for looking at afterwards) or a
/// temporary one.
fn workdir(name: &str) -> (Option<tempfile::TempDir>, std::path::PathBuf) {
    match std::env::var_os("FEEDER_CHAOS_DIR") {
        Some(d) => {
            let d = std::path::PathBuf::from(d).join(name);
            let _ = std::fs::remove_dir_all(&d);
            (None, d)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().join(name);
            (Some(t), p)
        }
    }
}

/// Sleeps `d`, checking every stage is still running.
fn quiet(p: &mut Pipeline, d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        p.supervise();
        std::thread::sleep(Duration::from_millis(250).min(d.saturating_sub(t0.elapsed())));
    }
}

/// Waits until the load is flowing end to end: frames acked and the writer committing.
fn warm_up(p: &mut Pipeline) {
    let t0 = Instant::now();
    loop {
        p.supervise();
        let writer = p.committed(&p.group(Target::Writer), &p.topics.checked);
        if p.accepted() > 0.0 && writer.is_some_and(|c| c.iter().all(|&o| o > 0)) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the pipeline does not flow"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Devices enough for the run. The simulated fleet starts a year back and moves one
/// day per meter frame, so a meter's 366th frame is dated in the future and the stream
/// rightly quarantines it (`ts_out_of_horizon`): the fleet must be large enough that no
/// device sends 300 frames in the run (its length, plus ~5 minutes of start, recovery
/// and drain, at the capped rate).
fn fleet_size(rate: f64, run_for: Duration) -> usize {
    let frames = rate * (run_for.as_secs_f64() + 300.0);
    ((frames / 300.0).ceil() as usize).max(56)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

#[test]
fn chaos_under_load_loses_nothing_and_stores_nothing_twice() {
    let seed: u64 = env_or(
        "FEEDER_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64,
    );
    let minutes: f64 = env_or("FEEDER_CHAOS_MINUTES", 0.0);
    let rate: f64 = env_or("FEEDER_CHAOS_RATE", 200.0);
    let min_pause: f64 = env_or("FEEDER_CHAOS_MIN_PAUSE", 1.0);
    let max_pause: f64 = env_or("FEEDER_CHAOS_MAX_PAUSE", 6.0);
    let strict: bool = env_or("FEEDER_CHAOS_STRICT", false);
    println!(
        "chaos seed {seed} (replay: FEEDER_CHAOS_SEED={seed}); {minutes} min (0: one round), \
         {rate} frames/s, pauses {min_pause} to {max_pause} s"
    );
    let bounds = Bounds {
        // short gaps: tansu 0.6 has not lasted much past two minutes of faults (its
        // storage panics; docs/brokers.md), so the suite's round is kept brief
        gap: (Duration::from_secs(1), Duration::from_secs(5)),
        pause: (
            Duration::from_secs_f64(min_pause),
            Duration::from_secs_f64(max_pause),
        ),
    };

    let run_for = Duration::from_secs_f64(minutes * 60.0);
    let devices = fleet_size(rate, run_for);
    let (_tmp, dir) = workdir("chaos");
    let rt = runtime();
    let mut p = rt.block_on(Pipeline::start(
        &dir,
        Setup {
            prefix: "chaos".into(),
            partitions: 4,
            meters: devices - devices / 8,
            vehicles: devices / 8,
            static_ids: true,
        },
    ));
    println!("logs and data in {}", dir.display());
    let acked = dir.join("acked.csv");
    let load = load::Load::start(&dir, &p.edge_url, &p.secrets, rate, &acked);
    let forger = forger::Forger::start(&p.edge_url, &p.secrets, &dir.join("refused.csv"));
    warm_up(&mut p);

    let started = Instant::now();
    let mut done: Vec<Recovery> = Vec::new();
    let mut schedule = Schedule::new(seed, bounds);
    let mut last = false;
    while !last {
        let mut step = schedule.next().expect("the schedule is endless");
        if done.len() >= Schedule::ROUND && started.elapsed() + step.after >= run_for {
            step.fault = Fault::RestartBroker;
            step.after = schedule.gap();
            last = true;
        }
        quiet(&mut p, step.after);
        let r = p.inflict(step.fault, RECOVERY_BOUND);
        println!(
            "{:>7.1} s  {:<22} processing again after {}",
            started.elapsed().as_secs_f64(),
            step.fault.to_string(),
            secs(r.took)
        );
        assert!(
            r.took.is_some(),
            "seed {seed}: after `{}` not processing within {RECOVERY_BOUND:?}: {}\n{}",
            step.fault,
            r.detail,
            logs(&mut p)
        );
        done.push(r);
    }
    let faulted = started.elapsed();
    quiet(&mut p, Duration::from_secs(3));
    let forged = forger.stop();
    let summary = load.stop();
    p.wait_drained(Duration::from_secs(180));

    // every process back to serving
    for (name, live, ready) in p.serving() {
        assert_eq!(
            (live, ready),
            (Some(200), Some(200)),
            "{name} is not serving"
        );
    }

    let check = checker(&[
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/python/check_chaos.py"
        ),
        "--data",
        &p.data.display().to_string(),
        "--acked",
        &acked.display().to_string(),
        "--refused",
        &dir.join("refused.csv").display().to_string(),
    ]);
    let report: serde_json::Value = serde_json::from_str(check.trim()).unwrap();
    println!(
        "seed {seed}: {} faults in {:.0} s",
        done.len(),
        faulted.as_secs_f64()
    );
    println!("loadgen: {summary:?}");
    println!("forged frames: {forged:?}");
    println!("DuckDB: {report}");
    print_recoveries(&done);
    println!(
        "stages that exited by themselves (restarted as Kubernetes would): {}",
        p.exits.len()
    );
    for e in &p.exits {
        println!("  {} ({}): {}", e.stage, e.status, e.reason);
    }

    assert_eq!(report["ok"], true, "seed {seed}: {}", report["failures"]);
    assert!(
        !strict || p.exits.is_empty(),
        "seed {seed}: FEEDER_CHAOS_STRICT and stages exited: {:?}",
        p.exits
    );
    assert_eq!(
        report["acked_frames"].as_u64(),
        Some(summary.acked),
        "the acked log lists every frame the load generator counted as acked"
    );
    assert!(summary.acked > 0 && report["acked_readings"].as_u64() > Some(0));
    assert_eq!(
        summary.refused, 0,
        "the load's own frames are valid: none may be refused for good"
    );
    assert!(
        forged.codes.values().sum::<u64>() > 0,
        "the edge answered forged frames: {forged:?}"
    );
    assert_eq!(report["refused_frames"].as_u64(), Some(forged.sent));
}

/// Min, median and max recovery per fault kind.
fn print_recoveries(done: &[Recovery]) {
    let mut by: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for r in done {
        let kind = match r.fault {
            Fault::Pause(t, _) => format!("pause {} (from SIGCONT)", t.name()),
            f => f.to_string(),
        };
        by.entry(kind).or_default().extend(r.took);
    }
    println!("recovery to processing again (n, min / median / max):");
    for (kind, mut ts) in by {
        ts.sort();
        println!(
            "  {kind:<30} {}  {} / {} / {}",
            ts.len(),
            secs(ts.first().copied()),
            secs(ts.get(ts.len() / 2).copied()),
            secs(ts.last().copied())
        );
    }
}

/// Runs the DuckDB checker; its JSON verdict, failing or not (it exits 1 on failures,
/// which the verdict then shows).
fn checker(args: &[&str]) -> String {
    let out = std::process::Command::new(python_path())
        .args(args)
        .output()
        .expect("running FEEDER_PYTHON");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "check_chaos.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn logs(p: &mut Pipeline) -> String {
    Target::ALL
        .iter()
        .map(|&t| {
            let s = p.stage(t);
            format!("--- {} log:\n{}", s.name, pipeline::tail(&s.log()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "waits out the dynamic case on purpose (~3 min); run by tests/chaos.sh"]
fn recovery_with_and_without_static_membership() {
    let wait: Duration =
        Duration::from_secs(env_or("FEEDER_RECOVERY_WAIT", DYNAMIC_WAIT.as_secs()));
    let rate: f64 = env_or("FEEDER_CHAOS_RATE", 200.0);
    let rt = runtime();
    let mut table: Vec<(bool, Recovery)> = Vec::new();
    for static_ids in [true, false] {
        let name = if static_ids { "static" } else { "dynamic" };
        let (_tmp, dir) = workdir(&format!("recovery-{name}"));
        let devices = fleet_size(rate, Duration::from_secs(120));
        let mut p = rt.block_on(Pipeline::start(
            &dir,
            Setup {
                prefix: format!("recovery-{name}"),
                partitions: 4,
                meters: devices - devices / 8,
                vehicles: devices / 8,
                static_ids,
            },
        ));
        let load = load::Load::start(&dir, &p.edge_url, &p.secrets, rate, &dir.join("acked.csv"));
        warm_up(&mut p);
        // the writer before the stream: without an instance id on tansu a killed stage
        // never gets its partitions back, and the writer's input must keep coming
        for t in [Target::Edge, Target::Writer, Target::Stream] {
            quiet(&mut p, Duration::from_secs(3));
            let within = if static_ids { RECOVERY_BOUND } else { wait };
            let r = p.inflict(Fault::Kill(t), within);
            println!(
                "{name:<8} kill -9 {:<7} processing again after {} {}",
                t.name(),
                secs(r.took),
                r.detail
            );
            table.push((static_ids, r));
        }
        drop(load);
    }
    println!("kill -9 to every input partition processed again (tansu 0.6, debug build):");
    for (static_ids, r) in &table {
        let how = if *static_ids {
            "--instance-id"
        } else {
            "no instance id"
        };
        match r.took {
            Some(t) => println!("  {:<16} {how:<15} {:.1} s", r.fault, t.as_secs_f64()),
            None => println!(
                "  {:<16} {how:<15} not within {wait:?} ({})",
                r.fault, r.detail
            ),
        }
    }
    for (static_ids, r) in &table {
        if *static_ids {
            assert!(r.took.is_some(), "{}: {}", r.fault, r.detail);
        }
    }
}
