//! A partner's plugin build is swapped 100 times while 2,000 files flow
//! through its inbox: no file fails or is quarantined, every file is filed
//! once, and every document records the build that decided it.
//!
//! The two builds alternated both accept every file into `Inbox`, but file
//! differently: `trivial` gives no description, `contract-v0-1-0` gives
//! `"<size> bytes"`. A document's description therefore shows which build
//! made its decision, and the test checks it against the digest recorded on
//! the document and in the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wharf::flow::connect::AnyRepository;
use wharf::flow::inbound::EXCEPTIONS_FOLDER;
use wharf::ledger::State;
use wharf::runtime::Runtime;
use wharf_ecm::{AttributeValue, NodeKind, Repository};
use wharf_tests::plugins::component;

const PARTNER: &str = "demo";
const FILES: usize = 2_000;
const BATCHES: usize = 40;
const SWAPS: usize = 100;
/// Time between two batches of files.
const BATCH_GAP: Duration = Duration::from_millis(400);

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn name_of(i: usize) -> String {
    format!("f{i:04}.txt")
}

/// The content of file `i`: small, of a size that varies with `i`.
fn content_of(i: usize) -> Vec<u8> {
    let mut bytes = format!("file {i}\n").into_bytes();
    bytes.resize(bytes.len() + i % 97, b'x');
    bytes
}

/// Put files `range` into the inbox, each written beside it first and
/// renamed in, so that no poll sees one half written.
fn drop_files(staging: &Path, inbox: &Path, range: std::ops::Range<usize>) {
    for i in range {
        let name = name_of(i);
        std::fs::write(staging.join(&name), content_of(i)).unwrap();
        std::fs::rename(staging.join(&name), inbox.join(&name)).unwrap();
    }
}

fn text(categories: &[wharf_ecm::Category], category: &str, attribute: &str) -> Option<String> {
    categories
        .iter()
        .find(|c| c.name == category)?
        .attributes
        .iter()
        .find(|a| a.name == attribute)
        .and_then(|a| match &a.value {
            AttributeValue::Text(t) => Some(t.clone()),
            _ => None,
        })
}

