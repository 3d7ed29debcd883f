//! Plugin host benchmark: per-file cost (fresh instance + one `on-file`
//! call), streaming throughput through `content`, and compiled-cache load
//! versus compiling from source. Prints each figure beside its target.
//!
//! Run: `cargo bench -p wharf --bench plugin`.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf::plugin::{FileInfo, HostConfig, PartnerContext, PluginHost, ReadContent, Verdict};

fn file(name: &str, size: u64) -> FileInfo {
    FileInfo {
        partner: "bench".into(),
        path: format!("in/{name}"),
        name: name.into(),
        size,
        modified: Some(1_700_000_000),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn verdict(status: bool) -> &'static str {
    if status {
        "meets target"
    } else {
        "BELOW TARGET"
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let trivial = wharf_tests::plugins::component("trivial");
    let acme = wharf_tests::plugins::component("acme-invoices");
    let host = PluginHost::new(HostConfig::default()).expect("plugin host");
    let plugin = host.load(&trivial).expect("trivial plugin loads");
    let context = Arc::new(PartnerContext::new("bench"));
    let payload = b"id,amount\n1,2\n".to_vec();

    // 1. Fresh instance + one on-file call.
    let per_file = |iterations: usize| -> Vec<Duration> {
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let content =
                ReadContent::new(std::io::Cursor::new(payload.clone()), payload.len() as u64);
            let start = Instant::now();
            let v = plugin
                .on_file(&context, &file("x.csv", payload.len() as u64), content)
                .expect("trivial call");
            samples.push(start.elapsed());
            assert!(matches!(v, Verdict::Accept(_)));
        }
        samples
    };
    per_file(2_000); // warm the pool slots and caches
    let mut samples = per_file(20_000);
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let p50 = percentile(&samples, 0.50);
    let p99 = percentile(&samples, 0.99);
    println!(
        "instantiate + on-file (trivial plugin, 20000 calls): mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs   target ≤ 25 µs: {}",
        mean.as_secs_f64() * 1e6,
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        verdict(mean <= Duration::from_micros(25))
    );

    // Throughput with both cores busy, as in a pipeline.
    let threads = 2;
    let per_thread = 10_000;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| per_file(per_thread));
        }
    });
    let elapsed = start.elapsed();
    println!(
        "instantiate + on-file on {threads} threads: {:.0} files/s",
        (threads * per_thread) as f64 / elapsed.as_secs_f64()
    );

    // 2. Streaming 1 GiB through `content`.
    const GIB: u64 = 1024 * 1024 * 1024;
    let source = ReadContent::new(std::io::repeat(0x5a).take(GIB), GIB);
    let start = Instant::now();
    let v = plugin
        .on_file(&context, &file("big.stream", GIB), source)
        .expect("streaming call");
    let elapsed = start.elapsed();
    match v {
        Verdict::Accept(f) => assert_eq!(f.description.as_deref(), Some("1073741824 bytes")),
        other => panic!("unexpected verdict {other:?}"),
    }
    let gbps = GIB as f64 / elapsed.as_secs_f64() / 1e9;
    println!(
        "streaming 1 GiB through content: {:.2} s, {gbps:.2} GB/s   target ≥ 1 GB/s: {}",
        elapsed.as_secs_f64(),
        verdict(gbps >= 1.0)
    );

    // 3. Compile from source versus load from the compiled cache.
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cached_host = PluginHost::new(HostConfig {
        cache_dir: Some(cache_dir.path().to_path_buf()),
        ..HostConfig::default()
    })
    .expect("plugin host");
    let wasm = std::fs::read(&acme).expect("acme component");
    let mut compile = Vec::new();
    let mut cached = Vec::new();
    for round in 0..5 {
        // A fresh cache directory each round makes the first load compile.
        let dir = cache_dir.path().join(format!("round{round}"));
        let host = PluginHost::new(HostConfig {
            cache_dir: Some(dir),
            ..HostConfig::default()
        })
        .expect("plugin host");
        let start = Instant::now();
        host.load_bytes("acme-invoices.wasm", &wasm)
            .expect("compiles");
        compile.push(start.elapsed());
        let start = Instant::now();
        let p = host.load_bytes("acme-invoices.wasm", &wasm).expect("loads");
        cached.push(start.elapsed());
        assert_eq!(p.cache_outcome(), wharf::plugin::CacheOutcome::Hit);
    }
    drop(cached_host);
    compile.sort();
    cached.sort();
    let (c, h) = (compile[2], cached[2]);
    let ratio = c.as_secs_f64() / h.as_secs_f64();
    println!(
        "acme-invoices load: compile {:.1} ms, from cache {:.2} ms (medians of 5): {ratio:.0}x   target ≥ 50x: {}",
        c.as_secs_f64() * 1e3,
        h.as_secs_f64() * 1e3,
        verdict(ratio >= 50.0)
    );
}
