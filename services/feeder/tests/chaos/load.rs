//! The load: `feeder loadgen` as its own process (closed loop, capped rate), writing
//! every acked frame to `--acked-log`, stopped with SIGTERM (it then drains its calls,
//! finishes the log and prints its summary).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running load generator; killed if dropped while running.
pub struct Load {
    child: Child,
    log: PathBuf,
}

/// The load generator's summary line: `loadgen: S frames sent in T s: A acked (...),
/// refused R [...], abandoned B`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    pub abandoned: u64,
}

impl Load {
    /// Starts the load on `url`; acked frames go to `acked_log`.
    pub fn start(dir: &Path, url: &str, secrets: &Path, rate: f64, acked_log: &Path) -> Self {
        let log = dir.join("loadgen.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_feeder"))
            .args(["loadgen", "--target", url, "--secrets"])
            .arg(secrets)
            .args(["--seconds", "1000000", "--concurrency", "16"])
            .args(["--frames-per-request", "8", "--rate", &rate.to_string()])
            .arg("--acked-log")
            .arg(acked_log)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) for the summary.
    pub fn stop(mut self) -> Summary {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(90),
                "loadgen did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = self.log();
        assert!(status.success(), "loadgen failed ({status}):\n{log}");
        parse_summary(&log).unwrap_or_else(|| panic!("no loadgen summary in:\n{log}"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_summary(log: &str) -> Option<Summary> {
    let line = log.lines().rev().find(|l| l.starts_with("loadgen: "))?;
    let num_before = |word: &str| -> Option<u64> {
        let i = line.find(word)?;
        line[..i].split_whitespace().last()?.parse().ok()
    };
    let num_after = |word: &str| -> Option<u64> {
        let i = line.find(word)? + word.len();
        let word = line[i..].split_whitespace().next()?;
        word.trim_end_matches(',').parse().ok()
    };
    Some(Summary {
        sent: num_before(" frames sent")?,
        acked: num_before(" acked")?,
        refused: num_after("refused ")?,
        abandoned: num_after("abandoned ")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_line() {
        let log = "  1.0 s  sent ...\nloadgen: 120 frames sent in 3.0 s: 100 acked (33 frames/s, \
                   99 rows/s), refused 4 [4 unauthenticated (16)], abandoned 16\nrows acked: ...";
        let none = "loadgen: 5 frames sent in 1.0 s: 5 acked (5 frames/s, 9 rows/s), \
                    refused 0, abandoned 0";
        let s0 = parse_summary(none).unwrap();
        assert_eq!((s0.acked, s0.refused, s0.abandoned), (5, 0, 0));
        let s = parse_summary(log).unwrap();
        assert_eq!((s.sent, s.acked, s.refused, s.abandoned), (120, 100, 4, 16));
        assert!(parse_summary("nothing").is_none());
    }
}
