//! `cargo xtask plugins`: build every plugin crate into a component.

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "plugins" => {
            let workspace = xtask::Workspace::discover(&std::env::current_dir()?)?;
            for path in workspace.build_plugins()? {
                println!("{}", path.display());
            }
            Ok(())
        }
        _ => {
            bail!("usage: cargo xtask plugins   (build every plugin into <target>/plugins/*.wasm)")
        }
    }
}
