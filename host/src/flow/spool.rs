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
    /// A file the host wrote and hashed in the same pass.
    File(PathBuf),
    /// A file staged (written and hashed) for the repository, which adopts
    /// it without reading it again.
    Staged(ecm::Staged),
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
            Spooled::Staged(s) => SpoolContent::File(ReadContent::open(s.path())?),
        })
    }

    /// SHA-256 of the bytes.
    pub(crate) async fn sha256(&self) -> std::io::Result<String> {
        match self {
            Spooled::Memory(b) => Ok(hex::encode(Sha256::digest(b))),
            Spooled::File(p) => hash_file(p.clone()).await,
            Spooled::Staged(s) => Ok(s.sha256().to_string()),
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
        Spooled::Staged(s) => repo.store_document(doc, s).await,
    }
}

/// SHA-256 of a local file, on a blocking thread.
pub(crate) async fn hash_file(path: PathBuf) -> std::io::Result<String> {
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
    ) -> std::io::Result<Box<dyn tokio::io::AsyncBufRead + Send + Unpin>> {
        let file = |f| tokio::io::BufReader::with_capacity(wharf_endpoint::io::COPY_BUF, f);
        Ok(match self {
            Spooled::Memory(b) => Box::new(std::io::Cursor::new(b.clone())),
            Spooled::File(p) => Box::new(file(tokio::fs::File::open(p).await?)),
            Spooled::Staged(s) => Box::new(file(tokio::fs::File::open(s.path()).await?)),
        })
    }

    /// Read `stream` to its end, hashing it: into memory while it stays
    /// within [`IN_MEMORY_MAX`], else into the file `path` (created or
    /// truncated, with its folder). Returns the bytes, their SHA-256 and
    /// their size.
    pub(crate) async fn collect(
        mut stream: ecm::ByteStream,
        path: &Path,
    ) -> Result<(Spooled, String, u64), SpoolError> {
        let mut hasher = Sha256::new();
        let mut memory = Vec::new();
        let mut file: Option<tokio::fs::File> = None;
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(SpoolError::Source)?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
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
        Ok((spooled, hex::encode(hasher.finalize()), size))
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

/// A repository download as a reader that checks, before its end, that the
/// bytes are `size` bytes with the SHA-256 `expected`: a mismatch (or a
/// check that never came) is an error instead of the end, so an upload fed
/// from it fails and is not renamed into place. The bytes are hashed ahead
/// of the reader (see [`ecm::Repository::download_hashed`]), so hashing
/// overlaps the upload.
pub(crate) fn verified_download(
    download: ecm::HashedDownload,
    expected: &str,
    size: u64,
) -> impl tokio::io::AsyncBufRead + Send + Unpin + 'static {
    let ecm::HashedDownload { bytes, digest } = download;
    let state = Some((bytes, digest, expected.to_ascii_lowercase()));
    // Ends only after the check; a digest that never came is an error.
    let chunks = futures::stream::unfold(state, move |state| async move {
        let (mut bytes, digest, expected) = state?;
        match bytes.next().await {
            Some(Ok(b)) => return Some((Ok(b), Some((bytes, digest, expected)))),
            Some(Err(e)) => return Some((Err(std::io::Error::other(e)), None)),
            None => {}
        }
        let failed = match digest.await {
            Ok((_, total)) if total != size => std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the content has {total} bytes, not the recorded {size}"),
            ),
            Ok((got, _)) if got != expected => std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the content's SHA-256 is {got}, not the recorded {expected}"),
            ),
            Ok(_) => return None,
            Err(_) => std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the download ended without its check",
            ),
        };
        Some((Err(failed), None))
    });
    tokio_util::io::StreamReader::new(Box::pin(chunks))
}

/// A repository download as an async reader.
pub(crate) fn stream_reader(
    stream: ecm::ByteStream,
) -> impl tokio::io::AsyncRead + Send + Unpin + 'static {
    tokio_util::io::StreamReader::new(stream.map(|r| r.map_err(std::io::Error::other)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn hashed(stream: ecm::ByteStream) -> ecm::HashedDownload {
        ecm::HashedDownload::hash_ahead(stream)
    }

    fn chunked(data: &[u8]) -> ecm::ByteStream {
        let chunks: Vec<ecm::Result<bytes::Bytes>> = data
            .chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_verified_download_passes_matching_bytes_and_fails_others_at_the_end() {
        let data = b"delivered bytes".repeat(100_000);
        let sha = hex::encode(Sha256::digest(&data));
        let mut out = Vec::new();
        verified_download(
            hashed(chunked(&data)),
            &sha.to_uppercase(),
            data.len() as u64,
        )
        .read_to_end(&mut out)
        .await
        .unwrap();
        assert_eq!(out, data);

        let mut tampered = data.clone();
        tampered[500_000] ^= 1;
        let mut out = Vec::new();
        let err = verified_download(hashed(chunked(&tampered)), &sha, data.len() as u64)
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(&sha), "{err}");
        // Everything was passed on; only the end is refused.
        assert_eq!(out.len(), tampered.len());

        // Short content is refused, whatever its checksum.
        let short = &data[..data.len() - 1];
        let err = verified_download(
            hashed(chunked(short)),
            &hex::encode(Sha256::digest(short)),
            data.len() as u64,
        )
        .read_to_end(&mut Vec::new())
        .await
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");

        // A source that fails mid-way fails the reader.
        let failing: ecm::ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"some")),
            Err(ecm::EcmError::storage("disk gone")),
        ]));
        let err = verified_download(hashed(failing), &sha, data.len() as u64)
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
    }

    #[tokio::test]
    async fn a_download_whose_digest_never_comes_fails_at_its_end() {
        let data = b"all the bytes, but no check".to_vec();
        let (gone, digest) = tokio::sync::oneshot::channel();
        drop(gone);
        let download = ecm::HashedDownload {
            bytes: chunked(&data),
            digest,
        };
        let sha = hex::encode(Sha256::digest(&data));
        let mut out = Vec::new();
        let err = verified_download(download, &sha, data.len() as u64)
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
        assert!(err.to_string().contains("without its check"), "{err}");
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn small_streams_stay_in_memory_and_large_ones_go_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (len, in_memory) in [
            (10usize, true),
            (IN_MEMORY_MAX as usize, true),
            (IN_MEMORY_MAX as usize + 1, false),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join("spool").join(len.to_string());
            let (spooled, sha, size) = Spooled::collect(chunked(&data), &path).await.unwrap();
            assert_eq!(size, data.len() as u64);
            assert_eq!(sha, hex::encode(Sha256::digest(&data)));
            assert_eq!(matches!(spooled, Spooled::Memory(_)), in_memory, "{len}");
            assert_eq!(path.exists(), !in_memory);
            let mut back = Vec::new();
            spooled
                .reader()
                .await
                .unwrap()
                .read_to_end(&mut back)
                .await
                .unwrap();
            assert_eq!(back, data);
        }
    }
}
