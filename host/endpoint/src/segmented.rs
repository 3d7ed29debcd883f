//! Segmented download: one large remote file fetched as byte ranges over
//! several connections at once, each range written at its offset in a local
//! file. A single FTP or SFTP stream is bounded by one connection's window;
//! ranges in parallel use the link (and both cores) fully.

use std::path::Path;

use futures::future::try_join_all;
use tokio::io::AsyncReadExt;

use crate::{Endpoint, Error, Progress, RemotePath, Result};

/// Below this size a file is fetched in one stream: more connections cost
/// more than they bring.
pub const MIN_SEGMENT: u64 = 32 * 1024 * 1024;

/// Bytes moved per read/write: large, so the blocking-pool hops of file
/// writes stay few.
const CHUNK: usize = 1024 * 1024;

/// How many segments a file of `size` bytes is split into, at most `max`.
pub fn segments_for(size: u64, max: usize) -> usize {
    usize::try_from(size / MIN_SEGMENT)
        .unwrap_or(usize::MAX)
        .clamp(1, max.max(1))
}

/// Download `path` (of `size` bytes, as listed) into the local file `dest`
/// using up to `max_segments` ranges in parallel. `dest` is a new file: one
/// already there is removed, never rewritten in place.
/// Returns the bytes written. Fails if the remote file is shorter or longer
/// than `size` (it changed while being read); `dest` then holds partial
/// content and is the caller's to remove.
pub async fn download_segmented(
    ep: &dyn Endpoint,
    path: &RemotePath,
    size: u64,
    dest: &Path,
    max_segments: usize,
) -> Result<u64> {
    let n = segments_for(size, max_segments);
    download_ranges(ep, path, size, dest, n).await
}

/// Download `path` into `dest` as exactly `segments` ranges in parallel
/// (whatever the size); see [`download_segmented`].
pub async fn download_ranges(
    ep: &dyn Endpoint,
    path: &RemotePath,
    size: u64,
    dest: &Path,
    segments: usize,
) -> Result<u64> {
    download_ranges_with_progress(ep, path, size, dest, segments, None).await
}

/// [`download_ranges`], reporting the bytes written so far (all ranges
/// together) to `progress` after every chunk.
pub async fn download_ranges_with_progress(
    ep: &dyn Endpoint,
    path: &RemotePath,
    size: u64,
    dest: &Path,
    segments: usize,
    progress: Option<&dyn Progress>,
) -> Result<u64> {
    download(ep, path, size, dest, segments, progress, false).await
}

/// [`download_segmented`], durably: the whole chunks go to disk with direct
/// I/O (no page-cache copy to write back later), and the file is fsynced
/// before this returns, so its bytes survive a power loss. Where the file
/// system refuses direct I/O the chunks go through the page cache.
pub async fn download_durable(
    ep: &dyn Endpoint,
    path: &RemotePath,
    size: u64,
    dest: &Path,
    max_segments: usize,
) -> Result<u64> {
    let n = segments_for(size, max_segments);
    download_ranges_durable(ep, path, size, dest, n, None).await
}

/// [`download_durable`] as exactly `segments` ranges (whatever the size),
/// reporting the bytes written so far to `progress` after every chunk.
pub async fn download_ranges_durable(
    ep: &dyn Endpoint,
    path: &RemotePath,
    size: u64,
    dest: &Path,
    segments: usize,
    progress: Option<&dyn Progress>,
) -> Result<u64> {
    let got = download(ep, path, size, dest, segments, progress, true).await?;
    tokio::fs::File::open(dest).await?.sync_all().await?;
    Ok(got)
}

/// Alignment of direct I/O buffers, offsets and lengths.
const ALIGN: usize = 4096;

/// The local file `dest` opened for direct I/O, when asked for and the
/// platform and file system allow it.
fn open_direct(dest: &Path, direct: bool) -> Option<std::fs::File> {
    if !direct {
        return None;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(dest)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dest;
        None
    }
}

/// Whether `a` and `b` are open on the same file (not on two files that
/// took turns at one path).
fn same_file(a: &std::fs::File, b: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Write `data` at `offset` of `file`, through `direct` when the write is
/// aligned for it (falling back to `file` if it is refused).
fn write_at(
    file: &std::fs::File,
    direct: Option<&std::fs::File>,
    data: &[u8],
    offset: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let aligned = data.len().is_multiple_of(ALIGN)
        && offset.is_multiple_of(ALIGN as u64)
        && (data.as_ptr() as usize).is_multiple_of(ALIGN);
    if let Some(d) = direct.filter(|_| aligned) {
        match d.write_all_at(data, offset) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
            done => return done,
        }
    }
    file.write_all_at(data, offset)
}

