//! CPU time per thread of this process, grouped by thread name, for benches that run
//! several stages in one process on threads named after them.
//!
//! Linux only: each thread's `utime + stime` from `/proc/self/task/<tid>/stat` (clock
//! ticks, usually 10 ms; the kernel scales them so their sum follows the scheduler's
//! exact runtime). A thread's figure disappears with the thread, so a [`Sampler`] reads
//! every thread periodically and keeps the last value it saw of each; what a thread used
//! between its last sample and its exit is lost, and [`Usage::unaccounted`] shows how
//! much that was against the process total (`/proc/self/stat`, which keeps dead threads).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One thread's name and CPU ticks, as read from its `stat` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadTicks {
    pub name: String,
    pub ticks: u64,
}

/// Parses a `/proc/<pid>/task/<tid>/stat` line: `tid (comm) state ... utime stime ...`.
/// The name may hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<ThreadTicks> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    let mut rest = line.get(close + 1..)?.split_whitespace();
    // after the name: state (field 3) ... utime (14), stime (15)
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(ThreadTicks {
        name,
        ticks: utime + stime,
    })
}

/// Clock ticks per second of `/proc` figures.
fn ticks_per_sec() -> f64 {
    // the kernel's USER_HZ; 100 on every mainstream Linux architecture
    100.0
}

/// Every live thread of this process: tid -> name and ticks.
pub fn read_threads() -> HashMap<u64, ThreadTicks> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if let Some(t) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            out.insert(tid, t);
        }
    }
    out
}

/// The whole process's CPU seconds, dead threads included.
pub fn process_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(parse_stat)
        .map_or(0.0, |t| t.ticks as f64 / ticks_per_sec())
}

/// CPU seconds per group of threads over a measured interval.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub by_group: BTreeMap<&'static str, f64>,
    /// Process CPU seconds over the interval.
    pub process: f64,
    /// `process` minus the sum of the groups: threads that exited between samples.
    pub unaccounted: f64,
}

impl Usage {
    pub fn get(&self, group: &str) -> f64 {
        self.by_group.get(group).copied().unwrap_or(0.0)
    }
}

/// The latest ticks seen per thread since the sampler started.
type Seen = HashMap<u64, ThreadTicks>;

/// Reads every thread every `period` on a thread of its own (named `cpu-sampler`).
pub struct Sampler {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(period: Duration) -> Self {
        let seen = Arc::new(Mutex::new(Seen::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("cpu-sampler".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    merge(&s, read_threads());
                    std::thread::sleep(period);
                }
            })
            .ok();
        Self { seen, stop, thread }
    }

    /// The interval's starting point: every thread's ticks now, and the process's.
    pub fn mark(&self) -> Mark {
        merge(&self.seen, read_threads());
        Mark {
            threads: lock(&self.seen).clone(),
            process: process_cpu_secs(),
        }
    }

    /// CPU seconds per group since `from`; `group` names a thread's group from its name.
    pub fn since(&self, from: &Mark, group: impl Fn(&str) -> &'static str) -> Usage {
        merge(&self.seen, read_threads());
        let now = lock(&self.seen).clone();
        let mut u = Usage {
            process: process_cpu_secs() - from.process,
            ..Usage::default()
        };
        for (tid, t) in &now {
            let before = from.threads.get(tid).map_or(0, |b| b.ticks);
            let secs = t.ticks.saturating_sub(before) as f64 / ticks_per_sec();
            *u.by_group.entry(group(&t.name)).or_default() += secs;
        }
        u.unaccounted = u.process - u.by_group.values().sum::<f64>();
        u
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A starting point for [`Sampler::since`].
#[derive(Debug, Clone)]
pub struct Mark {
    threads: Seen,
    process: f64,
}

fn lock(m: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    // a poisoned map still holds complete entries (each insert is one assignment)
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps the newest reading per thread.
fn merge(seen: &Mutex<Seen>, now: Seen) {
    let mut s = lock(seen);
    for (tid, t) in now {
        s.insert(tid, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let line = "4242 (rdk:broker (1)) S 1 1 1 0 -1 4194304 10 0 0 0 250 17 0 0 20 0 9 0 1 2 3";
        assert_eq!(
            parse_stat(line),
            Some(ThreadTicks {
                name: "rdk:broker (1)".into(),
                ticks: 267
            })
        );
        assert_eq!(parse_stat("12 (short) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }
}
