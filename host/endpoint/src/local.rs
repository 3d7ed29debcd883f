//! A local folder as an endpoint (drop folders, tests), opened through cap-std so that no
//! path, symlink or `..` can reach outside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata};
use tokio::io::{AsyncBufRead, AsyncSeekExt, AsyncWriteExt};

use crate::config::TempNaming;
use crate::error::{Error, Result};
use crate::io::{Progress, copy_bounded};
use crate::{Endpoint, Entry, EntryKind, ReadStream, RemotePath};

/// A folder on this machine.
pub struct LocalEndpoint {
    dir: Arc<Dir>,
    temp: TempNaming,
    stall: std::time::Duration,
    sync: bool,
}

fn rel(p: &RemotePath) -> PathBuf {
    if p.is_root() {
        PathBuf::from(".")
    } else {
        PathBuf::from(p.as_string())
    }
}

fn kind_of(m: &Metadata) -> EntryKind {
    let t = m.file_type();
    if t.is_file() {
        EntryKind::File
    } else if t.is_dir() {
        EntryKind::Dir
    } else if t.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    }
}

fn map_io(path: &RemotePath, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(path.to_string()),
        std::io::ErrorKind::PermissionDenied => Error::Refused(format!("{path}: {e}")),
        _ => Error::Io(e),
    }
}

impl LocalEndpoint {
    /// Opens `root` (which must exist) as the endpoint's root.
    pub fn open(root: impl AsRef<Path>, temp: TempNaming) -> Result<Self> {
        let dir = Dir::open_ambient_dir(root.as_ref(), ambient_authority()).map_err(|e| {
            Error::Config(format!(
                "cannot open folder {}: {e}",
                root.as_ref().display()
            ))
        })?;
        Ok(Self {
            dir: Arc::new(dir),
            temp,
            stall: std::time::Duration::from_secs(60),
            sync: true,
        })
    }

    /// Whether `write_atomic` flushes the file to disk (fsync) before renaming it into place
    /// (the default): a file reported written then survives a power loss. Turning it off
    /// trades that for speed on many small files.
    pub fn with_sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Dir) -> std::io::Result<T> + Send + 'static,
        path: &RemotePath,
    ) -> Result<T> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || f(&dir))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
            .map_err(|e| map_io(path, e))
    }
}

fn entry(path: RemotePath, name: String, m: &Metadata) -> Entry {
    Entry {
        name,
        path,
        size: m.len(),
        mtime: m.modified().ok().map(|t| t.into_std()),
        kind: kind_of(m),
    }
}

#[async_trait]
impl Endpoint for LocalEndpoint {
    async fn list(&self, dir: &RemotePath) -> Result<Vec<Entry>> {
        let d = dir.clone();
        let items = self
            .blocking(
                move |root| {
                    let mut out = Vec::new();
                    for e in root.read_dir(rel(&d))? {
                        let e = e?;
                        out.push((e.file_name(), e.metadata()?));
                    }
                    Ok(out)
                },
                dir,
            )
            .await?;
        let mut entries = Vec::with_capacity(items.len());
        for (name, meta) in items {
            let Some(name) = name.to_str() else {
                tracing::warn!(dir = %dir, name = ?name, "skipping a name that is not UTF-8");
                continue;
            };
            match dir.join(name) {
                Ok(path) => entries.push(entry(path, name.to_owned(), &meta)),
                Err(e) => tracing::warn!(dir = %dir, error = %e, "skipping an unsafe name"),
            }
        }
        Ok(entries)
    }

    async fn stat(&self, path: &RemotePath) -> Result<Option<Entry>> {
        let p = rel(path);
        match self.blocking(move |d| d.symlink_metadata(p), path).await {
            Ok(m) => Ok(Some(entry(
                path.clone(),
                path.file_name().unwrap_or("").to_owned(),
                &m,
            ))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn open_read(&self, path: &RemotePath, offset: u64) -> Result<ReadStream> {
        let p = rel(path);
        let file = self.blocking(move |d| d.open(p), path).await?;
        let mut file = tokio::fs::File::from_std(file.into_std());
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset)).await?;
        }
        Ok(Box::new(tokio::io::BufReader::with_capacity(
            crate::io::COPY_BUF,
            file,
        )))
    }

    async fn write_atomic(
        &self,
        path: &RemotePath,
        src: &mut (dyn AsyncBufRead + Send + Unpin),
        progress: Option<&dyn Progress>,
    ) -> Result<u64> {
        let tmp = path.with_wrapped_name(&self.temp.prefix, &self.temp.suffix)?;
        let tp = rel(&tmp);
        let file = self.blocking(move |d| d.create(tp), &tmp).await?;
        let mut file = tokio::fs::File::from_std(file.into_std());
        let result: Result<u64> = async {
            let n = copy_bounded(src, &mut file, self.stall, progress).await?;
            if self.sync {
                file.sync_all().await?;
            } else {
                file.flush().await?;
            }
            let stored = file.metadata().await?.len();
            if stored != n {
                return Err(Error::SizeMismatch {
                    path: tmp.to_string(),
                    sent: n,
                    stored,
                });
            }
            drop(file);
            let (from, to) = (rel(&tmp), rel(path));
            let dir = self.dir.clone();
            self.blocking(move |d| d.rename(from, &dir, to), path)
                .await?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let tp = rel(&tmp);
            let _ = self.blocking(move |d| d.remove_file(tp), &tmp).await;
        }
        result
    }

    async fn rename(&self, from: &RemotePath, to: &RemotePath) -> Result<()> {
        let (f, t) = (rel(from), rel(to));
        let dir = self.dir.clone();
        self.blocking(move |d| d.rename(f, &dir, t), from).await
    }

    async fn delete(&self, path: &RemotePath) -> Result<()> {
        let p = rel(path);
        self.blocking(move |d| d.remove_file(p), path).await
    }

    async fn mkdir_all(&self, path: &RemotePath) -> Result<()> {
        if path.is_root() {
            return Ok(());
        }
        let p = rel(path);
        self.blocking(move |d| d.create_dir_all(p), path).await
    }
}
