//! The service: opens the state (ledger, repository, plugins, endpoints),
//! polls every partner on its schedule, runs files through their inbound
//! pipelines with bounded concurrency (per partner and overall), keeps the
//! delivery logs, and reports to the admin endpoint. [`Runtime::once`] does
//! one cycle and returns what happened; [`Runtime::serve`] runs until its
//! shutdown token fires, then lets the files in flight finish.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wharf_ecm::NodeId;

use crate::admin::Health;
use crate::config::{EcmConfig, WharfConfig};
use crate::flow::bridge::{EndpointFiles, RepositoryScope};
use crate::flow::connect::{self, AnyRepository};
use crate::flow::delivery;
use crate::flow::inbound::{Canary, FileReport, Inbound, Outcome, PipelineOptions};
use crate::flow::outbound::{ExportReport, Outbound};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::plugin::store::PluginStore;
use crate::plugin::{HostConfig, PartnerContext, PluginHost};

mod builds;
pub use builds::{ADMIN_ACTOR, Build, Change, ChangeError, FOLDER_ACTOR, PluginStatus};

/// One partner as the runtime drives it.
pub struct PartnerRun {
    /// The inbound pipeline.
    pub inbound: Arc<Inbound<AnyRepository>>,
    /// The pipeline of the acknowledgement folder, when there is one.
    pub acks: Option<Arc<Inbound<AnyRepository>>>,
    /// The outbound release, when configured.
    pub outbound: Option<Arc<Outbound<AnyRepository>>>,
    limit: Arc<Semaphore>,
}

impl PartnerRun {
    /// Every pipeline that reads a folder of this partner.
    fn pipelines(&self) -> impl Iterator<Item = &Arc<Inbound<AnyRepository>>> {
        std::iter::once(&self.inbound).chain(self.acks.iter())
    }
}

/// A partner that could not be started, and why.
#[derive(Debug, Clone)]
pub struct Unavailable {
    /// Partner id.
    pub partner: String,
    /// Why (never holds secrets).
    pub reason: String,
}

/// The running service's parts.
pub struct Runtime {
    config: WharfConfig,
    repo: Arc<AnyRepository>,
    ledger: Arc<Ledger>,
    partners: Vec<PartnerRun>,
    unavailable: Vec<Unavailable>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    global: Arc<Semaphore>,
    root: NodeId,
    host: Arc<PluginHost>,
    /// Every build each partner ran, and the refused ones.
    store: Arc<PluginStore>,
    /// Held while a partner's build changes: one change at a time.
    plugin_changes: tokio::sync::Mutex<()>,
}

/// What one `--once` cycle did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Every file report, in the order the files finished.
    pub files: Vec<FileReport>,
    /// Every outbound delivery report.
    pub exports: Vec<ExportReport>,
    /// Files seen but not complete yet when the cycle ended, per partner.
    pub waiting: Vec<(String, usize)>,
    /// Partners that could not be polled, and why.
    pub unavailable: Vec<Unavailable>,
    /// Wall time of the cycle.
    pub elapsed: Duration,
}

impl Summary {
    /// How many files ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.files.iter().filter(|f| f.outcome == outcome).count()
    }
}

/// Every this many polls, unfinished claims are resumed from the ledger.
const RESUME_EVERY: u64 = 30;

/// One partner's part of a `--once` cycle.
struct Cycle {
    partner: String,
    files: Vec<FileReport>,
    exports: Vec<ExportReport>,
    waiting: usize,
    trouble: Option<String>,
}

/// Create `dir` (and parents) readable by the owner only.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))?;
    Ok(())
}

