//! Store 10,000 × 10 KiB documents with 6 attributes each into the embedded
//! repository, and 1,000 through the facade over HTTP with the Content
//! Server client; print documents/s and latency percentiles against the
//! targets (≥ 2,000 docs/s embedded, ≥ 500 docs/s through the facade).
//! Then store 10,000 spooled 10 KiB files from [`FileSource`]s (copied,
//! then hard-linked), one large file (1 GiB) the same two ways, and the
//! large content again (deduplicated), printing docs/s, seconds and MB/s.
//!
//! `cargo bench -p wharf-ecm --bench ecm` (env `ECM_BENCH_EMBEDDED`,
//! `ECM_BENCH_FACADE`, `ECM_BENCH_SPOOLED`, `ECM_BENCH_CONCURRENCY` override
//! the counts, `ECM_BENCH_FILE_MIB` the large file's size in MiB; 0 skips).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::facade::{Facade, FacadeConfig};
use wharf_ecm::otcs::{CategoryIds, Mapping, OtcsClient, OtcsConfig, Secret};
use wharf_ecm::*;

const SIZE: usize = 10 * 1024;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user and system, all threads) this process has used, from
/// `/proc/self/stat` (Linux; in 1/100 s).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The CPU time used since `start`, for printing.
fn cpu_since(start: Option<Duration>) -> String {
    match (start, cpu_time()) {
        (Some(a), Some(b)) => format!("{:.2} s", (b - a).as_secs_f64()),
        _ => "n/a".into(),
    }
}

fn mapping() -> Mapping {
    let mut m = Mapping::default();
    let attrs = ["Supplier", "Number", "Amount", "Status", "Date", "Paid"]
        .iter()
        .enumerate()
        .map(|(i, a)| (a.to_string(), i as i64 + 2))
        .collect();
    m.categories.insert(
        "Invoice".into(),
        CategoryIds {
            id: 5001,
            attributes: attrs,
        },
    );
    m.categories.insert(
        "wharf".into(),
        CategoryIds {
            id: 5100,
            attributes: [("sha256".to_string(), 2)].into_iter().collect(),
        },
    );
    m
}

fn document(parent: NodeId, i: usize) -> (NewDocument, bytes::Bytes) {
    let mut data = vec![0u8; SIZE];
    let tag = format!("document {i:08} ");
    for (j, b) in data.iter_mut().enumerate() {
        *b = tag.as_bytes()[j % tag.len()];
    }
    let sha = hex::encode(Sha256::digest(&data));
    let a = |name: &str, value: AttributeValue| Attribute {
        name: name.into(),
        value,
    };
    let doc = NewDocument {
        parent,
        name: format!("INV_{i:08}.dat"),
        description: None,
        mime_type: "application/octet-stream".into(),
        sha256: sha,
        categories: vec![Category {
            name: "Invoice".into(),
            attributes: vec![
                a("Supplier", AttributeValue::Text(format!("S-{}", i % 97))),
                a("Number", AttributeValue::Integer(i as i64)),
                a(
                    "Amount",
                    AttributeValue::Decimal(format!("{}.{:02}", i * 5 / 4, (i * 125) % 100)),
                ),
                a(
                    "Status",
                    AttributeValue::Text(
                        if i.is_multiple_of(3) {
                            "Approved"
                        } else {
                            "Draft"
                        }
                        .into(),
                    ),
                ),
                a("Date", AttributeValue::Date("2026-11-24".into())),
                a("Paid", AttributeValue::Boolean(i.is_multiple_of(2))),
            ],
        }],
        policy: CollisionPolicy::Reject,
    };
    (doc, bytes::Bytes::from(data))
}

/// Where [`run`] takes each document's content from.
#[derive(Clone)]
enum Content {
    /// A [`BytesSource`].
    Memory,
    /// A [`FileSource`] over a file spooled in this folder beforehand,
    /// marked immutable (so it may be hard-linked) when set.
    Spooled(Arc<Path>, bool),
}

