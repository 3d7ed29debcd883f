//! Typed errors of the plugin host. Every error names the plugin and, for a
//! call, the file it was deciding, so an operator can act on the message.

use std::path::PathBuf;
use std::time::Duration;

/// A plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component file cannot be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly component for this host.
    #[error("{origin} is not a loadable component: {reason}")]
    Compile {
        /// File name or label of the component.
        origin: String,
        /// The compiler's message.
        reason: String,
    },
    /// The component does not implement the `wharf:plugin/partner` world, or
    /// needs imports this host does not grant.
    #[error("{origin} does not fit the wharf:plugin/partner world: {reason}")]
    WrongWorld {
        /// File name or label of the component.
        origin: String,
        /// What does not fit.
        reason: String,
    },
    /// The component loaded but failed when asked to describe itself.
    #[error("{origin} failed its start-up call: {source}")]
    Startup {
        /// File name or label of the component.
        origin: String,
        /// The failure.
        source: Box<PluginError>,
    },
    /// The host itself could not be set up.
    #[error("plugin host setup failed: {0}")]
    Host(String),
}

/// A call into a plugin failed. The host is unaffected and keeps serving.
#[derive(Debug, thiserror::Error)]
#[error("plugin {plugin} failed on {subject}: {kind}")]
pub struct PluginError {
    /// Plugin name and version, e.g. `acme-invoices 1.2.0`.
    pub plugin: String,
    /// What it was deciding: a file path, a document, or `start-up`.
    pub subject: String,
    /// What went wrong.
    pub kind: FailureKind,
}

/// The ways a plugin call can fail.
#[derive(Debug, thiserror::Error)]
pub enum FailureKind {
    /// The call ran past its CPU deadline and was interrupted.
    #[error("exceeded its deadline of {0:?} and was stopped")]
    Deadline(Duration),
    /// The call used up its fuel allowance.
    #[error("ran out of fuel ({0} units)")]
    OutOfFuel(u64),
    /// The plugin tried to grow its memory beyond the cap.
    #[error("tried to use more than its memory cap of {cap} bytes")]
    OutOfMemory {
        /// The cap in bytes.
        cap: u64,
    },
    /// The plugin panicked.
    #[error("panicked: {0}")]
    Panic(String),
    /// Any other WebAssembly trap.
    #[error("trapped: {trap}{backtrace}")]
    Trap {
        /// The trap message.
        trap: String,
        /// A WebAssembly backtrace, when available (starts with a newline).
        backtrace: String,
    },
    /// The plugin returned a decision the host refuses to carry out.
    #[error("returned an invalid decision: {0}")]
    InvalidDecision(String),
    /// The plugin could not be instantiated for this call (for example every
    /// instance slot is in use).
    #[error("could not be started: {0}")]
    Instantiate(String),
}

impl PluginError {
    /// A short stable code for metrics, exception records and review tasks.
    pub fn code(&self) -> &'static str {
        match self.kind {
            FailureKind::Deadline(_) => "plugin-deadline",
            FailureKind::OutOfFuel(_) => "plugin-fuel",
            FailureKind::OutOfMemory { .. } => "plugin-memory",
            FailureKind::Panic(_) => "plugin-panic",
            FailureKind::Trap { .. } => "plugin-trap",
            FailureKind::InvalidDecision(_) => "plugin-invalid-decision",
            FailureKind::Instantiate(_) => "plugin-unavailable",
        }
    }
}
