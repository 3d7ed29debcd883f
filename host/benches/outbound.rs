//! End-to-end benchmark of the outbound release against a real vsftpd and a
//! real sshd on 127.0.0.1: one `Runtime::once` cycle (select approved
//! documents → spool + SHA-256 → `on-export` of the example print plugin →
//! atomic upload → ledger → receipt in the repository) beside `rclone copy`
//! uploading the same files from a local folder to the same server, for
//! 1,000 × 10 KiB documents and for one 1 GiB document. The large document
//! is also sent by a script doing wharf's work with rclone (`rclone+sha`:
//! its SHA-256 by `openssl dgst`, then the upload), for comparison.
//!
//! The runtime runs in a child process (this binary again, with
//! `WHARF_BENCH_OUTBOUND_CHILD` naming the configuration), so its peak RSS
//! and its wall time are its own, measured as rclone's are: from spawn to
//! exit, with the peak RSS from `wait4`, each run after a `sync` so that
//! none inherits another's writeback. The documents are stored into a
//! template repository once per workload (not measured) and copied into
//! every fresh state folder; the compiled-plugin cache is warmed once and
//! copied too, as a running service would have it. Every run is checked:
//! every document delivered under the plugin's name with its exact bytes,
//! the ledger's done deliveries, rclone's copies.
//!
//! Rounds alternate which side runs first. The table's ratio (and the
//! verdict) compares the medians; each round's own wharf/rclone ratio is
//! printed after it, since on a shared machine the spread between rounds is
//! part of the result.
//!
//! Run: `cargo bench -p wharf --bench outbound` (as root: it installs and
//! starts the servers). `WHARF_BENCH_QUICK=1` runs 100 documents and 64 MiB;
//! `WHARF_BENCH_REPS` sets the rounds whose median is printed (default 3);
//! `WHARF_BENCH_WRAP` prefixes the measured child's command line (e.g.
//! `perf record -g -o wharf.perf --`, to profile it alone);
//! `WHARF_BENCH_ONLY` picks cases, e.g. `sftp`, `large` or `ftp-small,sftp-large`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use wharf::flow::outbound::ExportOutcome;
use wharf::ledger::{DeliveryState, Ledger};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::{
    Attribute, AttributeValue, BytesSource, Category, CollisionPolicy, ContentSource, FileSource,
    NewDocument, NodeId, Repository,
};
use wharf_tests::bench::{
    Measured, Options, Rounds, RunConfig, SMALL_SIZE, Server, Setup, States, hash_floor_note,
    large_label, median, print_table, rss_target, run_self, sha256, sha256_file, small_content,
    small_label, throughput_target, timed, write_large,
};

/// rclone's parallel transfers, and wharf's connections to the server.
const PARALLEL: usize = 8;
/// Documents wharf works on at once: more than its connections, so one
/// document's repository, plugin and ledger work overlaps the others'
/// uploads (as in the inbound bench).
const IN_FLIGHT: usize = PARALLEL * 4;
const PARTNER: &str = "globex";
/// The peer row doing what wharf does to a large document: the SHA-256 of
/// the bytes to send, then rclone's upload.
const SAME_WORK: &str = "rclone+sha";
const SCOPE: [&str; 3] = ["Partners", "globex", "Catalog"];
const CHILD_ENV: &str = "WHARF_BENCH_OUTBOUND_CHILD";

type Row = wharf_tests::bench::Row<ChildReport>;

/// What the child reports on its one line of stdout.
#[derive(Debug, Default)]
struct ChildReport {
    open_secs: f64,
    once_secs: f64,
    /// Time spent in the documents' uploads (transfer, size check,
    /// rename), summed over documents.
    upload_secs: f64,
    delivered: usize,
    exports: usize,
    bytes: u64,
    problems: Vec<String>,
}

