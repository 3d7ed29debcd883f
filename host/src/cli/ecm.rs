//! `wharf ecm ...`: serve the embedded repository over the Content Server
//! REST subset (development and test server) and look inside it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wharf_ecm::embedded::Embedded;
use wharf_ecm::facade::{Facade, FacadeConfig};
use wharf_ecm::otcs::{Mapping, Secret};
use wharf_ecm::{NodeId, Repository, inspect};

/// ECM commands.
#[derive(Debug, Subcommand)]
pub enum EcmCommand {
    /// Serve an embedded repository over the OpenText Content Server REST
    /// subset that wharf's client speaks. This is a development and test
    /// server, not a Content Server: use it to exercise the client end to end.
    #[command(
        long_about = "Serve an embedded repository over the OpenText Content Server REST subset \
that wharf's client speaks (ticket authentication, v2 nodes, versions, categories, permissions, \
holds, search, workflows).\n\nThis is a DEVELOPMENT AND TEST SERVER, not a Content Server and \
not for production use. The password of the one accepted user is read from the environment \
variable named by --password-env."
    )]
    Serve(ServeArgs),
    /// List a folder's children.
    Ls(LsArgs),
    /// Show a node: metadata, versions, categories, permissions, holds.
    Show(TargetArgs),
    /// Write a document's content to standard output.
    Cat(CatArgs),
    /// List workflows and review tasks.
    Tasks(ListArgs),
    /// List audit events.
    Audit(AuditArgs),
}

/// Where the embedded repository lives.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// State directory of the embedded repository.
    #[arg(long, env = "WHARF_ECM_STATE")]
    pub state: PathBuf,
}

/// Arguments of `wharf ecm serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The user accepted by POST /api/v1/auth.
    #[arg(long, default_value = "admin")]
    user: String,
    /// Environment variable holding that user's password.
    #[arg(long, default_value = "WHARF_ECM_PASSWORD")]
    password_env: String,
    /// JSON file mapping category, workspace type, workflow, RM class, user
    /// and group names to ids (as the client is configured).
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Tickets expire after this many idle seconds.
    #[arg(long, default_value_t = 1800)]
    ticket_idle_secs: u64,
}

/// Arguments of `wharf ecm ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Node id or /path (default: the Enterprise volume).
    #[arg(default_value = "2000")]
    target: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A node to look at.
#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Node id or /path.
    target: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `wharf ecm cat`.
#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Document id or /path.
    target: String,
    /// Version number (default: the latest).
    #[arg(long)]
    version: Option<u32>,
}

/// Arguments of list commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `wharf ecm audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Only events of this node (id or /path).
    #[arg(long)]
    node: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Run an ECM command.
pub fn run(cmd: EcmCommand) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(run_async(cmd))
}

async fn open(state: &StateArgs) -> Result<Embedded> {
    let (repo, _) = Embedded::open(&state.state)
        .await
        .with_context(|| format!("opening the repository in {}", state.state.display()))?;
    Ok(repo)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn run_async(cmd: EcmCommand) -> Result<ExitCode> {
    match cmd {
        EcmCommand::Serve(a) => {
            let repo = open(&a.state).await?;
            let password = Secret::from_env(&a.password_env)?;
            let mapping: Mapping = match &a.mapping {
                Some(p) => serde_json::from_slice(
                    &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("parsing {}", p.display()))?,
                None => Mapping::default(),
            };
            let cfg = FacadeConfig {
                users: [(a.user.clone(), password)].into_iter().collect(),
                ticket_idle: std::time::Duration::from_secs(a.ticket_idle_secs),
                mapping,
            };
            let facade = Facade::start(repo, cfg, a.listen).await?;
            eprintln!(
                "wharf ecm: development and test server (not a Content Server) on {}",
                facade.base_url()
            );
            facade
                .run_until(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await;
        }
        EcmCommand::Ls(a) => {
            let repo = open(&a.state).await?;
            let id = inspect::resolve(&repo, &a.target).await?;
            let kids = repo.children(id).await?;
            if a.json {
                print_json(&kids)?;
            } else {
                print!("{}", inspect::nodes_table(&kids));
            }
        }
        EcmCommand::Show(a) => {
            let repo = open(&a.state).await?;
            let id = inspect::resolve(&repo, &a.target).await?;
            let r = inspect::report(&repo, id).await?;
            if a.json {
                print_json(&r)?;
            } else {
                print!("{}", inspect::report_text(&r));
            }
        }
        EcmCommand::Cat(a) => {
            let repo = open(&a.state).await?;
            let id = inspect::resolve(&repo, &a.target).await?;
            inspect::write_content(&repo, id, a.version, &mut tokio::io::stdout()).await?;
        }
        EcmCommand::Tasks(a) => {
            let repo = open(&a.state).await?;
            let w = repo.workflows().await?;
            if a.json {
                print_json(&w)?;
            } else {
                print!("{}", inspect::tasks_table(&w));
            }
        }
        EcmCommand::Audit(a) => {
            let repo = open(&a.state).await?;
            let node: Option<NodeId> = match &a.node {
                Some(t) => Some(inspect::resolve(&repo, t).await?),
                None => None,
            };
            let ev = repo.audit(node).await?;
            if a.json {
                print_json(&ev)?;
            } else {
                print!("{}", inspect::audit_table(&ev));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
