//! Outbound release: approved repository documents delivered to a partner.
//!
//! A partner's `[partner.outbound]` rule names a repository folder and an
//! approval condition (category, attribute, value). Only the latest version
//! of a document meeting the condition leaves, and the condition is checked
//! again just before the upload: whatever a plugin says, an unapproved
//! document is never sent. The plugin's `on-export` names the delivery
//! (remote folder, file name, optional marker) or refuses it; a refusal
//! becomes a review task on the document.
//!
//! Each (partner, document, version) is delivered once through the ledger:
//! the remote name is recorded before the upload, the upload is atomic
//! (temporary name, size check, rename), and a resumed delivery whose final
//! file is already on the server with the right size is not sent again. A
//! receipt (document, version, remote path, size, SHA-256, times, endpoint)
//! is filed into the partner's `Deliveries` folder with an audit event.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wharf_ecm::{self as ecm, NodeId, Repository};
use wharf_endpoint::RemotePath;

use super::inbound::{DELIVERIES_FOLDER, Inbound, REVIEW_WORKFLOW, now_secs};
use super::spool::{IN_MEMORY_MAX, Spooled, stream_reader, verified_download};
use super::tree::{MAX_PARENT_STEPS, find_folder, is_within};
use crate::config::OutboundConfig;
use crate::ledger::{Delivery, DeliveryClaim, DeliveryKey, DeliveryState, Ledger, LedgerError};
use crate::plugin::decision::relative_path;
use crate::plugin::{DocumentInfo, ReadContent};

/// The category on every delivery receipt.
pub const RECEIPT_CATEGORY: &str = "wharf Delivery";

/// Receipts of one (partner, document, version) read when looking for a
/// resumed delivery's own.
const MAX_RECEIPTS_CHECKED: u32 = 20;

/// Larger documents are not read as receipts.
const MAX_RECEIPT_BYTES: u64 = 64 << 10;

/// What a stored receipt must state as a resumed delivery's does to be its
/// own: this delivery (its id and start, as this ledger recorded them), the
/// same remote path, size and checksum.
const RECEIPT_IDENTITY: [&str; 5] = ["delivery", "started", "remote_path", "size", "sha256"];

/// What happened to one document in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportOutcome {
    /// Uploaded, with its receipt filed.
    Delivered,
    /// Refused by the plugin; a review task is open.
    Refused,
    /// Delivered before: nothing was done.
    Skipped,
    /// It does not meet the approval condition: never sent.
    NotApproved,
    /// A step failed; retried at the next pass.
    Retrying,
}

impl ExportOutcome {
    /// The outcome's name in logs and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportOutcome::Delivered => "delivered",
            ExportOutcome::Refused => "refused",
            ExportOutcome::Skipped => "skipped",
            ExportOutcome::NotApproved => "not-approved",
            ExportOutcome::Retrying => "retrying",
        }
    }
}

/// The record of one document's pass.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// Partner id.
    pub partner: String,
    /// Repository node.
    pub node: u64,
    /// Version delivered (the latest).
    pub version: u32,
    /// Document name.
    pub name: String,
    /// What happened.
    pub outcome: ExportOutcome,
    /// Remote path, once named.
    pub remote_path: Option<String>,
    /// Why, for refusals and failures.
    pub detail: String,
    /// Bytes uploaded in this pass.
    pub bytes_sent: u64,
    /// Time spent.
    #[serde(skip)]
    pub elapsed: Duration,
    /// Of that, time spent uploading the document: its transfer to a
    /// temporary name, the size check and the rename (zero when nothing
    /// was uploaded in this pass).
    #[serde(skip)]
    pub uploading: Duration,
}

/// What the plugin reads of a version when it names the delivery.
enum ExportContent {
    /// The whole version, held in memory or the spool.
    Held(Spooled),
    /// A download from the repository.
    Stream(ecm::ByteStream),
}

