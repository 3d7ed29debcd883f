//! The durable ledger: the record that makes every transfer happen exactly
//! once.
//!
//! Before a file is transferred it is *claimed* under its identity
//! (partner, path, size, mtime). The claim then advances through
//! `claimed → transferred → filed → done`, or is diverted to
//! `quarantined → done`. Each step is committed to SQLite (WAL) before the
//! next begins (a small file held only in memory has its transfer committed
//! with its filing, unless the filing starts a workflow, is refused or
//! fails: after a crash it is fetched again either way), so after a crash — even `kill -9` — start-up
//! finds every unfinished claim with the last step it completed and resumes
//! from there: a file that reached `filed` is never filed again, and no
//! claimed file is forgotten.
//!
//! The same file name arriving again with another size or mtime is another
//! file and gets a claim of its own; the same identity is claimed once.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

mod canary;
mod deliveries;
mod outbox;
pub use canary::{CanaryRecord, CanarySummary};
pub use deliveries::{Delivery, DeliveryClaim, DeliveryKey, DeliveryState};
pub use outbox::Outgoing;
use serde::Serialize;

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed.
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A step was asked out of order (a bug or a concurrent worker).
    #[error("claim {id} is {actual}, cannot move from {expected} to {to}")]
    Transition {
        /// The claim.
        id: i64,
        /// The state the caller expected.
        expected: State,
        /// The state it is in.
        actual: State,
        /// The state asked for.
        to: State,
    },
    /// No such claim.
    #[error("claim {0} does not exist")]
    Missing(i64),
    /// A delivery step was asked out of order.
    #[error("delivery {id} is {actual}, cannot become {to}")]
    DeliveryStep {
        /// The delivery.
        id: i64,
        /// The state it is in.
        actual: DeliveryState,
        /// The state asked for.
        to: DeliveryState,
    },
    /// The write-ahead log could not be synced to disk.
    #[error("ledger log sync: {0}")]
    Sync(std::io::Error),
    /// The database was written by another version of the ledger.
    #[error("ledger schema version {0} is not one this runtime reads (1 or 2)")]
    Schema(i64),
}

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Claimed; the transfer has not completed.
    Claimed,
    /// Bytes received and checksummed; not yet in the repository.
    Transferred,
    /// Stored in the repository; remote post-processing pending.
    Filed,
    /// Decided to be an exception; capture and remote move pending.
    Quarantined,
    /// Finished: nothing more will happen to this file.
    Done,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Claimed => "claimed",
            State::Transferred => "transferred",
            State::Filed => "filed",
            State::Quarantined => "quarantined",
            State::Done => "done",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "claimed" => State::Claimed,
            "transferred" => State::Transferred,
            "filed" => State::Filed,
            "quarantined" => State::Quarantined,
            _ => State::Done,
        }
    }

    /// Whether `self → to` is a step the pipeline may take.
    pub fn may_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Claimed, Transferred)
                | (Transferred, Filed)
                | (Filed, Done)
                | (Claimed | Transferred, Quarantined)
                | (Claimed | Transferred, Done)
                | (Quarantined, Done)
        )
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a remote file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct FileKey {
    /// Partner id.
    pub partner: String,
    /// Path relative to the partner root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds since the Unix epoch) as listed.
    pub mtime: i64,
}

/// A claim as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    /// Claim id.
    pub id: i64,
    /// The file.
    pub key: FileKey,
    /// Where it stands.
    pub state: State,
    /// How many times processing was attempted.
    pub attempts: u32,
    /// SHA-256 of the content, once transferred.
    pub sha256: Option<String>,
    /// Repository node id, once filed.
    pub node_id: Option<u64>,
    /// Digest of the plugin that decided it.
    pub plugin: Option<String>,
    /// Why it was quarantined.
    pub reason: Option<String>,
    /// Final outcome once done: `filed`, `quarantined`, `ignored` or
    /// `vanished` (the partner removed the file before it was transferred).
    pub outcome: Option<String>,
    /// Failed attempts (transfer, repository or remote errors).
    pub failures: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// The workflow started for the document, once started.
    pub workflow_id: Option<i64>,
    /// When the file was first claimed (seconds since the Unix epoch).
    pub created_at: i64,
    /// When the claim last changed (seconds since the Unix epoch); for a
    /// finished claim, when it finished.
    pub updated_at: i64,
}

