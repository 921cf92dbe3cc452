//! A stream stage paused with SIGSTOP while holding a batch, replaced by another
//! instance, then resumed with SIGCONT (a zombie), on a real broker process (tansu):
//! with the zombie fence (`feeder_kafka::fence`) no frame is stored twice and none is
//! lost; without it (`FEEDER_ZOMBIE_FENCE=off`), in the same run, the zombie's late
//! outputs are stored a second time. DuckDB, not Feeder's code, counts the rows.
//!
//! How the zombie is made: the stage stops itself (`FEEDER_PAUSEPOINT=before_produce`)
//! after claiming its partitions and fetching its first batch, before producing any of
//! its outputs. A second process with the same `--instance-id` takes the partitions
//! (static membership: tansu 0.6 never evicts a member, paused or dead, after its
//! session timeout; on real Kafka the takeover also happens when the session times
//! out) and processes the batch. Resumed, the first process produces the same batch:
//! its outputs land after the second owner's claim.

mod support;

use std::time::Duration;

use feeder_kafka::{KafkaConfig, Topics, ensure_topics};
use feeder_sim::SimDevice;
use feeder_testkit::Tansu;
use feeder_testkit::python;

use support::*;

const PARTITIONS: i32 = 2;
const METERS: usize = 12;
const NOW_MS: i64 = 1_764_028_800_000;
const INSTANCE: &str = "feeder-stream-0";

struct Rig {
    dir: tempfile::TempDir,
    _broker: Tansu,
    kafka: KafkaConfig,
    registry: String,
    edge_keys: String,
    devices: Vec<SimDevice>,
    clock: i64,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let f = tansu_fleet(dir.path(), METERS, 21, NOW_MS - 10 * 86_400_000);
        Self {
            dir,
            _broker: f.broker,
            kafka: f.kafka,
            registry: f.registry,
            edge_keys: f.edge_keys,
            devices: f.devices,
            clock: NOW_MS,
        }
    }

    /// One raw record (a frame with a valid edge proof) of every device.
    fn batch(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for d in &mut self.devices {
            self.clock += 10;
            out.push((d.device_id.clone(), raw_record(d, self.clock)));
        }
        out
    }

    fn common<'a>(&'a self, prefix: &'a str, group: &'a str) -> Vec<&'a str> {
        vec![
            "--brokers",
            &self.kafka.brokers,
            "--topic-prefix",
            prefix,
            "--partitions",
            "2",
            "--replication",
            "1",
            "--group",
            group,
        ]
    }

    fn stream(&self, name: &'static str, prefix: &str, group: &str, env: &[(&str, &str)]) -> Stage {
        let mut args = vec![
            "stream",
            "--registry",
            &self.registry,
            "--edge-keys",
            &self.edge_keys,
        ];
        args.extend(self.common(prefix, group));
        let mut env = env.to_vec();
        env.push(("FEEDER_INSTANCE_ID", INSTANCE));
        Stage::spawn(name, self.dir.path(), &args, &env)
    }

    fn writer(&self, prefix: &str, group: &str, data: &str) -> Stage {
        let mut args = vec!["writer", "--data", data, "--flush-max-age", "300ms"];
        args.extend(self.common(prefix, group));
        let mut s = Stage::spawn("writer", self.dir.path(), &args, &[]);
        s.wait_ready(Duration::from_secs(60));
        s
    }
}

/// Every partition of `topic` is committed by `group` up to its end (an empty one has
/// nothing to commit).
fn caught_up(kafka: &KafkaConfig, group: &str, topic: &str) -> bool {
    let committed = committed(kafka, group, topic, PARTITIONS);
    (0..PARTITIONS).all(|p| {
        let end = watermarks(kafka, topic, p).1;
        end == 0 || committed[p as usize] == end
    })
}

/// The process state letter of `pid` (`T`: stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// What DuckDB found in the frames dataset.
#[derive(Debug)]
struct Stored {
    rows: u64,
    distinct: u64,
}

fn stored(data: &str) -> Stored {
    let script = format!(
        "import duckdb\n\
         r = duckdb.sql(\"SELECT count(*), count(DISTINCT (device_id, seq)) FROM \
         read_parquet('{data}/frames/**/*.parquet', hive_partitioning = true)\").fetchall()[0]\n\
         print(r[0], r[1])"
    );
    let out = python(&["-c", &script]);
    let n = numbers(&out);
    Stored {
        rows: n[0] as u64,
        distinct: n[1] as u64,
    }
}

