//! The assigned topic-partitions' state, shared by the consumer loop and the rebalance
//! callback, and the write-then-commit step both of them use.
//!
//! The callback runs inside `recv()` on the loop's own task (librdkafka serves rebalance
//! events from the consumer queue), and the loop never holds the lock across an await,
//! so the two never interleave: a revoked partition is flushed and committed (or its
//! partial replay dropped) before the rebalance proceeds and another writer gets it.
//!
//! It also keeps the running total of payload bytes buffered over all partitions, for the
//! writer-wide cap (`cap.rs`): every change to a buffer goes through the lock here, which
//! adjusts the total by the buffer's size before and after.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use feeder_kafka::fence::{FenceState, Mark, Verdict};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{error, info, warn};

use crate::buffer::{Batch, FlushReason, Limits, Offered, PartitionBuffer};
use crate::cap::{self, Candidate};
use crate::flush::{FlushReport, RangeSpec, write_range_encrypted};
use crate::iceberg::IcebergTables;
use crate::observe;
use crate::record::{SourceRecord, TopicKind};
use crate::recovery::{Container, RecoveryPlan};
use crate::storage::Storage;
use crate::{Result, WriterConfig, WriterStats};

/// `(topic, partition)`.
pub(crate) type TpKey = (String, i32);

struct PartitionState {
    kind: TopicKind,
    buffer: PartitionBuffer,
    /// Records written to files whose offsets are not yet committed.
    uncommitted: u64,
    /// `last` of the most recent range written.
    last_written: Option<i64>,
    /// Compacted files that hold replayed ranges (see `recovery`).
    containers: Vec<Container>,
    /// The zombie fence: which stream owner's records count ([`crate::fences`]).
    fence: FenceState,
    /// The last record that holds no rows (a claim, a superseded record) since the last
    /// commit: committed with the next flush, or on a tick when nothing is buffered, so
    /// an idle partition that ends with one shows no lag.
    skipped_tail: Option<i64>,
}

