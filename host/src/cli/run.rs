//! `wharf run` (the service, or one cycle with `--once`) and `wharf dev`
//! (the one-command demonstration on local folders and the embedded
//! repository).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;
use wharf_ecm::{NodeId, Repository, WorkspaceSpec};

use crate::flow::inbound::Outcome;
use crate::runtime::{Runtime, Summary};

/// Arguments of `wharf run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "wharf.toml")]
    pub config: PathBuf,
    /// Do one poll cycle of every partner, print a summary and exit.
    #[arg(long)]
    pub once: bool,
    /// With --once: print the summary as JSON.
    #[arg(long, requires = "once")]
    pub json: bool,
}

/// Arguments of `wharf dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Folder for the demonstration (partner folders, state, configuration);
    /// recreated at every run.
    #[arg(long, default_value = ".wharf-dev")]
    pub dir: PathBuf,
    /// Sample partner files, one folder per partner.
    #[arg(long, default_value = "examples/samples")]
    pub samples: PathBuf,
    /// Folder holding the compiled example plugins (`cargo xtask plugins`
    /// writes them to `<target>/plugins`).
    #[arg(long, env = "WHARF_PLUGINS")]
    pub plugins: Option<PathBuf>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wharf")
        .build()
        .context("starting the async runtime")
}

/// Run `wharf run`.
pub fn run(args: RunArgs, log: &str) -> Result<ExitCode> {
    let config = match crate::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    super::init_logging(log, config.runtime.log_format == "json");
    let listen = config.runtime.admin_listen.clone();
    let token = if args.once {
        None
    } else {
        match crate::admin::AdminToken::from_config(&config.runtime) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: {e}", args.config.display());
                return Ok(ExitCode::from(2));
            }
        }
    };
    runtime()?.block_on(async move {
        let runtime = Arc::new(Runtime::open(config).await?);
        if args.once {
            let _bars = std::io::stderr()
                .is_terminal()
                .then(|| runtime.show_progress());
            let summary = runtime.once().await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary_json(&summary))?);
            } else {
                print_summary(&summary);
            }
            return Ok(exit_code(&summary));
        }
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("admin endpoint {listen}"))?;
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or(listen);
        tracing::info!(
            "admin endpoint on http://{bound} (/healthz, /readyz, /metrics, /plugins; deploy and rollback {}); {} partner(s) running",
            if token.is_some() {
                "need the admin token"
            } else {
                "disabled: no admin token configured"
            },
            runtime.partners().len()
        );
        let shutdown = CancellationToken::new();
        let admin = tokio::spawn(crate::admin::serve_runtime(
            listener,
            runtime.clone(),
            token,
            shutdown.clone().cancelled_owned(),
        ));
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested");
            signals.cancel();
        });
        runtime.serve(shutdown).await?;
        let _ = admin.await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// 0 when every file reached an end (filed, quarantined, ignored, or not
