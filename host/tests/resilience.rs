//! The inbound pipeline's two hardest guarantees, end to end with the real
//! `wharf` binary against a real vsftpd:
//!
//! - killed with SIGKILL at random moments and started again, ten times, it
//!   still files every file exactly once (the ledger records each step
//!   before the next; the repository recognises a document stored before);
//! - a repository that goes away while files are being filed and comes
//!   back later costs retries, never a quarantine and never a duplicate.
//!
//! Each test keeps its servers, processes and state in temporary folders;
//! every child process is killed when its guard is dropped, even when the
//! test fails. The seed of the random kill moments is printed (set
//! `WHARF_RESILIENCE_SEED` to repeat a run).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wharf::ledger::{Claim, Ledger, State};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::{NodeKind, Repository};
use wharf_tests::plugins::component;
use wharf_tests::servers::{Vsftpd, VsftpdOptions, free_port};

/// The partner of both tests.
const PARTNER: &str = "acme";

/// The tests share two cores: one at a time keeps their timings meaningful.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Invoice `i`: a distinct name and distinct content that ACME's plugin
/// accepts (supplier, date and sequence in the name; rows of that supplier).
fn invoice(i: usize) -> (String, Vec<u8>) {
    let supplier = format!("ACME{:02}", 1 + i % 4);
    let month = 1 + (i / 4) % 12;
    let day = 1 + (i / 48) % 28;
    let name = format!("INV_{supplier}_2026{month:02}{day:02}_{:04}.csv", i + 1);
    let mut body = String::from("invoice_no,invoice_date,supplier,currency,amount\n");
    for line in 0..1 + i % 3 {
        body.push_str(&format!(
            "A-{i:05}-{line},2026-{month:02}-{day:02},{supplier},EUR,{}.{:02}\n",
            10 + i,
            (line * 37 + i) % 100
        ));
    }
    (name, body.into_bytes())
}

/// `n` invoices: name → content.
fn invoices(n: usize) -> BTreeMap<String, Vec<u8>> {
    (0..n).map(invoice).collect()
}

/// vsftpd with `files` in `inbox/`, owned by the FTP user.
fn ftp_server_with(files: &BTreeMap<String, Vec<u8>>) -> Vsftpd {
    let server = Vsftpd::start(VsftpdOptions::default()).expect("vsftpd starts");
    let inbox = server.root.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    for (name, bytes) in files {
        std::fs::write(inbox.join(name), bytes).unwrap();
    }
    server.user.chown(&server.root).unwrap();
    server
}

/// The file names in a server folder, sorted (none when it is missing).
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The folder holding the built plugin components.
fn plugins_dir() -> PathBuf {
    component("acme-invoices")
        .parent()
        .expect("components live in a folder")
        .to_path_buf()
}

