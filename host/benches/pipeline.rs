//! End-to-end benchmark of the inbound pipeline against a real vsftpd and a
//! real sshd on 127.0.0.1: one `Runtime::once` cycle (poll → claim → spool +
//! SHA-256 → plugin → embedded repository → archive move on the server)
//! beside `rclone copy` of the same files from the same server into a local
//! folder, for 1,000 × 10 KiB files and for one 1 GiB file.
//!
//! The runtime runs in a child process (this binary again, with
//! `WHARF_BENCH_CHILD` naming the configuration), so its peak RSS and its
//! wall time are its own, measured as rclone's are: from spawn to exit, with
//! the peak RSS from `wait4`. The compiled-plugin cache is warmed once and
//! copied into every fresh state folder, as a running service would have it.
//! Every run is checked: all files filed, the ledger's done count, every
//! document in the repository, the large document's bytes hashed again.
//!
//! Run: `cargo bench -p wharf --bench pipeline` (as root: it installs and
//! starts the servers). `WHARF_BENCH_QUICK=1` runs 100 files and 64 MiB;
//! `WHARF_BENCH_REPS` sets the rounds whose median is printed (default 1);
//! `WHARF_BENCH_WRAP` prefixes the measured child's command line (e.g.
//! `perf record -g -o wharf.perf --`, to profile it alone);
//! `WHARF_BENCH_ONLY` picks cases, e.g. `sftp`, `large` or `ftp-small,sftp-large`;
//! `WHARF_BENCH_PARALLEL` the files (and connections) in flight (default 8).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wharf::flow::inbound::Outcome;
use wharf::ledger::{Ledger, State};
use wharf::runtime::Runtime;
use wharf_ecm::embedded::Embedded;
use wharf_ecm::{NodeKind, Repository};
use wharf_tests::servers::{FtpTls, Sshd, Vsftpd, VsftpdOptions};

