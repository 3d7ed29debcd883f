//! The inbound pipeline of one partner: poll the inbox, wait until a file is
//! complete, claim it in the ledger, spool it while computing its SHA-256,
//! let the partner's plugin decide, file it into the repository (or
//! quarantine it), then archive or delete it on the partner's server.
//!
//! Every step is recorded in the [`Ledger`] before the next begins. A run
//! that stops anywhere — crash, `kill -9`, lost connection, repository
//! outage — resumes from the last recorded step: a stored document is found
//! again by name and checksum instead of being stored twice, a started
//! workflow is never started again, and no claimed file is forgotten.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use wharf_ecm::{self as ecm, ErrorKind, NodeId, Repository};
use wharf_endpoint::{Endpoint, Entry, EntryKind, RemotePath};

use super::events::EventSender;
use super::filing::{self, Provenance};
pub use super::spool::IN_MEMORY_MAX;
use super::spool::{Spooled, store_spooled};
use crate::config::{AfterFiling, PartnerConfig};
use crate::ledger::{Claim, ClaimOutcome, FileKey, Ledger, LedgerError, State};
use crate::plugin::decision::{
    AckStatus, Filing, Target, VersionPolicy, WorkflowRequest, relative_path,
};
use crate::plugin::{AckMatch, FileInfo, PartnerContext, Plugin, Rejection, Verdict};

/// Files at least this large are fetched as parallel byte ranges.
const SEGMENTED_FROM: u64 = 64 * 1024 * 1024;

/// Transfers at least this large get a progress bar on a terminal.
pub const PROGRESS_FROM: u64 = 16 * 1024 * 1024;
/// Name of the repository category describing a quarantined file.
pub const EXCEPTION_CATEGORY: &str = "wharf Exception";
/// The repository folder (below the partner's root) holding exceptions.
pub const EXCEPTIONS_FOLDER: &str = "Exceptions";
/// The repository folder (below the partner's root) holding delivery
/// receipts and acknowledgements.
pub const DELIVERIES_FOLDER: &str = "Deliveries";
/// The category on every archived acknowledgement.
pub const ACK_CATEGORY: &str = "wharf Acknowledgement";
/// The workflow opened for every quarantined file.
pub const REVIEW_WORKFLOW: &str = "review";

/// What happened to one file in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Stored in the repository (and post-processed on the server).
    Filed,
    /// Quarantined: captured in the exception folder with a review task.
    Quarantined,
    /// Left alone for good, as its plugin asked.
    Ignored,
    /// Its plugin asked to see it again later.
    Deferred,
    /// A step failed; the file is retried at the next poll.
    Retrying,
    /// Finished before: nothing was done.
    Skipped,
    /// The file disappeared or changed on the server before its bytes
    /// arrived; a changed file is taken again under its new identity.
    Gone,
}

impl Outcome {
    /// The outcome's name as used in logs, metrics and delivery logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Filed => "filed",
            Outcome::Quarantined => "quarantined",
            Outcome::Ignored => "ignored",
            Outcome::Deferred => "deferred",
            Outcome::Retrying => "retrying",
            Outcome::Skipped => "skipped",
            Outcome::Gone => "gone",
        }
    }
}

/// The record of one file's pass through the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Partner id.
    pub partner: String,
    /// Path below the partner root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// What happened.
    pub outcome: Outcome,
    /// The repository node, when filed.
    pub node: Option<u64>,
    /// Why (the rejection code and message, the failure, the deferral).
    pub detail: String,
    /// Bytes received from the partner in this pass.
    pub bytes_received: u64,
    /// Time spent in this pass.
    #[serde(skip)]
    pub elapsed: Duration,
    /// Time spent in the plugin call, when one was made.
    #[serde(skip)]
    pub plugin_time: Option<Duration>,
    /// Which step failed, for failures: `transfer`, `plugin`, `ecm`,
    /// `remote` or `ledger`.
    pub failed_step: Option<&'static str>,
    /// Whether a canary build, when one decided this file in shadow,
    /// agreed with the live verdict.
    pub canary: Option<bool>,
}

/// Why a step failed, and whether the file's attempt counter moves.
#[derive(Debug)]
struct StepError {
    step: &'static str,
    message: String,
    /// Counts toward the partner's `max_attempts`; failures of the
    /// environment (repository outage) are not the file's fault and do not.
    counts: bool,
    /// Quarantine at once with this code: retrying cannot help.
    permanent: Option<&'static str>,
}

impl StepError {
    fn transfer(e: impl std::fmt::Display) -> Self {
        StepError {
            step: "transfer",
            message: e.to_string(),
            counts: true,
            permanent: None,
        }
    }
    fn remote(e: impl std::fmt::Display) -> Self {
        StepError {
            step: "remote",
            message: e.to_string(),
            counts: false,
            permanent: None,
        }
    }
    fn ledger(e: impl std::fmt::Display) -> Self {
        StepError {
            step: "ledger",
            message: e.to_string(),
            counts: false,
            permanent: None,
        }
    }
    fn local(e: impl std::fmt::Display) -> Self {
        StepError {
            step: "spool",
            message: e.to_string(),
            counts: false,
            permanent: None,
        }
    }
    fn ecm(e: ecm::EcmError) -> Self {
        let permanent = match e.kind {
            ErrorKind::NameCollision => Some("duplicate-name"),
            ErrorKind::Invalid => Some("ecm-refused"),
            _ => None,
        };
        StepError {
            step: "ecm",
            counts: !matches!(
                e.kind,
                ErrorKind::Transient | ErrorKind::Storage | ErrorKind::Protocol
            ),
            message: format!("repository: {}", e.message),
            permanent,
        }
    }
}

/// The reason recorded with a quarantined claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// Machine code: the plugin's rejection code, or the host's
    /// (`plugin-deadline`, `transfer-failed`, `duplicate-name`…).
    pub code: String,
    /// Human message.
    pub message: String,
    /// Details (field → value).
    pub details: Vec<(String, String)>,
}

impl Exception {
    fn parse(reason: Option<&str>) -> Exception {
        reason
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_else(|| Exception {
                code: "unknown".into(),
                message: reason.unwrap_or("no reason recorded").to_string(),
                details: Vec::new(),
            })
    }

