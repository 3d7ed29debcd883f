//! The embedded repository: SQLite (WAL) for metadata, content-addressed
//! blobs on disk for content.
//!
//! A store streams the content into a temporary file while hashing it,
//! fsyncs it, renames it to `blobs/<aa>/<sha256>` and only then commits the
//! metadata that references it. A crash in between leaves an unreferenced
//! blob, which [`Embedded::open`] removes; a referenced blob is never missing.
//!
//! [`Repository::store_document`] takes shortcuts where the
//! [`ContentSource`] allows them, each in one blocking step:
//! - in-memory content ([`ContentSource::in_memory`]) is hashed first; when
//!   it matches the declared checksum and that blob is already stored, nothing
//!   is written, else it is written, fsynced and renamed;
//! - a local file ([`ContentSource::local_file`]) is copied with 1 MiB reads
//!   and writes, hashing as it reads; from 4 MiB on, one thread reads and
//!   hashes while another writes with direct I/O (where the file system
//!   takes it), so a large copy neither floods the page cache nor waits in
//!   its dirty-page throttling. A file that promises to stay unmodified
//!   ([`ContentSource::local_file_immutable`]) is hard-linked instead when it
//!   is on the same file system, then read once to verify and fsynced. When
//!   the declared blob already exists, the file is only read and verified;
//! - a file staged by this crate ([`ContentSource::staged`], see
//!   [`crate::Staged`]) was hashed while it was written, so it is not read
//!   again: when it is still the file staged it is hard-linked and fsynced
//!   (its writeback began while it was written), else copied and verified
//!   as above.
//!
//! Content that does not match the declared checksum never gets a blob name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::direct::{AlignedBuf, BlockWriter};
use crate::source::{ByteStream, ContentSource, HashedDownload};
use crate::types::*;
use crate::{EcmError, ErrorKind, Repository, Result};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    parent INTEGER REFERENCES nodes(id),
    name TEXT NOT NULL,
    subtype INTEGER NOT NULL,
    description TEXT,
    created INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    ws_type TEXT,
    business_id TEXT,
    rm_class TEXT,
    classified_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS nodes_parent_name ON nodes(parent, name);
CREATE INDEX IF NOT EXISTS nodes_workspace ON nodes(ws_type, business_id);
CREATE TABLE IF NOT EXISTS versions (
    node INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mime TEXT NOT NULL,
    file_name TEXT NOT NULL,
    description TEXT,
    created INTEGER NOT NULL,
    PRIMARY KEY (node, number)
);
CREATE INDEX IF NOT EXISTS versions_sha ON versions(sha256);
CREATE TABLE IF NOT EXISTS inline_blobs (
    sha256 TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS attrs (
    node INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    category TEXT NOT NULL,
    attribute TEXT NOT NULL,
    value TEXT NOT NULL,
    vtext TEXT NOT NULL,
    PRIMARY KEY (node, category, attribute)
);
CREATE INDEX IF NOT EXISTS attrs_value ON attrs(category, attribute, vtext);
CREATE TABLE IF NOT EXISTS grants (
    node INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    rights TEXT NOT NULL,
    PRIMARY KEY (node, kind, name)
);
CREATE TABLE IF NOT EXISTS holds (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS node_holds (
    node INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    hold INTEGER NOT NULL REFERENCES holds(id),
    PRIMARY KEY (node, hold)
);
CREATE TABLE IF NOT EXISTS rm_classes (code TEXT PRIMARY KEY, retain_days INTEGER);
CREATE TABLE IF NOT EXISTS workflows (
    id INTEGER PRIMARY KEY,
    workflow TEXT NOT NULL,
    title TEXT NOT NULL,
    comment TEXT NOT NULL,
    assignee TEXT,
    documents TEXT NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    node INTEGER,
    sha256 TEXT,
    detail TEXT NOT NULL,
    event_key TEXT
);
CREATE INDEX IF NOT EXISTS audit_node ON audit(node);
"#;

/// What [`Embedded::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    /// Unreferenced blobs removed (left by a crash before the metadata commit,
    /// or by deleted documents).
    pub orphan_blobs_removed: u64,
    /// Unfinished temporary files removed.
    pub temp_files_removed: u64,
    /// Referenced blobs that are missing (should never happen; reported).
    pub missing_blobs: Vec<String>,
}

/// A started workflow or review task as the embedded repository keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowRecord {
    /// Id.
    pub id: WorkflowId,
    /// Workflow name.
    pub workflow: String,
    /// Title.
    pub title: String,
    /// Message.
    pub comment: String,
    /// Assignee.
    pub assignee: Option<String>,
    /// Attached documents.
    pub documents: Vec<NodeId>,
    /// Status (`open`).
    pub status: String,
    /// When, RFC 3339 UTC.
    pub created: String,
}

type Hook = Arc<dyn Fn() + Send + Sync>;

/// Contents up to this size are buffered and written in one blocking step.
const SMALL_BLOB: usize = 1 << 20;

/// Contents up to this size are kept in the database, in the transaction
/// that commits their version: no file to create and no fsync of their own
/// (the commit's log sync covers them). Most business documents (invoices,
/// orders, acknowledgements, receipts) are this small.
pub const INLINE_BLOB: usize = 64 * 1024;

/// Buffer size of the blocking reads and writes of local files.
pub(crate) const FILE_BUF: usize = 1 << 20;

/// Local files at least this large are copied by two threads (one reads and
/// hashes, the other writes, with direct I/O where the file system allows),
/// and a hard-linked one is fsynced while it is being hashed.
const LARGE_FILE: u64 = 4 << 20;

/// How long a group commit waits for more jobs when commits follow each
/// other closely (as PostgreSQL's `commit_delay`).
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(500);

/// Commits closer together than this mean stores are in flight.
const BUSY_WITHIN: std::time::Duration = std::time::Duration::from_millis(5);

/// Buffers in flight between the reading and the writing thread of a copy.
const COPY_BUFFERS: usize = 4;

