//! The endpoint error type and its transient/permanent classification.

use std::time::Duration;

/// Result of endpoint operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an endpoint operation can fail with. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path was refused before it reached the server.
    #[error("invalid remote path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path (control characters are escaped by `{:?}`).
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The configuration is incomplete or inconsistent.
    #[error("endpoint configuration: {0}")]
    Config(String),
    /// Nothing exists at the path.
    #[error("not found: {0}")]
    NotFound(String),
    /// The server refused the operation for good (FTP 5xx such as 550, SFTP permission denied).
    #[error("refused by server: {0}")]
    Refused(String),
    /// Login was refused (FTP 530, SSH authentication failure): never retried.
    #[error("authentication refused for user {user:?}: {detail}")]
    Auth {
        /// The user name offered.
        user: String,
        /// What the server said.
        detail: String,
    },
    /// The SSH host key was not the pinned/known one.
    #[error(
        "host key of {host} refused: {reason}; the server offered {fingerprint} \
         (pin it in the partner configuration or its known_hosts file if it is genuine)"
    )]
    HostKey {
        /// host:port
        host: String,
        /// SHA-256 fingerprint of the offered key, `SHA256:...`.
        fingerprint: String,
        /// Unknown or changed.
        reason: String,
    },
    /// TLS negotiation or certificate verification failed.
    #[error("TLS with {host} failed: {detail}")]
    Tls {
        /// host:port
        host: String,
        /// The verifier's or the handshake's message.
        detail: String,
    },
    /// The server is at its connection limit (FTP 421) or otherwise asked us to come back later.
    #[error("server busy: {0}")]
    Busy(String),
    /// A connect or a transfer stalled for longer than allowed.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// The limit that was hit.
        after: Duration,
    },
    /// The connection broke (reset, closed, I/O error).
    #[error("connection error: {0}")]
    Connection(#[source] std::io::Error),
    /// The server answered something we did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The uploaded size did not match the bytes sent.
    #[error("size check failed for {path}: sent {sent} bytes, server has {stored}")]
    SizeMismatch {
        /// The temporary path that was checked.
        path: String,
        /// Bytes sent.
        sent: u64,
        /// Bytes the server reports.
        stored: u64,
    },
    /// A local file-system error (local endpoint, or reading the source of an upload).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether retrying the operation later may succeed (busy server, timeouts, broken
    /// connections). Refused logins, permission errors and bad paths are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Busy(_) | Error::Timeout { .. } | Error::Connection(_) => true,
            Error::Protocol(_) => true,
            Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::Interrupted
            ),
            _ => false,
        }
    }

    /// Whether the error leaves the connection it happened on unusable.
    pub(crate) fn breaks_connection(&self) -> bool {
        matches!(
            self,
            Error::Busy(_)
                | Error::Timeout { .. }
                | Error::Connection(_)
                | Error::Protocol(_)
                | Error::Io(_)
                | Error::Tls { .. }
        )
    }

    /// Wraps this error as an I/O error for stream interfaces.
    pub(crate) fn into_io(self) -> std::io::Error {
        match self {
            Error::Io(e) | Error::Connection(e) => e,
            Error::Timeout { .. } => std::io::Error::new(std::io::ErrorKind::TimedOut, self),
            other => std::io::Error::other(other),
        }
    }
}
