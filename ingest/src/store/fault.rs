//! The file layer the store's writer goes through, and a fault-injecting one for crash tests.
//!
//! The writer only ever creates segment files, writes at offsets, syncs, truncates and syncs
//! the directory. [`RealFs`] does that with the operating system; [`CrashingFs`] does the
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
    /// Cuts the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
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

impl LogFile for File {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

impl LogFs for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(path)?;
        Ok(Box::new(file))
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
        CrashingFs {
            writes_left: Arc::new(AtomicU64::new(crash_at_write)),
            torn_bytes,
        }
    }

    /// Whether the crash has happened.
    pub fn crashed(&self) -> bool {
        self.writes_left.load(Ordering::SeqCst) == u64::MAX
    }

    fn dead() -> io::Error {
        io::Error::other("injected crash: the process is gone")
    }

    fn alive(&self) -> io::Result<()> {
        if self.crashed() {
            Err(Self::dead())
        } else {
            Ok(())
        }
    }
}

struct CrashingFile {
    inner: File,
    fs: CrashingFs,
}

impl LogFile for CrashingFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
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
    fn sync_data(&mut self) -> io::Result<()> {
        self.fs.alive()?;
        self.inner.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.fs.alive()?;
        self.inner.set_len(len)
    }
}

impl LogFs for CrashingFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn LogFile>> {
        self.alive()?;
        let inner = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(path)?;
        Ok(Box::new(CrashingFile {
            inner,
            fs: self.clone(),
        }))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.alive()?;
        File::open(dir)?.sync_all()
    }
}
