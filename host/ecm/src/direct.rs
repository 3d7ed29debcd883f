//! Reading and writing large files with direct I/O where the platform and
//! the file system allow it: the data moves between disk and memory without
//! a copy through the page cache (which costs as much CPU as hashing it on
//! some hosts), and falls back to buffered I/O elsewhere.

use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::embedded::FILE_BUF;

/// Alignment of direct I/O buffers, offsets and lengths.
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// Chunks read ahead of their consumer.
const READ_AHEAD: usize = 4;

/// A [`FILE_BUF`] bytes buffer aligned for direct I/O.
pub(crate) struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    pub(crate) fn new() -> Self {
        let mem = vec![0u8; FILE_BUF + DIRECT_ALIGN];
        let start = (DIRECT_ALIGN - mem.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        AlignedBuf { mem, start }
    }

    pub(crate) fn get(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + FILE_BUF]
    }

    /// The whole buffer, to read.
    pub(crate) fn filled(&self) -> &[u8] {
        &self.mem[self.start..self.start + FILE_BUF]
    }
}

/// The buffers a download's chunks are read into, each given back once the
/// last [`Bytes`] of its chunk is dropped: a long download zeroes a fresh
/// buffer only for its first few chunks, not for each of them.
#[derive(Clone, Default)]
struct Pool(std::sync::Arc<std::sync::Mutex<Vec<AlignedBuf>>>);

/// Buffers a [`Pool`] keeps at most (what a download holds in flight:
/// its read-ahead and its consumer's).
const POOL_MAX: usize = 4 * READ_AHEAD;

impl Pool {
    fn take(&self) -> AlignedBuf {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        kept.unwrap_or_else(AlignedBuf::new)
    }

    /// The first `n` bytes of `buf` as [`Bytes`], without a copy.
    fn bytes(&self, buf: AlignedBuf, n: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            buf: Some(buf),
            n,
            pool: self.clone(),
        })
    }
}

/// A chunk's buffer, back to its pool when dropped.
struct Pooled {
    buf: Option<AlignedBuf>,
    n: usize,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b.filled()[..self.n])
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let mut kept = self.pool.0.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() < POOL_MAX {
                kept.push(buf);
            }
        }
    }
}

/// Ask for direct I/O on the open file `file` (read side); `false` where
/// the platform or file system does not have it.
pub(crate) fn set_direct(file: &std::fs::File, on: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: `fd` is open for the duration of both calls.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                return false;
            }
            let flags = if on {
                flags | libc::O_DIRECT
            } else {
                flags & !libc::O_DIRECT
            };
            libc::fcntl(fd, libc::F_SETFL, flags) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, on);
        false
    }
}

