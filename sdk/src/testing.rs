//! Unit-test a plugin's rules natively, with `cargo test` on the host target.
//!
//! A component's imports only exist inside the wharf host. On any target but
//! `wasm32` the SDK answers them from a [`TestHost`] instead: an in-memory
//! partner with settings (`host::setting`), remote files (`host::list_folder`,
//! `host::read_file`, `host::write_file`), repository look-ups
//! (`host::find_workspace`, `host::search`, `host::attributes`) and a log
//! that records every line. [`Content`] is then a byte buffer made with
//! [`Content::new`].
//!
//! ```
//! use wharf_sdk::prelude::*;
//! use wharf_sdk::testing::TestHost;
//!
//! struct Orders;
//!
//! impl Plugin for Orders {
//!     fn on_file(file: FileInfo, content: &Content) -> Verdict {
//!         let allowed = host::setting("extension").unwrap_or_else(|| ".csv".into());
//!         if !file.name.ends_with(&allowed) {
//!             return Verdict::reject("wrong-type", "the file type is not the agreed one");
//!         }
//!         host::info(&format!("{}: {} bytes", file.name, content.size()));
//!         Verdict::accept(Filing::to_folder("Orders", &file.name))
//!     }
//! }
//!
//! let host = TestHost::new().setting("extension", ".txt");
//! let verdict = host.decide::<Orders>("order-1.txt", "id\n1\n");
//! assert_eq!(verdict.expect_accept().target, Target::Folder("Orders".into()));
//! assert!(host.logged("order-1.txt: 5 bytes"));
//!
//! let refused = host.decide::<Orders>("order-1.csv", "id\n1\n");
//! assert_eq!(refused.expect_reject().code, "wrong-type");
//! ```
//!
//! Each test thread has its own host: tests running in parallel do not see
//! each other. Outside [`TestHost::run`] (and the `on_*` methods that use
//! it) the host functions behave like a host with nothing bound: no
//! settings, remote folders and repository `unavailable`, log lines printed
//! to standard error.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::{
    AckMatch, Delivery, DocumentInfo, FileInfo, HostError, Level, Plugin, Rejection, Verdict,
};

/// The host caps one read of a file's content at this many bytes.
const MAX_READ: usize = 1024 * 1024;
/// Largest companion file read and largest outbox file written.
const MAX_FTP_BYTES: usize = 1024 * 1024;
/// Outbox files one call may write.
const MAX_OUTBOX_FILES: usize = 100;
/// Outbox bytes one call may write.
const MAX_OUTBOX_BYTES: usize = 8 * 1024 * 1024;
/// Most results of one search.
const MAX_SEARCH_RESULTS: u32 = 1000;
/// Longest name segment.
const MAX_SEGMENT: usize = 248;
/// Deepest folder path.
const MAX_DEPTH: usize = 32;

/// The bytes of the file being decided, in memory. In the component the
/// host streams them; natively a test makes them with [`Content::new`].
///
/// It reads like the host's content: at most 1 MiB per
/// [`read`](Content::read), an empty result at the end.
pub struct Content {
    data: Vec<u8>,
    position: Cell<usize>,
    error: Option<HostError>,
}

impl Content {
    /// Content holding `bytes`.
    ///
    /// ```
    /// use std::io::Read;
    ///
    /// let content = wharf_sdk::Content::new("id,amount\n1,2\n");
    /// let mut text = String::new();
    /// content.reader().read_to_string(&mut text).unwrap();
    /// assert_eq!(text, "id,amount\n1,2\n");
    /// ```
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Content {
            data: bytes.into(),
            position: Cell::new(0),
            error: None,
        }
    }

    /// Content that yields `bytes` and then fails with `error`, as a
    /// broken connection would.
    pub fn failing(bytes: impl Into<Vec<u8>>, error: HostError) -> Self {
        Content {
            error: Some(error),
            ..Content::new(bytes)
        }
    }

    /// Read up to `max` bytes (at most 1 MiB). An empty list means the end.
    pub fn read(&self, max: u32) -> Result<Vec<u8>, HostError> {
        if max == 0 {
            return Err(HostError::Invalid(
                "read of 0 bytes (an empty result means the end)".into(),
            ));
        }
        let start = self.position.get();
        if start == self.data.len() {
            return match &self.error {
                Some(error) => Err(error.clone()),
                None => Ok(Vec::new()),
            };
        }
        let end = start + (max as usize).min(MAX_READ).min(self.data.len() - start);
        self.position.set(end);
        Ok(self.data[start..end].to_vec())
    }

    /// Total size of the content in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("size", &self.data.len())
            .field("position", &self.position.get())
            .finish()
    }
}

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// An in-memory wharf host for native unit tests: the partner's settings,
/// remote files and repository, and what the plugin logged and wrote.
///
/// Build it with the chained methods, run the plugin with
/// [`on_file`](TestHost::on_file), [`decide`](TestHost::decide),
/// [`on_export`](TestHost::on_export), [`on_ack`](TestHost::on_ack) or any
/// code with [`run`](TestHost::run), then look at [`logs`](TestHost::logs)
/// and [`written`](TestHost::written). Clones share the same state.
///
/// Host errors follow the real host: a path that is absolute or holds `..`
/// is `denied`, a missing file `not-found`, a companion file above the size
/// asked for `denied`, more than 100 outbox files or 8 MiB in one call
/// `denied`.
#[derive(Clone)]
pub struct TestHost {
    state: Rc<RefCell<State>>,
}

