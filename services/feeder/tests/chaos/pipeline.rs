//! The whole pipeline as separate processes on 127.0.0.1: a tansu broker, `feeder edge`,
//! `feeder stream` and `feeder writer`, each of which the chaos test can kill (-9),
//! pause (SIGSTOP/SIGCONT) and start again, and the probes that say when a stage is
//! processing again.
//!
//! "Processing again" is read from the broker, not from the stage's logs: a stream or
//! writer has recovered when its group's committed offset has moved past where it stood
//! at the fault on *every* partition of its input (so a stage that got back only some of
//! its partitions has not), and the edge when its acked-frames counter moves. Probes that
//! talk to the broker tolerate it being down (they answer `None`), since one of the
//! faults is the broker's restart.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use feeder_kafka::{KafkaConfig, Topics, ensure_topics};
use feeder_sim::keygen::{KeygenConfig, keygen};
use feeder_testkit::Tansu;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::schedule::{Fault, Target};
use crate::support::{Stage, free_port, http_status, metric, write_edge_keys};

/// How a pipeline is set up.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Topic prefix; also names the consumer groups.
    pub prefix: String,
    pub partitions: i32,
    pub meters: usize,
    pub vehicles: usize,
    /// Stream and writer join their groups with `--instance-id` (static membership).
    pub static_ids: bool,
}

/// Where a stage stood when a fault hit it: what "moved" is measured against.
#[derive(Clone, Debug)]
enum Mark {
    /// The edge's acked-frames counter, and the process it was read from (a process
    /// started since counts from 0).
    Accepted(u32, f64),
    /// The group's committed offset per input partition (-1: none yet).
    Committed(Vec<i64>),
}

/// What one fault cost.
#[derive(Clone, Debug)]
pub struct Recovery {
    pub fault: Fault,
    /// From the fault (SIGKILL, or SIGCONT for a pause) to every hit stage processing
    /// again; `None`: not within the wait.
    pub took: Option<Duration>,
    /// When not recovered: what did move (e.g. "stream 0 of 4 partitions").
    pub detail: String,
}

/// A running pipeline. Dropping it kills every process.
pub struct Pipeline {
    pub dir: PathBuf,
    setup: Setup,
    port: u16,
    broker: Tansu,
    pub kafka: KafkaConfig,
    pub topics: Topics,
    registry: PathBuf,
    pub secrets: PathBuf,
    edge_keys: String,
    pub edge_url: String,
    edge_listen: String,
    pub data: PathBuf,
    /// The running process of each stage (`None` only while starting).
    stages: [Option<Stage>; 3],
    /// Stages that exited by themselves and were started again, with why.
    pub exits: Vec<Exit>,
}

/// A stage that stopped without being told to.
#[derive(Clone, Debug)]
pub struct Exit {
    pub stage: &'static str,
    pub status: String,
    /// The last line of its log that does not come from librdkafka.
    pub reason: String,
}

