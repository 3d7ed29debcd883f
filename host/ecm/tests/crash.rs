//! A process killed between writing a blob and committing the metadata that
//! references it (and one killed while still writing) leaves no dangling
//! or missing content once the repository is opened again.

mod common;

use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::*;

const CHILD_ENV: &str = "WHARF_ECM_CRASH_CHILD";
const MODE_ENV: &str = "WHARF_ECM_CRASH_MODE";
const KEPT: &[u8] = b"committed before the crash";
/// Larger than the contents the store keeps in its database, so it is
/// written as a blob file before the commit.
static LOST: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| b"written as a blob, never committed\n".repeat(2048));
/// The caller's spooled copy of `LOST` (mode `commit-linked`).
const SPOOLED: &str = "spooled-lost.bin";

/// Kills the child (SIGKILL) when dropped, even if the test fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads forever after announcing that everything before was consumed.
struct Stall;

impl AsyncRead for Stall {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        println!("PARTIAL-WRITTEN");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        Poll::Pending
    }
}

struct StallingSource(Vec<u8>);

impl ContentSource for StallingSource {
    fn open(&self) -> Pin<Box<dyn Future<Output = Result<Upload>> + Send + '_>> {
        let data = self.0.clone();
        Box::pin(async move { Ok(Box::pin(std::io::Cursor::new(data).chain(Stall)) as Upload) })
    }
    fn len_hint(&self) -> Option<u64> {
        None
    }
}

#[test]
#[ignore = "child process of the crash tests"]
fn crash_child() {
    let state = std::env::var(CHILD_ENV).expect("run only as a child of the crash tests");
    let mode = std::env::var(MODE_ENV).unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (repo, _) = Embedded::open(&state).await.unwrap();
        let f = repo
            .ensure_folder(NodeId::ENTERPRISE, &["Crash".to_string()])
            .await
            .unwrap();
        store(
            &repo,
            &doc(f, "kept.txt", KEPT, CollisionPolicy::Reject),
            KEPT,
        )
        .await
        .unwrap();
        if mode == "partial" {
            let d = doc(f, "partial.bin", b"", CollisionPolicy::Reject);
            let _ = repo
                .store_document(&d, &StallingSource(vec![7u8; 3 << 20]))
                .await;
        } else {
            repo.set_before_commit_hook(|| {
                println!("BLOB-WRITTEN");
                use std::io::Write;
                let _ = std::io::stdout().flush();
                // Wait here to be killed.
                loop {
                    std::thread::sleep(Duration::from_secs(60));
                }
            });
            let d = doc(f, "lost.txt", &LOST[..], CollisionPolicy::Reject);
            let _ = if mode == "commit-linked" {
                // Spooled content handed over as a file the store may link.
                let path = std::path::Path::new(&state).join(SPOOLED);
                std::fs::write(&path, &LOST[..]).unwrap();
                repo.store_document(&d, &FileSource::new(path).immutable())
                    .await
            } else {
                store(&repo, &d, &LOST[..]).await
            };
        }
        unreachable!("the parent kills this process");
    });
}

/// Run the child until it prints `marker`, then kill it.
fn run_child_until(state: &std::path::Path, mode: &str, marker: &str) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, state)
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(child);
    let out = guard.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.trim_end().ends_with(marker) => break,
            Ok(_) => continue,
            Err(e) => panic!("child never reached {marker}: {e}"),
        }
    }
    guard.0.kill().unwrap();
    let status = guard.0.wait().unwrap();
    assert!(!status.success(), "the child was killed");
}