/// One partner's outbound release. It shares the partner's plugin,
/// endpoint, repository and ledger with its inbound pipeline.
pub struct Outbound<R> {
    inbound: Arc<Inbound<R>>,
    rule: OutboundConfig,
    spool: PathBuf,
    /// Remote folders made (or found) by an upload that then succeeded;
    /// one whose upload fails is forgotten and made again next time.
    remote_folders: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The receipt folder of each month; one a store fails in is looked up
    /// (or made) again next time.
    receipt_folders: std::sync::Mutex<std::collections::HashMap<String, NodeId>>,
}

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl<R: Repository + 'static> Outbound<R> {
    /// The outbound release of the partner of `inbound` under `rule`.
    pub fn new(inbound: Arc<Inbound<R>>, rule: OutboundConfig) -> Self {
        // `<id>.out`: partner ids cannot hold a '.', so this is never
        // another partner's inbound spool (`<id>-out` would be partner
        // `<id>-out`'s, and each side's cleaning would remove the other's).
        let mut spool = inbound.spool_dir().as_os_str().to_owned();
        spool.push(".out");
        Outbound {
            inbound,
            rule,
            spool: PathBuf::from(spool),
            remote_folders: Default::default(),
            receipt_folders: Default::default(),
        }
    }

    /// The rule.
    pub fn rule(&self) -> &OutboundConfig {
        &self.rule
    }

    fn partner(&self) -> &str {
        &self.inbound.partner().id
    }

    fn repo(&self) -> &R {
        self.inbound.repository()
    }

    /// The scope folder, looked up (never created).
    async fn scope(&self) -> Result<Option<NodeId>, String> {
        let segments = relative_path(&self.rule.scope).map_err(fail)?;
        find_folder(
            self.repo(),
            self.inbound.repository_root(),
            segments.segments(),
        )
        .await
        .map_err(fail)
    }

    /// The documents in scope that meet the approval condition now.
    pub async fn select(&self) -> Result<Vec<ecm::Node>, String> {
        let Some(scope) = self.scope().await? else {
            return Ok(Vec::new());
        };
        let found = self
            .repo()
            .search(&ecm::SearchQuery {
                location: Some(scope),
                name: None,
                attributes: vec![ecm::AttributeFilter {
                    category: self.rule.category.clone(),
                    attribute: self.rule.attribute.clone(),
                    value: self.rule.value.clone(),
                }],
                limit: Some(10_000),
            })
            .await
            .map_err(fail)?;
        Ok(found
            .into_iter()
            .filter(|n| !n.kind.is_container())
            .collect())
    }

    /// Whether `node` meets the approval condition, read afresh.
    async fn approved(&self, node: NodeId) -> Result<bool, String> {
        let categories = self.repo().categories(node).await.map_err(fail)?;
        Ok(self.meets_condition(&categories))
    }

    /// Whether a document with `categories` meets the approval condition.
    fn meets_condition(&self, categories: &[ecm::Category]) -> bool {
        categories.iter().any(|c| {
            c.name == self.rule.category
                && c.attributes
                    .iter()
                    .any(|a| a.name == self.rule.attribute && a.value.as_text() == self.rule.value)
        })
    }

    /// Whether `node` lies inside the scope folder.
    async fn in_scope(&self, node: NodeId) -> Result<bool, String> {
        let Some(scope) = self.scope().await? else {
            return Ok(false);
        };
        // Below the scope folder, not the folder itself.
        Ok(node != scope && is_within(self.repo(), node, scope).await.map_err(fail)?)
    }

    /// One pass: deliver every approved document not delivered yet, then
    /// raise overdue acknowledgements.
    pub async fn cycle(&self) -> Result<Vec<ExportReport>, String> {
        let nodes = self.select().await?;
        // As many deliveries at once as the partner takes files at once;
        // the endpoint's pool bounds the connections.
        let parallel = (self.inbound.partner().concurrency as usize).max(1);
        let reports = futures::stream::iter(nodes)
            .map(|node| self.deliver(node.id))
            .buffer_unordered(parallel)
            .collect()
            .await;
        self.raise_overdue().await;
        Ok(reports)
    }

    /// Deliver the latest version of `node` (on demand: the document must be
    /// in scope and approved like any other).
    pub async fn export(&self, node: NodeId) -> ExportReport {
        match self.in_scope(node).await {
            Ok(true) => self.deliver(node).await,
            Ok(false) => self.report(
                node,
                ExportOutcome::NotApproved,
                format!("node {} is not inside {}", node.0, self.rule.scope),
            ),
            Err(e) => self.report(node, ExportOutcome::Retrying, e),
        }
    }

    /// A report on `node` before anything was read of it.
    fn report(&self, node: NodeId, outcome: ExportOutcome, detail: String) -> ExportReport {
        ExportReport {
            partner: self.partner().to_string(),
            node: node.0 as u64,
            version: 0,
            name: String::new(),
            outcome,
            remote_path: None,
            detail,
            bytes_sent: 0,
            elapsed: Duration::ZERO,
            uploading: Duration::ZERO,
        }
    }

    async fn deliver(&self, node: NodeId) -> ExportReport {
        self.deliver_version(node, None).await
    }

    /// Deliver `node`: its latest version, or finish the delivery of
    /// version `finish` that is already uploaded or refused.
    async fn deliver_version(&self, node: NodeId, finish: Option<u32>) -> ExportReport {
        let started = Instant::now();
        let mut report = self.report(node, ExportOutcome::Retrying, String::new());
        if let Err(e) = self.run(node, finish, &mut report).await {
            report.outcome = ExportOutcome::Retrying;
            report.detail = e;
        }
        report.elapsed = started.elapsed();
        match report.outcome {
            ExportOutcome::Skipped => {}
            ExportOutcome::Retrying => tracing::warn!(
                partner = %report.partner, node = report.node, "delivery will be retried: {}", report.detail
            ),
            o => tracing::info!(
                partner = %report.partner, node = report.node, version = report.version,
                outcome = o.as_str(), remote = report.remote_path.as_deref().unwrap_or(""), "{}", report.detail
            ),
        }
        report
    }

    async fn run(
        &self,
        node: NodeId,
        finish: Option<u32>,
        report: &mut ExportReport,
    ) -> Result<(), String> {
        let doc = self.repo().node(node).await.map_err(fail)?;
        let versions = self.repo().versions(node).await.map_err(fail)?;
        let chosen = match finish {
            Some(n) => versions.iter().find(|v| v.number == n).cloned(),
            None => versions.iter().max_by_key(|v| v.number).cloned(),
        };
        let Some(latest) = chosen else {
            return Err(format!("document {} has no such version", node.0));
        };
        report.version = latest.number;
        report.name = doc.name.clone();
        // A delivery already on the partner's server (or refused) is only
        // finished: its receipt or review task, whatever happened since.
        // Read once for the condition and the plugin's view of the document.
        let categories = match finish {
            None => Some(self.repo().categories(node).await.map_err(fail)?),
            Some(_) => None,
        };
        if categories
            .as_deref()
            .is_some_and(|c| !self.meets_condition(c))
        {
            report.outcome = ExportOutcome::NotApproved;
            report.detail = format!(
                "{}/{} is not {:?}",
                self.rule.category, self.rule.attribute, self.rule.value
            );
            return Ok(());
        }
        let key = DeliveryKey {
            partner: self.partner().to_string(),
            node_id: node.0 as u64,
            version: latest.number,
        };
        let ledger = self.inbound.ledger().clone();
        let (name, size) = (doc.name.clone(), latest.size);
        let claimed = {
            let key = key.clone();
            tokio::task::spawn_blocking(move || ledger.claim_delivery(&key, &name, size))
                .await
                .map_err(fail)?
                .map_err(fail)?
        };
        let mut delivery = match claimed {
            DeliveryClaim::Finished(d) => {
                report.outcome = ExportOutcome::Skipped;
                report.remote_path = d.remote_path;
                return Ok(());
            }
            DeliveryClaim::New(d) | DeliveryClaim::Resume(d) => d,
        };
        let result = self
            .advance(&mut delivery, &doc, &latest, categories, report)
            .await;
        if let Err(e) = &result {
            let (id, e) = (delivery.id, e.clone());
            let _ = self.step(move |l| l.delivery_failed(id, &e)).await;
        }
        result
    }

    fn spool_path(&self, id: i64) -> PathBuf {
        self.spool.join(id.to_string())
    }

    /// Run a ledger step on a blocking thread (a step may wait for an
    /// fsync of the ledger's log).
    async fn step<T: Send + 'static>(
        &self,
        step: impl FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, String> {
        let ledger = self.inbound.ledger().clone();
        tokio::task::spawn_blocking(move || step(&ledger))
            .await
            .map_err(fail)?
            .map_err(fail)
    }

    /// Remove the spool file of `d`, if it may have one.
    fn drop_spool(&self, d: &Delivery) {
        // A small version claimed for the first time in this pass was held
        // in memory; one taken up again may have a file from an earlier
        // pass (or an earlier build).
        if d.attempts <= 1 && d.size <= IN_MEMORY_MAX {
            return;
        }
        let _ = std::fs::remove_file(self.spool_path(d.id));
    }

    /// The bytes of version `latest` of `node` (a small version in memory,
    /// a larger one in the spool), with their SHA-256; refused unless they
    /// are as many as the version's recorded size.
    async fn fetch(
        &self,
        node: NodeId,
        latest: &ecm::Version,
        id: i64,
    ) -> Result<(Spooled, String), String> {
        let stream = self
            .repo()
            .download(node, Some(latest.number))
            .await
            .map_err(fail)?;
        let (spooled, sha, size) = Spooled::collect(stream, &self.spool_path(id))
            .await
            .map_err(|e| e.to_string())?;
        if size != latest.size {
            return Err(format!(
                "the repository gave {size} bytes of version {}, recorded as {} bytes",
                latest.number, latest.size
            ));
        }
        Ok((spooled, sha))
    }

    async fn advance(
        &self,
        delivery: &mut Delivery,
        doc: &ecm::Node,
        latest: &ecm::Version,
        categories: Option<Vec<ecm::Category>>,
        report: &mut ExportReport,
    ) -> Result<(), String> {
        let id = delivery.id;
        // Uploaded in an earlier pass: its receipt may be stored already.
        let mut uploaded_before = delivery.state == DeliveryState::Uploaded;
        // The bytes of a small version read in this pass, for the upload.
        let mut held = None;
        let mut decided_now = false;
        if delivery.state == DeliveryState::Claimed {
            let recorded = latest.sha256.clone().filter(|s| !s.is_empty());
            // A large version whose checksum the repository records is read
            // as a stream, by the plugin now and by the upload later (which
            // checks it against that checksum): no spool copy. Others are
            // read whole first (small ones into memory).
            let (content, sha) = match recorded {
                Some(sha) if latest.size > IN_MEMORY_MAX => {
                    let stream = self
                        .repo()
                        .download(doc.id, Some(latest.number))
                        .await
                        .map_err(fail)?;
                    (ExportContent::Stream(stream), sha)
                }
                recorded => {
                    let (spool, sha) = self.fetch(doc.id, latest, id).await?;
                    if recorded.is_some_and(|r| r != sha) {
                        return Err(format!(
                            "the repository's content of version {} does not match its checksum",
                            latest.number
                        ));
                    }
                    (ExportContent::Held(spool), sha)
                }
            };
            let plugin = self.inbound.plugin();
            let categories = match categories {
                Some(c) => c,
                None => self.repo().categories(doc.id).await.map_err(fail)?,
            };
            let info = DocumentInfo {
                node_id: doc.id.0 as u64,
                name: doc.name.clone(),
                version: latest.number,
                size: latest.size,
                mime_type: latest.mime_type.clone(),
                folder: self.folder_of(doc).await,
                sha256: sha.clone(),
                categories,
            };
            let context = self.inbound.context().clone();
            let spool = match &content {
                ExportContent::Held(s) => Some(s.clone()),
                ExportContent::Stream(_) => None,
            };
            let decided = {
                let plugin = plugin.clone();
                let (size, handle) = (latest.size, tokio::runtime::Handle::current());
                tokio::task::spawn_blocking(move || match content {
                    ExportContent::Held(spool) => {
                        let content = spool.content().map_err(fail)?;
                        plugin.on_export(&context, &info, content).map_err(fail)
                    }
                    ExportContent::Stream(stream) => {
                        let reader = tokio_util::io::SyncIoBridge::new_with_handle(
                            stream_reader(stream),
                            handle,
                        );
                        let content = ReadContent::new(reader, size);
                        plugin.on_export(&context, &info, content).map_err(fail)
                    }
                })
                .await
                .map_err(fail)?
            };
            match decided {
                Ok(Ok(d)) => {
                    let remote = if d.folder.is_root() {
                        d.name.clone()
                    } else {
                        format!("{}/{}", d.folder, d.name)
                    };
                    let marker = d.marker.as_ref().map(|m| {
                        if d.folder.is_root() {
                            m.clone()
                        } else {
                            format!("{}/{m}", d.folder)
                        }
                    });
                    let (sha, digest) = (sha.clone(), plugin.digest().to_string());
                    // The name the plugin saw goes on the receipt (a
                    // document renamed since an earlier, failed attempt);
                    // a refusal below records it too.
                    let name = doc.name.clone();
                    *delivery = self
                        .step(move |l| {
                            l.delivery_decided(id, &name, &sha, &remote, marker.as_deref(), &digest)
                        })
                        .await?;
                    held = spool;
                    decided_now = true;
                }
                Ok(Err(rejection)) => {
                    let reason = serde_json::json!({
                        "code": rejection.code,
                        "message": rejection.message,
                        "details": rejection.details,
                    })
                    .to_string();
                    let (digest, name) = (plugin.digest().to_string(), doc.name.clone());
                    *delivery = self
                        .step(move |l| l.delivery_rejected(id, &name, &reason, &digest))
                        .await?;
                }
                // A failing plugin is retried (the next pass, possibly
                // with a fixed build); the failure is recorded.
                Err(e) => return Err(format!("plugin: {e}")),
            }
        }
        if delivery.state == DeliveryState::Decided {
            let remote = delivery.remote_path.clone().unwrap_or_default();
            report.remote_path = Some(remote.clone());
            // Approval can be withdrawn between the decision and the upload.
            if !self.approved(doc.id).await? {
                report.outcome = ExportOutcome::NotApproved;
                report.detail = "approval withdrawn before the upload".into();
                return Ok(());
            }
            let path = RemotePath::parse(&remote).map_err(fail)?;
            let endpoint = self.inbound.endpoint();
            // Named in this pass, nothing of ours can be on the server yet
            // (a file already under that name is replaced). Named in an
            // earlier pass, the upload may have finished before a crash.
            let already = !decided_now
                && endpoint
                    .stat(&path)
                    .await
                    .map_err(fail)?
                    .is_some_and(|e| e.size == delivery.size);
            // Found there: uploaded in an earlier pass whose record of it was
            // lost (power loss), so its receipt may be stored too.
            uploaded_before |= already;
            if !already {
                let parent = path.parent().filter(|p| !p.is_root());
                if let Some(parent) = &parent {
                    self.make_remote_folder(parent).await?;
                }
                let mut reader = match &held {
                    Some(spool) => spool.reader().await.map_err(|e| format!("spool: {e}"))?,
                    // Read afresh (a large version, or one named in an
                    // earlier pass), and checked against the checksum it
                    // was named with before the upload is renamed into place.
                    None => {
                        let download = self
                            .repo()
                            .download_hashed(doc.id, Some(latest.number))
                            .await
                            .map_err(fail)?;
                        let named = delivery.sha256.clone().unwrap_or_default();
                        Box::new(verified_download(download, &named, delivery.size))
                    }
                };
                // The receipt's folder (made once a month and process) is
                // made meanwhile: after the upload, the receipt then waits
                // for one commit, not two.
                let month = ecm::rfc3339(crate::flow::inbound::now_secs());
                let (uploaded, ()) = tokio::join!(
                    async {
                        let started = std::time::Instant::now();
                        let r = endpoint.write_atomic(&path, &mut reader, None).await;
                        report.uploading += started.elapsed();
                        r
                    },
                    async {
                        if let Err(e) = self.deliveries_folder(&month[..7]).await {
                            tracing::debug!(partner = %self.partner(), "receipt folder not made yet: {e}");
                        }
                    }
                );
                let sent = match uploaded {
                    Ok(sent) => sent,
                    Err(e) => {
                        if let Some(parent) = &parent {
                            self.remote_folders
                                .lock()
                                .unwrap()
                                .remove(&parent.to_string());
                        }
                        return Err(fail(e));
                    }
                };
                report.bytes_sent += sent;
                if sent != delivery.size {
                    return Err(format!(
                        "uploaded {sent} bytes of a {}-byte version",
                        delivery.size
                    ));
                }
            }
            if let Some(marker) = &delivery.marker {
                let marker = RemotePath::parse(marker).map_err(fail)?;
                endpoint
                    .write_atomic(&marker, &mut &b""[..], None)
                    .await
                    .map_err(fail)?;
            }
            let host = endpoint_host(&self.inbound.partner().endpoint);
            *delivery = self.step(move |l| l.delivery_uploaded(id, &host)).await?;
        }
        match delivery.state {
            DeliveryState::Uploaded => {
                // The receipt carries the delivery's audit event: both are
                // recorded at once, and a resumed delivery whose receipt
                // is already stored records neither again.
                let receipt = self.receipt(delivery, uploaded_before).await?;
                *delivery = self
                    .step(move |l| l.delivery_done(id, Some(receipt)))
                    .await?;
                self.drop_spool(delivery);
                report.outcome = ExportOutcome::Delivered;
                report.remote_path = delivery.remote_path.clone();
                report.detail = format!("receipt {receipt}");
            }
            DeliveryState::Rejected => {
                let reason: serde_json::Value =
                    serde_json::from_str(delivery.reason.as_deref().unwrap_or("{}"))
                        .unwrap_or_default();
                let summary = format!(
                    "{}: {}",
                    reason["code"].as_str().unwrap_or("refused"),
                    reason["message"].as_str().unwrap_or("")
                );
                if delivery.workflow_id.is_none() {
                    let wf = self
                        .repo()
                        .start_workflow(&ecm::WorkflowStart {
                            workflow: REVIEW_WORKFLOW.into(),
                            title: format!("Delivery to {} refused: {}", self.partner(), doc.name),
                            comment: summary.clone(),
                            assignee: None,
                            documents: vec![doc.id],
                        })
                        .await
                        .map_err(fail)?;
                    self.step(move |l| l.delivery_workflow(id, wf.0)).await?;
                }
                *delivery = self.step(move |l| l.delivery_done(id, None)).await?;
                self.drop_spool(delivery);
                self.audit("export-refused", delivery).await;
                report.outcome = ExportOutcome::Refused;
                report.detail = summary;
            }
            DeliveryState::Done => report.outcome = ExportOutcome::Skipped,
            DeliveryState::Claimed | DeliveryState::Decided => {}
        }
        Ok(())
    }

    /// Make the remote folder `folder` unless an upload into it succeeded
    /// before.
    async fn make_remote_folder(&self, folder: &RemotePath) -> Result<(), String> {
        let key = folder.to_string();
        if self.remote_folders.lock().unwrap().contains(&key) {
            return Ok(());
        }
        self.inbound
            .endpoint()
            .mkdir_all(folder)
            .await
            .map_err(fail)?;
        self.remote_folders.lock().unwrap().insert(key);
        Ok(())
    }

    /// The document's folder path below the partner's repository root (or
    /// its full path when outside it).
    async fn folder_of(&self, doc: &ecm::Node) -> String {
        let mut names = Vec::new();
        let mut parent = doc.parent;
        for _ in 0..MAX_PARENT_STEPS {
            let Some(p) = parent else { break };
            if p == self.inbound.repository_root() {
                break;
            }
            match self.repo().node(p).await {
                Ok(n) => {
                    names.push(n.name.clone());
                    parent = n.parent;
                }
                Err(_) => break,
            }
        }
        names.reverse();
        names.join("/")
    }

    async fn deliveries_folder(&self, sub: &str) -> Result<NodeId, String> {
        if let Some(id) = self.receipt_folders.lock().unwrap().get(sub) {
            return Ok(*id);
        }
        let mut segments = relative_path(&self.inbound.partner().ecm_root())
            .map_err(fail)?
            .segments()
            .to_vec();
        segments.push(DELIVERIES_FOLDER.into());
        segments.push(sub.into());
        let id = self
            .repo()
            .ensure_folder(self.inbound.repository_root(), &segments)
            .await
            .map_err(fail)?;
        self.receipt_folders
            .lock()
            .unwrap()
            .insert(sub.to_string(), id);
        Ok(id)
    }

    /// File the delivery's receipt, with the delivery's audit event;
    /// returns its node. Its name and content come from the ledger's record
    /// alone, so that the receipt of a resumed delivery is the same bytes as
    /// one stored before the process stopped, found there rather than filed
    /// twice, even if the document was renamed or the partner's endpoint
    /// changed meanwhile. A delivery `uploaded_before` this pass first
    /// looks for its receipt wherever it is stored, which also covers a
    /// partner's ECM root changed meanwhile (the folder follows the root as
    /// configured now) and an upload whose record was lost.
    async fn receipt(&self, d: &Delivery, uploaded_before: bool) -> Result<u64, String> {
        let remote = d.remote_path.clone().unwrap_or_default();
        let month = &ecm::rfc3339(d.uploaded_at.unwrap_or(d.created_at))[..7];
        let body = serde_json::json!({
            "delivery": d.id,
            "partner": d.key.partner,
            "document": d.key.node_id,
            "document_name": d.name,
            "version": d.key.version,
            "remote_path": remote,
            "marker": d.marker,
            "size": d.size,
            "sha256": d.sha256,
            "started": ecm::rfc3339(d.created_at),
            "finished": ecm::rfc3339(d.uploaded_at.unwrap_or(d.updated_at)),
            // Recorded at the upload; configured now for a delivery uploaded
            // before hosts were recorded.
            "endpoint_host": d
                .endpoint_host
                .clone()
                .unwrap_or_else(|| endpoint_host(&self.inbound.partner().endpoint)),
            "plugin_digest": d.plugin,
        });
        if uploaded_before && let Some(stored) = self.stored_receipt(d, &body).await {
            return Ok(stored);
        }
        let bytes = serde_json::to_vec_pretty(&body).map_err(fail)?;
        let folder = self.deliveries_folder(month).await?;
        let text = |n: &str, v: &str| ecm::Attribute {
            name: n.into(),
            value: ecm::AttributeValue::Text(v.into()),
        };
        let name = format!(
            "{}.receipt.json",
            remote.rsplit('/').next().unwrap_or("delivery")
        );
        let stored = self
            .repo()
            .store_document_recorded(
                &ecm::NewDocument {
                    parent: folder,
                    name: name.replace(':', "_"),
                    description: Some(format!(
                        "{} v{} delivered to {} as {remote}",
                        d.name, d.key.version, d.key.partner
                    )),
                    mime_type: "application/json".into(),
                    sha256: hex::encode(Sha256::digest(&bytes)),
                    categories: vec![ecm::Category {
                        name: RECEIPT_CATEGORY.into(),
                        attributes: vec![
                            text("Partner", &d.key.partner),
                            ecm::Attribute {
                                name: "Document".into(),
                                value: ecm::AttributeValue::Integer(d.key.node_id as i64),
                            },
                            ecm::Attribute {
                                name: "Version".into(),
                                value: ecm::AttributeValue::Integer(d.key.version as i64),
                            },
                            text("Remote Path", &remote),
                            text("SHA-256", d.sha256.as_deref().unwrap_or("")),
                            ecm::Attribute {
                                name: "Size".into(),
                                value: ecm::AttributeValue::Integer(d.size as i64),
                            },
                        ],
                    }],
                    policy: ecm::CollisionPolicy::NewDocument,
                },
                &ecm::BytesSource(bytes.into()),
                &self.event("exported", d),
            )
            .await
            .map_err(|e| {
                self.receipt_folders.lock().unwrap().remove(month);
                fail(e)
            })?;
        Ok(stored.node.0 as u64)
    }

    /// The receipt of delivery `d` already in the repository: looked for
    /// by its category's partner, document and version, and taken when it
    /// states what `receipt` (the one `d` would file now) does under
    /// [`RECEIPT_IDENTITY`]. Its finish time may differ: one recorded after
    /// a lost upload record is the later of the two. `None` when there is
    /// none, or when the search fails; the receipt is then filed into the
    /// current folder, where the same bytes stored there before are still
    /// found. (A repository whose search index lags, as Content Server's
    /// can, may not find one stored just before the process stopped.)
    async fn stored_receipt(&self, d: &Delivery, receipt: &serde_json::Value) -> Option<u64> {
        let filter = |attribute: &str, value: String| ecm::AttributeFilter {
            category: RECEIPT_CATEGORY.into(),
            attribute: attribute.into(),
            value,
        };
        let found = self
            .repo()
            .search(&ecm::SearchQuery {
                location: None,
                name: None,
                attributes: vec![
                    filter("Partner", d.key.partner.clone()),
                    filter("Document", d.key.node_id.to_string()),
                    filter("Version", d.key.version.to_string()),
                ],
                limit: Some(MAX_RECEIPTS_CHECKED),
            })
            .await;
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(partner = %d.key.partner, delivery = d.id, "stored receipts not searched: {e}");
                return None;
            }
        };
        for node in found {
            if node.size.is_some_and(|s| s > MAX_RECEIPT_BYTES) {
                continue;
            }
            let Ok(mut stream) = self.repo().download(node.id, None).await else {
                continue;
            };
            // A receipt is a few hundred bytes: no more is read.
            let mut stored = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                stored.extend_from_slice(&chunk);
                if stored.len() as u64 > MAX_RECEIPT_BYTES {
                    break;
                }
            }
            let Ok(stored) = serde_json::from_slice::<serde_json::Value>(&stored) else {
                continue;
            };
            if RECEIPT_IDENTITY
                .iter()
                .all(|k| stored.get(k) == receipt.get(k))
            {
                return Some(node.id.0 as u64);
            }
        }
        None
    }

    /// The audit event `action` about delivery `d`, on its document.
    fn event(&self, action: &str, d: &Delivery) -> ecm::AuditEvent {
        ecm::AuditEvent {
            action: action.into(),
            actor: format!("partner:{}", d.key.partner),
            node: Some(NodeId(d.key.node_id as i64)),
            sha256: d.sha256.clone(),
            detail: format!(
                "version {} as {} (delivery {})",
                d.key.version,
                d.remote_path.as_deref().unwrap_or("-"),
                d.id
            ),
        }
    }

    async fn audit(&self, action: &str, d: &Delivery) {
        let event = self.event(action, d);
        match self.repo().record_event(&event).await {
            Ok(()) => {}
            Err(e) if e.kind == ecm::ErrorKind::Unsupported => {}
            Err(e) => tracing::warn!(partner = %d.key.partner, "audit event not recorded: {e}"),
        }
    }

    /// Open one review task for each delivery whose acknowledgement is
    /// overdue.
    pub async fn raise_overdue(&self) {
        let Some(timeout) = self.rule.ack_timeout_secs else {
            return;
        };
        let ledger = self.inbound.ledger();
        let Ok(late) = ledger.awaiting_ack(self.partner(), now_secs() - timeout as i64) else {
            return;
        };
        for d in late {
            let started = self
                .repo()
                .start_workflow(&ecm::WorkflowStart {
                    workflow: REVIEW_WORKFLOW.into(),
                    title: format!(
                        "No acknowledgement from {} for {}",
                        d.key.partner,
                        d.remote_path.as_deref().unwrap_or("-")
                    ),
                    comment: format!(
                        "delivered {} (version {}), no acknowledgement within {timeout} s",
                        ecm::rfc3339(d.uploaded_at.unwrap_or(d.created_at)),
                        d.key.version
                    ),
                    assignee: None,
                    documents: vec![NodeId(d.key.node_id as i64)],
                })
                .await;
            match started {
                Ok(wf) => {
                    let _ = ledger.delivery_workflow(d.id, wf.0);
                    let _ = ledger.delivery_ack_overdue(d.id);
                    tracing::warn!(partner = %d.key.partner, delivery = d.id, "acknowledgement overdue: review task {}", wf.0);
                }
                Err(e) => {
                    tracing::warn!(partner = %d.key.partner, "overdue acknowledgement not raised: {e}")
                }
            }
        }
    }

    /// Remove spooled copies no unfinished delivery needs.
    pub fn clean_spool(&self) {
        let open: std::collections::HashSet<String> = self
            .inbound
            .ledger()
            .unfinished_deliveries(self.partner())
            .map(|v| v.iter().map(|d| d.id.to_string()).collect())
            .unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(&self.spool) {
            for e in entries.flatten() {
                if !open.contains(&e.file_name().to_string_lossy().into_owned()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Finish unfinished deliveries (after a crash or a stop).
    pub async fn resume(&self) -> Vec<ExportReport> {
        let open = self
            .inbound
            .ledger()
            .unfinished_deliveries(self.partner())
            .unwrap_or_default();
        let mut reports = Vec::new();
        for d in open {
            let node = NodeId(d.key.node_id as i64);
            let latest = match self.repo().versions(node).await {
                Ok(v) => v.iter().map(|v| v.number).max().unwrap_or(0),
                Err(_) => continue,
            };
            if latest != d.key.version
                && matches!(d.state, DeliveryState::Claimed | DeliveryState::Decided)
            {
                // A newer version replaced it before it left: only the
                // latest approved version is sent.
                let why = format!("superseded by version {latest} before the upload");
                if self
                    .inbound
                    .ledger()
                    .delivery_superseded(d.id, &why)
                    .is_ok()
                {
                    let _ = std::fs::remove_file(self.spool_path(d.id));
                }
                continue;
            }
            let finish = matches!(d.state, DeliveryState::Uploaded | DeliveryState::Rejected)
                .then_some(d.key.version);
            reports.push(self.deliver_version(node, finish).await);
        }
        reports
    }
}

/// The host named by an endpoint URL (no user, no path).
fn endpoint_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}
