//! End-to-end benchmark of the inbound pipeline against a real vsftpd and a
//! real sshd on 127.0.0.1: one `Runtime::once` cycle (poll → claim → spool +
//! SHA-256 → plugin → embedded repository → archive move on the server)
//! beside `rclone copy` of the same files from the same server into a local
//! folder, for 1,000 × 10 KiB files and for one 1 GiB file. The large file
//! is also copied by a script doing wharf's work with rclone (`rclone+sha`:
//! the copy, its SHA-256 by `openssl dgst`, an fsync), for comparison.
//!
//! The runtime runs in a child process (this binary again, with
//! `WHARF_BENCH_CHILD` naming the configuration), so its peak RSS and its
//! wall time are its own, measured as rclone's are: from spawn to exit, with
//! the peak RSS from `wait4`, each run after a `sync` so that none inherits
//! another's writeback. The compiled-plugin cache is warmed once and
//! copied into every fresh state folder, as a running service would have it.
//! Every run is checked: all files filed, the ledger's done count, every
//! document in the repository, the large document's bytes hashed again.
//!
//! Run: `cargo bench -p wharf --bench pipeline` (as root: it installs and
//! starts the servers). `WHARF_BENCH_QUICK=1` runs 100 files and 64 MiB;
//! `WHARF_BENCH_REPS` sets the rounds whose median is printed (default 3);
//! rounds alternate which side runs first, and each round's own
//! wharf/rclone ratio follows the verdict (taken on the medians);
//! `WHARF_BENCH_WRAP` prefixes the measured child's command line (e.g.
//! `perf record -g -o wharf.perf --`, to profile it alone);
//! `WHARF_BENCH_ONLY` picks cases, e.g. `sftp`, `large` or `ftp-small,sftp-large`;
//! `WHARF_BENCH_PARALLEL` the files (and connections) in flight (default 8).

use std::collections::BTreeSet;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use wharf::flow::inbound::Outcome;
use wharf::ledger::{Ledger, State};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::{NodeKind, Repository};
use wharf_tests::bench::{
    Measured, Options, Rounds, RunConfig, SMALL_SIZE, Server, Setup, States, hash_floor_note,
    large_label, median, print_table, rss_target, run_self, sha256, sha256_file, small_content,
    small_label, throughput_target, timed, write_large,
};

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
const PARTNER: &str = "bench";
/// The peer row doing what wharf does to a large file: rclone's copy, then
/// its SHA-256 and an fsync.
const SAME_WORK: &str = "rclone+sha";
const CHILD_ENV: &str = "WHARF_BENCH_CHILD";

type Row = wharf_tests::bench::Row<ChildReport>;

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
    common::child(config_path, |summary| {
        let problems: Vec<String> = summary
            .files
            .iter()
            .filter(|f| f.outcome != Outcome::Filed)
            .map(|f| format!("{} {}: {}", f.path, f.outcome.as_str(), f.detail))
            .collect();
        serde_json::json!({
            "filed": summary.count(Outcome::Filed),
            "files": summary.files.len(),
            "bytes": summary.files.iter().map(|f| f.bytes_received).sum::<u64>(),
            "file_secs": summary.files.iter().map(|f| f.elapsed.as_secs_f64()).sum::<f64>(),
            "plugin_secs": summary.files.iter().filter_map(|f| f.plugin_time).map(|d| d.as_secs_f64()).sum::<f64>(),
            "problems": problems,
        })
    });
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
        problems: serde_json::from_value(v["problems"].clone()).unwrap_or_default(),
    }
}

/// The partner's inbox: the folder wharf polls and rclone copies from.
fn inbox(server: &Server) -> PathBuf {
    server.root.join("inbox")
}

/// Where wharf moves the files it has filed.
fn archive(server: &Server) -> PathBuf {
    server.root.join("archive")
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
    let mut data = small_content(i);
    data[..8].copy_from_slice(&(i as u64).to_le_bytes());
    data
}

fn seed_small(server: &Server, n: usize) -> Workload {
    let inbox = inbox(server);
    std::fs::create_dir_all(&inbox).unwrap();
    let files = (0..n)
        .map(|i| {
            let name = format!("f{i:05}.dat");
            let data = small_file(i);
            std::fs::write(inbox.join(&name), &data).unwrap();
            (name, sha256(&data))
        })
        .collect();
    server.chown();
    Workload {
        label: small_label(n),
        files,
        size: SMALL_SIZE as u64,
    }
}

