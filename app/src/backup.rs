//! 数据备份: a backup of a data directory taken while it serves, and a restore from one into a
//! new data directory, whole or cut at a commit.
//!
//! # A backup directory
//!
//! ```text
//! DIR/
//!   POSLEDGER-BACKUP          says what the directory is (a backup refuses any other non-empty DIR)
//!   LOCK                      held by the backup writing to DIR: one at a time
//!   log/seg-000003.log.FROM-TO  bytes FROM..TO of segment 3 as the log held them
//!   files/keys.json.HASH      a state file that is not derivable, by its content's hash
//!   manifests/manifest-000007.json  one per backup: everything it needs, with sizes and checksums
//! ```
//!
//! A backup copies the log up to its durable extent at the moment it starts (the head, its
//! link and each segment's length: bytes inside it never change), in pieces: each segment
//! from where the previous manifest's copy of it ended. So a second backup into the same `DIR`
//! copies only what is new, and every earlier manifest still names pieces that are there.
//! Besides the log, the state files that cannot be rebuilt from it (`keys.json`,
//! `approvals.json`). The manifest names every piece and file with its size and BLAKE3, the
//! head's position and hash, and carries a BLAKE3 of itself. Every file is written aside,
//! synced and renamed, the manifest last: a backup stopped at any point leaves the earlier
//! manifests whole, and the next one finishes the job (pieces no manifest names are removed).
//!
//! A restore takes one manifest (the latest unless named), checks every file it names against
//! its size and checksum while assembling the segments in a new data directory, walks the
//! assembled log checking every frame and the hash chain up to the manifest's head hash, and
//! only then cuts it, when asked, at a commit boundary: nothing is rewritten, the chain of
//! what is kept is the chain that was written. A `RESTORING` file marks the new directory
//! until the end; such a directory is not opened, and a restore into it starts over.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use ingest::store::format;
use ingest::store::frames::{self, LogExtent};
use serde::{Deserialize, Serialize};

use crate::{App, AsOf, DataDir, Failure};

/// The first line of `POSLEDGER-BACKUP` and the `format` of every manifest.
pub const BACKUP_FORMAT: &str = "posledger-backup-1";
/// The file that marks a backup directory.
const MARKER: &str = "POSLEDGER-BACKUP";
/// The file a restore keeps in its target until it is done.
pub const RESTORING: &str = "RESTORING";
/// Bytes copied between two progress reports.
const PROGRESS_EVERY_BYTES: u64 = 32 << 20;
/// Bytes read at a time while copying.
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// The longest manifest read (a manifest names a few entries per segment of 512 MiB).
pub const MANIFEST_BYTES_MAX: u64 = 64 << 20;
/// The state files of a data directory that are not derived from the log.
const STATE_FILES: [&str; 2] = ["keys.json", "approvals.json"];

/// A backup's description of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// Its number in the backup directory (1 for the first).
    pub number: u32,
    /// When it was taken, RFC 3339 (UTC).
    pub taken_at: String,
    /// The head it copied the log up to.
    pub head: Head,
    /// The log's pieces, in order.
    pub pieces: Vec<Piece>,
    /// The state files.
    pub files: Vec<StateFile>,
}

/// The head a backup copied the log up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// Events in the log.
    pub events: u64,
    /// The hash-chain link of the frame ending there, hex.
    pub hash: String,
    /// Each segment's length up to the head.
    pub segment_lens: Vec<u64>,
    /// The segment and offset of the head's frame (none for an empty log).
    pub last_frame: Option<(u32, u64)>,
}

/// Bytes `from..to` of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    /// Its path in the backup directory.
    pub path: String,
    /// The segment.
    pub segment: u32,
    /// The first byte.
    pub from: u64,
    /// The byte after the last.
    pub to: u64,
    /// BLAKE3 of the bytes, hex.
    pub blake3: String,
}

/// A state file as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// Its name in the data directory.
    pub name: String,
    /// Its path in the backup directory.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// BLAKE3 of its bytes, hex.
    pub blake3: String,
}

/// A manifest as stored: itself and the BLAKE3 of its JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    manifest: Manifest,
    blake3: String,
}

