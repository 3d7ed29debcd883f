//! The `wharf` command line: parses arguments and delegates to the library.

mod config;
mod ecm;
mod plugin;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Moves business files between trading partners' FTP/FTPS/SFTP servers and
/// an ECM repository, with each partner's rules in a sandboxed plugin.
#[derive(Debug, Parser)]
#[command(name = "wharf", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. `debug` or `wharf=trace`.
    #[arg(long, global = true, env = "WHARF_LOG", default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with partner plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Look inside the embedded ECM repository, or serve it over the
    /// Content Server REST subset (development and test server).
    #[command(subcommand)]
    Ecm(ecm::EcmCommand),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Run the command line; the exit code says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Ecm(cmd) => ecm::run(cmd),
        Command::Config(cmd) => config::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
