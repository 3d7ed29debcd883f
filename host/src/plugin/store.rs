//! Every plugin build a partner ever ran, kept so that it can be brought
//! back, and the record of which build ran when.
//!
//! Builds are stored content-addressed as `<state_dir>/plugins/<sha256>.wasm`
//! (written to a temporary file and renamed into place; checked against
//! their digest whenever they are read back). The history lives in
//! `<state_dir>/plugins.db`: one row per build that became a partner's
//! active build ([`Activation`]) and one per build that was offered and
//! refused ([`Refusal`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// How a build came to be offered to a partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum How {
    /// Found in the plugins folder when the service started.
    Start,
    /// Written into the plugins folder while the service ran.
    Watch,
    /// Uploaded through the admin endpoint.
    Deploy,
    /// An earlier build brought back through the admin endpoint.
    Rollback,
}

impl How {
    /// The name stored and shown: `start`, `watch`, `deploy`, `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            How::Start => "start",
            How::Watch => "watch",
            How::Deploy => "deploy",
            How::Rollback => "rollback",
        }
    }

    fn parse(text: &str) -> Option<How> {
        [How::Start, How::Watch, How::Deploy, How::Rollback]
            .into_iter()
            .find(|h| h.as_str() == text)
    }
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A build that became a partner's active build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// Partner id.
    pub partner: String,
    /// SHA-256 of the component, lowercase hex.
    pub digest: String,
    /// The plugin's name, as it reports it.
    pub name: String,
    /// The plugin's version, as it reports it.
    pub version: String,
    /// When it became active.
    pub at: SystemTime,
    /// How it came.
    pub how: How,
    /// Who or what brought it (`plugins-folder`, `admin-token`).
    pub actor: String,
}

/// A build that was offered to a partner and refused; the build running
/// then kept serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Partner id.
    pub partner: String,
    /// SHA-256 of the offered bytes, when they could be read.
    pub digest: Option<String>,
    /// When it was refused.
    pub at: SystemTime,
    /// How it was offered.
    pub how: How,
    /// Who or what offered it.
    pub actor: String,
    /// Why it was refused.
    pub reason: String,
}

