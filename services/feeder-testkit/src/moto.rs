//! A moto S3 server on a free 127.0.0.1 port, run by the test virtualenv's Python,
//! killed when dropped. Buckets are made by the utility, not by Feeder, so
//! [`MotoS3::start`] creates the one a test names, as an operator would (boto3).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::python::{python, python_path};

/// Credentials moto accepts (any); tests pass them as `AWS_*` variables.
pub const ACCESS_KEY: &str = "test";
pub const SECRET_KEY: &str = "test";

pub struct MotoS3 {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl MotoS3 {
    /// Starts moto, waits until it listens (30 s at most) and creates `bucket`.
    pub fn start(bucket: &str) -> Self {
        let port = free_port();
        let child = Command::new(python_path())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto.server (is moto[server] in the FEEDER_PYTHON venv?)");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.boto3(&format!("s3.create_bucket(Bucket='{bucket}')"));
        moto
    }

    /// Runs `code` in a fresh Python with `s3`, a boto3 client of this server, in scope;
    /// returns what it printed. A fresh interpreter each time: one process importing
    /// boto3 and pyarrow together has aborted at exit on CI.
    pub fn boto3(&self, code: &str) -> String {
        python(&[
            "-c",
            &format!(
                "import boto3, os\n\
                 s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
                 aws_access_key_id='{ACCESS_KEY}', aws_secret_access_key='{SECRET_KEY}')\n{code}",
                self.endpoint
            ),
        ])
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
