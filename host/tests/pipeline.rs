//! The inbound pipeline end to end against real servers: vsftpd and OpenSSH
//! serve the partners' folders, the workspace's plugins decide, and the
//! embedded repository receives the documents. Every test starts its own
//! servers (stopped when dropped, even when the test fails) and keeps its
//! state in a temporary folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wharf::config::{self, WharfConfig};
use wharf::flow::connect::AnyRepository;
use wharf::flow::inbound::{FileReport, Outcome};
use wharf::ledger::{Claim, ClaimOutcome, FileKey, Ledger, State};
use wharf::runtime::{Runtime, Summary};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::{
    AttributeValue, Category, Grant, Node, NodeId, NodeKind, Principal, Repository, Right,
    SearchQuery, WorkspaceSpec,
};
use wharf_tests::plugins::{component, workspace_root};
use wharf_tests::servers::{Sshd, Vsftpd, VsftpdOptions, free_port};

const ACME_VALID: &str = "INV_ACME01_20261124_001.csv";
const ACME_MISMATCH: &str = "INV_ACME01_20261124_002.csv";
const ACME_BAD_NAME: &str = "invoice-november.csv";

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sample(partner: &str, name: &str) -> Vec<u8> {
    let path = workspace_root()
        .join("examples/samples")
        .join(partner)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes `wharf.toml` into `dir` (state in `dir/state`, the embedded
/// repository) with `runtime` added to `[runtime]` and one `[[partner]]`
/// deciding with the built component of plugin crate `plugin`.
fn write_config(dir: &Path, runtime: &str, plugin: &str, partner: &str) -> PathBuf {
    let component = component(plugin);
    let plugins_dir = component.parent().expect("components live in a folder");
    let text = format!(
        "[runtime]\nstate_dir = \"state\"\nplugins_dir = {:?}\n{runtime}\n\n\
         [ecm]\nkind = \"embedded\"\n\n[[partner]]\nplugin = \"{plugin}.wasm\"\n{partner}\n",
        plugins_dir.display().to_string()
    );
    let path = dir.join("wharf.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn load(path: &Path) -> WharfConfig {
    config::load(path).unwrap_or_else(|e| panic!("{e}"))
}

async fn open(config: WharfConfig) -> Arc<Runtime> {
    let runtime = Runtime::open(config)
        .await
        .unwrap_or_else(|e| panic!("runtime opens: {e:#}"));
    assert!(
        runtime.unavailable().is_empty(),
        "{:?}",
        runtime.unavailable()
    );
    Arc::new(runtime)
}

fn embedded(runtime: &Runtime) -> &Embedded {
    match runtime.repository().as_ref() {
        AnyRepository::Embedded(e) => e,
        AnyRepository::Otcs(_) => panic!("the tests use the embedded repository"),
    }
}

/// An FTP partner's endpoint line for `server`.
fn ftp_url(server: &Vsftpd) -> String {
    format!("ftp://{}@127.0.0.1:{}/", server.user.name, server.port)
}

/// A file holding the FTP user's password, in `dir`.
fn password_file(dir: &Path, server: &Vsftpd) -> PathBuf {
    let path = dir.join("partner.pw");
    std::fs::write(&path, format!("{}\n", server.user.password)).unwrap();
    path
}

/// Every partner reached, nothing to retry.
fn assert_clean(summary: &Summary) {
    assert!(
        summary.unavailable.is_empty(),
        "unavailable: {:?}",
        summary.unavailable
    );
    assert_eq!(
        summary.count(Outcome::Retrying),
        0,
        "retrying: {:#?}",
        summary.files
    );
}

/// The file names in a server folder, sorted (none when it is missing).
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn attr<'a>(cats: &'a [Category], category: &str, name: &str) -> &'a AttributeValue {
    let cat = cats
        .iter()
        .find(|c| c.name == category)
        .unwrap_or_else(|| panic!("no category {category:?} in {cats:#?}"));
    &cat.attributes
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no attribute {name:?} in {cat:#?}"))
        .value
}

fn text(s: &str) -> AttributeValue {
    AttributeValue::Text(s.to_string())
}

async fn content(repo: &Embedded, node: NodeId) -> Vec<u8> {
    wharf_ecm::collect(repo.download(node, None).await.unwrap())
        .await
        .unwrap()
}

async fn child(repo: &Embedded, parent: NodeId, name: &str) -> Node {
    repo.child_by_name(parent, name)
        .await
        .unwrap()
        .unwrap_or_else(|| {
            panic!("no {name:?} in node {parent}");
        })
}

/// Every document in the repository with its version count, by id.
async fn documents(repo: &Embedded) -> Vec<(NodeId, String, Option<u32>)> {
    repo.search(&SearchQuery {
        limit: Some(100_000),
        ..SearchQuery::default()
    })
    .await
    .unwrap()
    .into_iter()
    .map(|n| (n.id, n.name, n.versions))
    .collect()
}

/// Every claim of `partner`, finished or not.
fn claims(ledger: &Ledger, partner: &str) -> Vec<Claim> {
    let mut all = ledger.finished_between(partner, 0, i64::MAX).unwrap();
    all.extend(ledger.unfinished(Some(partner)).unwrap());
    all
}

/// Checks a quarantined file in `<partner root>/Exceptions`: the file
/// itself, its `.error.json` record and its one open review task.
/// The audit events recorded for `partner`'s transfers.
async fn partner_events(repo: &Embedded, partner: &str) -> Vec<wharf_ecm::AuditEvent> {
    repo.audit(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .filter(|e| e.actor == format!("partner:{partner}"))
        .collect()
}

async fn assert_quarantined(
    repo: &Embedded,
    partner: &str,
    name: &str,
    bytes: &[u8],
    code: &str,
    message: &str,
) -> serde_json::Value {
    let exceptions = repo
        .resolve_path(&format!("/Partners/{partner}/Exceptions"))
        .await
        .unwrap();
    let file = child(repo, exceptions, name).await;
    assert_eq!(content(repo, file.id).await, bytes, "{name}");
    let cats = repo.categories(file.id).await.unwrap();
    assert_eq!(attr(&cats, "wharf Exception", "Code"), &text(code));
    assert_eq!(
        attr(&cats, "wharf Transfer", "SHA-256"),
        &text(&sha256(bytes))
    );
    let record_node = child(repo, exceptions, &format!("{name}.error.json")).await;
    let record: serde_json::Value =
        serde_json::from_slice(&content(repo, record_node.id).await).unwrap();
    assert_eq!(record["code"], code, "{record:#}");
    assert_eq!(record["message"], message, "{record:#}");
    assert_eq!(record["partner"], partner, "{record:#}");
    assert_eq!(record["source_path"], format!("inbox/{name}"), "{record:#}");
    assert_eq!(record["size"], bytes.len() as u64, "{record:#}");
    assert_eq!(record["sha256"], sha256(bytes), "{record:#}");
    let reviews: Vec<_> = repo
        .workflows()
        .await
        .unwrap()
        .into_iter()
        .filter(|w| w.documents.contains(&record_node.id))
        .collect();
    assert_eq!(reviews.len(), 1, "{reviews:#?}");
    assert_eq!(reviews[0].workflow, "review");
    assert_eq!(reviews[0].status, "open");
    assert!(reviews[0].documents.contains(&file.id), "{reviews:#?}");
    assert!(reviews[0].title.contains(name), "{reviews:#?}");
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn ftp_partner_files_valid_invoices_and_quarantines_the_rest() {
    let server = Vsftpd::start(VsftpdOptions::default()).expect("vsftpd starts");
    let valid = sample("acme", ACME_VALID);
    let mismatch = sample("acme", ACME_MISMATCH);
    let bad_name = sample("acme", ACME_BAD_NAME);
    for (name, bytes) in [
        (ACME_VALID, &valid),
        (ACME_MISMATCH, &mismatch),
        (ACME_BAD_NAME, &bad_name),
    ] {
        server.seed(&format!("inbox/{name}"), bytes).unwrap();
    }
    let var = format!("WHARF_TEST_PIPELINE_FTP_PW_{}", std::process::id());
    // SAFETY: this variable is set once, before anything reads it, and no
    // other test reads or writes it.
    unsafe { std::env::set_var(&var, &server.user.password) };
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "",
        "acme-invoices",
        &format!(
            "id = \"acme\"\nendpoint = \"{}\"\n\
             password_env = \"{var}\"\ncomplete = {{ stable_polls = 1, min_age_secs = 0 }}\n\n\
             [partner.settings]\nsuppliers = \"ACME01\"\n",
            ftp_url(&server)
        ),
    );
    let runtime = open(load(&path)).await;
    let summary = runtime.once().await;
    assert_clean(&summary);
    assert_eq!(summary.count(Outcome::Filed), 1, "{:#?}", summary.files);
    assert_eq!(
        summary.count(Outcome::Quarantined),
        2,
        "{:#?}",
        summary.files
    );
    let repo = embedded(&runtime);

    // The valid invoice, with everything its filing asked for.
    let folder = repo
        .resolve_path("/Partners/acme/Invoices/ACME01/2026/11")
        .await
        .unwrap();
    let doc = child(repo, folder, ACME_VALID).await;
    assert_eq!(doc.kind, NodeKind::Document);
    let filed = summary
        .files
        .iter()
        .find(|f| f.outcome == Outcome::Filed)
        .unwrap();
    assert_eq!(filed.path, format!("inbox/{ACME_VALID}"));
    assert_eq!(filed.node, Some(doc.id.0 as u64));
    assert_eq!(content(repo, doc.id).await, valid);
    let cats = repo.categories(doc.id).await.unwrap();
    for (name, value) in [
        ("Supplier", text("ACME01")),
        ("Invoice Date", AttributeValue::Date("2026-11-24".into())),
        ("Sequence", AttributeValue::Integer(1)),
        ("Line Count", AttributeValue::Integer(3)),
        ("Total Amount", AttributeValue::Decimal("1650.39".into())),
        ("Currency", text("EUR")),
    ] {
        assert_eq!(attr(&cats, "Invoice", name), &value, "Invoice {name}");
    }
    for (name, value) in [
        ("Partner", text("acme")),
        ("Source Path", text(&format!("inbox/{ACME_VALID}"))),
        ("SHA-256", text(&sha256(&valid))),
        ("Size", AttributeValue::Integer(valid.len() as i64)),
        ("Plugin", text("acme-invoices")),
    ] {
        assert_eq!(
            attr(&cats, "wharf Transfer", name),
            &value,
            "wharf Transfer {name}"
        );
    }
    assert_eq!(
        repo.rm_class(doc.id).await.unwrap().as_deref(),
        Some("FIN-7Y")
    );
    let grants = repo.permissions(doc.id).await.unwrap();
    assert!(
        grants.contains(&Grant {
            principal: Principal::Group("Accounts Payable".into()),
            rights: vec![Right::See, Right::SeeContents],
        }),
        "{grants:?}"
    );

    // The two invalid files, quarantined with a record and a review each.
    let exceptions = repo
        .resolve_path("/Partners/acme/Exceptions")
        .await
        .unwrap();
    let mut held: Vec<String> = repo
        .children(exceptions)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    held.sort();
    assert_eq!(
        held,
        sorted(&[
            ACME_MISMATCH,
            "INV_ACME01_20261124_002.csv.error.json",
            ACME_BAD_NAME,
            "invoice-november.csv.error.json",
        ])
    );
    let record = assert_quarantined(
        repo,
        "acme",
        ACME_MISMATCH,
        &mismatch,
        "supplier-mismatch",
        "a row names another supplier than the file name",
    )
    .await;
    assert!(
        record["details"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "line", "value": "3"})),
        "{record:#}"
    );
    assert_quarantined(
        repo,
        "acme",
        ACME_BAD_NAME,
        &bad_name,
        "bad-name",
        "the file name is not INV_<supplier>_<yyyymmdd>_<seq>.csv",
    )
    .await;
    let workflows = repo.workflows().await.unwrap();
    assert_eq!(
        workflows.iter().filter(|w| w.workflow == "review").count(),
        2,
        "{workflows:#?}"
    );

    // Every claim finished.
    let ledger = runtime.ledger();
    assert!(ledger.unfinished(Some("acme")).unwrap().is_empty());
    let mut outcomes: Vec<(String, Option<String>)> = claims(ledger, "acme")
        .into_iter()
        .map(|c| (c.key.path, c.outcome))
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            (format!("inbox/{ACME_VALID}"), Some("filed".to_string())),
            (
                format!("inbox/{ACME_MISMATCH}"),
                Some("quarantined".to_string())
            ),
            (
                format!("inbox/{ACME_BAD_NAME}"),
                Some("quarantined".to_string())
            ),
        ]
    );

    // Every transfer left its audit event: the filed invoice on its
    // document, each quarantined file on its captured copy.
    let events = partner_events(repo, "acme").await;
    let filed_events: Vec<_> = events.iter().filter(|e| e.action == "filed").collect();
    assert_eq!(filed_events.len(), 1, "{events:#?}");
    assert_eq!(filed_events[0].node, Some(doc.id));
    assert_eq!(filed_events[0].sha256, Some(sha256(&valid)));
    assert!(
        filed_events[0]
            .detail
            .starts_with(&format!("inbox/{ACME_VALID} ({} bytes", valid.len())),
        "{events:#?}"
    );
    let exceptions = repo
        .resolve_path("/Partners/acme/Exceptions")
        .await
        .unwrap();
    for (name, bytes) in [(ACME_MISMATCH, &mismatch), (ACME_BAD_NAME, &bad_name)] {
        let captured = child(repo, exceptions, name).await;
        let of_file: Vec<_> = events
            .iter()
            .filter(|e| e.detail.starts_with(&format!("inbox/{name} ")))
            .collect();
        assert_eq!(of_file.len(), 1, "{name}: {events:#?}");
        assert_eq!(of_file[0].action, "quarantined");
        assert_eq!(of_file[0].node, Some(captured.id));
        assert_eq!(of_file[0].sha256, Some(sha256(bytes)));
    }
    assert_eq!(events.len(), 3, "{events:#?}");

    // A second cycle finds nothing new to do.
    let documents_before = documents(repo).await;
    let claims_before = claims(ledger, "acme");
    let again = runtime.once().await;
    assert_clean(&again);
    assert!(
        again.files.iter().all(|f| f.outcome == Outcome::Skipped),
        "{:#?}",
        again.files
    );
    assert_eq!(documents(repo).await, documents_before);
    assert_eq!(repo.workflows().await.unwrap(), workflows);
    assert_eq!(claims(ledger, "acme"), claims_before);
    assert_eq!(partner_events(repo, "acme").await, events, "no new events");

    // The partner's server: inbox emptied, the invoice archived, the
    // rejected files in the error folder with a note each.
    assert_eq!(names(&server.root.join("inbox")), Vec::<String>::new());
    assert_eq!(names(&server.root.join("archive")), [ACME_VALID]);
    assert_eq!(
        std::fs::read(server.root.join("archive").join(ACME_VALID)).unwrap(),
        valid
    );
    let error = server.root.join("error");
    assert_eq!(
        names(&error),
        sorted(&[
            ACME_MISMATCH,
            "INV_ACME01_20261124_002.csv.error.txt",
            ACME_BAD_NAME,
            "invoice-november.csv.error.txt",
        ])
    );
    assert_eq!(std::fs::read(error.join(ACME_MISMATCH)).unwrap(), mismatch);
    let note =
        std::fs::read_to_string(error.join("INV_ACME01_20261124_002.csv.error.txt")).unwrap();
    assert!(
        note.starts_with("supplier-mismatch\na row names another supplier than the file name\n"),
        "{note}"
    );
    assert!(note.contains("line: 3\n"), "{note}");
    let note = std::fs::read_to_string(error.join("invoice-november.csv.error.txt")).unwrap();
    assert!(note.starts_with("bad-name\n"), "{note}");

    // The partner sends the same invoice again (a new file with the same
    // bytes): the repository already holds it, and this transfer still has
    // its own 'filed' event on the same document.
    let resent = server.seed(&format!("inbox/{ACME_VALID}"), &valid).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&resent)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let third = runtime.once().await;
    assert_clean(&third);
    assert_eq!(third.count(Outcome::Filed), 1, "{:#?}", third.files);
    let filed_events: Vec<_> = partner_events(repo, "acme")
        .await
        .into_iter()
        .filter(|e| e.action == "filed")
        .collect();
    assert_eq!(filed_events.len(), 2, "{filed_events:#?}");
    assert!(
        filed_events.iter().all(|e| e.node == Some(doc.id)),
        "{filed_events:#?}"
    );
    assert_ne!(filed_events[0].detail, filed_events[1].detail);
}