/// Runs the scenario with the fence on or off; returns what was stored and how many
/// frames were sent.
async fn scenario(rig: &mut Rig, fence: bool) -> (Stored, u64) {
    let label = if fence { "on" } else { "off" };
    let prefix = format!("zf-{label}");
    let group = format!("{prefix}-stream");
    let topics = Topics::with_prefix(&prefix, PARTITIONS, 1);
    ensure_topics(&rig.kafka, &topics.data_topics(), PARTITIONS, 1)
        .await
        .unwrap();
    let fence_env = ("FEEDER_ZOMBIE_FENCE", label);
    let mut sent = 0u64;

    // 1. the first owner claims, takes its first batch and stops itself
    let names = if fence {
        ["stream-zombie-on", "stream-owner-on"]
    } else {
        ["stream-zombie-off", "stream-owner-off"]
    };
    let mut zombie = rig.stream(
        names[0],
        &prefix,
        &group,
        &[fence_env, ("FEEDER_PAUSEPOINT", "before_produce")],
    );
    let batch = rig.batch();
    sent += batch.len() as u64;
    produce_keyed(&rig.kafka, &topics.raw, PARTITIONS, &batch).await;
    let pid = zombie.child.id();
    wait_until(
        "the first stream stage stops itself holding its batch",
        Duration::from_secs(90),
        || process_state(pid) == Some('T'),
    );
    assert!(zombie.log().contains("pausepoint before_produce reached"));

    // 2. the same instance id again: it takes the partitions and decides the batch
    let mut owner = rig.stream(names[1], &prefix, &group, &[fence_env]);
    owner.wait_ready(Duration::from_secs(60));
    let (kafka, g, raw) = (rig.kafka.clone(), group.clone(), topics.raw.clone());
    wait_until(
        "the second owner processes the batch",
        Duration::from_secs(90),
        || caught_up(&kafka, &g, &raw),
    );

    // 3. the first one resumes: it produces the batch it held, as a zombie
    let checked_before = total(&rig.kafka, &topics.checked, PARTITIONS);
    signal(pid, "-CONT");
    wait_until("the zombie resumes", Duration::from_secs(30), || {
        zombie.log().contains("pausepoint resumed")
    });
    // its batch held the records of one fetch (one or both partitions): its outputs
    // land, then the checked log stays still
    let resumed = std::time::Instant::now();
    let (mut last, mut still_since) = (checked_before, std::time::Instant::now());
    loop {
        let now = total(&rig.kafka, &topics.checked, PARTITIONS);
        if now != last {
            (last, still_since) = (now, std::time::Instant::now());
        }
        if last > checked_before && still_since.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "the zombie's outputs did not land; its log:\n{}",
            zombie.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    zombie.sigkill();

    // 4. more frames for the owner, then the writer stores everything
    let batch = rig.batch();
    sent += batch.len() as u64;
    produce_keyed(&rig.kafka, &topics.raw, PARTITIONS, &batch).await;
    wait_until(
        "the owner processes the next batch",
        Duration::from_secs(90),
        || caught_up(&kafka, &g, &raw),
    );
    let data = rig.dir.path().join(format!("{prefix}-data"));
    let data = data.display().to_string();
    let wgroup = format!("{prefix}-writer");
    let writer = rig.writer(&prefix, &wgroup, &data);
    for topic in [&topics.checked, &topics.quarantine, &topics.anomalies] {
        let (kafka, wg, t) = (rig.kafka.clone(), wgroup.clone(), topic.clone());
        wait_until(
            "the writer stores every output",
            Duration::from_secs(90),
            || caught_up(&kafka, &wg, &t),
        );
    }
    if fence {
        // the zombie's late outputs landed among the owner's: the owner either finds a
        // record not its own among its outputs before its next commit (and claims the
        // partition again), or a rebalance made it claim again anyway (the zombie
        // rejoining with the same instance id); what it must not do is go on under its
        // old claim (`partition/continuity.rs`)
        let log = owner.log();
        let noticed = log.contains("another writer's record among this stage's outputs");
        let claims = log.matches("partition claimed").count();
        assert!(
            noticed || claims > PARTITIONS as usize,
            "the owner went on under its first claims ({claims} claims):\n{log}"
        );
    }
    writer.sigterm();
    owner.sigterm();
    let found = stored(&data);
    if found.distinct != sent || found.rows != found.distinct {
        // what each stage said, for the failure report
        println!("--- {} ---\n{}", names[0], zombie.log());
        println!("--- {} ---\n{}", names[1], owner.log());
        println!("--- writer ---\n{}", writer.log());
    }
    (found, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_zombie_stream_stage_stores_nothing_twice() {
    let mut rig = Rig::new();
    let (off, sent_off) = scenario(&mut rig, false).await;
    let (on, sent_on) = scenario(&mut rig, true).await;
    println!("without the fence: {off:?} of {sent_off} frames sent");
    println!("with the fence: {on:?} of {sent_on} frames sent");
    // the scenario bites: without the fence, the zombie's batch is stored again
    assert_eq!(off.distinct, sent_off, "without the fence, nothing lost");
    assert!(
        off.rows > off.distinct,
        "without the fence the zombie's outputs must be stored twice, or the test shows \
         nothing: {off:?}"
    );
    // with it, every frame exactly once
    assert_eq!(on.distinct, sent_on, "with the fence, nothing lost: {on:?}");
    assert_eq!(
        on.rows, on.distinct,
        "with the fence, nothing twice: {on:?}"
    );
}
