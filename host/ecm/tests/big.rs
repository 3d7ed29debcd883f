//! A 1 GiB document through the client → facade → embedded with the
//! client's peak memory under 64 MiB. The facade runs in a child process so
//! the peak measured here is the client's alone. Gated: WHARF_BIG_TESTS=1.

mod common;

use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::facade::Facade;
use wharf_ecm::otcs::OtcsClient;
use wharf_ecm::*;

const CHILD_ENV: &str = "WHARF_ECM_FACADE_CHILD";
const SIZE: u64 = 1 << 30;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Deterministic pseudo-random bytes, generated on the fly.
struct Generated {
    left: u64,
    state: u64,
}

impl Generated {
    fn new(len: u64) -> Self {
        Generated {
            left: len,
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            // xorshift64*
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        self.left -= n as u64;
        n
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let want = buf.remaining().min(64 * 1024);
        let mut tmp = [0u8; 64 * 1024];
        let n = self.fill(&mut tmp[..want]);
        buf.put_slice(&tmp[..n]);
        Poll::Ready(Ok(()))
    }
}

struct GeneratedSource(u64);

impl ContentSource for GeneratedSource {
    fn open(&self) -> Pin<Box<dyn Future<Output = Result<Upload>> + Send + '_>> {
        let len = self.0;
        Box::pin(async move { Ok(Box::pin(Generated::new(len)) as Upload) })
    }
    fn len_hint(&self) -> Option<u64> {
        Some(self.0)
    }
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
#[ignore = "child process of the big test"]
fn facade_child() {
    let state = std::env::var(CHILD_ENV).expect("run only as a child of the big test");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (repo, _) = Embedded::open(&state).await.unwrap();
        let f = Facade::start(repo, facade_config(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        println!("LISTENING {}", f.addr());
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_through_the_facade_in_bounded_memory() {
    if std::env::var("WHARF_BIG_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set WHARF_BIG_TESTS=1 to run the 1 GiB test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "facade_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(child);
    let mut lines = BufReader::new(guard.0.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("child exited").unwrap();
        if let Some((_, a)) = line.split_once("LISTENING ") {
            break a.trim().to_string();
        }
    };
    let mut cfg = client_config(&format!("http://{addr}/api"));
    cfg.content_timeout = Duration::from_secs(600);
    let client = OtcsClient::new(cfg).unwrap();
    client.wait_ready(Duration::from_secs(30)).await.unwrap();

    let mut g = Generated::new(SIZE);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = g.fill(&mut buf);
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let digest = hex::encode(h.finalize());
    drop(buf);

    let f = client
        .ensure_folder(NodeId::ENTERPRISE, &["Big".to_string()])
        .await
        .unwrap();
    // Reset the peak so it measures the transfer.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmHWM:");
    let d = NewDocument {
        parent: f,
        name: "media-package.bin".into(),
        description: None,
        mime_type: "application/octet-stream".into(),
        sha256: digest.clone(),
        categories: vec![],
        policy: CollisionPolicy::Reject,
    };
    let t = Instant::now();
    let s = client
        .store_document(&d, &GeneratedSource(SIZE))
        .await
        .unwrap();
    let up = t.elapsed();
    let peak_up = status_kib("VmHWM:");

    let t = Instant::now();
    let mut stream = client.download(s.node, None).await.unwrap();
    let mut h = Sha256::new();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len() as u64;
        h.update(&chunk);
    }
    let down = t.elapsed();
    let peak = status_kib("VmHWM:");
    assert_eq!(total, SIZE);
    assert_eq!(hex::encode(h.finalize()), digest);
    assert_eq!(client.node(s.node).await.unwrap().size, Some(SIZE));
    let mib = |kib: u64| kib as f64 / 1024.0;
    eprintln!(
        "1 GiB upload {:.1} s ({:.0} MB/s), download {:.1} s ({:.0} MB/s); client peak RSS {:.1} MiB (before {:.1} MiB, after upload {:.1} MiB)",
        up.as_secs_f64(),
        SIZE as f64 / 1e6 / up.as_secs_f64(),
        down.as_secs_f64(),
        SIZE as f64 / 1e6 / down.as_secs_f64(),
        mib(peak),
        mib(before),
        mib(peak_up)
    );
    assert!(peak < 64 * 1024, "client peak RSS {:.1} MiB", mib(peak));
}
