//! Plugin builds of the running service: a partner's build changes when its
//! file in the plugins folder changes, or through a deploy or rollback on
//! the admin endpoint. Every path goes through the same check, off the hot
//! path: the build must load in the runtime's plugin host (world and
//! contract version), and, when the partner names a fixtures folder, give
//! every fixture its expected verdict. A refused build is recorded and the
//! running one keeps serving; an accepted one is kept in the
//! [`PluginStore`], written into the plugins folder (deploy and rollback,
//! so a restart keeps it) and swapped in. One change happens at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::Runtime;
use crate::config::PartnerConfig;
use crate::plugin::fixtures::{self, Fixtures};
use crate::plugin::store::{self, Activation, How, PluginStore, Refusal, StoreError};
use crate::plugin::{LoadError, PartnerContext, Plugin, PluginHost};

/// The actor of builds that come from the plugins folder.
pub const FOLDER_ACTOR: &str = "plugins-folder";

/// The actor of builds that come through the admin endpoint.
pub const ADMIN_ACTOR: &str = "admin-token";

/// How many history rows and refusals [`Runtime::plugin_history`] returns.
const HISTORY_ROWS: usize = 500;
const REFUSAL_ROWS: usize = 100;

/// A plugin build, as its plugin names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Build {
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// SHA-256 of the component.
    pub digest: String,
}

impl Build {
    fn of(plugin: &Plugin) -> Self {
        Build {
            name: plugin.info().name.clone(),
            version: plugin.info().version.clone(),
            digest: plugin.digest().to_string(),
        }
    }
}

/// What a deploy or rollback did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Partner id.
    pub partner: String,
    /// The build that ran before.
    pub previous: Build,
    /// The build that runs now.
    pub active: Build,
    /// Whether the build changed (`false`: it was running already).
    pub swapped: bool,
    /// How many fixtures the new build passed (0 without fixtures).
    pub fixtures_passed: usize,
}

/// Why a deploy or rollback was not done.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No partner of that id is configured.
    #[error("no partner {0:?} is configured")]
    UnknownPartner(String),
    /// The partner is configured but did not start.
    #[error("partner {partner} is not running ({reason}); fix it and restart the service")]
    NotRunning {
        /// Partner id.
        partner: String,
        /// Why it did not start.
        reason: String,
    },
    /// The build failed its check; the running build keeps serving.
    #[error("{0}")]
    Refused(String),
    /// The digest given is not usable.
    #[error("{0}")]
    BadDigest(String),
    /// The partner never ran a build with that digest.
    #[error("partner {partner} never ran a build {digest}")]
    UnknownBuild {
        /// Partner id.
        partner: String,
        /// The digest asked for.
        digest: String,
    },
    /// A rollback without a target, and no other build in the history.
    #[error("partner {0} has no earlier build to roll back to")]
    NoEarlierBuild(String),
    /// The build could not be kept or installed.
    #[error("{0}")]
    Failed(String),
}

/// One partner's plugin, as the admin endpoint shows it.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    /// Partner id.
    pub partner: String,
    /// The build running now (`None` when the partner did not start).
    pub active: Option<Build>,
    /// The history row of the running build: since when, how, by whom.
    pub activation: Option<Activation>,
    /// Why the partner did not start.
    pub unavailable: Option<String>,
    /// The latest build refused for this partner.
    pub last_refusal: Option<Refusal>,
}

/// Run `f` on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("internal task failed: {e}"))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Decide every fixture of `dir` with `plugin`, as `wharf plugin test`
/// does (the folder's `settings.toml`, no partner capabilities), with the
/// partner's id and limits. Returns how many passed, or why the build is
/// refused.
fn check_fixtures(plugin: &Plugin, partner: &PartnerConfig, dir: &Path) -> Result<usize, String> {
    let fixtures = Fixtures::open(dir).map_err(|e| format!("fixtures: {e:#}"))?;
    let mut context = PartnerContext::new(&partner.id);
    context.settings = fixtures.settings.clone();
    context.limits = partner.limits.clone();
    let results = fixtures::compare(plugin, &Arc::new(context), &fixtures)
        .map_err(|e| format!("fixtures: {e:#}"))?;
    match fixtures::failures(&results) {
        Some(failed) => Err(failed),
        None => Ok(results.len()),
    }
}