async fn download(
    ep: &dyn Endpoint,
    path: &RemotePath,
    size: u64,
    dest: &Path,
    segments: usize,
    progress: Option<&dyn Progress>,
    direct: bool,
) -> Result<u64> {
    let total = std::sync::atomic::AtomicU64::new(0);
    let total = &total;
    // A new file, never one rewritten in place: the one there may share
    // its data with a stored copy (a hard link).
    match std::fs::remove_file(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    file.set_len(size)?;
    let n = segments.max(1) as u64;
    // Ranges of whole chunks, so every chunk but the file's last is aligned
    // for direct I/O.
    let step = size.div_ceil(n).div_ceil(CHUNK as u64) * CHUNK as u64;
    let ranges: Vec<(u64, u64)> = (0..n)
        .map(|i| (i * step, ((i + 1) * step).min(size)))
        .filter(|(start, end)| end > start)
        .collect();
    let last = ranges.len().saturating_sub(1);
    let direct_file = open_direct(dest, direct)
        .filter(|d| same_file(&file, d))
        .map(std::sync::Arc::new);
    let file = std::sync::Arc::new(file);
    let parts = ranges.into_iter().enumerate().map(|(i, (start, end))| {
        let (file, direct_file) = (file.clone(), direct_file.clone());
        async move {
            let stream = ep.open_read(path, start).await?;
            let want = end - start;
            let mut limited = stream.take(want);
            // One chunk at an aligned address within a slightly larger
            // allocation (direct I/O wants aligned memory too).
            let mut raw = vec![0u8; CHUNK + ALIGN];
            let at = raw.as_ptr().align_offset(ALIGN);
            let mut got = 0u64;
            loop {
                // Fill the chunk, then write it at its offset on a blocking
                // thread, handing the buffer over rather than copying it.
                let mut filled = 0;
                while filled < CHUNK {
                    let n = limited
                        .read(&mut raw[at + filled..at + CHUNK])
                        .await
                        .map_err(Error::Connection)?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                let (f, d, offset) = (file.clone(), direct_file.clone(), start + got);
                raw = tokio::task::spawn_blocking(move || {
                    write_at(&f, d.as_deref(), &raw[at..at + filled], offset).map(|()| raw)
                })
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
                got += filled as u64;
                let done = total.fetch_add(filled as u64, std::sync::atomic::Ordering::Relaxed)
                    + filled as u64;
                if let Some(p) = progress {
                    p.advanced(done);
                }
            }
            if got != want {
                return Err(Error::Protocol(format!(
                    "{path}: range at {start} ended after {got} of {want} bytes (the file changed?)"
                )));
            }
            // The last range must also be the end of the file.
            if i == last {
                let mut rest = limited.into_inner();
                let mut probe = [0u8; 1];
                if rest.read(&mut probe).await.map_err(Error::Connection)? != 0 {
                    return Err(Error::Protocol(format!(
                        "{path}: longer than the {size} bytes listed (the file changed?)"
                    )));
                }
            }
            Ok::<u64, Error>(got)
        }
    });
    let written: u64 = try_join_all(parts).await?.into_iter().sum();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_writes_take_the_page_cache_and_land_where_they_should() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, vec![0u8; 3 * ALIGN]).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&dest).unwrap();
        let direct = open_direct(&dest, true);
        let mut raw = vec![7u8; 2 * ALIGN + ALIGN];
        let at = raw.as_ptr().align_offset(ALIGN);
        // Aligned: may go direct. Unaligned length and offset: buffered.
        write_at(&file, direct.as_ref(), &raw[at..at + ALIGN], 0).unwrap();
        raw[at] = 9;
        write_at(&file, direct.as_ref(), &raw[at..at + 10], ALIGN as u64 + 5).unwrap();
        let back = std::fs::read(&dest).unwrap();
        assert!(back[..ALIGN].iter().all(|&b| b == 7));
        assert_eq!(&back[ALIGN..ALIGN + 5], &[0; 5]);
        assert_eq!(back[ALIGN + 5], 9);
        assert!(back[ALIGN + 6..ALIGN + 15].iter().all(|&b| b == 7));
        assert!(back[ALIGN + 15..].iter().all(|&b| b == 0));
    }

    #[test]
    fn small_files_are_one_segment() {
        assert_eq!(segments_for(0, 4), 1);
        assert_eq!(segments_for(MIN_SEGMENT - 1, 4), 1);
        assert_eq!(segments_for(3 * MIN_SEGMENT, 4), 3);
        assert_eq!(segments_for(1 << 30, 4), 4);
        assert_eq!(segments_for(1 << 30, 0), 1);
    }
}
