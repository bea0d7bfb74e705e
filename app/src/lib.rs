//! `app`: posledger's use cases, the one layer that the command line (`api::cli`), the HTTP
//! API (`api::http`) and the local socket of a running server (`api::local`) call.
//!
//! [`App`] owns a data directory ([`DataDir`]): its event store, the write model that
//! decides terminal and admin records, the books (the ledger projection, caught up with the
//! log before every read), the API keys and the resolutions waiting for approval. Every use
//! case is a method of [`App`] that takes typed arguments and returns a typed result or a
//! [`Failure`]; the adapters parse their input into those arguments and render the result.
//! Outside the ingest pipeline, this crate is the only place that appends events
//! (statements, reconciliation runs, batch verdicts, resolutions, settlements).
//!
//! The use cases, by module: [`records`] (ingest terminal and admin records), [`books`]
//! (balances, history, replay, journal), [`settle`], [`recon`] (statements, reconciliation,
//! breaks), [`approvals`] (resolving breaks, with a second person over the threshold),
//! [`analysis`] (export, named and ad-hoc SQL, polars analyses), [`verify`], [`dayend`] (the
//! whole end of a business day in one use case), [`registry`]
//! (merchant and terminal state), [`keys`] (API keys), and [`request`], which names every
//! use case as one serialisable [`request::Request`] for a client of a running server.
//!
//! One `App` serves many callers at once: the write model is behind one lock (one decider at
//! a time), the books behind a read-write lock, and writes decided outside the write model
//! (statements, runs, resolutions, settlements, exports) behind another.

pub mod admission;
pub mod analysis;
pub mod approvals;
pub mod asof;
pub mod audit;
pub mod backup;
pub mod books;
pub mod datadir;
pub mod dates;
pub mod dayend;
pub mod failure;
mod jsonfile;
pub mod keys;
pub mod migrate;
pub mod recon;
pub mod records;
pub mod registry;
pub mod request;
pub mod settle;
pub mod store;
pub mod verify;
pub mod worker;

use std::sync::Arc;

pub use asof::AsOf;
pub use datadir::DataDir;
pub use failure::{Class, Failure};
use ingest::pipeline::Ingestor;
use ingest::store::{EmbeddedStore, EventStore};
use store::Store;
use tokio::sync::{MappedMutexGuard, MutexGuard, RwLockReadGuard};

/// How long the books' follower lets commits gather before it applies them
/// ([`App::follow_books`]).
pub const BOOKS_FOLLOW_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// The books as this process holds them, and the mark of the checkpoint they came from or were
/// last saved to (the next save appends what changed since).
struct Books {
    projection: ledger::Projection,
    saved: Option<ledger::Mark>,
}

/// Refuses a data directory for the KurrentDB namespace `ns` when it goes with another one,
/// or holds an embedded log (whose checkpoints are that log's).
fn check_kurrent_dir(dir: &DataDir, ns: &kurrent::mapping::Namespace) -> Result<(), Failure> {
    if let Some(before) = kurrent_marker(dir)?
        && before != ns.as_str()
    {
        return Err(Failure::new(
            Class::Refused,
            "store_elsewhere",
            format!(
                "{} goes with KurrentDB namespace {before}, not {ns} (its file {} says so)",
                dir.root().display(),
                dir.kurrent_marker().display()
            ),
        ));
    }
    if dir.events().join(ingest::store::format::segment_file_name(0)).exists() {
        return Err(Failure::new(
            Class::Refused,
            "store_elsewhere",
            format!(
                "{} holds an embedded event log: a KurrentDB store needs a data directory of its own \
                 (`posledger migrate --to` copies this one's log)",
                dir.root().display()
            ),
        ));
    }
    Ok(())
}

