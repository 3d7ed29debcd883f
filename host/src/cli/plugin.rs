//! `wharf plugin ...`: inspect and try partner plugins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::plugin::decision::{Filing, Target, Verdict};
use crate::plugin::{
    FileInfo, HostConfig, Limits, LocalPartnerFiles, PartnerContext, Plugin, PluginHost,
    ReadContent,
};

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
        let outcome = decide(&plugin, &context, sample);
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

/// Suffix of an expectation file beside its fixture.
const EXPECTED: &str = ".expected.json";

fn test(args: TestArgs) -> Result<ExitCode> {
    let settings_file = args.fixtures.join("settings.toml");
    let extra = if settings_file.exists() {
        let text = std::fs::read_to_string(&settings_file)
            .with_context(|| format!("reading {}", settings_file.display()))?;
        toml::from_str::<BTreeMap<String, String>>(&text).with_context(|| {
            format!(
                "{}: expected KEY = \"value\" lines",
                settings_file.display()
            )
        })?
    } else {
        BTreeMap::new()
    };
    let (plugin, context) = args.sandbox.load(&args.component, extra)?;
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&args.fixtures)
        .with_context(|| format!("reading fixtures folder {}", args.fixtures.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            !name.starts_with('.') && !name.ends_with(EXPECTED) && name != "settings.toml"
        })
        .collect();
    fixtures.sort();
    if fixtures.is_empty() {
        bail!("no fixture files in {}", args.fixtures.display());
    }
    let (mut passed, mut failed) = (0, 0);
    for fixture in &fixtures {
        let actual = match decide(&plugin, &context, fixture) {
            Ok(verdict) => serde_json::to_value(&verdict)?,
            Err(e) => match e.downcast_ref::<crate::plugin::PluginError>() {
                Some(pe) => serde_json::json!({"error": pe.code()}),
                None => return Err(e),
            },
        };
        let mut expected_path = fixture.clone().into_os_string();
        expected_path.push(EXPECTED);
        let expected_path = PathBuf::from(expected_path);
        let name = fixture.file_name().unwrap_or_default().to_string_lossy();
        if args.update {
            std::fs::write(
                &expected_path,
                serde_json::to_string_pretty(&actual)? + "\n",
            )
            .with_context(|| format!("writing {}", expected_path.display()))?;
            println!("updated {name}");
            passed += 1;
            continue;
        }
        let expected: Option<serde_json::Value> = match std::fs::read_to_string(&expected_path) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", expected_path.display()))?,
            ),
            Err(_) => None,
        };
        match expected {
            Some(expected) if expected == actual => {
                println!("ok      {name}");
                passed += 1;
            }
            Some(expected) => {
                println!("FAILED  {name}");
                print_diff(&expected, &actual)?;
                failed += 1;
            }
            None => {
                println!(
                    "FAILED  {name}: no {} (run with --update to record it)",
                    expected_path.display()
                );
                failed += 1;
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

fn decide(plugin: &Plugin, context: &Arc<PartnerContext>, sample: &Path) -> Result<Verdict> {
    let content = ReadContent::open(sample)
        .with_context(|| format!("cannot open sample {}", sample.display()))?;
    let name = sample
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("the sample path has no file name")?;
    let modified = std::fs::metadata(sample)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let file = FileInfo {
        partner: context.partner.clone(),
        path: name.clone(),
        name,
        size: content_size(sample),
        modified,
    };
    Ok(plugin.on_file(context, &file, content)?)
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
