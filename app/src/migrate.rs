//! `posledger migrate`: the data directory's whole event history copied to a KurrentDB
//! namespace, or a namespace's copied into a new data directory, with both hash chains
//! verified and every event compared (`kurrent::migrate`).
//!
//! The copy runs in this process and needs the data directory free: a running server holds
//! it. The KurrentDB side is reached through `kurrent::wire::Wire`; the address form is
//! `kurrentdb://[user:password@]host:port[,…][?settings][&namespace=NS]`
//! ([`kurrent::mapping::StoreUrl`]).

use ingest::store::{EmbeddedStore, EventStore, StoreOptions, verify_dir, verify_open};
use kurrent::mapping::Namespace;
use kurrent::migrate::{self, Stamp};
use kurrent::wire::Wire;
use kurrent::{KurrentOptions, KurrentStore};
use serde::{Deserialize, Serialize};

use crate::backup::{OnProgress, Progress};
use crate::{Class, DataDir, Failure};

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrated {
    /// Where from: the data directory's log, or the KurrentDB address (password hidden).
    pub from: String,
    /// Where to.
    pub to: String,
    /// Events copied and compared.
    pub events: u64,
    /// The source's head hash, its chain verified before the copy.
    pub source_head_hash: String,
    /// The target's head hash, its chain verified after the copy. It differs from the
    /// source's: the embedded log links group commits, KurrentDB's layout single events.
    pub target_head_hash: String,
}

fn copy_failure(e: migrate::MigrateError) -> Failure {
    let class = match e {
        migrate::MigrateError::TargetNotEmpty(_) => Class::Conflict,
        migrate::MigrateError::Differs { .. } => Class::Internal,
        _ => Class::Unavailable,
    };
    Failure::new(class, "migrate_failed", e.to_string())
}

fn step<'a>(progress: &'a mut (dyn FnMut(&Progress) + Send), name: &str) -> impl FnMut(u64, u64) + 'a {
    let name = name.to_owned();
    move |done, total| progress(&Progress { step: name.clone(), done, total })
}

fn open_log(dir: &DataDir, options: StoreOptions) -> Result<EmbeddedStore, Failure> {
    crate::not_on_kurrent(dir)?;
    crate::open_embedded(dir, options)
}

/// The KurrentDB side of a migration.
pub struct Remote<W: Wire> {
    /// The connection.
    pub wire: W,
    /// The namespace.
    pub namespace: Namespace,
    /// The address for messages and the report (password hidden).
    pub address: String,
    /// The store's settings.
    pub options: KurrentOptions,
}

/// Copies the data directory's log into the empty namespace of `remote`.
pub async fn to_kurrent<W: Wire>(
    dir: &DataDir,
    remote: Remote<W>,
    progress: OnProgress<'_>,
) -> Result<Migrated, Failure> {
    let Remote { wire, namespace: ns, address, options } = remote;
    let address = address.as_str();
    let source = open_log(dir, StoreOptions::default())?;
    let verified = verify_open(&source).map_err(|e| Failure::new(Class::Internal, "store_damaged", e.to_string()))?;
    let stamp = Stamp::new();
    let target_options = KurrentOptions { clock: Some(stamp.clock()), ..options.clone() };
    let target =
        KurrentStore::open(wire, ns.clone(), target_options).await.map_err(crate::store::open_failure(address))?;
    migrate::copy(&source, &target, &stamp, step(progress, "copying")).await.map_err(copy_failure)?;
    // Opened again from nothing, the target's chain is recomputed from what the server holds,
    // and what it holds is compared with the source.
    let target =
        KurrentStore::open(target.into_wire(), ns, options).await.map_err(crate::store::open_failure(address))?;
    let events = migrate::compare(&source, &target, step(progress, "re-reading")).await.map_err(copy_failure)?;
    source.close();
    Ok(Migrated {
        from: dir.events().display().to_string(),
        to: address.to_owned(),
        events,
        source_head_hash: verified.head_hash,
        target_head_hash: target.head_hash(),
    })
}

/// Copies the namespace of `remote` into the data directory, whose log must be empty.
pub async fn from_kurrent<W: Wire>(
    dir: &DataDir,
    remote: Remote<W>,
    progress: OnProgress<'_>,
) -> Result<Migrated, Failure> {
    let Remote { wire, namespace: ns, address, options } = remote;
    let address = address.as_str();
    // Opening reads the whole namespace and checks its chain.
    let source = KurrentStore::open(wire, ns, options).await.map_err(crate::store::open_failure(address))?;
    let stamp = Stamp::new();
    let target = open_log(dir, StoreOptions { clock: Some(stamp.clock()), ..StoreOptions::default() })?;
    if target.head() > 0 {
        return Err(Failure::new(
            Class::Conflict,
            "migrate_failed",
            format!(
                "{} already holds {} events: migrate into a new data directory",
                dir.root().display(),
                target.head()
            ),
        ));
    }
    migrate::copy(&source, &target, &stamp, step(progress, "copying")).await.map_err(copy_failure)?;
    let events = migrate::compare(&source, &target, step(progress, "comparing")).await.map_err(copy_failure)?;
    target.close();
    let verified =
        verify_dir(&dir.events()).map_err(|e| Failure::new(Class::Internal, "store_damaged", e.to_string()))?;
    Ok(Migrated {
        from: address.to_owned(),
        to: dir.events().display().to_string(),
        events,
        source_head_hash: source.head_hash(),
        target_head_hash: verified.head_hash,
    })
}
