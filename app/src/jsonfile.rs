//! Small JSON state files of a data directory (`keys.json`, `approvals.json`): read whole,
//! replaced atomically.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Failure;

/// The file's contents, or `None` when there is no file yet. `what` names it in errors.
pub(crate) fn load<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>, Failure> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Failure::internal(format!("{} is not a {what}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::unavailable(format!("reading {}: {e}", path.display()))),
    }
}

/// Replaces the file with `value`: written aside, synced, renamed over it, the directory
/// synced. A reader sees the old file or the new one, never a part.
pub(crate) fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), Failure> {
    use std::io::Write;
    let failed = |e: &dyn std::fmt::Display| Failure::unavailable(format!("replacing {}: {e}", path.display()));
    let dir = path.parent().ok_or_else(|| failed(&"a state file lies in a directory"))?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| failed(&e))?;
    let aside = path.with_extension("json.tmp");
    let written = (|| {
        std::fs::create_dir_all(dir)?;
        let mut file = std::fs::File::create(&aside)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    written.map_err(|e| failed(&e))
}
