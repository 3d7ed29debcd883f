//! The local-folder endpoint, and the path rules every endpoint relies on.

mod common;

use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use wharf_endpoint::local::LocalEndpoint;
use wharf_endpoint::{Endpoint, RemotePath, TempNaming};

#[tokio::test]
async fn local_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let ep = LocalEndpoint::open(dir.path(), TempNaming::default()).unwrap();
    conformance(&ep).await;
}

#[tokio::test]
async fn local_atomic_upload() {
    let dir = tempfile::tempdir().unwrap();
    let ep: Arc<dyn Endpoint> =
        Arc::new(LocalEndpoint::open(dir.path(), TempNaming::default()).unwrap());
    atomic_upload_is_never_seen_partial(ep).await;
}

#[tokio::test]
async fn local_symlinks_cannot_escape_the_root() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
    let ep = LocalEndpoint::open(dir.path(), TempNaming::default()).unwrap();
    assert!(ep.open_read(&p("link/secret"), 0).await.is_err());
    assert!(ep.open_read(&p("passwd"), 0).await.is_err());
    assert!(
        ep.write_atomic(&p("link/x"), &mut &b"x"[..], None)
            .await
            .is_err()
    );
    assert!(!outside.path().join("x").exists());
    assert!(!outside.path().join(".x.part").exists());
}

#[tokio::test]
async fn local_hostile_names_are_skipped_in_listings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.txt"), b"1").unwrap();
    std::fs::write(dir.path().join("bad\nname"), b"2").unwrap();
    std::fs::write(dir.path().join("tab\there"), b"3").unwrap();
    std::fs::write(dir.path().join("-rf"), b"4").unwrap();
    std::fs::write(dir.path().join("back\\slash"), b"5").unwrap();
    let ep = LocalEndpoint::open(dir.path(), TempNaming::default()).unwrap();
    let mut names: Vec<_> = ep
        .list(&RemotePath::root())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, vec!["-rf", "ok.txt"]);
}

#[tokio::test]
async fn custom_temp_naming() {
    let dir = tempfile::tempdir().unwrap();
    let ep = LocalEndpoint::open(
        dir.path(),
        TempNaming {
            prefix: "tmp_".into(),
            suffix: ".uploading".into(),
        },
    )
    .unwrap();
    let (mut tx, rx) = tokio::io::duplex(1024);
    let mut rx = tokio::io::BufReader::with_capacity(wharf_endpoint::io::COPY_BUF, rx);
    let write = async { ep.write_atomic(&p("f.csv"), &mut rx, None).await };
    let check = async {
        use tokio::io::AsyncWriteExt;
        tx.write_all(b"a,b\n").await.unwrap();
        // The temporary file exists under the configured name while the source is open.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !dir.path().join("tmp_f.csv.uploading").exists() {
            assert!(std::time::Instant::now() < deadline, "no temporary file");
            tokio::task::yield_now().await;
        }
        drop(tx);
    };
    let (n, ()) = tokio::join!(write, check);
    assert_eq!(n.unwrap(), 4);
    assert!(dir.path().join("f.csv").exists());
    assert!(!dir.path().join("tmp_f.csv.uploading").exists());
}

proptest! {
    /// Whatever string comes in, a parsed path never climbs out, is never absolute and
    /// never carries control characters or backslashes.
    #[test]
    fn parsed_paths_stay_confined(s in "(\\.\\.|\\.|/|\\\\|[a-z]|\\x00|\\n|\\x7f|\u{85}|é|C:| ){0,24}") {
        if let Ok(path) = RemotePath::parse(&s) {
            let text = path.as_string();
            prop_assert!(!text.starts_with('/'));
            prop_assert!(path.components().all(|c| !c.is_empty() && c != ".." && c != "."));
            prop_assert!(!text.chars().any(|c| c.is_control() || c == '\\'));
            prop_assert!(path.under("/srv/p").starts_with("/srv/p"));
            // Normalisation is idempotent.
            prop_assert_eq!(RemotePath::parse(&text).unwrap(), path);
        }
    }

    /// Names that come back from a server can never add more than one component.
    #[test]
    fn joined_names_add_one_component(s in "\\PC{0,12}") {
        let base = RemotePath::parse("a/b").unwrap();
        if let Ok(j) = base.join(&s) {
            prop_assert_eq!(j.components().count(), 3);
            prop_assert_eq!(j.parent().unwrap(), base);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_read_as_parallel_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let ep = LocalEndpoint::open(dir.path(), TempNaming::default()).unwrap();
    let root = dir.path().to_path_buf();
    ranged_download_matches(&ep, |rel, data| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    })
    .await;
}