/// What a backup did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    /// The backup directory.
    pub to: PathBuf,
    /// The manifest written, its file name.
    pub manifest: String,
    /// The head copied up to.
    pub events: u64,
    /// Its hash.
    pub head_hash: String,
    /// Log bytes copied by this backup.
    pub bytes_copied: u64,
    /// Log bytes the manifest names (this backup's and earlier ones').
    pub bytes_total: u64,
    /// Pieces this backup wrote.
    pub pieces_copied: usize,
    /// State files this backup wrote (unchanged ones are shared with earlier manifests).
    pub files_copied: usize,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The new data directory.
    pub data_dir: PathBuf,
    /// The manifest restored.
    pub manifest: String,
    /// Events in the backup.
    pub backup_events: u64,
    /// Events restored (fewer when cut).
    pub events: u64,
    /// The head hash of the restored log.
    pub head_hash: String,
    /// Log bytes restored.
    pub bytes: u64,
    /// Where it was cut, when asked to be: the first event left out, and when it happened.
    pub cut: Option<Cut>,
}

/// The first event a cut left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// Its position.
    pub position: u64,
    /// When it happened (business time), RFC 3339.
    pub occurred_at: String,
}

/// How far a long job is, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// What it is doing.
    pub step: String,
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// Where progress goes.
pub type OnProgress<'a> = &'a mut (dyn FnMut(&Progress) + Send);

fn io_failure(path: &Path, e: io::Error) -> Failure {
    Failure::unavailable(format!("{}: {e}", path.display()))
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> Failure {
    Failure::new(crate::Class::Refused, "backup_damaged", format!("{}: {why}", path.display()))
}

impl App {
    /// Backs the data directory up into `to` while it may be appended to: the log up to its
    /// durable head as of the call, and the state files. See the module documentation.
    pub async fn backup(&self, to: &Path, progress: OnProgress<'_>) -> Result<BackupReport, Failure> {
        let extent = self.embedded_log("a backup")?.extent();
        let log_dir = self.dir.events();
        let state: Vec<(&'static str, PathBuf)> = STATE_FILES.iter().map(|n| (*n, self.dir.root().join(n))).collect();
        let to = to.to_path_buf();
        off_the_runtime(progress, move |report| backup_into(&to, &log_dir, &extent, &state, report)).await
    }
}

/// Runs a job that reads and syncs files on a blocking thread, handing its progress reports
/// to `progress` as they come.
async fn off_the_runtime<T: Send + 'static>(
    progress: OnProgress<'_>,
    job: impl FnOnce(&mut (dyn FnMut(&Progress) + Send)) -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::task::spawn_blocking(move || {
        job(&mut |p: &Progress| {
            let _ = tx.send(p.clone());
        })
    });
    while let Some(p) = rx.recv().await {
        progress(&p);
    }
    running.await.map_err(|e| Failure::internal(format!("the job stopped: {e}")))?
}

/// Writes `bytes` to `path` aside, synced, renamed into place.
fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let aside = aside(path);
    let mut file = File::create(&aside)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&aside, path)
}