impl Runtime {
    /// Open everything the configuration names. A partner whose plugin or
    /// endpoint cannot be set up is reported (see [`Runtime::unavailable`])
    /// and left out; the others run.
    pub async fn open(config: WharfConfig) -> anyhow::Result<Self> {
        let state = config.runtime.state_dir.clone();
        private_dir(&state)?;
        let ledger = Arc::new(
            Ledger::open(&state.join("ledger.db"))
                .with_context(|| format!("opening the ledger in {}", state.display()))?,
        );
        let repo = Arc::new(connect::open_repository(&config).await?);
        let root = match &config.ecm {
            EcmConfig::Embedded => NodeId::ENTERPRISE,
            EcmConfig::Otcs(o) => NodeId(o.root_id as i64),
        };
        let store = Arc::new(
            PluginStore::open(&state)
                .with_context(|| format!("opening the plugin store in {}", state.display()))?,
        );
        let cache = state.join("cache");
        private_dir(&cache)?;
        let host = Arc::new(
            PluginHost::new(HostConfig {
                cache_dir: Some(cache),
                max_concurrent_calls: config.runtime.max_concurrent_files.max(1) * 2,
                fuel: config.runtime.fuel,
                ..HostConfig::default()
            })
            .context("starting the plugin host")?,
        );
        let options = PipelineOptions {
            spool_dir: state.join("spool"),
            repository_root: root,
        };
        let handle = tokio::runtime::Handle::current();
        let mut partners = Vec::new();
        let mut unavailable = Vec::new();
        for p in config.partners.iter().filter(|p| p.enabled) {
            let setup = async {
                let plugin_path = config.runtime.plugins_dir.join(&p.plugin);
                let plugin = builds::load_at_start(&host, &store, &p.id, &plugin_path).await?;
                let endpoint = connect::endpoint_for(p, &state)?;
                let files = EndpointFiles::new(endpoint.clone(), &p.outbox, handle.clone())
                    .map_err(|e| anyhow::anyhow!("outbox: {e}"))?;
                let partner_root = {
                    let segments = crate::plugin::decision::relative_path(&p.ecm_root())
                        .map_err(|e| anyhow::anyhow!("ecm_root: {e}"))?;
                    wharf_ecm::Repository::ensure_folder(repo.as_ref(), root, segments.segments())
                        .await
                        .context("creating the partner's repository folder")?
                };
                let context = Arc::new(PartnerContext {
                    partner: p.id.clone(),
                    settings: p.settings.clone(),
                    limits: p.limits.clone(),
                    files: Arc::new(files),
                    repository: Arc::new(RepositoryScope::new(
                        repo.clone(),
                        partner_root,
                        handle.clone(),
                    )),
                });
                let make = || {
                    Inbound::new(
                        p.clone(),
                        endpoint.clone(),
                        plugin.clone(),
                        context.clone(),
                        repo.clone(),
                        ledger.clone(),
                        &options,
                    )
                    .map_err(|e| anyhow::anyhow!(e))
                };
                let inbound = Arc::new(make()?);
                if let Some(c) = &p.canary {
                    // A candidate that does not load is reported and left
                    // out; the partner runs on its live build.
                    let path = config.runtime.plugins_dir.join(&c.plugin);
                    let loaded = {
                        let host = host.clone();
                        tokio::task::spawn_blocking(move || host.load(&path)).await
                    };
                    match loaded {
                        Ok(Ok(candidate)) => inbound.set_canary(Some(Canary {
                            plugin: candidate,
                            percent: c.percent,
                        })),
                        Ok(Err(e)) => {
                            tracing::error!(partner = %p.id, "canary {} not loaded: {e}", c.plugin)
                        }
                        Err(e) => tracing::error!(partner = %p.id, "canary not loaded: {e}"),
                    }
                }
                let acks = match p.outbound.as_ref().and_then(|o| o.ack_folder.as_deref()) {
                    Some(folder) => Some(Arc::new(
                        make()?
                            .for_acks(folder)
                            .map_err(|e| anyhow::anyhow!("ack_folder: {e}"))?
                            .sharing_events_with(&inbound),
                    )),
                    None => None,
                };
                let outbound = p
                    .outbound
                    .clone()
                    .map(|rule| Arc::new(Outbound::new(inbound.clone(), rule)));
                anyhow::Ok((inbound, acks, outbound))
            };
            match setup.await {
                Ok((inbound, acks, outbound)) => {
                    builds::started(&store, &p.id, &inbound.plugin());
                    partners.push(PartnerRun {
                        inbound,
                        acks,
                        outbound,
                        limit: Arc::new(Semaphore::new(p.concurrency.max(1) as usize)),
                    })
                }
                Err(e) => {
                    tracing::error!(partner = %p.id, "partner not started: {e:#}");
                    unavailable.push(Unavailable {
                        partner: p.id.clone(),
                        reason: format!("{e:#}"),
                    });
                }
            }
        }
        let health = Arc::new(Health::new());
        for u in &unavailable {
            health.set_partner(&u.partner, Err(u.reason.clone()));
        }
        // Audit events of partners that do not run here (disabled, removed
        // from the configuration, or not set up) are sent now: nothing
        // else would send them.
        let running: HashSet<&str> = partners
            .iter()
            .map(|r: &PartnerRun| r.inbound.partner().id.as_str())
            .collect();
        match ledger.outbox_partners() {
            Ok(waiting) => {
                for partner in waiting.iter().filter(|p| !running.contains(p.as_str())) {
                    if let Err(e) =
                        crate::flow::events::send_outbox(&ledger, repo.as_ref(), partner).await
                    {
                        tracing::warn!(partner, "audit events wait in the ledger: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("reading the ledger's outbox: {e}"),
        }
        Ok(Runtime {
            global: Arc::new(Semaphore::new(
                config.runtime.max_concurrent_files.max(1) as usize
            )),
            config,
            repo,
            ledger,
            partners,
            unavailable,
            metrics: Arc::new(Metrics::new()),
            health,
            root,
            host,
            store,
            plugin_changes: tokio::sync::Mutex::new(()),
        })
    }

    /// Show progress bars for large transfers (on a terminal).
    pub fn show_progress(&self) -> indicatif::MultiProgress {
        let bars = indicatif::MultiProgress::new();
        for p in &self.partners {
            p.inbound.show_progress(bars.clone());
        }
        bars
    }

    /// The partners that run.
    pub fn partners(&self) -> &[PartnerRun] {
        &self.partners
    }

    /// Partners left out at start-up, and why.
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The readiness record.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The repository.
    pub fn repository(&self) -> &Arc<AnyRepository> {
        &self.repo
    }

    fn record(&self, run: &PartnerRun, report: &FileReport) {
        let partner = &report.partner;
        let plugin = run.inbound.plugin().info().name.clone();
        if let Some(t) = report.plugin_time {
            self.metrics.plugin_call(&plugin, t.as_secs_f64());
        }
        if let Some(agree) = report.canary {
            self.metrics.canary_verdict(partner, agree);
        }
        match report.outcome {
            Outcome::Filed | Outcome::Quarantined | Outcome::Ignored | Outcome::Deferred => {
                self.metrics.file_done(
                    partner,
                    &plugin,
                    report.outcome.as_str(),
                    report.bytes_received,
                    report.elapsed.as_secs_f64(),
                )
            }
            Outcome::Retrying => self
                .metrics
                .failure(partner, report.failed_step.unwrap_or("transfer")),
            Outcome::Skipped | Outcome::Gone => {}
        }
        if let Some(step) = report.failed_step
            && report.outcome == Outcome::Quarantined
        {
            self.metrics.failure(partner, step);
        }
    }

    /// Process `entry` under the partner's and the global limits.
    async fn dispatch(
        self: &Arc<Self>,
        index: usize,
        pipe: Arc<Inbound<AnyRepository>>,
        entry: wharf_endpoint::Entry,
        cancel: &CancellationToken,
    ) -> Option<FileReport> {
        let run = &self.partners[index];
        // Reserved while it waits for a slot, so later polls do not queue
        // it again.
        if !pipe.reserve(&entry) {
            return None;
        }
        let permits = async {
            let global = self.global.clone().acquire_owned().await.ok()?;
            let partner = run.limit.clone().acquire_owned().await.ok()?;
            Some((global, partner))
        };
        let permits = tokio::select! {
            p = permits => p,
            _ = cancel.cancelled() => None,
        };
        if permits.is_none() || cancel.is_cancelled() {
            // Not started: the file stays on the server for the next run.
            pipe.release(&entry);
            return None;
        }
        let _flight = self.metrics.in_flight(&pipe.partner().id);
        let report = pipe.process_reserved(entry).await;
        self.record(run, &report);
        Some(report)
    }

    /// One partner's start: folders, then unfinished claims and deliveries.
    async fn start_partner(
        self: &Arc<Self>,
        index: usize,
    ) -> Result<(Vec<FileReport>, Vec<ExportReport>), String> {
        let run = &self.partners[index];
        let mut reports = Vec::new();
        for pipe in run.pipelines() {
            pipe.prepare().await?;
            reports.extend(pipe.resume().await?);
        }
        for r in &reports {
            self.record(run, r);
        }
        let mut exports = Vec::new();
        if let Some(out) = &run.outbound {
            out.clean_spool();
            exports = out.resume().await;
        }
        Ok((reports, exports))
    }

    /// One poll of a partner's folders: the ready files of each pipeline,
    /// with health and metrics updated. `None` when the server could not
    /// be listed.
    async fn poll(
        self: &Arc<Self>,
        index: usize,
    ) -> Option<Vec<(Arc<Inbound<AnyRepository>>, wharf_endpoint::Entry)>> {
        let run = &self.partners[index];
        let id = &run.inbound.partner().id;
        let started = Instant::now();
        let mut ready = Vec::new();
        let mut failure = None;
        for pipe in run.pipelines() {
            match pipe.poll().await {
                Ok(entries) => ready.extend(entries.into_iter().map(|e| (pipe.clone(), e))),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        self.metrics
            .poll(id, started.elapsed().as_secs_f64(), failure.is_none());
        match failure {
            None => {
                self.health.set_partner(id, Ok(()));
                Some(ready)
            }
            Some(e) => {
                tracing::warn!(partner = %id, "poll failed: {e}");
                self.health.set_partner(id, Err(e));
                None
            }
        }
    }

    /// One outbound pass of a partner (nothing when it has no outbound
    /// rule), under the partner's limit.
    async fn export_cycle(self: &Arc<Self>, index: usize) -> Vec<ExportReport> {
        let run = &self.partners[index];
        let Some(out) = &run.outbound else {
            return Vec::new();
        };
        let _partner = run.limit.clone().acquire_owned().await.ok();
        match out.cycle().await {
            Ok(reports) => {
                for r in &reports {
                    self.record_export(r);
                }
                reports
            }
            Err(e) => {
                tracing::warn!(partner = %run.inbound.partner().id, scope = %out.rule().scope, "outbound selection failed: {e}");
                self.metrics.failure(&run.inbound.partner().id, "ecm");
                Vec::new()
            }
        }
    }

    fn record_export(&self, r: &ExportReport) {
        use crate::flow::outbound::ExportOutcome;
        match r.outcome {
            ExportOutcome::Delivered | ExportOutcome::Refused => self.metrics.file_done(
                &r.partner,
                "outbound",
                r.outcome.as_str(),
                r.bytes_sent,
                r.elapsed.as_secs_f64(),
            ),
            ExportOutcome::Retrying => self.metrics.failure(&r.partner, "outbound"),
            ExportOutcome::Skipped | ExportOutcome::NotApproved => {}
        }
    }

    /// The outbound release of partner `id`, if it has one.
    pub fn outbound(&self, id: &str) -> Option<&Arc<Outbound<AnyRepository>>> {
        self.partners
            .iter()
            .find(|p| p.inbound.partner().id == id)
            .and_then(|p| p.outbound.as_ref())
    }

    /// Write the delivery logs of `index` for today (and yesterday, whose
    /// log may have missed its last files).
    async fn delivery_logs(&self, index: usize, with_yesterday: bool) {
        let p = self.partners[index].inbound.partner();
        let today = delivery::day_start(crate::flow::inbound::now_secs());
        let days: &[i64] = if with_yesterday {
            &[today - 86_400, today]
        } else {
            &[today]
        };
        for day in days {
            if let Err(e) =
                delivery::write(self.repo.as_ref(), &self.ledger, p, self.root, *day).await
            {
                tracing::warn!(partner = %p.id, "delivery log not written: {e}");
            }
        }
    }

    /// One cycle of every partner: resume unfinished claims, then poll until
    /// every file seen is processed or has not become complete within what
    /// the partner's completeness rule needs (its stable polls, a second
    /// apart, and its minimum age). Each file is tried once.
    pub async fn once(self: &Arc<Self>) -> Summary {
        let started = Instant::now();
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..self.partners.len() {
            let this = self.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move { this.once_partner(index, &cancel).await });
        }
        let mut summary = Summary {
            unavailable: self.unavailable.clone(),
            ..Summary::default()
        };
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(cycle) => {
                    if let Some(reason) = cycle.trouble {
                        summary.unavailable.push(Unavailable {
                            partner: cycle.partner.clone(),
                            reason,
                        });
                    }
                    summary.files.extend(cycle.files);
                    summary.exports.extend(cycle.exports);
                    summary.waiting.push((cycle.partner, cycle.waiting));
                }
                Err(e) => tracing::error!("partner task failed: {e}"),
            }
        }
        self.checkpoint_stores().await;
        summary.elapsed = started.elapsed();
        summary
    }

    /// Checkpoint the ledger, the embedded repository and the plugin store
    /// side by side, so that closing them writes nothing. Each checkpoint
    /// waits for the disk (fsyncs); closing the stores one after another
    /// would wait once per store, which after a large upload to a server
    /// on the same disk costs tens of milliseconds each.
    async fn checkpoint_stores(&self) {
        let (ledger, store) = (self.ledger.clone(), self.store.clone());
        let (l, r, p) = tokio::join!(
            tokio::task::spawn_blocking(move || ledger.checkpoint()),
            self.repo.checkpoint(),
            tokio::task::spawn_blocking(move || store.checkpoint()),
        );
        let report = |what: &str, r: Result<bool, String>| match r {
            Ok(true) => {}
            // Readers in the way (files still in flight after a drain): the
            // rest is copied when the store closes.
            Ok(false) => tracing::debug!("{what} checkpointed in part"),
            Err(e) => tracing::warn!("{what} not checkpointed: {e}"),
        };
        let text = |e: &dyn std::fmt::Display| e.to_string();
        report(
            "ledger",
            l.map_err(|e| text(&e))
                .and_then(|r| r.map_err(|e| text(&e))),
        );
        report("repository", r.map_err(|e| text(&e)));
        report(
            "plugin store",
            p.map_err(|e| text(&e))
                .and_then(|r| r.map_err(|e| text(&e))),
        );
    }

    async fn once_partner(self: &Arc<Self>, index: usize, cancel: &CancellationToken) -> Cycle {
        let inbound = self.partners[index].inbound.clone();
        let p = inbound.partner().clone();
        let (mut files, mut exports) = match self.start_partner(index).await {
            Ok(r) => r,
            Err(e) => {
                return Cycle {
                    partner: p.id.clone(),
                    files: Vec::new(),
                    exports: Vec::new(),
                    waiting: 0,
                    trouble: Some(e),
                };
            }
        };
        exports.extend(self.export_cycle(index).await);
        let gap = Duration::from_secs(1);
        // How long a file may take to become complete by the rule: a
        // marker is there or not; stability needs its polls and age.
        let budget = if p.complete.marker_suffix.is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(p.complete.min_age_secs)
                + gap * (p.complete.stable_polls + 1)
                + Duration::from_secs(2)
        };
        let started = Instant::now();
        let mut tried = HashSet::new();
        let mut trouble = None;
        loop {
            let Some(ready) = self.poll(index).await else {
                trouble = Some("the partner's server could not be listed".to_string());
                break;
            };
            let mut batch = tokio::task::JoinSet::new();
            for (pipe, entry) in ready {
                let key = (entry.path.as_string(), entry.size, entry.mtime);
                if !tried.insert(key) {
                    continue;
                }
                let this = self.clone();
                let cancel = cancel.clone();
                batch.spawn(async move { this.dispatch(index, pipe, entry, &cancel).await });
            }
            while let Some(r) = batch.join_next().await {
                if let Ok(Some(report)) = r {
                    files.push(report);
                }
            }
            let waiting: usize = self.partners[index].pipelines().map(|p| p.waiting()).sum();
            if waiting == 0 || started.elapsed() > budget {
                break;
            }
            tokio::time::sleep(gap).await;
        }
        if let Some(out) = &self.partners[index].outbound {
            // Acknowledgements read in this cycle may close overdue ones.
            out.raise_overdue().await;
        }
        self.delivery_logs(index, false).await;
        Cycle {
            partner: p.id.clone(),
            files,
            exports,
            waiting: self.partners[index].pipelines().map(|p| p.waiting()).sum(),
            trouble,
        }
    }

    /// Load the plugin file of partner `index` again and swap it in when it
    /// is a different build that passes the checks of a deploy (see
    /// [`Runtime::deploy_plugin`]). The build is compiled and checked off
    /// the hot path; files in flight finish with the build they started
    /// with. A refused build is logged, counted and recorded, and the old
    /// one keeps serving. Returns whether a new build was swapped in.
    pub async fn reload_plugin(&self, index: usize) -> Result<bool, String> {
        self.reload_from_folder(index).await
    }

    /// Watch the plugins folder and reload a partner's plugin when its file
    /// changes (written in place or renamed over), until `shutdown`.
    async fn watch_plugins(self: Arc<Self>, shutdown: CancellationToken) {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = match notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("cannot watch the plugins folder: {e}");
                return;
            }
        };
        let dir = self.config.runtime.plugins_dir.clone();
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::error!("cannot watch {}: {e}", dir.display());
            return;
        }
        loop {
            let first = tokio::select! {
                e = rx.recv() => e,
                _ = shutdown.cancelled() => return,
            };
            let Some(first) = first else { return };
            // A copy arrives as several writes: wait until the folder has
            // been quiet for a moment (a rename is one event, so it is taken
            // almost at once), but never longer than a second.
            let mut events = vec![first];
            let settle_until = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                tokio::time::sleep(Duration::from_millis(15)).await;
                let before = events.len();
                while let Ok(e) = rx.try_recv() {
                    events.push(e);
                }
                if events.len() == before || tokio::time::Instant::now() >= settle_until {
                    break;
                }
            }
            let changed: HashSet<std::ffi::OsString> = events
                .into_iter()
                .flatten()
                .filter(|e| !e.kind.is_access())
                .flat_map(|e| e.paths)
                .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
                .collect();
            for index in 0..self.partners.len() {
                let file = Path::new(&self.partners[index].inbound.partner().plugin)
                    .file_name()
                    .map(|n| n.to_os_string());
                if file.is_some_and(|f| changed.contains(&f)) {
                    let _ = self.reload_plugin(index).await;
                }
            }
        }
    }

    /// Run until `shutdown` fires: poll every partner on its interval and
    /// process what is ready. On shutdown no new file is started; files in
    /// flight finish (up to `runtime.drain_secs`).
    pub async fn serve(self: &Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let loops = TaskTracker::new();
        for index in 0..self.partners.len() {
            let this = self.clone();
            let (shutdown, tracker) = (shutdown.clone(), tracker.clone());
            loops.spawn(async move { this.partner_loop(index, shutdown, tracker).await });
        }
        loops.spawn(self.clone().watch_plugins(shutdown.clone()));
        self.health.set_ready(true);
        shutdown.cancelled().await;
        self.health.set_ready(false);
        tracing::info!("shutting down: finishing files in flight");
        loops.close();
        loops.wait().await;
        tracker.close();
        let drain = Duration::from_secs(self.config.runtime.drain_secs);
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::warn!(
                "files still in flight after {} s; they resume at the next start",
                drain.as_secs()
            );
        }
        for index in 0..self.partners.len() {
            self.delivery_logs(index, false).await;
        }
        self.checkpoint_stores().await;
        Ok(())
    }

    async fn partner_loop(
        self: Arc<Self>,
        index: usize,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let p = self.partners[index].inbound.partner().clone();
        let interval = Duration::from_secs(p.poll_interval_secs.max(1));
        let log_every = Duration::from_secs(self.config.runtime.delivery_log_secs.max(1));
        let mut started = false;
        let mut cycle: u64 = 0;
        let mut last_export: Option<Instant> = None;
        let exporting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut last_log = Instant::now();
        let mut log_day = delivery::day_start(crate::flow::inbound::now_secs());
        while !shutdown.is_cancelled() {
            if !started {
                match self.start_partner(index).await {
                    Ok(_) => {
                        started = true;
                        self.delivery_logs(index, true).await;
                    }
                    Err(e) => {
                        tracing::warn!(partner = %p.id, "cannot start: {e}");
                        self.health.set_partner(&p.id, Err(e));
                    }
                }
            }
            cycle += 1;
            if started && cycle.is_multiple_of(RESUME_EVERY) {
                // Claims whose file left the inbox (moved by a crash at
                // the wrong moment, or taken away by the partner) are not
                // listed again; finish them from the ledger.
                let this = self.clone();
                tracker.spawn(async move {
                    let run = &this.partners[index];
                    for pipe in run.pipelines() {
                        if let Ok(reports) = pipe.resume().await {
                            for r in &reports {
                                this.record(run, r);
                            }
                        }
                    }
                });
            }
            if started {
                // Events whose file finished long ago, or whose send failed
                // (the partner's pipelines share one sender).
                let pipe = self.partners[index].inbound.clone();
                tracker.spawn(async move { pipe.send_events(false).await });
            }
            if started && let Some(ready) = self.poll(index).await {
                for (pipe, entry) in ready {
                    let this = self.clone();
                    let cancel = shutdown.clone();
                    tracker.spawn(async move { this.dispatch(index, pipe, entry, &cancel).await });
                }
            }
            if started
                && let Some(out) = &self.partners[index].outbound
                && last_export.is_none_or(|t: Instant| {
                    t.elapsed() >= Duration::from_secs(out.rule().poll_interval_secs.max(1))
                })
                && !exporting.swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                last_export = Some(Instant::now());
                let this = self.clone();
                let flag = exporting.clone();
                tracker.spawn(async move {
                    this.export_cycle(index).await;
                    flag.store(false, std::sync::atomic::Ordering::Release);
                });
            }
            let today = delivery::day_start(crate::flow::inbound::now_secs());
            if started && (last_log.elapsed() >= log_every || today != log_day) {
                self.delivery_logs(index, today != log_day).await;
                last_log = Instant::now();
                log_day = today;
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}
