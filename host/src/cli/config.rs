//! `wharf config ...`: check a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

/// Configuration commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file and report every problem with its key
    /// path and line.
    Check(CheckArgs),
}

/// Arguments of `wharf config check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "wharf.toml")]
    pub config: PathBuf,
}

/// Run a configuration command.
pub fn run(cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Check(args) => match crate::config::load(&args.config) {
            Ok(config) => {
                println!(
                    "{}: ok ({} partner{}, ecm {})",
                    args.config.display(),
                    config.partners.len(),
                    if config.partners.len() == 1 { "" } else { "s" },
                    match config.ecm {
                        crate::config::EcmConfig::Embedded => "embedded",
                        crate::config::EcmConfig::Otcs(_) => "otcs",
                    }
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!(
                    "{} problem{} found",
                    e.problems.len(),
                    if e.problems.len() == 1 { "" } else { "s" }
                );
                Ok(ExitCode::from(1))
            }
        },
    }
}
