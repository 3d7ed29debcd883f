//! `wharf plugin deploy|list|history|rollback`: a running service's
//! partner plugins, through its admin endpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};

/// The environment variable read for the admin token when neither
/// `--token-env` nor `--token-file` is given.
const DEFAULT_TOKEN_ENV: &str = "WHARF_ADMIN_TOKEN";

/// Where the running service is.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin endpoint of the running service (`runtime.admin_listen`).
    #[arg(
        long = "admin",
        value_name = "URL",
        env = "WHARF_ADMIN",
        default_value = "http://127.0.0.1:9630"
    )]
    pub url: String,
}

/// Where the admin token is.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Environment variable holding the admin token (default:
    /// WHARF_ADMIN_TOKEN, when set).
    #[arg(long, value_name = "VAR", conflicts_with = "token_file")]
    pub token_env: Option<String>,
    /// File holding the admin token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Arguments of `wharf plugin deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The new build (.wasm).
    pub component: PathBuf,
    /// The partner whose plugin it replaces.
    #[arg(long)]
    pub partner: String,
    /// The running service.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The admin token.
    #[command(flatten)]
    pub token: TokenArgs,
    /// Print the service's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `wharf plugin list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The running service.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `wharf plugin history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The partner.
    pub partner: String,
    /// The running service.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `wharf plugin rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The partner.
    pub partner: String,
    /// The build to bring back: its digest, or the beginning of it
    /// (default: the build that ran before the current one).
    #[arg(long, value_name = "DIGEST")]
    pub to: Option<String>,
    /// The running service.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The admin token.
    #[command(flatten)]
    pub token: TokenArgs,
    /// Print the service's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

impl TokenArgs {
    /// The token, or `None` when none is given and WHARF_ADMIN_TOKEN is not
    /// set. Errors never contain the token.
    fn read(&self) -> Result<Option<String>> {
        let token = match (&self.token_env, &self.token_file) {
            (Some(var), _) => {
                std::env::var(var).map_err(|_| anyhow::anyhow!("--token-env: {var} is not set"))?
            }
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("--token-file: cannot read {}", file.display()))?,
            (None, None) => match std::env::var(DEFAULT_TOKEN_ENV) {
                Ok(t) if !t.trim().is_empty() => t,
                _ => return Ok(None),
            },
        };
        let token = token.trim();
        if token.is_empty() {
            bail!("the admin token given is empty");
        }
        Ok(Some(token.to_string()))
    }
}

/// A client of one admin endpoint.
struct Admin {
    base: String,
    client: Client,
}

impl Admin {
    fn new(args: &AdminArgs) -> Result<Self> {
        let base = args.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--admin {base:?}: expected a URL like http://127.0.0.1:9630");
        }
        let client = Client::builder()
            // The admin endpoint is local; a proxy in the environment is
            // for other traffic.
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            // A deploy compiles the build and runs its fixtures.
            .timeout(Duration::from_secs(600))
            .build()
            .context("setting up the HTTP client")?;
        Ok(Admin { base, client })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send `request`; the JSON answer, or the service's error as a clear
    /// message. A refused build comes back as `Err(Refused)`.
    fn send(&self, request: RequestBuilder) -> Result<Result<serde_json::Value, Refused>> {
        let response = request.send().map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!(
                    "cannot reach the wharf admin endpoint at {}: is the service running? (set --admin to its runtime.admin_listen)",
                    self.base
                )
            } else if e.is_timeout() {
                anyhow::anyhow!("the wharf admin endpoint at {} did not answer in time", self.base)
            } else {
                anyhow::anyhow!("talking to the wharf admin endpoint at {}: {e}", self.base)
            }
        })?;
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        let message = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| text.trim().to_string());
        match status {
            s if s.is_success() => json.map(Ok).with_context(|| {
                format!("the admin endpoint at {} did not answer JSON", self.base)
            }),
            StatusCode::UNPROCESSABLE_ENTITY => Ok(Err(Refused(message))),
            StatusCode::UNAUTHORIZED => bail!(
                "the service refused the request: {message} (pass the token with --token-env VAR or --token-file FILE, or set {DEFAULT_TOKEN_ENV})"
            ),
            StatusCode::FORBIDDEN => bail!("the service refused the request: {message}"),
            StatusCode::PAYLOAD_TOO_LARGE => bail!(
                "the build is larger than the service accepts ({} MiB)",
                crate::admin::MAX_BUILD_BYTES / (1024 * 1024)
            ),
            StatusCode::NOT_FOUND if json.is_none() => bail!(
                "{} has no plugin routes: is it a wharf admin endpoint of this version?",
                self.base
            ),
            _ => bail!("{message} (HTTP {})", status.as_u16()),
        }
    }
}

/// The service refused a build, and why.
struct Refused(String);

