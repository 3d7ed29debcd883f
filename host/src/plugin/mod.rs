//! The plugin host: loads partner plugins (WebAssembly components of the
//! `wharf:plugin/partner` world) and calls them in a sandbox.
//!
//! One [`PluginHost`] owns the shared [`wasmtime::Engine`] (epoch
//! interruption, pooling allocator), the linker with the granted imports and
//! the on-disk [`CompileCache`]. [`PluginHost::load`] turns a component file
//! into a [`Plugin`], pre-linked once. Every call gets a fresh store with the
//! partner's [`Limits`]: a CPU deadline, a memory cap and optional fuel. A
//! trap, a deadline, an out-of-memory, a panic or an invalid decision comes
//! back as a [`PluginError`] naming the plugin, the file and the reason; the
//! host keeps serving.

mod bindings;
mod cache;
mod caps;
mod content;
pub mod decision;
mod error;
pub mod fixtures;
mod limits;
mod output;
mod state;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

pub use cache::{CacheOutcome, CompileCache};
pub use caps::{
    CapError, EntryKind, ListEntry, LocalPartnerFiles, NoPartnerFiles, NoRepository, PartnerFiles,
    RepositoryLookup, Search,
};
pub use content::{ContentSource, MAX_READ, ReadContent};
pub use decision::{AckMatch, Delivery, DocumentInfo, FileInfo, PluginInfo, Rejection, Verdict};
pub use error::{FailureKind, LoadError, PluginError};
pub use limits::Limits;

use bindings::{Partner, PartnerPre};
use content::ContentHandle;
use state::HostState;
pub(crate) use state::printable;

/// The contract package this host implements.
pub const CONTRACT: &str = "wharf:plugin";
/// The contract version this host was built against. Plugins built against
/// any 0.1.x load (component-model semver matching).
pub const CONTRACT_VERSION: &str = "0.1.0";

/// How often the epoch advances: the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings of the plugin host as a whole.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled components are cached; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// How many plugin calls may run at the same time (pool slots); more
    /// calls wait for a free slot.
    pub max_concurrent_calls: u32,
    /// The largest memory cap any partner may configure, in bytes.
    pub max_memory_bytes: u64,
    /// Meter fuel, so partners can set a per-call instruction budget.
    pub fuel: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cache_dir: None,
            max_concurrent_calls: 256,
            max_memory_bytes: 1024 * 1024 * 1024,
            fuel: false,
        }
    }
}

/// Everything a plugin call knows about the partner it works for.
pub struct PartnerContext {
    /// Partner id.
    pub partner: String,
    /// The plugin's settings (`config.get`).
    pub settings: BTreeMap<String, String>,
    /// Limits of every call.
    pub limits: Limits,
    /// The partner's remote files (`ftp` capability).
    pub files: Arc<dyn PartnerFiles>,
    /// Repository look-ups (`ecm` capability).
    pub repository: Arc<dyn RepositoryLookup>,
}

impl PartnerContext {
    /// A context with default limits, no settings and no capabilities bound.
    pub fn new(partner: &str) -> Self {
        PartnerContext {
            partner: partner.to_string(),
            settings: BTreeMap::new(),
            limits: Limits::default(),
            files: Arc::new(NoPartnerFiles),
            repository: Arc::new(NoRepository),
        }
    }
}

/// Advances the engine's epoch on a background thread; stops on drop.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wharf-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Bounds concurrent calls to the pool's instance slots: a call beyond the
/// bound waits for a slot instead of failing.
struct CallSlots {
    free: std::sync::Mutex<u32>,
    freed: std::sync::Condvar,
}

impl CallSlots {
    fn new(slots: u32) -> Arc<Self> {
        Arc::new(CallSlots {
            free: std::sync::Mutex::new(slots),
            freed: std::sync::Condvar::new(),
        })
    }

    fn acquire(self: &Arc<Self>) -> SlotGuard {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        SlotGuard(self.clone())
    }
}

/// One held call slot, released on drop.
struct SlotGuard(Arc<CallSlots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// The shared engine, linker and compile cache. Cheap to share behind an
/// `Arc`; every method takes `&self`.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<CompileCache>,
    config: HostConfig,
    slots: Arc<CallSlots>,
    ticker: Arc<EpochTicker>,
}

