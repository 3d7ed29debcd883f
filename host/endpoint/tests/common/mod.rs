//! Shared checks every endpoint implementation must pass against a real store.
#![allow(dead_code)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use wharf_endpoint::{CommonConfig, Endpoint, EntryKind, RemotePath, RetryPolicy};

/// Parses a path that the test knows to be valid.
pub fn p(s: &str) -> RemotePath {
    RemotePath::parse(s).unwrap()
}

/// Deterministic, incompressible-looking test bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut r = PatternReader::new(len as u64, seed);
    let mut v = vec![0u8; len];
    r.fill(&mut v);
    v
}

/// An endless-looking byte source of a given length that holds no more than one buffer.
pub struct PatternReader {
    remaining: u64,
    state: u64,
}

impl PatternReader {
    /// `len` bytes derived from `seed`.
    pub fn new(len: u64, seed: u64) -> Self {
        Self {
            remaining: len,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let b = self.state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Whole 8-byte steps keep the stream identical however it is chunked.
        let n = (buf.remaining() as u64).min(self.remaining) as usize;
        let n = if n as u64 == self.remaining {
            n
        } else {
            n & !7
        };
        if n == 0 {
            return Poll::Ready(Ok(()));
        }
        let dst = buf.initialize_unfilled_to(n);
        self.fill(&mut dst[..n]);
        buf.advance(n);
        self.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

/// SHA-256 of everything a stream yields, and its length.
pub async fn hash_stream(mut r: impl AsyncRead + Unpin) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Quick settings for tests: short timeouts and backoff.
pub fn quick_common() -> CommonConfig {
    CommonConfig {
        max_connections: 4,
        connect_timeout: Duration::from_secs(10),
        stall_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        },
        temp: Default::default(),
    }
}

async fn read_all(ep: &dyn Endpoint, path: &RemotePath, offset: u64) -> Vec<u8> {
    let mut r = ep.open_read(path, offset).await.unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

/// List, read (whole and from an offset), atomic write and overwrite, rename, delete,
/// mkdir -p, exists/stat and progress reporting.
pub async fn conformance(ep: &dyn Endpoint) {
    let dir = p("in/sub");
    ep.mkdir_all(&dir).await.unwrap();
    ep.mkdir_all(&dir).await.unwrap(); // already there: fine
    assert!(ep.list(&dir).await.unwrap().is_empty());

    let data = pattern(300_000, 1);
    let a = dir.join("a.bin").unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let hook = {
        let seen = seen.clone();
        move |done: u64| {
            seen.store(done, Ordering::Relaxed);
        }
    };
    let n = ep
        .write_atomic(&a, &mut &data[..], Some(&hook))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(
        seen.load(Ordering::Relaxed),
        n,
        "progress reached the total"
    );

    assert!(ep.exists(&a).await.unwrap());
    let st = ep.stat(&a).await.unwrap().unwrap();
    assert_eq!((st.size, st.kind), (n, EntryKind::File));

    let list = ep.list(&dir).await.unwrap();
    assert_eq!(list.len(), 1, "only the final name remains: {list:?}");
    assert_eq!(list[0].name, "a.bin");
    assert_eq!(list[0].path, a);
    assert_eq!(list[0].size, n);
    assert_eq!(list[0].kind, EntryKind::File);
    let mtime = list[0].mtime.expect("listing has a time");
    let age = std::time::SystemTime::now()
        .duration_since(mtime)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(600),
        "mtime {mtime:?} is off by {age:?}"
    );

    let root = ep.list(&RemotePath::root()).await.unwrap();
    assert!(
        root.iter()
            .any(|e| e.name == "in" && e.kind == EntryKind::Dir),
        "{root:?}"
    );
    let in_stat = ep.stat(&p("in")).await.unwrap().unwrap();
    assert_eq!(in_stat.kind, EntryKind::Dir);

    assert_eq!(read_all(ep, &a, 0).await, data);
    assert_eq!(read_all(ep, &a, 123_457).await, &data[123_457..]);
    assert!(read_all(ep, &a, n).await.is_empty());

    // Overwrite atomically with different content.
    let data2 = pattern(70_001, 2);
    ep.write_atomic(&a, &mut &data2[..], None).await.unwrap();
    assert_eq!(read_all(ep, &a, 0).await, data2);
    assert_eq!(ep.list(&dir).await.unwrap().len(), 1);

    // An empty file.
    let empty = dir.join("empty.txt").unwrap();
    assert_eq!(
        ep.write_atomic(&empty, &mut &b""[..], None).await.unwrap(),
        0
    );
    assert_eq!(ep.stat(&empty).await.unwrap().unwrap().size, 0);
    ep.delete(&empty).await.unwrap();

    // Rename across folders.
    ep.mkdir_all(&p("done")).await.unwrap();
    let b = p("done/b.bin");
    ep.rename(&a, &b).await.unwrap();
    assert!(!ep.exists(&a).await.unwrap());
    assert_eq!(read_all(ep, &b, 0).await, data2);

    ep.delete(&b).await.unwrap();
    assert!(!ep.exists(&b).await.unwrap());
    assert!(ep.stat(&p("no/such/file")).await.unwrap().is_none());

    // Missing files fail cleanly and at once (permanent errors are not retried).
    let started = std::time::Instant::now();
    let err = match ep.open_read(&p("in/missing.bin"), 0).await {
        Ok(mut r) => {
            let mut v = Vec::new();
            r.read_to_end(&mut v).await.expect_err("missing file read")
        }
        Err(e) => {
            assert!(!e.is_transient(), "{e}");
            std::io::Error::other(e)
        }
    };
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    assert!(ep.delete(&p("in/missing.bin")).await.is_err());
}

/// Uploads a file slowly while another task lists the folder over and over: the final name
/// must never be seen with fewer bytes than the whole file.
pub async fn atomic_upload_is_never_seen_partial(ep: Arc<dyn Endpoint>) {
    let dir = p("atomic");
    ep.mkdir_all(&dir).await.unwrap();
    let target = dir.join("big.dat").unwrap();
    let total = 4 * 1024 * 1024usize;
    let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    let producer = tokio::spawn(async move {
        let data = pattern(total, 9);
        for chunk in data.chunks(256 * 1024) {
            tx.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = {
        let ep = ep.clone();
        let dir = dir.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let (mut polls, mut saw_temp, mut saw_final) = (0u32, false, false);
            while !done.load(Ordering::Acquire) {
                for e in ep.list(&dir).await.unwrap() {
                    if e.name == "big.dat" {
                        assert_eq!(e.size, total as u64, "final name with partial content");
                        saw_final = true;
                    } else {
                        saw_temp = true;
                    }
                }
                polls += 1;
            }
            (polls, saw_temp, saw_final)
        })
    };
    let mut rx = tokio::io::BufReader::with_capacity(wharf_endpoint::io::COPY_BUF, rx);
    let n = ep.write_atomic(&target, &mut rx, None).await.unwrap();
    done.store(true, Ordering::Release);
    producer.await.unwrap();
    let (polls, saw_temp, _) = lister.await.unwrap();
    assert_eq!(n, total as u64);
    assert!(
        polls > 3,
        "the lister ran during the upload ({polls} polls)"
    );
    assert!(saw_temp, "the upload went through a temporary name");
    let names: Vec<_> = ep
        .list(&dir)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["big.dat".to_string()]);
}

/// Streams `len` bytes up and back down, checking content and the process's peak memory.
pub async fn big_round_trip(ep: &dyn Endpoint, len: u64, max_rss: u64) {
    let peak_reset = wharf_tests::servers::reset_peak_rss();
    let path = p("big/round.bin");
    ep.mkdir_all(&p("big")).await.unwrap();
    let (want, _) = hash_stream(PatternReader::new(len, 77)).await.unwrap();
    let t = std::time::Instant::now();
    let n = ep
        .write_atomic(
            &path,
            &mut tokio::io::BufReader::with_capacity(
                wharf_endpoint::io::COPY_BUF,
                PatternReader::new(len, 77),
            ),
            None,
        )
        .await
        .unwrap();
    let up = t.elapsed();
    assert_eq!(n, len);
    let t = std::time::Instant::now();
    let (got, m) = hash_stream(ep.open_read(&path, 0).await.unwrap())
        .await
        .unwrap();
    let down = t.elapsed();
    assert_eq!((got, m), (want, len));
    let rss = wharf_tests::servers::peak_rss_bytes();
    eprintln!(
        "round trip of {len} bytes: up {:.0} MB/s, down {:.0} MB/s, peak RSS {:.1} MiB (reset: {peak_reset})",
        len as f64 / up.as_secs_f64() / 1e6,
        len as f64 / down.as_secs_f64() / 1e6,
        rss as f64 / 1048576.0
    );
    assert!(rss < max_rss, "peak RSS {rss} exceeds {max_rss}");
    ep.delete(&path).await.unwrap();
}

/// A file read as parallel ranges (or durably) equals the file; a wrong
/// listed size is detected whichever way it is wrong. `seed` puts `data` at `rel` on the
/// endpoint's server.
pub async fn ranged_download_matches(ep: &dyn Endpoint, seed: impl Fn(&str, &[u8])) {
    let data = pattern(3 * 1024 * 1024 + 7, 42);
    seed("ranged/big.bin", &data);
    let remote = p("ranged/big.bin");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.bin");
    for segments in [1, 4] {
        let n = wharf_endpoint::segmented::download_ranges(
            ep,
            &remote,
            data.len() as u64,
            &dest,
            segments,
        )
        .await
        .unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(
            std::fs::read(&dest).unwrap() == data,
            "{segments} ranges differ"
        );
    }
    // Durably: whole chunks with direct I/O, the 7-byte tail through the
    // page cache, the file fsynced. A file already at the destination is
    // replaced, never rewritten in place: a hard link to it keeps its bytes.
    let durable = dir.path().join("durable.bin");
    let linked = dir.path().join("linked.bin");
    std::fs::write(&durable, b"kept elsewhere").unwrap();
    std::fs::hard_link(&durable, &linked).unwrap();
    let n = wharf_endpoint::download_durable(ep, &remote, data.len() as u64, &durable, 4)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(
        std::fs::read(&durable).unwrap() == data,
        "durable copy differs"
    );
    assert_eq!(std::fs::read(&linked).unwrap(), b"kept elsewhere");
    let shorter =
        wharf_endpoint::segmented::download_ranges(ep, &remote, data.len() as u64 - 1, &dest, 4)
            .await;
    assert!(
        matches!(shorter, Err(wharf_endpoint::Error::Protocol(_))),
        "{shorter:?}"
    );
    let longer =
        wharf_endpoint::segmented::download_ranges(ep, &remote, data.len() as u64 + 1, &dest, 4)
            .await;
    assert!(
        matches!(longer, Err(wharf_endpoint::Error::Protocol(_))),
        "{longer:?}"
    );
}
