//! Streams in and out of a repository.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncRead;

use crate::Result;
use crate::staged::Staged;

/// A readable upload stream.
pub type Upload = Pin<Box<dyn AsyncRead + Send>>;

/// A downloaded content stream.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A download whose SHA-256 is computed as its bytes are read, ahead of
/// whoever consumes them (see [`Repository::download_hashed`]).
///
/// [`Repository::download_hashed`]: crate::Repository::download_hashed
pub struct HashedDownload {
    /// The bytes, as [`Repository::download`](crate::Repository::download)
    /// gives them.
    pub bytes: ByteStream,
    /// Once `bytes` has ended: the SHA-256 (lowercase hex) and the count of
    /// every byte it yielded. Never sent when the stream failed.
    pub digest: tokio::sync::oneshot::Receiver<(String, u64)>,
}

/// Chunks [`HashedDownload::hash_ahead`] hashes ahead of their consumer.
const HASH_AHEAD: usize = 4;

impl HashedDownload {
    /// Hash `stream` on a task of its own, a few chunks ahead of its
    /// consumer, so that hashing overlaps what the consumer does.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the task is spawned on the current one).
    pub fn hash_ahead(mut stream: ByteStream) -> Self {
        use futures::StreamExt;
        use sha2::Digest;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(HASH_AHEAD);
        let (done, digest) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut hasher = sha2::Sha256::new();
            let mut total = 0u64;
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if let Ok(bytes) = &chunk {
                    hasher.update(bytes);
                    total += bytes.len() as u64;
                }
                // The consumer went away, or there is nothing more to read.
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
            // Sent before the channel closes: whoever sees the end finds it.
            let _ = done.send((hex::encode(hasher.finalize()), total));
        });
        HashedDownload {
            bytes: Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })),
            digest,
        }
    }

    /// Bytes already in memory, with their digest at once.
    pub fn of_bytes(bytes: Bytes) -> Self {
        use sha2::Digest;
        let (done, digest) = tokio::sync::oneshot::channel();
        let _ = done.send((
            hex::encode(sha2::Sha256::digest(&bytes)),
            bytes.len() as u64,
        ));
        let chunk: Result<Bytes> = Ok(bytes);
        HashedDownload {
            bytes: Box::pin(futures::stream::iter([chunk])),
            digest,
        }
    }
}

/// Content that can be read (again) from the start: a client retrying an
/// upload opens it once per attempt, so nothing is buffered whole.
///
/// Besides [`open`](Self::open), a source may say where its bytes already
/// are, so a store that can use them directly skips the stream: the
/// embedded repository hashes and writes in-memory content in one blocking
/// step and copies (or links) a local file with large blocking reads. These
/// hooks are optional; their defaults say "only the stream", which every
/// store handles. When a hook answers, its bytes must be exactly those
/// [`open`](Self::open) yields.
pub trait ContentSource: Send + Sync {
    /// Open a fresh stream over the whole content.
    fn open(&self) -> Pin<Box<dyn Future<Output = Result<Upload>> + Send + '_>>;
    /// The content's length when known.
    fn len_hint(&self) -> Option<u64>;
    /// The whole content, when it is already held in memory.
    fn in_memory(&self) -> Option<&Bytes> {
        None
    }
    /// The local file that holds the whole content, when there is one. A
    /// store reads it with blocking I/O (it must be a regular file, not a
    /// pipe or device) while the store call runs.
    fn local_file(&self) -> Option<&Path> {
        None
    }
    /// Whether the file named by [`local_file`](Self::local_file) stays
    /// unmodified in place from now on: it may be read, removed or replaced
    /// by a rename, but never opened for writing (truncated, appended to,
    /// rewritten) again. Only then may a store share its data instead of
    /// copying it: the embedded repository hard-links such a file into its
    /// blob store when both are on one file system, so a later in-place write
    /// through the source path would change the stored content. `false`
    /// unless the source promises it.
    fn local_file_immutable(&self) -> bool {
        false
    }
    /// The content as a file this crate staged and hashed itself (see
    /// [`Staged`]): a store may trust its checksum and adopt the file
    /// without reading it again, as long as it is still the file staged.
    fn staged(&self) -> Option<&Staged> {
        None
    }
}