async fn run<R: Repository + 'static>(
    label: &str,
    repo: Arc<R>,
    parent: NodeId,
    count: usize,
    conc: usize,
    content: Content,
    target: Option<f64>,
) -> bool {
    if let Content::Spooled(dir, _) = &content {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..count {
                std::fs::write(dir.join(i.to_string()), document(parent, i).1).unwrap();
            }
        })
        .await
        .unwrap();
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu = cpu_time();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (repo, next, content) = (repo.clone(), next.clone(), content.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return lat;
                }
                let (doc, data) = document(parent, i);
                let t = Instant::now();
                let s = match &content {
                    Content::Memory => repo.store_document(&doc, &BytesSource(data)).await,
                    Content::Spooled(dir, immutable) => {
                        let mut source = FileSource::new(dir.join(i.to_string()));
                        if *immutable {
                            source = source.immutable();
                        }
                        repo.store_document(&doc, &source).await
                    }
                }
                .expect("store");
                assert_eq!(s.outcome, StoreOutcome::Created);
                lat.push(t.elapsed());
                if let Content::Spooled(dir, _) = &content {
                    // Filed: the spooled copy goes.
                    std::fs::remove_file(dir.join(i.to_string())).unwrap();
                }
            }
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let total = start.elapsed();
    let cpu = cpu_since(cpu);
    lat.sort();
    let pct = |p: f64| {
        lat[((lat.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(lat.len() - 1)]
    };
    let rate = count as f64 / total.as_secs_f64();
    let pass = target.is_none_or(|t| rate >= t);
    let verdict = match target {
        Some(t) => format!(
            "; target ≥ {t:.0} docs/s: {}",
            if pass { "MET" } else { "NOT MET" }
        ),
        None => String::new(),
    };
    println!(
        "{label}: {count} docs × 10 KiB, 6 attributes, concurrency {conc}: {rate:.0} docs/s in {:.2} s (CPU {cpu}); latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{verdict}",
        total.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
    );
    pass
}

/// Write `mib` MiB of pseudo-random bytes (from `seed`) to `path` as a
/// spooling download does (no fsync); return their SHA-256.
fn write_source(path: &Path, mib: usize, seed: u64) -> String {
    let mut f = std::fs::File::create(path).unwrap();
    let mut hasher = Sha256::new();
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in buf.chunks_mut(8) {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        hasher.update(&buf);
        f.write_all(&buf).unwrap();
    }
    hex::encode(hasher.finalize())
}

/// Store a freshly spooled `mib` MiB file from a [`FileSource`] and print
/// the time it took.
async fn store_file(
    repo: &Embedded,
    parent: NodeId,
    dir: &Path,
    mib: usize,
    seed: u64,
    label: &str,
    immutable: bool,
) {
    let path = dir.join(format!("source-{label}.bin"));
    let p = path.clone();
    let sha = tokio::task::spawn_blocking(move || write_source(&p, mib, seed))
        .await
        .unwrap();
    let doc = NewDocument {
        parent,
        name: format!("large {label}.bin"),
        description: None,
        mime_type: "application/octet-stream".into(),
        sha256: sha,
        categories: Vec::new(),
        policy: CollisionPolicy::Reject,
    };
    let mut source = FileSource::new(&path);
    if immutable {
        source = source.immutable();
    }
    let cpu = cpu_time();
    let t = Instant::now();
    let s = repo.store_document(&doc, &source).await.expect("store");
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_since(cpu);
    assert_eq!(s.outcome, StoreOutcome::Created);
    // The spool is removed once stored, as the inbound flow does.
    std::fs::remove_file(&path).unwrap();
    let bytes = (mib as f64) * 1048576.0;
    println!(
        "embedded, one {mib} MiB file from a FileSource ({label}): {secs:.2} s, {:.0} MB/s (CPU {cpu})",
        bytes / 1e6 / secs
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` passes nothing and runs nothing heavy.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conc = env("ECM_BENCH_CONCURRENCY", 32);
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = Embedded::open(dir.path().join("embedded")).await.unwrap();
        let f = repo
            .ensure_folder(NodeId::ENTERPRISE, &["Bench".to_string()])
            .await
            .unwrap();
        let ok1 = run(
            "embedded",
            Arc::new(repo),
            f,
            env("ECM_BENCH_EMBEDDED", 10_000),
            conc,
            Content::Memory,
            Some(2_000.0),
        )
        .await;

        let (repo, _) = Embedded::open(dir.path().join("facade")).await.unwrap();
        let mut users = HashMap::new();
        users.insert("bench".to_string(), Secret::new("bench-password"));
        let cfg = FacadeConfig {
            users,
            mapping: mapping(),
            ..FacadeConfig::default()
        };
        let facade = Facade::start(repo, cfg, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut ccfg = OtcsConfig::new(facade.base_url(), "bench", Secret::new("bench-password"));
        ccfg.mapping = mapping();
        ccfg.checksum_attribute = Some(("wharf".into(), "sha256".into()));
        let client = OtcsClient::new(ccfg).unwrap();
        let f = client
            .ensure_folder(NodeId::ENTERPRISE, &["Bench".to_string()])
            .await
            .unwrap();
        let ok2 = run(
            "otcs client → facade → embedded (HTTP)",
            Arc::new(client),
            f,
            env("ECM_BENCH_FACADE", 1_000),
            conc.min(16),
            Content::Memory,
            Some(500.0),
        )
        .await;
        facade.stop().await;

        // The inbound flow's way: spooled files, each removed once stored.
        let spooled = env("ECM_BENCH_SPOOLED", 10_000);
        for (label, immutable) in [("copied", false), ("hard-linked", true)] {
            if spooled == 0 {
                break;
            }
            let state = dir.path().join(format!("spooled-{label}"));
            let (repo, _) = Embedded::open(&state).await.unwrap();
            let f = repo
                .ensure_folder(NodeId::ENTERPRISE, &["Bench".to_string()])
                .await
                .unwrap();
            let spool: Arc<Path> = dir.path().join(format!("spool-{label}")).into();
            std::fs::create_dir_all(&spool).unwrap();
            run(
                &format!("embedded, spooled files ({label})"),
                Arc::new(repo),
                f,
                spooled,
                conc,
                Content::Spooled(spool.clone(), immutable),
                None,
            )
            .await;
            std::fs::remove_dir_all(&spool).unwrap();
            std::fs::remove_dir_all(&state).unwrap();
        }

        let mib = env("ECM_BENCH_FILE_MIB", 1024);
        if mib > 0 {
            let (repo, _) = Embedded::open(dir.path().join("files")).await.unwrap();
            let f = repo
                .ensure_folder(NodeId::ENTERPRISE, &["Bench".to_string()])
                .await
                .unwrap();
            store_file(&repo, f, dir.path(), mib, 1, "copied", false).await;
            store_file(&repo, f, dir.path(), mib, 2, "hard-linked", true).await;
            // The first content again: only read and verified.
            store_file(&repo, f, dir.path(), mib, 1, "already stored", false).await;
        }
        if !(ok1 && ok2) {
            println!("some targets were not met");
        }
    });
}