#[tokio::test(flavor = "multi_thread")]
async fn sftp_partner_files_into_the_supplier_workspace() {
    const VALID: [(&str, &str); 2] = [
        ("QC_100234_COA_LOT-2026-11.xml", "COA"),
        ("QC_100234_COC_PO-88121.pdf", "COC"),
    ];
    const INVALID: [(&str, &str, &str); 2] = [
        (
            "QC_100234_COA_LOT-2026-12.xml",
            "malformed-xml",
            "the XML document is not well-formed",
        ),
        (
            "QC_100234_COC_PO-88122.pdf",
            "truncated-pdf",
            "the PDF has no end-of-file marker: it is incomplete",
        ),
    ];
    let server = Sshd::start().expect("sshd starts");
    let all = VALID
        .iter()
        .map(|(n, _)| *n)
        .chain(INVALID.iter().map(|(n, _, _)| *n));
    for name in all {
        server
            .seed(&format!("inbox/{name}"), &sample("northwind", name))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "",
        "northwind-quality",
        &format!(
            "id = \"northwind\"\n\
             endpoint = \"sftp://{}@127.0.0.1:{}{}\"\nkey_file = {:?}\nhost_key = \"{}\"\n\
             complete = {{ stable_polls = 1, min_age_secs = 0 }}\n\n\
             [partner.settings]\nreviewer = \"qa.lead\"\n",
            server.user.name,
            server.port,
            server.root.display(),
            server.client_key.display().to_string(),
            server.host_key,
        ),
    );
    let runtime = open(load(&path)).await;
    // The business system owns the supplier workspace; create it as it would.
    let any = runtime.repository();
    let suppliers = any
        .ensure_folder(NodeId::ENTERPRISE, &["Suppliers".to_string()])
        .await
        .unwrap();
    let workspace = any
        .create_workspace(
            suppliers,
            &WorkspaceSpec {
                workspace_type: "Supplier".into(),
                business_id: "100234".into(),
                name: "Northwind Traders (100234)".into(),
            },
        )
        .await
        .unwrap();

    let summary = runtime.once().await;
    assert_clean(&summary);
    assert_eq!(summary.count(Outcome::Filed), 2, "{:#?}", summary.files);
    assert_eq!(
        summary.count(Outcome::Quarantined),
        2,
        "{:#?}",
        summary.files
    );
    let repo = embedded(&runtime);
    let claims = claims(runtime.ledger(), "northwind");
    let workflows = repo.workflows().await.unwrap();
    for (name, kind) in VALID {
        let bytes = sample("northwind", name);
        let quality = child(repo, workspace, "Quality").await;
        let folder = child(repo, quality.id, kind).await;
        let doc = child(repo, folder.id, name).await;
        assert_eq!(
            repo.path_of(doc.id).await.unwrap(),
            format!("/Suppliers/Northwind Traders (100234)/Quality/{kind}/{name}")
        );
        assert_eq!(content(repo, doc.id).await, bytes);
        let cats = repo.categories(doc.id).await.unwrap();
        assert_eq!(
            attr(&cats, "Quality Certificate", "Certificate Type"),
            &text(kind)
        );
        assert_eq!(
            attr(&cats, "Quality Certificate", "Supplier Number"),
            &text("100234")
        );
        assert_eq!(
            attr(&cats, "wharf Transfer", "SHA-256"),
            &text(&sha256(&bytes))
        );
        assert_eq!(attr(&cats, "wharf Transfer", "Partner"), &text("northwind"));
        assert_eq!(
            repo.rm_class(doc.id).await.unwrap().as_deref(),
            Some("QA-10Y")
        );
        let started: Vec<_> = workflows
            .iter()
            .filter(|w| w.documents.contains(&doc.id))
            .collect();
        assert_eq!(started.len(), 1, "{name}: {started:#?}");
        let wf = started[0];
        assert_eq!(wf.workflow, "quality-review");
        assert_eq!(wf.assignee.as_deref(), Some("qa.lead"));
        assert_eq!(wf.documents, [doc.id]);
        assert!(
            wf.comment.starts_with(&format!("Review {kind} {name}")),
            "{wf:#?}"
        );
        let claim = claims
            .iter()
            .find(|c| c.key.path == format!("inbox/{name}"))
            .unwrap_or_else(|| panic!("no claim of {name}: {claims:#?}"));
        assert_eq!(claim.outcome.as_deref(), Some("filed"));
        assert_eq!(claim.node_id, Some(doc.id.0 as u64));
        assert_eq!(claim.workflow_id, Some(wf.id.0));
    }
    for (name, code, message) in INVALID {
        let bytes = sample("northwind", name);
        assert_quarantined(repo, "northwind", name, &bytes, code, message).await;
        let in_workspace = repo
            .search(&SearchQuery {
                location: Some(workspace),
                name: Some(name.to_string()),
                ..SearchQuery::default()
            })
            .await
            .unwrap();
        assert!(in_workspace.is_empty(), "{in_workspace:#?}");
    }
    assert_eq!(
        workflows.iter().filter(|w| w.workflow == "review").count(),
        2
    );
    assert_eq!(
        workflows
            .iter()
            .filter(|w| w.workflow == "quality-review")
            .count(),
        2
    );
    assert_eq!(names(&server.root.join("inbox")), Vec::<String>::new());
    assert_eq!(
        names(&server.root.join("archive")),
        sorted(&VALID.map(|(n, _)| n))
    );
    let error_note = |n: &str| format!("{n}.error.txt");
    let mut expected: Vec<String> = Vec::new();
    for (name, _, _) in INVALID {
        expected.push(name.to_string());
        expected.push(error_note(name));
    }
    expected.sort();
    assert_eq!(names(&server.root.join("error")), expected);
}

