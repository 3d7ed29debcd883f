//! The plugin capabilities bound to the real parts: [`EndpointFiles`] serves
//! [`PartnerFiles`] from a partner's [`Endpoint`], and [`RepositoryScope`]
//! serves [`RepositoryLookup`] from a [`Repository`], confined to the
//! partner's repository root folder.
//!
//! The capability traits are synchronous: plugin calls run on tokio blocking
//! threads, and these implementations wait for the async endpoint and
//! repository through a captured runtime [`Handle`]. They must therefore
//! never be called from a thread that is itself driving async tasks (tokio
//! panics if `block_on` is called there).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;
use wharf_ecm::{self as ecm, Node, NodeId, Repository};
use wharf_endpoint::{self as endpoint, Endpoint, RemotePath};

use super::filing::PROVENANCE_CATEGORY;
use super::tree::MAX_PARENT_STEPS;
use crate::plugin::decision::{self, Category, DocumentInfo};
use crate::plugin::{CapError, EntryKind, ListEntry, PartnerFiles, RepositoryLookup, Search};

/// The attribute of [`PROVENANCE_CATEGORY`] holding a document's SHA-256.
const CHECKSUM_ATTRIBUTE: &str = "SHA-256";
/// Most search results a plugin receives from one search.
pub const MAX_SEARCH_RESULTS: u32 = 100;

/// The capability error for an endpoint error.
///
/// Missing files are `not-found`; a refusal by the server is `denied`; a path
/// the endpoint refuses is `invalid`; everything else (busy or unreachable
/// server, broken transfers, refused logins, configuration and local I/O
/// failures) is something the plugin cannot fix: `unavailable`. Endpoint
/// messages carry no secrets; the user name of a refused login is left out
/// all the same.
fn endpoint_error(e: endpoint::Error) -> CapError {
    use endpoint::Error as E;
    match e {
        E::NotFound(what) => CapError::NotFound(what),
        E::Refused(what) => CapError::Denied(what),
        E::InvalidPath { .. } => CapError::Invalid(e.to_string()),
        E::Auth { .. } => CapError::Unavailable("the partner server refused the login".into()),
        E::Io(ref io) => match io.kind() {
            std::io::ErrorKind::NotFound => CapError::NotFound(e.to_string()),
            std::io::ErrorKind::PermissionDenied => CapError::Denied(e.to_string()),
            _ => CapError::Unavailable(e.to_string()),
        },
        E::Config(_)
        | E::HostKey { .. }
        | E::Tls { .. }
        | E::Busy(_)
        | E::Timeout { .. }
        | E::Connection(_)
        | E::Protocol(_)
        | E::SizeMismatch { .. } => CapError::Unavailable(e.to_string()),
    }
}

/// A partner's files on its [`Endpoint`], as [`PartnerFiles`]: reads anywhere
/// below the endpoint's root, writes only into the outbox folder.
pub struct EndpointFiles {
    endpoint: Arc<dyn Endpoint>,
    outbox: RemotePath,
    handle: Handle,
}

impl EndpointFiles {
    /// Serve `endpoint`, with plugin writes going to the folder `outbox`
    /// (relative to the endpoint's root; created on the first write). Calls
    /// wait on `handle`'s runtime.
    pub fn new(endpoint: Arc<dyn Endpoint>, outbox: &str, handle: Handle) -> Result<Self, String> {
        decision::relative_path(outbox).map_err(|e| format!("outbox: {e}"))?;
        let outbox = RemotePath::parse(outbox).map_err(|e| format!("outbox: {e}"))?;
        Ok(EndpointFiles {
            endpoint,
            outbox,
            handle,
        })
    }

    /// The outbox folder.
    pub fn outbox(&self) -> &RemotePath {
        &self.outbox
    }
}

fn remote_path(path: &str) -> Result<RemotePath, CapError> {
    RemotePath::parse(path).map_err(endpoint_error)
}

