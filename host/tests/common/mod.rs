//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use wharf::flow::connect::AnyRepository;
use wharf::runtime::Runtime;
use wharf_ecm::{AttributeValue, Repository};

/// Wait (up to 30 s) until `ok` holds, failing the test with `what`.
pub async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The digest recorded on the document filed for `name`, once filed.
pub async fn decided_by(runtime: &Runtime, name: &str) -> Option<String> {
    let AnyRepository::Embedded(repo) = runtime.repository().as_ref() else {
        panic!("embedded repository expected")
    };
    let node = repo
        .resolve_path(&format!("/Partners/demo/Inbox/{name}"))
        .await
        .ok()?;
    let categories = repo.categories(node).await.unwrap();
    categories
        .iter()
        .find(|c| c.name == "wharf Transfer")?
        .attributes
        .iter()
        .find(|a| a.name == "Plugin Digest")
        .and_then(|a| match &a.value {
            AttributeValue::Text(t) => Some(t.clone()),
            _ => None,
        })
}
