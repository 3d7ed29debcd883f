//! End-to-end benchmark of the outbound release against a real vsftpd and a
//! real sshd on 127.0.0.1: one `Runtime::once` cycle (select approved
//! documents → spool + SHA-256 → `on-export` of the example print plugin →
//! atomic upload → ledger → receipt in the repository) beside `rclone copy`
//! uploading the same files from a local folder to the same server, for
//! 1,000 × 10 KiB documents and for one 1 GiB document.
//!
//! The runtime runs in a child process (this binary again, with
//! `WHARF_BENCH_OUTBOUND_CHILD` naming the configuration), so its peak RSS
//! and its wall time are its own, measured as rclone's are: from spawn to
//! exit, with the peak RSS from `wait4`. The documents are stored into a
//! template repository once per workload (not measured) and copied into
//! every fresh state folder; the compiled-plugin cache is warmed once and
//! copied too, as a running service would have it. Every run is checked:
//! every document delivered under the plugin's name with its exact bytes,
//! the ledger's done deliveries, rclone's copies.
//!
//! Run: `cargo bench -p wharf --bench outbound` (as root: it installs and
//! starts the servers). `WHARF_BENCH_QUICK=1` runs 100 documents and 64 MiB;
//! `WHARF_BENCH_REPS` sets the rounds whose median is printed (default 1);
//! `WHARF_BENCH_WRAP` prefixes the measured child's command line (e.g.
//! `perf record -g -o wharf.perf --`, to profile it alone);
//! `WHARF_BENCH_ONLY` picks cases, e.g. `sftp`, `large` or `ftp-small,sftp-large`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wharf::flow::outbound::ExportOutcome;
use wharf::ledger::{DeliveryState, Ledger};
use wharf::runtime::Runtime;
use wharf_ecm::embedded::Embedded;
use wharf_ecm::{
    Attribute, AttributeValue, BytesSource, Category, CollisionPolicy, ContentSource, FileSource,
    NewDocument, NodeId, Repository,
};
use wharf_tests::servers::{FtpTls, Sshd, Vsftpd, VsftpdOptions};

/// rclone's parallel transfers, and wharf's connections to the server.
const PARALLEL: usize = 8;
/// Documents wharf works on at once: more than its connections, so one
/// document's repository, plugin and ledger work overlaps the others'
/// uploads (as in the inbound bench).
const IN_FLIGHT: usize = PARALLEL * 4;
const SMALL_SIZE: usize = 10 * 1024;
const PARTNER: &str = "globex";
const SCOPE: [&str; 3] = ["Partners", "globex", "Catalog"];
const CHILD_ENV: &str = "WHARF_BENCH_OUTBOUND_CHILD";
const RSS_TARGET: u64 = 64 << 20;

/// What the child reports on its one line of stdout.
#[derive(Debug, Default)]
struct ChildReport {
    open_secs: f64,
    once_secs: f64,
    delivered: usize,
    exports: usize,
    bytes: u64,
    problems: Vec<String>,
}

/// The measured side: open the runtime from the configuration, run one
/// cycle, report on stdout.
fn child(config_path: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let path = Path::new(config_path);
    let text = std::fs::read_to_string(path).expect("reading the configuration");
    let config = wharf::config::parse(&text, path.parent().expect("config folder"))
        .unwrap_or_else(|p| panic!("configuration: {p:?}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = rt.block_on(async move {
        let t = Instant::now();
        let runtime = Arc::new(Runtime::open(config).await.expect("runtime opens"));
        let open_secs = t.elapsed().as_secs_f64();
        assert!(
            runtime.unavailable().is_empty(),
            "partner not started: {:?}",
            runtime.unavailable()
        );
        let summary = runtime.once().await;
        let problems: Vec<String> = summary
            .exports
            .iter()
            .filter(|e| e.outcome != ExportOutcome::Delivered)
            .map(|e| format!("{} {}: {}", e.name, e.outcome.as_str(), e.detail))
            .chain(
                summary
                    .unavailable
                    .iter()
                    .map(|u| format!("{} unavailable: {}", u.partner, u.reason)),
            )
            .take(10)
            .collect();
        serde_json::json!({
            "open_secs": open_secs,
            "once_secs": summary.elapsed.as_secs_f64(),
            "delivered": summary.exports.iter().filter(|e| e.outcome == ExportOutcome::Delivered).count(),
            "exports": summary.exports.len(),
            "bytes": summary.exports.iter().map(|e| e.bytes_sent).sum::<u64>(),
            "problems": problems,
        })
    });
    println!("{report}");
}