#[derive(Default)]
struct State {
    partner: String,
    settings: BTreeMap<String, String>,
    remote: BTreeMap<String, Remote>,
    ftp_error: Option<HostError>,
    workspaces: BTreeMap<(String, String), u64>,
    documents: BTreeMap<u64, DocumentInfo>,
    ecm_error: Option<HostError>,
    logs: Vec<LogLine>,
    written: BTreeMap<String, Vec<u8>>,
    outbox_files: usize,
    outbox_bytes: usize,
}

enum Remote {
    File {
        data: Vec<u8>,
        modified: Option<u64>,
    },
    Folder,
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("TestHost")
            .field("partner", &state.partner)
            .field("settings", &state.settings)
            .field("remote", &state.remote.keys().collect::<Vec<_>>())
            .field("workspaces", &state.workspaces)
            .field("documents", &state.documents.keys().collect::<Vec<_>>())
            .field("logs", &state.logs.len())
            .field("written", &state.written.keys().collect::<Vec<_>>())
            .finish()
    }
}

thread_local! {
    /// The hosts of the [`TestHost::run`] calls in progress on this thread,
    /// innermost last.
    static ACTIVE: RefCell<Vec<Rc<RefCell<State>>>> = const { RefCell::new(Vec::new()) };
}

/// Pops the host pushed by [`TestHost::run`], also when the plugin panics.
struct Activation;

impl Drop for Activation {
    fn drop(&mut self) {
        ACTIVE.with(|active| active.borrow_mut().pop());
    }
}

impl TestHost {
    /// A host for partner `test` with no settings, an empty remote root and
    /// an empty repository.
    pub fn new() -> Self {
        TestHost {
            state: Rc::new(RefCell::new(State {
                partner: "test".into(),
                ..State::default()
            })),
        }
    }

    /// The partner id put in the [`FileInfo`]s this host makes.
    pub fn partner(self, id: &str) -> Self {
        self.state.borrow_mut().partner = id.to_string();
        self
    }