/// Files being processed now, from the runtime's metrics.
fn in_flight(runtime: &Runtime) -> u64 {
    let metrics = runtime.metrics().encode();
    metrics
        .lines()
        .find(|l| l.starts_with("wharf_files_in_flight{") && l.contains(PARTNER))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_swaps_under_a_steady_flow_of_files() {
    let trivial = std::fs::read(component("trivial")).unwrap();
    let contract = std::fs::read(component("contract-v0-1-0")).unwrap();
    let (first, second) = (sha256(&trivial), sha256(&contract));
    assert_ne!(first, second);

    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let partner = dir.path().join("partner");
    let inbox = partner.join("inbox");
    let staging = partner.join("staging");
    for d in [&plugins, &inbox, &staging] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(plugins.join("demo.wasm"), &trivial).unwrap();
    let text_config = format!(
        "[runtime]\nstate_dir = \"state\"\nplugins_dir = \"plugins\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [[partner]]\nid = \"{PARTNER}\"\nplugin = \"demo.wasm\"\nendpoint = \"file://{}\"\n\
         poll_interval_secs = 1\nconcurrency = 8\ncomplete = {{ stable_polls = 1, min_age_secs = 0 }}\n",
        partner.display()
    );
    let config = wharf::config::parse(&text_config, dir.path()).unwrap();
    let runtime = Arc::new(Runtime::open(config).await.unwrap());
    assert!(
        runtime.unavailable().is_empty(),
        "{:?}",
        runtime.unavailable()
    );
    assert_eq!(runtime.partners()[0].inbound.plugin().digest(), first);
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
        async move { runtime.serve(shutdown).await }
    });
    let started = Instant::now();

    // The files arrive in batches while the builds are swapped.
    let feeding = tokio::task::spawn_blocking({
        let (staging, inbox) = (staging.clone(), inbox.clone());
        move || {
            let per_batch = FILES / BATCHES;
            for b in 0..BATCHES {
                drop_files(&staging, &inbox, b * per_batch..(b + 1) * per_batch);
                std::thread::sleep(BATCH_GAP);
            }
        }
    });
    // Swap k happens once k / (SWAPS + 1) of the files are done, so the
    // swaps spread over the flow however fast this machine files, and
    // (waiting up to 2 s for the next poll's files) while files are in
    // flight.
    let builds = [(&contract, &second), (&trivial, &first)];
    let ledger = runtime.ledger().clone();
    let done = || {
        ledger
            .counts()
            .unwrap()
            .into_iter()
            .find(|(state, _)| *state == State::Done)
            .map_or(0, |(_, n)| n as usize)
    };
    let mut in_flight_at_swap = 0;
    for k in 0..SWAPS {
        let due = (k + 1) * FILES / (SWAPS + 1);
        let waiting = Instant::now();
        while done() < due
            || (in_flight(&runtime) == 0 && waiting.elapsed() < Duration::from_secs(2))
        {
            assert!(
                waiting.elapsed() < Duration::from_secs(30),
                "no progress before swap {k}: {} of {due} files done",
                done()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if in_flight(&runtime) > 0 {
            in_flight_at_swap += 1;
        }
        let (wasm, digest) = builds[k % 2];
        let change = runtime
            .deploy_plugin(PARTNER, wasm.clone(), "swap-test")
            .await
            .unwrap_or_else(|e| panic!("swap {k}: {e}"));
        assert!(change.swapped, "swap {k} did not change the build");
        assert_eq!(&change.active.digest, digest);
    }
    let swaps_done = started.elapsed();
    feeding.await.unwrap();

    // Everything drains: the inbox empties and the ledger has no open claim.
    let drained = Instant::now();
    loop {
        let inbox_empty = std::fs::read_dir(&inbox).unwrap().next().is_none();
        let open = ledger.unfinished(Some(PARTNER)).unwrap();
        let done = ledger.finished_between(PARTNER, 0, i64::MAX).unwrap().len();
        if inbox_empty && open.is_empty() && done == FILES {
            break;
        }
        assert!(
            drained.elapsed() < Duration::from_secs(60),
            "not drained: inbox empty {inbox_empty}, {} open, {done} done",
            open.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    serving.await.unwrap().unwrap();

    // The ledger: every file claimed once, filed, by one of the two builds.
    let claims = ledger.finished_between(PARTNER, 0, i64::MAX).unwrap();
    assert_eq!(claims.len(), FILES);
    let expected: BTreeSet<String> = (0..FILES)
        .map(|i| format!("inbox/{}", name_of(i)))
        .collect();
    let by_path: BTreeMap<String, &wharf::ledger::Claim> =
        claims.iter().map(|c| (c.key.path.clone(), c)).collect();
    assert_eq!(by_path.len(), FILES, "a file was claimed twice");
    assert_eq!(by_path.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for c in &claims {
        assert_eq!(c.outcome.as_deref(), Some("filed"), "{c:?}");
        assert_eq!(c.failures, 0, "{c:?}");
        let plugin = c.plugin.as_deref().unwrap_or_default();
        assert!(plugin == first || plugin == second, "{c:?}");
    }
    assert!(std::fs::read_dir(&inbox).unwrap().next().is_none());
    let errors = partner.join("error");
    assert_eq!(
        std::fs::read_dir(&errors).map(|d| d.count()).unwrap_or(0),
        0,
        "files went to the error folder"
    );
    assert_eq!(
        std::fs::read_dir(partner.join("archive")).unwrap().count(),
        FILES
    );

    // The repository: one document of one version per file, in Inbox, its
    // description showing the build that decided it, which is the build
    // its provenance and its ledger claim record.
    let AnyRepository::Embedded(repo) = runtime.repository().as_ref() else {
        panic!("embedded repository expected")
    };
    let root = repo.resolve_path("/Partners/demo").await.unwrap();
    let folders: Vec<String> = repo
        .children(root)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert!(folders.iter().any(|f| f == "Inbox"), "{folders:?}");
    assert!(
        !folders.iter().any(|f| f == EXCEPTIONS_FOLDER),
        "something was quarantined: {folders:?}"
    );
    let folder = repo.resolve_path("/Partners/demo/Inbox").await.unwrap();
    let documents = repo.children(folder).await.unwrap();
    assert_eq!(documents.len(), FILES);
    let mut decided = BTreeMap::<&str, usize>::new();
    for doc in &documents {
        assert_eq!(doc.kind, NodeKind::Document);
        assert_eq!(
            doc.versions,
            Some(1),
            "{} was filed more than once",
            doc.name
        );
        let claim = by_path[&format!("inbox/{}", doc.name)];
        assert_eq!(claim.node_id, Some(doc.id.0 as u64), "{}", doc.name);
        let categories = repo.categories(doc.id).await.unwrap();
        let digest = text(&categories, "wharf Transfer", "Plugin Digest").unwrap();
        let plugin = text(&categories, "wharf Transfer", "Plugin").unwrap();
        assert_eq!(
            claim.plugin.as_deref(),
            Some(digest.as_str()),
            "{}",
            doc.name
        );
        let size = claim.key.size;
        if digest == first {
            assert_eq!(plugin, "trivial", "{}", doc.name);
            assert_eq!(doc.description, None, "{} decided by trivial", doc.name);
            *decided.entry("trivial").or_default() += 1;
        } else {
            assert_eq!(digest, second, "{}", doc.name);
            assert_eq!(plugin, "contract-v0-1-0", "{}", doc.name);
            assert_eq!(
                doc.description.as_deref(),
                Some(format!("{size} bytes").as_str()),
                "{} decided by contract-v0-1-0",
                doc.name
            );
            *decided.entry("contract-v0-1-0").or_default() += 1;
        }
    }

    // The swaps happened while the files flowed: both builds decided a
    // good share, and in claim order the deciding build changed often.
    let mut ordered: Vec<&wharf::ledger::Claim> = claims.iter().collect();
    ordered.sort_by_key(|c| c.id);
    let changes = ordered
        .windows(2)
        .filter(|w| w[0].plugin != w[1].plugin)
        .count();
    eprintln!(
        "{FILES} files, {SWAPS} swaps in {:.1} s (swaps done after {:.1} s); decided: {decided:?}; \
         build changes in claim order: {changes}; swaps with files in flight: {in_flight_at_swap}",
        elapsed.as_secs_f64(),
        swaps_done.as_secs_f64()
    );
    for build in ["trivial", "contract-v0-1-0"] {
        let n = decided.get(build).copied().unwrap_or(0);
        assert!(n >= FILES / 10, "{build} decided only {n} files");
    }
    assert!(
        changes >= SWAPS / 4,
        "only {changes} build changes in claim order"
    );
    let metrics = runtime.metrics().encode();
    assert!(
        metrics.contains(&format!(
            "wharf_plugin_reloads_total{{partner=\"{PARTNER}\",result=\"swapped\"}} {SWAPS}"
        )),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .filter(|l| l.contains("result=\"refused\""))
            .all(|l| l.ends_with(" 0")),
        "{metrics}"
    );
}
