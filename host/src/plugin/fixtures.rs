//! Fixture folders: sample files, each with the verdict a plugin build must
//! give it (`<file>.expected.json` beside it), and the plugin settings the
//! samples are decided with (`settings.toml`). `wharf plugin test` runs
//! them from the command line; a running service runs them on every build
//! offered to a partner that names a fixtures folder, and refuses the build
//! on any difference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::decision::Verdict;
use super::{FileInfo, PartnerContext, Plugin, PluginError, ReadContent};

/// Suffix of an expectation file beside its fixture.
pub const EXPECTED: &str = ".expected.json";

/// Name of the plugin settings file in a fixtures folder.
pub const SETTINGS: &str = "settings.toml";

/// A fixtures folder, read.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// The folder.
    pub dir: PathBuf,
    /// Plugin settings from `settings.toml` (empty without one).
    pub settings: BTreeMap<String, String>,
    /// The sample files, sorted; hidden files, expectations and the
    /// settings file are not samples.
    pub files: Vec<PathBuf>,
}

impl Fixtures {
    /// Read the folder `dir`. Fails when it cannot be read, its settings
    /// file is not `KEY = "value"` lines, or it holds no sample.
    pub fn open(dir: &Path) -> Result<Self> {
        let settings_file = dir.join(SETTINGS);
        let settings = if settings_file.exists() {
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
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading fixtures folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                !name.starts_with('.') && !name.ends_with(EXPECTED) && name != SETTINGS
            })
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no fixture files in {}", dir.display());
        }
        Ok(Fixtures {
            dir: dir.to_path_buf(),
            settings,
            files,
        })
    }
}

/// Where the expectation of `fixture` is kept.
pub fn expected_path(fixture: &Path) -> PathBuf {
    let mut path = fixture.to_path_buf().into_os_string();
    path.push(EXPECTED);
    PathBuf::from(path)
}

/// The recorded expectation of `fixture`, if there is one.
pub fn expected(fixture: &Path) -> Result<Option<serde_json::Value>> {
    let path = expected_path(fixture);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not JSON", path.display())
            })?))
        }
        Err(_) => Ok(None),
    }
}

/// Decide `sample` with `plugin`, as if it had arrived from the partner.
pub fn decide(plugin: &Plugin, context: &Arc<PartnerContext>, sample: &Path) -> Result<Verdict> {
    let content = ReadContent::open(sample)
        .with_context(|| format!("cannot open sample {}", sample.display()))?;
    let name = sample
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("the sample path has no file name")?;
    let meta = std::fs::metadata(sample).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let file = FileInfo {
        partner: context.partner.clone(),
        path: name.clone(),
        name,
        size: meta.map(|m| m.len()).unwrap_or(0),
        modified,
    };
    Ok(plugin.on_file(context, &file, content)?)
}

/// What `plugin` makes of `fixture`, as compared with its expectation: the
/// verdict as JSON, or `{"error": <code>}` when the plugin call failed.
pub fn actual(
    plugin: &Plugin,
    context: &Arc<PartnerContext>,
    fixture: &Path,
) -> Result<serde_json::Value> {
    match decide(plugin, context, fixture) {
        Ok(verdict) => Ok(serde_json::to_value(&verdict)?),
        Err(e) => match e.downcast_ref::<PluginError>() {
            Some(pe) => Ok(serde_json::json!({"error": pe.code()})),
            None => Err(e),
        },
    }
}

/// How one fixture compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    /// The verdict is the expected one.
    Passed,
    /// The verdict differs from the expected one.
    Differs {
        /// The expectation.
        expected: serde_json::Value,
    },
    /// No expectation is recorded.
    NoExpectation,
}

/// One fixture's result.
#[derive(Debug, Clone)]
pub struct FixtureResult {
    /// The sample file.
    pub fixture: PathBuf,
    /// Its file name.
    pub name: String,
    /// The verdict (or failure) it got.
    pub actual: serde_json::Value,
    /// How that compares with the expectation.
    pub comparison: Comparison,
}

impl FixtureResult {
    /// Whether the verdict was the expected one.
    pub fn passed(&self) -> bool {
        self.comparison == Comparison::Passed
    }
}

/// Decide every fixture with `plugin` and compare each verdict with its
/// expectation. Fails only when a sample or an expectation cannot be read.
pub fn compare(
    plugin: &Plugin,
    context: &Arc<PartnerContext>,
    fixtures: &Fixtures,
) -> Result<Vec<FixtureResult>> {
    fixtures
        .files
        .iter()
        .map(|fixture| {
            let actual = actual(plugin, context, fixture)?;
            let comparison = match expected(fixture)? {
                Some(expected) if expected == actual => Comparison::Passed,
                Some(expected) => Comparison::Differs { expected },
                None => Comparison::NoExpectation,
            };
            Ok(FixtureResult {
                fixture: fixture.clone(),
                name: fixture
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                actual,
                comparison,
            })
        })
        .collect()
}

/// A short account of a verdict: `accept`, `reject supplier-mismatch`,
/// `error plugin-trap`...
fn gist(verdict: &serde_json::Value) -> String {
    let str_of = |key: &str| verdict.get(key).and_then(|v| v.as_str());
    match (str_of("verdict"), str_of("code"), str_of("error")) {
        (_, _, Some(error)) => format!("error {error}"),
        (Some(kind), Some(code), _) => format!("{kind} {code}"),
        (Some("accept"), _, _) => match verdict.pointer("/target/path").and_then(|p| p.as_str()) {
            Some(path) => format!("accept into {path}"),
            None => "accept".to_string(),
        },
        (Some(kind), _, _) => kind.to_string(),
        _ => "something else".to_string(),
    }
}

/// One line naming every fixture that failed and how, or `None` when all
/// passed.
pub fn failures(results: &[FixtureResult]) -> Option<String> {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.comparison {
            Comparison::Passed => None,
            Comparison::Differs { expected } if gist(expected) == gist(&r.actual) => Some(format!(
                "{}: the verdict differs in detail from {}{EXPECTED}",
                r.name, r.name
            )),
            Comparison::Differs { expected } => Some(format!(
                "{}: expected {}, got {}",
                r.name,
                gist(expected),
                gist(&r.actual)
            )),
            Comparison::NoExpectation => Some(format!("{}: no {}{EXPECTED}", r.name, r.name)),
        })
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "{} of {} fixture(s) failed: {}",
            failed.len(),
            results.len(),
            failed.join("; ")
        )
    })
}
