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

/// Replaces the file with `value`: written to a temporary file of its own (owner-only, named
/// uniquely so that two writers never share one), synced, renamed over it, the directory
/// synced. A reader sees the old file or the new one, never a part; the file is owner-only
/// (it names keys' hashes and who approves what).
pub(crate) fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: &dyn std::fmt::Display| Failure::unavailable(format!("replacing {}: {e}", path.display()));
    let dir = path.parent().ok_or_else(|| failed(&"a state file lies in a directory"))?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| failed(&e))?;
    let aside = path.with_extension(format!("json.{}.{}.tmp", std::process::id(), unique()));
    let written = (|| {
        std::fs::create_dir_all(dir)?;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&aside)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    written.map_err(|e| failed(&e))
}

/// A number no other call of this process has had.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Runs `f` holding an exclusive lock on `PATH.lock` beside the file: one read-modify-write at
/// a time across threads and processes (a `keys create` racing a `keys revoke` in another
/// process cannot undo the revocation). The lock goes with the file handle, also when a
/// process dies holding it.
pub(crate) fn locked<T>(path: &Path, f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock_path = path.with_extension("json.lock");
    let failed = |e: std::io::Error| Failure::unavailable(format!("locking {}: {e}", lock_path.display()));
    if let Some(dir) = lock_path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(failed)?;
    lock.lock().map_err(failed)?;
    let answer = f();
    let _ = lock.unlock();
    answer
}