/// The store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file of the store could not be read or written.
    #[error("plugin store {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The history database failed.
    #[error("plugin history: {0}")]
    Db(#[from] rusqlite::Error),
    /// The history was written by a newer wharf.
    #[error("plugin history has schema version {0}, which this wharf does not know")]
    Schema(i64),
    /// Not a SHA-256 digest in lowercase hex.
    #[error("{0:?} is not a SHA-256 digest (64 hex digits)")]
    BadDigest(String),
    /// No build with this digest is stored.
    #[error("no stored build {0}")]
    Missing(String),
    /// The stored file no longer matches its digest.
    #[error("the stored build {0} is damaged: its content does not match its digest")]
    Damaged(String),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS activations (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    partner  TEXT NOT NULL,
    digest   TEXT NOT NULL,
    name     TEXT NOT NULL,
    version  TEXT NOT NULL,
    at_ms    INTEGER NOT NULL,
    how      TEXT NOT NULL,
    actor    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activations_partner ON activations (partner, id);
CREATE TABLE IF NOT EXISTS refusals (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    partner  TEXT NOT NULL,
    digest   TEXT,
    at_ms    INTEGER NOT NULL,
    how      TEXT NOT NULL,
    actor    TEXT NOT NULL,
    reason   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_partner ON refusals (partner, id);
PRAGMA user_version = 1;
";

/// Reasons are kept to this many characters.
const MAX_REASON: usize = 4000;

/// SHA-256 of `wasm`, lowercase hex: the name of a build.
pub fn digest_of(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

fn is_digest(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn clip(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason.to_string(),
    }
}

/// The builds and their history. Share it in an `Arc`; every method takes
/// `&self` and blocks briefly on the file system or the database.
pub struct PluginStore {
    dir: PathBuf,
    db: Mutex<Connection>,
}

impl std::fmt::Debug for PluginStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl PluginStore {
    /// Open (or create) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let dir = state_dir.join("plugins");
        let io = |source| StoreError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let conn = Connection::open(state_dir.join("plugins.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > 1 {
            return Err(StoreError::Schema(version));
        }
        conn.execute_batch(SCHEMA)?;
        Ok(PluginStore {
            dir,
            db: Mutex::new(conn),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        if !is_digest(digest) {
            return Err(StoreError::BadDigest(digest.to_string()));
        }
        Ok(self.dir.join(format!("{digest}.wasm")))
    }

    /// Copy the write-ahead log into the database file (both fsynced), so
    /// that closing the store has nothing left to write. Returns whether
    /// the whole log was copied.
    pub fn checkpoint(&self) -> Result<bool, StoreError> {
        Ok(crate::ledger::wal_checkpoint(&self.db())?)
    }

    /// Keep `wasm` (if it is not kept already) and return its digest. The
    /// file appears complete or not at all.
    pub fn put(&self, wasm: &[u8]) -> Result<String, StoreError> {
        let digest = digest_of(wasm);
        let path = self.path(&digest)?;
        if std::fs::read(&path).is_ok_and(|kept| digest_of(&kept) == digest) {
            return Ok(digest);
        }
        write_atomically(&path, wasm)?;
        Ok(digest)
    }

    /// The stored build `digest`, checked against its digest.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest)?;
        let wasm = match std::fs::read(&path) {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(digest.to_string()));
            }
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        if digest_of(&wasm) != digest {
            return Err(StoreError::Damaged(digest.to_string()));
        }
        Ok(wasm)
    }

    /// Record that a build became a partner's active build.
    pub fn record(&self, a: &Activation) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO activations (partner, digest, name, version, at_ms, how, actor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                a.partner,
                a.digest,
                a.name,
                a.version,
                to_ms(a.at),
                a.how.as_str(),
                a.actor
            ],
        )?;
        Ok(())
    }

    /// Record that a build was refused (the reason is kept to a few
    /// thousand characters).
    pub fn refuse(&self, r: &Refusal) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO refusals (partner, digest, at_ms, how, actor, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                r.partner,
                r.digest,
                to_ms(r.at),
                r.how.as_str(),
                r.actor,
                clip(&r.reason)
            ],
        )?;
        Ok(())
    }

    /// The builds that became `partner`'s active build, newest first (at
    /// most `limit`).
    pub fn history(&self, partner: &str, limit: usize) -> Result<Vec<Activation>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT partner, digest, name, version, at_ms, how, actor FROM activations
             WHERE partner = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![partner, limit_of(limit)], activation)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The build `partner` ran last, as recorded.
    pub fn active(&self, partner: &str) -> Result<Option<Activation>, StoreError> {
        Ok(self.history(partner, 1)?.pop())
    }

    /// The refusals of builds offered to `partner`, newest first (at most
    /// `limit`).
    pub fn refusals(&self, partner: &str, limit: usize) -> Result<Vec<Refusal>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT partner, digest, at_ms, how, actor, reason FROM refusals
             WHERE partner = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![partner, limit_of(limit)], |r| {
            Ok(Refusal {
                partner: r.get(0)?,
                digest: r.get(1)?,
                at: from_ms(r.get(2)?),
                how: how_of(r, 3)?,
                actor: r.get(4)?,
                reason: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest refusal of a build offered to `partner`.
    pub fn last_refusal(&self, partner: &str) -> Result<Option<Refusal>, StoreError> {
        Ok(self.refusals(partner, 1)?.pop())
    }

    /// The newest build in `partner`'s history whose digest is not
    /// `current`: the build that ran before the current one.
    pub fn before(&self, partner: &str, current: &str) -> Result<Option<Activation>, StoreError> {
        self.db()
            .query_row(
                "SELECT partner, digest, name, version, at_ms, how, actor FROM activations
                 WHERE partner = ?1 AND digest <> ?2 ORDER BY id DESC LIMIT 1",
                params![partner, current],
                activation,
            )
            .optional()
            .map_err(StoreError::from)
    }

    /// The newest row of `partner`'s history whose digest starts with
    /// `prefix` (a whole digest or an unambiguous beginning of one). `Ok(None)`
    /// when no build matches; [`StoreError::BadDigest`] when the prefix is
    /// not hex or names more than one build.
    pub fn find(&self, partner: &str, prefix: &str) -> Result<Option<Activation>, StoreError> {
        let prefix = prefix.to_ascii_lowercase();
        if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(StoreError::BadDigest(prefix));
        }
        let matching: Vec<Activation> = self
            .history(partner, usize::MAX)?
            .into_iter()
            .filter(|a| a.digest.starts_with(&prefix))
            .collect();
        let first = matching.first().cloned();
        if matching
            .iter()
            .any(|a| Some(&a.digest) != first.as_ref().map(|f| &f.digest))
        {
            return Err(StoreError::BadDigest(format!(
                "{prefix} (it begins more than one build's digest)"
            )));
        }
        Ok(first)
    }
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn how_of(r: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<How> {
    let text: String = r.get(index)?;
    How::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown activation kind {text:?}").into(),
        )
    })
}