/// A write waiting for the next group commit.
enum Job {
    /// A document store.
    Store {
        doc: NewDocument,
        blob: NewBlob,
        strict: bool,
        /// Recorded with the store (on the stored node unless it names one)
        /// unless the content was already there.
        event: Option<Box<AuditEvent>>,
        reply: tokio::sync::oneshot::Sender<Result<Stored>>,
    },
    /// An audit event.
    Event {
        event: AuditEvent,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
    /// Audit events recorded once per key.
    Events {
        events: Vec<KeyedEvent>,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
}

/// How a job run in a group commit is answered once the commit is done
/// (given the commit's error, if it failed).
type Answer = Box<dyn FnOnce(Option<&EcmError>) + Send>;

impl Job {
    /// Carry the job out within the open transaction `tx`, inside a
    /// savepoint so that its failure leaves the others' work in place;
    /// returns how to answer it once the transaction's fate is known.
    fn run(self, tx: &Connection, actor: &str) -> Answer {
        /// The outcome `r` unless the transaction failed with `failed`.
        fn answer<T: Send + 'static>(
            reply: tokio::sync::oneshot::Sender<Result<T>>,
            r: Result<T>,
        ) -> Answer {
            Box::new(move |failed| {
                let _ = reply.send(match failed {
                    Some(e) => Err(e.clone()),
                    None => r,
                });
            })
        }
        match self {
            Job::Store {
                doc,
                blob,
                strict,
                event,
                reply,
            } => answer(
                reply,
                in_savepoint(tx, || {
                    let stored = store_tx(tx, actor, &doc, &blob, strict)?;
                    if let Some(e) =
                        event.filter(|_| stored.outcome != StoreOutcome::AlreadyPresent)
                    {
                        record_in(tx, &e, Some(stored.node))?;
                    }
                    Ok(stored)
                }),
            ),
            Job::Event { event: e, reply } => {
                answer(reply, in_savepoint(tx, || record_in(tx, &e, None)))
            }
            Job::Events { events, reply } => answer(
                reply,
                in_savepoint(tx, || {
                    events.iter().try_for_each(|e| record_keyed_in(tx, e))
                }),
            ),
        }
    }

    /// Answer the job with `e` without running it.
    fn refuse(self, e: &EcmError) {
        match self {
            Job::Store { reply, .. } => {
                let _ = reply.send(Err(e.clone()));
            }
            Job::Event { reply, .. } | Job::Events { reply, .. } => {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

struct Inner {
    /// The connection every change goes through (and reads that must see
    /// a change's own transaction).
    conn: Mutex<Connection>,
    /// A second, read-only connection: in WAL mode its reads see every
    /// committed change and never wait for a commit (nor its fsync) in
    /// progress on `conn`.
    reader: Mutex<Connection>,
    /// The database is in WAL mode (reads and commits do not wait for
    /// each other).
    wal: bool,
    state: PathBuf,
    blobs: Dir,
    tmp: Dir,
    actor: String,
    before_commit: Mutex<Option<Hook>>,
    pending: Mutex<Vec<Job>>,
    /// Blobs renamed into place whose folder is not yet known to be synced,
    /// with how many stores are publishing each.
    publishing: Mutex<HashMap<String, usize>>,
    /// When the last group commit ended.
    last_commit: Mutex<Option<std::time::Instant>>,
    /// Fan-out folders known to exist durably.
    fan_outs: Mutex<std::collections::HashSet<String>>,
    /// Held (locked) while this process may reconcile the blob store.
    _owner_lock: Option<std::fs::File>,
}

/// The embedded repository. Cheap to clone; clones share one store.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("state", &self.inner.state)
            .finish()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn blob_path(sha: &str) -> PathBuf {
    Path::new(&sha[..2]).join(sha)
}

/// Make a directory's entries durable (after a rename into it). cap-std
/// opens directories with O_PATH, which cannot be synced; the path is ours:
/// the state directory, `blobs` and two hex digits.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// A unique temporary file name.
fn temp_name() -> String {
    format!(
        "{:016x}-{:08x}.part",
        rand::random::<u64>(),
        std::process::id()
    )
}

/// Refuse content whose checksum is not the `expected` one.
fn check_expected(sha: &str, expected: Option<&str>) -> Result<()> {
    match expected {
        Some(want) if want != sha => Err(EcmError::invalid(format!(
            "content checksum {sha} does not match the declared {want}"
        ))),
        _ => Ok(()),
    }
}

/// Read `src` (of about `len` bytes) to its end, hashing it and copying it
/// to `dst` when given; fail unless its SHA-256 is `expected`. Returns the
/// size.
fn hash_check(
    src: &mut std::fs::File,
    len: u64,
    mut dst: Option<&mut std::fs::File>,
    expected: &str,
) -> Result<u64> {
    use std::io::Write;
    // One read more than the length finds the end.
    let mut buf = vec![
        0u8;
        usize::try_from(len)
            .unwrap_or(FILE_BUF)
            .clamp(4096, FILE_BUF - 1)
            + 1
    ];
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = read_full(src, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(d) = dst.as_mut() {
            d.write_all(&buf[..n])?;
        }
        size += n as u64;
    }
    check_expected(&hex::encode(hasher.finalize()), Some(expected))?;
    Ok(size)
}

/// Read until `buf` is full or the file ends; the count read.
fn read_full(src: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Copy `src` to `dst` (a new, empty file) and fsync it: this thread reads
/// and hashes while a second one writes whole aligned blocks, with direct
/// I/O where the file system takes it (see [`BlockWriter`]), which keeps a
/// large copy out of the page cache and its dirty-page throttling. Returns
/// the SHA-256 and the size.
fn copy_pipelined(src: &mut std::fs::File, dst: std::fs::File) -> std::io::Result<(String, u64)> {
    use std::sync::mpsc::sync_channel;
    let (full_tx, full_rx) = sync_channel::<(AlignedBuf, usize)>(COPY_BUFFERS);
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(COPY_BUFFERS);
    for _ in 0..COPY_BUFFERS {
        free_tx
            .send(AlignedBuf::new())
            .map_err(|_| std::io::Error::other("copy buffers"))?;
    }
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> std::io::Result<()> {
            let mut out = BlockWriter::new(&dst);
            for (buf, n) in full_rx {
                out.write(&buf.filled()[..n])?;
                // The reader may have stopped already.
                let _ = free_tx.send(buf);
            }
            out.finish()?;
            dst.sync_data()
        });
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let read = (|| -> std::io::Result<()> {
            // Ends when the writer stops (it drops the free buffers' sender).
            for mut buf in free_rx.iter() {
                let n = read_full(src, buf.get())?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf.get()[..n]);
                size += n as u64;
                // Only the last block may be partial: the file ended.
                if full_tx.send((buf, n)).is_err() || n < FILE_BUF {
                    break;
                }
            }
            Ok(())
        })();
        drop(full_tx);
        let written = writer
            .join()
            .map_err(|_| std::io::Error::other("the writing thread panicked"))?;
        read?;
        written?;
        Ok((hex::encode(hasher.finalize()), size))
    })
}

fn is_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn principal_key(p: &Principal) -> (&'static str, &str) {
    match p {
        Principal::Owner => ("owner", ""),
        Principal::OwnerGroup => ("group", ""),
        Principal::Public => ("public", ""),
        Principal::User(n) => ("user", n),
        Principal::Group(n) => ("named-group", n),
    }
}

fn principal_from(kind: &str, name: String) -> Principal {
    match kind {
        "owner" => Principal::Owner,
        "group" => Principal::OwnerGroup,
        "public" => Principal::Public,
        "user" => Principal::User(name),
        _ => Principal::Group(name),
    }
}

const NODE_COLS: &str = "n.id, n.parent, n.name, n.subtype, n.description, n.created, n.modified, \
     (SELECT size FROM versions v WHERE v.node = n.id ORDER BY number DESC LIMIT 1), \
     (SELECT mime FROM versions v WHERE v.node = n.id ORDER BY number DESC LIMIT 1), \
     (SELECT COUNT(*) FROM versions v WHERE v.node = n.id)";

fn node_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    let kind = NodeKind::from_subtype(r.get(3)?);
    let is_doc = kind == NodeKind::Document;
    let count: i64 = r.get(9)?;
    Ok(Node {
        id: NodeId(r.get(0)?),
        parent: r.get::<_, Option<i64>>(1)?.map(NodeId),
        name: r.get(2)?,
        kind,
        description: r.get(4)?,
        created: rfc3339(r.get(5)?),
        modified: rfc3339(r.get(6)?),
        size: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
        mime_type: r.get(8)?,
        versions: is_doc.then_some(count as u32),
    })
}

/// Record the event `e` (on `default_node` unless it names a node).
fn record_in(tx: &Connection, e: &AuditEvent, default_node: Option<NodeId>) -> Result<()> {
    audit_in(
        tx,
        &e.action,
        &e.actor,
        e.node.or(default_node),
        e.sha256.as_deref(),
        &e.detail,
    )
}

/// Record `e` unless an event with its key is recorded.
fn record_keyed_in(tx: &Connection, e: &KeyedEvent) -> Result<()> {
    let (k, ev) = (&e.key, &e.event);
    let at = if e.at > 0 { e.at } else { now_secs() };
    tx.prepare_cached(
        "INSERT OR IGNORE INTO audit (at, action, actor, node, sha256, detail, event_key) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        at,
        ev.action,
        ev.actor,
        ev.node.map(|n| n.0),
        ev.sha256,
        ev.detail,
        k
    ])?;
    Ok(())
}

/// `f` with one snapshot of the repository for all its statements.
fn in_snapshot<T>(c: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let snapshot = c.unchecked_transaction()?;
    let answer = f(&snapshot);
    snapshot.finish()?;
    answer
}

fn get_node(c: &Connection, id: NodeId) -> Result<Node> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT {NODE_COLS} FROM nodes n WHERE n.id = ?1"));
    c.prepare_cached(&SQL)?
        .query_row([id.0], node_row)
        .optional()?
        .ok_or_else(|| EcmError::not_found(format!("node {id}")))
}

/// Fails as [`get_node`] does unless node `id` exists, without reading it.
fn require_node(c: &Connection, id: NodeId) -> Result<()> {
    c.prepare_cached("SELECT 1 FROM nodes WHERE id = ?1")?
        .query_row([id.0], |_| Ok(()))
        .optional()?
        .ok_or_else(|| EcmError::not_found(format!("node {id}")))
}

