//! Datasets on local disk are 0640 files in 0750 directories, whatever the umask: the
//! writer's files and directories (from a root that does not exist yet) and what
//! `feeder compact` creates (merged files, the swapped-in directory, its staging area).
//! The test runs twice: under this process's umask, and re-executed under umask 000
//! (which would make files 0666 and directories 0777 if the modes were left to it).

#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use feeder_writer::NaiveDate;
use feeder_writer::compact::{CompactOptions, compact};
use feeder_writer::schema::Dataset;
use feeder_writer::storage::mode::{DIR_MODE, FILE_MODE};

const TOPIC: &str = "perm.checked";
const UNDER_UMASK_0: &str = "FEEDER_TEST_UNDER_UMASK_0";

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file and directory under `dir` (itself included): (path, is_dir).
fn walk(dir: &Path, out: &mut Vec<(std::path::PathBuf, bool)>) {
    out.push((dir.to_path_buf(), true));
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push((p, false));
        }
    }
}

fn check_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data/feeder");
    write_signed_root(&root, TOPIC, &[(0, 4), (5, 9), (10, 14)]);
    let day = NaiveDate::from_ymd_opt(2024, 3, 10).unwrap();
    let report = compact(
        &root,
        Dataset::Readings,
        day,
        &|_, _| Some(i64::MAX),
        &CompactOptions::default(),
    )
    .unwrap();
    assert!(!report.outputs.is_empty(), "nothing was compacted");

    let mut all = Vec::new();
    walk(&tmp.path().join("data"), &mut all);
    let (dirs, files): (Vec<_>, Vec<_>) = all.iter().partition(|(_, d)| *d);
    assert!(files.len() >= 4, "{files:?}");
    for (p, _) in &files {
        assert_eq!(mode(p), FILE_MODE, "{}: {:o}", p.display(), mode(p));
    }
    for (p, _) in &dirs {
        assert_eq!(mode(p), DIR_MODE, "{}: {:o}", p.display(), mode(p));
    }
}

#[test]
fn dataset_files_are_0640_and_directories_0750() {
    check_modes();
    if std::env::var_os(UNDER_UMASK_0).is_some() {
        return;
    }
    // again in a child process whose umask is 000
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" --exact dataset_files_are_0640_and_directories_0750 --test-threads=1")
        .arg(&exe)
        .env(UNDER_UMASK_0, "1")
        .status()
        .unwrap();
    assert!(status.success(), "under umask 000: {status}");
}
