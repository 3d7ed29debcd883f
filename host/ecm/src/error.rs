//! Typed repository errors.

/// What kind of failure happened; callers branch on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The node (or version, hold, workspace…) does not exist.
    NotFound,
    /// A node with that name already exists in the folder.
    NameCollision,
    /// The caller may not do this (or its credentials were refused).
    PermissionDenied,
    /// A legal hold or retention period forbids the change.
    HeldOrRetained,
    /// A temporary failure (throttling, server error, network); retry later.
    Transient,
    /// The request itself is wrong (bad name, bad value, checksum mismatch…).
    Invalid,
    /// This repository does not offer the operation.
    Unsupported,
    /// Local storage failed (disk, database).
    Storage,
    /// The server answered something this client does not understand.
    Protocol,
}

/// A repository error: a kind and a message. Messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct EcmError {
    /// The kind.
    pub kind: ErrorKind,
    /// Human readable detail.
    pub message: String,
}

impl EcmError {
    /// Build an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EcmError {
            kind,
            message: message.into(),
        }
    }
    /// Not found.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} not found"))
    }
    /// Invalid request.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, msg)
    }
    /// Storage failure.
    pub fn storage(msg: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Storage, msg.to_string())
    }
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

impl From<rusqlite::Error> for EcmError {
    fn from(e: rusqlite::Error) -> Self {
        EcmError::storage(format!("database: {e}"))
    }
}

impl From<std::io::Error> for EcmError {
    fn from(e: std::io::Error) -> Self {
        EcmError::storage(format!("i/o: {e}"))
    }
}