    fn summary(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

/// A file seen in the inbox, waiting to be complete.
#[derive(Debug, Clone)]
struct Sighting {
    size: u64,
    mtime: Option<SystemTime>,
    /// Successive polls that listed it unchanged.
    polls: u32,
    /// When it was first seen with this size and time.
    since: Instant,
    /// A deferral's end.
    not_before: Option<Instant>,
}

/// Settings of the pipeline that are not in the partner configuration.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Where spooled files live (one folder per partner below it).
    pub spool_dir: PathBuf,
    /// The repository node under which partner roots are created.
    pub repository_root: NodeId,
}

/// One partner's inbound pipeline. Shared behind an `Arc`; every method
/// takes `&self` and may run concurrently for different files.
pub struct Inbound<R> {
    partner: PartnerConfig,
    endpoint: Arc<dyn Endpoint>,
    plugin: ArcSwap<Plugin>,
    context: Arc<PartnerContext>,
    repo: Arc<R>,
    ledger: Arc<Ledger>,
    spool: PathBuf,
    repository_root: NodeId,
    inbox: RemotePath,
    archive: RemotePath,
    error: RemotePath,
    watch: Mutex<HashMap<String, Sighting>>,
    busy: Mutex<HashSet<String>>,
    folders: Mutex<HashMap<Vec<String>, NodeId>>,
    progress: std::sync::OnceLock<indicatif::MultiProgress>,
    role: Role,
    canary: arc_swap::ArcSwapOption<Canary>,
    pending_acks: Mutex<HashMap<String, (i64, &'static str, String)>>,
    /// Sends the audit events the partner's steps put into the ledger's
    /// outbox.
    events: Arc<EventSender>,
}

/// A candidate build deciding a share of the files in shadow.
pub struct Canary {
    /// The candidate.
    pub plugin: Plugin,
    /// Share of files (0-100) it also decides.
    pub percent: u8,
}

/// Whether claim `id` is in a `percent` sample (spread evenly over ids).
fn sampled(id: i64, percent: u8) -> bool {
    (id as u64).wrapping_mul(2_654_435_761) % 100 < u64::from(percent)
}

/// What a pipeline's folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Inbound files, decided by the plugin's `on-file`.
    Inbox,
    /// Acknowledgements of deliveries, read by the plugin's `on-ack`.
    Acks,
}

// One value per plugin call; its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Decision {
    Verdict(Verdict),
    Ack(AckMatch),
}

fn ack_status(s: AckStatus) -> &'static str {
    match s {
        AckStatus::Accepted => "accepted",
        AckStatus::Partial => "partial",
        AckStatus::Rejected => "rejected",
    }
}

