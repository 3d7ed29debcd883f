//! A transfer's bytes while the host works on them: small ones in memory,
//! others in a spool file.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use wharf_ecm::{self as ecm, Repository};

use crate::plugin::ReadContent;

/// Contents up to this size are held in memory between transfer and the
/// repository instead of being spooled to disk (at most one per file in
/// flight).
pub const IN_MEMORY_MAX: u64 = 1024 * 1024;

/// A transferred file's bytes: small ones in memory, others in the spool.
#[derive(Clone, Debug)]
pub(crate) enum Spooled {
    Memory(bytes::Bytes),
    File(PathBuf),
}

impl Spooled {
    /// The bytes as the plugin reads them.
    pub(crate) fn content(&self) -> std::io::Result<SpoolContent> {
        Ok(match self {
            Spooled::Memory(b) => SpoolContent::Memory(ReadContent::new(
                std::io::Cursor::new(b.clone()),
                b.len() as u64,
            )),
            Spooled::File(p) => SpoolContent::File(ReadContent::open(p)?),
        })
    }

    /// SHA-256 of the bytes.
    pub(crate) async fn sha256(&self) -> std::io::Result<String> {
        match self {
            Spooled::Memory(b) => Ok(hex::encode(Sha256::digest(b))),
            Spooled::File(p) => hash_file(p.clone()).await,
        }
    }
}

/// [`Spooled`] content as a plugin's `content` resource.
pub(crate) enum SpoolContent {
    Memory(ReadContent<std::io::Cursor<bytes::Bytes>>),
    File(ReadContent<std::fs::File>),
}

impl crate::plugin::ContentSource for SpoolContent {
    fn read_chunk(&mut self, max: usize) -> std::io::Result<Vec<u8>> {
        match self {
            SpoolContent::Memory(c) => c.read_chunk(max),
            SpoolContent::File(c) => c.read_chunk(max),
        }
    }
    fn size(&self) -> u64 {
        match self {
            SpoolContent::Memory(c) => c.size(),
            SpoolContent::File(c) => c.size(),
        }
    }
}

/// Store `doc` with the bytes of `spool`.
pub(crate) async fn store_spooled<R: Repository>(
    repo: &R,
    doc: &ecm::NewDocument,
    spool: &Spooled,
) -> Result<ecm::Stored, ecm::EcmError> {
    match spool {
        Spooled::Memory(b) => repo.store_document(doc, &ecm::BytesSource(b.clone())).await,
        Spooled::File(p) => repo.store_document(doc, &ecm::FileSource::new(p)).await,
    }
}

/// SHA-256 of a local file, on a blocking thread.
pub async fn hash_file(path: PathBuf) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

impl Spooled {
    /// The bytes as a stream for an upload.
    pub(crate) async fn reader(
        &self,
    ) -> std::io::Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>> {
        Ok(match self {
            Spooled::Memory(b) => Box::new(std::io::Cursor::new(b.clone())),
            Spooled::File(p) => Box::new(tokio::fs::File::open(p).await?),
        })
    }

    /// Read `stream` to its end, hashing it: into memory while it stays
    /// within [`IN_MEMORY_MAX`], else into the file `path` (created or
    /// truncated, with its folder). Returns the bytes and their SHA-256.
    pub(crate) async fn collect(
        mut stream: ecm::ByteStream,
        path: &Path,
    ) -> Result<(Spooled, String), SpoolError> {
        let mut hasher = Sha256::new();
        let mut memory = Vec::new();
        let mut file: Option<tokio::fs::File> = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(SpoolError::Source)?;
            hasher.update(&chunk);
            match &mut file {
                Some(f) => f.write_all(&chunk).await.map_err(SpoolError::Spool)?,
                None if (memory.len() + chunk.len()) as u64 <= IN_MEMORY_MAX => {
                    memory.extend_from_slice(&chunk)
                }
                None => {
                    if let Some(folder) = path.parent() {
                        tokio::fs::create_dir_all(folder)
                            .await
                            .map_err(SpoolError::Spool)?;
                    }
                    let mut f = tokio::fs::File::create(path)
                        .await
                        .map_err(SpoolError::Spool)?;
                    f.write_all(&memory).await.map_err(SpoolError::Spool)?;
                    f.write_all(&chunk).await.map_err(SpoolError::Spool)?;
                    memory = Vec::new();
                    file = Some(f);
                }
            }
        }
        let spooled = match file {
            Some(mut f) => {
                f.flush().await.map_err(SpoolError::Spool)?;
                Spooled::File(path.to_path_buf())
            }
            None => Spooled::Memory(memory.into()),
        };
        Ok((spooled, hex::encode(hasher.finalize())))
    }
}

/// Why [`Spooled::collect`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// Reading the source failed.
    #[error("{0}")]
    Source(ecm::EcmError),
    /// Writing the spool file failed.
    #[error("spool: {0}")]
    Spool(std::io::Error),
}
