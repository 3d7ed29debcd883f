//! Content written to a local file by this crate, which hashed it on the
//! way: a store can adopt such a file without reading it again.
//!
//! A transfer that receives a large file hands each chunk to a [`Stager`]:
//! one thread writes the chunks (with direct I/O where it can, so a later
//! fsync has little left to do) while a second one computes their SHA-256.
//! [`Stager::finish`] returns a [`Staged`] file, whose checksum can only
//! come from this crate: from the stager, or from [`Staged::hash`] reading
//! an existing file. The embedded repository trusts that checksum and
//! hard-links the file into its blob store, after checking that the file is
//! still the one staged (same inode, size and modification time). Any other
//! store reads it as a plain file.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::Result;
use crate::direct::{AlignedBuf, BlockWriter};
use crate::embedded::FILE_BUF;
use crate::source::{ContentSource, Upload};

/// Chunks a [`Stager`] holds before the transfer feeding it waits (and
/// as many again queued for its hashing thread).
const WRITE_AHEAD: usize = 4;

/// Buffers of a [`Stager`] kept for reuse: enough for every chunk in
/// flight, so a steady transfer allocates (and page-faults) none.
const POOL: usize = 2 * WRITE_AHEAD + 3;

/// Which file a [`Staged`] is: what a rewrite in place or a replacement
/// would change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    modified: Option<SystemTime>,
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Identity {
            dev,
            ino,
            size: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// A local file with the SHA-256 and size of its content, as computed by
/// this crate while writing or reading it.
///
/// The file must not be modified in place afterwards (it may be read,
/// removed or replaced by a rename): a store may share its data. A file
/// that changed anyway is noticed by its identity (inode, size and
/// modification time) and then read and verified like any other file.
#[derive(Debug, Clone)]
pub struct Staged {
    path: PathBuf,
    sha256: String,
    identity: Identity,
}

impl Staged {
    /// Hash the existing file `path` on a blocking thread (after a restart,
    /// say, when its stager's result is gone).
    pub async fn hash(path: impl Into<PathBuf>) -> std::io::Result<Staged> {
        let path = path.into();
        tokio::task::spawn_blocking(move || {
            let before = Identity::of(&std::fs::metadata(&path)?);
            let (sha256, _) = crate::direct::hash_file(&path)?;
            let identity = Identity::of(&std::fs::metadata(&path)?);
            if identity != before {
                return Err(std::io::Error::other(format!(
                    "{} changed while it was being hashed",
                    path.display()
                )));
            }
            Ok(Staged {
                path,
                sha256,
                identity,
            })
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SHA-256 of its content, in lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.identity.size
    }

    /// Whether `meta` (of an open file) describes the file staged, unchanged.
    pub(crate) fn unchanged(&self, meta: &std::fs::Metadata) -> bool {
        Identity::of(meta) == self.identity
    }
}

impl ContentSource for Staged {
    fn open(&self) -> Pin<Box<dyn Future<Output = Result<Upload>> + Send + '_>> {
        Box::pin(async move {
            let f = tokio::fs::File::open(&self.path).await?;
            Ok(Box::pin(f) as Upload)
        })
    }
    fn len_hint(&self) -> Option<u64> {
        Some(self.identity.size)
    }
    fn local_file(&self) -> Option<&Path> {
        Some(&self.path)
    }
    fn local_file_immutable(&self) -> bool {
        true
    }
    fn staged(&self) -> Option<&Staged> {
        Some(self)
    }
}

/// Writes a file on a blocking thread of its own while a second thread
/// hashes what it writes, so the transfer feeding it goes on receiving.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let mut stager = wharf_ecm::Stager::create(&dir.path().join("incoming"));
/// stager.write(bytes::Bytes::from_static(b"hello ")).await.unwrap();
/// stager.write(bytes::Bytes::from_static(b"world")).await.unwrap();
/// let staged = stager.finish().await.unwrap();
/// assert_eq!(staged.size(), 11);
/// assert_eq!(
///     staged.sha256(),
///     "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
/// );
/// # });
/// ```
pub struct Stager {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    /// The writing thread; taken once its outcome has been read.
    done: Option<tokio::task::JoinHandle<std::io::Result<Staged>>>,
    /// Buffers given back by the writing and hashing threads.
    pool: Pool,
}

/// Aligned buffers shared by a [`Stager`] and the chunks it hands out.
type Pool = std::sync::Arc<std::sync::Mutex<Vec<AlignedBuf>>>;

/// A buffer of a [`Stager`] for a transfer to receive into: 1 MiB, aligned
/// for direct I/O and recycled once written and hashed, so a full one is
/// written to disk without a copy and a long transfer allocates nothing.
///
/// Fill [`StageBuf::spare`], count what was read with
/// [`StageBuf::advance`], and hand it to [`Stager::write_buf`] once it
/// [`is_full`](StageBuf::is_full) or the transfer has ended.
pub struct StageBuf {
    buf: AlignedBuf,
    filled: usize,
    pool: Pool,
}

impl StageBuf {
    /// The part not filled yet.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf.get()[self.filled..]
    }

    /// Count `n` more bytes of [`StageBuf::spare`] as filled.
    ///
    /// # Panics
    /// When `n` is more than the spare part's length.
    pub fn advance(&mut self, n: usize) {
        assert!(
            n <= FILE_BUF - self.filled,
            "advanced past the buffer's end"
        );
        self.filled += n;
    }

    /// The bytes filled so far.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether nothing was filled yet.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Whether no spare room is left.
    pub fn is_full(&self) -> bool {
        self.filled == FILE_BUF
    }

    /// The filled bytes, without a copy; the buffer returns to its pool
    /// once the last clone of them is dropped.
    fn freeze(self) -> Bytes {
        let StageBuf { buf, filled, pool } = self;
        Bytes::from_owner(Recycled {
            buf: Some(buf),
            filled,
            pool,
        })
    }
}

/// The owner behind the [`Bytes`] of a frozen [`StageBuf`].
struct Recycled {
    buf: Option<AlignedBuf>,
    filled: usize,
    pool: Pool,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b.filled()[..self.filled],
            None => &[],
        }
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        if let (Some(buf), Ok(mut pool)) = (self.buf.take(), self.pool.lock())
            && pool.len() < POOL
        {
            pool.push(buf);
        }
    }
}

