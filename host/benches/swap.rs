//! Plugin hot-swap benchmark on a running service in this process, with one
//! file:// partner (poll every second, concurrency 8, filed files deleted
//! from its server) whose inbox a feeder keeps full of small files, so the
//! partner is never idle:
//!
//! - swap latency: from a new plugin file landing in the plugins folder (an
//!   atomic rename from a folder beside it) to the first file decided by
//!   the new build being filed (its ledger claim recording the new digest),
//!   p50/p99 over 50 swaps, with a warm compile cache (the two test builds
//!   `trivial` and `contract-v0-1-0`, compiled before) and a cold one (each
//!   build new: one of them with a custom section of fresh bytes appended,
//!   so its digest was never seen). The time until the new build is live
//!   (the partner's pipeline holds it) is shown beside; for comparison, the
//!   same with `Runtime::deploy_plugin` instead of the folder;
//! - throughput: files per second filed without swaps, and while the builds
//!   are swapped back to back (each swap landing once the previous one is
//!   live) and once a second: rounds of one window of each, the swapping
//!   windows compared with the steady window of their round. The process's
//!   CPU time is shown beside: per file without swaps, and the CPU a swap
//!   costs beyond the files filed meanwhile (less skewed by other work on
//!   the machine than the rates are).
//!
//! The ledger is read through a second, read-only SQLite connection (the
//! ledger runs in WAL mode), so watching it takes no lock of the service.
//! Every filed claim is checked at the end: all filed, none quarantined or
//! failed, each decided by one of the builds offered.
//!
//! Run: `cargo bench -p wharf --bench swap`. `WHARF_BENCH_QUICK=1` does 10
//! swaps per case and shorter rounds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wharf::runtime::Runtime;

const PARTNER: &str = "bench";
const PLUGIN_FILE: &str = "bench.wasm";
/// Files the feeder keeps in the inbox (well above a second's throughput).
const INBOX_LEVEL: usize = 1_500;

