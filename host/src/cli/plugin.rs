//! `wharf plugin ...`: inspect and try partner plugins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::plugin::decision::{Filing, Target, Verdict};
use crate::plugin::fixtures::{self, Comparison, Fixtures};
use crate::plugin::{HostConfig, Limits, LocalPartnerFiles, PartnerContext, Plugin, PluginHost};

mod remote;

/// Plugin commands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a component, print its world, version and exports, and run it on
    /// sample files, printing each verdict.
    Check(CheckArgs),
    /// Run a component over every fixture file in a folder and compare each
    /// verdict with the expectation beside it (`<file>.expected.json`);
    /// prints a diff for each mismatch and exits non-zero if any differ.
    /// `settings.toml` in the folder holds plugin settings.
    Test(TestArgs),
    /// Create a new plugin crate: a sample rule with native unit tests,
    /// fixtures with their expected verdicts, and a README saying how to
    /// build, test and deploy it.
    New(NewArgs),
    /// Deploy a new build to a partner of the running service: the service
    /// checks it (world, version, the partner's fixtures), installs it in
    /// its plugins folder and swaps it in, or refuses it with the reason.
    Deploy(remote::DeployArgs),
    /// List the running service's partners with the build each runs.
    List(remote::ListArgs),
    /// Show the builds a partner of the running service ran, and the
    /// builds refused.
    History(remote::HistoryArgs),
    /// Bring back a build a partner of the running service ran before (by
    /// default the one before the current build).
    Rollback(remote::RollbackArgs),
}

/// Arguments of `wharf plugin new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's crate name: ASCII letters, digits, `-` and `_`,
    /// starting with a letter (e.g. `acme-orders`).
    pub name: String,
    /// The folder in which the plugin's folder `<NAME>` is created.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The wharf SDK to depend on by path. Default: the `sdk` folder of the
    /// wharf source this binary was built from, when it is still there;
    /// otherwise the SDK is required by version.
    #[arg(long, value_name = "DIR")]
    pub sdk_path: Option<PathBuf>,
}

/// Arguments of `wharf plugin test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The plugin component (.wasm).
    pub component: PathBuf,
    /// The fixtures folder.
    pub fixtures: PathBuf,
    /// Write the actual verdicts as the new expectations.
    #[arg(long)]
    pub update: bool,
    /// Sandbox settings.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Arguments of `wharf plugin check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The plugin component (.wasm).
    pub component: PathBuf,
    /// Sample files to decide, as if they had arrived from the partner.
    pub samples: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Sandbox settings.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// How the plugin is run: partner, settings, capabilities, limits, cache.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Partner id passed to the plugin.
    #[arg(long, default_value = "check")]
    pub partner: String,
    /// A plugin setting, `KEY=VALUE` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// A local folder standing for the partner's remote root (the `ftp`
    /// capability); the plugin's outbox is its `outbox` sub-folder.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Per-call deadline in milliseconds.
    #[arg(long, default_value_t = Limits::default().deadline_ms)]
    pub deadline_ms: u64,
    /// Per-call memory cap in MiB.
    #[arg(long, default_value_t = Limits::default().memory_bytes / (1024 * 1024))]
    pub memory_mib: u64,
    /// Per-call fuel (instruction budget); enables fuel metering.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Compiled-component cache folder (default: the user's cache folder).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Compile without reading or writing the cache.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
}

