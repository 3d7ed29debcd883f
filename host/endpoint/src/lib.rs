//! The partner endpoint boundary of wharf (see README.md).
//!
//! One async [`Endpoint`] trait with three implementations: [`ftp::FtpEndpoint`] (FTP, explicit
//! and implicit FTPS), [`sftp::SftpEndpoint`] (SSH file transfer) and [`local::LocalEndpoint`]
//! (a folder opened through cap-std). Every path an endpoint accepts is a [`RemotePath`], which is
//! normalised and confined to the partner's root before any byte leaves the process.

pub mod config;
pub mod error;
pub mod ftp;
pub mod io;
pub mod local;
pub mod path;
pub mod pool;
pub mod retry;
pub mod segmented;
pub mod sftp;

use std::time::SystemTime;

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncRead};

pub use config::{CommonConfig, RetryPolicy, Secret, SecretSource, TempNaming};
pub use error::{Error, Result};
pub use io::{Progress, ProgressReader};
pub use path::RemotePath;
pub use segmented::{download_durable, download_segmented};

/// A tracing/env-filter directive that hosts add to their log filter: suppaftp traces
/// every control command, including the `PASS` line, at `trace` level.
pub const LOG_FILTER: &str = "suppaftp=debug";

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else the server reports (devices, sockets, unknown listing types).
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name inside the listed directory (validated: no separators or control characters).
    pub name: String,
    /// The entry's full path below the partner root.
    pub path: RemotePath,
    /// Size in bytes (0 for directories on most servers).
    pub size: u64,
    /// Last modification time as reported by the server (UTC; LIST listings are minute-precise).
    pub mtime: Option<SystemTime>,
    /// The entry's kind.
    pub kind: EntryKind,
}

/// A byte stream read from an endpoint. Dropping it early releases (or discards) its connection.
pub type ReadStream = Box<dyn AsyncRead + Send + Unpin>;

/// A partner's file store: the one boundary every transfer goes through.
///
/// Implementations confine every path to the partner root, retry transient failures according
/// to their [`RetryPolicy`] (never permanent ones such as a refused login or a permission
/// error), and bound the number of connections they open.
#[async_trait]
pub trait Endpoint: Send + Sync {
    /// Lists the entries of a directory (without `.` and `..`). Entries whose names are unsafe
    /// (separators, control characters, `..`) are skipped and logged.
    async fn list(&self, dir: &RemotePath) -> Result<Vec<Entry>>;

    /// Returns the entry at `path`, or `None` when nothing exists there.
    async fn stat(&self, path: &RemotePath) -> Result<Option<Entry>>;

    /// Whether something exists at `path`.
    async fn exists(&self, path: &RemotePath) -> Result<bool> {
        Ok(self.stat(path).await?.is_some())
    }

    /// Whether a file (not a directory) exists at `path`: cheaper than
    /// [`Endpoint::stat`] where the protocol allows (one `SIZE` on FTP).
    async fn is_file(&self, path: &RemotePath) -> Result<bool> {
        Ok(self
            .stat(path)
            .await?
            .is_some_and(|e| e.kind == EntryKind::File))
    }

    /// Opens a file for reading, starting `offset` bytes in (to resume an interrupted transfer).
    /// The stream holds one of the endpoint's pooled connections until it is dropped; a
    /// stream that ends early or fails yields an error, never a silent end of file.
    async fn open_read(&self, path: &RemotePath, offset: u64) -> Result<ReadStream>;

    /// Writes `src` to `path` atomically: the bytes go to a temporary name in the same
    /// directory (see [`TempNaming`]), whose size is then verified before it is renamed to
    /// `path`, replacing any existing file. The final name never shows partial content.
    /// Returns the number of bytes written.
    ///
    /// The bytes are sent straight from `src`'s buffer: a slice or a stream reader needs no
    /// other; wrap a plain reader in a `tokio::io::BufReader` of [`io::COPY_BUF`] bytes.
    async fn write_atomic(
        &self,
        path: &RemotePath,
        src: &mut (dyn AsyncBufRead + Send + Unpin),
        progress: Option<&dyn Progress>,
    ) -> Result<u64>;

    /// Renames (moves) `from` to `to` inside the partner root.
    async fn rename(&self, from: &RemotePath, to: &RemotePath) -> Result<()>;

    /// Deletes the file at `path`.
    async fn delete(&self, path: &RemotePath) -> Result<()>;

    /// Creates the directory `path` and any missing parents; succeeds when it already exists.
    async fn mkdir_all(&self, path: &RemotePath) -> Result<()>;
}