fn blob_exists(state: &std::path::Path, data: &[u8]) -> bool {
    let h = sha(data);
    state.join("blobs").join(&h[..2]).join(&h).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_blob_write_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    run_child_until(dir.path(), "commit", "BLOB-WRITTEN");
    assert!(
        blob_exists(dir.path(), &LOST[..]),
        "the crash happened after the blob was written"
    );

    let (repo, report) = Embedded::open(dir.path()).await.unwrap();
    assert_eq!(report.orphan_blobs_removed, 1, "{report:?}");
    assert!(report.missing_blobs.is_empty(), "{report:?}");
    assert!(
        !blob_exists(dir.path(), &LOST[..]),
        "the dangling blob is gone"
    );
    let f = repo.resolve_path("/Crash").await.unwrap();
    let kept = repo
        .child_by_name(f, "kept.txt")
        .await
        .unwrap()
        .expect("committed document kept");
    assert_eq!(fetch(&repo, kept.id, None).await, KEPT);
    assert!(repo.child_by_name(f, "lost.txt").await.unwrap().is_none());

    // Storing it again works, and a second reopen finds nothing to repair.
    let s = store(
        &repo,
        &doc(f, "lost.txt", &LOST[..], CollisionPolicy::Reject),
        &LOST[..],
    )
    .await
    .unwrap();
    assert_eq!(s.outcome, StoreOutcome::Created);
    drop(repo);
    let (repo, report) = Embedded::open(dir.path()).await.unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(fetch(&repo, s.node, None).await, &LOST[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_linking_a_spooled_file() {
    let dir = tempfile::tempdir().unwrap();
    run_child_until(dir.path(), "commit-linked", "BLOB-WRITTEN");
    let spooled = dir.path().join(SPOOLED);
    let h = sha(&LOST[..]);
    let blob = dir.path().join("blobs").join(&h[..2]).join(&h);
    {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (
            std::fs::metadata(&blob).unwrap(),
            std::fs::metadata(&spooled).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "the blob is a link to the spooled file");
    }
    let (repo, report) = Embedded::open(dir.path()).await.unwrap();
    assert_eq!(report.orphan_blobs_removed, 1, "{report:?}");
    assert!(report.missing_blobs.is_empty(), "{report:?}");
    assert!(!blob.exists(), "the dangling blob is gone");
    assert_eq!(
        std::fs::read(&spooled).unwrap(),
        &LOST[..],
        "the caller's file is untouched"
    );
    let f = repo.resolve_path("/Crash").await.unwrap();
    assert!(repo.child_by_name(f, "lost.txt").await.unwrap().is_none());
    // Filing it again works; then the caller removes its copy.
    let s = repo
        .store_document(
            &doc(f, "lost.txt", &LOST[..], CollisionPolicy::Reject),
            &FileSource::new(&spooled).immutable(),
        )
        .await
        .unwrap();
    std::fs::remove_file(&spooled).unwrap();
    drop(repo);
    let (repo, report) = Embedded::open(dir.path()).await.unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(fetch(&repo, s.node, None).await, &LOST[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_while_writing_a_blob() {
    let dir = tempfile::tempdir().unwrap();
    run_child_until(dir.path(), "partial", "PARTIAL-WRITTEN");
    let temps = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(temps, 1, "a partial temporary file was left by the crash");
    let (repo, report) = Embedded::open(dir.path()).await.unwrap();
    assert_eq!(report.temp_files_removed, 1, "{report:?}");
    assert_eq!(report.orphan_blobs_removed, 0, "{report:?}");
    assert!(report.missing_blobs.is_empty());
    let f = repo.resolve_path("/Crash").await.unwrap();
    assert!(
        repo.child_by_name(f, "partial.bin")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(repo.children(f).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_opener_does_not_reconcile_the_owners_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let (owner, _) = Embedded::open(dir.path()).await.unwrap();
    // An unreferenced blob, as the owner has between blob write and commit.
    let h = sha(&LOST[..]);
    let fan_out = dir.path().join("blobs").join(&h[..2]);
    std::fs::create_dir_all(&fan_out).unwrap();
    std::fs::write(fan_out.join(&h), &LOST[..]).unwrap();
    // Within one process the lock is per open file, so a second open
    // stands for a second process here.
    let (viewer, report) = Embedded::open(dir.path()).await.unwrap();
    assert_eq!(report, Default::default());
    assert!(blob_exists(dir.path(), &LOST[..]));
    drop(viewer);
    drop(owner);
    let (_, report) = Embedded::open(dir.path()).await.unwrap();
    assert_eq!(report.orphan_blobs_removed, 1);
}