fn activation(r: &rusqlite::Row<'_>) -> rusqlite::Result<Activation> {
    Ok(Activation {
        partner: r.get(0)?,
        digest: r.get(1)?,
        name: r.get(2)?,
        version: r.get(3)?,
        at: from_ms(r.get(4)?),
        how: how_of(r, 5)?,
        actor: r.get(6)?,
    })
}

/// Write `bytes` to `path` so that it appears complete or not at all: a
/// temporary file beside it, flushed to disk, renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io(&temp)(e));
    }
    if let Err(e) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(io(path)(e));
    }
    // The rename itself is durable once the folder is flushed.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activation(partner: &str, digest: &str, how: How) -> Activation {
        Activation {
            partner: partner.into(),
            digest: digest.into(),
            name: "p".into(),
            version: "1.0.0".into(),
            at: SystemTime::now(),
            how,
            actor: "plugins-folder".into(),
        }
    }

    #[test]
    fn builds_are_kept_by_digest_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::open(dir.path()).unwrap();
        let digest = store.put(b"build one").unwrap();
        assert_eq!(digest, digest_of(b"build one"));
        assert_eq!(store.put(b"build one").unwrap(), digest);
        assert_eq!(store.get(&digest).unwrap(), b"build one");
        let file = dir.path().join("plugins").join(format!("{digest}.wasm"));
        assert!(file.is_file());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("plugins"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");

        // A damaged copy is noticed, and a new put repairs it.
        std::fs::write(&file, b"build 0ne").unwrap();
        assert!(matches!(store.get(&digest), Err(StoreError::Damaged(_))));
        store.put(b"build one").unwrap();
        assert_eq!(store.get(&digest).unwrap(), b"build one");

        let other = digest_of(b"never stored");
        assert!(matches!(store.get(&other), Err(StoreError::Missing(_))));
        assert!(matches!(
            store.get("../../etc/passwd"),
            Err(StoreError::BadDigest(_))
        ));
    }

    #[test]
    fn a_checkpoint_leaves_the_history_in_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = PluginStore::open(dir.path()).unwrap();
        store
            .record(&activation("acme", &digest_of(b"a"), How::Start))
            .unwrap();
        let db = dir.path().join("plugins.db");
        let in_file_alone = || crate::ledger::tests::rows_in_file_alone(&db, "activations");
        assert_eq!(in_file_alone(), 0);
        assert!(store.checkpoint().unwrap());
        assert_eq!(in_file_alone(), 1);
    }

    #[test]
    fn history_is_newest_first_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (digest_of(b"a"), digest_of(b"b"));
        {
            let store = PluginStore::open(dir.path()).unwrap();
            store.record(&activation("acme", &a, How::Start)).unwrap();
            store.record(&activation("acme", &b, How::Deploy)).unwrap();
            store.record(&activation("other", &b, How::Start)).unwrap();
            store
                .refuse(&Refusal {
                    partner: "acme".into(),
                    digest: None,
                    at: SystemTime::now(),
                    how: How::Watch,
                    actor: "plugins-folder".into(),
                    reason: "x".repeat(MAX_REASON + 10),
                })
                .unwrap();
        }
        let store = PluginStore::open(dir.path()).unwrap();
        let history = store.history("acme", 100).unwrap();
        let digests: Vec<&str> = history.iter().map(|h| h.digest.as_str()).collect();
        assert_eq!(digests, [b.as_str(), a.as_str()]);
        assert_eq!(history[0].how, How::Deploy);
        assert_eq!(store.active("acme").unwrap().unwrap().digest, b);
        assert_eq!(store.before("acme", &b).unwrap().unwrap().digest, a);
        assert_eq!(store.before("other", &b).unwrap(), None);
        let refusal = store.last_refusal("acme").unwrap().unwrap();
        assert_eq!(refusal.how, How::Watch);
        assert_eq!(refusal.reason.chars().count(), MAX_REASON + 1);
        assert_eq!(store.last_refusal("other").unwrap(), None);

        assert_eq!(store.find("acme", &a[..8]).unwrap().unwrap().digest, a);
        assert_eq!(
            store
                .find("acme", &a.to_uppercase())
                .unwrap()
                .unwrap()
                .digest,
            a
        );
        assert_eq!(store.find("other", &a).unwrap(), None);
        assert!(matches!(
            store.find("acme", "zz"),
            Err(StoreError::BadDigest(_))
        ));
        assert!(matches!(
            store.find("acme", ""),
            Err(StoreError::BadDigest(_))
        ));
    }
}
