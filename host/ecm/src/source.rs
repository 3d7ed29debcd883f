//! Streams in and out of a repository.

use std::path::PathBuf;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncRead;

use crate::Result;

/// A readable upload stream.
pub type Upload = Pin<Box<dyn AsyncRead + Send>>;

/// A downloaded content stream.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Content that can be read (again) from the start: a client retrying an
/// upload opens it once per attempt, so nothing is buffered whole.
pub trait ContentSource: Send + Sync {
    /// Open a fresh stream over the whole content.
    fn open(&self) -> Pin<Box<dyn Future<Output = Result<Upload>> + Send + '_>>;
    /// The content's length when known.
    fn len_hint(&self) -> Option<u64>;
}

/// Content in a local file.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    len: Option<u64>,
}

impl FileSource {
    /// Content of the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let len = std::fs::metadata(&path).ok().map(|m| m.len());
        FileSource { path, len }
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