fn seed_large(server: &Server, size: u64) -> Workload {
    let inbox = inbox(server);
    std::fs::create_dir_all(&inbox).unwrap();
    let sha = write_large(&inbox.join("big.bin"), size, |i, chunk| {
        chunk[..8].copy_from_slice(&i.to_le_bytes())
    });
    server.chown();
    Workload {
        label: large_label(size),
        files: vec![("big.bin".into(), sha)],
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
        let from = archive(server).join(name);
        if from.exists() {
            std::fs::rename(&from, inbox(server).join(name)).unwrap();
        }
    }
    let have = names_in(&inbox(server));
    assert_eq!(
        have.len(),
        w.files.len(),
        "{}: the inbox could not be restored",
        server.proto
    );
}

struct Bench {
    plugins_dir: PathBuf,
    states: States,
}

impl Bench {
    fn config(&self, server: &Server, state: &Path) -> PathBuf {
        let parallel = parallel();
        RunConfig {
            plugins_dir: &self.plugins_dir,
            partner: PARTNER,
            plugin: "trivial.wasm",
            // The server sees as many connections as rclone's transfers;
            // more files are in flight, so one file's repository and ledger
            // work overlaps the others' transfers.
            in_flight: parallel * 4,
            connections: parallel,
            extra: "",
        }
        .write(server, state)
    }

    /// One cycle of the runtime in a child process.
    fn run_child(&self, config: &Path) -> (Measured, ChildReport) {
        let m = run_self(CHILD_ENV, config);
        let report = parse_report(m.last_line());
        (m, report)
    }

    /// Warm the compiled-plugin cache with a cycle over an empty inbox.
    fn warm(&mut self, server: &Server) {
        std::fs::create_dir_all(inbox(server)).unwrap();
        server.chown();
        let state = self.states.fresh(server.proto, None);
        let (_, report) = self.run_child(&self.config(server, &state));
        assert!(report.problems.is_empty(), "warm-up: {:?}", report.problems);
        self.states.keep_cache(&state);
    }

    /// wharf over `w` (seeded in the inbox): returns the row after checking
    /// that every file was filed, recorded and stored.
    fn wharf(&mut self, server: &Server, w: &Workload) -> Row {
        let state = self.states.fresh(server.proto, None);
        let config = self.config(server, &state);
        let (m, report) = self.run_child(&config);
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
        let left = names_in(&inbox(server));
        assert!(left.is_empty(), "files left in the inbox: {left:?}");
        let archived = names_in(&archive(server));
        assert_eq!(archived.len(), n, "files in the archive folder");
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_file(&config);
        let mut row = Row::new(server.proto, &w.label, "wharf", &m, n, w.bytes());
        row.child = Some(report);
        row
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

fn main() {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        child(&config);
        return;
    }
    // `cargo bench` passes --bench; nothing to parse.
    let Some(setup) = Setup::start("pipeline", "trivial", 2 * parallel() + 2) else {
        return;
    };
    let (opts, work, servers) = (&setup.opts, setup.work.path(), &setup.servers);
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
        plugins_dir: setup.plugins_dir.clone(),
        states: States::new(work),
    };
    bench.warm(&servers.all[0]);

