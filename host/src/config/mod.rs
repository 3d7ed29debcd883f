//! `wharf.toml`: the runtime's configuration, and its validation.
//!
//! Loading never stops at the first mistake: [`load`] returns every problem
//! it finds, each with its key path (`partner[1].endpoint`) and line, so an
//! operator fixes a file in one pass. Unknown keys are errors. Secrets are
//! never read from the file: a key that looks like one (`password`,
//! `passphrase`, `token`, `secret`) is refused with a pointer to the
//! `*_env` / `*_file` form.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::plugin::Limits;
use crate::plugin::decision::relative_path;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WharfConfig {
    /// Runtime settings.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The repository.
    #[serde(default)]
    pub ecm: EcmConfig,
    /// The trading partners.
    #[serde(default, rename = "partner")]
    pub partners: Vec<PartnerConfig>,
}

/// Runtime settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Where the ledger, the embedded repository and caches live.
    pub state_dir: PathBuf,
    /// Where plugin components are found (relative to the config file).
    pub plugins_dir: PathBuf,
    /// Admin HTTP listen address (health, readiness, metrics).
    pub admin_listen: String,
    /// Files processed at the same time across all partners.
    pub max_concurrent_files: u32,
    /// Meter fuel so partners may set a per-call instruction budget.
    pub fuel: bool,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// On shutdown, how long files in flight may take to finish (seconds);
    /// what is still running then resumes at the next start.
    pub drain_secs: u64,
    /// How often each partner's delivery log of the day is rewritten into
    /// the repository (seconds); it is also written at day change and at
    /// shutdown.
    pub delivery_log_secs: u64,
    /// Environment variable holding the admin token: the bearer token the
    /// admin endpoint's plugin deploy and rollback routes require. Without
    /// a token those routes are refused.
    pub admin_token_env: Option<String>,
    /// File holding the admin token (see `admin_token_env`).
    pub admin_token_file: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            state_dir: PathBuf::from(".wharf"),
            plugins_dir: PathBuf::from("plugins"),
            admin_listen: "127.0.0.1:9630".into(),
            max_concurrent_files: 16,
            fuel: false,
            log_format: "text".into(),
            drain_secs: 300,
            delivery_log_secs: 900,
            admin_token_env: None,
            admin_token_file: None,
        }
    }
}

/// The repository.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum EcmConfig {
    /// The embedded store under the state directory.
    #[default]
    Embedded,
    /// An OpenText Content Server.
    Otcs(OtcsConfig),
}

/// An OpenText Content Server connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtcsConfig {
    /// REST root, e.g. `https://ecm.example.com/otcs/cs.exe/api`.
    pub url: String,
    /// Login name.
    pub user: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Node id under which partner folders live (Enterprise Workspace: 2000).
    #[serde(default = "enterprise_workspace")]
    pub root_id: u64,
    /// TOML file mapping the names plugins use to ids on the server
    /// (`[categories.<name>]` with `id` and `attributes`, `[workspace_types]`,
    /// `[workflows]`, `[rm_classes]`, `[users]`, `[groups]`), relative to the
    /// configuration file. Without it no names can be mapped.
    pub mapping_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
}

fn enterprise_workspace() -> u64 {
    2000
}

/// What happens to a remote file once it is filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterFiling {
    /// Move it to the archive folder.
    Archive,
    /// Delete it.
    Delete,
}

/// When a remote file counts as complete.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Completeness {
    /// Size and mtime must be unchanged across this many polls.
    pub stable_polls: u32,
    /// And the file must be at least this old (seconds).
    pub min_age_secs: u64,
    /// Or: a marker file `<name><suffix>` says the file is complete (e.g. `.done`).
    pub marker_suffix: Option<String>,
}

impl Default for Completeness {
    fn default() -> Self {
        Completeness {
            stable_polls: 2,
            min_age_secs: 30,
            marker_suffix: None,
        }
    }
}