impl Stager {
    /// Start writing the file `path`. A file already there is removed
    /// first, never truncated: its data may be shared by a store.
    pub fn create(path: &Path) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_AHEAD);
        let path = path.to_path_buf();
        let done = tokio::task::spawn_blocking(move || stage(path, rx));
        Stager {
            tx,
            done: Some(done),
            pool: Default::default(),
        }
    }

    /// An empty buffer to receive into (one given back if there is one).
    pub fn buffer(&self) -> StageBuf {
        let reused = self.pool.lock().ok().and_then(|mut p| p.pop());
        StageBuf {
            buf: reused.unwrap_or_else(AlignedBuf::new),
            filled: 0,
            pool: self.pool.clone(),
        }
    }

    /// Queue the filled part of `buf` for writing, as [`Stager::write`]
    /// does; a full buffer goes to disk without being copied.
    pub async fn write_buf(&mut self, buf: StageBuf) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.write(buf.freeze()).await
    }

    /// Queue `chunk` for writing; fails when the writing thread has failed.
    pub async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        if self.tx.send(chunk).await.is_ok() {
            return Ok(());
        }
        // The thread stopped early: its outcome says why.
        Err(match outcome(self.done.take()).await {
            Err(e) => e,
            Ok(_) => std::io::Error::other("the stager stopped"),
        })
    }

    /// Stop writing (the transfer failed) and wait until the writing
    /// thread has let go of the file, so a retry never writes beside it.
    /// The partial file is left for the retry to replace.
    pub async fn abort(self) {
        drop(self.tx);
        let _ = outcome(self.done).await;
    }

    /// Wait until everything queued is written; returns the staged file.
    /// Its data is written but not yet synced: a store adopting it syncs it.
    pub async fn finish(self) -> std::io::Result<Staged> {
        drop(self.tx);
        outcome(self.done).await
    }
}

