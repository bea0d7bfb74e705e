//! The data directory's layout: every file posledger keeps, named in one place.
//!
//! ```text
//! DATA_DIR/
//!   events/          the event log (segments, indexes, LOCK): the only thing that is not derived
//!   ledger.ckpt      the books as of a position: their summary and the maps (derived: rebuilt
//!                    from the log when missing)
//!   ledger.ckpt.N.log  what each save of the books appended since the one before (derived)
//!   writemodel.json  the write model's registry as of a position (derived)
//!   export/          the Parquet export and its checkpoint `_export.json` (derived)
//!   keys.json        API keys, hashed (not derivable: back it up)
//!   approvals.json   resolutions waiting for a second person (not derivable)
//!   verified.json    where the last verify ended (derived)
//!   posledger.sock   the running server's local socket (owner only; gone when it stops)
//!   RESTORING        a restore into this directory has not finished (it is not opened)
//!   kurrentdb.store  the KurrentDB namespace whose history this directory goes with, when the
//!                    events are there rather than in `events/` (`--store`)
//!   store.lock       held by the process using the directory, when the events are on KurrentDB
//! ```

use std::path::{Path, PathBuf};

/// The default Parquet export directory's name within the data directory.
pub const EXPORT_DIR_NAME: &str = "export";

/// A data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
    store: Option<String>,
}

impl DataDir {
    /// The data directory at `root` (nothing is created or checked).
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into(), store: None }
    }

    /// The same directory with its events in the KurrentDB store at `address` (see
    /// [`crate::store`]) rather than in its own log; `None` keeps the embedded log.
    pub fn with_store(self, address: Option<String>) -> DataDir {
        DataDir { store: address, ..self }
    }

    /// The KurrentDB store address, when the events are there.
    pub fn store(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// The file naming the KurrentDB namespace this directory goes with.
    pub fn kurrent_marker(&self) -> PathBuf {
        self.root.join("kurrentdb.store")
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The event log's directory.
    pub fn events(&self) -> PathBuf {
        self.root.join("events")
    }

    /// The ledger's checkpoint file.
    pub fn ledger_checkpoint(&self) -> PathBuf {
        self.root.join("ledger.ckpt")
    }

    /// The write model's checkpoint file.
    pub fn writemodel_checkpoint(&self) -> PathBuf {
        self.root.join("writemodel.json")
    }

    /// The default Parquet export directory.
    pub fn export(&self) -> PathBuf {
        self.root.join(EXPORT_DIR_NAME)
    }

    /// The API keys file.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys.json")
    }

    /// Where the last verify ended (derived: the next verify walks what was appended since).
    pub fn verified(&self) -> PathBuf {
        self.root.join("verified.json")
    }

    /// The resolutions waiting for approval.
    pub fn approvals(&self) -> PathBuf {
        self.root.join("approvals.json")
    }

    /// The running server's local socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("posledger.sock")
    }
}
