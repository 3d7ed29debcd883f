//! A running service picks up a new plugin build from its plugins folder,
//! refuses a broken one while the old build keeps serving, and records on
//! every document the build that decided it.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wharf::runtime::Runtime;
mod common;
use common::{decided_by, wait_for};
use wharf_tests::plugins::component;

/// Replace `to` atomically with `bytes`, as a deployment would.
fn deploy(dir: &Path, name: &str, bytes: &[u8]) {
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, bytes).unwrap();
    std::fs::rename(&temp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_build_is_swapped_in_and_a_broken_one_refused() {
    let trivial = std::fs::read(component("trivial")).unwrap();
    let other = std::fs::read(component("contract-v0-1-0")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let inbox = dir.path().join("partner/inbox");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    deploy(&plugins, "demo.wasm", &trivial);
    let text = format!(
        "[runtime]\nstate_dir = \"state\"\nplugins_dir = \"plugins\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [[partner]]\nid = \"demo\"\nplugin = \"demo.wasm\"\nendpoint = \"file://{}\"\n\
         poll_interval_secs = 1\ncomplete = {{ stable_polls = 1, min_age_secs = 0 }}\n",
        dir.path().join("partner").display()
    );
    let config = wharf::config::parse(&text, dir.path()).unwrap();
    let runtime = Arc::new(Runtime::open(config).await.unwrap());
    let first = runtime.partners()[0].inbound.plugin().digest().to_string();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (runtime, shutdown) = (runtime.clone(), shutdown.clone());
        async move { runtime.serve(shutdown).await }
    });

    std::fs::write(inbox.join("one.txt"), b"first").unwrap();
    wait_for("one.txt filed", async || {
        decided_by(&runtime, "one.txt").await.is_some()
    })
    .await;
    assert_eq!(decided_by(&runtime, "one.txt").await.unwrap(), first);

    // A new build lands: it is swapped in without a restart.
    deploy(&plugins, "demo.wasm", &other);
    wait_for("the new build", async || {
        runtime.partners()[0].inbound.plugin().digest() != first
    })
    .await;
    let second = runtime.partners()[0].inbound.plugin().digest().to_string();
    std::fs::write(inbox.join("two.txt"), b"second").unwrap();
    wait_for("two.txt decided", async || {
        std::fs::read_dir(&inbox).unwrap().count() == 0
    })
    .await;

    // A broken build is refused and the running one keeps serving.
    deploy(&plugins, "demo.wasm", b"\0asm this is not a component");
    wait_for("the refusal", async || {
        runtime
            .metrics()
            .encode()
            .contains("wharf_plugin_reloads_total{partner=\"demo\",result=\"refused\"} 1")
    })
    .await;
    assert_eq!(runtime.partners()[0].inbound.plugin().digest(), second);
    // And a good build after it is taken again.
    deploy(&plugins, "demo.wasm", &trivial);
    wait_for("the first build again", async || {
        runtime.partners()[0].inbound.plugin().digest() == first
    })
    .await;
    std::fs::write(inbox.join("three.txt"), b"third").unwrap();
    wait_for("three.txt filed", async || {
        decided_by(&runtime, "three.txt").await.is_some()
    })
    .await;
    assert_eq!(decided_by(&runtime, "three.txt").await.unwrap(), first);
    let metrics = runtime.metrics().encode();
    assert!(
        metrics.contains("wharf_plugin_reloads_total{partner=\"demo\",result=\"swapped\"} 2"),
        "{metrics}"
    );

    shutdown.cancel();
    serving.await.unwrap().unwrap();
}
