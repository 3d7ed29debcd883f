//! What the end-to-end benchmarks (`host/benches/pipeline.rs` and
//! `host/benches/outbound.rs`) share: their options from the environment,
//! vsftpd and sshd started as both wharf and rclone see them, a measured
//! child process (wall time, CPU time and peak RSS from `wait4`), the fresh
//! state folders of the measured runtime, the runtime's configuration, the
//! generated content, and the result rows with their median and their table.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::servers::{FtpTls, Sshd, Vsftpd, VsftpdOptions};

/// Size of each file of a "many small files" workload.
pub const SMALL_SIZE: usize = 10 * 1024;

/// The peak RSS wharf's measured process should stay below.
pub const RSS_TARGET: u64 = 64 << 20;

/// The benchmark's options, from the environment: `WHARF_BENCH_QUICK=1`
/// (100 small files and 64 MiB instead of 1,000 and 1 GiB),
/// `WHARF_BENCH_REPS` (rounds whose median is printed, default 3) and
/// `WHARF_BENCH_ONLY` (cases, e.g. `sftp`, `large` or `ftp-small,sftp-large`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Quick mode (`WHARF_BENCH_QUICK=1`).
    pub quick: bool,
    /// Rounds per case; the median is printed (`WHARF_BENCH_REPS`, at least 1).
    pub reps: usize,
    /// Files of the small-files workload.
    pub small_files: usize,
    /// Bytes of the large-file workload (a multiple of 1 MiB).
    pub large_bytes: u64,
    /// The cases asked for (`WHARF_BENCH_ONLY`); empty: all.
    pub only: Vec<String>,
}

impl Options {
    /// Reads the options from the environment.
    pub fn from_env() -> Self {
        let quick = std::env::var("WHARF_BENCH_QUICK").is_ok_and(|v| v == "1");
        let (small_files, large_bytes) = if quick {
            (100, 64u64 << 20)
        } else {
            (1000, 1u64 << 30)
        };
        let reps = env_number("WHARF_BENCH_REPS", 3).max(1);
        let only = std::env::var("WHARF_BENCH_ONLY")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default();
        Options {
            quick,
            reps,
            small_files,
            large_bytes,
            only,
        }
    }

    /// Whether the case `proto`-`kind` (e.g. `sftp` and `large`) is to run:
    /// `WHARF_BENCH_ONLY` is unset, or names the protocol, the kind or both
    /// (`sftp-large`).
    pub fn wanted(&self, proto: &str, kind: &str) -> bool {
        let case = format!("{proto}-{kind}");
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|o| [proto, kind, &case].contains(&o.as_str()))
    }

    /// The start of the closing note under the table: how the figures were
    /// taken (median or single result, quick mode) and what was measured
    /// for both tools. The benchmark goes on with `; ` and its own parts.
    pub fn note(&self) -> String {
        format!(
            "{} of {} round(s){}; wall time from spawn to exit of a separate process for both tools, \
             its CPU time (user + system; the servers' not included) and peak RSS from wait4",
            if self.reps > 1 { "median" } else { "result" },
            self.reps,
            if self.quick { ", quick mode" } else { "" },
        )
    }
}

/// The number the environment variable `name` holds, or `default` when it is
/// unset or not a number.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a benchmark starts from: its options, the plugin built, a work
/// folder and both servers (running while this value lives).
pub struct Setup {
    /// The options from the environment.
    pub opts: Options,
    /// The folder holding the built plugin component.
    pub plugins_dir: PathBuf,
    /// A fresh temporary folder for state folders, copies and configuration.
    pub work: tempfile::TempDir,
    /// vsftpd and sshd, and rclone's configuration for them.
    pub servers: Servers,
}

