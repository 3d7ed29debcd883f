//! The embedded store's ways of writing content: in memory, a local file
//! (copied, or hard-linked when it promises to stay unmodified), a file
//! staged by this crate (adopted while unchanged), and any other stream.
//! Each verifies the declared checksum before the content gets a blob name,
//! deduplicates, and leaves no temporary files.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use common::*;
use wharf_ecm::embedded::{Embedded, INLINE_BLOB, Reconciled};
use wharf_ecm::*;

/// Deterministic pseudo-random bytes.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every file below the blob store and the temporary folder.
fn files(state: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&state.join("blobs"), &mut out);
    walk(&state.join("tmp"), &mut out);
    out.sort();
    out
}

fn blob(state: &Path, sha: &str) -> PathBuf {
    state.join("blobs").join(&sha[..2]).join(sha)
}

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// A source that only streams (no in-memory or file shortcut).
struct StreamOnly(Vec<u8>);

impl ContentSource for StreamOnly {
    fn open(&self) -> Pin<Box<dyn Future<Output = Result<Upload>> + Send + '_>> {
        let data = self.0.clone();
        Box::pin(async move { Ok(Box::pin(std::io::Cursor::new(data)) as Upload) })
    }
    fn len_hint(&self) -> Option<u64> {
        None
    }
}

/// `data` as each kind of source: in memory, a file (copied, or linked as
/// immutable; `path` holds `data`), and a stream only.
fn every_source(data: &[u8], path: &Path) -> Vec<Box<dyn ContentSource>> {
    vec![
        Box::new(BytesSource(data.to_vec().into())),
        Box::new(FileSource::new(path)),
        Box::new(FileSource::new(path).immutable()),
        Box::new(StreamOnly(data.to_vec())),
    ]
}