pub(crate) struct Shared {
    pub storage: Arc<dyn Storage>,
    pub cfg: WriterConfig,
    pub stats: Arc<WriterStats>,
    limits: Limits,
    kinds: HashMap<String, TopicKind>,
    partitions: Mutex<HashMap<TpKey, PartitionState>>,
    /// Payload bytes in all buffers; changed only while `partitions` is locked.
    buffered: AtomicUsize,
    fatal: Mutex<Option<String>>,
    /// Iceberg mode: ranges are appended to these tables instead of stored as files.
    tables: Option<Arc<IcebergTables>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still consistent enough to
    // flush or drop: nothing is committed that is not durable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(
        storage: Arc<dyn Storage>,
        cfg: WriterConfig,
        stats: Arc<WriterStats>,
        kinds: HashMap<String, TopicKind>,
    ) -> Self {
        Self {
            storage,
            limits: Limits::from(&cfg),
            cfg,
            stats,
            kinds,
            partitions: Mutex::new(HashMap::new()),
            buffered: AtomicUsize::new(0),
            fatal: Mutex::new(None),
            tables: None,
        }
    }

    /// Iceberg mode: each range goes to `tables`.
    pub fn with_tables(mut self, tables: Option<Arc<IcebergTables>>) -> Self {
        self.tables = tables;
        self
    }

    /// Every topic the writer reads.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    pub fn kind_of(&self, topic: &str) -> Option<TopicKind> {
        self.kinds.get(topic).copied()
    }

    /// True when `key` must be (re)planned from storage before `offset` is offered: it
    /// is new since the last assignment, or the consumer went back.
    pub fn needs_plan(&self, key: &TpKey, offset: i64) -> bool {
        lock(&self.partitions)
            .get(key)
            .is_none_or(|st| st.buffer.is_rewind(offset))
    }

    /// Starts (or restarts, discarding any buffer) `key` with a recovery plan.
    pub fn install(&self, key: TpKey, kind: TopicKind, plan: &RecoveryPlan) {
        let st = PartitionState {
            kind,
            buffer: PartitionBuffer::new(self.limits, plan).tracking_dates(kind),
            uncommitted: 0,
            last_written: None,
            containers: plan.containers.clone(),
            fence: FenceState::starting_at(plan.fence),
            skipped_tail: None,
        };
        if let Some(old) = lock(&self.partitions).insert(key, st) {
            self.resized(old.buffer.bytes(), 0);
        }
    }

    /// Judges the next record of `key` against the zombie fence (in offset order, before
    /// it is offered).
    pub fn judge(&self, key: &TpKey, mark: Mark) -> Verdict {
        match lock(&self.partitions).get_mut(key) {
            Some(st) => st.fence.judge(mark),
            None => FenceState::default().judge(mark),
        }
    }

    /// The record of `key` at `offset` holds no rows and is not offered.
    pub fn skipped(&self, key: &TpKey, offset: i64) {
        if let Some(st) = lock(&self.partitions).get_mut(key) {
            st.skipped_tail = Some(offset);
        }
    }

    /// The last offset a flush of `key` ending at `last` commits: past the records skipped
    /// after `last` when nothing else is buffered.
    pub fn commit_point(&self, key: &TpKey, last: i64) -> i64 {
        match lock(&self.partitions).get_mut(key) {
            Some(st) if st.buffer.is_empty() => {
                st.skipped_tail.take().map_or(last, |t| t.max(last))
            }
            _ => last,
        }
    }

    /// Partitions with nothing buffered or uncommitted but skipped records: the last
    /// offset to commit for each.
    pub fn idle_skips(&self) -> Vec<(TpKey, i64)> {
        lock(&self.partitions)
            .iter_mut()
            .filter(|(_, st)| st.buffer.is_empty() && st.uncommitted == 0)
            .filter_map(|(k, st)| st.skipped_tail.take().map(|t| (k.clone(), t)))
            .collect()
    }

    pub fn offer(&self, key: &TpKey, rec: SourceRecord, now: Instant) -> Offered {
        let offered = lock(&self.partitions)
            .get_mut(key)
            .map(|st| self.tracked(st, |b| b.offer(rec, now)))
            .unwrap_or_default();
        observe::skipped(offered.skipped);
        offered
    }

    /// Buffers old enough to flush.
    pub fn due(&self, now: Instant) -> Vec<(TpKey, Batch)> {
        let due = lock(&self.partitions)
            .iter_mut()
            .filter_map(|(k, st)| {
                self.tracked(st, |b| b.take_if_due(now))
                    .map(|b| (k.clone(), b))
            })
            .collect();
        observe::buffered(self.buffered_bytes());
        due
    }

    /// Over the writer-wide cap: the buffers to flush now, largest first, never a replay
    /// of a forced range (see `cap.rs`). Empty within the cap.
    pub fn over_cap(&self) -> Vec<(TpKey, Batch)> {
        let cap = self.cfg.max_buffered_bytes;
        if self.buffered_bytes() <= cap {
            return Vec::new();
        }
        let mut partitions = lock(&self.partitions);
        let candidates: Vec<Candidate<TpKey>> = partitions
            .iter()
            .map(|(k, st)| Candidate {
                key: k.clone(),
                bytes: st.buffer.bytes(),
                replaying: st.buffer.is_replaying(),
            })
            .collect();
        let mut out = Vec::new();
        for key in cap::choose(&candidates, cap) {
            if let Some(st) = partitions.get_mut(&key)
                && let Some(batch) = self.tracked(st, PartitionBuffer::take_for_cap)
            {
                out.push((key, batch));
            }
        }
        drop(partitions);
        observe::buffered(self.buffered_bytes());
        out
    }

    /// Payload bytes buffered over all partitions.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Runs `f` on `st`'s buffer (the caller holds the lock), keeping the total in step.
    fn tracked<R>(&self, st: &mut PartitionState, f: impl FnOnce(&mut PartitionBuffer) -> R) -> R {
        let before = st.buffer.bytes();
        let r = f(&mut st.buffer);
        self.resized(before, st.buffer.bytes());
        r
    }

    fn resized(&self, before: usize, after: usize) {
        if after >= before {
            self.buffered.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.buffered.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Empties every buffer for shutdown; partial replays are dropped.
    pub fn close_all(&self, reason: FlushReason) -> Vec<(TpKey, Batch)> {
        let mut out = Vec::new();
        for (k, st) in lock(&self.partitions).iter_mut() {
            let (batch, dropped) = self.tracked(st, |b| b.take_for_close(reason));
            observe::dropped(dropped);
            out.extend(batch.map(|b| (k.clone(), b)));
        }
        out
    }

    /// Writes the files of `batch` (blocking).
    pub fn write(&self, key: &TpKey, kind: TopicKind, batch: &Batch) -> Result<FlushReport> {
        let spec = RangeSpec {
            kind,
            topic: &key.0,
            partition: key.1,
            first: batch.first,
            last: batch.last,
            writer_id: &self.cfg.writer_id,
        };
        if let Some(tables) = &self.tables {
            // the tables' snapshots say what is held; no files to contain it
            return tables.write_range(spec, &batch.records);
        }
        // Only a replayed piece can lie inside a container (pieces cover every container),
        // and a replay is never flushed on revocation, when the state is already removed.
        let containers: Vec<Container> = lock(&self.partitions)
            .get(key)
            .map(|st| {
                st.containers
                    .iter()
                    .filter(|c| c.first <= batch.first && batch.last <= c.last)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        write_range_encrypted(
            self.storage.as_ref(),
            spec,
            &batch.records,
            &containers,
            &self.cfg.encryption,
        )
    }

    /// Counts a durable range in stats and metrics.
    pub fn account_write(&self, key: &TpKey, batch: &Batch, report: &FlushReport) {
        let files: u64 = report.files_by_dataset.values().sum();
        self.stats.files_written.fetch_add(files, Ordering::Relaxed);
        for (dataset, rows) in &report.rows {
            self.stats.add_rows(*dataset, *rows);
        }
        observe::flushed(report, batch.reason, batch.records.len(), batch.bytes);
        observe::buffered(self.buffered_bytes());
        info!(
            topic = %key.0,
            partition = key.1,
            first = batch.first,
            last = batch.last,
            records = batch.records.len(),
            files = files,
            reason = batch.reason.name(),
            took_ms = report.duration.as_millis() as u64,
            "range written"
        );
    }

    /// Records that `batch` is durable and whether its commit succeeded.
    pub fn mark_written(&self, key: &TpKey, batch: &Batch, committed: bool) {
        if let Some(st) = lock(&self.partitions).get_mut(key) {
            st.written(&self.stats, batch, committed);
        }
    }

    /// Re-commits partitions whose last commit failed (shutdown).
    pub fn retry_commits<C: Consumer<WriterContext>>(&self, consumer: &C) {
        for (key, st) in lock(&self.partitions).iter_mut() {
            st.retry_commit(consumer, &self.stats, key);
        }
    }

    /// Revocation: flush (or drop a partial replay) and commit, before the partition moves.
    fn close_on_revoke<C: Consumer<WriterContext>>(&self, consumer: &C, key: TpKey) {
        let Some(mut st) = lock(&self.partitions).remove(&key) else {
            return;
        };
        self.resized(st.buffer.bytes(), 0);
        let (batch, dropped) = st.buffer.take_for_close(FlushReason::Revoke);
        observe::dropped(dropped);
        let Some(batch) = batch else {
            st.retry_commit(consumer, &self.stats, &key);
            return;
        };
        match in_place(|| self.write(&key, st.kind, &batch)) {
            Ok(report) => {
                self.account_write(&key, &batch, &report);
                let committed = commit(consumer, &key, batch.last);
                st.written(&self.stats, &batch, committed);
            }
            Err(e) => {
                // Nothing was committed, so the next owner rewrites this range.
                error!(topic = %key.0, partition = key.1, error = %e, "flush on revocation failed");
                self.set_fatal(format!("flush of {}/{} on revocation: {e}", key.0, key.1));
            }
        }
    }

    fn set_fatal(&self, msg: String) {
        lock(&self.fatal).get_or_insert(msg);
    }

    pub fn take_fatal(&self) -> Option<String> {
        lock(&self.fatal).take()
    }
}

impl PartitionState {
    fn written(&mut self, stats: &WriterStats, batch: &Batch, committed: bool) {
        self.uncommitted += batch.records.len() as u64;
        self.last_written = Some(batch.last);
        if committed {
            self.committed(stats);
        }
    }

    fn committed(&mut self, stats: &WriterStats) {
        stats
            .records_committed
            .fetch_add(self.uncommitted, Ordering::Relaxed);
        observe::committed(self.uncommitted);
        self.uncommitted = 0;
    }

    fn retry_commit<C: Consumer<WriterContext>>(
        &mut self,
        consumer: &C,
        stats: &WriterStats,
        key: &TpKey,
    ) {
        if let (true, Some(last)) = (self.uncommitted > 0, self.last_written)
            && commit(consumer, key, last)
        {
            self.committed(stats);
        }
    }
}

/// Commits `last + 1` for `key`, synchronously. A failure is logged, not fatal: the files
/// are durable, and a later commit (or the next owner's replay) covers them.
pub(crate) fn commit<C: Consumer<WriterContext>>(consumer: &C, key: &TpKey, last: i64) -> bool {
    let mut tpl = TopicPartitionList::new();
    let result = tpl
        .add_partition_offset(&key.0, key.1, Offset::Offset(last + 1))
        .and_then(|()| in_place(|| consumer.commit(&tpl, CommitMode::Sync)));
    match result {
        Ok(()) => true,
        Err(e) => {
            observe::commit_failed();
            warn!(topic = %key.0, partition = key.1, offset = last + 1, error = %e, "offset commit failed");
            false
        }
    }
}

/// Runs blocking work from async context: off the worker on a multi-threaded runtime,
/// inline otherwise (the work is short: one commit, or one range on revocation).
fn in_place<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The consumer's context: routes revocations to [`Shared`].
pub(crate) struct WriterContext {
    shared: Arc<Shared>,
}

impl WriterContext {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn describe(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect()
}

impl ClientContext for WriterContext {}

impl ConsumerContext for WriterContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                info!(partitions = ?describe(tpl), "partitions revoked");
                for e in tpl.elements() {
                    self.shared
                        .close_on_revoke(consumer, (e.topic().to_string(), e.partition()));
                }
            }
            Rebalance::Assign(tpl) => info!(partitions = ?describe(tpl), "partitions assigned"),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::LocalFs;

    fn shared(cap: usize) -> (tempfile::TempDir, Shared) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WriterConfig {
            flush_max_frames: 1000,
            flush_max_bytes: 1 << 20,
            flush_max_age: Duration::from_secs(5),
            max_buffered_bytes: cap,
            ..WriterConfig::default()
        };
        let storage = Arc::new(LocalFs::new(dir.path()).unwrap());
        let kinds = HashMap::from([("t".to_string(), TopicKind::Checked)]);
        (dir, Shared::new(storage, cfg, Arc::default(), kinds))
    }

    fn rec(offset: i64, size: usize) -> SourceRecord {
        SourceRecord {
            offset,
            timestamp_ms: None,
            payload: Some(vec![0; size]),
        }
    }

    fn key(p: i32) -> TpKey {
        ("t".to_string(), p)
    }

    /// The running total follows every way a buffer changes, and the cap flushes the
    /// largest ordinary buffers, never a replay.
    #[test]
    fn the_total_tracks_buffers_and_the_cap_flushes_the_largest() {
        let (_dir, s) = shared(100);
        let t0 = Instant::now();
        for p in 0..3 {
            s.install(key(p), TopicKind::Checked, &RecoveryPlan::default());
        }
        // partition 3 replays a range 0..=9 an earlier run wrote but did not commit
        s.install(
            key(3),
            TopicKind::Checked,
            &RecoveryPlan::from_ranges(0, [(0, 9)]),
        );
        s.offer(&key(0), rec(0, 30), t0);
        s.offer(&key(1), rec(0, 20), t0);
        s.offer(&key(1), rec(1, 20), t0);
        s.offer(&key(3), rec(0, 50), t0);
        assert_eq!(s.buffered_bytes(), 120);

        // 120 > 100: the replay (50) is larger but must stay whole; partition 1 (40) goes
        let early = s.over_cap();
        let got: Vec<_> = early.iter().map(|(k, b)| (k.1, b.first, b.last)).collect();
        assert_eq!(got, [(1, 0, 1)]);
        assert_eq!(early[0].1.reason, FlushReason::WriterBytes);
        assert_eq!(s.buffered_bytes(), 80);
        assert!(s.over_cap().is_empty());

        // re-planning a partition discards its buffer; age and shutdown empty the rest
        s.install(key(0), TopicKind::Checked, &RecoveryPlan::default());
        assert_eq!(s.buffered_bytes(), 50);
        s.offer(&key(2), rec(0, 5), t0);
        let due = s.due(t0 + Duration::from_secs(5));
        assert_eq!(due.len(), 1, "the replay never ages out");
        assert_eq!(s.buffered_bytes(), 50);
        let closed = s.close_all(FlushReason::Shutdown);
        assert!(
            closed.is_empty(),
            "a partial replay is dropped, not written"
        );
        assert_eq!(s.buffered_bytes(), 0);
    }
}