impl Setup {
    /// Reads the options, builds the plugin component `plugin`, creates a
    /// work folder `wharf-<bench>-…` and starts both servers
    /// ([`Servers::start`] with `ftp_concurrency`). Without rclone it says
    /// that the benchmark `bench` is skipped and returns `None`.
    pub fn start(bench: &str, plugin: &str, ftp_concurrency: usize) -> Option<Self> {
        let opts = Options::from_env();
        if !rclone_installed() {
            println!("{bench} benchmark skipped: rclone is not installed (apt-get install rclone)");
            return None;
        }
        let component = crate::plugins::component(plugin);
        let plugins_dir = component.parent().expect("plugin folder").to_path_buf();
        let work = tempfile::Builder::new()
            .prefix(&format!("wharf-{bench}-"))
            .tempdir()
            .unwrap();
        let servers = Servers::start(work.path(), ftp_concurrency);
        Some(Setup {
            opts,
            plugins_dir,
            work,
            servers,
        })
    }
}

/// Whether `rclone` runs on this machine (the benchmarks compare against it).
pub fn rclone_installed() -> bool {
    Command::new("rclone")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What [`timed`] measured of a process that ran to its end.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Wall time from spawn to exit, in seconds.
    pub secs: f64,
    /// Peak resident memory, in bytes.
    pub rss: u64,
    /// CPU time (user + system), in seconds.
    pub cpu: f64,
    /// Everything it wrote to stdout.
    pub stdout: String,
}

impl Measured {
    /// The last line of its stdout (a measured child's report), or "".
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
}

/// Runs `cmd` to its end (after a `sync` and [`warm_page_cache`]), its stdin empty, its stdout
/// captured and its stderr going to `stderr` (a file, shown when it fails)
/// or inherited; panics unless it exits with 0. The peak RSS and the CPU time come from
/// `wait4`.
// The child is reaped with wait4 (which also reports its peak RSS), not Child::wait.
#[allow(clippy::zombie_processes)]
pub fn timed(cmd: &mut Command, stderr: Option<&Path>) -> Measured {
    let err = match stderr {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("stderr file")),
        None => Stdio::inherit(),
    };
    // Every measured run starts with nothing left to write back from what
    // came before it (a previous run's files, a template copied in), which
    // would otherwise slow whichever tool runs next.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    warm_page_cache(warm_bytes());
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
    Measured {
        secs,
        rss: usage.ru_maxrss as u64 * 1024,
        cpu: cpu(usage.ru_utime) + cpu(usage.ru_stime),
        stdout: out,
    }
}

/// How much page cache [`timed`] warms before each run: 1 GiB, or
/// `WHARF_BENCH_WARM_MIB` MiB (0 turns it off).
fn warm_bytes() -> usize {
    warm_bytes_from(std::env::var("WHARF_BENCH_WARM_MIB").ok().as_deref())
}

/// [`warm_bytes`] for the variable's value `mib`; an unreadable value
/// keeps the default.
fn warm_bytes_from(mib: Option<&str>) -> usize {
    mib.and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(1024)
        << 20
}