/// One trading partner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    /// Partner id: lowercase letters, digits, `-` and `_`.
    pub id: String,
    /// Plugin component file, relative to `runtime.plugins_dir`.
    pub plugin: String,
    /// Endpoint URL: `ftp://`, `ftps://` (explicit TLS), `ftps-implicit://`,
    /// `sftp://` or `file://`; user name in the URL, never a password.
    pub endpoint: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// SSH private key file.
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the key's passphrase.
    pub passphrase_env: Option<String>,
    /// File holding the key's passphrase.
    pub passphrase_file: Option<PathBuf>,
    /// Pinned SSH host key (`ssh-ed25519 AAAA...`).
    pub host_key: Option<String>,
    /// known_hosts file to verify the SSH host key against.
    pub known_hosts: Option<PathBuf>,
    /// Extra CA certificate (PEM) for FTPS.
    pub ca_file: Option<PathBuf>,
    /// The FTP server's time zone offset for LIST times, e.g. `+01:00`.
    #[serde(default)]
    pub server_timezone: Option<String>,
    /// Folder polled for inbound files.
    #[serde(default = "default_inbox")]
    pub inbox: String,
    /// Folder filed files are moved to.
    #[serde(default = "default_archive")]
    pub archive: String,
    /// Folder rejected files are moved to.
    #[serde(default = "default_error")]
    pub error: String,
    /// Folder plugins write acknowledgements into.
    #[serde(default = "default_outbox")]
    pub outbox: String,
    /// What to do with a filed file on the remote.
    #[serde(default = "default_after")]
    pub after: AfterFiling,
    /// Seconds between polls.
    #[serde(default = "default_poll")]
    pub poll_interval_secs: u64,
    /// When a file is complete.
    #[serde(default)]
    pub complete: Completeness,
    /// Files of this partner processed at the same time.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Connections to this partner's server at the same time.
    #[serde(default = "default_concurrency")]
    pub max_connections: u32,
    /// Repository folder under which this partner's documents are filed.
    pub ecm_root: Option<String>,
    /// Failed attempts (transfer or repository refusals) after which a file
    /// is quarantined. Repository outages do not count.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Seconds a file may be deferred by its plugin before it is quarantined.
    #[serde(default = "default_defer")]
    pub max_defer_secs: u64,
    /// Limits of every plugin call.
    #[serde(default)]
    pub limits: Limits,
    /// Settings handed to the plugin (`config.get`).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Fixtures folder (relative to the configuration file), as for `wharf
    /// plugin test`: a build offered to the running service must give
    /// every sample in it the expected verdict, or it is refused.
    #[serde(default)]
    pub fixtures: Option<PathBuf>,
    /// A candidate build run in shadow on a share of the files: its verdict
    /// is recorded and compared with the live one, never acted on.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
    /// Whether the partner is polled.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What may be delivered to this partner, if anything.
    #[serde(default)]
    pub outbound: Option<OutboundConfig>,
}

/// A candidate plugin build tried in shadow mode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The candidate component, relative to `runtime.plugins_dir`.
    pub plugin: String,
    /// Share of the partner's files (0-100) the candidate also decides.
    pub percent: u8,
}

/// A partner's outbound release: which repository documents may leave, and
/// how acknowledgements come back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Repository folder (below the repository root, e.g.
    /// `Partners/globex/Release`) whose documents, at any depth, may be sent.
    pub scope: String,
    /// The approval condition: category name…
    pub category: String,
    /// …attribute name…
    pub attribute: String,
    /// …and the value it must have (compared as text), e.g. `Approved`.
    pub value: String,
    /// Seconds between looks for newly approved versions.
    #[serde(default = "default_outbound_poll")]
    pub poll_interval_secs: u64,
    /// Remote folder where the partner writes acknowledgement files.
    pub ack_folder: Option<String>,
    /// Seconds after delivery without an acknowledgement before a review
    /// task is opened (needs `ack_folder`).
    pub ack_timeout_secs: Option<u64>,
}