/// The measured side: open the runtime from the configuration, run one
/// cycle, report on stdout.
fn child(config_path: &str) {
    common::child(config_path, |summary| {
        let problems: Vec<String> = summary
            .exports
            .iter()
            .filter(|e| e.outcome != ExportOutcome::Delivered)
            .map(|e| format!("{} {}: {}", e.name, e.outcome.as_str(), e.detail))
            .collect();
        serde_json::json!({
            "delivered": summary.exports.iter().filter(|e| e.outcome == ExportOutcome::Delivered).count(),
            "exports": summary.exports.len(),
            "bytes": summary.exports.iter().map(|e| e.bytes_sent).sum::<u64>(),
            "upload_secs": summary.exports.iter().map(|e| e.uploading.as_secs_f64()).sum::<f64>(),
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
        upload_secs: v["upload_secs"].as_f64().unwrap_or(0.0),
        delivered: v["delivered"].as_u64().unwrap_or(0) as usize,
        exports: v["exports"].as_u64().unwrap_or(0) as usize,
        bytes: v["bytes"].as_u64().unwrap_or(0),
        problems: serde_json::from_value(v["problems"].clone()).unwrap_or_default(),
    }
}

/// The folders the partner's pipelines poll, and nothing delivered.
fn reset(server: &Server) {
    for f in ["to-print", "rclone-out"] {
        let _ = std::fs::remove_dir_all(server.root.join(f));
    }
    for f in ["inbox", "acks"] {
        std::fs::create_dir_all(server.root.join(f)).unwrap();
    }
    server.chown();
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
    let mut data = small_content(i);
    data[..9].copy_from_slice(b"%PDF-1.7\n");
    data[9..17].copy_from_slice(&(i as u64).to_le_bytes());
    data
}

/// Writes a PDF-looking file of `size` bytes (a multiple of 1 MiB); returns
/// its SHA-256.
fn write_large_pdf(path: &Path, size: u64) -> String {
    write_large(path, size, |i, chunk| {
        chunk[16..24].copy_from_slice(&i.to_le_bytes());
        if i == 0 {
            chunk[..9].copy_from_slice(b"%PDF-1.7\n");
        } else if i == 1 {
            chunk[..9].copy_from_slice(&[0x5a; 9]);
        }
    })
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
            let sha = sha256(&data);
            let delivered = delivered_name(&job, &name);
            std::fs::write(local.join(&delivered), &data).unwrap();
            store(repo, folder, &name, &job, &sha, &BytesSource(data.into())).await;
            files.push((delivered, sha));
        }
    });
    Workload {
        label: small_label(n),
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
        label: large_label(size),
        files: vec![(delivered, sha)],
        size,
        template,
        local,
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
    plugins_dir: PathBuf,
    states: States,
}

impl Bench {
    fn config(&self, server: &Server, state: &Path) -> PathBuf {
        let extra = format!(
            "\n[partner.outbound]\nscope = \"{scope}\"\ncategory = \"Print\"\nattribute = \"Status\"\n\
             value = \"Approved\"\nack_folder = \"acks\"\n",
            scope = SCOPE.join("/"),
        );
        RunConfig {
            plugins_dir: &self.plugins_dir,
            partner: PARTNER,
            plugin: "globex-print.wasm",
            in_flight: IN_FLIGHT,
            connections: PARALLEL,
            extra: &extra,
        }
        .write(server, state)
    }

    /// One cycle of the runtime in a child process.
    fn run_child(&self, config: &Path) -> (Measured, ChildReport) {
        let m = run_self(CHILD_ENV, config);
        let report = parse_report(m.last_line());
        (m, report)
    }

    /// Warm the compiled-plugin cache with a cycle over an empty repository.
    fn warm(&mut self, server: &Server) {
        reset(server);
        let state = self.states.fresh(server.proto, None);
        let (_, report) = self.run_child(&self.config(server, &state));
        assert!(report.problems.is_empty(), "warm-up: {:?}", report.problems);
        self.states.keep_cache(&state);
    }

    /// wharf over `w`: returns the row after checking that every document
    /// was delivered, recorded and is on the server intact.
    fn wharf(&mut self, server: &Server, w: &Workload) -> Row {
        reset(server);
        let state = self.states.fresh(server.proto, Some(&w.template));
        let config = self.config(server, &state);
        let (m, report) = self.run_child(&config);
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
        reset(server);
        let mut row = Row::new(server.proto, &w.label, "wharf", &m, n, w.bytes());
        row.child = Some(report);
        row
    }
}

fn main() {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        child(&config);
        return;
    }
    // `cargo bench` passes --bench; nothing to parse.
    let Some(setup) = Setup::start("outbound", "globex-print", 2 * PARALLEL + 2) else {
        return;
    };
    let (opts, work, servers) = (&setup.opts, setup.work.path(), &setup.servers);

    let mut bench = Bench {
        plugins_dir: setup.plugins_dir.clone(),
        states: States::new(work),
    };
    bench.warm(&servers.all[0]);

    let mut rows: Vec<Row> = Vec::new();
    let mut rounds: Vec<Rounds> = Vec::new();
    for small in [true, false] {
        let kind = if small { "small" } else { "large" };
        if !servers.all.iter().any(|s| opts.wanted(s.proto, kind)) {
            continue;
        }
        let prepared = Instant::now();
        let w = if small {
            small_workload(work, opts.small_files)
        } else {
            large_workload(work, opts.large_bytes)
        };
        eprintln!(
            "{}: template repository and local copy prepared in {:.1} s",
            w.label,
            prepared.elapsed().as_secs_f64()
        );
        for server in &servers.all {
            if !opts.wanted(server.proto, kind) {
                continue;
            }
            let mut wharf_rows = Vec::new();
            let mut rclone_rows = Vec::new();
            let mut serial_rows = Vec::new();
            let mut same_work_rows = Vec::new();
            for round in 0..opts.reps {
                // Every other round runs wharf after its peers rather than
                // before them, so that neither side always meets the
                // machine in the same state.
                let wharf_first = round % 2 == 0;
                if wharf_first {
                    wharf_rows.push(bench.wharf(server, &w));
                }
                // rclone with its parallel transfers, and (for many files)
                // one at a time, as wharf sends them.
                let mut variants = vec![(PARALLEL, "rclone")];
                if small {
                    variants.push((1, "rclone-1"));
                } else {
                    variants.push((PARALLEL, SAME_WORK));
                }
                for (transfers, tool) in variants {
                    reset(server);
                    let mut cmd = if tool == SAME_WORK {
                        // Hash what is to be sent, then send it, as a
                        // script would.
                        let mut c = Command::new("sh");
                        c.arg("-c")
                            .arg(r#"openssl dgst -sha256 "$1"/* > /dev/null && shift && rclone "$@""#)
                            .arg("sh")
                            .arg(&w.local);
                        c
                    } else {
                        Command::new("rclone")
                    };
                    let m = timed(
                        cmd.arg("copy")
                            .arg(&w.local)
                            .arg(format!("{}:rclone-out", server.proto))
                            .arg("--config")
                            .arg(&servers.rclone_conf)
                            .args(["--transfers", &transfers.to_string()])
                            .args(["--checkers", &PARALLEL.to_string(), "-q"]),
                        // vsftpd has no MFMT: rclone reports every file's
                        // modification time as not set, and succeeds.
                        Some(&work.join("rclone.err")),
                    );
                    verify_uploaded(&server.root.join("rclone-out"), &w, tool);
                    reset(server);
                    let row = Row::new(server.proto, &w.label, tool, &m, w.files.len(), w.bytes());
                    if transfers == 1 {
                        serial_rows.push(row);
                    } else if tool == SAME_WORK {
                        same_work_rows.push(row);
                    } else {
                        rclone_rows.push(row);
                    }
                }
                if !wharf_first {
                    wharf_rows.push(bench.wharf(server, &w));
                }
            }
            // Each round's wharf run against the same round's rclone run
            // (adjacent when wharf runs first, the other rclone variant
            // between them otherwise): the spread shows how much the
            // machine's own swings make.
            rounds.extend(Rounds::of(&wharf_rows, &rclone_rows));
            rows.push(median(wharf_rows));
            rows.push(median(rclone_rows));
            for peers in [serial_rows, same_work_rows] {
                if !peers.is_empty() {
                    rows.push(median(peers));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&w.template);
        let _ = std::fs::remove_dir_all(&w.local);
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
            "{} {}: open {:.2} s, once() {:.2} s ({:.1} ms per document); \
             {}",
            r.proto,
            r.what,
            c.open_secs,
            c.once_secs,
            c.once_secs / r.files as f64 * 1e3,
            throughput_target(ratio),
        );
        if let Some(serial) = r.peer(rows, "rclone-1") {
            line.push_str(&format!(
                "; vs rclone one at a time {:.2}x",
                r.ratio(serial)
            ));
        }
        if let Some(same) = r.peer(rows, SAME_WORK) {
            line.push_str(&format!(
                "; vs SHA-256 then rclone copy (the same work) {:.2}x",
                r.ratio(same)
            ));
        }
        if r.files == 1 {
            // Where once() went: the rest covers the repository reads,
            // the plugin, the ledger steps and the fsynced receipt and
            // delivery log after the upload.
            line.push_str(&format!(
                "; of once(), the upload (transfer, size check, rename) {:.2} s and the rest {:.2} s",
                c.upload_secs,
                c.once_secs - c.upload_secs
            ));
            let peer = r.peer(rows, "rclone").expect("rclone row");
            line.push_str(&format!("; {}", hash_floor_note(r.bytes, peer.secs)));
        }
        line.push_str(&format!("; {}", rss_target(r.rss)));
        line.push_str(&Rounds::note_for(rounds, r));
        println!("{line}");
    }
    println!(
        "\n({}; \
         wharf: Runtime::open + one Runtime::once cycle, globex-print plugin, embedded repository (documents stored beforehand), \
         ledger (group-committed) and fsynced receipts, each document named by the plugin (read into memory when small, streamed from the repository when large) and uploaded to a temporary name, hashed on the way and checked, then renamed, {IN_FLIGHT} documents at once over {PARALLEL} connections; \
         rclone copy from a local folder --transfers {PARALLEL} (rclone) or 1 (rclone-1) --checkers {PARALLEL}, straight to the final names, no fsync; \
         {SAME_WORK} (large document): the local file's SHA-256 by openssl dgst (hardware-accelerated where the CPU allows, as wharf's), then the same rclone copy)",
        opts.note(),
    );
}