/// What a component file holds, as read from its type.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentSummary {
    /// The world it implements, with the contract version it was built
    /// against, e.g. `wharf:plugin/partner@0.1.0`.
    pub world: String,
    /// The contract version it was built against.
    pub contract_version: String,
    /// Exported interface names.
    pub exports: Vec<String>,
    /// Imported interface names.
    pub imports: Vec<String>,
}

/// A loaded plugin: compiled, pre-linked and described. Cloning is cheap;
/// calls may run concurrently from many threads.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    engine: Engine,
    pre: PartnerPre<HostState>,
    info: PluginInfo,
    label: Arc<str>,
    digest: String,
    size: u64,
    summary: ComponentSummary,
    cache: CacheOutcome,
    fuel_metered: bool,
    max_memory_bytes: u64,
    slots: Arc<CallSlots>,
    // Deadlines need the epoch to advance for as long as any plugin lives,
    // even after the host that loaded it is dropped.
    _ticker: Arc<EpochTicker>,
}

impl PluginHost {
    /// Build the engine and linker.
    pub fn new(config: HostConfig) -> Result<Self, LoadError> {
        let host_err = |e: wasmtime::Error| LoadError::Host(format!("{e:#}"));
        let mut pooling = PoolingAllocationConfig::new();
        let slots = config.max_concurrent_calls.clamp(1, 10_000);
        // A Rust component holds a few core instances (its module plus
        // adapter shims) and one or two memories and tables. Bounding each
        // component keeps one hostile plugin from taking every pool slot;
        // a component beyond the bounds is refused when it is loaded.
        const CORE_INSTANCES: u32 = 16;
        const MEMORIES: u32 = 2;
        const TABLES: u32 = 16;
        pooling
            .total_component_instances(slots)
            .max_core_instances_per_component(CORE_INSTANCES)
            .max_memories_per_component(MEMORIES)
            .max_tables_per_component(TABLES)
            .total_core_instances(slots * CORE_INSTANCES)
            .total_memories(slots * MEMORIES)
            .total_tables(slots * TABLES)
            .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
            // Keep what a call touches of each slot's memory mapped between
            // calls, and reset only the pages it touched (found with the
            // PAGEMAP_SCAN ioctl where the kernel has it, Linux 6.7 on):
            // unmapping them would flush the other cores' TLBs (an
            // interrupt to each, costly in a VM) and fault them in again
            // on the next call. 22 → 11 µs per call; on 2 threads 35,000 →
            // 160,000 calls/s (`cargo bench -p wharf --bench plugin`).
            .linear_memory_keep_resident(1024 * 1024)
            .table_keep_resident(16 * 1024)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wt = Config::new();
        wt.epoch_interruption(true)
            .consume_fuel(config.fuel)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&wt).map_err(host_err)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(host_err)?;
        Partner::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(host_err)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(
                CompileCache::new(dir)
                    .map_err(|e| LoadError::Host(format!("cache dir {}: {e}", dir.display())))?,
            ),
            None => None,
        };
        Ok(PluginHost {
            ticker: Arc::new(EpochTicker::start(engine.clone())),
            engine,
            linker,
            cache,
            slots: CallSlots::new(slots),
            config,
        })
    }

    /// The host configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Load a component file.
    pub fn load(&self, path: &Path) -> Result<Plugin, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        self.load_bytes(&origin, &wasm)
    }

    /// Load a component from bytes; `origin` names it in errors.
    pub fn load_bytes(&self, origin: &str, wasm: &[u8]) -> Result<Plugin, LoadError> {
        let digest = hex::encode(Sha256::digest(wasm));
        let compile_err = |e: wasmtime::Error| LoadError::Compile {
            origin: origin.to_string(),
            reason: format!("{e:#}"),
        };
        let (component, cache) = match &self.cache {
            Some(cache) => cache
                .load(&self.engine, &digest, wasm)
                .map_err(compile_err)?,
            None => (
                wasmtime::component::Component::new(&self.engine, wasm).map_err(compile_err)?,
                CacheOutcome::Uncached,
            ),
        };
        let summary = summarize(&self.engine, &component);
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            origin: origin.to_string(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = PartnerPre::new(instance_pre).map_err(wrong_world)?;
        let mut plugin = Plugin {
            inner: Arc::new(PluginInner {
                engine: self.engine.clone(),
                pre,
                info: PluginInfo {
                    name: origin.to_string(),
                    version: String::new(),
                    description: String::new(),
                },
                label: Arc::from(origin),
                digest,
                size: wasm.len() as u64,
                summary,
                cache,
                fuel_metered: self.config.fuel,
                max_memory_bytes: self.config.max_memory_bytes,
                slots: self.slots.clone(),
                _ticker: self.ticker.clone(),
            }),
        };
        // Ask the plugin who it is: this also proves it instantiates and
        // runs in the sandbox before anything depends on it.
        let info = plugin.describe().map_err(|source| LoadError::Startup {
            origin: origin.to_string(),
            source: Box::new(source),
        })?;
        let inner = Arc::get_mut(&mut plugin.inner).expect("not shared yet");
        inner.label = Arc::from(format!("{} {}", info.name, info.version).as_str());
        inner.info = info;
        Ok(plugin)
    }
}