impl Pipeline {
    /// Provisions a fleet, starts the broker and the three stages, and waits until each
    /// is ready.
    pub async fn start(dir: &Path, setup: Setup) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let broker = Tansu::start_on(dir, port).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap());
        let topics = Topics::with_prefix(&setup.prefix, setup.partitions, 1);
        ensure_topics(&kafka, &topics.all_topics(), setup.partitions, 1)
            .await
            .unwrap();
        let registry = dir.join("registry.jsonl");
        let secrets = dir.join("device-keys.jsonl");
        keygen(&KeygenConfig {
            meters: setup.meters,
            vehicles: setup.vehicles,
            registry: registry.clone(),
            secrets: secrets.clone(),
            seed: Some(18),
            ..KeygenConfig::default()
        })
        .unwrap();
        let edge_keys = write_edge_keys(dir);
        let edge_listen = format!("127.0.0.1:{}", free_port());
        let data = dir.join("data");
        let mut p = Self {
            dir: dir.to_path_buf(),
            setup,
            port,
            broker,
            kafka,
            topics,
            registry,
            secrets,
            edge_keys,
            edge_url: format!("http://{edge_listen}"),
            edge_listen,
            data,
            stages: [None, None, None],
            exits: Vec::new(),
        };
        for t in [Target::Writer, Target::Stream, Target::Edge] {
            p.respawn(t);
        }
        p
    }

    pub fn stage(&mut self, t: Target) -> &mut Stage {
        self.stages[t as usize]
            .as_mut()
            .expect("started by Pipeline::start")
    }

    fn stage_ref(&self, t: Target) -> &Stage {
        self.stages[t as usize]
            .as_ref()
            .expect("started by Pipeline::start")
    }

    pub fn group(&self, t: Target) -> String {
        format!("{}-{}", self.setup.prefix, t.name())
    }

    fn input(&self, t: Target) -> &str {
        match t {
            Target::Stream => &self.topics.raw,
            _ => &self.topics.checked,
        }
    }

    /// Starts the stage `t` (again), with the same flags, instance id, ports and data,
    /// and waits until it is ready. A start that exits before ready (a stage refuses to
    /// start while the broker is down) is recorded as an exit and tried again after a
    /// growing back-off, as Kubernetes restarts a crashing pod; panics after a minute.
    fn respawn(&mut self, t: Target) {
        let t0 = Instant::now();
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut stage = self.spawn(t);
            match ready(&mut stage, Duration::from_secs(60)) {
                Ok(()) => {
                    self.stages[t as usize] = Some(stage);
                    return;
                }
                Err(exit) => {
                    println!("UNPLANNED EXIT at start, restarting: {exit:?}");
                    self.exits.push(exit);
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{} does not start:\n{}",
                t.name(),
                tail(&stage.log())
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(8));
        }
    }

    /// Starts the process of stage `t`.
    fn spawn(&self, t: Target) -> Stage {
        let group = self.group(t);
        let partitions = self.setup.partitions.to_string();
        let registry = self.registry.display().to_string();
        let data = self.data.display().to_string();
        let mut args: Vec<&str> = match t {
            Target::Edge => vec![
                "edge",
                "--listen",
                &self.edge_listen,
                "--registry",
                &registry,
                "--edge-keys",
                &self.edge_keys,
                // the forger sends forged frames from this same address: without a
                // larger budget the edge would rightly turn the load generator away too
                "--verify-failures-per-address",
                "100000000",
                "--verify-failures-per-connection",
                "100000000",
            ],
            Target::Stream => vec![
                "stream",
                "--registry",
                &registry,
                "--edge-keys",
                &self.edge_keys,
                "--group",
                &group,
                "--group-watch-interval",
                "2s",
            ],
            Target::Writer => vec![
                "writer",
                "--data",
                &data,
                "--flush-max-age",
                "1s",
                "--group",
                &group,
                "--group-watch-interval",
                "2s",
            ],
        };
        args.extend([
            "--brokers",
            &self.kafka.brokers,
            "--topic-prefix",
            &self.setup.prefix,
            "--partitions",
            &partitions,
            "--replication",
            "1",
        ]);
        let id = format!("{group}-0");
        let env: Vec<(&str, &str)> = if self.setup.static_ids && t != Target::Edge {
            vec![("FEEDER_INSTANCE_ID", &id)]
        } else {
            Vec::new()
        };
        Stage::spawn(t.name(), &self.dir, &args, &env)
    }

    /// Sends `sig` (`STOP`, `CONT`) to the stage's process.
    pub fn signal(&mut self, t: Target, sig: &str) {
        let pid = self.stage(t).child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Starts again, as Kubernetes would, a stage that exited by itself, and records
    /// the exit: the stages are meant to ride out every fault of the schedule, so each
    /// exit is a finding the test reports (and fails on, in strict mode).
    pub fn supervise(&mut self) {
        self.supervise_broker();
        for t in Target::ALL {
            let s = self.stage(t);
            if let Some(status) = s.child.try_wait().unwrap() {
                let exit = Exit::of(s, status);
                println!("UNPLANNED EXIT, restarting: {exit:?}");
                self.exits.push(exit);
                self.respawn(t);
            }
        }
    }

    /// tansu 0.6's sqlite storage can panic after a restart: a producer presents an
    /// epoch of its producer id that tansu has no row for (librdkafka's idempotent
    /// producer bumps its epoch after in-flight records failed with the broker), and
    /// `idempotent_message_check` panics ("more or less than one row") instead of
    /// answering an error; the storage task is then gone and the broker answers every
    /// request with an error. Restarting tansu alone does not help (the producer resends
    /// the same batch), so this restarts tansu and then the stages that produce (edge,
    /// stream: new producer ids), as an operator would, keeping the panicked log as
    /// `tansu-<port>.panic-<n>.log` and recording the exit.
    fn supervise_broker(&mut self) {
        let log_path = self.dir.join(format!("tansu-{}.log", self.port));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let Some(panic) = log.lines().find(|l| l.contains("panicked at")) else {
            return;
        };
        let reason = log
            .lines()
            .skip_while(|l| !l.contains("panicked at"))
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let n = self.exits.len();
        let again = self.exits.iter().any(|e| e.stage == "broker");
        let _ = std::fs::copy(&log_path, log_path.with_extension(format!("panic-{n}.log")));
        let exit = Exit {
            stage: "broker",
            status: panic.to_string(),
            reason,
        };
        println!("BROKER PANICKED, restarting it, then edge and stream: {exit:?}");
        // once restarted, tansu has never recovered from a second panic in these runs:
        // the run can no longer judge Feeder, so say so instead of timing out later
        assert!(
            !again,
            "tansu 0.6's storage panicked again after a restart ({}): a test broker \
             failure (docs/brokers.md), not a verdict on Feeder; log in {}",
            exit.reason,
            self.dir.display()
        );
        self.exits.push(exit);
        self.broker.kill();
        self.broker = Tansu::start_on(&self.dir, self.port).unwrap();
        for t in [Target::Edge, Target::Stream] {
            self.stage(t).sigkill();
            self.respawn(t);
        }
    }

    /// Every stage answers `/livez` and `/readyz` with 200.
    pub fn serving(&mut self) -> Vec<(&'static str, Option<u16>, Option<u16>)> {
        Target::ALL
            .iter()
            .map(|&t| {
                let s = self.stage(t);
                (
                    s.name,
                    http_status(s.metrics, "/livez"),
                    http_status(s.metrics, "/readyz"),
                )
            })
            .collect()
    }

    /// Frames the running edge process has acked.
    pub fn accepted(&self) -> f64 {
        metric(
            self.stage_ref(Target::Edge).metrics,
            "feeder_edge_frames_accepted_total",
        )
    }

    /// The committed offsets of `group` on `topic`, per partition (-1: none); `None`
    /// while the broker does not answer.
    pub fn committed(&self, group: &str, topic: &str) -> Option<Vec<i64>> {
        let c: BaseConsumer = self.kafka.consumer(group, "chaos-probe").create().ok()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.setup.partitions {
            tpl.add_partition(topic, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(3)).ok()?;
        Some(
            (0..self.setup.partitions)
                .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                })
                .collect(),
        )
    }

    /// The high watermark of each partition of `topic`; `None` while the broker does
    /// not answer.
    pub fn highs(&self, topic: &str) -> Option<Vec<i64>> {
        let c: BaseConsumer = self.kafka.reader("chaos-probe").create().ok()?;
        (0..self.setup.partitions)
            .map(|p| {
                c.fetch_watermarks(topic, p, Duration::from_secs(3))
                    .ok()
                    .map(|w| w.1)
            })
            .collect()
    }

    /// Where `t` stands now (waits, up to a minute, for the broker to answer).
    fn mark(&self, t: Target) -> Mark {
        if t == Target::Edge {
            return Mark::Accepted(self.stage_ref(t).child.id(), self.accepted());
        }
        let t0 = Instant::now();
        loop {
            if let Some(c) = self.committed(&self.group(t), self.input(t)) {
                return Mark::Committed(c);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the broker does not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `None` when `t` has moved past `mark`, else what did not move yet.
    fn behind(&self, t: Target, mark: &Mark) -> Option<String> {
        match mark {
            Mark::Accepted(pid, n) => {
                let n = if *pid == self.stage_ref(t).child.id() {
                    *n
                } else {
                    0.0
                };
                let now = self.accepted();
                (now <= n).then(|| format!("edge: no frame acked ({now} <= {n})"))
            }
            Mark::Committed(before) => {
                let Some(now) = self.committed(&self.group(t), self.input(t)) else {
                    return Some(format!("{}: broker not answering", t.name()));
                };
                let moved = now.iter().zip(before).filter(|(n, b)| n > b).count();
                (moved < now.len()).then(|| {
                    format!(
                        "{}: {moved} of {} partitions committed past {before:?} (now {now:?})",
                        t.name(),
                        now.len()
                    )
                })
            }
        }
    }

    /// Inflicts `fault`, then waits up to `within` until every stage it hit processes
    /// again (for a broker restart: all three).
    ///
    /// Each stage's mark is read when it can no longer move: a killed stage's commits
    /// after its death, a paused one's just before SIGCONT, and after a broker restart
    /// once the broker answers (nothing commits while it is down). The edge's counter is
    /// read before SIGSTOP (a stopped process cannot answer), so a pause of the edge can
    /// count an ack of the last milliseconds before it.
    pub fn inflict(&mut self, fault: Fault, within: Duration) -> Recovery {
        let (t0, marks) = match fault {
            Fault::Kill(t) => {
                self.stage(t).sigkill();
                let t0 = Instant::now();
                let mark = match t {
                    Target::Edge => Mark::Accepted(0, 0.0), // the new process counts from 0
                    _ => self.mark(t),
                };
                self.respawn(t);
                (t0, vec![(t, mark)])
            }
            Fault::Pause(t, d) => {
                let edge_mark = (t == Target::Edge).then(|| self.mark(t));
                self.signal(t, "STOP");
                std::thread::sleep(d);
                let mark = edge_mark.unwrap_or_else(|| self.mark(t));
                self.signal(t, "CONT");
                (Instant::now(), vec![(t, mark)])
            }
            Fault::RestartBroker => {
                self.broker.kill();
                let t0 = Instant::now();
                self.broker = Tansu::start_on(&self.dir, self.port).unwrap();
                let marks = Target::ALL.iter().map(|&t| (t, self.mark(t))).collect();
                (t0, marks)
            }
        };
        let mut detail = String::new();
        while t0.elapsed() < within {
            self.supervise();
            let pending: Vec<String> = marks
                .iter()
                .filter_map(|(t, m)| self.behind(*t, m))
                .collect();
            if pending.is_empty() {
                return Recovery {
                    fault,
                    took: Some(t0.elapsed()),
                    detail: String::new(),
                };
            }
            detail = pending.join("; ");
            std::thread::sleep(Duration::from_millis(200));
        }
        Recovery {
            fault,
            took: None,
            detail,
        }
    }

    /// Waits until the stream has committed everything on raw and the writer everything
    /// on its three topics; panics after `within`.
    pub fn wait_drained(&mut self, within: Duration) {
        let t0 = Instant::now();
        let jobs = [
            (Target::Stream, self.topics.raw.clone()),
            (Target::Writer, self.topics.checked.clone()),
            (Target::Writer, self.topics.quarantine.clone()),
            (Target::Writer, self.topics.anomalies.clone()),
        ];
        loop {
            self.supervise();
            let lagging: Vec<String> = jobs
                .iter()
                .filter_map(|(t, topic)| {
                    // a probe the broker does not answer proves nothing: not drained
                    let (Some(c), Some(h)) =
                        (self.committed(&self.group(*t), topic), self.highs(topic))
                    else {
                        return Some(format!("{} on {topic}: broker not answering", t.name()));
                    };
                    let done = c.iter().zip(&h).all(|(c, h)| (*c).max(0) >= *h);
                    (!done).then(|| format!("{} on {topic}: committed {c:?} of {h:?}", t.name()))
                })
                .collect();
            if lagging.is_empty() {
                return;
            }
            assert!(
                t0.elapsed() < within,
                "not drained after {within:?}: {lagging:?}\nstream log:\n{}\nwriter log:\n{}",
                tail(&self.stage_ref(Target::Stream).log()),
                tail(&self.stage_ref(Target::Writer).log())
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Exit {
    fn of(s: &Stage, status: ExitStatus) -> Self {
        let log = s.log();
        let reason = log
            .lines()
            .rev()
            .find(|l| !l.contains("librdkafka"))
            .unwrap_or_default()
            .to_string();
        Self {
            stage: s.name,
            status: status.to_string(),
            reason,
        }
    }
}

/// Waits until the stage's `/readyz` answers 200; its exit if it stops first.
fn ready(s: &mut Stage, within: Duration) -> Result<(), Exit> {
    let t0 = Instant::now();
    loop {
        if http_status(s.metrics, "/readyz") == Some(200) {
            return Ok(());
        }
        if let Some(status) = s.child.try_wait().unwrap() {
            return Err(Exit::of(s, status));
        }
        assert!(
            t0.elapsed() < within,
            "{} not ready after {within:?}:\n{}",
            s.name,
            tail(&s.log())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of a log, enough to see why a stage stopped.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
