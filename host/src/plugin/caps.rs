//! The capabilities a plugin may call, as host traits. The plugin host only
//! routes calls; implementations come from the endpoint and repository
//! layers. Calls arrive on the thread running the plugin and may block.

use std::io::{Read, Write};
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use super::decision::{self, Category, DocumentInfo};

/// Why a capability call failed; mirrors the contract's `host-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Outside the plugin's scope or over a limit.
    #[error("denied: {0}")]
    Denied(String),
    /// Not available here or now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A malformed request.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// What a listed entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A folder.
    Directory,
    /// A symbolic link (never followed for a plugin).
    Symlink,
    /// Anything else.
    Other,
}

/// One entry of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Name (one segment).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub modified: Option<u64>,
}

/// A partner's remote files as a plugin may see them: read under the
/// partner's root, write only into its outbox.
pub trait PartnerFiles: Send + Sync {
    /// List a folder (relative, already validated by the host).
    fn list(&self, folder: &str) -> Result<Vec<ListEntry>, CapError>;
    /// Read at most `max` bytes of a file; a larger file is refused.
    fn read(&self, path: &str, max: usize) -> Result<Vec<u8>, CapError>;
    /// Write a file of the outbox.
    fn write_outbox(&self, name: &str, data: &[u8]) -> Result<(), CapError>;
}

/// A search, as a plugin may ask it.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// Folder (relative to the partner's repository root), or the whole root.
    pub folder: Option<String>,
    /// Name with `*` wildcards.
    pub name: Option<String>,
    /// (category, attribute, value) conditions, all of which must hold.
    pub conditions: Vec<(String, String, String)>,
    /// Maximum number of results.
    pub limit: u32,
}

/// Read-only repository look-ups a plugin may make.
pub trait RepositoryLookup: Send + Sync {
    /// The node id of a business workspace.
    fn find_workspace(
        &self,
        workspace_type: &str,
        business_id: &str,
    ) -> Result<Option<u64>, CapError>;
    /// Search documents.
    fn search(&self, query: &Search) -> Result<Vec<DocumentInfo>, CapError>;
    /// The categories of a node. Implementations answer `Denied` for nodes
    /// outside the partner's repository root.
    fn attributes(&self, node_id: u64) -> Result<Vec<Category>, CapError>;
}

/// No partner files are bound (for example in `wharf plugin check` without
/// `--root`): every call is `unavailable`.
pub struct NoPartnerFiles;

impl PartnerFiles for NoPartnerFiles {
    fn list(&self, _folder: &str) -> Result<Vec<ListEntry>, CapError> {
        Err(CapError::Unavailable("no partner folder is bound".into()))
    }
    fn read(&self, _path: &str, _max: usize) -> Result<Vec<u8>, CapError> {
        Err(CapError::Unavailable("no partner folder is bound".into()))
    }
    fn write_outbox(&self, _name: &str, _data: &[u8]) -> Result<(), CapError> {
        Err(CapError::Unavailable("no partner folder is bound".into()))
    }
}

/// No repository is bound: every look-up is `unavailable`.
pub struct NoRepository;

impl RepositoryLookup for NoRepository {
    fn find_workspace(&self, _t: &str, _id: &str) -> Result<Option<u64>, CapError> {
        Err(CapError::Unavailable("no repository is bound".into()))
    }
    fn search(&self, _query: &Search) -> Result<Vec<DocumentInfo>, CapError> {
        Err(CapError::Unavailable("no repository is bound".into()))
    }
    fn attributes(&self, _node_id: u64) -> Result<Vec<Category>, CapError> {
        Err(CapError::Unavailable("no repository is bound".into()))
    }
}

/// Partner files in a local folder, opened as a capability (`cap-std`): no
/// path can leave it. The outbox is a sub-folder of it.
pub struct LocalPartnerFiles {
    root: Dir,
    outbox: String,
}

impl LocalPartnerFiles {
    /// Serve `root`, with writes going to `root/<outbox>`.
    pub fn open(root: &Path, outbox: &str) -> std::io::Result<Self> {
        decision::relative_path(outbox)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(LocalPartnerFiles {
            root: Dir::open_ambient_dir(root, ambient_authority())?,
            outbox: outbox.to_string(),
        })
    }
}

fn io_to_cap(e: std::io::Error, what: &str) -> CapError {
    match e.kind() {
        std::io::ErrorKind::NotFound => CapError::NotFound(what.to_string()),
        std::io::ErrorKind::PermissionDenied => CapError::Denied(what.to_string()),
        _ => CapError::Unavailable(format!("{what}: {e}")),
    }
}

fn dir_or_root<'a>(
    root: &'a Dir,
    folder: &str,
    holder: &'a mut Option<Dir>,
) -> Result<&'a Dir, CapError> {
    if folder.is_empty() {
        return Ok(root);
    }
    *holder = Some(root.open_dir(folder).map_err(|e| io_to_cap(e, folder))?);
    Ok(holder.as_ref().expect("just set"))
}

impl PartnerFiles for LocalPartnerFiles {
    fn list(&self, folder: &str) -> Result<Vec<ListEntry>, CapError> {
        let mut holder = None;
        let dir = dir_or_root(&self.root, folder, &mut holder)?;
        let mut entries = Vec::new();
        for entry in dir.entries().map_err(|e| io_to_cap(e, folder))? {
            let entry = entry.map_err(|e| io_to_cap(e, folder))?;
            // The entry itself, not what a symlink points to.
            let meta = entry.metadata().map_err(|e| io_to_cap(e, folder))?;
            let file_type = entry.file_type().map_err(|e| io_to_cap(e, folder))?;
            let kind = if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_dir() {
                EntryKind::Directory
            } else if file_type.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            };
            let modified = meta
                .modified()
                .ok()
                .map(|t| t.into_std())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            entries.push(ListEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind,
                size: meta.len(),
                modified,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn read(&self, path: &str, max: usize) -> Result<Vec<u8>, CapError> {
        let file = self.root.open(path).map_err(|e| io_to_cap(e, path))?;
        let meta = file.metadata().map_err(|e| io_to_cap(e, path))?;
        // A FIFO or device would block the call or never end.
        if !meta.is_file() {
            return Err(CapError::Denied(format!("{path} is not a regular file")));
        }
        let size = meta.len();
        if size > max as u64 {
            return Err(CapError::Denied(format!(
                "{path} is {size} bytes, above the {max}-byte limit"
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        file.take(max as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| io_to_cap(e, path))?;
        if data.len() > max {
            return Err(CapError::Denied(format!(
                "{path} grew above the {max}-byte limit"
            )));
        }
        Ok(data)
    }

    fn write_outbox(&self, name: &str, data: &[u8]) -> Result<(), CapError> {
        self.root
            .create_dir_all(&self.outbox)
            .map_err(|e| io_to_cap(e, &self.outbox))?;
        let outbox = self
            .root
            .open_dir(&self.outbox)
            .map_err(|e| io_to_cap(e, &self.outbox))?;
        // Write under a temporary name and rename, so the partner never
        // sees a half-written file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = format!(".{name}.{}-{n}.part", std::process::id());
        let mut file = outbox.create(&temp).map_err(|e| io_to_cap(e, name))?;
        file.write_all(data).map_err(|e| io_to_cap(e, name))?;
        file.sync_all().map_err(|e| io_to_cap(e, name))?;
        outbox
            .rename(&temp, &outbox, name)
            .map_err(|e| io_to_cap(e, name))?;
        Ok(())
    }
}