    let mut rows: Vec<Row> = Vec::new();
    let mut rounds: Vec<Rounds> = Vec::new();
    for server in &servers.all {
        for small in [true, false] {
            let kind = if small { "small" } else { "large" };
            if !opts.wanted(server.proto, kind) {
                continue;
            }
            let _ = std::fs::remove_dir_all(inbox(server));
            let _ = std::fs::remove_dir_all(archive(server));
            let w = if small {
                seed_small(server, opts.small_files)
            } else {
                seed_large(server, opts.large_bytes)
            };
            let mut wharf_rows = Vec::new();
            let mut rclone_rows = Vec::new();
            let mut same_work_rows = Vec::new();
            for round in 0..opts.reps {
                // Every other round runs wharf after its peers rather than
                // before them, so that neither side always meets the
                // machine in the same state.
                let wharf_first = round % 2 == 0;
                if wharf_first {
                    wharf_rows.push(bench.wharf(server, &w));
                    restore_inbox(server, &w);
                }

                // rclone's copy; for the large file also the same work as
                // wharf's: the copy, its SHA-256 and an fsync, one after the
                // other as a script would.
                let mut variants = vec!["rclone"];
                if !small {
                    variants.push(SAME_WORK);
                }
                for tool in variants {
                    let dst = work.join("rclone-dst");
                    let _ = std::fs::remove_dir_all(&dst);
                    let mut cmd = if tool == SAME_WORK {
                        let mut c = Command::new("sh");
                        c.arg("-c")
                            .arg(
                                r#"dst="$1"; shift; rclone "$@" && openssl dgst -sha256 "$dst/big.bin" > /dev/null && sync "$dst/big.bin""#,
                            )
                            .arg("sh")
                            .arg(&dst);
                        c
                    } else {
                        Command::new("rclone")
                    };
                    let m = timed(
                        cmd.arg("copy")
                            .arg(format!("{}:inbox", server.proto))
                            .arg(&dst)
                            .arg("--config")
                            .arg(&servers.rclone_conf)
                            .args(rclone_args(server.proto)),
                        None,
                    );
                    let got = names_in(&dst);
                    assert_eq!(
                        got.len(),
                        w.files.len(),
                        "{tool} copied {} files",
                        got.len()
                    );
                    if !small {
                        assert_eq!(
                            sha256_file(&dst.join("big.bin")),
                            w.files[0].1,
                            "{tool}'s copy"
                        );
                    }
                    let _ = std::fs::remove_dir_all(&dst);
                    let row = Row::new(server.proto, &w.label, tool, &m, w.files.len(), w.bytes());
                    if tool == SAME_WORK {
                        same_work_rows.push(row);
                    } else {
                        rclone_rows.push(row);
                    }
                }
                if !wharf_first {
                    wharf_rows.push(bench.wharf(server, &w));
                    restore_inbox(server, &w);
                }
            }
            rounds.extend(Rounds::of(&wharf_rows, &rclone_rows));
            rows.push(median(wharf_rows));
            rows.push(median(rclone_rows));
            if !same_work_rows.is_empty() {
                rows.push(median(same_work_rows));
            }
            let _ = std::fs::remove_dir_all(inbox(server));
            let _ = std::fs::remove_dir_all(archive(server));
        }
    }
    print_rows(&rows, &rounds, opts);
}

fn print_rows(rows: &[Row], rounds: &[Rounds], opts: &Options) {
    print_table(rows, 10);
    println!();
    for r in rows.iter().filter(|r| r.tool == "wharf") {
        let c = r
            .child
            .as_ref()
            .expect("wharf rows carry the child's report");
        let ratio = r.ratio(r.peer(rows, "rclone").expect("rclone row"));
        let mut line = format!(
            "{} {}: open {:.2} s, once() {:.2} s, mean per file {:.1} ms (plugin {:.2} ms); \
             {}",
            r.proto,
            r.what,
            c.open_secs,
            c.once_secs,
            c.file_secs / r.files as f64 * 1e3,
            c.plugin_secs / r.files as f64 * 1e3,
            throughput_target(ratio),
        );
        if let Some(same) = r.peer(rows, SAME_WORK) {
            line.push_str(&format!(
                "; vs rclone copy then SHA-256 and sync (the same work) {:.2}x",
                r.ratio(same)
            ));
        }
        if r.files == 1 {
            let peer = r.peer(rows, "rclone").expect("rclone row");
            line.push_str(&format!("; {}", hash_floor_note(r.bytes, peer.secs)));
            line.push_str(&format!("; {}", rss_target(r.rss)));
        }
        line.push_str(&Rounds::note_for(rounds, r));
        println!("{line}");
    }
    let (parallel, streams) = (parallel(), streams());
    let in_flight = parallel * 4;
    println!(
        "\n({}; \
         wharf: one Runtime::once cycle with max_connections = {parallel} and {in_flight} files in flight (concurrency, max_concurrent_files), \
         trivial plugin, embedded repository (fsynced blobs and metadata), ledger, archive move on the server; \
         rclone copy --transfers {parallel} --checkers {parallel}, no fsync, multi-thread {streams} streams from 64M on sftp, single stream on ftp; \
         {SAME_WORK} (large file): the same rclone copy, then the copy's SHA-256 by openssl dgst (hardware-accelerated where the CPU allows, as wharf's) and a sync of it; \
         wharf fetches an SFTP file of 64 MiB or more as {streams} ranges, an FTP file in one stream)",
        opts.note(),
    );
}