/// Read the next chunk of `file` (at most [`FILE_BUF`] bytes; fewer only at
/// its end), directly while `direct` holds. A file system that refuses a
/// direct read turns `direct` off and is read through the page cache.
fn next_chunk(
    file: &mut std::fs::File,
    direct: &mut bool,
    mut buf: AlignedBuf,
) -> std::io::Result<(AlignedBuf, usize)> {
    use std::io::Read;
    let mut filled = 0;
    while filled < FILE_BUF {
        match file.read(&mut buf.get()[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if *direct && e.kind() == std::io::ErrorKind::InvalidInput => {
                tracing::debug!(error = %e, "direct read refused; reading through the page cache");
                *direct = false;
                set_direct(file, false);
            }
            Err(e) => return Err(e),
        }
        // A direct read stops short only at the end of the file, or at an
        // unaligned offset after one that did not: go on buffered.
        if *direct && filled % DIRECT_ALIGN != 0 {
            *direct = false;
            set_direct(file, false);
        }
    }
    Ok((buf, filled))
}

/// Read `file` from where it stands to its end on a blocking thread of its
/// own, chunk by chunk, into a stream that holds a few chunks ahead; with
/// `direct`, bypassing the page cache where the file system allows it
/// (for data read once, never for data that may be read again soon).
pub(crate) fn chunks(file: std::fs::File, direct: bool) -> crate::ByteStream {
    read_ahead(file, direct, None)
}

/// [`chunks`] of `file` (through the page cache), hashed on the thread that
/// reads them.
pub(crate) fn hashed_chunks(file: std::fs::File) -> crate::HashedDownload {
    let (done, digest) = tokio::sync::oneshot::channel();
    crate::HashedDownload {
        bytes: read_ahead(file, false, Some(done)),
        digest,
    }
}

/// What [`read_ahead`] hashes with: where the digest goes, the hasher, the
/// bytes so far.
type Hashing = (tokio::sync::oneshot::Sender<(String, u64)>, Sha256, u64);

/// Send the digest of everything hashed, once.
fn send_digest(hashing: &mut Option<Hashing>) {
    if let Some((done, hasher, total)) = hashing.take() {
        let _ = done.send((hex::encode(hasher.finalize()), total));
    }
}

/// [`chunks`], and when `digest` is given, the SHA-256 and size of every
/// byte read sent on it at the end of the file (before the stream ends).
fn read_ahead(
    mut file: std::fs::File,
    direct: bool,
    digest: Option<tokio::sync::oneshot::Sender<(String, u64)>>,
) -> crate::ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<crate::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut direct = direct && set_direct(&file, true);
        let pool = Pool::default();
        let mut hashing: Option<Hashing> = digest.map(|d| (d, Sha256::new(), 0u64));
        loop {
            match next_chunk(&mut file, &mut direct, pool.take()) {
                Ok((_, 0)) => {
                    send_digest(&mut hashing);
                    break;
                }
                Ok((mut buf, n)) => {
                    if let Some((_, hasher, total)) = &mut hashing {
                        hasher.update(&buf.get()[..n]);
                        *total += n as u64;
                    }
                    if tx.blocking_send(Ok(pool.bytes(buf, n))).is_err() {
                        break;
                    }
                    if n < FILE_BUF {
                        send_digest(&mut hashing);
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    break;
                }
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// SHA-256 and size of the file at `path` (blocking): one thread reads,
/// directly where it can, while this one hashes.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<std::io::Result<(AlignedBuf, usize)>>(READ_AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut direct = set_direct(&file, true);
            loop {
                let chunk = next_chunk(&mut file, &mut direct, AlignedBuf::new());
                let last = !matches!(chunk, Ok((_, n)) if n == FILE_BUF);
                if tx.send(chunk).is_err() || last {
                    break;
                }
            }
        });
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        for chunk in rx {
            let (mut buf, n) = chunk?;
            hasher.update(&buf.get()[..n]);
            size += n as u64;
        }
        Ok((hex::encode(hasher.finalize()), size))
    })
}

/// Writes a file in whole aligned blocks of [`FILE_BUF`] bytes, with
/// direct I/O where the platform and file system take it: the data goes to
/// disk as it arrives (a later fsync has only the size left to write), and
/// neither costs a copy into the page cache nor waits in its dirty-page
/// throttling. The last block is padded, then the file is cut back.
pub(crate) struct BlockWriter<'a> {
    file: &'a std::fs::File,
    direct: Option<std::fs::File>,
    buf: AlignedBuf,
    filled: usize,
    offset: u64,
}

impl<'a> BlockWriter<'a> {
    /// Write into `file` (open for writing, at its start).
    pub(crate) fn new(file: &'a std::fs::File) -> Self {
        BlockWriter {
            file,
            direct: reopen_direct(file),
            buf: AlignedBuf::new(),
            filled: 0,
            offset: 0,
        }
    }

    /// Write `data` after what was written so far.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.filled == 0
                && data.len() >= FILE_BUF
                && (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
            {
                // A whole aligned block (a full buffer of ours): straight out.
                write_block(&mut self.direct, self.file, &data[..FILE_BUF], self.offset)?;
                self.offset += FILE_BUF as u64;
                data = &data[FILE_BUF..];
                continue;
            }
            let n = data.len().min(FILE_BUF - self.filled);
            self.buf.get()[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == FILE_BUF {
                self.flush(FILE_BUF)?;
            }
        }
        Ok(())
    }

    /// Write the buffer's first `len` bytes (a whole number of blocks) at
    /// the offset, directly unless the file system refuses it.
    fn flush(&mut self, len: usize) -> std::io::Result<()> {
        write_block(
            &mut self.direct,
            self.file,
            &self.buf.get()[..len],
            self.offset,
        )?;
        self.offset += self.filled as u64;
        self.filled = 0;
        Ok(())
    }

