//! A candidate build decides a share of a partner's files in shadow: its
//! verdicts are recorded and compared, and the live verdict alone acts.

use std::sync::Arc;

use wharf::runtime::Runtime;
use wharf_tests::plugins::{component, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_decides_in_shadow_and_its_disagreements_are_recorded() {
    let acme = component("acme-invoices");
    component("trivial");
    let dir = tempfile::tempdir().unwrap();
    let samples = workspace_root().join("examples/samples/acme");
    let mut text = format!(
        "[runtime]\nstate_dir = \"state\"\nplugins_dir = {:?}\n",
        acme.parent().unwrap().display().to_string()
    );
    for (id, candidate) in [("same", "acme-invoices.wasm"), ("diff", "trivial.wasm")] {
        let inbox = dir.path().join(id).join("inbox");
        std::fs::create_dir_all(&inbox).unwrap();
        for f in std::fs::read_dir(&samples).unwrap().flatten() {
            std::fs::copy(f.path(), inbox.join(f.file_name())).unwrap();
        }
        text.push_str(&format!(
            "[[partner]]\nid = \"{id}\"\nplugin = \"acme-invoices.wasm\"\nendpoint = \"file://{}\"\n\
             complete = {{ stable_polls = 1, min_age_secs = 0 }}\n\
             canary = {{ plugin = \"{candidate}\", percent = 100 }}\n",
            dir.path().join(id).display()
        ));
    }
    let config = wharf::config::parse(&text, dir.path()).unwrap();
    let runtime = Arc::new(Runtime::open(config).await.unwrap());
    let summary = runtime.once().await;
    // The live build alone acts: one invoice filed, two quarantined, for
    // both partners, whatever the candidate said.
    for id in ["same", "diff"] {
        let outcomes: Vec<_> = summary
            .files
            .iter()
            .filter(|f| f.partner == id)
            .map(|f| f.outcome.as_str())
            .collect();
        assert_eq!(
            outcomes.iter().filter(|o| **o == "filed").count(),
            1,
            "{id}: {outcomes:?}"
        );
        assert_eq!(outcomes.iter().filter(|o| **o == "quarantined").count(), 2);
    }
    let ledger = runtime.ledger();
    let same = ledger.canary_summary("same").unwrap();
    assert_eq!((same.len(), same[0].decided, same[0].disagreed), (1, 3, 0));
    let diff = ledger.canary_summary("diff").unwrap();
    assert_eq!((diff[0].decided, diff[0].disagreed), (3, 3));
    assert!(
        diff[0]
            .disagreements
            .iter()
            .any(|d| d.path.ends_with("invoice-november.csv")
                && d.live_verdict.contains("reject")
                && d.candidate_verdict.contains("accept"))
    );
    let metrics = runtime.metrics().encode();
    assert!(
        metrics.contains("wharf_canary_verdicts_total{partner=\"same\",result=\"agree\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wharf_canary_verdicts_total{partner=\"diff\",result=\"disagree\"} 3")
    );
}
