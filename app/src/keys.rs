//! API keys for the HTTP API: created with `posledger keys create --role R [--merchant M]`,
//! kept in `DATA_DIR/keys.json` with only a BLAKE3 hash of each secret, revocable.
//!
//! A key is shown once, as `plk_<id>_<secret>`: the id (12 hex digits) finds the record, the
//! secret (64 hex digits, 256 random bits from the operating system) is compared by its hash
//! in constant time. The file is replaced atomically (written aside, synced, renamed); a
//! [`KeyRing`] notices a changed file on the next request, so a revocation takes effect at
//! once. Keys are created and revoked through the [`crate::App`] that owns the data
//! directory, so two changes never race on the file.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{App, Failure};

/// The roles of design.md §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// When it stops authenticating, if ever (it stays listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl KeyRecord {
    /// Whether it authenticates at `now`: not revoked, not expired.
    pub fn active_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        !self.revoked && self.expires_at.is_none_or(|t| now < t)
    }
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

impl Principal {
    /// The name a key's holder is recorded under (`key:<id>`).
    pub fn name(&self) -> String {
        format!("key:{}", self.key_id)
    }
}

/// A key just created: its record and the token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The stored record.
    pub record: KeyRecord,
    /// `plk_<id>_<secret>`.
    pub token: String,
}

/// The keys file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeysFile {
    keys: Vec<KeyRecord>,
}

fn random_hex(bytes: usize) -> Result<String, Failure> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Failure::unavailable(format!("reading random bytes from /dev/urandom: {e}")))?;
    Ok(hex::encode(buf))
}

/// The keys file's modification time and length when last read, and its keys.
type Seen = (Option<(SystemTime, u64)>, std::sync::Arc<Vec<KeyRecord>>);

/// The keys of a data directory as a server sees them: read again whenever the file changes.
pub struct KeyRing {
    path: PathBuf,
    seen: std::sync::Mutex<Option<Seen>>,
    /// Serialises changes to the file.
    change: std::sync::Mutex<()>,
}

impl KeyRing {
    /// The keys in the file at `path` (read on first use).
    pub fn new(path: PathBuf) -> KeyRing {
        KeyRing { path, seen: std::sync::Mutex::new(None), change: std::sync::Mutex::new(()) }
    }

    /// Reads the file, failing if it is unreadable.
    pub fn check(&self) -> Result<(), Failure> {
        self.current().map(|_| ())
    }

    fn current(&self) -> Result<std::sync::Arc<Vec<KeyRecord>>, Failure> {
        let stamp = std::fs::metadata(&self.path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.as_ref() {
            Some((at, keys)) if *at == stamp && stamp.is_some() => Ok(keys.clone()),
            _ => {
                let keys = std::sync::Arc::new(
                    crate::jsonfile::load::<KeysFile>(&self.path, "keys file")?.map(|f| f.keys).unwrap_or_default(),
                );
                *seen = Some((stamp, keys.clone()));
                Ok(keys)
            }
        }
    }

    /// Changes the keys and replaces the file; nothing changes if `f` fails.
    fn update<T>(&self, f: impl FnOnce(&mut Vec<KeyRecord>) -> Result<T, Failure>) -> Result<T, Failure> {
        let _one_at_a_time = self.change.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::jsonfile::locked(&self.path, || {
            let mut keys =
                crate::jsonfile::load::<KeysFile>(&self.path, "keys file")?.map(|f| f.keys).unwrap_or_default();
            let answer = f(&mut keys)?;
            crate::jsonfile::save(&self.path, &KeysFile { keys })?;
            Ok(answer)
        })
    }

    /// Whether key `id` exists, is not revoked and has not expired (an unreadable keys file: no
    /// key is).
    pub fn is_active(&self, id: &str) -> bool {
        let now = chrono::Utc::now();
        self.current().is_ok_and(|keys| keys.iter().any(|k| k.id == id && k.active_at(now)))
    }

    /// The principal a bearer token stands for; `None` for an unknown, malformed, revoked or
    /// expired key (or an unreadable keys file: nobody is let in).
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let rest = token.strip_prefix("plk_")?;
        let (id, secret) = rest.split_once('_')?;
        let keys = self.current().ok()?;
        let now = chrono::Utc::now();
        let record = keys.iter().find(|k| k.id == id && k.active_at(now))?;
        let want = blake3::Hash::from_hex(&record.hash).ok()?;
        // blake3::Hash compares in constant time.
        (blake3::hash(secret.as_bytes()) == want).then(|| Principal {
            key_id: record.id.clone(),
            role: record.role,
            merchant: record.merchant.clone(),
        })
    }
}

impl App {
    /// Creates a key: its record and the token (shown once).
    pub fn create_key(&self, role: Role, merchant: Option<String>) -> Result<CreatedKey, Failure> {
        self.create_key_until(role, merchant, None)
    }