fn default_outbound_poll() -> u64 {
    300
}

fn default_inbox() -> String {
    "inbox".into()
}
fn default_archive() -> String {
    "archive".into()
}
fn default_error() -> String {
    "error".into()
}
fn default_outbox() -> String {
    "outbox".into()
}
fn default_after() -> AfterFiling {
    AfterFiling::Archive
}
fn default_poll() -> u64 {
    60
}
fn default_attempts() -> u32 {
    5
}
fn default_defer() -> u64 {
    24 * 3600
}
fn default_concurrency() -> u32 {
    4
}
fn yes() -> bool {
    true
}

impl PartnerConfig {
    /// The repository folder of this partner (`Partners/<id>` by default).
    pub fn ecm_root(&self) -> String {
        self.ecm_root
            .clone()
            .unwrap_or_else(|| format!("Partners/{}", self.id))
    }
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `partner[1].endpoint`.
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

/// Every problem found in a file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.file, .problems))]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

fn render(file: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| match p.line {
            Some(line) => format!("{}:{line}: {}: {}", file.display(), p.key, p.message),
            None => format!("{}: {}: {}", file.display(), p.key, p.message),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Read and validate `path`. Relative paths in the file are resolved
/// against the file's folder.
pub fn load(path: &Path) -> Result<WharfConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            key: "(file)".into(),
            line: None,
            message: format!("cannot read: {e}"),
        }],
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|problems| ConfigError {
        file: path.to_path_buf(),
        problems,
    })
}

/// Parse and validate configuration text; relative paths resolve against
/// `base`.
pub fn parse(text: &str, base: &Path) -> Result<WharfConfig, Vec<Problem>> {
    let doc = match toml_edit::Document::parse(text.to_string()) {
        Ok(doc) => doc,
        Err(e) => {
            return Err(vec![Problem {
                key: "(syntax)".into(),
                line: e.span().map(|s| line_of(text, s.start)),
                message: e.message().to_string(),
            }]);
        }
    };
    let locate = |key: &str| locate(&doc, text, key);
    let mut problems = secret_keys(&doc, text);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut config: WharfConfig = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let key = error_key(&e);
            return Err(vec![Problem {
                line: e
                    .span()
                    .map(|s| line_of(text, s.start))
                    .or_else(|| locate(&key)),
                key,
                message: e.message().to_string(),
            }]);
        }
    };
    let mut add = |key: String, message: String| {
        problems.push(Problem {
            line: locate(&key),
            key,
            message,
        })
    };
    validate(&config, base, &mut add);
    if problems.is_empty() {
        resolve_paths(&mut config, base);
        Ok(config)
    } else {
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(problems)
    }
}

fn resolve_paths(config: &mut WharfConfig, base: &Path) {
    let join = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    join(&mut config.runtime.state_dir);
    join(&mut config.runtime.plugins_dir);
    if let Some(p) = &mut config.runtime.admin_token_file {
        join(p);
    }
    if let EcmConfig::Otcs(otcs) = &mut config.ecm {
        for p in [
            &mut otcs.password_file,
            &mut otcs.mapping_file,
            &mut otcs.ca_file,
        ]
        .into_iter()
        .flatten()
        {
            join(p);
        }
    }
    for partner in &mut config.partners {
        for p in [
            &mut partner.password_file,
            &mut partner.key_file,
            &mut partner.passphrase_file,
            &mut partner.known_hosts,
            &mut partner.ca_file,
            &mut partner.fixtures,
        ]
        .into_iter()
        .flatten()
        {
            join(p);
        }
    }
}

const SECRET_WORDS: [&str; 4] = ["password", "passphrase", "secret", "token"];