fn aside(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A manifest found in a backup directory: its number, its path, and it read and checked or why
/// not.
type Found = (u32, PathBuf, Result<Manifest, Failure>);

/// The manifests in a backup directory, by number.
fn manifests(dir: &Path) -> Result<Vec<Found>, Failure> {
    let mdir = dir.join("manifests");
    let mut found = Vec::new();
    let entries = match fs::read_dir(&mdir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io_failure(&mdir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_failure(&mdir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(number) = name.strip_prefix("manifest-").and_then(|n| n.strip_suffix(".json")) else { continue };
        let Ok(number) = number.parse::<u32>() else { continue };
        let path = entry.path();
        let read = read_manifest(&path);
        found.push((number, path, read));
    }
    found.sort_by_key(|(n, _, _)| *n);
    Ok(found)
}

/// Reads a manifest and checks its own checksum and format.
pub fn read_manifest(path: &Path) -> Result<Manifest, Failure> {
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::not_found("no_manifest", format!("{} does not exist", path.display())),
        _ => io_failure(path, e),
    })?;
    let mut bytes = Vec::new();
    file.take(MANIFEST_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(|e| io_failure(path, e))?;
    if bytes.len() as u64 > MANIFEST_BYTES_MAX {
        return Err(damaged(path, format!("longer than MANIFEST_BYTES_MAX ({MANIFEST_BYTES_MAX} bytes)")));
    }
    let sealed: Sealed =
        serde_json::from_slice(&bytes).map_err(|e| damaged(path, format!("not a whole manifest ({e})")))?;
    let json = serde_json::to_vec(&sealed.manifest).map_err(|e| Failure::internal(e.to_string()))?;
    if blake3::hash(&json).to_hex().as_str() != sealed.blake3 {
        return Err(damaged(path, "its checksum does not match its contents"));
    }
    if sealed.manifest.format != BACKUP_FORMAT {
        return Err(damaged(path, format!("format {:?}, expected {BACKUP_FORMAT:?}", sealed.manifest.format)));
    }
    Ok(sealed.manifest)
}

fn manifest_name(number: u32) -> String {
    format!("manifest-{number:06}.json")
}

/// Takes `DIR/LOCK`: one backup writes to a directory at a time.
fn lock_backup_dir(dir: &Path) -> Result<File, Failure> {
    let path = dir.join("LOCK");
    let lock =
        File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| io_failure(&path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(Failure::new(
            crate::Class::Busy,
            "backup_running",
            format!("another backup is writing to {}", dir.display()),
        )),
        Err(fs::TryLockError::Error(e)) => Err(io_failure(&path, e)),
    }
}

/// Whether `dir` is missing or holds nothing but `stopped` (the marker a backup or restore
/// stopped before it was in place, which goes).
fn empty_but_for(dir: &Path, stopped: &Path) -> Result<bool, Failure> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(io_failure(dir, e)),
    };
    for entry in entries {
        if entry.map_err(|e| io_failure(dir, e))?.path() != stopped {
            return Ok(false);
        }
    }
    match fs::remove_file(stopped) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_failure(stopped, e)),
    }
}

/// Makes `dir` a backup directory (or checks it is one) and takes its lock.
fn open_backup_dir(dir: &Path) -> Result<File, Failure> {
    let marker = dir.join(MARKER);
    match fs::read_to_string(&marker) {
        Ok(text) if text.lines().next() == Some(BACKUP_FORMAT) => {}
        Ok(_) => return Err(damaged(&marker, format!("does not say {BACKUP_FORMAT}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !empty_but_for(dir, &aside(&marker))? {
                return Err(Failure::invalid(
                    "not_a_backup",
                    format!(
                        "{} is not empty and not a posledger backup: back up into a new or empty directory",
                        dir.display()
                    ),
                )
                .field("to"));
            }
            fs::create_dir_all(dir).map_err(|e| io_failure(dir, e))?;
            write_file(&marker, format!("{BACKUP_FORMAT}\n").as_bytes()).map_err(|e| io_failure(&marker, e))?;
            sync_dir(dir).map_err(|e| io_failure(dir, e))?;
        }
        Err(e) => return Err(io_failure(&marker, e)),
    }
    let lock = lock_backup_dir(dir)?;
    for sub in ["log", "files", "manifests"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(|e| io_failure(&path, e))?;
    }
    Ok(lock)
}

/// Bytes of the log copied so far, of how many, reported each time another
/// [`PROGRESS_EVERY_BYTES`] have passed.
struct Copied<'a> {
    done: u64,
    total: u64,
    since: u64,
    progress: &'a mut (dyn FnMut(&Progress) + Send),
}

impl Copied<'_> {
    fn add(&mut self, n: u64) {
        self.done += n;
        self.since += n;
        if self.since >= PROGRESS_EVERY_BYTES {
            self.since = 0;
            self.report();
        }
    }

    fn report(&mut self) {
        (self.progress)(&Progress { step: "log".into(), done: self.done, total: self.total });
    }
}

/// Copies `len` bytes from `src` (read from the file `from`) to `out` (written to `to`),
/// counting them, and returns their BLAKE3.
fn copy_hashed(
    src: &mut impl Read,
    from: &Path,
    out: &mut impl Write,
    to: &Path,
    len: u64,
    copied: &mut Copied<'_>,
) -> Result<String, Failure> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        src.read_exact(&mut buf[..n]).map_err(|e| io_failure(from, e))?;
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| io_failure(to, e))?;
        left -= n as u64;
        copied.add(n as u64);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Copies `from[start..end]` to `to` (aside, synced, renamed), returning the bytes' BLAKE3.