fn entry_kind(kind: endpoint::EntryKind) -> EntryKind {
    match kind {
        endpoint::EntryKind::File => EntryKind::File,
        endpoint::EntryKind::Dir => EntryKind::Directory,
        endpoint::EntryKind::Symlink => EntryKind::Symlink,
        endpoint::EntryKind::Other => EntryKind::Other,
    }
}

impl PartnerFiles for EndpointFiles {
    fn list(&self, folder: &str) -> Result<Vec<ListEntry>, CapError> {
        let dir = remote_path(folder)?;
        let entries = self
            .handle
            .block_on(self.endpoint.list(&dir))
            .map_err(endpoint_error)?;
        let mut out: Vec<ListEntry> = entries
            .into_iter()
            .map(|e| ListEntry {
                name: e.name,
                kind: entry_kind(e.kind),
                size: e.size,
                modified: e
                    .mtime
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, path: &str, max: usize) -> Result<Vec<u8>, CapError> {
        let remote = remote_path(path)?;
        if remote.is_root() {
            return Err(CapError::Invalid("a file path is empty".into()));
        }
        self.handle.block_on(async {
            let entry = self
                .endpoint
                .stat(&remote)
                .await
                .map_err(endpoint_error)?
                .ok_or_else(|| CapError::NotFound(remote.to_string()))?;
            // A link may point anywhere, a folder or device has no bytes to
            // give: only regular files are read.
            if entry.kind != endpoint::EntryKind::File {
                return Err(CapError::Denied(format!("{remote} is not a regular file")));
            }
            if entry.size > max as u64 {
                return Err(CapError::Denied(format!(
                    "{remote} is {} bytes, above the {max}-byte limit",
                    entry.size
                )));
            }
            let stream = self
                .endpoint
                .open_read(&remote, 0)
                .await
                .map_err(endpoint_error)?;
            // The file may have grown since it was looked at: never take
            // more than one byte past the limit.
            let mut data = Vec::with_capacity(entry.size as usize);
            stream
                .take(max as u64 + 1)
                .read_to_end(&mut data)
                .await
                .map_err(|e| endpoint_error(endpoint::Error::Io(e)))?;
            if data.len() > max {
                return Err(CapError::Denied(format!(
                    "{remote} grew above the {max}-byte limit"
                )));
            }
            Ok(data)
        })
    }

    fn write_outbox(&self, name: &str, data: &[u8]) -> Result<(), CapError> {
        decision::segment(name).map_err(CapError::Invalid)?;
        let target = self.outbox.join(name).map_err(endpoint_error)?;
        self.handle.block_on(async {
            self.endpoint
                .mkdir_all(&self.outbox)
                .await
                .map_err(endpoint_error)?;
            let mut src = data;
            let written = self
                .endpoint
                .write_atomic(&target, &mut src, None)
                .await
                .map_err(endpoint_error)?;
            if written != data.len() as u64 {
                return Err(CapError::Unavailable(format!(
                    "{target}: wrote {written} of {} bytes",
                    data.len()
                )));
            }
            Ok(())
        })
    }
}

/// The capability error for a repository error. Repository messages carry
/// no secrets.
fn ecm_error(e: ecm::EcmError) -> CapError {
    use ecm::ErrorKind as K;
    match e.kind {
        K::NotFound => CapError::NotFound(e.message),
        K::PermissionDenied | K::HeldOrRetained => CapError::Denied(e.message),
        K::Invalid | K::NameCollision => CapError::Invalid(e.message),
        K::Transient | K::Unsupported | K::Storage | K::Protocol => {
            CapError::Unavailable(e.message)
        }
    }
}

fn node_id(id: NodeId) -> Result<u64, CapError> {
    u64::try_from(id.0).map_err(|_| CapError::Unavailable(format!("node id {id} out of range")))
}

/// A [`Repository`] as [`RepositoryLookup`], scoped to a partner: searches
/// run below the partner's repository root folder, and attributes are only
/// read for nodes inside it. Workspace look-ups are not scoped (business
/// workspaces live outside any partner folder).
pub struct RepositoryScope<R> {
    repo: Arc<R>,
    root: NodeId,
    handle: Handle,
}

impl<R: Repository + 'static> RepositoryScope<R> {
    /// Serve `repo` to a partner whose repository root folder is `root`.
    /// Calls wait on `handle`'s runtime.
    pub fn new(repo: Arc<R>, root: NodeId, handle: Handle) -> Self {
        RepositoryScope { repo, root, handle }
    }

    /// The partner's repository root folder.
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// The path of container `folder` relative to the root (`""` for the
    /// root itself), or `None` when it is not inside the root. `known` holds
    /// the folders already located and gains the ones located here.
    async fn relative_folder(
        &self,
        folder: NodeId,
        known: &mut HashMap<NodeId, String>,
    ) -> Result<Option<String>, CapError> {
        let mut chain: Vec<(NodeId, String)> = Vec::new();
        let mut cur = folder;
        let base = loop {
            if let Some(path) = known.get(&cur) {
                break path.clone();
            }
            if chain.len() >= MAX_PARENT_STEPS {
                return Ok(None);
            }
            let node = self.repo.node(cur).await.map_err(ecm_error)?;
            match node.parent {
                Some(parent) => {
                    chain.push((cur, node.name));
                    cur = parent;
                }
                None => return Ok(None),
            }
        };
        let mut path = base;
        for (id, name) in chain.into_iter().rev() {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&name);
            known.insert(id, path.clone());
        }
        Ok(Some(path))
    }