/// Keys that would put a secret into the file.
fn secret_keys(doc: &toml_edit::Document<String>, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    fn walk(table: &dyn toml_edit::TableLike, path: &str, text: &str, out: &mut Vec<Problem>) {
        for (key, item) in table.iter() {
            let here = if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            };
            let lower = key.to_ascii_lowercase();
            if SECRET_WORDS.iter().any(|w| lower.contains(w))
                && !lower.ends_with("_env")
                && !lower.ends_with("_file")
            {
                out.push(Problem {
                    line: table
                        .key(key)
                        .and_then(|k| k.span())
                        .map(|s| line_of(text, s.start)),
                    key: here.clone(),
                    message: format!(
                        "secrets are never read from the configuration; use {key}_env (an environment variable's name) or {key}_file (a file holding it)"
                    ),
                });
                continue;
            }
            if let Some(t) = item.as_table_like() {
                walk(t, &here, text, out);
            } else if let Some(array) = item.as_array_of_tables() {
                for (i, t) in array.iter().enumerate() {
                    walk(t, &format!("{here}[{i}]"), text, out);
                }
            }
        }
    }
    walk(doc.as_table(), "", text, &mut problems);
    problems
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key path a serde error points at, from its message's context.
fn error_key(e: &toml::de::Error) -> String {
    // toml reports unknown fields as "unknown field `x`"; the path is in the
    // span, which `parse` turns into a line. Name the field when we can.
    let msg = e.message();
    match msg.split('`').nth(1) {
        Some(field) if msg.starts_with("unknown field") || msg.starts_with("missing field") => {
            field.to_string()
        }
        _ => "(value)".into(),
    }
}

/// The line of key path `key` (`partner[1].limits.deadline_ms`).
fn locate(doc: &toml_edit::Document<String>, text: &str, key: &str) -> Option<usize> {
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (k, item) = table.get_key_value(name)?;
        span = k.span().or(span);
        match (index, item) {
            (Some(i), item) => {
                let t = item.as_array_of_tables()?.get(i)?;
                span = t.span().or(span);
                table = t;
            }
            (None, item) => match item.as_table_like() {
                Some(t) => table = t,
                None => break,
            },
        }
    }
    span.map(|s| line_of(text, s.start))
}