fn summarize(engine: &Engine, component: &wasmtime::component::Component) -> ComponentSummary {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let contract_version = exports
        .iter()
        .find_map(|e| e.strip_prefix("wharf:plugin/inbound@"))
        .unwrap_or("unknown")
        .to_string();
    ComponentSummary {
        world: format!("{CONTRACT}/partner@{contract_version}"),
        contract_version,
        exports,
        imports,
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.info.name)
            .field("version", &self.inner.info.version)
            .field("digest", &self.inner.digest)
            .finish()
    }
}

/// One store set up for a call, with the plugin instantiated.
struct Call {
    store: Store<HostState>,
    partner: Partner,
    // Declared last: the slot is released after the store is gone.
    _slot: SlotGuard,
}

impl Plugin {
    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// SHA-256 of the component file, lowercase hex.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Size of the component file in bytes.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// World, contract version, exports and imports.
    pub fn summary(&self) -> &ComponentSummary {
        &self.inner.summary
    }

    /// Whether the compiled code came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.inner.cache
    }

    fn fail(&self, subject: &str, kind: FailureKind) -> PluginError {
        PluginError {
            plugin: self.inner.label.to_string(),
            subject: subject.to_string(),
            kind,
        }
    }

    fn start(&self, context: &Arc<PartnerContext>, subject: &str) -> Result<Call, PluginError> {
        context
            .limits
            .validate(self.inner.max_memory_bytes, self.inner.fuel_metered)
            .map_err(|e| {
                self.fail(
                    subject,
                    FailureKind::Instantiate(format!("invalid limits: {e}")),
                )
            })?;
        let slot = self.inner.slots.acquire();
        let state = HostState::new(context.clone(), self.inner.label.clone());
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = context
            .limits
            .deadline()
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis())
            .max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        if self.inner.fuel_metered {
            let fuel = context.limits.fuel.unwrap_or(u64::MAX);
            store
                .set_fuel(fuel)
                .map_err(|e| self.fail(subject, FailureKind::Instantiate(e.to_string())))?;
        }
        match self.inner.pre.instantiate(&mut store) {
            Ok(partner) => Ok(Call {
                store,
                partner,
                _slot: slot,
            }),
            Err(e) => Err(self.classify(e, &mut store, subject, context)),
        }
    }

    /// Turn a wasmtime error into the failure it stands for.
    fn classify(
        &self,
        error: wasmtime::Error,
        store: &mut Store<HostState>,
        subject: &str,
        context: &PartnerContext,
    ) -> PluginError {
        let stderr = store.data().stderr.text();
        self.flush_output(store);
        let kind = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => FailureKind::Deadline(context.limits.deadline()),
            Some(Trap::OutOfFuel) => {
                FailureKind::OutOfFuel(context.limits.fuel.unwrap_or(u64::MAX))
            }
            // A panic message names the real cause even when a refused
            // growth came before it.
            Some(_) if let Some(message) = output::panic_message(&stderr) => {
                FailureKind::Panic(message)
            }
            _ if store.data().limiter.denied => FailureKind::OutOfMemory {
                cap: context.limits.memory_bytes,
            },
            Some(trap) => FailureKind::Trap {
                trap: trap.to_string(),
                backtrace: error
                    .downcast_ref::<wasmtime::WasmBacktrace>()
                    .map(|bt| format!("\n{bt}"))
                    .unwrap_or_default(),
            },
            None if error
                .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some() =>
            {
                FailureKind::Instantiate(format!("{error:#}"))
            }
            None if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() => {
                FailureKind::Trap {
                    trap: format!("called exit with status {}", exit.0),
                    backtrace: String::new(),
                }
            }
            None => FailureKind::Trap {
                trap: format!("{error:#}"),
                backtrace: String::new(),
            },
        };
        self.fail(subject, kind)
    }

    /// Log what the plugin wrote to stdout/stderr, under its name.
    fn flush_output(&self, store: &mut Store<HostState>) {
        let data = store.data();
        for (stream, captured) in [("stdout", &data.stdout), ("stderr", &data.stderr)] {
            let text = captured.text();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let line = state::printable(line);
                tracing::info!(target: "wharf::plugin", plugin = &*self.inner.label, stream, "{line}");
            }
        }
        if data.logs_dropped > 0 {
            tracing::warn!(target: "wharf::plugin", plugin = &*self.inner.label, dropped = data.logs_dropped, "plugin log records over the per-call limit were dropped");
        }
    }

    fn describe(&self) -> Result<PluginInfo, PluginError> {
        let context = Arc::new(PartnerContext::new("start-up"));
        let subject = "start-up";
        let mut call = self.start(&context, subject)?;
        let result = call.partner.wharf_plugin_meta().call_info(&mut call.store);
        let info = match result {
            Ok(info) => info,
            Err(e) => return Err(self.classify(e, &mut call.store, subject, &context)),
        };
        self.flush_output(&mut call.store);
        decision::plugin_info(info).map_err(|e| self.fail(subject, FailureKind::InvalidDecision(e)))
    }

    /// Run `f` with a fresh instance and a `content` resource over `source`.
    fn with_content<R>(
        &self,
        context: &Arc<PartnerContext>,
        subject: &str,
        source: Box<dyn ContentSource>,
        f: impl FnOnce(&Partner, &mut Store<HostState>, Resource<ContentHandle>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let mut call = self.start(context, subject)?;
        let handle = call
            .store
            .data_mut()
            .table
            .push(ContentHandle { source })
            .map_err(|e| self.fail(subject, FailureKind::Instantiate(e.to_string())))?;
        // The store (and the content in its table) is dropped after the call.
        let result = f(&call.partner, &mut call.store, handle);
        match result {
            Ok(value) => {
                self.flush_output(&mut call.store);
                Ok(value)
            }
            Err(e) => Err(self.classify(e, &mut call.store, subject, context)),
        }
    }

    /// Decide an inbound file.
    pub fn on_file(
        &self,
        context: &Arc<PartnerContext>,
        file: &FileInfo,
        content: impl ContentSource + 'static,
    ) -> Result<Verdict, PluginError> {
        let wit_file = decision::to_wit_file(file);
        let verdict =
            self.with_content(context, &file.path, Box::new(content), |p, store, res| {
                p.wharf_plugin_inbound().call_on_file(store, &wit_file, res)
            })?;
        decision::verdict(verdict)
            .map_err(|e| self.fail(&file.path, FailureKind::InvalidDecision(e)))
    }

    /// Name the delivery of an approved document, or refuse it.
    pub fn on_export(
        &self,
        context: &Arc<PartnerContext>,
        doc: &DocumentInfo,
        content: impl ContentSource + 'static,
    ) -> Result<Result<Delivery, Rejection>, PluginError> {
        let subject = format!("document {} v{}", doc.node_id, doc.version);
        let wit_doc = decision::to_wit_document(doc);
        let result = self.with_content(context, &subject, Box::new(content), |p, store, res| {
            p.wharf_plugin_outbound()
                .call_on_export(store, &wit_doc, res)
        })?;
        let invalid = |e| self.fail(&subject, FailureKind::InvalidDecision(e));
        match result {
            Ok(delivery) => Ok(Ok(decision::delivery(delivery).map_err(invalid)?)),
            Err(rejection) => Ok(Err(decision::rejection(rejection).map_err(invalid)?)),
        }
    }

    /// Read a file of the partner's acknowledgement folder.
    pub fn on_ack(
        &self,
        context: &Arc<PartnerContext>,
        file: &FileInfo,
        content: impl ContentSource + 'static,
    ) -> Result<AckMatch, PluginError> {
        let wit_file = decision::to_wit_file(file);
        let result =
            self.with_content(context, &file.path, Box::new(content), |p, store, res| {
                p.wharf_plugin_acks().call_on_ack(store, &wit_file, res)
            })?;
        decision::ack_match(result)
            .map_err(|e| self.fail(&file.path, FailureKind::InvalidDecision(e)))
    }
}