/// What the writing thread `done` of a [`Stager`] ended with.
async fn outcome(
    done: Option<tokio::task::JoinHandle<std::io::Result<Staged>>>,
) -> std::io::Result<Staged> {
    match done {
        Some(done) => done.await.map_err(std::io::Error::other)?,
        None => Err(std::io::Error::other("the stager failed before")),
    }
}

/// The body of a [`Stager`]'s writing thread.
fn stage(path: PathBuf, mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> std::io::Result<Staged> {
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let (to_hasher, chunks) = std::sync::mpsc::sync_channel::<Bytes>(WRITE_AHEAD);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            for chunk in chunks {
                hasher.update(&chunk);
            }
            hex::encode(hasher.finalize())
        });
        let mut out = BlockWriter::new(&file);
        let written = (|| {
            while let Some(chunk) = rx.blocking_recv() {
                if to_hasher.send(chunk.clone()).is_err() {
                    return Err(std::io::Error::other("the hashing thread stopped"));
                }
                out.write(&chunk)?;
            }
            out.finish()
        })();
        drop(to_hasher);
        let sha256 = hasher
            .join()
            .map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
        let total = written?;
        let identity = Identity::of(&file.metadata()?);
        if identity.size != total {
            return Err(std::io::Error::other(format!(
                "{} holds {} bytes after {total} were written",
                path.display(),
                identity.size
            )));
        }
        Ok(Staged {
            path,
            sha256,
            identity,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stager_writes_and_hashes_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        // Something there already is replaced, not rewritten in place.
        std::fs::write(&path, b"old").unwrap();
        let kept = dir.path().join("kept");
        std::fs::hard_link(&path, &kept).unwrap();
        let data: Vec<u8> = (0..20_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = Stager::create(&path);
        for c in data.chunks(1 << 20) {
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        let staged = w.finish().await.unwrap();
        assert_eq!(staged.size(), data.len() as u64);
        assert_eq!(staged.sha256(), hex::encode(Sha256::digest(&data)));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(std::fs::read(&kept).unwrap(), b"old");
        let again = Staged::hash(&path).await.unwrap();
        assert_eq!(again.sha256(), staged.sha256());
        assert!(staged.unchanged(&std::fs::metadata(&path).unwrap()));

        // A rewrite is noticed.
        std::fs::write(&path, b"new").unwrap();
        assert!(!staged.unchanged(&std::fs::metadata(&path).unwrap()));

        // Received into the stager's own buffers: full ones are written
        // without a copy, the partial last one padded and cut back, and
        // the buffers are reused rather than allocated per chunk.
        let mut w = Stager::create(&path);
        let mut buf = w.buffer();
        for piece in data.chunks(300_000) {
            let mut piece = piece;
            while !piece.is_empty() {
                let n = piece.len().min(buf.spare().len());
                buf.spare()[..n].copy_from_slice(&piece[..n]);
                buf.advance(n);
                piece = &piece[n..];
                if buf.is_full() {
                    let full = std::mem::replace(&mut buf, w.buffer());
                    w.write_buf(full).await.unwrap();
                }
            }
        }
        w.write_buf(buf).await.unwrap();
        let pool = w.pool.clone();
        let staged = w.finish().await.unwrap();
        assert_eq!(staged.size(), data.len() as u64);
        assert_eq!(staged.sha256(), hex::encode(Sha256::digest(&data)));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let kept = pool.lock().unwrap().len();
        assert!((1..=POOL).contains(&kept), "{kept} buffers kept");

        // A file that cannot be written fails the transfer, not silently.
        let mut w = Stager::create(&dir.path().join("missing").join("staged"));
        let mut failed = None;
        for _ in 0..100 {
            if let Err(e) = w.write(Bytes::from_static(b"x")).await {
                failed = Some(e);
                break;
            }
        }
        let failed = match failed {
            Some(e) => e,
            None => w.finish().await.unwrap_err(),
        };
        assert_eq!(failed.kind(), std::io::ErrorKind::NotFound, "{failed}");
    }
}