fn copy_range(from: &Path, start: u64, end: u64, to: &Path, copied: &mut Copied<'_>) -> Result<String, Failure> {
    use std::io::Seek;
    let mut src = File::open(from).map_err(|e| io_failure(from, e))?;
    src.seek(io::SeekFrom::Start(start)).map_err(|e| io_failure(from, e))?;
    let aside = aside(to);
    let mut out = File::create(&aside).map_err(|e| io_failure(&aside, e))?;
    let blake3 = copy_hashed(&mut src, from, &mut out, &aside, end - start, copied)?;
    out.sync_all().map_err(|e| io_failure(&aside, e))?;
    fs::rename(&aside, to).map_err(|e| io_failure(to, e))?;
    Ok(blake3)
}

fn backup_into(
    dir: &Path,
    log_dir: &Path,
    extent: &LogExtent,
    state: &[(&str, PathBuf)],
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<BackupReport, Failure> {
    let _lock = open_backup_dir(dir)?;
    let found = manifests(dir)?;
    // Files a stopped backup left aside go first.
    for sub in ["log", "files", "manifests"] {
        remove_matching(&dir.join(sub), |name| name.ends_with(".tmp"))?;
    }
    let number = found.last().map_or(1, |(n, _, _)| n + 1);
    let base = found.iter().rev().find_map(|(_, _, m)| m.as_ref().ok()).cloned();
    let mut pieces = Vec::new();
    if let Some(base) = &base {
        check_extends(log_dir, base, extent)?;
        pieces = base.pieces.clone();
    }
    let covered = |seg: usize| base.as_ref().and_then(|b| b.head.segment_lens.get(seg).copied()).unwrap_or(0);
    let total: u64 = extent.segment_lens.iter().enumerate().map(|(s, &len)| len.saturating_sub(covered(s))).sum();
    let mut copied = Copied { done: 0, total, since: 0, progress };
    let mut pieces_copied = 0;
    copied.report();
    for (seg, &len) in extent.segment_lens.iter().enumerate() {
        let from = covered(seg);
        if len <= from {
            continue;
        }
        let seg = seg as u32;
        let name = format!("log/{}.{from}-{len}", format::segment_file_name(seg));
        let src = log_dir.join(format::segment_file_name(seg));
        let blake3 = copy_range(&src, from, len, &dir.join(&name), &mut copied)?;
        pieces.push(Piece { path: name, segment: seg, from, to: len, blake3 });
        pieces_copied += 1;
    }
    copied.report();
    let mut files = Vec::new();
    let mut files_copied = 0;
    for (name, path) in state {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_failure(path, e)),
        };
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let stored = format!("files/{name}.{}", &hash[..32]);
        let target = dir.join(&stored);
        if !target.exists() {
            write_file(&target, &bytes).map_err(|e| io_failure(&target, e))?;
            files_copied += 1;
        }
        files.push(StateFile { name: (*name).to_owned(), path: stored, bytes: bytes.len() as u64, blake3: hash });
    }
    for sub in ["log", "files"] {
        sync_dir(&dir.join(sub)).map_err(|e| io_failure(dir, e))?;
    }
    let manifest = Manifest {
        format: BACKUP_FORMAT.to_owned(),
        number,
        taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        head: Head {
            events: extent.events,
            hash: hex::encode(extent.link),
            segment_lens: extent.segment_lens.clone(),
            last_frame: extent.last_frame,
        },
        pieces,
        files,
    };
    let json = serde_json::to_vec(&manifest).map_err(|e| Failure::internal(e.to_string()))?;
    let sealed = Sealed { blake3: blake3::hash(&json).to_hex().to_string(), manifest };
    let text = serde_json::to_vec_pretty(&sealed).map_err(|e| Failure::internal(e.to_string()))?;
    let name = manifest_name(number);
    let mdir = dir.join("manifests");
    write_file(&mdir.join(&name), &text).map_err(|e| io_failure(&mdir, e))?;
    sync_dir(&mdir).map_err(|e| io_failure(&mdir, e))?;
    // Pieces of a backup that stopped before its manifest: no manifest names them. With a
    // manifest that cannot be read, nothing is removed (it may name them).
    if found.iter().all(|(_, _, m)| m.is_ok()) {
        let mut named: std::collections::HashSet<String> =
            sealed.manifest.pieces.iter().map(|p| p.path.clone()).collect();
        named.extend(sealed.manifest.files.iter().map(|f| f.path.clone()));
        for (_, _, m) in &found {
            if let Ok(m) = m {
                named.extend(m.pieces.iter().map(|p| p.path.clone()));
                named.extend(m.files.iter().map(|f| f.path.clone()));
            }
        }
        for sub in ["log", "files"] {
            remove_matching(&dir.join(sub), |n| !named.contains(&format!("{sub}/{n}")))?;
        }
    }
    Ok(BackupReport {
        to: dir.to_path_buf(),
        manifest: name,
        events: extent.events,
        head_hash: hex::encode(extent.link),
        bytes_copied: copied.done,
        bytes_total: sealed.manifest.pieces.iter().map(|p| p.to - p.from).sum(),
        pieces_copied,
        files_copied,
    })
}

