//! Fault injection for the crash tests, inert unless `FEEDER_CRASHPOINT` is set.
//!
//! `FEEDER_CRASHPOINT=<point>[:<n>]` stops the writer dead the *n*-th time (default 1) it
//! reaches `<point>`: it prints `crashpoint <point> reached` to stderr and blocks that
//! thread for good, so a test can SIGKILL the process at exactly that place and check
//! what a restart makes of it. The points are the three places where a crash leaves a
//! different state behind:
//! - `buffering`: records are buffered, no file of theirs exists yet;
//! - `after_temp_write`: a temporary file is written and fsynced, not yet renamed;
//! - `after_rename`: a range's files are in place (Iceberg: every table's snapshot is
//!   committed), its offsets not yet committed;
//! - `after_data_files` (Iceberg): a table's data files of a range are written, its
//!   snapshot not yet committed;
//! - `after_snapshot` (Iceberg): one table's snapshot of a range is committed, the
//!   range's other tables maybe not.
//!
//! Production never sets the variable; it is read once, and an unknown value is
//! reported on stderr and ignored rather than failing a writer.
//!
//! All of this is compiled only with the cargo feature `crash-points`, which the `feeder`
//! crate turns on for its test builds (a dev-dependency feature): in a release build
//! [`reached`] is empty and inlined away, the variable is never read, and the point names
//! are not in the binary.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Buffering,
    AfterTempWrite,
    AfterRename,
    AfterDataFiles,
    AfterSnapshot,
}

#[cfg(feature = "crash-points")]
impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::Buffering => "buffering",
            Point::AfterTempWrite => "after_temp_write",
            Point::AfterRename => "after_rename",
            Point::AfterDataFiles => "after_data_files",
            Point::AfterSnapshot => "after_snapshot",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Point::Buffering,
            Point::AfterTempWrite,
            Point::AfterRename,
            Point::AfterDataFiles,
            Point::AfterSnapshot,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }
}

/// `<point>[:<n>]` -> (point, n >= 1).
#[cfg(feature = "crash-points")]
fn parse(spec: &str) -> Option<(Point, u64)> {
    let (point, n) = match spec.split_once(':') {
        Some((p, n)) => (p, n.parse().ok().filter(|n| *n >= 1)?),
        None => (spec, 1),
    };
    Some((Point::parse(point)?, n))
}

#[cfg(feature = "crash-points")]
fn armed() -> Option<(Point, u64)> {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<(Point, u64)>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        let spec = std::env::var("FEEDER_CRASHPOINT").ok()?;
        let parsed = parse(&spec);
        if parsed.is_none() {
            eprintln!("FEEDER_CRASHPOINT={spec:?} ignored: expected <point>[:<n>]");
        }
        parsed
    })
}

/// Without the `crash-points` feature a crash point is compiled out.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn reached(_point: Point) {}

/// Marks that the writer reached `point`; blocks forever on the armed hit.
#[cfg(feature = "crash-points")]
pub fn reached(point: Point) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((armed, n)) = armed() else { return };
    if armed != point || HITS.fetch_add(1, Ordering::SeqCst) + 1 != n {
        return;
    }
    eprintln!("crashpoint {} reached", point.name());
    loop {
        std::thread::park();
    }
}

#[cfg(all(test, feature = "crash-points"))]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_are_refused() {
        assert_eq!(parse("buffering"), Some((Point::Buffering, 1)));
        assert_eq!(parse("after_rename:3"), Some((Point::AfterRename, 3)));
        assert_eq!(parse("after_snapshot:2"), Some((Point::AfterSnapshot, 2)));
        assert_eq!(parse("after_data_files"), Some((Point::AfterDataFiles, 1)));
        assert_eq!(
            parse("after_temp_write:1"),
            Some((Point::AfterTempWrite, 1))
        );
        for bad in ["", "nowhere", "buffering:0", "buffering:x", "after_rename:"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