fn validate(config: &WharfConfig, base: &Path, add: &mut impl FnMut(String, String)) {
    let rt = &config.runtime;
    if rt.max_concurrent_files == 0 {
        add(
            "runtime.max_concurrent_files".into(),
            "must be at least 1".into(),
        );
    }
    if rt.admin_listen.parse::<std::net::SocketAddr>().is_err() {
        add(
            "runtime.admin_listen".into(),
            format!(
                "{:?} is not an address like 127.0.0.1:9630",
                rt.admin_listen
            ),
        );
    }
    if !matches!(rt.log_format.as_str(), "text" | "json") {
        add(
            "runtime.log_format".into(),
            "must be \"text\" or \"json\"".into(),
        );
    }
    one_secret(
        rt.admin_token_env.is_some(),
        rt.admin_token_file.is_some(),
        "runtime.admin_token",
        false,
        add,
    );
    if let EcmConfig::Otcs(otcs) = &config.ecm {
        match url::Url::parse(&otcs.url) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => {
                if !u.password().unwrap_or("").is_empty() {
                    add(
                        "ecm.url".into(),
                        "must not contain a password; use password_env or password_file".into(),
                    );
                }
            }
            _ => add(
                "ecm.url".into(),
                format!("{:?} is not an http(s) URL", otcs.url),
            ),
        }
        one_secret(
            otcs.password_env.is_some(),
            otcs.password_file.is_some(),
            "ecm.password",
            true,
            add,
        );
    }
    let plugins_dir = base.join(&rt.plugins_dir);
    let mut seen = BTreeSet::new();
    for (i, p) in config.partners.iter().enumerate() {
        let key = |k: &str| format!("partner[{i}].{k}");
        if p.id.is_empty()
            || p.id.len() > 64
            || !p
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            add(
                key("id"),
                format!("{:?} must be 1-64 of a-z, 0-9, '-', '_'", p.id),
            );
        } else if !seen.insert(p.id.clone()) {
            add(key("id"), format!("{:?} is used by another partner", p.id));
        }
        if !plugins_dir.join(&p.plugin).is_file() {
            add(
                key("plugin"),
                format!("{} does not exist", plugins_dir.join(&p.plugin).display()),
            );
        }
        if let Some(fixtures) = &p.fixtures
            && !base.join(fixtures).is_dir()
        {
            add(
                key("fixtures"),
                format!("{} is not a folder", base.join(fixtures).display()),
            );
        }
        validate_endpoint(p, &key, add);
        for (name, folder) in [
            ("inbox", &p.inbox),
            ("archive", &p.archive),
            ("error", &p.error),
            ("outbox", &p.outbox),
        ] {
            if let Err(e) = relative_path(folder) {
                add(key(name), e);
            }
        }
        if p.inbox == p.archive || p.inbox == p.error {
            add(
                key("inbox"),
                "must differ from archive and error, or filed files would be taken again".into(),
            );
        }
        if let Some(root) = &p.ecm_root
            && let Err(e) = relative_path(root)
        {
            add(key("ecm_root"), e);
        }
        if p.poll_interval_secs == 0 {
            add(key("poll_interval_secs"), "must be at least 1".into());
        }
        if p.complete.stable_polls == 0 && p.complete.marker_suffix.is_none() {
            add(
                key("complete"),
                "needs stable_polls ≥ 1 or a marker_suffix, or partial files would be taken".into(),
            );
        }
        if let Some(suffix) = &p.complete.marker_suffix
            && (suffix.is_empty() || suffix.contains('/'))
        {
            add(
                key("complete.marker_suffix"),
                "must be a non-empty name suffix such as \".done\"".into(),
            );
        }
        if let Some(o) = &p.outbound {
            if let Err(e) = relative_path(&o.scope) {
                add(key("outbound.scope"), e);
            }
            for (name, v) in [
                ("category", &o.category),
                ("attribute", &o.attribute),
                ("value", &o.value),
            ] {
                if v.trim().is_empty() {
                    add(
                        key(&format!("outbound.{name}")),
                        "must not be empty: nothing leaves without an approval condition".into(),
                    );
                }
            }
            if o.poll_interval_secs == 0 {
                add(
                    key("outbound.poll_interval_secs"),
                    "must be at least 1".into(),
                );
            }
            if let Some(folder) = &o.ack_folder {
                if let Err(e) = relative_path(folder) {
                    add(key("outbound.ack_folder"), e);
                } else if folder == &p.inbox || folder == &p.archive || folder == &p.error {
                    add(
                        key("outbound.ack_folder"),
                        "must differ from inbox, archive and error".into(),
                    );
                }
            }
            if o.ack_timeout_secs.is_some() && o.ack_folder.is_none() {
                add(
                    key("outbound.ack_timeout_secs"),
                    "needs outbound.ack_folder: acknowledgements have nowhere to arrive".into(),
                );
            }
        }
        if let Some(c) = &p.canary {
            if c.percent > 100 {
                add(key("canary.percent"), "must be between 0 and 100".into());
            }
            if !plugins_dir.join(&c.plugin).is_file() {
                add(
                    key("canary.plugin"),
                    format!("{} does not exist", plugins_dir.join(&c.plugin).display()),
                );
            }
        }
        if p.max_attempts == 0 {
            add(key("max_attempts"), "must be at least 1".into());
        }
        if p.concurrency == 0 {
            add(key("concurrency"), "must be at least 1".into());
        }
        if p.max_connections == 0 {
            add(key("max_connections"), "must be at least 1".into());
        }
        if let Err(e) = p.limits.validate(1024 * 1024 * 1024, rt.fuel) {
            add(key("limits"), e);
        }
    }
}