    /// Write what is left; returns the size written.
    pub(crate) fn finish(mut self) -> std::io::Result<u64> {
        if self.filled > 0 {
            let size = self.offset + self.filled as u64;
            if self.direct.is_some() {
                let padded = self.filled.next_multiple_of(DIRECT_ALIGN);
                self.buf.get()[self.filled..padded].fill(0);
                self.flush(padded)?;
            } else {
                self.flush(self.filled)?;
            }
            self.file.set_len(size)?;
        }
        Ok(self.offset)
    }
}

/// Write `block` at `offset`: through `direct` (a whole number of aligned
/// blocks from aligned memory) unless the file system refuses it, which
/// turns `direct` off for good; else through `file` and the page cache.
fn write_block(
    direct: &mut Option<std::fs::File>,
    file: &std::fs::File,
    block: &[u8],
    offset: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if let Some(d) = direct {
        match d.write_all_at(block, offset) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                tracing::debug!(error = %e, "direct I/O refused; writing through the page cache");
                *direct = None;
            }
            done => return done,
        }
    }
    file.write_all_at(block, offset)
}

/// `file` opened a second time for direct I/O, where the platform and the
/// file system allow it: a new open file description (its own O_DIRECT
/// flag) of the very same inode, reached through `/proc/self/fd`.
fn reopen_direct(file: &std::fs::File) -> Option<std::fs::File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_gives_its_buffer_back_when_its_last_bytes_go() {
        let pool = Pool::default();
        let mut buf = pool.take();
        buf.get()[..3].copy_from_slice(b"abc");
        let at = buf.filled().as_ptr();
        let chunk = pool.bytes(buf, 3);
        assert_eq!(&chunk[..], b"abc");
        let part = chunk.slice(1..);
        drop(chunk);
        // A part still holds it.
        assert_ne!(pool.take().filled().as_ptr(), at);
        assert_eq!(&part[..], b"bc");
        drop(part);
        let again = pool.take();
        assert_eq!(again.filled().as_ptr(), at);
        assert!(pool.0.lock().unwrap().is_empty());
        // The pool keeps no more than it may.
        let many: Vec<Bytes> = (0..POOL_MAX + 3)
            .map(|_| pool.bytes(AlignedBuf::new(), 1))
            .collect();
        drop(many);
        assert_eq!(pool.0.lock().unwrap().len(), POOL_MAX);
    }

    #[tokio::test]
    async fn files_read_directly_are_read_whole_whatever_their_length() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            DIRECT_ALIGN,
            FILE_BUF - 1,
            FILE_BUF,
            3 * FILE_BUF + 4097,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(len.to_string());
            std::fs::write(&path, &data).unwrap();
            let (sha, size) = hash_file(&path).unwrap();
            assert_eq!(size, len as u64);
            assert_eq!(sha, hex::encode(Sha256::digest(&data)));
            for direct in [true, false] {
                let mut back = Vec::new();
                let mut s = chunks(std::fs::File::open(&path).unwrap(), direct);
                while let Some(c) = s.next().await {
                    back.extend_from_slice(&c.unwrap());
                }
                assert_eq!(back, data, "{len} (direct: {direct})");
            }
            // Hashed where it is read: the digest of the very bytes given,
            // there by the time the stream ends.
            let mut hashed = hashed_chunks(std::fs::File::open(&path).unwrap());
            let mut back = Vec::new();
            while let Some(c) = hashed.bytes.next().await {
                back.extend_from_slice(&c.unwrap());
            }
            assert_eq!(back, data, "{len} (hashed)");
            assert_eq!(
                hashed.digest.try_recv().unwrap(),
                (hex::encode(Sha256::digest(&data)), len as u64)
            );
        }
    }

    #[tokio::test]
    async fn a_hashed_read_left_early_gives_no_digest() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![7u8; 8 * FILE_BUF]).unwrap();
        let mut hashed = hashed_chunks(std::fs::File::open(&path).unwrap());
        assert_eq!(hashed.bytes.next().await.unwrap().unwrap().len(), FILE_BUF);
        drop(hashed.bytes);
        assert!(hashed.digest.await.is_err());
    }
}