impl SandboxArgs {
    /// Load `component` in a host set up as these arguments say, with
    /// `extra` settings under the command-line ones.
    fn load(
        &self,
        component: &Path,
        extra: BTreeMap<String, String>,
    ) -> Result<(Plugin, Arc<PartnerContext>)> {
        let limits = Limits {
            deadline_ms: self.deadline_ms,
            memory_bytes: self.memory_mib.saturating_mul(1024 * 1024),
            fuel: self.fuel,
        };
        let config = HostConfig {
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache.clone().or_else(default_cache_dir)
            },
            fuel: self.fuel.is_some(),
            ..HostConfig::default()
        };
        limits
            .validate(config.max_memory_bytes, config.fuel)
            .map_err(anyhow::Error::msg)
            .context("invalid limits")?;
        let host = PluginHost::new(config)?;
        let plugin = host.load(component)?;
        let mut context = PartnerContext::new(&self.partner);
        context.settings = extra;
        context.settings.extend(parse_settings(&self.settings)?);
        context.limits = limits;
        if let Some(root) = &self.root {
            context.files = Arc::new(
                LocalPartnerFiles::open(root, "outbox")
                    .with_context(|| format!("opening partner root {}", root.display()))?,
            );
        }
        Ok((plugin, Arc::new(context)))
    }
}

