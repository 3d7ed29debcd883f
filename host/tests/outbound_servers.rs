//! Outbound release against real servers: vsftpd and OpenSSH serve Globex's
//! folders, the example print plugin names the deliveries, the embedded
//! repository holds the approved documents.
//!
//! - approved documents reach the server under the plugin's names, byte for
//!   byte, once; an unapproved one never does (FTP and SFTP);
//! - while a large document uploads, a lister on the server never sees a
//!   partial file under its final name;
//! - the real binary killed with SIGKILL during a 1 GiB upload and started
//!   again delivers the document exactly once, complete;
//! - an acknowledgement written by the partner over SFTP is recorded on its
//!   delivery.
//!
//! Every test starts its own servers and keeps its state in a temporary
//! folder; servers and child processes are stopped when dropped, even when a
//! test fails. The tests run one at a time: they share two cores and time
//! their watchers against the uploads.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wharf::flow::connect::AnyRepository;
use wharf::flow::outbound::ExportOutcome;
use wharf::ledger::{DeliveryState, Ledger};
use wharf::runtime::{Runtime, Summary};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::{
    Attribute, AttributeValue, BytesSource, Category, CollisionPolicy, ContentSource, FileSource,
    NewDocument, NodeId, Repository,
};
use wharf_tests::plugins::component;
use wharf_tests::servers::{Sshd, TestUser, Vsftpd, VsftpdOptions, free_port};

const PARTNER: &str = "globex";
const SCOPE: [&str; 3] = ["Partners", "globex", "Catalog"];

/// One test at a time (see the module documentation).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

fn pdf(text: &str) -> Vec<u8> {
    format!("%PDF-1.7\n{text}\n%%EOF\n").into_bytes()
}

/// Writes a PDF-looking file of `size` bytes (a multiple of 1 MiB) with
/// distinct, incompressible-looking content; returns its SHA-256.
fn write_big_pdf(path: &Path, size: u64) -> String {
    assert_eq!(size % (1 << 20), 0);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut chunk: Vec<u8> = (0..1u32 << 20)
        .map(|j| (j.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for i in 0..size >> 20 {
        chunk[16..24].copy_from_slice(&i.to_le_bytes());
        if i == 0 {
            chunk[..9].copy_from_slice(b"%PDF-1.7\n");
        } else if i == 1 {
            chunk[..9].copy_from_slice(&[0x5a; 9]);
        }
        hasher.update(&chunk);
        f.write_all(&chunk).unwrap();
    }
    f.flush().unwrap();
    hex::encode(hasher.finalize())
}

/// Stores a PDF in `folder` with the `Print` category (`Status`, `Job`).
async fn store(
    repo: &impl Repository,
    folder: NodeId,
    name: &str,
    content: &dyn ContentSource,
    sha: &str,
    status: &str,
    job: &str,
) -> NodeId {
    repo.store_document(
        &NewDocument {
            parent: folder,
            name: name.into(),
            description: None,
            mime_type: "application/pdf".into(),
            sha256: sha.into(),
            categories: vec![Category {
                name: "Print".into(),
                attributes: vec![
                    Attribute {
                        name: "Status".into(),
                        value: AttributeValue::Text(status.into()),
                    },
                    Attribute {
                        name: "Job".into(),
                        value: AttributeValue::Text(job.into()),
                    },
                ],
            }],
            policy: CollisionPolicy::Reject,
        },
        content,
    )
    .await
    .unwrap_or_else(|e| panic!("storing {name}: {e}"))
    .node
}

async fn scope_folder(repo: &impl Repository) -> NodeId {
    let segments: Vec<String> = SCOPE.iter().map(|s| s.to_string()).collect();
    repo.ensure_folder(NodeId::ENTERPRISE, &segments)
        .await
        .unwrap()
}

/// A partner server as the tests see it: its folder on disk, its user and
/// the `[[partner]]` lines that reach it.
struct Remote<'a> {
    root: PathBuf,
    user: &'a TestUser,
    endpoint_toml: String,
}

impl Remote<'_> {
    fn ftp<'a>(server: &'a Vsftpd, dir: &Path) -> Remote<'a> {
        let pw = dir.join("partner.pw");
        std::fs::write(&pw, format!("{}\n", server.user.password)).unwrap();
        let r = Remote {
            root: server.root.clone(),
            user: &server.user,
            endpoint_toml: format!(
                "endpoint = \"ftp://{}@127.0.0.1:{}/\"\npassword_file = {:?}\n",
                server.user.name,
                server.port,
                pw.display().to_string()
            ),
        };
        r.folders();
        r
    }

    fn sftp(server: &Sshd) -> Remote<'_> {
        let r = Remote {
            root: server.root.clone(),
            user: &server.user,
            endpoint_toml: format!(
                "endpoint = \"sftp://{}@127.0.0.1:{}{}\"\nkey_file = {:?}\nhost_key = {:?}\n",
                server.user.name,
                server.port,
                server.root.display(),
                server.client_key.display().to_string(),
                server.host_key
            ),
        };
        r.folders();
        r
    }

    /// The partner's inbox and acknowledgement folders (polled every cycle).
    fn folders(&self) {
        for f in ["inbox", "acks"] {
            std::fs::create_dir_all(self.root.join(f)).unwrap();
        }
        self.user.chown(&self.root).unwrap();
    }

    fn to_print(&self) -> PathBuf {
        self.root.join("to-print")
    }
}