/// The trivial plugin accepts anything into `Inbox`.
fn trivial_partner(id: &str, server: &Vsftpd, pw: &Path, complete: &str) -> String {
    format!(
        "id = \"{id}\"\nendpoint = \"{}\"\npassword_file = {:?}\n\
         poll_interval_secs = 1\ncomplete = {complete}\n",
        ftp_url(server),
        pw.display().to_string()
    )
}

/// vsftpd, and in a new folder the configuration of one partner `id` on
/// it, using the trivial plugin, with its state folder `state` inside; its
/// files count as complete per `complete`.
fn trivial_setup(id: &str, complete: &str) -> (Vsftpd, tempfile::TempDir, PathBuf) {
    let server = Vsftpd::start(VsftpdOptions::default()).expect("vsftpd starts");
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), &server);
    let path = write_config(
        dir.path(),
        "",
        "trivial",
        &trivial_partner(id, &server, &pw, complete),
    );
    (server, dir, path)
}

/// [`trivial_setup`] with its runtime open.
async fn trivial_runtime(id: &str, complete: &str) -> (Vsftpd, tempfile::TempDir, Arc<Runtime>) {
    let (server, dir, path) = trivial_setup(id, complete);
    let runtime = open(load(&path)).await;
    (server, dir, runtime)
}