    /// Set a plugin setting (a key of the partner's `[partner.settings]`).
    pub fn setting(self, key: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .settings
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Put a file under the partner's remote root; its folders exist too.
    ///
    /// Panics if `path` is not a relative path to a file.
    pub fn remote_file(self, path: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.remote_file_modified(path, bytes, None)
    }

    /// [`remote_file`](TestHost::remote_file) with a modification time
    /// (seconds since the Unix epoch) shown in listings.
    pub fn remote_file_modified(
        self,
        path: &str,
        bytes: impl Into<Vec<u8>>,
        modified: Option<u64>,
    ) -> Self {
        let segments = relative(path).unwrap_or_else(|e| panic!("remote_file: {e}"));
        assert!(!segments.is_empty(), "remote_file: the path is empty");
        {
            let mut state = self.state.borrow_mut();
            for depth in 1..segments.len() {
                state
                    .remote
                    .insert(segments[..depth].join("/"), Remote::Folder);
            }
            state.remote.insert(
                segments.join("/"),
                Remote::File {
                    data: bytes.into(),
                    modified,
                },
            );
        }
        self
    }

    /// Make an (empty) folder under the partner's remote root.
    ///
    /// Panics if `path` is not a relative path.
    pub fn remote_folder(self, path: &str) -> Self {
        let segments = relative(path).unwrap_or_else(|e| panic!("remote_folder: {e}"));
        {
            let mut state = self.state.borrow_mut();
            for depth in 1..=segments.len() {
                state
                    .remote
                    .insert(segments[..depth].join("/"), Remote::Folder);
            }
        }
        self
    }

    /// Make every remote-folder call (`list_folder`, `read_file`,
    /// `write_file`) fail with `error`, e.g. an `unavailable` server.
    pub fn ftp_error(self, error: HostError) -> Self {
        self.state.borrow_mut().ftp_error = Some(error);
        self
    }

    /// A business workspace of the repository: `find_workspace` answers
    /// `node_id` for this type and business id.
    pub fn workspace(self, workspace_type: &str, business_id: &str, node_id: u64) -> Self {
        self.state.borrow_mut().workspaces.insert(
            (workspace_type.to_string(), business_id.to_string()),
            node_id,
        );
        self
    }

    /// A document of the repository, found by `search` (in `doc.folder`,
    /// by name and by its categories' attribute values) and whose
    /// categories `attributes(doc.node_id)` answers.
    pub fn document(self, doc: DocumentInfo) -> Self {
        self.state.borrow_mut().documents.insert(doc.node_id, doc);
        self
    }

    /// Make every repository call (`find_workspace`, `search`,
    /// `attributes`) fail with `error`.
    pub fn ecm_error(self, error: HostError) -> Self {
        self.state.borrow_mut().ecm_error = Some(error);
        self
    }

    /// Run `f` as one plugin call with this host behind the `host`
    /// functions: settings, files and look-ups come from here, log lines and
    /// outbox writes are recorded here.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        {
            let mut state = self.state.borrow_mut();
            state.outbox_files = 0;
            state.outbox_bytes = 0;
        }
        ACTIVE.with(|active| active.borrow_mut().push(self.state.clone()));
        let _active = Activation;
        f()
    }

    /// Call the plugin's [`Plugin::on_file`] on this host.
    pub fn on_file<P: Plugin>(&self, file: FileInfo, content: &Content) -> Verdict {
        self.run(|| P::on_file(file, content))
    }

    /// Decide a file named by `path` (relative to the partner's root) with
    /// these bytes: [`on_file`](TestHost::on_file) with a [`FileInfo`] from
    /// [`file_info`](TestHost::file_info).
    pub fn decide<P: Plugin>(&self, path: &str, bytes: impl Into<Vec<u8>>) -> Verdict {
        let content = Content::new(bytes);
        let file = self.file_info(path, content.size());
        self.on_file::<P>(file, &content)
    }

    /// Call the plugin's [`Plugin::on_export`] on this host.
    pub fn on_export<P: Plugin>(
        &self,
        doc: DocumentInfo,
        content: &Content,
    ) -> Result<Delivery, Rejection> {
        self.run(|| P::on_export(doc, content))
    }

    /// Call the plugin's [`Plugin::on_ack`] on this host.
    pub fn on_ack<P: Plugin>(&self, file: FileInfo, content: &Content) -> AckMatch {
        self.run(|| P::on_ack(file, content))
    }

    /// The [`FileInfo`] the host would offer for `path` (relative,
    /// `/`-separated) of `size` bytes: this host's partner, the last segment
    /// as the name, no modification time.
    pub fn file_info(&self, path: &str, size: u64) -> FileInfo {
        FileInfo {
            partner: self.state.borrow().partner.clone(),
            path: path.to_string(),
            name: path.rsplit('/').next().unwrap_or(path).to_string(),
            size,
            modified: None,
        }
    }

    /// Every line logged so far, oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state.borrow().logs.clone()
    }

    /// Whether some logged line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.state
            .borrow()
            .logs
            .iter()
            .any(|l| l.message.contains(text))
    }

    /// The bytes last written to the outbox under `name`, if any.
    pub fn written(&self, name: &str) -> Option<Vec<u8>> {
        self.state.borrow().written.get(name).cloned()
    }

    /// The names of the outbox files written so far, sorted.
    pub fn written_names(&self) -> Vec<String> {
        self.state.borrow().written.keys().cloned().collect()
    }
}

/// The innermost active host of this thread, if any.
fn active() -> Option<Rc<RefCell<State>>> {
    ACTIVE.with(|active| active.borrow().last().cloned())
}