/// Run a plugin command.
pub fn run(cmd: PluginCommand) -> Result<ExitCode> {
    match cmd {
        PluginCommand::Check(args) => check(args),
        PluginCommand::Test(args) => test(args),
        PluginCommand::New(args) => scaffold::new_plugin(args),
        PluginCommand::Deploy(args) => remote::deploy(args),
        PluginCommand::List(args) => remote::list(args),
        PluginCommand::History(args) => remote::history(args),
        PluginCommand::Rollback(args) => remote::rollback(args),
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wharf").join("components"))
}

fn parse_settings(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut settings = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--set {pair:?}: expected KEY=VALUE");
        };
        if key.is_empty() {
            bail!("--set {pair:?}: the key is empty");
        }
        settings.insert(key.to_string(), value.to_string());
    }
    Ok(settings)
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let (plugin, context) = args.sandbox.load(&args.component, BTreeMap::new())?;

    let mut failed = false;
    let mut results = Vec::new();
    if !args.json {
        print_plugin(&args.component, &plugin);
    }
    for sample in &args.samples {
        let outcome = fixtures::decide(&plugin, &context, sample);
        match &outcome {
            Ok(verdict) => {
                if args.json {
                    results.push(serde_json::json!({"sample": sample, "verdict": verdict}));
                } else {
                    print_verdict(sample, verdict);
                }
            }
            Err(e) => {
                failed = true;
                if args.json {
                    results.push(serde_json::json!({"sample": sample, "error": format!("{e:#}")}));
                } else {
                    println!("\nsample    {}\nerror     {e:#}", sample.display());
                }
            }
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "component": args.component,
            "plugin": plugin.info(),
            "sha256": plugin.digest(),
            "size": plugin.size(),
            "world": plugin.summary(),
            "results": results,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn test(args: TestArgs) -> Result<ExitCode> {
    let fixtures = Fixtures::open(&args.fixtures)?;
    let (plugin, context) = args
        .sandbox
        .load(&args.component, fixtures.settings.clone())?;
    let (mut passed, mut failed) = (0, 0);
    if args.update {
        for fixture in &fixtures.files {
            let actual = fixtures::actual(&plugin, &context, fixture)?;
            let expected_path = fixtures::expected_path(fixture);
            std::fs::write(&expected_path, expectation_text(&actual)?)
                .with_context(|| format!("writing {}", expected_path.display()))?;
            let name = fixture.file_name().unwrap_or_default().to_string_lossy();
            println!("updated {name}");
            passed += 1;
        }
    } else {
        for r in fixtures::compare(&plugin, &context, &fixtures)? {
            match &r.comparison {
                Comparison::Passed => {
                    println!("ok      {}", r.name);
                    passed += 1;
                }
                Comparison::Differs { expected } => {
                    println!("FAILED  {}", r.name);
                    print_diff(expected, &r.actual)?;
                    failed += 1;
                }
                Comparison::NoExpectation => {
                    println!(
                        "FAILED  {}: no {} (run with --update to record it)",
                        r.name,
                        fixtures::expected_path(&r.fixture).display()
                    );
                    failed += 1;
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The text of an expectation file holding `verdict` (a verdict as JSON).
fn expectation_text(verdict: &serde_json::Value) -> Result<String> {
    Ok(serde_json::to_string_pretty(verdict)? + "\n")
}

/// A line diff of two JSON documents, pretty-printed: `-` expected, `+` actual.
fn print_diff(expected: &serde_json::Value, actual: &serde_json::Value) -> Result<()> {
    let e = serde_json::to_string_pretty(expected)?;
    let a = serde_json::to_string_pretty(actual)?;
    let (e, a): (Vec<&str>, Vec<&str>) = (e.lines().collect(), a.lines().collect());
    // Longest common subsequence, small inputs: verdicts are a few dozen lines.
    let mut lcs = vec![vec![0usize; a.len() + 1]; e.len() + 1];
    for i in (0..e.len()).rev() {
        for j in (0..a.len()).rev() {
            lcs[i][j] = if e[i] == a[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < e.len() || j < a.len() {
        if i < e.len() && j < a.len() && e[i] == a[j] {
            println!("          {}", e[i]);
            i += 1;
            j += 1;
        } else if j < a.len() && (i == e.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            println!("        + {}", a[j]);
            j += 1;
        } else {
            println!("        - {}", e[i]);
            i += 1;
        }
    }
    Ok(())
}

fn content_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn print_plugin(path: &Path, plugin: &Plugin) {
    let info = plugin.info();
    let summary = plugin.summary();
    println!("plugin    {} {}", info.name, info.version);
    if !info.description.is_empty() {
        println!("          {}", info.description);
    }
    println!(
        "component {} ({} bytes, sha256 {})",
        path.display(),
        plugin.size(),
        plugin.digest()
    );
    println!("world     {}", summary.world);
    println!("exports   {}", summary.exports.join(", "));
    println!("imports   {}", summary.imports.join(", "));
}

fn print_verdict(sample: &Path, verdict: &Verdict) {
    println!(
        "\nsample    {} ({} bytes)",
        sample.display(),
        content_size(sample)
    );
    match verdict {
        Verdict::Accept(filing) => {
            println!("verdict   accept");
            print_filing(filing);
        }
        Verdict::Reject(r) => {
            println!("verdict   reject");
            println!("code      {}", r.code);
            println!("message   {}", r.message);
            for (k, v) in &r.details {
                println!("detail    {k}: {v}");
            }
        }
        Verdict::Defer {
            reason,
            retry_after,
        } => {
            println!("verdict   defer for {} s: {reason}", retry_after.as_secs());
        }
        Verdict::Ignore { reason } => println!("verdict   ignore: {reason}"),
    }
}

fn print_filing(f: &Filing) {
    match &f.target {
        Target::Folder { path } => println!("target    folder {path}"),
        Target::Workspace {
            workspace_type,
            business_id,
            folder,
        } => println!("target    workspace {workspace_type} {business_id} / {folder}"),
    }
    println!("name      {}", f.name);
    if let Some(d) = &f.description {
        println!("describe  {d}");
    }
    for c in &f.categories {
        let attrs: Vec<String> = c
            .attributes
            .iter()
            .map(|a| format!("{}={}", a.name, a.value.as_text()))
            .collect();
        println!("category  {}: {}", c.name, attrs.join(", "));
    }
    if let Some(r) = &f.retention {
        println!("retention {r}");
    }
    if let Some(h) = &f.hold {
        println!("hold      {h}");
    }
    for g in &f.permissions {
        println!("grant     {:?}: {:?}", g.principal, g.rights);
    }
    if let Some(w) = &f.workflow {
        match &w.assignee {
            Some(a) => println!("workflow  {} for {a}: {}", w.workflow, w.comment),
            None => println!("workflow  {}: {}", w.workflow, w.comment),
        }
    }
    println!("collision {:?}", f.version_policy);
}

/// `wharf plugin new`: a plugin crate that builds on its own, with a sample
/// rule, native unit tests, fixtures with their expected verdicts and a
/// README.
mod scaffold {
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use anyhow::{Context, Result, bail};

    use super::{NewArgs, expectation_text};
    use crate::plugin::decision::{
        Attribute, AttributeValue, Category, Filing, Rejection, Target, Verdict, VersionPolicy,
        relative_path,
    };
    use crate::plugin::fixtures::{SETTINGS, expected_path};

    /// How the new crate depends on the SDK.
    enum Sdk {
        /// A local SDK folder (canonical path).
        Path(PathBuf),
        /// A version requirement, from a registry.
        Version(String),
    }

    impl Sdk {
        /// The `[dependencies]` line.
        fn dependency(&self) -> Result<String> {
            Ok(match self {
                Sdk::Path(path) => {
                    let path = path
                        .to_str()
                        .with_context(|| format!("{} is not UTF-8", path.display()))?;
                    format!(
                        "wharf-sdk = {{ path = {} }}",
                        toml::Value::String(path.to_string())
                    )
                }
                Sdk::Version(req) => format!("wharf-sdk = {}", toml::Value::String(req.clone())),
            })
        }
    }

    pub(super) fn new_plugin(args: NewArgs) -> Result<ExitCode> {
        check_name(&args.name)?;
        let sdk = find_sdk(args.sdk_path.as_deref())?;
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("creating {}", args.dir.display()))?;
        let root = args.dir.join(&args.name);
        match std::fs::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{} already exists; choose another name or --dir",
                root.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("creating {}", root.display())),
        }
        if let Err(e) = write_crate(&root, &args.name, &sdk) {
            // Leave nothing half-made behind: the folder is ours, just made.
            let _ = std::fs::remove_dir_all(&root);
            return Err(e);
        }
        let lib = args.name.replace('-', "_");
        println!("created plugin {} in {}", args.name, root.display());
        match &sdk {
            Sdk::Path(path) => println!("wharf-sdk from {}", path.display()),
            Sdk::Version(req) => {
                println!("wharf-sdk {req} from the registry (pass --sdk-path to use a local SDK)")
            }
        }
        println!("\nnext:");
        println!("  cd {}", root.display());
        println!("  cargo test");
        println!("  cargo build --release --target wasm32-wasip2");
        println!("  wharf plugin test target/wasm32-wasip2/release/{lib}.wasm fixtures");
        Ok(ExitCode::SUCCESS)
    }

    /// Words a crate name cannot be: Rust keywords (the library is named
    /// after the crate), cargo's and the standard library's own names.
    const RESERVED: &[&str] = &[
        "abstract",
        "alloc",
        "as",
        "async",
        "await",
        "become",
        "box",
        "break",
        "build",
        "const",
        "continue",
        "core",
        "crate",
        "deps",
        "do",
        "dyn",
        "else",
        "enum",
        "examples",
        "extern",
        "false",
        "final",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "incremental",
        "let",
        "loop",
        "macro",
        "match",
        "mod",
        "move",
        "mut",
        "override",
        "priv",
        "proc_macro",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "std",
        "struct",
        "super",
        "test",
        "trait",
        "true",
        "try",
        "type",
        "typeof",
        "unsafe",
        "unsized",
        "use",
        "virtual",
        "where",
        "while",
        "wharf_sdk",
        "yield",
    ];

    /// Check `name` against the rules for crate names.
    fn check_name(name: &str) -> Result<()> {
        let invalid = |why: &str| anyhow::anyhow!("invalid plugin name {name:?}: {why}");
        let Some(first) = name.chars().next() else {
            return Err(invalid("it is empty"));
        };
        if !first.is_ascii_alphabetic() {
            return Err(invalid("it must start with an ASCII letter"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(invalid(&format!(
                "{c:?} is not allowed (only ASCII letters, digits, `-` and `_`)"
            )));
        }
        if name.len() > 64 {
            return Err(invalid("it is longer than 64 characters"));
        }
        let lib = name.replace('-', "_");
        if RESERVED.contains(&lib.as_str()) {
            return Err(invalid(
                "it is a Rust keyword or a name Rust and cargo reserve",
            ));
        }
        let lower = lib.to_ascii_lowercase();
        let windows = ["con", "prn", "aux", "nul"].contains(&lower.as_str())
            || ((lower.starts_with("com") || lower.starts_with("lpt"))
                && lower.len() == 4
                && lower.as_bytes()[3].is_ascii_digit());
        if windows {
            return Err(invalid("it is a reserved file name on Windows"));
        }
        Ok(())
    }

    /// Whether `dir` holds the wharf SDK's crate.
    fn is_sdk(dir: &Path) -> bool {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .ok()
            .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
            .is_some_and(|manifest| {
                manifest
                    .get("package")
                    .and_then(|p| p.get("name"))
                    .and_then(|n| n.as_str())
                    == Some("wharf-sdk")
            })
    }

    /// The SDK given with `--sdk-path`, else the one of the source this
    /// binary was built from if it is still there, else a version
    /// requirement matching this wharf.
    fn find_sdk(given: Option<&Path>) -> Result<Sdk> {
        if let Some(path) = given {
            let path = path
                .canonicalize()
                .with_context(|| format!("--sdk-path {}", path.display()))?;
            if !is_sdk(&path) {
                bail!(
                    "--sdk-path {}: no Cargo.toml of the wharf-sdk crate there",
                    path.display()
                );
            }
            return Ok(Sdk::Path(path));
        }
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        if let Ok(path) = built.canonicalize()
            && is_sdk(&path)
        {
            return Ok(Sdk::Path(path));
        }
        let version = env!("CARGO_PKG_VERSION");
        let mut parts = version.split('.');
        let req = match (parts.next(), parts.next()) {
            (Some(major), Some(minor)) => format!("{major}.{minor}"),
            _ => version.to_string(),
        };
        Ok(Sdk::Version(req))
    }

    /// The sample's accepted and rejected fixtures.
    const ACCEPTED: &str = "orders-2026-11.csv";
    const REJECTED: &str = "notes.txt";

    fn write_crate(root: &Path, name: &str, sdk: &Sdk) -> Result<()> {
        let type_name: String = name
            .split(['-', '_'])
            .filter(|part| !part.is_empty())
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .chain(["Rules".to_string()])
            .collect();
        let folder = format!("Inbound/{name}");
        let fill = |template: &str| {
            template
                .replace("{{name}}", name)
                .replace("{{type}}", &type_name)
                .replace("{{lib}}", &name.replace('-', "_"))
                .replace("{{folder}}", &folder)
        };
        let (accepted, rejected) = expected_verdicts(&folder)?;
        let settings_path = format!("fixtures/{SETTINGS}");
        let files: Vec<(&str, String)> = vec![
            (
                "Cargo.toml",
                fill(CARGO_TOML).replace("{{sdk}}", &sdk.dependency()?),
            ),
            (".gitignore", "/target\n".to_string()),
            ("README.md", fill(README)),
            ("src/lib.rs", fill(LIB_RS)),
            (
                &settings_path,
                format!(
                    "# Plugin settings for `wharf plugin test`, as in the partner's\n\
                     # `settings` of the wharf configuration.\n\
                     folder = {}\n",
                    toml::Value::String(folder.clone())
                ),
            ),
            (
                ACCEPTED,
                "id,date,amount\n1001,2026-11-24,120.00\n1002,2026-11-24,75.50\n".to_string(),
            ),
            (REJECTED, "These are notes, not an order.\n".to_string()),
        ];
        for (path, text) in files {
            let path = if path == ACCEPTED || path == REJECTED {
                root.join("fixtures").join(path)
            } else {
                root.join(path)
            };
            write(&path, &text)?;
        }
        for (fixture, verdict) in [(ACCEPTED, accepted), (REJECTED, rejected)] {
            let path = expected_path(&root.join("fixtures").join(fixture));
            write(&path, &expectation_text(&serde_json::to_value(&verdict)?)?)?;
        }
        Ok(())
    }

    fn write(path: &Path, text: &str) -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// What the sample rule of [`LIB_RS`] decides for the two fixtures with
    /// `folder` set, as the host sees it: the expectations `plugin test`
    /// compares with. Kept in step with the template by the test that
    /// builds a new plugin and runs its fixtures.
    fn expected_verdicts(folder: &str) -> Result<(Verdict, Verdict)> {
        let accepted = Verdict::Accept(Filing {
            target: Target::Folder {
                path: relative_path(folder).map_err(anyhow::Error::msg)?,
            },
            name: ACCEPTED.to_string(),
            description: None,
            categories: vec![Category {
                name: "Partner Document".to_string(),
                attributes: vec![
                    Attribute {
                        name: "Source Name".to_string(),
                        value: AttributeValue::Text(ACCEPTED.to_string()),
                    },
                    Attribute {
                        name: "Rows".to_string(),
                        value: AttributeValue::Integer(2),
                    },
                ],
            }],
            retention: None,
            hold: None,
            permissions: Vec::new(),
            workflow: None,
            version_policy: VersionPolicy::AddVersion,
        });
        let rejected = Verdict::Reject(Rejection {
            code: "not-csv".to_string(),
            message: "only CSV files (*.csv) are accepted".to_string(),
            details: vec![("name".to_string(), REJECTED.to_string())],
        });
        Ok((accepted, rejected))
    }

    const CARGO_TOML: &str = r##"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
description = "Partner plugin {{name}}: files CSV files with the agreed header, rejects other files."
publish = false

# A plugin is a WebAssembly component: a library built for wasm32-wasip2.
[lib]
crate-type = ["cdylib"]

[dependencies]
{{sdk}}

# Its own workspace: the plugin builds wherever its folder is.
[workspace]

# Plugins ship as small, fast components.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"##;

    const LIB_RS: &str = r##"//! {{name}}: a trading partner's rules for wharf.
//!
//! The sample rule accepts CSV files (`*.csv`) whose header is the agreed
//! `id,date,amount`, and files them into the folder named by the `folder`
//! setting (default `Inbound`) with the `Partner Document` category: the
//! file name and the number of rows. Any other file is rejected with the code
//! `not-csv`, a CSV file with another header with `bad-header`, one with an
//! unreadable row with `bad-row`. Replace it with the partner's rules.
//!
//! Outbound deliveries (`on_export`) and acknowledgements (`on_ack`) keep the
//! SDK's defaults: every document is refused, no file is an acknowledgement.
//!
//! Settings: `folder`.

use wharf_sdk::prelude::*;
use wharf_sdk::read;

/// The columns every CSV file starts with, in order.
pub const HEADER: [&str; 3] = ["id", "date", "amount"];

/// Where accepted files go when the `folder` setting is not set.
pub const DEFAULT_FOLDER: &str = "Inbound";

struct {{type}};

impl Plugin for {{type}} {
    fn on_file(file: FileInfo, content: &Content) -> Verdict {
        if !file.name.to_ascii_lowercase().ends_with(".csv") {
            return Rejection::new("not-csv", "only CSV files (*.csv) are accepted")
                .detail("name", &file.name)
                .into();
        }
        // Stream the rows: the file is never held in memory.
        let mut rows = read::csv(content.reader());
        if let Err(rejection) = read::require_header(&mut rows, &HEADER) {
            return rejection.into();
        }
        let mut count: i64 = 0;
        for (index, row) in rows.records().enumerate() {
            if let Err(e) = row {
                return Rejection::new("bad-row", "a CSV row cannot be read")
                    .detail("line", index + 2)
                    .detail("error", e)
                    .into();
            }
            count += 1;
        }
        let folder = host::setting("folder").unwrap_or_else(|| DEFAULT_FOLDER.to_string());
        host::info(&format!("{}: {count} rows", file.name));
        Verdict::accept(
            Filing::to_folder(&folder, &file.name).category(
                Category::new("Partner Document")
                    .with("Source Name", file.name.as_str())
                    .with("Rows", count),
            ),
        )
    }
}

wharf_sdk::export!({{type}});

#[cfg(test)]
mod tests {
    use wharf_sdk::testing::TestHost;

    use super::*;

    const ORDERS: &str = "id,date,amount\n1001,2026-11-24,120.00\n1002,2026-11-24,75.50\n";

    #[test]
    fn a_csv_file_with_the_header_is_filed_with_its_row_count() {
        let host = TestHost::new().setting("folder", "Orders/2026");
        let verdict = host.decide::<{{type}}>("orders.csv", ORDERS);
        let filing = verdict.expect_accept();
        assert_eq!(filing.target, Target::Folder("Orders/2026".into()));
        assert_eq!(filing.name, "orders.csv");
        assert_eq!(
            filing.attribute("Partner Document", "Rows"),
            Some(&AttributeValue::Integer(2))
        );
        assert!(host.logged("orders.csv: 2 rows"), "{:?}", host.logs());
    }

    #[test]
    fn without_the_folder_setting_files_go_to_the_default_folder() {
        let host = TestHost::new();
        let verdict = host.decide::<{{type}}>("ORDERS.CSV", ORDERS);
        let filing = verdict.expect_accept();
        assert_eq!(filing.target, Target::Folder(DEFAULT_FOLDER.into()));
    }

    #[test]
    fn another_file_type_is_rejected_as_not_csv() {
        let host = TestHost::new();
        let verdict = host.decide::<{{type}}>("notes.txt", "hello");
        let rejection = verdict.expect_reject();
        assert_eq!(rejection.code, "not-csv");
        assert_eq!(rejection.detail_value("name"), Some("notes.txt"));
    }

    #[test]
    fn a_csv_file_with_another_header_is_rejected() {
        let host = TestHost::new();
        let verdict = host.decide::<{{type}}>("orders.csv", "id;date;amount\n1;2;3\n");
        assert_eq!(verdict.expect_reject().code, "bad-header");
    }

    #[test]
    fn a_row_with_a_missing_field_is_rejected_with_its_line() {
        let host = TestHost::new();
        let verdict = host.decide::<{{type}}>("orders.csv", "id,date,amount\n1,2026-11-24\n");
        let rejection = verdict.expect_reject();
        assert_eq!(rejection.code, "bad-row");
        assert_eq!(rejection.detail_value("line"), Some("2"));
    }
}
"##;

    const README: &str = r##"# {{name}}

A wharf partner plugin: the rules wharf applies to one trading partner's
files, built as a WebAssembly component on the wharf SDK (`wharf-sdk`).

The sample rule in `src/lib.rs` accepts CSV files (`*.csv`) whose header is
`id,date,amount` and files them into the folder named by the `folder` setting
(default `Inbound`) with the `Partner Document` category; it rejects any other
file with the code `not-csv`. Replace it with the partner's rules.

## Build

    rustup target add wasm32-wasip2      # once
    cargo build --release --target wasm32-wasip2

The component is `target/wasm32-wasip2/release/{{lib}}.wasm`.

## Test

Unit tests run natively against an in-memory host (`wharf_sdk::testing`:
settings, remote files, repository look-ups, captured log lines):

    cargo test

Fixtures run the built component in wharf's own sandbox: every file in
`fixtures/` is decided and its verdict compared with
`<file>.expected.json`; `fixtures/settings.toml` holds the plugin's settings.

    wharf plugin test target/wasm32-wasip2/release/{{lib}}.wasm fixtures

After a deliberate change of the rules, record the new verdicts and review
the diff before committing it:

    wharf plugin test --update target/wasm32-wasip2/release/{{lib}}.wasm fixtures

`wharf plugin check <component> <file>...` prints the plugin's world and
each verdict in full.

## Deploy

Copy the component into the wharf service's plugins folder
(`runtime.plugins_dir`) under the file name the partner's `plugin` setting
names, writing it under a temporary name first and renaming it over the old
one. A running `wharf run` notices the new file and swaps it in; a build that
does not load is refused and the old one keeps serving. Or upload it to a
running service:

    wharf plugin deploy target/wasm32-wasip2/release/{{lib}}.wasm --partner <partner-id>
"##;

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn crate_names_follow_cargo_rules() {
            for good in ["demo", "acme-orders", "Acme_2", "a"] {
                assert!(check_name(good).is_ok(), "{good}");
            }
            for bad in [
                "",
                "2fast",
                "-x",
                "_x",
                "a b",
                "a/b",
                "../x",
                "é",
                "self",
                "test",
                "fn",
                "wharf-sdk",
                "con",
                "LPT1",
                &"x".repeat(65),
            ] {
                assert!(check_name(bad).is_err(), "{bad:?}");
            }
        }

        #[test]
        fn a_new_plugin_has_its_files_and_an_existing_folder_is_refused() {
            let dir = tempfile::tempdir().unwrap();
            let sdk = Sdk::Version("0.1".into());
            let root = dir.path().join("acme-orders");
            std::fs::create_dir(&root).unwrap();
            write_crate(&root, "acme-orders", &sdk).unwrap();
            let manifest: toml::Table =
                toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
            assert_eq!(manifest["package"]["name"].as_str(), Some("acme-orders"));
            assert_eq!(manifest["dependencies"]["wharf-sdk"].as_str(), Some("0.1"));
            assert!(manifest.contains_key("workspace"));
            let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
            assert!(lib.contains("impl Plugin for AcmeOrdersRules {"), "{lib}");
            assert!(!lib.contains("{{"), "{lib}");
            let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
            assert!(readme.contains("target/wasm32-wasip2/release/acme_orders.wasm"));
            let rejected: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(root.join("fixtures/notes.txt.expected.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(rejected["verdict"], "reject");
            assert_eq!(rejected["code"], "not-csv");
            let accepted: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(root.join("fixtures/orders-2026-11.csv.expected.json"))
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(accepted["target"]["path"], "Inbound/acme-orders");
            let settings = std::fs::read_to_string(root.join("fixtures/settings.toml")).unwrap();
            assert!(
                settings.contains("folder = \"Inbound/acme-orders\""),
                "{settings}"
            );

            let args = NewArgs {
                name: "acme-orders".into(),
                dir: dir.path().to_path_buf(),
                sdk_path: None,
            };
            let err = new_plugin(args).unwrap_err();
            assert!(err.to_string().contains("already exists"), "{err}");
            // The refused run left the first plugin alone.
            assert!(root.join("src/lib.rs").is_file());
        }

        #[test]
        fn a_local_sdk_is_a_path_dependency_and_a_wrong_one_is_refused() {
            let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
            let Sdk::Path(path) = find_sdk(Some(&built)).unwrap() else {
                panic!("expected a path dependency");
            };
            assert!(path.is_absolute());
            let line = Sdk::Path(path.clone()).dependency().unwrap();
            let parsed: toml::Table = toml::from_str(&line).unwrap();
            assert_eq!(
                parsed["wharf-sdk"]["path"].as_str(),
                Some(path.to_str().unwrap())
            );
            let dir = tempfile::tempdir().unwrap();
            assert!(find_sdk(Some(dir.path())).is_err());
        }
    }
}
