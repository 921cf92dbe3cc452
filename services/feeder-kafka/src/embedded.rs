//! The embedded evaluation broker: librdkafka's in-process mock cluster.
//!
//! NOT DURABLE. It keeps data in memory, evicts old data past ~5 MiB per partition, and
//! does not isolate aborted transactions. It exists so `feeder demo` and fast tests run
//! with no external service; production and the durability tests use a real broker.
//!
//! A new consumer group's first join is answered at once: librdkafka's mock holds it for
//! `group.initial.rebalance.delay.ms` (3 s, Kafka's default), which made every demo and
//! every test with a consumer wait 3 s before the stream or writer saw a record (the
//! demo's start-up stall, acks held by the lag bound meanwhile). Kafka's default is there
//! so a group of many members starting together rebalances once; the embedded broker
//! serves one process, so it uses 0, as the `server.properties` shipped with Kafka
//! sets for development. The setting
//! has no safe binding in rust-rdkafka, hence the one FFI call below.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientConfig, bindings};

use crate::{Error, Result};

/// What the cluster's thread can be asked to do (the cluster handle is not `Send`).
enum Command {
    /// Take broker `id` down (`true`) or bring it back up (`false`).
    SetDown(i32, bool, mpsc::Sender<Result<()>>),
}

/// A running mock cluster. The cluster handle is not `Send`, so it lives on its own thread
/// until [`EmbeddedBroker::stop`] (or drop).
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts `brokers` mock brokers on 127.0.0.1 holding `topics`, each with `partitions`
    /// partitions. (The mock cluster does not serve the admin CreateTopics API, so topics
    /// are made here, through the mock API.)
    pub fn start(brokers: i32, topics: &[&str], partitions: i32) -> Result<Self> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || match new_cluster(brokers) {
                Ok(owner) => {
                    let Some(cluster) = owner.client().mock_cluster() else {
                        let _ = ready_tx.send(Err(Error::Embedded("no mock cluster".into())));
                        return;
                    };
                    for t in &topics {
                        if let Err(e) = cluster.create_topic(t, partitions, 1) {
                            let _ = ready_tx.send(Err(Error::Embedded(format!("{t}: {e}"))));
                            return;
                        }
                    }
                    let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                    // Serve commands; hold the cluster until the sender is dropped.
                    while let Ok(cmd) = stop_rx.recv() {
                        match cmd {
                            Command::SetDown(id, down, reply) => {
                                let r = if down {
                                    cluster.broker_down(id)
                                } else {
                                    cluster.broker_up(id)
                                };
                                let _ = reply.send(r.map_err(|e| Error::Embedded(e.to_string())));
                            }
                        }
                    }
                    drop(cluster);
                    drop(owner);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(Error::Embedded(e.to_string())));
                }
            })
            .map_err(|e| Error::Embedded(e.to_string()))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|e| Error::Embedded(e.to_string()))??;
        Ok(Self {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Takes mock broker `id` (1-based) down: its connections close and it refuses new
    /// ones, as a crashed or unreachable broker would (for failure tests).
    pub fn broker_down(&self, id: i32) -> Result<()> {
        self.set_down(id, true)
    }

    /// Brings mock broker `id` back up after [`EmbeddedBroker::broker_down`].
    pub fn broker_up(&self, id: i32) -> Result<()> {
        self.set_down(id, false)
    }

    fn set_down(&self, id: i32, down: bool) -> Result<()> {
        let gone = || Error::Embedded("embedded broker stopped".into());
        let (tx, rx) = mpsc::channel();
        self.stop
            .as_ref()
            .ok_or_else(gone)?
            .send(Command::SetDown(id, down, tx))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Milliseconds the mock holds a new group's first join (see the module docs).
const GROUP_INITIAL_REBALANCE_DELAY_MS: i32 = 0;

/// A client owning a mock cluster of `brokers` brokers (the cluster lives as long as the
/// client), with the first-join delay set.
fn new_cluster(brokers: i32) -> std::result::Result<BaseProducer, rdkafka::error::KafkaError> {
    let owner: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", brokers.to_string())
        .create()?;
    set_initial_rebalance_delay(&owner, GROUP_INITIAL_REBALANCE_DELAY_MS);
    Ok(owner)
}

/// The mock cluster's `group.initial.rebalance.delay.ms`.
#[allow(unsafe_code)]
fn set_initial_rebalance_delay(owner: &BaseProducer, delay_ms: i32) {
    // SAFETY: `native_ptr` is the live handle of `owner`, borrowed for this call;
    // `rd_kafka_handle_mock_cluster` returns the cluster that handle owns (or null, then
    // nothing is called); the setter takes the cluster's own lock (rdkafka_mock.c).
    unsafe {
        let cluster = bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
        if !cluster.is_null() {
            bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, delay_ms);
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
