//! Store 10,000 × 10 KiB documents with 6 attributes each into the embedded
//! repository, and 1,000 through the facade over HTTP with the Content
//! Server client; print documents/s and latency percentiles against the
//! targets (≥ 2,000 docs/s embedded, ≥ 500 docs/s through the facade).
//!
//! `cargo bench -p wharf-ecm --bench ecm` (env `ECM_BENCH_EMBEDDED`,
//! `ECM_BENCH_FACADE`, `ECM_BENCH_CONCURRENCY` override the counts).

use std::collections::HashMap;
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

async fn run<R: Repository + 'static>(
    label: &str,
    repo: Arc<R>,
    parent: NodeId,
    count: usize,
    conc: usize,
    target: f64,
) -> bool {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (repo, next) = (repo.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return lat;
                }
                let (doc, data) = document(parent, i);
                let t = Instant::now();
                let s = repo
                    .store_document(&doc, &BytesSource(data))
                    .await
                    .expect("store");
                assert_eq!(s.outcome, StoreOutcome::Created);
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let total = start.elapsed();
    lat.sort();
    let pct = |p: f64| {
        lat[((lat.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(lat.len() - 1)]
    };
    let rate = count as f64 / total.as_secs_f64();
    let pass = rate >= target;
    println!(
        "{label}: {count} docs × 10 KiB, 6 attributes, concurrency {conc}: {rate:.0} docs/s in {:.2} s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; target ≥ {target:.0} docs/s: {}",
        total.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
        if pass { "MET" } else { "NOT MET" }
    );
    pass
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
            2_000.0,
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
            500.0,
        )
        .await;
        facade.stop().await;
        if !(ok1 && ok2) {
            println!("some targets were not met");
        }
    });
}
