//! The repository boundary of wharf (see README.md).
//!
//! One async [`Repository`] trait with three parts around it:
//! - [`embedded`]: SQLite (WAL) metadata plus content-addressed blobs on disk,
//!   the default store that needs no server;
//! - [`otcs`]: a client of the OpenText Content Server REST API;
//! - [`facade`]: a development and test HTTP server exposing an embedded
//!   repository over the same REST subset the client speaks.

#![warn(missing_docs)]

mod direct;
pub mod embedded;
mod error;
pub mod facade;
pub mod inspect;
pub mod otcs;
mod source;
mod staged;
mod types;

pub use error::{EcmError, ErrorKind};
pub use source::{
    ByteStream, BytesSource, ContentSource, FileSource, HashedDownload, Upload, collect,
};
pub use staged::{StageBuf, Staged, Stager};
pub use types::*;

use std::future::Future;

/// Result of repository operations.
pub type Result<T, E = EcmError> = std::result::Result<T, E>;

/// What the flows need from an ECM repository.
///
/// Every operation is idempotent where the ECM allows it: creating a
/// document whose name and checksum already exist in the target folder
/// returns the existing document instead of a duplicate.
pub trait Repository: Send + Sync {
    /// Make sure the folder path exists under `parent` (creating missing
    /// folders) and return the id of its last folder.
    fn ensure_folder(
        &self,
        parent: NodeId,
        path: &[String],
    ) -> impl Future<Output = Result<NodeId>> + Send;

    /// Create a business workspace (mainly for development servers and tests;
    /// production workspaces are usually created by the business system).
    fn create_workspace(
        &self,
        parent: NodeId,
        spec: &WorkspaceSpec,
    ) -> impl Future<Output = Result<NodeId>> + Send;

    /// Find the business workspace of a type for a business object id.
    fn find_workspace(
        &self,
        workspace_type: &str,
        business_id: &str,
    ) -> impl Future<Output = Result<Option<Node>>> + Send;

    /// Create a document from a stream, or add a version, as the collision
    /// policy says. The content is streamed, never held whole in memory.
    fn store_document(
        &self,
        doc: &NewDocument,
        content: &dyn ContentSource,
    ) -> impl Future<Output = Result<Stored>> + Send;

    /// Store a document as [`Repository::store_document`] does, and record
    /// `event` (on the stored document unless it names a node) when the
    /// store wrote something: a retried store that finds its content
    /// already there records nothing again. A repository that can commits
    /// both at once (the embedded store does); this default records the
    /// event after the store, and a failure to record it (or a repository
    /// without an audit write) leaves the stored document stored.
    fn store_document_recorded(
        &self,
        doc: &NewDocument,
        content: &dyn ContentSource,
        event: &AuditEvent,
    ) -> impl Future<Output = Result<Stored>> + Send {
        async move {
            let stored = self.store_document(doc, content).await?;
            if stored.outcome != StoreOutcome::AlreadyPresent {
                let event = AuditEvent {
                    node: event.node.or(Some(stored.node)),
                    ..event.clone()
                };
                match self.record_event(&event).await {
                    Ok(()) => {}
                    Err(e) if e.kind == ErrorKind::Unsupported => {}
                    Err(e) => {
                        tracing::warn!(action = %event.action, "audit event not recorded: {e}")
                    }
                }
            }
            Ok(stored)
        }
    }

    /// Set (merge) category attributes on a node.
    fn set_categories(
        &self,
        node: NodeId,
        categories: &[Category],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Read a node's categories.
    fn categories(&self, node: NodeId) -> impl Future<Output = Result<Vec<Category>>> + Send;

    /// Grant rights on a node (replacing the rights of each named principal).
    fn set_permissions(
        &self,
        node: NodeId,
        grants: &[Grant],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Read a node's permissions.
    fn permissions(&self, node: NodeId) -> impl Future<Output = Result<Vec<Grant>>> + Send;

    /// Apply a records-management classification (retention).
    fn classify(&self, node: NodeId, rm_class: &str) -> impl Future<Output = Result<()>> + Send;

    /// Put a node under a legal hold.
    fn apply_hold(&self, node: NodeId, hold: &str) -> impl Future<Output = Result<()>> + Send;

    /// Start a workflow (or open a review task) with attached documents.
    fn start_workflow(
        &self,
        request: &WorkflowStart,
    ) -> impl Future<Output = Result<WorkflowId>> + Send;

    /// Search documents by attribute values, name pattern and folder.
    fn search(&self, query: &SearchQuery) -> impl Future<Output = Result<Vec<Node>>> + Send;

    /// Download a version (latest when `None`) as a stream.
    fn download(
        &self,
        node: NodeId,
        version: Option<u32>,
    ) -> impl Future<Output = Result<ByteStream>> + Send;

    /// Download a version like [`download`](Self::download), with the
    /// SHA-256 of its bytes computed as they are read, ahead of whoever
    /// consumes them: by default on a task of its own; the embedded store
    /// hashes on the thread that reads the file.
    fn download_hashed(
        &self,
        node: NodeId,
        version: Option<u32>,
    ) -> impl Future<Output = Result<HashedDownload>> + Send {
        async move {
            Ok(HashedDownload::hash_ahead(
                self.download(node, version).await?,
            ))
        }
    }

    /// Read a node's metadata.
    fn node(&self, node: NodeId) -> impl Future<Output = Result<Node>> + Send;

    /// List a node's versions.
    fn versions(&self, node: NodeId) -> impl Future<Output = Result<Vec<Version>>> + Send;

    /// List a folder's children (all pages).
    fn children(&self, node: NodeId) -> impl Future<Output = Result<Vec<Node>>> + Send;

    /// Delete a node; refused while it is held or retained.
    fn delete(&self, node: NodeId) -> impl Future<Output = Result<()>> + Send;

    /// Write an audit event.
    fn record_event(&self, event: &AuditEvent) -> impl Future<Output = Result<()>> + Send;

    /// Write `events` together, each dated when it happened. The embedded
    /// store commits a batch in one transaction and leaves out an event
    /// whose key it recorded before, so a batch whose outcome was not
    /// learnt (a crash, a lost answer) can be sent again without recording
    /// anything twice. This default records the events one by one with
    /// [`Repository::record_event`] (dated when recorded), ignores the
    /// keys and stops at the first failure: sent again, a batch may be
    /// recorded twice in part.
    fn record_events(&self, events: &[KeyedEvent]) -> impl Future<Output = Result<()>> + Send {
        async move {
            for e in events {
                self.record_event(&e.event).await?;
            }
            Ok(())
        }
    }

    /// Read audit events, of one node or of all when `None`, oldest first.
    fn audit(&self, node: Option<NodeId>) -> impl Future<Output = Result<Vec<AuditRecord>>> + Send;
}
