//! Settings shared by all endpoints, and secrets that only come from env vars or files.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Where a secret (password, key passphrase) comes from. Never the configuration text itself.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable's name.
    Env(String),
    /// A file whose content (trailing newline removed) is the secret.
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(n) => write!(f, "Env({n})"),
            SecretSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl SecretSource {
    /// Reads the secret now.
    pub fn resolve(&self) -> Result<Secret> {
        match self {
            SecretSource::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| Error::Config(format!("environment variable {name} is not set"))),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| {
                    Error::Config(format!("cannot read secret file {}: {e}", path.display()))
                }),
        }
    }
}

/// A secret value. Its `Debug` output is redacted so it cannot leak into logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for handing to the protocol library only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How temporary upload names are made: `prefix + name + suffix` in the target's directory.
/// Partners differ (some pick up anything not starting with `.`, others skip `*.part`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempNaming {
    /// Put before the file name.
    pub prefix: String,
    /// Put after the file name.
    pub suffix: String,
}

impl Default for TempNaming {
    fn default() -> Self {
        Self {
            prefix: ".".into(),
            suffix: ".part".into(),
        }
    }
}

/// Retries with exponential backoff and full jitter, for transient errors only.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Upper bound of a single delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based): a random duration up to
    /// `min(max_backoff, initial_backoff * 2^(attempt-1))` ("full jitter").
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.max_backoff);
        // Never zero, so a busy server is not hammered.
        let floor = cap / 4;
        floor + cap.mul_f64(fastrand::f64() * 0.75)
    }
}

/// Settings every endpoint kind shares.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// Most connections open at once to this partner (partners cap connections per IP).
    pub max_connections: usize,
    /// Limit for establishing and logging in a connection.
    pub connect_timeout: Duration,
    /// A transfer that moves no byte for this long fails with a timeout.
    pub stall_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Temporary names for atomic uploads.
    pub temp: TempNaming,
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            max_connections: 4,
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            temp: TempNaming::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(25) && d1 <= Duration::from_millis(100));
            let d9 = p.backoff(9);
            assert!(d9 >= Duration::from_millis(250) && d9 <= Duration::from_secs(1));
        }
    }
}