/// What [`Ledger::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// A new claim: process the file.
    New(Claim),
    /// The file was claimed before and is unfinished: resume it.
    Resume(Claim),
    /// The file was finished before: leave it alone.
    Finished(Claim),
}

/// How long a sync waits for other steps to join it when syncs follow each
/// other closely (a group commit's delay, as PostgreSQL's `commit_delay`).
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(500);

/// Syncs closer together than this mean files are in flight.
const BUSY_WITHIN: std::time::Duration = std::time::Duration::from_millis(5);

/// What the last fsync of the log covered.
#[derive(Debug, Default)]
struct Synced {
    /// Commits counted before it started.
    covered: u64,
    /// When it ended.
    at: Option<std::time::Instant>,
}

/// The ledger: one SQLite database. Methods block; call them from a
/// blocking thread in async code.
pub struct Ledger {
    conn: Mutex<Connection>,
    /// The write-ahead log, fsynced to make committed steps durable.
    wal: Option<std::path::PathBuf>,
    /// Commits so far, and the count the last WAL fsync covered: one fsync
    /// makes every commit before it durable (group commit).
    commits: std::sync::atomic::AtomicU64,
    synced: Mutex<Synced>,
}

/// Copy the write-ahead log of `conn`'s database into the database file
/// (a passive checkpoint, fsyncing both); returns whether all of it was
/// copied (a reader in the way leaves some behind).
pub(crate) fn wal_checkpoint(conn: &Connection) -> rusqlite::Result<bool> {
    let (busy, log, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(busy == 0 && log == copied)
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// More work within a step's transaction, given the changed claim.
type Then<'a> = dyn Fn(&Connection, &Claim) -> Result<(), LedgerError> + 'a;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS claims (
    id          INTEGER PRIMARY KEY,
    partner     TEXT NOT NULL,
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    mtime       INTEGER NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    sha256      TEXT,
    node_id     INTEGER,
    plugin      TEXT,
    reason      TEXT,
    outcome     TEXT,
    failures    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    workflow_id INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (partner, path, size, mtime)
);
CREATE INDEX IF NOT EXISTS claims_open ON claims (partner, state) WHERE state <> 'done';
CREATE INDEX IF NOT EXISTS claims_finished ON claims (partner, updated_at) WHERE state = 'done';
CREATE TABLE IF NOT EXISTS deliveries (
    id           INTEGER PRIMARY KEY,
    partner      TEXT NOT NULL,
    node_id      INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    state        TEXT NOT NULL,
    name         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT,
    remote_path  TEXT,
    marker       TEXT,
    plugin       TEXT,
    reason       TEXT,
    receipt_node INTEGER,
    workflow_id  INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 1,
    failures     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    ack_status   TEXT,
    ack_message  TEXT,
    ack_at       INTEGER,
    ack_node     INTEGER,
    ack_overdue  INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    uploaded_at  INTEGER,
    updated_at   INTEGER NOT NULL,
    endpoint_host TEXT,
    UNIQUE (partner, node_id, version)
);
CREATE INDEX IF NOT EXISTS deliveries_remote ON deliveries (partner, remote_path);
CREATE TABLE IF NOT EXISTS canary (
    id         INTEGER PRIMARY KEY,
    claim      INTEGER NOT NULL,
    partner    TEXT NOT NULL,
    path       TEXT NOT NULL,
    live       TEXT NOT NULL,
    candidate  TEXT NOT NULL,
    agree      INTEGER NOT NULL,
    live_verdict      TEXT NOT NULL,
    candidate_verdict TEXT NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS canary_partner ON canary (partner, candidate, id);
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY,
    partner    TEXT NOT NULL,
    event_key  TEXT NOT NULL,
    action     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    node       INTEGER,
    sha256     TEXT,
    detail     TEXT NOT NULL,
    at         INTEGER NOT NULL
);
PRAGMA user_version = 3;
";

impl Ledger {
    /// Open (or create) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let conn = Connection::open(path)?;
        let mut ledger = Self::init(conn)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        ledger.wal = Some(wal.into());
        Ok(ledger)
    }

    /// A ledger in memory (for tests and one-shot checks).
    pub fn in_memory() -> Result<Self, LedgerError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, LedgerError> {
        // WAL for concurrent readers. Every commit survives a crash of the
        // process; the steps that precede an irreversible action on a
        // partner's server (filed, quarantined) or record one (a workflow
        // started), and audit events before they are sent from the outbox,
        // also survive power loss: they fsync the log, one fsync for all
        // steps committed meanwhile (`make_durable`). Losing any other step
        // to power loss only repeats work that is idempotent.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Statement journals and sorts stay in memory, not temporary files.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Every statement is prepared once and kept (`prepare_cached`).
        conn.set_prepared_statement_cache_capacity(128);
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // The version is read and the schema brought up to date in one write
        // transaction: another process opening the same ledger meanwhile
        // waits, then finds it up to date.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tables: i64 = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'claims'",
            )?
            .query_row([], |r| r.get(0))?;
        // Version 1 had no deliveries table: creating it upgrades it. Version 2's
        // deliveries did not record the endpoint's host: the column is added.
        if tables > 0 && !matches!(version, 1..=3) {
            return Err(LedgerError::Schema(version));
        }
        if tables > 0 && version == 2 {
            tx.execute_batch("ALTER TABLE deliveries ADD COLUMN endpoint_host TEXT;")?;
        }
        tx.execute_batch(SCHEMA)?;
        tx.commit()?;
        Ok(Ledger {
            conn: Mutex::new(conn),
            wal: None,
            commits: std::sync::atomic::AtomicU64::new(0),
            synced: Mutex::new(Synced::default()),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim `key` before transferring it. Counts an attempt unless the file
    /// is already finished.
    pub fn claim(&self, key: &FileKey) -> Result<ClaimOutcome, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing = find(&tx, key)?;
        let outcome = match existing {
            Some(claim) if claim.state == State::Done => ClaimOutcome::Finished(claim),
            Some(claim) => {
                tx.prepare_cached(
                    "UPDATE claims SET attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![claim.id, now()])?;
                ClaimOutcome::Resume(Claim {
                    attempts: claim.attempts + 1,
                    ..claim
                })
            }
            None => {
                let t = now();
                tx.prepare_cached(
                    "INSERT INTO claims (partner, path, size, mtime, state, attempts, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'claimed', 1, ?5, ?5)",
                )?
                .execute(params![key.partner, key.path, key.size as i64, key.mtime, t])?;
                let id = tx.last_insert_rowid();
                ClaimOutcome::New(get(&tx, id)?)
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn advance(
        &self,
        id: i64,
        expected: State,
        to: State,
        set: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> Result<Claim, LedgerError> {
        self.advance_then(id, expected, to, set, values, None)
    }

    /// [`Self::advance`], and `then` with the changed claim in the same
    /// transaction: both are committed, or neither.
    fn advance_then(
        &self,
        id: i64,
        expected: State,
        to: State,
        set: &str,
        values: &[&dyn rusqlite::ToSql],
        then: Option<&Then<'_>>,
    ) -> Result<Claim, LedgerError> {
        if !expected.may_become(to) {
            return Err(LedgerError::Transition {
                id,
                expected,
                actual: expected,
                to,
            });
        }
        let conn = self.conn();
        // One statement, committed on its own unless `then` follows it: the
        // state is checked and changed atomically, and the changed row
        // comes back.
        let tx = then.map(|_| conn.unchecked_transaction()).transpose()?;
        let sql = format!(
            "UPDATE claims SET state = ?1, updated_at = ?2{set} WHERE id = ?3 AND state = ?4 \
             RETURNING {COLUMNS}"
        );
        let t = now();
        let (to_s, from_s) = (to.as_str(), expected.as_str());
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&to_s, &t, &id, &from_s];
        all.extend_from_slice(values);
        let updated = conn
            .prepare_cached(&sql)?
            .query_row(all.as_slice(), row_to_claim)
            .optional()?;
        let Some(claim) = updated else {
            let actual = get(&conn, id)?.state;
            return Err(LedgerError::Transition {
                id,
                expected,
                actual,
                to,
            });
        };
        if let (Some(tx), Some(then)) = (tx, then) {
            then(&tx, &claim)?;
            tx.commit()?;
        }
        // Counted before the lock is released: whoever reads this step's
        // rows next (an outbox send) finds it counted for `make_durable`.
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        drop(conn);
        Ok(claim)
    }

    /// The bytes arrived intact: record their checksum.
    pub fn transferred(&self, id: i64, sha256: &str) -> Result<Claim, LedgerError> {
        self.advance(
            id,
            State::Claimed,
            State::Transferred,
            ", sha256 = ?5",
            &[&sha256],
        )
    }

    /// The repository holds the file as node `node_id`, decided by `plugin`.
    pub fn filed(&self, id: i64, node_id: u64, plugin: &str) -> Result<Claim, LedgerError> {
        let claim = self.advance(
            id,
            State::Transferred,
            State::Filed,
            ", node_id = ?5, plugin = ?6",
            &[&(node_id as i64), &plugin],
        )?;
        // The file is archived or deleted on the server next.
        self.make_durable()?;
        Ok(claim)
    }

    /// [`Ledger::transferred`] and [`Ledger::filed`] in one commit. For
    /// bytes held only in memory, recording the transfer on its own buys
    /// nothing: after a crash they must be fetched again either way.
    pub fn transferred_and_filed(
        &self,
        id: i64,
        sha256: &str,
        node_id: u64,
        plugin: &str,
    ) -> Result<Claim, LedgerError> {
        let claim = self.advance_then(
            id,
            State::Claimed,
            State::Transferred,
            ", sha256 = ?5",
            &[&sha256],
            Some(&|tx, _| {
                tx.prepare_cached(
                    "UPDATE claims SET state = 'filed', node_id = ?2, plugin = ?3 WHERE id = ?1",
                )?
                .execute(params![id, node_id as i64, plugin])?;
                Ok(())
            }),
        )?;
        self.make_durable()?;
        Ok(Claim {
            state: State::Filed,
            node_id: Some(node_id),
            plugin: Some(plugin.to_string()),
            ..claim
        })
    }

    /// The file is an exception for `reason`; `from` is its current state.
    pub fn quarantined(&self, id: i64, from: State, reason: &str) -> Result<Claim, LedgerError> {
        let claim = self.advance(id, from, State::Quarantined, ", reason = ?5", &[&reason])?;
        // The file moves to the error folder next.
        self.make_durable()?;
        Ok(claim)
    }

    /// Make every step committed so far survive power loss: one fsync of the
    /// write-ahead log, shared by every caller waiting at the same time.
    pub fn make_durable(&self) -> Result<(), LedgerError> {
        use std::sync::atomic::Ordering;
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        let wanted = self.commits.load(Ordering::SeqCst);
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if synced.covered >= wanted {
            // Another caller's fsync already covered this commit.
            return Ok(());
        }
        if synced.at.is_some_and(|at| at.elapsed() < BUSY_WITHIN) {
            // Files are in flight: let their steps commit meanwhile and
            // share this fsync (they wait on the lock, then find it done).
            std::thread::sleep(COMMIT_DELAY);
        }
        let covers = self.commits.load(Ordering::SeqCst);
        match std::fs::File::open(wal) {
            Ok(f) => f.sync_data().map_err(LedgerError::Sync)?,
            // No log: everything was checkpointed into the database file,
            // which SQLite syncs when it checkpoints.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LedgerError::Sync(e)),
        }
        *synced = Synced {
            covered: covers,
            at: Some(std::time::Instant::now()),
        };
        Ok(())
    }

    /// Copy the write-ahead log into the database file, fsyncing both, so
    /// that closing the ledger has nothing left to write. Returns whether
    /// the whole log was copied (a reader in the way leaves some behind).
    pub fn checkpoint(&self) -> Result<bool, LedgerError> {
        use std::sync::atomic::Ordering;
        let covers = self.commits.load(Ordering::SeqCst);
        let whole = wal_checkpoint(&self.conn())?;
        if whole {
            // Every commit before the checkpoint is in the synced database.
            let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
            synced.covered = synced.covered.max(covers);
        }
        Ok(whole)
    }

    /// Everything is finished (remote post-processing included); `from` is
    /// `Filed` or `Quarantined`.
    pub fn done(&self, id: i64, from: State) -> Result<Claim, LedgerError> {
        let outcome = if from == State::Filed {
            "filed"
        } else {
            "quarantined"
        };
        self.advance(id, from, State::Done, ", outcome = ?5", &[&outcome])
    }

    /// The file was left alone for good (`ignored` by its plugin, or
    /// `vanished` from the server before its bytes arrived); `from` is
    /// `Claimed` or `Transferred`.
    pub fn dropped(&self, id: i64, from: State, outcome: &str) -> Result<Claim, LedgerError> {
        if !matches!(from, State::Claimed | State::Transferred) {
            return Err(LedgerError::Transition {
                id,
                expected: from,
                actual: from,
                to: State::Done,
            });
        }
        self.advance(id, from, State::Done, ", outcome = ?5", &[&outcome])
    }

    /// The document is stored as `node_id`; the claim stays `transferred`
    /// until the rest of the filing (permissions, retention, workflow) is
    /// done, so a crash in between resumes with the node known.
    pub fn stored(&self, id: i64, node_id: u64) -> Result<(), LedgerError> {
        self.set(id, "node_id = ?2", &(node_id as i64))
    }

    /// The document's workflow has started: it is never started twice.
    pub fn workflow_started(&self, id: i64, workflow_id: i64) -> Result<(), LedgerError> {
        self.set(id, "workflow_id = ?2", &workflow_id)?;
        self.make_durable()
    }

    /// An attempt failed with `error` (which must not hold secrets). When
    /// `counts`, the file's failure counter moves (a failure of the
    /// environment, such as a repository outage, only records its message).
    /// Returns the failure count.
    pub fn failed(&self, id: i64, error: &str, counts: bool) -> Result<u32, LedgerError> {
        let conn = self.conn();
        let changed = conn
            .prepare_cached(
                "UPDATE claims SET failures = failures + ?4, last_error = ?2, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, error, now(), i64::from(counts)])?;
        if changed == 0 {
            return Err(LedgerError::Missing(id));
        }
        Ok(get(&conn, id)?.failures)
    }

    fn set(
        &self,
        id: i64,
        assignment: &str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<(), LedgerError> {
        let conn = self.conn();
        let sql = format!("UPDATE claims SET {assignment}, updated_at = ?3 WHERE id = ?1");
        let changed = conn
            .prepare_cached(&sql)?
            .execute(params![id, value, now()])?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if changed == 0 {
            return Err(LedgerError::Missing(id));
        }
        Ok(())
    }

    /// Claims of `partner` finished in `[from, to)` (seconds since the Unix
    /// epoch), in the order they finished: one day's delivery log.
    pub fn finished_between(
        &self,
        partner: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<Claim>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM claims WHERE state = 'done' AND partner = ?1 AND updated_at >= ?2 AND updated_at < ?3 ORDER BY updated_at, id"
        ))?;
        let rows = stmt.query_map(params![partner, from, to], row_to_claim)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every unfinished claim of `partner` (all partners when `None`), oldest
    /// first: what start-up must resume.
    pub fn unfinished(&self, partner: Option<&str>) -> Result<Vec<Claim>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM claims WHERE state <> 'done' AND (?1 IS NULL OR partner = ?1) ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![partner], row_to_claim)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The claim with this id.
    pub fn get(&self, id: i64) -> Result<Claim, LedgerError> {
        get(&self.conn(), id)
    }

    /// The claim of this file, if any.
    pub fn find(&self, key: &FileKey) -> Result<Option<Claim>, LedgerError> {
        find(&self.conn(), key)
    }

    /// Count claims by state.
    pub fn counts(&self) -> Result<Vec<(State, u64)>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM claims GROUP BY state ORDER BY state")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                State::parse(&r.get::<_, String>(0)?),
                r.get::<_, i64>(1)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn row_to_claim(r: &rusqlite::Row<'_>) -> rusqlite::Result<Claim> {
    Ok(Claim {
        id: r.get(0)?,
        key: FileKey {
            partner: r.get(1)?,
            path: r.get(2)?,
            size: r.get::<_, i64>(3)? as u64,
            mtime: r.get(4)?,
        },
        state: State::parse(&r.get::<_, String>(5)?),
        attempts: r.get::<_, i64>(6)? as u32,
        sha256: r.get(7)?,
        node_id: r.get::<_, Option<i64>>(8)?.map(|n| n as u64),
        plugin: r.get(9)?,
        reason: r.get(10)?,
        outcome: r.get(11)?,
        failures: r.get::<_, i64>(12)? as u32,
        last_error: r.get(13)?,
        workflow_id: r.get(14)?,
        created_at: r.get(15)?,
        updated_at: r.get(16)?,
    })
}

/// The columns of a claim, in the order [`row_to_claim`] reads them.
const COLUMNS: &str = "id, partner, path, size, mtime, state, attempts, sha256, node_id, plugin, reason, outcome, failures, last_error, workflow_id, created_at, updated_at";

fn get(conn: &Connection, id: i64) -> Result<Claim, LedgerError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM claims WHERE id = ?1"))?
        .query_row(params![id], row_to_claim)
        .optional()?
        .ok_or(LedgerError::Missing(id))
}

fn find(conn: &Connection, key: &FileKey) -> Result<Option<Claim>, LedgerError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM claims WHERE partner = ?1 AND path = ?2 AND size = ?3 AND mtime = ?4"
        ))?
        .query_row(
            params![key.partner, key.path, key.size as i64, key.mtime],
            row_to_claim,
        )
        .optional()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn key(path: &str) -> FileKey {
        FileKey {
            partner: "acme".into(),
            path: path.into(),
            size: 100,
            mtime: 1_764_000_000,
        }
    }

    fn new_claim(ledger: &Ledger, path: &str) -> Claim {
        match ledger.claim(&key(path)).unwrap() {
            ClaimOutcome::New(c) => c,
            other => panic!("expected a new claim, got {other:?}"),
        }
    }

    /// Rows in `table` of a copy of the database file `db` alone (its
    /// write-ahead log left behind); for the other stores' tests too.
    pub(crate) fn rows_in_file_alone(db: &Path, table: &str) -> i64 {
        let copy = tempfile::tempdir().unwrap();
        let file = copy.path().join("copy.db");
        std::fs::copy(db, &file).unwrap();
        let conn = Connection::open(&file).unwrap();
        // Not even the table while the schema is in the log only.
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap_or(0)
    }

    #[test]
    fn a_checkpoint_leaves_every_commit_in_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let ledger = Ledger::open(&path).unwrap();
        new_claim(&ledger, "in/a.csv");
        new_claim(&ledger, "in/b.csv");
        // Until then the claims are in the log only.
        assert_eq!(rows_in_file_alone(&path, "claims"), 0);
        assert!(ledger.checkpoint().unwrap());
        assert_eq!(rows_in_file_alone(&path, "claims"), 2);
    }

    #[test]
    fn a_transfer_and_its_filing_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let id = {
            let ledger = Ledger::open(&path).unwrap();
            let c = new_claim(&ledger, "in/a.csv");
            let filed = ledger
                .transferred_and_filed(c.id, "ab", 42, "sha256:plugin")
                .unwrap();
            assert_eq!(filed.state, State::Filed);
            assert_eq!(filed.sha256.as_deref(), Some("ab"));
            assert_eq!(filed, ledger.get(c.id).unwrap());
            // Only from claimed: a second one is refused and changes nothing.
            assert!(
                ledger
                    .transferred_and_filed(c.id, "cd", 43, "other")
                    .is_err()
            );
            c.id
        };
        let ledger = Ledger::open(&path).unwrap();
        let c = ledger.get(id).unwrap();
        assert_eq!(
            (c.state, c.sha256.as_deref(), c.node_id, c.plugin.as_deref()),
            (State::Filed, Some("ab"), Some(42), Some("sha256:plugin"))
        );
        ledger.done(id, State::Filed).unwrap();

        // The filing refused: the transfer is not recorded either.
        let b = new_claim(&ledger, "in/b.csv");
        ledger
            .conn()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE UPDATE ON claims WHEN NEW.state = 'filed' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .unwrap();
        assert!(ledger.transferred_and_filed(b.id, "ef", 44, "p").is_err());
        let b = ledger.get(b.id).unwrap();
        assert_eq!((b.state, b.sha256), (State::Claimed, None));
    }

    #[test]
    fn a_file_walks_to_done_and_is_never_claimed_again() {
        let ledger = Ledger::in_memory().unwrap();
        let c = new_claim(&ledger, "in/a.csv");
        ledger.transferred(c.id, "ab").unwrap();
        ledger.filed(c.id, 42, "sha256:plugin").unwrap();
        let done = ledger.done(c.id, State::Filed).unwrap();
        assert_eq!(done.outcome.as_deref(), Some("filed"));
        assert!(matches!(
            ledger.claim(&key("in/a.csv")).unwrap(),
            ClaimOutcome::Finished(_)
        ));
        assert!(ledger.unfinished(None).unwrap().is_empty());
    }

    #[test]
    fn an_unfinished_claim_is_resumed_with_its_last_step() {
        let ledger = Ledger::in_memory().unwrap();
        let c = new_claim(&ledger, "in/a.csv");
        ledger.transferred(c.id, "ab").unwrap();
        ledger.filed(c.id, 42, "p").unwrap();
        match ledger.claim(&key("in/a.csv")).unwrap() {
            ClaimOutcome::Resume(r) => {
                assert_eq!(r.state, State::Filed);
                assert_eq!(r.node_id, Some(42));
                assert_eq!(r.attempts, 2);
            }
            other => panic!("expected resume, got {other:?}"),
        }
    }

    #[test]
    fn a_changed_file_is_another_claim() {
        let ledger = Ledger::in_memory().unwrap();
        let c = new_claim(&ledger, "in/a.csv");
        let mut changed = key("in/a.csv");
        changed.size += 1;
        assert!(matches!(ledger.claim(&changed).unwrap(), ClaimOutcome::New(n) if n.id != c.id));
    }

    #[test]
    fn steps_out_of_order_are_refused() {
        let ledger = Ledger::in_memory().unwrap();
        let c = new_claim(&ledger, "in/a.csv");
        assert!(matches!(
            ledger.filed(c.id, 1, "p"),
            Err(LedgerError::Transition { .. })
        ));
        ledger.transferred(c.id, "ab").unwrap();
        // A second worker repeating the step loses.
        assert!(matches!(
            ledger.transferred(c.id, "ab"),
            Err(LedgerError::Transition {
                actual: State::Transferred,
                ..
            })
        ));
        assert!(matches!(
            ledger.done(c.id, State::Claimed),
            Err(LedgerError::Transition { .. })
        ));
    }

    #[test]
    fn quarantine_ends_done_with_its_reason() {
        let ledger = Ledger::in_memory().unwrap();
        let c = new_claim(&ledger, "in/bad.csv");
        ledger.transferred(c.id, "ab").unwrap();
        ledger
            .quarantined(c.id, State::Transferred, "bad-header")
            .unwrap();
        let done = ledger.done(c.id, State::Quarantined).unwrap();
        assert_eq!(done.reason.as_deref(), Some("bad-header"));
        assert_eq!(done.outcome.as_deref(), Some("quarantined"));
    }

    #[test]
    fn failures_steps_and_the_delivery_day_are_recorded() {
        let ledger = Ledger::in_memory().unwrap();
        let c = new_claim(&ledger, "in/a.csv");
        assert_eq!(ledger.failed(c.id, "connection reset", true).unwrap(), 1);
        assert_eq!(ledger.failed(c.id, "repository down", false).unwrap(), 1);
        assert_eq!(ledger.failed(c.id, "timed out", true).unwrap(), 2);
        ledger.transferred(c.id, "ab").unwrap();
        ledger.stored(c.id, 7).unwrap();
        ledger.workflow_started(c.id, 9).unwrap();
        let got = ledger.get(c.id).unwrap();
        assert_eq!(
            (
                got.failures,
                got.last_error.as_deref(),
                got.node_id,
                got.workflow_id
            ),
            (2, Some("timed out"), Some(7), Some(9))
        );
        ledger.filed(c.id, 7, "p").unwrap();
        let done = ledger.done(c.id, State::Filed).unwrap();
        let ignored = new_claim(&ledger, "in/readme.txt");
        ledger
            .dropped(ignored.id, State::Claimed, "ignored")
            .unwrap();
        assert!(ledger.dropped(c.id, State::Filed, "ignored").is_err());
        let day = ledger
            .finished_between("acme", done.updated_at - 1, done.updated_at + 1)
            .unwrap();
        assert_eq!(day.len(), 2);
        assert_eq!(day[1].outcome.as_deref(), Some("ignored"));
        assert!(
            ledger
                .finished_between("other", 0, i64::MAX)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_ledger_of_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        drop(Ledger::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        assert!(matches!(Ledger::open(&path), Err(LedgerError::Schema(7))));
    }

    /// Turns the ledger at `path` back into one of schema version 2, whose
    /// deliveries had no `endpoint_host`.
    fn as_version_2(path: &Path) {
        Connection::open(path)
            .unwrap()
            .execute_batch(
                "ALTER TABLE deliveries DROP COLUMN endpoint_host; PRAGMA user_version = 2;",
            )
            .unwrap();
    }

    /// A ledger of version 2, whose deliveries did not record their host,
    /// opens with its deliveries intact, and records hosts from then on.
    #[test]
    fn a_version_2_ledger_is_upgraded_in_place() {
        use crate::ledger::{DeliveryClaim, DeliveryKey};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let key = DeliveryKey {
            partner: "globex".into(),
            node_id: 7,
            version: 1,
        };
        let id = {
            let ledger = Ledger::open(&path).unwrap();
            let DeliveryClaim::New(d) = ledger.claim_delivery(&key, "cat.pdf", 10).unwrap() else {
                panic!()
            };
            ledger
                .delivery_decided(d.id, "cat.pdf", "ab", "to-print/cat.pdf", None, "p")
                .unwrap();
            d.id
        };
        as_version_2(&path);
        let ledger = Ledger::open(&path).unwrap();
        let d = ledger.delivery(id).unwrap();
        assert_eq!(d.remote_path.as_deref(), Some("to-print/cat.pdf"));
        assert_eq!(d.endpoint_host, None);
        let d = ledger.delivery_uploaded(id, "sftp.globex.example").unwrap();
        assert_eq!(d.endpoint_host.as_deref(), Some("sftp.globex.example"));
        drop(ledger);
        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(
            ledger.delivery(id).unwrap().endpoint_host.as_deref(),
            Some("sftp.globex.example")
        );
        let version: i64 = ledger
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
    }

    /// Processes opening a version-2 ledger at the same moment all open it:
    /// one upgrades it, the others find it upgraded.
    #[test]
    fn a_ledger_is_upgraded_once_when_opened_at_once() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ledger.db");
            drop(Ledger::open(&path).unwrap());
            as_version_2(&path);
            let start = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                let opened: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            Ledger::open(&path).map(drop)
                        })
                    })
                    .collect();
                for o in opened {
                    o.join().unwrap().unwrap();
                }
            });
        }
    }

    #[test]
    fn claims_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let id = {
            let ledger = Ledger::open(&path).unwrap();
            let c = new_claim(&ledger, "in/a.csv");
            ledger.transferred(c.id, "ab").unwrap();
            c.id
        };
        let ledger = Ledger::open(&path).unwrap();
        let open = ledger.unfinished(Some("acme")).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!((open[0].id, open[0].state), (id, State::Transferred));
        assert_eq!(open[0].sha256.as_deref(), Some("ab"));
    }

    #[test]
    fn concurrent_claimers_of_one_file_get_one_new_claim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        Ledger::open(&path).unwrap();
        let news = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    s.spawn(move || {
                        let ledger = Ledger::open(&path).unwrap();
                        matches!(
                            ledger.claim(&key("in/a.csv")).unwrap(),
                            ClaimOutcome::New(_)
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|new| *new)
                .count()
        });
        assert_eq!(news, 1);
    }
}
