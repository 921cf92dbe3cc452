//! `feeder devices edge-key`: creates or rotates the edge key file.
//!
//! The file is a secret shared by the edges and the stream stage (whoever holds it can
//! write raw records the stream trusts), so it is written with mode 0600 from the start
//! (never created readable and narrowed afterwards), through a temporary file renamed
//! into place, so a reader never sees half a file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use feeder_core::{EdgeKey, EdgeKeys};

/// Writes a new key to `out`; with `rotate`, the new key goes first and the keys already
/// in the file follow (still accepted by the stream until removed). Returns the new id.
pub fn create(out: &Path, key_id: Option<String>, rotate: bool) -> anyhow::Result<String> {
    let key_id = key_id.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("edge-{secs}")
    });
    let (_, secret_hex) = EdgeKey::generate(&key_id).map_err(anyhow::Error::msg)?;
    let mut text = EdgeKeys::file_line(&key_id, &secret_hex);
    text.push('\n');
    match (rotate, out.exists()) {
        (true, true) => {
            let old = EdgeKeys::load(out).context("reading the edge keys to rotate")?;
            if old.key_ids().any(|k| k == key_id) {
                anyhow::bail!("{}: key_id {key_id} is already in the file", out.display());
            }
            text.push_str(&std::fs::read_to_string(out)?);
        }
        (true, false) => anyhow::bail!("{}: no edge key file to rotate", out.display()),
        (false, true) => anyhow::bail!(
            "{} exists: pass --rotate to add a key to it, or remove it",
            out.display()
        ),
        (false, false) => {}
    }
    // the result must load, or nothing is written
    EdgeKeys::parse(&out.display().to_string(), &text)?;
    write_secret(out, text.as_bytes())?;
    Ok(key_id)
}

/// Writes `bytes` to `path` with mode 0600, atomically.
pub(crate) fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp = path.with_extension("tmp-edge-key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    if let Some(dir) = dir {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_0600_and_rotates_keeping_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("edge-keys.jsonl");
        assert_eq!(create(&f, Some("a".into()), false).unwrap(), "a");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            create(&f, Some("b".into()), false).is_err(),
            "no silent overwrite"
        );
        create(&f, Some("b".into()), true).unwrap();
        let keys = EdgeKeys::load(&f).unwrap();
        assert_eq!(keys.key_ids().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            create(&f, Some("a".into()), true).is_err(),
            "ids stay distinct"
        );
        assert!(create(&dir.path().join("none"), None, true).is_err());
    }
}
