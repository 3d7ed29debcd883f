//! FTP and FTPS endpoints against a real vsftpd on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_endpoint::ftp::{FtpConfig, FtpEndpoint, FtpSecurity, TlsSettings, cert_fingerprint};
use wharf_endpoint::{Endpoint, Error, RemotePath, SecretSource};
use wharf_tests::servers::{FtpTls, Vsftpd, VsftpdOptions};

fn server(tls: FtpTls) -> Vsftpd {
    Vsftpd::start(VsftpdOptions {
        tls,
        ..Default::default()
    })
    .expect("vsftpd starts")
}

/// A password file for the server's user (secrets come from files or env, never config).
fn password_file(s: &Vsftpd) -> (tempfile::NamedTempFile, SecretSource) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), format!("{}\n", s.user.password)).unwrap();
    let src = SecretSource::File(f.path().to_path_buf());
    (f, src)
}

fn config(s: &Vsftpd, security: FtpSecurity, pw: SecretSource) -> FtpConfig {
    let mut c = FtpConfig::new("127.0.0.1", s.port, s.user.name.clone(), pw);
    c.security = security;
    c.common = quick_common();
    if let Some(ca) = &s.ca {
        c.tls.ca_file = Some(ca.ca_pem.clone());
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_ftp_conformance() {
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Plain, pw)).unwrap();
    conformance(&ep).await;
    // The server saw binary transfers and EPSV.
    let log = s.log();
    assert!(log.contains("TYPE I"), "{log}");
    assert!(log.contains("EPSV"), "{log}");
    assert!(log.contains("\"SIZE ") && log.contains("\"MDTM "), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_ftp_conformance_without_size_and_mdtm() {
    // Sizes (stat, upload verification) then come from LIST.
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let mut c = config(&s, FtpSecurity::Plain, pw);
    c.use_size_mdtm = false;
    conformance(&FtpEndpoint::new(c).unwrap()).await;
    let log = s.log();
    // (FEAT still advertises them; no command used them.)
    assert!(
        !log.contains("\"SIZE ") && !log.contains("\"MDTM "),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_ftp_with_pasv_and_a_time_zone() {
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let mut c = config(&s, FtpSecurity::Plain, pw.clone());
    c.epsv = false;
    let utc = FtpEndpoint::new(c.clone()).unwrap();
    s.seed("tz.txt", b"x").unwrap();
    let at_utc = utc.list(&RemotePath::root()).await.unwrap()[0]
        .mtime
        .unwrap();
    // The same listing read as if the server ran on UTC+02:00.
    c.server_utc_offset_minutes = 120;
    let plus2 = FtpEndpoint::new(c).unwrap();
    let at_plus2 = plus2.list(&RemotePath::root()).await.unwrap()[0]
        .mtime
        .unwrap();
    assert_eq!(
        at_utc.duration_since(at_plus2).unwrap(),
        Duration::from_secs(7200)
    );
    assert!(s.log().contains("PASV"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ftps_conformance_with_a_verified_ca() {
    let s = server(FtpTls::Explicit);
    let (_f, pw) = password_file(&s);
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Explicit, pw)).unwrap();
    conformance(&ep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ftps_atomic_upload() {
    let s = server(FtpTls::Explicit);
    let (_f, pw) = password_file(&s);
    let ep: Arc<dyn Endpoint> =
        Arc::new(FtpEndpoint::new(config(&s, FtpSecurity::Explicit, pw)).unwrap());
    atomic_upload_is_never_seen_partial(ep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftps_refuses_an_unverified_certificate() {
    let s = server(FtpTls::Explicit);
    let (_f, pw) = password_file(&s);
    // No CA configured: the public roots do not know the throwaway CA.
    let mut c = config(&s, FtpSecurity::Explicit, pw.clone());
    c.tls = TlsSettings::default();
    let err = FtpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("127.0.0.1"), "{err}");

    // The right CA but another name than the certificate's.
    let mut c = config(&s, FtpSecurity::Explicit, pw.clone());
    c.tls.server_name = Some("partner.example".into());
    let err = FtpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");

    // A pin of another certificate.
    let mut c = config(&s, FtpSecurity::Explicit, pw.clone());
    c.tls = TlsSettings {
        pinned_sha256: Some("ab".repeat(32)),
        ..Default::default()
    };
    let err = FtpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");

    // The server's own certificate, pinned: accepted.
    let der = s.ca.as_ref().unwrap().cert_der().unwrap();
    let mut c = config(&s, FtpSecurity::Explicit, pw);
    c.tls = TlsSettings {
        pinned_sha256: Some(cert_fingerprint(&der)),
        ..Default::default()
    };
    FtpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_login_is_refused_when_the_server_requires_tls() {
    let s = server(FtpTls::Explicit);
    let (_f, pw) = password_file(&s);
    let err = FtpEndpoint::new(config(&s, FtpSecurity::Plain, pw))
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_ftps_works() {
    let s = server(FtpTls::Implicit);
    let (_f, pw) = password_file(&s);
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Implicit, pw)).unwrap();
    let data = pattern(100_000, 5);
    ep.write_atomic(&p("i.bin"), &mut &data[..], None)
        .await
        .unwrap();
    let mut v = Vec::new();
    ep.open_read(&p("i.bin"), 10)
        .await
        .unwrap()
        .read_to_end(&mut v)
        .await
        .unwrap();
    assert_eq!(v, &data[10..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_at_once_without_retries() {
    let s = server(FtpTls::None);
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "not the password").unwrap();
    let mut c = config(&s, FtpSecurity::Plain, SecretSource::File(f.path().into()));
    c.common.retry.initial_backoff = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let err = FtpEndpoint::new(c)
        .unwrap()
        .list(&RemotePath::root())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not the password"));
    // vsftpd delays failed logins by about a second; a retry would add five more.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.log().matches("FAIL LOGIN").count(), 1, "{}", s.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_with_parallel_work_completes() {
    // The server allows 2 sessions per IP; the endpoint is misconfigured to open up to 6,
    // so it meets 421 refusals and must back off rather than fail or deadlock.
    let s = Vsftpd::start(VsftpdOptions {
        tls: FtpTls::None,
        max_per_ip: 2,
        ..Default::default()
    })
    .unwrap();
    let (_f, pw) = password_file(&s);
    let mut c = config(&s, FtpSecurity::Plain, pw);
    c.common.max_connections = 6;
    let ep = Arc::new(FtpEndpoint::new(c).unwrap());
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(50_000 + i as usize, i);
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
    assert!(
        ep.busy_refusals() > 0,
        "the server's cap was actually hit (else this test proves nothing)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_transfer_then_resumed_after_restart() {
    let mut s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let data = pattern(48 * 1024 * 1024, 3);
    s.seed("big.bin", &data).unwrap();
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Plain, pw)).unwrap();
    let mut r = ep.open_read(&p("big.bin"), 0).await.unwrap();
    let mut got = vec![0u8; 1024 * 1024];
    r.read_exact(&mut got).await.unwrap();
    s.kill();
    // The rest of the stream fails cleanly (no hang, no silent truncation).
    let mut rest = Vec::new();
    let err = tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut rest))
        .await
        .expect("no hang")
        .expect_err("a killed server is an error, not an end of file");
    got.extend_from_slice(&rest);
    eprintln!("after kill: {err} with {} bytes", got.len());
    drop(r);
    // While the server is down, operations fail after their retries.
    s.restart().unwrap();
    let mut r = ep.open_read(&p("big.bin"), got.len() as u64).await.unwrap();
    r.read_to_end(&mut got).await.unwrap();
    assert!(got == data, "resumed download matches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_to_a_killed_server_fails_cleanly() {
    let mut s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Plain, pw)).unwrap();
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
        while !s.root.join(".up.bin.part").exists() {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.kill();
    };
    let (result, ()) = tokio::join!(upload, killer);
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
async fn hostile_remote_names() {
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    for name in [
        "ok.txt",
        "with space.txt",
        "-rf",
        "ünïcødé.csv",
        "..hidden",
        "a;b",
    ] {
        s.seed(name, name.as_bytes()).unwrap();
    }
    s.seed("evil\nname", b"x").unwrap();
    s.seed("cr\rname", b"x").unwrap();
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Plain, pw)).unwrap();
    let mut names: Vec<String> = ep
        .list(&RemotePath::root())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    for n in &names {
        assert!(!n.chars().any(|c| c.is_control() || c == '/'), "{n:?}");
    }
    for good in [
        "-rf",
        "..hidden",
        "a;b",
        "ok.txt",
        "with space.txt",
        "ünïcødé.csv",
    ] {
        assert!(
            names.iter().any(|n| n == good),
            "{good} missing from {names:?}"
        );
        let mut v = Vec::new();
        ep.open_read(&p(good), 0)
            .await
            .unwrap()
            .read_to_end(&mut v)
            .await
            .unwrap();
        assert_eq!(v, good.as_bytes());
    }
    // Paths that would leave the root never reach the server.
    for bad in ["../etc/passwd", "/etc/passwd", "a\r\nDELE x", "x\0y"] {
        assert!(RemotePath::parse(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_file_both_ways_in_bounded_memory() {
    if std::env::var("WHARF_BIG_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set WHARF_BIG_TESTS=1 for the 1 GiB round trip");
        return;
    }
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Plain, pw)).unwrap();
    big_round_trip(&ep, 1 << 30, 64 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_transfer_and_hung_server_time_out() {
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    s.seed("big.bin", &pattern(32 * 1024 * 1024, 4)).unwrap();
    let mut c = config(&s, FtpSecurity::Plain, pw);
    c.common.stall_timeout = Duration::from_secs(1);
    c.common.connect_timeout = Duration::from_secs(1);
    c.common.retry.max_attempts = 1;
    let ep = FtpEndpoint::new(c).unwrap();
    let mut r = ep.open_read(&p("big.bin"), 0).await.unwrap();
    let mut buf = vec![0u8; 1024 * 1024];
    r.read_exact(&mut buf).await.unwrap();
    s.pause();
    // The data stops flowing: the read fails after the stall timeout instead of hanging.
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let err = tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut rest))
        .await
        .expect("the stall timeout fired")
        .expect_err("a stalled transfer is an error");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(r);
    // A server that accepts connections but never greets: the connect timeout fires.
    let err = tokio::time::timeout(Duration::from_secs(20), ep.list(&RemotePath::root()))
        .await
        .expect("the connect timeout fired")
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.is_transient());
    s.resume();
    ep.list(&RemotePath::root()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_workaround_uses_the_control_address() {
    // The server announces 127.0.0.2 in PASV replies, as a server behind NAT announces its
    // private address; its data ports only answer on 127.0.0.1.
    let s = Vsftpd::start(VsftpdOptions {
        pasv_address: "127.0.0.2".into(),
        ..Default::default()
    })
    .unwrap();
    let (_f, pw) = password_file(&s);
    s.seed("x.txt", b"behind nat").unwrap();
    let mut c = config(&s, FtpSecurity::Plain, pw);
    c.epsv = false;
    c.nat_workaround = true;
    let ep = FtpEndpoint::new(c.clone()).unwrap();
    let mut v = Vec::new();
    ep.open_read(&p("x.txt"), 0)
        .await
        .unwrap()
        .read_to_end(&mut v)
        .await
        .unwrap();
    assert_eq!(v, b"behind nat");
    assert!(
        s.log().contains("127,0,0,2"),
        "the server announced the other address"
    );

    // Without the workaround the announced address is used, and nothing answers there.
    c.nat_workaround = false;
    c.common.retry.max_attempts = 1;
    let ep = FtpEndpoint::new(c).unwrap();
    assert!(ep.list(&RemotePath::root()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_read_as_parallel_ranges() {
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Plain, pw)).unwrap();
    ranged_download_matches(&ep, |rel, data| {
        s.seed(rel, data).unwrap();
    })
    .await;
}

/// `(session pid, command)` of each command in vsftpd's protocol log.
fn commands(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let pid = l.split("[pid ").nth(1)?.split(']').next()?.to_owned();
            let cmd = l.split("FTP command: ").nth(1)?;
            // `Client "127.0.0.1", "STOR /x"`: the second quoted field.
            let cmd = cmd.split("\", \"").nth(1)?.trim_end_matches('"').to_owned();
            Some((pid, cmd))
        })
        .collect()
}

fn session_of(cmds: &[(String, String)], prefix: &str) -> String {
    let found: Vec<&String> = cmds
        .iter()
        .filter(|(_, c)| c.starts_with(prefix))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(found.len(), 1, "one {prefix} command: {cmds:?}");
    found[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_upload_is_checked_and_renamed_on_a_second_connection() {
    // vsftpd on ext4 answers an upload's own connection only after closing the file, which
    // first writes the whole file back: a second connection, opened while the upload runs,
    // checks the size and renames without waiting for that.
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Plain, pw)).unwrap();
    let total = 2 * 1024 * 1024usize;
    let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    let producer = tokio::spawn(async move {
        let data = pattern(total, 3);
        for chunk in data.chunks(128 * 1024) {
            tx.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    let mut rx = tokio::io::BufReader::with_capacity(wharf_endpoint::io::COPY_BUF, rx);
    let n = ep
        .write_atomic(&p("slow.bin"), &mut rx, None)
        .await
        .unwrap();
    producer.await.unwrap();
    assert_eq!(n, total as u64);
    assert_eq!(
        std::fs::read(s.root.join("slow.bin")).unwrap(),
        pattern(total, 3)
    );
    let log = s.log();
    let cmds = commands(&log);
    let stored_by = session_of(&cmds, "STOR ");
    assert_ne!(stored_by, session_of(&cmds, "SIZE "), "{log}");
    assert_ne!(stored_by, session_of(&cmds, "RNFR "), "{log}");
    assert_eq!(
        session_of(&cmds, "SIZE "),
        session_of(&cmds, "RNTO "),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_upload_opens_no_second_connection() {
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let ep = FtpEndpoint::new(config(&s, FtpSecurity::Plain, pw)).unwrap();
    let data = pattern(100_000, 4);
    ep.write_atomic(&p("quick.bin"), &mut &data[..], None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(s.root.join("quick.bin")).unwrap(), data);
    let log = s.log();
    let cmds = commands(&log);
    assert_eq!(log.matches("OK LOGIN").count(), 1, "{log}");
    assert_eq!(
        session_of(&cmds, "STOR "),
        session_of(&cmds, "RNTO "),
        "{log}"
    );
}

/// A command cancelled before its reply was read (a caller's timeout, a sibling range that
/// failed) must not hand its connection to the next caller, who would read that stale reply
/// as the answer to its own command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_command_never_leaves_its_reply_to_the_next_one() {
    let s = server(FtpTls::None);
    let (_f, pw) = password_file(&s);
    let mut c = config(&s, FtpSecurity::Plain, pw);
    c.common.retry.max_attempts = 1;
    c.common.max_connections = 1;
    let ep = FtpEndpoint::new(c).unwrap();
    s.seed("cancel/f.bin", &[7u8; 64 * 1024]).unwrap();
    let path = RemotePath::parse("cancel/f.bin").unwrap();
    // Cancel after a growing delay, so that across the loop the open is dropped at every
    // step of its exchange: before PASV, between RETR and its 150, while streaming.
    for step in 0..60u64 {
        let delay = Duration::from_micros(step * 30);
        if let Ok(opened) = tokio::time::timeout(delay, ep.open_read(&path, 0)).await {
            drop(opened.unwrap());
        }
        assert!(
            ep.is_file(&path).await.unwrap(),
            "after a cancel at {delay:?}, SIZE was answered by a stale reply"
        );
    }
}
