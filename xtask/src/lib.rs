//! Workspace tasks shared by `cargo xtask` and the integration tests: find
//! every plugin crate and build it into a WebAssembly component.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The compilation target of plugin components.
pub const PLUGIN_TARGET: &str = "wasm32-wasip2";

/// Folders (relative to the workspace root) whose crates are plugins.
const PLUGIN_DIRS: [&str; 2] = ["plugins", "tests/plugins"];

/// A plugin crate of the workspace.
#[derive(Debug, Clone)]
pub struct PluginCrate {
    /// Package name, e.g. `acme-invoices`.
    pub name: String,
    /// Folder of its Cargo.toml.
    pub dir: PathBuf,
}

/// The workspace layout as cargo reports it.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root.
    pub root: PathBuf,
    /// Cargo's target directory (honours `CARGO_TARGET_DIR`).
    pub target_dir: PathBuf,
    /// Every plugin crate.
    pub plugins: Vec<PluginCrate>,
}

impl Workspace {
    /// Read the workspace that contains `dir`.
    pub fn discover(dir: &Path) -> Result<Self> {
        let output = Command::new(cargo())
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(dir)
            .output()
            .context("running `cargo metadata`")?;
        if !output.status.success() {
            bail!(
                "`cargo metadata` failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let meta: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("parsing `cargo metadata` output")?;
        let root = PathBuf::from(
            meta["workspace_root"]
                .as_str()
                .context("cargo metadata has no workspace_root")?,
        );
        let target_dir = PathBuf::from(
            meta["target_directory"]
                .as_str()
                .context("cargo metadata has no target_directory")?,
        );
        let mut plugins = Vec::new();
        for package in meta["packages"].as_array().into_iter().flatten() {
            let (Some(name), Some(manifest)) =
                (package["name"].as_str(), package["manifest_path"].as_str())
            else {
                continue;
            };
            let dir = Path::new(manifest)
                .parent()
                .unwrap_or(Path::new(""))
                .to_path_buf();
            let parent = dir.parent().unwrap_or(Path::new(""));
            if PLUGIN_DIRS.iter().any(|d| parent == root.join(d)) {
                plugins.push(PluginCrate {
                    name: name.to_string(),
                    dir,
                });
            }
        }
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Workspace {
            root,
            target_dir,
            plugins,
        })
    }

    /// Where built components are collected: `<target>/plugins/<name>.wasm`.
    pub fn plugin_out_dir(&self) -> PathBuf {
        self.target_dir.join("plugins")
    }

    /// Build every plugin crate into a component and copy it to
    /// [`Workspace::plugin_out_dir`]. Returns the component paths.
    ///
    /// The build uses a target directory of its own so that it can run
    /// while an outer `cargo test` holds the main one.
    pub fn build_plugins(&self) -> Result<Vec<PathBuf>> {
        ensure_target_installed()?;
        let build_dir = self.target_dir.join("plugin-build");
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&self.root).args([
            "build",
            "--profile",
            "plugin",
            "--target",
            PLUGIN_TARGET,
            "--target-dir",
        ]);
        cmd.arg(&build_dir);
        for plugin in &self.plugins {
            cmd.args(["--package", &plugin.name]);
        }
        let status = cmd.status().context("running cargo to build plugins")?;
        if !status.success() {
            bail!("building plugin components failed ({status})");
        }
        let out = self.plugin_out_dir();
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut built = Vec::new();
        for plugin in &self.plugins {
            let file = format!("{}.wasm", plugin.name.replace('-', "_"));
            let from = build_dir.join(PLUGIN_TARGET).join("plugin").join(&file);
            let to = out.join(format!("{}.wasm", plugin.name));
            // Copy then rename, so a concurrent reader never sees half a file.
            let temp = out.join(format!(".{}.{}.tmp", plugin.name, std::process::id()));
            std::fs::copy(&from, &temp)
                .with_context(|| format!("copying {} to {}", from.display(), temp.display()))?;
            std::fs::rename(&temp, &to)
                .with_context(|| format!("renaming {} to {}", temp.display(), to.display()))?;
            built.push(to);
        }
        Ok(built)
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Install the plugin target with rustup when it is missing.
fn ensure_target_installed() -> Result<()> {
    let Ok(output) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup: the toolchain is managed another way; let cargo report.
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&output.stdout);
    if installed.lines().any(|l| l.trim() == PLUGIN_TARGET) {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", PLUGIN_TARGET])
        .status()
        .context("running `rustup target add`")?;
    if !status.success() {
        bail!("`rustup target add {PLUGIN_TARGET}` failed ({status})");
    }
    Ok(())
}