/// complete yet); 1 when something must be retried or a partner could not
/// be reached.
fn exit_code(summary: &Summary) -> ExitCode {
    let export_retrying = summary
        .exports
        .iter()
        .any(|e| e.outcome == crate::flow::outbound::ExportOutcome::Retrying);
    if summary.count(Outcome::Retrying) > 0 || export_retrying || !summary.unavailable.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn summary_json(summary: &Summary) -> serde_json::Value {
    serde_json::json!({
        "files": summary.files,
        "exports": summary.exports,
        "waiting": summary.waiting.iter().map(|(p, n)| serde_json::json!({"partner": p, "files": n})).collect::<Vec<_>>(),
        "unavailable": summary.unavailable.iter().map(|u| serde_json::json!({"partner": u.partner, "reason": u.reason})).collect::<Vec<_>>(),
        "elapsed_secs": summary.elapsed.as_secs_f64(),
    })
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Print the summary table, then one line per file.
pub fn print_summary(summary: &Summary) {
    let outcomes = [
        Outcome::Filed,
        Outcome::Quarantined,
        Outcome::Ignored,
        Outcome::Deferred,
        Outcome::Retrying,
    ];
    println!(
        "{:<16} {:>6} {:>11} {:>7} {:>8} {:>8} {:>7} {:>10}",
        "partner", "filed", "quarantined", "ignored", "deferred", "retrying", "waiting", "received"
    );
    for (partner, waiting) in &summary.waiting {
        let mine: Vec<_> = summary
            .files
            .iter()
            .filter(|f| &f.partner == partner)
            .collect();
        let n = |o: Outcome| mine.iter().filter(|f| f.outcome == o).count();
        let bytes: u64 = mine.iter().map(|f| f.bytes_received).sum();
        println!(
            "{:<16} {:>6} {:>11} {:>7} {:>8} {:>8} {:>7} {:>10}",
            partner,
            n(outcomes[0]),
            n(outcomes[1]),
            n(outcomes[2]),
            n(outcomes[3]),
            n(outcomes[4]),
            waiting,
            human_bytes(bytes)
        );
    }
    for u in &summary.unavailable {
        println!("{:<16} unavailable: {}", u.partner, u.reason);
    }
    let shown: Vec<_> = summary
        .files
        .iter()
        .filter(|f| f.outcome != Outcome::Skipped)
        .collect();
    if !shown.is_empty() {
        println!();
        for f in shown {
            let what = match (f.outcome, f.node) {
                (Outcome::Filed, Some(node)) => format!("node {node}"),
                _ => f.detail.clone(),
            };
            println!(
                "  {:<12} {:<11} {}  {}",
                f.partner,
                f.outcome.as_str(),
                crate::plugin::printable(&f.path),
                crate::plugin::printable(&what)
            );
        }
    }
    let exports: Vec<_> = summary
        .exports
        .iter()
        .filter(|e| e.outcome != crate::flow::outbound::ExportOutcome::Skipped)
        .collect();
    if !exports.is_empty() {
        println!("\noutbound:");
        for e in &exports {
            println!(
                "  {:<12} {:<11} node {} v{} {}  {}",
                e.partner,
                e.outcome.as_str(),
                e.node,
                e.version,
                crate::plugin::printable(&e.name),
                crate::plugin::printable(e.remote_path.as_deref().unwrap_or(&e.detail))
            );
        }
    }
    println!(
        "\n{} file(s), {} deliver{} in {:.2} s",
        summary.files.len(),
        exports.len(),
        if exports.len() == 1 { "y" } else { "ies" },
        summary.elapsed.as_secs_f64()
    );
}

/// Where the example plugins were built: `--plugins`, else
/// `$CARGO_TARGET_DIR/plugins`, else `target/plugins`.
fn plugins_dir(args: &DevArgs) -> PathBuf {
    if let Some(p) = &args.plugins {
        return p.clone();
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("plugins");
    }
    PathBuf::from("target/plugins")
}

/// The demonstration partners: id, plugin component, settings.
const DEV_PARTNERS: [(&str, &str); 2] = [
    ("acme", "acme-invoices.wasm"),
    ("northwind", "northwind-quality.wasm"),
];

fn copy_dir(from: &Path, to: &Path) -> Result<usize> {
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Run `wharf dev`.
pub fn dev(args: DevArgs, log: &str) -> Result<ExitCode> {
    // The summary tells the story; routine per-file lines would repeat it.
    super::init_logging(if log == "info" { "warn" } else { log }, false);
    let plugins = plugins_dir(&args);
    for (_, wasm) in DEV_PARTNERS {
        if !plugins.join(wasm).is_file() {
            bail!(
                "{} is missing: build the example plugins first with `cargo xtask plugins` (or point --plugins at them)",
                plugins.join(wasm).display()
            );
        }
    }
    let dir = &args.dir;
    let marker = dir.join(".wharf-dev");
    if dir.exists() {
        if !marker.exists() {
            bail!(
                "{} exists and was not made by `wharf dev`; choose another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(&marker, "made by `wharf dev`; removed at its next run\n")?;
    let dir = std::fs::canonicalize(dir)?;
    let plugins = std::fs::canonicalize(&plugins)?;
    let mut toml = format!(
        "# Written by `wharf dev`.\n[runtime]\nstate_dir = \"state\"\nplugins_dir = {:?}\n\n[ecm]\nkind = \"embedded\"\n",
        plugins.display().to_string()
    );
    for (id, wasm) in DEV_PARTNERS {
        let folder = dir.join("partners").join(id);
        let n = copy_dir(&args.samples.join(id), &folder.join("inbox"))?;
        println!(
            "seeded {n} sample file(s) into {}",
            folder.join("inbox").display()
        );
        toml.push_str(&format!(
            "\n[[partner]]\nid = \"{id}\"\nplugin = \"{wasm}\"\nendpoint = \"file://{}\"\npoll_interval_secs = 1\ncomplete = {{ stable_polls = 1, min_age_secs = 0 }}\n",
            folder.display()
        ));
    }
    let config_path = dir.join("wharf.toml");
    std::fs::write(&config_path, &toml)?;
    let config = crate::config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = config.runtime.state_dir.clone();
    runtime()?.block_on(async move {
        let runtime = Arc::new(Runtime::open(config).await?);
        // The business system would own the supplier workspace; the
        // demonstration creates it, as an ERP integration would.
        let repo = runtime.repository();
        if repo.find_workspace("Supplier", "100234").await?.is_none() {
            let parent = repo
                .ensure_folder(NodeId::ENTERPRISE, &["Suppliers".to_string()])
                .await?;
            repo.create_workspace(
                parent,
                &WorkspaceSpec {
                    workspace_type: "Supplier".into(),
                    business_id: "100234".into(),
                    name: "Northwind Traders (100234)".into(),
                },
            )
            .await?;
        }
        let summary = runtime.once().await;
        println!();
        print_summary(&summary);
        let ecm = state.join("ecm");
        let q = |p: &Path| shell_quote(&p.display().to_string());
        println!("\nLook further (the repository is in {}):", ecm.display());
        println!("  wharf ecm ls --state {} /Partners/acme", q(&ecm));
        println!(
            "  wharf ecm ls --state {} /Partners/acme/Exceptions",
            q(&ecm)
        );
        println!("  wharf ecm tasks --state {}", q(&ecm));
        println!("  wharf ecm audit --state {}", q(&ecm));
        println!("  wharf ecm show --state {} <node id>", q(&ecm));
        println!(
            "Partner folders (inbox, archive, error): {}",
            dir.join("partners").display()
        );
        println!("Configuration: {}", config_path.display());
        Ok(exit_code(&summary))
    })
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1024 * 1024 * 1024), "1.0 GiB");
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/tmp/x"), "/tmp/x");
        assert_eq!(shell_quote("/tmp/a b'c"), "'/tmp/a b'\\''c'");
    }
}
