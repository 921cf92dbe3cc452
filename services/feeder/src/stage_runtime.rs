//! Where an in-process stage runs: on the caller's runtime (the demo, the tests), or on a
//! multi-thread runtime of its own whose threads, blocking pool included, carry the
//! stage's name. The pipeline bench uses the latter to charge CPU time to each stage
//! by thread name (`/proc/self/task/*/stat`); stages still meet only through Kafka.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// Idle blocking threads of an own runtime live this long, so a thread's CPU time is
/// still readable at the end of a measured run instead of leaving with the thread.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(600);

/// A stage's runtime; `None` inside is the caller's.
pub(crate) struct StageRuntime(Option<Runtime>);

impl StageRuntime {
    /// The caller's runtime when `workers` is `None`, else a runtime of `workers` threads
    /// named `name` (at most 15 bytes are visible in `/proc`).
    pub(crate) fn new(name: &'static str, workers: Option<usize>) -> std::io::Result<Self> {
        let Some(workers) = workers else {
            return Ok(Self(None));
        };
        let rt = Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(name)
            .thread_keep_alive(BLOCKING_KEEP_ALIVE)
            .enable_all()
            .build()?;
        Ok(Self(Some(rt)))
    }

    pub(crate) fn spawn<F>(&self, f: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(f),
            None => tokio::spawn(f),
        }
    }
}

impl Drop for StageRuntime {
    /// Dropping a runtime from async code panics; the stage's tasks are done or
    /// abandoned by now, so its threads are let go in the background.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
