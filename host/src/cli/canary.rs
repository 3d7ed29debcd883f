//! `wharf canary`: how a partner's candidate build, run in shadow, compares
//! with the live one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use crate::ledger::Ledger;

/// Arguments of `wharf canary`.
#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// The configuration file (its state folder holds the ledger).
    #[arg(short, long, default_value = "wharf.toml")]
    pub config: PathBuf,
    /// The partner.
    #[arg(long)]
    pub partner: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `wharf canary`.
pub fn run(args: CanaryArgs) -> Result<ExitCode> {
    let config = crate::config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = config.runtime.state_dir.join("ledger.db");
    if !path.exists() {
        bail!("{} does not exist: nothing was decided yet", path.display());
    }
    let summary = Ledger::open(&path)?.canary_summary(&args.partner)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(ExitCode::SUCCESS);
    }
    if summary.is_empty() {
        println!("no shadow verdicts for {}", args.partner);
    }
    for s in &summary {
        println!(
            "candidate {}: {} file(s) decided in shadow, {} disagreement(s)",
            &s.candidate[..s.candidate.len().min(12)],
            s.decided,
            s.disagreed
        );
        for d in &s.disagreements {
            println!(
                "  {}  live {}  candidate {}",
                crate::plugin::printable(&d.path),
                crate::plugin::printable(&d.live_verdict),
                crate::plugin::printable(&d.candidate_verdict)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