/// Files (and connections) in flight, for wharf and rclone alike
/// (`WHARF_BENCH_PARALLEL`, default 8).
fn parallel() -> usize {
    std::env::var("WHARF_BENCH_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(8)
}
/// Byte ranges of a large file, for wharf (its cap) and rclone alike.
fn streams() -> usize {
    parallel().min(4)
}
const SMALL_SIZE: usize = 10 * 1024;
const PARTNER: &str = "bench";
const CHILD_ENV: &str = "WHARF_BENCH_CHILD";
const RSS_TARGET: u64 = 64 << 20;

/// What the child reports on its one line of stdout.
#[derive(Debug, Default)]
struct ChildReport {
    open_secs: f64,
    once_secs: f64,
    filed: usize,
    files: usize,
    bytes: u64,
    /// Sum of the per-file times and of the plugin-call times.
    file_secs: f64,
    plugin_secs: f64,
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
            .files
            .iter()
            .filter(|f| f.outcome != Outcome::Filed)
            .map(|f| format!("{} {}: {}", f.path, f.outcome.as_str(), f.detail))
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
            "filed": summary.count(Outcome::Filed),
            "files": summary.files.len(),
            "bytes": summary.files.iter().map(|f| f.bytes_received).sum::<u64>(),
            "file_secs": summary.files.iter().map(|f| f.elapsed.as_secs_f64()).sum::<f64>(),
            "plugin_secs": summary.files.iter().filter_map(|f| f.plugin_time).map(|d| d.as_secs_f64()).sum::<f64>(),
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
        filed: v["filed"].as_u64().unwrap_or(0) as usize,
        files: v["files"].as_u64().unwrap_or(0) as usize,
        bytes: v["bytes"].as_u64().unwrap_or(0),
        file_secs: v["file_secs"].as_f64().unwrap_or(0.0),
        plugin_secs: v["plugin_secs"].as_f64().unwrap_or(0.0),
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

/// Runs `cmd` to its end; returns (wall seconds, peak RSS in bytes, CPU
/// seconds (user + system), stdout).
// The child is reaped with wait4 (which also reports its peak RSS), not Child::wait.
#[allow(clippy::zombie_processes)]
fn timed(cmd: &mut Command) -> (f64, u64, f64, String) {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
        "{cmd:?} failed (status {status:#x}); stdout: {out}"
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
    fn inbox(&self) -> PathBuf {
        self.root.join("inbox")
    }
    fn archive(&self) -> PathBuf {
        self.root.join("archive")
    }
    fn chown(&self) {
        let st = Command::new("chown")
            .args(["-R", &self.owner])
            .arg(&self.root)
            .status()
            .expect("chown");
        assert!(st.success(), "chown failed");
    }
}

/// A workload: the files seeded into the inbox.
#[derive(Clone)]
struct Workload {
    label: String,
    /// (name, SHA-256) of each file.
    files: Vec<(String, String)>,
    size: u64,
}

impl Workload {
    fn bytes(&self) -> u64 {
        self.size * self.files.len() as u64
    }
    fn small(&self) -> bool {
        self.files.len() > 1
    }
}

fn small_file(i: usize) -> Vec<u8> {
    // Distinct content per file: the repository stores equal content once.
    let mut data: Vec<u8> = (0..SMALL_SIZE)
        .map(|j| ((i * 31 + j * 7) % 251) as u8)
        .collect();
    data[..8].copy_from_slice(&(i as u64).to_le_bytes());
    data
}

fn seed_small(server: &Server, n: usize) -> Workload {
    let inbox = server.inbox();
    std::fs::create_dir_all(&inbox).unwrap();
    let files = (0..n)
        .map(|i| {
            let name = format!("f{i:05}.dat");
            let data = small_file(i);
            std::fs::write(inbox.join(&name), &data).unwrap();
            (name, hex::encode(Sha256::digest(&data)))
        })
        .collect();
    server.chown();
    Workload {
        label: format!("{n} x 10 KiB"),
        files,
        size: SMALL_SIZE as u64,
    }
}

fn seed_large(server: &Server, size: u64) -> Workload {
    let inbox = server.inbox();
    std::fs::create_dir_all(&inbox).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(inbox.join("big.bin")).unwrap());
    let mut hasher = Sha256::new();
    let mut chunk: Vec<u8> = (0..1u32 << 20)
        .map(|j| (j.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for i in 0..size / (1 << 20) {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        hasher.update(&chunk);
        f.write_all(&chunk).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    server.chown();
    Workload {
        label: format!("1 x {} MiB", size >> 20),
        files: vec![("big.bin".into(), hex::encode(hasher.finalize()))],
        size,
    }
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Put archived files back into the inbox (same bytes), for the next run.
fn restore_inbox(server: &Server, w: &Workload) {
    for (name, _) in &w.files {
        let from = server.archive().join(name);
        if from.exists() {
            std::fs::rename(&from, server.inbox().join(name)).unwrap();
        }
    }
    let have = names_in(&server.inbox());
    assert_eq!(
        have.len(),
        w.files.len(),
        "{}: the inbox could not be restored",
        server.proto
    );
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

struct Bench {
    work: PathBuf,
    plugins_dir: PathBuf,
    /// A warmed compiled-plugin cache, copied into every state folder.
    cache: PathBuf,
    runs: usize,
}

impl Bench {
    fn config(&self, server: &Server, state: &Path) -> PathBuf {
        let parallel = parallel();
        // The server sees as many connections as rclone's transfers; more
        // files are in flight, so one file's repository and ledger work
        // overlaps the others' transfers.
        let in_flight = parallel * 4;
        let text = format!(
            "[runtime]\nstate_dir = {state:?}\nplugins_dir = {plugins:?}\nmax_concurrent_files = {in_flight}\n\n\
             [ecm]\nkind = \"embedded\"\n\n\
             [[partner]]\nid = \"{PARTNER}\"\nplugin = \"trivial.wasm\"\n{endpoint}\
             poll_interval_secs = 1\nconcurrency = {in_flight}\nmax_connections = {parallel}\n\
             complete = {{ stable_polls = 1, min_age_secs = 0 }}\n",
            state = state.display().to_string(),
            plugins = self.plugins_dir.display().to_string(),
            endpoint = server.endpoint_toml,
        );
        let path = state.with_extension("toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn fresh_state(&mut self, server: &Server) -> PathBuf {
        self.runs += 1;
        let state = self
            .work
            .join(format!("state-{}-{}", server.proto, self.runs));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).unwrap();
        if self.cache.exists() {
            copy_dir(&self.cache, &state.join("cache"));
        }
        state
    }

    /// One cycle of the runtime in a child process.
    fn run_child(&self, config: &Path) -> (f64, u64, f64, ChildReport) {
        let exe = std::env::current_exe().expect("own executable");
        let (secs, rss, cpu, out) =
            timed(wharf_tests::servers::wrapped(&exe).env(CHILD_ENV, config));
        (
            secs,
            rss,
            cpu,
            parse_report(out.lines().last().unwrap_or("")),
        )
    }

    /// Warm the compiled-plugin cache with a cycle over an empty inbox.
    fn warm(&mut self, server: &Server) {
        std::fs::create_dir_all(server.inbox()).unwrap();
        server.chown();
        let state = self.fresh_state(server);
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

    /// wharf over `w` (seeded in the inbox): returns the row after checking
    /// that every file was filed, recorded and stored.
    fn wharf(&mut self, server: &Server, w: &Workload) -> Row {
        let state = self.fresh_state(server);
        let config = self.config(server, &state);
        let (secs, rss, cpu, report) = self.run_child(&config);
        let n = w.files.len();
        assert!(
            report.problems.is_empty() && report.filed == n && report.files == n,
            "{} {}: wharf filed {} of {n} file(s) ({} reported): {:?}",
            server.proto,
            w.label,
            report.filed,
            report.files,
            report.problems
        );
        assert_eq!(report.bytes, w.bytes(), "bytes received");
        verify_state(&state, w);
        let left = names_in(&server.inbox());
        assert!(left.is_empty(), "files left in the inbox: {left:?}");
        let archived = names_in(&server.archive());
        assert_eq!(archived.len(), n, "files in the archive folder");
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_file(&config);
        Row {
            proto: server.proto,
            what: w.label.clone(),
            tool: "wharf",
            secs,
            files: n,
            bytes: w.bytes(),
            rss,
            cpu,
            child: Some(report),
        }
    }
}

/// The ledger and the repository hold what the run claims to have done.
fn verify_state(state: &Path, w: &Workload) {
    let n = w.files.len() as u64;
    let ledger = Ledger::open(&state.join("ledger.db")).expect("ledger opens");
    let counts = ledger.counts().expect("ledger counts");
    let done = counts
        .iter()
        .find(|(s, _)| *s == State::Done)
        .map(|c| c.1)
        .unwrap_or(0);
    assert_eq!(
        (done, counts.iter().map(|c| c.1).sum::<u64>()),
        (n, n),
        "ledger claims by state: {counts:?}"
    );
    drop(ledger);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ecm = state.join("ecm");
        let (repo, _) = Embedded::open(&ecm).await.expect("repository opens");
        let folder = repo
            .resolve_path(&format!("/Partners/{PARTNER}/Inbox"))
            .await
            .expect("the filing folder exists");
        let docs: Vec<_> = repo
            .children(folder)
            .await
            .expect("listing the filing folder")
            .into_iter()
            .filter(|d| d.kind == NodeKind::Document)
            .collect();
        let names: BTreeSet<String> = docs.iter().map(|d| d.name.clone()).collect();
        let want: BTreeSet<String> = w.files.iter().map(|f| f.0.clone()).collect();
        assert_eq!(names, want, "documents in the repository");
        for d in &docs {
            let sha = w
                .files
                .iter()
                .find(|f| f.0 == d.name)
                .map(|f| f.1.clone())
                .unwrap();
            let versions = repo.versions(d.id).await.expect("versions");
            assert_eq!(versions.len(), 1, "{}: versions", d.name);
            assert_eq!(
                versions[0].sha256.as_deref(),
                Some(sha.as_str()),
                "{}: recorded SHA-256",
                d.name
            );
            assert_eq!(versions[0].size, w.size, "{}: size", d.name);
            if !w.small() {
                // The stored bytes themselves, hashed again.
                let blob = ecm.join("blobs").join(&sha[..2]).join(&sha);
                assert_eq!(sha256_file(&blob), sha, "{}: stored content", d.name);
            }
        }
    });
}

struct Row {
    proto: &'static str,
    what: String,
    tool: &'static str,
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
    if Command::new("rclone")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        println!("pipeline benchmark skipped: rclone is not installed (apt-get install rclone)");
        return;
    }
    let plugin = wharf_tests::plugins::component("trivial");
    let plugins_dir = plugin.parent().expect("plugin folder").to_path_buf();

    let ftp = Vsftpd::start(VsftpdOptions {
        tls: FtpTls::None,
        max_per_ip: 50,
        ..Default::default()
    })
    .expect("vsftpd");
    let ssh = Sshd::start().expect("sshd");
    let work = tempfile::Builder::new()
        .prefix("wharf-pipeline-")
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
            2 * parallel() + 2,
            ssh.port,
            ssh.user.name,
            ssh.client_key.display(),
            known_hosts.display(),
        ),
    )
    .unwrap();
    let rclone_args = |proto: &str| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--transfers".into(),
            parallel().to_string(),
            "--checkers".into(),
            parallel().to_string(),
            "-q".into(),
        ];
        if proto == "ftp" {
            // One stream per file over FTP (rclone's multi-thread FTP
            // download cuts data connections short, which vsftpd reports as
            // failed transfers); over SFTP up to 4 ranges from 64 MiB, as
            // wharf.
            a.extend(["--multi-thread-streams".into(), "0".into()]);
        } else {
            a.extend([
                "--multi-thread-streams".into(),
                streams().to_string(),
                "--multi-thread-cutoff".into(),
                "64M".into(),
            ]);
        }
        a
    };

    let mut bench = Bench {
        work: work.path().to_path_buf(),
        plugins_dir,
        cache: work.path().join("plugin-cache"),
        runs: 0,
    };
    bench.warm(&servers[0]);

    let mut rows: Vec<Row> = Vec::new();
    let only: Vec<String> = std::env::var("WHARF_BENCH_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    for server in &servers {
        for small in [true, false] {
            let kind = if small { "small" } else { "large" };
            let case = format!("{}-{kind}", server.proto);
            if !only.is_empty()
                && !only
                    .iter()
                    .any(|o| [server.proto, kind, &case].contains(&o.as_str()))
            {
                continue;
            }
            let _ = std::fs::remove_dir_all(server.inbox());
            let _ = std::fs::remove_dir_all(server.archive());
            let w = if small {
                seed_small(server, n_small)
            } else {
                seed_large(server, large)
            };
            let mut wharf_rows = Vec::new();
            let mut rclone_rows = Vec::new();
            for _ in 0..reps {
                wharf_rows.push(bench.wharf(server, &w));
                restore_inbox(server, &w);

                let dst = work.path().join("rclone-dst");
                let _ = std::fs::remove_dir_all(&dst);
                let (secs, rss, cpu, _) = timed(
                    Command::new("rclone")
                        .arg("copy")
                        .arg(format!("{}:inbox", server.proto))
                        .arg(&dst)
                        .arg("--config")
                        .arg(&rconf)
                        .args(rclone_args(server.proto)),
                );
                let got = names_in(&dst);
                assert_eq!(
                    got.len(),
                    w.files.len(),
                    "rclone copied {} files",
                    got.len()
                );
                if !small {
                    assert_eq!(
                        sha256_file(&dst.join("big.bin")),
                        w.files[0].1,
                        "rclone's copy"
                    );
                }
                let _ = std::fs::remove_dir_all(&dst);
                rclone_rows.push(Row {
                    proto: server.proto,
                    what: w.label.clone(),
                    tool: "rclone",
                    secs,
                    files: w.files.len(),
                    bytes: w.bytes(),
                    rss,
                    cpu,
                    child: None,
                });
            }
            rows.push(median(wharf_rows));
            rows.push(median(rclone_rows));
            let _ = std::fs::remove_dir_all(server.inbox());
            let _ = std::fs::remove_dir_all(server.archive());
        }
    }
    print_rows(&rows, reps, quick);
}

