//! A tansu broker (a Kafka-protocol broker in its own process, SQLite storage) for tests
//! that need real broker I/O across processes and restarts: admin topic creation,
//! consumer groups, compaction settings. The binary comes from `FEEDER_TANSU`
//! (`tests/install-tansu.sh` builds and caches it); a test that needs it and does not
//! find it fails, never passes.

use std::io::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A tansu broker in its own process, on 127.0.0.1, with SQLite storage in `dir`.
/// Killed on drop.
pub struct Tansu {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Tansu {
    pub fn binary() -> PathBuf {
        match std::env::var_os("FEEDER_TANSU") {
            Some(p) => PathBuf::from(p),
            None => panic!(
                "FEEDER_TANSU is not set: run the suite with tests/run.sh, which installs tansu \
                 (cargo install --locked tansu --features libsql) and exports its path"
            ),
        }
    }

    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_on(dir, free_port())
    }

    /// Starts (or restarts, on the same storage) a broker on `port`.
    pub fn start_on(dir: &Path, port: u16) -> Result<Self> {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join(format!("tansu-{port}.log")))
            .map_err(|e| Error::other(format!("tansu log: {e}")))?;
        // tansu resolves sqlite:// paths against its working directory
        let child = Command::new(Self::binary())
            .current_dir(dir)
            .args([
                "broker",
                "--storage-engine",
                "sqlite://tansu.db",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| Error::other(format!("starting tansu: {e}")))?;
        let mut t = Self {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = t.child.try_wait()? {
                return Err(Error::other(format!(
                    "tansu exited with {status}; log in {}",
                    t.dir.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::other("tansu not listening after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(t)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id (for SIGSTOP/SIGCONT in tests that stall it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("tansu-{}.log", self.port)))
            .unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