fn with_token(request: RequestBuilder, token: &TokenArgs) -> Result<RequestBuilder> {
    Ok(match token.read()? {
        Some(t) => request.bearer_auth(t),
        None => request,
    })
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

fn text<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

fn build(v: &serde_json::Value) -> String {
    format!(
        "{} {} ({})",
        text(v, "name"),
        text(v, "version"),
        short(text(v, "digest"))
    )
}

fn print_change(answer: &serde_json::Value, what: &str, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let partner = text(answer, "partner");
    let active = &answer["active"];
    if answer["swapped"].as_bool() == Some(true) {
        println!(
            "{what} {partner}: {} now runs, replacing {}",
            build(active),
            build(&answer["previous"])
        );
        println!("sha256 {}", text(active, "digest"));
        let passed = answer["fixtures_passed"].as_u64().unwrap_or(0);
        if passed > 0 {
            println!("{passed} fixture(s) passed");
        }
    } else {
        println!("{partner} already runs {}; nothing changed", build(active));
    }
    Ok(ExitCode::SUCCESS)
}

fn refused(Refused(reason): Refused, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::json!({"refused": reason}));
    }
    eprintln!("build refused; the running build keeps serving: {reason}");
    Ok(ExitCode::from(1))
}

/// Run `wharf plugin deploy`.
pub fn deploy(args: DeployArgs) -> Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let wasm = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    if wasm.len() > crate::admin::MAX_BUILD_BYTES {
        bail!(
            "{} is larger than the service accepts ({} MiB)",
            args.component.display(),
            crate::admin::MAX_BUILD_BYTES / (1024 * 1024)
        );
    }
    let request = admin
        .client
        .post(admin.url(&format!("/plugins/{}/deploy", path_segment(&args.partner))))
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(wasm);
    match admin.send(with_token(request, &args.token)?)? {
        Ok(answer) => print_change(&answer, "deployed to", args.json),
        Err(r) => refused(r, args.json),
    }
}

/// Run `wharf plugin rollback`.
pub fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let mut request = admin.client.post(admin.url(&format!(
        "/plugins/{}/rollback",
        path_segment(&args.partner)
    )));
    if let Some(to) = &args.to {
        request = request.query(&[("to", to)]);
    }
    match admin.send(with_token(request, &args.token)?)? {
        Ok(answer) => print_change(&answer, "rolled back", args.json),
        Err(r) => refused(r, args.json),
    }
}

/// Run `wharf plugin list`.
pub fn list(args: ListArgs) -> Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let answer = match admin.send(admin.client.get(admin.url("/plugins")))? {
        Ok(a) => a,
        Err(Refused(r)) => bail!("{r}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<24} {:<10} {:<12} {:<24} {:<9} last refusal",
        "partner", "plugin", "version", "digest", "since", "how"
    );
    for p in answer["partners"].as_array().into_iter().flatten() {
        let partner = text(p, "partner");
        let refusal = match p.get("last_refusal").filter(|r| !r.is_null()) {
            Some(r) => format!(
                "{} {}",
                text(r, "at"),
                crate::plugin::printable(text(r, "reason"))
            ),
            None => "-".into(),
        };
        match p.get("active").filter(|a| !a.is_null()) {
            Some(a) => println!(
                "{:<16} {:<24} {:<10} {:<12} {:<24} {:<9} {}",
                partner,
                text(a, "name"),
                text(a, "version"),
                short(text(a, "digest")),
                a.get("since").and_then(|s| s.as_str()).unwrap_or("-"),
                a.get("how").and_then(|s| s.as_str()).unwrap_or("-"),
                refusal
            ),
            None => println!(
                "{:<16} not running: {}",
                partner,
                crate::plugin::printable(text(p, "unavailable"))
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `wharf plugin history`.
pub fn history(args: HistoryArgs) -> Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let url = admin.url(&format!("/plugins/{}/history", path_segment(&args.partner)));
    let answer = match admin.send(admin.client.get(url))? {
        Ok(a) => a,
        Err(Refused(r)) => bail!("{r}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let active = text(&answer, "active");
    println!(
        "  {:<24} {:<9} {:<15} {:<24} {:<10} digest",
        "at", "how", "actor", "plugin", "version"
    );
    for h in answer["history"].as_array().into_iter().flatten() {
        let digest = text(h, "digest");
        println!(
            "{} {:<24} {:<9} {:<15} {:<24} {:<10} {}",
            if digest == active { "*" } else { " " },
            text(h, "at"),
            text(h, "how"),
            text(h, "actor"),
            text(h, "name"),
            text(h, "version"),
            digest
        );
    }
    let refusals = answer["refusals"].as_array().cloned().unwrap_or_default();
    if !refusals.is_empty() {
        println!("\nrefused builds:");
        for r in &refusals {
            println!(
                "  {} {:<9} {:<15} {}  {}",
                text(r, "at"),
                text(r, "how"),
                text(r, "actor"),
                r.get("digest")
                    .and_then(|d| d.as_str())
                    .map(short)
                    .unwrap_or("-"),
                crate::plugin::printable(text(r, "reason"))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `partner` as one URL path segment.
fn path_segment(partner: &str) -> String {
    percent_encoding::utf8_percent_encode(partner, percent_encoding::NON_ALPHANUMERIC).to_string()
}