/// Writes `bytes` into a scratch file, then deletes it unsynced.
///
/// Some virtual machines hand free memory back to their host, which then
/// makes the first write into each page several times slower (here, a
/// 1 GiB file is written in 0.2 s or in 1.5 s depending on it), while the
/// page cache of a file deleted moments ago is not handed back. So the run
/// that follows a bench step which just freed a file's pages (deleting the
/// last run's uploads) writes fast, and the one after a step that used
/// them up (copying a template in) writes slowly. Doing this before every
/// run puts every tool on the same footing. Little or nothing reaches the
/// disk (the file is deleted before write-back gets far), and a warm-up cut
/// short by a write error only warms less.
pub fn warm_page_cache(bytes: usize) {
    if bytes == 0 {
        return;
    }
    let path = std::env::temp_dir().join(format!("wharf-bench-warm-{}", std::process::id()));
    let block = vec![0u8; 1 << 20];
    if let Ok(mut f) = std::fs::File::create(&path) {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len());
            if f.write_all(&block[..n]).is_err() {
                break;
            }
            left -= n;
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Runs this executable again as the measured child, with `env` naming
/// `config`, through [`crate::servers::wrapped`] (`WHARF_BENCH_WRAP`), its
/// stderr inherited.
pub fn run_self(env: &str, config: &Path) -> Measured {
    let exe = std::env::current_exe().expect("own executable");
    timed(crate::servers::wrapped(&exe).env(env, config), None)
}

/// One server as both tools see it.
#[derive(Debug, Clone)]
pub struct Server {
    /// `ftp` or `sftp`: the case's name and rclone's remote.
    pub proto: &'static str,
    /// The folder the user sees as the partner root.
    pub root: PathBuf,
    /// The server's user, who owns what is under `root`.
    pub owner: String,
    /// The `[[partner]]` lines naming the endpoint and its credentials.
    pub endpoint_toml: String,
}

impl Server {
    /// Gives everything under `root` to the server's user.
    pub fn chown(&self) {
        let st = Command::new("chown")
            .args(["-R", &self.owner])
            .arg(&self.root)
            .status()
            .expect("chown");
        assert!(st.success(), "chown failed");
    }
}

/// A plain-FTP vsftpd and an sshd on 127.0.0.1, running as long as this
/// value lives, with an rclone configuration naming both.
pub struct Servers {
    /// The FTP server, then the SFTP server.
    pub all: [Server; 2],
    /// rclone's configuration: remotes `ftp` and `sftp`.
    pub rclone_conf: PathBuf,
    _ftp: Vsftpd,
    _ssh: Sshd,
}

impl Servers {
    /// Starts both servers; writes the FTP password file and `rclone.conf`
    /// into `work`. `ftp_concurrency` is the rclone FTP remote's
    /// `concurrency` (its connections at most).
    pub fn start(work: &Path, ftp_concurrency: usize) -> Self {
        let ftp = Vsftpd::start(VsftpdOptions {
            tls: FtpTls::None,
            max_per_ip: 50,
            ..Default::default()
        })
        .expect("vsftpd");
        let ssh = Sshd::start().expect("sshd");
        let pwfile = work.join("ftp.pw");
        std::fs::write(&pwfile, &ftp.user.password).unwrap();
        let known_hosts = ssh.known_hosts().unwrap();
        let all = [
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
        let rclone_conf = work.join("rclone.conf");
        std::fs::write(
            &rclone_conf,
            format!(
                "[ftp]\ntype = ftp\nhost = 127.0.0.1\nport = {}\nuser = {}\npass = {}\nconcurrency = {}\n\n\
                 [sftp]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = {}\nkey_file = {}\n\
                 known_hosts_file = {}\ndisable_hashcheck = true\nshell_type = none\n",
                ftp.port,
                ftp.user.name,
                obscure(&ftp.user.password),
                ftp_concurrency,
                ssh.port,
                ssh.user.name,
                ssh.client_key.display(),
                known_hosts.display(),
            ),
        )
        .unwrap();
        Servers {
            all,
            rclone_conf,
            _ftp: ftp,
            _ssh: ssh,
        }
    }
}

/// `pw` as rclone's configuration wants it (`rclone obscure`).
pub fn obscure(pw: &str) -> String {
    let out = Command::new("rclone")
        .args(["obscure", pw])
        .output()
        .expect("rclone obscure");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The runtime's configuration for one measured cycle: embedded repository,
/// one partner on a [`Server`], every file complete at first sight.
#[derive(Debug, Clone)]
pub struct RunConfig<'a> {
    /// The folder holding the plugin component.
    pub plugins_dir: &'a Path,
    /// The partner's id.
    pub partner: &'a str,
    /// The plugin's file name in `plugins_dir`.
    pub plugin: &'a str,
    /// Files (or documents) in flight: `max_concurrent_files` and the
    /// partner's `concurrency`.
    pub in_flight: usize,
    /// The partner's `max_connections`.
    pub connections: usize,
    /// TOML appended after the partner's lines (e.g. `[partner.outbound]`).
    pub extra: &'a str,
}

impl RunConfig<'_> {
    /// Writes the configuration for `state` beside it (`<state>.toml`);
    /// returns its path.
    pub fn write(&self, server: &Server, state: &Path) -> PathBuf {
        let text = format!(
            "[runtime]\nstate_dir = {state:?}\nplugins_dir = {plugins:?}\nmax_concurrent_files = {in_flight}\n\n\
             [ecm]\nkind = \"embedded\"\n\n\
             [[partner]]\nid = \"{partner}\"\nplugin = \"{plugin}\"\n{endpoint}\
             poll_interval_secs = 1\nconcurrency = {in_flight}\nmax_connections = {connections}\n\
             complete = {{ stable_polls = 1, min_age_secs = 0 }}\n{extra}",
            state = state.display().to_string(),
            plugins = self.plugins_dir.display().to_string(),
            in_flight = self.in_flight,
            partner = self.partner,
            plugin = self.plugin,
            endpoint = server.endpoint_toml,
            connections = self.connections,
            extra = self.extra,
        );
        let path = state.with_extension("toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Fresh state folders for the measured runtime under a work folder, each
/// given the compiled-plugin cache warmed once, as a running service would
/// have it.
#[derive(Debug)]
pub struct States {
    work: PathBuf,
    cache: PathBuf,
    runs: usize,
}

impl States {
    /// State folders under `work`; the warmed cache is kept in
    /// `work/plugin-cache`.
    pub fn new(work: &Path) -> Self {
        States {
            work: work.to_path_buf(),
            cache: work.join("plugin-cache"),
            runs: 0,
        }
    }

    /// A new, empty state folder for a run against `proto`, holding a copy
    /// of the repository (`ecm/`) of the state folder `template`, if any,
    /// and of the warmed cache, once there is one.
    pub fn fresh(&mut self, proto: &str, template: Option<&Path>) -> PathBuf {
        self.runs += 1;
        let state = self.work.join(format!("state-{proto}-{}", self.runs));
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

    /// Keeps the compiled-plugin cache a warm-up run left in `state` for
    /// the next fresh folders; panics if it left none. Removes `state`.
    pub fn keep_cache(&self, state: &Path) {
        let cache = state.join("cache");
        assert!(
            std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0) > 0,
            "the warm-up left no compiled plugin in {}",
            cache.display()
        );
        copy_dir(&cache, &self.cache);
        let _ = std::fs::remove_dir_all(state);
    }
}

/// Copies the folder `from` into `to` (created), recursively.
pub fn copy_dir(from: &Path, to: &Path) {
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

/// The hex SHA-256 of the file at `path`.
pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// Seconds this machine takes to compute the SHA-256 of `bytes` bytes held
/// in memory, with the implementation wharf uses (best of three): no tool
/// that must hash a file can move it faster than this.
pub fn sha256_floor_secs(bytes: u64) -> f64 {
    // Measured once per size and run: every large row of a bench hashes
    // the same bytes.
    static MEASURED: std::sync::Mutex<Vec<(u64, f64)>> = std::sync::Mutex::new(Vec::new());
    let mut measured = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, secs)) = measured.iter().find(|(b, _)| *b == bytes) {
        return *secs;
    }
    let secs = measure_sha256(bytes);
    measured.push((bytes, secs));
    secs
}

/// See [`sha256_floor_secs`].
fn measure_sha256(bytes: u64) -> f64 {
    let block = vec![0x5au8; 8 << 20];
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let mut hasher = Sha256::new();
            let mut left = bytes;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                hasher.update(&block[..n]);
                left -= n as u64;
            }
            std::hint::black_box(hasher.finalize());
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// What the hash floor ([`sha256_floor_secs`]) allows against a peer that
/// does not hash: the best ratio a hashing tool could reach.
pub fn hash_floor_note(bytes: u64, peer_secs: f64) -> String {
    let floor = sha256_floor_secs(bytes);
    format!(
        "the SHA-256 alone of these bytes in memory takes {floor:.2} s here, so no hashing tool can pass {:.2}x plain rclone",
        peer_secs / floor
    )
}

/// The hex SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The content of small file number `i` before the benchmark marks it as
/// its own: [`SMALL_SIZE`] bytes of a pattern that depends on `i` (the
/// repository stores equal content once).
pub fn small_content(i: usize) -> Vec<u8> {
    (0..SMALL_SIZE)
        .map(|j| ((i * 31 + j * 7) % 251) as u8)
        .collect()
}

/// Writes a file of `size` bytes (a multiple of 1 MiB) to `path`, one MiB
/// of a fixed pattern at a time, each first given to `mark` with its index
/// to make it its own (changes persist into the next MiB); returns the
/// file's hex SHA-256.
pub fn write_large(path: &Path, size: u64, mut mark: impl FnMut(u64, &mut [u8])) -> String {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut chunk: Vec<u8> = (0..1u32 << 20)
        .map(|j| (j.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for i in 0..size / (1 << 20) {
        mark(i, &mut chunk);
        hasher.update(&chunk);
        f.write_all(&chunk).unwrap();
    }
    f.flush().unwrap();
    hex::encode(hasher.finalize())
}

/// The label of a small-files workload: `100 x 10 KiB`.
pub fn small_label(n: usize) -> String {
    format!("{n} x {} KiB", SMALL_SIZE >> 10)
}

/// The label of a one-file workload: `1 x 64 MiB`.
pub fn large_label(size: u64) -> String {
    format!("1 x {} MiB", size >> 20)
}

/// One tool's result for one case; `C` is what the measured child reported
/// (wharf's rows carry it).
#[derive(Debug, Clone)]
pub struct Row<C> {
    /// The server's protocol.
    pub proto: &'static str,
    /// The workload's label.
    pub what: String,
    /// The tool (`wharf`, `rclone`, …).
    pub tool: String,
    /// Wall seconds.
    pub secs: f64,
    /// Files moved.
    pub files: usize,
    /// Bytes moved.
    pub bytes: u64,
    /// Peak RSS in bytes.
    pub rss: u64,
    /// CPU seconds of the measured process (user + system).
    pub cpu: f64,
    /// The measured child's report.
    pub child: Option<C>,
}

impl<C> Row<C> {
    /// A row of what `m` measured of `tool` moving `files` files of `bytes`
    /// bytes in all, without a child's report.
    pub fn new(
        proto: &'static str,
        what: &str,
        tool: &str,
        m: &Measured,
        files: usize,
        bytes: u64,
    ) -> Self {
        Row {
            proto,
            what: what.to_owned(),
            tool: tool.to_owned(),
            secs: m.secs,
            files,
            bytes,
            rss: m.rss,
            cpu: m.cpu,
            child: None,
        }
    }

    /// Files per second.
    pub fn files_per_s(&self) -> f64 {
        self.files as f64 / self.secs
    }

    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }

    /// Throughput relative to `base` (files/s for many files, MB/s for one).
    pub fn ratio(&self, base: &Row<C>) -> f64 {
        if self.files > 1 {
            self.files_per_s() / base.files_per_s()
        } else {
            self.mb_per_s() / base.mb_per_s()
        }
    }

    /// The row of `tool` for the same protocol and workload in `rows`.
    pub fn peer<'a>(&self, rows: &'a [Row<C>], tool: &str) -> Option<&'a Row<C>> {
        rows.iter()
            .find(|b| b.proto == self.proto && b.what == self.what && b.tool == tool)
    }
}

/// The row of median wall time among `rows` (one per round), with the
/// highest peak RSS of them all.
pub fn median<C>(mut rows: Vec<Row<C>>) -> Row<C> {
    rows.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let rss = rows.iter().map(|r| r.rss).max().unwrap_or(0);
    let mid = rows.len() / 2;
    let mut row = rows.swap_remove(mid);
    row.rss = rss;
    row
}

/// Each round's throughput of `wharf` relative to `peer` (the rows of one
/// case, one of each per round, in round order).
pub fn round_ratios<C>(wharf: &[Row<C>], peer: &[Row<C>]) -> Vec<f64> {
    wharf.iter().zip(peer).map(|(w, p)| w.ratio(p)).collect()
}

/// Each round's wharf/rclone ratio of one case (protocol and workload).
#[derive(Debug, Clone)]
pub struct Rounds {
    /// `ftp` or `sftp`.
    pub proto: &'static str,
    /// The workload's label.
    pub what: String,
    /// One ratio a round, in round order.
    pub ratios: Vec<f64>,
}

impl Rounds {
    /// The rounds of `wharf` against `peer` (the rows of one case, one of
    /// each per round, in round order).
    pub fn of<C>(wharf: &[Row<C>], peer: &[Row<C>]) -> Option<Self> {
        let first = wharf.first()?;
        Some(Rounds {
            proto: first.proto,
            what: first.what.clone(),
            ratios: round_ratios(wharf, peer),
        })
    }

    /// [`rounds_note`] of the case of `row` among `all` (empty if none).
    pub fn note_for<C>(all: &[Rounds], row: &Row<C>) -> String {
        all.iter()
            .find(|x| x.proto == row.proto && x.what == row.what)
            .map(|x| rounds_note(&x.ratios))
            .unwrap_or_default()
    }
}

/// `; each round's own ratio 1.10, 0.95, 1.20x (median of rounds 1.10x)`
/// for more than one round: beside the ratio of the medians, the spread
/// a shared machine's swings make. Empty for one round.
pub fn rounds_note(ratios: &[f64]) -> String {
    if ratios.len() < 2 {
        return String::new();
    }
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let middle = if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    let shown: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
    format!(
        "; each round's own ratio {}x (median of rounds {middle:.2}x)",
        shown.join(", ")
    )
}

/// Prints the table of `rows` (after a blank line), the tool column
/// `tool_width` wide; wharf's rows show their throughput relative to the
/// `rclone` row of the same case.
pub fn print_table<C>(rows: &[Row<C>], tool_width: usize) {
    println!(
        "\n{:<5} {:<14} {:<tool_width$} {:>8} {:>8} {:>8} {:>8} {:>10} {:>13}",
        "proto", "workload", "tool", "secs", "CPU s", "files/s", "MB/s", "peak RSS", "wharf/rclone"
    );
    for r in rows {
        let ratio = if r.tool == "wharf" {
            let base = r.peer(rows, "rclone").expect("rclone row");
            format!("{:.2}x", r.ratio(base))
        } else {
            String::new()
        };
        let files_per_s = if r.files > 1 {
            format!("{:.0}", r.files_per_s())
        } else {
            "-".to_owned()
        };
        println!(
            "{:<5} {:<14} {:<tool_width$} {:>8.2} {:>8.2} {:>8} {:>8.1} {:>6.1} MiB {:>13}",
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
}

/// `good` if `ok`, else `bad`.
pub fn verdict(ok: bool, good: &str, bad: &str) -> String {
    if ok { good.into() } else { bad.into() }
}

/// The throughput target and whether wharf meets it, given its throughput
/// relative to rclone's ([`Row::ratio`]).
pub fn throughput_target(ratio: f64) -> String {
    format!(
        "throughput vs rclone target ≥ 1.0: {}",
        verdict(ratio >= 1.0, "meets target", "BELOW TARGET")
    )
}

/// The peak RSS target ([`RSS_TARGET`]) and whether a peak of `rss` bytes
/// meets it.
pub fn rss_target(rss: u64) -> String {
    format!(
        "peak RSS target < {} MiB: {}",
        RSS_TARGET >> 20,
        verdict(rss < RSS_TARGET, "meets target", "ABOVE TARGET")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_is_a_gib_unless_the_variable_says_otherwise() {
        assert_eq!(warm_bytes_from(None), 1 << 30);
        assert_eq!(warm_bytes_from(Some("0")), 0);
        assert_eq!(warm_bytes_from(Some(" 64 ")), 64 << 20);
        assert_eq!(warm_bytes_from(Some("lots")), 1 << 30);
    }

    fn row(proto: &'static str, tool: &str, secs: f64, files: usize, rss: u64) -> Row<()> {
        Row {
            proto,
            what: "w".into(),
            tool: tool.into(),
            secs,
            files,
            bytes: 10_000_000,
            rss,
            cpu: 0.0,
            child: None,
        }
    }

    #[test]
    fn median_takes_the_middle_time_and_the_highest_rss() {
        let m = median(vec![
            row("ftp", "wharf", 3.0, 1, 10),
            row("ftp", "wharf", 1.0, 1, 30),
            row("ftp", "wharf", 2.0, 1, 20),
        ]);
        assert_eq!((m.secs, m.rss), (2.0, 30));
    }

    #[test]
    fn ratio_compares_files_for_many_and_bytes_for_one() {
        let rows = [
            row("ftp", "wharf", 1.0, 1, 0),
            row("ftp", "rclone", 2.0, 1, 0),
            row("sftp", "rclone", 4.0, 1, 0),
        ];
        let base = rows[0].peer(&rows, "rclone").unwrap();
        assert_eq!(base.secs, 2.0);
        assert_eq!(rows[0].ratio(base), 2.0);
        // Many files: files per second, whatever the bytes.
        let many = row("ftp", "wharf", 1.0, 10, 0);
        let base = row("ftp", "rclone", 1.0, 20, 0);
        assert_eq!(many.ratio(&base), 0.5);
    }

    #[test]
    fn each_round_is_set_against_its_own_peer_run() {
        let wharf = [
            row("ftp", "wharf", 1.0, 1, 0),
            row("ftp", "wharf", 2.0, 1, 0),
        ];
        let rclone = [
            row("ftp", "rclone", 2.0, 1, 0),
            row("ftp", "rclone", 1.0, 1, 0),
        ];
        assert_eq!(round_ratios(&wharf, &rclone), [2.0, 0.5]);
        // An even count takes the mean of the middle two.
        assert_eq!(
            rounds_note(&[2.0, 0.5]),
            "; each round's own ratio 2.00, 0.50x (median of rounds 1.25x)"
        );
        assert_eq!(
            rounds_note(&[1.3, 0.9, 1.1]),
            "; each round's own ratio 1.30, 0.90, 1.10x (median of rounds 1.10x)"
        );
        assert_eq!(rounds_note(&[1.0]), "");
        let all = [Rounds::of(&wharf, &rclone).unwrap()];
        assert_eq!(Rounds::note_for(&all, &wharf[0]), rounds_note(&[2.0, 0.5]));
        assert_eq!(Rounds::note_for(&all, &row("sftp", "wharf", 1.0, 1, 0)), "");
    }

    #[test]
    fn options_pick_cases_by_protocol_kind_or_both() {
        let o = Options {
            quick: true,
            reps: 1,
            small_files: 1,
            large_bytes: 1 << 20,
            only: vec!["sftp".into(), "ftp-large".into()],
        };
        assert!(o.wanted("sftp", "small") && o.wanted("ftp", "large"));
        assert!(!o.wanted("ftp", "small"));
        assert!(Options { only: vec![], ..o }.wanted("ftp", "small"));
    }

    #[test]
    fn timed_reports_stdout_and_fails_on_a_failing_command() {
        let m = timed(Command::new("sh").args(["-c", "echo a; echo b"]), None);
        assert_eq!(m.last_line(), "b");
        assert!(m.rss > 0 && m.secs > 0.0);
        let dir = tempfile::tempdir().unwrap();
        let err = dir.path().join("err");
        let failed = std::panic::catch_unwind(|| {
            timed(
                Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
                Some(&err),
            )
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&err).unwrap(), "oops\n");
    }

    #[test]
    fn write_large_hashes_what_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let sha = write_large(&p, 2 << 20, |i, c| c[..8].copy_from_slice(&i.to_le_bytes()));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 2 << 20);
        assert_eq!(sha256_file(&p), sha);
        assert_ne!(small_content(0), small_content(1));
        assert_eq!(small_label(100), "100 x 10 KiB");
        assert_eq!(large_label(64 << 20), "1 x 64 MiB");
    }

    #[test]
    fn targets_say_whether_they_are_met() {
        assert_eq!(
            throughput_target(1.0),
            "throughput vs rclone target ≥ 1.0: meets target"
        );
        assert_eq!(
            throughput_target(0.99),
            "throughput vs rclone target ≥ 1.0: BELOW TARGET"
        );
        assert_eq!(
            rss_target(RSS_TARGET - 1),
            "peak RSS target < 64 MiB: meets target"
        );
        assert_eq!(
            rss_target(RSS_TARGET),
            "peak RSS target < 64 MiB: ABOVE TARGET"
        );
    }
}
