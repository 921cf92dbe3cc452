//! Frames the edge must refuse, sent all through the chaos run next to the load: real
//! devices' ids with signatures from keys the utility never provisioned (at seqs far
//! above any the load reaches), and devices absent from the registry. Every one is
//! written to a CSV (`device_id,seq`) before it is sent, whatever answer comes back, so
//! the checker can show none of them is stored anywhere; one acked is a failure at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use feeder_core::keyfile::load_key_file;
use feeder_proto::v1::PushRequest;
use feeder_proto::v1::ingest_client::IngestClient;
use feeder_sim::{SimDevice, attacks};
use tonic::transport::Endpoint;

/// Forged seqs start here, far above the load's (one frame per device per call).
const FORGED_SEQ_BASE: u64 = 1 << 40;
const EVERY: Duration = Duration::from_millis(250);

/// What the forger saw.
#[derive(Debug, Default)]
pub struct Forged {
    pub sent: u64,
    /// Answers per ack code, frame by frame (0 must never appear).
    pub codes: BTreeMap<i32, u64>,
    /// Calls that failed as a whole (the edge down or paused).
    pub failed_calls: u64,
}

pub struct Forger {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Forged>,
}

impl Forger {
    /// Starts sending to `url`, forging for the first devices of `secrets`; every frame
    /// sent is listed in `log`.
    pub fn start(url: &str, secrets: &Path, log: &Path) -> Self {
        let devices: Vec<SimDevice> = load_key_file(secrets)
            .unwrap()
            .into_iter()
            .take(4)
            .map(|k| SimDevice::from_key(k, 0))
            .collect();
        let mut out = std::io::BufWriter::new(std::fs::File::create(log).unwrap());
        writeln!(out, "device_id,seq").unwrap();
        let endpoint = Endpoint::from_shared(url.to_string())
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut client = IngestClient::new(endpoint.connect_lazy());
                let mut forged = Forged::default();
                let mut n = 0u64;
                while !stopping.load(Ordering::Relaxed) {
                    let now = now_ms();
                    let mut frames = Vec::new();
                    for dev in &devices {
                        frames.push(attacks::forged(dev, FORGED_SEQ_BASE + n, now));
                    }
                    frames.push(attacks::unknown_device(&format!("mtr-ghost-{n}"), now));
                    n += 1;
                    for f in &frames {
                        writeln!(out, "{},{}", f.device_id, f.seq).unwrap();
                    }
                    out.flush().unwrap();
                    forged.sent += frames.len() as u64;
                    match client.push(PushRequest { frames }).await {
                        Ok(r) => {
                            for ack in r.into_inner().acks {
                                *forged.codes.entry(ack.code).or_default() += 1;
                                assert_ne!(
                                    ack.code, 0,
                                    "the edge acked a forged frame: {} seq {}",
                                    ack.device_id, ack.seq
                                );
                            }
                        }
                        Err(_) => forged.failed_calls += 1,
                    }
                    tokio::time::sleep(EVERY).await;
                }
                forged
            })
        });
        Self { stop, thread }
    }

    pub fn stop(self) -> Forged {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the forger stopped cleanly")
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