/// Takes a data directory's lock when its events are on KurrentDB (the embedded log's own lock
/// plays this part otherwise): one process at a time.
fn lock_dir(dir: &DataDir) -> Result<std::fs::File, Failure> {
    let root = dir.root();
    std::fs::create_dir_all(root).map_err(|e| Failure::unavailable(format!("creating {}: {e}", root.display())))?;
    let path = root.join("store.lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Failure::unavailable(format!("{}: {e}", path.display())))?;
    if lock.try_lock().is_err() {
        return Err(Failure::new(
            Class::Busy,
            "store_locked",
            format!("{} is in use by another posledger process", root.display()),
        ));
    }
    Ok(lock)
}

/// The data directory's embedded log, opened (taking its lock: one process at a time). A log
/// another process holds is [`Class::Busy`] with code `store_locked`.
pub(crate) fn open_embedded(dir: &DataDir, options: ingest::store::StoreOptions) -> Result<EmbeddedStore, Failure> {
    EmbeddedStore::open_with(dir.events(), options).map_err(|e| match e {
        ingest::store::OpenError::Locked(_) => Failure::new(
            Class::Busy,
            "store_locked",
            format!("{} is in use by another posledger process", dir.root().display()),
        ),
        e => Failure::unavailable(format!("opening the event store in {}: {e}", dir.root().display())),
    })
}

/// Refuses what would use a data directory's own log when its events are on KurrentDB.
pub(crate) fn not_on_kurrent(dir: &DataDir) -> Result<(), Failure> {
    match kurrent_marker(dir)? {
        Some(ns) => Err(Failure::new(
            Class::Refused,
            "store_elsewhere",
            format!(
                "{}'s events are in KurrentDB namespace {ns}, not in its own log: give --store (or \
                 POSLEDGER_STORE) with the namespace's address",
                dir.root().display()
            ),
        )),
        None => Ok(()),
    }
}

/// The KurrentDB namespace a data directory goes with, if its `kurrentdb.store` names one.
fn kurrent_marker(dir: &DataDir) -> Result<Option<String>, Failure> {
    match std::fs::read_to_string(dir.kurrent_marker()) {
        Ok(text) => {
            Ok(Some(text.lines().find_map(|l| l.strip_prefix("namespace ")).unwrap_or_default().trim().to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::unavailable(format!("{}: {e}", dir.kurrent_marker().display()))),
    }
}

/// Where warnings go (a checkpoint refused, a torn tail cut off): the adapter decides.
pub type Warn = Box<dyn Fn(&str) + Send + Sync>;

/// posledger's use cases over one data directory. See the crate documentation.
pub struct App {
    dir: DataDir,
    store: Arc<Store>,
    /// The data directory's lock when the store is not the embedded log (which holds it).
    _dir_lock: Option<std::fs::File>,
    ingestor: tokio::sync::Mutex<Option<Ingestor<Store>>>,
    books: tokio::sync::RwLock<Option<Books>>,
    /// Serialises the writes decided outside the write model.
    writes: tokio::sync::Mutex<()>,
    keys: keys::KeyRing,
    approvals: approvals::Approvals,
    idempotency: records::Idempotency,
    breaks: tokio::sync::Mutex<ledger::recon::BreaksFollower>,
    /// Breaks parking more than this need a second person.
    approval_over: Result<rust_decimal::Decimal, Failure>,
    /// Queries and analyses running ([`analysis::QUERIES_RUNNING_MAX`]).
    queries: Arc<admission::Admission>,
    /// Whole-log verifies running (each walks the log and rebuilds the books).
    verifies: Arc<admission::Admission>,
    /// Event listings running (each walks the log from its first commit).
    listings: Arc<admission::Admission>,
    /// The executable that runs analytics in worker processes, if any ([`worker`]).
    analytics_worker: Option<std::path::PathBuf>,
    /// The Ballista cluster that runs SQL queries, if not this process ([`App::with_cluster`]).
    cluster: Option<analytics::sql::cluster::ClusterUrl>,
    warn: Warn,
}

impl App {
    /// Opens the data directory's event store (taking its lock: one process at a time); the
    /// write model and the books are opened when first used ([`App::open_all`] opens them at
    /// once). A store another process holds is [`Class::Busy`] with code `store_locked`.
    pub fn open(dir: DataDir, warn: Warn) -> Result<App, Failure> {
        if backup::restore_unfinished(dir.root()) {
            return Err(Failure::new(
                Class::Refused,
                "restore_unfinished",
                format!("{} is a restore that did not finish: run the restore into it again", dir.root().display()),
            ));
        }
        not_on_kurrent(&dir)?;
        App::open_unchecked(dir, warn)
    }

    /// Opens the data directory on the store it names: [`App::open_kurrent`] when it was given
    /// a KurrentDB address ([`DataDir::with_store`]), [`App::open`] otherwise.
    pub async fn open_dir(dir: DataDir, warn: Warn) -> Result<App, Failure> {
        match dir.store() {
            Some(address) => {
                let address = address.to_owned();
                App::open_kurrent(dir, &address, warn).await
            }
            None => App::open(dir, warn),
        }
    }

    /// Opens the data directory with its events in the KurrentDB store at `address`: takes
    /// the directory's lock, reads and checks the namespace's whole history
    /// ([`kurrent::KurrentStore::open`]), then opens as [`App::open_on_kurrent`]. A data
    /// directory that holds an embedded log, or goes with another namespace, is refused.
    pub async fn open_kurrent(dir: DataDir, address: &str, warn: Warn) -> Result<App, Failure> {
        let (wire, url) = store::connect_kurrent(address)?;
        check_kurrent_dir(&dir, &url.namespace)?;
        let lock = lock_dir(&dir)?;
        let store = kurrent::KurrentStore::open(wire, url.namespace.clone(), kurrent::KurrentOptions::default())
            .await
            .map_err(store::open_failure(&url.redacted()))?;
        App::on_kurrent_locked(dir, store, lock, &url.redacted(), warn)
    }

    /// Opens the data directory on a KurrentDB namespace's history (`store`, opened by the
    /// caller; `address` names it in messages and in the directory's `kurrentdb.store` file)
    /// instead of its own log. The data directory keeps the rest (keys, checkpoints, exports)
    /// and is locked as the embedded log would lock it: one process at a time.
    pub fn open_on_kurrent(
        dir: DataDir,
        store: kurrent::KurrentStore<kurrent::wire::AnyWire>,
        address: &str,
        warn: Warn,
    ) -> Result<App, Failure> {
        check_kurrent_dir(&dir, store.namespace())?;
        let lock = lock_dir(&dir)?;
        App::on_kurrent_locked(dir, store, lock, address, warn)
    }

    fn on_kurrent_locked(
        dir: DataDir,
        store: kurrent::KurrentStore<kurrent::wire::AnyWire>,
        lock: std::fs::File,
        address: &str,
        warn: Warn,
    ) -> Result<App, Failure> {
        let marker = dir.kurrent_marker();
        if !marker.exists() {
            std::fs::write(&marker, format!("namespace {}\naddress {address}\n", store.namespace()))
                .map_err(|e| Failure::unavailable(format!("{}: {e}", marker.display())))?;
        }
        Ok(App::with_store(dir, Store::Kurrent(Box::new(store)), Some(lock), warn))
    }

    /// [`App::open`] of a directory a restore is still writing (to rebuild what it derives).
    pub(crate) fn open_unchecked(dir: DataDir, warn: Warn) -> Result<App, Failure> {
        let store = open_embedded(&dir, ingest::store::StoreOptions::default())?;
        let report = store.open_report();
        if report.truncated_bytes > 0 {
            warn(&format!(
                "recovered: cut {} bytes of an unfinished last commit (never acknowledged)",
                report.truncated_bytes
            ));
        }
        Ok(App::with_store(dir, Store::Embedded(store), None, warn))
    }

    fn with_store(dir: DataDir, store: Store, dir_lock: Option<std::fs::File>, warn: Warn) -> App {
        App {
            keys: keys::KeyRing::new(dir.keys()),
            approvals: approvals::Approvals::new(dir.approvals()),
            dir,
            store: Arc::new(store),
            _dir_lock: dir_lock,
            ingestor: tokio::sync::Mutex::new(None),
            books: tokio::sync::RwLock::new(None),
            writes: tokio::sync::Mutex::new(()),
            idempotency: records::Idempotency::default(),
            breaks: Default::default(),
            approval_over: approvals::approval_over(),
            queries: Arc::new(admission::Admission::new(analysis::QUERIES_RUNNING_MAX)),
            verifies: Arc::new(admission::Admission::new(verify::VERIFIES_RUNNING_MAX)),
            listings: Arc::new(admission::Admission::new(audit::LISTINGS_RUNNING_MAX)),
            analytics_worker: None,
            cluster: None,
            warn,
        }
    }

    /// Breaks parking more than `threshold` need a second person (instead of
    /// `POSLEDGER_APPROVAL_OVER` or the default).
    pub fn with_approval_over(mut self, threshold: rust_decimal::Decimal) -> App {
        self.approval_over = Ok(threshold);
        self
    }

    /// Runs queries and analyses each in a worker process started from `exe` (the `posledger`
    /// binary), bounded in memory and time and stopped when its caller goes away ([`worker`]).
    /// Without one they run in this process.
    pub fn with_analytics_worker(mut self, exe: std::path::PathBuf) -> App {
        self.analytics_worker = Some(exe);
        self
    }

    /// Runs SQL queries (named and an analyst's own) on the Ballista cluster whose scheduler
    /// is at `url`, under the same sandbox (`analytics::sql::cluster`). Analyses (polars) still
    /// run here.
    pub fn with_cluster(mut self, url: analytics::sql::cluster::ClusterUrl) -> App {
        self.cluster = Some(url);
        self
    }

    /// The worker executable, when analytics run in worker processes.
    pub fn analytics_worker(&self) -> Option<&std::path::Path> {
        self.analytics_worker.as_deref()
    }

    /// Opens the write model and the books and reads the breaks recorded now (a server does,
    /// so that its first requests do not wait for them), and reads the keys and the waiting
    /// resolutions.
    pub async fn open_all(&self) -> Result<(), Failure> {
        if let Err(e) = &self.approval_over {
            return Err(Failure::internal(e.message.clone()));
        }
        drop(self.ingestor().await?);
        drop(self.books().await?);
        drop(self.breaks_now().await?);
        self.keys.check()?;
        self.approvals.check()?;
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// The event store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The embedded log, for what reads its files (backup, the audit's chain listing and
    /// anchors); refused when the history is on KurrentDB.
    pub(crate) fn embedded_log(&self, what: &str) -> Result<&EmbeddedStore, Failure> {
        self.store.embedded().ok_or_else(|| {
            Failure::new(
                Class::Refused,
                "not_on_kurrentdb",
                format!(
                    "{what} reads the embedded log's files, and this history is on KurrentDB: use the server's own \
                     backups, `posledger verify`, or `posledger migrate --from` to copy it into a data directory"
                ),
            )
        })
    }

    /// The API keys.
    pub fn keys(&self) -> &keys::KeyRing {
        &self.keys
    }

    /// Saves the checkpoints ([`App::save_checkpoints`]) and closes the store.
    pub async fn close(self) {
        self.save_checkpoints().await;
    }

    /// Saves the write model's and the books' checkpoints (when they moved on since they were
    /// loaded or saved). A checkpoint only spares the next start a replay: failing to write one
    /// loses nothing and is a warning.
    pub async fn save_checkpoints(&self) {
        if let Some(ingestor) = self.ingestor.lock().await.as_ref()
            && let Err(e) = ingestor.save_checkpoint(&self.dir.writemodel_checkpoint()).await
        {
            (self.warn)(&format!("{e} (the next run rebuilds it from the event log)"));
        }
        self.save_books().await;
    }

    /// Saves the books' checkpoint if they moved on since it was written.
    pub async fn save_books(&self) {
        let mut books = self.books.write().await;
        if let Some(b) = books.as_mut()
            && b.saved.as_ref().map(ledger::Mark::position) != Some(b.projection.position())
        {
            let path = self.dir.ledger_checkpoint();
            match ledger::save_books(&*self.store, &b.projection, &path, b.saved.as_ref()).await {
                Ok(mark) => b.saved = Some(mark),
                Err(e) => (self.warn)(&format!("{e} (the next run replays the log instead)")),
            }
        }
    }

    /// The write model, opened (from its checkpoint, caught up) on first use. One decider at a
    /// time: the guard is the write model's lock.
    pub(crate) async fn ingestor(&self) -> Result<MappedMutexGuard<'_, Ingestor<Store>>, Failure> {
        let mut guard = self.ingestor.lock().await;
        if guard.is_none() {
            let opened = Ingestor::open(self.store.clone(), Some(&self.dir.writemodel_checkpoint()))
                .await
                .map_err(|e| Failure::unavailable(format!("opening the write model: {e}")))?;
            let mut opened = opened;
            opened.refuse_times_ahead_of(chrono::Utc::now);
            *guard = Some(opened);
        }
        MutexGuard::try_map(guard, Option::as_mut).map_err(|_| Failure::internal("the write model is not open"))
    }

    /// The books caught up with everything recorded before the call, for reading. Opened from
    /// the ledger checkpoint on first use (rebuilt from position 0 when it is missing or
    /// refused, with a warning when refused).
    pub(crate) async fn books(&self) -> Result<RwLockReadGuard<'_, ledger::Projection>, Failure> {
        let head = self.store.head();
        {
            let books = self.books.read().await;
            if books.as_ref().is_some_and(|b| b.projection.position() >= head) {
                return RwLockReadGuard::try_map(books, |b| b.as_ref().map(|b| &b.projection))
                    .map_err(|_| Failure::internal("the books are not open"));
            }
        }
        let mut books = self.books.write().await;
        match books.as_mut() {
            None => {
                let path = self.dir.ledger_checkpoint();
                let (projection, opened, saved) = ledger::open_books(&*self.store, Some(&path)).await?;
                if let ledger::Opened::Refused(why) = opened {
                    (self.warn)(&format!("{why}; the books were rebuilt from position 0"));
                }
                *books = Some(Books { projection, saved });
            }
            Some(b) if b.projection.position() < self.store.head() => {
                ledger::catch_up(&*self.store, &mut b.projection, u64::MAX).await?;
            }
            Some(_) => {}
        }
        RwLockReadGuard::try_map(books.downgrade(), |b| b.as_ref().map(|b| &b.projection))
            .map_err(|_| Failure::internal("the books are not open"))
    }

    /// Every balance as it is now from the books' checkpoint alone, when this process has not
    /// opened the books and the checkpoint is at the head of the log: a command that only asks
    /// for balances now is answered without loading the books.
    pub(crate) async fn summary_now(&self) -> Option<ledger::Summary> {
        if self.books.read().await.is_some() {
            return None;
        }
        ledger::summary_at_head(&*self.store, &self.dir.ledger_checkpoint()).await.ok().flatten()
    }

    /// Keeps the books following the log (a server runs it beside its requests): after each
    /// commit they catch up on their own, so a read finds them current instead of applying
    /// what was appended since the last read while it waits. Returns if the books cannot go on
    /// (reads then report why).
    pub async fn follow_books(&self) {
        const BOOKS_FOLLOW_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
        loop {
            let position = self.books.read().await.as_ref().map_or(0, |b| b.projection.position());
            self.store.wait_for(position).await;
            // Commits come in bursts: a short pause lets one catch-up take several.
            tokio::time::sleep(BOOKS_FOLLOW_PAUSE).await;
            if self.books().await.is_err() {
                // On the embedded log a failed read is damage; over a network it is often
                // passing, so a KurrentDB store's follower tries again after a pause.
                if self.store.embedded().is_some() {
                    return;
                }
                tokio::time::sleep(BOOKS_FOLLOW_RETRY).await;
            }
        }
    }

    /// Events the books have not applied yet (the whole log before they are first opened).
    pub async fn books_lag(&self) -> u64 {
        let position = self.books.read().await.as_ref().map_or(0, |b| b.projection.position());
        self.store.head().saturating_sub(position)
    }

    /// Events in the log.
    pub fn head(&self) -> u64 {
        self.store.head()
    }
}

/// An amount at least at its currency's scale (`12.5` CNY is `12.50`; never fewer places than
/// recorded).
pub fn money(amount: rust_decimal::Decimal, currency: ingest::money::Currency) -> rust_decimal::Decimal {
    let mut amount = amount;
    if amount.scale() < currency.scale() {
        amount.rescale(currency.scale());
    }
    amount
}