/// Load partner `partner`'s plugin file at start-up and keep the build in
/// `store`. A build that does not load is recorded as refused.
pub(super) async fn load_at_start(
    host: &Arc<PluginHost>,
    store: &Arc<PluginStore>,
    partner: &str,
    path: &Path,
) -> anyhow::Result<Plugin> {
    let loaded = {
        let (host, store, path) = (host.clone(), store.clone(), path.to_path_buf());
        blocking(move || {
            let wasm = std::fs::read(&path).map_err(|source| {
                let e = LoadError::Read {
                    path: path.clone(),
                    source,
                };
                (None, e)
            })?;
            let plugin = host
                .load_bytes(&file_name(&path), &wasm)
                .map_err(|e| (Some(store::digest_of(&wasm)), e))?;
            if let Err(e) = store.put(&wasm) {
                tracing::warn!("plugin build not kept for rollback: {e}");
            }
            Ok(plugin)
        })
        .await
        .map_err(anyhow::Error::msg)?
    };
    loaded.map_err(|(digest, e)| {
        let e = anyhow::Error::new(e).context(format!("loading {}", path.display()));
        let refusal = Refusal {
            partner: partner.to_string(),
            digest,
            at: SystemTime::now(),
            how: How::Start,
            actor: FOLDER_ACTOR.to_string(),
            reason: format!("{e:#}"),
        };
        if let Err(e) = store.refuse(&refusal) {
            tracing::warn!(partner, "refusal not recorded: {e}");
        }
        e
    })
}

/// Record `plugin` as the build `partner` started with, unless the history
/// already has it as the active build (a restart changes nothing).
pub(super) fn started(store: &PluginStore, partner: &str, plugin: &Plugin) {
    let recorded = match store.active(partner) {
        Ok(last) => last.is_some_and(|a| a.digest == plugin.digest()),
        Err(e) => {
            tracing::warn!(partner, "plugin history not read: {e}");
            return;
        }
    };
    if recorded {
        return;
    }
    let activation = Activation {
        partner: partner.to_string(),
        digest: plugin.digest().to_string(),
        name: plugin.info().name.clone(),
        version: plugin.info().version.clone(),
        at: SystemTime::now(),
        how: How::Start,
        actor: FOLDER_ACTOR.to_string(),
    };
    if let Err(e) = store.record(&activation) {
        tracing::warn!(partner, "plugin history not written: {e}");
    }
}

impl Runtime {
    /// The kept builds and their history.
    pub fn plugin_store(&self) -> &Arc<PluginStore> {
        &self.store
    }

    fn configured(&self, partner: &str) -> Result<&PartnerConfig, ChangeError> {
        self.config
            .partners
            .iter()
            .find(|p| p.id == partner && p.enabled)
            .ok_or_else(|| ChangeError::UnknownPartner(partner.to_string()))
    }

    fn index_of(&self, partner: &str) -> Result<usize, ChangeError> {
        self.configured(partner)?;
        if let Some(i) = self
            .partners
            .iter()
            .position(|r| r.inbound.partner().id == partner)
        {
            return Ok(i);
        }
        let reason = self
            .unavailable
            .iter()
            .find(|u| u.partner == partner)
            .map(|u| u.reason.clone())
            .unwrap_or_else(|| "not started".into());
        Err(ChangeError::NotRunning {
            partner: partner.to_string(),
            reason,
        })
    }

    /// Every enabled partner's plugin: the running build and since when,
    /// or why the partner did not start, and the last refused build.
    pub fn plugin_status(&self) -> Vec<PluginStatus> {
        let read = |what: &str, partner: &str, e: StoreError| {
            tracing::warn!(partner, "plugin {what} not read: {e}");
        };
        self.config
            .partners
            .iter()
            .filter(|p| p.enabled)
            .map(|p| {
                let active = self
                    .partners
                    .iter()
                    .find(|r| r.inbound.partner().id == p.id)
                    .map(|r| Build::of(&r.inbound.plugin()));
                let activation = match self.store.active(&p.id) {
                    Ok(a) => a.filter(|a| active.as_ref().is_some_and(|b| b.digest == a.digest)),
                    Err(e) => {
                        read("history", &p.id, e);
                        None
                    }
                };
                let last_refusal = self.store.last_refusal(&p.id).unwrap_or_else(|e| {
                    read("refusals", &p.id, e);
                    None
                });
                PluginStatus {
                    partner: p.id.clone(),
                    unavailable: self
                        .unavailable
                        .iter()
                        .find(|u| u.partner == p.id)
                        .map(|u| u.reason.clone()),
                    active,
                    activation,
                    last_refusal,
                }
            })
            .collect()
    }

