//! The data of one plugin store (one call) and the host side of every
//! imported interface. One module per interface would be overkill for
//! functions this small; each `impl` block below is one interface.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Result as WtResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::PartnerContext;
use super::bindings::{config, content, ecm, ftp, log, types};
use super::caps::{CapError, EntryKind, Search};
use super::content::{ContentHandle, MAX_READ};
use super::decision;
use super::output::Captured;

/// Most log records a plugin may write in one call; later ones are counted
/// and dropped so a chatty plugin cannot flood the host's log.
const MAX_LOG_RECORDS: u32 = 1000;
/// Longest log message kept.
const MAX_LOG_MESSAGE: usize = 4096;
/// Most bytes a plugin may read or write through `ftp` in one request.
const MAX_FTP_BYTES: usize = 1024 * 1024;
/// Most outbox files a plugin may write in one call, and their total bytes.
const MAX_OUTBOX_FILES: u32 = 100;
const MAX_OUTBOX_BYTES: usize = 8 * 1024 * 1024;
/// Most search results handed to a plugin.
const MAX_SEARCH_RESULTS: u32 = 1000;

/// Denies memory growth that would take all of a call's linear memories
/// together beyond the cap, and remembers that it did, so a trap that
/// follows can be reported as out-of-memory.
pub(crate) struct MemoryCap {
    pub(crate) cap: usize,
    pub(crate) used: usize,
    pub(crate) denied: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> WtResult<bool> {
        let total = self.used.saturating_add(desired.saturating_sub(current));
        if total > self.cap {
            self.denied = true;
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> WtResult<bool> {
        Ok(desired <= 100_000)
    }
}

/// What a store holds while a plugin decides one file.
pub(crate) struct HostState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryCap,
    pub(crate) context: Arc<PartnerContext>,
    pub(crate) plugin: Arc<str>,
    pub(crate) stdout: Captured,
    pub(crate) stderr: Captured,
    log_records: u32,
    pub(crate) logs_dropped: u32,
    outbox_files: u32,
    outbox_bytes: usize,
    /// Past this instant capability calls refuse to start: epoch
    /// interruption only stops wasm code, not a host call it is waiting on.
    deadline: std::time::Instant,
}

impl HostState {
    pub(crate) fn new(context: Arc<PartnerContext>, plugin: Arc<str>) -> Self {
        let context_deadline = context.limits.deadline();
        let stdout = Captured::default();
        let stderr = Captured::default();
        // Nothing ambient: no arguments, environment, preopened folders or
        // network; stdout/stderr go to the host's log; clocks and random
        // are the standard ones a guest's runtime needs to start.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                cap: usize::try_from(context.limits.memory_bytes).unwrap_or(usize::MAX),
                used: 0,
                denied: false,
            },
            context,
            plugin,
            stdout,
            stderr,
            log_records: 0,
            logs_dropped: 0,
            outbox_files: 0,
            outbox_bytes: 0,
            deadline: std::time::Instant::now() + context_deadline,
        }
    }

    fn check_deadline(&self) -> Result<(), types::HostError> {
        if std::time::Instant::now() > self.deadline {
            Err(types::HostError::Unavailable(
                "the call's deadline has passed".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// `text` with control characters escaped, safe for logs and terminals.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        std::borrow::Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

fn to_host_error(e: CapError) -> types::HostError {
    match e {
        CapError::NotFound(m) => types::HostError::NotFound(m),
        CapError::Denied(m) => types::HostError::Denied(m),
        CapError::Unavailable(m) => types::HostError::Unavailable(m),
        CapError::Invalid(m) => types::HostError::Invalid(m),
    }
}

// --- content ---------------------------------------------------------------

impl content::Host for HostState {}

impl content::HostContent for HostState {
    fn read(
        &mut self,
        handle: Resource<ContentHandle>,
        max: u32,
    ) -> Result<Vec<u8>, types::HostError> {
        if max == 0 {
            return Err(types::HostError::Invalid(
                "read of 0 bytes (an empty result means the end)".into(),
            ));
        }
        self.check_deadline()?;
        let entry = self
            .table
            .get_mut(&handle)
            .map_err(|e| types::HostError::Invalid(e.to_string()))?;
        let max = (max as usize).min(MAX_READ);
        entry
            .source
            .read_chunk(max)
            .map_err(|e| types::HostError::Unavailable(format!("reading content: {e}")))
    }

    fn size(&mut self, handle: Resource<ContentHandle>) -> u64 {
        self.table
            .get(&handle)
            .map(|c| c.source.size())
            .unwrap_or(0)
    }

    fn drop(&mut self, handle: Resource<ContentHandle>) -> WtResult<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

// --- log -------------------------------------------------------------------

impl log::Host for HostState {
    fn log(&mut self, level: types::Level, message: String) {
        if self.log_records >= MAX_LOG_RECORDS {
            self.logs_dropped += 1;
            return;
        }
        self.log_records += 1;
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let message = printable(&message);
        let plugin = &*self.plugin;
        let partner = &self.context.partner;
        match level {
            types::Level::Trace => {
                tracing::trace!(target: "wharf::plugin", plugin, partner, "{message}")
            }
            types::Level::Debug => {
                tracing::debug!(target: "wharf::plugin", plugin, partner, "{message}")
            }
            types::Level::Info => {
                tracing::info!(target: "wharf::plugin", plugin, partner, "{message}")
            }
            types::Level::Warn => {
                tracing::warn!(target: "wharf::plugin", plugin, partner, "{message}")
            }
            types::Level::Error => {
                tracing::error!(target: "wharf::plugin", plugin, partner, "{message}")
            }
        }
    }
}

// --- config ----------------------------------------------------------------

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.context.settings.get(&key).cloned()
    }

    fn keys(&mut self) -> Vec<String> {
        self.context.settings.keys().cloned().collect()
    }
}

// --- ftp -------------------------------------------------------------------

impl ftp::Host for HostState {
    fn list_folder(&mut self, folder: String) -> Result<Vec<types::Entry>, types::HostError> {
        self.check_deadline()?;
        let path = decision::relative_path(&folder).map_err(types::HostError::Denied)?;
        let entries = self
            .context
            .files
            .list(&path.to_string())
            .map_err(to_host_error)?;
        Ok(entries
            .into_iter()
            .map(|e| types::Entry {
                name: e.name,
                kind: match e.kind {
                    EntryKind::File => types::EntryKind::File,
                    EntryKind::Directory => types::EntryKind::Directory,
                    EntryKind::Symlink => types::EntryKind::Symlink,
                    EntryKind::Other => types::EntryKind::Other,
                },
                size: e.size,
                modified: e.modified,
            })
            .collect())
    }

    fn read_file(&mut self, path: String, max_bytes: u32) -> Result<Vec<u8>, types::HostError> {
        self.check_deadline()?;
        let rel = decision::relative_path(&path).map_err(types::HostError::Denied)?;
        if rel.is_root() {
            return Err(types::HostError::Invalid("a file path is empty".into()));
        }
        let max = (max_bytes as usize).min(MAX_FTP_BYTES);
        self.context
            .files
            .read(&rel.to_string(), max)
            .map_err(to_host_error)
    }

    fn write_file(&mut self, name: String, data: Vec<u8>) -> Result<(), types::HostError> {
        self.check_deadline()?;
        decision::segment(&name).map_err(types::HostError::Denied)?;
        if data.len() > MAX_FTP_BYTES {
            return Err(types::HostError::Denied(format!(
                "{} bytes is above the {MAX_FTP_BYTES}-byte limit",
                data.len()
            )));
        }
        if self.outbox_files >= MAX_OUTBOX_FILES
            || self.outbox_bytes + data.len() > MAX_OUTBOX_BYTES
        {
            return Err(types::HostError::Denied(format!(
                "a call may write at most {MAX_OUTBOX_FILES} outbox files and {MAX_OUTBOX_BYTES} bytes"
            )));
        }
        self.context
            .files
            .write_outbox(&name, &data)
            .map_err(to_host_error)?;
        self.outbox_files += 1;
        self.outbox_bytes += data.len();
        Ok(())
    }
}

// --- ecm -------------------------------------------------------------------

impl ecm::Host for HostState {
    fn find_workspace(
        &mut self,
        workspace_type: String,
        business_id: String,
    ) -> Result<Option<u64>, types::HostError> {
        self.check_deadline()?;
        self.context
            .repository
            .find_workspace(&workspace_type, &business_id)
            .map_err(to_host_error)
    }

    fn search(
        &mut self,
        query: ecm::SearchQuery,
    ) -> Result<Vec<types::DocumentInfo>, types::HostError> {
        self.check_deadline()?;
        let folder = match query.folder {
            Some(f) => Some(
                decision::relative_path(&f)
                    .map_err(types::HostError::Denied)?
                    .to_string(),
            ),
            None => None,
        };
        let search = Search {
            folder,
            name: query.name,
            conditions: query
                .conditions
                .into_iter()
                .map(|c| (c.category, c.attribute, c.value))
                .collect(),
            limit: query.limit.clamp(1, MAX_SEARCH_RESULTS),
        };
        let docs = self
            .context
            .repository
            .search(&search)
            .map_err(to_host_error)?;
        Ok(docs.iter().map(decision::to_wit_document).collect())
    }

    fn attributes(&mut self, node_id: u64) -> Result<Vec<types::Category>, types::HostError> {
        self.check_deadline()?;
        let categories = self
            .context
            .repository
            .attributes(node_id)
            .map_err(to_host_error)?;
        Ok(categories.iter().map(decision::to_wit_category).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cap_counts_every_memory_of_the_call() {
        let mut cap = MemoryCap {
            cap: 100,
            used: 0,
            denied: false,
        };
        assert!(cap.memory_growing(0, 60, None).unwrap());
        // A second memory may not take the total past the cap.
        assert!(!cap.memory_growing(0, 60, None).unwrap());
        assert!(cap.denied);
        assert!(cap.memory_growing(0, 40, None).unwrap());
        assert!(!cap.memory_growing(60, 61, None).unwrap());
    }

    #[test]
    fn outbox_writes_are_bounded_per_call() {
        use super::ftp::Host as _;
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = PartnerContext::new("p");
        ctx.files = Arc::new(super::super::LocalPartnerFiles::open(dir.path(), "outbox").unwrap());
        let mut state = HostState::new(Arc::new(ctx), Arc::from("test"));
        for i in 0..MAX_OUTBOX_FILES {
            state
                .write_file(format!("ack{i}.txt"), b"ok".to_vec())
                .unwrap();
        }
        assert!(matches!(
            state.write_file("one-more.txt".into(), b"ok".to_vec()),
            Err(types::HostError::Denied(_))
        ));
        let mut fresh = HostState::new(state.context.clone(), Arc::from("test"));
        let mib = vec![0u8; 1024 * 1024];
        for i in 0..8 {
            fresh
                .write_file(format!("big{i}.bin"), mib.clone())
                .unwrap();
        }
        assert!(fresh.write_file("big8.bin".into(), vec![0u8; 1]).is_err());
    }

    #[test]
    fn symlinks_are_listed_as_symlinks() {
        use super::ftp::Host as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let mut ctx = PartnerContext::new("p");
        ctx.files = Arc::new(super::super::LocalPartnerFiles::open(dir.path(), "outbox").unwrap());
        let mut state = HostState::new(Arc::new(ctx), Arc::from("test"));
        let entries = state.list_folder(String::new()).unwrap();
        let kind = |n: &str| entries.iter().find(|e| e.name == n).map(|e| e.kind);
        assert_eq!(kind("link"), Some(types::EntryKind::Symlink));
        assert_eq!(kind("real.txt"), Some(types::EntryKind::File));
        // Reading through the link is refused: it points outside the root.
        assert!(state.read_file("link".into(), 1024).is_err());
    }

    #[test]
    fn control_characters_are_escaped_for_logs() {
        assert_eq!(printable("ok"), "ok");
        assert_eq!(printable("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
    }
}
