//! Stream helpers: progress hooks, stall timeouts and the bounded-memory copy loop.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf,
};
use tokio::time::{Instant, Sleep};

use crate::error::{Error, Result};

/// Buffer size for reading an upload that comes without a buffer of its own (wrap it in a
/// `tokio::io::BufReader::with_capacity(COPY_BUF, ..)`): large enough for line-rate
/// loopback, small enough to keep memory bounded regardless of file size.
pub const COPY_BUF: usize = 256 * 1024;

/// Called as a large transfer advances.
pub trait Progress: Send + Sync {
    /// `done` bytes have been transferred so far.
    fn advanced(&self, done: u64);
}

impl<F: Fn(u64) + Send + Sync> Progress for F {
    fn advanced(&self, done: u64) {
        self(done)
    }
}

/// Wraps a reader and reports the running byte count to a [`Progress`] hook.
pub struct ProgressReader<R, P> {
    inner: R,
    hook: P,
    done: u64,
}

impl<R, P> ProgressReader<R, P> {
    /// Starts counting at `start` (the resume offset, for instance).
    pub fn new(inner: R, hook: P, start: u64) -> Self {
        Self {
            inner,
            hook,
            done: start,
        }
    }
}

impl<R: AsyncRead + Unpin, P: Progress + Unpin> AsyncRead for ProgressReader<R, P> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.done += n;
            let done = self.done;
            self.hook.advanced(done);
        }
        r
    }
}

/// Fails a read that makes no progress for `stall`.
pub struct StallReader<R> {
    inner: R,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<R> StallReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, stall: Duration) -> Self {
        Self {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
        }
    }

    /// Returns the wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for StallReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let deadline = Instant::now() + this.stall;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(r)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Error::Timeout {
                    what: "stalled transfer",
                    after: this.stall,
                }
                .into_io())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Which side of a copy failed.
pub(crate) enum CopyError {
    /// Reading the source failed (the destination connection may still be fine).
    Source(Error),
    /// Writing to the destination failed or stalled.
    Sink(Error),
}

impl From<CopyError> for Error {
    fn from(e: CopyError) -> Self {
        match e {
            CopyError::Source(e) | CopyError::Sink(e) => e,
        }
    }
}

/// Copies `src` into `dst` straight from the source's own buffer (no copy of ours in
/// between), at most [`COPY_BUF`] bytes per write, failing any read or write that stalls for
/// `stall`, and reporting progress.
/// Flushes `dst` at the end. Returns the bytes copied.
pub(crate) async fn copy_bounded<W: AsyncWrite + Unpin + ?Sized>(
    src: &mut (dyn AsyncBufRead + Send + Unpin),
    dst: &mut W,
    stall: Duration,
    progress: Option<&dyn Progress>,
) -> std::result::Result<u64, CopyError> {
    let timeout = |what| Error::Timeout { what, after: stall };
    let mut done = 0u64;
    loop {
        let chunk = fill_within(src, stall).await.map_err(CopyError::Source)?;
        if chunk.is_empty() {
            break;
        }
        // At most COPY_BUF bytes per write: the stall timeout and the progress hook keep
        // their grain whatever the source holds at once.
        let n = chunk.len().min(COPY_BUF);
        tokio::time::timeout(stall, dst.write_all(&chunk[..n]))
            .await
            .map_err(|_| CopyError::Sink(timeout("stalled upload")))?
            .map_err(|e| CopyError::Sink(Error::Connection(e)))?;
        src.consume(n);
        done += n as u64;
        if let Some(p) = progress {
            p.advanced(done);
        }
    }
    tokio::time::timeout(stall, dst.flush())
        .await
        .map_err(|_| CopyError::Sink(timeout("stalled upload")))?
        .map_err(|e| CopyError::Sink(Error::Connection(e)))?;
    Ok(done)
}

/// The next bytes `src` holds (empty at its end), failing if they take longer than `stall`.
async fn fill_within(
    src: &mut (dyn AsyncBufRead + Send + Unpin),
    stall: Duration,
) -> Result<&[u8]> {
    tokio::time::timeout(stall, src.fill_buf())
        .await
        .map_err(|_| Error::Timeout {
            what: "reading the upload source",
            after: stall,
        })?
        .map_err(Error::Io)
}

/// Reads the beginning of `src` into memory, as long as it stays within `limit` bytes:
/// returns those bytes, and whether they are the whole source (its end was reached).
/// A source larger than `limit` is left where the returned bytes end; what `src` holds
/// in its buffer beyond them is not consumed. Each read fails if it stalls for `stall`.
pub(crate) async fn read_head(
    src: &mut (dyn AsyncBufRead + Send + Unpin),
    limit: usize,
    stall: Duration,
) -> Result<(Vec<u8>, bool)> {
    let mut head = Vec::new();
    loop {
        let chunk = fill_within(src, stall).await?;
        if chunk.is_empty() {
            return Ok((head, true));
        }
        if head.len() + chunk.len() > limit {
            return Ok((head, false));
        }
        head.extend_from_slice(chunk);
        let n = chunk.len();
        src.consume(n);
    }
}

/// Reads everything from a stream into memory; for small files and tests.
pub async fn read_all(mut r: impl AsyncRead + Unpin) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.map_err(Error::Io)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn a_head_is_the_whole_source_only_when_its_end_was_reached() {
        let stall = Duration::from_secs(5);
        // Delivered in pieces: gathered until the end.
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut src = tokio::io::BufReader::with_capacity(1000, &data[..]);
        let (head, whole) = read_head(&mut src, 10_000, stall).await.unwrap();
        assert!(whole);
        assert_eq!(head, data);
        // One byte more than the limit: the head stops at a piece's end, and the rest
        // (the piece that did not fit included) is still in the source.
        let mut src = tokio::io::BufReader::with_capacity(1000, &data[..]);
        let (head, whole) = read_head(&mut src, 9_999, stall).await.unwrap();
        assert!(!whole);
        assert_eq!(head, data[..9_000]);
        let mut rest = Vec::new();
        src.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, data[9_000..]);
        // Nothing at all is a whole (empty) source.
        let mut src = &b""[..];
        assert_eq!(
            read_head(&mut src, 10, stall).await.unwrap(),
            (vec![], true)
        );
    }

    #[tokio::test]
    async fn progress_counts_from_the_start_offset() {
        let seen = Arc::new(AtomicU64::new(0));
        let hook = {
            let seen = seen.clone();
            move |done: u64| seen.store(done, Ordering::Relaxed)
        };
        let data = vec![1u8; 100_000];
        let r = ProgressReader::new(&data[..], hook, 500);
        assert_eq!(read_all(r).await.unwrap().len(), 100_000);
        assert_eq!(seen.load(Ordering::Relaxed), 100_500);
    }

    #[tokio::test]
    async fn a_stalled_reader_times_out() {
        let (_tx, rx) = tokio::io::duplex(16);
        let r = StallReader::new(rx, Duration::from_millis(50));
        let err = read_all(r).await.unwrap_err();
        assert!(matches!(err, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut));
    }
}