    /// `partner`'s history: the builds that became active and the builds
    /// refused, newest first.
    pub fn plugin_history(
        &self,
        partner: &str,
    ) -> Result<(Vec<Activation>, Vec<Refusal>), ChangeError> {
        self.configured(partner)?;
        let failed = |e: StoreError| ChangeError::Failed(e.to_string());
        Ok((
            self.store.history(partner, HISTORY_ROWS).map_err(failed)?,
            self.store.refusals(partner, REFUSAL_ROWS).map_err(failed)?,
        ))
    }

    /// Check `wasm` as a new build of `partner` and, if it passes, install
    /// it in the plugins folder and swap it in. `actor` is recorded.
    pub async fn deploy_plugin(
        &self,
        partner: &str,
        wasm: Vec<u8>,
        actor: &str,
    ) -> Result<Change, ChangeError> {
        let index = self.index_of(partner)?;
        let _one_at_a_time = self.plugin_changes.lock().await;
        self.offer(index, wasm, How::Deploy, actor, None, true)
            .await
    }

    /// Bring back a build `partner` ran before: the one whose digest is
    /// (or begins with) `to`, or by default the newest build in its
    /// history other than the running one. The build goes through the
    /// same check as a deploy.
    pub async fn rollback_plugin(
        &self,
        partner: &str,
        to: Option<&str>,
        actor: &str,
    ) -> Result<Change, ChangeError> {
        let index = self.index_of(partner)?;
        let _one_at_a_time = self.plugin_changes.lock().await;
        let current = self.partners[index].inbound.plugin();
        let failed = |e: StoreError| ChangeError::Failed(e.to_string());
        let target = match to {
            Some(to) => match self.store.find(partner, to) {
                Ok(Some(a)) => a,
                Ok(None) => {
                    return Err(ChangeError::UnknownBuild {
                        partner: partner.to_string(),
                        digest: to.to_string(),
                    });
                }
                Err(e @ StoreError::BadDigest(_)) => {
                    return Err(ChangeError::BadDigest(e.to_string()));
                }
                Err(e) => return Err(failed(e)),
            },
            None => self
                .store
                .before(partner, current.digest())
                .map_err(failed)?
                .ok_or_else(|| ChangeError::NoEarlierBuild(partner.to_string()))?,
        };
        let digest = target.digest.clone();
        let stored = {
            let store = self.store.clone();
            let digest = digest.clone();
            blocking(move || store.get(&digest))
                .await
                .map_err(ChangeError::Failed)?
        };
        let wasm = match stored {
            Ok(wasm) => wasm,
            Err(e) => {
                let reason = e.to_string();
                self.refused(index, Some(digest), How::Rollback, actor, &reason);
                return Err(ChangeError::Refused(reason));
            }
        };
        self.offer(index, wasm, How::Rollback, actor, None, true)
            .await
    }

