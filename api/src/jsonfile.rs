//! Small JSON state files of a data directory (`keys.json`, `approvals.json`): read whole,
//! replaced atomically.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The file's contents, or `None` when there is no file yet. `what` names it in errors.
pub(crate) fn load<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).with_context(|| format!("{} is not a {what}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the file with `value`: written aside, synced, renamed over it, the directory
/// synced. A reader sees the old file or the new one, never a part.
pub(crate) fn save<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().context("a state file lies in a directory")?;
    std::fs::create_dir_all(dir)?;
    let aside = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&aside).with_context(|| format!("writing {}", aside.display()))?;
    file.write_all(&serde_json::to_vec_pretty(value)?)?;
    file.sync_all()?;
    std::fs::rename(&aside, path).with_context(|| format!("replacing {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
