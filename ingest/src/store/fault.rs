//! The file layer the store's writer goes through, and a fault-injecting one for crash tests.
//!
//! The writer only ever creates segment files, writes at offsets, zero-fills space ahead of
//! the log, syncs, and syncs the directory. [`RealFs`] does that with the operating system; [`CrashingFs`] does the
//! same until a chosen write, persists only a prefix of that write, and from then on fails
//! every call, which is what the disk shows a process that dies at that instant.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A segment file open for writing.
pub trait LogFile: Send {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the written data durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Writes zeros over `from..to`, both multiples of [`ZERO_FILL_ALIGN`]. Used to allocate
    /// the space the log will grow into: overwriting allocated blocks and then syncing is far
    /// cheaper than growing a file at every commit. Data written here needs no sync of its
    /// own: the next commit's sync covers it.
    fn zero_fill(&mut self, from: u64, to: u64) -> io::Result<()>;
}

/// Alignment of [`LogFile::zero_fill`] ranges (direct I/O needs block-aligned offsets).
pub const ZERO_FILL_ALIGN: u64 = 4096;
/// Zeros written by one call of the underlying write.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// A block-aligned slice of zeros, carved out of an over-allocated vector (no unsafe code).
fn aligned_zeros(storage: &mut Vec<u8>) -> &[u8] {
    if storage.len() < ZERO_CHUNK_BYTES + ZERO_FILL_ALIGN as usize {
        *storage = vec![0u8; ZERO_CHUNK_BYTES + ZERO_FILL_ALIGN as usize];
    }
    let start = storage.as_ptr().align_offset(ZERO_FILL_ALIGN as usize);
    &storage[start..start + ZERO_CHUNK_BYTES]
}

/// Writes zeros over `from..to` through `write`, a chunk at a time.
fn fill_with(mut write: impl FnMut(&[u8], u64) -> io::Result<()>, zeros: &[u8], from: u64, to: u64) -> io::Result<()> {
    debug_assert!(from.is_multiple_of(ZERO_FILL_ALIGN) && to.is_multiple_of(ZERO_FILL_ALIGN));
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(zeros.len());
        write(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Creates and opens segment files for the writer.
pub trait LogFs: Send + Sync + 'static {
    /// Opens `path` for writing, creating it when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn LogFile>>;
    /// Makes a file creation in `dir` durable (fsync of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The operating system's files.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

/// A segment file of [`RealFs`]: buffered writes for frames, and a second handle with
/// `O_DIRECT` for zero-filling (it bypasses the page cache, so allocating space costs no
/// copying), where the file system supports it.
struct RealFile {
    file: File,
    direct: Option<File>,
    zeros: Vec<u8>,
}

impl LogFile for RealFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn zero_fill(&mut self, from: u64, to: u64) -> io::Result<()> {
        let zeros = aligned_zeros(&mut self.zeros);
        let target = self.direct.as_ref().unwrap_or(&self.file);
        fill_with(|b, at| FileExt::write_all_at(target, b, at), zeros, from, to)
    }
}

impl LogFs for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn LogFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new().read(true).write(true).create_new(create).open(path)?;
        let direct = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok();
        Ok(Box::new(RealFile { file, direct, zeros: Vec::new() }))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A file layer that "crashes" at a chosen write: writes before it go to disk, that write
/// persists only its first `torn_bytes` bytes, and every call after it fails.
#[derive(Debug, Clone)]
pub struct CrashingFs {
    writes_left: Arc<AtomicU64>,
    torn_bytes: usize,
}

impl CrashingFs {
    /// Crashes on write number `crash_at_write` (0-based), keeping `torn_bytes` of it.
    pub fn new(crash_at_write: u64, torn_bytes: usize) -> Self {
        CrashingFs { writes_left: Arc::new(AtomicU64::new(crash_at_write)), torn_bytes }
    }

    /// Whether the crash has happened.
    pub fn crashed(&self) -> bool {
        self.writes_left.load(Ordering::SeqCst) == u64::MAX
    }

    fn dead() -> io::Error {
        io::Error::other("injected crash: the process is gone")
    }

    fn alive(&self) -> io::Result<()> {
        if self.crashed() { Err(Self::dead()) } else { Ok(()) }
    }
}

struct CrashingFile {
    inner: File,
    fs: CrashingFs,
    zeros: Vec<u8>,
}

impl CrashingFile {
    fn write(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.fs.alive()?;
        let left = self.fs.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            let keep = self.fs.torn_bytes.min(buf.len());
            FileExt::write_all_at(&self.inner, &buf[..keep], offset)?;
            self.fs.writes_left.store(u64::MAX, Ordering::SeqCst);
            return Err(CrashingFs::dead());
        }
        self.fs.writes_left.store(left - 1, Ordering::SeqCst);
        FileExt::write_all_at(&self.inner, buf, offset)
    }
}

impl LogFile for CrashingFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write(buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.fs.alive()?;
        self.inner.sync_data()
    }
    fn zero_fill(&mut self, from: u64, to: u64) -> io::Result<()> {
        let mut zeros = std::mem::take(&mut self.zeros);
        let result = fill_with(|b, at| self.write(b, at), aligned_zeros(&mut zeros), from, to);
        self.zeros = zeros;
        result
    }
}

impl LogFs for CrashingFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn LogFile>> {
        self.alive()?;
        let inner = OpenOptions::new().read(true).write(true).create_new(create).open(path)?;
        Ok(Box::new(CrashingFile { inner, fs: self.clone(), zeros: Vec::new() }))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.alive()?;
        File::open(dir)?.sync_all()
    }
}