fn print_rows(rows: &[Row], reps: usize, quick: bool) {
    println!(
        "\n{:<5} {:<14} {:<7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>13}",
        "proto", "workload", "tool", "secs", "CPU s", "files/s", "MB/s", "peak RSS", "wharf/rclone"
    );
    for r in rows {
        let ratio = if r.tool == "wharf" {
            let base = rows
                .iter()
                .find(|b| b.proto == r.proto && b.what == r.what && b.tool == "rclone")
                .expect("rclone row");
            let ratio = if r.files > 1 {
                r.files_per_s() / base.files_per_s()
            } else {
                r.mb_per_s() / base.mb_per_s()
            };
            format!("{ratio:.2}x")
        } else {
            String::new()
        };
        let files_per_s = if r.files > 1 {
            format!("{:.0}", r.files_per_s())
        } else {
            "-".to_owned()
        };
        println!(
            "{:<5} {:<14} {:<7} {:>8.2} {:>8.2} {:>8} {:>8.1} {:>6.1} MiB {:>13}",
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
        let base = rows
            .iter()
            .find(|b| b.proto == r.proto && b.what == r.what && b.tool == "rclone")
            .expect("rclone row");
        let ratio = if r.files > 1 {
            r.files_per_s() / base.files_per_s()
        } else {
            r.mb_per_s() / base.mb_per_s()
        };
        let mut line = format!(
            "{} {}: open {:.2} s, once() {:.2} s, mean per file {:.1} ms (plugin {:.2} ms); \
             throughput vs rclone target ≥ 1.0: {}",
            r.proto,
            r.what,
            c.open_secs,
            c.once_secs,
            c.file_secs / r.files as f64 * 1e3,
            c.plugin_secs / r.files as f64 * 1e3,
            verdict(ratio >= 1.0, "meets target", "BELOW TARGET"),
        );
        if r.files == 1 {
            line.push_str(&format!(
                "; peak RSS target < 64 MiB: {}",
                verdict(r.rss < RSS_TARGET, "meets target", "ABOVE TARGET")
            ));
        }
        println!("{line}");
    }
    let (parallel, streams) = (parallel(), streams());
    let in_flight = parallel * 4;
    println!(
        "\n({} of {reps} round(s){}; wall time from spawn to exit of a separate process for both tools, its CPU time (user + system; the servers' not included) and peak RSS from wait4; \
         wharf: one Runtime::once cycle with max_connections = {parallel} and {in_flight} files in flight (concurrency, max_concurrent_files), \
         trivial plugin, embedded repository (fsynced blobs and metadata), ledger, archive move on the server; \
         rclone copy --transfers {parallel} --checkers {parallel}, no fsync, multi-thread {streams} streams from 64M on sftp, single stream on ftp; \
         wharf fetches an SFTP file of 64 MiB or more as {streams} ranges, an FTP file in one stream)",
        if reps > 1 { "median" } else { "result" },
        if quick { ", quick mode" } else { "" },
    );
}