fn parse_report(line: &str) -> ChildReport {
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("child report {line:?} is not JSON: {e}"));
    ChildReport {
        open_secs: v["open_secs"].as_f64().unwrap_or(0.0),
        once_secs: v["once_secs"].as_f64().unwrap_or(0.0),
        delivered: v["delivered"].as_u64().unwrap_or(0) as usize,
        exports: v["exports"].as_u64().unwrap_or(0) as usize,
        bytes: v["bytes"].as_u64().unwrap_or(0),
        problems: v["problems"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p.as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Runs `cmd` to its end, its stderr going to `stderr` (a file, shown when
/// it fails) or inherited; returns (wall seconds, peak RSS in bytes, CPU
/// seconds (user + system), stdout).
// The child is reaped with wait4 (which also reports its peak RSS), not Child::wait.
#[allow(clippy::zombie_processes)]
fn timed(cmd: &mut Command, stderr: Option<&Path>) -> (f64, u64, f64, String) {
    let err = match stderr {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("stderr file")),
        None => Stdio::inherit(),
    };
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .expect("reading the child's stdout");
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; wait4 reaps our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let secs = t.elapsed().as_secs_f64();
    assert!(
        r > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed (status {status:#x}); stdout: {out}; stderr: {}",
        stderr
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    );
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs,
        usage.ru_maxrss as u64 * 1024,
        cpu(usage.ru_utime) + cpu(usage.ru_stime),
        out,
    )
}

/// One server as both tools see it.
struct Server {
    proto: &'static str,
    /// The folder the user sees as the partner root.
    root: PathBuf,
    owner: String,
    /// The `[[partner]]` lines naming the endpoint and its credentials.
    endpoint_toml: String,
}

impl Server {
    fn chown(&self) {
        let st = Command::new("chown")
            .args(["-R", &self.owner])
            .arg(&self.root)
            .status()
            .expect("chown");
        assert!(st.success(), "chown failed");
    }

    /// The folders the partner's pipelines poll, and nothing delivered.
    fn reset(&self) {
        for f in ["to-print", "rclone-out"] {
            let _ = std::fs::remove_dir_all(self.root.join(f));
        }
        for f in ["inbox", "acks"] {
            std::fs::create_dir_all(self.root.join(f)).unwrap();
        }
        self.chown();
    }
}

/// A workload: documents in a template repository, the same bytes in a
/// local folder under their delivered names (rclone's source).
struct Workload {
    label: String,
    /// (delivered name, SHA-256) of each document.
    files: Vec<(String, String)>,
    size: u64,
    /// The state folder holding the repository (`ecm/`).
    template: PathBuf,
    /// rclone's source folder.
    local: PathBuf,
}

impl Workload {
    fn bytes(&self) -> u64 {
        self.size * self.files.len() as u64
    }
}

fn small_pdf(i: usize) -> Vec<u8> {
    // Distinct content per document: the repository stores equal content once.
    let mut data: Vec<u8> = (0..SMALL_SIZE)
        .map(|j| ((i * 31 + j * 7) % 251) as u8)
        .collect();
    data[..9].copy_from_slice(b"%PDF-1.7\n");
    data[9..17].copy_from_slice(&(i as u64).to_le_bytes());
    data
}

/// Writes a PDF-looking file of `size` bytes (a multiple of 1 MiB); returns
/// its SHA-256.
fn write_large_pdf(path: &Path, size: u64) -> String {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut chunk: Vec<u8> = (0..1u32 << 20)
        .map(|j| (j.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for i in 0..size / (1 << 20) {
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

fn delivered_name(job: &str, name: &str) -> String {
    format!("GLOBEX_{job}_v1_{name}")
}

async fn store(
    repo: &Embedded,
    folder: NodeId,
    name: &str,
    job: &str,
    sha: &str,
    content: &dyn ContentSource,
) {
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
                        value: AttributeValue::Text("Approved".into()),
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
    .unwrap_or_else(|e| panic!("storing {name}: {e}"));
}

/// A state folder whose repository holds the scope folder, filled by `fill`.
fn template(work: &Path, label: &str, fill: impl AsyncFnOnce(&Embedded, NodeId)) -> PathBuf {
    let state = work.join(format!("template-{label}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (repo, _) = Embedded::open(state.join("ecm")).await.expect("repository");
        let segments: Vec<String> = SCOPE.iter().map(|s| s.to_string()).collect();
        let folder = repo
            .ensure_folder(NodeId::ENTERPRISE, &segments)
            .await
            .unwrap();
        fill(&repo, folder).await;
    });
    state
}

fn small_workload(work: &Path, n: usize) -> Workload {
    let local = work.join("local-small");
    std::fs::create_dir_all(&local).unwrap();
    let mut files = Vec::new();
    let template = template(work, "small", async |repo: &Embedded, folder| {
        for i in 0..n {
            let (name, job) = (format!("doc{i:05}.pdf"), format!("J{i}"));
            let data = small_pdf(i);
            let sha = hex::encode(Sha256::digest(&data));
            let delivered = delivered_name(&job, &name);
            std::fs::write(local.join(&delivered), &data).unwrap();
            store(repo, folder, &name, &job, &sha, &BytesSource(data.into())).await;
            files.push((delivered, sha));
        }
    });
    Workload {
        label: format!("{n} x 10 KiB"),
        files,
        size: SMALL_SIZE as u64,
        template,
        local,
    }
}

fn large_workload(work: &Path, size: u64) -> Workload {
    let local = work.join("local-large");
    std::fs::create_dir_all(&local).unwrap();
    let delivered = delivered_name("J1", "Big.pdf");
    let source = local.join(&delivered);
    let sha = write_large_pdf(&source, size);
    let template = template(work, "large", async |repo: &Embedded, folder| {
        store(
            repo,
            folder,
            "Big.pdf",
            "J1",
            &sha,
            &FileSource::new(&source),
        )
        .await;
    });
    Workload {
        label: format!("1 x {} MiB", size >> 20),
        files: vec![(delivered, sha)],
        size,
        template,
        local,
    }
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The server folder holds exactly the workload's files, with their bytes.
fn verify_uploaded(dir: &Path, w: &Workload, who: &str) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{who}: {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = w.files.iter().map(|f| f.0.clone()).collect();
    want.sort();
    assert_eq!(names, want, "{who}: files on the server");
    for (name, sha) in &w.files {
        let path = dir.join(name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            w.size,
            "{who}: {name}"
        );
        assert_eq!(&sha256_file(&path), sha, "{who}: {name}");
    }
}

/// The ledger holds one done delivery per document.
fn verify_ledger(state: &Path, w: &Workload) {
    let ledger = Ledger::open(&state.join("ledger.db")).expect("ledger opens");
    let rows = ledger
        .deliveries(Some(PARTNER), None, None)
        .expect("deliveries");
    assert_eq!(rows.len(), w.files.len(), "delivery rows");
    assert!(
        rows.iter()
            .all(|d| d.state == DeliveryState::Done && d.receipt_node.is_some()),
        "every delivery done with its receipt"
    );
}

struct Bench {
    work: PathBuf,
    plugins_dir: PathBuf,
    /// A warmed compiled-plugin cache, copied into every state folder.
    cache: PathBuf,
    runs: usize,
}

impl Bench {
    fn config(&self, server: &Server, state: &Path) -> PathBuf {
        let text = format!(
            "[runtime]\nstate_dir = {state:?}\nplugins_dir = {plugins:?}\nmax_concurrent_files = {IN_FLIGHT}\n\n\
             [ecm]\nkind = \"embedded\"\n\n\
             [[partner]]\nid = \"{PARTNER}\"\nplugin = \"globex-print.wasm\"\n{endpoint}\
             poll_interval_secs = 1\nconcurrency = {IN_FLIGHT}\nmax_connections = {PARALLEL}\n\
             complete = {{ stable_polls = 1, min_age_secs = 0 }}\n\n\
             [partner.outbound]\nscope = \"{scope}\"\ncategory = \"Print\"\nattribute = \"Status\"\n\
             value = \"Approved\"\nack_folder = \"acks\"\n",
            state = state.display().to_string(),
            plugins = self.plugins_dir.display().to_string(),
            endpoint = server.endpoint_toml,
            scope = SCOPE.join("/"),
        );
        let path = state.with_extension("toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A state folder with the repository of `template` (if any) and the
    /// warmed plugin cache.
    fn fresh_state(&mut self, server: &Server, template: Option<&Path>) -> PathBuf {
        self.runs += 1;
        let state = self
            .work
            .join(format!("state-{}-{}", server.proto, self.runs));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).unwrap();
        if let Some(t) = template {
            copy_dir(&t.join("ecm"), &state.join("ecm"));
        }
        if self.cache.exists() {
            copy_dir(&self.cache, &state.join("cache"));
        }
        state
    }

    /// One cycle of the runtime in a child process.
    fn run_child(&self, config: &Path) -> (f64, u64, f64, ChildReport) {
        let exe = std::env::current_exe().expect("own executable");
        let (secs, rss, cpu, out) = timed(
            wharf_tests::servers::wrapped(&exe).env(CHILD_ENV, config),
            None,
        );
        (
            secs,
            rss,
            cpu,
            parse_report(out.lines().last().unwrap_or("")),
        )
    }

    /// Warm the compiled-plugin cache with a cycle over an empty repository.
    fn warm(&mut self, server: &Server) {
        server.reset();
        let state = self.fresh_state(server, None);
        let (_, _, _, report) = self.run_child(&self.config(server, &state));
        assert!(report.problems.is_empty(), "warm-up: {:?}", report.problems);
        let cache = state.join("cache");
        assert!(
            std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0) > 0,
            "the warm-up left no compiled plugin in {}",
            cache.display()
        );
        copy_dir(&cache, &self.cache);
        let _ = std::fs::remove_dir_all(&state);
    }

    /// wharf over `w`: returns the row after checking that every document
    /// was delivered, recorded and is on the server intact.
    fn wharf(&mut self, server: &Server, w: &Workload) -> Row {
        server.reset();
        let state = self.fresh_state(server, Some(&w.template));
        let config = self.config(server, &state);
        let (secs, rss, cpu, report) = self.run_child(&config);
        let n = w.files.len();
        assert!(
            report.problems.is_empty() && report.delivered == n && report.exports == n,
            "{} {}: wharf delivered {} of {n} document(s) ({} reported): {:?}",
            server.proto,
            w.label,
            report.delivered,
            report.exports,
            report.problems
        );
        assert_eq!(report.bytes, w.bytes(), "bytes sent");
        verify_uploaded(&server.root.join("to-print"), w, "wharf");
        verify_ledger(&state, w);
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_file(&config);
        server.reset();
        Row {
            proto: server.proto,
            what: w.label.clone(),
            tool: "wharf".into(),
            secs,
            files: n,
            bytes: w.bytes(),
            rss,
            cpu,
            child: Some(report),
        }
    }
}

struct Row {
    proto: &'static str,
    what: String,
    tool: String,
    secs: f64,
    files: usize,
    bytes: u64,
    rss: u64,
    /// CPU seconds of the measured process (user + system).
    cpu: f64,
    child: Option<ChildReport>,
}

impl Row {
    fn files_per_s(&self) -> f64 {
        self.files as f64 / self.secs
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    /// Throughput relative to `base` (files/s for many files, MB/s for one).
    fn ratio(&self, base: &Row) -> f64 {
        if self.files > 1 {
            self.files_per_s() / base.files_per_s()
        } else {
            self.mb_per_s() / base.mb_per_s()
        }
    }
}

fn obscure(pw: &str) -> String {
    let out = Command::new("rclone")
        .args(["obscure", pw])
        .output()
        .expect("rclone obscure");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn median(mut rows: Vec<Row>) -> Row {
    rows.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let rss = rows.iter().map(|r| r.rss).max().unwrap_or(0);
    let mid = rows.len() / 2;
    let mut row = rows.swap_remove(mid);
    row.rss = rss;
    row
}

fn verdict(ok: bool, good: &str, bad: &str) -> String {
    if ok { good.into() } else { bad.into() }
}

fn main() {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        child(&config);
        return;
    }
    // `cargo bench` passes --bench; nothing to parse.
    let quick = std::env::var("WHARF_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (n_small, large) = if quick {
        (100, 64u64 << 20)
    } else {
        (1000, 1u64 << 30)
    };
    let reps: usize = std::env::var("WHARF_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let only: Vec<String> = std::env::var("WHARF_BENCH_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    let wanted = |proto: &str, kind: &str| {
        let case = format!("{proto}-{kind}");
        only.is_empty()
            || only
                .iter()
                .any(|o| [proto, kind, &case].contains(&o.as_str()))
    };
    if Command::new("rclone")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        println!("outbound benchmark skipped: rclone is not installed (apt-get install rclone)");
        return;
    }
    let plugin = wharf_tests::plugins::component("globex-print");
    let plugins_dir = plugin.parent().expect("plugin folder").to_path_buf();

    let ftp = Vsftpd::start(VsftpdOptions {
        tls: FtpTls::None,
        max_per_ip: 50,
        ..Default::default()
    })
    .expect("vsftpd");
    let ssh = Sshd::start().expect("sshd");
    let work = tempfile::Builder::new()
        .prefix("wharf-outbound-")
        .tempdir()
        .unwrap();
    let pwfile = work.path().join("ftp.pw");
    std::fs::write(&pwfile, &ftp.user.password).unwrap();
    let known_hosts = ssh.known_hosts().unwrap();
    let servers = [
        Server {
            proto: "ftp",
            root: ftp.root.clone(),
            owner: ftp.user.name.clone(),
            endpoint_toml: format!(
                "endpoint = \"ftp://{}@127.0.0.1:{}/\"\npassword_file = {:?}\n",
                ftp.user.name,
                ftp.port,
                pwfile.display().to_string()
            ),
        },
        Server {
            proto: "sftp",
            root: ssh.root.clone(),
            owner: ssh.user.name.clone(),
            endpoint_toml: format!(
                "endpoint = \"sftp://{}@127.0.0.1:{}{}\"\nkey_file = {:?}\nhost_key = {:?}\n",
                ssh.user.name,
                ssh.port,
                ssh.root.display(),
                ssh.client_key.display().to_string(),
                ssh.host_key
            ),
        },
    ];
    let rconf = work.path().join("rclone.conf");
    std::fs::write(
        &rconf,
        format!(
            "[ftp]\ntype = ftp\nhost = 127.0.0.1\nport = {}\nuser = {}\npass = {}\nconcurrency = {}\n\n\
             [sftp]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = {}\nkey_file = {}\n\
             known_hosts_file = {}\ndisable_hashcheck = true\nshell_type = none\n",
            ftp.port,
            ftp.user.name,
            obscure(&ftp.user.password),
            2 * PARALLEL + 2,
            ssh.port,
            ssh.user.name,
            ssh.client_key.display(),
            known_hosts.display(),
        ),
    )
    .unwrap();

    let mut bench = Bench {
        work: work.path().to_path_buf(),
        plugins_dir,
        cache: work.path().join("plugin-cache"),
        runs: 0,
    };
    bench.warm(&servers[0]);

    let mut rows: Vec<Row> = Vec::new();
    for small in [true, false] {
        let kind = if small { "small" } else { "large" };
        if !servers.iter().any(|s| wanted(s.proto, kind)) {
            continue;
        }
        let prepared = Instant::now();
        let w = if small {
            small_workload(work.path(), n_small)
        } else {
            large_workload(work.path(), large)
        };
        eprintln!(
            "{}: template repository and local copy prepared in {:.1} s",
            w.label,
            prepared.elapsed().as_secs_f64()
        );
        for server in &servers {
            if !wanted(server.proto, kind) {
                continue;
            }
            let mut wharf_rows = Vec::new();
            let mut rclone_rows = Vec::new();
            let mut serial_rows = Vec::new();
            for _ in 0..reps {
                wharf_rows.push(bench.wharf(server, &w));
                // rclone with its parallel transfers, and (for many files)
                // one at a time, as wharf sends them.
                let mut variants = vec![(PARALLEL, "rclone".to_string())];
                if small {
                    variants.push((1, "rclone-1".to_string()));
                }
                for (transfers, tool) in variants {
                    server.reset();
                    let (secs, rss, cpu, _) = timed(
                        Command::new("rclone")
                            .arg("copy")
                            .arg(&w.local)
                            .arg(format!("{}:rclone-out", server.proto))
                            .arg("--config")
                            .arg(&rconf)
                            .args(["--transfers", &transfers.to_string()])
                            .args(["--checkers", &PARALLEL.to_string(), "-q"]),
                        // vsftpd has no MFMT: rclone reports every file's
                        // modification time as not set, and succeeds.
                        Some(&work.path().join("rclone.err")),
                    );
                    verify_uploaded(&server.root.join("rclone-out"), &w, &tool);
                    server.reset();
                    let row = Row {
                        proto: server.proto,
                        what: w.label.clone(),
                        tool,
                        secs,
                        files: w.files.len(),
                        bytes: w.bytes(),
                        rss,
                        cpu,
                        child: None,
                    };
                    if transfers == 1 {
                        serial_rows.push(row);
                    } else {
                        rclone_rows.push(row);
                    }
                }
            }
            rows.push(median(wharf_rows));
            rows.push(median(rclone_rows));
            if !serial_rows.is_empty() {
                rows.push(median(serial_rows));
            }
        }
        let _ = std::fs::remove_dir_all(&w.template);
        let _ = std::fs::remove_dir_all(&w.local);
    }
    print_rows(&rows, reps, quick);
}

fn print_rows(rows: &[Row], reps: usize, quick: bool) {
    let base = |r: &Row| {
        rows.iter()
            .find(|b| b.proto == r.proto && b.what == r.what && b.tool == "rclone")
            .expect("rclone row")
    };
    println!(
        "\n{:<5} {:<14} {:<8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>13}",
        "proto", "workload", "tool", "secs", "CPU s", "files/s", "MB/s", "peak RSS", "wharf/rclone"
    );
    for r in rows {
        let ratio = if r.tool == "wharf" {
            format!("{:.2}x", r.ratio(base(r)))
        } else {
            String::new()
        };
        let files_per_s = if r.files > 1 {
            format!("{:.0}", r.files_per_s())
        } else {
            "-".to_owned()
        };
        println!(
            "{:<5} {:<14} {:<8} {:>8.2} {:>8.2} {:>8} {:>8.1} {:>6.1} MiB {:>13}",
            r.proto,
            r.what,
            r.tool,
            r.secs,
            r.cpu,
            files_per_s,
            r.mb_per_s(),
            r.rss as f64 / 1048576.0,
            ratio
        );
    }
    println!();
    for r in rows.iter().filter(|r| r.tool == "wharf") {
        let c = r
            .child
            .as_ref()
            .expect("wharf rows carry the child's report");
        let ratio = r.ratio(base(r));
        let mut line = format!(
            "{} {}: open {:.2} s, once() {:.2} s ({:.1} ms per document); \
             throughput vs rclone target ≥ 1.0: {}",
            r.proto,
            r.what,
            c.open_secs,
            c.once_secs,
            c.once_secs / r.files as f64 * 1e3,
            verdict(ratio >= 1.0, "meets target", "BELOW TARGET"),
        );
        if let Some(serial) = rows
            .iter()
            .find(|b| b.proto == r.proto && b.what == r.what && b.tool == "rclone-1")
        {
            line.push_str(&format!(
                "; vs rclone one at a time {:.2}x",
                r.ratio(serial)
            ));
        }
        line.push_str(&format!(
            "; peak RSS target < 64 MiB: {}",
            verdict(r.rss < RSS_TARGET, "meets target", "ABOVE TARGET")
        ));
        println!("{line}");
    }
    println!(
        "\n({} of {reps} round(s){}; wall time from spawn to exit of a separate process for both tools, its CPU time (user + system; the servers' not included) and peak RSS from wait4; \
         wharf: Runtime::open + one Runtime::once cycle, globex-print plugin, embedded repository (documents stored beforehand), \
         ledger (group-committed) and fsynced receipts, each document spooled, hashed, named by the plugin and uploaded to a temporary name then renamed, {IN_FLIGHT} documents at once over {PARALLEL} connections; \
         rclone copy from a local folder --transfers {PARALLEL} (rclone) or 1 (rclone-1) --checkers {PARALLEL}, straight to the final names, no fsync)",
        if reps > 1 { "median" } else { "result" },
        if quick { ", quick mode" } else { "" },
    );
}
