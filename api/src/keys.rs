//! API keys for the HTTP API: created with `posledger keys create --role R [--merchant M]`,
//! kept in `DATA_DIR/keys.json` with only a BLAKE3 hash of each secret, revocable.
//!
//! A key is shown once, as `plk_<id>_<secret>`: the id (12 hex digits) finds the record, the
//! secret (64 hex digits, 256 random bits from the operating system) is compared by its hash
//! in constant time. The file is replaced atomically (written aside, synced, renamed); the
//! server notices a changed file on the next request, so a revocation takes effect at once.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The roles of design.md §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A terminal: posts transactions of its own merchant only.
    Terminal,
    /// Finance: balances, reconciliation, settlement.
    Finance,
    /// An analyst: queries and analytics, without payer identities.
    Analyst,
    /// An auditor: reads everything, changes nothing.
    Auditor,
    /// An administrator: everything.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Terminal => "terminal",
            Role::Finance => "finance",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public part of the key.
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// The merchant a terminal key is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// BLAKE3 of the secret, hex.
    pub hash: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Revoked keys stay listed and authenticate nothing.
    #[serde(default)]
    pub revoked: bool,
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id.
    pub key_id: String,
    /// Its role.
    pub role: Role,
    /// Its merchant, for a terminal key.
    pub merchant: Option<String>,
}

/// The keys file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeysFile {
    keys: Vec<KeyRecord>,
}

/// The file's path in a data directory.
pub fn keys_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys.json")
}

fn load(path: &Path) -> Result<Vec<KeyRecord>> {
    Ok(crate::jsonfile::load::<KeysFile>(path, "keys file")?.map(|f| f.keys).unwrap_or_default())
}

fn save(path: &Path, keys: &[KeyRecord]) -> Result<()> {
    crate::jsonfile::save(path, &KeysFile { keys: keys.to_vec() })
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading random bytes from /dev/urandom")?;
    Ok(hex::encode(buf))
}

/// Creates a key and returns its record and the token (shown once).
pub fn create(data_dir: &Path, role: Role, merchant: Option<String>) -> Result<(KeyRecord, String)> {
    match (role, &merchant) {
        (Role::Terminal, None) => bail!("a terminal key needs --merchant"),
        (Role::Terminal, Some(_)) | (_, None) => {}
        (_, Some(_)) => bail!("--merchant applies to terminal keys only"),
    }
    let path = keys_path(data_dir);
    let mut keys = load(&path)?;
    let id = random_hex(6)?;
    let secret = random_hex(32)?;
    let record = KeyRecord {
        id: id.clone(),
        role,
        merchant,
        hash: blake3::hash(secret.as_bytes()).to_hex().to_string(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        revoked: false,
    };
    keys.push(record.clone());
    save(&path, &keys)?;
    Ok((record, format!("plk_{id}_{secret}")))
}

/// Revokes the key `id`.
pub fn revoke(data_dir: &Path, id: &str) -> Result<KeyRecord> {
    let path = keys_path(data_dir);
    let mut keys = load(&path)?;
    let Some(record) = keys.iter_mut().find(|k| k.id == id) else { bail!("no key {id}") };
    record.revoked = true;
    let record = record.clone();
    save(&path, &keys)?;
    Ok(record)
}

/// Every key, revoked ones too.
pub fn list(data_dir: &Path) -> Result<Vec<KeyRecord>> {
    load(&keys_path(data_dir))
}

/// The keys file's modification time and length when last read, and its keys.
type Seen = (Option<(SystemTime, u64)>, std::sync::Arc<Vec<KeyRecord>>);

/// The keys as the server sees them: reloaded whenever the file changes.
pub struct KeyRing {
    path: PathBuf,
    seen: std::sync::Mutex<Seen>,
}

impl KeyRing {
    /// The keys of a data directory.
    pub fn open(data_dir: &Path) -> Result<KeyRing> {
        let ring = KeyRing { path: keys_path(data_dir), seen: std::sync::Mutex::new((None, Default::default())) };
        ring.current()?;
        Ok(ring)
    }

    fn current(&self) -> Result<std::sync::Arc<Vec<KeyRecord>>> {
        let stamp = std::fs::metadata(&self.path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.0 != stamp || stamp.is_none() {
            seen.1 = std::sync::Arc::new(load(&self.path)?);
            seen.0 = stamp;
        }
        Ok(seen.1.clone())
    }

    /// Whether key `id` exists and is not revoked (an unreadable keys file: no key is).
    pub fn is_active(&self, id: &str) -> bool {
        self.current().is_ok_and(|keys| keys.iter().any(|k| k.id == id && !k.revoked))
    }

    /// The principal a bearer token stands for; `None` for an unknown, malformed or revoked
    /// key (or an unreadable keys file: nobody is let in).
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let rest = token.strip_prefix("plk_")?;
        let (id, secret) = rest.split_once('_')?;
        let keys = self.current().ok()?;
        let record = keys.iter().find(|k| k.id == id && !k.revoked)?;
        let want = blake3::Hash::from_hex(&record.hash).ok()?;
        // blake3::Hash compares in constant time.
        (blake3::hash(secret.as_bytes()) == want).then(|| Principal {
            key_id: record.id.clone(),
            role: record.role,
            merchant: record.merchant.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_authenticates_until_revoked_and_only_its_hash_is_stored() {
        // The token works, a changed secret does not, the file never holds the secret.
        let dir = tempfile::tempdir().expect("tmp");
        let (record, token) = create(dir.path(), Role::Terminal, Some("M000001".into())).expect("created");
        let ring = KeyRing::open(dir.path()).expect("ring");
        let who = ring.authenticate(&token).expect("authenticates");
        assert_eq!((who.role, who.merchant.as_deref()), (Role::Terminal, Some("M000001")));
        let secret = token.rsplit('_').next().expect("secret");
        let stored = std::fs::read_to_string(keys_path(dir.path())).expect("file");
        assert!(!stored.contains(secret));
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push(if token.ends_with('0') { '1' } else { '0' });
        assert!(ring.authenticate(&wrong).is_none());
        assert!(ring.authenticate("Bearer nonsense").is_none());
        assert!(ring.is_active(&record.id));
        revoke(dir.path(), &record.id).expect("revoked");
        assert!(ring.authenticate(&token).is_none(), "the server sees the revocation at once");
        assert!(!ring.is_active(&record.id) && !ring.is_active("nobody"));
        assert!(create(dir.path(), Role::Terminal, None).is_err());
        assert!(create(dir.path(), Role::Finance, Some("M1".into())).is_err());
    }
}
