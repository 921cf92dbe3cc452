//! Running the independent pieces of one flush at once, on a few scoped threads.
//!
//! Why: a flushed range becomes one file per (dataset, date), and a fleet that backfills
//! spreads one range over dozens of dates. Storing a file is mostly waiting: on the local
//! disk, a write, an fsync of the file and one of its directory (~3 ms each on the VMs we
//! measured); on an object store, a request. One after another, a flush of 100 files
//! waited ~0.3 s with the CPU idle, and the consumer loop waits for the flush. Several
//! at once overlap those waits (and the journal groups the fsyncs), and encoding one
//! file proceeds while another is being stored.
//!
//! Invariant: the caller gets `Ok` only when every piece succeeded; the order of the
//! results is the order of the items, whatever order they finished in.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Calls `f` on every item, on up to `threads` threads, and returns the results in item
/// order, or the error of the first failing item (in item order) among those that ran.
/// After a failure no further item is started.
pub fn map_all<T, R, E, F>(items: &[T], threads: usize, f: F) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
    F: Fn(&T) -> Result<R, E> + Sync,
{
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let done: Mutex<Vec<(usize, Result<R, E>)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    // a poisoned list still holds complete entries (one push each)
                    done.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_item_order_and_the_first_error_wins() {
        let items: Vec<u32> = (0..50).collect();
        for threads in [0, 1, 3, 64] {
            let ok: Result<Vec<u32>, String> = map_all(&items, threads, |x| Ok(x * 2));
            assert_eq!(ok.unwrap(), (0..50).map(|x| x * 2).collect::<Vec<_>>());
            let err: Result<Vec<u32>, u32> =
                map_all(
                    &items,
                    threads,
                    |x| if *x % 7 == 3 { Err(*x) } else { Ok(*x) },
                );
            // item 3 fails first in order; later failures may or may not have run
            assert_eq!(err.unwrap_err(), 3, "threads {threads}");
        }
        let none: Result<Vec<u32>, ()> = map_all(&[] as &[u32], 4, |x| Ok(*x));
        assert!(none.unwrap().is_empty());
    }
}
