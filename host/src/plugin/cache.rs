//! The on-disk cache of compiled components.
//!
//! An entry is keyed by the component's SHA-256 and by the engine's
//! compatibility hash (wasmtime version and every code-generation setting),
//! so a new engine never picks up an old artifact. Each entry carries the
//! SHA-256 of its own bytes: a truncated or corrupted entry is detected and
//! recompiled instead of being handed to the (unsafe) deserializer.

use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"WHARFC01";

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a valid cache entry.
    Hit,
    /// Compiled (no entry) and stored.
    Compiled,
    /// An entry existed but was stale or corrupt; recompiled and replaced.
    Replaced,
    /// Compiled without a cache.
    Uncached,
}

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A short hex fingerprint of the engine's code-generation compatibility.
pub(crate) fn engine_fingerprint(engine: &Engine) -> String {
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.update(env!("CARGO_PKG_VERSION").as_bytes());
    hex::encode(&hasher.0.finalize()[..12])
}

impl CompileCache {
    /// Use (and create, private to this user) `dir`.
    ///
    /// Compiled code from the cache is run natively, so the folder must be
    /// writable by nobody else: a folder owned by another user, or open to
    /// the group or others for writing, is refused.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let dir = dir.into();
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
        }
        let meta = std::fs::metadata(&dir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me || meta.permissions().mode() & 0o022 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "compile cache {} must be owned by this user and not writable by group or others (chmod 700)",
                    dir.display()
                ),
            ));
        }
        Ok(CompileCache { dir })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, engine: &Engine, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", engine_fingerprint(engine)))
    }

    /// The compiled form of `wasm` (whose SHA-256 is `digest`), from the
    /// cache when a valid entry exists, compiled and stored otherwise.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(engine, digest);
        let mut outcome = CacheOutcome::Compiled;
        if let Ok(bytes) = std::fs::read(&path) {
            match verified_payload(&bytes) {
                // SAFETY: the payload is exactly what `Component::serialize`
                // wrote for this engine fingerprint (its SHA-256 matches the
                // one stored beside it), in a directory only the host writes.
                Some(payload) => match unsafe { Component::deserialize(engine, payload) } {
                    Ok(component) => return Ok((component, CacheOutcome::Hit)),
                    Err(e) => {
                        tracing::warn!(entry = %path.display(), error = %e, "stale compiled plugin; recompiling")
                    }
                },
                None => {
                    tracing::warn!(entry = %path.display(), "corrupt compiled plugin; recompiling")
                }
            }
            outcome = CacheOutcome::Replaced;
        }
        let component = Component::new(engine, wasm)?;
        match component.serialize() {
            Ok(payload) => {
                if let Err(e) = store_entry(&path, &payload) {
                    tracing::warn!(entry = %path.display(), error = %e, "cannot store compiled plugin");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize compiled plugin"),
        }
        Ok((component, outcome))
    }
}

fn verified_payload(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (digest, payload) = rest.split_at(32);
    (Sha256::digest(payload).as_slice() == digest).then_some(payload)
}

fn store_entry(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(MAGIC)?;
    temp.write_all(&Sha256::digest(payload))?;
    temp.write_all(payload)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_with_wrong_digest_is_refused() {
        let mut entry = MAGIC.to_vec();
        entry.extend_from_slice(&Sha256::digest(b"payload"));
        entry.extend_from_slice(b"payload");
        assert_eq!(verified_payload(&entry), Some(&b"payload"[..]));
        let last = entry.len() - 1;
        entry[last] ^= 1;
        assert_eq!(verified_payload(&entry), None);
        assert_eq!(verified_payload(b"WHARFC01short"), None);
        assert_eq!(verified_payload(b"garbage"), None);
    }
}