/// Parse a relative `/`-separated path as the host does: no absolute paths,
/// drive letters, `.`, `..`, backslashes or control characters; empty is
/// the root.
fn relative(path: &str) -> Result<Vec<String>, String> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(format!("path {path:?} is absolute"));
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err(format!("path {path:?} names a drive"));
    }
    let mut segments = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        segment(part).map_err(|e| format!("path {:?}: {e}", path.escape_debug().to_string()))?;
        segments.push(part.to_string());
    }
    if segments.len() > MAX_DEPTH {
        return Err(format!("path {path:?} is deeper than {MAX_DEPTH} folders"));
    }
    Ok(segments)
}

/// Check one name segment as the host does.
fn segment(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a name"));
    }
    if let Some(c) = name.chars().find(|&c| c == '/' || c == '\\') {
        return Err(format!("name {name:?} contains {c:?}"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    {
        return Err(format!(
            "name {:?} contains control characters",
            name.escape_debug().to_string()
        ));
    }
    if name.trim() != name {
        return Err(format!("name {name:?} starts or ends with whitespace"));
    }
    if name.chars().count() > MAX_SEGMENT {
        return Err(format!("a name is longer than {MAX_SEGMENT} characters"));
    }
    Ok(())
}

/// An attribute value as the repository compares it in a search condition.
fn as_text(value: &crate::AttributeValue) -> String {
    use crate::AttributeValue;
    match value {
        AttributeValue::Text(t) | AttributeValue::Date(t) | AttributeValue::Decimal(t) => t.clone(),
        AttributeValue::Integer(i) => i.to_string(),
        AttributeValue::Boolean(b) => b.to_string(),
        AttributeValue::TextList(l) => l.join("|"),
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any text and
/// letters compare without regard to ASCII case (as the repository does).
fn wildcard(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let name: Vec<char> = name.chars().map(|c| c.to_ascii_lowercase()).collect();
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The contract's imports, answered by the active [`TestHost`]. Re-exported
/// as [`crate::host`] on targets other than `wasm32`.
pub(crate) mod imports {
    use super::{
        MAX_FTP_BYTES, MAX_OUTBOX_BYTES, MAX_OUTBOX_FILES, MAX_SEARCH_RESULTS, Remote, active,
        as_text, relative, segment, wildcard,
    };
    use crate::host::SearchQuery;
    use crate::{Category, DocumentInfo, Entry, EntryKind, HostError, Level};

    const NO_FILES: &str =
        "no partner folder is bound (no wharf_sdk::testing::TestHost is running)";
    const NO_REPOSITORY: &str =
        "no repository is bound (no wharf_sdk::testing::TestHost is running)";

    /// The value of one setting, if set.
    pub fn setting(key: &str) -> Option<String> {
        active().and_then(|s| s.borrow().settings.get(key).cloned())
    }

    /// The names of all settings.
    pub fn setting_keys() -> Vec<String> {
        active()
            .map(|s| s.borrow().settings.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// List a folder under the partner's root ('/'-separated, relative).
    pub fn list_folder(folder: &str) -> Result<Vec<Entry>, HostError> {
        let state = active().ok_or_else(|| HostError::Unavailable(NO_FILES.into()))?;
        let state = state.borrow();
        if let Some(error) = &state.ftp_error {
            return Err(error.clone());
        }
        let folder = relative(folder).map_err(HostError::Denied)?.join("/");
        match state.remote.get(&folder) {
            Some(Remote::File { .. }) => {
                return Err(HostError::Unavailable(format!("{folder}: not a folder")));
            }
            None if !folder.is_empty() => return Err(HostError::NotFound(folder)),
            _ => {}
        }
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        let entries = state
            .remote
            .iter()
            .filter_map(|(path, node)| {
                let name = path.strip_prefix(&prefix)?;
                if name.contains('/') {
                    return None;
                }
                Some(match node {
                    Remote::File { data, modified } => Entry {
                        name: name.to_string(),
                        kind: EntryKind::File,
                        size: data.len() as u64,
                        modified: *modified,
                    },
                    Remote::Folder => Entry {
                        name: name.to_string(),
                        kind: EntryKind::Directory,
                        size: 0,
                        modified: None,
                    },
                })
            })
            .collect();
        Ok(entries)
    }

    /// Read a small companion file under the partner's root. A file larger
    /// than `max_bytes` (capped at 1 MiB) is refused with `denied`, as is
    /// anything that is not a regular file.
    pub fn read_file(path: &str, max_bytes: u32) -> Result<Vec<u8>, HostError> {
        let state = active().ok_or_else(|| HostError::Unavailable(NO_FILES.into()))?;
        let state = state.borrow();
        if let Some(error) = &state.ftp_error {
            return Err(error.clone());
        }
        let path = relative(path).map_err(HostError::Denied)?.join("/");
        if path.is_empty() {
            return Err(HostError::Invalid("a file path is empty".into()));
        }
        let max = (max_bytes as usize).min(MAX_FTP_BYTES);
        match state.remote.get(&path) {
            None => Err(HostError::NotFound(path)),
            Some(Remote::Folder) => Err(HostError::Denied(format!("{path} is not a regular file"))),
            Some(Remote::File { data, .. }) if data.len() > max => Err(HostError::Denied(format!(
                "{path} is {} bytes, above the {max}-byte limit",
                data.len()
            ))),
            Some(Remote::File { data, .. }) => Ok(data.clone()),
        }
    }

    /// Write a file into the partner's outbox, replacing one of the same
    /// name. One call may write at most 100 files and 8 MiB in all (1 MiB
    /// per file).
    pub fn write_file(name: &str, data: &[u8]) -> Result<(), HostError> {
        let state = active().ok_or_else(|| HostError::Unavailable(NO_FILES.into()))?;
        let mut state = state.borrow_mut();
        if let Some(error) = &state.ftp_error {
            return Err(error.clone());
        }
        segment(name).map_err(HostError::Denied)?;
        if data.len() > MAX_FTP_BYTES {
            return Err(HostError::Denied(format!(
                "{} bytes is above the {MAX_FTP_BYTES}-byte limit",
                data.len()
            )));
        }
        if state.outbox_files >= MAX_OUTBOX_FILES
            || state.outbox_bytes + data.len() > MAX_OUTBOX_BYTES
        {
            return Err(HostError::Denied(format!(
                "a call may write at most {MAX_OUTBOX_FILES} outbox files and {MAX_OUTBOX_BYTES} bytes"
            )));
        }
        state.outbox_files += 1;
        state.outbox_bytes += data.len();
        state.written.insert(name.to_string(), data.to_vec());
        Ok(())
    }

    /// Find a business workspace by its type and business id; returns its
    /// node id.
    pub fn find_workspace(
        workspace_type: &str,
        business_id: &str,
    ) -> Result<Option<u64>, HostError> {
        let state = active().ok_or_else(|| HostError::Unavailable(NO_REPOSITORY.into()))?;
        let state = state.borrow();
        if let Some(error) = &state.ecm_error {
            return Err(error.clone());
        }
        Ok(state
            .workspaces
            .get(&(workspace_type.to_string(), business_id.to_string()))
            .copied())
    }

    /// Search documents: in a folder and its sub-folders, by name with `*`
    /// wildcards, by attribute values; at most `limit` results (capped at
    /// 1000), in node id order.
    pub fn search(query: &SearchQuery) -> Result<Vec<DocumentInfo>, HostError> {
        let state = active().ok_or_else(|| HostError::Unavailable(NO_REPOSITORY.into()))?;
        let state = state.borrow();
        if let Some(error) = &state.ecm_error {
            return Err(error.clone());
        }
        let folder = match &query.folder {
            Some(f) => relative(f).map_err(HostError::Denied)?.join("/"),
            None => String::new(),
        };
        let limit = query.limit.clamp(1, MAX_SEARCH_RESULTS) as usize;
        Ok(state
            .documents
            .values()
            .filter(|doc| {
                folder.is_empty()
                    || doc.folder == folder
                    || doc
                        .folder
                        .strip_prefix(&folder)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .filter(|doc| query.name.as_deref().is_none_or(|p| wildcard(p, &doc.name)))
            .filter(|doc| {
                query.conditions.iter().all(|c| {
                    doc.categories.iter().any(|cat| {
                        cat.name == c.category
                            && cat
                                .attributes
                                .iter()
                                .any(|a| a.name == c.attribute && as_text(&a.value) == c.value)
                    })
                })
            })
            .take(limit)
            .cloned()
            .collect())
    }

    /// Read the categories and attributes of a node: a document's
    /// categories, none for a workspace, `not-found` for anything else.
    pub fn attributes(node_id: u64) -> Result<Vec<Category>, HostError> {
        let state = active().ok_or_else(|| HostError::Unavailable(NO_REPOSITORY.into()))?;
        let state = state.borrow();
        if let Some(error) = &state.ecm_error {
            return Err(error.clone());
        }
        if let Some(doc) = state.documents.get(&node_id) {
            return Ok(doc.categories.clone());
        }
        if state.workspaces.values().any(|&id| id == node_id) {
            return Ok(Vec::new());
        }
        Err(HostError::NotFound(format!("node {node_id}")))
    }

    /// Write one log record: kept by the active host, printed to standard
    /// error when there is none.
    pub(crate) fn log(level: Level, message: &str) {
        match active() {
            Some(state) => state.borrow_mut().logs.push(super::LogLine {
                level,
                message: message.to_string(),
            }),
            None => eprintln!("[{level:?}] {message}"),
        }
    }
}

// The in-memory imports have exactly the signatures of the contract's
// imports: a rule that compiles natively compiles for the component too.
// The function types are spelled out on purpose.
#[allow(clippy::type_complexity)]
mod same_signatures {
    use super::imports;
    use crate::bindings::wharf::plugin::{config, ecm, ftp, log};
    use crate::{Category, DocumentInfo, Entry, HostError, Level};

    const _: [fn(&str) -> Option<String>; 2] = [config::get, imports::setting];
    const _: [fn() -> Vec<String>; 2] = [config::keys, imports::setting_keys];
    const _: [fn(&str) -> Result<Vec<Entry>, HostError>; 2] =
        [ftp::list_folder, imports::list_folder];
    const _: [fn(&str, u32) -> Result<Vec<u8>, HostError>; 2] =
        [ftp::read_file, imports::read_file];
    const _: [fn(&str, &[u8]) -> Result<(), HostError>; 2] = [ftp::write_file, imports::write_file];
    const _: [fn(&str, &str) -> Result<Option<u64>, HostError>; 2] =
        [ecm::find_workspace, imports::find_workspace];
    const _: [fn(&ecm::SearchQuery) -> Result<Vec<DocumentInfo>, HostError>; 2] =
        [ecm::search, imports::search];
    const _: [fn(u64) -> Result<Vec<Category>, HostError>; 2] =
        [ecm::attributes, imports::attributes];
    const _: [fn(Level, &str); 2] = [log::log, imports::log];
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::host::{self, Condition, SearchQuery};
    use crate::{Attribute, AttributeValue, Category, EntryKind, Filing, Target};

    struct Echo;

    impl Plugin for Echo {
        fn on_file(file: FileInfo, content: &Content) -> Verdict {
            let mut text = String::new();
            if let Err(e) = content.reader().read_to_string(&mut text) {
                return Verdict::reject("unreadable", &e.to_string());
            }
            let folder = host::setting("folder").unwrap_or_else(|| "Inbox".into());
            host::info(&format!("{} from {}", file.name, file.partner));
            Verdict::accept(Filing::to_folder(&folder, &file.name).description(&text))
        }
    }

    fn query(
        folder: Option<&str>,
        name: Option<&str>,
        conditions: &[(&str, &str, &str)],
    ) -> SearchQuery {
        SearchQuery {
            folder: folder.map(String::from),
            name: name.map(String::from),
            conditions: conditions
                .iter()
                .map(|(c, a, v)| Condition {
                    category: c.to_string(),
                    attribute: a.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            limit: 10,
        }
    }

    fn doc(node_id: u64, folder: &str, name: &str, supplier: &str) -> DocumentInfo {
        DocumentInfo {
            node_id,
            name: name.into(),
            version: 1,
            size: 10,
            mime_type: "text/csv".into(),
            folder: folder.into(),
            sha256: "0".repeat(64),
            categories: vec![Category {
                name: "Invoice".into(),
                attributes: vec![Attribute {
                    name: "Supplier".into(),
                    value: AttributeValue::Text(supplier.into()),
                }],
            }],
        }
    }

    #[test]
    fn a_plugin_runs_against_the_settings_and_logs_of_its_host() {
        let host = TestHost::new().partner("acme").setting("folder", "In/Acme");
        let verdict = host.decide::<Echo>("drop/a.csv", "hello");
        let filing = verdict.expect_accept();
        assert_eq!(filing.target, Target::Folder("In/Acme".into()));
        assert_eq!(filing.name, "a.csv");
        assert_eq!(filing.description.as_deref(), Some("hello"));
        assert_eq!(
            host.logs(),
            [LogLine {
                level: Level::Info,
                message: "a.csv from acme".into()
            }]
        );
        // Another host on the same thread sees none of it.
        let other = TestHost::new();
        let filing = other.decide::<Echo>("a.csv", "").expect_accept().clone();
        assert_eq!(filing.target, Target::Folder("Inbox".into()));
        assert!(!other.logged("acme"));
    }

    #[test]
    fn outside_a_host_nothing_is_bound() {
        assert_eq!(host::setting("folder"), None);
        assert!(host::setting_keys().is_empty());
        assert!(matches!(
            host::list_folder(""),
            Err(HostError::Unavailable(_))
        ));
        assert!(matches!(
            host::find_workspace("Supplier", "1"),
            Err(HostError::Unavailable(_))
        ));
        host::info("printed, not kept");
        let host = TestHost::new().setting("k", "v");
        assert_eq!(host.run(|| host::setting("k")), Some("v".into()));
        assert_eq!(host::setting("k"), None, "the host is gone after run");
    }

    #[test]
    fn the_host_is_popped_when_the_plugin_panics() {
        let host = TestHost::new().setting("k", "v");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            host.run(|| panic!("plugin bug"))
        }));
        assert!(result.is_err());
        assert_eq!(host::setting("k"), None);
    }

    #[test]
    fn content_reads_in_chunks_of_at_most_a_mebibyte_then_ends() {
        let content = Content::new(vec![7u8; MAX_READ + 10]);
        assert_eq!(content.size(), (MAX_READ + 10) as u64);
        assert!(matches!(content.read(0), Err(HostError::Invalid(_))));
        assert_eq!(content.read(u32::MAX).unwrap().len(), MAX_READ);
        assert_eq!(content.read(4).unwrap(), [7, 7, 7, 7]);
        assert_eq!(content.read(100).unwrap().len(), 6);
        assert!(content.read(100).unwrap().is_empty());
    }

    #[test]
    fn a_failing_content_is_a_read_error_for_the_rule() {
        let host = TestHost::new();
        let content = Content::failing("par", HostError::Unavailable("connection lost".into()));
        let verdict = host.on_file::<Echo>(host.file_info("a.csv", 10), &content);
        let rejection = verdict.expect_reject();
        assert_eq!(rejection.code, "unreadable");
        assert!(
            rejection.message.contains("connection lost"),
            "{rejection:?}"
        );
    }

    #[test]
    fn remote_files_are_listed_read_and_confined() {
        let host = TestHost::new()
            .remote_file_modified("inbox/a.csv", "a,b\n", Some(1_700_000_000))
            .remote_file("inbox/sub/b.pdf", vec![0u8; 2048])
            .remote_folder("archive");
        host.run(|| {
            let root = host::list_folder("").unwrap();
            let names: Vec<_> = root.iter().map(|e| (e.name.as_str(), e.kind)).collect();
            assert_eq!(
                names,
                [
                    ("archive", EntryKind::Directory),
                    ("inbox", EntryKind::Directory)
                ]
            );
            let inbox = host::list_folder("inbox/").unwrap();
            assert_eq!(inbox.len(), 2);
            assert_eq!(inbox[0].name, "a.csv");
            assert_eq!(inbox[0].size, 4);
            assert_eq!(inbox[0].modified, Some(1_700_000_000));
            assert_eq!(inbox[1].kind, EntryKind::Directory);
            assert!(host::list_folder("archive").unwrap().is_empty());
            assert!(matches!(
                host::list_folder("nope"),
                Err(HostError::NotFound(_))
            ));
            assert!(matches!(
                host::list_folder("../x"),
                Err(HostError::Denied(_))
            ));

            assert_eq!(host::read_file("inbox/a.csv", 100).unwrap(), b"a,b\n");
            assert!(matches!(
                host::read_file("inbox/sub/b.pdf", 1024),
                Err(HostError::Denied(_))
            ));
            assert_eq!(
                host::read_file("inbox/sub/b.pdf", 4096).unwrap().len(),
                2048
            );
            assert!(matches!(
                host::read_file("inbox", 10),
                Err(HostError::Denied(_))
            ));
            assert!(matches!(
                host::read_file("/etc/passwd", 10),
                Err(HostError::Denied(_))
            ));
            assert!(matches!(
                host::read_file("", 10),
                Err(HostError::Invalid(_))
            ));
            assert!(matches!(
                host::read_file("gone.csv", 10),
                Err(HostError::NotFound(_))
            ));
        });
    }

    #[test]
    fn outbox_writes_are_recorded_and_limited_per_call() {
        let host = TestHost::new();
        host.run(|| {
            host::write_file("receipt.txt", b"ok").unwrap();
            assert!(matches!(
                host::write_file("../receipt.txt", b"x"),
                Err(HostError::Denied(_))
            ));
            for i in 1..MAX_OUTBOX_FILES {
                host::write_file(&format!("r{i}"), b"x").unwrap();
            }
            assert!(matches!(
                host::write_file("one-more", b"x"),
                Err(HostError::Denied(_))
            ));
        });
        assert_eq!(host.written("receipt.txt").as_deref(), Some(&b"ok"[..]));
        assert_eq!(host.written_names().len(), MAX_OUTBOX_FILES);
        // The limit is per call.
        host.run(|| host::write_file("next-call", b"x")).unwrap();
    }

    #[test]
    fn failures_can_be_injected() {
        let host = TestHost::new()
            .remote_file("a.txt", "x")
            .ftp_error(HostError::Unavailable("server down".into()))
            .ecm_error(HostError::Denied("no access".into()));
        host.run(|| {
            assert_eq!(
                host::read_file("a.txt", 10),
                Err(HostError::Unavailable("server down".into()))
            );
            assert!(matches!(
                host::list_folder(""),
                Err(HostError::Unavailable(_))
            ));
            assert!(matches!(
                host::write_file("r", b""),
                Err(HostError::Unavailable(_))
            ));
            assert!(matches!(
                host::search(&query(None, None, &[])),
                Err(HostError::Denied(_))
            ));
            assert!(matches!(host::attributes(1), Err(HostError::Denied(_))));
        });
    }

    #[test]
    fn repository_look_ups_answer_from_workspaces_and_documents() {
        let host = TestHost::new()
            .workspace("Supplier", "100234", 500)
            .document(doc(7, "Invoices/ACME01/2026", "INV_1.csv", "ACME01"))
            .document(doc(3, "Invoices/ACME02", "inv_2.CSV", "ACME02"))
            .document(doc(9, "Invoices/ACME010", "INV_3.csv", "ACME010"))
            .document(doc(11, "Orders", "PO_1.pdf", "ACME01"));
        host.run(|| {
            assert_eq!(host::find_workspace("Supplier", "100234"), Ok(Some(500)));
            assert_eq!(host::find_workspace("Supplier", "1"), Ok(None));
            let ids = |q: SearchQuery| -> Vec<u64> {
                host::search(&q)
                    .unwrap()
                    .iter()
                    .map(|d| d.node_id)
                    .collect()
            };
            assert_eq!(ids(query(None, None, &[])), [3, 7, 9, 11]);
            assert_eq!(ids(query(Some("Invoices/ACME01"), None, &[])), [7]);
            assert_eq!(
                ids(query(Some("Invoices"), Some("INV_*.csv"), &[])),
                [3, 7, 9]
            );
            assert_eq!(
                ids(query(None, None, &[("Invoice", "Supplier", "ACME01")])),
                [7, 11]
            );
            assert_eq!(
                ids(query(None, None, &[("Invoice", "Supplier", "ACME")])),
                []
            );
            let mut limited = query(None, None, &[]);
            limited.limit = 2;
            assert_eq!(ids(limited), [3, 7]);
            assert!(matches!(
                host::search(&query(Some("../x"), None, &[])),
                Err(HostError::Denied(_))
            ));
            assert_eq!(host::attributes(7).unwrap()[0].name, "Invoice");
            assert_eq!(host::attributes(500), Ok(Vec::new()));
            assert!(matches!(host::attributes(1), Err(HostError::NotFound(_))));
        });
    }

    #[test]
    fn wildcards_match_like_the_repository() {
        assert!(wildcard("*.csv", "a.CSV"));
        assert!(wildcard("INV_*_*.csv", "INV_A_1.csv"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a*b*c", "abbbc"));
        assert!(!wildcard("a*b", "ab.c"));
        assert!(!wildcard("INV_*", "XINV_1"));
    }
}
