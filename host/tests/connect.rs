//! Endpoints built from `wharf.toml` text, against real servers on 127.0.0.1:
//! vsftpd for `ftp://`, OpenSSH for `sftp://`, a folder for `file://`.

use std::path::Path;
use std::sync::Arc;

use wharf::config::{self, WharfConfig};
use wharf::flow::connect::endpoint_for;
use wharf_endpoint::{Endpoint, EntryKind, RemotePath};
use wharf_tests::servers::{Sshd, Vsftpd, VsftpdOptions};

/// A configuration folder holding the (empty) plugin file every partner names.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::write(dir.path().join("plugins/p.wasm"), b"").unwrap();
    dir
}

/// Parses one `[[partner]]` (with `extra` settings) as `wharf.toml` in `dir`.
fn parse(dir: &Path, endpoint: &str, extra: &str) -> WharfConfig {
    let text = format!(
        "[runtime]\nstate_dir = \"state\"\n\n\
         [[partner]]\nid = \"acme\"\nplugin = \"p.wasm\"\nendpoint = \"{endpoint}\"\n{extra}\n"
    );
    config::parse(&text, dir).unwrap_or_else(|problems| panic!("{problems:#?}"))
}

fn endpoint(c: &WharfConfig) -> Arc<dyn Endpoint> {
    endpoint_for(&c.partners[0], &c.runtime.state_dir).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The partner's inbox lists the seeded file, and reading it gives its bytes.
async fn lists_and_reads(ep: &dyn Endpoint, content: &[u8]) {
    let inbox = RemotePath::parse("inbox").unwrap();
    let entries = ep.list(&inbox).await.unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["INV_ACME01_001.csv"]);
    assert_eq!(entries[0].kind, EntryKind::File);
    assert_eq!(entries[0].size, content.len() as u64);
    let stream = ep.open_read(&entries[0].path, 0).await.unwrap();
    let bytes = wharf_endpoint::io::read_all(stream).await.unwrap();
    assert_eq!(bytes, content);
}

const INVOICE: &[u8] = b"invoice;supplier;amount\nINV-1;ACME01;120.00\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_endpoint_from_the_configuration() {
    let server = Vsftpd::start(VsftpdOptions::default()).expect("vsftpd starts");
    server.seed("inbox/INV_ACME01_001.csv", INVOICE).unwrap();
    let dir = folder();
    // A relative password file, found next to the configuration.
    std::fs::write(
        dir.path().join("acme.pw"),
        format!("{}\n", server.user.password),
    )
    .unwrap();
    let c = parse(
        dir.path(),
        &format!("ftp://{}@127.0.0.1:{}/", server.user.name, server.port),
        "password_file = \"acme.pw\"\nmax_connections = 2",
    );
    lists_and_reads(endpoint(&c).as_ref(), INVOICE).await;
    // The URL's path is the partner root.
    let c = parse(
        dir.path(),
        &format!("ftp://{}@127.0.0.1:{}/inbox", server.user.name, server.port),
        "password_file = \"acme.pw\"",
    );
    let names: Vec<String> = endpoint(&c)
        .list(&RemotePath::root())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["INV_ACME01_001.csv"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_endpoint_from_the_configuration() {
    let server = Sshd::start().expect("sshd starts");
    server.seed("inbox/INV_ACME01_001.csv", INVOICE).unwrap();
    let dir = folder();
    let url = format!(
        "sftp://{}@127.0.0.1:{}{}",
        server.user.name,
        server.port,
        server.root.display()
    );

    // Password from an environment variable, pinned host key.
    let var = format!("WHARF_TEST_CONNECT_SFTP_PW_{}", std::process::id());
    // SAFETY: this variable is set once, before anything reads it.
    unsafe { std::env::set_var(&var, &server.user.password) };
    let c = parse(
        dir.path(),
        &url,
        &format!(
            "password_env = \"{var}\"\nhost_key = \"{}\"",
            server.host_key
        ),
    );
    lists_and_reads(endpoint(&c).as_ref(), INVOICE).await;

    // Key login, host key from a known_hosts file.
    let c = parse(
        dir.path(),
        &url,
        &format!(
            "key_file = \"{}\"\nknown_hosts = \"{}\"",
            server.client_key.display(),
            server.known_hosts().unwrap().display()
        ),
    );
    lists_and_reads(endpoint(&c).as_ref(), INVOICE).await;

    // Another host key is refused with the server's fingerprint.
    let c = parse(
        dir.path(),
        &url,
        &format!(
            "password_env = \"{var}\"\nhost_key = \"{}\"",
            server.other_host_key
        ),
    );
    let e = endpoint(&c)
        .list(&RemotePath::root())
        .await
        .expect_err("an unknown host key is refused");
    let text = e.to_string();
    assert!(text.contains("host key of 127.0.0.1"), "{text}");
    assert!(!text.contains(&server.user.password), "{text}");
}

#[tokio::test]
async fn file_endpoint_from_the_configuration() {
    let drop = tempfile::tempdir().unwrap();
    std::fs::create_dir(drop.path().join("inbox")).unwrap();
    std::fs::write(drop.path().join("inbox/INV_ACME01_001.csv"), INVOICE).unwrap();
    let dir = folder();
    let url = url::Url::from_directory_path(drop.path()).unwrap();
    let c = parse(dir.path(), url.as_str(), "");
    lists_and_reads(endpoint(&c).as_ref(), INVOICE).await;
}