/// Writes `wharf.toml` into `dir`: state in `dir/state`, `ecm` as the
/// `[ecm]` table, and ACME on `server` with `partner` added.
fn write_config(dir: &Path, server: &Vsftpd, admin: u16, ecm: &str, partner: &str) -> PathBuf {
    let password = dir.join("partner.pw");
    std::fs::write(&password, format!("{}\n", server.user.password)).unwrap();
    let text = format!(
        "[runtime]\nstate_dir = \"state\"\nplugins_dir = {plugins:?}\n\
         admin_listen = \"127.0.0.1:{admin}\"\nmax_concurrent_files = 8\n\
         drain_secs = 30\n\n\
         [ecm]\n{ecm}\n\n\
         [[partner]]\nid = \"{PARTNER}\"\nplugin = \"acme-invoices.wasm\"\n\
         endpoint = \"ftp://{user}@127.0.0.1:{port}/\"\npassword_file = {password:?}\n\
         poll_interval_secs = 1\ncomplete = {{ stable_polls = 1, min_age_secs = 0 }}\n\
         concurrency = 8\nmax_connections = 8\n{partner}\n",
        plugins = plugins_dir().display().to_string(),
        user = server.user.name,
        port = server.port,
        password = password.display().to_string(),
    );
    let path = dir.join("wharf.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A child process, killed (SIGKILL) and reaped when dropped.
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    /// Start the `wharf` binary with `args` and `env`, appending its output
    /// to `log`.
    fn wharf(what: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(args)
            .env("WHARF_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Proc {
            child,
            what: what.to_string(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }

    /// Send `signal` and wait up to `limit` for the exit.
    fn stop(&mut self, signal: i32, limit: Duration) -> ExitStatus {
        // SAFETY: kill(2) on a child this test started and has not reaped.
        unsafe {
            libc::kill(self.pid(), signal);
        }
        self.wait(limit)
            .unwrap_or_else(|| panic!("{} did not stop within {limit:?}", self.what))
    }

    /// Wait up to `limit` for the exit.
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a log file.
fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Wait until 127.0.0.1:`port` accepts connections; `None` when `proc_`
/// exits first or `limit` passes.
fn wait_listening(proc_: &mut Proc, port: u16, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(started.elapsed());
        }
        if proc_.exited().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// `GET path` on 127.0.0.1:`port`; the body when the answer is 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the metric line that starts with `series` (labels included).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// Claims by state, as `claimed 3, transferred 1, ...`.
fn ledger_states(ledger: &Ledger) -> String {
    ledger
        .counts()
        .unwrap()
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Up to five files still in the inbox below `root`, each with its claims
/// and the file's modification time on disk, for a failure message.
fn stuck(ledger: &Ledger, root: &Path) -> String {
    let finished = ledger.finished_between(PARTNER, 0, i64::MAX).unwrap();
    let open = ledger.unfinished(None).unwrap();
    names(&root.join("inbox"))
        .iter()
        .take(5)
        .map(|name| {
            let path = format!("inbox/{name}");
            let mtime = std::fs::metadata(root.join(&path))
                .and_then(|m| m.modified())
                .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
                .unwrap_or(0);
            let claims: Vec<String> = finished
                .iter()
                .chain(&open)
                .filter(|c| c.key.path == path)
                .map(|c| {
                    format!(
                        "claim {} {} outcome {:?} size {} mtime {} node {:?} last error {:?}",
                        c.id, c.state, c.outcome, c.key.size, c.key.mtime, c.node_id, c.last_error
                    )
                })
                .collect();
            format!("  {path} (mtime on disk {mtime}): {claims:?}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One document found in the repository.
#[derive(Debug)]
struct Doc {
    /// Folder path below the partner root, then the name.
    path: String,
    name: String,
    source: Option<String>,
    checksum: Option<String>,
    versions: Vec<Option<String>>,
}

/// What the repository holds for the partner: every document below
/// `Partners/acme/Invoices`, and the names in `Partners/acme/Exceptions`.
struct Inventory {
    invoices: Vec<Doc>,
    exceptions: Vec<String>,
    /// How many 'filed' audit events name each source path.
    filed_events: HashMap<String, usize>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Read the repository in `state` (no process may be writing it).
fn inventory(state: &Path) -> Inventory {
    runtime().block_on(async {
        let (repo, reconciled) = Embedded::open(state).await.expect("the repository opens");
        assert!(
            reconciled.missing_blobs.is_empty(),
            "content missing from the blob store: {reconciled:?}"
        );
        let root = repo
            .resolve_path(&format!("/Partners/{PARTNER}"))
            .await
            .expect("the partner folder exists");
        let child = |name: &'static str| {
            let repo = &repo;
            async move { repo.child_by_name(root, name).await.unwrap() }
        };
        let mut invoices = Vec::new();
        let mut stack = Vec::new();
        if let Some(folder) = child("Invoices").await {
            stack.push((folder.id, "Invoices".to_string()));
        }
        while let Some((folder, path)) = stack.pop() {
            for node in repo.children(folder).await.unwrap() {
                match node.kind {
                    NodeKind::Document => {
                        let cats = repo.categories(node.id).await.unwrap();
                        let provenance = |attr: &str| {
                            cats.iter()
                                .find(|c| c.name == "wharf Transfer")
                                .and_then(|c| c.attributes.iter().find(|a| a.name == attr))
                                .map(|a| a.value.as_text())
                        };
                        let versions = repo
                            .versions(node.id)
                            .await
                            .unwrap()
                            .into_iter()
                            .map(|v| v.sha256)
                            .collect();
                        invoices.push(Doc {
                            path: format!("{path}/{}", node.name),
                            source: provenance("Source Path"),
                            checksum: provenance("SHA-256"),
                            name: node.name,
                            versions,
                        });
                    }
                    _ => stack.push((node.id, format!("{path}/{}", node.name))),
                }
            }
        }
        let exceptions = match child("Exceptions").await {
            Some(folder) => repo
                .children(folder.id)
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.name)
                .collect(),
            None => Vec::new(),
        };
        let mut filed_events = HashMap::new();
        for record in repo.audit(None).await.unwrap() {
            if record.event.action == "filed" {
                // "<source path> (<size> bytes, claim <id>)"
                let path = record.event.detail.split(" (").next().unwrap_or_default();
                *filed_events.entry(path.to_string()).or_default() += 1;
            }
        }
        Inventory {
            invoices,
            exceptions,
            filed_events,
        }
    })
}

/// Every invoice has exactly one 'filed' audit event, and none is left
/// waiting in the ledger.
fn assert_filed_events_once(
    inventory: &Inventory,
    ledger: &Ledger,
    files: &BTreeMap<String, Vec<u8>>,
) {
    let waiting = ledger.outbox(PARTNER, 10).unwrap();
    assert!(waiting.is_empty(), "events never sent: {waiting:#?}");
    let wrong: Vec<(String, usize)> = files
        .keys()
        .map(|name| {
            let source = format!("inbox/{name}");
            let n = inventory.filed_events.get(&source).copied().unwrap_or(0);
            (source, n)
        })
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} file(s) without exactly one 'filed' event, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(inventory.filed_events.len(), files.len());
}

/// Every invoice is in the repository exactly once, under its own name,
/// with one version holding its content; nothing is in the exception
/// folder.
fn assert_filed_once(inventory: &Inventory, files: &BTreeMap<String, Vec<u8>>) {
    let mut by_source: HashMap<&str, Vec<&Doc>> = HashMap::new();
    for doc in &inventory.invoices {
        by_source
            .entry(doc.source.as_deref().unwrap_or("(no source path)"))
            .or_default()
            .push(doc);
    }
    let mut problems = Vec::new();
    for (name, bytes) in files {
        let source = format!("inbox/{name}");
        let sha = sha256(bytes);
        match by_source.get(source.as_str()).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("{name}: not in the repository")),
            Some([doc]) => {
                if &doc.name != name {
                    problems.push(format!("{name}: stored as {}", doc.path));
                }
                if doc.versions != [Some(sha.clone())] {
                    problems.push(format!(
                        "{name}: versions {:?}, expected one with {sha}",
                        doc.versions
                    ));
                }
                if doc.checksum.as_deref() != Some(sha.as_str()) {
                    problems.push(format!("{name}: SHA-256 attribute {:?}", doc.checksum));
                }
            }
            Some(docs) => problems.push(format!(
                "{name}: {} documents: {:?}",
                docs.len(),
                docs.iter().map(|d| &d.path).collect::<Vec<_>>()
            )),
        }
    }
    let strays: Vec<&str> = inventory
        .invoices
        .iter()
        .filter(|d| {
            d.source
                .as_deref()
                .and_then(|s| s.strip_prefix("inbox/"))
                .is_none_or(|n| !files.contains_key(n))
        })
        .map(|d| d.path.as_str())
        .collect();
    if !strays.is_empty() {
        problems.push(format!("documents of no seeded file: {strays:?}"));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in the repository:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(inventory.invoices.len(), files.len());
    assert!(
        inventory.exceptions.is_empty(),
        "quarantined: {:?}",
        inventory.exceptions
    );
}

/// The partner's server: inbox empty, every file archived once under its
/// own name with its content, nothing in the error folder.
fn assert_server_done(server: &Vsftpd, files: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(names(&server.root.join("inbox")), Vec::<String>::new());
    let archived = names(&server.root.join("archive"));
    let expected: Vec<String> = files.keys().cloned().collect();
    if archived != expected {
        let got: BTreeSet<&String> = archived.iter().collect();
        let want: BTreeSet<&String> = expected.iter().collect();
        panic!(
            "archive differs: extra {:?}, missing {:?}",
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        );
    }
    for (name, bytes) in files {
        assert_eq!(
            &std::fs::read(server.root.join("archive").join(name)).unwrap(),
            bytes,
            "{name}"
        );
    }
    assert_eq!(names(&server.root.join("error")), Vec::<String>::new());
}

/// The ledger: no unfinished claim, and exactly one claim per file, filed.
fn assert_ledger_filed(ledger: &Ledger, files: &BTreeMap<String, Vec<u8>>) -> Vec<Claim> {
    let unfinished = ledger.unfinished(None).unwrap();
    assert!(unfinished.is_empty(), "unfinished: {unfinished:#?}");
    let claims = ledger.finished_between(PARTNER, 0, i64::MAX).unwrap();
    let mut per_path: BTreeMap<&str, Vec<&Claim>> = BTreeMap::new();
    for c in &claims {
        per_path.entry(c.key.path.as_str()).or_default().push(c);
    }
    let expected: Vec<String> = files.keys().map(|n| format!("inbox/{n}")).collect();
    let paths: Vec<String> = per_path.keys().map(|p| p.to_string()).collect();
    assert_eq!(
        paths, expected,
        "claimed paths differ from the seeded files"
    );
    let odd: Vec<&Claim> = claims
        .iter()
        .filter(|c| {
            c.outcome.as_deref() != Some("filed") || per_path[c.key.path.as_str()].len() > 1
        })
        .collect();
    assert!(odd.is_empty(), "claims not filed exactly once: {odd:#?}");
    assert_eq!(claims.len(), files.len());
    claims
}

#[test]
fn kill_nine_ten_times_files_each_exactly_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let seed = std::env::var("WHARF_RESILIENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (set WHARF_RESILIENCE_SEED={seed} to repeat)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let files = invoices(1000);
    let server = ftp_server_with(&files);
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = write_config(dir.path(), &server, admin, "kind = \"embedded\"", "");
    let config = config.to_str().unwrap();
    let log = dir.path().join("wharf.log");
    let state = dir.path().join("state");
    let archive = server.root.join("archive");
    println!(
        "setup: {} files seeded, plugins built, in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );

    let crashes = Instant::now();
    let mut caught_in_flight = 0;
    for round in 1..=10 {
        let delay = Duration::from_millis(rng.u64(300..1500));
        let before = count(&archive);
        let mut wharf = Proc::wharf("wharf run", &["run", "-c", config], &[], &log);
        let spawned = Instant::now();
        let ready = wait_listening(&mut wharf, admin, delay);
        if let Some(t) = delay.checked_sub(spawned.elapsed()) {
            std::thread::sleep(t);
        }
        if let Some(status) = wharf.exited() {
            panic!(
                "wharf exited by itself ({status}) in round {round}:\n{}",
                tail(&log, 40)
            );
        }
        wharf.kill();
        let ledger = Ledger::open(&state.join("ledger.db")).unwrap();
        caught_in_flight += ledger.unfinished(None).unwrap().len();
        println!(
            "kill {round:>2} at {:>4} ms (admin endpoint up at {}): archived {before} -> {}; ledger: {}",
            delay.as_millis(),
            ready.map_or("-".to_string(), |t| format!("{} ms", t.as_millis())),
            count(&archive),
            ledger_states(&ledger)
        );
    }
    println!(
        "10 kills in {:.1} s; {caught_in_flight} claim(s) were unfinished at the kills",
        crashes.elapsed().as_secs_f64()
    );
    assert!(
        caught_in_flight > 0,
        "no kill caught a file in flight: the run tested no recovery"
    );

    // Now let it finish: one cycle at a time, until nothing is left.
    let finish = Instant::now();
    let mut cycles = 0;
    loop {
        cycles += 1;
        let mut once = Proc::wharf(
            "wharf run --once",
            &["run", "-c", config, "--once"],
            &[],
            &log,
        );
        let status = once
            .wait(Duration::from_secs(180))
            .unwrap_or_else(|| panic!("wharf run --once hangs:\n{}", tail(&log, 40)));
        let ledger = Ledger::open(&state.join("ledger.db")).unwrap();
        let unfinished = ledger.unfinished(None).unwrap().len();
        let inbox = count(&server.root.join("inbox"));
        println!(
            "cycle {cycles}: {status} after {:.1} s; inbox {inbox}, archive {}, ledger: {}",
            finish.elapsed().as_secs_f64(),
            count(&archive),
            ledger_states(&ledger)
        );
        if status.success() && inbox == 0 && unfinished == 0 {
            break;
        }
        assert!(
            cycles < 5,
            "not finished after {cycles} cycles: inbox {inbox}, unfinished {unfinished}; \
             some files left in the inbox:\n{}\nlog:\n{}",
            stuck(&ledger, &server.root),
            tail(&log, 60)
        );
    }
    println!(
        "finished in {cycles} cycle(s), {:.1} s",
        finish.elapsed().as_secs_f64()
    );

    let checks = Instant::now();
    let ledger = Ledger::open(&state.join("ledger.db")).unwrap();
    let claims = assert_ledger_filed(&ledger, &files);
    let resumed = claims.iter().filter(|c| c.attempts > 1).count();
    println!("{resumed} claim(s) took more than one attempt");
    assert_server_done(&server, &files);
    let inventory = inventory(&state.join("ecm"));
    assert_filed_once(&inventory, &files);
    assert_filed_events_once(&inventory, &ledger, &files);
    drop(ledger);
    println!(
        "checks in {:.1} s; whole test {:.1} s",
        checks.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The Content Server mapping both the client and the facade use: every
/// category, RM class, group and workflow a filing of ACME's may name.
const MAPPING: &str = r#"
[categories."wharf Transfer"]
id = 7001
attributes = { "Partner" = 2, "Source Path" = 3, "Received" = 4, "SHA-256" = 5, "Size" = 6, "Plugin" = 7, "Plugin Version" = 8, "Plugin Digest" = 9 }

[categories."Invoice"]
id = 7002
attributes = { "Supplier" = 2, "Invoice Date" = 3, "Sequence" = 4, "Line Count" = 5, "Total Amount" = 6, "Currency" = 7 }

[categories."wharf Exception"]
id = 7003
attributes = { "Code" = 2, "Message" = 3, "Attempts" = 4, "Claim" = 5 }

[categories."wharf Delivery Log"]
id = 7004
attributes = { "Partner" = 2, "Day" = 3, "Files" = 4, "Filed" = 5, "Quarantined" = 6 }

[workflows]
review = 41

[rm_classes]
"FIN-7Y" = 51

[groups]
"Accounts Payable" = 61
"#;

/// `wharf ecm serve` on a fixed port and state folder, restartable.
struct EcmServer {
    proc_: Option<Proc>,
    port: u16,
    state: PathBuf,
    mapping: PathBuf,
    log: PathBuf,
}

const ECM_PASSWORD_ENV: &str = "WHARF_RESILIENCE_ECM_PW";
const ECM_PASSWORD: &str = "resilience-test-ecm-pw";

impl EcmServer {
    fn new(dir: &Path) -> EcmServer {
        let mapping: wharf_ecm::otcs::Mapping = toml::from_str(MAPPING).unwrap();
        let json = dir.join("facade-mapping.json");
        std::fs::write(&json, serde_json::to_vec_pretty(&mapping).unwrap()).unwrap();
        EcmServer {
            proc_: None,
            port: free_port(),
            state: dir.join("ecm-server"),
            mapping: json,
            log: dir.join("ecm-server.log"),
        }
    }

    fn start(&mut self) -> Duration {
        let listen = format!("127.0.0.1:{}", self.port);
        let mut p = Proc::wharf(
            "wharf ecm serve",
            &[
                "ecm",
                "serve",
                "--state",
                self.state.to_str().unwrap(),
                "--listen",
                &listen,
                "--user",
                "wharf",
                "--password-env",
                ECM_PASSWORD_ENV,
                "--mapping",
                self.mapping.to_str().unwrap(),
            ],
            &[(ECM_PASSWORD_ENV, ECM_PASSWORD)],
            &self.log,
        );
        let up = wait_listening(&mut p, self.port, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the ECM server did not start:\n{}", tail(&self.log, 30)));
        self.proc_ = Some(p);
        up
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc_.take() {
            p.kill();
        }
    }

    /// Stop it as an operator would (Ctrl-C).
    fn stop(&mut self) {
        if let Some(mut p) = self.proc_.take() {
            p.stop(libc::SIGINT, Duration::from_secs(30));
        }
    }
}

#[test]
fn an_ecm_outage_mid_run_recovers_without_duplicates() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let files = invoices(200);
    let server = ftp_server_with(&files);
    let dir = tempfile::tempdir().unwrap();
    let mut ecm = EcmServer::new(dir.path());
    ecm.start();
    let client_mapping = dir.path().join("mapping.toml");
    std::fs::write(&client_mapping, MAPPING).unwrap();
    let admin = free_port();
    // One failed attempt quarantines a file: an outage that counted would
    // show at once.
    let config = write_config(
        dir.path(),
        &server,
        admin,
        &format!(
            "kind = \"otcs\"\nurl = \"{}\"\nuser = \"wharf\"\npassword_env = \"{ECM_PASSWORD_ENV}\"\n\
             mapping_file = {:?}\nroot_id = 2000",
            ecm.url(),
            client_mapping.display().to_string()
        ),
        "max_attempts = 1",
    );
    let log = dir.path().join("wharf.log");
    let state = dir.path().join("state");
    let archive = server.root.join("archive");
    println!(
        "setup: {} files seeded, ECM server up, in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );

    let mut wharf = Proc::wharf(
        "wharf run",
        &["run", "-c", config.to_str().unwrap()],
        &[(ECM_PASSWORD_ENV, ECM_PASSWORD)],
        &log,
    );
    let run_started = Instant::now();
    wait_listening(&mut wharf, admin, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("wharf did not start:\n{}", tail(&log, 40)));

    // Let some files through, then take the repository away mid-run.
    let limit = Instant::now() + Duration::from_secs(90);
    while count(&archive) < 20 {
        assert!(
            Instant::now() < limit,
            "no progress before the outage:\n{}",
            tail(&log, 40)
        );
        assert!(
            wharf.exited().is_none(),
            "wharf exited:\n{}",
            tail(&log, 40)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ecm.kill();
    let outage = Instant::now();
    let at_kill = count(&archive);
    println!(
        "ECM server killed {:.1} s into the run with {at_kill} file(s) archived",
        run_started.elapsed().as_secs_f64()
    );

    // wharf keeps going without its repository for a while: at least six
    // seconds, and until a failed attempt is counted (the client's own
    // retries come first), up to a minute.
    let mut ecm_failures = 0.0;
    while outage.elapsed() < Duration::from_secs(6)
        || (ecm_failures == 0.0 && outage.elapsed() < Duration::from_secs(60))
    {
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            wharf.exited().is_none(),
            "wharf exited:\n{}",
            tail(&log, 40)
        );
        if let Some(m) = http_get(admin, "/metrics") {
            ecm_failures = metric(
                &m,
                &format!("wharf_failures_total{{partner=\"{PARTNER}\",kind=\"ecm\"}}"),
            )
            .unwrap_or(0.0);
        }
    }
    let during = count(&archive);
    println!(
        "during the outage: {} more file(s) archived, wharf_failures_total{{kind=\"ecm\"}} = {ecm_failures}",
        during - at_kill
    );
    assert!(
        ecm_failures > 0.0,
        "no repository failure counted during the outage:\n{}",
        http_get(admin, "/metrics").unwrap_or_default()
    );
    assert_eq!(
        names(&server.root.join("error")),
        Vec::<String>::new(),
        "files were quarantined during the outage"
    );

    // The repository comes back on the same address with the same state.
    let up = ecm.start();
    println!(
        "ECM server back after {:.1} s (listening {} ms after start)",
        outage.elapsed().as_secs_f64(),
        up.as_millis()
    );
    let back = Instant::now();
    while count(&archive) < files.len() || count(&server.root.join("inbox")) > 0 {
        assert!(
            back.elapsed() < Duration::from_secs(120),
            "not finished 120 s after the repository came back: archive {}, inbox {}, error {:?}:\n{}",
            count(&archive),
            count(&server.root.join("inbox")),
            names(&server.root.join("error")),
            tail(&log, 60)
        );
        assert!(
            wharf.exited().is_none(),
            "wharf exited:\n{}",
            tail(&log, 40)
        );
        assert_eq!(
            names(&server.root.join("error")),
            Vec::<String>::new(),
            "files were quarantined after the outage"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "all {} archived {:.1} s after the repository came back",
        files.len(),
        back.elapsed().as_secs_f64()
    );
    let metrics = http_get(admin, "/metrics").unwrap_or_default();
    let after = metric(
        &metrics,
        &format!("wharf_failures_total{{partner=\"{PARTNER}\",kind=\"ecm\"}}"),
    )
    .unwrap_or(0.0);
    assert!(after >= ecm_failures && after > 0.0, "{metrics}");
    println!("after recovery: wharf_failures_total{{kind=\"ecm\"}} = {after}");

    // Stop both as an operator would, then look at what they left.
    let status = wharf.stop(libc::SIGTERM, Duration::from_secs(60));
    assert!(status.success(), "wharf stopped with {status}");
    ecm.stop();

    let ledger = Ledger::open(&state.join("ledger.db")).unwrap();
    let claims = assert_ledger_filed(&ledger, &files);
    let hit: Vec<&Claim> = claims.iter().filter(|c| c.last_error.is_some()).collect();
    println!(
        "{} claim(s) met the outage; {} took more than one attempt",
        hit.len(),
        claims.iter().filter(|c| c.attempts > 1).count()
    );
    assert!(!hit.is_empty(), "no file was in flight during the outage");
    let counted: Vec<&Claim> = claims.iter().filter(|c| c.failures > 0).collect();
    assert!(
        counted.is_empty(),
        "the outage counted as failed attempts: {counted:#?}"
    );
    assert_server_done(&server, &files);
    assert_filed_once(&inventory(&ecm.state), &files);
    assert!(
        !claims.iter().any(|c| c.state != State::Done),
        "a claim is not done"
    );
    println!("whole test {:.1} s", started.elapsed().as_secs_f64());
}
