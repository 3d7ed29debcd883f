//! Per-partner resource limits for plugin calls.

use std::time::Duration;

use serde::Deserialize;

/// Limits applied to every call into a partner's plugin. The defaults are
/// safe for untrusted plugins: a few seconds of CPU, 64 MiB of memory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one call (instantiation included), in
    /// milliseconds. Enforced by epoch interruption.
    pub deadline_ms: u64,
    /// Memory cap of one call in bytes (all linear memories together).
    pub memory_bytes: u64,
    /// Optional fuel (instruction budget) per call; needs fuel enabled in
    /// the host configuration.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_ms: 10_000,
            memory_bytes: 64 * 1024 * 1024,
            fuel: None,
        }
    }
}

impl Limits {
    /// The deadline as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Check the limits against the host's ceilings.
    pub fn validate(&self, max_memory_bytes: u64, fuel_enabled: bool) -> Result<(), String> {
        if self.deadline_ms == 0 {
            return Err("deadline_ms must be at least 1".into());
        }
        if self.deadline_ms > 3_600_000 {
            return Err("deadline_ms must be at most 3600000 (one hour)".into());
        }
        if self.memory_bytes < 1024 * 1024 {
            return Err("memory_bytes must be at least 1048576 (1 MiB)".into());
        }
        if self.memory_bytes > max_memory_bytes {
            return Err(format!(
                "memory_bytes {} is above the host ceiling of {max_memory_bytes}",
                self.memory_bytes
            ));
        }
        if self.fuel.is_some() && !fuel_enabled {
            return Err("fuel is set but the host runs without fuel metering".into());
        }
        Ok(())
    }
}