fn quick() -> bool {
    std::env::var_os("WHARF_BENCH_QUICK").is_some_and(|v| v != "0")
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `wasm` with a custom section (id 0, size, name, payload) appended: the
/// same component, with another digest.
fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = wasm.to_vec();
    out.push(0);
    leb128(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The 1, 5 and 15 minute load averages (other work on the machine skews
/// the figures).
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets target" } else { "MISSES TARGET" }
}

/// Keeps the inbox at [`INBOX_LEVEL`] files; each file is written beside
/// the inbox and renamed in. Records the lowest level seen after the first
/// fill.
struct Feeder {
    stop: Arc<AtomicBool>,
    lowest: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    fn start(partner: &Path) -> Feeder {
        let (inbox, staging) = (partner.join("inbox"), partner.join("staging"));
        std::fs::create_dir_all(&staging).expect("staging folder");
        let stop = Arc::new(AtomicBool::new(false));
        let lowest = Arc::new(AtomicU64::new(u64::MAX));
        let thread = std::thread::spawn({
            let (stop, lowest) = (stop.clone(), lowest.clone());
            move || {
                let mut next = 0u64;
                let mut filled = false;
                while !stop.load(Ordering::Relaxed) {
                    let level = std::fs::read_dir(&inbox).expect("inbox").count();
                    if filled {
                        lowest.fetch_min(level as u64, Ordering::Relaxed);
                    }
                    for _ in level..INBOX_LEVEL {
                        let name = format!("f{next:08}.txt");
                        let content = format!("file {next}\n{}", "x".repeat((next % 97) as usize));
                        next += 1;
                        std::fs::write(staging.join(&name), content).expect("staging a file");
                        std::fs::rename(staging.join(&name), inbox.join(&name))
                            .expect("renaming a file in");
                    }
                    filled = true;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Feeder {
            stop,
            lowest,
            thread: Some(thread),
        }
    }

    /// Stop; returns the lowest inbox level seen.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("feeder thread");
        }
        self.lowest.load(Ordering::Relaxed)
    }
}

/// A build's bytes and digest.
type Build = (Vec<u8>, String);

/// The service under test and what watches it.
struct Bench {
    rt: tokio::runtime::Runtime,
    runtime: Arc<Runtime>,
    ledger: Connection,
    plugins: PathBuf,
    /// Beside `plugins`: where a build is written before its rename.
    landing: PathBuf,
    /// Every digest offered, to check the filed claims against.
    offered: HashSet<String>,
}

/// The digest of the build the partner's pipeline holds now.
fn live(runtime: &Runtime) -> String {
    runtime.partners()[0].inbound.plugin().digest().to_string()
}

/// Land `wasm` in `plugins` by a rename from `landing`.
fn land(landing: &Path, plugins: &Path, wasm: &[u8]) {
    let staged = landing.join(PLUGIN_FILE);
    std::fs::write(&staged, wasm).expect("staging the build");
    std::fs::rename(&staged, plugins.join(PLUGIN_FILE)).expect("landing the build");
}

impl Bench {
    fn live(&self) -> String {
        live(&self.runtime)
    }

    fn done(&self) -> u64 {
        self.ledger
            .query_row(
                "SELECT COUNT(*) FROM claims WHERE state = 'done'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .expect("counting done claims") as u64
    }

    fn max_id(&self) -> i64 {
        self.ledger
            .query_row("SELECT COALESCE(MAX(id), 0) FROM claims", [], |r| r.get(0))
            .expect("reading the last claim")
    }

    /// Ids above `above` whose claim records `digest`.
    fn decided_by(&self, above: i64, digest: &str) -> Vec<i64> {
        let mut st = self
            .ledger
            .prepare_cached("SELECT id FROM claims WHERE id > ?1 AND plugin = ?2")
            .expect("query");
        st.query_map(params![above, digest], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// Offer `wasm` (through the folder, or with `deploy_plugin`) and time
    /// until it is live and until the first file it decided is filed.
    fn swap(&mut self, wasm: &[u8], through_folder: bool) -> (Duration, Duration) {
        let digest = sha256(wasm);
        assert_ne!(digest, self.live(), "the build is running already");
        self.offered.insert(digest.clone());
        // Claims below this were finished or in flight at the swap: the
        // baseline of those already recording this digest (a build seen
        // before) is left out.
        let above = self.max_id() - 64;
        let before: HashSet<i64> = self.decided_by(above, &digest).into_iter().collect();
        let start = Instant::now();
        if through_folder {
            land(&self.landing, &self.plugins, wasm);
        } else {
            let change = self
                .rt
                .block_on(self.runtime.deploy_plugin(PARTNER, wasm.to_vec(), "bench"))
                .expect("deploy");
            assert!(change.swapped);
        }
        let mut live = None;
        loop {
            if live.is_none() && self.live() == digest {
                live = Some(start.elapsed());
            }
            if live.is_some()
                && self
                    .decided_by(above, &digest)
                    .iter()
                    .any(|id| !before.contains(id))
            {
                return (live.unwrap_or_default(), start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "build {} not live or deciding after 60 s",
                &digest[..12]
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Watch `window` while `swaps` (builds and their digests) are landed
    /// on another thread at the interval given (back to back when zero:
    /// each lands once the previous one is live).
    fn throughput(&self, window: Duration, swaps: Option<(&[Build], Duration)>) -> Window {
        let stop = AtomicBool::new(false);
        let count = AtomicU64::new(0);
        let (runtime, landing, plugins) = (&self.runtime, &self.landing, &self.plugins);
        std::thread::scope(|s| {
            if let Some((builds, every)) = swaps {
                let (stop, count) = (&stop, &count);
                s.spawn(move || {
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) {
                        if builds[k % builds.len()].1 == live(runtime) {
                            k += 1;
                        }
                        let (wasm, digest) = &builds[k % builds.len()];
                        let t = Instant::now();
                        land(landing, plugins, wasm);
                        while live(runtime) != *digest {
                            assert!(t.elapsed() < Duration::from_secs(60), "swap not live");
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                        k += 1;
                        if let Some(rest) = every.checked_sub(t.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                });
            }
            let (n0, c0, t0) = (self.done(), cpu_time(), Instant::now());
            std::thread::sleep(window);
            let (n1, c1, t1) = (self.done(), cpu_time(), Instant::now());
            stop.store(true, Ordering::Relaxed);
            let secs = (t1 - t0).as_secs_f64();
            Window {
                rate: (n1 - n0) as f64 / secs,
                files: n1 - n0,
                cpu: c1 - c0,
                swaps: count.load(Ordering::Relaxed) as usize,
                secs,
            }
        })
    }
}

/// What one throughput window saw.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Files filed per second.
    rate: f64,
    files: u64,
    /// CPU seconds of this process (user and system).
    cpu: f64,
    /// Swaps that became live in it.
    swaps: usize,
    secs: f64,
}

/// CPU seconds (user and system) this process used so far.
fn cpu_time() -> f64 {
    // SAFETY: a zeroed rusage is a valid out-parameter of getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(r, 0, "getrusage");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn summary(label: &str, samples: &[(Duration, Duration)], target: Duration) {
    let mut live: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut first: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    live.sort();
    first.sort();
    let p99 = percentile(&first, 0.99);
    println!(
        "  {label:<44} p50 {:>9}  p99 {:>9}  (live: p50 {:>9}, p99 {:>9})  target p99 <= {}: {}",
        ms(percentile(&first, 0.50)),
        ms(p99),
        ms(percentile(&live, 0.50)),
        ms(percentile(&live, 0.99)),
        ms(target),
        verdict(p99 <= target)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let swaps = if quick() { 10 } else { 50 };
    let (rounds, window) = if quick() {
        (2, Duration::from_secs(3))
    } else {
        (9, Duration::from_secs(3))
    };
    let trivial = std::fs::read(wharf_tests::plugins::component("trivial")).expect("trivial");
    let contract =
        std::fs::read(wharf_tests::plugins::component("contract-v0-1-0")).expect("contract-v0-1-0");

    let dir = tempfile::tempdir().expect("temporary folder");
    let plugins = dir.path().join("plugins");
    let landing = dir.path().join("landing");
    let partner = dir.path().join("partner");
    for d in [&plugins, &landing, &partner.join("inbox")] {
        std::fs::create_dir_all(d).expect("folders");
    }
    std::fs::write(plugins.join(PLUGIN_FILE), &trivial).expect("first build");
    let text = format!(
        "[runtime]\nstate_dir = \"state\"\nplugins_dir = \"plugins\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [[partner]]\nid = \"{PARTNER}\"\nplugin = \"{PLUGIN_FILE}\"\nendpoint = \"file://{}\"\n\
         poll_interval_secs = 1\nconcurrency = 8\nafter = \"delete\"\ncomplete = {{ stable_polls = 1, min_age_secs = 0 }}\n",
        partner.display()
    );
    let config = wharf::config::parse(&text, dir.path()).unwrap_or_else(|p| panic!("{p:?}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = Arc::new(rt.block_on(Runtime::open(config)).expect("runtime opens"));
    assert!(
        runtime.unavailable().is_empty(),
        "{:?}",
        runtime.unavailable()
    );
    let shutdown = CancellationToken::new();
    let serving = rt.spawn({
        let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
        async move { runtime.serve(shutdown).await }
    });
    let ledger = Connection::open_with_flags(
        dir.path().join("state/ledger.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("reading the ledger");
    let mut bench = Bench {
        rt,
        runtime,
        ledger,
        plugins,
        landing,
        offered: [sha256(&trivial)].into_iter().collect(),
    };
    let feeder = Feeder::start(&partner);

    println!(
        "wharf plugin swap benchmark: file:// partner, poll 1 s, concurrency 8, inbox kept at {INBOX_LEVEL} files; \
         {swaps} swaps per case; load average at start: {}",
        load_average()
    );
    // Warm up: the flow reaches its pace, and both builds get compiled.
    std::thread::sleep(Duration::from_secs(3));
    bench.swap(&contract, true);
    bench.swap(&trivial, true);

    let gap = |k: usize| Duration::from_millis(150 + (k as u64 * 37) % 300);
    println!("swap latency: build lands -> first file decided by it is filed");
    let mut warm = Vec::new();
    for k in 0..swaps {
        let wasm = if k % 2 == 0 { &contract } else { &trivial };
        warm.push(bench.swap(wasm, true));
        std::thread::sleep(gap(k));
    }
    summary(
        "warm cache, plugins folder (rename)",
        &warm,
        Duration::from_millis(100),
    );
    let mut cold = Vec::new();
    let nonce: u64 = fastrand::u64(..);
    for k in 0..swaps {
        let base = if k % 2 == 0 { &contract } else { &trivial };
        let payload = format!("{nonce:016x}-{k}");
        let wasm = with_custom_section(base, "wharf-bench-nonce", payload.as_bytes());
        cold.push(bench.swap(&wasm, true));
        std::thread::sleep(gap(k));
    }
    summary(
        "cold cache (new build), plugins folder",
        &cold,
        Duration::from_secs(1),
    );
    let mut api = Vec::new();
    for k in 0..swaps {
        let wasm = if k % 2 == 0 { &contract } else { &trivial };
        api.push(bench.swap(wasm, false));
        std::thread::sleep(gap(k));
    }
    summary(
        "warm cache, Runtime::deploy_plugin (no watcher)",
        &api,
        Duration::from_millis(100),
    );

    // Throughput: rounds of three windows (steady, back-to-back swaps, a
    // swap a second), in an order that turns from round to round; each
    // swapping window is compared with the steady one of its round, so that
    // other work on the machine skews the ratios less than the rates.
    let builds = [
        (contract.clone(), sha256(&contract)),
        (trivial.clone(), sha256(&trivial)),
    ];
    let modes = [None, Some(Duration::ZERO), Some(Duration::from_secs(1))];
    let mut windows: [Vec<Window>; 3] = Default::default();
    let mut ratios: [Vec<f64>; 3] = Default::default();
    for r in 0..rounds {
        let mut round = [None; 3];
        for i in 0..modes.len() {
            let m = (r + i) % modes.len();
            round[m] = Some(bench.throughput(window, modes[m].map(|every| (&builds[..], every))));
        }
        let round = round.map(|w| w.expect("every mode ran"));
        for m in 0..modes.len() {
            windows[m].push(round[m]);
            ratios[m].push(round[m].rate / round[0].rate);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let total = |ws: &[Window]| {
        ws.iter().fold((0u64, 0.0, 0usize, 0.0), |(f, c, n, t), w| {
            (f + w.files, c + w.cpu, n + w.swaps, t + w.secs)
        })
    };
    let lowest = feeder.stop();
    let (steady_files, steady_cpu, _, steady_secs) = total(&windows[0]);
    let cpu_per_file = steady_cpu / steady_files as f64;
    println!(
        "throughput (files/s, median of {rounds} rounds of {} s windows; inbox never below {lowest} files):",
        window.as_secs()
    );
    println!(
        "  {:<44} {:>8.1}  (process CPU {:.0} us per file, {:.2} cores busy)",
        "steady (no swaps)",
        median(&windows[0].iter().map(|w| w.rate).collect::<Vec<_>>()),
        cpu_per_file * 1e6,
        steady_cpu / steady_secs
    );
    for (m, label) in [
        (1, "during back-to-back swaps"),
        (2, "during one swap a second"),
    ] {
        let ratio = median(&ratios[m]);
        let (files, cpu, swaps, secs) = total(&windows[m]);
        // CPU beyond what the files filed would have cost without swaps.
        let per_swap = (cpu - files as f64 * cpu_per_file) / swaps.max(1) as f64;
        println!(
            "  {label:<44} {:>8.1}  ({:.1}% of steady, median of per-round ratios; {:.1} swaps/s; \
             ~{:.1} ms CPU per swap)  target >= 95%: {}",
            median(&windows[m].iter().map(|w| w.rate).collect::<Vec<_>>()),
            100.0 * ratio,
            swaps as f64 / secs,
            per_swap * 1e3,
            verdict(ratio >= 0.95)
        );
    }

    // Stop, and check what was filed.
    shutdown.cancel();
    bench
        .rt
        .block_on(serving)
        .expect("service task")
        .expect("service");
    let finished: i64 = bench
        .ledger
        .query_row(
            "SELECT COUNT(*) FROM claims WHERE state = 'done'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let mut st = bench
        .ledger
        .prepare("SELECT path, outcome, plugin, failures FROM claims WHERE state = 'done'")
        .expect("query");
    let rows: Vec<(String, Option<String>, Option<String>, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let bad: Vec<_> = rows
        .iter()
        .filter(|(_, outcome, plugin, failures)| {
            outcome.as_deref() != Some("filed")
                || !plugin.as_ref().is_some_and(|p| bench.offered.contains(p))
                || *failures != 0
        })
        .take(5)
        .collect();
    assert!(bad.is_empty(), "claims not filed cleanly: {bad:?}");
    println!("load average at the end: {}", load_average());
    println!(
        "checked: {finished} files filed, none failed or quarantined, each decided by one of the {} builds offered",
        bench.offered.len()
    );
}