/// Writes `wharf.toml` into `dir` (state in `dir/state`, embedded
/// repository): Globex with the print plugin on `remote`, releasing
/// approved documents of `Partners/globex/Catalog`; `runtime` is added to
/// `[runtime]`.
fn write_config(dir: &Path, remote: &Remote<'_>, runtime: &str) -> PathBuf {
    let plugin = component("globex-print");
    let text = format!(
        "[runtime]\nstate_dir = \"state\"\nplugins_dir = {plugins:?}\n{runtime}\n\n\
         [ecm]\nkind = \"embedded\"\n\n\
         [[partner]]\nid = \"{PARTNER}\"\nplugin = \"globex-print.wasm\"\n{endpoint}\
         poll_interval_secs = 1\ncomplete = {{ stable_polls = 1, min_age_secs = 0 }}\n\n\
         [partner.outbound]\nscope = \"{scope}\"\ncategory = \"Print\"\nattribute = \"Status\"\n\
         value = \"Approved\"\npoll_interval_secs = 1\nack_folder = \"acks\"\n",
        plugins = plugin.parent().unwrap().display().to_string(),
        endpoint = remote.endpoint_toml,
        scope = SCOPE.join("/"),
    );
    let path = dir.join("wharf.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn open(path: &Path) -> Arc<Runtime> {
    let config = wharf::config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let runtime = Runtime::open(config)
        .await
        .unwrap_or_else(|e| panic!("runtime opens: {e:#}"));
    assert!(
        runtime.unavailable().is_empty(),
        "{:?}",
        runtime.unavailable()
    );
    Arc::new(runtime)
}

fn embedded(runtime: &Runtime) -> &Embedded {
    match runtime.repository().as_ref() {
        AnyRepository::Embedded(e) => e,
        AnyRepository::Otcs(_) => panic!("the tests use the embedded repository"),
    }
}

/// The partner was reached and nothing is left to retry.
fn assert_clean(summary: &Summary) {
    assert!(
        summary.unavailable.is_empty(),
        "unavailable: {:?}",
        summary.unavailable
    );
    let retrying: Vec<_> = summary
        .exports
        .iter()
        .filter(|e| e.outcome == ExportOutcome::Retrying)
        .collect();
    assert!(retrying.is_empty(), "retrying: {retrying:#?}");
}

/// The files in a server folder with their sizes and modification times.
fn listing(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        (m.len(), m.modified().ok()?),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names(dir: &Path) -> Vec<String> {
    listing(dir).into_keys().collect()
}

/// Approved documents leave under the plugin's names with their exact bytes,
/// an unapproved one never, and a second cycle sends nothing.
async fn delivers_approved_documents_once(remote: &Remote<'_>, dir: &Path) {
    let runtime = open(&write_config(dir, remote, "")).await;
    let repo = embedded(&runtime);
    let catalog = scope_folder(repo).await;
    let spring = pdf("spring catalog");
    let autumn = pdf(&"autumn catalog, many pages\n".repeat(5000));
    let draft = pdf("draft catalog");
    let mut want = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for (name, bytes, status, job) in [
        ("Spring.pdf", &spring, "Approved", "J1"),
        ("Autumn catalog.pdf", &autumn, "Approved", "J-20"),
        ("Draft.pdf", &draft, "Draft", "J3"),
    ] {
        let node = store(
            repo,
            catalog,
            name,
            &BytesSource(bytes.clone().into()),
            &sha256(bytes),
            status,
            job,
        )
        .await;
        nodes.insert(name, node);
        if status == "Approved" {
            want.insert(
                format!(
                    "GLOBEX_{job}_v1_{}",
                    name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_")
                ),
                bytes.clone(),
            );
        }
    }

    let first = runtime.once().await;
    assert_clean(&first);
    let delivered: Vec<_> = first
        .exports
        .iter()
        .filter(|e| e.outcome == ExportOutcome::Delivered)
        .collect();
    assert_eq!(delivered.len(), 2, "{:#?}", first.exports);
    assert!(
        first
            .exports
            .iter()
            .all(|e| e.node != nodes["Draft.pdf"].0 as u64),
        "an unapproved document is not even selected: {:#?}",
        first.exports
    );
    let to_print = remote.to_print();
    assert_eq!(
        names(&to_print),
        want.keys().cloned().collect::<Vec<_>>(),
        "exactly the approved documents, no temporary file left"
    );
    for (name, bytes) in &want {
        let on_server = std::fs::read(to_print.join(name)).unwrap();
        assert_eq!(on_server.len(), bytes.len(), "{name}");
        assert!(&on_server == bytes, "{name}: bytes differ");
        let report = delivered
            .iter()
            .find(|e| e.remote_path.as_deref() == Some(&format!("to-print/{name}")))
            .unwrap_or_else(|| panic!("no report for {name}: {delivered:#?}"));
        assert_eq!(report.bytes_sent, bytes.len() as u64);
        assert!(
            !report.uploading.is_zero() && report.uploading <= report.elapsed,
            "{report:#?}"
        );
    }
    let ledger = runtime.ledger();
    let rows = ledger.deliveries(Some(PARTNER), None, None).unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for d in &rows {
        assert_eq!(d.state, DeliveryState::Done);
        assert!(d.receipt_node.is_some(), "{d:#?}");
        let name = d
            .remote_path
            .as_deref()
            .unwrap()
            .trim_start_matches("to-print/");
        assert_eq!(d.sha256.as_deref(), Some(sha256(&want[name]).as_str()));
    }
    // The unapproved document, asked for on demand, is refused too.
    let out = runtime.outbound(PARTNER).unwrap();
    assert_eq!(
        out.export(nodes["Draft.pdf"]).await.outcome,
        ExportOutcome::NotApproved
    );

    // A second cycle sends nothing: same files, untouched.
    let before = listing(&to_print);
    let second = runtime.once().await;
    assert_clean(&second);
    assert!(
        second
            .exports
            .iter()
            .all(|e| e.outcome == ExportOutcome::Skipped
                && e.bytes_sent == 0
                && e.uploading.is_zero()),
        "{:#?}",
        second.exports
    );
    assert_eq!(listing(&to_print), before);
    assert_eq!(
        ledger.deliveries(Some(PARTNER), None, None).unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_delivers_approved_documents_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Vsftpd::start(VsftpdOptions::default()).expect("vsftpd starts");
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::ftp(&server, dir.path());
    delivers_approved_documents_once(&remote, dir.path()).await;
    // Every upload went to a temporary name first, then was renamed.
    let log = server.log();
    assert!(
        log.contains("/to-print/.GLOBEX_J1_v1_Spring.pdf.part"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_delivers_approved_documents_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Sshd::start().expect("sshd starts");
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::sftp(&server);
    delivers_approved_documents_once(&remote, dir.path()).await;
}

/// What a lister on the server saw during an upload.
#[derive(Debug, Default)]
struct Sightings {
    scans: u64,
    /// Sizes of the temporary file seen below the full size.
    partial_temp: u64,
    /// The final name at its full size.
    complete: u64,
    /// The final name at any other size: must stay empty.
    partial_final: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partners_lister_never_sees_a_partial_file_under_the_final_name() {
    const SIZE: u64 = 256 << 20;
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Vsftpd::start(VsftpdOptions::default()).expect("vsftpd starts");
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::ftp(&server, dir.path());
    let runtime = open(&write_config(dir.path(), &remote, "")).await;
    let repo = embedded(&runtime);
    let catalog = scope_folder(repo).await;
    let source = dir.path().join("big.pdf");
    let sha = write_big_pdf(&source, SIZE);
    store(
        repo,
        catalog,
        "Big.pdf",
        &FileSource::new(&source),
        &sha,
        "Approved",
        "J77",
    )
    .await;
    std::fs::remove_file(&source).unwrap();

    let final_name = "GLOBEX_J77_v1_Big.pdf";
    let temp_name = format!(".{final_name}.part");
    let to_print = remote.to_print();
    let stop = Arc::new(AtomicBool::new(false));
    let lister = {
        let (stop, to_print, temp_name) = (stop.clone(), to_print.clone(), temp_name.clone());
        std::thread::spawn(move || {
            let mut seen = Sightings::default();
            loop {
                let last = stop.load(Ordering::Acquire);
                seen.scans += 1;
                for entry in std::fs::read_dir(&to_print).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    // The entry may be renamed away between the listing and
                    // the look at its size.
                    let Ok(size) = std::fs::metadata(entry.path()).map(|m| m.len()) else {
                        continue;
                    };
                    if name == final_name {
                        if size == SIZE {
                            seen.complete += 1;
                        } else {
                            seen.partial_final.push(size);
                        }
                    } else if name == temp_name && size < SIZE {
                        seen.partial_temp += 1;
                    }
                }
                if last {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let started = Instant::now();
    let summary = runtime.once().await;
    let took = started.elapsed();
    stop.store(true, Ordering::Release);
    let seen = lister.join().unwrap();
    eprintln!("{SIZE} bytes delivered in {took:?}; lister: {seen:?}");
    assert_clean(&summary);
    assert_eq!(
        summary
            .exports
            .iter()
            .filter(|e| e.outcome == ExportOutcome::Delivered)
            .count(),
        1,
        "{:#?}",
        summary.exports
    );
    assert!(
        seen.partial_final.is_empty(),
        "the final name showed partial sizes: {:?}",
        seen.partial_final
    );
    assert!(
        seen.partial_temp > 0,
        "the lister never saw the upload under way: {seen:?}"
    );
    assert!(seen.complete > 0, "{seen:?}");
    assert_eq!(names(&to_print), [final_name]);
    assert_eq!(sha256_file(&to_print.join(final_name)), sha);
}

/// A child process, killed (SIGKILL) and reaped when dropped.
struct Proc(Child);

impl Proc {
    fn wharf(config: &Path, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("run")
            .arg("-c")
            .arg(config)
            .env("WHARF_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("wharf starts");
        Proc(child)
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    fn kill(&mut self) -> ExitStatus {
        let _ = self.0.kill();
        self.0.wait().unwrap()
    }

    /// SIGTERM, then wait up to `limit` for the exit.
    fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        // SAFETY: kill(2) on a child this test started and has not reaped.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether the JSON log holds a `delivered` outbound event.
fn logged_delivered(log: &Path) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|e| e["fields"]["outcome"] == "delivered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_1_gib_upload_the_binary_delivers_once_after_a_restart() {
    const SIZE: u64 = 1 << 30;
    let _one = ONE_AT_A_TIME.lock().await;
    let test_started = Instant::now();
    let server = Vsftpd::start(VsftpdOptions::default()).expect("vsftpd starts");
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::ftp(&server, dir.path());
    let admin = free_port();
    let config = write_config(
        dir.path(),
        &remote,
        &format!("admin_listen = \"127.0.0.1:{admin}\"\nlog_format = \"json\"\ndrain_secs = 30\n"),
    );
    let state = dir.path().join("state");

    // The document goes into the repository before the binary starts (the
    // binary then owns the store).
    let source = dir.path().join("big.pdf");
    let sha = write_big_pdf(&source, SIZE);
    let node = {
        let (repo, _) = Embedded::open(state.join("ecm")).await.unwrap();
        let catalog = scope_folder(&repo).await;
        store(
            &repo,
            catalog,
            "Big.pdf",
            &FileSource::new(&source),
            &sha,
            "Approved",
            "J1",
        )
        .await
    };
    std::fs::remove_file(&source).unwrap();
    eprintln!("1 GiB document stored in {:?}", test_started.elapsed());

    let final_name = "GLOBEX_J1_v1_Big.pdf";
    let temp_name = format!(".{final_name}.part");
    let to_print = remote.to_print();
    let log = dir.path().join("wharf.log");

    // First run: killed once the temporary file is past 30 %.
    let mut wharf = Proc::wharf(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    let killed_at = loop {
        let temp = std::fs::metadata(to_print.join(&temp_name)).map(|m| m.len());
        if let Ok(size) = temp
            && size > SIZE * 3 / 10
        {
            wharf.kill();
            break size;
        }
        assert!(
            !to_print.join(final_name).exists(),
            "the upload finished before it could be interrupted"
        );
        assert!(wharf.alive(), "wharf exited: {}", tail(&log, 30));
        assert!(
            Instant::now() < deadline,
            "no upload under way within 120 s: {}",
            tail(&log, 30)
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    eprintln!(
        "killed at {killed_at} of {SIZE} bytes uploaded ({:?} into the test)",
        test_started.elapsed()
    );
    assert!(
        !to_print.join(final_name).exists(),
        "a partial file under the final name"
    );
    // What the interrupted upload left: its temporary file, nothing else.
    assert_eq!(names(&to_print), std::slice::from_ref(&temp_name));

    // Second run: resumes the delivery.
    let restarted = Instant::now();
    let mut wharf = Proc::wharf(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !logged_delivered(&log) {
        assert!(wharf.alive(), "wharf exited: {}", tail(&log, 30));
        assert!(
            Instant::now() < deadline,
            "not delivered within 180 s of the restart: {}",
            tail(&log, 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("delivered {:?} after the restart", restarted.elapsed());
    let status = wharf
        .terminate(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no exit within 60 s of SIGTERM: {}", tail(&log, 30)));
    assert!(status.success(), "{status}: {}", tail(&log, 30));

    // Exactly one final file, complete, no temporary file left.
    assert_eq!(names(&to_print), [final_name]);
    let delivered = to_print.join(final_name);
    assert_eq!(std::fs::metadata(&delivered).unwrap().len(), SIZE);
    assert_eq!(sha256_file(&delivered), sha);
    // One delivery, done, with its receipt; nothing left in the spool.
    let ledger = Ledger::open(&state.join("ledger.db")).unwrap();
    let rows = ledger.deliveries(Some(PARTNER), None, None).unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let d = &rows[0];
    assert_eq!(d.state, DeliveryState::Done, "{d:#?}");
    assert_eq!(d.key.node_id, node.0 as u64);
    assert_eq!(d.key.version, 1);
    assert_eq!(d.size, SIZE);
    assert_eq!(d.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(
        d.remote_path.as_deref(),
        Some(format!("to-print/{final_name}").as_str())
    );
    assert!(d.receipt_node.is_some(), "{d:#?}");
    assert!(d.attempts >= 2, "taken up again after the restart: {d:#?}");
    let spool = state.join("spool");
    let left: Vec<_> = walk(&spool);
    assert!(left.is_empty(), "spool files left: {left:?}");
    eprintln!("test took {:?}", test_started.elapsed());
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_over_sftp_is_recorded_on_its_delivery() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Sshd::start().expect("sshd starts");
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::sftp(&server);
    let runtime = open(&write_config(dir.path(), &remote, "")).await;
    let repo = embedded(&runtime);
    let catalog = scope_folder(repo).await;
    for (name, job) in [("Spring.pdf", "J1"), ("Summer.pdf", "J2")] {
        let bytes = pdf(name);
        store(
            repo,
            catalog,
            name,
            &BytesSource(bytes.clone().into()),
            &sha256(&bytes),
            "Approved",
            job,
        )
        .await;
    }
    let first = runtime.once().await;
    assert_clean(&first);
    assert_eq!(
        names(&remote.to_print()),
        ["GLOBEX_J1_v1_Spring.pdf", "GLOBEX_J2_v1_Summer.pdf"]
    );

    // Globex answers one delivery, over its own SFTP folder.
    server
        .seed(
            "acks/GLOBEX_J1_v1_Spring.pdf.ack",
            b"REJECTED: bleed too small\n",
        )
        .unwrap();
    let second = runtime.once().await;
    assert_clean(&second);
    let ledger = runtime.ledger();
    let spring = ledger
        .delivery_by_remote_name(PARTNER, "GLOBEX_J1_v1_Spring.pdf")
        .unwrap()
        .expect("the delivery is found by its remote name");
    assert_eq!(
        spring.ack_status.as_deref(),
        Some("rejected"),
        "{spring:#?}"
    );
    assert_eq!(spring.ack_message.as_deref(), Some("bleed too small"));
    assert!(
        spring.ack_at.is_some() && spring.ack_node.is_some(),
        "{spring:#?}"
    );
    let summer = ledger
        .delivery_by_remote_name(PARTNER, "GLOBEX_J2_v1_Summer.pdf")
        .unwrap()
        .unwrap();
    assert_eq!(summer.ack_status, None, "{summer:#?}");
    // The acknowledgement was taken off the server, archived in the
    // repository, and the refusal opened a review task.
    assert!(names(&server.root.join("acks")).is_empty());
    let ack = repo
        .path_of(NodeId(spring.ack_node.unwrap() as i64))
        .await
        .unwrap();
    assert!(ack.ends_with("GLOBEX_J1_v1_Spring.pdf.ack"), "{ack}");
    assert!(
        repo.workflows()
            .await
            .unwrap()
            .iter()
            .any(|t| t.comment.contains("bleed too small")),
        "the refusal opens a review task"
    );
}