    /// Offer the file in the plugins folder to partner `index` again (the
    /// watcher's path). Returns whether a new build was swapped in, or why
    /// it was refused.
    pub(super) async fn reload_from_folder(&self, index: usize) -> Result<bool, String> {
        // Read under the lock: a deploy in progress has written the file
        // by the time this reads it.
        let _one_at_a_time = self.plugin_changes.lock().await;
        let p = self.partners[index].inbound.partner();
        let path = self.config.runtime.plugins_dir.join(&p.plugin);
        let read = {
            let path = path.clone();
            blocking(move || std::fs::read(&path)).await?
        };
        let wasm = match read {
            Ok(wasm) => wasm,
            Err(e) => {
                let reason = format!("cannot read plugin {}: {e}", path.display());
                self.refused(index, None, How::Watch, FOLDER_ACTOR, &reason);
                return Err(reason);
            }
        };
        match self
            .offer(
                index,
                wasm,
                How::Watch,
                FOLDER_ACTOR,
                Some(file_name(&path)),
                false,
            )
            .await
        {
            Ok(change) => Ok(change.swapped),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Log, count and record a refused build.
    fn refused(&self, index: usize, digest: Option<String>, how: How, actor: &str, reason: &str) {
        let inbound = &self.partners[index].inbound;
        let partner = &inbound.partner().id;
        let current = inbound.plugin();
        tracing::error!(
            partner = %partner,
            how = how.as_str(),
            actor,
            "new plugin build refused, {} {} keeps serving: {reason}",
            current.info().name,
            current.info().version
        );
        self.metrics.plugin_reload(partner, false);
        let refusal = Refusal {
            partner: partner.clone(),
            digest,
            at: SystemTime::now(),
            how,
            actor: actor.to_string(),
            reason: reason.to_string(),
        };
        if let Err(e) = self.store.refuse(&refusal) {
            tracing::warn!(partner = %partner, "refusal not recorded: {e}");
        }
    }

    /// Check `wasm` for partner `index`, keep it, install it in the
    /// plugins folder if `install`, and swap it into every pipeline of the
    /// partner. `origin` names the build in load errors (default: `build
    /// <digest>`). The caller holds `plugin_changes`.
    async fn offer(
        &self,
        index: usize,
        wasm: Vec<u8>,
        how: How,
        actor: &str,
        origin: Option<String>,
        install: bool,
    ) -> Result<Change, ChangeError> {
        let run = &self.partners[index];
        let p = run.inbound.partner().clone();
        let current = run.inbound.plugin();
        let previous = Build::of(&current);
        let (digest, wasm) = blocking(move || (store::digest_of(&wasm), wasm))
            .await
            .map_err(ChangeError::Failed)?;
        let origin = origin.unwrap_or_else(|| format!("build {}", &digest[..12]));
        let target: PathBuf = self.config.runtime.plugins_dir.join(&p.plugin);
        if digest == current.digest() {
            if install {
                // The running build is asked for: make sure the folder holds
                // it too, so that a restart starts it.
                blocking(move || {
                    if std::fs::read(&target).is_ok_and(|f| store::digest_of(&f) == digest) {
                        return Ok(());
                    }
                    store::write_atomically(&target, &wasm)
                })
                .await
                .map_err(ChangeError::Failed)?
                .map_err(|e| ChangeError::Failed(format!("installing the build: {e}")))?;
            }
            return Ok(Change {
                partner: p.id.clone(),
                active: previous.clone(),
                previous,
                swapped: false,
                fixtures_passed: 0,
            });
        }
        let checked = {
            let host = self.host.clone();
            let partner = p.clone();
            blocking(move || {
                let plugin = host
                    .load_bytes(&origin, &wasm)
                    .map_err(|e| format!("{e:#}"))?;
                let passed = match &partner.fixtures {
                    Some(dir) => check_fixtures(&plugin, &partner, dir)?,
                    None => 0,
                };
                Ok::<_, String>((plugin, passed, wasm))
            })
            .await
            .map_err(ChangeError::Failed)?
        };
        let (plugin, fixtures_passed, wasm) = match checked {
            Ok(checked) => checked,
            Err(reason) => {
                self.refused(index, Some(digest), how, actor, &reason);
                return Err(ChangeError::Refused(reason));
            }
        };
        let wasm = Arc::new(wasm);
        let kept = {
            let (store, wasm) = (self.store.clone(), wasm.clone());
            blocking(move || store.put(&wasm)).await
        };
        match kept {
            Ok(Ok(_)) => {}
            // The folder already holds the build; not keeping a copy only
            // costs a later rollback to it.
            Ok(Err(e)) if how == How::Watch => {
                tracing::warn!(partner = %p.id, "plugin build not kept for rollback: {e}");
            }
            Ok(Err(e)) => return Err(ChangeError::Failed(format!("keeping the build: {e}"))),
            Err(e) => return Err(ChangeError::Failed(e)),
        }
        if install {
            let wasm = wasm.clone();
            blocking(move || store::write_atomically(&target, &wasm))
                .await
                .map_err(ChangeError::Failed)?
                .map_err(|e| ChangeError::Failed(format!("installing the build: {e}")))?;
        }
        let active = Build::of(&plugin);
        for pipe in run.pipelines() {
            pipe.swap_plugin(plugin.clone());
        }
        self.metrics.plugin_reload(&p.id, true);
        tracing::info!(
            partner = %p.id,
            how = how.as_str(),
            actor,
            "plugin {} {} ({}) replaces {} {} ({})",
            active.name,
            active.version,
            &active.digest[..12],
            previous.name,
            previous.version,
            &previous.digest[..12]
        );
        let activation = Activation {
            partner: p.id.clone(),
            digest: active.digest.clone(),
            name: active.name.clone(),
            version: active.version.clone(),
            at: SystemTime::now(),
            how,
            actor: actor.to_string(),
        };
        if let Err(e) = self.store.record(&activation) {
            tracing::warn!(partner = %p.id, "plugin history not written: {e}");
        }
        Ok(Change {
            partner: p.id.clone(),
            previous,
            active,
            swapped: true,
            fixtures_passed,
        })
    }
}
