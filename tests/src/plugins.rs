//! Plugin components for tests: built once per test process from the
//! workspace's plugin crates, through the same code as `cargo xtask plugins`.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The path of the built component of plugin crate `name` (e.g.
/// `"acme-invoices"`), building every plugin on first use.
///
/// Panics with the build error if the plugins cannot be built: a test that
/// needs a plugin cannot run without it.
pub fn component(name: &str) -> PathBuf {
    let path = built().plugin_out_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "no plugin component {}", path.display());
    path
}

/// The workspace, with every plugin built.
fn built() -> &'static xtask::Workspace {
    static BUILT: OnceLock<Result<xtask::Workspace, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let workspace = xtask::Workspace::discover(&here).map_err(|e| format!("{e:#}"))?;
            workspace.build_plugins().map_err(|e| format!("{e:#}"))?;
            Ok(workspace)
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("building plugin components failed: {e}"))
}

/// A compiled-component cache folder shared by test runs, under the target
/// directory (entries are keyed by component and engine, so sharing is safe).
pub fn compile_cache_dir() -> PathBuf {
    built().target_dir.join("plugin-test-cache")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}