/// A 'filed' event left waiting in the ledger by a partner that no longer
/// runs (here: gone from the configuration) is sent when the runtime opens.
#[tokio::test(flavor = "multi_thread")]
async fn events_of_a_partner_that_no_longer_runs_are_sent() {
    let (_server, dir, path) = trivial_setup("acme", "{ stable_polls = 1, min_age_secs = 0 }");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let event = wharf_ecm::AuditEvent {
        action: "filed".into(),
        actor: "partner:gone".into(),
        node: None,
        sha256: Some("ab".into()),
        detail: "inbox/a.csv (3 bytes, claim 1)".into(),
    };
    {
        let ledger = Ledger::open(&state.join("ledger.db")).unwrap();
        let key = FileKey {
            partner: "gone".into(),
            path: "inbox/a.csv".into(),
            size: 3,
            mtime: 1,
        };
        let ClaimOutcome::New(c) = ledger.claim(&key).unwrap() else {
            panic!("not a new claim")
        };
        ledger.transferred_and_filed(c.id, "ab", 7, "p").unwrap();
        ledger.done_recorded(c.id, State::Filed, &event).unwrap();
    }
    let runtime = open(load(&path)).await;
    assert_eq!(partner_events(embedded(&runtime), "gone").await, [event]);
    assert!(runtime.ledger().outbox("gone", 10).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_still_being_written_is_not_taken_until_complete() {
    let (server, _dir, runtime) =
        trivial_runtime("growing", "{ stable_polls = 2, min_age_secs = 0 }").await;
    let name = "growing.dat";
    let first = b"line 000\n".to_vec();
    let on_server = server.seed(&format!("inbox/{name}"), &first).unwrap();
    // The partner's side: append a line every 300 ms for about 3 s.
    let writer = std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&on_server)
            .unwrap();
        let mut all = first;
        for i in 1..=10 {
            std::thread::sleep(Duration::from_millis(300));
            let line = format!("line {i:03} {}\n", "x".repeat(997));
            file.write_all(line.as_bytes()).unwrap();
            file.flush().unwrap();
            all.extend_from_slice(line.as_bytes());
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut reports: Vec<FileReport> = Vec::new();
    while !reports.iter().any(|r| r.outcome == Outcome::Filed) {
        assert!(Instant::now() < deadline, "never filed: {reports:#?}");
        let summary = runtime.once().await;
        assert_clean(&summary);
        reports.extend(summary.files);
    }
    let full = writer.join().unwrap();
    let filed: Vec<&FileReport> = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Filed)
        .collect();
    assert_eq!(filed.len(), 1, "{reports:#?}");
    assert_eq!(filed[0].size, full.len() as u64, "{reports:#?}");

    let repo = embedded(&runtime);
    let inbox = repo.resolve_path("/Partners/growing/Inbox").await.unwrap();
    let docs = repo.children(inbox).await.unwrap();
    assert_eq!(docs.len(), 1, "{docs:#?}");
    assert_eq!(docs[0].name, name);
    assert_eq!(docs[0].versions, Some(1), "a partial version was filed");
    assert_eq!(content(repo, docs[0].id).await, full);
    let cats = repo.categories(docs[0].id).await.unwrap();
    assert_eq!(
        attr(&cats, "wharf Transfer", "SHA-256"),
        &text(&sha256(&full))
    );
    assert_eq!(
        attr(&cats, "wharf Transfer", "Size"),
        &AttributeValue::Integer(full.len() as i64)
    );

    // No claim of a partial size was filed; none is left open.
    let ledger = runtime.ledger();
    assert!(ledger.unfinished(Some("growing")).unwrap().is_empty());
    let claims = claims(ledger, "growing");
    let filed_claims: Vec<&Claim> = claims
        .iter()
        .filter(|c| c.outcome.as_deref() == Some("filed"))
        .collect();
    assert_eq!(filed_claims.len(), 1, "{claims:#?}");
    assert_eq!(filed_claims[0].key.size, full.len() as u64);
    assert_eq!(
        filed_claims[0].sha256.as_deref(),
        Some(sha256(&full).as_str())
    );
    for c in &claims {
        assert!(
            c.outcome.as_deref() != Some("filed") || c.key.size == full.len() as u64,
            "a partial claim was filed: {c:#?}"
        );
    }

    assert_eq!(names(&server.root.join("inbox")), Vec::<String>::new());
    assert_eq!(
        std::fs::read(server.root.join("archive").join(name)).unwrap(),
        full
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_names_held_by_a_file_or_a_folder_get_the_claim_id() {
    let (server, _dir, runtime) =
        trivial_runtime("archiver", "{ stable_polls = 1, min_age_secs = 0 }").await;
    // The archive already holds a file named a.txt and a folder named b.txt.
    std::fs::create_dir_all(server.root.join("archive/b.txt")).unwrap();
    server.seed("archive/a.txt", b"an earlier a").unwrap();
    server.seed("inbox/a.txt", b"a new a").unwrap();
    server.seed("inbox/b.txt", b"a new b").unwrap();

    let summary = runtime.once().await;
    assert_clean(&summary);
    let filed = summary
        .files
        .iter()
        .filter(|r| r.outcome == Outcome::Filed)
        .count();
    assert_eq!(filed, 2, "{:#?}", summary.files);
    assert_eq!(names(&server.root.join("inbox")), Vec::<String>::new());

    let archive = server.root.join("archive");
    assert_eq!(
        std::fs::read(archive.join("a.txt")).unwrap(),
        b"an earlier a",
        "the earlier file is kept"
    );
    assert!(archive.join("b.txt").is_dir(), "the folder is kept");
    let moved: Vec<(String, Vec<u8>)> = names(&archive)
        .into_iter()
        .filter(|n| n != "a.txt" && n != "b.txt")
        .map(|n| {
            let bytes = std::fs::read(archive.join(&n)).unwrap();
            (n, bytes)
        })
        .collect();
    assert_eq!(moved.len(), 2, "{moved:?}");
    for (prefix, content) in [("a", &b"a new a"[..]), ("b", &b"a new b"[..])] {
        assert!(
            moved
                .iter()
                .any(|(n, bytes)| n.starts_with(prefix) && n.ends_with(".txt") && bytes == content),
            "{prefix}: {moved:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_marker_partner_waits_for_the_marker() {
    let server = Vsftpd::start(VsftpdOptions::default()).expect("vsftpd starts");
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), &server);
    // `min_age_secs` plays no part in a marker rule's completeness, but
    // `once()` waits for it (30 s by default) before giving up on a file
    // without its marker: set to 0 to keep the test short.
    let path = write_config(
        dir.path(),
        "",
        "acme-invoices",
        &format!(
            "id = \"acme\"\nendpoint = \"{}\"\n\
             password_file = {:?}\ncomplete = {{ marker_suffix = \".done\", min_age_secs = 0 }}\n",
            ftp_url(&server),
            pw.display().to_string()
        ),
    );
    let runtime = open(load(&path)).await;
    let valid = sample("acme", ACME_VALID);
    server.seed(&format!("inbox/{ACME_VALID}"), &valid).unwrap();

    // Without its marker the file is left alone.
    let started = Instant::now();
    let first = runtime.once().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_clean(&first);
    assert!(first.files.is_empty(), "{:#?}", first.files);
    assert_eq!(first.waiting, [("acme".to_string(), 1)]);
    assert!(claims(runtime.ledger(), "acme").is_empty());
    assert_eq!(names(&server.root.join("inbox")), [ACME_VALID]);

    // With it, the file is filed and the marker removed.
    let marker = format!("{ACME_VALID}.done");
    server.seed(&format!("inbox/{marker}"), b"").unwrap();
    let second = runtime.once().await;
    assert_clean(&second);
    assert_eq!(second.files.len(), 1, "{:#?}", second.files);
    assert_eq!(second.files[0].outcome, Outcome::Filed);
    assert_eq!(second.files[0].path, format!("inbox/{ACME_VALID}"));
    let repo = embedded(&runtime);
    let folder = repo
        .resolve_path("/Partners/acme/Invoices/ACME01/2026/11")
        .await
        .unwrap();
    let doc = child(repo, folder, ACME_VALID).await;
    assert_eq!(content(repo, doc.id).await, valid);
    let claims = claims(runtime.ledger(), "acme");
    let paths: Vec<&str> = claims.iter().map(|c| c.key.path.as_str()).collect();
    assert_eq!(paths, [format!("inbox/{ACME_VALID}")], "{claims:#?}");
    assert_eq!(claims[0].outcome.as_deref(), Some("filed"));
    let inbox = names(&server.root.join("inbox"));
    assert!(!inbox.contains(&marker), "the marker was left: {inbox:?}");
    assert_eq!(inbox, Vec::<String>::new());
    assert_eq!(names(&server.root.join("archive")), [ACME_VALID]);
}

/// Kills the child process when dropped (a failed test leaves no service
/// running).
struct KillOnDrop(Child);

impl KillOnDrop {
    /// Waits up to `bound` for the process to exit.
    fn wait(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Deterministic, incompressible-looking content of `len` bytes.
fn pattern(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_files_in_flight() {
    let server = Vsftpd::start(VsftpdOptions::default()).expect("vsftpd starts");
    let name = "bulk.bin";
    let data = pattern(96 * 1024 * 1024 + 12_345);
    let sha = sha256(&data);
    server.seed(&format!("inbox/{name}"), &data).unwrap();
    drop(data);
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), &server);
    let admin = format!("127.0.0.1:{}", free_port());
    let path = write_config(
        dir.path(),
        &format!("admin_listen = \"{admin}\"\ndrain_secs = 60\nlog_format = \"json\"\n"),
        "trivial",
        &trivial_partner(
            "bulk",
            &server,
            &pw,
            "{ stable_polls = 1, min_age_secs = 0 }",
        ),
    );
    let log = dir.path().join("wharf.log");
    let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("run")
        .arg("-c")
        .arg(&path)
        .env("WHARF_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("wharf starts");
    let mut child = KillOnDrop(child);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Ready, then a transfer under way (its spool file exists).
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://{admin}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "wharf exited: {}",
            log_text()
        );
        assert!(Instant::now() < deadline, "never ready: {}", log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spool = dir.path().join("state/spool/bulk");
    let deadline = Instant::now() + Duration::from_secs(20);
    while names(&spool).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no transfer started: {}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SAFETY: kill(2) on the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let stopping = Instant::now();
    let status = child
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no exit within 60 s of SIGTERM: {}", log_text()));
    eprintln!("exited {:?} after SIGTERM", stopping.elapsed());
    let text = log_text();
    assert!(status.success(), "{status}: {text}");

    // The file finished after the stop was requested: it was in flight.
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let stop = events
        .iter()
        .position(|e| e["fields"]["message"] == "stop requested")
        .unwrap_or_else(|| panic!("no stop logged: {text}"));
    let done = events
        .iter()
        .position(|e| {
            e["fields"]["outcome"] == "filed" && e["fields"]["path"] == format!("inbox/{name}")
        })
        .unwrap_or_else(|| panic!("not filed: {text}"));
    assert!(stop < done, "filed before the stop: {text}");

    let ledger = Ledger::open(&dir.path().join("state/ledger.db")).unwrap();
    assert!(ledger.unfinished(None).unwrap().is_empty());
    let finished = ledger.finished_between("bulk", 0, i64::MAX).unwrap();
    assert_eq!(finished.len(), 1, "{finished:#?}");
    assert_eq!(finished[0].state, State::Done);
    assert_eq!(finished[0].outcome.as_deref(), Some("filed"));
    assert_eq!(finished[0].key.size, 96 * 1024 * 1024 + 12_345);
    assert_eq!(finished[0].sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(names(&server.root.join("inbox")), Vec::<String>::new());
    assert_eq!(names(&server.root.join("archive")), [name]);
    let archived = std::fs::read(server.root.join("archive").join(name)).unwrap();
    assert_eq!(sha256(&archived), sha);
    assert!(names(&spool).is_empty(), "spool left behind");
}

/// Kills every session process of `server` (SIGKILL), leaving its listener
/// up: the connections drop as on a network failure, new ones are accepted.
fn kill_sessions(server: &Vsftpd) {
    let root = server.pid().expect("the server runs");
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // The command name may hold spaces: the fields after the last ')'
        // are fixed, the parent being the second.
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat"))
            && let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..])
            && let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut below = vec![root];
    let mut i = 0;
    while i < below.len() {
        let p = below[i];
        below.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    assert!(below.len() > 1, "no session to cut");
    for pid in &below[1..] {
        // SAFETY: kill(2) on processes forked from the server this test started.
        unsafe {
            libc::kill(*pid as i32, libc::SIGKILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ftp_transfer_cut_off_midway_is_retried_not_dropped() {
    let (server, dir, runtime) =
        trivial_runtime("cut", "{ stable_polls = 1, min_age_secs = 0 }").await;
    let name = "cut.bin";
    let data = pattern(48 * 1024 * 1024);
    server.seed(&format!("inbox/{name}"), &data).unwrap();

    // The connections drop once the transfer is under way.
    let first = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.once().await })
    };
    let spool = dir.path().join("state/spool/cut");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = names(&spool).first().is_some_and(|f| {
            std::fs::metadata(spool.join(f))
                .map(|m| m.len())
                .unwrap_or(0)
                > 1024 * 1024
        });
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "no transfer started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    kill_sessions(&server);
    let mut reports = first.await.unwrap().files;
    let cut = reports.clone();

    // The unchanged file is taken again until it is filed, whole.
    for _ in 0..3 {
        if reports.iter().any(|r| r.outcome == Outcome::Filed) {
            break;
        }
        reports.extend(runtime.once().await.files);
    }
    assert!(
        reports.iter().all(|r| r.outcome != Outcome::Gone),
        "an unchanged file was given up as gone: {reports:#?}"
    );
    assert!(
        cut.iter().any(|r| r.outcome == Outcome::Retrying),
        "the cut did not hit the transfer: {cut:#?}"
    );
    let filed: Vec<&FileReport> = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Filed)
        .collect();
    assert_eq!(filed.len(), 1, "{reports:#?}");
    let repo = embedded(&runtime);
    let inbox = repo.resolve_path("/Partners/cut/Inbox").await.unwrap();
    let doc = child(repo, inbox, name).await;
    assert_eq!(sha256(&content(repo, doc.id).await), sha256(&data));
}
