//! The `wharf` command line: parses arguments and delegates to the library.

mod canary;
mod config;
mod ecm;
mod outbound;
mod plugin;
mod run;

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
    /// Run the service: poll every partner, file what arrives, serve
    /// /healthz, /readyz and /metrics; stop cleanly on SIGTERM. With
    /// --once, do one cycle and print a summary.
    Run(run::RunArgs),
    /// The demonstration: sample partner files in local folders, the
    /// example plugins and the embedded repository, one cycle, and what
    /// happened to every file.
    Dev(run::DevArgs),
    /// Deliver one approved document to a partner now (it must meet the
    /// partner's outbound rule like any other).
    Export(outbound::ExportArgs),
    /// List outbound deliveries with their acknowledgement state.
    Deliveries(outbound::DeliveriesArgs),
    /// How a partner's candidate build (`canary` in the configuration),
    /// deciding a share of the files in shadow, compares with the live one.
    Canary(canary::CanaryArgs),
}

/// Run the command line; the exit code says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args, &cli.log),
        Command::Dev(args) => run::dev(args, &cli.log),
        Command::Export(args) => outbound::export(args, &cli.log),
        command => {
            init_logging(&cli.log, false);
            match command {
                Command::Plugin(cmd) => plugin::run(cmd),
                Command::Ecm(cmd) => ecm::run(cmd),
                Command::Config(cmd) => config::run(cmd),
                Command::Deliveries(args) => outbound::deliveries(args),
                Command::Canary(args) => canary::run(args),
                Command::Run(_) | Command::Dev(_) | Command::Export(_) => {
                    unreachable!("handled above")
                }
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Log to standard error, as text or JSON lines. The FTP library's
/// command trace (which includes the `PASS` line) is always capped.
fn init_logging(filter: &str, json: bool) {
    let mut filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if filter
        .max_level_hint()
        .is_none_or(|h| h >= tracing::level_filters::LevelFilter::TRACE)
    {
        // Tracing everything would include the FTP library's command
        // trace, `PASS` line and all: cap that library.
        filter = filter.add_directive(
            wharf_endpoint::LOG_FILTER
                .parse()
                .expect("a valid directive"),
        );
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