    /// Creates a key that stops authenticating at `expires` (a time to come), if given.
    pub fn create_key_until(
        &self,
        role: Role,
        merchant: Option<String>,
        expires: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<CreatedKey, Failure> {
        let now = chrono::Utc::now();
        if let Some(t) = expires
            && (t <= now || !crate::dates::in_years(t.date_naive()))
        {
            return Err(Failure::invalid(
                "invalid_key",
                format!("--expires {} is not a time to come before {}", t.to_rfc3339(), crate::dates::DATE_YEAR_END),
            )
            .field("expires"));
        }
        match (role, &merchant) {
            (Role::Terminal, None) => {
                return Err(Failure::invalid("invalid_key", "a terminal key needs --merchant").field("merchant"));
            }
            (Role::Terminal, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(
                    Failure::invalid("invalid_key", "--merchant applies to terminal keys only").field("merchant")
                );
            }
        }
        let id = random_hex(6)?;
        let secret = random_hex(32)?;
        let record = KeyRecord {
            id: id.clone(),
            role,
            merchant,
            hash: blake3::hash(secret.as_bytes()).to_hex().to_string(),
            created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            revoked: false,
            expires_at: expires,
        };
        self.keys.update(|keys| {
            keys.push(record.clone());
            Ok(())
        })?;
        Ok(CreatedKey { record, token: format!("plk_{id}_{secret}") })
    }

    /// Revokes the key `id`.
    pub fn revoke_key(&self, id: &str) -> Result<KeyRecord, Failure> {
        self.keys.update(|keys| {
            let record = keys
                .iter_mut()
                .find(|k| k.id == id)
                .ok_or_else(|| Failure::not_found("unknown_key", format!("no key {id}")))?;
            record.revoked = true;
            Ok(record.clone())
        })
    }

    /// Every key, revoked ones too.
    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, Failure> {
        Ok(self.keys.current()?.as_ref().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_authenticates_until_revoked_and_only_its_hash_is_stored() {
        // The token works, a changed secret does not, the file never holds the secret.
        let dir = tempfile::tempdir().expect("tmp");
        let app = App::open(crate::DataDir::new(dir.path()), Box::new(|_| {})).expect("app");
        let created = app.create_key(Role::Terminal, Some("M000001".into())).expect("created");
        let (record, token) = (created.record, created.token);
        let ring = KeyRing::new(app.dir().keys());
        let who = ring.authenticate(&token).expect("authenticates");
        assert_eq!((who.role, who.merchant.as_deref()), (Role::Terminal, Some("M000001")));
        let secret = token.rsplit('_').next().expect("secret");
        let stored = std::fs::read_to_string(app.dir().keys()).expect("file");
        assert!(!stored.contains(secret));
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push(if token.ends_with('0') { '1' } else { '0' });
        assert!(ring.authenticate(&wrong).is_none());
        assert!(ring.authenticate("Bearer nonsense").is_none());
        assert!(ring.is_active(&record.id));
        app.revoke_key(&record.id).expect("revoked");
        assert!(ring.authenticate(&token).is_none(), "the ring sees the revocation at once");
        assert!(!ring.is_active(&record.id) && !ring.is_active("nobody"));
        assert!(app.create_key(Role::Terminal, None).is_err());
        assert!(app.create_key(Role::Finance, Some("M1".into())).is_err());
        assert_eq!(app.revoke_key("nobody").map_err(|e| e.class), Err(crate::Class::NotFound));
    }

    /// Two writers that share no memory (as two processes) change the file at once: every
    /// change of each survives, and the file stays owner-only.
    #[test]
    fn changes_from_two_writers_are_never_lost_and_the_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.json");
        let record = |id: String| KeyRecord {
            id,
            role: Role::Analyst,
            merchant: None,
            hash: String::new(),
            created_at: String::new(),
            revoked: false,
            expires_at: None,
        };
        std::thread::scope(|scope| {
            for writer in 0..2 {
                let path = path.clone();
                scope.spawn(move || {
                    let ring = KeyRing::new(path);
                    for i in 0..100 {
                        ring.update(|keys| {
                            keys.push(record(format!("w{writer}-{i}")));
                            Ok(())
                        })
                        .expect("update");
                    }
                });
            }
        });
        let keys = KeyRing::new(path.clone()).current().expect("keys");
        assert_eq!(keys.len(), 200, "no change lost");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "owner-only: {mode:o}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "no temporary file left: {left:?}");
    }

    /// A key with an expiry authenticates until then, not after; an expiry in the past is
    /// refused when the key is made.
    #[test]
    fn an_expired_key_authenticates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = App::open(crate::DataDir::new(dir.path()), Box::new(|_| {})).expect("app");
        let now = chrono::Utc::now();
        let later = now + chrono::Duration::hours(1);
        let created = app.create_key_until(Role::Auditor, None, Some(later)).expect("created");
        let ring = KeyRing::new(app.dir().keys());
        assert!(ring.authenticate(&created.token).is_some(), "until it expires");
        let refused = app.create_key_until(Role::Auditor, None, Some(now - chrono::Duration::seconds(1)));
        assert_eq!(refused.map_err(|f| f.field), Err(Some("expires".into())));
        // Its hour passes.
        ring.update(|keys| {
            keys.iter_mut().for_each(|k| k.expires_at = Some(now - chrono::Duration::seconds(1)));
            Ok(())
        })
        .expect("update");
        assert!(ring.authenticate(&created.token).is_none(), "expired");
        assert!(!ring.is_active(&created.record.id));
        assert_eq!(app.list_keys().expect("keys").len(), 1, "still listed");
    }
}