fn one_secret(
    env: bool,
    file: bool,
    key: &str,
    required: bool,
    add: &mut impl FnMut(String, String),
) {
    if env && file {
        add(
            format!("{key}_env"),
            format!("set {key}_env or {key}_file, not both"),
        );
    } else if required && !env && !file {
        add(format!("{key}_env"), format!("set {key}_env or {key}_file"));
    }
}

fn validate_endpoint(
    p: &PartnerConfig,
    key: &dyn Fn(&str) -> String,
    add: &mut impl FnMut(String, String),
) {
    let url = match url::Url::parse(&p.endpoint) {
        Ok(u) => u,
        Err(e) => {
            add(
                key("endpoint"),
                format!("{:?} is not a URL: {e}", p.endpoint),
            );
            return;
        }
    };
    if url.password().is_some() {
        add(
            key("endpoint"),
            "must not contain a password; use password_env or password_file".into(),
        );
    }
    match url.scheme() {
        "ftp" | "ftps" | "ftps-implicit" => {
            if url.host_str().is_none() {
                add(key("endpoint"), "names no host".into());
            }
            one_secret(
                p.password_env.is_some(),
                p.password_file.is_some(),
                "password",
                true,
                add,
            );
            if p.key_file.is_some() || p.host_key.is_some() || p.known_hosts.is_some() {
                add(
                    key("key_file"),
                    "SSH settings do not apply to an FTP endpoint".into(),
                );
            }
            if let Some(tz) = &p.server_timezone
                && parse_offset(tz).is_none()
            {
                add(
                    key("server_timezone"),
                    format!("{tz:?} is not an offset like +01:00"),
                );
            }
        }
        "sftp" => {
            if url.host_str().is_none() {
                add(key("endpoint"), "names no host".into());
            }
            if url.username().is_empty() {
                add(
                    key("endpoint"),
                    "names no user (sftp://user@host/...)".into(),
                );
            }
            if p.host_key.is_none() && p.known_hosts.is_none() {
                add(
                    key("host_key"),
                    "SFTP host keys are always verified: set host_key (from `ssh-keyscan`) or known_hosts".into(),
                );
            }
            let has_key = p.key_file.is_some();
            one_secret(
                p.password_env.is_some(),
                p.password_file.is_some(),
                "password",
                !has_key,
                add,
            );
            one_secret(
                p.passphrase_env.is_some(),
                p.passphrase_file.is_some(),
                "passphrase",
                false,
                add,
            );
        }
        "file" => {
            if url.to_file_path().is_err() {
                add(key("endpoint"), "is not a local folder path".into());
            }
        }
        other => add(
            key("endpoint"),
            format!("scheme {other:?} is not one of ftp, ftps, ftps-implicit, sftp, file"),
        ),
    }
}

/// Parse a UTC offset `+HH:MM` / `-HH:MM` into seconds.
pub fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=14).contains(&h) && (0..60).contains(&m)).then_some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/acme.wasm"), b"").unwrap();
        dir
    }

    const GOOD: &str = r#"
[runtime]
state_dir = "state"

[[partner]]
id = "acme"
plugin = "acme.wasm"
endpoint = "sftp://acme@127.0.0.1:2222/"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG"
key_file = "acme_ed25519"

