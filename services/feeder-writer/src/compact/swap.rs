//! Compaction on a local root: the merged files and links to every file that stays are
//! built in a staging directory and swapped with the live `date=` directory in one
//! `renameat2(RENAME_EXCHANGE)`, so a reader sees the old set or the new set (the module
//! docs of [`super`] say what remains, and how a crash is finished by the next run).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use chrono::NaiveDate;

use super::merge::{CompactOptions, CompactReport, Plan, final_names, merge, plan};
use crate::naming::{self, RangeName};
use crate::schema::Dataset;
use crate::storage::{LocalFs, mode};
use crate::{Error, Result};

/// Where staging directories live, under the data root (outside every dataset, so no
/// dataset glob can match them).
pub const STAGING_DIR: &str = ".feeder-compact";
const MARKER_PREFIX: &str = ".feeder-compact-";

/// Compacts `<root>/<dataset>/date=<date>`. `committed(topic, partition)` is the writer
/// group's committed offset (the next offset it will read); files whose range is not
/// entirely below it are left alone.
pub fn compact(
    root: &Path,
    dataset: Dataset,
    date: NaiveDate,
    committed: &dyn Fn(&str, i32) -> Option<i64>,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let live = root.join(naming::date_dir(dataset, date));
    let staging_root = root.join(STAGING_DIR);
    let mut report = CompactReport {
        leftovers_cleaned: finish_leftovers(&staging_root, &live, dataset, date)?,
        ..Default::default()
    };
    if !live.is_dir() {
        return Ok(report);
    }

    let store = LocalFs::existing(root);
    let dir = naming::date_dir(dataset, date);
    let Plan {
        groups,
        uncommitted,
    } = plan(&store, &dir, final_files(&live)?, committed, opts)?;
    report.uncommitted = uncommitted;
    if groups.is_empty() {
        return Ok(report);
    }

    // Build the new directory: links to what stays, plus the merged files.
    let nonce = format!("{:016x}", rand::random::<u64>());
    let staging = staging_root.join(format!("{}-{date}-{nonce}", dataset.name()));
    mode::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    sync_dir(&staging_root)?;
    let inputs: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.iter().map(|(_, n)| n.as_str()))
        .collect();
    for entry in fs::read_dir(&live).map_err(|e| Error::io(&live, e))? {
        let entry = entry.map_err(|e| Error::io(&live, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // temporary files belong to a write in progress in the live directory
        if inputs.contains(&name.as_str()) || name.starts_with('.') {
            continue;
        }
        let to = staging.join(&name);
        fs::hard_link(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
    }
    for group in &groups {
        let merged = merge(&store, &dir, dataset, date, group, opts)?;
        write_synced(&staging.join(&merged.name), &merged.bytes)?;
        report.outputs.push(merged.name);
        report.rows += merged.rows;
        report.inputs += group.len();
    }
    write_synced(&staging.join(format!("{MARKER_PREFIX}{nonce}")), b"")?;
    sync_dir(&staging)?;

    // The swap: readers see the old set or the new set, nothing in between.
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        &staging,
        rustix::fs::CWD,
        &live,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| Error::io(&live, e.into()))?;
    sync_dir(&staging_root)?;
    if let Some(parent) = live.parent() {
        sync_dir(parent)?;
    }
    // `staging` now holds the old directory.
    report.late_files_moved = settle(&staging, &live)?;
    remove_leftover(&staging, &live, &nonce)?;
    sync_dir(&staging_root)?;
    Ok(report)
}

/// After the swap (`old` holds the previous directory): moves into `live` every file the
/// writer added or replaced after the links were made. An input (merged away) is a file
/// missing from `live` whose range lies inside a `live` file's range of its partition.
fn settle(old: &Path, live: &Path) -> Result<usize> {
    let live_files = final_files(live)?;
    let inode = |p: &Path| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let mut moved = 0;
    for (range, name) in final_files(old)? {
        let (from, to) = (old.join(&name), live.join(&name));
        let move_it = match inode(&to) {
            Some(live_ino) => inode(&from) != Some(live_ino),
            None => !live_files.iter().any(|(r, _)| {
                r.topic == range.topic
                    && r.partition == range.partition
                    && r.first <= range.first
                    && range.last <= r.last
            }),
        };
        if move_it {
            fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
            moved += 1;
        }
    }
    if moved > 0 {
        sync_dir(live)?;
    }
    Ok(moved)
}

/// Removes a finished staging directory and the run's marker from `live`.
fn remove_leftover(staging: &Path, live: &Path, nonce: &str) -> Result<()> {
    fs::remove_dir_all(staging).map_err(|e| Error::io(staging, e))?;
    let marker = live.join(format!("{MARKER_PREFIX}{nonce}"));
    match fs::remove_file(&marker) {
        Ok(()) => sync_dir(live),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&marker, e)),
    }
}

/// Finishes (swap happened: the marker is in `live`) or discards (it did not) staging
/// directories an interrupted run left for this dataset and date.
fn finish_leftovers(
    staging_root: &Path,
    live: &Path,
    dataset: Dataset,
    date: NaiveDate,
) -> Result<usize> {
    let prefix = format!("{}-{date}-", dataset.name());
    let entries = match fs::read_dir(staging_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(staging_root, e)),
    };
    let mut cleaned = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(staging_root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(nonce) = name.strip_prefix(&prefix) else {
            continue;
        };
        if live.join(format!("{MARKER_PREFIX}{nonce}")).exists() {
            settle(&entry.path(), live)?;
        }
        remove_leftover(&entry.path(), live, nonce)?;
        cleaned += 1;
    }
    Ok(cleaned)
}

/// Final (visible, writer-named) files of a directory; empty if it does not exist.
fn final_files(dir: &Path) -> Result<Vec<(RangeName, String)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(final_names(names))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = mode::create_file(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
