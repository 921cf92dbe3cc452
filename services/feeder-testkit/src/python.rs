//! The Python of the test virtualenv (`FEEDER_PYTHON`, set by `tests/run.sh`): pyarrow,
//! DuckDB, boto3 and moto live there. A test that needs it and does not find it fails,
//! saying how to get it; a missing dependency is never a pass.

use std::path::PathBuf;
use std::process::Command;

/// The interpreter named by `FEEDER_PYTHON`; panics with the way to set it.
pub fn python_path() -> PathBuf {
    match std::env::var_os("FEEDER_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "FEEDER_PYTHON is not set: run tests/run.sh, or set it to the python of \
             `tests/setup-python.sh | tail -1`"
        ),
    }
}

/// Runs the test Python with `args`; returns its stdout, failing the test (with its
/// stderr) when it fails.
pub fn python(args: &[&str]) -> String {
    let out = Command::new(python_path())
        .args(args)
        .output()
        .expect("running FEEDER_PYTHON");
    assert!(
        out.status.success(),
        "python {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python printed UTF-8")
}