/// Sizes around the paths' limits (above [`INLINE_BLOB`], which stays in
/// the database): small files are copied in one pass, large ones (≥ 4 MiB)
/// by two threads with direct I/O, the last block of which is partial here.
const SIZES: [usize; 3] = [100 * 1024, (4 << 20) - 1, (5 << 20) + 12_345];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sources_are_copied_verified_and_independent_of_the_source() {
    let l = local().await;
    let f = folder(&l.repo, "copy").await;
    let spool = tempfile::tempdir_in(l.dir.path()).unwrap();
    for (i, size) in SIZES.into_iter().enumerate() {
        let data = content(size, i as u64 + 1);
        let path = spool.path().join(format!("{i}.bin"));
        std::fs::write(&path, &data).unwrap();
        let d = doc(f, &format!("{i}.bin"), &data, CollisionPolicy::Reject);
        let s = l
            .repo
            .store_document(&d, &FileSource::new(&path))
            .await
            .unwrap();
        assert_eq!(s.outcome, StoreOutcome::Created);
        let stored = blob(l.dir.path(), &d.sha256);
        assert_ne!(ino(&stored), ino(&path), "a plain FileSource is copied");
        assert_eq!(std::fs::read(&stored).unwrap(), data);
        // Rewriting the source in place does not touch the stored content.
        std::fs::write(&path, b"rewritten").unwrap();
        assert_eq!(fetch(&l.repo, s.node, None).await, data);
        let v = l.repo.versions(s.node).await.unwrap();
        assert_eq!(v[0].size, size as u64);
    }
    let names: Vec<_> = files(l.dir.path());
    assert_eq!(names.len(), SIZES.len(), "only the blobs: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_file_sources_are_linked_and_outlive_their_source() {
    let l = local().await;
    let f = folder(&l.repo, "link").await;
    let spool = tempfile::tempdir_in(l.dir.path()).unwrap();
    let mut nodes = Vec::new();
    for (i, size) in SIZES.into_iter().enumerate() {
        let data = content(size, i as u64 + 10);
        let path = spool.path().join(format!("{i}.bin"));
        std::fs::write(&path, &data).unwrap();
        let d = doc(f, &format!("{i}.bin"), &data, CollisionPolicy::Reject);
        let s = l
            .repo
            .store_document(&d, &FileSource::new(&path).immutable())
            .await
            .unwrap();
        assert_eq!(s.outcome, StoreOutcome::Created);
        assert_eq!(
            ino(&blob(l.dir.path(), &d.sha256)),
            ino(&path),
            "hard-linked on the same file system"
        );
        // The caller removes its spooled file once stored.
        std::fs::remove_file(&path).unwrap();
        nodes.push((s.node, data));
    }
    for (node, data) in &nodes {
        assert_eq!(&fetch(&l.repo, *node, None).await, data);
    }
    assert_eq!(files(l.dir.path()).len(), SIZES.len());
    // Nothing to repair after a reopen.
    let state = l.dir.path().to_path_buf();
    drop(l.repo);
    let (repo, report) = Embedded::open(&state).await.unwrap();
    assert_eq!(report, Reconciled::default());
    for (node, data) in &nodes {
        assert_eq!(&fetch(&repo, *node, None).await, data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbolic_link_is_copied_not_linked() {
    let l = local().await;
    let f = folder(&l.repo, "symlink").await;
    let spool = tempfile::tempdir_in(l.dir.path()).unwrap();
    let data = content(SIZES[0], 5);
    let target = spool.path().join("target.bin");
    std::fs::write(&target, &data).unwrap();
    let path = spool.path().join("link.bin");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let d = doc(f, "link.bin", &data, CollisionPolicy::Reject);
    let s = l
        .repo
        .store_document(&d, &FileSource::new(&path).immutable())
        .await
        .unwrap();
    let stored = blob(l.dir.path(), &d.sha256);
    assert!(std::fs::symlink_metadata(&stored).unwrap().is_file());
    assert_ne!(ino(&stored), ino(&target));
    assert_eq!(fetch(&l.repo, s.node, None).await, data);
}

/// Stage `data` at `path` as a transfer would, in uneven pieces.
async fn stage(path: &Path, data: &[u8]) -> Staged {
    let mut stager = Stager::create(path);
    for piece in data.chunks(300_001) {
        stager
            .write(bytes::Bytes::copy_from_slice(piece))
            .await
            .unwrap();
    }
    stager.finish().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_files_are_adopted_only_while_they_are_the_file_staged() {
    let l = local().await;
    let f = folder(&l.repo, "staged").await;
    let spool = tempfile::tempdir_in(l.dir.path()).unwrap();

    // Adopted: the blob is the staged file itself, and outlives it.
    let data = content(3 * 1024 * 1024 + 5, 70);
    let path = spool.path().join("1");
    let staged = stage(&path, &data).await;
    let d = doc(f, "adopted.bin", &data, CollisionPolicy::Reject);
    let s = l.repo.store_document(&d, &staged).await.unwrap();
    assert_eq!(ino(&blob(l.dir.path(), &d.sha256)), ino(&path));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(fetch(&l.repo, s.node, None).await, data);

    // Rewritten in place after staging: read again, found not to match
    // the staged checksum, and refused without a blob.
    let data = content(2 * 1024 * 1024, 71);
    let path = spool.path().join("2");
    let staged = stage(&path, &data).await;
    std::fs::write(&path, content(2 * 1024 * 1024, 72)).unwrap();
    let d = doc(f, "changed.bin", &data, CollisionPolicy::Reject);
    assert!(l.repo.store_document(&d, &staged).await.is_err());
    assert!(!blob(l.dir.path(), &d.sha256).exists());

    // Through a symbolic link: copied, never linked to the link.
    let data = content(1024 * 1024 + 3, 73);
    let target = spool.path().join("3");
    stage(&target, &data).await;
    let link = spool.path().join("3.link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let staged = Staged::hash(&link).await.unwrap();
    let d = doc(f, "linked.bin", &data, CollisionPolicy::Reject);
    let s = l.repo.store_document(&d, &staged).await.unwrap();
    let stored = blob(l.dir.path(), &d.sha256);
    assert!(std::fs::symlink_metadata(&stored).unwrap().is_file());
    assert_ne!(ino(&stored), ino(&target));
    assert_eq!(fetch(&l.repo, s.node, None).await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_not_matching_its_checksum_never_gets_a_blob() {
    let l = local().await;
    let f = folder(&l.repo, "mismatch").await;
    let spool = tempfile::tempdir_in(l.dir.path()).unwrap();
    for (i, size) in SIZES.into_iter().enumerate() {
        let data = content(size, i as u64 + 20);
        let mut d = doc(f, &format!("{i}.bin"), &data, CollisionPolicy::Reject);
        d.sha256 = sha(b"something else");
        let path = spool.path().join(format!("{i}.bin"));
        std::fs::write(&path, &data).unwrap();
        let sources = every_source(&data, &path);
        for source in &sources {
            let err = l
                .repo
                .store_document(&d, source.as_ref())
                .await
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::Invalid);
            assert!(err.message.contains("does not match"), "{err}");
            assert_eq!(files(l.dir.path()), Vec::<PathBuf>::new());
        }
        // The source itself is left as it was.
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
    assert!(l.repo.children(f).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_content_is_verified_and_not_written_again() {
    let l = local().await;
    let f = folder(&l.repo, "dedup").await;
    let spool = tempfile::tempdir_in(l.dir.path()).unwrap();
    for (i, size) in SIZES.into_iter().enumerate() {
        let data = content(size, i as u64 + 30);
        let first = doc(f, &format!("{i}-a.bin"), &data, CollisionPolicy::Reject);
        store(&l.repo, &first, &data).await.unwrap();
        let stored = blob(l.dir.path(), &first.sha256);
        let before = std::fs::metadata(&stored).unwrap();
        let path = spool.path().join(format!("{i}.bin"));
        std::fs::write(&path, &data).unwrap();
        let sources = every_source(&data, &path);
        for (j, source) in sources.iter().enumerate() {
            let d = doc(f, &format!("{i}-{j}.bin"), &data, CollisionPolicy::Reject);
            let s = l.repo.store_document(&d, source.as_ref()).await.unwrap();
            assert_eq!(s.outcome, StoreOutcome::Created);
            assert_eq!(fetch(&l.repo, s.node, None).await, data);
            let after = std::fs::metadata(&stored).unwrap();
            assert_eq!(after.ino(), before.ino(), "the blob was not replaced");
            assert_eq!(after.nlink(), 1, "nor linked to the source");
        }
        // A file claiming stored content is still read and checked.
        std::fs::write(&path, content(size, 99)).unwrap();
        for source in [FileSource::new(&path), FileSource::new(&path).immutable()] {
            let d = doc(
                f,
                &format!("{i}-forged.bin"),
                &data,
                CollisionPolicy::Reject,
            );
            let err = l.repo.store_document(&d, &source).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Invalid);
        }
        assert_eq!(std::fs::read(&stored).unwrap(), data);
    }
    assert_eq!(files(l.dir.path()).len(), SIZES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stores_of_one_content_leave_one_blob() {
    let l = local().await;
    let f = folder(&l.repo, "concurrent").await;
    let data = content(100_000, 40);
    let spool = tempfile::tempdir_in(l.dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let repo = l.repo.clone();
        let data = data.clone();
        let path = spool.path().join(format!("{i}.bin"));
        std::fs::write(&path, &data).unwrap();
        tasks.push(tokio::spawn(async move {
            let d = doc(f, &format!("{i}.bin"), &data, CollisionPolicy::Reject);
            let s = match i % 3 {
                0 => repo.store_document(&d, &BytesSource(data.into())).await,
                1 => repo.store_document(&d, &FileSource::new(&path)).await,
                _ => {
                    repo.store_document(&d, &FileSource::new(&path).immutable())
                        .await
                }
            };
            s.unwrap().node
        }));
    }
    for t in tasks {
        let node = t.await.unwrap();
        assert_eq!(fetch(&l.repo, node, None).await, data);
    }
    assert_eq!(files(l.dir.path()), vec![blob(l.dir.path(), &sha(&data))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_on_another_file_system_is_copied() {
    // tmpfs beside the disk-backed temporary folder: a hard link fails
    // (EXDEV) and the store copies instead.
    let shm = Path::new("/dev/shm");
    let l = local().await;
    let Ok(other) = tempfile::tempdir_in(shm) else {
        eprintln!("no /dev/shm here; nothing to test");
        return;
    };
    if std::fs::metadata(other.path()).unwrap().dev()
        == std::fs::metadata(l.dir.path()).unwrap().dev()
    {
        eprintln!("/dev/shm is on the same file system here; nothing to test");
        return;
    }
    let f = folder(&l.repo, "exdev").await;
    for (i, size) in SIZES.into_iter().enumerate() {
        let data = content(size, i as u64 + 50);
        let path = other.path().join(format!("{i}.bin"));
        std::fs::write(&path, &data).unwrap();
        let d = doc(f, &format!("{i}.bin"), &data, CollisionPolicy::Reject);
        let s = l
            .repo
            .store_document(&d, &FileSource::new(&path).immutable())
            .await
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(fetch(&l.repo, s.node, None).await, data);
    }
    assert_eq!(files(l.dir.path()).len(), SIZES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_on_tmpfs_stores_large_files() {
    // Direct I/O on tmpfs is refused by older kernels; the copy then goes
    // through the page cache.
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm here; nothing to test");
        return;
    };
    let (repo, _) = Embedded::open(dir.path().join("state")).await.unwrap();
    let f = folder(&repo, "tmpfs").await;
    let data = content(SIZES[2], 60);
    let path = dir.path().join("large.bin");
    std::fs::write(&path, &data).unwrap();
    let d = doc(f, "large.bin", &data, CollisionPolicy::Reject);
    let s = repo
        .store_document(&d, &FileSource::new(&path))
        .await
        .unwrap();
    assert_eq!(fetch(&repo, s.node, None).await, data);
    assert_eq!(files(&dir.path().join("state")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_contents_are_kept_in_the_database_whatever_their_source() {
    let l = local().await;
    let f = folder(&l.repo, "inline").await;
    let spool = tempfile::tempdir_in(l.dir.path()).unwrap();
    let mut distinct = 0;
    for (i, size) in [0, 10 * 1024, INLINE_BLOB].into_iter().enumerate() {
        let data = content(size, i as u64 + 70);
        distinct += 1;
        let path = spool.path().join(format!("{i}.bin"));
        std::fs::write(&path, &data).unwrap();
        let sources = every_source(&data, &path);
        for (j, source) in sources.iter().enumerate() {
            let mut forged = doc(
                f,
                &format!("{i}-{j}-forged.bin"),
                &data,
                CollisionPolicy::Reject,
            );
            forged.sha256 = sha(b"something else");
            let err = l
                .repo
                .store_document(&forged, source.as_ref())
                .await
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
            let d = doc(f, &format!("{i}-{j}.bin"), &data, CollisionPolicy::Reject);
            let s = l.repo.store_document(&d, source.as_ref()).await.unwrap();
            assert_eq!(s.outcome, StoreOutcome::Created);
            assert_eq!(fetch(&l.repo, s.node, None).await, data);
            assert_eq!(l.repo.versions(s.node).await.unwrap()[0].size, size as u64);
        }
        assert_eq!(files(l.dir.path()), Vec::<PathBuf>::new(), "no blob file");
        assert_eq!(std::fs::metadata(&path).unwrap().nlink(), 1, "not linked");
    }
    // One byte more is a blob file.
    let data = content(INLINE_BLOB + 1, 79);
    let d = doc(f, "file.bin", &data, CollisionPolicy::Reject);
    store(&l.repo, &d, &data).await.unwrap();
    assert_eq!(files(l.dir.path()), vec![blob(l.dir.path(), &d.sha256)]);

    // The contents survive a reopen; once no version references them they
    // are removed, like blob files.
    let Local { dir, repo } = l;
    let state = dir.path().to_path_buf();
    drop(repo);
    let (repo, report) = Embedded::open(&state).await.unwrap();
    assert_eq!(report, Reconciled::default());
    let kept = repo.child_by_name(f, "2-3.bin").await.unwrap().unwrap();
    assert_eq!(fetch(&repo, kept.id, None).await, content(INLINE_BLOB, 72));
    repo.delete(f).await.unwrap();
    drop(repo);
    let (_repo, report) = Embedded::open(&state).await.unwrap();
    assert_eq!(report.orphan_blobs_removed, distinct + 1, "{report:?}");
    assert!(report.missing_blobs.is_empty());
}
