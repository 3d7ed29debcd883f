//! SFTP endpoint against a real OpenSSH sshd on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use wharf_endpoint::sftp::{SftpAuth, SftpConfig, SftpEndpoint};
use wharf_endpoint::{Endpoint, Error, RemotePath, SecretSource};
use wharf_tests::servers::Sshd;

fn server() -> Sshd {
    Sshd::start().expect("sshd starts")
}

fn key_config(s: &Sshd) -> SftpConfig {
    let mut c = SftpConfig::new(
        "127.0.0.1",
        s.port,
        s.user.name.clone(),
        SftpAuth::Key {
            path: s.client_key.clone(),
            passphrase: None,
        },
    );
    c.host_keys = vec![s.host_key.clone()];
    c.root = s.root.display().to_string();
    c.common = quick_common();
    c
}

/// The SHA-256 fingerprint ssh-keygen prints for a public key line.
fn fingerprint(line: &str) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), line).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(f.path())
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_conformance_with_an_ed25519_key_and_a_pinned_host_key() {
    let s = server();
    let ep = SftpEndpoint::new(key_config(&s)).unwrap();
    conformance(&ep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_atomic_upload() {
    let s = server();
    let ep: Arc<dyn Endpoint> = Arc::new(SftpEndpoint::new(key_config(&s)).unwrap());
    atomic_upload_is_never_seen_partial(ep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_encrypted_rsa_key_logins() {
    let s = server();
    // Password from an environment variable.
    let var = format!("WHARF_TEST_SFTP_PW_{}", std::process::id());
    // SAFETY: this test binary sets each variable once, before any thread reads it.
    unsafe { std::env::set_var(&var, &s.user.password) };
    let mut c = key_config(&s);
    c.auth = SftpAuth::Password(SecretSource::Env(var));
    SftpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap();

    // RSA key whose passphrase comes from a file.
    let pf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pf.path(), format!("{}\n", s.rsa_passphrase)).unwrap();
    let mut c = key_config(&s);
    c.auth = SftpAuth::Key {
        path: s.client_rsa_key.clone(),
        passphrase: Some(SecretSource::File(pf.path().into())),
    };
    SftpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap();

    // A wrong passphrase is a configuration error found at start-up.
    std::fs::write(pf.path(), "wrong").unwrap();
    let mut c = key_config(&s);
    c.auth = SftpAuth::Key {
        path: s.client_rsa_key.clone(),
        passphrase: Some(SecretSource::File(pf.path().into())),
    };
    assert!(matches!(SftpEndpoint::new(c), Err(Error::Config(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_without_retries() {
    let s = server();
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "not-the-password").unwrap();
    let mut c = key_config(&s);
    c.auth = SftpAuth::Password(SecretSource::File(f.path().into()));
    c.common.retry.initial_backoff = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let err = SftpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_is_refused_with_the_offered_fingerprint() {
    let s = server();
    let mut c = key_config(&s);
    c.host_keys = vec![s.other_host_key.clone()];
    let err = SftpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap_err();
    let Error::HostKey {
        fingerprint: fp, ..
    } = &err
    else {
        panic!("not a host key refusal: {err}");
    };
    assert_eq!(*fp, fingerprint(&s.host_key));
    assert!(err.to_string().contains(&fingerprint(&s.host_key)), "{err}");
    assert!(!err.is_transient());

    // Pinning by fingerprint works.
    let mut c = key_config(&s);
    c.host_keys = vec![fingerprint(&s.host_key)];
    SftpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap();

    // Nothing pinned and no known_hosts: refused before connecting.
    let mut c = key_config(&s);
    c.host_keys.clear();
    assert!(matches!(SftpEndpoint::new(c), Err(Error::Config(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_file_is_honoured() {
    let s = server();
    let mut c = key_config(&s);
    c.host_keys.clear();
    c.known_hosts = Some(s.known_hosts().unwrap());
    SftpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap();

    // A known_hosts entry with another key for this host: a changed key, refused.
    let kh = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        kh.path(),
        format!("[127.0.0.1]:{} {}\n", s.port, s.other_host_key),
    )
    .unwrap();
    let mut c = key_config(&s);
    c.host_keys.clear();
    c.known_hosts = Some(kh.path().into());
    let err = SftpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HostKey { .. }), "{err}");
    assert!(err.to_string().contains("differs"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_work_within_the_connection_cap() {
    let s = server();
    let mut c = key_config(&s);
    c.common.max_connections = 3;
    let ep = Arc::new(SftpEndpoint::new(c).unwrap());
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(40_000 + i as usize, i);
            let path = p(&format!("f{i}.bin"));
            ep.write_atomic(&path, &mut &data[..], None).await.unwrap();
            let mut v = Vec::new();
            ep.open_read(&path, 0)
                .await
                .unwrap()
                .read_to_end(&mut v)
                .await
                .unwrap();
            assert_eq!(v, data);
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("parallel work completes");
    assert_eq!(ep.list(&RemotePath::root()).await.unwrap().len(), 24);
    let sessions = s.log().matches("Accepted publickey").count();
    assert!(
        (1..=3).contains(&sessions),
        "{sessions} SSH logins for a pool of 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_transfer_then_resumed_after_restart() {
    let mut s = server();
    let data = pattern(48 * 1024 * 1024, 3);
    s.seed("big.bin", &data).unwrap();
    let ep = SftpEndpoint::new(key_config(&s)).unwrap();
    let mut r = ep.open_read(&p("big.bin"), 0).await.unwrap();
    let mut got = vec![0u8; 1024 * 1024];
    r.read_exact(&mut got).await.unwrap();
    s.kill();
    let mut rest = Vec::new();
    let err = tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut rest))
        .await
        .expect("no hang")
        .expect_err("a killed server is an error, not an end of file");
    got.extend_from_slice(&rest);
    eprintln!("after kill: {err} with {} bytes", got.len());
    drop(r);
    s.restart().unwrap();
    let mut r = ep.open_read(&p("big.bin"), got.len() as u64).await.unwrap();
    r.read_to_end(&mut got).await.unwrap();
    assert!(got == data, "resumed download matches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_remote_names() {
    let s = server();
    for name in ["ok.txt", "with space.txt", "-rf", "ünïcødé.csv", "..hidden"] {
        s.seed(name, name.as_bytes()).unwrap();
    }
    s.seed("evil\nname", b"x").unwrap();
    s.seed("back\\slash", b"x").unwrap();
    let ep = SftpEndpoint::new(key_config(&s)).unwrap();
    let mut names: Vec<String> = ep
        .list(&RemotePath::root())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    // SFTP carries names as length-prefixed strings: the unsafe ones are recognised and skipped.
    assert_eq!(
        names,
        vec!["-rf", "..hidden", "ok.txt", "with space.txt", "ünïcødé.csv"]
    );
    for good in &names {
        let mut v = Vec::new();
        ep.open_read(&p(good), 0)
            .await
            .unwrap()
            .read_to_end(&mut v)
            .await
            .unwrap();
        assert_eq!(v, good.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_file_both_ways_in_bounded_memory() {
    if std::env::var("WHARF_BIG_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set WHARF_BIG_TESTS=1 for the 1 GiB round trip");
        return;
    }
    let s = server();
    let ep = SftpEndpoint::new(key_config(&s)).unwrap();
    big_round_trip(&ep, 1 << 30, 64 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_to_a_killed_server_fails_cleanly_then_succeeds_after_restart() {
    let mut s = server();
    let ep = SftpEndpoint::new(key_config(&s)).unwrap();
    ep.list(&RemotePath::root()).await.unwrap();
    let (tx, rx) = tokio::io::duplex(64 * 1024);
    let feeder = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut tx = tx;
        let chunk = vec![7u8; 64 * 1024];
        while tx.write_all(&chunk).await.is_ok() {}
    });
    let target = p("up.bin");
    let mut rx = tokio::io::BufReader::with_capacity(wharf_endpoint::io::COPY_BUF, rx);
    let upload = ep.write_atomic(&target, &mut rx, None);
    let killer = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(s.root.join(".up.bin.part")).map_or(true, |m| m.len() == 0) {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.kill();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(upload, killer)
    })
    .await
    .expect("no hang");
    assert!(result.is_err());
    drop(rx);
    feeder.await.unwrap();
    assert!(
        !s.root.join("up.bin").exists(),
        "no final file from a failed upload"
    );
    s.restart().unwrap();
    ep.write_atomic(&p("up.bin"), &mut &b"second try"[..], None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(s.root.join("up.bin")).unwrap(), b"second try");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_read_as_parallel_ranges() {
    let s = server();
    let ep = SftpEndpoint::new(key_config(&s)).unwrap();
    ranged_download_matches(&ep, |rel, data| {
        s.seed(rel, data).unwrap();
    })
    .await;
}

/// The server syncs every upload and reports its size before the upload
/// gets its final name. A small file takes one write request, sent with its
/// sync and size check at once (then its close with its rename); a larger
/// one waits for each step. Either way the server handles them in order.
/// None of these is large enough for a sync on the way (write-behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_synced_and_checked_before_their_rename() {
    let s = Sshd::start_logging_requests().expect("sshd starts");
    let ep = SftpEndpoint::new(key_config(&s)).unwrap();
    let small = vec![1u8; 10 * 1024];
    let large = vec![2u8; 300 * 1024];
    for (name, data) in [
        ("small.bin", &small),
        ("large.bin", &large),
        ("empty.bin", &Vec::new()),
    ] {
        let mut r = &data[..];
        let sent = ep
            .write_atomic(&RemotePath::parse(name).unwrap(), &mut r, None)
            .await
            .unwrap();
        assert_eq!(sent, data.len() as u64);
        assert_eq!(std::fs::read(s.root.join(name)).unwrap(), *data, "{name}");
    }
    let log = s.requests();
    for (name, writes) in [
        ("small.bin", 1),
        // 300 KiB: a 256 KiB chunk in two 128 KiB requests, then the rest in one.
        ("large.bin", 3),
        ("empty.bin", 0),
    ] {
        let steps = upload_steps(&log, name);
        assert_synced_checked_renamed(name, &steps);
        assert_eq!(count(&steps, "write"), writes, "{name}: {steps:?}");
        assert_eq!(
            (
                count(&steps, "open"),
                count(&steps, "fsync"),
                count(&steps, "close")
            ),
            (1, 1, 1),
            "{name}: {steps:?}"
        );
    }
}

/// A large upload is synced on the way, from a second channel, each time
/// `sync_every` more bytes went out; the upload's own sync still follows its
/// last write, and the second handle is closed before the rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_is_synced_as_it_goes() {
    use tokio::io::AsyncWriteExt;
    const MIB: usize = 1024 * 1024;
    let s = Arc::new(Sshd::start_logging_requests().expect("sshd starts"));
    let mut cfg = key_config(&s);
    cfg.sync_every = MIB as u64;
    let ep = SftpEndpoint::new(cfg).unwrap();
    let data: Vec<u8> = (0..7 * MIB + MIB / 2).map(|i| (i % 251) as u8).collect();
    // The content arrives a mebibyte at a time; after each, the feeder waits
    // for the server to have handled one more sync. The last half mebibyte
    // reaches no new step: any sync after the last write is the upload's own.
    let (mut feed, pipe) = tokio::io::duplex(64 * 1024);
    let feeder = tokio::spawn({
        let (data, s) = (data.clone(), s.clone());
        async move {
            for (k, piece) in data.chunks(MIB).enumerate() {
                feed.write_all(piece).await.unwrap();
                if piece.len() < MIB {
                    break;
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while count(&upload_steps(&s.requests(), "big.bin"), "fsync") <= k {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no sync on the way after {} MiB",
                        k + 1
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    let mut src = tokio::io::BufReader::with_capacity(wharf_endpoint::io::COPY_BUF, pipe);
    let sent = ep
        .write_atomic(&RemotePath::parse("big.bin").unwrap(), &mut src, None)
        .await;
    feeder.await.unwrap();
    assert_eq!(sent.unwrap(), data.len() as u64);
    assert!(std::fs::read(s.root.join("big.bin")).unwrap() == data);
    let steps = upload_steps(&s.requests(), "big.bin");
    assert_synced_checked_renamed("big.bin", &steps);
    let last_write = steps.iter().rposition(|s| s == "write").unwrap();
    assert_eq!(
        (
            count(&steps[..last_write], "fsync"),
            count(&steps[last_write..], "fsync")
        ),
        (7, 1),
        "{steps:?}"
    );
    // The upload's handle and the one its syncs went through.
    assert_eq!(
        (count(&steps, "open"), count(&steps, "close")),
        (2, 2),
        "{steps:?}"
    );
}

/// Syncs on the way are a help, not a condition: when the second handle
/// cannot be opened, the upload goes on and ends as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_goes_on_when_its_syncs_on_the_way_fail() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncWriteExt;
    const MIB: usize = 1024 * 1024;
    let s = Sshd::start_logging_requests().expect("sshd starts");
    let mut cfg = key_config(&s);
    cfg.sync_every = MIB as u64;
    let ep = SftpEndpoint::new(cfg).unwrap();
    let data: Vec<u8> = (0..4 * MIB).map(|i| (i % 241) as u8).collect();
    let (mut feed, pipe) = tokio::io::duplex(64 * 1024);
    let part = s.root.join(".shy.bin.part");
    let feeder = tokio::spawn({
        let data = data.clone();
        async move {
            // The upload creates its file once it has more than a request's
            // worth; then the server's user may no longer read it, so the open
            // for the syncs is refused.
            let (first, rest) = data.split_at(64 * 1024);
            feed.write_all(first).await.unwrap();
            while !part.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o200)).unwrap();
            for piece in rest.chunks(MIB) {
                feed.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut src = tokio::io::BufReader::with_capacity(wharf_endpoint::io::COPY_BUF, pipe);
    let sent = ep
        .write_atomic(&RemotePath::parse("shy.bin").unwrap(), &mut src, None)
        .await
        .unwrap();
    feeder.await.unwrap();
    assert_eq!(sent, data.len() as u64);
    assert!(std::fs::read(s.root.join("shy.bin")).unwrap() == data);
    let log = s.requests();
    assert!(log.contains("Permission denied"), "{log}");
    let steps = upload_steps(&log, "shy.bin");
    assert_synced_checked_renamed("shy.bin", &steps);
    assert_eq!(
        (count(&steps, "fsync"), count(&steps, "close")),
        (1, 1),
        "{steps:?}"
    );
}

/// Checks the order the server handled an upload's `steps` in: opened first;
/// the last write before the last sync, that before the size check, that
/// before the rename, which comes last, after every close.
fn assert_synced_checked_renamed(name: &str, steps: &[String]) {
    let last = |step: &str| {
        steps
            .iter()
            .rposition(|s| s == step)
            .unwrap_or_else(|| panic!("{name}: no {step} in {steps:?}"))
    };
    let last_write = steps.iter().rposition(|s| s == "write");
    let size = steps
        .iter()
        .rposition(|s| s == "fstat" || s == "stat")
        .unwrap_or_else(|| panic!("{name}: no size check in {steps:?}"));
    assert_eq!(steps.first().map(String::as_str), Some("open"), "{name}");
    assert!(
        last_write.is_none_or(|w| w < last("fsync")),
        "{name}: {steps:?}"
    );
    assert!(last("fsync") < size, "{name}: {steps:?}");
    assert!(
        size < last("rename") && last("close") < last("rename"),
        "{name}: {steps:?}"
    );
    assert_eq!(last("rename"), steps.len() - 1, "{name}: {steps:?}");
}

/// How many of `steps` are `step`.
fn count(steps: &[String], step: &str) -> usize {
    steps.iter().filter(|s| *s == step).count()
}

/// The steps the server took on the upload of `name` (under its temporary
/// name, then the rename to it), in order, from its request log.
fn upload_steps(log: &str, name: &str) -> Vec<String> {
    let temp = format!("/.{name}.part\"");
    let fin = format!("/{name}\"");
    log.lines()
        .filter_map(|line| {
            let line = line
                .trim_start_matches("debug1: ")
                .trim_start_matches("debug3: ");
            let line = match line.strip_prefix("request ") {
                Some(rest) => rest.split_once(": ")?.1,
                None => line,
            };
            let (verb, rest) = line.split_once(' ')?;
            let step = match verb {
                "open" | "write" | "fsync" | "fstat" | "close" if rest.contains(&temp) => verb,
                "stat" if rest.contains(&temp) => "stat",
                "rename" if rest.contains(&temp) && rest.ends_with(&fin) => "rename",
                _ => return None,
            };
            Some(step.to_owned())
        })
        .collect()
}
