//! `wharf export` (deliver one approved document now) and `wharf
//! deliveries` (what was delivered, and what partners acknowledged).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use wharf_ecm::NodeId;

use crate::flow::outbound::ExportOutcome;
use crate::ledger::{DeliveryState, Ledger};
use crate::runtime::Runtime;

/// Arguments of `wharf export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "wharf.toml")]
    pub config: PathBuf,
    /// The partner to deliver to (it needs an `[partner.outbound]` rule).
    #[arg(long)]
    pub partner: String,
    /// The document's node id. It must be inside the rule's scope and meet
    /// its approval condition; its latest version is sent.
    #[arg(long)]
    pub node: i64,
}

/// Arguments of `wharf deliveries`.
#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// The configuration file (its state folder holds the ledger).
    #[arg(short, long, default_value = "wharf.toml")]
    pub config: PathBuf,
    /// Only this partner.
    #[arg(long)]
    pub partner: Option<String>,
    /// Only deliveries in this state: claimed, decided, uploaded, rejected,
    /// done.
    #[arg(long)]
    pub status: Option<String>,
    /// Only deliveries with this acknowledgement: accepted, partial,
    /// rejected, or none.
    #[arg(long)]
    pub ack: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn load(path: &std::path::Path) -> Result<crate::config::WharfConfig> {
    crate::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Run `wharf export`.
pub fn export(args: ExportArgs, log: &str) -> Result<ExitCode> {
    let config = load(&args.config)?;
    super::init_logging(log, config.runtime.log_format == "json");
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let runtime = Arc::new(Runtime::open(config).await?);
        let Some(out) = runtime.outbound(&args.partner) else {
            bail!(
                "partner {:?} is not running or has no [partner.outbound] rule",
                args.partner
            );
        };
        let report = out.export(NodeId(args.node)).await;
        println!(
            "{} node {} v{}: {}{}{}",
            report.partner,
            report.node,
            report.version,
            report.outcome.as_str(),
            report
                .remote_path
                .as_deref()
                .map(|p| format!(" as {p}"))
                .unwrap_or_default(),
            if report.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", crate::plugin::printable(&report.detail))
            }
        );
        Ok(match report.outcome {
            ExportOutcome::Delivered | ExportOutcome::Skipped => ExitCode::SUCCESS,
            _ => ExitCode::from(1),
        })
    })
}

/// Run `wharf deliveries`.
pub fn deliveries(args: DeliveriesArgs) -> Result<ExitCode> {
    let config = load(&args.config)?;
    let path = config.runtime.state_dir.join("ledger.db");
    if !path.exists() {
        bail!(
            "{} does not exist: nothing was delivered yet",
            path.display()
        );
    }
    let ledger = Ledger::open(&path)?;
    let state = match args.status.as_deref() {
        None => None,
        Some("claimed") => Some(DeliveryState::Claimed),
        Some("decided") => Some(DeliveryState::Decided),
        Some("uploaded") => Some(DeliveryState::Uploaded),
        Some("rejected") => Some(DeliveryState::Rejected),
        Some("done") => Some(DeliveryState::Done),
        Some(other) => {
            bail!("--status {other:?}: use claimed, decided, uploaded, rejected or done")
        }
    };
    if let Some(ack) = args.ack.as_deref()
        && !matches!(ack, "accepted" | "partial" | "rejected" | "none")
    {
        bail!("--ack {ack:?}: use accepted, partial, rejected or none");
    }
    let list = ledger.deliveries(args.partner.as_deref(), state, args.ack.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:<12} {:>8} {:>4} {:<9} {:<9} {:<20} REMOTE",
        "ID", "PARTNER", "NODE", "VER", "STATE", "ACK", "DELIVERED"
    );
    for d in &list {
        let ack = d
            .ack_status
            .clone()
            .unwrap_or_else(|| if d.ack_overdue { "overdue" } else { "-" }.into());
        let remote = match (&d.remote_path, &d.reason) {
            (Some(p), _) => p.clone(),
            (None, Some(r)) => format!("(refused: {r})"),
            (None, None) => "-".into(),
        };
        println!(
            "{:<6} {:<12} {:>8} {:>4} {:<9} {:<9} {:<20} {}",
            d.id,
            d.key.partner,
            d.key.node_id,
            d.key.version,
            d.state.to_string(),
            ack,
            d.uploaded_at.map(wharf_ecm::rfc3339).unwrap_or_default(),
            crate::plugin::printable(&remote)
        );
    }
    Ok(ExitCode::SUCCESS)
}