fn remove_matching(dir: &Path, doomed: impl Fn(&str) -> bool) -> Result<(), Failure> {
    for entry in fs::read_dir(dir).map_err(|e| io_failure(dir, e))? {
        let entry = entry.map_err(|e| io_failure(dir, e))?;
        if doomed(&entry.file_name().to_string_lossy()) {
            fs::remove_file(entry.path()).map_err(|e| io_failure(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// Refuses a backup directory whose last head is not in this log: the live log must hold the
/// very frame that ended it.
fn check_extends(log_dir: &Path, base: &Manifest, extent: &LogExtent) -> Result<(), Failure> {
    let other = || {
        Failure::invalid(
            "backup_of_another_log",
            format!(
                "the backup's last head ({} events, hash {}) is not in this data directory's log: \
                 back it up into a new directory",
                base.head.events, base.head.hash
            ),
        )
        .field("to")
    };
    if base.head.events > extent.events {
        return Err(other());
    }
    let Some((seg, offset)) = base.head.last_frame else {
        return Ok(());
    };
    let path = log_dir.join(format::segment_file_name(seg));
    let found = frames::frame_header_at(&path, offset).map_err(|e| io_failure(&path, e))?;
    let end = base.head.segment_lens.get(seg as usize).copied();
    match found {
        Some((link, frame_end)) if hex::encode(link) == base.head.hash && Some(frame_end) == end => Ok(()),
        _ => Err(other()),
    }
}

/// Restores the backup in `from` (its manifest `manifest`, or the latest) into the new data
/// directory `to`, up to `until` (a position: the events before it; a business time: the
/// events up to the first that happened after it), each cut at the commit boundary at or
/// before it. Then opens it to rebuild the books and the write model from the log.
pub async fn restore(
    from: &Path,
    manifest: Option<&str>,
    until: AsOf,
    to: &DataDir,
    progress: OnProgress<'_>,
) -> Result<RestoreReport, Failure> {
    let (from_dir, manifest, target) = (from.to_path_buf(), manifest.map(str::to_owned), to.clone());
    let report =
        off_the_runtime(progress, move |report| restore_log(&from_dir, manifest.as_deref(), until, &target, report))
            .await?;
    progress(&Progress { step: "books".into(), done: 0, total: report.events });
    let app = App::open_unchecked(to.clone(), Box::new(|_| {}))?;
    app.open_all().await?;
    app.close().await;
    let marker = to.root().join(RESTORING);
    fs::remove_file(&marker).map_err(|e| io_failure(&marker, e))?;
    sync_dir(to.root()).map_err(|e| io_failure(to.root(), e))?;
    Ok(report)
}

/// Whether `root` holds a restore that did not finish (its marker, or the marker it was
/// writing when it stopped).
pub fn restore_unfinished(root: &Path) -> bool {
    let marker = root.join(RESTORING);
    marker.exists() || aside(&marker).exists()
}

/// Prepares the target: new, empty, or an unfinished restore (started over).
fn prepare_target(to: &DataDir) -> Result<(), Failure> {
    let root = to.root();
    let marker = root.join(RESTORING);
    let refused = || {
        Failure::invalid(
            "target_not_empty",
            format!("{} is not empty: restore into a new or empty directory", root.display()),
        )
        .field("data_dir")
    };
    if !empty_but_for(root, &aside(&marker))? {
        if !marker.exists() {
            return Err(refused());
        }
        for entry in fs::read_dir(root).map_err(|e| io_failure(root, e))? {
            let entry = entry.map_err(|e| io_failure(root, e))?;
            let path = entry.path();
            if path == marker {
                continue;
            }
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| io_failure(&path, e))?;
        }
    }
    fs::create_dir_all(root).map_err(|e| io_failure(root, e))?;
    write_file(&marker, b"an unfinished restore: restore into this directory again\n")
        .map_err(|e| io_failure(&marker, e))?;
    sync_dir(root).map_err(|e| io_failure(root, e))
}

fn restore_log(
    from: &Path,
    manifest: Option<&str>,
    until: AsOf,
    to: &DataDir,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<RestoreReport, Failure> {
    let marker = from.join(MARKER);
    if !marker.exists() {
        return Err(Failure::not_found(
            "not_a_backup",
            format!("{} is not a posledger backup (no {MARKER})", from.display()),
        )
        .field("from"));
    }
    let path = match manifest {
        Some(name) => {
            let name = if name.contains('/') || name.starts_with("manifest-") {
                name.to_owned()
            } else {
                manifest_name(name.parse().map_err(|_| {
                    Failure::invalid(
                        "invalid_manifest",
                        format!("--manifest {name:?} is neither a manifest's file name nor its number"),
                    )
                    .field("manifest")
                })?)
            };
            from.join("manifests").join(Path::new(&name).file_name().unwrap_or_default())
        }
        None => {
            let found = manifests(from)?;
            let Some((_, path, _)) = found.last() else {
                return Err(Failure::not_found(
                    "no_manifest",
                    format!("{} holds no manifest: no backup finished there", from.display()),
                ));
            };
            path.clone()
        }
    };
    let m = read_manifest(&path)?;
    let manifest_file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The pieces of each segment follow each other from byte 0 to the segment's length.
    let mut by_segment: Vec<Vec<&Piece>> = vec![Vec::new(); m.head.segment_lens.len()];
    for p in &m.pieces {
        let Some(list) = by_segment.get_mut(p.segment as usize) else {
            return Err(damaged(&path, format!("{} is of segment {}, past the head's segments", p.path, p.segment)));
        };
        list.push(p);
    }
    for (seg, list) in by_segment.iter_mut().enumerate() {
        list.sort_by_key(|p| p.from);
        let mut at = 0;
        for p in list.iter() {
            if p.from != at || p.to <= p.from {
                return Err(damaged(
                    &path,
                    format!("segment {seg}'s pieces do not follow each other at byte {at} ({})", p.path),
                ));
            }
            at = p.to;
        }
        if at != m.head.segment_lens[seg] {
            return Err(damaged(
                &path,
                format!("segment {seg}'s pieces end at byte {at}, its length is {}", m.head.segment_lens[seg]),
            ));
        }
    }
    prepare_target(to)?;
    let events_dir = to.events();
    fs::create_dir_all(&events_dir).map_err(|e| io_failure(&events_dir, e))?;
    let total: u64 = m.head.segment_lens.iter().sum();
    let mut copied = Copied { done: 0, total, since: 0, progress };
    for (seg, list) in by_segment.iter().enumerate() {
        let target = events_dir.join(format::segment_file_name(seg as u32));
        let mut out = File::create(&target).map_err(|e| io_failure(&target, e))?;
        for p in list {
            let piece = from.join(&p.path);
            let file = File::open(&piece).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => damaged(&piece, format!("is missing (named by {manifest_file})")),
                _ => io_failure(&piece, e),
            })?;
            let len = file.metadata().map_err(|e| io_failure(&piece, e))?.len();
            if len != p.to - p.from {
                return Err(damaged(&piece, format!("holds {len} bytes, {manifest_file} says {}", p.to - p.from)));
            }
            let mut reader = BufReader::new(file);
            if copy_hashed(&mut reader, &piece, &mut out, &target, len, &mut copied)? != p.blake3 {
                return Err(damaged(
                    &piece,
                    format!("its checksum is not the one {manifest_file} names: the file was altered"),
                ));
            }
        }
        out.sync_all().map_err(|e| io_failure(&target, e))?;
    }
    copied.report();
    // The whole chain up to the manifest's head, and where to cut.
    let paths = frames::segment_paths(&events_dir, m.head.segment_lens.len());
    let limit = Limit::of(until);
    let mut cut: Option<(u32, u64, u64, [u8; 32], Cut)> = None;
    let end = frames::walk_frames(&paths, &m.head.segment_lens, &mut |f| {
        if cut.is_none()
            && let Some(limit) = limit
            && let Some(first_out) = limit.first_left_out(f)
        {
            cut = Some((f.segment, f.offset, f.first_position, f.prev_link, first_out));
        }
        ControlFlow::Continue(())
    })
    .map_err(|fault| {
        damaged(
            &events_dir.join(&fault.file),
            format!("at offset {}: {} (restored from {manifest_file})", fault.offset, fault.reason),
        )
    })?;
    if end.events != m.head.events || hex::encode(end.link) != m.head.hash {
        return Err(damaged(
            &path,
            format!(
                "the chain of its pieces ends at {} events in {}, the manifest's head is {} events in {}",
                end.events,
                hex::encode(end.link),
                m.head.events,
                m.head.hash
            ),
        ));
    }
    let (events, link, cut) = match cut {
        None => (end.events, end.link, None),
        Some((seg, offset, events, link, first_out)) => {
            let target = &paths[seg as usize];
            let file = File::options().write(true).open(target).map_err(|e| io_failure(target, e))?;
            file.set_len(offset).map_err(|e| io_failure(target, e))?;
            file.sync_all().map_err(|e| io_failure(target, e))?;
            for later in &paths[seg as usize + 1..] {
                fs::remove_file(later).map_err(|e| io_failure(later, e))?;
            }
            (events, link, Some(first_out))
        }
    };
    sync_dir(&events_dir).map_err(|e| io_failure(&events_dir, e))?;
    for f in &m.files {
        let piece = from.join(&f.path);
        let bytes = fs::read(&piece).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => damaged(&piece, format!("is missing (named by {manifest_file})")),
            _ => io_failure(&piece, e),
        })?;
        if bytes.len() as u64 != f.bytes || blake3::hash(&bytes).to_hex().as_str() != f.blake3 {
            return Err(damaged(&piece, format!("is not the file {manifest_file} names: the file was altered")));
        }
        if !STATE_FILES.contains(&f.name.as_str()) {
            return Err(damaged(&path, format!("names a state file {:?} posledger does not keep", f.name)));
        }
        let target = to.root().join(&f.name);
        write_private(&target, &bytes).map_err(|e| io_failure(&target, e))?;
    }
    sync_dir(to.root()).map_err(|e| io_failure(to.root(), e))?;
    Ok(RestoreReport {
        data_dir: to.root().to_path_buf(),
        manifest: manifest_file,
        backup_events: m.head.events,
        events,
        head_hash: hex::encode(link),
        bytes: copied.done,
        cut,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Where a restore or an event listing stops.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// The events before this position.
    Position(u64),
    /// The events up to the first that happened after this business time (microseconds).
    Time(i64),
}

impl Limit {
    /// The limit a point names; none for `Now`.
    pub(crate) fn of(until: AsOf) -> Option<Limit> {
        match until {
            AsOf::Now => None,
            AsOf::Position(p) => Some(Limit::Position(p)),
            AsOf::Time(t) => Some(Limit::Time(t.timestamp_micros())),
        }
    }

    /// The first event of `frame` that is past the limit, if any: then the frame is left out.
    pub(crate) fn first_left_out(self, frame: &frames::Frame<'_>) -> Option<Cut> {
        frame.records().find_map(|(view, _)| {
            let past = match self {
                Limit::Position(p) => view.meta.position >= p,
                Limit::Time(t) => view.occurred_at_us > t,
            };
            past.then(|| Cut { position: view.meta.position, occurred_at: time_text(view.occurred_at_us) })
        })
    }
}

/// Microseconds since the epoch as RFC 3339 in UTC.
pub(crate) fn time_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| us.to_string())
}