fn secs(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn remote(path: &str) -> Result<RemotePath, String> {
    RemotePath::parse(path).map_err(|e| e.to_string())
}

impl<R: Repository + 'static> Inbound<R> {
    /// A pipeline for `partner`, deciding with `plugin` under `context`.
    pub fn new(
        partner: PartnerConfig,
        endpoint: Arc<dyn Endpoint>,
        plugin: Plugin,
        context: Arc<PartnerContext>,
        repo: Arc<R>,
        ledger: Arc<Ledger>,
        options: &PipelineOptions,
    ) -> Result<Self, String> {
        let spool = options.spool_dir.join(&partner.id);
        Ok(Inbound {
            inbox: remote(&partner.inbox)?,
            archive: remote(&partner.archive)?,
            error: remote(&partner.error)?,
            spool,
            repository_root: options.repository_root,
            plugin: ArcSwap::from_pointee(plugin),
            partner,
            endpoint,
            context,
            repo,
            ledger,
            watch: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            folders: Mutex::new(HashMap::new()),
            progress: std::sync::OnceLock::new(),
            role: Role::Inbox,
            canary: arc_swap::ArcSwapOption::empty(),
            pending_acks: Mutex::new(HashMap::new()),
            events: Arc::new(EventSender::new()),
        })
    }

    /// This pipeline sending its audit events with `other`'s sender (the
    /// partner's pipelines share one).
    pub fn sharing_events_with(mut self, other: &Self) -> Self {
        self.events = other.events.clone();
        self
    }

    /// The same pipeline reading the partner's acknowledgement folder
    /// `folder` instead of its inbox.
    pub fn for_acks(mut self, folder: &str) -> Result<Self, String> {
        self.inbox = remote(folder)?;
        self.partner.inbox = folder.to_string();
        self.role = Role::Acks;
        Ok(self)
    }

    /// What this pipeline's folder holds.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The partner's configuration.
    pub fn partner(&self) -> &PartnerConfig {
        &self.partner
    }

    /// The partner's endpoint.
    pub fn endpoint(&self) -> &Arc<dyn Endpoint> {
        &self.endpoint
    }

    /// The plugin call context of the partner.
    pub fn context(&self) -> &Arc<PartnerContext> {
        &self.context
    }

    /// The repository.
    pub fn repository(&self) -> &Arc<R> {
        &self.repo
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The repository node partner folders are created under.
    pub fn repository_root(&self) -> NodeId {
        self.repository_root
    }

    /// The spool folder of this partner.
    pub fn spool_dir(&self) -> &Path {
        &self.spool
    }

    /// The plugin deciding this partner's files now.
    pub fn plugin(&self) -> Arc<Plugin> {
        self.plugin.load_full()
    }

    /// Replace the plugin: files decided from now on use `plugin`; calls in
    /// progress finish with the one they started with.
    pub fn swap_plugin(&self, plugin: Plugin) {
        self.plugin.store(Arc::new(plugin));
    }

    /// Show a progress bar in `bars` for every transfer of at least
    /// [`PROGRESS_FROM`] bytes (for a terminal).
    pub fn show_progress(&self, bars: indicatif::MultiProgress) {
        let _ = self.progress.set(bars);
    }

    fn bar(&self, entry: &Entry) -> Option<indicatif::ProgressBar> {
        let bars = self.progress.get()?;
        if entry.size < PROGRESS_FROM {
            return None;
        }
        let bar = bars.add(indicatif::ProgressBar::new(entry.size));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!(
            "{} {}",
            self.partner.id,
            crate::plugin::printable(entry.path.file_name().unwrap_or_default())
        ));
        Some(bar)
    }

    /// Run `canary` in shadow on a share of the files from now on (`None`
    /// stops it). Its verdicts are recorded in the ledger, never acted on.
    pub fn set_canary(&self, canary: Option<Canary>) {
        self.canary.store(canary.map(Arc::new));
    }

    /// Let the canary decide the same bytes, and record how its verdict
    /// compares with the live one. Returns whether they agree.
    async fn shadow(
        &self,
        claim: &Claim,
        entry: &Entry,
        spool: &Spooled,
        live: &Plugin,
        verdict: &Verdict,
    ) -> Option<bool> {
        let canary = self.canary.load_full()?;
        if self.role != Role::Inbox || !sampled(claim.id, canary.percent) {
            return None;
        }
        let candidate = Arc::new(canary.plugin.clone());
        let live_json = serde_json::to_string(verdict).unwrap_or_default();
        let candidate_json = match self.decide(&candidate, entry, spool).await {
            Ok(v) => serde_json::to_string(&v).unwrap_or_default(),
            Err((code, message)) => {
                serde_json::json!({"verdict": "failed", "code": code, "message": message})
                    .to_string()
            }
        };
        let agree = live_json == candidate_json;
        if !agree {
            tracing::warn!(
                partner = %self.partner.id, path = %claim.key.path,
                "canary {} disagrees: live {live_json}, candidate {candidate_json}",
                &candidate.digest()[..12]
            );
        }
        let record = crate::ledger::CanaryRecord {
            claim: claim.id,
            partner: self.partner.id.clone(),
            path: claim.key.path.clone(),
            live: live.digest().to_string(),
            candidate: candidate.digest().to_string(),
            agree,
            live_verdict: live_json,
            candidate_verdict: candidate_json,
            at: 0,
        };
        if let Err(e) = self.ledger.record_canary(&record) {
            tracing::warn!(partner = %self.partner.id, "canary verdict not recorded: {e}");
        }
        Some(agree)
    }

    /// Get ready: create the spool folder and the remote archive and error
    /// folders, and remove spooled files no unfinished claim needs.
    pub async fn prepare(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.spool)
            .map_err(|e| format!("spool {}: {e}", self.spool.display()))?;
        let open: HashSet<String> = self
            .ledger
            .unfinished(Some(&self.partner.id))
            .map_err(|e| e.to_string())?
            .iter()
            .map(|c| c.id.to_string())
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.spool) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !open.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if self.partner.after == AfterFiling::Archive {
            self.endpoint
                .mkdir_all(&self.archive)
                .await
                .map_err(|e| format!("archive folder {}: {e}", self.partner.archive))?;
        }
        self.endpoint
            .mkdir_all(&self.error)
            .await
            .map_err(|e| format!("error folder {}: {e}", self.partner.error))?;
        Ok(())
    }

    /// Finish every unfinished claim of this partner (after a crash or a
    /// stop): each is resumed from its last recorded step.
    pub async fn resume(&self) -> Result<Vec<FileReport>, String> {
        let open = self
            .ledger
            .unfinished(Some(&self.partner.id))
            .map_err(|e| e.to_string())?;
        let mut reports = Vec::new();
        for claim in open {
            let Ok(path) = RemotePath::parse(&claim.key.path) else {
                continue;
            };
            let deferred = self
                .watch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&claim.key.path)
                .and_then(|s| s.not_before)
                .is_some_and(|t| Instant::now() < t);
            if deferred {
                continue;
            }
            let entry = Entry {
                name: path.file_name().unwrap_or_default().to_string(),
                path,
                size: claim.key.size,
                mtime: (claim.key.mtime > 0)
                    .then(|| UNIX_EPOCH + Duration::from_secs(claim.key.mtime as u64)),
                kind: EntryKind::File,
            };
            if let Some(report) = self.process(entry).await {
                reports.push(report);
            }
        }
        // Events an earlier run committed and did not send.
        if let Err(e) = self.flush_events().await {
            tracing::warn!(partner = %self.partner.id, "audit events wait in the ledger: {e}");
        }
        Ok(reports)
    }

    /// List the inbox and return the files that are complete now and not
    /// being processed. Marker files and files younger than the completeness
    /// rule allows are held back.
    pub async fn poll(&self) -> Result<Vec<Entry>, String> {
        let listing = self
            .endpoint
            .list(&self.inbox)
            .await
            .map_err(|e| e.to_string())?;
        let rule = &self.partner.complete;
        let marker = rule.marker_suffix.as_deref();
        let names: HashSet<String> = listing.iter().map(|e| e.name.clone()).collect();
        let now = Instant::now();
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashSet::new();
        let mut ready = Vec::new();
        for entry in listing {
            if entry.kind != EntryKind::File {
                continue;
            }
            if let Some(m) = marker
                && entry.name.ends_with(m)
            {
                continue;
            }
            let key = entry.path.as_string();
            seen.insert(key.clone());
            let s = watch.entry(key.clone()).or_insert(Sighting {
                size: entry.size,
                mtime: entry.mtime,
                polls: 0,
                since: now,
                not_before: None,
            });
            if s.size != entry.size || s.mtime != entry.mtime {
                *s = Sighting {
                    size: entry.size,
                    mtime: entry.mtime,
                    polls: 0,
                    since: now,
                    not_before: s.not_before,
                };
            }
            s.polls += 1;
            if busy.contains(&key) || s.not_before.is_some_and(|t| now < t) {
                continue;
            }
            let complete = match marker {
                Some(m) => names.contains(&format!("{}{m}", entry.name)),
                None => {
                    // Age by the server's clock when it gave one, by ours
                    // otherwise; a clock far ahead only delays.
                    let age = entry
                        .mtime
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .unwrap_or_else(|| now - s.since);
                    s.polls >= rule.stable_polls && age >= Duration::from_secs(rule.min_age_secs)
                }
            };
            if complete {
                ready.push(entry);
            }
        }
        watch.retain(|k, _| seen.contains(k));
        Ok(ready)
    }

    /// How many files were seen but are not complete yet.
    pub fn waiting(&self) -> usize {
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).len();
        self.watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            .saturating_sub(busy)
    }

    /// Take one listed file through the pipeline. Returns `None` when the
    /// file is already being processed by another task.
    pub async fn process(&self, entry: Entry) -> Option<FileReport> {
        if !self.reserve(&entry) {
            return None;
        }
        Some(self.process_reserved(entry).await)
    }

    /// Mark `entry` as taken, so polls and other tasks leave it alone until
    /// it is processed ([`Inbound::process_reserved`]) or released. False
    /// when it is taken already.
    pub fn reserve(&self, entry: &Entry) -> bool {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.path.as_string())
    }

    /// Give back a reservation that will not be processed.
    pub fn release(&self, entry: &Entry) {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&entry.path.as_string());
    }

    /// Take a file reserved with [`Inbound::reserve`] through the pipeline;
    /// the reservation ends with it.
    pub async fn process_reserved(&self, entry: Entry) -> FileReport {
        let key = entry.path.as_string();
        let started = Instant::now();
        let mut report = FileReport {
            partner: self.partner.id.clone(),
            path: key.clone(),
            size: entry.size,
            outcome: Outcome::Retrying,
            node: None,
            detail: String::new(),
            bytes_received: 0,
            elapsed: Duration::ZERO,
            plugin_time: None,
            failed_step: None,
            canary: None,
        };
        self.run(&entry, &mut report).await;
        report.elapsed = started.elapsed();
        if !matches!(report.outcome, Outcome::Retrying | Outcome::Deferred) {
            // Finished with: it no longer waits to become complete.
            self.watch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
        let idle = {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            busy.remove(&key);
            busy.is_empty()
        };
        self.send_events(idle).await;
        match report.outcome {
            Outcome::Retrying => tracing::warn!(
                partner = %self.partner.id, path = %report.path, step = report.failed_step.unwrap_or("?"),
                "will retry: {}", report.detail
            ),
            Outcome::Skipped => {}
            o => tracing::info!(
                partner = %self.partner.id, path = %report.path, outcome = o.as_str(),
                node = report.node, "{}", report.detail
            ),
        }
        report
    }

    async fn run(&self, entry: &Entry, report: &mut FileReport) {
        let key = FileKey {
            partner: self.partner.id.clone(),
            path: entry.path.as_string(),
            size: entry.size,
            mtime: secs(entry.mtime),
        };
        let ledger = self.ledger.clone();
        let claimed = tokio::task::spawn_blocking(move || ledger.claim(&key)).await;
        let claim = match claimed {
            Ok(Ok(ClaimOutcome::New(c) | ClaimOutcome::Resume(c))) => c,
            Ok(Ok(ClaimOutcome::Finished(c))) => {
                report.outcome = Outcome::Skipped;
                report.node = c.node_id;
                return;
            }
            Ok(Err(e)) => return fail(report, StepError::ledger(e)),
            Err(e) => return fail(report, StepError::ledger(e)),
        };
        if let Err((id, e)) = self.advance(entry, claim, report).await {
            self.failure(id, e, report).await;
        }
    }

    /// Walk a claim from its recorded state to the end.
    async fn advance(
        &self,
        entry: &Entry,
        mut claim: Claim,
        report: &mut FileReport,
    ) -> Result<(), (i64, StepError)> {
        let id = claim.id;
        let err = |e: StepError| (id, e);
        let mut spooled: Option<Spooled> = None;
        // The checksum of bytes held in memory whose transfer is not
        // recorded yet: it is recorded with the filing, or before any other
        // step (see `Ledger::transferred_and_filed`).
        let mut unrecorded: Option<String> = None;
        if claim.state == State::Claimed {
            match self.transfer(entry, &claim, report).await {
                Ok((sha, spool @ Spooled::Memory(_))) => {
                    claim.state = State::Transferred;
                    claim.sha256 = Some(sha.clone());
                    unrecorded = Some(sha);
                    spooled = Some(spool);
                }
                Ok((sha, spool)) => {
                    claim = self
                        .ledger_step(move |l| l.transferred(id, &sha))
                        .await
                        .map_err(err)?;
                    spooled = Some(spool);
                }
                Err(Fetch::Gone(why)) => {
                    self.ledger
                        .dropped(id, State::Claimed, "gone")
                        .map_err(|e| err(StepError::ledger(e)))?;
                    self.forget_spool(id);
                    report.outcome = Outcome::Gone;
                    report.detail = why;
                    return Ok(());
                }
                Err(Fetch::Failed(e)) => return Err(err(e)),
            }
        }
        if claim.state == State::Transferred {
            let spool = match spooled.clone() {
                Some(s) => s,
                None => self
                    .ensure_spooled(entry, &claim, report)
                    .await
                    .map_err(err)?,
            };
            spooled = Some(spool.clone());
            let plugin = self.plugin.load_full();
            let started = Instant::now();
            let decided = self.decide(&plugin, entry, &spool).await;
            report.plugin_time = Some(started.elapsed());
            if let Ok(verdict) = &decided {
                report.canary = self.shadow(&claim, entry, &spool, &plugin, verdict).await;
            }
            if !matches!(decided, Ok(Verdict::Accept(_))) {
                self.record_transfer(&mut claim, &mut unrecorded)
                    .await
                    .map_err(err)?;
            }
            match decided {
                Err((code, message)) if code == "plugin-unavailable" => {
                    return Err(err(StepError {
                        step: "plugin",
                        message,
                        counts: true,
                        permanent: None,
                    }));
                }
                Err(e) => {
                    let exception = Exception {
                        code: e.0,
                        message: e.1,
                        details: Vec::new(),
                    };
                    claim = self.quarantine(&claim, &exception).map_err(err)?;
                    report.failed_step = Some("plugin");
                }
                Ok(Verdict::Accept(filing)) => {
                    if filing.workflow.is_some() {
                        // The filing records its node before the workflow
                        // starts: on a claim whose transfer is on record,
                        // so a resume checks the bytes it fetches again.
                        self.record_transfer(&mut claim, &mut unrecorded)
                            .await
                            .map_err(err)?;
                    }
                    let node = self
                        .file(&claim, &filing, &plugin, &spool)
                        .await
                        .map_err(err);
                    if node.is_err() {
                        self.record_transfer(&mut claim, &mut unrecorded)
                            .await
                            .map_err(err)?;
                    }
                    match node {
                        Ok(node) => {
                            let digest = plugin.digest().to_string();
                            let sha = unrecorded.take();
                            claim = self
                                .ledger_step(move |l| match sha {
                                    Some(sha) => l.transferred_and_filed(id, &sha, node, &digest),
                                    None => l.filed(id, node, &digest),
                                })
                                .await
                                .map_err(err)?;
                            let pending = self
                                .pending_acks
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&claim.key.path);
                            if let Some((delivery, status, message)) = pending {
                                let _ = self.ledger.delivery_acknowledged(
                                    delivery,
                                    status,
                                    &message,
                                    Some(node),
                                );
                            }
                        }
                        Err((_, e)) if e.permanent.is_some() => {
                            let exception = Exception {
                                code: e.permanent.unwrap_or("ecm-refused").to_string(),
                                message: e.message,
                                details: Vec::new(),
                            };
                            claim = self.quarantine(&claim, &exception).map_err(err)?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(Verdict::Reject(r)) => {
                    let exception = Exception {
                        code: r.code,
                        message: r.message,
                        details: r.details,
                    };
                    claim = self.quarantine(&claim, &exception).map_err(err)?;
                }
                Ok(Verdict::Defer {
                    reason,
                    retry_after,
                }) => {
                    let age = now_secs() - claim.created_at;
                    if age > self.partner.max_defer_secs as i64 {
                        let exception = Exception {
                            code: "deferred-too-long".into(),
                            message: format!(
                                "deferred for {age} s, longer than max_defer_secs; last reason: {reason}"
                            ),
                            details: Vec::new(),
                        };
                        claim = self.quarantine(&claim, &exception).map_err(err)?;
                    } else {
                        if let Some(s) = self
                            .watch
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_mut(&claim.key.path)
                        {
                            s.not_before = Some(Instant::now() + retry_after);
                        }
                        report.outcome = Outcome::Deferred;
                        report.detail = reason;
                        return Ok(());
                    }
                }
                Ok(Verdict::Ignore { reason }) => {
                    self.ledger
                        .dropped(id, State::Transferred, "ignored")
                        .map_err(|e| err(StepError::ledger(e)))?;
                    self.forget_spool(id);
                    report.outcome = Outcome::Ignored;
                    report.detail = reason;
                    return Ok(());
                }
            }
        }
        match claim.state {
            State::Filed => {
                self.post_process(&claim).await.map_err(err)?;
                self.done_with_event(&claim, State::Filed, "filed", claim.node_id)
                    .await
                    .map_err(err)?;
                self.forget_spool(id);
                report.outcome = Outcome::Filed;
                report.node = claim.node_id;
                report.detail = format!("node {}", claim.node_id.unwrap_or(0));
            }
            State::Quarantined => {
                let exception = Exception::parse(claim.reason.as_deref());
                let captured = self
                    .capture(&claim, &exception, spooled.as_ref())
                    .await
                    .map_err(err)?;
                self.move_to_error(&claim, &exception).await.map_err(err)?;
                let node = captured.map(|n| n.0 as u64);
                let claim = self
                    .done_with_event(&claim, State::Quarantined, "quarantined", node)
                    .await
                    .map_err(err)?;
                self.forget_spool(id);
                report.outcome = Outcome::Quarantined;
                report.node = claim.node_id;
                report.detail = exception.summary();
            }
            State::Done => {
                report.outcome = Outcome::Skipped;
            }
            State::Claimed | State::Transferred => {}
        }
        Ok(())
    }

    /// Record a failed step; quarantine when retrying cannot help or the
    /// file has failed too often.
    async fn failure(&self, id: i64, e: StepError, report: &mut FileReport) {
        let failures = match self.ledger.failed(id, &e.message, e.counts) {
            Ok(n) if e.counts => n,
            _ => 0,
        };
        report.failed_step = Some(e.step);
        let code = match e.permanent {
            Some(code) => Some(code.to_string()),
            None if failures >= self.partner.max_attempts => Some(format!("{}-failed", e.step)),
            None => None,
        };
        let Some(code) = code else {
            fail(report, e);
            return;
        };
        let Ok(claim) = self.ledger.get(id) else {
            fail(report, e);
            return;
        };
        if !matches!(claim.state, State::Claimed | State::Transferred) {
            fail(report, e);
            return;
        }
        let exception = Exception {
            code,
            message: e.message.clone(),
            details: vec![("attempts".into(), claim.failures.to_string())],
        };
        match self.quarantine(&claim, &exception) {
            Ok(claim) => {
                // Finish the quarantine now if the repository and server
                // allow; otherwise the next pass does.
                let entry = Entry {
                    name: String::new(),
                    path: match RemotePath::parse(&claim.key.path) {
                        Ok(p) => p,
                        Err(_) => return fail(report, e),
                    },
                    size: claim.key.size,
                    mtime: None,
                    kind: EntryKind::File,
                };
                if let Err((_, e2)) = Box::pin(self.advance(&entry, claim, report)).await {
                    fail(report, e2);
                }
            }
            Err(e2) => fail(report, e2),
        }
    }

    /// The `done` step of `claim` (now `from`), with its `action` audit
    /// event (on `node`) committed into the ledger's outbox in the same
    /// transaction; the event reaches the repository with others
    /// ([`EventSender`]).
    async fn done_with_event(
        &self,
        claim: &Claim,
        from: State,
        action: &str,
        node: Option<u64>,
    ) -> Result<Claim, StepError> {
        let id = claim.id;
        let event = self.event(action, claim, node);
        self.events.adding();
        let done = self
            .ledger_step(move |l| l.done_recorded(id, from, &event))
            .await;
        if done.is_err() {
            self.events.not_added();
        }
        done
    }

    /// Record the transfer of `claim` if it is `unrecorded` yet.
    async fn record_transfer(
        &self,
        claim: &mut Claim,
        unrecorded: &mut Option<String>,
    ) -> Result<(), StepError> {
        if let Some(sha) = unrecorded.take() {
            let id = claim.id;
            *claim = self.ledger_step(move |l| l.transferred(id, &sha)).await?;
        }
        Ok(())
    }

    fn quarantine(&self, claim: &Claim, exception: &Exception) -> Result<Claim, StepError> {
        let reason = serde_json::to_string(exception).map_err(StepError::ledger)?;
        self.ledger
            .quarantined(claim.id, claim.state, &reason)
            .map_err(StepError::ledger)
    }

    /// Run one ledger step on a blocking thread: a commit waits for the
    /// ledger's lock and its fsync, which must not stall the async workers
    /// that drive the other files' transfers.
    async fn ledger_step<T: Send + 'static>(
        &self,
        step: impl FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, StepError> {
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || step(&ledger))
            .await
            .map_err(StepError::ledger)?
            .map_err(StepError::ledger)
    }

    fn spool_path(&self, id: i64) -> PathBuf {
        self.spool.join(id.to_string())
    }

    fn forget_spool(&self, id: i64) {
        let _ = std::fs::remove_file(self.spool_path(id));
    }

    /// Fetch the file into the spool, hashing it; `Gone` when the server no
    /// longer has this version of it.
    async fn transfer(
        &self,
        entry: &Entry,
        claim: &Claim,
        report: &mut FileReport,
    ) -> Result<(String, Spooled), Fetch> {
        let dest = self.spool_path(claim.id);
        // Parallel ranges pay off where one stream is bounded by its
        // channel window (SFTP); one FTP data stream is faster than ranges
        // and lets the checksum be computed on the way in.
        let ranged = self.partner.endpoint.starts_with("sftp://");
        let result = if ranged && entry.size >= SEGMENTED_FROM {
            self.fetch_segmented(entry, &dest).await
        } else {
            self.fetch_stream(entry, &dest).await
        };
        match result {
            Ok((sha, got, spool)) => {
                report.bytes_received += got;
                if got == entry.size {
                    Ok((sha, spool))
                } else {
                    Err(self
                        .changed_or(
                            entry,
                            format!("received {got} bytes of a file listed with {}", entry.size),
                        )
                        .await)
                }
            }
            Err(e) => Err(self.changed_or(entry, e).await),
        }
    }

    /// After a failed or short read: `Gone` when the file vanished or
    /// changed (its new version is another file), else the failure.
    async fn changed_or(&self, entry: &Entry, error: String) -> Fetch {
        match self.endpoint.stat(&entry.path).await {
            Ok(None) => Fetch::Gone("the file disappeared from the server".into()),
            Ok(Some(now))
                if now.size != entry.size || !same_mtime(secs(entry.mtime), now.mtime) =>
            {
                Fetch::Gone(format!(
                    "the file changed on the server while being read ({} → {} bytes)",
                    entry.size, now.size
                ))
            }
            _ => Fetch::Failed(StepError::transfer(error)),
        }
    }

    async fn fetch_stream(
        &self,
        entry: &Entry,
        dest: &Path,
    ) -> Result<(String, u64, Spooled), String> {
        let mut stream = self
            .endpoint
            .open_read(&entry.path, 0)
            .await
            .map_err(|e| e.to_string())?;
        if entry.size <= IN_MEMORY_MAX {
            // Read one byte past the listed size to notice a growing file.
            let mut bytes = Vec::with_capacity(entry.size as usize + 1);
            (&mut stream)
                .take(entry.size + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| e.to_string())?;
            let sha = hex::encode(Sha256::digest(&bytes));
            let got = bytes.len() as u64;
            return Ok((sha, got, Spooled::Memory(bytes.into())));
        }
        // Receiving here; the stager writes and hashes on threads of its
        // own, for the repository to adopt the file without reading it.
        let mut spool = ecm::Stager::create(dest);
        let bar = self.bar(entry);
        let received = async {
            // Received straight into the stager's aligned buffers: a full
            // one goes to disk without a copy, and buffers are reused.
            let mut buf = spool.buffer();
            let mut total = 0u64;
            loop {
                let n = stream.read(buf.spare()).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                buf.advance(n);
                total += n as u64;
                if buf.is_full() {
                    let full = std::mem::replace(&mut buf, spool.buffer());
                    spool
                        .write_buf(full)
                        .await
                        .map_err(|e| format!("spool: {e}"))?;
                    if let Some(bar) = &bar {
                        bar.set_position(total);
                    }
                }
                if total > entry.size {
                    // Still growing: stop rather than spool without bound.
                    break;
                }
            }
            spool
                .write_buf(buf)
                .await
                .map_err(|e| format!("spool: {e}"))?;
            Ok::<u64, String>(total)
        }
        .await;
        let total = match received {
            Ok(total) => total,
            Err(e) => {
                spool.abort().await;
                return Err(e);
            }
        };
        let staged = spool.finish().await.map_err(|e| format!("spool: {e}"))?;
        debug_assert_eq!(staged.size(), total);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok((staged.sha256().to_string(), total, Spooled::Staged(staged)))
    }

    async fn fetch_segmented(
        &self,
        entry: &Entry,
        dest: &Path,
    ) -> Result<(String, u64, Spooled), String> {
        let segments = wharf_endpoint::segmented::segments_for(
            entry.size,
            (self.partner.max_connections as usize).clamp(1, 4),
        );
        let bar = self.bar(entry);
        let advanced = |done: u64| {
            if let Some(bar) = &bar {
                bar.set_position(done);
            }
        };
        // Straight to disk: four writers into the page cache contend for
        // the file's lock and pay a copy each, and the repository syncs
        // the file when it adopts it anyway.
        let got = wharf_endpoint::segmented::download_ranges_durable(
            self.endpoint.as_ref(),
            &entry.path,
            entry.size,
            dest,
            segments,
            Some(&advanced),
        )
        .await
        .map_err(|e| e.to_string())?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let staged = ecm::Staged::hash(dest)
            .await
            .map_err(|e| format!("spool: {e}"))?;
        Ok((staged.sha256().to_string(), got, Spooled::Staged(staged)))
    }

    /// The spooled bytes of a transferred claim, fetched again when the
    /// spool lost them (a crash before the disk had them, a wiped state
    /// folder). The checksum recorded at transfer must still hold.
    async fn ensure_spooled(
        &self,
        entry: &Entry,
        claim: &Claim,
        report: &mut FileReport,
    ) -> Result<Spooled, StepError> {
        let path = self.spool_path(claim.id);
        let want = claim.sha256.clone().unwrap_or_default();
        if let Ok(staged) = ecm::Staged::hash(path).await
            && staged.sha256() == want
        {
            return Ok(Spooled::Staged(staged));
        }
        match self.transfer(entry, claim, report).await {
            Ok((sha, spool)) if sha == want => Ok(spool),
            Ok(_) => Err(StepError {
                permanent: Some("content-changed"),
                ..StepError::transfer(
                    "the file's content changed on the server after it was first received",
                )
            }),
            Err(Fetch::Gone(why)) => Err(StepError {
                permanent: Some("content-lost"),
                ..StepError::transfer(format!(
                    "the spooled copy was lost and {}",
                    why.to_lowercase()
                ))
            }),
            Err(Fetch::Failed(e)) => Err(e),
        }
    }

    /// Run the plugin on the spooled file.
    async fn decide(
        &self,
        plugin: &Arc<Plugin>,
        entry: &Entry,
        spool: &Spooled,
    ) -> Result<Verdict, (String, String)> {
        let info = FileInfo {
            partner: self.partner.id.clone(),
            path: entry.path.as_string(),
            name: entry.path.file_name().unwrap_or_default().to_string(),
            size: entry.size,
            modified: entry
                .mtime
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        };
        let (plugin, context, spool) = (plugin.clone(), self.context.clone(), spool.clone());
        let role = self.role;
        let path = info.path.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let content = spool
                .content()
                .map_err(|e| ("spool-unreadable".to_string(), e.to_string()))?;
            match role {
                Role::Inbox => plugin
                    .on_file(&context, &info, content)
                    .map(Decision::Verdict),
                Role::Acks => plugin.on_ack(&context, &info, content).map(Decision::Ack),
            }
            .map_err(|e| (e.code().to_string(), e.to_string()))
        })
        .await;
        match joined {
            Ok(Ok(Decision::Verdict(v))) => Ok(v),
            Ok(Ok(Decision::Ack(ack))) => Ok(self.ack_verdict(&path, ack)),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(("plugin-host".into(), e.to_string())),
        }
    }

    /// What to do with a file of the acknowledgement folder: an
    /// acknowledgement of a known delivery is recorded on it and archived
    /// (a refusal opens a review task); one of an unknown delivery or an
    /// unreadable one is quarantined; anything else is left alone.
    fn ack_verdict(&self, path: &str, ack: AckMatch) -> Verdict {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        match ack {
            AckMatch::NotAnAck => Verdict::Ignore {
                reason: "not an acknowledgement".into(),
            },
            AckMatch::Invalid(r) => Verdict::Reject(r),
            AckMatch::Acknowledged {
                delivered_name,
                status,
                message,
            } => {
                let found = self
                    .ledger
                    .delivery_by_remote_name(&self.partner.id, &delivered_name)
                    .ok()
                    .flatten();
                let Some(delivery) = found else {
                    return Verdict::Reject(Rejection {
                        code: "unknown-delivery".into(),
                        message: format!(
                            "acknowledges {delivered_name}, which was never delivered to this partner"
                        ),
                        details: vec![("delivered_name".into(), delivered_name)],
                    });
                };
                let status = ack_status(status);
                if let Err(e) =
                    self.ledger
                        .delivery_acknowledged(delivery.id, status, &message, None)
                {
                    tracing::warn!(partner = %self.partner.id, "acknowledgement not recorded: {e}");
                }
                self.pending_acks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(path.to_string(), (delivery.id, status, message.clone()));
                let text = |n: &str, v: &str| ecm::Attribute {
                    name: n.into(),
                    value: ecm::AttributeValue::Text(v.into()),
                };
                Verdict::Accept(Filing {
                    target: Target::Folder {
                        path: relative_path(&format!("{DELIVERIES_FOLDER}/Acks"))
                            .unwrap_or_default(),
                    },
                    name,
                    description: Some(format!("{status}: {message}")),
                    categories: vec![ecm::Category {
                        name: ACK_CATEGORY.into(),
                        attributes: vec![
                            ecm::Attribute {
                                name: "Delivery".into(),
                                value: ecm::AttributeValue::Integer(delivery.id),
                            },
                            ecm::Attribute {
                                name: "Document".into(),
                                value: ecm::AttributeValue::Integer(delivery.key.node_id as i64),
                            },
                            ecm::Attribute {
                                name: "Version".into(),
                                value: ecm::AttributeValue::Integer(delivery.key.version as i64),
                            },
                            text(
                                "Delivered As",
                                delivery.remote_path.as_deref().unwrap_or(""),
                            ),
                            text("Status", status),
                            text("Message", &message),
                        ],
                    }],
                    retention: None,
                    hold: None,
                    permissions: Vec::new(),
                    workflow: (status == "rejected").then(|| WorkflowRequest {
                        workflow: REVIEW_WORKFLOW.into(),
                        comment: format!(
                            "{} refused {}: {message}",
                            self.partner.id,
                            delivery.remote_path.as_deref().unwrap_or("a delivery")
                        ),
                        assignee: None,
                    }),
                    version_policy: VersionPolicy::NewDocument,
                })
            }
        }
    }

    async fn folder(&self, base: NodeId, path: Vec<String>) -> Result<NodeId, StepError> {
        let mut cache_key = vec![base.0.to_string()];
        cache_key.extend(path.iter().cloned());
        if let Some(id) = self
            .folders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
        {
            return Ok(*id);
        }
        let id = self
            .repo
            .ensure_folder(base, &path)
            .await
            .map_err(StepError::ecm)?;
        self.folders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, id);
        Ok(id)
    }

    fn ecm_root(&self) -> Vec<String> {
        relative_path(&self.partner.ecm_root())
            .map(|p| p.segments().to_vec())
            .unwrap_or_else(|_| vec!["Partners".into(), self.partner.id.clone()])
    }

    fn provenance(&self, claim: &Claim, plugin: &Plugin) -> Provenance {
        Provenance {
            partner: self.partner.id.clone(),
            source_path: claim.key.path.clone(),
            received: UNIX_EPOCH + Duration::from_secs(claim.created_at.max(0) as u64),
            sha256: claim.sha256.clone().unwrap_or_default(),
            size: claim.key.size,
            plugin: plugin.info().name.clone(),
            plugin_version: plugin.info().version.clone(),
            plugin_digest: plugin.digest().to_string(),
        }
    }

    /// Store an accepted file with everything its filing asks for; returns
    /// the document's node id.
    async fn file(
        &self,
        claim: &Claim,
        filing: &Filing,
        plugin: &Plugin,
        spool: &Spooled,
    ) -> Result<u64, StepError> {
        let parent = match &filing.target {
            Target::Folder { path } => {
                let mut segments = self.ecm_root();
                segments.extend(path.segments().iter().cloned());
                self.folder(self.repository_root, segments).await?
            }
            Target::Workspace {
                workspace_type,
                business_id,
                folder,
            } => {
                let ws = self
                    .repo
                    .find_workspace(workspace_type, business_id)
                    .await
                    .map_err(StepError::ecm)?
                    .ok_or_else(|| StepError {
                        step: "ecm",
                        message: format!(
                            "no {workspace_type} workspace exists for business id {business_id}"
                        ),
                        counts: true,
                        permanent: None,
                    })?;
                if folder.is_root() {
                    ws.id
                } else {
                    self.folder(ws.id, folder.segments().to_vec()).await?
                }
            }
        };
        let doc = filing::new_document(parent, filing, &self.provenance(claim, plugin));
        let stored = store_spooled(self.repo.as_ref(), &doc, spool)
            .await
            .map_err(StepError::ecm)?;
        let node = stored.node;
        let id = claim.id;
        if filing.workflow.is_some() {
            // The node must be on record before the workflow starts, so a
            // resumed filing never starts it twice.
            self.ledger_step(move |l| l.stored(id, node.0 as u64))
                .await?;
        }
        if !filing.permissions.is_empty() {
            self.repo
                .set_permissions(node, &filing.permissions)
                .await
                .map_err(StepError::ecm)?;
        }
        if let Some(class) = &filing.retention {
            self.repo
                .classify(node, class)
                .await
                .map_err(StepError::ecm)?;
        }
        if let Some(hold) = &filing.hold {
            self.repo
                .apply_hold(node, hold)
                .await
                .map_err(StepError::ecm)?;
        }
        if let Some(request) = &filing.workflow
            && self
                .ledger
                .get(claim.id)
                .map_err(StepError::ledger)?
                .workflow_id
                .is_none()
        {
            let wf = self
                .repo
                .start_workflow(&filing::workflow(request, node, &stored.name))
                .await
                .map_err(StepError::ecm)?;
            self.ledger
                .workflow_started(claim.id, wf.0)
                .map_err(StepError::ledger)?;
        }
        Ok(node.0 as u64)
    }

    /// Capture a quarantined file in the exception folder: the file itself
    /// (when its bytes arrived), an error record, and one review task.
    async fn capture(
        &self,
        claim: &Claim,
        exception: &Exception,
        spooled: Option<&Spooled>,
    ) -> Result<Option<NodeId>, StepError> {
        let mut segments = self.ecm_root();
        segments.push(EXCEPTIONS_FOLDER.into());
        let folder = self.folder(self.repository_root, segments).await?;
        let name = claim
            .key
            .path
            .rsplit('/')
            .next()
            .unwrap_or("file")
            .to_string();
        let plugin = self.plugin.load_full();
        let provenance = self.provenance(claim, &plugin);
        let fresh = self.ledger.get(claim.id).map_err(StepError::ledger)?;
        let exception_category = ecm::Category {
            name: EXCEPTION_CATEGORY.into(),
            attributes: vec![
                text_attr("Code", &exception.code),
                text_attr("Message", &exception.message),
                ecm::Attribute {
                    name: "Attempts".into(),
                    value: ecm::AttributeValue::Integer(fresh.attempts as i64),
                },
                ecm::Attribute {
                    name: "Claim".into(),
                    value: ecm::AttributeValue::Integer(claim.id),
                },
            ],
        };
        // The bytes of this pass, or (after a restart) the spooled file if
        // it is intact.
        let spool = match spooled {
            Some(s) => Some(s.clone()),
            None => ecm::Staged::hash(self.spool_path(claim.id))
                .await
                .ok()
                .map(Spooled::Staged),
        };
        let spool = match (spool, &claim.sha256) {
            (Some(s), Some(sha)) if s.sha256().await.ok().as_ref() == Some(sha) => Some(s),
            _ => None,
        };
        let mut attached = None;
        if let (Some(sha), Some(spool)) = (&claim.sha256, &spool) {
            let doc = ecm::NewDocument {
                parent: folder,
                name: ecm_safe_name(&name),
                description: Some(exception.summary()),
                mime_type: filing::mime_type(&name).to_string(),
                sha256: sha.clone(),
                categories: vec![exception_category.clone(), provenance.category()],
                policy: ecm::CollisionPolicy::NewDocument,
            };
            let stored = store_spooled(self.repo.as_ref(), &doc, spool)
                .await
                .map_err(StepError::ecm)?;
            attached = Some(stored.node);
            self.ledger
                .stored(claim.id, stored.node.0 as u64)
                .map_err(StepError::ledger)?;
        }
        let record = serde_json::json!({
            "partner": self.partner.id,
            "source_path": claim.key.path,
            "size": claim.key.size,
            "sha256": claim.sha256,
            "claim": claim.id,
            "code": exception.code,
            "message": exception.message,
            "details": exception.details.iter().map(|(k, v)| serde_json::json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "attempts": fresh.attempts,
            "failures": fresh.failures,
            "last_error": fresh.last_error,
            "plugin": plugin.info().name,
            "plugin_version": plugin.info().version,
            "plugin_digest": plugin.digest(),
        });
        let bytes = serde_json::to_vec_pretty(&record).map_err(StepError::local)?;
        let record_doc = ecm::NewDocument {
            parent: folder,
            name: ecm_safe_name(&format!("{name}.error.json")),
            description: Some(exception.summary()),
            mime_type: "application/json".into(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            categories: vec![exception_category],
            policy: ecm::CollisionPolicy::AddVersion,
        };
        let record_node = self
            .repo
            .store_document(&record_doc, &ecm::BytesSource(bytes.into()))
            .await
            .map_err(StepError::ecm)?
            .node;
        if fresh.workflow_id.is_none() {
            let mut documents = vec![record_node];
            documents.extend(attached);
            let wf = self
                .repo
                .start_workflow(&ecm::WorkflowStart {
                    workflow: REVIEW_WORKFLOW.into(),
                    title: format!("Quarantined {}: {name}", self.partner.id),
                    comment: exception.summary(),
                    assignee: None,
                    documents,
                })
                .await
                .map_err(StepError::ecm)?;
            self.ledger
                .workflow_started(claim.id, wf.0)
                .map_err(StepError::ledger)?;
        }
        Ok(attached)
    }

    /// Whether the remote file is still the version this claim is about.
    async fn still_there(&self, claim: &Claim) -> Result<Option<RemotePath>, StepError> {
        let path = RemotePath::parse(&claim.key.path).map_err(StepError::remote)?;
        match self.endpoint.stat(&path).await.map_err(StepError::remote)? {
            Some(e) if e.size == claim.key.size && same_mtime(claim.key.mtime, e.mtime) => {
                Ok(Some(path))
            }
            // Gone already (a crash after the move), or replaced by a new
            // version that is another file: nothing to move.
            _ => Ok(None),
        }
    }

    /// A free name in `folder` for `name`: the name itself, or the name with
    /// the claim id when an earlier file holds it. (A folder holding the
    /// name is not looked for here: the move into it fails, and
    /// [`Self::move_into`] takes the other name.)
    async fn free_name(
        &self,
        folder: &RemotePath,
        name: &str,
        id: i64,
    ) -> Result<RemotePath, StepError> {
        let plain = folder.join(name).map_err(StepError::remote)?;
        if !self
            .endpoint
            .is_file(&plain)
            .await
            .map_err(StepError::remote)?
        {
            return Ok(plain);
        }
        Self::suffixed(folder, name, id)
    }

    /// `name` in `folder` with the claim id `id` added.
    fn suffixed(folder: &RemotePath, name: &str, id: i64) -> Result<RemotePath, StepError> {
        folder
            .join(&ecm::suffixed_name(name, id as u32))
            .map_err(StepError::remote)
    }

    /// Move `path` to `to` (a name [`Self::free_name`] gave in `folder`);
    /// if the server refuses the plain name, to the name with the claim id.
    async fn move_into(
        &self,
        path: &RemotePath,
        to: RemotePath,
        folder: &RemotePath,
        id: i64,
    ) -> Result<RemotePath, StepError> {
        let name = path.file_name().unwrap_or("file");
        match self.endpoint.rename(path, &to).await {
            Ok(()) => Ok(to),
            // Refused there (a folder of that name, say): the other name.
            Err(e @ (wharf_endpoint::Error::Refused(_) | wharf_endpoint::Error::Io(_))) => {
                let other = Self::suffixed(folder, name, id)?;
                if other == to {
                    return Err(StepError::remote(e));
                }
                self.endpoint
                    .rename(path, &other)
                    .await
                    .map_err(StepError::remote)?;
                Ok(other)
            }
            Err(e) => Err(StepError::remote(e)),
        }
    }

    async fn post_process(&self, claim: &Claim) -> Result<(), StepError> {
        match self.partner.after {
            AfterFiling::Delete => {
                if let Some(path) = self.still_there(claim).await? {
                    self.endpoint
                        .delete(&path)
                        .await
                        .map_err(StepError::remote)?;
                }
            }
            AfterFiling::Archive => {
                // One question after the other, on one connection: asking
                // both at once would take a second connection, whose login
                // costs more than the round trip it saves.
                if let Some(path) = self.still_there(claim).await? {
                    let name = path.file_name().unwrap_or("file");
                    let to = self.free_name(&self.archive, name, claim.id).await?;
                    self.move_into(&path, to, &self.archive, claim.id).await?;
                }
            }
        }
        self.remove_marker(claim).await
    }

    async fn remove_marker(&self, claim: &Claim) -> Result<(), StepError> {
        if let Some(suffix) = &self.partner.complete.marker_suffix {
            let marker = RemotePath::parse(&format!("{}{suffix}", claim.key.path))
                .map_err(StepError::remote)?;
            if self
                .endpoint
                .exists(&marker)
                .await
                .map_err(StepError::remote)?
            {
                self.endpoint
                    .delete(&marker)
                    .await
                    .map_err(StepError::remote)?;
            }
        }
        Ok(())
    }

    /// Move a quarantined file to the remote error folder with a note of
    /// why beside it, so the partner sees what to fix.
    async fn move_to_error(&self, claim: &Claim, exception: &Exception) -> Result<(), StepError> {
        if let Some(path) = self.still_there(claim).await? {
            let name = path.file_name().unwrap_or("file").to_string();
            let to = self.free_name(&self.error, &name, claim.id).await?;
            let to = self.move_into(&path, to, &self.error, claim.id).await?;
            let note = format!(
                "{}\n{}\n{}",
                exception.code,
                exception.message,
                exception
                    .details
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\n"))
                    .collect::<String>()
            );
            let note_name = format!("{}.error.txt", to.file_name().unwrap_or("file"));
            let note_path = self.error.join(&note_name).map_err(StepError::remote)?;
            let mut bytes = note.as_bytes();
            self.endpoint
                .write_atomic(&note_path, &mut bytes, None)
                .await
                .map_err(StepError::remote)?;
        }
        self.remove_marker(claim).await
    }

    fn event(&self, action: &str, claim: &Claim, node: Option<u64>) -> ecm::AuditEvent {
        ecm::AuditEvent {
            action: action.into(),
            actor: format!("partner:{}", self.partner.id),
            node: node.map(|n| NodeId(n as i64)),
            sha256: claim.sha256.clone(),
            detail: format!(
                "{} ({} bytes, claim {})",
                claim.key.path, claim.key.size, claim.id
            ),
        }
    }

    /// Send the partner's waiting audit events if they are due (see
    /// [`EventSender`]); `idle` when no file of this pipeline is in flight.
    pub async fn send_events(&self, idle: bool) {
        self.events
            .send_if_due(&self.ledger, self.repo.as_ref(), &self.partner.id, idle)
            .await
    }

    /// Send every audit event of this partner waiting in the ledger's
    /// outbox to the repository. They stay in the outbox (to be sent by a
    /// later poll or the next start) when it fails.
    pub async fn flush_events(&self) -> Result<(), String> {
        self.events
            .flush(&self.ledger, self.repo.as_ref(), &self.partner.id)
            .await
    }
}

enum Fetch {
    Gone(String),
    Failed(StepError),
}

fn fail(report: &mut FileReport, e: StepError) {
    report.outcome = Outcome::Retrying;
    report.failed_step = Some(e.step);
    report.detail = e.message;
}

fn text_attr(name: &str, value: &str) -> ecm::Attribute {
    ecm::Attribute {
        name: name.into(),
        value: ecm::AttributeValue::Text(value.into()),
    }
}

/// A remote file name made safe as a repository name (`:` and control
/// characters are refused there).
fn ecm_safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || c == ':' || c == '/' {
                '_'
            } else {
                c
            }
        })
        .collect();
    cleaned.chars().take(200).collect()
}

