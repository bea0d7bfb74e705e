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
//! ```

use std::path::{Path, PathBuf};

/// The default Parquet export directory's name within the data directory.
pub const EXPORT_DIR_NAME: &str = "export";

/// A data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root` (nothing is created or checked).
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
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
