//! The stream stage's side of the zombie fence (`feeder_kafka::fence`): claiming a
//! partition before rebuilding its state, and the test hook that pauses the stage where
//! a stall does harm.
//!
//! # Claiming
//! On first sight of raw partition *p* (start, or after a rebalance), before reading
//! anything of *p*, the stage appends a claim to checked *p* and waits for its offset,
//! the token; then a claim with that token to quarantine *p* and anomalies *p*; then a
//! [`ClaimRecord`] naming the three positions to the state changelog *p*. Recovery reads
//! every log to its end after that, so it sees all that a previous owner wrote before
//! the claim, and every reader ignores what the previous owner writes after it.
//!
//! # Off switch
//! `StreamConfig::zombie_fence` (default from `FEEDER_ZOMBIE_FENCE`, on unless `off`)
//! disables claims and owner headers. It exists to measure
//! what the fence costs and for the test that shows what happens without it; never set
//! it in production.
//!
//! # Pause point
//! `FEEDER_PAUSEPOINT=before_produce[:<n>]` makes the stage stop itself with SIGSTOP
//! (`kill -STOP` of its own pid) the *n*-th time (default 1) it is about to decide a
//! batch: its partitions are claimed and its records in hand, nothing of them
//! produced. A test then lets another instance take the partitions and resumes it with
//! SIGCONT: the paused stage produces that batch as a zombie. Inert unless set; an
//! unknown value is reported on stderr and ignored. Compiled only with the cargo feature
//! `crash-points` (the test builds of the `feeder` binary); a release build has an empty
//! `pause_point` and does not read the variable.

use feeder_kafka::Topics;
use feeder_kafka::fence::Mark;
use prost::Message as _;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::FutureProducer;

use crate::changelog::ClaimRecord;
use crate::outputs::produce::{acked, enqueue};
use crate::{Error, Result};

/// Claims partition `p` of the output topics; returns the mark every output of the
/// new owner carries ([`Mark::Unowned`] with the fence off).
pub async fn claim(producer: &FutureProducer, topics: &Topics, p: i32, on: bool) -> Result<Mark> {
    if !on {
        return Ok(Mark::Unowned);
    }
    let at = |topic: &'static str| {
        move |e: Error| Error::Recovery {
            partition: p,
            source: format!("claim in {topic}: {e}").into(),
        }
    };
    // the token is the offset of the first claim, which says so (no value)
    let checked = claim_in(producer, &topics.checked, p, Mark::claim_here(), "", &[])
        .await
        .map_err(at("checked"))?;
    let mark = Mark::Claim(checked);
    let headers = || mark.headers().unwrap_or_default();
    let (quarantine, anomalies) = futures::try_join!(
        async {
            claim_in(producer, &topics.quarantine, p, headers(), "", &[])
                .await
                .map_err(at("quarantine"))
        },
        async {
            claim_in(producer, &topics.anomalies, p, headers(), "", &[])
                .await
                .map_err(at("anomalies"))
        },
    )?;
    let rec = ClaimRecord {
        checked_at: checked,
        quarantine_at: quarantine,
        anomalies_at: anomalies,
    };
    claim_in(
        producer,
        &topics.stream_state,
        p,
        headers(),
        &crate::changelog::claim_key(&rec),
        &rec.encode_to_vec(),
    )
    .await
    .map_err(at("stream-state"))?;
    tracing::info!(partition = p, token = checked, "partition claimed");
    crate::observe::partition_claimed();
    Ok(Mark::Owner(checked))
}

/// Produces one claim record and waits for its offset.
async fn claim_in(
    producer: &FutureProducer,
    topic: &str,
    p: i32,
    headers: OwnedHeaders,
    key: &str,
    value: &[u8],
) -> Result<i64> {
    let fut = enqueue(producer, topic, p, key, value, Some(headers))
        .await
        .map_err(|e| Error::Delivery {
            offset: -1,
            source: e.into(),
        })?;
    Ok(acked(-1, fut).await?.offset)
}

/// Without the `crash-points` feature the pause point is compiled out.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn pause_point() {}

/// Stops the process with SIGSTOP if the pause point is armed for this hit.
#[cfg(feature = "crash-points")]
pub fn pause_point() {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static HITS: AtomicU64 = AtomicU64::new(0);
    static ARMED: OnceLock<Option<u64>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("FEEDER_PAUSEPOINT").ok()?;
        let n = match spec.split_once(':') {
            None if spec == "before_produce" => Some(1),
            Some(("before_produce", n)) => n.parse().ok().filter(|n| *n >= 1),
            _ => None,
        };
        if n.is_none() {
            eprintln!("FEEDER_PAUSEPOINT={spec:?} ignored: expected before_produce[:<n>]");
        }
        n
    });
    let Some(n) = *armed else { return };
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 != n {
        return;
    }
    eprintln!("pausepoint before_produce reached");
    let pid = std::process::id().to_string();
    // the process stops inside this call; it returns after SIGCONT
    if let Err(e) = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
    {
        eprintln!("pausepoint: kill -STOP failed: {e}");
    }
    eprintln!("pausepoint resumed");
}