/// Whether `stated`, the modification time one file's stat gave (FTP
/// `MDTM`, SFTP), is the time a listing showed as `listed` (seconds since
/// the Unix epoch; 0 when it showed none). A listing may be coarser than a
/// stat: an FTP `LIST` line gives the minute for recent files and only the
/// day for files about six months old or dated in the future, so a
/// whole-minute `listed` matches a `stated` time within that minute (that
/// day) after it. Either time missing: nothing to compare.
fn same_mtime(listed: i64, stated: Option<SystemTime>) -> bool {
    if listed == 0 || stated.is_none() {
        return true;
    }
    let stated = secs(stated);
    if stated == listed {
        return true;
    }
    if listed % 60 != 0 {
        // A listing with seconds: it is as precise as the stat.
        return false;
    }
    let now = now_secs();
    let precision = if stated > now || now - stated > 180 * 86_400 {
        86_400
    } else {
        60
    };
    (listed..listed + precision).contains(&stated)
}

/// Now, in seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    secs(Some(SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs as u64))
    }

    #[test]
    fn a_listed_minute_matches_the_stated_seconds_within_it() {
        let recent = now_secs() / 60 * 60 - 3600;
        assert!(same_mtime(recent, at(recent)));
        assert!(same_mtime(recent, at(recent + 26)));
        assert!(same_mtime(recent, at(recent + 59)));
        assert!(!same_mtime(recent, at(recent + 60)));
        assert!(!same_mtime(recent, at(recent - 1)));
        // A precise listing must agree to the second.
        assert!(same_mtime(recent + 7, at(recent + 7)));
        assert!(!same_mtime(recent + 7, at(recent + 8)));
        // Nothing to compare.
        assert!(same_mtime(0, at(recent + 5)));
        assert!(same_mtime(recent, None));
    }

    #[test]
    fn an_old_file_is_listed_by_its_day() {
        let day = (now_secs() - 400 * 86_400) / 86_400 * 86_400;
        assert!(same_mtime(day, at(day + 13 * 3600 + 5)));
        assert!(!same_mtime(day, at(day + 86_400)));
        // A recent file's minute is not stretched to a day.
        let recent = now_secs() / 60 * 60 - 7200;
        assert!(!same_mtime(recent, at(recent + 3600)));
    }
}