/// Content in a local file.
///
/// The embedded repository copies it into its blob store with large
/// blocking reads (hashing as it reads); with [`immutable`](Self::immutable)
/// it may hard-link it instead.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    len: Option<u64>,
    immutable: bool,
}

impl FileSource {
    /// Content of the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let len = std::fs::metadata(&path).ok().map(|m| m.len());
        FileSource {
            path,
            len,
            immutable: false,
        }
    }

    /// Promise that the file is never modified in place from now on: it may
    /// be read, removed (also right after the store) or replaced by a rename,
    /// but not opened for writing again. A store may then share the file's
    /// data rather than copy it (see [`ContentSource::local_file_immutable`]);
    /// breaking the promise would alter stored content.
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ContentSource for FileSource {
    fn open(&self) -> Pin<Box<dyn Future<Output = Result<Upload>> + Send + '_>> {
        Box::pin(async move {
            let f = tokio::fs::File::open(&self.path).await?;
            Ok(Box::pin(f) as Upload)
        })
    }
    fn len_hint(&self) -> Option<u64> {
        self.len
    }
    fn local_file(&self) -> Option<&Path> {
        Some(&self.path)
    }
    fn local_file_immutable(&self) -> bool {
        self.immutable
    }
}

/// Content held in memory (small documents, tests).
#[derive(Debug, Clone)]
pub struct BytesSource(pub Bytes);

impl ContentSource for BytesSource {
    fn open(&self) -> Pin<Box<dyn Future<Output = Result<Upload>> + Send + '_>> {
        let b = self.0.clone();
        Box::pin(async move { Ok(Box::pin(std::io::Cursor::new(b)) as Upload) })
    }
    fn len_hint(&self) -> Option<u64> {
        Some(self.0.len() as u64)
    }
    fn in_memory(&self) -> Option<&Bytes> {
        Some(&self.0)
    }
}

/// Read a whole stream into memory (for small contents and tests).
pub async fn collect(mut s: ByteStream) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use sha2::Digest;

    async fn drain(d: &mut HashedDownload) -> Vec<u8> {
        let mut back = Vec::new();
        while let Some(c) = d.bytes.next().await {
            back.extend_from_slice(&c.unwrap());
        }
        back
    }

    #[tokio::test]
    async fn a_stream_hashed_ahead_gives_its_bytes_then_their_digest() {
        let data = b"hashed ahead".repeat(50_000);
        let chunks: Vec<Result<Bytes>> = data
            .chunks(70_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut d = HashedDownload::hash_ahead(Box::pin(futures::stream::iter(chunks)));
        assert_eq!(drain(&mut d).await, data);
        assert_eq!(
            d.digest.try_recv().unwrap(),
            (hex::encode(sha2::Sha256::digest(&data)), data.len() as u64)
        );

        let mut d = HashedDownload::of_bytes(Bytes::from_static(b"small"));
        assert_eq!(drain(&mut d).await, b"small");
        assert_eq!(
            d.digest.try_recv().unwrap(),
            (hex::encode(sha2::Sha256::digest(b"small")), 5)
        );
    }

    #[tokio::test]
    async fn a_failing_stream_hashed_ahead_gives_its_error_and_no_digest() {
        let chunks: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"some")),
            Err(crate::EcmError::storage("disk gone")),
        ];
        let mut d = HashedDownload::hash_ahead(Box::pin(futures::stream::iter(chunks)));
        assert_eq!(&d.bytes.next().await.unwrap().unwrap()[..], b"some");
        assert!(d.bytes.next().await.unwrap().is_err());
        assert!(d.bytes.next().await.is_none());
        assert!(d.digest.await.is_err());
    }
}