[partner.settings]
suppliers = "ACME01"
"#;

    #[test]
    fn a_good_file_loads_with_defaults() {
        let dir = base();
        let c = parse(GOOD, dir.path()).unwrap();
        assert_eq!(c.partners[0].inbox, "inbox");
        assert_eq!(c.partners[0].ecm_root(), "Partners/acme");
        assert_eq!(c.partners[0].settings["suppliers"], "ACME01");
        assert_eq!(c.runtime.state_dir, dir.path().join("state"));
        assert!(matches!(c.ecm, EcmConfig::Embedded));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let dir = base();
        let text = GOOD.replace("key_file =", "colour = \"red\"\nkey_file =");
        let problems = parse(&text, dir.path()).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "colour");
        assert_eq!(problems[0].line, Some(10));
    }

    #[test]
    fn a_password_in_the_file_is_refused_without_echoing_it() {
        let dir = base();
        let text = GOOD.replace("key_file =", "password = \"hunter2\"\nkey_file =");
        let problems = parse(&text, dir.path()).unwrap_err();
        assert_eq!(problems[0].key, "partner[0].password");
        assert_eq!(problems[0].line, Some(10));
        assert!(problems[0].message.contains("password_env"));
        assert!(!format!("{problems:?}").contains("hunter2"));
    }

    #[test]
    fn every_problem_is_reported_in_one_pass() {
        let dir = base();
        let text = r#"
[[partner]]
id = "Bad Id"
plugin = "missing.wasm"
endpoint = "sftp://127.0.0.1/"
inbox = "../up"

[[partner]]
id = "b"
plugin = "acme.wasm"
endpoint = "gopher://x/"
limits = { deadline_ms = 0 }
"#;
        let problems = parse(text, dir.path()).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "partner[0].id",
            "partner[0].plugin",
            "partner[0].endpoint",
            "partner[0].host_key",
            "partner[0].inbox",
            "partner[1].endpoint",
            "partner[1].limits",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
        let id = problems.iter().find(|p| p.key == "partner[0].id").unwrap();
        assert_eq!(id.line, Some(3));
        let limits = problems
            .iter()
            .find(|p| p.key == "partner[1].limits")
            .unwrap();
        assert_eq!(limits.line, Some(12));
    }

    #[test]
    fn the_annotated_example_is_valid_but_for_its_installed_files() {
        let text = include_str!("../../../examples/wharf.toml");
        let dir = tempfile::tempdir().unwrap();
        let problems = parse(text, dir.path()).expect_err("its plugins are not installed here");
        // Three plugin files, a canary and a fixtures folder live on the
        // server.
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(
            problems
                .iter()
                .all(|p| p.key.ends_with(".plugin") || p.key.ends_with(".fixtures")),
            "{problems:?}"
        );
    }

    #[test]
    fn admin_token_and_fixtures_are_checked_and_resolved() {
        let dir = base();
        std::fs::create_dir(dir.path().join("fixtures")).unwrap();
        let text = GOOD
            .replace(
                "state_dir = \"state\"",
                "state_dir = \"state\"\nadmin_token_file = \"admin.token\"",
            )
            .replace("key_file =", "fixtures = \"fixtures\"\nkey_file =");
        let c = parse(&text, dir.path()).unwrap();
        assert_eq!(
            c.runtime.admin_token_file,
            Some(dir.path().join("admin.token"))
        );
        assert_eq!(c.partners[0].fixtures, Some(dir.path().join("fixtures")));

        let both = text.replace(
            "admin_token_file =",
            "admin_token_env = \"WHARF_ADMIN_TOKEN\"\nadmin_token_file =",
        );
        let problems = parse(&both, dir.path()).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "runtime.admin_token_env");
        assert!(problems[0].message.contains("not both"));

        let missing = text.replace("fixtures = \"fixtures\"", "fixtures = \"nowhere\"");
        let problems = parse(&missing, dir.path()).unwrap_err();
        assert_eq!(problems[0].key, "partner[0].fixtures");

        let inline = text.replace(
            "admin_token_file = \"admin.token\"",
            "admin_token = \"s3cret\"",
        );
        let problems = parse(&inline, dir.path()).unwrap_err();
        assert_eq!(problems[0].key, "runtime.admin_token");
        assert!(!format!("{problems:?}").contains("s3cret"));
    }

    #[test]
    fn syntax_errors_give_a_line() {
        let problems = parse("[runtime\nstate_dir = 1", Path::new(".")).unwrap_err();
        assert_eq!(problems[0].key, "(syntax)");
        assert_eq!(problems[0].line, Some(1));
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+01:00"), Some(3600));
        assert_eq!(parse_offset("-05:30"), Some(-19800));
        assert_eq!(parse_offset("01:00"), None);
        assert_eq!(parse_offset("+15:00"), None);
    }
}