    async fn document(&self, node: Node, folder: String) -> Result<DocumentInfo, CapError> {
        let categories = self.repo.categories(node.id).await.map_err(ecm_error)?;
        let mut version = node.versions.unwrap_or(0);
        let mut sha256 = categories
            .iter()
            .filter(|c| c.name == PROVENANCE_CATEGORY)
            .flat_map(|c| c.attributes.iter())
            .find(|a| a.name == CHECKSUM_ATTRIBUTE)
            .map(|a| a.value.as_text())
            .unwrap_or_default();
        if sha256.is_empty()
            && let Some(latest) = self
                .repo
                .versions(node.id)
                .await
                .map_err(ecm_error)?
                .into_iter()
                .max_by_key(|v| v.number)
        {
            version = latest.number;
            sha256 = latest.sha256.unwrap_or_default();
        }
        Ok(DocumentInfo {
            node_id: node_id(node.id)?,
            name: node.name,
            version,
            size: node.size.unwrap_or(0),
            mime_type: node.mime_type.unwrap_or_default(),
            folder,
            sha256,
            categories,
        })
    }
}

impl<R: Repository + 'static> RepositoryLookup for RepositoryScope<R> {
    fn find_workspace(
        &self,
        workspace_type: &str,
        business_id: &str,
    ) -> Result<Option<u64>, CapError> {
        let found = self
            .handle
            .block_on(self.repo.find_workspace(workspace_type, business_id))
            .map_err(ecm_error)?;
        found.map(|n| node_id(n.id)).transpose()
    }

    fn search(&self, query: &Search) -> Result<Vec<DocumentInfo>, CapError> {
        let limit = query.limit.min(MAX_SEARCH_RESULTS);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let folder = match &query.folder {
            Some(f) => decision::relative_path(f).map_err(CapError::Invalid)?,
            None => decision::relative_path("").map_err(CapError::Invalid)?,
        };
        self.handle.block_on(async {
            let Some(location) = super::tree::find_folder(self.repo.as_ref(), self.root, folder.segments())
                .await
                .map_err(ecm_error)? else {
                return Ok(Vec::new());
            };
            let mut known = HashMap::from([
                (self.root, String::new()),
                (location, folder.segments().join("/")),
            ]);
            let search = ecm::SearchQuery {
                location: Some(location),
                name: query.name.clone(),
                attributes: query
                    .conditions
                    .iter()
                    .map(|(category, attribute, value)| ecm::AttributeFilter {
                        category: category.clone(),
                        attribute: attribute.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                limit: Some(limit),
            };
            let nodes = self.repo.search(&search).await.map_err(ecm_error)?;
            let mut docs = Vec::with_capacity(nodes.len());
            for node in nodes.into_iter().take(limit as usize) {
                let Some(parent) = node.parent else { continue };
                // The repository searched below the root; anything it
                // answers from elsewhere is dropped, not shown.
                let Some(folder) = self.relative_folder(parent, &mut known).await? else {
                    tracing::warn!(node = %node.id, "search answered a node outside the partner root");
                    continue;
                };
                docs.push(self.document(node, folder).await?);
            }
            Ok(docs)
        })
    }

    fn attributes(&self, node: u64) -> Result<Vec<Category>, CapError> {
        let id = i64::try_from(node)
            .map(NodeId)
            .map_err(|_| CapError::NotFound(format!("node {node}")))?;
        self.handle.block_on(async {
            if !super::tree::is_within(self.repo.as_ref(), id, self.root)
                .await
                .map_err(ecm_error)?
            {
                return Err(CapError::Denied(format!(
                    "node {node} is outside the partner's repository folder"
                )));
            }
            self.repo.categories(id).await.map_err(ecm_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use sha2::{Digest, Sha256};
    use wharf_ecm::embedded::Embedded;
    use wharf_ecm::{
        Attribute, AttributeValue, BytesSource, CollisionPolicy, NewDocument, WorkspaceSpec,
    };
    use wharf_endpoint::TempNaming;
    use wharf_endpoint::local::LocalEndpoint;

    fn partner_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("in");
        std::fs::create_dir_all(inbox.join("sub")).unwrap();
        std::fs::write(inbox.join("a.txt"), b"hello").unwrap();
        std::fs::write(inbox.join("big.bin"), vec![7u8; 100]).unwrap();
        std::os::unix::fs::symlink("a.txt", inbox.join("link")).unwrap();
        dir
    }

    fn files(root: &std::path::Path) -> EndpointFiles {
        let ep = LocalEndpoint::open(root, TempNaming::default()).unwrap();
        EndpointFiles::new(Arc::new(ep), "out", Handle::current()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn lists_and_reads_partner_files() {
        let dir = partner_folder();
        let files = files(dir.path());
        tokio::task::spawn_blocking(move || {
            let listed = files.list("in").unwrap();
            let names: Vec<_> = listed.iter().map(|e| (e.name.as_str(), e.kind)).collect();
            assert_eq!(
                names,
                [
                    ("a.txt", EntryKind::File),
                    ("big.bin", EntryKind::File),
                    ("link", EntryKind::Symlink),
                    ("sub", EntryKind::Directory),
                ]
            );
            assert_eq!(listed[0].size, 5);
            assert!(listed[0].modified.unwrap() > 1_600_000_000);
            assert!(matches!(files.list("nope"), Err(CapError::NotFound(_))));

            assert_eq!(files.read("in/a.txt", 5).unwrap(), b"hello");
            assert_eq!(files.read("./in//a.txt", 1000).unwrap(), b"hello");
            assert!(matches!(
                files.read("in/big.bin", 99),
                Err(CapError::Denied(_))
            ));
            assert_eq!(files.read("in/big.bin", 100).unwrap().len(), 100);
            // Not followed, even though it points at a readable file.
            assert!(matches!(
                files.read("in/link", 100),
                Err(CapError::Denied(_))
            ));
            assert!(matches!(
                files.read("in/sub", 100),
                Err(CapError::Denied(_))
            ));
            assert!(matches!(
                files.read("in/missing", 100),
                Err(CapError::NotFound(_))
            ));
            assert!(matches!(files.read("../x", 100), Err(CapError::Invalid(_))));
            assert!(matches!(files.read("", 100), Err(CapError::Invalid(_))));
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn writes_only_single_names_into_the_outbox() {
        let dir = partner_folder();
        let files = files(dir.path());
        let out = dir.path().join("out");
        tokio::task::spawn_blocking(move || {
            files.write_outbox("reply.txt", b"ack").unwrap();
            files.write_outbox("reply.txt", b"ack 2").unwrap();
            for bad in ["a/b", "../escape", "..", "", "x\n"] {
                assert!(
                    matches!(files.write_outbox(bad, b"x"), Err(CapError::Invalid(_))),
                    "{bad:?} accepted"
                );
            }
        })
        .await
        .unwrap();
        assert_eq!(std::fs::read(out.join("reply.txt")).unwrap(), b"ack 2");
        let mut names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["reply.txt"]);
        assert!(!dir.path().join("escape").exists());
        assert!(!dir.path().join("out/a").exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn refuses_a_bad_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let ep: Arc<dyn Endpoint> =
            Arc::new(LocalEndpoint::open(dir.path(), TempNaming::default()).unwrap());
        for bad in ["../out", "/out", "a\0b"] {
            assert!(
                EndpointFiles::new(ep.clone(), bad, Handle::current()).is_err(),
                "{bad:?} accepted"
            );
        }
        let files = EndpointFiles::new(ep, "to/partner", Handle::current()).unwrap();
        assert_eq!(files.outbox().as_string(), "to/partner");
    }

    fn invoice(number: &str, sha256: &str) -> Vec<ecm::Category> {
        let text = |name: &str, value: &str| Attribute {
            name: name.into(),
            value: AttributeValue::Text(value.into()),
        };
        vec![
            ecm::Category {
                name: "Invoice".into(),
                attributes: vec![text("Number", number)],
            },
            ecm::Category {
                name: PROVENANCE_CATEGORY.into(),
                attributes: vec![text(CHECKSUM_ATTRIBUTE, sha256)],
            },
        ]
    }

    async fn store(
        repo: &Embedded,
        parent: NodeId,
        name: &str,
        content: &'static [u8],
        categories: Vec<ecm::Category>,
    ) -> NodeId {
        let doc = NewDocument {
            parent,
            name: name.into(),
            description: None,
            mime_type: "application/pdf".into(),
            sha256: hex::encode(Sha256::digest(content)),
            categories,
            policy: CollisionPolicy::AddVersion,
        };
        repo.store_document(&doc, &BytesSource(Bytes::from_static(content)))
            .await
            .unwrap()
            .node
    }

    fn folder(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn search(folder: Option<&str>, name: Option<&str>, number: Option<&str>) -> Search {
        Search {
            folder: folder.map(str::to_string),
            name: name.map(str::to_string),
            conditions: number
                .map(|n| vec![("Invoice".into(), "Number".into(), n.into())])
                .unwrap_or_default(),
            limit: 10,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn repository_lookups_stay_inside_the_partner_root() {
        let state = tempfile::tempdir().unwrap();
        let (repo, _) = Embedded::open(state.path()).await.unwrap();
        let root = repo
            .ensure_folder(NodeId::ENTERPRISE, &folder(&["Partners", "acme"]))
            .await
            .unwrap();
        let invoices = repo
            .ensure_folder(root, &folder(&["Invoices", "2024"]))
            .await
            .unwrap();
        let other = repo
            .ensure_folder(NodeId::ENTERPRISE, &folder(&["Partners", "globex"]))
            .await
            .unwrap();
        let content: &'static [u8] = b"%PDF inside";
        let sha = hex::encode(Sha256::digest(content));
        let inside = store(&repo, invoices, "inv-42.pdf", content, invoice("42", &sha)).await;
        let outside = store(
            &repo,
            other,
            "inv-42.pdf",
            b"%PDF outside",
            invoice("42", &hex::encode(Sha256::digest(b"%PDF outside"))),
        )
        .await;
        // A document without the provenance category: its checksum comes
        // from the repository's version record.
        let plain: &'static [u8] = b"plain";
        let unfiled = store(&repo, root, "notes.pdf", plain, Vec::new()).await;
        let workspace = repo
            .create_workspace(
                NodeId::ENTERPRISE,
                &WorkspaceSpec {
                    workspace_type: "Supplier".into(),
                    business_id: "S-1".into(),
                    name: "Supplier S-1".into(),
                },
            )
            .await
            .unwrap();

        let scope = RepositoryScope::new(Arc::new(repo), root, Handle::current());
        assert_eq!(scope.root(), root);
        tokio::task::spawn_blocking(move || {
            let found = scope
                .search(&search(None, Some("inv-*"), Some("42")))
                .unwrap();
            assert_eq!(found.len(), 1, "{found:?}");
            let doc = &found[0];
            assert_eq!(doc.node_id, inside.0 as u64);
            assert_eq!(doc.name, "inv-42.pdf");
            assert_eq!(doc.version, 1);
            assert_eq!(doc.size, content.len() as u64);
            assert_eq!(doc.mime_type, "application/pdf");
            assert_eq!(doc.folder, "Invoices/2024");
            assert_eq!(doc.sha256, sha);
            assert!(doc.categories.iter().any(|c| c.name == "Invoice"));

            let in_folder = scope.search(&search(Some("Invoices"), None, None)).unwrap();
            assert_eq!(in_folder.len(), 1);
            assert_eq!(in_folder[0].folder, "Invoices/2024");
            let here = scope
                .search(&search(Some("Invoices/2024"), None, None))
                .unwrap();
            assert_eq!(here[0].folder, "Invoices/2024");
            assert!(
                scope
                    .search(&search(Some("Missing"), None, None))
                    .unwrap()
                    .is_empty()
            );
            // A document is not a folder to search in.
            assert!(
                scope
                    .search(&search(Some("notes.pdf"), None, None))
                    .unwrap()
                    .is_empty()
            );
            assert!(matches!(
                scope.search(&search(Some("../globex"), None, None)),
                Err(CapError::Invalid(_))
            ));

            let all = scope.search(&search(None, None, None)).unwrap();
            let mut ids: Vec<u64> = all.iter().map(|d| d.node_id).collect();
            ids.sort();
            assert_eq!(ids, [inside.0 as u64, unfiled.0 as u64]);
            let notes = all.iter().find(|d| d.name == "notes.pdf").unwrap();
            assert_eq!(notes.folder, "");
            assert_eq!(notes.sha256, hex::encode(Sha256::digest(plain)));
            assert_eq!(notes.version, 1);
            let mut one = search(None, None, None);
            one.limit = 1;
            assert_eq!(scope.search(&one).unwrap().len(), 1);

            let cats = scope.attributes(inside.0 as u64).unwrap();
            assert_eq!(cats.len(), 2);
            assert!(matches!(
                scope.attributes(outside.0 as u64),
                Err(CapError::Denied(_))
            ));
            assert!(matches!(
                scope.attributes(other.0 as u64),
                Err(CapError::Denied(_))
            ));
            assert!(matches!(
                scope.attributes(NodeId::ENTERPRISE.0 as u64),
                Err(CapError::Denied(_))
            ));
            assert!(scope.attributes(root.0 as u64).unwrap().is_empty());
            assert!(matches!(
                scope.attributes(9_999_999),
                Err(CapError::NotFound(_))
            ));

            assert_eq!(
                scope.find_workspace("Supplier", "S-1").unwrap(),
                Some(workspace.0 as u64)
            );
            assert_eq!(scope.find_workspace("Supplier", "S-2").unwrap(), None);
        })
        .await
        .unwrap();
    }
}
