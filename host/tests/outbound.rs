//! Outbound release through a partner's folder with the example print
//! vendor plugin: approved documents leave under the plugin's names, others
//! never; refusals, acknowledgements, overdue acknowledgements and a
//! returned correction land where they should.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wharf::flow::connect::AnyRepository;
use wharf::flow::outbound::ExportOutcome;
use wharf::runtime::Runtime;
use wharf_ecm::embedded::Embedded;
use wharf_ecm::{
    Attribute, AttributeValue, BytesSource, Category, CollisionPolicy, NewDocument, NodeId,
    Repository,
};
use wharf_tests::plugins::component;

fn pdf(text: &str) -> Vec<u8> {
    format!("%PDF-1.7\n{text}\n%%EOF\n").into_bytes()
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn store(
    repo: &Embedded,
    folder: NodeId,
    name: &str,
    bytes: &[u8],
    status: &str,
    job: Option<&str>,
    policy: CollisionPolicy,
) -> NodeId {
    let mut attributes = vec![Attribute {
        name: "Status".into(),
        value: AttributeValue::Text(status.into()),
    }];
    if let Some(job) = job {
        attributes.push(Attribute {
            name: "Job".into(),
            value: AttributeValue::Text(job.into()),
        });
    }
    repo.store_document(
        &NewDocument {
            parent: folder,
            name: name.into(),
            description: None,
            mime_type: if name.ends_with(".pdf") {
                "application/pdf".into()
            } else {
                "text/plain".into()
            },
            sha256: sha(bytes),
            categories: vec![Category {
                name: "Print".into(),
                attributes,
            }],
            policy,
        },
        &BytesSource(bytes.to_vec().into()),
    )
    .await
    .unwrap()
    .node
}

fn embedded(runtime: &Runtime) -> &Embedded {
    match runtime.repository().as_ref() {
        AnyRepository::Embedded(e) => e,
        AnyRepository::Otcs(_) => panic!("embedded repository expected"),
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A runtime with one outbound partner, `globex` (the print vendor plugin,
/// a local folder as its server), releasing approved documents of
/// `Partners/globex/Catalog`; `partner` and `outbound` add settings to its
/// tables. Returns the temporary folder, the partner's folder, the runtime
/// and the catalog folder.
async fn globex(
    partner: &str,
    outbound: &str,
) -> (tempfile::TempDir, PathBuf, Arc<Runtime>, NodeId) {
    let dir = tempfile::tempdir().unwrap();
    let (remote, runtime, catalog) = globex_in(dir.path(), partner, outbound).await;
    (dir, remote, runtime, catalog)
}

/// [`globex`] in the folder `dir` (opened again: the state it holds is kept).
async fn globex_in(dir: &Path, partner: &str, outbound: &str) -> (PathBuf, Arc<Runtime>, NodeId) {
    let plugin = component("globex-print");
    let remote = dir.join("globex");
    std::fs::create_dir_all(remote.join("returns")).unwrap();
    let text = format!(
        "[runtime]\nstate_dir = \"state\"\nplugins_dir = {:?}\n\
         [[partner]]\nid = \"globex\"\nplugin = \"globex-print.wasm\"\nendpoint = \"file://{}\"\n\
         {partner}\
         [partner.outbound]\nscope = \"Partners/globex/Catalog\"\ncategory = \"Print\"\n\
         attribute = \"Status\"\nvalue = \"Approved\"\n{outbound}",
        plugin.parent().unwrap().display().to_string(),
        remote.display()
    );
    let config = wharf::config::parse(&text, dir).unwrap();
    let runtime = Arc::new(Runtime::open(config).await.unwrap());
    let catalog = embedded(&runtime)
        .ensure_folder(
            NodeId::ENTERPRISE,
            &["Partners".into(), "globex".into(), "Catalog".into()],
        )
        .await
        .unwrap();
    (remote, runtime, catalog)
}

/// The value of `sql` in a copy of the database file `db` alone, without
/// its write-ahead log.
fn in_file_alone(db: &Path, sql: &str) -> i64 {
    let copy = tempfile::tempdir().unwrap();
    let file = copy.path().join("copy.db");
    std::fs::copy(db, &file).unwrap();
    rusqlite::Connection::open(&file)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or(0)
}

/// A cycle ends with its stores checkpointed side by side, so that closing
/// them has nothing left to write: the database files alone hold the
/// delivery, its receipt and the plugin's activation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_leaves_its_stores_checkpointed() {
    let (dir, _remote, runtime, catalog) = globex("", "").await;
    store(
        embedded(&runtime),
        catalog,
        "Spring.pdf",
        &pdf("spring catalog"),
        "Approved",
        Some("J1"),
        CollisionPolicy::Reject,
    )
    .await;
    let state = dir.path().join("state");
    let delivered = "SELECT COUNT(*) FROM deliveries WHERE state = 'done'";
    let receipts = "SELECT COUNT(*) FROM nodes WHERE name LIKE '%.receipt.json'";
    let first = runtime.once().await;
    assert_eq!(first.exports[0].outcome, ExportOutcome::Delivered);
    assert_eq!(in_file_alone(&state.join("ledger.db"), delivered), 1);
    assert_eq!(
        in_file_alone(&state.join("ecm").join("repository.db"), receipts),
        1
    );
    assert!(
        in_file_alone(
            &state.join("plugins.db"),
            "SELECT COUNT(*) FROM activations"
        ) >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_documents_leave_once_under_the_plugins_names() {
    let (_dir, remote, runtime, catalog) = globex(
        "inbox = \"returns\"\nsettings = { marker = \"yes\" }\n\
         complete = { stable_polls = 1, min_age_secs = 0 }\n",
        "ack_folder = \"acks\"\nack_timeout_secs = 1\n",
    )
    .await;
    let repo = embedded(&runtime);
    let spring = pdf("spring catalog");
    let a = store(
        repo,
        catalog,
        "Spring.pdf",
        &spring,
        "Approved",
        Some("J1"),
        CollisionPolicy::Reject,
    )
    .await;
    let draft = store(
        repo,
        catalog,
        "Draft.pdf",
        &pdf("draft"),
        "Draft",
        Some("J2"),
        CollisionPolicy::Reject,
    )
    .await;
    let text_doc = store(
        repo,
        catalog,
        "Notes.txt",
        b"plain text",
        "Approved",
        Some("J3"),
        CollisionPolicy::Reject,
    )
    .await;
    let no_job = store(
        repo,
        catalog,
        "Orphan.pdf",
        &pdf("orphan"),
        "Approved",
        None,
        CollisionPolicy::Reject,
    )
    .await;
    // Outside the scope, approved: never sent either.
    let elsewhere = repo
        .ensure_folder(NodeId::ENTERPRISE, &["Other".into()])
        .await
        .unwrap();
    let outside = store(
        repo,
        elsewhere,
        "Outside.pdf",
        &pdf("outside"),
        "Approved",
        Some("J9"),
        CollisionPolicy::Reject,
    )
    .await;

    let first = runtime.once().await;
    let outcome = |node: NodeId| {
        first
            .exports
            .iter()
            .find(|e| e.node == node.0 as u64)
            .map(|e| e.outcome)
    };
    assert_eq!(
        outcome(a),
        Some(ExportOutcome::Delivered),
        "{:?}",
        first.exports
    );
    assert_eq!(outcome(text_doc), Some(ExportOutcome::Refused));
    assert_eq!(outcome(no_job), Some(ExportOutcome::Refused));
    assert_eq!(
        outcome(draft),
        None,
        "an unapproved document is not even selected"
    );
    assert_eq!(outcome(outside), None);
    let to_print = remote.join("to-print");
    assert_eq!(
        files(&to_print),
        ["GLOBEX_J1_v1_Spring.pdf", "GLOBEX_J1_v1_Spring.pdf.ready"]
    );
    assert_eq!(
        std::fs::read(to_print.join("GLOBEX_J1_v1_Spring.pdf")).unwrap(),
        spring
    );
    // On demand, an unapproved or out-of-scope document is still refused.
    let out = runtime.outbound("globex").unwrap();
    assert_eq!(out.export(draft).await.outcome, ExportOutcome::NotApproved);
    assert_eq!(
        out.export(outside).await.outcome,
        ExportOutcome::NotApproved
    );
    // Refusals opened review tasks on their documents; the delivery has a
    // receipt in the partner's Deliveries folder.
    let tasks = repo.workflows().await.unwrap();
    for node in [text_doc, no_job] {
        assert!(
            tasks
                .iter()
                .any(|t| t.documents.contains(&node) && t.title.contains("refused")),
            "{tasks:?}"
        );
    }
    let ledger = runtime.ledger();
    let delivered = ledger.deliveries(Some("globex"), None, None).unwrap();
    let d1 = delivered
        .iter()
        .find(|d| d.key.node_id == a.0 as u64)
        .unwrap();
    assert_eq!(d1.sha256.as_deref(), Some(sha(&spring).as_str()));
    let receipt = d1.receipt_node.expect("a receipt");
    let receipt_path = repo.path_of(NodeId(receipt as i64)).await.unwrap();
    assert!(
        receipt_path.starts_with("/Partners/globex/Deliveries/"),
        "{receipt_path}"
    );

    // Each delivery and each refusal left its audit event on the document.
    let events: Vec<_> = repo
        .audit(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .filter(|e| e.actor == "partner:globex")
        .collect();
    let of = |node: NodeId| -> Vec<(&str, Option<&str>)> {
        events
            .iter()
            .filter(|e| e.node == Some(node))
            .map(|e| (e.action.as_str(), e.sha256.as_deref()))
            .collect()
    };
    assert_eq!(
        of(a),
        [("exported", Some(sha(&spring).as_str()))],
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e.node == Some(a)
            && e.detail
                == format!(
                    "version 1 as to-print/GLOBEX_J1_v1_Spring.pdf (delivery {})",
                    d1.id
                )),
        "{events:#?}"
    );
    for node in [text_doc, no_job] {
        assert_eq!(
            of(node).iter().map(|e| e.0).collect::<Vec<_>>(),
            ["export-refused"],
            "{events:#?}"
        );
    }
    assert!(
        of(draft).is_empty() && of(outside).is_empty(),
        "{events:#?}"
    );

    // A second pass sends nothing again.
    let second = runtime.once().await;
    assert!(
        second
            .exports
            .iter()
            .all(|e| e.outcome == ExportOutcome::Skipped),
        "{:?}",
        second.exports
    );
    // The acknowledgement is overdue by now (timeout 1 s): one task.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    runtime.once().await;
    runtime.once().await;
    let overdue: Vec<_> = repo
        .workflows()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.title.starts_with("No acknowledgement"))
        .collect();
    assert_eq!(overdue.len(), 1, "{overdue:?}");

    // A new approved version leaves as a new delivery.
    let spring2 = pdf("spring catalog, corrected prices");
    assert_eq!(
        store(
            repo,
            catalog,
            "Spring.pdf",
            &spring2,
            "Approved",
            Some("J1"),
            CollisionPolicy::AddVersion
        )
        .await,
        a
    );
    let third = runtime.once().await;
    assert!(
        third.exports.iter().any(|e| e.node == a.0 as u64
            && e.version == 2
            && e.outcome == ExportOutcome::Delivered)
    );
    assert_eq!(
        std::fs::read(to_print.join("GLOBEX_J1_v2_Spring.pdf")).unwrap(),
        spring2
    );

    // Acknowledgements: one accepted, one refused (a review task), one for
    // a file never delivered (quarantined).
    let acks = remote.join("acks");
    std::fs::create_dir_all(&acks).unwrap();
    std::fs::write(acks.join("GLOBEX_J1_v1_Spring.pdf.ack"), "ACCEPTED\n").unwrap();
    std::fs::write(
        acks.join("GLOBEX_J1_v2_Spring.pdf.ack"),
        "REJECTED: bleed too small\n",
    )
    .unwrap();
    std::fs::write(acks.join("GLOBEX_J7_v1_Nothing.pdf.ack"), "ACCEPTED\n").unwrap();
    std::fs::write(acks.join("readme.txt"), "not an ack").unwrap();
    runtime.once().await;
    let v1 = ledger
        .delivery_by_remote_name("globex", "GLOBEX_J1_v1_Spring.pdf")
        .unwrap()
        .unwrap();
    assert_eq!(v1.ack_status.as_deref(), Some("accepted"));
    assert!(v1.ack_node.is_some());
    let v2 = ledger
        .delivery_by_remote_name("globex", "GLOBEX_J1_v2_Spring.pdf")
        .unwrap()
        .unwrap();
    assert_eq!(v2.ack_status.as_deref(), Some("rejected"));
    assert_eq!(v2.ack_message.as_deref(), Some("bleed too small"));
    assert!(
        repo.workflows()
            .await
            .unwrap()
            .iter()
            .any(|t| t.comment.contains("bleed too small")),
        "the refusal opens a review task"
    );
    assert_eq!(
        files(&acks),
        ["readme.txt"],
        "acks are taken, other files left alone"
    );
    assert!(files(&remote.join("error")).contains(&"GLOBEX_J7_v1_Nothing.pdf.ack".to_string()));

    // Round trip: Globex returns a corrected file under its delivered name;
    // it becomes version 3 of the same document, routed to review.
    let corrected = pdf("spring catalog, corrected by the printer");
    std::fs::write(remote.join("returns/GLOBEX_J1_v2_Spring.pdf"), &corrected).unwrap();
    let back = runtime.once().await;
    assert!(
        back.files.iter().any(
            |f| f.outcome == wharf::flow::inbound::Outcome::Filed && f.node == Some(a.0 as u64)
        ),
        "{:?}",
        back.files
    );
    let versions = repo.versions(a).await.unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(
        versions.last().unwrap().sha256.as_deref(),
        Some(sha(&corrected).as_str())
    );
    assert!(
        repo.workflows()
            .await
            .unwrap()
            .iter()
            .any(|t| t.workflow == "review"
                && t.documents.contains(&a)
                && t.comment.contains("corrected")),
    );
    // Version 3 is approved too (the category came back with it): it is
    // delivered as the next version.
    let fourth = runtime.once().await;
    assert!(
        fourth
            .exports
            .iter()
            .any(|e| e.version == 3 && e.outcome == ExportOutcome::Delivered),
        "{:?}",
        fourth.exports
    );
}

/// A delivery whose upload finished just before a crash is finished (its
/// receipt filed) even when a newer version appeared meanwhile; a delivery
/// not yet uploaded of a superseded version never leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_delivery_of_an_older_version_is_finished_or_dropped() {
    use wharf::ledger::{DeliveryClaim, DeliveryKey, DeliveryState};
    let (dir, remote, runtime, catalog) = globex("", "").await;
    let repo = embedded(&runtime);
    let v1 = pdf("first");
    let a = store(
        repo,
        catalog,
        "A.pdf",
        &v1,
        "Approved",
        Some("J1"),
        CollisionPolicy::Reject,
    )
    .await;
    let b = store(
        repo,
        catalog,
        "B.pdf",
        &pdf("b1"),
        "Approved",
        Some("J2"),
        CollisionPolicy::Reject,
    )
    .await;
    // A's version 1 reached the server, then the process died; B's version
    // 1 was named but not sent.
    let ledger = runtime.ledger();
    let claim = |node: NodeId| match ledger
        .claim_delivery(
            &DeliveryKey {
                partner: "globex".into(),
                node_id: node.0 as u64,
                version: 1,
            },
            "x.pdf",
            10,
        )
        .unwrap()
    {
        DeliveryClaim::New(d) => d,
        other => panic!("{other:?}"),
    };
    let da = claim(a);
    ledger
        .delivery_decided(
            da.id,
            "A.pdf",
            &sha(&v1),
            "to-print/GLOBEX_J1_v1_A.pdf",
            None,
            "p",
        )
        .unwrap();
    // Uploaded while the partner's endpoint named another host.
    ledger
        .delivery_uploaded(da.id, "sftp.globex.example")
        .unwrap();
    let db = claim(b);
    ledger
        .delivery_decided(
            db.id,
            "B.pdf",
            &sha(&pdf("b1")),
            "to-print/GLOBEX_J2_v1_B.pdf",
            None,
            "p",
        )
        .unwrap();
    // Both get a version 2 before the restart.
    store(
        repo,
        catalog,
        "A.pdf",
        &pdf("second"),
        "Approved",
        Some("J1"),
        CollisionPolicy::AddVersion,
    )
    .await;
    store(
        repo,
        catalog,
        "B.pdf",
        &pdf("b2"),
        "Approved",
        Some("J2"),
        CollisionPolicy::AddVersion,
    )
    .await;

    // A's content was spooled by the process that died.
    let spool = dir.path().join("state/spool/globex.out");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join(da.id.to_string()), &v1).unwrap();

    runtime.once().await;
    let a1 = ledger.delivery(da.id).unwrap();
    assert_eq!(a1.state, DeliveryState::Done);
    assert!(
        !spool.join(da.id.to_string()).exists(),
        "a finished delivery leaves no spool file"
    );
    let receipt = a1
        .receipt_node
        .expect("the uploaded version gets its receipt");
    let receipt = receipt_of(repo, receipt).await;
    assert_eq!(
        receipt["endpoint_host"], "sftp.globex.example",
        "the receipt names the host the file went to: {receipt}"
    );
    let b1 = ledger.delivery(db.id).unwrap();
    assert_eq!(b1.state, DeliveryState::Done);
    assert!(
        b1.reason.as_deref().unwrap_or("").contains("superseded"),
        "{b1:?}"
    );
    assert!(ledger.unfinished_deliveries("globex").unwrap().is_empty());
    // The latest versions went out; B's version 1 never did.
    assert_eq!(
        files(&remote.join("to-print")),
        ["GLOBEX_J1_v2_A.pdf", "GLOBEX_J2_v2_B.pdf"]
    );
}

/// The JSON content of the receipt document `node`.
async fn receipt_of(repo: &Embedded, node: u64) -> serde_json::Value {
    let bytes = wharf_ecm::collect(repo.download(NodeId(node as i64), None).await.unwrap())
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A partner whose one approved document, `A.pdf` (job `job`), was
/// delivered in one cycle: the folder, the partner's server folder, the
/// runtime, the document and its finished delivery.
async fn one_delivered(
    job: &str,
) -> (
    tempfile::TempDir,
    PathBuf,
    Arc<Runtime>,
    NodeId,
    wharf::ledger::Delivery,
) {
    let (dir, remote, runtime, catalog) = globex("", "").await;
    let doc = store(
        embedded(&runtime),
        catalog,
        "A.pdf",
        &pdf("first"),
        "Approved",
        Some(job),
        CollisionPolicy::Reject,
    )
    .await;
    runtime.once().await;
    let [d] = &runtime
        .ledger()
        .deliveries(Some("globex"), None, None)
        .unwrap()[..]
    else {
        panic!("one delivery expected");
    };
    assert_eq!(d.state, wharf::ledger::DeliveryState::Done);
    let d = d.clone();
    (dir, remote, runtime, doc, d)
}

/// The names of the nodes in `folder`.
async fn child_names(repo: &Embedded, folder: NodeId) -> Vec<String> {
    repo.children(folder)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect()
}

/// Turn delivery `id` in the ledger under `dir` back to 'uploaded', as if
/// the process had stopped after storing its receipt, before recording it.
fn unrecord_receipt(dir: &Path, id: i64) {
    rewind(dir, id, "state = 'uploaded', receipt_node = NULL");
}

/// Set `columns` (SQL `SET` clauses) on delivery `id` in the ledger under
/// `dir`, as a step lost to a crash would leave it.
fn rewind(dir: &Path, id: i64, columns: &str) {
    let changed = rusqlite::Connection::open(dir.join("state").join("ledger.db"))
        .unwrap()
        .execute(
            &format!("UPDATE deliveries SET {columns} WHERE id = ?1"),
            [id],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// A delivery resumed after its receipt was stored but before the ledger
/// recorded it finds that receipt rather than filing a second one, even
/// though the document was renamed meanwhile: the receipt is written from
/// the ledger's record alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_stored_before_a_crash_is_not_filed_twice() {
    use wharf::ledger::DeliveryState;
    let (dir, _remote, runtime, a, d) = one_delivered("J1").await;
    let (repo, ledger) = (embedded(&runtime), runtime.ledger());
    let first = d.receipt_node.expect("a receipt");
    let folder = repo
        .node(NodeId(first as i64))
        .await
        .unwrap()
        .parent
        .unwrap();
    assert_eq!(
        child_names(repo, folder).await,
        ["GLOBEX_J1_v1_A.pdf.receipt.json"]
    );

    // The process stopped after storing the receipt, before recording it;
    // then the document was renamed.
    unrecord_receipt(dir.path(), d.id);
    repo.update_node(a, Some("A (renamed).pdf".into()), None)
        .await
        .unwrap();

    runtime.once().await;
    let resumed = ledger.delivery(d.id).unwrap();
    assert_eq!(resumed.state, DeliveryState::Done);
    assert_eq!(
        resumed.receipt_node,
        Some(first),
        "the stored receipt is found"
    );
    assert_eq!(
        child_names(repo, folder).await,
        ["GLOBEX_J1_v1_A.pdf.receipt.json"]
    );
    let receipt = receipt_of(repo, first).await;
    assert_eq!(receipt["document_name"], "A.pdf", "{receipt}");
}

/// A delivery resumed after its receipt was stored, with the partner's ECM
/// root changed meanwhile, finds that receipt in the old root's folder
/// rather than filing a second one under the new root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_receipt_is_found_after_the_ecm_root_changed() {
    use wharf::ledger::DeliveryState;
    let (dir, _remote, runtime, _, d) = one_delivered("J7").await;
    let first = d.receipt_node.expect("a receipt");
    drop(runtime);

    // The process stopped after storing the receipt, before recording it;
    // it comes back with the partner's ECM root moved.
    unrecord_receipt(dir.path(), d.id);
    let (_, runtime, _) = globex_in(dir.path(), "ecm_root = \"Partners/Globex Corp\"\n", "").await;
    runtime.once().await;
    let resumed = runtime.ledger().delivery(d.id).unwrap();
    assert_eq!(resumed.state, DeliveryState::Done);
    assert_eq!(
        resumed.receipt_node,
        Some(first),
        "the stored receipt is found"
    );
    let repo = embedded(&runtime);
    let receipts = repo
        .search(&wharf_ecm::SearchQuery {
            location: None,
            name: None,
            attributes: vec![wharf_ecm::AttributeFilter {
                category: "wharf Delivery".into(),
                attribute: "Partner".into(),
                value: "globex".into(),
            }],
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    // No receipt folder was made under the new root for it (the daily
    // delivery log is written there, as it is for every cycle).
    let new_root = repo
        .ensure_folder(
            NodeId::ENTERPRISE,
            &["Partners".into(), "Globex Corp".into()],
        )
        .await
        .unwrap();
    assert_eq!(child_names(repo, new_root).await, ["Delivery Logs"]);
}

/// A delivery whose record of its upload was lost (a power loss after the
/// receipt was stored, before the ledger's "uploaded" step reached the
/// disk) finds its file on the server and its stored receipt, though the
/// upload time it records now is later: no second upload, no second
/// receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_upload_record_finds_the_file_and_its_receipt() {
    use wharf::ledger::DeliveryState;
    let (dir, remote, runtime, _, d) = one_delivered("J8").await;
    let (repo, ledger) = (embedded(&runtime), runtime.ledger());
    let first = d.receipt_node.expect("a receipt");
    let sent = remote.join("to-print").join("GLOBEX_J8_v1_A.pdf");
    let modified = std::fs::metadata(&sent).unwrap().modified().unwrap();
    rewind(
        dir.path(),
        d.id,
        "state = 'decided', uploaded_at = NULL, endpoint_host = NULL, receipt_node = NULL",
    );
    // The upload time recorded on resuming is a later second.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    runtime.once().await;
    let resumed = ledger.delivery(d.id).unwrap();
    assert_eq!(resumed.state, DeliveryState::Done);
    assert_ne!(resumed.uploaded_at, d.uploaded_at);
    assert_eq!(
        resumed.receipt_node,
        Some(first),
        "the stored receipt is found"
    );
    assert_eq!(
        std::fs::metadata(&sent).unwrap().modified().unwrap(),
        modified,
        "not sent again"
    );
    let receipt_folder = repo
        .node(NodeId(first as i64))
        .await
        .unwrap()
        .parent
        .unwrap();
    assert_eq!(repo.children(receipt_folder).await.unwrap().len(), 1);
}

/// A delivery claimed under one name and named by the plugin after the
/// document was renamed (an earlier attempt failed before the plugin
/// decided) states the name the plugin saw, in the ledger and on the receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_names_the_document_as_the_plugin_saw_it() {
    use wharf::ledger::{DeliveryClaim, DeliveryKey, DeliveryState};
    let (_dir, remote, runtime, catalog) = globex("", "").await;
    let repo = embedded(&runtime);
    let (content, orphan) = (pdf("first"), pdf("orphan"));
    let a = store(
        repo,
        catalog,
        "Draft.pdf",
        &content,
        "Approved",
        Some("J1"),
        CollisionPolicy::Reject,
    )
    .await;
    // Without a job number: the plugin refuses it.
    let b = store(
        repo,
        catalog,
        "Draft orphan.pdf",
        &orphan,
        "Approved",
        None,
        CollisionPolicy::Reject,
    )
    .await;
    // Both were claimed under their first names; the attempts then failed.
    let ledger = runtime.ledger();
    let claim = |node: NodeId, name: &str, size: usize| {
        let key = DeliveryKey {
            partner: "globex".into(),
            node_id: node.0 as u64,
            version: 1,
        };
        let DeliveryClaim::New(d) = ledger.claim_delivery(&key, name, size as u64).unwrap() else {
            panic!("a new delivery expected");
        };
        ledger.delivery_failed(d.id, "plugin: trapped").unwrap();
        d.id
    };
    let (da, db) = (
        claim(a, "Draft.pdf", content.len()),
        claim(b, "Draft orphan.pdf", orphan.len()),
    );
    for (node, name) in [(a, "Final.pdf"), (b, "Orphan.pdf")] {
        repo.update_node(node, Some(name.into()), None)
            .await
            .unwrap();
    }

    runtime.once().await;
    let d = ledger.delivery(da).unwrap();
    assert_eq!(d.state, DeliveryState::Done);
    assert_eq!(d.name, "Final.pdf");
    // The plugin's name for it follows the document's current name, and so
    // does the receipt.
    assert_eq!(files(&remote.join("to-print")), ["GLOBEX_J1_v1_Final.pdf"]);
    let receipt = receipt_of(repo, d.receipt_node.expect("a receipt")).await;
    assert_eq!(receipt["document_name"], "Final.pdf", "{receipt}");
    // The refusal, too, is recorded under the name the plugin refused.
    let refused = ledger.delivery(db).unwrap();
    assert_eq!(refused.state, DeliveryState::Done);
    assert!(refused.reason.is_some(), "{refused:?}");
    assert_eq!(refused.name, "Orphan.pdf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_version_whose_stored_bytes_are_damaged_never_reaches_the_partner() {
    let (_dir, remote, runtime, catalog) = globex("", "").await;
    let repo = embedded(&runtime);
    // Over 1 MiB: streamed from the repository rather than held in memory.
    let mut big = pdf("large catalog");
    big.resize(3 << 20, b'.');
    let node = store(
        repo,
        catalog,
        "Large.pdf",
        &big,
        "Approved",
        Some("J9"),
        CollisionPolicy::Reject,
    )
    .await;
    let h = sha(&big);
    let blob = repo.state_dir().join("blobs").join(&h[..2]).join(&h);
    let mut damaged = big.clone();
    damaged[2 << 20] ^= 0x55;
    std::fs::write(&blob, &damaged).unwrap();

    let outbound = runtime.outbound("globex").unwrap();
    let reports = outbound.cycle().await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].outcome, ExportOutcome::Retrying, "{reports:?}");
    assert!(reports[0].detail.contains("SHA-256"), "{reports:?}");
    assert_eq!(
        files(&remote.join("to-print")),
        Vec::<String>::new(),
        "nothing under the final name, no temporary file left"
    );

    // Repaired, the same delivery goes out whole.
    std::fs::write(&blob, &big).unwrap();
    let reports = outbound.cycle().await.unwrap();
    assert_eq!(reports[0].outcome, ExportOutcome::Delivered, "{reports:?}");
    let delivered = std::fs::read(remote.join("to-print").join("GLOBEX_J9_v1_Large.pdf")).unwrap();
    assert_eq!(sha(&delivered), h);
    assert_eq!(node.0 as u64, reports[0].node);
}