/// Run `f` within a savepoint of the open transaction `tx`: its changes
/// are undone when it fails, and the transaction's other work stays.
fn in_savepoint<T>(tx: &Connection, f: impl FnOnce() -> Result<T>) -> Result<T> {
    tx.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f() {
        Ok(v) => {
            tx.prepare_cached("RELEASE job")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn audit_in(
    c: &Connection,
    action: &str,
    actor: &str,
    node: Option<NodeId>,
    sha: Option<&str>,
    detail: &str,
) -> Result<()> {
    c.prepare_cached("INSERT INTO audit (at, action, actor, node, sha256, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
        params![now_secs(), action, actor, node.map(|n| n.0), sha, detail],
    )?;
    Ok(())
}

fn upsert_attrs(c: &Connection, node: NodeId, cats: &[Category]) -> Result<()> {
    let mut st = c.prepare_cached(
        "INSERT INTO attrs (node, category, attribute, value, vtext) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (node, category, attribute) DO UPDATE SET value = excluded.value, vtext = excluded.vtext",
    )?;
    for cat in cats {
        for a in &cat.attributes {
            let json =
                serde_json::to_string(&a.value).map_err(|e| EcmError::invalid(e.to_string()))?;
            st.execute(params![node.0, cat.name, a.name, json, a.value.as_text()])?;
        }
    }
    Ok(())
}

/// A blob written to disk (or held for the database) but not yet
/// referenced by metadata.
struct NewBlob {
    sha256: String,
    size: u64,
    /// Content to keep in the database with the version that references
    /// it (at most [`INLINE_BLOB`] bytes); `None`: a blob file.
    inline: Option<Bytes>,
}

impl NewBlob {
    /// Content kept in the database.
    fn inline(sha256: String, data: Bytes) -> Self {
        NewBlob {
            sha256,
            size: data.len() as u64,
            inline: Some(data),
        }
    }

    /// Content in the blob file `sha256`.
    fn file(sha256: String, size: u64) -> Self {
        NewBlob {
            sha256,
            size,
            inline: None,
        }
    }
}

impl Embedded {
    /// Open (or create) the repository in the state directory `state`, and
    /// reconcile its blobs with its metadata.
    pub async fn open(state: impl AsRef<Path>) -> Result<(Self, Reconciled)> {
        let state = state.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(state))
            .await
            .map_err(EcmError::storage)?
    }

    fn open_blocking(state: PathBuf) -> Result<(Self, Reconciled)> {
        std::fs::create_dir_all(&state)?;
        let root = Dir::open_ambient_dir(&state, ambient_authority())?;
        root.create_dir_all("blobs")?;
        root.create_dir_all("tmp")?;
        // The fan-out folders (`blobs/00` to `blobs/ff`) are made as blobs
        // need them: a store of small documents needs none.
        let blobs = root.open_dir("blobs")?;
        let tmp = root.open_dir("tmp")?;
        // Only the process holding this lock reconciles: another process
        // (e.g. `wharf ecm ls` beside a running server) must not remove the
        // blobs the owner has written but not yet committed.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state.join("owner.lock"))?;
        let owner_lock = match lock.try_lock() {
            Ok(()) => Some(lock),
            Err(std::fs::TryLockError::WouldBlock) => None,
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        };
        let conn = Connection::open(state.join("repository.db"))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        // Without a write-ahead log (a file system without shared memory),
        // readers and the writer lock each other out: reads then never run
        // on the calling task.
        let wal = mode.eq_ignore_ascii_case("wal");
        if !wal {
            tracing::warn!(
                mode,
                "the repository could not use a write-ahead log; reads wait for writes"
            );
        }
        // Each commit is fsynced: the flows rely on a stored document staying stored.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Statement journals (one per savepoint of a group commit) stay in
        // memory rather than spilling into temporary files.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Every statement is prepared once and kept (`prepare_cached`).
        conn.set_prepared_statement_cache_capacity(128);
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        // A repository from before keyed events: its audit table gains the
        // key (once, whoever opens it first).
        {
            let tx = rusqlite::Transaction::new_unchecked(
                &conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            let keyed: i64 = tx.query_row(
                "SELECT COUNT(*) FROM pragma_table_info('audit') WHERE name = 'event_key'",
                [],
                |r| r.get(0),
            )?;
            if keyed == 0 {
                tx.execute_batch("ALTER TABLE audit ADD COLUMN event_key TEXT")?;
            }
            tx.execute_batch(
                "CREATE UNIQUE INDEX IF NOT EXISTS audit_key ON audit(event_key) WHERE event_key IS NOT NULL",
            )?;
            tx.commit()?;
        }
        conn.prepare_cached(
            "INSERT OR IGNORE INTO nodes (id, parent, name, subtype, created, modified) \
             VALUES (2000, NULL, 'Enterprise', 141, ?1, ?1)",
        )?
        .execute([now_secs()])?;
        let reader = Connection::open(state.join("repository.db"))?;
        reader.pragma_update(None, "query_only", "ON")?;
        reader.pragma_update(None, "temp_store", "MEMORY")?;
        reader.set_prepared_statement_cache_capacity(128);
        reader.busy_timeout(std::time::Duration::from_secs(10))?;
        let me = Embedded {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                reader: Mutex::new(reader),
                wal,
                state,
                blobs,
                tmp,
                actor: "wharf".into(),
                before_commit: Mutex::new(None),
                pending: Mutex::new(Vec::new()),
                publishing: Mutex::new(HashMap::new()),
                fan_outs: Mutex::new(Default::default()),
                last_commit: Mutex::new(None),
                _owner_lock: owner_lock,
            }),
        };
        let report = if me.inner._owner_lock.is_some() {
            me.reconcile()?
        } else {
            tracing::debug!("another process owns the store; not reconciling");
            Reconciled::default()
        };
        if report != Reconciled::default() {
            tracing::info!(?report, "repository reconciled");
        }
        for sha in &report.missing_blobs {
            tracing::error!(sha, "referenced content is missing from the blob store");
        }
        Ok((me, report))
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state
    }

    /// Copy the write-ahead log into the database file (both fsynced), so
    /// that closing the store has nothing left to write: a process that
    /// checkpoints its stores side by side before it exits waits for the
    /// disk once instead of once per store. Returns whether the whole log
    /// was copied (a reader in the way leaves some behind).
    pub async fn checkpoint(&self) -> Result<bool> {
        self.blocking(|me| {
            let (busy, log, copied): (i64, i64, i64) =
                me.conn()
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?;
            Ok(busy == 0 && log == copied)
        })
        .await
    }

    /// Test hook: run `hook` after a blob is durably written and before the
    /// metadata referencing it is committed (used to crash in that window).
    #[doc(hidden)]
    pub fn set_before_commit_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.inner.before_commit.lock().unwrap() = Some(Arc::new(hook));
    }

    fn reconcile(&self) -> Result<Reconciled> {
        let mut report = Reconciled::default();
        for e in self.inner.tmp.entries()? {
            let e = e?;
            self.inner.tmp.remove_file(e.file_name())?;
            report.temp_files_removed += 1;
        }
        let referenced: std::collections::HashSet<String> = {
            let c = self.conn();
            let mut st = c.prepare_cached("SELECT DISTINCT sha256 FROM versions")?;
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        // Contents kept in the database: those no version references any
        // more (after a delete) go; the others count as present.
        let mut present: std::collections::HashSet<String> = {
            let c = self.conn();
            report.orphan_blobs_removed += c
                .prepare_cached(
                    "DELETE FROM inline_blobs WHERE sha256 NOT IN (SELECT sha256 FROM versions)",
                )?
                .execute([])? as u64;
            let mut st = c.prepare_cached("SELECT sha256 FROM inline_blobs")?;
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for d in self.inner.blobs.entries()? {
            let d = d?;
            if !d.file_type()?.is_dir() {
                continue;
            }
            let sub = self.inner.blobs.open_dir(d.file_name())?;
            for f in sub.entries()? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                if name.ends_with(".part") {
                    sub.remove_file(f.file_name())?;
                    report.temp_files_removed += 1;
                } else if is_sha(&name) && referenced.contains(&name) {
                    present.insert(name);
                } else {
                    sub.remove_file(f.file_name())?;
                    report.orphan_blobs_removed += 1;
                }
            }
        }
        report.missing_blobs = referenced.difference(&present).cloned().collect();
        report.missing_blobs.sort();
        Ok(report)
    }

    /// Where the content of version `version` of `node` (latest when
    /// `None`) is: in the database, or in a blob file (opened).
    async fn content(&self, node: NodeId, version: Option<u32>) -> Result<Content> {
        let (sha, inline) = self
            .lookup(move |c| {
                require_node(c, node)?;
                c.prepare_cached(
                    "SELECT v.sha256, i.data FROM versions v LEFT JOIN inline_blobs i ON i.sha256 = v.sha256 \
                     WHERE v.node = ?1 AND (?2 IS NULL OR v.number = ?2) ORDER BY v.number DESC LIMIT 1",
                )?
                .query_row(params![node.0, version], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
                })
                .optional()?
                .ok_or_else(|| match version {
                    Some(v) => EcmError::not_found(format!("version {v} of node {node}")),
                    None => EcmError::not_found(format!("content of node {node}")),
                })
            })
            .await?;
        if let Some(data) = inline {
            return Ok(Content::Inline(Bytes::from(data)));
        }
        let blobs = self.inner.blobs.try_clone()?;
        let f = tokio::task::spawn_blocking(move || blobs.open(blob_path(&sha)))
            .await
            .map_err(EcmError::storage)??;
        Ok(Content::File(f.into_std()))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back on drop), so a poisoned lock is still usable.
        self.inner.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The read-only connection (poisoned or not, as [`Embedded::conn`]).
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.inner.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` with this store on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Embedded) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(EcmError::storage)?
    }

    /// Run `f` with the connection on a blocking thread.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.blocking(move |me| f(&mut me.conn(), &me.inner.actor))
            .await
    }

    /// Run the read-only query `f` on the reader connection, on a blocking
    /// thread: it sees every change committed before it starts.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.blocking(move |me| in_snapshot(&me.reader(), f)).await
    }

    /// Run the point lookup `f` (a few indexed rows, microseconds) on the
    /// reader connection: right here when the connection is free, which
    /// saves two thread hand-offs; on a blocking thread when another read
    /// holds it (or without a write-ahead log, where a read may wait for a
    /// commit).
    async fn lookup<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if !self.inner.wal {
            return self.read(f).await;
        }
        let f = match self.inner.reader.try_lock() {
            Ok(c) => return in_snapshot(&c, f),
            Err(std::sync::TryLockError::Poisoned(p)) => return in_snapshot(&p.into_inner(), f),
            Err(std::sync::TryLockError::WouldBlock) => f,
        };
        self.read(f).await
    }

    /// Write the content as a blob, checked against `expected` when given.
    async fn write_blob(
        &self,
        content: &dyn ContentSource,
        expected: Option<&str>,
    ) -> Result<NewBlob> {
        let expected = expected.map(str::to_string);
        if let Some(staged) = content.staged() {
            check_expected(staged.sha256(), expected.as_deref())?;
            let staged = staged.clone();
            return self.blocking(move |me| me.put_staged(&staged)).await;
        }
        if let Some(data) = content.in_memory() {
            if data.len() <= INLINE_BLOB {
                // Hashed here (tens of microseconds at most): no file to write.
                return self.put_bytes(data.clone(), expected.as_deref());
            }
            let data = data.clone();
            return self
                .blocking(move |me| me.put_bytes(data, expected.as_deref()))
                .await;
        }
        if let (Some(path), Some(expected)) = (content.local_file(), &expected) {
            let (path, expected) = (path.to_path_buf(), expected.clone());
            let link = content.local_file_immutable();
            return self
                .blocking(move |me| me.put_file(&path, link, &expected))
                .await;
        }
        let mut reader = content.open().await?;
        self.write_blob_from(&mut reader, expected).await
    }

    async fn write_blob_from<R: tokio::io::AsyncRead + Unpin + Send + ?Sized>(
        &self,
        reader: &mut R,
        expected: Option<String>,
    ) -> Result<NewBlob> {
        // Read the beginning: small contents (the common case) are hashed,
        // written, synced and renamed in one blocking step.
        let mut buf = vec![0u8; 64 * 1024];
        let mut head = Vec::new();
        let mut eof = false;
        while head.len() < SMALL_BLOB {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                eof = true;
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        if eof {
            let head = Bytes::from(head);
            return self
                .blocking(move |me| me.put_bytes(head, expected.as_deref()))
                .await;
        }
        let tmp_dir = self.inner.tmp.try_clone()?;
        let tmp_name = temp_name();
        let dir = tmp_dir.try_clone()?;
        let name = tmp_name.clone();
        let file = tokio::task::spawn_blocking(move || dir.create(&name))
            .await
            .map_err(EcmError::storage)??;
        let mut file = tokio::fs::File::from_std(file.into_std());
        let mut hasher = Sha256::new();
        hasher.update(&head);
        let mut size = head.len() as u64;
        let result: Result<()> = async {
            file.write_all(&head).await?;
            drop(std::mem::take(&mut head));
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).await?;
                size += n as u64;
            }
            file.flush().await?;
            file.sync_data().await?;
            Ok(())
        }
        .await;
        drop(file);
        let sha = hex::encode(hasher.finalize());
        let result = result.and_then(|()| check_expected(&sha, expected.as_deref()));
        if let Err(e) = result {
            let _ = tmp_dir.remove_file(&tmp_name);
            return Err(e);
        }
        let sha2 = sha.clone();
        self.blocking(move |me| {
            if me.blob_is_durable(&sha2)? {
                // Same content is already stored: keep the existing blob.
                tmp_dir.remove_file(&tmp_name)?;
                Ok(())
            } else {
                me.fan_out(&sha2)?;
                me.publish(&tmp_dir, Path::new(&tmp_name), &sha2)
            }
        })
        .await?;
        Ok(NewBlob::file(sha, size))
    }

    /// The folder of the blob `sha`, as an ambient path (for [`sync_dir`]).
    fn fan_dir(&self, sha: &str) -> PathBuf {
        self.inner.state.join("blobs").join(&sha[..2])
    }

    /// Make the fan-out folder of the blob `sha` unless it exists; a new
    /// one is made durable (its entry in `blobs` synced) before any blob
    /// is published into it.
    fn fan_out(&self, sha: &str) -> Result<()> {
        let prefix = &sha[..2];
        // Held while making and syncing, so no other store publishes into
        // a folder whose entry may not be on disk yet.
        let mut durable = self.inner.fan_outs.lock().unwrap();
        if durable.contains(prefix) {
            return Ok(());
        }
        match self.inner.blobs.create_dir(prefix) {
            Ok(()) => {}
            // Made before (by an earlier run, maybe one that crashed before
            // syncing it): syncing again is cheap and certain.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        sync_dir(&self.inner.state.join("blobs"))?;
        durable.insert(prefix.to_string());
        Ok(())
    }

    /// Whether the blob `sha` exists durably. One another store has just
    /// renamed into place may still wait for its folder sync; then this
    /// syncs the folder itself, so metadata committed after it can rely on
    /// the blob surviving a crash.
    fn blob_is_durable(&self, sha: &str) -> Result<bool> {
        if !self.inner.blobs.exists(blob_path(sha)) {
            return Ok(false);
        }
        let publishing = self.inner.publishing.lock().unwrap().contains_key(sha);
        if publishing {
            sync_dir(&self.fan_dir(sha))?;
        }
        Ok(true)
    }

    /// Give a written and fsynced temporary file (`tmp` in `from`) its blob
    /// name and sync the blob's folder. While it is in between, the blob is
    /// marked as publishing (see [`Self::blob_is_durable`]).
    fn publish(&self, from: &Dir, tmp: &Path, sha: &str) -> Result<()> {
        *self
            .inner
            .publishing
            .lock()
            .unwrap()
            .entry(sha.to_string())
            .or_default() += 1;
        let unmark = || {
            let mut p = self.inner.publishing.lock().unwrap();
            if let Some(n) = p.get_mut(sha) {
                *n -= 1;
                if *n == 0 {
                    p.remove(sha);
                }
            }
        };
        if let Err(e) = from.rename(tmp, &self.inner.blobs, blob_path(sha)) {
            let _ = from.remove_file(tmp);
            unmark();
            return Err(e.into());
        }
        // After a failed folder sync the blob stays marked, so a store that
        // finds it syncs the folder again rather than trusting it.
        sync_dir(&self.fan_dir(sha))?;
        unmark();
        Ok(())
    }

    /// A temporary name beside the blob `sha` in its folder: the rename
    /// then stays within one directory, spreading directory locks over the
    /// 256 fan-out folders ([`Embedded::open`] removes leftovers).
    fn temp_beside(sha: &str) -> PathBuf {
        Path::new(&sha[..2]).join(format!("{sha}.{}", temp_name()))
    }

    /// Store in-memory content (blocking): hash it; keep it for the
    /// database when it is small, else write it as a blob file unless the
    /// same content is already stored.
    fn put_bytes(&self, data: Bytes, expected: Option<&str>) -> Result<NewBlob> {
        use std::io::Write as _;
        let sha = hex::encode(Sha256::digest(&data));
        check_expected(&sha, expected)?;
        if data.len() <= INLINE_BLOB {
            return Ok(NewBlob::inline(sha, data));
        }
        if !self.blob_is_durable(&sha)? {
            self.fan_out(&sha)?;
            let tmp = Self::temp_beside(&sha);
            self.write_temp(&tmp, |f| Ok(f.write_all(&data)?))?;
            self.publish(&self.inner.blobs, &tmp, &sha)?;
        }
        Ok(NewBlob::file(sha, data.len() as u64))
    }

    /// Create the temporary blob `tmp`, fill it with `fill` and fsync it;
    /// removed again on any failure.
    fn write_temp(
        &self,
        tmp: &Path,
        fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
    ) -> Result<()> {
        let mut f = self.inner.blobs.create(tmp)?.into_std();
        let written = fill(&mut f).and_then(|()| Ok(f.sync_data()?));
        drop(f);
        if written.is_err() {
            let _ = self.inner.blobs.remove_file(tmp);
        }
        written
    }

    /// Store the local file `path` as the blob `expected` (blocking); `link`
    /// when the file is never modified in place again.
    fn put_file(&self, path: &Path, link: bool, expected: &str) -> Result<NewBlob> {
        let blob = |size| NewBlob::file(expected.to_string(), size);
        let mut src = std::fs::File::open(path)?;
        let meta = src.metadata()?;
        if meta.len() <= INLINE_BLOB as u64 {
            // Read one byte more than the limit: a file that grew since is
            // still taken whole (and then checked against `expected`).
            use std::io::Read as _;
            let mut data = Vec::with_capacity(meta.len() as usize);
            (&mut src)
                .take(INLINE_BLOB as u64 + 1)
                .read_to_end(&mut data)?;
            if data.len() <= INLINE_BLOB {
                return self.put_bytes(Bytes::from(data), Some(expected));
            }
            use std::io::Seek as _;
            src.rewind()?;
        }
        if self.blob_is_durable(expected)? {
            // The same content is stored already: verify, write nothing.
            return Ok(blob(hash_check(&mut src, meta.len(), None, expected)?));
        }
        self.fan_out(expected)?;
        let tmp = Self::temp_beside(expected);
        // Not a link to a symbolic link (`path` names the file itself).
        let linkable = || std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
        if link && meta.is_file() && linkable() {
            match std::fs::hard_link(path, self.inner.state.join("blobs").join(&tmp)) {
                Ok(()) => {
                    let size = self.verify_linked(&tmp, meta.len(), expected);
                    if size.is_err() {
                        let _ = self.inner.blobs.remove_file(&tmp);
                    }
                    let size = size?;
                    self.publish(&self.inner.blobs, &tmp, expected)?;
                    return Ok(blob(size));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot hard-link the content; copying it");
                }
            }
        }
        let size = self.copy_file(&mut src, meta.len(), &tmp, expected)?;
        self.publish(&self.inner.blobs, &tmp, expected)?;
        Ok(blob(size))
    }

    /// Store a file this crate staged and hashed (blocking): hard-linked
    /// and fsynced when it is still the file staged and on this file
    /// system, else read and verified like any local file.
    fn put_staged(&self, staged: &crate::Staged) -> Result<NewBlob> {
        let sha = staged.sha256();
        let path = staged.path();
        let unchanged = std::fs::File::open(path)?.metadata()?;
        // Not through a symbolic link: `path` must name the file itself.
        let linkable = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
        if staged.size() <= INLINE_BLOB as u64 || !linkable || !staged.unchanged(&unchanged) {
            return self.put_file(path, false, sha);
        }
        let blob = NewBlob::file(sha.to_string(), staged.size());
        if self.blob_is_durable(sha)? {
            return Ok(blob);
        }
        self.fan_out(sha)?;
        let tmp = Self::temp_beside(sha);
        if let Err(e) = std::fs::hard_link(path, self.inner.state.join("blobs").join(&tmp)) {
            tracing::debug!(error = %e, "cannot hard-link the staged content; copying it");
            return self.put_file(path, false, sha);
        }
        let linked = (|| {
            let f = self.inner.blobs.open(&tmp)?.into_std();
            if !staged.unchanged(&f.metadata()?) {
                return Err(EcmError::invalid(format!(
                    "{} changed while it was being stored",
                    path.display()
                )));
            }
            f.sync_data()?;
            Ok(())
        })();
        if let Err(e) = linked {
            let _ = self.inner.blobs.remove_file(&tmp);
            return Err(e);
        }
        self.publish(&self.inner.blobs, &tmp, sha)?;
        Ok(blob)
    }

    /// Check that the hard-linked temporary blob `tmp` holds `expected`, and
    /// fsync it (its data may not be on disk yet); a large one is synced by
    /// a second thread while it is being hashed. Returns the size.
    fn verify_linked(&self, tmp: &Path, len: u64, expected: &str) -> Result<u64> {
        let mut f = self.inner.blobs.open(tmp)?.into_std();
        if len < LARGE_FILE {
            let size = hash_check(&mut f, len, None, expected)?;
            f.sync_data()?;
            return Ok(size);
        }
        let syncing = f.try_clone()?;
        std::thread::scope(|scope| {
            let synced = scope.spawn(move || syncing.sync_data());
            let size = hash_check(&mut f, len, None, expected);
            let synced = synced
                .join()
                .map_err(|_| EcmError::storage("the syncing thread panicked"))?;
            let size = size?;
            synced?;
            Ok(size)
        })
    }

    /// Copy the local file `src` (of about `len` bytes) to the new temporary
    /// blob `tmp`, verifying it holds `expected`, and fsync it; removed again
    /// on any failure. Returns the size.
    fn copy_file(
        &self,
        src: &mut std::fs::File,
        len: u64,
        tmp: &Path,
        expected: &str,
    ) -> Result<u64> {
        if len < LARGE_FILE {
            let mut size = 0;
            self.write_temp(tmp, |dst| {
                size = hash_check(src, len, Some(dst), expected)?;
                Ok(())
            })?;
            return Ok(size);
        }
        let dst = self
            .inner
            .blobs
            .open_with(
                tmp,
                cap_std::fs::OpenOptions::new().write(true).create_new(true),
            )?
            .into_std();
        let copied = copy_pipelined(src, dst);
        if copied.is_err() {
            let _ = self.inner.blobs.remove_file(tmp);
        }
        let (sha, size) = copied?;
        if let Err(e) = check_expected(&sha, Some(expected)) {
            let _ = self.inner.blobs.remove_file(tmp);
            return Err(e);
        }
        Ok(size)
    }

    fn run_hook(&self) {
        let hook = self.inner.before_commit.lock().unwrap().clone();
        if let Some(h) = hook {
            h();
        }
    }

    /// Create a document from a one-shot reader, as Content Server does: an
    /// existing name is a [`ErrorKind::NameCollision`] (used by the facade).
    pub async fn create_from_reader<R: tokio::io::AsyncRead + Unpin + Send + ?Sized>(
        &self,
        parent: NodeId,
        name: &str,
        description: Option<String>,
        mime_type: &str,
        categories: Vec<Category>,
        reader: &mut R,
    ) -> Result<Stored> {
        check_name(name)?;
        let blob = self.write_blob_from(reader, None).await?;
        self.run_hook();
        let doc = NewDocument {
            parent,
            name: name.to_string(),
            description,
            mime_type: mime_type.to_string(),
            sha256: blob.sha256.clone(),
            categories,
            policy: CollisionPolicy::Reject,
        };
        self.commit_store(doc, blob, true, None).await
    }

    /// Add a version from a one-shot reader (used by the facade).
    pub async fn add_version_from_reader<R: tokio::io::AsyncRead + Unpin + Send + ?Sized>(
        &self,
        node: NodeId,
        file_name: Option<String>,
        mime_type: &str,
        description: Option<String>,
        reader: &mut R,
    ) -> Result<Stored> {
        let n = self.node(node).await?;
        if n.kind != NodeKind::Document {
            return Err(EcmError::invalid(format!("node {node} is not a document")));
        }
        let blob = self.write_blob_from(reader, None).await?;
        self.run_hook();
        let doc = NewDocument {
            parent: n.parent.unwrap_or(NodeId::ENTERPRISE),
            name: n.name.clone(),
            description,
            mime_type: mime_type.to_string(),
            sha256: blob.sha256.clone(),
            categories: Vec::new(),
            policy: CollisionPolicy::AddVersion,
        };
        let file_name = file_name.unwrap_or(n.name.clone());
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            let v = add_version(&tx, node, &doc, &blob, &file_name)?;
            audit_in(
                &tx,
                "version-added",
                actor,
                Some(node),
                Some(&blob.sha256),
                &format!("{} v{v}", doc.name),
            )?;
            tx.commit()?;
            Ok(Stored {
                node,
                name: doc.name,
                version: v,
                outcome: StoreOutcome::VersionAdded,
            })
        })
        .await
    }

    /// Store `doc` with `content`, and `event` in the same commit.
    async fn store_with(
        &self,
        doc: &NewDocument,
        content: &dyn ContentSource,
        event: Option<Box<AuditEvent>>,
    ) -> Result<Stored> {
        check_name(&doc.name)?;
        if !is_sha(&doc.sha256) {
            return Err(EcmError::invalid("sha256 must be 64 lower-case hex digits"));
        }
        // Content that does not match the declared checksum is refused
        // before it gets a blob name.
        let blob = self.write_blob(content, Some(&doc.sha256)).await?;
        self.run_hook();
        self.commit_store(doc.clone(), blob, false, event).await
    }

    /// Queue a store for the next group commit and wait for its outcome.
    async fn commit_store(
        &self,
        doc: NewDocument,
        blob: NewBlob,
        strict: bool,
        event: Option<Box<AuditEvent>>,
    ) -> Result<Stored> {
        self.commit_job("store", |reply| Job::Store {
            doc,
            blob,
            strict,
            event,
            reply,
        })
        .await
    }

    /// Queue `job` for the next group commit and see that it is run.
    ///
    /// Jobs arriving while a commit is in progress are committed together
    /// in one transaction (one WAL fsync), each inside its own savepoint so
    /// one failing job does not affect the others.
    async fn group_commit(&self, job: Job) -> Result<()> {
        self.inner.pending.lock().unwrap().push(job);
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.drain_jobs())
            .await
            .map_err(EcmError::storage)
    }

    /// The job `make` builds around its reply, group-committed, and its
    /// answer; `what` names it if the committing thread drops it.
    async fn commit_job<T>(
        &self,
        what: &str,
        make: impl FnOnce(tokio::sync::oneshot::Sender<Result<T>>) -> Job,
    ) -> Result<T> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.group_commit(make(reply)).await?;
        rx.await
            .map_err(|_| EcmError::storage(format!("{what} abandoned by the committing thread")))?
    }

    fn drain_jobs(&self) {
        let mut c = self.conn();
        // Another thread may have committed our job already.
        if self.inner.pending.lock().unwrap().is_empty() {
            return;
        }
        let busy = self
            .inner
            .last_commit
            .lock()
            .unwrap()
            .is_some_and(|at| at.elapsed() < BUSY_WITHIN);
        if busy {
            // Commits follow each other closely: let more jobs arrive and
            // share this commit's fsync (a group commit's delay).
            std::thread::sleep(COMMIT_DELAY);
        }
        let jobs = std::mem::take(&mut *self.inner.pending.lock().unwrap());
        let actor = self.inner.actor.clone();
        let tx = match c.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                let e = EcmError::from(e);
                for j in jobs {
                    j.refuse(&e);
                }
                return;
            }
        };
        let mut answers = Vec::with_capacity(jobs.len());
        let mut aborted = None;
        for job in jobs {
            // A failure SQLite answers by rolling the whole transaction back
            // (a full disk, an I/O error) ends the group: a later savepoint
            // would otherwise start and commit a transaction of its own.
            if aborted.is_none() && tx.is_autocommit() {
                aborted = Some(EcmError::storage(
                    "the group commit's transaction was rolled back",
                ));
            }
            match &aborted {
                Some(e) => job.refuse(e),
                None => answers.push(job.run(&tx, &actor)),
            }
        }
        let failed = match aborted {
            Some(e) => Some(e),
            None => tx.commit().err().map(EcmError::from),
        };
        *self.inner.last_commit.lock().unwrap() = Some(std::time::Instant::now());
        for answer in answers {
            answer(failed.as_ref());
        }
    }

    /// Define how long records of an RM classification are retained
    /// (`None`: indefinitely, which is also the rule for undefined classes).
    pub async fn define_rm_class(&self, code: &str, retain_days: Option<u32>) -> Result<()> {
        let code = code.to_string();
        self.db(move |c, _| {
            c.prepare_cached(
                "INSERT INTO rm_classes (code, retain_days) VALUES (?1, ?2) \
                 ON CONFLICT (code) DO UPDATE SET retain_days = excluded.retain_days",
            )?
            .execute(params![code, retain_days])?;
            Ok(())
        })
        .await
    }

    /// The id of a hold by name, creating the hold when `create` is set.
    pub async fn hold_id(&self, name: &str, create: bool) -> Result<Option<i64>> {
        let name = name.to_string();
        self.db(move |c, _| {
            if create {
                c.prepare_cached("INSERT OR IGNORE INTO holds (name) VALUES (?1)")?
                    .execute([&name])?;
            }
            Ok(c.prepare_cached("SELECT id FROM holds WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// The name of a hold by id.
    pub async fn hold_name(&self, id: i64) -> Result<String> {
        self.lookup(move |c| {
            c.prepare_cached("SELECT name FROM holds WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| EcmError::not_found(format!("hold {id}")))
        })
        .await
    }

    /// The holds on a node.
    pub async fn holds(&self, node: NodeId) -> Result<Vec<String>> {
        self.lookup(move |c| {
            let mut st = c.prepare_cached(
                "SELECT h.name FROM node_holds nh JOIN holds h ON h.id = nh.hold WHERE nh.node = ?1 ORDER BY h.name",
            )?;
            Ok(st
                .query_map([node.0], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// A node's RM classification.
    pub async fn rm_class(&self, node: NodeId) -> Result<Option<String>> {
        self.lookup(move |c| {
            c.prepare_cached("SELECT rm_class FROM nodes WHERE id = ?1")?
                .query_row([node.0], |r| r.get(0))
                .optional()?
                .ok_or_else(|| EcmError::not_found(format!("node {node}")))
        })
        .await
    }

    /// The child of `parent` named `name`.
    pub async fn child_by_name(&self, parent: NodeId, name: &str) -> Result<Option<Node>> {
        let name = name.to_string();
        self.lookup(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {NODE_COLS} FROM nodes n WHERE n.parent = ?1 AND n.name = ?2"
            ))?
            .query_row(params![parent.0, name], node_row)
            .optional()?)
        })
        .await
    }

    /// Create a folder (error if the name exists).
    pub async fn create_folder(&self, parent: NodeId, name: &str) -> Result<NodeId> {
        check_name(name)?;
        let name = name.to_string();
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            let id = insert_container(&tx, parent, &name, 0, None)?;
            audit_in(&tx, "folder-created", actor, Some(id), None, &name)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    /// Rename or move a node.
    pub async fn update_node(
        &self,
        node: NodeId,
        name: Option<String>,
        parent: Option<NodeId>,
    ) -> Result<Node> {
        if let Some(n) = &name {
            check_name(n)?;
        }
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            let cur = get_node(&tx, node)?;
            if let Some(p) = parent {
                let pn = get_node(&tx, p)?;
                if !pn.kind.is_container() {
                    return Err(EcmError::invalid(format!("node {p} is not a folder")));
                }
            }
            let new_name = name.unwrap_or(cur.name.clone());
            let new_parent = parent.or(cur.parent);
            let r = tx
                .prepare_cached(
                    "UPDATE nodes SET name = ?1, parent = ?2, modified = ?3 WHERE id = ?4",
                )?
                .execute(params![
                    new_name,
                    new_parent.map(|p| p.0),
                    now_secs(),
                    node.0
                ]);
            map_unique(r, &new_name)?;
            audit_in(&tx, "updated", actor, Some(node), None, &new_name)?;
            tx.commit()?;
            get_node(c, node)
        })
        .await
    }

    /// Every workflow and review task, newest first.
    pub async fn workflows(&self) -> Result<Vec<WorkflowRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, workflow, title, comment, assignee, documents, status, created FROM workflows ORDER BY id DESC",
            )?;
            let rows = st.query_map([], |r| {
                let docs: String = r.get(5)?;
                Ok(WorkflowRecord {
                    id: WorkflowId(r.get(0)?),
                    workflow: r.get(1)?,
                    title: r.get(2)?,
                    comment: r.get(3)?,
                    assignee: r.get(4)?,
                    documents: serde_json::from_str(&docs).unwrap_or_default(),
                    status: r.get(6)?,
                    created: rfc3339(r.get(7)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// The ids of the documents matching a query, with paging.
    pub async fn search_page(
        &self,
        q: &SearchQuery,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<Node>, u64)> {
        let q = q.clone();
        self.read(move |c| search_in(c, &q, offset, limit)).await
    }

    /// Children with paging and an optional exact name filter; returns the
    /// page and the total count.
    pub async fn children_page(
        &self,
        parent: NodeId,
        name: Option<String>,
        subtype: Option<i64>,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<Node>, u64)> {
        self.read(move |c| {
            get_node(c, parent)?;
            let total: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM nodes n WHERE n.parent = ?1 AND (?2 IS NULL OR n.name = ?2) \
                     AND (?3 IS NULL OR n.subtype = ?3)",
                )?
                .query_row(params![parent.0, name, subtype], |r| r.get(0))?;
            let mut st = c.prepare_cached(&format!(
                "SELECT {NODE_COLS} FROM nodes n WHERE n.parent = ?1 AND (?2 IS NULL OR n.name = ?2) \
                 AND (?3 IS NULL OR n.subtype = ?3) ORDER BY n.name LIMIT ?4 OFFSET ?5"
            ))?;
            let rows = st
                .query_map(params![parent.0, name, subtype, limit, offset], node_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total as u64))
        })
        .await
    }

    /// The path of a node from the Enterprise volume, for display.
    pub async fn path_of(&self, node: NodeId) -> Result<String> {
        self.read(move |c| {
            let mut parts = Vec::new();
            let mut cur = Some(node);
            while let Some(id) = cur {
                let n = get_node(c, id)?;
                if n.kind != NodeKind::Volume {
                    parts.push(n.name);
                }
                cur = n.parent;
                if parts.len() > 1000 {
                    break;
                }
            }
            parts.reverse();
            Ok(format!("/{}", parts.join("/")))
        })
        .await
    }

    /// Resolve a `/a/b/c` path (from the Enterprise volume) to a node.
    pub async fn resolve_path(&self, path: &str) -> Result<NodeId> {
        let mut cur = NodeId::ENTERPRISE;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            cur = self
                .child_by_name(cur, seg)
                .await?
                .ok_or_else(|| EcmError::not_found(format!("path {path:?}")))?
                .id;
        }
        Ok(cur)
    }

    /// Start a workflow with a known workflow name (used by the facade).
    fn insert_workflow(c: &Connection, actor: &str, r: &WorkflowStart) -> Result<WorkflowId> {
        for d in &r.documents {
            get_node(c, *d)?;
        }
        let docs = serde_json::to_string(&r.documents).map_err(EcmError::storage)?;
        c.prepare_cached(
            "INSERT INTO workflows (workflow, title, comment, assignee, documents, status, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6)",
        )?
        .execute(params![r.workflow, r.title, r.comment, r.assignee, docs, now_secs()])?;
        let id = c.last_insert_rowid();
        for d in &r.documents {
            audit_in(
                c,
                "workflow-started",
                actor,
                Some(*d),
                None,
                &format!("{} #{id}: {}", r.workflow, r.title),
            )?;
        }
        if r.documents.is_empty() {
            audit_in(
                c,
                "workflow-started",
                actor,
                None,
                None,
                &format!("{} #{id}: {}", r.workflow, r.title),
            )?;
        }
        Ok(WorkflowId(id))
    }
}

fn map_unique(r: rusqlite::Result<usize>, name: &str) -> Result<usize> {
    match r {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Err(EcmError::new(
                ErrorKind::NameCollision,
                format!("an item named {name:?} already exists in the folder"),
            ))
        }
        other => Ok(other?),
    }
}

fn insert_container(
    c: &Connection,
    parent: NodeId,
    name: &str,
    subtype: i64,
    ws: Option<(&str, &str)>,
) -> Result<NodeId> {
    let p = get_node(c, parent)?;
    if !p.kind.is_container() {
        return Err(EcmError::invalid(format!("node {parent} is not a folder")));
    }
    let now = now_secs();
    let r = c
        .prepare_cached(
            "INSERT INTO nodes (parent, name, subtype, created, modified, ws_type, business_id) \
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
        )?
        .execute(params![
            parent.0,
            name,
            subtype,
            now,
            ws.map(|w| w.0),
            ws.map(|w| w.1)
        ]);
    map_unique(r, name)?;
    Ok(NodeId(c.last_insert_rowid()))
}

fn latest_sha(c: &Connection, node: NodeId) -> Result<Option<String>> {
    Ok(c.prepare_cached(
        "SELECT sha256 FROM versions WHERE node = ?1 ORDER BY number DESC LIMIT 1",
    )?
    .query_row([node.0], |r| r.get(0))
    .optional()?)
}

fn child_id(c: &Connection, parent: NodeId, name: &str) -> Result<Option<(NodeId, i64)>> {
    Ok(
        c.prepare_cached("SELECT id, subtype FROM nodes WHERE parent = ?1 AND name = ?2")?
            .query_row(params![parent.0, name], |r| {
                Ok((NodeId(r.get(0)?), r.get(1)?))
            })
            .optional()?,
    )
}

fn add_version(
    c: &Connection,
    node: NodeId,
    doc: &NewDocument,
    blob: &NewBlob,
    name: &str,
) -> Result<u32> {
    let n: i64 = c
        .prepare_cached("SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE node = ?1")?
        .query_row([node.0], |r| r.get(0))?;
    c.prepare_cached(
        "INSERT INTO versions (node, number, sha256, size, mime, file_name, description, created) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        node.0,
        n,
        blob.sha256,
        blob.size as i64,
        doc.mime_type,
        name,
        doc.description,
        now_secs()
    ])?;
    if let Some(data) = &blob.inline {
        c.prepare_cached("INSERT OR IGNORE INTO inline_blobs (sha256, data) VALUES (?1, ?2)")?
            .execute(params![blob.sha256, &data[..]])?;
    }
    c.prepare_cached("UPDATE nodes SET modified = ?1 WHERE id = ?2")?
        .execute(params![now_secs(), node.0])?;
    Ok(n as u32)
}

/// Store within an open transaction (the caller commits).
fn store_tx(
    tx: &Connection,
    actor: &str,
    doc: &NewDocument,
    blob: &NewBlob,
    strict: bool,
) -> Result<Stored> {
    let parent = get_node(tx, doc.parent)?;
    if !parent.kind.is_container() {
        return Err(EcmError::invalid(format!(
            "node {} is not a folder",
            doc.parent
        )));
    }
    let mut attempt = 1u32;
    let stored = loop {
        let name = if attempt == 1 {
            doc.name.clone()
        } else {
            suffixed_name(&doc.name, attempt)
        };
        match child_id(tx, doc.parent, &name)? {
            None => {
                let now = now_secs();
                tx.prepare_cached(
                    "INSERT INTO nodes (parent, name, subtype, description, created, modified) \
                     VALUES (?1, ?2, 144, ?3, ?4, ?4)",
                )?
                .execute(params![doc.parent.0, name, doc.description, now])?;
                let id = NodeId(tx.last_insert_rowid());
                let v = add_version(tx, id, doc, blob, &name)?;
                upsert_attrs(tx, id, &doc.categories)?;
                audit_in(tx, "created", actor, Some(id), Some(&blob.sha256), &name)?;
                break Stored {
                    node: id,
                    name,
                    version: v,
                    outcome: StoreOutcome::Created,
                };
            }
            Some(_) if strict => return Err(collision(&name)),
            Some((id, 144)) => {
                if latest_sha(tx, id)?.as_deref() == Some(blob.sha256.as_str()) {
                    let v: i64 = tx
                        .prepare_cached("SELECT MAX(number) FROM versions WHERE node = ?1")?
                        .query_row([id.0], |r| r.get(0))?;
                    break Stored {
                        node: id,
                        name,
                        version: v as u32,
                        outcome: StoreOutcome::AlreadyPresent,
                    };
                }
                match doc.policy {
                    CollisionPolicy::AddVersion if attempt == 1 => {
                        let v = add_version(tx, id, doc, blob, &name)?;
                        upsert_attrs(tx, id, &doc.categories)?;
                        audit_in(
                            tx,
                            "version-added",
                            actor,
                            Some(id),
                            Some(&blob.sha256),
                            &format!("{name} v{v}"),
                        )?;
                        break Stored {
                            node: id,
                            name,
                            version: v,
                            outcome: StoreOutcome::VersionAdded,
                        };
                    }
                    CollisionPolicy::NewDocument => {}
                    _ => return Err(collision(&name)),
                }
            }
            Some(_) => {
                if doc.policy != CollisionPolicy::NewDocument {
                    return Err(collision(&name));
                }
            }
        }
        attempt += 1;
        if attempt > 10_000 {
            return Err(collision(&doc.name));
        }
    };
    Ok(stored)
}

fn collision(name: &str) -> EcmError {
    EcmError::new(
        ErrorKind::NameCollision,
        format!("an item named {name:?} already exists in the folder"),
    )
}

fn search_in(c: &Connection, q: &SearchQuery, offset: u32, limit: u32) -> Result<(Vec<Node>, u64)> {
    let mut sql = String::from("FROM nodes n WHERE n.subtype = 144");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(loc) = q.location {
        args.push(loc.0.into());
        sql.push_str(&format!(
            " AND n.parent IN (WITH RECURSIVE sub(id) AS (SELECT ?{i} UNION SELECT m.id FROM nodes m JOIN sub ON m.parent = sub.id) SELECT id FROM sub)",
            i = args.len()
        ));
    }
    if let Some(pat) = &q.name {
        let like: String = pat
            .chars()
            .flat_map(|ch| match ch {
                '*' => vec!['%'],
                '%' | '_' | '\\' => vec!['\\', ch],
                c => vec![c],
            })
            .collect();
        args.push(like.into());
        sql.push_str(&format!(" AND n.name LIKE ?{} ESCAPE '\\'", args.len()));
    }
    for f in &q.attributes {
        args.push(f.category.clone().into());
        args.push(f.attribute.clone().into());
        args.push(f.value.clone().into());
        let i = args.len();
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM attrs a WHERE a.node = n.id AND a.category = ?{} AND a.attribute = ?{} AND a.vtext = ?{})",
            i - 2,
            i - 1,
            i
        ));
    }
    // Prepared afresh: the text varies with the query and the page, and
    // would crowd the stores' statements out of the cache.
    let total: i64 = c
        .prepare(&format!("SELECT COUNT(*) {sql}"))?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
    let mut st = c.prepare(&format!(
        "SELECT {NODE_COLS} {sql} ORDER BY n.id LIMIT {limit} OFFSET {offset}"
    ))?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args.iter()), node_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((rows, total as u64))
}

fn read_categories(c: &Connection, node: NodeId) -> Result<Vec<Category>> {
    require_node(c, node)?;
    let mut st = c.prepare_cached(
        "SELECT category, attribute, value FROM attrs WHERE node = ?1 ORDER BY rowid",
    )?;
    let mut out: Vec<Category> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let rows = st.query_map([node.0], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (cat, attr, json) = row?;
        let value: AttributeValue = serde_json::from_str(&json)
            .map_err(|e| EcmError::storage(format!("attribute value: {e}")))?;
        let i = *index.entry(cat.clone()).or_insert_with(|| {
            out.push(Category {
                name: cat.clone(),
                attributes: Vec::new(),
            });
            out.len() - 1
        });
        out[i].attributes.push(Attribute { name: attr, value });
    }
    Ok(out)
}

/// A version's content, as [`Embedded::content`] finds it.
enum Content {
    /// Kept in the database.
    Inline(Bytes),
    /// A blob file, open at its start.
    File(std::fs::File),
}

impl Repository for Embedded {
    async fn ensure_folder(&self, parent: NodeId, path: &[String]) -> Result<NodeId> {
        for seg in path {
            check_name(seg)?;
        }
        let path = path.to_vec();
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            let mut cur = parent;
            get_node(&tx, cur)?;
            for seg in &path {
                cur = match child_id(&tx, cur, seg)? {
                    Some((id, st)) if NodeKind::from_subtype(st).is_container() => id,
                    Some(_) => return Err(collision(seg)),
                    None => {
                        let id = insert_container(&tx, cur, seg, 0, None)?;
                        audit_in(&tx, "folder-created", actor, Some(id), None, seg)?;
                        id
                    }
                };
            }
            tx.commit()?;
            Ok(cur)
        })
        .await
    }

    async fn create_workspace(&self, parent: NodeId, spec: &WorkspaceSpec) -> Result<NodeId> {
        check_name(&spec.name)?;
        let spec = spec.clone();
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            let id = insert_container(
                &tx,
                parent,
                &spec.name,
                848,
                Some((&spec.workspace_type, &spec.business_id)),
            )?;
            audit_in(
                &tx,
                "workspace-created",
                actor,
                Some(id),
                None,
                &format!("{} {}", spec.workspace_type, spec.business_id),
            )?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn find_workspace(
        &self,
        workspace_type: &str,
        business_id: &str,
    ) -> Result<Option<Node>> {
        let (t, b) = (workspace_type.to_string(), business_id.to_string());
        self.lookup(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {NODE_COLS} FROM nodes n WHERE n.subtype = 848 AND n.ws_type = ?1 \
                 AND n.business_id = ?2 ORDER BY n.id LIMIT 1"
            ))?
            .query_row(params![t, b], node_row)
            .optional()?)
        })
        .await
    }

    async fn store_document(
        &self,
        doc: &NewDocument,
        content: &dyn ContentSource,
    ) -> Result<Stored> {
        self.store_with(doc, content, None).await
    }

    async fn store_document_recorded(
        &self,
        doc: &NewDocument,
        content: &dyn ContentSource,
        event: &AuditEvent,
    ) -> Result<Stored> {
        // One transaction for both: the event is there exactly when the
        // stored document is.
        self.store_with(doc, content, Some(Box::new(event.clone())))
            .await
    }

    async fn set_categories(&self, node: NodeId, categories: &[Category]) -> Result<()> {
        let cats = categories.to_vec();
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            require_node(&tx, node)?;
            upsert_attrs(&tx, node, &cats)?;
            let names: Vec<&str> = cats.iter().map(|c| c.name.as_str()).collect();
            audit_in(
                &tx,
                "categories-set",
                actor,
                Some(node),
                None,
                &names.join(", "),
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn categories(&self, node: NodeId) -> Result<Vec<Category>> {
        self.lookup(move |c| read_categories(c, node)).await
    }

    async fn set_permissions(&self, node: NodeId, grants: &[Grant]) -> Result<()> {
        let grants = grants.to_vec();
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            require_node(&tx, node)?;
            for g in &grants {
                let (kind, name) = principal_key(&g.principal);
                let mut rights = g.rights.clone();
                rights.sort();
                rights.dedup();
                let list: Vec<&str> = rights.iter().map(|r| r.as_str()).collect();
                tx.prepare_cached(
                    "INSERT INTO grants (node, kind, name, rights) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (node, kind, name) DO UPDATE SET rights = excluded.rights",
                )?
                .execute(params![node.0, kind, name, list.join(",")])?;
                audit_in(
                    &tx,
                    "permissions-set",
                    actor,
                    Some(node),
                    None,
                    &format!("{kind} {name}: {}", list.join(",")),
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn permissions(&self, node: NodeId) -> Result<Vec<Grant>> {
        self.lookup(move |c| {
            require_node(c, node)?;
            let mut st = c.prepare_cached(
                "SELECT kind, name, rights FROM grants WHERE node = ?1 ORDER BY rowid",
            )?;
            let rows = st.query_map([node.0], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, name, rights) = row?;
                out.push(Grant {
                    principal: principal_from(&kind, name),
                    rights: rights.split(',').filter_map(Right::parse).collect(),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn classify(&self, node: NodeId, rm_class: &str) -> Result<()> {
        if rm_class.is_empty() || rm_class.chars().any(char::is_control) {
            return Err(EcmError::invalid("invalid RM classification code"));
        }
        let code = rm_class.to_string();
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            require_node(&tx, node)?;
            tx.prepare_cached("UPDATE nodes SET rm_class = ?1, classified_at = ?2 WHERE id = ?3")?
                .execute(params![code, now_secs(), node.0])?;
            audit_in(&tx, "classified", actor, Some(node), None, &code)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn apply_hold(&self, node: NodeId, hold: &str) -> Result<()> {
        if hold.is_empty() || hold.chars().any(char::is_control) {
            return Err(EcmError::invalid("invalid hold name"));
        }
        let hold = hold.to_string();
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            require_node(&tx, node)?;
            tx.prepare_cached("INSERT OR IGNORE INTO holds (name) VALUES (?1)")?
                .execute([&hold])?;
            tx.prepare_cached(
                "INSERT OR IGNORE INTO node_holds (node, hold) SELECT ?1, id FROM holds WHERE name = ?2",
            )?
            .execute(params![node.0, hold])?;
            audit_in(&tx, "hold-applied", actor, Some(node), None, &hold)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn start_workflow(&self, request: &WorkflowStart) -> Result<WorkflowId> {
        let r = request.clone();
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            let id = Embedded::insert_workflow(&tx, actor, &r)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<Node>> {
        let limit = query.limit.unwrap_or(1000);
        Ok(self.search_page(query, 0, limit).await?.0)
    }

    async fn download(&self, node: NodeId, version: Option<u32>) -> Result<ByteStream> {
        Ok(match self.content(node, version).await? {
            Content::Inline(data) => {
                let chunk: Result<Bytes> = Ok(data);
                Box::pin(futures::stream::iter([chunk]))
            }
            // Read ahead on a thread of its own, through the page cache: a
            // version is often read twice in a row (a plugin's look, then
            // the checked upload), and the second read should not go to
            // disk.
            Content::File(f) => crate::direct::chunks(f, false),
        })
    }

    async fn download_hashed(&self, node: NodeId, version: Option<u32>) -> Result<HashedDownload> {
        Ok(match self.content(node, version).await? {
            Content::Inline(data) => HashedDownload::of_bytes(data),
            // Hashed by the thread that reads the file: no task of its own
            // between the reads and the consumer.
            Content::File(f) => crate::direct::hashed_chunks(f),
        })
    }

    async fn node(&self, node: NodeId) -> Result<Node> {
        self.lookup(move |c| get_node(c, node)).await
    }

    async fn versions(&self, node: NodeId) -> Result<Vec<Version>> {
        self.lookup(move |c| {
            require_node(c, node)?;
            let mut st = c.prepare_cached(
                "SELECT number, size, mime, file_name, sha256, created, description FROM versions WHERE node = ?1 ORDER BY number",
            )?;
            let rows = st.query_map([node.0], |r| {
                Ok(Version {
                    number: r.get::<_, i64>(0)? as u32,
                    size: r.get::<_, i64>(1)? as u64,
                    mime_type: r.get(2)?,
                    file_name: r.get(3)?,
                    sha256: r.get(4)?,
                    created: rfc3339(r.get(5)?),
                    description: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn children(&self, node: NodeId) -> Result<Vec<Node>> {
        Ok(self.children_page(node, None, None, 0, u32::MAX).await?.0)
    }

    async fn delete(&self, node: NodeId) -> Result<()> {
        if node == NodeId::ENTERPRISE {
            return Err(EcmError::new(
                ErrorKind::PermissionDenied,
                "the Enterprise volume cannot be deleted",
            ));
        }
        self.db(move |c, actor| {
            let tx = c.transaction()?;
            let n = get_node(&tx, node)?;
            let ids: Vec<i64> = {
                let mut st = tx.prepare_cached(
                    "WITH RECURSIVE sub(id) AS (SELECT ?1 UNION SELECT m.id FROM nodes m JOIN sub ON m.parent = sub.id) SELECT id FROM sub",
                )?;
                st.query_map([node.0], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let now = now_secs();
            for id in &ids {
                let held: Option<String> = tx
                    .prepare_cached(
                        "SELECT h.name FROM node_holds nh JOIN holds h ON h.id = nh.hold \
                         WHERE nh.node = ?1 LIMIT 1",
                    )?
                    .query_row([id], |r| r.get(0))
                    .optional()?;
                if let Some(h) = held {
                    return Err(EcmError::new(
                        ErrorKind::HeldOrRetained,
                        format!("node {id} is under legal hold {h:?}"),
                    ));
                }
                let retained: Option<(String, Option<i64>, i64)> = tx
                    .prepare_cached(
                        "SELECT n.rm_class, r.retain_days, n.classified_at FROM nodes n \
                         LEFT JOIN rm_classes r ON r.code = n.rm_class WHERE n.id = ?1 AND n.rm_class IS NOT NULL",
                    )?
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                if let Some((code, days, at)) = retained {
                    let until = days.map(|d| at + d * 86_400);
                    if until.is_none_or(|u| now < u) {
                        return Err(EcmError::new(
                            ErrorKind::HeldOrRetained,
                            format!(
                                "node {id} is retained under RM class {code:?} until {}",
                                until.map(rfc3339).unwrap_or_else(|| "further notice".into())
                            ),
                        ));
                    }
                }
            }
            // Children first so the parent references stay valid.
            for id in ids.iter().rev() {
                tx.prepare_cached("DELETE FROM node_holds WHERE node = ?1")?
                    .execute([id])?;
                tx.prepare_cached("DELETE FROM nodes WHERE id = ?1")?
                    .execute([id])?;
            }
            audit_in(&tx, "deleted", actor, Some(node), None, &n.name)?;
            tx.commit()?;
            // Content is removed by the next reconcile (blobs may be shared).
            Ok(())
        })
        .await
    }

    async fn record_event(&self, event: &AuditEvent) -> Result<()> {
        self.commit_job("event", |reply| Job::Event {
            event: event.clone(),
            reply,
        })
        .await
    }

    async fn record_events(&self, events: &[KeyedEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.commit_job("events", |reply| Job::Events {
            events: events.to_vec(),
            reply,
        })
        .await
    }

    async fn audit(&self, node: Option<NodeId>) -> Result<Vec<AuditRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, at, action, actor, node, sha256, detail FROM audit WHERE (?1 IS NULL OR node = ?1) ORDER BY id",
            )?;
            let rows = st.query_map([node.map(|n| n.0)], |r| {
                Ok(AuditRecord {
                    id: r.get(0)?,
                    at: rfc3339(r.get(1)?),
                    event: AuditEvent {
                        action: r.get(2)?,
                        actor: r.get(3)?,
                        node: r.get::<_, Option<i64>>(4)?.map(NodeId),
                        sha256: r.get(5)?,
                        detail: r.get(6)?,
                    },
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_one(repo: &Embedded) -> NodeId {
        let data = b"%PDF-1.7 looked up".to_vec();
        let doc = NewDocument {
            parent: NodeId::ENTERPRISE,
            name: "looked-up.pdf".into(),
            description: None,
            mime_type: "application/pdf".into(),
            sha256: hex::encode(Sha256::digest(&data)),
            categories: Vec::new(),
            policy: CollisionPolicy::Reject,
        };
        repo.store_document(&doc, &crate::BytesSource(data.into()))
            .await
            .unwrap()
            .node
    }

    #[tokio::test]
    async fn a_hashed_download_gives_the_recorded_checksum_inline_or_not() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = Embedded::open(dir.path()).await.unwrap();
        for (name, len) in [("small.bin", 100), ("large.bin", 3 * INLINE_BLOB + 5)] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let sha = hex::encode(Sha256::digest(&data));
            let doc = NewDocument {
                parent: NodeId::ENTERPRISE,
                name: name.into(),
                description: None,
                mime_type: "application/octet-stream".into(),
                sha256: sha.clone(),
                categories: Vec::new(),
                policy: CollisionPolicy::Reject,
            };
            let node = repo
                .store_document(&doc, &crate::BytesSource(data.clone().into()))
                .await
                .unwrap()
                .node;
            let mut d = repo.download_hashed(node, None).await.unwrap();
            let mut back = Vec::new();
            while let Some(c) = d.bytes.next().await {
                back.extend_from_slice(&c.unwrap());
            }
            assert_eq!(back, data, "{name}");
            assert_eq!(d.digest.await.unwrap(), (sha, len as u64), "{name}");
        }
    }

    #[tokio::test]
    async fn a_checkpoint_leaves_the_metadata_in_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = Embedded::open(dir.path()).await.unwrap();
        let node = store_one(&repo).await;
        let in_file_alone = || {
            let copy = tempfile::tempdir().unwrap();
            let file = copy.path().join("copy.db");
            std::fs::copy(dir.path().join("repository.db"), &file).unwrap();
            Connection::open(&file)
                .unwrap()
                .query_row("SELECT COUNT(*) FROM nodes WHERE id = ?1", [node.0], |r| {
                    r.get::<_, i64>(0)
                })
                // Not even the table while the schema is in the log only.
                .unwrap_or(0)
        };
        assert_eq!(in_file_alone(), 0);
        assert!(repo.checkpoint().await.unwrap());
        assert_eq!(in_file_alone(), 1);
    }

    /// A repository from before keyed events gains the key, keeps its
    /// events, and records keyed ones once.
    #[tokio::test]
    async fn an_older_audit_table_gains_event_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = Embedded::open(dir.path()).await.unwrap();
        let node = store_one(&repo).await;
        drop(repo);
        let conn = Connection::open(dir.path().join("repository.db")).unwrap();
        conn.execute_batch("DROP INDEX audit_key; ALTER TABLE audit DROP COLUMN event_key")
            .unwrap();
        drop(conn);
        let (repo, _) = Embedded::open(dir.path()).await.unwrap();
        let before = repo.audit(Some(node)).await.unwrap();
        assert!(!before.is_empty());
        let keyed = KeyedEvent {
            key: "k".into(),
            at: 1_700_000_000,
            event: AuditEvent {
                action: "filed".into(),
                actor: "partner:acme".into(),
                node: Some(node),
                sha256: None,
                detail: "d".into(),
            },
        };
        repo.record_events(std::slice::from_ref(&keyed))
            .await
            .unwrap();
        repo.record_events(std::slice::from_ref(&keyed))
            .await
            .unwrap();
        let after = repo.audit(Some(node)).await.unwrap();
        assert_eq!(after[..before.len()], before[..]);
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(after[before.len()].event, keyed.event);
        assert_eq!(after[before.len()].at, rfc3339(keyed.at));
    }

    /// Takes a connection of `repo` (`take`) on a thread of its own and
    /// returns once it is taken; the thread holds it until the returned
    /// sender sends (or is dropped).
    fn hold(
        repo: &Embedded,
        take: fn(&Embedded) -> std::sync::MutexGuard<'_, Connection>,
    ) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let thread = {
            let repo = repo.clone();
            std::thread::spawn(move || {
                let _held = take(&repo);
                taken_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        };
        taken_rx.recv().unwrap();
        (release_tx, thread)
    }

    /// Reads are served while the writer's connection is taken (as during a
    /// group commit's fsync), and see what was committed before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = Embedded::open(dir.path()).await.unwrap();
        assert!(repo.inner.wal);
        let node = store_one(&repo).await;
        let (release_tx, writer) = hold(&repo, |r| r.conn());
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            (
                repo.node(node).await.unwrap(),
                repo.versions(node).await.unwrap(),
                repo.children(NodeId::ENTERPRISE).await.unwrap(),
            )
        })
        .await;
        release_tx.send(()).unwrap();
        writer.join().unwrap();
        let (n, versions, children) = read.expect("reads waited for the writer");
        assert_eq!(n.name, "looked-up.pdf");
        assert_eq!(versions.len(), 1);
        assert!(children.iter().any(|c| c.id == node));
    }

    /// A lookup finding the reader connection busy waits for it on a
    /// blocking thread, not on the async worker.
    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_reader_sends_lookups_to_a_blocking_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = Embedded::open(dir.path()).await.unwrap();
        let node = store_one(&repo).await;
        let (release_tx, reader) = hold(&repo, |r| r.inner.reader.lock().unwrap());
        let lookup = tokio::spawn({
            let repo = repo.clone();
            async move { repo.node(node).await }
        });
        // The one runtime thread is free to run this while the lookup waits.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!lookup.is_finished());
        release_tx.send(()).unwrap();
        reader.join().unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), lookup)
            .await
            .expect("the lookup finished once the reader was free")
            .unwrap()
            .unwrap();
        assert_eq!(n.id, node);
    }
}
